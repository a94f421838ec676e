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
# FINERANK_GIT_COMMIT names the commit in the report where the copy has no .git.
set -uo pipefail
cd "$(dirname "$0")/.."

# What finerank serve and the CUDA tests import that the GPU image lacks (versions: this venv's;
# the image's list: /work/.library/device/KINDS.md). fastapi >= 0.12x imports opentelemetry-api
# at import time; pydantic >= 2.12 needs a newer typing-extensions than an image may hold (newer
# is a superset, safe for torch). No pytest-asyncio: no CUDA test needs it, and one built for
# another pytest stops pytest at start (gpu_check.py passes -p no:asyncio).
WHEELS="pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types
typing-extensions fastapi starlette uvicorn opentelemetry-api"

if [ "${1:-}" = "--fetch-wheels" ]; then
    # the versions finerank is tested with: this checkout's venv (else the active python)
    python=python3
    [ -x .venv/bin/python ] && python=.venv/bin/python
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    rm -rf .whl && mkdir -p .whl  # one version of each: two stop the install there
    for name in $WHEELS; do
        version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") \
            || { echo "error: $name is not installed in $python" >&2; exit 1; }
        "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
            "$name==$version" || exit 1
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
# nothing outside the GPU machine answers: never wait on the model hub
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export FINERANK_BENCH_CACHE="${FINERANK_BENCH_CACHE:-/tmp/finerank-bench}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    # what the wheels are for imports (else every server test fails: say which module, first)
    python3 -c "import fastapi, pydantic, pydantic_settings, starlette, uvicorn" \
        || echo "warning: finerank's server cannot import here; carry .whl (see --fetch-wheels)"
} 2>&1 | tee "$OUT/gpu_check.log"
timeout 500 python3 benchmarks/gpu_check.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
