"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``.

Each of the JSONL files may also be gzipped (``corpus.jsonl.gz``). Only queries judged in the
split are evaluated (the BEIR convention); judgements with grade 0 count as not relevant.

Datasets shipped in the package (:data:`SHIPPED`, under ``finerank/data/eval/``, each with its
``SOURCE.md`` and ``LICENSE``) can be named instead of a path: ``stard`` (Chinese layperson
questions over PRC statutes, MIT). Cranfield is not shipped (its collection carries no licence;
the copy in the project's shared data is GPL-3.0): pass its directory.

Example:
    >>> from finerank.evaluation import load_beir
    >>> dataset = load_beir("stard")
    >>> dataset.split, len(dataset.corpus), len(dataset.queries)
    ('train', 10414, 1235)
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from finerank.errors import InvalidInputError, NotFoundError
from finerank.jsonl import parse_jsonl

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "data" / "eval"
#: dataset name -> what it is, for the datasets shipped in the package
SHIPPED = {
    "stard": "STARD train split: 1,235 Chinese layperson legal questions, 10,414 statute articles",
}


def resolve_dataset(name_or_path: str | Path) -> Path:
    """The directory of a shipped dataset's name (:data:`SHIPPED`) or of a path.

    Example:
        >>> resolve_dataset("stard").name
        'stard'
    """
    text = str(name_or_path)
    if text in SHIPPED and not Path(text).is_dir():  # a local directory of that name wins
        return SHIPPED_ROOT / text
    return Path(name_or_path)


def splits(directory: str | Path) -> list[str]:
    """The splits a BEIR directory has judgements for (``qrels/<split>.tsv``), sorted."""
    return sorted(p.stem for p in (Path(directory) / "qrels").glob("*.tsv"))


# "中华人民共和国民法典第五十四条", "刑法第一百三十三条之一": an article of the law named before it
_ARTICLE_TITLE = re.compile(
    r"^(.+?)第[零〇一二两三四五六七八九十百千万\d]+条(?:之[零〇一二两三四五六七八九十\d]+)?$"
)


def document_of(title: str) -> str | None:
    """The document a corpus record is part of, from its title: a statute article titled
    ``<law>第N条`` (``第N条之M``) is part of ``<law>``, as the ``legal`` chunker splits a law;
    ``None`` for any other title (the record is a document of its own). ``finerank eval``
    indexes the records of one document as chunks of one file, so that document context
    (:mod:`finerank.retrieval.context`) sees them together, as it would for a law indexed
    from its file.

    Example:
        >>> document_of("中华人民共和国民法典第五十四条"), document_of("Boundary layers")
        ('中华人民共和国民法典', None)
    """
    match = _ARTICLE_TITLE.match(title.strip())
    return match.group(1).strip() if match else None


@dataclass(frozen=True)
class BeirDataset:
    """A corpus, the judged queries of one split (in file order) and their graded qrels."""

    name: str
    split: str
    corpus: dict[str, str]  # doc id -> "title text"
    queries: dict[str, str]  # query id -> text, judged queries only
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade > 0}
    #: doc id -> the document it is part of (see :func:`document_of`), for records that are
    #: part of a larger document; the others are documents of their own
    documents: dict[str, str] = field(default_factory=dict)

    def head(self, max_queries: int | None) -> BeirDataset:
        """The same dataset restricted to its first ``max_queries`` queries (file order)."""
        if max_queries is None or max_queries >= len(self.queries):
            return self
        if max_queries < 1:
            raise InvalidInputError(f"max_queries must be >= 1, got {max_queries}")
        kept = dict(list(self.queries.items())[:max_queries])
        return BeirDataset(
            self.name,
            self.split,
            self.corpus,
            kept,
            {q: self.qrels[q] for q in kept},
            self.documents,
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


def load_beir(directory: str | Path, *, split: str | None = None) -> BeirDataset:
    """Read a BEIR dataset directory, or a shipped dataset by name (see the module docstring).

    ``split`` defaults to the dataset's only split when it has one, else ``test``.
    """
    root = resolve_dataset(directory)
    if not root.is_dir():
        raise NotFoundError(
            f"dataset directory not found: {root} (or name a shipped dataset: "
            + ", ".join(SHIPPED)
            + ")"
        )
    available = splits(root)
    if split is None:
        split = available[0] if len(available) == 1 else "test"
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise NotFoundError(
            f"no qrels for split {split!r} ({qrels_path}); available splits: "
            + (", ".join(available) or "none")
        )
    corpus: dict[str, str] = {}
    documents: dict[str, str] = {}
    for record in _records(_find(root, "corpus.jsonl")):
        title = str(record.get("title") or "").strip()
        text = str(record.get("text") or "").strip()
        doc_id = str(record["_id"])
        corpus[doc_id] = f"{title} {text}".strip() if title else text
        document = document_of(title)
        if document is not None:
            documents[doc_id] = document
    qrels = _read_qrels(qrels_path)
    queries = {
        str(r["_id"]): str(r.get("text") or "")
        for r in _records(_find(root, "queries.jsonl"))
        if str(r["_id"]) in qrels
    }
    if not queries:
        raise InvalidInputError(f"no query in queries.jsonl is judged in {qrels_path}")
    judged = {q: qrels[q] for q in queries}
    return BeirDataset(root.name, split, corpus, queries, judged, documents)
