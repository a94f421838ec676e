"""The batch interface every model backend implements.

A backend turns (query, document, instruction) into token ids (``encode``), runs one packed
forward pass over many sequences (``forward``), and turns the raw output into scores
(``postprocess``). The engine (``finerank.engine``) decides which sequences share a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one scored sequence.

    ``ids`` is the full model input. ``share_key`` groups sequences whose leading tokens may be
    identical (same query and instruction); the engine checks the actual ids before sharing.
    """

    ids: tuple[int, ...]
    share_key: object = None


@dataclass
class PackGroup:
    """Sequences that attend to one shared prefix (``prefix`` may be empty)."""

    prefix: list[int]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (item index, tail ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prefix) + sum(len(tail) for _, tail in self.members)


@dataclass
class Pack:
    """One forward pass: groups concatenated without padding."""

    groups: list[PackGroup] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(group.num_tokens for group in self.groups)

    @property
    def item_indices(self) -> list[int]:
        return [index for group in self.groups for index, _ in group.members]


class Backend(Protocol):
    """What the engine needs from a model backend."""

    family: str
    max_length: int
    device: torch.device
    dtype: torch.dtype
    supports_prefix_sharing: bool

    tokenizer: object

    def encode(
        self,
        query: str,
        documents: list[str],
        instruction: str | None,
        max_doc_tokens: int | None = None,
    ) -> list[EncodedPair]:
        """Token ids for each (query, document) pair, truncated like the reference."""
        ...

    def forward(self, pack: Pack) -> torch.Tensor:
        """fp32 logits (one per member, in ``pack.item_indices`` order)."""
        ...

    def document_budget(self, query: str, instruction: str | None) -> int:
        """Document tokens that fit in one sequence beside the query and template."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` alone, without template or special tokens."""
        ...
