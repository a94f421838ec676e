"""GPU proof kit: the CUDA tests, then finerank vs its peers on one GPU, in one command.

    bash benchmarks/gpu_check.sh                       # on the GPU machine (<= 8 min on an H200)
    python benchmarks/gpu_check.py --device cpu --size tiny --out /tmp/gpu-check   # dry run

1. **Tests**: ``pytest -m cuda tests/cuda`` (varlen kernel vs SDPA and its self-check, bf16 and
   fp16 vs fp32, fp32 vs the reference code, OOM halving on a real OOM, ``finerank serve`` on
   CUDA); pass/fail counts and the JUnit XML go into the results.
2. **Ceiling**: the GFLOP/s of a plain bf16 matmul on this device (8192^3 on a GPU), beside the
   data-sheet peak.
3. **Throughput**: random-weight Qwen3-Reranker-0.6B (``--size 0.6b``; ``tiny`` for the dry
   run), one query against documents of 128, 512, 1k, 2k and 8k tokens, about
   ``--tokens-per-point`` tokens per point, for finerank, the official reference code and
   sentence-transformers' CrossEncoder, same pairs, rounds interleaved; tokens/s (every
   model-input token of every pair), pairs/s, peak GPU memory, max |score diff| vs the
   reference, and finerank's fraction of the bf16 limit: tokens/s x FLOP/token over the
   data-sheet peak and over the measured matmul ceiling, plus the FLOPs finerank really
   computes (shared prefix once, attention included) over the measured ceiling.
4. **Latency**: batch-1 requests (p50/p90) at 128 and 1k tokens for each contender.

Results: ``$OUT/gpu_check.json`` (everything) and ``$OUT/summary.md`` (tables), written after
every step, so a run stopped by its time limit still leaves what it measured. A step that
would pass ``--budget`` seconds is skipped and says so. A step, a contender's load or one
timed run that raises is recorded under ``errors`` (the exception, the last lines of its
traceback) and the kit goes on with the rest; the exit code is then 1. The JSON also says
which library versions ran and which attention path finerank used (``finerank_attention``:
the varlen flash kernel, or SDPA and why).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finerank.bench.contenders import Unavailable, make_contender  # noqa: E402
from finerank.bench.measure import (  # noqa: E402
    PeakMemory,
    decoder_flops,
    gpu_bf16_peak,
    matmul_ceiling,
    pack_segments,
    percentile,
)
from finerank.bench.runner import (  # noqa: E402
    SEED_INSTRUCTION,
    SEED_QUERY,
    BenchConfig,
    default_data_dir,
    ensure_model,
    synthetic_documents,
)

DEFAULT_LENGTHS = {"cuda": (128, 512, 1024, 2048, 8192), "cpu": (128, 512)}
DEFAULT_TOKENS = {"cuda": 131072, "cpu": 1024}
#: versions recorded in the environment (the GPU image's own, or carried as wheels)
PACKAGES = ("transformers", "tokenizers", "sentence-transformers", "safetensors", "numpy")
PACKAGES += ("pydantic", "pydantic-settings", "fastapi", "starlette", "uvicorn", "pytest")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def source_text() -> str:
    """Text to cut documents from: the PRC law articles shipped in ``finerank/data`` (they
    travel with the checkout), else the repository's own documentation."""
    laws = default_data_dir() / "laws" / "articles.jsonl"
    if laws.is_file():
        lines = laws.read_text(encoding="utf-8").splitlines()[:400]
        return "\n".join(json.loads(line)["text"] for line in lines if line.strip())
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages if p.is_file())


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """This checkout's commit; ``$FINERANK_GIT_COMMIT`` where there is no ``.git`` (a copy of
    the working tree on a GPU machine) or no git."""
    with contextlib.suppress(OSError):
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return os.environ.get("FINERANK_GIT_COMMIT") or None


def varlen_signature() -> str | None:
    """The parameters of this torch's ``varlen_attn`` (None: no such module), for the report."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    import inspect

    return str(inspect.signature(varlen_attn))


def environment(device: torch.device) -> dict:
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git": _git_commit(),
        "packages": {name: _version(name) for name in PACKAGES},
        "varlen_attn": varlen_signature(),
    }
    if device.type == "cuda" and torch.cuda.is_available():  # else run() says so and stops
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = props.name
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["multiprocessors"] = props.multi_processor_count
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
    return env


def run_tests(out: Path, timeout: float) -> dict:
    """``pytest -m cuda tests/cuda``: counts, exit code, the last lines of its output."""
    junit = out / "cuda_tests.xml"
    # -v: one line per test, so a timeout shows which test hung; no asyncio plugin: no CUDA
    # test needs it, and one built for another pytest would stop the whole run at start
    cmd = [sys.executable, "-m", "pytest", "-v", "-m", "cuda", "tests/cuda"]
    cmd += ["-p", "no:cacheprovider", "-p", "no:asyncio", f"--junitxml={junit}"]
    cmd += ["-o", "addopts=-ra"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        # what it printed before the kill comes back as bytes, even with text=True
        printed = b"".join(
            part if isinstance(part, bytes) else (part or "").encode()
            for part in (exc.stdout, exc.stderr)
        )
        output = printed.decode(errors="replace") + f"\ntimed out after {timeout:.0f} s"
        code = 124
    found = re.findall(r"(\d+) (passed|failed|skipped|error|errors)", output)
    counts = {word: int(n) for n, word in found}
    return {
        "exit_code": code,
        "seconds": round(time.perf_counter() - started, 1),
        "counts": counts,
        "tail": output.strip().splitlines()[-40:],
    }


class Check:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.result: dict = {
            "environment": environment(self.device),
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "skipped": [],
            "notes": [],
            "errors": {},
        }

    # ---- bookkeeping -------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.started)

    def skip(self, what: str, why: str) -> None:
        line = f"{what} skipped: {why}"
        print(line, flush=True)
        self.result["skipped"].append(line)

    def error(self, what: str, exc: BaseException) -> None:
        """Record ``exc`` under ``errors[what]`` (the run goes on); frees cached GPU memory
        after an out-of-memory error."""
        lines = traceback.format_exception(exc)
        self.result["errors"][what] = {
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": "".join(lines[-6:])[-4000:],
        }
        print(f"ERROR in {what}: {type(exc).__name__}: {exc}", flush=True)
        if self.device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()

    def step(self, name: str, run) -> None:
        """Run one step; an exception is recorded, the result saved, and the next step runs."""
        try:
            run()
        except Exception as exc:
            self.error(name, exc)
        self.save()

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        (self.out / "gpu_check.json").write_text(
            json.dumps(self.result, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        (self.out / "summary.md").write_text(summary(self.result), encoding="utf-8")

    # ---- steps ---------------------------------------------------------------------------------
    def tests(self) -> None:
        if self.args.skip_tests:
            self.skip("tests", "--skip-tests")
            return
        print("running pytest -m cuda tests/cuda ...", flush=True)
        tests = run_tests(self.out, timeout=min(self.args.tests_timeout, self.left()))
        self.result["tests"] = tests
        print(f"tests: {tests['counts']} (exit {tests['exit_code']})", flush=True)
        self.save()

    def ceiling(self) -> None:
        sizes = (4096, 8192) if self.device.type == "cuda" else (256, 512)
        gflops = matmul_ceiling(torch.bfloat16, self.device, min_seconds=0.3, sizes=sizes)
        info = {
            "bf16_matmul_gflops": round(gflops, 1),
            "bf16_matmul_tflops": round(gflops / 1e3, 3),
            "sizes": list(sizes),
        }
        if self.device.type == "cuda":
            peak = gpu_bf16_peak(torch.cuda.get_device_name(self.device))
            info["bf16_datasheet_tflops"] = peak and round(peak / 1e12, 1)
        self.result["ceiling"] = info
        print(f"bf16 matmul ceiling: {info}", flush=True)
        self.save()

    def load(self) -> None:
        model_dir, random_weights = ensure_model(
            BenchConfig(model=self.args.model, size=self.args.size)
        )
        self.model_dir = model_dir
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(model_dir))
        inter, hidden = config.intermediate_size, config.hidden_size
        layers = config.num_hidden_layers
        head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
        q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
        per_layer = hidden * (q + 2 * kv) + q * hidden + 3 * hidden * inter
        self.flop_per_token = 2.0 * per_layer * layers  # linear layers, no attention, no head
        self.result["model"] = {
            "path": str(model_dir),
            "size": self.args.size if random_weights else None,
            "random_weights": random_weights,
            "flop_per_token": self.flop_per_token,
        }
        self.contenders = {}
        max_length = max(self.lengths) + 512
        for name in self.args.contenders:
            try:
                contender = make_contender(
                    name,
                    model_dir,
                    device=str(self.device),
                    dtype=self.args.dtype,
                    max_length=max_length,
                    instruction=SEED_INSTRUCTION,
                    batch_size=self.args.batch_size,
                )
            except Unavailable as exc:
                self.skip(name, str(exc))
                continue
            except Exception as exc:  # a version of its library that does not fit, say
                self.error(f"load {name}", exc)
                continue
            self.contenders[name] = contender
            self.result.setdefault("load_seconds", {})[name] = round(contender.load_seconds, 2)
            print(f"loaded {name} ({contender.load_seconds:.1f} s)", flush=True)
        if "finerank" not in self.contenders:
            raise RuntimeError("finerank did not load: nothing to measure")
        self.finerank = self.contenders["finerank"]
        self.tokenizer = self._finerank_reranker().backend.tokenizer
        self.source = source_text()
        self.save()

    def _finerank_reranker(self):
        return self.finerank.handle

    def _timed(self, contender, docs) -> tuple[list[float], float, float]:
        _sync(self.device)
        with PeakMemory(self.device) as mem:
            started = time.perf_counter()
            scores = contender.score(SEED_QUERY, docs, SEED_INSTRUCTION)
            _sync(self.device)
            seconds = time.perf_counter() - started
        # PeakMemory resets the allocator's peak: the whole run's peak is the max over runs
        self.peak_mb = max(self.peak_mb, mem.peak_mb)
        return scores, seconds, mem.delta_mb

    def throughput(self) -> None:
        self.result["throughput"] = []
        for length in self.lengths:
            try:
                self._throughput_point(length, self.result["throughput"])
            except Exception as exc:  # the next length may still run
                self.error(f"throughput at {length} tokens", exc)
            self.save()

    def _throughput_point(self, length: int, rows: list) -> None:
        reranker = self._finerank_reranker()
        count = max(2, self.args.tokens_per_point // length)
        docs = synthetic_documents(self.tokenizer, self.source, length, count)
        prepared = reranker.engine.prepare(SEED_QUERY, docs, instruction=SEED_INSTRUCTION)
        tokens = prepared.num_tokens
        computed = decoder_flops(
            reranker.backend.decoder_model.config,
            pack_segments(reranker.engine.plan(prepared.items)),
        )["total"]
        row: dict = {"length": length, "pairs": count, "tokens": tokens, "contenders": {}}
        for name, contender in self.contenders.items():  # warm-up (kernels, allocator)
            if self.left() < 30:
                break
            try:
                contender.score(SEED_QUERY, docs[: min(4, count)], SEED_INSTRUCTION)
            except Exception as exc:
                self.error(f"{name} warm-up at {length} tokens", exc)
        samples: dict[str, list[tuple[float, float]]] = {n: [] for n in self.contenders}
        scores: dict[str, list[float]] = {}
        for round_number in range(self.args.rounds):
            names = list(self.contenders)
            if round_number % 2:
                names.reverse()
            for name in names:
                estimate = self._estimate(name, tokens)
                if estimate is not None and estimate > self.left():
                    self.skip(f"{name} at {length} tokens", f"~{estimate:.0f} s left to run")
                    continue
                try:
                    got, seconds, delta_mb = self._timed(self.contenders[name], docs)
                except Exception as exc:  # out of memory at 8k, say: the others go on
                    self.error(f"{name} at {length} tokens", exc)
                    continue
                samples[name].append((seconds, delta_mb))
                scores[name] = got
                print(
                    f"{length:5d} tokens x {count:4d}: {name:22s} {tokens / seconds:11.0f} "
                    f"tokens/s ({seconds:.2f} s)",
                    flush=True,
                )
        reference = scores.get("reference")
        for name, runs in samples.items():
            if not runs:
                continue
            seconds = statistics.median(s for s, _ in runs)
            entry = {
                "seconds": [round(s, 4) for s, _ in runs],
                "tokens_per_s": round(tokens / seconds, 1),
                "pairs_per_s": round(count / seconds, 2),
                "peak_memory_mb": round(max(m for _, m in runs), 1),
            }
            if reference is not None and name in scores:
                entry["max_abs_diff_vs_reference"] = max(
                    abs(a - b) for a, b in zip(scores[name], reference, strict=True)
                )
            row["contenders"][name] = entry
            self.rates[name] = tokens / seconds
        ours = row["contenders"].get("finerank")
        if ours:
            self._fractions(ours, tokens, computed)
            for name, entry in row["contenders"].items():
                if name != "finerank":
                    row.setdefault("finerank_speedup", {})[name] = round(
                        ours["tokens_per_s"] / entry["tokens_per_s"], 2
                    )
        rows.append(row)
        self.attention()

    def attention(self) -> None:
        """Which attention path finerank's decoder runs (``finerank_attention``)."""
        decoder = self._finerank_reranker().backend.decoder
        kernel = decoder._varlen is not None and decoder._use_varlen(
            self.device, self._finerank_reranker().backend.dtype
        )
        self.result["finerank_attention"] = {
            "path": "varlen" if kernel else "sdpa" if self.device.type == "cuda" else "cpu",
            "first_use_check": decoder.varlen_check,
            "tolerance": decoder.VARLEN_CHECK_TOLERANCE,
        }

    def _fractions(self, entry: dict, tokens: int, computed_flops: float) -> None:
        rate = entry["tokens_per_s"]
        ceiling = self.result.get("ceiling", {})
        measured = ceiling.get("bf16_matmul_tflops")
        sheet = ceiling.get("bf16_datasheet_tflops")
        seconds = tokens / rate
        if sheet:
            entry["fraction_of_datasheet_bf16"] = round(
                rate * self.flop_per_token / sheet / 1e12, 3
            )
        if measured:
            entry["fraction_of_measured_bf16"] = round(
                rate * self.flop_per_token / measured / 1e12, 3
            )
            entry["computed_fraction_of_measured_bf16"] = round(
                computed_flops / seconds / measured / 1e12, 3
            )

    def _estimate(self, name: str, tokens: int) -> float | None:
        rate = self.rates.get(name)
        return None if rate is None else tokens / rate

    def latency(self) -> None:
        latency: dict = {}
        self.result["latency"] = latency
        for length in self.args.latency_lengths:
            samples_n = self.args.latency_samples
            docs = synthetic_documents(self.tokenizer, self.source, length, samples_n)
            latency[str(length)] = {}
            for name, contender in self.contenders.items():
                estimate = self._estimate(name, (length + 120) * len(docs))
                if estimate is not None and 3 * estimate > self.left():
                    self.skip(f"latency of {name} at {length} tokens", "budget")
                    continue
                samples = []
                try:
                    contender.score(SEED_QUERY, docs[:1], SEED_INSTRUCTION)  # warm-up
                    for doc in docs:
                        _sync(self.device)
                        started = time.perf_counter()
                        contender.score(SEED_QUERY, [doc], SEED_INSTRUCTION)
                        _sync(self.device)
                        samples.append((time.perf_counter() - started) * 1000)
                except Exception as exc:
                    self.error(f"latency of {name} at {length} tokens", exc)
                    continue
                latency[str(length)][name] = {
                    "p50_ms": round(percentile(samples, 50), 2),
                    "p90_ms": round(percentile(samples, 90), 2),
                    "samples": len(samples),
                }
                print(f"latency {length} tokens {name}: {latency[str(length)][name]}", flush=True)
            self.save()

    def run(self) -> dict:
        self.lengths = self.args.lengths or DEFAULT_LENGTHS[self.device.type]
        self.rates: dict[str, float] = {}
        self.peak_mb = 0.0
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("no CUDA device here: pass --device cpu for the dry run")
        self.step("tests", self.tests)
        self.step("ceiling", self.ceiling)
        self.step("load", self.load)
        if "finerank" in getattr(self, "contenders", {}):
            self.step("throughput", self.throughput)
            self.step("latency", self.latency)
        if self.device.type == "cuda":
            since_last_reset = torch.cuda.max_memory_allocated(self.device) / 2**20
            self.result["gpu_memory_peak_mb"] = round(max(self.peak_mb, since_last_reset), 1)
        self.save()
        return self.result


def summary(result: dict) -> str:
    """Markdown tables of a result (what ``summary.md`` holds)."""
    env = result.get("environment", {})
    lines = [
        "# finerank GPU check",
        "",
        f"- device: {env.get('gpu') or env.get('device')}, torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}, git {env.get('git', '?')}, started {env.get('started')}",
    ]
    model = result.get("model", {})
    if model:
        lines.append(
            f"- model: {model.get('size') or model.get('path')} "
            f"({'random weights' if model.get('random_weights') else 'real weights'}), "
            f"{model.get('flop_per_token', 0) / 1e9:.4g} GFLOP/token"
        )
    ceiling = result.get("ceiling")
    if ceiling:
        lines.append(
            f"- bf16 matmul ceiling: {ceiling.get('bf16_matmul_tflops')} TFLOP/s measured"
            + (
                f", {ceiling['bf16_datasheet_tflops']} on the data sheet"
                if ceiling.get("bf16_datasheet_tflops")
                else ""
            )
        )
    tests = result.get("tests")
    if tests:
        lines.append(f"- CUDA tests: {tests['counts']} (pytest exit {tests['exit_code']})")
    attention = result.get("finerank_attention")
    if attention:
        check = attention.get("first_use_check") or {}
        detail = check.get("error") or (
            f"relative difference {check['relative_difference']:.2e} vs SDPA"
            if "relative_difference" in check
            else "not checked"
        )
        lines.append(f"- finerank attention: {attention['path']} ({detail})")
    packages = env.get("packages") or {}
    if packages:
        lines.append("- " + ", ".join(f"{n} {v}" for n, v in packages.items() if v))
    lines.append(f"- elapsed: {result.get('elapsed_s')} s")
    rows = result.get("throughput") or []
    names = sorted({n for r in rows for n in r["contenders"]}, key=_order)
    if rows:
        lines += [
            "",
            "## Throughput (tokens/s, every model-input token of every pair)",
            "",
            "| doc tokens | pairs | " + " | ".join(names) + " | finerank pairs/s "
            "| finerank fraction of bf16 (sheet / measured / computed) | max diff vs reference |",
            "|---" * (len(names) + 5) + "|",
        ]
        for r in rows:
            c = r["contenders"]
            ours = c.get("finerank", {})
            cells = [f"{c[n]['tokens_per_s']:,.0f}" if n in c else "-" for n in names]
            fractions = " / ".join(
                str(ours.get(key, "-"))
                for key in (
                    "fraction_of_datasheet_bf16",
                    "fraction_of_measured_bf16",
                    "computed_fraction_of_measured_bf16",
                )
            )
            diffs = ", ".join(
                f"{n} {c[n]['max_abs_diff_vs_reference']:.1e}"
                for n in names
                if n != "reference" and "max_abs_diff_vs_reference" in c[n]
            )
            lines.append(
                f"| {r['length']} | {r['pairs']} | "
                + " | ".join(cells)
                + f" | {ours.get('pairs_per_s', '-')} | {fractions} | {diffs or '-'} |"
            )
        lines += ["", "Peak memory above the loaded model (MB):", ""]
        for r in rows:
            parts = ", ".join(f"{n} {v['peak_memory_mb']}" for n, v in r["contenders"].items())
            lines.append(f"- {r['length']} tokens: {parts}")
    latency = result.get("latency") or {}
    if latency:
        lines += ["", "## Batch-1 latency (ms, p50 / p90)", ""]
        for length, per in latency.items():
            parts = ", ".join(f"{n} {v['p50_ms']} / {v['p90_ms']}" for n, v in per.items())
            lines.append(f"- {length} tokens: {parts}")
    if result.get("gpu_memory_peak_mb"):
        lines.append(f"\nGPU memory peak of the whole run: {result['gpu_memory_peak_mb']} MB")
    for line in result.get("skipped", []):
        lines.append(f"- {line}")
    errors = result.get("errors") or {}
    if errors:
        lines += ["", "## Errors (the run went on)", ""]
        lines += [f"- {what}: {e['error'].splitlines()[0][:300]}" for what, e in errors.items()]
    return "\n".join(lines) + "\n"


def _order(name: str) -> int:
    order = ("finerank", "reference", "sentence-transformers")
    return order.index(name) if name in order else len(order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (dry run)")
    parser.add_argument("--size", default="0.6b", choices=("0.6b", "tiny"))
    parser.add_argument("--model", default=None, help="a real model directory instead")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out")
    parser.add_argument("--lengths", default=None, help="document tokens per point")
    parser.add_argument("--tokens-per-point", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="reference / ST batch")
    parser.add_argument("--latency-lengths", default="128,1024")
    parser.add_argument("--latency-samples", type=int, default=10)
    parser.add_argument(
        "--contenders", default="finerank,reference,sentence-transformers", help="comma list"
    )
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--tests-timeout", type=float, default=180)
    parser.add_argument("--budget", type=float, default=450, help="seconds for everything")
    args = parser.parse_args(argv)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    args.dtype = args.dtype or ("bfloat16" if kind == "cuda" else "float32")
    args.lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else None
    args.latency_lengths = [int(x) for x in args.latency_lengths.split(",")]
    args.tokens_per_point = args.tokens_per_point or DEFAULT_TOKENS[kind]
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if "finerank" not in args.contenders:
        args.contenders.insert(0, "finerank")
    check = Check(args)
    try:
        check.run()
    finally:
        check.save()
        print("\n" + summary(check.result), flush=True)
    tests = check.result.get("tests")
    failed = tests and tests["exit_code"] not in (0, 5)
    return 1 if failed or check.result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
