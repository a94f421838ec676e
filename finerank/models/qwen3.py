"""Qwen3-Reranker backend: the official yes/no semantics over a packed, prefix-sharing forward.

The reference code runs ``AutoModelForCausalLM`` on a left-padded batch and reads the full
151,669-wide vocabulary logits at the last position. finerank runs the same decoder layers on
packed sequences (no padding), lets documents of one query attend to a prefix computed once,
and projects only the final hidden state of each sequence onto the two output rows it needs
("no" and "yes"), in fp32. The result equals the reference up to float rounding.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finerank.errors import InvalidInputError, ModelLoadError
from finerank.models.attention import (
    CPU_ROW_MULTIPLE,
    PackLayout,
    attend_buckets,
    attend_groups,
    build_layout,
)
from finerank.models.base import EncodedPair, Pack
from finerank.models.fused import CompileMode, FusedKernels, compile_wanted
from finerank.models.linear import OneDnnProjections, build_projections
from finerank.models.loading import reading_model_files
from finerank.models.template import (
    NO_TOKEN,
    QWEN3_ASSISTANT_SUFFIX,
    QWEN3_SYSTEM_PREFIX,
    YES_TOKEN,
    format_body,
)

logger = logging.getLogger(__name__)

# Above this many tokens a sequence with a shared prefix would need a large explicit mask;
# the engine runs such sequences standalone (pure causal, no mask) instead.
MAX_SHARED_TAIL = 2048


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


# attribute of a decoder layer holding its fused projections (False: run the modules)
_PROJECTIONS = "_finerank_projections"


def _load_varlen_attn():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:  # torch < 2.10
        return None
    return adapt_varlen_attn(varlen_attn)


def adapt_varlen_attn(varlen_attn):
    """``varlen_attn`` callable as PyTorch 2.12+ declares it (``scale``, ``window_size`` and
    ``enable_gqa`` keywords), whichever release ``torch.nn.attention.varlen`` comes from.

    2.12+ take all three. 2.11 takes ``scale`` and ``window_size`` but not ``enable_gqa``
    (its flash kernel takes fewer key/value heads as they are); 2.10 takes only a positional
    ``is_causal`` (the kernel's own scale, ``head_dim ** -0.5``, is Qwen3's). Passing
    ``enable_gqa`` to 2.11 raised TypeError, which switched the kernel off.

    Example:
        >>> def torch_2_10(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False):
        ...     return is_causal
        >>> q = torch.zeros(3, 4, 16)
        >>> adapt_varlen_attn(torch_2_10)(q, q, q, None, None, 3, 3,
        ...                               scale=0.25, window_size=(-1, 0), enable_gqa=False)
        True
    """
    accepted = inspect.signature(varlen_attn).parameters
    if "enable_gqa" in accepted:
        return varlen_attn
    with_window = "window_size" in accepted

    def attend(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, window_size, enable_gqa):
        if with_window:
            window = tuple(window_size)  # 2.11 compares it with (-1, 0) for is_causal
            return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window)
        if tuple(window_size) not in ((-1, 0), (-1, -1)) or (
            scale is not None and not math.isclose(scale, q.shape[-1] ** -0.5)
        ):
            raise NotImplementedError("this PyTorch's varlen_attn has no scale or window")
        return varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, tuple(window_size) == (-1, 0))

    return attend


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||`` (Frobenius, in fp64): how far two attention paths' hidden
    states are apart, independent of the hidden states' scale.

    Example:
        >>> relative_difference(torch.tensor([0.0, 4.0]), torch.tensor([0.0, 5.0]))
        0.2
    """
    want = want.double()
    return float((got.double() - want).norm() / want.norm().clamp_min(1e-300))


class PackedDecoder:
    """Runs a Qwen3 decoder stack on packed sequences with per-sequence positions.

    A pack is a list of segments laid end to end. A segment is either a prefix (plain causal
    attention over itself) or a tail that sees its group's prefix and then itself, causally.
    Tails take positions after their prefix, exactly as if prefix + tail ran alone.

    Attention (see :mod:`finerank.models.attention`): on CPU short segments go through
    padded buckets (two batched matmuls and a softmax), long ones through one PyTorch SDPA
    call per segment shape; memory is linear in the pack's tokens. On CUDA with fp16/bf16, one
    variable-length flash-attention call per layer over all segments
    (``torch.nn.attention.varlen``); it is checked once against the SDPA path on the first
    pack and switched off if the two disagree. ``attention="sdpa"`` forces the SDPA groups.
    ``compile`` says whether the elementwise chains compile on CPU (:mod:`finerank.models.fused`).

    Plain ``nn.Linear`` projections run fused (:mod:`finerank.models.linear`): q|k|v in one
    GEMM, the residual adds folded into the output GEMMs; on CPU through weights packed once
    for oneDNN with SiLU and gate x up as GEMM epilogues. Built on the first forward, one copy
    of the weights either way. Quantized layers run through their modules.

    Example:
        >>> decoder = PackedDecoder(causal_lm.model)  # doctest: +SKIP
        >>> decoder.last_hidden(pack).shape  # doctest: +SKIP
        torch.Size([n_members, hidden_size])
    """

    #: max :func:`relative_difference` of the varlen and SDPA paths' hidden states accepted by
    #: the first-use check: bf16 paths differ by ~1e-3-1e-2; a wrong mask or head mapping by
    #: >0.2 (an absolute bound on hidden states would scale with the model's activations)
    VARLEN_CHECK_TOLERANCE = 0.05

    def __init__(self, model: nn.Module, *, attention: str = "auto", compile: CompileMode = "auto"):
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
        if attention not in ("auto", "sdpa", "varlen", "buckets"):
            raise InvalidInputError("attention must be 'auto', 'sdpa', 'varlen' or 'buckets'")
        self.attention = attention
        self._varlen = _load_varlen_attn() if attention not in ("sdpa", "buckets") else None
        self._varlen_checked = attention == "varlen"
        #: the first-use check's outcome once it ran: ``kept``, ``relative_difference`` (see
        #: :func:`relative_difference`) or ``error`` (the kernel raised); None before
        self.varlen_check: dict | None = None
        #: CPU packs are padded to a multiple of this many rows (1: no padding)
        self.row_multiple = CPU_ROW_MULTIPLE
        weight = model.embed_tokens.weight
        #: compiled elementwise chains (q/k norm + RoPE, RMSNorm), eager when unavailable
        self.kernels = FusedKernels(
            enabled=compile_wanted(config.hidden_size, weight.device, weight.dtype, compile)
        )

    def reset(self) -> None:
        """Rebuild the fused projections on the next forward (call after quantizing layers);
        layers whose weights were packed for oneDNN keep their packed copies."""
        for layer in self.model.layers:
            projections = getattr(layer, _PROJECTIONS, None)
            if projections is not None and not isinstance(projections, OneDnnProjections):
                delattr(layer, _PROJECTIONS)

    def _use_varlen(self, device: torch.device, dtype: torch.dtype) -> bool:
        if self._varlen is None:
            return False
        if self.attention == "varlen":
            return True
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)

    def _use_buckets(self, device: torch.device) -> bool:
        return self.attention == "buckets" or (self.attention == "auto" and device.type == "cpu")

    @torch.inference_mode()
    def last_hidden(self, pack: Pack) -> torch.Tensor:
        """Final-norm hidden state at the last token of every member, in member order."""
        weight = self.model.embed_tokens.weight
        varlen = self._use_varlen(weight.device, weight.dtype)
        layout = build_layout(
            pack,
            weight.device,
            buckets=self._use_buckets(weight.device),
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            pad_to=self.row_multiple if weight.device.type == "cpu" else 1,
            # the SDPA groups' masks and indices (host-to-device copies, each a stream sync)
            # only where SDPA may run: not once the varlen kernel passed its check
            groups=not (varlen and self._varlen_checked),
        )
        if varlen:
            if not self._varlen_checked:
                return self._check_varlen(layout)
            return self._run(layout, varlen=True)
        return self._run(layout, varlen=False)

    def _check_varlen(self, layout: PackLayout) -> torch.Tensor:
        """First use of the varlen kernel: run both paths, keep the kernel when they agree
        within :attr:`VARLEN_CHECK_TOLERANCE` (relative), SDPA for good otherwise; logged and
        recorded in :attr:`varlen_check`. Returns the SDPA result."""
        try:
            fast = self._run(layout, varlen=True)
        except torch.OutOfMemoryError:
            raise  # not the kernel's fault: the engine halves the pack, checked then
        except Exception as error:  # kernel missing for this GPU / dtype / torch: keep SDPA
            self._varlen, self._varlen_checked = None, True
            self.varlen_check = {"kept": False, "error": f"{type(error).__name__}: {error}"}
            logger.warning("varlen attention kernel failed, using SDPA: %s", error)
            return self._run(layout, varlen=False)
        exact = self._run(layout, varlen=False)
        self._varlen_checked = True
        difference = relative_difference(fast, exact)
        kept = difference <= self.VARLEN_CHECK_TOLERANCE  # False for NaN too
        self.varlen_check = {"kept": kept, "relative_difference": difference}
        if not kept:
            self._varlen = None
            logger.warning(
                "varlen attention kernel differs from SDPA by %.3g (relative), using SDPA",
                difference,
            )
        return exact

    def _projections(self, layer, device: torch.device):
        projections = getattr(layer, _PROJECTIONS, None)
        if projections is None:
            projections = build_projections(layer, onednn=device.type == "cpu")
            # False marks "use the modules" so the check is not repeated every forward
            setattr(layer, _PROJECTIONS, projections if projections is not None else False)
        return projections or None

    def _run(self, layout: PackLayout, *, varlen: bool) -> torch.Tensor:
        if varlen:
            layout.varlen_runs()  # copied to the device now, not mid-forward (a stream sync)
        hidden = self.model.embed_tokens(layout.input_ids)  # [T, D]
        cos, sin = self.model.rotary_emb(hidden, layout.position_ids[None])  # [1, T, d]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # [T, 1, d]
        attend = self._attend_varlen if varlen else self._attend_sdpa
        device = hidden.device
        for layer in self.model.layers:
            projections = self._projections(layer, device)
            if projections is None:
                hidden = self._layer_modules(layer, hidden, cos, sin, layout, attend)
            else:
                hidden = self._layer_fused(layer, projections, hidden, cos, sin, layout, attend)
        return self.model.norm(hidden[layout.last_index])

    def _layer_fused(self, layer, projections, hidden, cos, sin, layout, attend):
        attn = layer.self_attn
        tokens = hidden.shape[0]
        q_size = self.num_heads * self.head_dim
        heads, kv_heads = self.num_heads, self.num_kv_heads
        # q|k|v side by side, [T, heads + 2 kv_heads, d]; q and k normed and rotated
        qkv = projections.qkv(self._norm(layer.input_layernorm, hidden))
        qkv = qkv.view(tokens, -1, self.head_dim)
        if self.kernels.active("qk_norm_rope"):
            q_norm, k_norm = attn.q_norm, attn.k_norm
            eps = q_norm.variance_epsilon
            qkv = self.kernels.qk_norm_rope(
                qkv, q_norm.weight, k_norm.weight, cos, sin, eps, heads, kv_heads
            )
        else:  # in place
            q, k = qkv[:, :heads], qkv[:, heads : heads + kv_heads]
            _rope(attn.q_norm(q), cos, sin, out=q)
            _rope(attn.k_norm(k), cos, sin, out=k)
        out = attend(qkv, layout).reshape(tokens, q_size)
        if layout.pad_rows:
            out[tokens - layout.pad_rows :] = 0  # never written by attention
        hidden = projections.out(out, hidden)  # hidden + o_proj(out)
        return projections.mlp(self._norm(layer.post_attention_layernorm, hidden), hidden)

    def _norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.kernels.active("rms_norm"):
            return self.kernels.rms_norm(x, norm.weight, norm.variance_epsilon)
        return _rms_norm(norm, x)

    def _layer_modules(self, layer, hidden, cos, sin, layout, attend):
        attn = layer.self_attn
        tokens = hidden.shape[0]
        normed = layer.input_layernorm(hidden)
        q = attn.q_norm(attn.q_proj(normed).view(tokens, self.num_heads, self.head_dim))
        k = attn.k_norm(attn.k_proj(normed).view(tokens, self.num_kv_heads, self.head_dim))
        v = attn.v_proj(normed).view(tokens, self.num_kv_heads, self.head_dim)
        qkv = torch.cat([_rope(q, cos, sin), _rope(k, cos, sin), v], dim=1)
        out = attend(qkv, layout).reshape(tokens, self.num_heads * self.head_dim)
        if layout.pad_rows:
            out[tokens - layout.pad_rows :] = 0  # never written by attention
        hidden = hidden + attn.o_proj(out)
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def _split(self, qkv: torch.Tensor):
        heads, kv_heads = self.num_heads, self.num_kv_heads
        return qkv[:, :heads], qkv[:, heads : heads + kv_heads], qkv[:, heads + kv_heads :]

    def _attend_sdpa(self, qkv: torch.Tensor, layout: PackLayout) -> torch.Tensor:
        out = None
        if layout.buckets:
            out = attend_buckets(qkv, layout, self.num_heads, self.scaling)
        if layout.groups:
            out = attend_groups(*self._split(qkv), layout, self.scaling, out=out)
        return out

    def _attend_varlen(self, qkv: torch.Tensor, layout: PackLayout) -> torch.Tensor:
        q, k, v = (part.contiguous() for part in self._split(qkv))
        # flash-attention's causal mask is bottom-right aligned when a run has more keys than
        # queries, which is exactly "prefix, then the tail causally"
        kv_index, cu_q, cu_k, max_q, max_k = layout.varlen_runs()
        if kv_index is not None:
            k = k.index_select(0, kv_index)
            v = v.index_select(0, kv_index)
        return self._varlen(
            q,
            k,
            v,
            cu_q,
            cu_k,
            max_q,
            max_k,
            scale=self.scaling,
            window_size=(-1, 0),
            enable_gqa=self.num_heads != self.num_kv_heads,
        )


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` (a Qwen3 RMSNorm); in bf16/fp16 through PyTorch's fused kernel, which
    keeps the fp32 statistics in registers instead of converting the whole tensor to fp32
    and back (3.5x faster on [1200, 1024] bf16 on one EPYC core; it rounds once where the
    module rounds twice). fp32 keeps the module: the reference's own arithmetic."""
    if x.dtype == torch.float32:
        return norm(x)
    return F.rms_norm(x, x.shape[-1:], norm.weight, norm.variance_epsilon)


def _rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` (the Qwen3/Llama rotary embedding) in four fused
    passes, without materializing the rotated copy; into ``out`` when given."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    first, second = out[..., :half], out[..., half:]
    torch.mul(x1, cos[..., :half], out=first)
    first.addcmul_(x2, sin[..., :half], value=-1)
    torch.mul(x2, cos[..., half:], out=second)
    second.addcmul_(x1, sin[..., half:])
    return out


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
        compile: CompileMode = "auto",
    ):
        """Load the model in ``path`` on ``device`` in ``dtype``; ``compile``: whether its
        CPU kernels compile (:func:`finerank.models.fused.compile_wanted`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        with reading_model_files(path, what="reranker"):
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
        self.decoder = PackedDecoder(self.decoder_model, compile=compile)
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

    @property
    def warm_up_due(self) -> bool:
        """Whether the next forward compiles kernels (see :meth:`ScoringEngine.warm_up`)."""
        return self.decoder.kernels.pending

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
