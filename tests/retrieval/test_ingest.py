"""Loaders and idempotent ingest into embedded Qdrant (BM25 + the tiny Qwen3 embedder)."""

from __future__ import annotations

import json

import pytest

from finerank.errors import ConflictError, InvalidInputError, NotFoundError
from finerank.retrieval.chunkers import Document, get_chunker
from finerank.retrieval.ingest import (
    chunk_records,
    ingest,
    ingest_documents,
    iter_files,
    load_file,
)
from finerank.retrieval.search import SearchService
from finerank.retrieval.store import VectorStore
from tests.retrieval.conftest import write_pdf


def _corpus(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text(
        "Qdrant stores vectors. It supports sparse vectors too. Reranking improves precision.",
        encoding="utf-8",
    )
    (root / "guide.md").write_text(
        "# Guide\n\nIntro text about finerank.\n\n## Install\n\nUse pip to install it.\n",
        encoding="utf-8",
    )
    (root / "records.jsonl").write_text(
        "\n".join(
            json.dumps(r, ensure_ascii=False)
            for r in (
                {
                    "_id": "d1",
                    "title": "Wing flutter",
                    "text": "Flutter of wings at high speed.",
                    "law": "none",
                    "year": 1960,
                },
                {"_id": "d2", "text": "网络运营者应当履行网络安全保护义务。", "law": "网络安全法"},
            )
        )
        + "\n",
        encoding="utf-8",
    )
    (root / "page.html").write_text(
        "<html><head><title>Doc page</title><style>p{color:red}</style>"
        "<script>var hidden = 'no';</script></head><body><h1>Heading</h1>"
        "<p>Visible <b>bold</b> paragraph.</p></body></html>",
        encoding="utf-8",
    )
    write_pdf(root / "paper.pdf", ["Boundary layer theory", "Shock waves at Mach 2"])
    (root / ".hidden").mkdir(exist_ok=True)
    (root / ".hidden" / "secret.txt").write_text("not indexed", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


def test_loaders(tmp_path):
    root = _corpus(tmp_path / "docs")
    files = iter_files([root])
    assert [f.name for f in files] == [
        "guide.md",
        "notes.txt",
        "page.html",
        "paper.pdf",
        "records.jsonl",
    ]
    html = load_file(root / "page.html")[0]
    assert html.text == "Heading\nVisible bold paragraph."
    assert html.metadata == {"title": "Doc page"}
    pdf = load_file(root / "paper.pdf")[0]
    assert "Boundary layer theory" in pdf.text and "Shock waves at Mach 2" in pdf.text
    assert pdf.metadata["pages"] == 2
    records = load_file(root / "records.jsonl")
    assert records[0].source.endswith("records.jsonl#d1")
    assert records[0].text == "Wing flutter\n\nFlutter of wings at high speed."
    assert records[0].metadata == {"title": "Wing flutter", "law": "none", "year": 1960}
    with pytest.raises(FileNotFoundError, match="no such file"):
        iter_files([tmp_path / "missing"])
    with pytest.raises(InvalidInputError, match="unsupported file type .png"):
        iter_files([root / "image.png"])
    (tmp_path / "bad.jsonl").write_text('{"text": 1}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1: each line needs a string 'text'"):
        load_file(tmp_path / "bad.jsonl")


def test_ingest_is_idempotent_and_replaces_changed_files(tmp_path, store, qwen3_embedder):
    root = _corpus(tmp_path / "docs")
    chunker = get_chunker("window", max_tokens=64)
    first = ingest(
        [root],
        store=store,
        collection="docs",
        chunker=chunker,
        embedder=qwen3_embedder,
        progress=False,
    )
    assert first.files == 5 and first.added == first.chunks > 5 and first.deleted == 0
    assert store.info("docs").points == first.chunks
    again = ingest(
        [root],
        store=store,
        collection="docs",
        chunker=chunker,
        embedder=qwen3_embedder,
        progress=False,
    )
    assert (again.added, again.deleted, again.unchanged_files) == (0, 0, 5)

    before = store.ids_by_file("docs")
    notes = str((root / "notes.txt").resolve())
    (root / "notes.txt").write_text("Completely new content about BM25.", encoding="utf-8")
    changed = ingest(
        [root],
        store=store,
        collection="docs",
        chunker=chunker,
        embedder=qwen3_embedder,
        progress=False,
    )
    assert changed.unchanged_files == 4 and changed.added == 1
    assert changed.deleted == len(before[notes])
    after = store.ids_by_file("docs")
    assert after[notes].isdisjoint(before[notes]) and len(after[notes]) == 1
    assert {k: v for k, v in after.items() if k != notes} == {
        k: v for k, v in before.items() if k != notes
    }
    hits = SearchService(store).recall("docs", "BM25 content", mode="bm25", recall_k=3)
    assert hits[0].payload["text"] == "Completely new content about BM25."


def test_interrupted_ingest_converges(tmp_path, qwen3_embedder):
    root = _corpus(tmp_path / "docs")
    chunker = get_chunker("window", max_tokens=16)

    reference = VectorStore.open(data_dir=tmp_path / "reference")
    ingest(
        [root],
        store=reference,
        collection="c",
        chunker=chunker,
        embedder=qwen3_embedder,
        progress=False,
    )
    expected = reference.ids_by_file("c")
    reference.close()

    class Killed(Exception):
        pass

    def kill_after_two(_count, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(1)
        if len(seen) == 2:
            raise Killed

    files = [str(f) for f in iter_files([root])]
    documents = [d for f in files for d in load_file(f)]
    store = VectorStore.open(data_dir=tmp_path / "killed")
    with pytest.raises(Killed):
        ingest_documents(
            documents,
            store=store,
            collection="c",
            chunker=chunker,
            embedder=qwen3_embedder,
            batch_size=3,
            on_batch=kill_after_two,
            files=files,
        )
    partial = store.ids_by_file("c")
    assert 0 < sum(map(len, partial.values())) < sum(map(len, expected.values()))
    store.close()  # the process "dies"; a new one re-runs the same command
    store = VectorStore.open(data_dir=tmp_path / "killed")
    report = ingest(
        [root],
        store=store,
        collection="c",
        chunker=chunker,
        embedder=qwen3_embedder,
        progress=False,
    )
    assert report.added == sum(map(len, expected.values())) - 6
    assert store.ids_by_file("c") == expected
    assert (
        ingest(
            [root],
            store=store,
            collection="c",
            chunker=chunker,
            embedder=qwen3_embedder,
            progress=False,
        ).added
        == 0
    )
    store.close()


def test_chunk_ids_are_stable_and_content_addressed():
    chunker = get_chunker("window", max_tokens=8)
    doc = Document("a.txt", "One two three. Four five six. Seven eight nine.", file="a.txt")
    ids = [r.chunk_id for r in chunk_records(doc, chunker)]
    assert ids == [r.chunk_id for r in chunk_records(doc, chunker)]
    moved = Document("b.txt", doc.text, file="b.txt")
    assert set(ids).isdisjoint(r.chunk_id for r in chunk_records(moved, chunker))
    edited = Document("a.txt", doc.text.replace("Seven", "Eleven"), file="a.txt")
    edited_ids = [r.chunk_id for r in chunk_records(edited, chunker)]
    assert edited_ids[0] == ids[0] and edited_ids[-1] != ids[-1]


def test_collection_records_model_and_chunker(tmp_path, store, qwen3_embedder, minilm):
    docs = [Document("x", "some text about wings", file="x")]
    ingest_documents(
        docs, store=store, collection="c", chunker=get_chunker("window"), embedder=qwen3_embedder
    )
    spec = store.info("c").spec
    assert spec.embedding_model == qwen3_embedder.name and spec.dimension == 64
    assert spec.chunker == {"name": "window", "max_tokens": 256, "overlap": 0.125}
    with pytest.raises(ConflictError, match="embedding model"):
        ingest_documents(
            docs, store=store, collection="c", chunker=get_chunker("window"), embedder=minilm
        )
    with pytest.raises(ConflictError, match="chunker"):
        ingest_documents(
            docs,
            store=store,
            collection="c",
            chunker=get_chunker("markdown"),
            embedder=qwen3_embedder,
        )
    with pytest.raises(ConflictError, match="query model"):
        SearchService(store, embedder=minilm).search("c", "wings", mode="dense")
    with pytest.raises(NotFoundError, match="does not exist"):
        SearchService(store).search("nope", "wings")
    with pytest.raises(InvalidInputError, match="invalid collection name"):
        store.info("bad name!")
    assert [c.name for c in store.list_collections()] == ["c"]
    store.delete("c")
    assert store.list_collections() == []


def test_filters_and_hybrid_on_laws(tmp_path, store, qwen3_embedder, shared_data):
    laws = shared_data / "laws"
    report = ingest(
        [laws / "cybersecurity_law_2016.md", laws / "data_security_law_2021.md"],
        store=store,
        collection="laws",
        chunker=get_chunker("legal"),
        embedder=qwen3_embedder,
        progress=False,
    )
    assert report.added == 79 + 55
    service = SearchService(store, embedder=qwen3_embedder)
    query = "罚款"
    everything = service.recall("laws", query, mode="bm25", recall_k=200)
    laws_seen = {h.payload["metadata"]["law"] for h in everything}
    assert laws_seen == {"中华人民共和国网络安全法", "中华人民共和国数据安全法"}
    only = service.recall(
        "laws", query, mode="bm25", recall_k=200, filters={"law": "中华人民共和国数据安全法"}
    )
    assert only and {h.payload["metadata"]["law"] for h in only} == {"中华人民共和国数据安全法"}
    assert len(only) < len(everything)
    # numbers given as strings match integer metadata; lists mean "any of"
    picked = service.recall(
        "laws",
        query,
        mode="hybrid",
        recall_k=50,
        filters={"article_no": ["63", "64"], "law": "中华人民共和国网络安全法"},
    )
    assert sorted(h.payload["metadata"]["article_no"] for h in picked) == [63, 64]
    source = str((laws / "data_security_law_2021.md").resolve())
    by_source = service.recall(
        "laws", "数据", mode="dense", recall_k=500, filters={"source": source}
    )
    assert len(by_source) == 55
    with pytest.raises(InvalidInputError, match="filter"):
        service.recall("laws", query, mode="bm25", filters={"law": 1.5})


KILL_SCRIPT = """
import os, signal, sys
from finerank.retrieval.chunkers import get_chunker
from finerank.retrieval.ingest import ingest_documents, iter_files, load_file
from finerank.retrieval.store import VectorStore

root, data = sys.argv[1], sys.argv[2]
files = [str(f) for f in iter_files([root])]
documents = [d for f in files for d in load_file(f)]
store = VectorStore.open(data_dir=data)
batches = []

def on_batch(count):
    batches.append(count)
    if len(batches) == 3:  # a hard kill: no exception handling, no close, no flush
        os.kill(os.getpid(), signal.SIGKILL)

ingest_documents(documents, store=store, collection="c", chunker=get_chunker("window",
                 max_tokens=16), batch_size=2, on_batch=on_batch, files=files)
"""


def test_sigkilled_ingest_converges(tmp_path):
    """A process killed with SIGKILL mid-ingest leaves a readable store (SQLite in WAL mode)
    holding whole batches; re-running converges to the uninterrupted result."""
    import subprocess
    import sys

    root = _corpus(tmp_path / "docs")
    chunker = get_chunker("window", max_tokens=16)
    reference = VectorStore.memory()
    ingest([root], store=reference, collection="c", chunker=chunker, progress=False)
    expected = reference.ids_by_file("c")

    data = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(root), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    store = VectorStore.open(data_dir=data)
    partial = sum(map(len, store.ids_by_file("c").values()))
    assert partial == 6  # three whole batches of two survived the kill
    report = ingest([root], store=store, collection="c", chunker=chunker, progress=False)
    assert report.added == sum(map(len, expected.values())) - 6
    assert store.ids_by_file("c") == expected
    store.close()
