"""Result tables at 80 columns, piped, and narrower: ranks and scores are never cut."""

from __future__ import annotations

from unittest import mock

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from finerank.cli import app
from finerank.cli.retrieval import _print_hits
from finerank.cli.tables import Column, fit_widths
from finerank.retrieval.search import SearchHit, SearchResponse

runner = CliRunner()
LONG_ZH = "第六十三条 违反本法第二十七条规定，从事危害网络安全的活动，尚不构成犯罪的，" * 3


def _rows(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


@pytest.mark.parametrize("columns", ["80", "60", "120"])
def test_rerank_table_keeps_ranks_and_scores(qwen3_reranker_dir, qwen3_reranker, columns):
    docs = [LONG_ZH, "The capital of China is Beijing. " * 6, "短"]
    result = runner.invoke(
        app,
        [
            "rerank",
            "-m",
            str(qwen3_reranker_dir),
            "-q",
            "罚款多少",
            *sum((["-d", d] for d in docs), []),
        ],
        env={"COLUMNS": columns},  # CliRunner output is piped: rich uses COLUMNS, else 80
    )
    assert result.exit_code == 0, result.output
    assert max(cell_len(line) for line in result.stdout.splitlines()) <= int(columns)
    expected = qwen3_reranker.rerank("罚款多少", docs)
    rows = _rows(result.stdout)
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert [int(row[1]) for row in rows] == [r.index for r in expected]
    assert [row[2] for row in rows] == [f"{r.score:.4f}" for r in expected]
    assert [row[3] for row in rows] == [f"{r.logit:+.3f}" for r in expected]
    for row, r in zip(rows, expected, strict=True):
        text = docs[r.index].strip()
        assert row[4] == text or (row[4].endswith("…") and text.startswith(row[4][:-1].strip()))


def _hit(rank: int) -> SearchHit:
    return SearchHit(
        chunk_id=f"c{rank}",
        text=LONG_ZH,
        context="中华人民共和国网络安全法 第六章 法律责任",
        source="cybersecurity_law_2016.md",
        start=0,
        end=len(LONG_ZH),
        metadata={"law": "中华人民共和国网络安全法", "article_cn": "第六十三条", "article_no": 63},
        first_stage_rank=100 - rank,
        first_stage_score=12.345678 / rank,
        rerank_rank=rank,
        rerank_score=1 / (rank + 1),
    )


@pytest.mark.parametrize("width", [80, 64])
def test_search_table_shortens_text_then_labels(width):
    response = SearchResponse("q", "laws", "bm25", [_hit(i) for i in range(1, 101)], 100, 100)
    console = Console(width=width, color_system=None, record=True)
    console.begin_capture()
    with mock.patch("rich.console.Console", return_value=console):
        _print_hits(response, reranked=True)
    output = console.end_capture()
    rows = _rows(output)
    assert len(rows) == 100
    assert max(cell_len(line) for line in output.splitlines()) <= width
    for position, row in enumerate(rows, start=1):
        assert row[:4] == [
            str(position),
            str(100 - position),
            f"{12.345678 / position:.4f}",
            f"{1 / (position + 1):.4f}",
        ]
        assert row[5].startswith("第六十") and row[5].endswith("…")
        assert row[4] == "网络安全法 第六十三条" or width < 80


def test_fit_widths_order_and_floor():
    columns = [
        Column("rank", justify="right"),
        Column("where", shrink=2, min_width=6),
        Column("text", shrink=1, min_width=8),
    ]
    rows = [["100", "w" * 30, "t" * 100]]
    assert fit_widths(columns, rows, 200) == [4, 30, 100]
    assert fit_widths(columns, rows, 80) == [4, 30, 80 - 10 - 34]  # text gives way first
    assert fit_widths(columns, rows, 40) == [4, 18, 8]  # then the label, to its floor
    assert fit_widths(columns, rows, 24) == [4, 6, 4]  # very narrow: down to the headers
    assert fit_widths(columns, rows, 10)[0] == 4  # ranks are never the ones cut
