"""Token windows over long documents, reported as character spans.

A long document is tokenized in slices (:func:`token_offsets`): a caller can stop part way
(the request is over its token limit) or let other work run between slices, and the offsets
are exactly those of tokenizing the whole text at once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# Characters tokenized per slice of a long document (~0.1 s on one CPU core).
SLICE_CHARS = 32_768


def split_windows(
    tokenizer, text: str, *, window_tokens: int, overlap: float = 0.125
) -> Iterator[tuple[int, int]]:
    """Yield (start, end) character spans of windows of at most ``window_tokens`` tokens.

    Consecutive windows overlap by ``round(window_tokens * overlap)`` tokens so a passage cut
    by one window boundary lies whole inside the next. A text that fits gives one span
    covering all of it.

    Example:
        >>> from transformers import AutoTokenizer  # doctest: +SKIP
        >>> spans = split_windows(tok, "a b c d", window_tokens=4, overlap=0.25)  # doctest: +SKIP
        >>> list(spans)  # doctest: +SKIP
        [(0, 7), (6, 11)]
    """
    offsets = [pair for part in token_offsets(tokenizer, text) for pair in part]
    yield from window_spans(offsets, len(text), window_tokens=window_tokens, overlap=overlap)


def window_spans(
    offsets: list[tuple[int, int]], text_length: int, *, window_tokens: int, overlap: float
) -> Iterator[tuple[int, int]]:
    """The windows of :func:`split_windows` from a text's token ``offsets``."""
    if window_tokens < 1:
        raise ValueError("window_tokens must be >= 1")
    count = len(offsets)
    if count <= window_tokens:
        yield (0, text_length)
        return
    step = max(1, window_tokens - round(window_tokens * overlap))
    start = 0
    while True:
        end = min(start + window_tokens, count)
        char_start = 0 if start == 0 else offsets[start][0]
        char_end = text_length if end == count else offsets[end - 1][1]
        yield (char_start, char_end)
        if end == count:
            return
        start += step


def token_offsets(
    tokenizer, text: str, *, slice_chars: int = SLICE_CHARS
) -> Iterator[list[tuple[int, int]]]:
    """The character offsets of ``text``'s tokens (no special tokens added), a slice at a
    time: concatenated, exactly ``tokenizer(text, return_offsets_mapping=True)``'s.

    Each slice is cut where no following text can change a token before it: at the start of a
    pre-tokenizer piece (BPE never merges across pieces) two pieces before the end of what was
    read, after a character that is not whitespace, away from any added token and where the
    text is in NFC (the tokenizer's normalization cannot join the two sides); the rest is
    tokenized on its own. Text with no such point in a slice (or a tokenizer without a
    pre-tokenizer) is read in longer slices, up to all of it at once.

    Example:
        >>> parts = token_offsets(tokenizer, long_text, slice_chars=4096)  # doctest: +SKIP
        >>> sum(len(part) for part in parts)  # doctest: +SKIP
        90112
    """
    for _, offsets in _slices(tokenizer, text, slice_chars):
        yield offsets


def safe_prefix(tokenizer, text: str, tokens: int, *, slice_chars: int = SLICE_CHARS) -> str:
    """A prefix of ``text`` whose tokens are ``text``'s first tokens, holding more than
    ``tokens`` of them (or all of ``text``): what truncating to ``tokens`` needs, without
    tokenizing the rest of a huge text."""
    count = 0
    for end, offsets in _slices(tokenizer, text, slice_chars):
        count += len(offsets)
        if count > tokens:
            return text[:end]
    return text


def _slices(tokenizer, text: str, slice_chars: int) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """(where the slice ends, offsets of its tokens), slice after slice (see token_offsets)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    added = [t.content for t in backend.get_added_tokens_decoder().values()] if backend else []
    position, size = 0, max(1, slice_chars)
    while True:
        rest = len(text) - position
        if pre is None or rest <= size:
            yield len(text), _offsets(tokenizer, text[position:], position)
            return
        piece = text[position : position + size]
        cut = _safe_cut(pre, piece, added)
        if cut <= 0:
            size *= 2  # no safe point in this much text: read more at once
            continue
        yield position + cut, _offsets(tokenizer, piece[:cut], position)
        position += cut
        size = max(1, slice_chars)


def _offsets(tokenizer, text: str, shift: int) -> list[tuple[int, int]]:
    if not text:
        return []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [(start + shift, end + shift) for start, end in encoded["offset_mapping"]]


def _safe_cut(pre_tokenizer, text: str, added: list[str]) -> int:
    """A position in ``text`` where tokenizing ``text[:cut]`` and what follows separately
    gives the same tokens as tokenizing them together; 0 if there is none."""
    longest_added = max((len(a) for a in added), default=0)
    limit = len(text) - longest_added - 2
    tokens = _added_spans(text, added)
    starts = [start for start in _piece_starts(pre_tokenizer, text, tokens) if start <= limit]
    # The last pieces may still grow (greedy patterns, whitespace looking ahead): keep two
    # whole pieces between the cut and the end of what was read.
    # Whitespace right before the cut would be read differently at the end of the left part
    # (a whitespace piece looks at what follows it). Pieces are found on the raw text but the
    # tokenizer splits its normalized (NFC) form: around the cut both must be the same.
    for index in range(len(starts) - 3, 0, -1):
        start = starts[index]
        if (
            start > 0
            and not text[start - 1].isspace()
            and unicodedata.category(text[start])[0] != "M"
            and _normalized(text, starts[index - 1] - 8, starts[index + 1] + 8)
            and not _near(tokens, start)
        ):
            return start
    return 0


def _added_spans(text: str, added: list[str]) -> list[tuple[int, int]]:
    """Where the tokenizer takes added tokens out of ``text`` (leftmost, longest first) before
    pre-tokenizing what lies between them."""
    if not added:
        return []
    pattern = re.compile("|".join(re.escape(a) for a in sorted(added, key=len, reverse=True)))
    return [match.span() for match in pattern.finditer(text)]


def _piece_starts(pre_tokenizer, text: str, tokens: list[tuple[int, int]]) -> list[int]:
    """Start of every pre-tokenizer piece of ``text``, each stretch between added tokens
    pre-tokenized on its own (as the tokenizer does)."""
    starts: list[int] = []
    position = 0
    for start, end in [*tokens, (len(text), len(text))]:
        if start > position:
            stretch = pre_tokenizer.pre_tokenize_str(text[position:start])
            starts.extend(position + piece_start for _, (piece_start, _) in stretch)
        starts.append(start)
        position = end
    return starts


def _near(tokens: list[tuple[int, int]], cut: int, margin: int = 8) -> bool:
    return any(start - margin <= cut <= end + margin for start, end in tokens)


def _normalized(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is its own NFC form."""
    return unicodedata.is_normalized("NFC", text[max(0, start) : end])
