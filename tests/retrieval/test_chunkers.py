"""Chunkers on the real law texts, the messy 2025 gazette pages, markdown and mixed windows."""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from finerank.errors import InvalidInputError
from finerank.retrieval.chunkers import (
    Document,
    LegalChunker,
    MarkdownChunker,
    WindowChunker,
    chinese_number,
    clean_legal_text,
    count_tokens,
    get_chunker,
)
from finerank.retrieval.ingest import load_file


def _norm(text: str) -> str:
    """Compare law text ignoring punctuation width and whitespace."""
    return re.sub(r"[\W_]", "", unicodedata.normalize("NFKC", text))


@pytest.fixture(scope="module")
def laws(shared_data):
    return shared_data / "laws"


@pytest.fixture(scope="module")
def articles(laws) -> dict[str, dict]:
    rows = [json.loads(line) for line in (laws / "articles.jsonl").open(encoding="utf-8")]
    return {row["id"]: row for row in rows}


def test_2016_law_one_chunk_per_article_with_headings(laws, articles):
    text = (laws / "cybersecurity_law_2016.md").read_text(encoding="utf-8")
    chunks = LegalChunker().chunk(Document("csl2016", text))
    assert len(chunks) == 79
    assert [c.metadata["article_no"] for c in chunks] == list(range(1, 80))
    for chunk in chunks:
        reference = articles[f"CSL2016-{chunk.metadata['article_no']:03d}"]
        assert chunk.metadata["law"] == "中华人民共和国网络安全法" == reference["law"]
        assert chunk.metadata["chapter"] == reference["chapter"]
        assert chunk.metadata["section"] == reference["section"]
        # offsets point at the article in the source, which starts with its number
        assert text[chunk.start : chunk.end].startswith(reference["article_cn"])
        assert clean_legal_text(text[chunk.start : chunk.end]) == chunk.text
        assert _norm(chunk.text) == _norm(reference["article_cn"] + reference["text"])
    penalty = chunks[62]
    assert penalty.metadata["article_cn"] == "第六十三条"
    assert penalty.context == "中华人民共和国网络安全法 第六章 法律责任"
    assert penalty.indexed_text.startswith(penalty.context + "\n第六十三条 违反本法第二十七条规定")
    section = chunks[30]  # Art. 31 sits in chapter 3, section 2
    assert section.context.endswith("第三章 网络运行安全 第二节 关键信息基础设施的运行安全")


def test_other_laws_article_counts(laws):
    for name, expected in (
        ("data_security_law_2021.md", 55),
        ("personal_information_protection_law_2021.md", 74),
    ):
        text = (laws / name).read_text(encoding="utf-8")
        chunks = LegalChunker().chunk(Document(name, text))
        assert [c.metadata["article_no"] for c in chunks] == list(range(1, expected + 1))


def test_messy_2025_gazette_pages(laws, articles):
    (document,) = load_file(laws / "cybersecurity_law_2025_pages.jsonl")
    assert document.metadata["pages"] == 10
    chunks = LegalChunker().chunk(document)
    assert [c.metadata["article_no"] for c in chunks] == list(range(1, 82))
    for chunk in chunks:
        reference = articles[f"CSL2025-{chunk.metadata['article_no']:03d}"]
        # footers gone, wrapped lines joined: the text equals the curated article
        assert "公报" not in chunk.text and "—" not in chunk.text
        assert _norm(chunk.text) == _norm(reference["article_cn"] + reference["text"])
        assert document.text[chunk.start : chunk.end].startswith(reference["article_cn"])
        assert clean_legal_text(document.text[chunk.start : chunk.end]) == chunk.text
        assert chunk.metadata["chapter"] == reference["chapter"].replace("  ", "")
    # the drafting notes after Art. 81 are not law text
    assert chunks[-1].text == "第八十一条 本法自2017年6月1日起施行。"
    # a page break inside Art. 29 (page 3 -> 4): joined without the footer
    art29 = chunks[28].text
    assert art29.startswith("第二十九条 任何个人和组织不得从事非法")
    assert "非法侵入他人网络" in art29


def test_per_article_jsonl_records(laws):
    documents = [d for d in load_file(laws / "articles.jsonl") if d.metadata["id"] == "CSL2016-063"]
    (chunk,) = LegalChunker().chunk(documents[0])
    assert chunk.text.startswith("第六十三条 违反本法第二十七条规定")
    assert chunk.context == "中华人民共和国网络安全法 第六章 法律责任"
    assert chunk.metadata["article_no"] == 63 and chunk.end == len(documents[0].text)


def test_cross_references_at_line_start_are_not_articles():
    text = "第一条 总则内容，依照本法\n第三条 规定的。\n第二条 第二条的内容。\n第四条规定无空格。"
    chunks = LegalChunker().chunk(Document("x", text, {"law": "测试法"}))
    # "第三条 " out of sequence is a wrapped cross-reference, "第四条规定" has no space
    assert [c.metadata["article_no"] for c in chunks] == [1, 2]
    assert chunks[0].text == "第一条 总则内容，依照本法第三条 规定的。"


def test_long_article_split_by_paragraph():
    paragraphs = [f"第{i}款内容" + "很长的句子。" * 30 for i in "一二三四"]
    text = "# 测试法\n\n第一条 " + "\n\n".join(paragraphs) + "\n\n第二条 短。\n"
    chunks = LegalChunker(max_chars=300).chunk(Document("x", text))
    first = [c for c in chunks if c.metadata["article_no"] == 1]
    assert [c.metadata["part"] for c in first] == [1, 2, 3, 4]
    assert all(len(c.text) <= 300 for c in first)
    assert first[1].text == paragraphs[1]
    assert text[first[1].start : first[1].end] == paragraphs[1]
    assert "part" not in chunks[-1].metadata and chunks[-1].text == "第二条 短。"


def test_chinese_numbers():
    numerals = ("一", "十", "十一", "二十", "七十九", "一百", "一百零三")
    assert [chinese_number(t) for t in numerals] == [1, 10, 11, 20, 79, 100, 103]


def test_markdown_heading_paths_and_offsets():
    text = (
        "Intro line.\n\n# Guide\n\nWelcome.\n\n## Install\n\nRun `pip install`.\n\n"
        "```\n# not a heading\n```\n\n### Linux\n\nUse apt.\n\n## Usage\n\nRun it.\n"
    )
    chunks = MarkdownChunker().chunk(Document("g.md", text, {"lang": "en"}))
    paths = [c.metadata["heading_path"] for c in chunks]
    assert paths == [
        [],
        ["Guide"],
        ["Guide", "Install"],
        ["Guide", "Install", "Linux"],
        ["Guide", "Usage"],
    ]
    assert chunks[2].text == "Run `pip install`.\n\n```\n# not a heading\n```"
    assert chunks[3].context == "Guide > Install > Linux"
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert all(c.metadata["lang"] == "en" for c in chunks)


def test_window_mixed_cjk_english_sentences_and_overlap():
    sentences = [
        "网络运营者应当制定网络安全事件应急预案。",
        "Operators must report incidents promptly!",
        "关键信息基础设施的运营者应当履行安全保护义务；",
        "Fines range from 10,000 to 100,000 yuan.",
        "个人信息不得非法出售？",
        "The law took effect on June 1, 2017.",
    ] * 4
    text = " ".join(sentences)
    chunker = WindowChunker(max_tokens=40, overlap=0.15)
    chunks = chunker.chunk(Document("mixed", text))
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert count_tokens(chunk.text) <= 40
        # windows start and end on sentence boundaries
        assert chunk.text[-1] in "。！？；!?." and chunk.text.split()[0]
        assert any(chunk.text.startswith(s[:6]) for s in sentences)
    # consecutive windows overlap by whole sentences, at most 15% of the window
    overlaps = [max(0, a.end - b.start) for a, b in zip(chunks, chunks[1:], strict=False)]
    assert any(o > 0 for o in overlaps)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start > a.start
        if b.start < a.end:
            assert count_tokens(text[b.start : a.end]) <= 0.15 * 40
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


def test_window_splits_a_sentence_longer_than_the_window():
    text = "字" * 100 + "。"
    chunks = WindowChunker(max_tokens=30, overlap=0.1).chunk(Document("long", text))
    assert all(count_tokens(c.text) <= 30 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert chunks[1].start < chunks[0].end  # the cut pieces overlap too


def test_get_chunker_errors():
    with pytest.raises(InvalidInputError, match="unknown chunker"):
        get_chunker("paragraph")
    with pytest.raises(InvalidInputError, match="unknown option 'max_tokens' for the legal"):
        get_chunker("legal", max_tokens=3)
    with pytest.raises(InvalidInputError, match="max_tokens must be an integer, got str"):
        get_chunker("window", max_tokens="64")
    with pytest.raises(InvalidInputError, match="overlap"):
        get_chunker("window", overlap=0.95)
    assert LegalChunker().chunk(Document("empty", "no articles here")) == []
