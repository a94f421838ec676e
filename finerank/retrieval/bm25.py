"""Lexical analysis and BM25 sparse vectors for Qdrant.

finerank computes the BM25 *term-frequency* part of every document vector itself and lets
Qdrant apply the IDF part at query time (``Modifier.IDF`` on the sparse vector config), so a
document's vector never needs re-weighting when the corpus grows or shrinks. Token ids are
stable 32-bit hashes of the token text, so no vocabulary has to be stored or shared between
processes (the Ray indexer computes exactly the same vectors).

Analyzer (``finerank-bm25-v2``): NFKC, lower case. Runs of CJK characters are indexed as
character **unigrams and bigrams**; function words (particles, pronouns, question words and
modal verbs such as 的, 吗, 我, 什么, 怎么办, 可以) are found with jieba's precise
segmentation and dropped, and no bigram spans one. Other text is split into letters/digits
words like Lucene's standard analyzer, with a classic English stop list and a light plural
stemmer, so English (and the English words of mixed text) is analyzed as before. Unigrams and
bigrams beat jieba words (every mode) on colloquial legal questions because a question and the
statute that answers it rarely segment the same way (承包地 / 承包的土地); see
docs/evaluation.md for the measurements.

Example:
    >>> analyze("Servers were attacked; 数据被破坏了吗")
    ['server', 'attacked', '数', '据', '数据', '破', '坏', '破坏']
    >>> vec = Bm25Encoder(avg_doc_length=10).document_vector("data data law")
    >>> len(vec.indices), round(max(vec.values), 3)
    (2, 1.712)
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from finerank.retrieval import segmentation

ANALYZER_VERSION = "finerank-bm25-v2"

# Lucene's classic English stop set plus a few very frequent function words.
ENGLISH_STOPWORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with were been being has have had do does did from
    which who whom what when where why how than its it's can could would should may might must
    shall our we you your he she his her them i me my us""".split()  # noqa: SIM905
)
# High-frequency Chinese function words, and the particles, pronouns, question words and modal
# verbs of colloquial questions: rare in the statutes, so their IDF would be high and they
# would match at random.
CHINESE_STOPWORDS = frozenset(
    """的 了 和 与 或 及 是 在 对 等 其 之 由 而 并 以 为 于 也 被 将 把 这 那
    吗 呢 吧 啊 呀 嘛 么 啥 咋 哪 谁 何 什么 怎么 怎样 怎么样 怎么办 如何 为何 为什么 哪些
    哪个 哪里 多少 几 是否 能否 可否 是不是 能不能 可不可以 有没有 会不会 要不要
    我 你 您 他 她 它 我们 你们 他们 她们 咱 咱们 自己 本人 别人 人家 请问 请 想 想要 觉得
    知道 一下 这个 那个 这样 那样 这种 那种 还 又 都 就 才 会 能 可以 应该 需要 要 得 该""".split()  # noqa: SIM905
)

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_RUN = re.compile(rf"([{_CJK}]+)|([^\W_]+(?:'[^\W_]+)?)", re.UNICODE)
_WORD = re.compile(r"\w", re.UNICODE)


def _stem(word: str) -> str:
    """Light English stemmer (plural and possessive endings): cheap and predictable."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _cjk_terms(run: str, terms: list[str]) -> None:
    """Unigrams and bigrams of a CJK run, cut at its function words."""
    piece = ""
    for word in [*segmentation.cut(run), ""]:  # "" flushes the last piece
        if word and word not in CHINESE_STOPWORDS and _WORD.search(word):
            piece += word
            continue
        terms.extend(piece)
        terms.extend(piece[i : i + 2] for i in range(len(piece) - 1))
        piece = ""


def analyze(text: str) -> list[str]:
    """Index terms of ``text`` (queries and documents use the same analyzer)."""
    text = unicodedata.normalize("NFKC", text).lower()
    terms: list[str] = []
    for match in _RUN.finditer(text):
        cjk, word = match.groups()
        if cjk:
            _cjk_terms(cjk, terms)
        elif word not in ENGLISH_STOPWORDS:
            terms.append(_stem(word))
    return terms


def token_id(term: str) -> int:
    """Stable 32-bit id of a term (CRC-32 of its UTF-8 bytes).

    Example:
        >>> token_id("law")
        202069295
    """
    return zlib.crc32(term.encode("utf-8"))


@dataclass(frozen=True)
class SparseVector:
    """Sorted unique ``indices`` with their ``values`` (Qdrant's sparse vector layout)."""

    indices: list[int]
    values: list[float]


def _to_sparse(weights: dict[int, float]) -> SparseVector:
    ordered = sorted(weights.items())
    return SparseVector([i for i, _ in ordered], [w for _, w in ordered])


@dataclass(frozen=True)
class Bm25Encoder:
    """BM25 term weights without IDF: ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avg))``.

    ``avg_doc_length`` is fixed per collection (recorded in its metadata when it is created)
    so that vectors never change once written.
    """

    avg_doc_length: float
    k1: float = 1.2
    b: float = 0.75

    def document_vector(self, text: str) -> SparseVector:
        terms = analyze(text)
        ordered = sorted(Counter(token_id(term) for term in terms).items())
        return self.vector_from_counts(len(terms), [t for t, _ in ordered], [f for _, f in ordered])

    def vector_from_counts(
        self, length: int, indices: Sequence[int], frequencies: Sequence[int]
    ) -> SparseVector:
        """The document vector of a text with ``length`` analyzed terms whose distinct term
        ids are ``indices`` (sorted) with term frequencies ``frequencies``."""
        norm = self.k1 * (1 - self.b + self.b * length / max(self.avg_doc_length, 1e-9))
        k1 = self.k1 + 1
        if isinstance(frequencies, array):  # bm25_pool's packed counts: the same float64 ops
            tf = np.frombuffer(frequencies, dtype=f"u{frequencies.itemsize}").astype(np.float64)
            ids = indices.tolist() if isinstance(indices, array) else list(indices)
            return SparseVector(ids, (tf * k1 / (tf + norm)).tolist())
        return SparseVector(list(indices), [tf * k1 / (tf + norm) for tf in frequencies])

    @staticmethod
    def query_vector(text: str) -> SparseVector:
        """Each distinct query term once; Qdrant multiplies by its IDF."""
        return _to_sparse({token_id(term): 1.0 for term in analyze(text)})


def average_length(texts: Iterable[str]) -> float:
    """Mean number of analyzed terms (at least 1.0), used to fix a new collection's BM25."""
    total = count = 0
    for text in texts:
        total += len(analyze(text))
        count += 1
    return max(1.0, total / count) if count else 1.0


def idf(num_docs: int, doc_freq: int) -> float:
    """Qdrant's IDF (``ln(1 + (N - n + 0.5) / (n + 0.5))``), for tests and explanations."""
    return math.log(1 + (num_docs - doc_freq + 0.5) / (doc_freq + 0.5))
