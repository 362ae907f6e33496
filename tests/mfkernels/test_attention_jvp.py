"""Triton attention JVP (forward O, O', LSE and primal backward dQ, dK, dV) against the
float64 reference, docs/design.md sections 2-3: fp32 <= 1e-5 and bf16/fp16 <= 3e-2 relative to the
reference's max abs, per output. Without a GPU the kernels run in the Triton interpreter, so
the CPU shapes are tiny; the ``gpu`` tests cover long sequences and 16-bit numerics."""

import warnings

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton, rel_err

import mfkernels
from mfkernels import dispatch, reference
from mfkernels.backends import torch_ops
from mfkernels.backends.triton import attention, attention_configs
from mfkernels.backends.triton.attention import (
    attention_backward_triton,
    attention_jvp_triton,
)
from mfkernels.backends.triton.attention import (
    jvp_unsupported as triton_attention_unsupported,
)


def packed_qkv(batch, heads, n, d, dtype, device=DEVICE):
    """q, k, v as the DiT makes them: views of a (B, N, 3, H, d) tensor, non-contiguous."""
    qkv = torch.randn(batch, n, 3, heads, d, dtype=torch.float32, device=device).to(dtype)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def make_inputs(batch, heads, n_q, n_k, d, dtype, packed=True, device=DEVICE):
    if packed and n_q == n_k:
        q, k, v = packed_qkv(batch, heads, n_q, d, dtype, device)
        q_dot, k_dot, v_dot = packed_qkv(batch, heads, n_q, d, dtype, device)
    else:
        shapes = [(batch, heads, n, d) for n in (n_q, n_k, n_k)] * 2
        q, k, v, q_dot, k_dot, v_dot = (torch.randn(s, device=device).to(dtype) for s in shapes)
    return q, k, v, q_dot, k_dot, v_dot


def check_against_reference(inputs, scale, tol, causal=False, bias=None):
    """Triton forward and backward vs the float64 reference; every output checked."""
    q, k, v = inputs[:3]
    o, o_dot, lse = attention_jvp_triton(*inputs, scale, causal, bias)
    assert o.dtype == q.dtype and o_dot.dtype == q.dtype and lse.dtype == torch.float32
    bias64 = None if bias is None else bias.double()
    ref_o, ref_o_dot, ref_lse = reference.attention_jvp(*(t.double() for t in inputs), scale, causal, bias64)
    assert_close("O", o, ref_o, tol)
    assert_close("O'", o_dot, ref_o_dot, tol)
    seen = torch.isfinite(ref_lse)  # rows a bias masks whole have LSE -inf
    assert torch.equal(lse.isneginf().cpu(), ~seen.cpu()), "LSE: -inf exactly on rows that see no key"
    assert_close("LSE", lse[seen], ref_lse[seen], tol)

    grad_o = torch.randn_like(o)
    dq, dk, dv = attention_backward_triton(grad_o, q, k, v, o, lse, scale, causal, bias)
    ref_grads = reference.attention_backward(
        grad_o.double(), q.double(), k.double(), v.double(), ref_o, ref_lse, scale, causal, bias64
    )
    for name, out, ref in zip(("dQ", "dK", "dV"), (dq, dk, dv), ref_grads):
        assert_close(name, out, ref, tol)


# ----------------------------------------------------------- interpreter-sized (CPU) tests


@needs_triton
@pytest.mark.parametrize("batch_heads", [(1, 1), (2, 3)])
@pytest.mark.parametrize("n", [1, 17, 64, 130])
@pytest.mark.parametrize("d", [64, 72])
def test_fp32_matches_reference_on_packed_qkv(batch_heads, n, d):
    inputs = make_inputs(*batch_heads, n, n, d, torch.float32)
    assert inputs[0].stride(2) == 3 * batch_heads[1] * d  # rows strided through the packed qkv
    check_against_reference(inputs, d**-0.5, TOL[torch.float32])


@needs_triton
@pytest.mark.parametrize("n_q, n_k", [(17, 130), (130, 1), (5, 64)])
def test_fp32_separate_query_and_key_lengths(n_q, n_k):
    check_against_reference(make_inputs(1, 2, n_q, n_k, 64, torch.float32), 64**-0.5, TOL[torch.float32])


@needs_triton
@pytest.mark.parametrize("d", [32, 96, 128, 8, 48, 65])  # 96, 48 and 65 in two parts
def test_fp32_other_head_dims(d):
    check_against_reference(make_inputs(1, 2, 40, 40, d, torch.float32), d**-0.5, TOL[torch.float32])


@pytest.mark.parametrize(
    "d, parts",
    [
        (8, (16, None)), (32, (32, None)), (64, (64, None)), (128, (128, None)), (100, (128, None)),
        (72, (64, 16)), (96, (64, 32)), (48, (32, 16)), (65, (64, 16)),
    ],
)  # fmt: skip
def test_head_dims_split_in_two_when_that_saves_columns(d, parts):
    """A head dim is one padded power-of-two tile, or two when they are narrower together."""
    got = attention.head_dim_parts(d)
    assert (got["BLOCK_D"], got["BLOCK_E"] if got["SPLIT"] else None) == parts
    assert got["BLOCK_D"] + (got["BLOCK_E"] if got["SPLIT"] else 0) >= d


def test_stride_align_is_the_largest_power_of_two_dividing_every_stride():
    """The kernels' ALIGN hint: the DiT's packed qkv at head dim 72 gives 16-byte aligned
    rows (8 bf16, 4 fp32); a row stride of 73 elements gives none."""
    from mfkernels.backends.triton.attention import _stride_align

    for dtype, align in ((torch.bfloat16, 8), (torch.float32, 4)):
        q, k, v = packed_qkv(2, 16, 5, 72, dtype, device="cpu")
        assert _stride_align(q, k, v) == align
    odd = torch.zeros(1, 2, 5, 73)[..., :72]
    q = torch.zeros(1, 2, 5, 72)
    assert _stride_align(q, odd) == 1
    assert _stride_align(q, torch.zeros(1, 2, 5, 74)[..., :72]) == 2


@needs_triton
@pytest.mark.parametrize("row_stride", [73, 74])
def test_fp32_unaligned_row_strides(row_stride):
    """Rows that are not 16-byte aligned (ALIGN 1 and 2) go through the same kernels."""
    inputs = [torch.randn(1, 2, 17, row_stride)[..., :72] for _ in range(6)]
    check_against_reference(inputs, 72**-0.5, TOL[torch.float32])


@needs_triton
def test_fp32_peaked_softmax_rescales_across_tiles():
    """Peaked rows whose max jumps in a late key tile: the online rescaling of all four
    accumulators (O, P V' + (P S') V, rowsum(P S'), l) must stay exact. Logits reach ~40:
    the backward's P = exp(s - LSE) then carries a rounding of ~|s| fp32 epsilons, which the
    tolerance allows (dV missed 1e-5 by 4% on an AMD EPYC; a rescaling bug misses it by 1e-1).
    Far beyond (~170) even torch's own fp32 math misses 1e-5."""
    q, k, v, q_dot, k_dot, v_dot = make_inputs(1, 2, 33, 130, 64, torch.float32, packed=False)
    k[:, :, 100:] *= 3.0  # the largest logits sit in a late tile
    largest_logit = (0.5 * q @ k.transpose(-1, -2)).abs().max().item()
    tol = max(TOL[torch.float32], 4 * torch.finfo(torch.float32).eps * largest_logit)
    check_against_reference((q, k, v, q_dot, k_dot, v_dot), 0.5, tol)


# The kernels' alternatives, each chosen by a variable read at every call
# (docs/attention-tuning.md): dQ summed by atomics, K/V read through tensor descriptors.
KERNEL_VARIANTS = {
    "default": {},
    "atomic_dq": {attention.DQ_ENV_VAR: "atomic"},
    "tma_loads": {attention.LOADS_ENV_VAR: "tma"},
}


@pytest.fixture(params=list(KERNEL_VARIANTS))
def kernel_variant(request, monkeypatch):
    """The attention kernels as each variant runs them; with ``atomic_dq`` the dQ kernel must
    not run, with ``tma_loads`` every aligned launch must take descriptors."""
    for name in (attention.DQ_ENV_VAR, attention.LOADS_ENV_VAR):
        monkeypatch.delenv(name, raising=False)
    for name, value in KERNEL_VARIANTS[request.param].items():
        monkeypatch.setenv(name, value)
    if request.param == "atomic_dq":
        monkeypatch.setattr(attention, "_attn_bwd_dq", None)  # launching it would raise
    return request.param


@needs_triton
@pytest.mark.parametrize(
    "n_q, n_k, d", [(17, 17, 64), (130, 130, 72), (5, 64, 64), (130, 1, 72), (40, 90, 96), (1, 1, 8)]
)
def test_fp32_kernel_variants(kernel_variant, n_q, n_k, d):
    """Ragged query and key tiles, a head dim in two parts, one key: the reference's values
    and gradients; K and V as views of a packed kv tensor (DiT's layout, TMA-addressable)."""
    q, q_dot = (torch.randn(2, 3, n_q, d, device=DEVICE) for _ in range(2))
    k, v = torch.randn(2, n_k, 2, 3, d, device=DEVICE).permute(2, 0, 3, 1, 4).unbind(0)
    k_dot, v_dot = torch.randn(2, n_k, 2, 3, d, device=DEVICE).permute(2, 0, 3, 1, 4).unbind(0)
    assert attention.kv_by_tma(k, v, k_dot, v_dot) == (kernel_variant == "tma_loads")
    check_against_reference((q, k, v, q_dot, k_dot, v_dot), d**-0.5, 1e-5)


def use_config(monkeypatch, config):
    """Every attention kernel runs ``config`` alone (no tuning); the atomic-dQ variant's
    missing dQ kernel is left alone."""
    for name in ("_attn_jvp_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq"):
        kernel = getattr(attention, name)
        if kernel is not None:
            monkeypatch.setattr(kernel, "configs", [attention_configs.config(*config)])


@needs_triton
@pytest.mark.parametrize("config", [(32, 32, 4, 1), (64, 16, 4, 1), (16, 64, 4, 1)])
@pytest.mark.parametrize("n_q, n_k, d", [(81, 81, 72), (40, 90, 16), (90, 40, 16), (1, 5, 16)])
def test_fp32_causal(monkeypatch, kernel_variant, config, n_q, n_k, d):
    """``causal``: query tiles that end on, before and after a key tile's end (query tiles 4x,
    1x and 1/4 the key tiles), ragged both ways, fewer or more queries than keys (the mask
    at the top left), a head dim in two parts: the reference's values and gradients."""
    use_config(monkeypatch, config)
    check_against_reference(make_inputs(2, 2, n_q, n_k, d, torch.float32), 0.3, 1e-5, causal=True)


def grouped_inputs(batch, heads, kv_heads, n_q, n_k, d, dtype):
    """Grouped-query attention's inputs: ``kv_heads`` key/value heads, K and V (and their
    tangents) views of one packed kv tensor each."""
    q, q_dot = (torch.randn(batch, heads, n_q, d, device=DEVICE).to(dtype) for _ in range(2))
    kv, kv_dot = (torch.randn(batch, n_k, 2, kv_heads, d, device=DEVICE).to(dtype) for _ in range(2))
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
    k_dot, v_dot = kv_dot.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v, q_dot, k_dot, v_dot


def attention_bias(batch, heads, n_q, n_k, dtype, kind):
    """An additive mask (SDPA's float ``attn_mask``) as a 4-D view: per-key padding broadcast
    over heads and queries (stride 0), a bias per head and key broadcast over queries (as
    diffusers passes a caption mask), or a bias per head and query with -inf entries and a
    query row that sees no key."""
    if kind == "key_padding":
        keep = torch.ones(batch, 1, 1, n_k, dtype=torch.bool, device=DEVICE)
        keep[0, ..., n_k // 2 :] = False
        bias = torch.zeros(keep.shape, device=DEVICE).masked_fill(~keep, float("-inf"))
    elif kind == "per_head_key":
        bias = torch.randn(batch, heads, 1, n_k, device=DEVICE)
        bias[0, 0, :, n_k // 3 :] = float("-inf")
    else:
        bias = torch.randn(batch, heads, n_q, n_k, device=DEVICE)
        bias = bias.masked_fill(torch.rand(bias.shape, device=DEVICE) < 0.3, float("-inf"))
        bias[0, 0, min(2, n_q - 1)] = float("-inf")
    return bias.to(dtype).expand(batch, heads, n_q, n_k)


@needs_triton
def test_tma_loads_fall_back_to_pointers_where_tma_cannot_address(monkeypatch):
    """A row stride that is not 16-byte aligned (73 fp32 elements) or a head dim that is not
    unit-strided: pointer loads, still right."""
    monkeypatch.setenv(attention.LOADS_ENV_VAR, "tma")
    q, k, v, q_dot, k_dot, v_dot = (torch.randn(1, 2, 20, 73, device=DEVICE)[..., :64] for _ in range(6))
    assert not attention.kv_by_tma(k, v, k_dot, v_dot)
    check_against_reference((q, k, v, q_dot, k_dot, v_dot), 0.125, TOL[torch.float32])
    columns = torch.randn(1, 2, 64, 20, device=DEVICE).transpose(-1, -2)
    assert not attention.kv_by_tma(columns, v, k_dot, v_dot)


def test_kernel_choices_are_checked(monkeypatch):
    monkeypatch.setenv(attention.DQ_ENV_VAR, "atomics")
    with pytest.raises(
        ValueError, match="MFK_ATTENTION_DQ must be one of 'separate', 'atomic', got 'atomics'"
    ):
        attention.dq_by_atomics()
    monkeypatch.delenv(attention.DQ_ENV_VAR)
    assert attention.dq_by_atomics() is False
    q = torch.empty(1, 1, 4, 64, device=DEVICE)
    monkeypatch.setenv(attention.LOADS_ENV_VAR, "TMA")
    with pytest.raises(ValueError, match="MFK_ATTENTION_LOADS must be one of 'pointers', 'tma', got 'TMA'"):
        attention.kv_by_tma(q, q, q, q)
    monkeypatch.delenv(attention.LOADS_ENV_VAR)
    assert attention.kv_by_tma(q, q, q, q) is False


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter, unstored rows
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_fp32_very_negative_logits_stay_finite(kernel_variant):
    """All logits near -90, so exp(-LSE) overflows fp32: padded key columns of the ragged
    tail must not turn into inf * 0 = NaN. At |logit| ~ 90 fp32 rounding of the logits
    alone costs ~1e-5, so the bar is flash-attention's rule: at most twice the error of
    the same math in torch fp32 (floor 1e-4)."""
    d, scale = 32, 1.0
    q, k, v, q_dot, k_dot, v_dot = (
        0.3 * t for t in make_inputs(1, 2, 20, 17, d, torch.float32, packed=False)
    )
    q[..., 0] += 10.0
    k[..., 0] -= 9.5
    inputs = (q, k, v, q_dot, k_dot, v_dot)
    grad_o = torch.randn(1, 2, 20, d)
    ref = reference.attention_jvp(*(t.double() for t in inputs), scale)
    assert ref[2].min() < -89
    ref_grads = reference.attention_backward(
        grad_o.double(), q.double(), k.double(), v.double(), ref[0], ref[2], scale
    )
    torch_fp32 = reference.attention_jvp(*inputs, scale)
    torch_fp32 = (
        *torch_fp32,
        *reference.attention_backward(grad_o, q, k, v, torch_fp32[0], torch_fp32[2], scale),
    )
    out = attention_jvp_triton(*inputs, scale)
    out = (*out, *attention_backward_triton(grad_o, q, k, v, out[0], out[2], scale))
    for name, o, t, r in zip(("O", "O'", "LSE", "dQ", "dK", "dV"), out, torch_fp32, (*ref, *ref_grads)):
        assert_close(name, o, r, max(2 * rel_err(t, r), 1e-4))


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n, d", [(17, 72), (130, 64)])
def test_half_precision(dtype, n, d):
    check_against_reference(make_inputs(2, 1, n, n, d, dtype), d**-0.5, TOL[dtype])


def tangent_error_at_magnitude(magnitude, n, d, dtype):
    """O' error relative to max |O'| (float64 reference of the same rounded inputs) when q, k,
    v and their tangents have standard deviation ``magnitude``, over the outputs ``dtype`` can
    represent: those must be finite (in fp16 at magnitude 30 some |O'| pass 65504, and round
    to inf as they should)."""
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1, 2, n, d, generator=g) * magnitude).to(DEVICE, dtype) for _ in range(6)]
    _, o_dot, _ = attention_jvp_triton(*inputs, d**-0.5)
    _, ref_o_dot, _ = reference.attention_jvp(*(t.double() for t in inputs), d**-0.5)
    representable = ref_o_dot.abs() < 0.99 * torch.finfo(dtype).max
    assert torch.isfinite(o_dot[representable]).all()
    return rel_err(o_dot[representable], ref_o_dot[representable], floor=0.0)


@needs_triton
@pytest.mark.parametrize("d", [64, 72])
@pytest.mark.parametrize("magnitude", [1.0, 10.0, 30.0])
def test_bf16_tangent_error_does_not_grow_with_the_activations(magnitude, d):
    """O' subtracts (sum P S' / l) O from a sum that holds the rounded P S' the dot took: both
    must sum the same values. With fp32 P S' in one and bf16 in the other the error grew with
    |S'|: 6e-3 at magnitude 1, 2-5e-2 at 10 and 30; 6e-3 to 1.1e-2 since (the interpreter
    truncates its bf16 casts, so its errors are about twice a GPU's)."""
    assert tangent_error_at_magnitude(magnitude, 256, d, torch.bfloat16) <= 1.25e-2


@needs_triton
def test_public_api_and_autograd_match_reference_backend():
    d = 72
    base = make_inputs(2, 3, 33, 33, d, torch.float32)
    q, k, v = (t.detach().clone().requires_grad_() for t in base[:3])
    q_r, k_r, v_r = (t.detach().clone().requires_grad_() for t in base[:3])
    tangents = base[3:]
    o, o_dot, lse = mfkernels.attention_jvp(q, k, v, *tangents, backend="triton")
    o_r, o_dot_r, lse_r = mfkernels.attention_jvp(q_r, k_r, v_r, *tangents, backend="reference")
    grad_o = torch.randn_like(o)
    o.backward(grad_o)
    o_r.backward(grad_o)
    tol = TOL[torch.float32]
    for name, out, ref in [("O", o, o_r), ("O'", o_dot, o_dot_r), ("LSE", lse, lse_r)]:
        assert_close(name, out.detach(), ref.detach().double(), tol)
    for name, out, ref in [("dQ", q.grad, q_r.grad), ("dK", k.grad, k_r.grad), ("dV", v.grad, v_r.grad)]:
        assert_close(name, out, ref.double(), tol)
    # and the reference backend itself against float64
    ref64 = reference.attention_jvp(*(t.double() for t in base), d**-0.5)
    assert_close("O vs float64", o.detach(), ref64[0], tol)


@needs_triton
@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_outputs_are_laid_out_heads_inner(backend):
    """O and O' are (batch, seq, heads, head_dim) in memory, as flash attention writes them, so
    merging the heads for the output projection is a view; the backward takes a gradient in
    that layout or a contiguous one alike."""
    base = make_inputs(2, 3, 17, 17, 72, torch.float32)
    q, k, v = (t.detach().clone().requires_grad_() for t in base[:3])
    o, o_dot, _ = mfkernels.attention_jvp(q, k, v, *base[3:], backend=backend)
    for t in (o, o_dot):
        assert t.shape == (2, 3, 17, 72) and t.transpose(1, 2).is_contiguous()
    grad = torch.randn(o.shape, device=DEVICE)
    heads_inner = grad.transpose(1, 2).contiguous().transpose(1, 2)
    by_layout = [torch.autograd.grad(o, (q, k, v), g, retain_graph=True) for g in (grad, heads_inner)]
    for contiguous_grad, strided_grad in zip(*by_layout):
        torch.testing.assert_close(strided_grad, contiguous_grad, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize(
    "causal, kv_heads, bias", [(False, 2, False), (True, 2, False), (False, 1, False), (False, 2, True)]
)
def test_opcheck_with_triton_backend(causal, kv_heads, bias):
    inputs = grouped_inputs(1, 2, kv_heads, 17, 17, 32, torch.float32)
    q, k, v = (t.requires_grad_() for t in inputs[:3])
    extra = (attention_bias(1, 2, 17, 17, torch.float32, "per_query"),) if bias else ()
    torch.library.opcheck(
        torch.ops.mfkernels.attention_jvp.default,
        (q, k, v, *inputs[3:], 32**-0.5, causal, "triton", *extra),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


def _generations():
    """The tuned config lists to check: this GPU's, or every generation's in the interpreter."""
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return [attention_configs.generation(10 * major + minor)]
    return ["sm90", "sm80"]


@needs_triton
@pytest.mark.parametrize("generation", _generations())
@pytest.mark.parametrize("d", [64, 72, 128])
def test_every_tuned_config(monkeypatch, kernel_variant, generation, d):
    """The autotuner only times its configs, and the suite on a GPU runs just the first of each
    list (MFK_AUTOTUNE=0, tests/conftest.py): here every config a launch may take runs against
    the reference in every kernel variant (atomic dQ, TMA loads), compiled in bf16 on a GPU;
    in the interpreter (fp32) it checks the tiles' logic. The sequences end in a ragged key
    (and query) tile of 1, 17 and 44 rows with 64- and 128-row tiles (1, 17, 12 with 32); a
    head dim split in two parts also runs a sequence of whole tiles, whose forward takes the
    configs a ragged one may not."""
    parts = attention.head_dim_parts(d)
    kernels = {"fwd": attention._attn_jvp_fwd, "dkdv": attention._attn_bwd_dkdv, "dq": attention._attn_bwd_dq}
    kernels = {name: kernel for name, kernel in kernels.items() if kernel is not None}  # atomic_dq
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu else torch.float32
    ragged = [257, 273, 300] if gpu else [65, 81, 108]
    whole = ([256] if gpu else [128]) if parts["SPLIT"] else []
    for n in ragged + whole:
        inputs = make_inputs(2, 3, n, n, d, dtype) if gpu else make_inputs(1, 2, n, n, d, dtype)
        lists = {name: attention_configs.tuned_for(name, generation, {**parts, "N_K": n}) for name in kernels}
        for i in range(max(len(configs) for configs in lists.values())):
            for name, kernel in kernels.items():
                config = lists[name][min(i, len(lists[name]) - 1)]
                # one config: no tuning
                monkeypatch.setattr(kernel, "configs", [attention_configs.config(*config)])
            check_against_reference(inputs, d**-0.5, TOL[dtype])


@needs_triton
@pytest.mark.parametrize("generation", ["sm90", "sm80"])
@pytest.mark.parametrize("d", [16, 32, 64, 72, 96, 128])
@pytest.mark.parametrize("n_k", [1, 17, 64, 256, 300])
@pytest.mark.parametrize("causal", [False, True])
def test_tuned_configs_never_empty(generation, d, n_k, causal):
    """The autotuner needs at least one config for every launch (its prune keeps ``tuned_for``'s)."""
    parts = attention.head_dim_parts(d)
    for name in ("fwd", "dkdv", "dq"):
        configs = attention_configs.tuned_for(name, generation, {**parts, "N_K": n_k, "CAUSAL": causal})
        assert configs, (name, d, n_k)
        if name == "fwd" and parts["SPLIT"] and (causal or n_k % 64):  # the fenced 64-key tiles
            assert all(c[1] < 64 for c in configs), configs


def _forget_attention_warnings():
    dispatch.forget_warnings("attention_jvp", "attention_backward")


def test_float64_falls_back_to_reference_with_one_warning():
    _forget_attention_warnings()
    inputs = make_inputs(1, 2, 9, 9, 16, torch.float64, device="cpu")
    with pytest.warns(UserWarning, match="attention_jvp: backend 'triton'"):
        out = mfkernels.attention_jvp(*inputs, backend="triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = mfkernels.attention_jvp(*inputs, backend="triton")
    ref = torch_ops.attention_jvp(*inputs, 16**-0.5)  # what the reference backend runs
    for a, b, c in zip(out, again, ref):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=0, atol=0)


@needs_triton
def test_unsupported_reasons():
    q = torch.empty(1, 1, 4, 160, device=DEVICE)
    assert "head_dim <= 128" in triton_attention_unsupported(q, q, q)
    q, v = torch.empty(1, 1, 4, 64, device=DEVICE), torch.empty(1, 1, 4, 32, device=DEVICE)
    assert "v's head_dim" in triton_attention_unsupported(q, q, v)
    assert "float64" in triton_attention_unsupported(*(torch.empty(1, 1, 4, 64, dtype=torch.float64),) * 3)
    assert triton_attention_unsupported(q, q, q) is None


def test_large_head_dim_falls_back_to_reference():
    _forget_attention_warnings()
    inputs = make_inputs(1, 1, 5, 5, 160, torch.float32, packed=False, device="cpu")
    with pytest.warns(UserWarning, match="head_dim <= 128"):
        out = mfkernels.attention_jvp(*inputs, backend="triton")
    ref = torch_ops.attention_jvp(*inputs, 160**-0.5)
    for a, c in zip(out, ref):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


# ------------------------------------------------------------------------------ GPU tests


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [32, 64, 72, 96, 128])
def test_gpu_half_precision_n1024(dtype, d):
    check_against_reference(make_inputs(2, 3, 1024, 1024, d, dtype), d**-0.5, TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_bf16_n4096(d):
    check_against_reference(make_inputs(1, 2, 4096, 4096, d, torch.bfloat16), d**-0.5, TOL[torch.bfloat16])


@pytest.mark.gpu
@pytest.mark.parametrize("d", [64, 72])
def test_gpu_fp32_n1024(d):
    check_against_reference(make_inputs(1, 2, 1024, 1024, d, torch.float32), d**-0.5, TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.parametrize("n_q, n_k", [(1000, 777), (1, 1025), (257, 257), (300, 300), (17, 17)])
def test_gpu_bf16_ragged_lengths(kernel_variant, n_q, n_k):
    # Last key tiles of 9, 1, 1, 44 and 17 keys: the split forward's 64-key tiles went wrong
    # with 17 and 44 (Triton 3.6, H200) and passed with 1, 2 and 9 (see attention_configs.TUNED).
    inputs = make_inputs(2, 2, n_q, n_k, 72, torch.bfloat16)
    check_against_reference(inputs, 72**-0.5, TOL[torch.bfloat16])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 8e-3), (torch.float16, 1.5e-3)])
@pytest.mark.parametrize("d", [64, 72, 128])
@pytest.mark.parametrize("n", [256, 300])
def test_gpu_tangent_error_at_every_magnitude(n, d, dtype, bound):
    """O' within ``bound`` of max |O'| for activations of magnitude 1 to 30; finite wherever
    the output is representable. The kernel's arithmetic emulated with real 16-bit rounding on
    these inputs (benchmarks/scripts/tangent_rounding_emulation.py): bf16 2.2-6.0e-3, up to
    3.2e-3 of it the rounding of the stored O' alone; fp16 2.9-9.6e-4 (docs/design.md section 3)."""
    for magnitude in (1.0, 3.0, 10.0, 30.0):
        assert tangent_error_at_magnitude(magnitude, n, d, dtype) <= bound, magnitude


@pytest.mark.gpu
def test_gpu_atomic_dq_right_after_tuning(monkeypatch):
    """With autotuning on (the suite runs MFK_AUTOTUNE=0), the dK/dV kernel is timed over its
    configs first: each timing run adds into the atomic dQ sums, which must start from zero
    again for the run whose result is returned."""
    monkeypatch.setenv("MFK_AUTOTUNE", "1")
    monkeypatch.setenv(attention.DQ_ENV_VAR, "atomic")
    # A shape no other test tunes (a fresh autotuner key), with several configs to time.
    inputs = make_inputs(3, 5, 333, 333, 64, torch.bfloat16)
    check_against_reference(inputs, 64**-0.5, TOL[torch.bfloat16])


def _candidate_configs():
    return [(name, c) for name, lists in attention_configs.CANDIDATES["sm90"].items() for c in lists["split"]]


@pytest.mark.gpu
@pytest.mark.parametrize("name, config", _candidate_configs(), ids=lambda x: str(x).replace(" ", ""))
def test_gpu_candidate_config(monkeypatch, name, config):
    """A d = 72 tile not tuned yet (attention_configs.CANDIDATES) against the reference in bf16,
    the other kernels on their first tuned tile: last key tiles of 1, 17 and 44 and whole
    tiles; a forward with 64-key tiles only where they divide N (its fence in ``tuned_for``).
    A candidate that passes may move into TUNED."""
    major, minor = torch.cuda.get_device_capability()
    if attention_configs.generation(10 * major + minor) != "sm90":
        pytest.skip("the candidates are Hopper's")
    parts = attention.head_dim_parts(72)
    kernels = {"fwd": attention._attn_jvp_fwd, "dkdv": attention._attn_bwd_dkdv, "dq": attention._attn_bwd_dq}
    for n in (257, 273, 300, 256):
        if name == "fwd" and config[1] == 64 and n % 64:
            continue
        for kernel_name, kernel in kernels.items():
            tuned = attention_configs.tuned_for(kernel_name, "sm90", {**parts, "N_K": n})[0]
            chosen = config if kernel_name == name else tuned
            monkeypatch.setattr(kernel, "configs", [attention_configs.config(*chosen)])
        check_against_reference(make_inputs(2, 3, n, n, 72, torch.bfloat16), 72**-0.5, TOL[torch.bfloat16])


@pytest.mark.gpu
@pytest.mark.parametrize("n_q, n_k, d", [(1024, 1024, 64), (300, 300, 72), (257, 1000, 128), (1000, 257, 72)])
def test_gpu_bf16_causal(kernel_variant, n_q, n_k, d):
    """Causal attention on compiled tiles (the first tuned config of each kernel)."""
    check_against_reference(
        make_inputs(2, 2, n_q, n_k, d, torch.bfloat16), d**-0.5, TOL[torch.bfloat16], causal=True
    )


@pytest.mark.gpu
def test_gpu_dit_xl_shape_packed_bf16(kernel_variant):
    """DiT-XL/2 at 256 px: 16 heads of 72 over 256 tokens, q/k/v views of one qkv tensor."""
    check_against_reference(make_inputs(4, 16, 256, 256, 72, torch.bfloat16), 72**-0.5, TOL[torch.bfloat16])


@pytest.mark.gpu
def test_gpu_compiled_public_api():
    base = make_inputs(2, 4, 300, 300, 64, torch.bfloat16)
    q, k, v = (t.detach().clone().requires_grad_() for t in base[:3])

    def step(q, k, v, q_dot, k_dot, v_dot):
        o, o_dot, lse = mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, backend="triton")
        return o.float().square().sum(), o_dot, lse

    loss, o_dot, lse = torch.compile(step, fullgraph=True)(q, k, v, *base[3:])
    loss.backward()
    ref = reference.attention_jvp(*(t.double() for t in base), 64**-0.5)
    assert_close("O'", o_dot, ref[1], TOL[torch.bfloat16])
    assert_close("LSE", lse, ref[2], TOL[torch.bfloat16])
    ref_grads = reference.attention_backward(
        2 * ref[0], *(t.double() for t in base[:3]), ref[0], ref[2], 64**-0.5
    )
    for name, out, r in zip(("dQ", "dK", "dV"), (q.grad, k.grad, v.grad), ref_grads):
        assert_close(name, out, r, TOL[torch.bfloat16])
