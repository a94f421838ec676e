"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``.

Each of the JSONL files may also be gzipped (``corpus.jsonl.gz``). Only queries judged in the
split are evaluated (the BEIR convention); judgements with grade 0 count as not relevant.

Example:
    >>> from finerank.evaluation import load_beir
    >>> dataset = load_beir("../shared/data/cranfield", split="test")  # doctest: +SKIP
    >>> len(dataset.corpus), len(dataset.queries)  # doctest: +SKIP
    (1400, 225)
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from finerank.errors import InvalidInputError, NotFoundError
from finerank.jsonl import parse_jsonl


@dataclass(frozen=True)
class BeirDataset:
    """A corpus, the judged queries of one split (in file order) and their graded qrels."""

    name: str
    split: str
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text, judged queries only
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade > 0}

    def head(self, max_queries: int | None) -> BeirDataset:
        """The same dataset restricted to its first ``max_queries`` queries (file order)."""
        if max_queries is None or max_queries >= len(self.queries):
            return self
        if max_queries < 1:
            raise InvalidInputError(f"max_queries must be >= 1, got {max_queries}")
        kept = dict(list(self.queries.items())[:max_queries])
        return BeirDataset(
            self.name, self.split, self.corpus, kept, {q: self.qrels[q] for q in kept}
        )


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise NotFoundError(f"{directory} has no {stem} (or {stem}.gz): is it a BEIR-format dataset?")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _records(path: Path) -> Iterator[dict]:
    with _open_text(path) as handle:
        for number, record in parse_jsonl(handle, path):
            if not isinstance(record, dict) or "_id" not in record:
                raise InvalidInputError(f"{path}:{number}: each line needs an '_id' field")
            yield record


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 3:
                raise InvalidInputError(
                    f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score'"
                )
            query_id, doc_id, grade = fields[0], fields[1], fields[-1]
            try:
                value = int(float(grade))
            except ValueError:
                if number == 1:  # the header line
                    continue
                raise InvalidInputError(
                    f"{path}:{number}: score {grade!r} is not a number"
                ) from None
            if value > 0:
                qrels.setdefault(query_id, {})[doc_id] = value
    return qrels


def load_beir(directory: str | Path, *, split: str = "test") -> BeirDataset:
    """Read a BEIR dataset directory (see the module docstring for the layout)."""
    root = Path(directory)
    if not root.is_dir():
        raise NotFoundError(f"dataset directory not found: {root}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise NotFoundError(
            f"no qrels for split {split!r} ({qrels_path}); available splits: "
            + (", ".join(available) or "none")
        )
    corpus: dict[str, str] = {}
    for record in _records(_find(root, "corpus.jsonl")):
        title = str(record.get("title") or "").strip()
        text = str(record.get("text") or "").strip()
        corpus[str(record["_id"])] = f"{title} {text}".strip() if title else text
    qrels = _read_qrels(qrels_path)
    queries = {
        str(r["_id"]): str(r.get("text") or "")
        for r in _records(_find(root, "queries.jsonl"))
        if str(r["_id"]) in qrels
    }
    if not queries:
        raise InvalidInputError(f"no query in queries.jsonl is judged in {qrels_path}")
    return BeirDataset(root.name, split, corpus, queries, {q: qrels[q] for q in queries})
