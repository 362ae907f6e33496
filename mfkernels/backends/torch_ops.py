"""The ``reference`` backend: the maths of ``mfkernels/reference.py`` through torch's fused
kernels and in-place ops, on any device (on the CPU the dual DiT spends most of its non-GEMM
time in these). Each function has its oracle's signature and results within rounding; the
tests pin each to its oracle. RMSNorm and the gated residual's backward have no faster form
here and run the oracle itself.
"""

import functools

import torch

from .. import reference
from ..reference import GELU_TANH_C, GELU_TANH_K, compute_dtype, sum_rows, upcast
from . import Implementation


def _without_autocast(fn):
    """Run ``fn`` with autocast off: its GEMMs on the upcast inputs stay in float32 (autocast
    would run them in bf16, and refuse to mix their bf16 results with float32 in place)."""

    @functools.wraps(fn)
    def wrapper(q, *args, **kwargs):
        device = q.device.type
        if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return fn(q, *args, **kwargs)
        return fn(q, *args, **kwargs)

    return wrapper


def layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    """:func:`reference.layernorm_modulate_jvp` through torch's fused LayerNorm kernels.

    LayerNorm's Jacobian ``(I - 1 1^T / D - a a^T / D) / s`` is symmetric, so the tangent
    ``a'`` is LayerNorm's own backward applied to ``x'``: one fused pass, not seven.
    """
    xf, xdf, shf, scf, shdf, scdf = upcast(x, x_dot, shift, scale, shift_dot, scale_dot)
    a, mean, rstd = torch.ops.aten.native_layer_norm(xf, xf.shape[-1:], None, None, eps)
    a_dot = _layer_norm_input_grad(xdf, xf, mean, rstd)
    gain = 1 + scf[:, None]
    m = torch.addcmul(shf[:, None], a, gain)
    m_dot = torch.addcmul(shdf[:, None], a, scdf[:, None]).addcmul_(a_dot, gain)
    return m.to(x.dtype), m_dot.to(x.dtype)


def layernorm_modulate_backward(grad_m, x, scale, eps=1e-6):
    """:func:`reference.layernorm_modulate_backward` through torch's fused LayerNorm kernels."""
    xf, scf, gf = upcast(x, scale, grad_m)
    a, mean, rstd = torch.ops.aten.native_layer_norm(xf, xf.shape[-1:], None, None, eps)
    dx = _layer_norm_input_grad(gf * (1 + scf[:, None]), xf, mean, rstd)
    return dx, gf.sum(1), a.mul_(gf).sum(1)


def _layer_norm_input_grad(grad, x, mean, rstd):
    """Input gradient of LayerNorm without affine, torch's fused kernel."""
    mask = [True, False, False]  # neither weight nor bias
    return torch.ops.aten.native_layer_norm_backward(grad, x, x.shape[-1:], mean, rstd, None, None, mask)[0]


def gelu_tanh(x, bias=None):
    """:func:`reference.gelu_tanh` by torch's GELU kernel, in x's dtype."""
    return torch.nn.functional.gelu(x if bias is None else x + bias.to(x.dtype), approximate="tanh")


def gelu_tanh_jvp(x, x_dot, bias=None):
    """:func:`reference.gelu_tanh_jvp` through torch's fused kernels: GELU's backward with the
    tangent as the incoming gradient is exactly ``gelu'(x) x'`` (one pass, not fifteen).
    For float32/64 on the CPU, where torch's tanh is ~6x slower than its sigmoid, the sigmoid
    form of :func:`_gelu_tanh_gate_and_slope` instead (value and tangent 2x faster at DiT-T/4
    sizes, 1.1-1.2x at DiT-S/2, where its extra passes over larger tensors cost more; 16-bit
    inputs would pay those passes in float32: 2-3x slower, so they keep torch's kernels)."""
    if x.device.type != "cpu" or compute_dtype(x.dtype) != x.dtype:
        xb = x if bias is None else x + bias.to(x.dtype)
        y = torch.nn.functional.gelu(xb, approximate="tanh")
        return y, torch.ops.aten.gelu_backward(x_dot, xb, approximate="tanh")
    xf, xdf = upcast(x, x_dot)
    pre = xf if bias is None else xf + bias.to(xf.dtype)
    gate, slope = _gelu_tanh_gate_and_slope(pre)
    y = gate.mul_(pre) if bias is None else pre.mul_(gate)  # in a buffer of our own
    return y.to(x.dtype), slope.mul_(xdf).to(x.dtype)


def gelu_tanh_backward(grad_y, x, bias=None):
    """``(dx, dbias)``: ``dx = gelu_tanh'(x + b) dy`` in x's dtype by torch's fused kernel, and
    ``dbias`` its unrounded sum over rows in the accumulation dtype (None without a bias).
    (One pass over x and dy: faster than the sigmoid form below, which pays off only where
    it serves two outputs.)"""
    xf, gf = upcast(x, grad_y)
    if bias is None:
        dx = torch.ops.aten.gelu_backward(gf, xf, approximate="tanh")
    else:  # dx overwrites x + b: one fresh buffer, not two
        pre = xf + bias.to(xf.dtype)
        dx = torch.ops.aten.gelu_backward.grad_input(gf, pre, approximate="tanh", grad_input=pre)
    dbias = None if bias is None else sum_rows(dx)
    return dx.to(x.dtype), dbias


def _gelu_tanh_gate_and_slope(x):
    """``(s, gelu_tanh'(x))`` with ``gelu_tanh(x) = x s``, for float32/64 ``x``.

    ``0.5 (1 + tanh u) = sigmoid(2u)`` with ``u = K (x + C x^3)``, so ``s = sigmoid(2u)`` and
    ``gelu_tanh' = s + s (1 - s) 2K x (1 + 3C x^2)``; torch's ``sigmoid_backward(g, s)`` is
    ``g s (1 - s)`` in one pass.
    """
    x2 = x * x
    gate = x2.mul(2 * GELU_TANH_K * GELU_TANH_C).add_(2 * GELU_TANH_K).mul_(x).sigmoid_()
    du2 = x2.mul_(6 * GELU_TANH_K * GELU_TANH_C).add_(2 * GELU_TANH_K).mul_(x)  # x d(2u)/dx
    return gate, torch.ops.aten.sigmoid_backward.grad_input(du2, gate, grad_input=du2).add_(gate)


def silu_jvp(x, x_dot):
    """:func:`reference.silu_jvp` through torch's fused SiLU backward (see :func:`gelu_tanh_jvp`)."""
    return torch.nn.functional.silu(x), torch.ops.aten.silu_backward(x_dot, x)


def gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot):
    """:func:`reference.gated_residual_jvp` as three fused multiply-adds."""
    xf, xdf, g, gd, ff, fdf = upcast(x, x_dot, gate, gate_dot, f, f_dot)
    y = torch.addcmul(xf, g[:, None], ff)
    y_dot = torch.addcmul(xdf, gd[:, None], ff).addcmul_(g[:, None], fdf)
    return y.to(x.dtype), y_dot.to(x.dtype)


@_without_autocast
def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None, causal=False, bias=None):
    """:func:`reference.attention_jvp` with fewer passes over the ``N x M`` scores (on the CPU the
    dual DiT spends a quarter of its time here).

    Batched GEMMs over ``(batch * heads)`` with ``scale`` folded into ``Q`` and ``Q'``;
    ``S' = Q' K^T + Q K'^T`` and ``P V' + (P * S') V`` each accumulate their second product
    into the first (``baddbmm``); the softmax and ``P * S'`` are done in place, and the row
    LSE comes from the softmax's own max and sum.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    *batch, n, dv = *q.shape[:-1], v.shape[-1]
    k, k_dot, v, v_dot = (reference.repeat_kv(t, q.shape[1]) for t in (k, k_dot, v, v_dot))

    def flat(t):  # one copy of a strided view (the DiT's heads of the qkv projection)
        return t.reshape(-1, *t.shape[-2:])

    qf, kf, vf, qdf, kdf, vdf = (flat(t) for t in upcast(q, k, v, q_dot, k_dot, v_dot))
    qs, kt = qf * scale, kf.transpose(-1, -2)
    p = torch.bmm(qs, kt)
    if bias is not None:
        p = p.add_(bias.to(p.dtype).expand(*batch, *p.shape[-2:]).reshape(p.shape))
    if causal:
        p = p.masked_fill_(~reference.causal_mask(p.shape[-2], p.shape[-1], p.device), float("-inf"))
    row_max = p.amax(-1, keepdim=True)
    if bias is not None:  # a row that sees no key: P = 0 (not NaN) and LSE = -inf, as math SDPA
        row_max = row_max.masked_fill_(row_max == float("-inf"), 0.0)
    p = p.sub_(row_max).exp_()
    row_sum = p.sum(-1, keepdim=True)
    lse = (row_max + row_sum.log()).reshape(*batch, n)
    p = p.div_(row_sum if bias is None else row_sum.masked_fill(row_sum == 0, 1.0))
    ps_dot = torch.bmm(qdf * scale, kt).baddbmm_(qs, kdf.transpose(-1, -2)).mul_(p)
    o = torch.bmm(p, vf)
    o_dot = torch.bmm(p, vdf).baddbmm_(ps_dot, vf).sub_(ps_dot.sum(-1, keepdim=True) * o)
    return o.reshape(*batch, n, dv).to(q.dtype), o_dot.reshape(*batch, n, dv).to(q.dtype), lse


@_without_autocast
def attention_backward(grad_o, q, k, v, o, lse, scale=None, causal=False, bias=None):
    """:func:`reference.attention_backward` with ``scale`` folded into ``Q`` and ``P``, ``dS`` in place.

    On the CPU this is torch's own flash-attention backward, which takes exactly our saved
    ``O`` and natural-log ``LSE`` and never forms the ``N x M`` matrices (1.4-1.8x faster at
    DiT sizes).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    cpu_flash = q.device.type == "cpu" and v.shape[-1] == q.shape[-1] and bias is None
    # Its causal mask is ours (top left) where the lengths are equal; elsewhere it is not said.
    # It takes grouped-query K and V as they are (fewer heads), and sums their gradients.
    if cpu_flash and not (causal and q.shape[2] != k.shape[2]):
        lse = lse.to(compute_dtype(q.dtype))
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_o.to(q.dtype), q, k, v, o.to(q.dtype), lse, 0.0, causal, scale=scale
        )
    kv_heads = k.shape[1]
    k, v = reference.repeat_kv(k, q.shape[1]), reference.repeat_kv(v, q.shape[1])
    qf, kf, vf, of, gf = upcast(q, k, v, o, grad_o)
    p = torch.matmul(qf * scale, kf.transpose(-1, -2))
    if bias is not None:
        p = p.add_(bias.to(p.dtype))
    if causal:
        p = p.masked_fill_(~reference.causal_mask(p.shape[-2], p.shape[-1], p.device), float("-inf"))
    lse = lse.to(qf.dtype)
    if bias is not None:  # rows that see no key (LSE -inf) get P = 0
        lse = lse.masked_fill(lse == float("-inf"), float("inf"))
    p = p.sub_(lse[..., None]).exp_()
    delta = (gf * of).sum(-1, keepdim=True)
    ds = torch.matmul(gf, vf.transpose(-1, -2)).sub_(delta).mul_(p)
    dq = torch.matmul(ds, kf).mul_(scale)
    dk = torch.matmul(ds.transpose(-1, -2), qf).mul_(scale)
    dv = torch.matmul(p.transpose(-1, -2), gf)
    return dq, reference.sum_groups(dk, kv_heads), reference.sum_groups(dv, kv_heads)


OPS = {
    "layernorm_modulate_jvp": Implementation(layernorm_modulate_jvp),
    "layernorm_modulate_backward": Implementation(layernorm_modulate_backward),
    "gelu_tanh": Implementation(gelu_tanh),
    "gelu_tanh_jvp": Implementation(gelu_tanh_jvp),
    "gelu_tanh_backward": Implementation(gelu_tanh_backward),
    "silu_jvp": Implementation(silu_jvp),
    "gated_residual_jvp": Implementation(gated_residual_jvp),
    "gated_residual_backward": Implementation(reference.gated_residual_backward),
    "rms_norm_jvp": Implementation(reference.rms_norm_jvp),
    "attention_jvp": Implementation(attention_jvp),
    "attention_backward": Implementation(attention_backward),
}
