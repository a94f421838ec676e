from __future__ import annotations

import shutil

import pytest

from finerank.errors import InvalidInputError, NotFoundError
from finerank.evaluation import load_beir


def test_reads_gzipped_beir(small_beir):
    dataset = load_beir(small_beir)
    assert dataset.name == small_beir.name and dataset.split == "test"
    assert len(dataset.corpus) == 6
    assert dataset.corpus["d1"] == (
        "Wing in a slipstream the lift of a wing placed in a propeller slipstream"
    )
    assert dataset.corpus["d6"] == "an untitled note on shock waves around blunt bodies"
    # q4 has no judgement; grade-0 judgements are not relevant
    assert list(dataset.queries) == ["q1", "q2", "q3"]
    assert dataset.qrels["q3"] == {"d6": 1}
    assert dataset.qrels["q1"] == {"d1": 2, "d4": 1}


def test_head_keeps_the_first_queries(small_beir):
    dataset = load_beir(small_beir).head(2)
    assert list(dataset.queries) == ["q1", "q2"] and set(dataset.qrels) == {"q1", "q2"}
    with pytest.raises(InvalidInputError):
        load_beir(small_beir).head(0)


def test_plain_jsonl_and_cranfield(shared_data):
    dataset = load_beir(shared_data / "cranfield")
    assert len(dataset.corpus) == 1400 and len(dataset.queries) == 225
    assert sum(len(judged) for judged in dataset.qrels.values()) == 1837


def test_missing_split_names_the_available_ones(small_beir):
    with pytest.raises(NotFoundError, match="available splits: test"):
        load_beir(small_beir, split="dev")


def test_missing_files_and_bad_lines(small_beir, tmp_path):
    with pytest.raises(NotFoundError, match="dataset directory not found"):
        load_beir(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(small_beir, broken)
    (broken / "corpus.jsonl.gz").unlink()
    with pytest.raises(NotFoundError, match="corpus.jsonl"):
        load_beir(broken)
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{not json\n')
    with pytest.raises(InvalidInputError, match="corpus.jsonl:2: invalid JSON"):
        load_beir(broken)
