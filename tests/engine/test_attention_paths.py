"""The attention paths compute one function: padded buckets (CPU), SDPA groups, and the
variable-length (CUDA) layout, checked on CPU with an exact emulation of the kernel; and the
first-use self-check that switches a wrong kernel off."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from finerank.models import attention
from finerank.models.base import Pack, PackGroup
from finerank.models.qwen3 import PackedDecoder, adapt_varlen_attn, build_layout
from tests.engine.conftest import INSTRUCTION, QUERY, sentences


def emulated_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale, window_size, enable_gqa):
    """What flash-attention varlen computes: per run, causal aligned to the bottom right."""
    assert window_size == (-1, 0)
    out = torch.empty_like(q)
    for i in range(len(cu_q) - 1):
        qs, qe, ks, ke = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        mask = torch.ones(qe - qs, ke - ks, dtype=torch.bool).tril(diagonal=(ke - ks) - (qe - qs))
        out[qs:qe] = F.scaled_dot_product_attention(
            q[qs:qe].transpose(0, 1),
            k[ks:ke].transpose(0, 1),
            v[ks:ke].transpose(0, 1),
            attn_mask=mask,
            scale=scale,
            enable_gqa=enable_gqa,
        ).transpose(0, 1)
    return out


def _packs(reranker, mixed_docs):
    engine = reranker.engine
    items = engine.prepare(QUERY, mixed_docs, instruction=INSTRUCTION).items
    items += engine.prepare("other", mixed_docs[:4]).items
    return engine.plan(items)


def test_varlen_layout_matches_sdpa_path(qwen3_reranker, mixed_docs):
    model = qwen3_reranker.backend.decoder_model
    sdpa = PackedDecoder(model, attention="sdpa")
    varlen = PackedDecoder(model, attention="varlen")
    varlen._varlen = emulated_varlen
    for pack in _packs(qwen3_reranker, mixed_docs):
        layout = build_layout(pack, torch.device("cpu"))
        kv_index, cu_q, cu_k, _, _ = layout.varlen_runs()
        assert kv_index is not None  # prefixes are shared: the gathered runs are used
        assert int(cu_q[-1]) == layout.num_tokens and int(cu_k[-1]) == len(kv_index)
        torch.testing.assert_close(
            varlen.last_hidden(pack), sdpa.last_hidden(pack), atol=1e-5, rtol=1e-5
        )


def test_wrong_varlen_kernel_is_switched_off(qwen3_reranker, mixed_docs, monkeypatch):
    model = qwen3_reranker.backend.decoder_model
    decoder = PackedDecoder(model, attention="auto")
    decoder._varlen = lambda q, *args, **kwargs: torch.zeros_like(q)  # a broken kernel
    monkeypatch.setattr(decoder, "_use_varlen", lambda device, dtype: decoder._varlen is not None)
    pack = _packs(qwen3_reranker, mixed_docs)[0]
    expected = PackedDecoder(model, attention="sdpa").last_hidden(pack)
    torch.testing.assert_close(decoder.last_hidden(pack), expected)  # checked: exact answer
    assert decoder._varlen is None  # ... and the kernel is off from now on
    check = decoder.varlen_check  # recorded for reports (the GPU proof kit's JSON)
    assert not check["kept"] and check["relative_difference"] > PackedDecoder.VARLEN_CHECK_TOLERANCE
    torch.testing.assert_close(decoder.last_hidden(pack), expected)


def _gqa(q, k) -> bool:
    return q.shape[1] != k.shape[1]


def torch_2_11_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None,
                      window_size=(-1, -1)):  # fmt: skip
    """torch 2.11's signature (no enable_gqa: its kernel takes fewer key/value heads as is)."""
    return emulated_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale,
                           window_size=window_size, enable_gqa=_gqa(q, k))  # fmt: skip


def torch_2_10_varlen(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None):
    """torch 2.10's signature: positional is_causal, the kernel's default scale."""
    window = (-1, 0) if is_causal else (-1, -1)
    return emulated_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=None,
                           window_size=window, enable_gqa=_gqa(q, k))  # fmt: skip


@pytest.mark.parametrize("kernel", [torch_2_10_varlen, torch_2_11_varlen])
def test_older_torch_varlen_signatures_are_adapted(qwen3_reranker, mixed_docs, kernel):
    model = qwen3_reranker.backend.decoder_model
    assert model.config.num_attention_heads != model.config.num_key_value_heads  # GQA
    varlen = PackedDecoder(model, attention="varlen")
    varlen._varlen = adapt_varlen_attn(kernel)
    pack = _packs(qwen3_reranker, mixed_docs)[0]
    expected = PackedDecoder(model, attention="sdpa").last_hidden(pack)
    torch.testing.assert_close(varlen.last_hidden(pack), expected, atol=1e-5, rtol=1e-5)


def test_this_torch_varlen_is_called_as_it_is():
    varlen = pytest.importorskip("torch.nn.attention.varlen")
    if "enable_gqa" in inspect.signature(varlen.varlen_attn).parameters:
        assert adapt_varlen_attn(varlen.varlen_attn) is varlen.varlen_attn


def test_oom_in_the_varlen_check_keeps_the_kernel(qwen3_reranker, mixed_docs, monkeypatch):
    model = qwen3_reranker.backend.decoder_model
    decoder = PackedDecoder(model, attention="auto")
    calls = []

    def kernel(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("simulated: the first pack is too big")
        return emulated_varlen(*args, **kwargs)

    decoder._varlen = kernel
    monkeypatch.setattr(decoder, "_use_varlen", lambda device, dtype: decoder._varlen is not None)
    pack = _packs(qwen3_reranker, mixed_docs)[0]
    with pytest.raises(torch.OutOfMemoryError):  # the engine halves the pack on this
        decoder.last_hidden(pack)
    assert decoder._varlen is kernel and not decoder._varlen_checked  # not blamed on the kernel
    expected = PackedDecoder(model, attention="sdpa").last_hidden(pack)
    torch.testing.assert_close(decoder.last_hidden(pack), expected)  # checked on the retry
    assert decoder._varlen is kernel and decoder._varlen_checked


def test_layout_groups_equal_shapes():
    pack = Pack(
        [PackGroup([1, 2, 3], [(0, [4, 5]), (1, [6, 7]), (2, [8])]), PackGroup([], [(3, [9, 9])])]
    )
    layout = build_layout(pack, torch.device("cpu"))
    assert not layout.buckets  # SDPA groups unless buckets are asked for
    shapes = sorted((g.q_len, g.k_len, len(g.segments)) for g in layout.groups)
    # prefix (3x3), two tails of 2 (2x5, batched), one tail of 1 (1x4), a lone sequence (2x2)
    assert shapes == [(1, 4, 1), (2, 2, 1), (2, 5, 2), (3, 3, 1)]
    assert layout.position_ids.tolist() == [0, 1, 2, 3, 4, 3, 4, 3, 0, 1]
    assert layout.last_index.tolist() == [4, 6, 7, 9]


def test_long_tails_use_the_causal_kernel_short_ones_a_mask(qwen3_reranker):
    pack = Pack([PackGroup(list(range(10)), [(0, list(range(50))), (1, [7, 8])])])
    layout = build_layout(pack, torch.device("cpu"))
    by_len = {g.q_len: g for g in layout.groups}
    assert by_len[50].full_causal and by_len[50].mask is None
    assert not by_len[2].full_causal and by_len[2].mask is not None
    # both ways give what each sequence gives alone
    decoder = PackedDecoder(qwen3_reranker.backend.decoder_model, attention="sdpa")
    alone = [
        decoder.last_hidden(Pack([PackGroup([], [(0, list(range(10)) + tail)])]))
        for tail in (list(range(50)), [7, 8])
    ]
    torch.testing.assert_close(decoder.last_hidden(pack), torch.cat(alone), atol=1e-5, rtol=1e-5)


def _hidden(reranker, pack, attention_path):
    return PackedDecoder(reranker.backend.decoder_model, attention=attention_path).last_hidden(pack)


def test_buckets_equal_sdpa_groups(qwen3_reranker, mixed_docs):
    """Buckets pad short segments of one prefix together; long ones stay in SDPA groups."""
    long_doc = sentences(80)  # > BUCKET_MAX_ROWS tokens: attended by an SDPA group
    engine = qwen3_reranker.engine
    items = engine.prepare(QUERY, [*mixed_docs, long_doc], instruction=INSTRUCTION).items
    items += engine.prepare("other", mixed_docs[:4]).items
    items += engine.prepare("third", [long_doc], instruction="x").items  # standalone
    (pack,) = engine.plan(items)
    layout = build_layout(pack, torch.device("cpu"), buckets=True, num_heads=4, num_kv_heads=2)
    assert len(layout.buckets) >= 3 and layout.groups  # both ways are exercised
    assert (
        sum(b.real_rows for b in layout.buckets)
        + sum(g.q_len * len(g.segments) for g in layout.groups)
        == layout.num_tokens
    )
    assert any(b.count * b.rows > b.real_rows for b in layout.buckets)  # real padding
    expected = _hidden(qwen3_reranker, pack, "sdpa")
    torch.testing.assert_close(
        _hidden(qwen3_reranker, pack, "buckets"), expected, atol=1e-5, rtol=1e-5
    )


def test_buckets_split_into_slices_stay_exact(qwen3_reranker, mixed_docs, monkeypatch):
    monkeypatch.setattr(attention, "BUCKET_SCORE_ELEMENTS", 1)  # one segment per score matrix
    monkeypatch.setattr(attention, "BUCKET_PADDING", 100.0)  # everything of a prefix in one
    engine = qwen3_reranker.engine
    (pack,) = engine.plan(engine.prepare(QUERY, mixed_docs, instruction=INSTRUCTION).items)
    layout = build_layout(pack, torch.device("cpu"), buckets=True, num_heads=4, num_kv_heads=2)
    assert all(b.count == 1 for b in layout.buckets)
    expected = _hidden(qwen3_reranker, pack, "sdpa")
    torch.testing.assert_close(
        _hidden(qwen3_reranker, pack, "buckets"), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_buckets_in_bf16_agree_with_fp32(qwen3_reranker_dir, mixed_docs, dtype):
    from finerank import Reranker

    low = Reranker.from_pretrained(qwen3_reranker_dir, device="cpu", dtype="bfloat16")
    engine = low.engine
    (pack,) = engine.plan(engine.prepare(QUERY, mixed_docs, instruction=INSTRUCTION).items)
    fast = _hidden(low, pack, "buckets").float()
    flash = _hidden(low, pack, "sdpa").float()
    # within bf16 rounding of each other: no worse than the flash kernel's own bf16 result
    assert (fast - flash).abs().max() < 0.1 * flash.abs().max()


def test_row_padding_changes_nothing(qwen3_reranker, mixed_docs):
    """CPU packs are padded to a multiple of CPU_ROW_MULTIPLE rows no segment covers; every
    attention path (buckets, SDPA groups, a lone sequence) gives the unpadded answer."""
    pack = Pack([PackGroup(list(range(10)), [(0, list(range(21))), (1, [7, 8])])])
    layout = build_layout(pack, torch.device("cpu"), pad_to=16)
    assert layout.num_tokens == 48 and layout.pad_rows == 15
    assert max(s.start + s.rows for s in layout.segments) == 33  # the pads are in no segment
    model = qwen3_reranker.backend.decoder_model
    lone = Pack([PackGroup([], [(0, list(range(3, 40)))])])
    for attention_path in ("auto", "sdpa"):
        padded = PackedDecoder(model, attention=attention_path)
        plain = PackedDecoder(model, attention=attention_path)
        plain.row_multiple = 1
        for p in [*_packs(qwen3_reranker, mixed_docs), pack, lone]:
            torch.testing.assert_close(
                padded.last_hidden(p), plain.last_hidden(p), atol=1e-5, rtol=1e-5
            )
