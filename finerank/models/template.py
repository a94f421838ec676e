"""The Qwen3-Reranker prompt: the spec finerank scores by.

These strings are copied from the official Qwen3-Reranker model card. Changing one character
changes every score, so the parity tests pin them against a separate re-implementation.
"""

from __future__ import annotations

QWEN3_SYSTEM_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
QWEN3_ASSISTANT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
YES_TOKEN = "yes"
NO_TOKEN = "no"


def format_body(query: str, document: str, instruction: str | None = None) -> str:
    """The user turn of the Qwen3 reranker prompt.

    Example:
        >>> format_body("capital of France?", "Paris.", "Find the answer")
        '<Instruct>: Find the answer\\n<Query>: capital of France?\\n<Document>: Paris.'
    """
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
