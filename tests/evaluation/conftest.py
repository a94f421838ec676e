"""A small BEIR dataset (gzipped corpus and queries) written for the evaluation tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

CORPUS = {
    "d1": ("Wing in a slipstream", "the lift of a wing placed in a propeller slipstream"),
    "d2": ("Heat conduction", "heat conduction in composite slabs with variable conductivity"),
    "d3": ("Boundary layers", "laminar boundary layer transition on a flat plate"),
    "d4": ("Slipstream effects", "propeller slipstream effects on tail surfaces"),
    "d5": ("Panel flutter", "flutter of panels at supersonic speeds"),
    "d6": ("", "an untitled note on shock waves around blunt bodies"),
}
QUERIES = {
    "q1": "wing lift in a propeller slipstream",
    "q2": "heat conduction in slabs",
    "q3": "shock waves near blunt bodies",
    "q4": "a query nobody judged",
}
QRELS = [("q1", "d1", 2), ("q1", "d4", 1), ("q2", "d2", 3), ("q3", "d6", 1), ("q3", "d5", 0)]


@pytest.fixture(scope="session")
def small_beir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small-beir")
    with gzip.open(root / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        for doc_id, (title, text) in CORPUS.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with gzip.open(root / "queries.jsonl.gz", "wt", encoding="utf-8") as handle:
        for query_id, text in QUERIES.items():
            handle.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    (root / "qrels").mkdir()
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
