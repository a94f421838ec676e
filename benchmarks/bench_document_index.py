"""What the document index (finerank.retrieval.documents) costs on STARD, through the product.

Indexes the shipped STARD corpus as ``finerank eval`` does (one file per law), then prints:
the ingest time (chunks + document index), the disk of the collection and of its document
index, the time of an ingest into it that replaces one law (or re-sends it unchanged), the
time to rebuild the index from the stored chunks and to check it is in step, and the
per-query time of the 1,235 questions with and without the document index score, both
interleaved in one process on the same index (best of ``--rounds``), with the load average.

    python benchmarks/bench_document_index.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time


def disk_mib(path) -> float:
    return int(subprocess.check_output(["du", "-sk", str(path)]).split()[0]) / 1024


def upkeep(store, name: str, dataset, rounds: int) -> None:
    """What an ingest into the indexed collection pays: replacing one law (one article
    edited; every article of the law re-sent, as ``finerank index`` re-sends a file) and
    re-sending it unchanged, best of ``rounds``, with the documents written each time."""
    from finerank.evaluation.first_stage import ProductFirstStage
    from finerank.retrieval.chunkers import Document, get_chunker
    from finerank.retrieval.ingest import ingest_documents

    laws: dict[str, list[str]] = {}
    for doc_id, file in dataset.documents.items():
        laws.setdefault(file, []).append(doc_id)
    law = sorted(laws, key=lambda f: len(laws[f]))[len(laws) // 2]  # a median-size law
    chunker = get_chunker("window", max_tokens=ProductFirstStage("bm25").max_chunk_tokens)

    def articles(edit: str) -> list[Document]:
        ids = sorted(laws[law])
        return [
            Document(
                doc_id,
                dataset.corpus[doc_id] + (edit if doc_id == ids[0] else ""),
                {"doc_id": doc_id},
                file=law,
            )
            for doc_id in ids
        ]

    def timed(edit: str) -> tuple[float, int]:
        started = time.perf_counter()
        report = ingest_documents(
            articles(edit), store=store, collection=name, chunker=chunker, progress=False
        )
        return time.perf_counter() - started, getattr(report, "documents_indexed", 0)

    replaced = [timed(f"（修订{i}）") for i in range(rounds)]  # each round a new edit
    unchanged = [timed(f"（修订{rounds - 1}）") for _ in range(rounds)]  # the last one again
    for label, runs in (("replace one law", replaced), ("unchanged law", unchanged)):
        print(
            f"ingest, {label} ({len(laws[law])} of {len(dataset.corpus)} articles): best "
            f"{1000 * min(t for t, _ in runs):.0f} ms, median "
            f"{1000 * sorted(t for t, _ in runs)[len(runs) // 2]:.0f} ms of {rounds}; "
            f"{runs[-1][1]} documents written"
        )
    timed("")  # the law as it was


def main() -> None:
    from finerank.evaluation.dataset import load_beir, resolve_dataset
    from finerank.evaluation.first_stage import ProductFirstStage
    from finerank.retrieval.context import DocumentContext
    from finerank.retrieval.documents import sync_document_index
    from finerank.retrieval.search import SearchService
    from finerank.retrieval.store.base import document_index_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    dataset = load_beir(resolve_dataset("stard"), split="train")
    stage = ProductFirstStage("bm25")
    started = time.perf_counter()
    stage.index(dataset.corpus, dataset.documents)
    print(f"ingest (chunks + document index): {time.perf_counter() - started:.1f} s")
    store, name = stage._shared["service"].store, stage.COLLECTION
    try:
        edge = store.root / "edge"
        documents = sum(1 for _ in store.iter_documents(name))
        print(
            f"disk: collection {disk_mib(edge / name):.1f} MiB, document index "
            f"{disk_mib(edge / document_index_name(name)):.1f} MiB ({documents} documents)"
        )
        upkeep(store, name, dataset, max(5, args.rounds))
        store._drop_collection(document_index_name(name))  # as a collection written before it
        started = time.perf_counter()
        rebuilt = sync_document_index(store, name)
        print(f"rebuilt from the stored chunks: {rebuilt} in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        sync_document_index(store, name)
        print(f"in-step check: {time.perf_counter() - started:.3f} s")
        queries = list(dataset.queries.values())
        services = {
            label: SearchService(
                store, context=DocumentContext(weight=0.2, depth=1000, index_weight=weight)
            )
            for label, weight in (("without", 0.0), ("with", 0.4))
        }
        for service in services.values():  # warm the payload caches
            service.recall_batch(name, queries[:50], mode="bm25")
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for label, service in services.items():
                started = time.perf_counter()
                service.recall_batch(name, queries, mode="bm25")
                elapsed = time.perf_counter() - started
                best[label] = min(best.get(label, elapsed), elapsed)
        for label, seconds in best.items():
            print(f"{label} the document index: {1000 * seconds / len(queries):.1f} ms per query")
        print(f"ratio with / without: {best['with'] / best['without']:.3f}")
    finally:
        stage.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
