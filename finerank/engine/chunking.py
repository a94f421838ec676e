"""Token windows over long documents, reported as character spans."""

from __future__ import annotations

from collections.abc import Iterator


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
    if window_tokens < 1:
        raise ValueError("window_tokens must be >= 1")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    count = len(offsets)
    if count <= window_tokens:
        yield (0, len(text))
        return
    step = max(1, window_tokens - round(window_tokens * overlap))
    start = 0
    while True:
        end = min(start + window_tokens, count)
        char_start = 0 if start == 0 else offsets[start][0]
        char_end = len(text) if end == count else offsets[end - 1][1]
        yield (char_start, char_end)
        if end == count:
            return
        start += step
