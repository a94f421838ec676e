"""jieba's precise segmentation (``jieba.cut(text)``, HMM on) of runs of CJK characters, fast.

The BM25 analyzer asks jieba where the function words of each CJK run are. jieba is pure
Python (about 0.6 ms of the 0.9 ms an average statute article takes to analyze here); rjieba,
the Python binding of jieba-rs (the same dictionary, DAG, route and HMM in Rust), gives the
same words about 5 times faster. :func:`cut` uses rjieba when it is installed and jieba
otherwise, with the same output either way: ``tests/retrieval/test_segmentation.py`` compares
the two on every distinct run of the STARD and PRC law corpora and on random text.

The one place they differ is the characters jieba's Python code does not treat as Chinese
(only U+4E00..U+9FD5 are; jieba-rs also takes CJK Extension A/B.., the compatibility
ideographs and U+9FD6..U+9FFF): jieba cuts the run there and yields each such character as a
word of its own, so :func:`cut` cuts there too before it calls rjieba.

Example:
    >>> cut("劳动合同的解除")
    ['劳动合同', '的', '解除']
    >>> cut("㐀的")  # U+3400 is not a jieba "han" character: a word of its own
    ['㐀', '的']
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

# jieba's re_han_default without the ASCII it also accepts (our runs are CJK only)
_JIEBA_HAN = re.compile("([\u4e00-\u9fd5]+)")
_BACKEND_ENV = "FINERANK_SEGMENTER"  # "jieba" forces the pure-Python reference

_cut_block: Callable[[str], list[str]] | None = None
backend: str | None = None  # "rjieba" or "jieba" once loaded


def _jieba_cut_block() -> Callable[[str], list[str]]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return lambda block: list(jieba.cut(block))


def _load() -> Callable[[str], list[str]]:
    global _cut_block, backend
    if _cut_block is None:
        if os.environ.get(_BACKEND_ENV, "").lower() != "jieba":
            try:
                import rjieba
            except ImportError:
                pass
            else:
                _cut_block, backend = (lambda block: rjieba.cut(block, hmm=True)), "rjieba"
        if _cut_block is None:
            _cut_block, backend = _jieba_cut_block(), "jieba"
    return _cut_block


def cut(run: str, cut_block: Callable[[str], list[str]] | None = None) -> list[str]:
    """The words of ``run`` (CJK characters only) as ``jieba.cut(run)`` gives them.

    Args:
        run: a run of characters of the analyzer's CJK ranges.
        cut_block: segmenter of a block of U+4E00..U+9FD5 characters (default: rjieba if
            installed, else jieba); tests pass each to compare them.

    Returns:
        The words in order; they concatenate to ``run``.
    """
    segment = cut_block or _cut_block or _load()
    if len(run) == 1 or _JIEBA_HAN.fullmatch(run):
        return segment(run) if len(run) > 1 else [run]
    words: list[str] = []
    for block in _JIEBA_HAN.split(run):
        if not block:
            continue
        if "\u4e00" <= block[0] <= "\u9fd5":
            words.extend(segment(block))
        else:  # jieba yields every other character alone
            words.extend(block)
    return words
