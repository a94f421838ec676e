"""BM25 term counts of many texts, computed in worker processes.

Analysis takes most of a BM25-only ingest's CPU: about 0.25 ms per 130-character statute
article on one core here (segmentation in rjieba, n-grams and counting in Python), while
Qdrant writes a point in a few tens of microseconds. Processes (not threads: the GIL) let
ingest use every core. Each text is analyzed once: the counts give both the collection's
average length (when it is new) and the document vectors.

Counts are packed (``array`` of term ids and frequencies), so keeping them for a million
chunks costs a few hundred MB, not gigabytes of Python ints.

Example:
    >>> counts = term_counts(["数据安全", "law laws"])
    >>> [c.length for c in counts], [len(c.indices) for c in counts]
    ([7, 2], [7, 1])
"""

from __future__ import annotations

import logging
import os
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from finerank.retrieval.bm25 import analyze

_crc32 = zlib.crc32

logger = logging.getLogger(__name__)

# below this many texts a pool costs more (process start-up, jieba's dictionary) than it saves
PARALLEL_MIN_TEXTS = 4000
TASK_TEXTS = 256  # texts per task: large enough to amortize pickling, small for balance


class TermCounts(NamedTuple):
    """A text's analyzed length and its distinct term ids (sorted) with their frequencies."""

    length: int
    indices: array
    frequencies: array


def count_terms(text: str) -> TermCounts:
    terms = analyze(text)
    counts = Counter(terms)
    ids = list(map(_crc32, map(str.encode, counts)))  # token_id of each, without the calls
    if len(set(ids)) == len(ids):
        pairs = sorted(zip(ids, counts.values(), strict=True))
    else:  # two terms with the same CRC-32: one id, their frequencies added
        merged: dict[int, int] = {}
        for index, frequency in zip(ids, counts.values(), strict=True):
            merged[index] = merged.get(index, 0) + frequency
        pairs = sorted(merged.items())
    return TermCounts(
        len(terms), array("I", [t for t, _ in pairs]), array("I", [f for _, f in pairs])
    )


def _count_many(texts: Sequence[str]) -> list[TermCounts]:
    return [count_terms(text) for text in texts]


def default_workers() -> int:
    """Cores this process may use (its CPU affinity), at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def term_counts(texts: Sequence[str], *, workers: int | None = None) -> list[TermCounts]:
    """:func:`count_terms` of every text, in order (see :func:`iter_term_counts`)."""
    return list(iter_term_counts(texts, workers=workers))


def iter_term_counts(texts: Sequence[str], *, workers: int | None = None) -> Iterator[TermCounts]:
    """Term counts of ``texts`` in order, computed by ``workers`` processes (default: every
    core) when there are at least ``PARALLEL_MIN_TEXTS`` texts, else in this process.

    Tasks are submitted a few per worker ahead of the consumer, so a caller that writes each
    result as it comes overlaps its writes with the analysis and holds no more than a few
    tasks of texts in flight.
    """
    workers = default_workers() if workers is None else max(1, workers)
    context = _fork_context()
    if workers == 1 or len(texts) < PARALLEL_MIN_TEXTS or context is None:
        for text in texts:
            yield count_terms(text)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    count_terms(texts[0])  # loads jieba's dictionary here, so the forked workers share it
    tasks = [texts[i : i + TASK_TEXTS] for i in range(0, len(texts), TASK_TEXTS)]
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            ahead = 4 * workers
            pending = [pool.submit(_count_many, task) for task in tasks[:ahead]]
            submitted = len(pending)
            while pending:
                yield from pending.pop(0).result()
                done += 1
                if submitted < len(tasks):
                    pending.append(pool.submit(_count_many, tasks[submitted]))
                    submitted += 1
    except BrokenProcessPool:  # a worker died (out of memory?): finish here, slower
        logger.warning("BM25 analysis workers stopped; analyzing the rest in this process")
        for task in tasks[done:]:
            yield from _count_many(task)


def _fork_context():
    """The ``fork`` start method where there is one (Linux): workers start at once with the
    analyzer loaded, and a script that calls ingest needs no ``__main__`` guard (``spawn``
    re-imports it). The workers run only the analyzer, so the parent's other threads (a
    server's, Qdrant Edge's) and their locks are never touched in the child."""
    import multiprocessing

    if sys.platform != "linux":
        return None
    return multiprocessing.get_context("fork")
