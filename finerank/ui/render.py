"""HTML for the page's result tables (escaped; one ``<tr>``/card per result with data-*
attributes that the browser test reads).

Example:
    >>> from finerank.engine.engine import ScoreResult
    >>> html = rerank_table([ScoreResult(index=1, score=0.75, logit=1.1, span=(0, 4),
    ...                                  document="Law: art. 63")])
    >>> 'data-index="1"' in html and "<mark>Law:</mark>" in html
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from finerank.engine.engine import ScoreResult
    from finerank.retrieval.search import SearchHit

CSS = """
.fr-message { padding: 10px 14px; border-radius: 6px; margin: 4px 0; }
.fr-error { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd; }
.fr-info { background: #eef4fb; color: #1d3f66; border: 1px solid #c8dbf0; }
table.fr-results { width: 100%; border-collapse: collapse; font-size: 14px; }
table.fr-results th, table.fr-results td { padding: 6px 8px; border-bottom: 1px solid #e4e4e7;
  vertical-align: top; text-align: left; }
table.fr-results td.fr-num { text-align: right; white-space: nowrap; width: 1%; }
.fr-bar { width: 120px; height: 10px; background: #eceff3; border-radius: 5px; overflow: hidden;
  display: inline-block; vertical-align: middle; margin-right: 6px; }
.fr-bar > span { display: block; height: 100%; background: #3b82f6; }
.fr-text { white-space: pre-wrap; line-height: 1.5; }
.fr-text mark { background: #fde68a; padding: 0 1px; }
.fr-columns { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.fr-hit { border: 1px solid #e4e4e7; border-radius: 6px; padding: 8px 10px; margin-bottom: 8px; }
.fr-hit-head { display: flex; gap: 8px; align-items: baseline; font-size: 13px; }
.fr-move { font-weight: 600; min-width: 34px; }
.fr-up { color: #15803d; } .fr-down { color: #b91c1c; } .fr-new { color: #7c3aed; }
.fr-same { color: #71717a; }
.fr-meta { color: #52525b; font-size: 12px; }
"""


def message(text: str, *, kind: str = "error") -> str:
    """A boxed message (``kind``: ``error`` or ``info``)."""
    return f'<div class="fr-message fr-{kind}" data-kind="{kind}">{escape(text)}</div>'


def highlighted(text: str, span: tuple[int, int] | None) -> str:
    """``text`` escaped, with ``span`` (character offsets) wrapped in ``<mark>``."""
    if not span:
        return escape(text)
    start, end = span
    before, inside, after = text[:start], text[start:end], text[end:]
    return f"{escape(before)}<mark>{escape(inside)}</mark>{escape(after)}"


def score_bar(score: float) -> str:
    width = max(0.0, min(1.0, score)) * 100
    return f'<span class="fr-bar"><span style="width:{width:.1f}%"></span></span>{score:.4f}'


def rerank_table(results: Sequence[ScoreResult], *, note: str = "") -> str:
    """The ranked table: rank, original index, score bar, text (winning span marked)."""
    rows = [
        f'<tr class="fr-row" data-rank="{rank}" data-index="{r.index}" data-score="{r.score:.6f}">'
        f'<td class="fr-num">{rank}</td><td class="fr-num">{r.index}</td>'
        f'<td class="fr-num">{score_bar(r.score)}</td>'
        f'<td class="fr-text">{highlighted(r.document or "", r.span)}</td></tr>'
        for rank, r in enumerate(results, start=1)
    ]
    head = (
        '<table class="fr-results" id="fr-rerank-table"><thead><tr><th>rank</th><th>index</th>'
        "<th>score</th><th>document</th></tr></thead><tbody>"
    )
    info = message(note, kind="info") if note else ""
    return info + head + "".join(rows) + "</tbody></table>"


def movement(first_stage_rank: int, new_rank: int, shown: int) -> tuple[str, str]:
    """(label, css class) of a hit's move: ``↑3``, ``↓2``, ``=``, or ``new`` when it was
    below the ``shown`` first-stage hits."""
    if first_stage_rank > shown:
        return "new", "fr-new"
    delta = first_stage_rank - new_rank
    if delta > 0:
        return f"↑{delta}", "fr-up"
    if delta < 0:
        return f"↓{-delta}", "fr-down"
    return "=", "fr-same"


def _metadata_line(hit: SearchHit) -> str:
    meta: dict[str, Any] = hit.metadata
    preferred = [meta.get(key) for key in ("law", "article_cn", "chapter", "section", "version")]
    parts = [str(value) for value in preferred if value]
    if not parts:
        parts = [f"{key}={value}" for key, value in list(meta.items())[:4]]
    parts.append(hit.source)
    return escape(" · ".join(parts))


def _hit_card(hit: SearchHit, rank: int, move: tuple[str, str] | None, score_html: str) -> str:
    label, css = move if move else ("", "")
    badge = f'<span class="fr-move {css}">{label}</span>' if move else ""
    return (
        f'<div class="fr-hit" data-rank="{rank}" data-chunk="{escape(hit.chunk_id)}" '
        f'data-move="{escape(label)}"><div class="fr-hit-head"><b>#{rank}</b>{badge}'
        f"{score_html}</div>"
        f'<div class="fr-meta">{_metadata_line(hit)}</div>'
        f'<div class="fr-text">{escape(_clip(hit.text))}</div></div>'
    )


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def search_columns(
    first_stage: Sequence[SearchHit], reranked: Sequence[SearchHit], *, note: str = ""
) -> str:
    """Two columns: first-stage order and reranked order (each reranked hit shows its move)."""
    shown = len(first_stage)
    left = "".join(
        _hit_card(hit, rank, None, f"score {hit.first_stage_score:.4f}")
        for rank, hit in enumerate(first_stage, start=1)
    )
    right = "".join(
        _hit_card(
            hit,
            rank,
            movement(hit.first_stage_rank, rank, shown),
            score_bar(hit.rerank_score or 0.0),
        )
        for rank, hit in enumerate(reranked, start=1)
    )
    info = message(note, kind="info") if note else ""
    return (
        f'{info}<div class="fr-columns"><div id="fr-first-stage"><h4>First stage</h4>{left}</div>'
        f'<div id="fr-reranked"><h4>Reranked</h4>{right}</div></div>'
    )
