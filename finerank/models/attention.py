"""Attention over packed sequences: the pack's layout and the kernels that read it.

A pack is a list of *segments* laid end to end: a prefix (causal over itself), a tail (sees
its group's prefix, then itself causally) or a standalone sequence. Three ways to attend:

* **Buckets** (CPU, segments up to :data:`BUCKET_MAX_ROWS` rows): segments of one prefix and
  similar length are right-padded to one length and attended with two batched matmuls and a
  softmax. Padding is exact: under the causal mask a real row never sees a padded key. The
  gathers put query heads that share a key/value head side by side, so grouped-query
  attention needs no copy of the keys. PyTorch's CPU flash kernel reaches 15-35 GFLOP/s on
  such short sequences and bf16 gains nothing over fp32 in it; the matmuls reach 80-160
  (bf16, one AVX512-BF16 core).
* **Groups** (SDPA): segments of one shape share one ``scaled_dot_product_attention`` call;
  the fallback everywhere and the CPU path for long segments.
* **Variable-length** (CUDA, fp16/bf16): one flash-attention call over all segments.

Every way computes the same function; the tests hold them to each other on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from finerank.models.base import Pack

# Tails at least this many times longer than their prefix attend through the causal kernel
# (prefix queries recomputed and dropped) instead of an explicit mask; measured on CPU:
# 58-token tail / 92-token prefix: mask 5 ms vs 20 ms; 522/92: 212 vs 179 ms; 2048/92: 2.8 vs 1.3 s.
FULL_CAUSAL_TAIL_RATIO = 4
#: segments with more query rows than this use the SDPA groups (the flash kernel is efficient
#: there, and a bucket's score matrix would grow quadratically)
BUCKET_MAX_ROWS = 384
#: a bucket may cost this much more than its segments unpadded (rows x keys)
BUCKET_PADDING = 1.25
#: padding a bucket may add beyond that, in rows x keys: below it another call costs more
BUCKET_MIN_WORK = 1 << 15
#: cap on one score matrix (elements): a bigger bucket is attended in slices of segments
BUCKET_SCORE_ELEMENTS = 1 << 23
#: CPU packs are padded to a multiple of this many rows: oneDNN's fp32 GEMMs run 10-25%
#: slower on a ragged row count (measured, [M, 1024] x [1024, 4096] on 2 EPYC threads:
#: M = 1073 -> 79-88 GFLOP/s, 1072-1152 -> 90-103) and the padding costs < 16 rows
CPU_ROW_MULTIPLE = 16


@dataclass
class Segment:
    """Query rows ``[start, start + rows)`` attending to ``prefix_rows`` prefix rows starting at
    ``prefix_start``, then to themselves causally."""

    start: int
    rows: int
    prefix_start: int = 0
    prefix_rows: int = 0

    @property
    def keys(self) -> int:
        return self.prefix_rows + self.rows


@dataclass
class AttentionGroup:
    """Segments of one shape (query rows, key rows) attended in a single SDPA call."""

    segments: list[Segment]
    q_len: int
    k_len: int
    mask: torch.Tensor | None  # bottom-right causal when k_len > q_len; None means plain causal
    # long tails: run causal attention over prefix + tail queries and keep the tail rows (the
    # masked CPU kernel computes every masked block; causal skips them, ~2x faster at 2K)
    full_causal: bool = False
    # rows of the segments' queries and of their key runs (prefix, then own rows); None: one
    # standalone segment, read as contiguous slices
    q_index: torch.Tensor | None = None
    k_index: torch.Tensor | None = None


@dataclass
class Bucket:
    """Segments of one prefix padded to ``rows`` rows, attended with two matmuls.

    Its queries are ``[count * kv_heads, groups * rows, head_dim]`` (the query heads of one
    key head next to each other: grouped-query attention needs no copy of the keys), its keys
    and values ``[count * kv_heads, keys, head_dim]``; all three are slices of the layer's one
    gather (:attr:`PackLayout.bucket_gather`), at ``offset``.
    """

    count: int
    rows: int
    keys: int
    offset: int  # first gathered row of this bucket's queries (then keys, then values)
    result_offset: int  # first row of its results in the layer's result buffer
    mask: torch.Tensor  # [groups * rows, keys] additive: 0 or -inf
    real_rows: int
    _masks: dict = field(default_factory=dict)

    def mask_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The additive mask in ``dtype`` (converted once per pack)."""
        if dtype not in self._masks:
            self._masks[dtype] = self.mask.to(dtype)
        return self._masks[dtype]


@dataclass
class PackLayout:
    """Everything about a pack that does not change from layer to layer, built once per pack."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor
    segments: list[Segment]
    #: rows appended after the last segment so the GEMMs see a row count oneDNN blocks well;
    #: no segment reads or covers them (their attention output is zeroed)
    pad_rows: int = 0
    groups: list[AttentionGroup] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)
    #: rows of the packed q|k|v (viewed as ``[tokens * (heads + 2 * kv_heads), head_dim]``)
    #: every bucket reads, in one gather per layer
    bucket_gather: torch.Tensor | None = None
    #: where each bucket result row goes in ``[tokens * heads + 1, head_dim]`` (the last row
    #: takes padded rows)
    bucket_scatter: torch.Tensor | None = None
    _varlen: tuple | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def varlen_runs(self) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, int, int]:
        """(kv_index, cu_seq_q, cu_seq_k, max_q, max_k) for a variable-length kernel: keys and
        values gathered so that every segment's keys (its prefix, then itself) form one run;
        ``kv_index`` is None when no segment has a prefix (the runs are the keys themselves)."""
        if self._varlen is None:
            device = self.input_ids.device
            has_prefix = any(s.prefix_rows for s in self.segments)
            kv: list[int] = []
            for s in self.segments:
                kv.extend(range(s.prefix_start, s.prefix_start + s.prefix_rows))
                kv.extend(range(s.start, s.start + s.rows))
            q_lens = [s.rows for s in self.segments]
            k_lens = [s.keys for s in self.segments]
            cu_q = torch.tensor([0, *q_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
            cu_k = torch.tensor([0, *k_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
            self._varlen = (
                torch.tensor(kv, dtype=torch.long, device=device) if has_prefix else None,
                cu_q.to(device),
                cu_k.to(device),
                max(q_lens),
                max(k_lens),
            )
        return self._varlen


def build_layout(
    pack: Pack,
    device: torch.device,
    *,
    buckets: bool = False,
    num_heads: int = 1,
    num_kv_heads: int = 1,
    pad_to: int = 1,
    groups: bool = True,
) -> PackLayout:
    """Token ids, positions, segments and attention plan of ``pack``.

    ``buckets=True`` attends segments of up to :data:`BUCKET_MAX_ROWS` rows in buckets (CPU);
    the rest (all of them otherwise) in SDPA groups (``groups=False``: none, for a pack only
    the variable-length kernel reads). Head counts size the bucket indices.
    ``pad_to`` rounds the row count up to a multiple with rows no segment covers (see
    :data:`CPU_ROW_MULTIPLE`).

    Example:
        >>> from finerank.models.base import Pack, PackGroup
        >>> pack = Pack([PackGroup([1, 2], [(0, [3]), (1, [4, 5])])])
        >>> layout = build_layout(pack, torch.device("cpu"))
        >>> layout.position_ids.tolist(), layout.varlen_runs()[2].tolist()
        ([0, 1, 2, 2, 3], [0, 2, 5, 9])
    """
    ids: list[int] = []
    positions: list[int] = []
    segments: list[Segment] = []
    last_index: list[int] = []
    for group in pack.groups:
        prefix_start, prefix_len = len(ids), len(group.prefix)
        if prefix_len:
            ids.extend(group.prefix)
            positions.extend(range(prefix_len))
            segments.append(Segment(prefix_start, prefix_len))
        for _, tail in group.members:
            start = len(ids)
            ids.extend(tail)
            positions.extend(range(prefix_len, prefix_len + len(tail)))
            segments.append(Segment(start, len(tail), prefix_start, prefix_len))
            last_index.append(start + len(tail) - 1)
    pad_rows = -len(ids) % pad_to
    ids.extend([0] * pad_rows)
    positions.extend([0] * pad_rows)
    layout = PackLayout(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        position_ids=torch.tensor(positions, dtype=torch.long, device=device),
        last_index=torch.tensor(last_index, dtype=torch.long, device=device),
        segments=segments,
        pad_rows=pad_rows,
    )
    short = [s for s in segments if buckets and s.rows <= BUCKET_MAX_ROWS]
    long = [s for s in segments if not (buckets and s.rows <= BUCKET_MAX_ROWS)]
    layout.groups = _groups(long, device) if groups else []
    if short:
        _add_buckets(layout, short, num_heads, num_kv_heads, device)
    return layout


def _rows(segment: Segment, *, with_prefix: bool) -> list[int]:
    rows = list(range(segment.start, segment.start + segment.rows))
    if with_prefix and segment.prefix_rows:
        prefix = range(segment.prefix_start, segment.prefix_start + segment.prefix_rows)
        rows = [*prefix, *rows]
    return rows


def _groups(segments: list[Segment], device: torch.device) -> list[AttentionGroup]:
    by_shape: dict[tuple[int, int], list[Segment]] = {}
    for s in segments:
        by_shape.setdefault((s.rows, s.keys), []).append(s)
    groups = []
    for (q_len, k_len), members in by_shape.items():
        mask = None
        full_causal = k_len != q_len and q_len >= FULL_CAUSAL_TAIL_RATIO * (k_len - q_len)
        if k_len != q_len and not full_causal:
            # bottom-right aligned causal: tail token j sees the prefix and tail[:j+1]
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(
                diagonal=k_len - q_len
            )
        group = AttentionGroup(members, q_len, k_len, mask, full_causal)
        if len(members) > 1 or k_len != q_len:
            k_rows = [r for s in members for r in _rows(s, with_prefix=True)]
            q_rows = [r for s in members for r in _rows(s, with_prefix=False)]
            group.k_index = torch.tensor(k_rows, dtype=torch.long, device=device)
            group.q_index = torch.tensor(q_rows, dtype=torch.long, device=device)
        groups.append(group)
    return groups


def _add_buckets(
    layout: PackLayout, segments: list[Segment], heads: int, kv_heads: int, device: torch.device
) -> None:
    """Pad segments of one prefix and similar length together (ordered by length; a new
    bucket when padding would cost more than :data:`BUCKET_PADDING` times the real work plus
    :data:`BUCKET_MIN_WORK`: a small bucket costs more in calls than padding saves)."""
    by_prefix: dict[tuple[int, int], list[Segment]] = {}
    for s in segments:
        by_prefix.setdefault((s.prefix_start, s.prefix_rows), []).append(s)
    plan: list[list[Segment]] = []
    for (_, prefix_rows), members in by_prefix.items():
        members.sort(key=lambda s: s.rows)
        current: list[Segment] = []
        real = 0
        for s in members:
            cost = s.rows * (prefix_rows + s.rows)
            padded = (len(current) + 1) * s.rows * (prefix_rows + s.rows)
            if current and padded > BUCKET_PADDING * (real + cost) + BUCKET_MIN_WORK:
                plan.append(current)
                current, real = [], 0
            current.append(s)
            real += cost
        if current:
            plan.append(current)
    tokens = layout.num_tokens
    gathers: list[torch.Tensor] = []
    scatters: list[torch.Tensor] = []
    offset = result_offset = 0
    for members in plan:
        rows = max(s.rows for s in members)
        per_segment = heads * rows * (members[0].prefix_rows + rows)  # score elements
        step = max(1, BUCKET_SCORE_ELEMENTS // per_segment)
        for first in range(0, len(members), step):
            bucket, gather, scatter = _bucket(
                members[first : first + step], tokens, heads, kv_heads, offset, result_offset
            )
            layout.buckets.append(bucket)
            gathers.append(gather)
            scatters.append(scatter)
            offset += gather.numel()
            result_offset += scatter.numel()
    layout.bucket_gather = torch.cat(gathers).to(device)
    layout.bucket_scatter = torch.cat(scatters).to(device)


def _bucket(
    members: list[Segment], tokens: int, heads: int, kv_heads: int, offset: int, result_offset: int
) -> tuple[Bucket, torch.Tensor, torch.Tensor]:
    """One bucket and its gather (queries, keys, values) / scatter rows."""
    rows = max(s.rows for s in members)
    prefix_rows = members[0].prefix_rows
    keys = prefix_rows + rows
    groups = heads // kv_heads
    stride = heads + 2 * kv_heads  # rows of one token in the packed q|k|v
    allowed = torch.ones(rows, keys, dtype=torch.bool).tril(diagonal=keys - rows)
    mask = torch.zeros(rows, keys).masked_fill_(~allowed, float("-inf")).repeat(groups, 1)
    j = torch.arange(rows).view(1, -1)
    head = torch.arange(heads).view(1, kv_heads, groups, 1)  # head = kv * groups + g
    kv = torch.arange(kv_heads).view(1, kv_heads, 1)
    starts = torch.tensor([s.start for s in members]).view(-1, 1)
    lengths = torch.tensor([s.rows for s in members]).view(-1, 1)
    # padded rows repeat the segment's last real row: finite values that no real row sees
    q_rows = starts + torch.minimum(j, lengths - 1)  # [count, rows]
    prefix = torch.tensor([s.prefix_start for s in members]).view(-1, 1)
    k_rows = torch.cat([prefix + torch.arange(prefix_rows).view(1, -1), q_rows], dim=1)
    q_index = q_rows[:, None, None, :] * stride + head  # [count, kv, g, rows]
    k_index = k_rows[:, None, :] * stride + heads + kv  # [count, kv, keys]
    v_index = k_index + kv_heads
    scatter = torch.where(
        (j < lengths)[:, None, None, :],
        (starts + j)[:, None, None, :] * heads + head,
        tokens * heads,  # the scratch row past the end of the output
    )
    gather = torch.cat([q_index.reshape(-1), k_index.reshape(-1), v_index.reshape(-1)])
    bucket = Bucket(
        count=len(members),
        rows=rows,
        keys=keys,
        offset=offset,
        result_offset=result_offset,
        mask=mask,
        real_rows=int(lengths.sum()),
    )
    return bucket, gather, scatter.reshape(-1)


def attend_buckets(qkv: torch.Tensor, layout: PackLayout, heads: int, scale: float) -> torch.Tensor:
    """Attention of every bucketed segment; other rows of the result are left uninitialised.

    Args:
        qkv: ``[tokens, heads + 2 * kv_heads, head_dim]``: queries, keys, values side by side.
        heads: query heads (the rest of ``qkv``'s second dimension is keys, then values).

    Returns:
        ``[tokens, heads, head_dim]``.
    """
    tokens, width, dim = qkv.shape
    kv_heads = (width - heads) // 2
    groups = heads // kv_heads
    rows = qkv.reshape(tokens * width, dim).index_select(0, layout.bucket_gather)
    results = qkv.new_empty(layout.bucket_scatter.numel(), dim)
    for b in layout.buckets:
        batch = b.count * kv_heads
        q_rows, k_rows = batch * groups * b.rows, batch * b.keys
        start = b.offset
        qb = rows[start : start + q_rows].view(batch, groups * b.rows, dim)
        kb = rows[start + q_rows : start + q_rows + k_rows].view(batch, b.keys, dim)
        vb = rows[start + q_rows + k_rows : start + q_rows + 2 * k_rows].view(batch, b.keys, dim)
        mask = b.mask_as(qkv.dtype).expand(batch, groups * b.rows, b.keys)
        # the mask is the addend: scores = mask + scale * q k^T in one GEMM call
        scores = torch.baddbmm(mask, qb, kb.transpose(1, 2), alpha=scale)
        # CPU softmax accumulates in fp32 whatever the input dtype
        probs = torch.softmax(scores, dim=-1)
        out = results[b.result_offset : b.result_offset + q_rows].view(batch, groups * b.rows, dim)
        torch.bmm(probs, vb, out=out)
    out = qkv.new_empty(tokens * heads + 1, dim)  # + a scratch row for padded results
    out.index_copy_(0, layout.bucket_scatter, results)
    return out[:-1].view(tokens, heads, dim)


def attend_groups(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: PackLayout,
    scale: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """SDPA per segment shape for the layout's groups, written into ``out`` (allocated when
    None; with a single segment covering the whole pack, its result is returned directly)."""
    gqa = q.shape[1] != k.shape[1]
    groups = layout.groups
    if out is None and len(groups) == 1 and groups[0].k_index is None and not layout.pad_rows:
        g = groups[0]
        return F.scaled_dot_product_attention(
            q[None].transpose(1, 2),
            k[None].transpose(1, 2),
            v[None].transpose(1, 2),
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        ).transpose(1, 2)[0][: g.q_len]
    if out is None:
        out = torch.empty_like(q)
    for group in groups:
        count = len(group.segments)
        rows = group.k_len if group.full_causal else group.q_len
        if group.k_index is None:  # one standalone segment: contiguous slices
            start = group.segments[0].start
            qs = q[start : start + rows][None]
            ks = k[start : start + group.k_len][None]
            vs = v[start : start + group.k_len][None]
        else:
            source = group.k_index if group.full_causal else group.q_index
            qs = q.index_select(0, source).view(count, rows, *q.shape[1:])
            ks = k.index_select(0, group.k_index).view(count, group.k_len, *k.shape[1:])
            vs = v.index_select(0, group.k_index).view(count, group.k_len, *v.shape[1:])
        result = F.scaled_dot_product_attention(
            qs.transpose(1, 2),
            ks.transpose(1, 2),
            vs.transpose(1, 2),
            attn_mask=group.mask,
            is_causal=group.mask is None,
            scale=scale,
            enable_gqa=gqa,
        ).transpose(1, 2)  # [count, rows, H, d]
        if group.full_causal:
            result = result[:, rows - group.q_len :]
        if group.q_index is None:
            start = group.segments[0].start
            out[start : start + group.q_len] = result[0]
        else:
            out.index_copy_(0, group.q_index, result.reshape(-1, *q.shape[1:]))
    return out
