"""The public Reranker API: ordering, top_n, documents, bad input, invariance."""

from __future__ import annotations

import pytest

from finerank.errors import InvalidInputError

DOCS = [
    "第六十三条 违反本法第二十七条规定，从事危害网络安全的活动的，处五万元以上五十万元以下罚款。",
    "The capital of China is Beijing.",
    "",
    "网络运营者应当按照网络安全等级保护制度的要求，履行安全保护义务。",
    "Gravity is a force.",
]


def test_rerank_sorted_with_indices_and_documents(qwen3_reranker):
    results = qwen3_reranker.rerank("罚款多少？", DOCS, return_documents=True)
    assert sorted(r.index for r in results) == list(range(len(DOCS)))
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert all(r.document == DOCS[r.index] for r in results)
    assert all(0.0 < r.score < 1.0 for r in results)


def test_rerank_scores_equal_score_pairs(qwen3_reranker):
    results = qwen3_reranker.rerank("罚款多少？", DOCS)
    direct = qwen3_reranker.score([("罚款多少？", d) for d in DOCS])
    for r in results:
        assert r.score == pytest.approx(direct[r.index], abs=1e-5)


def test_top_n_and_no_documents_by_default(qwen3_reranker):
    results = qwen3_reranker.rerank("q", DOCS, top_n=2)
    assert len(results) == 2 and all(r.document is None for r in results)
    full = qwen3_reranker.rerank("q", DOCS)
    assert [r.index for r in results] == [r.index for r in full[:2]]
    assert len(qwen3_reranker.rerank("q", DOCS, top_n=100)) == len(DOCS)


def test_ties_are_broken_by_index(qwen3_reranker):
    results = qwen3_reranker.rerank("q", ["same text"] * 4)
    assert [r.index for r in results] == [0, 1, 2, 3]


def test_instruction_changes_scores(qwen3_reranker):
    default = qwen3_reranker.score([("q", DOCS[0])])[0]
    custom = qwen3_reranker.score([("q", DOCS[0])], instruction="判断文档是否提及罚款")[0]
    assert default != pytest.approx(custom, abs=1e-6)


def test_order_and_neighbours_do_not_change_a_score(qwen3_reranker):
    alone = {i: qwen3_reranker.rerank("罚款", [d])[0].score for i, d in enumerate(DOCS)}
    mixed = qwen3_reranker.rerank("罚款", DOCS[::-1] + ["x " * 300])
    for r in mixed:
        if r.index < len(DOCS):
            assert r.score == pytest.approx(alone[len(DOCS) - 1 - r.index], abs=1e-5)


def test_empty_document_list_gives_empty_result(qwen3_reranker):
    assert qwen3_reranker.rerank("q", []) == []
    assert qwen3_reranker.score([]) == []


def test_non_string_document_names_the_index(qwen3_reranker):
    with pytest.raises(InvalidInputError, match=r"documents\[2\]"):
        qwen3_reranker.rerank("q", ["a", "b", 3])
    with pytest.raises(InvalidInputError, match="list of strings"):
        qwen3_reranker.rerank("q", "not a list")
    with pytest.raises(InvalidInputError, match="query must be a string"):
        qwen3_reranker.rerank(None, ["a"])


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n(qwen3_reranker, top_n):
    with pytest.raises(InvalidInputError, match="top_n"):
        qwen3_reranker.rerank("q", ["a"], top_n=top_n)


def test_bad_long_document_mode(qwen3_reranker):
    with pytest.raises(ValueError, match="long_document"):
        qwen3_reranker.rerank("q", ["a"], long_document="summarize")


def test_count_tokens(qwen3_reranker):
    assert qwen3_reranker.count_tokens("yes") == 1
    with_template = qwen3_reranker.count_tokens("q", ["yes"])
    assert with_template > 50  # system prompt + default instruction + suffix
    assert qwen3_reranker.count_tokens("q", ["yes", "yes"]) == 2 * with_template


def test_max_tokens_per_doc_cuts_the_document(qwen3_reranker):
    doc = "word " * 500
    cut = (
        qwen3_reranker.count_tokens("q", [doc])
        - qwen3_reranker.engine.prepare("q", [doc], max_tokens_per_doc=10).num_tokens
    )
    assert cut == 490


@pytest.mark.parametrize(
    ("environment", "compile", "enabled"),
    [(None, "on", True), (None, "off", False), ("1", "off", True), ("0", "on", False)],
)
def test_compile_option_reaches_the_kernels(
    qwen3_reranker_dir, monkeypatch, environment, compile, enabled
):
    from finerank import Reranker
    from finerank.models.fused import COMPILE_ENV

    if environment is None:
        monkeypatch.delenv(COMPILE_ENV, raising=False)
    else:  # FINERANK_COMPILE=1 / 0: the operator's switch wins over the option
        monkeypatch.setenv(COMPILE_ENV, environment)
    reranker = Reranker.from_pretrained(
        qwen3_reranker_dir, device="cpu", dtype="float32", compile=compile
    )
    kernels = reranker.backend.decoder.kernels
    assert kernels.enabled is enabled and kernels.pending is enabled


def test_bad_compile_option_says_what_to_pass(qwen3_reranker_dir):
    from finerank import Reranker

    with pytest.raises(InvalidInputError, match="compile must be 'auto', 'on' or 'off'"):
        Reranker.from_pretrained(qwen3_reranker_dir, compile="yes")
