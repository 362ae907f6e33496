"""Each dual op through its public API (reference backend) against ``torch.func.jvp`` of a
plain torch formula, in float64, and its primal backward against plain autograd."""

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import input_scale, rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from mfkernels.backends import torch_ops

F64 = torch.float64
TOL = 1e-10


def rand(*shape, dtype=F64, **kw):
    return torch.randn(*shape, dtype=dtype, **kw)


def assert_rel(actual, expected, tol=TOL, name="", floor=1.0):
    err = rel_err(actual, expected, floor)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def check_dual(op, plain, primals, tangents, tol=TOL):
    """op(*primals, *tangents) == torch.func.jvp(plain, primals, tangents)."""
    value, tangent = op()
    ref_value, ref_tangent = torch.func.jvp(plain, primals, tangents)
    floor = input_scale(*primals, *tangents)
    assert_rel(value, ref_value, tol, "value", floor)
    assert_rel(tangent, ref_tangent, tol, "tangent", floor)
    assert not tangent.requires_grad


def check_backward(op_value, plain, inputs):
    """Gradients of a random projection of the op's value match plain autograd."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    value = op_value(*inputs)
    weights = torch.randn_like(value)
    grads = torch.autograd.grad((value * weights).sum(), inputs, allow_unused=True)
    copies = [t.detach().requires_grad_() for t in inputs]
    ref_grads = torch.autograd.grad((plain(*copies) * weights).sum(), copies, allow_unused=True)
    for i, (g, rg) in enumerate(zip(grads, ref_grads)):
        assert (g is None) == (rg is None), f"grad {i}: one side has no gradient"
        if g is not None:
            assert_rel(g, rg, TOL, f"grad {i}", input_scale(*inputs, weights))


def plain_ln_modulate(x, shift, scale):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 17, 72), (3, 130, 32)])
def test_layernorm_modulate(shape):
    b, _, d = shape
    x, x_dot = rand(*shape), rand(*shape)
    sh, sc, sh_dot, sc_dot = rand(b, d), rand(b, d), rand(b, d), rand(b, d)
    check_dual(
        lambda: mfkernels.layernorm_modulate_jvp(x, x_dot, sh, sc, sh_dot, sc_dot, backend="reference"),
        plain_ln_modulate,
        (x, sh, sc),
        (x_dot, sh_dot, sc_dot),
    )
    check_backward(
        lambda x, sh, sc: mfkernels.layernorm_modulate_jvp(x, x_dot, sh, sc, sh_dot, sc_dot)[0],
        plain_ln_modulate,
        [x, sh, sc],
    )


def test_layernorm_modulate_strided_modulation():
    """The DiT passes shift/scale as chunks of one (batch, 6 dim) tensor."""
    x, x_dot = rand(2, 5, 16), rand(2, 5, 16)
    mod, mod_dot = rand(2, 96), rand(2, 96)
    sh, sc = mod.chunk(6, dim=1)[:2]
    sh_dot, sc_dot = mod_dot.chunk(6, dim=1)[:2]
    check_dual(
        lambda: mfkernels.layernorm_modulate_jvp(x, x_dot, sh, sc, sh_dot, sc_dot),
        plain_ln_modulate,
        (x, sh.contiguous(), sc.contiguous()),
        (x_dot, sh_dot.contiguous(), sc_dot.contiguous()),
    )


@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_tanh(with_bias):
    x, x_dot, bias = rand(2, 9, 24), rand(2, 9, 24), rand(24)
    b = bias if with_bias else None

    def plain(x, bias):
        return F.gelu(x + bias if with_bias else x, approximate="tanh")

    check_dual(
        lambda: mfkernels.gelu_tanh_jvp(x, x_dot, b), plain, (x, bias), (x_dot, torch.zeros_like(bias))
    )
    check_backward(
        lambda x, bias: mfkernels.gelu_tanh_jvp(x, x_dot, bias if with_bias else None)[0], plain, [x, bias]
    )


def test_gelu_tanh_oracle_formula():
    """The reference module's explicit formula (the kernels' oracle) equals torch's GELU."""
    x, x_dot = rand(4, 33) * 3, rand(4, 33)
    y, y_dot = mfkernels.reference.gelu_tanh_jvp(x, x_dot)
    ref_y, ref_dot = torch.func.jvp(lambda x: F.gelu(x, approximate="tanh"), (x,), (x_dot,))
    assert_rel(y, ref_y)
    assert_rel(y_dot, ref_dot)


@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_tanh_fast_composites_match_the_oracle(dtype, with_bias):
    """The backend's GELU value and tangent (on the CPU the sigmoid form) equal the readable
    tanh formula, over the tails too, with low-precision inputs computed in float32."""
    ref = mfkernels.reference
    x = torch.cat([torch.linspace(-12, 12, 97, dtype=F64), rand(3 * 97) * 3]).reshape(4, 97).to(dtype)
    x_dot = rand(4, 97).to(dtype)
    tol = {F64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    bias = rand(97).to(dtype) if with_bias else None
    fast = torch_ops.gelu_tanh_jvp(x, x_dot, bias)
    oracle = ref.gelu_tanh_jvp(x, x_dot, bias)
    for name, a, e in zip(("y", "y_dot"), fast, oracle):
        assert a.dtype == e.dtype, name
        assert_rel(a.double(), e.double(), tol, name)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_tanh_backward_fused_form_matches_the_oracle(dtype, with_bias):
    """The reference backend's GELU backward (torch's fused kernel) equals the readable
    formula: ``dx`` and the bias gradient summed from the unrounded ``dx``."""
    x, grad = (rand(4, 97) * 3).to(dtype), rand(4, 97).to(dtype)
    bias = rand(97).to(dtype) if with_bias else None
    tol = {F64: 1e-12, torch.float32: 1e-5}[dtype]
    fused = torch_ops.gelu_tanh_backward(grad, x, bias)
    oracle = mfkernels.reference.gelu_tanh_backward(grad, x, bias)
    assert_rel(fused[0], oracle[0], tol, "dx")
    if with_bias:
        assert_rel(fused[1], oracle[1], tol, "dbias")
    else:
        assert fused[1] is None and oracle[1] is None


def test_silu():
    x, x_dot = rand(3, 40) * 3, rand(3, 40)
    check_dual(lambda: mfkernels.silu_jvp(x, x_dot), F.silu, (x,), (x_dot,))
    check_backward(lambda x: mfkernels.silu_jvp(x, x_dot)[0], F.silu, [x])
    y, y_dot = mfkernels.reference.silu_jvp(x, x_dot)
    ref_y, ref_dot = torch.func.jvp(F.silu, (x,), (x_dot,))
    assert_rel(y, ref_y)
    assert_rel(y_dot, ref_dot)


def test_gated_residual():
    x, x_dot, f, f_dot = rand(2, 7, 12), rand(2, 7, 12), rand(2, 7, 12), rand(2, 7, 12)
    g, g_dot = rand(2, 12), rand(2, 12)

    def plain(x, g, f):
        return x + g[:, None] * f

    check_dual(
        lambda: mfkernels.gated_residual_jvp(x, x_dot, g, g_dot, f, f_dot),
        plain,
        (x, g, f),
        (x_dot, g_dot, f_dot),
    )
    check_backward(
        lambda x, g, f: mfkernels.gated_residual_jvp(x, x_dot, g, g_dot, f, f_dot)[0], plain, [x, g, f]
    )


def test_linear():
    x, x_dot, w, bias = rand(2, 5, 6), rand(2, 5, 6), rand(4, 6), rand(4)
    check_dual(
        lambda: mfkernels.linear_jvp(x, x_dot, w, bias),
        F.linear,
        (x, w, bias),
        (x_dot, torch.zeros_like(w), torch.zeros_like(bias)),
    )
    w.requires_grad_()
    _, y_dot = mfkernels.linear_jvp(x, x_dot, w, bias)
    assert not y_dot.requires_grad, "the tangent GEMM must stay outside autograd"


def plain_attention(q, k, v, scale):
    s = scale * q @ k.transpose(-1, -2)
    return torch.softmax(s, dim=-1) @ v


@pytest.mark.parametrize("b,h,n,m,d", [(1, 1, 1, 1, 8), (2, 3, 17, 17, 72), (1, 2, 130, 33, 16)])
def test_attention(b, h, n, m, d):
    q, q_dot = rand(b, h, n, d), rand(b, h, n, d)
    k, k_dot, v, v_dot = rand(b, h, m, d), rand(b, h, m, d), rand(b, h, m, d), rand(b, h, m, d)
    scale = d**-0.5
    o, o_dot, lse = mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot)
    ref_o, ref_dot = torch.func.jvp(
        lambda q, k, v: plain_attention(q, k, v, scale), (q, k, v), (q_dot, k_dot, v_dot)
    )
    assert_rel(o, ref_o)
    assert_rel(o_dot, ref_dot)
    assert_rel(lse, torch.logsumexp(scale * q @ k.transpose(-1, -2), dim=-1))
    assert not o_dot.requires_grad and not lse.requires_grad
    check_backward(
        lambda q, k, v: mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot)[0],
        lambda q, k, v: plain_attention(q, k, v, scale),
        [q, k, v],
    )


def check_against_math_sdpa(primals, tangents, sdpa_kwargs, **ours):
    """``attention_jvp(..., **ours)`` against ``torch.func.jvp`` and autograd of math SDPA called
    with ``sdpa_kwargs``, in float64, scale 0.3; returns our LSE."""

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, scale=0.3, **sdpa_kwargs)

    def attention(q, k, v):
        return mfkernels.attention_jvp(q, k, v, *tangents, 0.3, **ours)

    o, o_dot, lse = attention(*primals)
    ref_o, ref_dot = torch.func.jvp(sdpa, primals, tangents)
    assert_rel(o, ref_o)
    assert_rel(o_dot, ref_dot)
    check_backward(lambda q, k, v: attention(q, k, v)[0], sdpa, list(primals))
    return lse


@pytest.mark.parametrize("n,m", [(9, 9), (5, 12), (12, 5), (1, 4)])
def test_causal_attention_is_sdpa_is_causal(n, m):
    """``causal=True`` against math SDPA's ``is_causal=True`` (its mask aligned at the top left
    where the lengths differ)."""
    q, q_dot = rand(2, 3, n, 8), rand(2, 3, n, 8)
    k, k_dot, v, v_dot = (rand(2, 3, m, 8) for _ in range(4))
    lse = check_against_math_sdpa((q, k, v), (q_dot, k_dot, v_dot), dict(is_causal=True), causal=True)
    later_keys = torch.full((n, m), -math.inf, dtype=F64).triu(1)
    assert_rel(lse, torch.logsumexp(0.3 * q @ k.transpose(-1, -2) + later_keys, dim=-1))
    with pytest.raises(TypeError, match="causal"):
        mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, causal=1)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads, kv_heads, n, m", [(4, 2, 9, 9), (6, 1, 5, 12), (6, 3, 12, 5)])
def test_grouped_query_attention_is_sdpa_enable_gqa(heads, kv_heads, n, m, causal):
    """Fewer key/value heads against math SDPA's ``enable_gqa=True``: query head h reads
    key/value head h // (heads / kv_heads), and dK, dV sum over the query heads that read them."""
    q, q_dot = rand(2, heads, n, 8), rand(2, heads, n, 8)
    k, k_dot, v, v_dot = (rand(2, kv_heads, m, 8) for _ in range(4))
    sdpa_kwargs = dict(is_causal=causal, enable_gqa=True)
    check_against_math_sdpa((q, k, v), (q_dot, k_dot, v_dot), sdpa_kwargs, causal=causal)


@pytest.mark.parametrize("mask_shape", [(2, 3, 6, 9), (2, 1, 1, 9), (6, 9)])
def test_attention_bias_is_sdpa_float_attn_mask(mask_shape):
    """``bias`` against math SDPA with that float ``attn_mask``: broadcast shapes, -inf
    entries, and a query row that sees no key (zeros, as math SDPA; its LSE -inf)."""
    q, q_dot = rand(2, 3, 6, 8), rand(2, 3, 6, 8)
    k, k_dot, v, v_dot = (rand(2, 3, 9, 8) for _ in range(4))
    bias = rand(*mask_shape).masked_fill(torch.rand(mask_shape) < 0.3, -math.inf)
    if bias.shape[-2] > 1:
        bias[..., -1, :] = -math.inf  # the last query sees no key
    lse = check_against_math_sdpa((q, k, v), (q_dot, k_dot, v_dot), dict(attn_mask=bias), bias=bias)
    ref_lse = torch.logsumexp(0.3 * q @ k.transpose(-1, -2) + bias, dim=-1)
    assert torch.equal(lse.isneginf(), ref_lse.isneginf())
    assert_rel(lse.nan_to_num(neginf=0.0), ref_lse.nan_to_num(neginf=0.0))


def test_attention_matches_sdpa_with_custom_scale():
    q, k, v = rand(1, 2, 9, 8), rand(1, 2, 9, 8), rand(1, 2, 9, 8)
    o, _, _ = mfkernels.attention_jvp(q, k, v, q, k, v, scale=0.3)
    assert_rel(o, F.scaled_dot_product_attention(q, k, v, scale=0.3))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "b,h,hkv,n,m,d,dv",
    [(1, 1, 1, 1, 1, 8, 8), (2, 3, 3, 17, 40, 72, 72), (2, 2, 2, 9, 5, 16, 24), (1, 2, 2, 13, 13, 16, 16),
     (2, 4, 2, 13, 13, 16, 16), (1, 6, 3, 9, 7, 16, 24)],
)  # fmt: skip
def test_attention_fast_composites_match_the_oracle(b, h, hkv, n, m, d, dv, dtype, causal):
    """The backend's in-place composites equal the readable oracle formulas, on strided views
    (as the DiT passes them), with low-precision inputs computed in float32, and with fewer
    key/value heads (``hkv``). With ``dv == d`` the CPU backward is torch's flash-attention
    backward (causal: where ``n == m``), else the composite."""
    ref = mfkernels.reference
    packed = (rand(b, n, 2, h, d) * 2).to(dtype)  # q and q_dot as views of one tensor
    q, q_dot = packed.permute(2, 0, 3, 1, 4).unbind(0)
    k, k_dot = (rand(b, hkv, m, d).to(dtype) for _ in range(2))
    v, v_dot = (rand(b, hkv, m, dv).to(dtype) for _ in range(2))
    tol = {F64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    fast = torch_ops.attention_jvp(q, k, v, q_dot, k_dot, v_dot, 0.3, causal)
    oracle = ref.attention_jvp(q, k, v, q_dot, k_dot, v_dot, 0.3, causal)
    for name, a, e in zip(("o", "o_dot", "lse"), fast, oracle):
        assert a.dtype == e.dtype, name
        assert_rel(a.double(), e.double(), tol, name)
    grad_o = rand(b, h, n, dv).to(dtype)
    o, lse = oracle[0], oracle[2]
    fast_grads = torch_ops.attention_backward(grad_o, q, k, v, o, lse, 0.3, causal)
    oracle_grads = ref.attention_backward(grad_o, q, k, v, o, lse, 0.3, causal)
    for name, a, e in zip(("dq", "dk", "dv"), fast_grads, oracle_grads):
        assert_rel(a.double(), e.double(), tol, name)


@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_fast_composites_with_a_bias_match_the_oracle(dtype, causal):
    """The backend's composites with an additive bias (a mask with -inf entries, a row that sees
    no key) equal the oracle; the CPU backward is then the composite, not torch's flash one."""
    ref = mfkernels.reference
    q, q_dot, k, k_dot, v, v_dot = (rand(2, 3, 13, 16).to(dtype) for _ in range(6))
    bias = rand(2, 1, 13, 13).masked_fill(torch.rand(2, 1, 13, 13) < 0.3, -math.inf).to(dtype)
    bias[:, :, 4] = -math.inf
    bias = bias.expand(2, 3, 13, 13)
    tol = {F64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    fast = torch_ops.attention_jvp(q, k, v, q_dot, k_dot, v_dot, 0.3, causal, bias)
    oracle = ref.attention_jvp(q, k, v, q_dot, k_dot, v_dot, 0.3, causal, bias)
    for name, a, e in zip(("o", "o_dot"), fast, oracle):
        assert_rel(a.double(), e.double(), tol, name)
    assert torch.equal(fast[2].isneginf(), oracle[2].isneginf())
    grad_o = rand(2, 3, 13, 16).to(dtype)
    fast_grads = torch_ops.attention_backward(grad_o, q, k, v, oracle[0], oracle[2], 0.3, causal, bias)
    oracle_grads = ref.attention_backward(grad_o, q, k, v, oracle[0], oracle[2], 0.3, causal, bias)
    for name, a, e in zip(("dq", "dk", "dv"), fast_grads, oracle_grads):
        assert_rel(a.double(), e.double(), tol, name)


def test_attention_fast_composites_stay_float32_under_autocast():
    """Under bf16 autocast (the DiT's training mode) the reference attention's GEMMs still run
    in float32 on its float32 inputs: the same result as without autocast."""
    inputs = [rand(2, 3, 17, 16, dtype=torch.float32) for _ in range(6)]
    grad_o = rand(2, 3, 17, 16, dtype=torch.float32)
    plain = torch_ops.attention_jvp(*inputs)
    plain_grads = torch_ops.attention_backward(grad_o, *inputs[:3], plain[0], plain[2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = torch_ops.attention_jvp(*inputs)
        cast_grads = torch_ops.attention_backward(grad_o, *inputs[:3], plain[0], plain[2])
    for name, a, e in zip(("o", "o_dot", "lse", "dq", "dk", "dv"), cast + cast_grads, plain + plain_grads):
        assert a.dtype == torch.float32, name
        assert_rel(a, e, 1e-6, name)


@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 8), (2, 17, 72)])
def test_layernorm_modulate_and_residual_fast_composites_match_the_oracle(shape, dtype):
    """The composites the reference backend runs (torch's fused LayerNorm kernels, fused
    multiply-adds) equal the readable formulas; modulation vectors are strided chunks, as in
    the DiT, and low-precision inputs are computed in float32."""
    ref = mfkernels.reference
    b, _, d = shape
    tol = {F64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    x, x_dot, f, f_dot, grad = ((rand(*shape) * 3 + 1).to(dtype) for _ in range(5))
    shift, scale, gate, shift_dot, scale_dot, gate_dot = rand(b, 6 * d).to(dtype).chunk(6, dim=1)

    def check(fast, oracle, names):
        for name, a, e in zip(names, fast, oracle):
            assert a.dtype == e.dtype, name
            assert_rel(a.double(), e.double(), tol, name)

    ln = (x, x_dot, shift, scale, shift_dot, scale_dot)
    check(torch_ops.layernorm_modulate_jvp(*ln), ref.layernorm_modulate_jvp(*ln), ("m", "m_dot"))
    check(
        torch_ops.layernorm_modulate_backward(grad, x, scale),
        ref.layernorm_modulate_backward(grad, x, scale),
        ("dx", "dshift", "dscale"),
    )
    res = (x, x_dot, gate, gate_dot, f, f_dot)
    check(torch_ops.gated_residual_jvp(*res), ref.gated_residual_jvp(*res), ("y", "y_dot"))


def test_timestep_embedding():
    t, t_dot = torch.rand(5, dtype=F64), rand(5)
    emb, emb_dot = mfkernels.timestep_embedding_jvp(t, t_dot, 33)
    ref, ref_dot = torch.func.jvp(lambda t: mfkernels.timestep_embedding(t, 33), (t,), (t_dot,))
    assert emb.shape == (5, 33)
    assert_rel(emb, ref)
    assert_rel(emb_dot, ref_dot)
    half = torch.exp(-math.log(10000.0) * torch.arange(16, dtype=F64) / 16)
    assert_rel(emb[:, :16], torch.cos(t[:, None] * half))


@pytest.mark.parametrize("with_weight", [False, True])
def test_rms_norm(with_weight):
    x, x_dot, w = rand(2, 3, 10, 16), rand(2, 3, 10, 16), rand(16)
    weight = w if with_weight else None

    def plain(x, w):
        return F.rms_norm(x, x.shape[-1:], w if with_weight else None, 1e-6)

    check_dual(lambda: mfkernels.rms_norm_jvp(x, x_dot, weight), plain, (x, w), (x_dot, torch.zeros_like(w)))
    check_backward(
        lambda x, w: mfkernels.rms_norm_jvp(x, x_dot, w if with_weight else None)[0], plain, [x, w]
    )


def test_low_precision_inputs_compute_in_float32():
    """bf16 in, bf16 out, fp32 inside: close to the float64 result at bf16 resolution."""
    x, x_dot = rand(2, 5, 64), rand(2, 5, 64)
    sh, sc, sh_dot, sc_dot = (rand(2, 64) for _ in range(4))
    args64 = (x, x_dot, sh, sc, sh_dot, sc_dot)
    m, m_dot = mfkernels.layernorm_modulate_jvp(*(a.bfloat16() for a in args64))
    ref, ref_dot = mfkernels.layernorm_modulate_jvp(*args64)
    assert m.dtype == torch.bfloat16
    assert_rel(m, ref, 3e-2)
    assert_rel(m_dot, ref_dot, 3e-2)


# ------------------------------------------------------------------ registration


def _op_samples():
    x, x_dot, f, f_dot = rand(2, 5, 8), rand(2, 5, 8), rand(2, 5, 8), rand(2, 5, 8)
    vecs = [rand(2, 8) for _ in range(4)]
    q = [rand(1, 2, 6, 4) for _ in range(6)]
    kv = [rand(1, 1, 6, 4) for _ in range(2)]  # one key/value head for both query heads
    bias = rand(1, 1, 6, 6).expand(1, 2, 6, 6)  # an attention mask, broadcast over heads
    ops = torch.ops.mfkernels
    return [
        (ops.layernorm_modulate_jvp.default, (x, x_dot, *vecs, 1e-6, "")),
        (ops.layernorm_modulate_backward.default, (x, x, vecs[0], 1e-6, "")),
        (ops.gelu_tanh_jvp.default, (x, x_dot, rand(8), "")),
        (ops.gelu_tanh_jvp.default, (x, x_dot, None, "")),
        (ops.gelu_tanh_backward.default, (x_dot, x, rand(8), "")),
        (ops.silu_jvp.default, (x, x_dot, "")),
        (ops.gated_residual_jvp.default, (x, x_dot, vecs[0], vecs[1], f, f_dot, "")),
        (ops.gated_residual_backward.default, (x_dot, vecs[0], f, "")),
        (ops.attention_jvp.default, (*q, 0.5, False, "")),
        (ops.attention_jvp.default, (*q, 0.5, True, "")),
        (ops.attention_backward.default, (q[0], *q[:3], q[4], rand(1, 2, 6), 0.5, False, "")),
        (ops.attention_backward.default, (q[0], *q[:3], q[4], rand(1, 2, 6), 0.5, True, "")),
        (ops.attention_jvp.default, (q[0], *kv, q[3], *kv, 0.5, False, "")),
        (ops.attention_backward.default, (q[0], q[1], *kv, q[4], rand(1, 2, 6), 0.5, False, "")),
        (ops.attention_jvp.default, (*q, 0.5, False, "", bias)),
        (ops.attention_backward.default, (q[0], *q[:3], q[4], rand(1, 2, 6), 0.5, False, "", bias)),
        (ops.rms_norm_jvp.default, (x, x_dot, rand(8), 1e-6, "")),
    ]


@pytest.mark.parametrize("op,args", _op_samples(), ids=lambda v: str(v) if not isinstance(v, tuple) else "")
def test_opcheck(op, args):
    primal_positions = {0, 2, 3} if "attention_jvp" in str(op) else {0, 2, 4}
    differentiable = "backward" not in str(op)  # backward ops have no double backward
    args = tuple(
        a.detach().clone().requires_grad_(differentiable and i in primal_positions)
        if isinstance(a, torch.Tensor)
        else a
        for i, a in enumerate(args)
    )
    torch.library.opcheck(op, args)


# ------------------------------------------------------------------- bad input


def test_mismatched_tangent_shape():
    with pytest.raises(ValueError, match="x_dot must have the shape of x"):
        mfkernels.silu_jvp(rand(2, 3), rand(2, 4))


def test_mismatched_tangent_dtype():
    with pytest.raises(TypeError, match="x_dot has dtype"):
        mfkernels.gelu_tanh_jvp(rand(2, 3), rand(2, 3, dtype=torch.float32))


def test_device_mix():
    with pytest.raises(ValueError, match="q_dot is on meta"):
        mfkernels.attention_jvp(
            *[rand(1, 1, 2, 4)] * 3, rand(1, 1, 2, 4, device="meta"), *[rand(1, 1, 2, 4)] * 2
        )


def test_attention_shape_errors():
    q = rand(1, 2, 5, 8)
    with pytest.raises(ValueError, match="v must have k's sequence length"):
        mfkernels.attention_jvp(q, q, rand(1, 2, 4, 8), q, q, rand(1, 2, 4, 8))
    with pytest.raises(ValueError, match="q must be"):
        mfkernels.attention_jvp(rand(2, 5, 8), *[rand(2, 5, 8)] * 5)
    with pytest.raises(TypeError, match="one dtype"):
        k = rand(1, 2, 5, 8, dtype=torch.float32)
        mfkernels.attention_jvp(q, k, q, q, k, q)
    with pytest.raises(ValueError, match="k and v must have q's heads or a divisor of them"):
        k = rand(1, 3, 5, 8)
        mfkernels.attention_jvp(rand(1, 4, 5, 8), k, k, rand(1, 4, 5, 8), k, k)
    with pytest.raises(ValueError, match="share their batch size"):
        mfkernels.attention_jvp(q, rand(2, 2, 5, 8), q, q, rand(2, 2, 5, 8), q)
    with pytest.raises(ValueError, match=r"bias must broadcast to \(batch, heads, seq_q, seq_k\)"):
        mfkernels.attention_jvp(*[q] * 6, bias=rand(5, 4))
    with pytest.raises(ValueError, match="bias requires grad"):
        mfkernels.attention_jvp(*[q] * 6, bias=rand(5, 5, requires_grad=True))
    with pytest.raises(TypeError, match="bias must be a floating-point tensor"):
        mfkernels.attention_jvp(*[q] * 6, bias=torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="sequence length of at least 1"):
        mfkernels.attention_jvp(*[rand(1, 2, 0, 8)] * 6)
    with pytest.raises(ValueError, match="head_dim of at least 1"):
        mfkernels.attention_jvp(*[rand(1, 2, 5, 0)] * 6)
    with pytest.raises(TypeError, match="scale must be a number or None, got 'a'"):
        mfkernels.attention_jvp(*[q] * 6, scale="a")


def test_modulation_shape_error():
    x = rand(2, 5, 8)
    with pytest.raises(ValueError, match=r"shift must have shape \(batch, dim\)"):
        mfkernels.layernorm_modulate_jvp(x, x, rand(2, 5, 8), rand(2, 8), rand(2, 5, 8), rand(2, 8))


def test_non_tensor_and_integer_inputs():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mfkernels.silu_jvp([1.0], rand(1))
    with pytest.raises(TypeError, match="floating-point"):
        mfkernels.silu_jvp(torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.long))


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_attention_scale_must_be_finite(scale, backend):
    """A non-finite scale would make every output NaN, on every backend."""
    with pytest.raises(ValueError, match="scale must be finite"):
        mfkernels.attention_jvp(*[rand(1, 2, 5, 8)] * 6, scale=scale, backend=backend)


def test_attention_needs_a_head():
    """No key/value heads (or none at all): an error naming the heads, not a division by zero
    in the grouped-heads check."""
    q, k0 = rand(1, 2, 5, 8), rand(1, 0, 5, 8)
    with pytest.raises(ValueError, match="at least one head: got 2 for q, 0 for k, 0 for v"):
        mfkernels.attention_jvp(q, k0, k0, q, k0, k0)
    with pytest.raises(ValueError, match="at least one head: got 0 for q"):
        mfkernels.attention_jvp(*[rand(1, 0, 5, 8)] * 6)


def test_linear_jvp_checks_weight_and_bias():
    x, w = rand(2, 5, 8), rand(4, 8)
    with pytest.raises(TypeError, match="one dtype: x torch.float64, weight torch.float32"):
        mfkernels.linear_jvp(x, x, w.float())
    with pytest.raises(TypeError, match="all tensors must have one dtype: .* bias torch.float32"):
        mfkernels.linear_jvp(x, x, w, rand(4).float())
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(5,\)"):
        mfkernels.linear_jvp(x, x, w, rand(5))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        mfkernels.linear_jvp(x, x, [[1.0] * 8])
    with pytest.raises(TypeError, match="bias must be a torch.Tensor, got list"):
        mfkernels.linear_jvp(x, x, w, [0.0] * 4)
    with pytest.raises(ValueError, match=r"weight must be \(out_features, in_features\)"):
        mfkernels.linear_jvp(x, x, rand(8))
    with pytest.raises(ValueError, match="weight expects 8 features"):
        mfkernels.linear_jvp(rand(2, 5, 7), rand(2, 5, 7), w)


@pytest.mark.parametrize("dim", [-4, 0, 2.5, True, "8"])
def test_timestep_embedding_dim_must_be_a_positive_int(dim):
    t = rand(3)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        mfkernels.timestep_embedding_jvp(t, t, dim)


@pytest.mark.parametrize("max_period", [0, -1.0, math.inf, math.nan, "1e4"])
def test_timestep_embedding_max_period_must_be_positive_and_finite(max_period):
    t = rand(3)
    with pytest.raises(ValueError, match="max_period must be a positive finite number"):
        mfkernels.timestep_embedding_jvp(t, t, 4, max_period)


def test_per_feature_vector_needs_a_feature_dimension():
    x = torch.tensor(2.0, dtype=F64)
    with pytest.raises(ValueError, match="x must have a feature dimension for weight"):
        mfkernels.rms_norm_jvp(x, x, torch.ones(1, dtype=F64))
    with pytest.raises(ValueError, match="x must have a feature dimension for bias"):
        mfkernels.gelu_tanh_jvp(x, x, torch.ones(1, dtype=F64))


def test_linear_jvp_under_autocast_takes_mixed_dtypes():
    """Under autocast F.linear casts bf16 activations and fp32 weights to one dtype itself: the
    one-dtype check stands aside there (the bf16 autocast loss), as plain F.linear."""
    x, w, b = torch.randn(2, 5, 8, dtype=torch.bfloat16), torch.randn(4, 8), torch.randn(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_dot = mfkernels.linear_jvp(x, x, w, b)
        ref = F.linear(x, w, b)
    assert y.dtype == y_dot.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(y, ref)
