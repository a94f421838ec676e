#!/usr/bin/env bash
# GPU proof kit: the CUDA tests and the GPU benchmark in one command (<= 8 minutes on an H200).
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # once, on a machine with PyPI: the packages
#                                                 # finerank needs that the GPU image lacks -> .whl/
#   bash benchmarks/gpu_check.sh [ARGS]           # on the GPU machine; ARGS go to gpu_check.py
#
# On the GPU machine nothing is installed from a registry: wheels in .whl/ (if any) are
# unpacked into /tmp/finerank-site, and finerank runs from this checkout (PYTHONPATH), on the
# machine's own torch / transformers / sentence-transformers. Results: $OUT (default
# ./gpu-check-out): gpu_check.json, summary.md, cuda_tests.xml, gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."

# what finerank and its tests import that the GPU image does not have (versions: this venv's)
WHEELS="pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types
fastapi starlette uvicorn pytest-asyncio"

if [ "${1:-}" = "--fetch-wheels" ]; then
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    mkdir -p .whl
    for name in $WHEELS; do
        version=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || exit 1
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$name==$version" || exit 1
    done
    du -sh .whl && ls .whl
    exit 0
fi

export OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/finerank-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/finerank-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export FINERANK_BENCH_CACHE="${FINERANK_BENCH_CACHE:-/tmp/finerank-bench}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
timeout 500 python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
