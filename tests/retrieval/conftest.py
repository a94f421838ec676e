"""Fixtures of the retrieval tests: stores, a loaded MiniLM, small corpora, a tiny PDF."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm(minilm_model_dir):
    """The real all-MiniLM-L6-v2 (sentence-transformers), loaded once."""
    from finerank.retrieval.embedder import Embedder

    return Embedder.from_pretrained(minilm_model_dir, device="cpu")


@pytest.fixture(scope="session")
def qwen3_embedder(qwen3_embedding_dir):
    """The tiny random Qwen3 embedding model, loaded once (fast, meaningless vectors)."""
    from finerank.retrieval.embedder import Embedder

    return Embedder.from_pretrained(qwen3_embedding_dir, device="cpu", dtype="float32")


@pytest.fixture()
def store(tmp_path):
    """An embedded on-disk Qdrant in a fresh directory."""
    from finerank.retrieval.store import VectorStore

    store = VectorStore.open(data_dir=tmp_path / "qdrant")
    yield store
    store.close()


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A minimal valid PDF (Helvetica text, one line per page) with a correct xref table."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{i} 0 R" for i in page_ids).encode()
    objects.append(
        b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(len(pages)).encode() + b" >>"
    )
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id, text in zip(page_ids, pages, strict=True):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0"
            b" R >> >> /Contents " + str(page_id + 1).encode() + b" 0 R >>"
        )
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path
