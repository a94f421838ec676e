"""Optional int8 dynamic quantization of a loaded backend (CPU only).

The decoder's / encoder's ``nn.Linear`` weights become int8 (activations are quantized on the
fly, per batch). Scores change slightly: the README's engine section reports the rank
agreement with fp32 measured by ``finerank bench``. The Qwen3 yes/no head stays fp32, and so
does a seq-cls model's classification head.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from finerank.errors import ModelLoadError

QUANTIZATIONS = ("none", "int8")
# output layers kept in full precision (seq-cls heads)
_KEEP_FP32 = ("classifier", "score", "pooler")


def quantize_backend(backend, method: str) -> None:
    """Quantize ``backend``'s linear layers in place.

    Example:
        >>> r = Reranker.from_pretrained(path, device="cpu", quantize="int8")  # doctest: +SKIP
        >>> quantize_backend(object(), "int4")
        Traceback (most recent call last):
        ...
        finerank.errors.ModelLoadError: unknown quantization 'int4': use none or int8
    """
    if method not in QUANTIZATIONS:
        raise ModelLoadError(f"unknown quantization {method!r}: use {' or '.join(QUANTIZATIONS)}")
    if method == "none":
        return
    if backend.device.type != "cpu":
        raise ModelLoadError("int8 quantization is CPU only; on CUDA use dtype bfloat16 or float16")
    if backend.dtype != torch.float32:
        raise ModelLoadError("int8 quantization starts from float32 weights: pass dtype='float32'")
    model = getattr(backend, "decoder_model", None) or backend.model
    targets = {
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.split(".")[-1].startswith(_KEEP_FP32)
    }
    if not targets:
        raise ModelLoadError("this model has no linear layers to quantize")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch marks eager-mode quantization deprecated (moving to torchao); it still works
        warnings.simplefilter("ignore")
        quantize_dynamic(model, targets, dtype=torch.qint8, inplace=True)
    decoder = getattr(backend, "decoder", None)
    if hasattr(decoder, "reset"):
        decoder.reset()  # fused fp32 weights no longer describe the (quantized) layers
    backend.quantization = method
