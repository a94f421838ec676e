"""Sequence-classification cross-encoders (BERT, XLM-RoBERTa, Qwen3 seq-cls conversions).

One output label: score = sigmoid(logit). Pairs are tokenized as (query, document) with
``truncation="only_second"`` like sentence-transformers' CrossEncoder; Qwen3 seq-cls
conversions (whose single logit is l_yes - l_no) get the Qwen3 reranker template instead.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from finerank.errors import InvalidInputError, ModelLoadError
from finerank.models.base import EncodedPair, Pack
from finerank.models.loading import reading_model_files
from finerank.models.qwen3 import build_template, encode_qwen3_pairs, encode_truncated
from finerank.models.template import format_body


class SeqClsBackend:
    """``AutoModelForSequenceClassification`` with one label, on length-sorted batches."""

    family = "seq-cls"
    supports_prefix_sharing = False

    def __init__(self, path: Path, *, device: torch.device, dtype: torch.dtype, max_length: int):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = device
        self.dtype = dtype
        with reading_model_files(path, what="reranker"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
        self.model.to(device).eval()
        if self.model.config.num_labels != 1:
            raise ModelLoadError(
                f"{path}: sequence-classification rerankers need exactly one label, "
                f"found num_labels={self.model.config.num_labels}"
            )
        config = self.model.config
        model_limit = getattr(config, "max_position_embeddings", max_length) or max_length
        if self.model.config.model_type in ("bert", "xlm-roberta", "roberta", "electra"):
            # RoBERTa-style position ids start after the padding index
            offset = 2 if self.model.config.model_type in ("xlm-roberta", "roberta") else 0
            model_limit -= offset
        self.max_length = min(max_length, model_limit)
        self.is_qwen3 = self.model.config.model_type == "qwen3"
        if self.is_qwen3:
            self.template = build_template(self.tokenizer, self.max_length)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.pad_id = int(self.tokenizer.pad_token_id)
        # Where segment B starts, per encoded sequence (a literal "[SEP]" inside a query makes
        # it impossible to recover from the ids alone). Bounded: entries are re-created on encode.
        self._segment_b_start: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names

    def encode(
        self,
        query: str,
        documents: list[str],
        instruction: str | None,
        max_doc_tokens: int | None = None,
    ) -> list[EncodedPair]:
        if self.is_qwen3:
            return encode_qwen3_pairs(
                self.tokenizer, self.template, query, documents, instruction, max_doc_tokens
            )
        if query and documents:
            self._check_query(query)
        # Truncation below keeps at most max_length tokens of a document: hand it no more text
        # than holds them (a huge document is not tokenized in full).
        documents = [self._bounded(doc, max_doc_tokens or self.max_length) for doc in documents]
        if max_doc_tokens is not None:
            documents = [self._cut(doc, max_doc_tokens) for doc in documents]
        encoded = self.tokenizer(
            [query] * len(documents),
            documents,
            truncation="only_second" if query else True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=self._uses_token_types,
        )
        pairs = [EncodedPair(tuple(ids), None) for ids in encoded["input_ids"]]
        if self._uses_token_types:
            for pair, types in zip(pairs, encoded["token_type_ids"], strict=True):
                self._remember_split(pair.ids, types.index(1) if 1 in types else len(types))
        return pairs

    def _remember_split(self, ids: tuple[int, ...], split: int) -> None:
        self._segment_b_start[ids] = split
        self._segment_b_start.move_to_end(ids)
        while len(self._segment_b_start) > 65536:
            self._segment_b_start.popitem(last=False)

    def _check_query(self, query: str) -> None:
        """The query must leave room for a document ("only_second" truncation cuts only it)."""
        room = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=True) - 1
        tokens = self.count_tokens(self._bounded(query, self.max_length))
        if tokens > room:
            raise InvalidInputError(
                f"the query is too long for this model: more than {room} tokens, and it reads "
                f"at most {self.max_length} tokens per (query, document) pair; shorten the query"
            )

    def _bounded(self, text: str, max_tokens: int) -> str:
        if len(text) <= 8 * max_tokens + 256:  # short: cheaper to tokenize than to check
            return text
        from finerank.engine.chunking import safe_prefix

        return safe_prefix(self.tokenizer, text, max_tokens)

    def _cut(self, document: str, max_tokens: int) -> str:
        encoded = self.tokenizer(document, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= max_tokens:
            return document
        return document[: offsets[max_tokens - 1][1]]

    @torch.inference_mode()
    def forward(self, pack: Pack) -> torch.Tensor:
        """One logit per member in fp32 (right-padded batch; sorted lengths keep it small)."""
        seqs = [list(group.prefix) + tail for group in pack.groups for _, tail in group.members]
        longest = max(len(seq) for seq in seqs)
        input_ids = torch.full((len(seqs), longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), longest), dtype=torch.long)
        for row, seq in enumerate(seqs):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention[row, : len(seq)] = 1
        kwargs = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention.to(self.device),
        }
        if self._uses_token_types:
            types = torch.zeros_like(input_ids)
            for row, seq in enumerate(seqs):
                split = self._segment_b_start.get(tuple(seq))
                if split is None:  # evicted: fall back to the structure [CLS] q [SEP] d [SEP]
                    split = seq.index(self.tokenizer.sep_token_id) + 1
                types[row, split : len(seq)] = 1
            kwargs["token_type_ids"] = types.to(self.device)
        logits = self.model(**kwargs).logits
        return logits[:, 0].to(torch.float32)

    def document_budget(self, query: str, instruction: str | None) -> int:
        """Document tokens that fit beside the query (and template, for Qwen3 conversions)."""
        if self.is_qwen3:
            budget = self.template.body_budget
            head = format_body(query, "", instruction)
            overhead = len(encode_truncated(self.tokenizer, [head], budget + 1)[0])
            return max(32, budget - overhead - 4)
        overhead = self.count_tokens(self._bounded(query, self.max_length))
        overhead += self.tokenizer.num_special_tokens_to_add(pair=True)
        return max(32, self.max_length - overhead - 2)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
