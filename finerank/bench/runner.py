"""The finerank benchmark: the official reference code vs finerank, same inputs, same run.

Phases (each one appends to the result and, when ``on_phase`` is given, lets the caller save
partial results):

* ``dtype``: which dtype is fastest on this machine: native bf16 units (AMX / AVX512-BF16)
  and the GFLOP/s of a plain fp32 and bf16 matmul on the same threads (the ceilings the
  ``seed`` rows are compared to: ``fraction_of_ceiling``).
* ``seed``: one legal query + instruction against 50 articles of the PRC Cybersecurity Law
  (``laws/articles.jsonl``, ids ``CSL2016-*``), for every dtype: pairs/s and tokens/s of both
  implementations, their ratio, max |score difference|, peak memory, load time.
* ``agreement``: Kendall tau of the bf16 (and int8) rankings against fp32 on the seed workload.
* ``length_sweep``: documents of 128 ... 8192 tokens, both implementations.
* ``batch_sweep``: 1 ... N documents of a fixed length, both implementations.
* ``latency``: repeated batch-1 requests (p50/p90/p99).
* ``memory``: peak memory of one document of growing length (finerank only), a linear fit,
  and the largest batch of 32K-token documents that fits in the device's memory (extrapolated).

Tokens/s counts the model-input tokens of every pair (template included, nothing shared), so
both implementations are credited with the same tokens and the ratio equals the pairs/s ratio.

Progress shows as a bar on a terminal and as one line per step elsewhere. With a time budget
(``--quick``: 180 s in all, model building included) a phase whose estimated time would pass
the budget is skipped and says so; skipped phases get no plot.

Example:
    >>> from finerank.bench.runner import BenchConfig, run_bench
    >>> config = BenchConfig(model="/models/Qwen3-Reranker-0.6B", quick=True)
    >>> result = run_bench(config)  # doctest: +SKIP
    >>> result["seed"]["float32"]["ratio"]  # doctest: +SKIP
    4.1
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from finerank.bench.measure import (
    QWEN3_06B_FLOP_PER_TOKEN,
    PeakMemory,
    decoder_flops,
    gpu_bf16_peak,
    kendall_tau,
    linear_fit,
    matmul_ceiling,
    matmul_gflops,
    pack_segments,
    percentile,
    timed,
)
from finerank.bench.progress import BenchProgress
from finerank.errors import InvalidInputError

SEED_QUERY = "非法获取敌公司的服务器数据并破坏服务器，应采取什么处置措施？罚款多少？"
SEED_INSTRUCTION = (
    "请依据中国现行法律条款，判断文档是否明确提及对非法入侵行为的行政处罚或刑事责任。"
)
SEED_PREFIX = "CSL2016-"
CONTEXT_32K = 32768
# the reference keeps [batch, length, 151669] logits: cap that tensor's size
REFERENCE_LOGITS_BYTES = 6 * 2**30
_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PHASES = ("dtype", "seed", "agreement", "length_sweep", "batch_sweep", "latency", "memory")
#: the whole ``--quick`` run, model building included, in seconds
QUICK_BUDGET_S = 180.0


@dataclass
class BenchConfig:
    """What to run. ``model=None`` builds a random-weight model of ``size`` (cached)."""

    model: str | None = None
    size: str = "0.6b"
    device: str = "auto"
    #: None: fp32 and bf16 (``--quick``: bf16 only where the CPU has native bf16 units)
    dtypes: tuple[str, ...] | None = None
    data_dir: str | None = None
    seed_docs: int = 50
    lengths: tuple[int, ...] = (128, 512, 2048)
    sweep_tokens: int = 4096  # documents per length-sweep point: about this many tokens
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    batch_length: int = 256
    latency_repeats: int = 5
    memory_lengths: tuple[int, ...] = (512, 1024, 2048, 4096)
    max_batch_tokens: int = 16384
    reference: bool = True
    reference_batch_size: int = 8
    int8: bool = True
    quick: bool = False
    #: seconds for the whole run; phases that would pass it are skipped (``--quick``: 180)
    time_budget_s: float | None = None
    phases: tuple[str, ...] = PHASES
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quick:
            self.seed_docs = min(self.seed_docs, 8)
            self.lengths = tuple(x for x in self.lengths if x <= 512) or self.lengths[:1]
            self.sweep_tokens = min(self.sweep_tokens, 512)
            self.batch_sizes = tuple(x for x in self.batch_sizes if x <= 4) or (1,)
            self.batch_length = min(self.batch_length, 128)
            self.latency_repeats = min(self.latency_repeats, 3)
            self.memory_lengths = (256, *(x for x in self.memory_lengths if x <= 1024))
            self.int8 = False  # quantizing the 0.6B alone takes longer than the quick budget
            if self.time_budget_s is None:
                self.time_budget_s = QUICK_BUDGET_S
        for name in self.dtypes or ():
            if name not in _DTYPE_NAMES:
                raise InvalidInputError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
        unknown = set(self.phases) - set(PHASES)
        if unknown:
            raise InvalidInputError(f"unknown phases {sorted(unknown)}: choose from {list(PHASES)}")


def default_data_dir() -> Path:
    """``$FINERANK_BENCH_DATA``, else the data shipped in the package (``finerank/data``:
    ``laws/articles.jsonl`` holds the seed workload's Cybersecurity Law articles)."""
    env = os.environ.get("FINERANK_BENCH_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "data"


def seed_workload(data_dir: Path, count: int = 50) -> tuple[str, str, list[str], list[str]]:
    """(query, instruction, document ids, documents): the first ``count`` Cybersecurity Law
    articles of ``laws/articles.jsonl``."""
    path = data_dir / "laws" / "articles.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"seed workload data not found: {path} (pass --data DIR holding laws/articles.jsonl)"
        )
    ids, docs = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if str(record.get("id", "")).startswith(SEED_PREFIX):
            ids.append(record["id"])
            docs.append(record["text"])
    if not docs:
        raise InvalidInputError(f"{path} holds no {SEED_PREFIX}* articles")
    return SEED_QUERY, SEED_INSTRUCTION, ids[:count], docs[:count]


def synthetic_documents(tokenizer, source: str, length: int, count: int) -> list[str]:
    """``count`` different documents of about ``length`` tokens cut from ``source`` text."""
    encoded = tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    while len(offsets) < length + count:
        source = source + "\n" + source
        offsets = tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
    step = max(1, (len(offsets) - length) // max(1, count))
    docs = []
    for number in range(count):
        start = (number * step) % (len(offsets) - length)
        docs.append(source[offsets[start][0] : offsets[start + length - 1][1]])
    return docs


def ensure_model(config: BenchConfig) -> tuple[Path, bool]:
    """The model directory, building a random-weight one (cached) when none is given."""
    if config.model:
        return Path(config.model), False
    from finerank.testing import build_qwen3_reranker

    cache = Path(os.environ.get("FINERANK_BENCH_CACHE", Path.home() / ".cache" / "finerank"))
    target = cache / f"qwen3-reranker-{config.size}-random"
    if not (target / "model.safetensors").is_file():
        # realistic initialization scale for a deep model (scores do not saturate)
        build_qwen3_reranker(target, size=config.size, initializer_range=0.02, overwrite=True)
    return target, True


class _Bench:
    def __init__(
        self,
        config: BenchConfig,
        on_phase: Callable[[dict], None] | None,
        progress: BenchProgress | None = None,
    ):
        from finerank.models.hardware import cpu_bf16_support
        from finerank.models.loading import pick_device

        self.config = config
        self.on_phase = on_phase
        self.device = pick_device(config.device)
        self.notes: list[str] = []
        self.dtypes = self._resolve_dtypes(cpu_bf16_support().native)
        self.progress = progress or BenchProgress(self._planned_steps())
        # tokens/s seen so far per (implementation, dtype): what the budget estimates use
        self.rates: dict[tuple[str, str], float] = {}
        self.model_dir, random_weights = ensure_model(config)
        self.result: dict = {
            "config": {k: v for k, v in asdict(config).items() if k != "extra"},
            "environment": _environment(self.device),
            "model": {
                "path": str(self.model_dir),
                "size": config.size if random_weights else None,
                "random_weights": random_weights,
            },
            "load_seconds": {"finerank": {}, "reference": {}},
            "skipped": {},
            "notes": self.notes,
        }
        self.result["config"]["dtypes"] = list(self.dtypes)
        self.max_length = max(
            8192, max(config.memory_lengths, default=0) + 512, max(config.lengths, default=0) + 512
        )

    def _resolve_dtypes(self, native_bf16: bool) -> tuple[str, ...]:
        if self.config.dtypes is not None:
            return self.config.dtypes
        if self.device.type == "cuda":
            return ("bfloat16", "float32")
        if self.config.quick and not native_bf16:
            self.notes.append(
                "bfloat16 left out of --quick: this CPU has no native bf16 units, where bf16 "
                "runs ~8x slower than fp32 (pass --dtypes float32,bfloat16 to measure it)"
            )
            return ("float32",)
        return ("float32", "bfloat16")

    def _planned_steps(self) -> int:
        c, phases = self.config, self.config.phases
        per_run = 2 if c.reference else 1
        steps = 0
        steps += "dtype" in phases
        steps += per_run * len(self.dtypes) if "seed" in phases else 0
        steps += 1 if "agreement" in phases and c.int8 and self.device.type == "cpu" else 0
        steps += per_run * len(c.lengths) if "length_sweep" in phases else 0
        steps += per_run * len(c.batch_sizes) if "batch_sweep" in phases else 0
        steps += per_run if "latency" in phases else 0
        steps += len(c.memory_lengths) if "memory" in phases else 0
        return steps

    # ---- time budget ---------------------------------------------------------------------
    def _fits(self, phase: str, estimate_s: float | None, steps: int) -> bool:
        """Whether ``phase`` fits in what is left of the budget (unknown cost: run it)."""
        budget = self.config.time_budget_s
        if budget is None or estimate_s is None:
            return True
        left = budget - self.progress.elapsed()
        if estimate_s <= left:
            return True
        reason = (
            f"{phase} skipped: estimated {estimate_s:.0f} s, {max(0.0, left):.0f} s left of the "
            f"{budget:.0f} s budget"
        )
        self.result["skipped"][phase] = reason
        self.progress.skip(steps, reason)
        return False

    def _estimate(self, dtype: str, tokens: int, reference: bool) -> float | None:
        ours = self.rates.get(("finerank", dtype))
        if ours is None:
            return None
        seconds = tokens / ours
        if reference and self.config.reference:
            theirs = self.rates.get(("reference", dtype))
            if theirs is None:
                return None
            seconds += tokens / theirs
        return seconds

    # ---- loading -------------------------------------------------------------------------
    def finerank(self, dtype: str, quantize: str = "none"):
        from finerank import Reranker

        reranker = Reranker.from_pretrained(
            self.model_dir,
            device=str(self.device),
            dtype=dtype,
            max_length=self.max_length,
            max_batch_tokens=self.config.max_batch_tokens,
            quantize=quantize,
        )
        key = dtype if quantize == "none" else f"{dtype}+{quantize}"
        self.result["load_seconds"]["finerank"][key] = round(reranker.load_seconds, 3)
        return reranker

    def reference(self, dtype: str):
        from finerank.bench.reference import OfficialQwen3Reranker

        started = time.perf_counter()
        ref = OfficialQwen3Reranker(
            self.model_dir,
            max_length=self.max_length,
            dtype=_DTYPE_NAMES[dtype],
            device=self.device,
        )
        self.result["load_seconds"]["reference"][dtype] = round(time.perf_counter() - started, 3)
        return ref

    def reference_batch(self, length: int, dtype: str) -> int:
        per_pair = (length + 200) * 151669 * torch.finfo(_DTYPE_NAMES[dtype]).bits // 8
        return max(1, min(self.config.reference_batch_size, REFERENCE_LOGITS_BYTES // per_pair))

    # ---- one measured workload -------------------------------------------------------------
    def compare(
        self,
        reranker,
        ref,
        query,
        instruction,
        docs,
        *,
        length_hint: int,
        dtype: str,
        label: str,
    ) -> dict:
        prepared = reranker.engine.prepare(query, docs, instruction=instruction)
        tokens = prepared.num_tokens
        with self.progress.step(f"{label}: finerank"), PeakMemory(self.device) as mem:
            results, seconds = timed(
                lambda: reranker.rerank(query, docs, instruction=instruction), self.device
            )
        self.rates[("finerank", dtype)] = tokens / seconds
        ours = [0.0] * len(docs)
        for r in results:
            ours[r.index] = r.score
        row = {
            "pairs": len(docs),
            "tokens": tokens,
            "finerank": _speed(len(docs), tokens, seconds, mem),
        }
        decoder = getattr(reranker.backend, "decoder_model", None)
        if decoder is not None:  # Qwen3: the FLOPs finerank really computes (prefixes once)
            flops = decoder_flops(
                decoder.config, pack_segments(reranker.engine.plan(prepared.items))
            )
            row["finerank"]["gflop"] = round(flops["total"] / 1e9, 2)
            row["finerank"]["gflop_per_s"] = round(flops["total"] / seconds / 1e9, 2)
        if ref is not None:
            batch = self.reference_batch(length_hint, dtype)
            score = lambda: ref.scores([query] * len(docs), docs, instruction, batch_size=batch)  # noqa: E731
            with self.progress.step(f"{label}: reference"), PeakMemory(self.device) as ref_mem:
                theirs, ref_seconds = timed(score, self.device)
            self.rates[("reference", dtype)] = tokens / ref_seconds
            row["reference"] = _speed(len(docs), tokens, ref_seconds, ref_mem)
            row["reference"]["batch_size"] = batch
            row["ratio"] = round(ref_seconds / seconds, 3)
            row["max_abs_diff"] = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
            row["reference_scores"] = theirs
        row["scores"] = ours
        return row

    def _save(self) -> None:
        if self.on_phase is not None:
            self.on_phase(self.result)

    # ---- phases ----------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.progress.close()

    def _run(self) -> dict:
        phases = self.config.phases
        for note in self.notes:
            self.progress.skip(0, note)
        data_dir = Path(self.config.data_dir) if self.config.data_dir else default_data_dir()
        self.seed = seed_workload(data_dir, self.config.seed_docs)
        if "dtype" in phases:
            self.phase_dtype()
        if "seed" in phases:
            self.phase_seed()
        if "agreement" in phases:
            self.phase_agreement()
        primary = self.dtypes[0]
        if {"length_sweep", "batch_sweep", "latency", "memory"} & set(phases):
            reranker = self.finerank(primary)
            ref = self.reference(primary) if self.config.reference else None
            source = "\n".join(self.seed[3])
            if ("finerank", primary) not in self.rates:  # no seed phase: measure a rate first
                query, instruction = self.seed[0], self.seed[1]
                reranker.rerank(query, self.seed[3][:2], instruction=instruction)
            if "length_sweep" in phases:
                self.phase_lengths(reranker, ref, source, primary)
            if "batch_sweep" in phases:
                self.phase_batches(reranker, ref, source, primary)
            if "latency" in phases:
                self.phase_latency(reranker, ref, source, primary)
            del ref
            gc.collect()
            if "memory" in phases:
                self.phase_memory(reranker, source, primary)
        self.result["cuda"] = self.cuda_summary()
        self.result["elapsed_s"] = round(self.progress.elapsed(), 1)
        self._save()
        return self.result

    def phase_dtype(self) -> None:
        from finerank.models.hardware import cpu_bf16_support

        with self.progress.step("dtype: matmul ceilings"):
            support = cpu_bf16_support()
            info: dict = {
                "native_bf16": support.native,
                "bf16_units": support.units,
                "detected_by": support.source,
                "threads": torch.get_num_threads(),
            }
            sizes = (4096, 8192) if self.device.type == "cuda" else (1024, 2048)
            seconds = 0.1 if self.config.quick else 0.3
            for name in ("float32", "bfloat16"):
                ceiling = matmul_ceiling(
                    _DTYPE_NAMES[name], self.device, min_seconds=seconds, sizes=sizes
                )
                info[f"matmul_gflops_{name}"] = round(ceiling, 1)
            ratio = info["matmul_gflops_bfloat16"] / max(info["matmul_gflops_float32"], 1e-9)
            info["bf16_matmul_speedup"] = round(ratio, 2)
            info["fastest_dtype"] = "bfloat16" if ratio > 1.1 else "float32"
            info["load_average"] = _load_average()
        self.result["dtype"] = info
        self._save()

    def _seed_size(self, reranker, docs: list[str]) -> int:
        """How many seed articles fit in half of what is left of the budget (all of them
        without a budget), estimated from the matmul ceilings before anything was timed."""
        if self.config.time_budget_s is None or len(docs) <= 2:
            return len(docs)
        query, instruction = self.seed[0], self.seed[1]
        ceilings = self.result.get("dtype") or {}
        decoder = reranker.backend.decoder_model
        config = decoder.config
        vocab_flops = 2 * config.hidden_size * config.vocab_size  # the reference's LM head
        per_token = decoder_flops(config, [(1, 1)])["linear"]
        left = self.config.time_budget_s - self.progress.elapsed()
        load = max(3.0, reranker.load_seconds)  # every other model loads about as fast
        for count in range(len(docs), 2, -1):
            prepared = reranker.engine.prepare(query, docs[:count], instruction=instruction)
            ours = decoder_flops(config, pack_segments(reranker.engine.plan(prepared.items)))
            longest = max(len(item.ids) for item in prepared.items)
            theirs = count * longest * (per_token + vocab_flops)  # left-padded batches
            seconds = 0.0
            for dtype in self.dtypes:
                gflops = ceilings.get(f"matmul_gflops_{dtype}") or matmul_gflops(
                    _DTYPE_NAMES[dtype], self.device, min_seconds=0.1
                )
                # finerank reaches ~0.4 of the ceiling on such small packs, the reference's
                # big padded batches ~0.8
                seconds += ours["total"] / (0.4 * gflops * 1e9) + load
                if self.config.reference:
                    seconds += theirs / (0.8 * gflops * 1e9) + load
            if seconds <= 0.5 * left:
                return count
        return 2

    def phase_seed(self) -> None:
        query, instruction, ids, docs = self.seed
        first = self.finerank(self.dtypes[0])
        count = self._seed_size(first, docs)
        if count < len(docs):
            self.notes.append(
                f"seed workload cut to {count} of {len(docs)} articles to fit the time budget "
                f"(measured ceilings: this machine is slow or busy now)"
            )
            self.progress.skip(0, self.notes[-1])
            ids, docs = ids[:count], docs[:count]
            self.seed = (query, instruction, ids, docs)
        self.result["seed"] = {"ids": ids, "query": query, "instruction": instruction}
        for dtype in self.dtypes:
            reranker = first if first is not None else self.finerank(dtype)
            first = None
            ref = self.reference(dtype) if self.config.reference else None
            # warm-up (first-call allocations, kernel selection) outside the timed region
            warm = [docs[0][:64], docs[-1][:32]]
            reranker.rerank(query, warm, instruction=instruction)
            if ref is not None:
                ref.scores([query] * 2, warm, instruction)
            row = self.compare(
                reranker,
                ref,
                query,
                instruction,
                docs,
                length_hint=512,
                dtype=dtype,
                label=f"seed {dtype}",
            )
            ceiling = self.result.get("dtype", {}).get(f"matmul_gflops_{dtype}")
            if ceiling and "gflop_per_s" in row["finerank"]:
                row["finerank"]["fraction_of_ceiling"] = round(
                    row["finerank"]["gflop_per_s"] / ceiling, 3
                )
            self.result["seed"][dtype] = row
            del reranker, ref
            gc.collect()
            self._save()

    def phase_agreement(self) -> None:
        seed = self.result.get("seed", {})
        agreement: dict = {}
        base = seed.get("float32", {}).get("scores")
        for dtype in self.dtypes:
            if dtype == "float32" or base is None or dtype not in seed:
                continue
            agreement[f"{dtype}_vs_float32_tau"] = kendall_tau(base, seed[dtype]["scores"])
            agreement[f"{dtype}_vs_float32_max_abs_diff"] = max(
                abs(a - b) for a, b in zip(base, seed[dtype]["scores"], strict=True)
            )
            if "reference_scores" in seed[dtype] and "reference_scores" in seed["float32"]:
                agreement[f"reference_{dtype}_vs_float32_tau"] = kendall_tau(
                    seed["float32"]["reference_scores"], seed[dtype]["reference_scores"]
                )
        tokens = seed.get("float32", {}).get("tokens", 0)
        if (
            self.config.int8
            and self.device.type == "cpu"
            and base is not None
            # quantizing costs about one fp32 seed run on top of the run itself
            and self._fits("agreement (int8)", self._estimate("float32", 2 * tokens, False), 1)
        ):
            query, instruction, _, docs = self.seed
            with self.progress.step("agreement: int8"):
                reranker = self.finerank("float32", quantize="int8")
                reranker.rerank(query, docs[:2], instruction=instruction)
                with PeakMemory(self.device) as mem:
                    results, seconds = timed(
                        lambda: reranker.rerank(query, docs, instruction=instruction),
                        self.device,
                    )
            scores = [0.0] * len(docs)
            for r in results:
                scores[r.index] = r.score
            agreement["int8"] = _speed(len(docs), tokens, seconds, mem)
            agreement["int8_vs_float32_tau"] = kendall_tau(base, scores)
            agreement["int8_vs_float32_max_abs_diff"] = max(
                abs(a - b) for a, b in zip(base, scores, strict=True)
            )
            k = max(1, min(10, len(scores) // 2))  # top-k of all k items would always agree
            agreement["int8_top_k"] = k
            agreement["int8_top_k_overlap"] = len(set(_top(base, k)) & set(_top(scores, k))) / k
            del reranker
            gc.collect()
        if agreement:
            self.result["agreement"] = agreement
        self._save()

    def _sweep_tokens(self, reranker, query, instruction, docs_list) -> int:
        return sum(
            reranker.engine.prepare(query, docs, instruction=instruction).num_tokens
            for docs in docs_list
        )

    def phase_lengths(self, reranker, ref, source: str, dtype: str) -> None:
        query, instruction = self.seed[0], self.seed[1]
        workloads = []
        for length in self.config.lengths:
            count = max(1, self.config.sweep_tokens // length)
            workloads.append(
                (length, synthetic_documents(reranker.backend.tokenizer, source, length, count))
            )
        self._sweep("length_sweep", "length", workloads, reranker, ref, query, instruction, dtype)

    def phase_batches(self, reranker, ref, source: str, dtype: str) -> None:
        query, instruction = self.seed[0], self.seed[1]
        workloads = [
            (
                batch,
                synthetic_documents(
                    reranker.backend.tokenizer, source, self.config.batch_length, batch
                ),
            )
            for batch in self.config.batch_sizes
        ]
        self._sweep(
            "batch_sweep", "batch_size", workloads, reranker, ref, query, instruction, dtype
        )

    def _sweep(self, phase, key, workloads, reranker, ref, query, instruction, dtype) -> None:
        per_run = 2 if ref is not None else 1
        rows = []
        for number, (value, docs) in enumerate(workloads):
            tokens = self._sweep_tokens(reranker, query, instruction, [docs])
            estimate = self._estimate(dtype, tokens, ref is not None)
            left = len(workloads) - number
            if not self._fits(f"{phase} from {key} {value}", estimate, per_run * left):
                break
            row = self.compare(
                reranker,
                ref,
                query,
                instruction,
                docs,
                length_hint=value if key == "length" else self.config.batch_length,
                dtype=dtype,
                label=f"{phase.replace('_', ' ')} {value}",
            )
            row[key] = value
            rows.append(_strip_scores(row))
            self.result[phase] = rows
            self._save()

    def phase_latency(self, reranker, ref, source: str, dtype: str) -> None:
        query, instruction = self.seed[0], self.seed[1]
        docs = synthetic_documents(
            reranker.backend.tokenizer,
            source,
            self.config.batch_length,
            self.config.latency_repeats,
        )
        tokens = self._sweep_tokens(reranker, query, instruction, [[d] for d in docs])
        per_run = 2 if ref is not None else 1
        if not self._fits("latency", self._estimate(dtype, tokens, ref is not None), per_run):
            return
        latency: dict = {"document_tokens": self.config.batch_length}
        runs = {"finerank": lambda d: reranker.rerank(query, [d], instruction=instruction)}
        if ref is not None:
            runs["reference"] = lambda d: ref.scores([query], [d], instruction, batch_size=1)
        for name, call in runs.items():
            with self.progress.step(f"latency: {name}"):
                seconds = [timed(lambda d=d, c=call: c(d), self.device)[1] * 1000 for d in docs]
            latency[name] = {
                "p50_ms": percentile(seconds, 50),
                "p90_ms": percentile(seconds, 90),
                "p99_ms": percentile(seconds, 99),
                "samples_ms": seconds,
            }
        self.result["latency"] = latency
        self._save()

    def phase_memory(self, reranker, source: str, dtype: str) -> None:
        query, instruction = self.seed[0], self.seed[1]
        workloads = [
            synthetic_documents(reranker.backend.tokenizer, source, length, 1)
            for length in self.config.memory_lengths
        ]
        tokens = self._sweep_tokens(reranker, query, instruction, workloads)
        if not self._fits("memory", self._estimate(dtype, tokens, False), len(workloads)):
            return
        # page every weight in first: on CPU the measure is process RSS, and weights mapped
        # from the safetensors file would otherwise count as growth
        reranker.rerank(
            query,
            synthetic_documents(reranker.backend.tokenizer, source, 64, 1),
            instruction=instruction,
        )
        points = []
        for length, docs in zip(self.config.memory_lengths, workloads, strict=True):
            tokens = reranker.engine.prepare(query, docs, instruction=instruction).num_tokens
            gc.collect()
            with self.progress.step(f"memory {length}"), PeakMemory(self.device) as mem:
                _, seconds = timed(
                    lambda d=docs: reranker.rerank(query, d, instruction=instruction),
                    self.device,
                )
            points.append(
                {
                    "length": length,
                    "tokens": tokens,
                    "peak_mb": round(mem.peak_mb, 1),
                    "delta_mb": round(mem.delta_mb, 1),
                    "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds, 2),
                }
            )
            self.result["memory"] = {"points": points}
            self._save()
        slope, intercept, r2 = linear_fit(
            [p["tokens"] for p in points], [p["delta_mb"] for p in points]
        )
        memory = self.result["memory"]
        memory.update(mb_per_token=slope, intercept_mb=intercept, linear_r2=r2)
        available = _available_memory_mb(self.device)
        model_mb = points[0]["peak_mb"] - points[0]["delta_mb"] if points else 0.0
        per_doc = slope * CONTEXT_32K + max(intercept, 0.0)
        memory["available_mb"] = available
        # extrapolated from the linear fit; one 32K document is one sequence of 32,768 tokens.
        # No growth measured (tiny models, allocator reuse) means no meaningful estimate.
        memory["largest_batch_32k"] = (
            max(0, int((available - model_mb) // per_doc)) if available and slope > 0 else None
        )
        memory["largest_batch_32k_note"] = (
            "extrapolated: (available memory - model) / (fitted MB per token x 32768)"
        )
        self._save()

    def cuda_summary(self) -> dict:
        if self.device.type != "cuda":
            return {
                "measured": False,
                "reason": "no CUDA device on this machine: GPU tokens/s not measured",
            }
        name = torch.cuda.get_device_name(self.device)
        peak = gpu_bf16_peak(name)
        best = max(
            (row["finerank"]["tokens_per_s"] for row in self.result.get("length_sweep", [])),
            default=None,
        )
        summary = {
            "measured": True,
            "gpu": name,
            "bf16_peak_tflops": peak and peak / 1e12,
            "flop_per_token": QWEN3_06B_FLOP_PER_TOKEN,
            "best_tokens_per_s": best,
        }
        if peak and best:
            summary["tokens_per_s_limit"] = peak / QWEN3_06B_FLOP_PER_TOKEN
            summary["fraction_of_limit"] = best / summary["tokens_per_s_limit"]
        return summary


def _top(scores: list[float], k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def _strip_scores(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("scores", "reference_scores")}


def _speed(pairs: int, tokens: int, seconds: float, mem: PeakMemory) -> dict:
    return {
        "seconds": round(seconds, 4),
        "pairs_per_s": round(pairs / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2),
        "peak_mb": round(mem.peak_mb, 1),
        "delta_mb": round(mem.delta_mb, 1),
    }


def _available_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _load_average() -> list[float] | None:
    if hasattr(os, "getloadavg"):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _environment(device: torch.device) -> dict:
    env = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    env["load_average_at_start"] = _load_average()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:  # what every model loaded on CPU does first, here before the first load
        from finerank.models.allocator import keep_buffers_in_heap

        env["allocator"] = keep_buffers_in_heap()
    return env


def run_bench(
    config: BenchConfig,
    on_phase: Callable[[dict], None] | None = None,
    progress: BenchProgress | None = None,
) -> dict:
    """Run the benchmark phases of ``config``; ``on_phase(result)`` after each one.

    Args:
        config: what to run.
        on_phase: called with the partial result after every phase (e.g. to write a report).
        progress: where progress goes (default: a bar on a terminal, lines elsewhere).

    Returns:
        The result dictionary (what ``bench.json`` holds).
    """
    return _Bench(config, on_phase, progress).run()
