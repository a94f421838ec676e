"""Rerankers to compare finerank with, behind one interface: score (query, documents) pairs.

Used by ``benchmarks/peers.py`` (CPU) and ``benchmarks/gpu_check.py`` (CUDA). Every contender
loads the same Qwen3-Reranker directory and returns P(yes) per document, so scores compare
directly. Each optional one raises :class:`Unavailable` with the line to print (and how to
install it) when its package is missing:

* ``finerank``: :class:`finerank.Reranker`.
* ``reference``: the official model-card code (:mod:`finerank.bench.reference`).
* ``sentence-transformers``: ``CrossEncoder`` (v6 loads a Qwen3 causal LM with a yes/no
  ``LogitScore`` head; the pair is rendered by a chat template equal to the model card's).
* ``llama.cpp``: llama-cpp-python on a GGUF made by the converter in llama.cpp's source
  (``convert_hf_to_gguf.py``, vendored in llama-cpp-python's sdist), fed the reference's ids.
* ``infinity``: Infinity's reranker on a sequence-classification conversion of the model
  (one logit = l_yes - l_no); Infinity sends (query, document) as a plain text pair, without
  the Qwen3 template, which is how a user of it scores.

Example:
    >>> contender = make_contender("finerank", "/models/Qwen3-Reranker-0.6B")  # doctest: +SKIP
    >>> contender.score("capital of China?", ["Beijing.", "Bananas."], None)  # doctest: +SKIP
    [0.99..., 0.01...]
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from finerank.models.template import (
    DEFAULT_INSTRUCTION,
    QWEN3_ASSISTANT_SUFFIX,
    QWEN3_SYSTEM_PREFIX,
)

#: every contender name, in the order tables list them
CONTENDERS = ("finerank", "reference", "sentence-transformers", "llama.cpp", "infinity")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Unavailable(Exception):
    """A contender that cannot run here; ``str()`` is the line to print."""


@dataclass
class Contender:
    """A loaded reranker: ``score(query, documents, instruction)`` returns P(yes) per document."""

    name: str
    precision: str
    score: Callable[[str, list[str], str | None], list[float]]
    load_seconds: float = 0.0
    note: str = ""
    #: the underlying object (finerank: the ``Reranker``)
    handle: object = None
    #: stops what the contender started (Infinity's batching threads); None: nothing to stop
    close: Callable[[], None] | None = None


def _need(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{module} is not installed (pip install {install})")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ---- finerank and the reference -----------------------------------------------------------
def finerank_contender(model_dir, *, device: str, dtype: str, max_length: int, **_) -> Contender:
    from finerank import Reranker

    reranker = Reranker.from_pretrained(
        model_dir, device=device, dtype=dtype, max_length=max_length
    )

    def score(query, docs, instruction):
        results = reranker.rerank(query, docs, instruction=instruction)
        out = [0.0] * len(docs)
        for r in results:
            out[r.index] = r.score
        return out

    return Contender("finerank", dtype, score, reranker.load_seconds, handle=reranker)


def reference_contender(
    model_dir, *, device: str, dtype: str, max_length: int, batch_size: int = 8, **_
) -> Contender:
    from finerank.bench.reference import OfficialQwen3Reranker

    ref = OfficialQwen3Reranker(
        model_dir, max_length=max_length, dtype=_DTYPES[dtype], device=device
    )

    def score(query, docs, instruction):
        # the reference keeps [batch, length, 151669] logits: cap that tensor near 4 GiB
        longest = len(ref.tokenizer(max(docs, key=len, default=""))["input_ids"])
        per_pair = (longest + 256) * 151669 * torch.finfo(_DTYPES[dtype]).bits // 8
        batch = max(1, min(batch_size, (4 << 30) // per_pair))
        return ref.scores([query] * len(docs), docs, instruction, batch_size=batch)

    return Contender("reference", dtype, score)


# ---- sentence-transformers ------------------------------------------------------------------
def qwen3_pair_template(instruction: str | None) -> str:
    """A chat template rendering a CrossEncoder ``(query, document)`` pair exactly as the
    Qwen3-Reranker model card formats it (system prompt, ``<Instruct>``, query, document,
    empty think block).

    Example:
        >>> "<Instruct>: Find laws" in qwen3_pair_template("Find laws")
        True
    """

    def jinja_text(text: str) -> str:
        return "{{ " + repr(text) + " }}"

    text = (
        "{%- set q = messages | selectattr('role', 'eq', 'query') | first -%}"
        "{%- set d = messages | selectattr('role', 'eq', 'document') | first -%}"
        "{%- set qt = q.content if q.content is string else q.content[0].text -%}"
        "{%- set dt = d.content if d.content is string else d.content[0].text -%}"
    )
    body = f"<Instruct>: {instruction or DEFAULT_INSTRUCTION}\n<Query>: "
    text += jinja_text(QWEN3_SYSTEM_PREFIX + body) + "{{ qt }}"
    text += jinja_text("\n<Document>: ") + "{{ dt }}" + jinja_text(QWEN3_ASSISTANT_SUFFIX)
    return text


def sentence_transformers_contender(
    model_dir,
    *,
    device: str,
    dtype: str,
    max_length: int,
    instruction: str | None = None,
    batch_size: int = 8,
    **_,
) -> Contender:
    _need("sentence_transformers", "'sentence-transformers>=6'")
    import sentence_transformers
    from sentence_transformers import CrossEncoder

    major = int(sentence_transformers.__version__.split(".")[0])
    if major < 6:
        raise Unavailable(
            f"sentence-transformers {sentence_transformers.__version__} cannot load a Qwen3 "
            "causal LM as a CrossEncoder (v6 can: pip install 'sentence-transformers>=6')"
        )
    model = CrossEncoder(
        str(model_dir),
        device=device,
        max_length=max_length,
        model_kwargs={"dtype": _DTYPES[dtype]},
        processor_kwargs={"chat_template": qwen3_pair_template(instruction)},
        local_files_only=True,
    )

    def score(query, docs, _instruction):
        margins = model.predict(
            [(query, d) for d in docs],
            batch_size=batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_tensor=True,
        )
        return [_sigmoid(float(m)) for m in margins.float().cpu()]

    return Contender(
        "sentence-transformers",
        dtype,
        score,
        note=f"sentence-transformers {sentence_transformers.__version__}, batch {batch_size}",
    )


# ---- llama.cpp --------------------------------------------------------------------------------
def llama_cpp_source(cache: Path) -> Path:
    """llama.cpp's source as vendored in llama-cpp-python's sdist (for its GGUF converter),
    downloaded once with pip into ``cache`` for the installed llama-cpp-python version."""
    from importlib.metadata import version

    wanted = version("llama-cpp-python")
    target = cache / f"llama.cpp-{wanted}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            # only this package as source: ":all:" would build its build tools from source too
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps"]
            + ["--no-binary", "llama-cpp-python", "-d", scratch, f"llama-cpp-python=={wanted}"],
            check=True,
        )
        archive = next(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if _converter_file(m.name)]
            tar.extractall(scratch, members=members, filter="data")
        vendored = next(Path(scratch).glob("*/vendor/llama.cpp"))
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copytree(vendored, target, dirs_exist_ok=True)
    return target


def _converter_file(name: str) -> bool:
    """The converter's files in the sdist: top-level scripts, its ``conversion`` package and
    the ``gguf`` library it is versioned with (not the C++ sources)."""
    _, found, rest = name.partition("/vendor/llama.cpp/")
    if not found:
        return False
    return rest.startswith(("gguf-py/", "conversion/")) or (
        "/" not in rest and rest.endswith(".py")
    )


def convert_to_gguf(model_dir: Path, outtype: str, cache: Path) -> Path:
    """``model_dir`` as GGUF (``outtype``: f32, bf16, q8_0), converted once into ``cache``."""
    source = llama_cpp_source(cache)
    target = cache / f"{Path(model_dir).name}-{outtype}.gguf"
    if not target.is_file():
        env = {**os.environ, "PYTHONPATH": str(source / "gguf-py")}
        partial = target.with_suffix(".partial")
        done = subprocess.run(
            [sys.executable, str(source / "convert_hf_to_gguf.py"), str(model_dir)]
            + ["--outtype", outtype, "--outfile", str(partial)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise Unavailable(f"llama.cpp's converter failed on {model_dir}: {tail}")
        partial.rename(target)
    return target


def llama_cpp_contender(
    model_dir,
    *,
    dtype: str,
    max_length: int,
    cache: Path,
    gguf_type: str | None = None,
    **_,
) -> Contender:
    _need("llama_cpp", "llama-cpp-python (builds llama.cpp from source: minutes)")
    from llama_cpp import Llama, llama_get_logits_ith

    from finerank.bench.reference import OfficialQwen3Reranker

    outtype = gguf_type or {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}[dtype]
    gguf = convert_to_gguf(Path(model_dir), outtype, cache)
    llm = Llama(
        str(gguf),
        n_ctx=max_length,
        n_batch=512,
        n_threads=torch.get_num_threads(),
        verbose=False,
    )
    # the same token ids as the reference (llama.cpp's own tokenizer is not what is measured)
    ref_tokens = OfficialQwen3Reranker.__new__(OfficialQwen3Reranker)
    from transformers import AutoTokenizer

    ref_tokens.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ref_tokens.max_length = max_length
    ref_tokens.prefix_tokens = ref_tokens.tokenizer.encode(
        QWEN3_SYSTEM_PREFIX, add_special_tokens=False
    )
    ref_tokens.suffix_tokens = ref_tokens.tokenizer.encode(
        QWEN3_ASSISTANT_SUFFIX, add_special_tokens=False
    )
    yes = ref_tokens.tokenizer.convert_tokens_to_ids("yes")
    no = ref_tokens.tokenizer.convert_tokens_to_ids("no")
    budget = max_length - len(ref_tokens.prefix_tokens) - len(ref_tokens.suffix_tokens)

    def score(query, docs, instruction):
        out = []
        for doc in docs:
            body = OfficialQwen3Reranker.format_instruction(instruction, query, doc)
            ids = ref_tokens.tokenizer(body, truncation=True, max_length=budget)["input_ids"]
            ids = ref_tokens.prefix_tokens + ids + ref_tokens.suffix_tokens
            llm.reset()
            llm.eval(ids)
            # the last position's logits straight from the context: without logits_all,
            # llm.scores is left at zeros by llama-cpp-python 0.3.x
            logits = llama_get_logits_ith(llm.ctx, -1)
            out.append(_sigmoid(float(logits[yes]) - float(logits[no])))
        return out

    from importlib.metadata import version

    return Contender(
        "llama.cpp",
        outtype.upper(),
        score,
        note=f"llama-cpp-python {version('llama-cpp-python')}, GGUF {outtype}",
    )


# ---- Infinity -------------------------------------------------------------------------------
def seq_cls_conversion(model_dir: Path, cache: Path) -> Path:
    """``model_dir`` as ``Qwen3ForSequenceClassification`` with one logit l_yes - l_no (the
    usual conversion for servers that only run classification heads), saved once."""
    target = cache / f"{Path(model_dir).name}-seq-cls"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    causal = AutoModelForCausalLM.from_pretrained(str(model_dir))
    config = causal.config
    config.num_labels = 1
    config.architectures = ["Qwen3ForSequenceClassification"]
    config.pad_token_id = tokenizer.pad_token_id
    seq_cls = Qwen3ForSequenceClassification(config)
    seq_cls.model.load_state_dict(causal.model.state_dict())
    head = causal.lm_head.weight
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    with torch.no_grad():
        seq_cls.score.weight.copy_((head[yes] - head[no])[None])
    seq_cls.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def infinity_contender(
    model_dir, *, device: str, dtype: str, cache: Path, batch_size: int = 8, **_
) -> Contender:
    _need("infinity_emb", "'infinity-emb[torch]'")
    import asyncio

    from infinity_emb import AsyncEngineArray, EngineArgs

    converted = seq_cls_conversion(Path(model_dir), cache)
    args = EngineArgs(
        model_name_or_path=str(converted),
        engine="torch",
        device=device,
        dtype={"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}[dtype],
        batch_size=batch_size,
        bettertransformer=False,
        model_warmup=False,
    )
    array = AsyncEngineArray.from_args([args])
    loop = asyncio.new_event_loop()
    loop.run_until_complete(array.astart())
    engine = array[0]

    def score(query, docs, _instruction):
        async def run():
            ranked, _usage = await engine.rerank(query=query, docs=docs, raw_scores=True)
            return ranked

        ranked = loop.run_until_complete(run())
        out = [0.0] * len(docs)
        for item in ranked:
            out[item.index] = _sigmoid(float(item.relevance_score))
        return out

    def close():
        loop.run_until_complete(array.astop())
        loop.close()

    return Contender(
        "infinity",
        dtype,
        score,
        note="seq-cls conversion; Infinity scores the plain (query, document) text pair",
        close=close,
    )


_FACTORIES = {
    "finerank": finerank_contender,
    "reference": reference_contender,
    "sentence-transformers": sentence_transformers_contender,
    "llama.cpp": llama_cpp_contender,
    "infinity": infinity_contender,
}


def make_contender(
    name: str,
    model_dir,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    max_length: int = 8192,
    cache: Path | None = None,
    **options,
) -> Contender:
    """Load contender ``name`` (one of :data:`CONTENDERS`) on ``model_dir``.

    Args:
        name: which implementation.
        model_dir: a Qwen3-Reranker directory (real or random weights).
        device, dtype: where and in which precision (llama.cpp: its GGUF type).
        max_length: tokens per pair.
        cache: where conversions (GGUF, seq-cls) are kept (default ``~/.cache/finerank/peers``).
        options: ``instruction``, ``batch_size``, ``gguf_type`` where a contender takes them.

    Returns:
        A loaded :class:`Contender` (``load_seconds`` set).

    Raises:
        Unavailable: the contender's package is missing or cannot load this model.
    """
    import time

    if name not in _FACTORIES:
        raise ValueError(f"unknown contender {name!r}: choose from {', '.join(CONTENDERS)}")
    cache = cache or Path.home() / ".cache" / "finerank" / "peers"
    started = time.perf_counter()
    contender = _FACTORIES[name](
        model_dir, device=device, dtype=dtype, max_length=max_length, cache=cache, **options
    )
    contender.load_seconds = time.perf_counter() - started
    return contender
