"""``mfkernels/reference.py`` called directly, against float64 ``torch.func.jvp`` and autograd of
plain torch formulas (docs/design.md section 3). The kernels are tested against this oracle,
so a bug it shared with a kernel would pass every kernel test: only checks like these, which
never go through the oracle's own formulas, catch it. Odd ``eps`` values make a formula that
ignores the argument show."""

import math

import pytest
import torch
import torch.nn.functional as F
from numerics import input_scale, rel_err

import mfkernels
from mfkernels import reference

F64 = torch.float64
TOL = 1e-10


def rand(*shape, dtype=F64):
    return torch.randn(*shape, dtype=dtype)


def assert_rel(name, actual, expected, tol=TOL, floor=1.0):
    assert actual.shape == expected.shape, f"{name}: {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = rel_err(actual, expected, floor)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def grads_of(fn, inputs, weights):
    """Autograd of ``sum(fn(*inputs) * weights)`` with respect to every input."""
    inputs = [t.detach().requires_grad_() for t in inputs]
    return torch.autograd.grad((fn(*inputs) * weights).sum(), inputs, allow_unused=True)


# ------------------------------------------------------------------- LayerNorm


def plain_ln_modulate(x, shift, scale, eps):
    return F.layer_norm(x, x.shape[-1:], eps=eps) * (1 + scale[:, None]) + shift[:, None]


@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_layernorm_modulate_value_tangent_and_backward(eps):
    x, x_dot = rand(2, 7, 24), rand(2, 7, 24)
    sh, sc, sh_dot, sc_dot = (rand(2, 24) for _ in range(4))
    plain = lambda x, sh, sc: plain_ln_modulate(x, sh, sc, eps)
    ref, ref_dot = torch.func.jvp(plain, (x, sh, sc), (x_dot, sh_dot, sc_dot))
    m, m_dot = reference.layernorm_modulate_jvp(x, x_dot, sh, sc, sh_dot, sc_dot, eps)
    assert_rel("m", m, ref)
    assert_rel("m_dot", m_dot, ref_dot)
    assert_rel("primal-only m", reference.layernorm_modulate(x, sh, sc, eps), ref)
    grad_m = rand(*ref.shape)
    dx, dshift, dscale = reference.layernorm_modulate_backward(grad_m, x, sc, eps)
    for name, got, want in zip(
        ("dx", "dshift", "dscale"), (dx, dshift, dscale), grads_of(plain, [x, sh, sc], grad_m)
    ):
        assert_rel(name, got, want)


# ----------------------------------------------------------------- activations


@pytest.mark.parametrize("with_bias", [False, True])
def test_gelu_tanh_value_tangent_and_backward(with_bias):
    x, x_dot, grad_y, bias = rand(3, 33) * 3, rand(3, 33), rand(3, 33), rand(33)
    b = bias if with_bias else None
    plain = lambda x, bias: F.gelu(x + bias if with_bias else x, approximate="tanh")
    ref, ref_dot = torch.func.jvp(plain, (x, bias), (x_dot, torch.zeros_like(bias)))
    y, y_dot = reference.gelu_tanh_jvp(x, x_dot, b)
    assert_rel("y", y, ref)
    assert_rel("y_dot", y_dot, ref_dot)
    dx, dbias = reference.gelu_tanh_backward(grad_y, x, b)
    ref_dx, ref_dbias = grads_of(plain, [x, bias], grad_y)
    assert_rel("dx", dx, ref_dx)
    if with_bias:
        assert_rel("dbias", dbias, ref_dbias)
    else:
        assert dbias is None


def test_gelu_tanh_bias_gradient_sums_the_unrounded_dx():
    """For bf16 x the bias gradient is the float32 sum of ``dx`` before it is rounded to bf16
    (the kernels' contract): summing the rounded ``dx`` is off by bf16's rounding, 2^-9 per row."""
    x, grad_y = (rand(256, 16).bfloat16() for _ in range(2))
    bias = rand(16).bfloat16()
    _, dbias = reference.gelu_tanh_backward(grad_y, x, bias)
    assert dbias.dtype == torch.float32
    plain = lambda x, bias: F.gelu(x + bias, approximate="tanh")
    want = grads_of(plain, [x.double(), bias.double()], grad_y.double())[1]
    assert_rel("dbias", dbias, want, 1e-5, input_scale(want))


def test_silu_value_tangent():
    x, x_dot = rand(3, 40) * 4, rand(3, 40)
    ref, ref_dot = torch.func.jvp(F.silu, (x,), (x_dot,))
    y, y_dot = reference.silu_jvp(x, x_dot)
    assert_rel("y", y, ref)
    assert_rel("y_dot", y_dot, ref_dot)
    assert_rel("silu'", reference.silu_derivative(x), torch.func.jvp(F.silu, (x,), (torch.ones_like(x),))[1])


# ------------------------------------------------------------- gated residual


def test_gated_residual_value_tangent_and_backward():
    x, x_dot, f, f_dot, grad_y = (rand(2, 7, 12) for _ in range(5))
    g, g_dot = rand(2, 12), rand(2, 12)
    plain = lambda x, g, f: x + g[:, None] * f
    ref, ref_dot = torch.func.jvp(plain, (x, g, f), (x_dot, g_dot, f_dot))
    y, y_dot = reference.gated_residual_jvp(x, x_dot, g, g_dot, f, f_dot)
    assert_rel("y", y, ref)
    assert_rel("y_dot", y_dot, ref_dot)
    got = reference.gated_residual_backward(grad_y, g, f)
    for name, a, b in zip(("dx", "dgate", "df"), got, grads_of(plain, [x, g, f], grad_y)):
        assert_rel(name, a, b)


# ------------------------------------------------------------------- attention


def plain_attention(q, k, v, scale, causal, bias, kv_heads):
    """Softmax attention by its definition: keys repeated per group (query head ``h`` reads key
    head ``h // group``), a query that sees no key gives 0."""
    group = q.shape[1] // kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    s = scale * q @ k.transpose(-1, -2) + bias
    if causal:
        n, m = s.shape[-2:]
        s = s.masked_fill(torch.arange(m)[None, :] > torch.arange(n)[:, None], -math.inf)
    sees_a_key = (s > -math.inf).any(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(~sees_a_key, 0.0), dim=-1) * sees_a_key
    return p @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "heads, kv_heads, n, m, d, dv", [(2, 2, 7, 9, 8, 8), (4, 2, 9, 6, 8, 5), (3, 1, 5, 5, 4, 4)]
)
def test_attention_value_tangent_and_backward(heads, kv_heads, n, m, d, dv, causal):
    """Grouped heads, causal masks, a bias with -inf entries and one query row it masks whole,
    against the definition: O, O' and the LSE, then dQ, dK, dV from the saved O and LSE."""
    q, q_dot = rand(2, heads, n, d), rand(2, heads, n, d)
    k, k_dot = rand(2, kv_heads, m, d), rand(2, kv_heads, m, d)
    v, v_dot = rand(2, kv_heads, m, dv), rand(2, kv_heads, m, dv)
    bias = rand(2, 1, n, m).masked_fill(torch.rand(2, 1, n, m) < 0.2, -math.inf)
    bias[:, :, 1] = -math.inf  # query 1 sees no key at all
    plain = lambda q, k, v: plain_attention(q, k, v, 0.3, causal, bias, kv_heads)
    ref, ref_dot = torch.func.jvp(plain, (q, k, v), (q_dot, k_dot, v_dot))
    o, o_dot, lse = reference.attention_jvp(q, k, v, q_dot, k_dot, v_dot, 0.3, causal, bias)
    assert_rel("O", o, ref)
    assert_rel("O'", o_dot, ref_dot)
    assert torch.equal(o[:, :, 1], torch.zeros_like(o[:, :, 1]))
    s = 0.3 * q @ k.repeat_interleave(heads // kv_heads, 1).transpose(-1, -2) + bias
    if causal:
        s = s + torch.full((n, m), -math.inf, dtype=F64).triu(1)
    ref_lse = torch.logsumexp(s, dim=-1)
    assert torch.equal(lse.isneginf(), ref_lse.isneginf())
    assert_rel("LSE", lse.nan_to_num(neginf=0.0), ref_lse.nan_to_num(neginf=0.0))
    grad_o = rand(*o.shape)
    got = reference.attention_backward(grad_o, q, k, v, o, lse, 0.3, causal, bias)
    for name, a, b in zip(("dQ", "dK", "dV"), got, grads_of(plain, [q, k, v], grad_o)):
        assert torch.isfinite(a).all(), name
        assert_rel(name, a, b)


def test_causal_mask_and_groups_by_definition():
    n, m = 4, 6
    want = torch.tensor([[j <= i for j in range(m)] for i in range(n)])
    assert torch.equal(reference.causal_mask(n, m), want)
    t = rand(2, 3, 5, 4)
    repeated = reference.repeat_kv(t, 6)
    for h in range(6):
        assert torch.equal(repeated[:, h], t[:, h // 2])
    grad = rand(2, 6, 5, 4)
    summed = reference.sum_groups(grad, 3)
    for kv in range(3):
        assert_rel(f"group {kv}", summed[:, kv], grad[:, 2 * kv] + grad[:, 2 * kv + 1])


# --------------------------------------------------------------------- RMSNorm


@pytest.mark.parametrize("eps", [1e-6, 0.1])
def test_rms_norm_value_tangent_and_backward(eps):
    x, x_dot, w, grad_y = rand(2, 5, 16), rand(2, 5, 16), rand(16), rand(2, 5, 16)
    plain = lambda x, w: F.rms_norm(x, x.shape[-1:], w, eps)
    ref, ref_dot = torch.func.jvp(plain, (x, w), (x_dot, torch.zeros_like(w)))
    y, y_dot = reference.rms_norm_jvp(x, x_dot, w, eps)
    assert_rel("y", y, ref)
    assert_rel("y_dot", y_dot, ref_dot)
    assert_rel("primal-only y", reference.rms_norm(x, w, eps), ref)
    dx, dweight = reference.rms_norm_backward(grad_y, x, w, eps)
    ref_dx, ref_dw = grads_of(plain, [x, w], grad_y)
    assert_rel("dx", dx, ref_dx)
    assert_rel("dweight", dweight, ref_dw)


# -------------------------------------------------------------- time embedding


def dit_embedding(t, dim, max_period):
    """DiT's ``timestep_embedding``, written out: ``[cos(t w), sin(t w)]``, a zero column for odd dims."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype) / half)
    args = t[:, None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


@pytest.mark.parametrize("dim, max_period", [(33, 10000.0), (16, 100.0)])
def test_timestep_embedding_value_and_tangent(dim, max_period):
    t, t_dot = torch.rand(5, dtype=F64) * 3, rand(5)
    ref, ref_dot = torch.func.jvp(lambda t: dit_embedding(t, dim, max_period), (t,), (t_dot,))
    for name, (emb, emb_dot) in {
        "oracle": reference.timestep_embedding_jvp(t, t_dot, dim, max_period),
        "public": mfkernels.timestep_embedding_jvp(t, t_dot, dim, max_period),
    }.items():
        assert_rel(f"{name} emb", emb, ref)
        assert_rel(f"{name} emb_dot", emb_dot, ref_dot, floor=input_scale(t_dot))


def test_timestep_embedding_of_a_bf16_time_is_computed_in_float32():
    """Times of hundreds (the sampler's t * 1000): in bf16, w t would round to whole units."""
    t = (torch.rand(8) * 1000).bfloat16()
    emb = mfkernels.timestep_embedding(t, 64)
    assert emb.dtype == torch.float32
    assert_rel("emb", emb, dit_embedding(t.double(), 64, 10000.0), 1e-4)


# ------------------------------------------------------------ low precision


def test_16_bit_inputs_are_computed_in_float32():
    """bf16 in, bf16 out: the float64 result on the same (bf16) inputs, rounded once."""
    assert reference.compute_dtype(torch.bfloat16) == torch.float32
    assert reference.compute_dtype(torch.float16) == torch.float32
    assert reference.compute_dtype(F64) == F64
    x, x_dot = (rand(4, 64).bfloat16() for _ in range(2))
    y, y_dot = reference.gelu_tanh_jvp(x, x_dot)
    ref, ref_dot = reference.gelu_tanh_jvp(x.double(), x_dot.double())
    assert y.dtype == torch.bfloat16 and y_dot.dtype == torch.bfloat16
    assert torch.equal(y, ref.bfloat16()) or rel_err(y, ref) <= 2**-8
    assert rel_err(y_dot, ref_dot) <= 2**-8
