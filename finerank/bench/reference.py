"""A faithful re-implementation of the official Qwen3-Reranker model-card code.

Kept deliberately separate from finerank (own strings, own tokenizer calls, the full
``AutoModelForCausalLM`` forward with left padding and the full-vocabulary logits) so the
parity tests compare two independent implementations. The benchmark times finerank against
this code on the same inputs, same dtype, same machine.

Example:
    >>> ref = OfficialQwen3Reranker("/models/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> ref.scores(["capital of China?"], ["Beijing is the capital."])  # doctest: +SKIP
    [0.99...]
    >>> print(OfficialQwen3Reranker.format_instruction(None, "capital of China?", "Beijing."))
    <Instruct>: Given a web search query, retrieve relevant passages that answer the query
    <Query>: capital of China?
    <Document>: Beijing.
"""

from __future__ import annotations

import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class OfficialQwen3Reranker:
    """The model-card pipeline: left-padded batches, full ``AutoModelForCausalLM`` forward."""

    def __init__(self, path, max_length: int = 8192, dtype=torch.float32, device="cpu"):
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
        self.device = torch.device(device)
        self.model.to(self.device)
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        prefix = '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'  # noqa: E501
        suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        self.prefix_tokens = self.tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(suffix, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = (
                "Given a web search query, retrieve relevant passages that answer the query"  # noqa: E501
            )
        return "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}".format(  # noqa: UP032 (model card)
            instruction=instruction, query=query, doc=doc
        )

    def process_inputs(self, pairs):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        with warnings.catch_warnings():
            # the model card passes max_length with padding=True; transformers warns on every
            # batch that it is ignored (it is: the batch is padded to its longest pair)
            warnings.filterwarnings("ignore", message=".*max_length.* is ignored when .*padding")
            inputs = self.tokenizer.pad(
                inputs, padding=True, return_tensors="pt", max_length=self.max_length
            )
        for key in inputs:
            inputs[key] = inputs[key].to(self.device)
        return inputs

    @torch.no_grad()
    def compute_logits(self, inputs):
        batch_scores = self.model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, self.token_true_id]
        false_vector = batch_scores[:, self.token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    def scores(self, queries, documents, instruction=None, batch_size=4):
        pairs = [
            self.format_instruction(instruction, q, d)
            for q, d in zip(queries, documents, strict=True)
        ]
        out = []
        for start in range(0, len(pairs), batch_size):
            out.extend(self.compute_logits(self.process_inputs(pairs[start : start + batch_size])))
        return out
