"""Benchmark the first-stage store: Qdrant Edge (embedded) vs the first store (local mode).

One command runs everything and writes ``benchmarks/results/<date>-retrieval/`` (JSON, a
``summary.md`` with the targets, PNG plots)::

    python benchmarks/bench_retrieval.py                 # 10k, 100k, 1M chunks; 384 and 1024 dims
    python benchmarks/bench_retrieval.py --quick         # CI-size: a few thousand chunks

Corpus: the STARD statute corpus (10,414 articles) and the PRC law articles, then synthetic
articles made of their clauses drawn at random (as many clauses as a random real article:
the real lengths, unigram and bigram frequencies), with a ``group`` metadata field of 10
values for filtered queries. Queries:
STARD's layperson questions (BM25 query vectors through finerank's analyzer) and random unit
vectors as dense queries; dense document vectors are random unit vectors too.

Per size and store, each in a fresh process (so RSS is the store's alone):

- ``ingest bm25`` (Edge only, sizes up to ``--tokenize-max``): ``ingest_documents`` end to
  end, BM25 only: chunking, analysis (worker processes), upserts, ``optimize()``;
- ``ingest vectors``: points with precomputed sparse + dense vectors, upserted and optimized;
- ``query``: open the store, then p50/p95 latency of single queries (bm25, dense, hybrid,
  filtered bm25, filtered hybrid; ``limit`` 100), batch queries/s (``query_batch`` of 64),
  RSS after the queries, disk size;
- ``breakdown`` (BM25-only collections, ``--no-breakdown`` skips it): CPU time of each ingest
  stage (chunking, analysis, vectors, Edge writes, optimize) and of each part of a BM25 query
  (analyzer, Qdrant's search, payload fetch, payloads to Python, the store's own code).

The first store (qdrant-client local mode, ``ClientStore.local``) runs the same phases up to
``--old-max`` chunks with a time budget per mode. ``--parity`` also compares BM25 on all 225
Cranfield queries between the two. The machine may be shared: every result records the load
average (``uptime``) when it was measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
TARGETS = {  # issue 10, on 2 cores
    ("bm25", 10_000): 2.0,
    ("bm25", 100_000): 5.0,
    ("bm25", 1_000_000): 20.0,
    ("hybrid", 1_000_000): 30.0,
}
INGEST_TARGET = 3000.0  # BM25-only chunks/s, tokenization included
MODES = ("bm25", "dense", "hybrid", "bm25+filter", "hybrid+filter")
GROUPS = 10


def load_average() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"load1": one, "load5": five, "load15": fifteen, "uptime": uptime}


def rss_mb() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": values.get("VmRSS", 0.0), "peak_rss_mb": values.get("VmHWM", 0.0)}


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (analysis workers)."""
    import resource

    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def disk_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total / 2**20


# --- corpus --------------------------------------------------------------------------------


def real_articles(data: Path) -> list[str]:
    texts = []
    with gzip.open(data / "stard" / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            texts.append(f"{record.get('title', '')}\n{record['text']}".strip())
    for line in (data / "laws" / "articles.jsonl").open(encoding="utf-8"):
        record = json.loads(line)
        texts.append(f"{record['law']} {record['article_cn']}\n{record['text']}")
    return texts


_CLAUSE = re.compile(r".+?(?:[，。；：！？、\n]+|$)", re.S)


def clauses(text: str) -> list[str]:
    """``text`` cut after its Chinese punctuation; each piece ends in punctuation (a final
    one gets a 。), so the analyzer's terms of pieces joined are their terms in order."""
    pieces = [piece for piece in _CLAUSE.findall(text) if piece.strip()]
    if pieces and not re.search(r"[，。；：！？、\n]$", pieces[-1]):
        pieces[-1] += "。"
    return pieces


class Corpus:
    """``size`` articles: the real ones, then synthetic ones made of their clauses.

    A synthetic article has as many clauses as a real article drawn at random, each clause
    drawn from all the real articles' clauses: term frequencies (unigrams *and* bigrams),
    lengths and the share of function words are those of the real corpus, and each article's
    analyzed terms are known without analyzing it (its clauses' terms, joined).
    """

    def __init__(self, data: Path, size: int, seed: int = 0):
        from finerank.retrieval.bm25 import analyze

        real = real_articles(data)
        self.size = size
        self.real = real[:size]
        # the clauses of every real article (of up to 3,000 for a tiny run)
        source = real if size > len(real) else real[: min(len(real), max(size, 500), 3000)]
        split = [clauses(text) for text in source]
        self.clause_counts = np.array([max(1, len(pieces)) for pieces in split])
        self.clauses = [piece for pieces in split for piece in pieces]
        self.clause_terms = [analyze(piece) for piece in self.clauses]
        self.seed = seed

    def batches(self, batch: int, *, texts: bool = True):
        """(first index, texts, groups, term lists or None for real texts), deterministic;
        ``texts=False`` skips writing the synthetic texts (same draws, empty strings)."""
        build = texts
        rng = np.random.default_rng(self.seed)
        for first in range(0, self.size, batch):
            count = min(batch, self.size - first)
            real = max(0, min(count, len(self.real) - first))
            lengths = rng.choice(self.clause_counts, size=count - real)
            picks = rng.integers(0, len(self.clauses), size=int(lengths.sum()))
            texts = list(self.real[first : first + real])
            terms_of: list[list[str] | None] = [None] * real
            offset = 0
            for length in lengths:
                chosen = picks[offset : offset + length]
                offset += length
                terms_of.append([term for j in chosen for term in self.clause_terms[j]])
                texts.append("".join(self.clauses[j] for j in chosen) if build else "")
            groups = [f"g{(first + i) % GROUPS}" for i in range(count)]
            yield first, texts, groups, terms_of


def queries(data: Path, count: int) -> list[str]:
    lines = (data / "stard" / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:count]]


def unit_vectors(rng, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


# --- phases (each runs in a fresh process) -------------------------------------------------


def open_store(kind: str, path: Path):
    from finerank.retrieval.store.client import ClientStore
    from finerank.retrieval.store.edge import EdgeStore

    return EdgeStore(path) if kind == "edge" else ClientStore.local(path)


def payload(index: int, text: str, group: str) -> dict[str, Any]:
    chunk = f"{index:032x}"
    return {
        "chunk_id": chunk,
        "text": text,
        "context": "",
        "source": f"bench#{index}",
        "file": f"bench/{index // 1000}.jsonl",
        "start": 0,
        "end": len(text),
        "chunk_index": 0,
        "metadata": {"group": group},
    }


SERVICE_MODE = "bm25 service"  # SearchService.recall: analyzer + document context (default)


def _service_bm25(store, texts: list[str], budget_s: float) -> dict[str, Any]:
    """BM25 recall as the search service serves it (query analysis included): with the
    default document context, a 1,000-deep pass of ``file``/``source`` payloads, then the
    whole payloads of the 100 hits kept."""
    from finerank.retrieval.search import SearchService

    service = SearchService(store)
    for text in texts[:10]:
        service.recall("bench", text, mode="bm25", recall_k=100)
    latencies, cpu_ms, hits = [], [], 0
    started = time.perf_counter()
    for text in texts:
        t0, c0 = time.perf_counter(), time.process_time()
        hits += len(service.recall("bench", text, mode="bm25", recall_k=100))
        latencies.append((time.perf_counter() - t0) * 1000)
        cpu_ms.append((time.process_time() - c0) * 1000)
        if time.perf_counter() - started > budget_s:
            break
    batch = texts[:64]
    t0 = time.perf_counter()
    service.recall_batch("bench", batch, mode="bm25", recall_k=100)
    return {
        "queries": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p95_ms": float(np.percentile(latencies, 95)),
        "p50_cpu_ms": statistics.median(cpu_ms),
        "mean_hits": hits / len(latencies),
        "batch_qps": len(batch) / (time.perf_counter() - t0),
        "batch_size": len(batch),
    }


def phase_ingest_bm25(data: Path, size: int, path: Path) -> dict[str, Any]:
    """``ingest_documents``, BM25 only: the product's ingest path, tokenization included."""
    from finerank.retrieval.chunkers import Document, get_chunker
    from finerank.retrieval.ingest import ingest_documents

    corpus = Corpus(data, size)
    documents = []
    for first, texts, groups, _ in corpus.batches(10_000):
        for offset, (text, group) in enumerate(zip(texts, groups, strict=True)):
            index = first + offset
            documents.append(
                Document(f"bench#{index}", text, {"group": group}, f"bench/{index // 1000}.jsonl")
            )
    load = load_average()
    store = open_store("edge", path)
    started, cpu = time.perf_counter(), cpu_seconds()
    report = ingest_documents(
        documents, store=store, collection="bench", chunker=get_chunker("window"), batch_size=512
    )
    seconds = time.perf_counter() - started
    store.close()
    cpu = cpu_seconds() - cpu
    return {
        "phase": "ingest bm25",
        "chunks": report.added,
        "seconds": seconds,
        "cpu_s": cpu,
        "chunks_per_s": report.added / seconds,
        "chunks_per_cpu_s": report.added / cpu,
        "disk_mb": disk_mb(path),
        **rss_mb(),
        "load": load,
    }


def phase_ingest_vectors(kind: str, data: Path, size: int, dim: int, path: Path) -> dict:
    """Points with precomputed vectors (sparse from the analyzer, dense random)."""
    from finerank.retrieval.bm25 import Bm25Encoder, token_id
    from finerank.retrieval.bm25_pool import term_counts
    from finerank.retrieval.store import CollectionSpec, StoredPoint

    corpus = Corpus(data, size)
    real_counts = term_counts(corpus.real)  # the real articles' analyzed terms
    lengths = [count.length for count in real_counts]
    for _, _, _, terms_of in corpus.batches(1024, texts=False):  # the draws used below
        lengths.extend(len(terms) for terms in terms_of if terms is not None)
    average = max(1.0, sum(lengths) / len(lengths))
    encoder = Bm25Encoder(average)
    spec = CollectionSpec(f"random-{dim}" if dim else None, dim or None, {"name": "bench"}, average)
    rng = np.random.default_rng(1)
    load = load_average()
    store = open_store(kind, path)
    store.create("bench", spec)
    started, cpu = time.perf_counter(), cpu_seconds()
    for first, texts, groups, terms_of in corpus.batches(1024):
        dense = unit_vectors(rng, len(texts), dim) if dim else [None] * len(texts)
        points = []
        for offset, (text, group, terms) in enumerate(zip(texts, groups, terms_of, strict=True)):
            index = first + offset
            if terms is None:
                count = real_counts[index]
                sparse = encoder.vector_from_counts(count.length, count.indices, count.frequencies)
            else:
                ordered = sorted(Counter(token_id(t) for t in terms).items())
                sparse = encoder.vector_from_counts(
                    len(terms), [t for t, _ in ordered], [f for _, f in ordered]
                )
            points.append(
                StoredPoint(f"{index:032x}", payload(index, text, group), sparse, dense[offset])
            )
        store.upsert("bench", points)
    upserted = time.perf_counter()
    store.optimize("bench")
    finished = time.perf_counter()
    store.close()
    cpu = cpu_seconds() - cpu
    return {
        "phase": "ingest vectors",
        "cpu_s": cpu,
        "chunks_per_cpu_s": size / cpu,
        "chunks": size,
        "upsert_s": upserted - started,
        "optimize_s": finished - upserted,
        "seconds": finished - started,
        "chunks_per_s": size / (finished - started),
        "disk_mb": disk_mb(path),
        **rss_mb(),
        "load": load,
    }


def phase_query(
    kind: str, data: Path, path: Path, dim: int | None, count: int, budget_s: float
) -> dict[str, Any]:
    from finerank.retrieval.bm25 import Bm25Encoder
    from finerank.retrieval.store import StoreQuery

    texts = queries(data, count)
    sparse = [Bm25Encoder.query_vector(text) for text in texts]
    rng = np.random.default_rng(7)
    dense = unit_vectors(rng, len(texts), dim) if dim else [None] * len(texts)
    load = load_average()
    before = rss_mb()["rss_mb"]  # the analyzer (jieba's dictionary) and Python already
    started = time.perf_counter()
    store = open_store(kind, path)
    store.info("bench")
    opened = time.perf_counter() - started
    modes = MODES if dim else ("bm25", "bm25+filter")
    results: dict[str, Any] = {}
    for mode in modes:
        base, _, filtered = mode.partition("+")
        filters = {"group": "g3"} if filtered else None
        requests = [
            StoreQuery(base, 100, s, d, filters)  # type: ignore[arg-type]
            for s, d in zip(sparse, dense, strict=True)
        ]
        for request in requests[: min(10, len(requests))]:  # warm-up (and payload indexes)
            store.query_batch("bench", [request])
            if time.perf_counter() - started > budget_s:
                break
        latencies, cpu_ms, hits = [], [], 0
        mode_started = time.perf_counter()
        for request in requests:
            t0, c0 = time.perf_counter(), time.process_time()
            hits += len(store.query_batch("bench", [request])[0])
            latencies.append((time.perf_counter() - t0) * 1000)
            cpu_ms.append((time.process_time() - c0) * 1000)
            if time.perf_counter() - mode_started > budget_s:
                break
        median_ms = statistics.median(latencies)
        # 64 queries a batch, fewer where they would not fit the time budget (the first store)
        size = max(2, min(64, int(budget_s * 1000 / max(median_ms, 1e-3) / 2)))
        batch = requests[:size]
        t0 = time.perf_counter()
        rounds = 0
        while rounds < 3 and (rounds == 0 or time.perf_counter() - t0 < budget_s / 4):
            store.query_batch("bench", batch)
            rounds += 1
        batch_qps = rounds * len(batch) / (time.perf_counter() - t0)
        results[mode] = {
            "queries": len(latencies),
            "p50_ms": statistics.median(latencies),
            "p95_ms": float(np.percentile(latencies, 95)),
            "p50_cpu_ms": statistics.median(cpu_ms),
            "mean_hits": hits / len(latencies),
            "batch_qps": batch_qps,
            "batch_size": len(batch),
        }
    if kind == "edge":  # the first store: the 1,000-deep pass would take the whole budget
        results[SERVICE_MODE] = _service_bm25(store, texts, budget_s)
    memory = rss_mb()
    store.close()
    return {
        "phase": "query",
        "open_s": opened,
        "rss_before_open_mb": before,
        "modes": results,
        **memory,
        "disk_mb": disk_mb(path),
        "load": load,
        "load_after": load_average(),
    }


BREAKDOWN_MAX_DOCUMENTS = 20_000  # the serial ingest breakdown chunks this many articles at most


def _cpu_per_item_us(function, count: int) -> tuple[Any, float]:
    started = time.process_time()
    value = function()
    return value, (time.process_time() - started) / max(count, 1) * 1e6


def phase_breakdown(data: Path, size: int, path: Path, count: int) -> dict[str, Any]:
    """Where the time goes, in CPU time, each stage on its own in this one process.

    Ingest (BM25 only, the chunks of the first ``BREAKDOWN_MAX_DOCUMENTS`` articles, serially):
    chunking, analysis, BM25 vectors, Edge writes (conversion + update), ``optimize()``.
    Query (the BM25-only collection at ``path``, ``count`` STARD questions): the analyzer,
    Qdrant Edge's sparse search without payloads, the payload fetch, the payloads' conversion
    to Python, and the store's own code around them (``store.query`` minus the rest).
    """
    import qdrant_edge as q

    from finerank.retrieval.bm25 import Bm25Encoder, analyze
    from finerank.retrieval.bm25_pool import count_terms
    from finerank.retrieval.chunkers import Document, get_chunker
    from finerank.retrieval.ingest import build_points, chunk_records
    from finerank.retrieval.segmentation import _load
    from finerank.retrieval.store import CollectionSpec, StoreQuery
    from finerank.retrieval.store.edge import SPARSE

    _load()  # the segmenter's dictionary is not part of any stage
    load = load_average()
    corpus = Corpus(data, min(size, BREAKDOWN_MAX_DOCUMENTS))
    documents = [
        Document(f"bench#{first + i}", text, {"group": group}, f"bench/{(first + i) // 1000}.jsonl")
        for first, texts, groups, _ in corpus.batches(10_000)
        for i, (text, group) in enumerate(zip(texts, groups, strict=True))
    ]
    chunker = get_chunker("window")
    records, chunking = _cpu_per_item_us(
        lambda: [r for d in documents for r in chunk_records(d, chunker)], len(documents)
    )
    n = len(records)
    counts, analysis = _cpu_per_item_us(lambda: [count_terms(r.indexed_text) for r in records], n)
    encoder = Bm25Encoder(max(1.0, sum(c.length for c in counts) / n))
    batches = range(0, n, 512)
    points, vectors = _cpu_per_item_us(
        lambda: [
            build_points(records[i : i + 512], encoder, None, counts[i : i + 512]) for i in batches
        ],
        n,
    )
    scratch = path.parent / f"{path.name}-breakdown"
    store = open_store("edge", scratch)
    store.create("bench", CollectionSpec(None, None, chunker.config(), encoder.avg_doc_length))
    _, writes = _cpu_per_item_us(lambda: [store.upsert("bench", batch) for batch in points], n)
    _, optimize = _cpu_per_item_us(lambda: store.optimize("bench"), n)
    store.close()
    shutil.rmtree(scratch, ignore_errors=True)
    ingest = {
        "chunks": n,
        "chunking_us": chunking,
        "analysis_us": analysis,
        "vectors_us": vectors,
        "edge_writes_us": writes,
        "optimize_us": optimize,
        "total_us": chunking + analysis + vectors + writes + optimize,
    }

    texts = queries(data, count)
    for text in texts[:10]:
        analyze(text)
    sparse = [Bm25Encoder.query_vector(text) for text in texts]
    store = open_store("edge", path)
    store.info("bench")
    shard = store._shard("bench")

    def raw(vector, payload: bool):
        query = q.Query.Nearest(q.SparseVector(vector.indices, vector.values), using=SPARSE)
        return shard.query(q.QueryRequest(limit=100, query=query, with_payload=payload))

    request = [StoreQuery("bm25", 100, vector, None, None) for vector in sparse]
    stages = {
        "analyzer": lambda i: Bm25Encoder.query_vector(texts[i]),
        "ids": lambda i: raw(sparse[i], False),
        "payload": lambda i: raw(sparse[i], True),
        "convert": lambda i: [point.payload for point in results[i]],
        "store": lambda i: store.query_batch("bench", [request[i]]),
    }
    # each stage over all queries, 3 rounds in turn: the least CPU of a round is the one the
    # other processes disturbed least; mean per query
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(3):
        results = [raw(vector, True) for vector in sparse]  # fresh: a payload converts once
        for key, stage in stages.items():
            started = time.process_time()
            for i in range(len(texts)):
                stage(i)
            best[key] = min(best[key], (time.process_time() - started) * 1000 / len(texts))
    store.close()
    query = {
        "queries": len(texts),
        "terms_p50": statistics.median(len(v.indices) for v in sparse),
        "analyzer_ms": best["analyzer"],
        "search_ms": best["ids"],
        "payload_fetch_ms": best["payload"] - best["ids"],
        "payload_convert_ms": best["convert"],
        "store_glue_ms": best["store"] - best["payload"] - best["convert"],
        "store_query_ms": best["store"],
        "service_bm25_ms": best["analyzer"] + best["store"],
    }
    return {"phase": "breakdown", "ingest": ingest, "query": query, "load": load}


def phase_parity(data: Path, path: Path) -> dict[str, Any]:
    """BM25 on Cranfield, all 225 queries: Edge vs the first store."""
    from finerank.retrieval.chunkers import get_chunker
    from finerank.retrieval.ingest import ingest
    from finerank.retrieval.search import SearchService

    root = data / "cranfield"
    texts = [json.loads(line)["text"] for line in (root / "queries.jsonl").open()]
    runs, seconds = {}, {}
    for kind in ("edge", "local-mode"):
        store = open_store(kind, path / kind)
        ingest(
            [root / "corpus.jsonl"],
            store=store,
            collection="c",
            chunker=get_chunker("window"),
            batch_size=512,
            progress=False,
        )
        started = time.perf_counter()
        runs[kind] = SearchService(store).recall_batch("c", texts, mode="bm25", recall_k=100)
        seconds[kind] = time.perf_counter() - started
        store.close()
    identical = same_set = 0
    worst = 0.0
    for new, old in zip(runs["edge"], runs["local-mode"], strict=True):
        identical += [h.chunk_id for h in new] == [h.chunk_id for h in old]
        same_set += {h.chunk_id for h in new} == {h.chunk_id for h in old}
        for a, b in zip(new, old, strict=True):
            worst = max(worst, abs(a.score - b.score) / max(abs(b.score), 1e-12))
    return {
        "phase": "parity",
        "queries": len(texts),
        "identical_order": identical,
        "same_hits": same_set,
        "max_rel_score_diff": worst,
        "seconds": seconds,
        "load": load_average(),
    }


def run_phase(function, *args) -> dict[str, Any]:
    """``function(*args)`` in a forked child: its RSS and CPU are the phase's alone."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def target() -> None:
        try:
            sender.send(("ok", function(*args)))
        except BaseException:  # report it in the parent, then fail there
            sender.send(("error", traceback.format_exc()))

    process = context.Process(target=target)
    process.start()
    sender.close()
    try:
        status, value = receiver.recv()
    except EOFError:
        status, value = "error", f"the phase process died (exit code {process.exitcode})"
    process.join()
    if status != "ok":
        raise RuntimeError(f"{function.__name__} failed:\n{value}")
    return value


# --- report --------------------------------------------------------------------------------


def summarize(results: dict[str, Any]) -> str:
    lines = [
        f"# Retrieval store benchmark ({results['date']})",
        "",
        f"`{results['command']}` on {results['machine']}. Load average at start: "
        f"`{results['load_start']['uptime']}`; at end: `{results['load_end']['uptime']}`.",
        "The machine is shared: each row's load average is the one when it ran. Latency is",
        "one `store.query` call (limit 100, payloads included) as the search service makes it;",
        "batch = `query_batch` of 64 (fewer for the first store where 64 do not fit the time",
        "budget). Dense vectors and dense queries are random unit vectors. CPU ms is the",
        "process CPU time of one query (all threads): the cost on a machine without other load.",
        "",
        "## Queries",
        "",
        "| chunks | dim | store | mode | p50 ms | p95 ms | p50 CPU ms | batch q/s | RSS MB "
        "(store) | disk MB | load1 |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        query = run.get("query")
        if not query:
            continue
        for mode, row in query["modes"].items():
            lines.append(
                f"| {run['size']:,} | {run['dim'] or '-'} | {run['store']} | {mode} | "
                f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p50_cpu_ms']:.2f} | "
                f"{row['batch_qps']:.0f} | "
                f"{query['rss_mb']:.0f} ({store_rss(query)}) | {query['disk_mb']:.0f} | "
                f"{query['load']['load1']:.1f} |"
            )
    lines += [
        "",
        "## Ingest",
        "",
        "| chunks | dim | store | phase | chunks/s | chunks/CPU-s | seconds | optimize s | disk MB "
        "| peak RSS MB | load1 |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        for key in ("ingest_bm25", "ingest_vectors"):
            row = run.get(key)
            if row:
                lines.append(
                    f"| {run['size']:,} | {run['dim'] or '-'} | {run['store']} | {row['phase']} | "
                    f"{row['chunks_per_s']:.0f} | {row['chunks_per_cpu_s']:.0f} | "
                    f"{row['seconds']:.1f} | "
                    f"{row.get('optimize_s', 0):.1f} | {row['disk_mb']:.0f} | "
                    f"{row['peak_rss_mb']:.0f} | {row['load']['load1']:.1f} |"
                )
    lines += ["", "## Targets (2 cores)", "", "| target | measured | met |", "|---|---|---|"]
    for (mode, size), limit in TARGETS.items():
        rows = [
            run["query"]["modes"][mode]
            for run in results["runs"]
            if run["store"] == "edge"
            and run["size"] == size
            and run.get("query")
            and mode in run["query"]["modes"]
        ]
        if rows:
            wall = max(row["p50_ms"] for row in rows)
            cpu = max(row["p50_cpu_ms"] for row in rows)
            value = f"{wall:.2f} ms ({cpu:.2f} ms CPU), worst over dims"
            met = "yes" if wall <= limit else ("on CPU time only" if cpu <= limit else "no")
        else:
            value, met = "not run", "-"
        lines.append(f"| {mode} p50 <= {limit:g} ms at {size:,} | {value} | {met} |")
    for size in sorted({run["size"] for run in results["runs"]}):
        rows = [
            run["query"]["modes"][SERVICE_MODE]
            for run in results["runs"]
            if run["store"] == "edge"
            and run["size"] == size
            and SERVICE_MODE in run.get("query", {}).get("modes", {})
        ]
        if rows and ("bm25", size) in TARGETS:
            wall = max(row["p50_ms"] for row in rows)
            cpu = max(row["p50_cpu_ms"] for row in rows)
            limit = TARGETS[("bm25", size)]
            met = "yes" if wall <= limit else ("on CPU time only" if cpu <= limit else "no")
            lines.append(
                f"| served BM25 (`{SERVICE_MODE}`) p50 <= {limit:g} ms at {size:,} | "
                f"{wall:.2f} ms ({cpu:.2f} ms CPU), worst over dims | {met} |"
            )
    ingest = [r["ingest_bm25"]["chunks_per_s"] for r in results["runs"] if r.get("ingest_bm25")]
    value = ", ".join(f"{x:.0f}" for x in ingest) or "not run"
    met = "-" if not ingest else ("yes" if min(ingest) >= INGEST_TARGET else "no")
    lines.append(f"| BM25-only ingest >= {INGEST_TARGET:.0f} chunks/s | {value} | {met} |")
    breakdowns = [
        (run["size"], run["breakdown"]) for run in results["runs"] if run.get("breakdown")
    ]
    if breakdowns:
        lines += [
            "",
            "## Where the time goes (CPU time, each stage alone, one process)",
            "",
            "Ingest, BM25 only, per chunk (serially, on the chunks of the first "
            f"{BREAKDOWN_MAX_DOCUMENTS:,} articles at most; ingest itself runs the analysis in "
            "worker processes, in parallel with the rest):",
            "",
            "| chunks | chunking us | analysis us | vectors us | Edge writes us | optimize us "
            "| total us | chunks/CPU-s | load1 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, row in breakdowns:
            i = row["ingest"]
            lines.append(
                f"| {i['chunks']:,} (of {size:,}) | {i['chunking_us']:.0f} "
                f"| {i['analysis_us']:.0f} "
                f"| {i['vectors_us']:.0f} | {i['edge_writes_us']:.0f} | {i['optimize_us']:.0f} "
                f"| {i['total_us']:.0f} | {1e6 / i['total_us']:.0f} | {row['load']['load1']:.1f} |"
            )
        lines += [
            "",
            "BM25 query (limit 100), mean CPU ms per query of each stage (each stage over all "
            "queries, the least of 3 rounds): the analyzer, Qdrant Edge's sparse search alone, "
            "the payload fetch, the payloads' conversion to Python dicts, the store's own code "
            "(`store.query` minus those):",
            "",
            "| chunks | terms | analyzer | search | payload fetch | payload to Python | store "
            "code | store.query | analyzer + store.query | load1 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for size, row in breakdowns:
            r = row["query"]
            lines.append(
                f"| {size:,} | {r['terms_p50']:.0f} | {r['analyzer_ms']:.3f} | "
                f"{r['search_ms']:.3f} | {r['payload_fetch_ms']:.3f} | "
                f"{r['payload_convert_ms']:.3f} | {r['store_glue_ms']:.3f} | "
                f"{r['store_query_ms']:.3f} | {r['service_bm25_ms']:.3f} | "
                f"{row['load']['load1']:.1f} |"
            )
    parity = results.get("parity")
    if parity:
        lines += [
            "",
            "## BM25 parity on Cranfield (225 queries, recall 100)",
            "",
            f"Edge vs the first store: identical hit order in {parity['identical_order']} "
            f"queries, same hits in {parity['same_hits']} (the others differ only among equal "
            f"scores at the cut); largest relative score difference rank by rank "
            f"{parity['max_rel_score_diff']:.1e}. 225 queries took "
            f"{parity['seconds']['edge']:.2f} s on Edge, {parity['seconds']['local-mode']:.1f} s "
            "on the first store.",
        ]
    return "\n".join(lines) + "\n"


def store_rss(query: dict[str, Any]) -> str:
    """RSS the open store added (runs before this field existed: "?")."""
    before = query.get("rss_before_open_mb")
    return "?" if before is None else f"{query['rss_mb'] - before:.0f}"


def plot(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("bm25", "bm25+filter"), ("dense", "hybrid", "hybrid+filter"))
    keys = sorted({(r["store"], r["dim"]) for r in results["runs"] if r.get("query")}, key=str)
    for ax, mode_set in zip(axes, panels, strict=True):
        for run_key in keys:
            store, dim = run_key
            for mode in mode_set:
                points = sorted(
                    (r["size"], r["query"]["modes"][mode]["p50_ms"])
                    for r in results["runs"]
                    if (r["store"], r["dim"]) == run_key
                    and r.get("query")
                    and mode in r["query"]["modes"]
                )
                if points:
                    label = f"{store} {mode}" + (f" d{dim}" if dim else "")
                    ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chunks")
        ax.set_ylabel("p50 latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a BM25-only run has no dense panel
            ax.legend(fontsize=7)
    axes[0].set_title("BM25")
    axes[1].set_title("dense / hybrid")
    figure.tight_layout()
    figure.savefig(out / "latency.png", dpi=110)
    written.append("latency.png")
    plt.close(figure)
    figure, ax = plt.subplots(figsize=(7, 4))
    labels, values = [], []
    for run in results["runs"]:
        for key in ("ingest_bm25", "ingest_vectors"):
            if run.get(key):
                dim = f" d{run['dim']}" if key == "ingest_vectors" else ""
                labels.append(f"{run['store']} {key[7:]}{dim}\n{run['size']:,}")
                values.append(run[key]["chunks_per_s"])
    if values:
        ax.bar(range(len(values)), values)
        ax.set_xticks(range(len(values)), labels, fontsize=6, rotation=60)
        ax.axhline(INGEST_TARGET, color="red", linestyle="--", label="BM25-only target")
        ax.set_yscale("log")
        ax.set_ylabel("chunks/s")
        ax.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / "ingest.png", dpi=110)
        written.append("ingest.png")
    plt.close(figure)
    return written


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts")
    parser.add_argument("--dims", default="384,1024", help="dense dimensions (0: BM25 only)")
    parser.add_argument("--queries", type=int, default=200, help="queries per mode")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per query mode")
    parser.add_argument("--old-max", type=int, default=100_000, help="largest size, first store")
    parser.add_argument("--old-dims", default=None, help="dims for the first store [--dims]")
    parser.add_argument(
        "--tokenize-max", type=int, default=1_000_000, help="largest BM25-only ingest size"
    )
    parser.add_argument("--stores", default="edge,local-mode")
    parser.add_argument("--parity", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU time per ingest and query stage (BM25-only collections)",
    )
    parser.add_argument("--quick", action="store_true", help="CI-size run (1,000 and 3,000)")
    parser.add_argument("--data", type=Path, default=DATA, help="shared data directory")
    parser.add_argument("--work", type=Path, default=None, help="scratch dir [a temp dir]")
    parser.add_argument("--out", type=Path, default=None, help="results dir")
    parser.add_argument(
        "--summarize", type=Path, default=None, help="only rewrite DIR's summary and plots"
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # flags given still win
        parser.set_defaults(
            sizes="1000,3000", dims="64", queries=20, budget=5.0, old_max=1000, parity=False
        )
    return parser.parse_args(argv)


def report(out: Path, results: dict[str, Any]) -> None:
    results.setdefault("load_end", load_average())
    (out / "summary.md").write_text(summarize(results), encoding="utf-8")
    results["plots"] = plot(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.summarize:  # e.g. the results of a run stopped early (saved after every run)
        report(args.summarize, json.loads((args.summarize / "results.json").read_text()))
        return args.summarize
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dims = [int(d) for d in args.dims.split(",") if d]
    stores = [s for s in args.stores.split(",") if s]
    old_dims = [int(d) for d in (args.old_dims or args.dims).split(",") if d]
    date = dt.date.today().isoformat()
    out = args.out or REPO / "benchmarks" / "results" / f"{date}-retrieval"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="finerank-bench-", dir=args.work))
    results: dict[str, Any] = {
        "date": date,
        "command": "python benchmarks/bench_retrieval.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "load_start": load_average(),
        "runs": [],
    }

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")

    try:
        for size in sizes:
            for store in stores:
                if store == "local-mode" and size > args.old_max:
                    continue
                if store == "edge" and size <= args.tokenize_max:
                    path = work / f"bm25-{size}"
                    run = {"size": size, "dim": None, "store": store}
                    run["ingest_bm25"] = run_phase(phase_ingest_bm25, args.data, size, path)
                    run["query"] = run_phase(
                        phase_query, store, args.data, path, None, args.queries, args.budget
                    )
                    if args.breakdown:
                        run["breakdown"] = run_phase(
                            phase_breakdown, args.data, size, path, args.queries
                        )
                    print(json.dumps(run), flush=True)
                    results["runs"].append(run)
                    save()
                    shutil.rmtree(path, ignore_errors=True)
                for dim in old_dims if store == "local-mode" else dims:
                    path = work / f"{store}-{size}-{dim}"
                    run = {"size": size, "dim": dim, "store": store}
                    run["ingest_vectors"] = run_phase(
                        phase_ingest_vectors, store, args.data, size, dim, path
                    )
                    run["query"] = run_phase(
                        phase_query, store, args.data, path, dim, args.queries, args.budget
                    )
                    print(json.dumps(run), flush=True)
                    results["runs"].append(run)
                    save()
                    shutil.rmtree(path, ignore_errors=True)
        if args.parity and "local-mode" in stores:
            results["parity"] = run_phase(phase_parity, args.data, work / "parity")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = load_average()
    report(out, results)
    print(f"results in {out}")
    return out


if __name__ == "__main__":
    main()
