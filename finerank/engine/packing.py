"""Plan forward passes: share query prefixes, sort by length, cut by a token budget."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from finerank.models.base import EncodedPair, Pack, PackGroup

# Sharing a prefix shorter than this saves less than the bookkeeping costs.
MIN_SHARED_PREFIX = 8


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences.

    Example:
        >>> common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]])
        2
    """
    if not sequences:
        return 0
    first = sequences[0]
    limit = min(len(seq) for seq in sequences)
    for position in range(limit):
        token = first[position]
        if any(seq[position] != token for seq in sequences):
            return position
    return limit


def plan_packs(
    items: Sequence[EncodedPair],
    max_batch_tokens: int,
    *,
    share_prefix: bool = True,
    max_shared_tail: int = 2048,
) -> list[Pack]:
    """Group items into packs of at most ``max_batch_tokens`` tokens (a single longer item
    gets a pack of its own).

    Items with the same ``share_key`` share their common leading tokens (checked on the ids,
    never assumed from the key). Every member keeps at least its last token, since the score is
    read there. Long tails skip sharing: their attention would need a large explicit mask.
    """
    groups: list[PackGroup] = []
    by_key: dict[object, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        if share_prefix and item.share_key is not None:
            by_key[item.share_key].append(index)
        else:
            groups.append(PackGroup([], [(index, list(item.ids))]))
    for indices in by_key.values():
        shared = [i for i in indices]
        prefix_len = 0
        if len(shared) > 1:
            prefix_len = common_prefix_length([items[i].ids for i in shared])
            prefix_len = min(prefix_len, min(len(items[i].ids) for i in shared) - 1)
        if len(shared) < 2 or prefix_len < MIN_SHARED_PREFIX:
            groups.extend(PackGroup([], [(i, list(items[i].ids))]) for i in shared)
            continue
        prefix = list(items[shared[0]].ids[:prefix_len])
        group = PackGroup(prefix, [])
        for i in shared:
            tail = list(items[i].ids[prefix_len:])
            if len(tail) > max_shared_tail:
                groups.append(PackGroup([], [(i, list(items[i].ids))]))
            else:
                group.members.append((i, tail))
        if len(group.members) == 1:
            ((i, _),) = group.members
            groups.append(PackGroup([], [(i, list(items[i].ids))]))
        elif group.members:
            groups.append(group)
    return _fill(groups, max_batch_tokens)


def _fill(groups: list[PackGroup], budget: int) -> list[Pack]:
    """Greedy fill, longest first; a shared group may be split, repeating its prefix."""
    packs: list[Pack] = []
    current = Pack()
    used = 0

    def close() -> None:
        nonlocal current, used
        if current.groups:
            packs.append(current)
        current, used = Pack(), 0

    for group in sorted(groups, key=lambda g: -max(len(t) for _, t in g.members)):
        members = sorted(group.members, key=lambda m: -len(m[1]))
        part: PackGroup | None = None
        for member in members:
            cost = len(member[1]) + (len(group.prefix) if part is None else 0)
            if used + cost > budget and current.groups:
                close()
                part = None
                cost = len(member[1]) + len(group.prefix)
            if part is None:
                part = PackGroup(group.prefix, [])
                current.groups.append(part)
            part.members.append(member)
            used += cost
    close()
    return packs
