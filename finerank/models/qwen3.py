"""Qwen3-Reranker backend: the official yes/no semantics over a packed, prefix-sharing forward.

The reference code runs ``AutoModelForCausalLM`` on a left-padded batch and reads the full
151,669-wide vocabulary logits at the last position. finerank runs the same decoder layers on
packed sequences (no padding), lets documents of one query attend to a prefix computed once,
and projects only the final hidden state of each sequence onto the two output rows it needs
("no" and "yes"), in fp32. The result equals the reference up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finerank.errors import InvalidInputError, ModelLoadError
from finerank.models.base import EncodedPair, Pack
from finerank.models.template import (
    NO_TOKEN,
    QWEN3_ASSISTANT_SUFFIX,
    QWEN3_SYSTEM_PREFIX,
    YES_TOKEN,
    format_body,
)

# Above this many tokens a sequence with a shared prefix would need a large explicit mask;
# the engine runs such sequences standalone (pure causal, no mask) instead.
MAX_SHARED_TAIL = 2048
# Tails at least this many times longer than their prefix attend through the causal kernel
# (prefix queries recomputed and dropped) instead of an explicit mask; measured on CPU:
# 58-token tail / 92-token prefix: mask 5 ms vs 20 ms; 522/92: 212 vs 179 ms; 2048/92: 2.8 vs 1.3 s.
FULL_CAUSAL_TAIL_RATIO = 4


@dataclass(frozen=True)
class Qwen3Template:
    """Tokenized prompt pieces and truncation rules of the Qwen3 reranker."""

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    max_length: int

    @property
    def body_budget(self) -> int:
        """Tokens left for ``<Instruct>...<Document>: doc`` after prefix and suffix."""
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids)


def build_template(tokenizer, max_length: int) -> Qwen3Template:
    prefix = tuple(tokenizer.encode(QWEN3_SYSTEM_PREFIX, add_special_tokens=False))
    suffix = tuple(tokenizer.encode(QWEN3_ASSISTANT_SUFFIX, add_special_tokens=False))
    if max_length <= len(prefix) + len(suffix):
        raise InvalidInputError(
            f"max_length={max_length} leaves no room for text: the Qwen3 template alone takes "
            f"{len(prefix) + len(suffix)} tokens"
        )
    return Qwen3Template(prefix, suffix, max_length)


def encode_qwen3_pairs(
    tokenizer,
    template: Qwen3Template,
    query: str,
    documents: list[str],
    instruction: str | None,
    max_doc_tokens: int | None = None,
) -> list[EncodedPair]:
    """Reference tokenization: body tokenized alone, cut from the right, prefix/suffix kept.

    ``max_doc_tokens`` (the API's ``max_tokens_per_doc``) additionally caps the document part.
    Huge documents are not tokenized in full: see :func:`encode_truncated` (same ids).
    """
    head = format_body(query, "", instruction)
    budget = template.body_budget
    if max_doc_tokens is not None:
        overhead = len(encode_truncated(tokenizer, [head], budget + 1)[0])
        budget = min(budget, overhead + max_doc_tokens)
    encoded = encode_truncated(tokenizer, [head + doc for doc in documents], budget)
    key = (query, instruction)
    return [
        EncodedPair(template.prefix_ids + tuple(ids) + template.suffix_ids, key) for ids in encoded
    ]


# First guess of how many characters hold `budget` tokens when cutting a long text before
# tokenizing: prose rarely averages more than ~4 characters per token (CJK ~1.5); text with
# longer tokens just doubles the cut until enough tokens are stable.
_CUT_CHARS_PER_TOKEN = 4
_CUT_SLACK_CHARS = 256


def encode_truncated(tokenizer, texts: list[str], budget: int) -> list[list[int]]:
    """``tokenizer(text)["input_ids"][:budget]`` for each text, without tokenizing all of a
    huge text.

    A long text is cut to a character prefix first. Its tokens are accepted only up to a
    boundary that no continuation of the text can move: before the last pre-tokenizer pieces
    (BPE never merges across pieces; a whitespace piece looks one piece ahead) and before
    anything an added/special token crossing the cut could cover. If fewer than ``budget``
    tokens lie before that boundary the cut is doubled. Tokenizers without a pre-tokenizer
    (or slow ones) always tokenize the full text.

    Example:
        >>> encode_truncated(tokenizer, ["a very long text ..."], 3)  # doctest: +SKIP
        [[64, 1602, 1293]]
    """
    results: list[list[int] | None] = [None] * len(texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    cuts = {i: budget * _CUT_CHARS_PER_TOKEN + _CUT_SLACK_CHARS for i in range(len(texts))}
    pending = list(range(len(texts)))
    if pre is None:
        cuts = {i: len(text) for i, text in enumerate(texts)}
    else:
        added_len = max(
            (len(t.content) for t in backend.get_added_tokens_decoder().values()), default=0
        )
    while pending:
        whole = [i for i in pending if cuts[i] >= len(texts[i])]
        cut = [i for i in pending if cuts[i] < len(texts[i])]
        if whole:
            ids = tokenizer([texts[i] for i in whole], return_attention_mask=False)["input_ids"]
            for i, row in zip(whole, ids, strict=True):
                results[i] = list(row[:budget])
        pending = []
        if not cut:
            break
        encoded = tokenizer(
            [texts[i][: cuts[i]] for i in cut],
            return_attention_mask=False,
            return_offsets_mapping=True,
        )
        for i, row, offsets in zip(
            cut, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            if (
                len(row) > budget
                and _stable_tokens(pre, texts[i][: cuts[i]], offsets, added_len) >= budget
            ):
                results[i] = list(row[:budget])
            else:
                cuts[i] *= 2
                pending.append(i)
    return results  # type: ignore[return-value]


def _stable_tokens(pre_tokenizer, text: str, offsets, added_len: int) -> int:
    """How many leading tokens of ``text`` stay the same whatever text follows it."""
    limit = len(text) - added_len - 1
    pieces = pre_tokenizer.pre_tokenize_str(text)
    last = len(pieces) - 2  # the last piece may grow; the one before may lose trailing spaces
    while last >= 0 and pieces[last][1][0] > limit:
        last -= 1
    last -= 2  # margin: a whitespace piece looks ahead; normalization may merge a neighbour
    if last < 0:
        return 0
    boundary = pieces[last][1][0]
    return sum(1 for _, end in offsets if end <= boundary)


@dataclass
class _AttentionGroup:
    """Segments of one shape (query rows, key rows) attended in a single SDPA call."""

    q_starts: list[int]
    k_starts: list[int]
    q_len: int
    k_len: int
    mask: torch.Tensor | None  # bottom-right causal when k_len > q_len; None means plain causal
    # long tails: run causal attention over prefix + tail queries and keep the tail rows (the
    # masked CPU kernel computes every masked block; causal skips them, ~2x faster at 2K)
    full_causal: bool = False
    q_index: torch.Tensor | None = None  # gathered rows when the group holds several segments
    k_index: torch.Tensor | None = None


@dataclass
class PackLayout:
    """Everything about a pack that does not change from layer to layer, built once per pack.

    Attention reads keys/values from an *extended* buffer in which every segment's keys form a
    contiguous run: its group's prefix (if any) then its own tokens. ``kv_index`` builds that
    buffer with one gather per layer (``None`` when no segment has a prefix: the buffer is then
    the keys themselves). The same runs are what a variable-length attention kernel takes
    (``cu_seq_q``/``cu_seq_k``).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor
    kv_index: torch.Tensor | None
    groups: list[_AttentionGroup]
    cu_seq_q: torch.Tensor
    cu_seq_k: torch.Tensor
    max_q: int
    max_k: int

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def build_layout(pack: Pack, device: torch.device) -> PackLayout:
    """Token ids, positions, key runs and attention groups of ``pack`` (see :class:`PackLayout`).

    Example:
        >>> from finerank.models.base import Pack, PackGroup
        >>> pack = Pack([PackGroup([1, 2], [(0, [3]), (1, [4, 5])])])
        >>> layout = build_layout(pack, torch.device("cpu"))
        >>> layout.position_ids.tolist(), layout.cu_seq_k.tolist()
        ([0, 1, 2, 2, 3], [0, 2, 5, 9])
    """
    ids: list[int] = []
    positions: list[int] = []
    kv_index: list[int] = []
    segments: list[tuple[int, int, int, int]] = []  # (q_start, q_len, k_start, k_len)
    last_index: list[int] = []
    has_prefix = False
    for group in pack.groups:
        prefix_start, prefix_len = len(ids), len(group.prefix)
        prefix_rows = range(prefix_start, prefix_start + prefix_len)
        if prefix_len:
            has_prefix = True
            ids.extend(group.prefix)
            positions.extend(range(prefix_len))
            segments.append((prefix_start, prefix_len, len(kv_index), prefix_len))
            kv_index.extend(prefix_rows)
        for _, tail in group.members:
            start = len(ids)
            ids.extend(tail)
            positions.extend(range(prefix_len, prefix_len + len(tail)))
            segments.append((start, len(tail), len(kv_index), prefix_len + len(tail)))
            kv_index.extend(prefix_rows)
            kv_index.extend(range(start, start + len(tail)))
            last_index.append(start + len(tail) - 1)
    if not has_prefix:
        # the extended buffer is the keys themselves: runs start where the segments start
        segments = [(q, n, q, k) for q, n, _, k in segments]

    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for q_start, q_len, k_start, k_len in segments:
        by_shape.setdefault((q_len, k_len), []).append((q_start, k_start))
    masks: dict[tuple[int, int], torch.Tensor] = {}
    groups: list[_AttentionGroup] = []
    for (q_len, k_len), starts in by_shape.items():
        mask = None
        full_causal = k_len != q_len and q_len >= FULL_CAUSAL_TAIL_RATIO * (k_len - q_len)
        if k_len != q_len and not full_causal:
            # bottom-right aligned causal: tail token j sees the prefix and tail[:j+1]
            mask = masks.get((q_len, k_len))
            if mask is None:
                mask = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(
                    diagonal=k_len - q_len
                )
                masks[(q_len, k_len)] = mask
        group = _AttentionGroup(
            [q for q, _ in starts], [k for _, k in starts], q_len, k_len, mask, full_causal
        )
        if len(starts) > 1:
            q_rows = torch.tensor([q for q, _ in starts], device=device)[:, None]
            k_rows = torch.tensor([k for _, k in starts], device=device)[:, None]
            group.q_index = (q_rows + torch.arange(q_len, device=device)).reshape(-1)
            group.k_index = (k_rows + torch.arange(k_len, device=device)).reshape(-1)
        groups.append(group)

    q_lens = [n for _, n, _, _ in segments]
    k_lens = [k for _, _, _, k in segments]
    cu_q = torch.tensor([0, *q_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    cu_k = torch.tensor([0, *k_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return PackLayout(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        position_ids=torch.tensor(positions, dtype=torch.long, device=device),
        last_index=torch.tensor(last_index, dtype=torch.long, device=device),
        kv_index=torch.tensor(kv_index, dtype=torch.long, device=device) if has_prefix else None,
        groups=groups,
        cu_seq_q=cu_q.to(device),
        cu_seq_k=cu_k.to(device),
        max_q=max(q_lens),
        max_k=max(k_lens),
    )


def _load_varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # older torch
        return None
    return varlen_attn


class PackedDecoder:
    """Runs a Qwen3 decoder stack on packed sequences with per-sequence positions.

    A pack is a list of segments laid end to end. A segment is either a prefix (plain causal
    attention over itself) or a tail that sees its group's prefix and then itself, causally.
    Tails take positions after their prefix, exactly as if prefix + tail ran alone.

    Attention: on CPU (and as the fallback everywhere) one PyTorch SDPA call per distinct
    segment shape, on views of the packed tensors; memory is linear in the pack's tokens (the
    only masks are per-shape, at most ``MAX_SHARED_TAIL`` x (prefix + tail)). On CUDA with
    fp16/bf16, one variable-length flash-attention call per layer over all segments
    (``torch.nn.attention.varlen``); it is checked once against the SDPA path on the first
    pack and switched off if the two disagree.

    Example:
        >>> decoder = PackedDecoder(causal_lm.model)  # doctest: +SKIP
        >>> decoder.last_hidden(pack).shape  # doctest: +SKIP
        torch.Size([n_members, hidden_size])
    """

    #: max |difference| between the varlen and SDPA paths accepted by the first-use check
    VARLEN_CHECK_TOLERANCE = 0.05

    def __init__(self, model: nn.Module, *, attention: str = "auto"):
        # model is a Qwen3Model (the decoder without the LM head)
        self.model = model
        config = model.config
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )
        self.scaling = self.head_dim**-0.5
        if getattr(config, "use_sliding_window", False):
            raise ModelLoadError("Qwen3 models with sliding-window attention are not supported")
        if attention not in ("auto", "sdpa", "varlen"):
            raise InvalidInputError("attention must be 'auto', 'sdpa' or 'varlen'")
        self.attention = attention
        self._varlen = _load_varlen_attn() if attention != "sdpa" else None
        self._varlen_checked = attention == "varlen"

    def _use_varlen(self, device: torch.device, dtype: torch.dtype) -> bool:
        if self._varlen is None:
            return False
        if self.attention == "varlen":
            return True
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)

    @torch.inference_mode()
    def last_hidden(self, pack: Pack) -> torch.Tensor:
        """Final-norm hidden state at the last token of every member, in member order."""
        weight = self.model.embed_tokens.weight
        layout = build_layout(pack, weight.device)
        if self._use_varlen(weight.device, weight.dtype):
            if not self._varlen_checked:
                self._varlen_checked = True
                try:
                    fast = self._run(layout, varlen=True)
                except Exception:  # kernel missing for this GPU / dtype: keep SDPA
                    self._varlen = None
                    return self._run(layout, varlen=False)
                exact = self._run(layout, varlen=False)
                if (fast.float() - exact.float()).abs().max() > self.VARLEN_CHECK_TOLERANCE:
                    self._varlen = None
                return exact
            return self._run(layout, varlen=True)
        return self._run(layout, varlen=False)

    def _run(self, layout: PackLayout, *, varlen: bool) -> torch.Tensor:
        hidden = self.model.embed_tokens(layout.input_ids)  # [T, D]
        cos, sin = self.model.rotary_emb(hidden, layout.position_ids[None])  # [1, T, d]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # [T, 1, d]
        attend = self._attend_varlen if varlen else self._attend_sdpa
        for layer in self.model.layers:
            residual = hidden
            normed = layer.input_layernorm(hidden)
            hidden = residual + self._attention(layer.self_attn, normed, cos, sin, layout, attend)
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.norm(hidden[layout.last_index])

    def _attention(self, attn, hidden, cos, sin, layout: PackLayout, attend) -> torch.Tensor:
        tokens = hidden.shape[0]
        q = attn.q_norm(attn.q_proj(hidden).view(tokens, self.num_heads, self.head_dim))
        k = attn.k_norm(attn.k_proj(hidden).view(tokens, self.num_kv_heads, self.head_dim))
        v = attn.v_proj(hidden).view(tokens, self.num_kv_heads, self.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if layout.kv_index is not None:
            k = k.index_select(0, layout.kv_index)
            v = v.index_select(0, layout.kv_index)
        out = attend(q, k, v, layout)
        return attn.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))

    def _attend_sdpa(self, q, k, v, layout: PackLayout) -> torch.Tensor:
        gqa = self.num_heads != self.num_kv_heads
        if len(layout.groups) == 1 and layout.groups[0].q_index is None:
            out = None  # one segment covers the pack: write nothing, return the result
        else:
            out = torch.empty_like(q)
        q_runs = None  # queries laid out like the key runs (prefix rows + tail rows)
        for group in layout.groups:
            count = len(group.q_starts)
            source, starts, rows, index = q, group.q_starts, group.q_len, group.q_index
            if group.full_causal:
                if q_runs is None:
                    q_runs = q.index_select(0, layout.kv_index)
                source, starts, rows, index = q_runs, group.k_starts, group.k_len, group.k_index
            if group.q_index is None:
                q0, k0 = starts[0], group.k_starts[0]
                qs = source[q0 : q0 + rows][None]
                ks = k[k0 : k0 + group.k_len][None]
                vs = v[k0 : k0 + group.k_len][None]
            else:
                qs = source.index_select(0, index).view(count, rows, *q.shape[1:])
                ks = k.index_select(0, group.k_index).view(count, group.k_len, *k.shape[1:])
                vs = v.index_select(0, group.k_index).view(count, group.k_len, *v.shape[1:])
            result = F.scaled_dot_product_attention(
                qs.transpose(1, 2),
                ks.transpose(1, 2),
                vs.transpose(1, 2),
                attn_mask=group.mask,
                is_causal=group.mask is None,
                scale=self.scaling,
                enable_gqa=gqa,
            ).transpose(1, 2)  # [count, rows, H, d]
            if group.full_causal:
                result = result[:, rows - group.q_len :]
            if out is None:
                return result[0]
            if group.q_index is None:
                out[group.q_starts[0] : group.q_starts[0] + group.q_len] = result[0]
            else:
                out.index_copy_(0, group.q_index, result.reshape(-1, *q.shape[1:]))
        return out

    def _attend_varlen(self, q, k, v, layout: PackLayout) -> torch.Tensor:
        # flash-attention's causal mask is bottom-right aligned when a run has more keys than
        # queries, which is exactly "prefix, then the tail causally"
        return self._varlen(
            q,
            k,
            v,
            layout.cu_seq_q,
            layout.cu_seq_k,
            layout.max_q,
            layout.max_k,
            scale=self.scaling,
            window_size=(-1, 0),
            enable_gqa=self.num_heads != self.num_kv_heads,
        )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Qwen3RerankerBackend:
    """Yes/no causal-LM reranker (Qwen3-Reranker-0.6B/4B/8B)."""

    family = "qwen3"
    supports_prefix_sharing = True

    def __init__(
        self,
        path: Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        causal = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        yes_id = self.tokenizer.convert_tokens_to_ids(YES_TOKEN)
        no_id = self.tokenizer.convert_tokens_to_ids(NO_TOKEN)
        unk = self.tokenizer.unk_token_id
        if yes_id is None or no_id is None or unk in (yes_id, no_id) and unk is not None:
            raise ModelLoadError(f"tokenizer in {path} has no 'yes'/'no' tokens")
        self.yes_id, self.no_id = int(yes_id), int(no_id)
        # Only two rows of the output layer matter: keep them in fp32, drop the rest.
        head = causal.get_output_embeddings().weight
        self.head = head[[self.no_id, self.yes_id]].detach().to(device, torch.float32).clone()
        self.decoder_model = causal.model.to(device).eval()
        del causal
        self.decoder = PackedDecoder(self.decoder_model)
        self.template = build_template(self.tokenizer, max_length)

    def encode(
        self,
        query: str,
        documents: list[str],
        instruction: str | None,
        max_doc_tokens: int | None = None,
    ) -> list[EncodedPair]:
        return encode_qwen3_pairs(
            self.tokenizer, self.template, query, documents, instruction, max_doc_tokens
        )

    def forward(self, pack: Pack) -> torch.Tensor:
        """Margins ``logit(yes) - logit(no)`` in fp32; score = sigmoid(margin)."""
        last = self.decoder.last_hidden(pack).to(torch.float32)
        logits = last @ self.head.T  # [N, 2] = (no, yes)
        return logits[:, 1] - logits[:, 0]

    def document_budget(self, query: str, instruction: str | None) -> int:
        """Document tokens that fit beside the template, instruction and query."""
        budget = self.template.body_budget
        # at most budget + 1 tokens of a huge query are read: past that the answer is 32
        head = format_body(query, "", instruction)
        overhead = len(encode_truncated(self.tokenizer, [head], budget + 1)[0])
        # a few tokens of slack: a window re-tokenized after "<Document>: " may merge differently
        return max(32, budget - overhead - 4)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
