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
    assert dataset.documents == {}  # abstracts: each record is a document of its own


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


def test_shipped_stard_loads_by_name_with_its_only_split(shared_data):
    from finerank.evaluation.dataset import SHIPPED_ROOT, resolve_dataset

    dataset = load_beir("stard")
    assert (dataset.name, dataset.split) == ("stard", "train")
    assert len(dataset.corpus) == 10414 and len(dataset.queries) == 1235
    assert sum(len(judged) for judged in dataset.qrels.values()) == 2116
    # every record is an article of one of the 126 laws STARD cites, grouped by its title
    assert set(dataset.documents) == set(dataset.corpus)
    assert len(set(dataset.documents.values())) == 126
    assert dataset.documents["705"] == "中华人民共和国民法典"  # 中华人民共和国民法典第五十四条
    assert dataset.head(3).documents == dataset.documents
    assert resolve_dataset("stard") == SHIPPED_ROOT / "stard"
    for note in ("SOURCE.md", "LICENSE"):
        assert (SHIPPED_ROOT / "stard" / note).is_file()
    assert "MIT License" in (SHIPPED_ROOT / "stard" / "LICENSE").read_text(encoding="utf-8")
    # the shipped copy is the shared data set, query for query and judgement for judgement
    shared = load_beir(shared_data / "stard", split="train")
    assert shared.queries == dataset.queries and shared.qrels == dataset.qrels
    assert shared.corpus == dataset.corpus


def test_a_directory_with_a_shipped_name_wins(small_beir, tmp_path, monkeypatch):
    shutil.copytree(small_beir, tmp_path / "stard")
    monkeypatch.chdir(tmp_path)
    assert len(load_beir("stard").corpus) == 6  # ./stard, not the shipped one


def test_article_titles_name_their_document():
    from finerank.evaluation.dataset import document_of

    assert document_of("中华人民共和国刑法第一百三十三条之一") == "中华人民共和国刑法"
    assert document_of("最高人民法院关于适用《民事诉讼法》的解释第5条") == (
        "最高人民法院关于适用《民事诉讼法》的解释"
    )
    for own in (
        "",
        "第一条",
        "on the solution of the laminar boundary layer equations .",
        "第三条规定",
    ):
        assert document_of(own) is None
