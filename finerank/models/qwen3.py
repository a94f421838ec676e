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

from finerank.errors import ModelLoadError
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
        raise ValueError(
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
    """
    bodies = [format_body(query, doc, instruction) for doc in documents]
    budget = template.body_budget
    if max_doc_tokens is not None:
        overhead = len(tokenizer(format_body(query, "", instruction))["input_ids"])
        budget = min(budget, overhead + max_doc_tokens)
    encoded = tokenizer(bodies, add_special_tokens=True, return_attention_mask=False)["input_ids"]
    key = (query, instruction)
    return [
        EncodedPair(template.prefix_ids + tuple(ids[:budget]) + template.suffix_ids, key)
        for ids in encoded
    ]


class PackedDecoder:
    """Runs a Qwen3 decoder stack on packed sequences with per-sequence positions.

    A pack is a list of segments laid end to end. A segment is either a prefix (plain causal
    attention over itself) or a tail that sees its group's prefix and then itself, causally.
    Tails take positions after their prefix, exactly as if prefix + tail ran alone.
    """

    def __init__(self, model: nn.Module):
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

    @torch.inference_mode()
    def last_hidden(self, pack: Pack) -> torch.Tensor:
        """Final-norm hidden state at the last token of every member, in member order."""
        device = self.model.embed_tokens.weight.device
        ids: list[int] = []
        positions: list[int] = []
        segments: list[tuple[int, int, int, int]] = []  # (start, length, prefix_start, prefix_len)
        last_index: list[int] = []
        for group in pack.groups:
            prefix_start, prefix_len = len(ids), len(group.prefix)
            if prefix_len:
                ids.extend(group.prefix)
                positions.extend(range(prefix_len))
                segments.append((prefix_start, prefix_len, 0, 0))
            for _, tail in group.members:
                start = len(ids)
                ids.extend(tail)
                positions.extend(range(prefix_len, prefix_len + len(tail)))
                segments.append((start, len(tail), prefix_start, prefix_len))
                last_index.append(start + len(tail) - 1)
        input_ids = torch.tensor(ids, dtype=torch.long, device=device)
        position_ids = torch.tensor(positions, dtype=torch.long, device=device)

        hidden = self.model.embed_tokens(input_ids)  # [T, D]
        cos, sin = self.model.rotary_emb(hidden, position_ids[None])  # [1, T, d]
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # [T, 1, d]
        for layer in self.model.layers:
            residual = hidden
            normed = layer.input_layernorm(hidden)
            hidden = residual + self._attention(layer.self_attn, normed, cos, sin, segments)
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        last = hidden[torch.tensor(last_index, device=device)]
        return self.model.norm(last)

    def _attention(self, attn, hidden, cos, sin, segments) -> torch.Tensor:
        tokens = hidden.shape[0]
        q = attn.q_norm(attn.q_proj(hidden).view(tokens, self.num_heads, self.head_dim))
        k = attn.k_norm(attn.k_proj(hidden).view(tokens, self.num_kv_heads, self.head_dim))
        v = attn.v_proj(hidden).view(tokens, self.num_kv_heads, self.head_dim)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = torch.empty_like(q)
        gqa = self.num_heads != self.num_kv_heads
        for start, length, prefix_start, prefix_len in segments:
            end = start + length
            qs = q[start:end].transpose(0, 1)[None]
            if prefix_len:
                ks = torch.cat((k[prefix_start : prefix_start + prefix_len], k[start:end]))
                vs = torch.cat((v[prefix_start : prefix_start + prefix_len], v[start:end]))
                # bottom-right aligned causal mask: tail token j sees the prefix and tail[:j+1]
                mask = torch.ones(length, prefix_len + length, dtype=torch.bool, device=q.device)
                mask = mask.tril(diagonal=prefix_len)
                result = F.scaled_dot_product_attention(
                    qs, ks.transpose(0, 1)[None], vs.transpose(0, 1)[None],
                    attn_mask=mask, scale=self.scaling, enable_gqa=gqa,
                )
            else:
                result = F.scaled_dot_product_attention(
                    qs, k[start:end].transpose(0, 1)[None], v[start:end].transpose(0, 1)[None],
                    is_causal=True, scale=self.scaling, enable_gqa=gqa,
                )
            out[start:end] = result[0].transpose(0, 1)
        return attn.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))


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
        overhead = len(self.tokenizer(format_body(query, "", instruction))["input_ids"])
        # a few tokens of slack: a window re-tokenized after "<Document>: " may merge differently
        return max(32, self.template.body_budget - overhead - 4)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
