"""rjieba (jieba-rs) gives exactly jieba's words, so the analyzer's output never depends on
which of the two is installed."""

from __future__ import annotations

import gzip
import json
import random
import unicodedata

import pytest

from finerank.retrieval import bm25, segmentation

rjieba = pytest.importorskip("rjieba")
JIEBA = segmentation._jieba_cut_block()


def RJIEBA(block: str) -> list[str]:
    return rjieba.cut(block, hmm=True)


@pytest.fixture(scope="module")
def corpus_texts(shared_data) -> list[str]:
    """STARD's questions and the first 2,000 statute articles (colloquial and legal text)."""
    stard = shared_data / "stard"
    texts = [json.loads(line)["text"] for line in (stard / "queries.jsonl").open()]
    with gzip.open(stard / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for _, line in zip(range(2000), handle, strict=False):
            texts.append(json.loads(line)["text"])
    return texts


def cjk_runs(texts: list[str]) -> list[str]:
    runs = {}
    for text in texts:
        for match in bm25._RUN.finditer(unicodedata.normalize("NFKC", text).lower()):
            if match.group(1):
                runs[match.group(1)] = None
    return list(runs)


def test_rjieba_cuts_every_corpus_run_as_jieba(corpus_texts):
    runs = cjk_runs(corpus_texts)
    assert len(runs) > 5000
    differing = [
        run for run in runs if segmentation.cut(run, RJIEBA) != segmentation.cut(run, JIEBA)
    ]
    assert differing == []


def test_rjieba_cuts_random_text_with_rare_characters_as_jieba():
    # function words, frequent statute characters, and characters jieba's Python code does not
    # take as Chinese (Extension A, U+9FD6.., compatibility ideographs, Extension B)
    alphabet = list("的了是在和与或及我你什么怎么办可以应该哪些有没有不得依法规定合同劳动")
    alphabet += ["\u3400", "\u4db5", "\u9fd6", "\u9fff", "\uf900", "\ufa2d", "\U00020000"]
    rng = random.Random(0)
    for _ in range(3000):
        run = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
        expected = _jieba_reference(run)
        assert segmentation.cut(run, RJIEBA) == expected, run
        assert segmentation.cut(run, JIEBA) == expected, run


def _jieba_reference(run: str) -> list[str]:
    """``jieba.cut`` itself on the whole run (it splits at non-"han" characters itself)."""
    import jieba

    return list(jieba.cut(run))


def test_analyze_is_the_same_with_either_segmenter(corpus_texts, monkeypatch):
    fast = [bm25.analyze(text) for text in corpus_texts[:3000]]
    monkeypatch.setattr(segmentation, "_cut_block", JIEBA)
    assert [bm25.analyze(text) for text in corpus_texts[:3000]] == fast


def test_the_pure_python_reference_can_be_forced(monkeypatch):
    monkeypatch.setattr(segmentation, "backend", segmentation.backend)
    monkeypatch.setattr(segmentation, "_cut_block", None)
    monkeypatch.setenv("FINERANK_SEGMENTER", "jieba")
    assert segmentation.cut("劳动合同的解除") == ["劳动合同", "的", "解除"]
    assert segmentation.backend == "jieba"
    monkeypatch.setattr(segmentation, "_cut_block", None)
    monkeypatch.delenv("FINERANK_SEGMENTER")
    segmentation.cut("劳动合同")
    assert segmentation.backend == "rjieba"
