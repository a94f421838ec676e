"""One local Ray cluster (2 CPUs) for every test in this directory, and small pair files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = [
    "contract",
    "law",
    "court",
    "article",
    "river",
    "sky",
    "tax",
    "labour",
    "property",
    "marriage",
    "company",
    "criminal",
    "civil",
    "appeal",
    "evidence",
    "judge",
    "fine",
    "prison",
]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster started once for the session (Ray start-up is slow)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def compiles(monkeypatch) -> list[str]:
    """Names of the functions ``torch.compile`` is asked for; every model compiles (also the
    tiny fp32 ones) and the "compiled" function is the eager one (the real compiler is tested
    in tests/models/test_fused.py; here: when it runs)."""
    import torch

    names: list[str] = []
    monkeypatch.setenv("FINERANK_COMPILE", "1")
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: names.append(fn.__name__) or fn)
    return names


def make_pairs(seed: int, queries: int, max_docs: int, *, instructions: bool = False) -> list[dict]:
    """Random (query, document) rows; some queries get an instruction, some get none."""
    rng = random.Random(seed)
    rows = []
    for q in range(queries):
        query = " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))
        instruction = None
        if instructions and q % 3 == 1:
            instruction = "Find the legal article that answers the question"
        for d in range(rng.randint(1, max_docs)):
            row = {
                "id": f"q{q}-d{d}",
                "query": query,
                "document": " ".join(rng.choices(WORDS, k=rng.randint(1, 50))),
            }
            if instructions:
                row["instruction"] = instruction
            rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path
