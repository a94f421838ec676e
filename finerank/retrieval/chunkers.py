"""Split documents into chunks that keep their source, character offsets and metadata.

Three chunkers:

- ``legal``: one chunk per article (``第X条``) of a PRC law, with the law name and the
  chapter/section headings attached as context and metadata; over-long articles are split by
  paragraph. Works on clean markdown and on messy gazette page text (line wraps, page footers).
- ``markdown``: one chunk per heading section, the heading path kept.
- ``window``: sentence-aware sliding windows of about ``max_tokens`` tokens with overlap;
  Chinese (。！？；) and English sentence ends.

Every chunk's ``start``/``end`` are offsets into ``Document.text``; ``text`` is exactly
``document.text[start:end]`` except in the legal chunker, where it is the cleaned article
(``clean_legal_text`` of that slice: footers dropped, wrapped lines joined).

Example:
    >>> doc = Document(source="demo.md", text="# Guide\\n\\n## Install\\nRun pip install.\\n")
    >>> [(c.text, c.metadata["heading_path"]) for c in MarkdownChunker().chunk(doc)]
    [('Run pip install.', ['Guide', 'Install'])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from finerank.errors import InvalidInputError


@dataclass(frozen=True)
class Document:
    """A loaded text with its origin.

    ``source`` identifies the document (a file path, ``path#record``); ``file`` is the file it
    came from (the unit that re-ingesting replaces); ``metadata`` is copied onto every chunk.
    """

    source: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    file: str | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of a document. ``context`` (headings) is prepended when indexing."""

    text: str
    start: int
    end: int
    context: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def indexed_text(self) -> str:
        """What is embedded, BM25-indexed and shown to the reranker."""
        return f"{self.context}\n{self.text}" if self.context else self.text


class Chunker(Protocol):
    """Anything with a ``name``, a JSON-able ``config`` and ``chunk(document)``."""

    name: str

    def config(self) -> dict[str, Any]: ...

    def chunk(self, document: Document) -> list[Chunk]: ...


# --- token estimate and sentences ----------------------------------------------------------

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_]+|[^\w\s]", re.UNICODE)
# A sentence ends after 。！？；!? (full or half width), or '.' followed by space/end, plus any
# closing quotes/brackets; a blank line also ends one.
_SENTENCE_END = re.compile(r"(?:[。！？；!?]+|\.(?=\s|$))[”’」』)）\"']*|\n\s*\n")


def token_spans(text: str) -> list[tuple[int, int]]:
    """Spans of estimated tokens: one per CJK character, word, number or punctuation mark.

    An estimate close to subword tokenizers for Chinese and a little under for English.
    """
    return [m.span() for m in _TOKEN.finditer(text)]


def count_tokens(text: str) -> int:
    """Estimated token count (see :func:`token_spans`).

    Example:
        >>> count_tokens("网络安全法 applies here.")
        8
    """
    return sum(1 for _ in _TOKEN.finditer(text))


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Non-empty sentence spans of ``text[start:end]`` (whitespace trimmed), in order.

    Example:
        >>> t = "第一句。Second one! 第三句"
        >>> [t[s:e] for s, e in sentence_spans(t)]
        ['第一句。', 'Second one!', '第三句']
    """
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    position = start
    for match in _SENTENCE_END.finditer(text, start, end):
        spans.append((position, match.end()))
        position = match.end()
    spans.append((position, end))
    return [trimmed for s, e in spans if (trimmed := _trim(text, s, e))]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


# --- window ------------------------------------------------------------------------------


class WindowChunker:
    """Sentence-aware sliding windows of at most ``max_tokens`` estimated tokens.

    Windows hold whole sentences; consecutive windows share trailing sentences worth up to
    ``overlap * max_tokens`` tokens. A sentence longer than a window is cut by tokens.

    Example:
        >>> doc = Document("d", "One. Two. Three. Four.")
        >>> [c.text for c in WindowChunker(max_tokens=4, overlap=0.5).chunk(doc)]
        ['One. Two.', 'Two. Three.', 'Three. Four.']
    """

    name = "window"

    def __init__(self, max_tokens: int = 256, overlap: float = 0.125):
        if max_tokens < 4:
            raise InvalidInputError("window max_tokens must be at least 4")
        if not 0.0 <= overlap < 0.9:
            raise InvalidInputError("window overlap must be in [0, 0.9)")
        self.max_tokens = max_tokens
        self.overlap = overlap

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "max_tokens": self.max_tokens, "overlap": self.overlap}

    def chunk(self, document: Document) -> list[Chunk]:
        return [
            Chunk(document.text[s:e], s, e, metadata=dict(document.metadata))
            for s, e in self.window_spans(document.text)
        ]

    def window_spans(
        self, text: str, start: int = 0, end: int | None = None
    ) -> list[tuple[int, int]]:
        """Window spans over ``text[start:end]``."""
        units: list[tuple[int, int, int]] = []  # (start, end, tokens)
        for s, e in sentence_spans(text, start, end):
            count = len(_TOKEN.findall(text, s, e))  # spans only for a sentence to split
            if count <= self.max_tokens:
                units.append((s, e, max(1, count)))
            else:
                units.extend(self._split_long(text, s, token_spans(text[s:e])))
        overlap_tokens = int(self.overlap * self.max_tokens)
        windows: list[tuple[int, int]] = []
        i = 0
        while i < len(units):
            j, used = i, 0
            while j < len(units) and (j == i or used + units[j][2] <= self.max_tokens):
                used += units[j][2]
                j += 1
            windows.append((units[i][0], units[j - 1][1]))
            if j >= len(units):
                break
            # step back over trailing units that fit in the overlap budget, keeping progress
            k, tail = j, 0
            while k - 1 > i and tail + units[k - 1][2] <= overlap_tokens:
                k -= 1
                tail += units[k][2]
            i = k
        return windows

    def _split_long(self, text: str, base: int, tokens: list[tuple[int, int]]):
        step = max(1, self.max_tokens - int(self.overlap * self.max_tokens))
        pieces = []
        for first in range(0, len(tokens), step):
            window = tokens[first : first + self.max_tokens]
            pieces.append((base + window[0][0], base + window[-1][1], len(window)))
            if first + self.max_tokens >= len(tokens):
                break
        return pieces


# --- markdown ----------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


class MarkdownChunker:
    """One chunk per heading section (text before the first heading included); the heading
    path is kept as context and as ``metadata["heading_path"]``. Sections over
    ``max_tokens`` are cut into sentence windows."""

    name = "markdown"

    def __init__(self, max_tokens: int = 512, overlap: float = 0.125):
        self.window = WindowChunker(max_tokens, overlap)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_tokens": self.window.max_tokens,
            "overlap": self.window.overlap,
        }

    def chunk(self, document: Document) -> list[Chunk]:
        text = document.text
        sections: list[tuple[list[str], int, int]] = []  # (heading path, body start, body end)
        path: list[tuple[int, str]] = []
        body_start, in_fence, offset = 0, False, 0
        for line in text.splitlines(keepends=True):
            if _FENCE.match(line):
                in_fence = not in_fence
            match = None if in_fence else _HEADING.match(line.rstrip("\r\n"))
            if match:
                sections.append(([t for _, t in path], body_start, offset))
                level = len(match.group(1))
                path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, match.group(2))]
                body_start = offset + len(line)
            offset += len(line)
        sections.append(([t for _, t in path], body_start, len(text)))
        chunks = []
        for headings, start, end in sections:
            for s, e in self.window.window_spans(text, start, end):
                metadata = {**document.metadata, "heading_path": headings}
                chunks.append(Chunk(text[s:e], s, e, " > ".join(headings), metadata))
        return chunks


# --- legal -------------------------------------------------------------------------------

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUM = "零〇一二两三四五六七八九十百千"
_ARTICLE = re.compile(rf"^[ \t\u3000]*(第([{_NUM}]+)条(?:之([{_NUM}]+))?)(?:[ \t\u3000]+|$)", re.M)
_HEADING_LINE = re.compile(
    rf"^[ \t\u3000#]*(第[{_NUM}]+([编章节]))[ \t\u3000]+([^\n。；]{{1,40}}?)[ \t\u3000]*$", re.M
)
# Text after the last article that is not law text (the gazette prints the drafting notes).
_LAW_END = re.compile(r"^[ \t\u3000]*(?:关于《|附件|附：|#)", re.M)
# Gazette page footers: an em-dash, the page number one digit per line, an em-dash, the title.
_FOOTER = re.compile(
    r"^[ \t]*—[ \t]*\n(?:[ \t]*\d[ \t]*\n)+[ \t]*—[ \t]*\n[^\n]*公报[^\n]*(?:\n|$)", re.M
)
_PARAGRAPH_END = "。；：！？"
_ITEM_START = re.compile(rf"^[ \t\u3000]*[(（][{_NUM}]+[)）]")


def chinese_number(text: str) -> int:
    """Value of a Chinese numeral up to 9999.

    Example:
        >>> chinese_number("六十三"), chinese_number("一百零五"), chinese_number("十")
        (63, 105, 10)
    """
    total, digit = 0, 0
    for char in text:
        if char in _CN_DIGITS:
            digit = _CN_DIGITS[char]
        elif char in _CN_UNITS:
            total += (digit or 1) * _CN_UNITS[char]
            digit = 0
        else:
            raise ValueError(f"not a Chinese numeral: {text!r}")
    return total + digit


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Paragraphs of ``text[start:end]`` as (start, end, cleaned text).

    Page footers are skipped; a line joins the previous one unless that ended a sentence or
    clause (。；：！？), a blank line came between, or it opens an item such as ``（一）``.
    Lines joined between two CJK characters get no space (the gazette wraps mid-word).
    """
    blocked = [m.span() for m in _FOOTER.finditer(text, start, end)]
    paragraphs: list[list] = []
    position, boundary = start, True
    for line in text[start:end].splitlines(keepends=True):
        line_start = position
        position += len(line)
        if any(s <= line_start < e for s, e in blocked):
            continue
        stripped = line.strip()
        if not stripped:
            boundary = True
            continue
        s = line_start + (len(line) - len(line.lstrip()))
        e = s + len(stripped)
        if boundary or not paragraphs or _ITEM_START.match(line):
            paragraphs.append([s, e, stripped])
        else:
            last = paragraphs[-1]
            joiner = "" if _is_cjk(last[2][-1]) or _is_cjk(stripped[0]) else " "
            last[1], last[2] = e, last[2] + joiner + stripped
        boundary = stripped[-1] in _PARAGRAPH_END
    return [(s, e, re.sub(r"[ \t\u3000]{2,}", " ", t)) for s, e, t in paragraphs]


def _is_cjk(char: str) -> bool:
    return "\u3000" <= char <= "\u9fff" or "\uff00" <= char <= "\uffef"


def clean_legal_text(text: str) -> str:
    """The cleaned form the legal chunker gives a slice: paragraphs joined by newlines.

    Example:
        >>> clean_legal_text("第一条 为了保障网\\n络安全。\\n第二款。")
        '第一条 为了保障网络安全。\\n第二款。'
    """
    return "\n".join(p for _, _, p in _paragraphs(text, 0, len(text)))


def _heading_name(match: re.Match) -> str:
    name = re.sub(r"[ \t\u3000]+", "", match.group(3))
    return f"{match.group(1)} {name}"


class LegalChunker:
    """One chunk per article of a PRC law (``第X条``), headings attached.

    Articles are recognised at the start of a line, followed by whitespace, with numbers that
    go up one at a time (``第X条之一`` may repeat a number), which rejects cross-references
    such as "依照本法第二十一条规定" even when a line wrap puts them first on a line. The law name
    is ``metadata["law"]`` / ``metadata["title"]`` or the first line of the document. An article
    longer than ``max_chars`` is split between paragraphs (``metadata["part"]`` counts from 1).
    A document without article headings is one article when its metadata says which
    (``article_no``, as in per-article JSONL), else it gives no chunks.
    """

    name = "legal"

    def __init__(self, max_chars: int = 1200):
        if max_chars < 50:
            raise InvalidInputError("legal max_chars must be at least 50")
        self.max_chars = max_chars

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "max_chars": self.max_chars}

    def chunk(self, document: Document) -> list[Chunk]:
        text = document.text
        law = str(document.metadata.get("law") or document.metadata.get("title") or "")
        if not law:
            first = next((ln for ln in text.splitlines() if ln.strip()), "")
            law = first.strip().lstrip("#").strip()[:60]
        articles = self._article_spans(text)
        if not articles and isinstance(document.metadata.get("article_no"), int):
            return self._prechunked(document, law)
        headings = sorted(
            (m.start(), m.group(2), _heading_name(m)) for m in _HEADING_LINE.finditer(text)
        )
        chunks: list[Chunk] = []
        for start, end, article_cn, number in articles:
            chapter = section = None
            for position, kind, name in headings:
                if position >= start:
                    break
                if kind in "编章":
                    chapter, section = name, None
                else:
                    section = name
            metadata = {
                **document.metadata,
                "law": law,
                "article_no": number,
                "article_cn": article_cn,
                "chapter": chapter,
                "section": section,
            }
            context = " ".join(part for part in (law, chapter, section) if part)
            parts = self._split(_paragraphs(text, start, end))
            for index, group in enumerate(parts, start=1):
                part_meta = {**metadata, "part": index} if len(parts) > 1 else metadata
                chunks.append(
                    Chunk(
                        "\n".join(p for _, _, p in group),
                        group[0][0],
                        group[-1][1],
                        context,
                        part_meta,
                    )
                )
        return chunks

    def _prechunked(self, document: Document, law: str) -> list[Chunk]:
        meta = document.metadata
        span = _trim(document.text, 0, len(document.text))
        if span is None:
            return []
        metadata = {**meta, "law": law}
        context = " ".join(str(meta[k]) for k in ("chapter", "section") if meta.get(k))
        context = f"{law} {context}".strip()
        prefix = str(meta.get("article_cn") or "")
        text = clean_legal_text(document.text[span[0] : span[1]])
        return [Chunk(f"{prefix} {text}" if prefix else text, span[0], span[1], context, metadata)]

    def _article_spans(self, text: str) -> list[tuple[int, int, str, int]]:
        matches = [(m, chinese_number(m.group(2))) for m in _ARTICLE.finditer(text)]
        # start at the first 第一条 when there is one (a table of contents or a stray line
        # before it cannot then break the chain), else at the first match (an excerpt)
        first = next((i for i, (_, n) in enumerate(matches) if n == 1), 0)
        starts: list[tuple[int, str, int]] = []
        for match, number in matches[first:]:
            previous = starts[-1][2] if starts else None
            repeat = match.group(3) is not None and number == previous
            if previous is None or number == previous + 1 or repeat:
                starts.append((match.start(1), match.group(1), number))
        spans = []
        boundaries = [m.start() for m in _HEADING_LINE.finditer(text)]
        for i, (start, article_cn, number) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            if i + 1 == len(starts):
                law_end = _LAW_END.search(text, start)
                if law_end:
                    end = law_end.start()
            # a chapter heading between two articles belongs to neither
            end = min([b for b in boundaries if start < b < end] + [end])
            spans.append((start, end, article_cn, number))
        return spans

    def _split(self, paragraphs: list[tuple[int, int, str]]) -> list[list[tuple[int, int, str]]]:
        groups: list[list[tuple[int, int, str]]] = []
        size = 0
        for paragraph in paragraphs:
            if groups and size + len(paragraph[2]) <= self.max_chars:
                groups[-1].append(paragraph)
                size += len(paragraph[2]) + 1
            else:
                groups.append([paragraph])
                size = len(paragraph[2])
        return groups


CHUNKERS = ("legal", "markdown", "window")


def get_chunker(name: str, **options: Any) -> Chunker:
    """A chunker by name (``legal``, ``markdown``, ``window``) with its options.

    Example:
        >>> get_chunker("window", max_tokens=128).config()
        {'name': 'window', 'max_tokens': 128, 'overlap': 0.125}
    """
    import inspect

    classes = {"legal": LegalChunker, "markdown": MarkdownChunker, "window": WindowChunker}
    if name not in classes:
        raise InvalidInputError(f"unknown chunker {name!r}: use one of {', '.join(CHUNKERS)}")
    # Checked here, so that a bad option reads as what to fix, not as a Python TypeError.
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(classes[name]).parameters.items()
    }
    for key, value in options.items():
        if key not in defaults:
            raise InvalidInputError(
                f"unknown option {key!r} for the {name} chunker: use {', '.join(defaults)}"
            )
        wanted = (int, float) if isinstance(defaults[key], float) else (int,)
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "a number" if float in wanted else "an integer"
            raise InvalidInputError(
                f"the {name} chunker's {key} must be {kind}, got {type(value).__name__}"
            )
    return classes[name](**options)
