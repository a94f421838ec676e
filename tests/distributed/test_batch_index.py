"""``finerank batch index``: the same collection as the single-process ``finerank index``."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from finerank.retrieval.chunkers import get_chunker
from finerank.retrieval.ingest import ingest
from finerank.retrieval.store import VectorStore

# Small on purpose: the tiny embedder runs at a few chunks/s on the shared 2-core test machine.
LAW_EXCERPTS = {
    "data_security_law_2021.md": 2500,
    "cybersecurity_law_2016.md": 2000,
    "cybersecurity_law_2025_pages.jsonl": None,
}


def snapshot(data_dir, collection: str) -> tuple[dict, dict, dict]:
    """(collection metadata, {chunk id: (payload, sparse, dense)}, {file: its document in
    the document index}) of an embedded store."""
    store = VectorStore.open(data_dir=data_dir)
    try:
        metadata = store.spec(collection).to_metadata()
        points = {
            p.chunk_id: (p.payload, (p.sparse.indices, p.sparse.values), p.dense)
            for p in store.iter_points(collection)
        }
        documents = {
            d.file: (d.sparse.indices, d.sparse.values, d.chunks, d.digest)
            for d in store.iter_documents(collection)
        }
        return metadata, points, documents
    finally:
        store.close()


def assert_same_collection(got, expected) -> None:
    (got_meta, got_points, got_docs), (want_meta, want_points, want_docs) = got, expected
    # the document index: built (then kept) from the term counts each path computed
    assert got_docs.keys() == want_docs.keys() and got_docs
    for file, (indices, values, chunks, digest) in want_docs.items():
        assert got_docs[file][0] == indices and got_docs[file][2:] == (chunks, digest)
        assert np.allclose(got_docs[file][1], values, rtol=1e-6)
    assert got_meta == want_meta
    assert got_points.keys() == want_points.keys() and got_points
    for pid, (payload, sparse, dense) in want_points.items():
        assert got_points[pid][0] == payload
        assert got_points[pid][1] == sparse
        assert np.allclose(got_points[pid][2], dense, atol=1e-5)


def test_an_embedding_actor_compiles_at_start(tmp_path, qwen3_embedding_dir, compiles):
    from finerank.distributed.batch_index import EmbedWorker
    from finerank.settings import Settings

    settings = Settings(
        embedding_model=str(qwen3_embedding_dir), device="cpu", data_dir=tmp_path / "qdrant"
    )
    worker = EmbedWorker(settings)  # what a Ray actor runs at start
    assert sorted(compiles) == ["qk_norm_rope", "rms_norm"]
    assert not worker.embedder.decoder.kernels.pending
    worker.embedder.embed(["a chunk of text"])
    assert len(compiles) == 2  # the first batch compiled nothing


@pytest.mark.ray
def test_batch_index_builds_the_same_collection_as_index(
    ray_cluster, tmp_path, shared_data, qwen3_embedding_dir
):
    corpus = tmp_path / "laws"
    corpus.mkdir()
    for name, chars in LAW_EXCERPTS.items():
        if chars is None:  # JSONL pages of one law, joined into one document by the loader
            lines = (shared_data / "laws" / name).read_text(encoding="utf-8").splitlines()
            (corpus / name).write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
        else:
            text = (shared_data / "laws" / name).read_text(encoding="utf-8")[:chars]
            (corpus / name).write_text(text, encoding="utf-8")
    (corpus / "empty.txt").write_text("")
    chunker = get_chunker("legal")

    from finerank.retrieval.embedder import Embedder

    embedder = Embedder.from_pretrained(qwen3_embedding_dir, device="cpu", dtype="float32")

    def single_process():
        store = VectorStore.open(data_dir=tmp_path / "single")
        try:
            return ingest(
                [corpus],
                store=store,
                collection="laws",
                chunker=chunker,
                embedder=embedder,
                progress=False,
            )
        finally:
            store.close()

    def batch(*extra: str):
        from finerank.cli import app

        result = CliRunner().invoke(
            app,
            [
                "batch",
                "index",
                str(corpus),
                "--collection",
                "laws",
                "--chunker",
                "legal",
                "--embedding-model",
                str(qwen3_embedding_dir),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--data-dir",
                str(tmp_path / "ray"),
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    reference = single_process()
    out = batch()
    assert reference.added > 20 and f"{reference.added} added" in out
    assert f"{reference.files} files, {reference.documents} documents" in out
    assert_same_collection(
        snapshot(tmp_path / "ray", "laws"), snapshot(tmp_path / "single", "laws")
    )

    # A changed file: both paths write its new chunks and drop the stale ones, the same way.
    changed = corpus / "data_security_law_2021.md"
    changed.write_text(
        changed.read_text(encoding="utf-8").replace("数据", "资料", 5), encoding="utf-8"
    )
    again = single_process()
    # 4 files: one changed, one empty (never counted as unchanged), two unchanged
    assert again.added > 0 and again.deleted > 0 and again.unchanged_files == 2
    out = batch("--batch-size", "16")
    assert f"{again.added} added, {again.deleted} deleted, 2 files unchanged" in out
    assert_same_collection(
        snapshot(tmp_path / "ray", "laws"), snapshot(tmp_path / "single", "laws")
    )
