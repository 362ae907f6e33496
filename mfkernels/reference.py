"""Plain-torch oracle for every dual (value, tangent) op.

Each function maps primal inputs and their tangents to ``(value, tangent)`` with the
formulas of docs/design.md section 2. They are written for reading, not speed: float64 works,
low-precision inputs are computed in float32 and cast back (as the kernels do), and the
tests check every backward against autograd of the primal formula.

The reference backend runs the ``*_fast`` variants where there are some: the same maths
through torch's fused kernels and in-place ops (on the CPU the dual DiT spends most of
its non-GEMM time in these). Tests pin each to its readable twin.

Shapes used throughout: ``x`` is ``(batch, tokens, dim)``; per-sample modulation
vectors (``shift``, ``scale``, ``gate``) are ``(batch, dim)`` and broadcast over tokens;
attention tensors are ``(batch, heads, seq, head_dim)``.
"""

import functools
import math

import torch

GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _up(*tensors):
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


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


# --------------------------------------------------------------------------- linear


def linear_jvp(x, x_dot, weight, bias=None):
    """``y = x W^T + b``, ``y' = x' W^T``: the bias on the primal half only.

    Two GEMMs sharing ``W`` rather than one over the stacked rows ``[x; x']`` (the same
    FLOPs, no copy into a stacked buffer), because a ``torch.library`` op may not return two
    views of one buffer.
    """
    y = torch.nn.functional.linear(x, weight, bias)
    y_dot = torch.nn.functional.linear(x_dot, weight)
    return y, y_dot


# ------------------------------------------------------- LayerNorm + adaLN modulate


def layernorm_modulate(x, shift, scale, eps=1e-6):
    """LayerNorm without affine over the last dim, then ``a (1 + scale) + shift``."""
    xf, shiftf, scalef = _up(x, shift, scale)
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).square().mean(-1, keepdim=True)
    a = (xf - mean) * torch.rsqrt(var + eps)
    m = a * (1 + scalef[:, None]) + shiftf[:, None]
    return m.to(x.dtype)


def layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    xf, xdf, shf, scf, shdf, scdf = _up(x, x_dot, shift, scale, shift_dot, scale_dot)
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).square().mean(-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    a = (xf - mean) * rstd
    a_dot = (xdf - xdf.mean(-1, keepdim=True) - a * (a * xdf).mean(-1, keepdim=True)) * rstd
    m = a * (1 + scf[:, None]) + shf[:, None]
    m_dot = a_dot * (1 + scf[:, None]) + a * scdf[:, None] + shdf[:, None]
    return m.to(x.dtype), m_dot.to(x.dtype)


def layernorm_modulate_backward(grad_m, x, scale, eps=1e-6):
    """Primal gradients ``(dx, dshift, dscale)`` of :func:`layernorm_modulate`.

    With ``da = dm (1 + scale)``: ``dx = (da - mean(da) - a mean(da a)) / s``,
    ``dshift = sum_tokens dm``, ``dscale = sum_tokens dm a``.
    """
    xf, scf, gf = _up(x, scale, grad_m)
    mean = xf.mean(-1, keepdim=True)
    rstd = torch.rsqrt((xf - mean).square().mean(-1, keepdim=True) + eps)
    a = (xf - mean) * rstd
    da = gf * (1 + scf[:, None])
    dx = (da - da.mean(-1, keepdim=True) - a * (da * a).mean(-1, keepdim=True)) * rstd
    return dx, gf.sum(1), (gf * a).sum(1)


def layernorm_modulate_jvp_fast(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    """:func:`layernorm_modulate_jvp` through torch's fused LayerNorm kernels; the reference
    backend runs this one.

    LayerNorm's Jacobian ``(I - 1 1^T / D - a a^T / D) / s`` is symmetric, so the tangent
    ``a'`` is LayerNorm's own backward applied to ``x'``: one fused pass, not seven.
    """
    xf, xdf, shf, scf, shdf, scdf = _up(x, x_dot, shift, scale, shift_dot, scale_dot)
    a, mean, rstd = torch.ops.aten.native_layer_norm(xf, xf.shape[-1:], None, None, eps)
    a_dot = _layer_norm_input_grad(xdf, xf, mean, rstd)
    gain = 1 + scf[:, None]
    m = torch.addcmul(shf[:, None], a, gain)
    m_dot = torch.addcmul(shdf[:, None], a, scdf[:, None]).addcmul_(a_dot, gain)
    return m.to(x.dtype), m_dot.to(x.dtype)


def layernorm_modulate_backward_fast(grad_m, x, scale, eps=1e-6):
    """:func:`layernorm_modulate_backward` through torch's fused LayerNorm kernels."""
    xf, scf, gf = _up(x, scale, grad_m)
    a, mean, rstd = torch.ops.aten.native_layer_norm(xf, xf.shape[-1:], None, None, eps)
    dx = _layer_norm_input_grad(gf * (1 + scf[:, None]), xf, mean, rstd)
    return dx, gf.sum(1), a.mul_(gf).sum(1)


def _layer_norm_input_grad(grad, x, mean, rstd):
    """Input gradient of LayerNorm without affine, torch's fused kernel."""
    mask = [True, False, False]  # neither weight nor bias
    return torch.ops.aten.native_layer_norm_backward(grad, x, x.shape[-1:], mean, rstd, None, None, mask)[0]


# ------------------------------------------------------------------- activations


def gelu_tanh(x):
    inner = GELU_TANH_K * (x + GELU_TANH_C * x**3)
    return 0.5 * x * (1 + torch.tanh(inner))


def gelu_tanh_derivative(x):
    th = torch.tanh(GELU_TANH_K * (x + GELU_TANH_C * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_TANH_K * (1 + 3 * GELU_TANH_C * x**2)


def gelu_tanh_jvp(x, x_dot, bias=None):
    """``y = gelu_tanh(x + b)``, ``y' = gelu_tanh'(x + b) x'``."""
    xf, xdf = _up(x, x_dot)
    if bias is not None:
        xf = xf + bias.to(xf.dtype)
    return gelu_tanh(xf).to(x.dtype), (gelu_tanh_derivative(xf) * xdf).to(x.dtype)


def gelu_tanh_jvp_fast(x, x_dot, bias=None):
    """:func:`gelu_tanh_jvp` through torch's fused kernels: GELU's backward with the
    tangent as the incoming gradient is exactly ``gelu'(x) x'`` (one pass, not fifteen).
    For float32/64 on the CPU, where torch's tanh is ~6x slower than its sigmoid, the sigmoid
    form of :func:`_gelu_tanh_gate_and_slope` instead (value and tangent 2x faster at DiT-T/4
    sizes, 1.1-1.2x at DiT-S/2, where its extra passes over larger tensors cost more; 16-bit
    inputs would pay those passes in float32: 2-3x slower, so they keep torch's kernels)."""
    if x.device.type != "cpu" or compute_dtype(x.dtype) != x.dtype:
        xb = x if bias is None else x + bias.to(x.dtype)
        y = torch.nn.functional.gelu(xb, approximate="tanh")
        return y, torch.ops.aten.gelu_backward(x_dot, xb, approximate="tanh")
    xf, xdf = _up(x, x_dot)
    pre = xf if bias is None else xf + bias.to(xf.dtype)
    gate, slope = _gelu_tanh_gate_and_slope(pre)
    y = gate.mul_(pre) if bias is None else pre.mul_(gate)  # in a buffer of our own
    return y.to(x.dtype), slope.mul_(xdf).to(x.dtype)


def gelu_tanh_backward(grad_y, x, bias=None):
    """``(dx, dbias)``: ``dx = gelu_tanh'(x + b) dy`` in x's dtype by torch's fused kernel, and
    ``dbias`` its unrounded sum over rows in the accumulation dtype (None without a bias).
    (One pass over x and dy: faster than the sigmoid form below, which pays off only where
    it serves two outputs.)"""
    xf, gf = _up(x, grad_y)
    if bias is None:
        dx = torch.ops.aten.gelu_backward(gf, xf, approximate="tanh")
    else:  # dx overwrites x + b: one fresh buffer, not two
        pre = xf + bias.to(xf.dtype)
        dx = torch.ops.aten.gelu_backward.grad_input(gf, pre, approximate="tanh", grad_input=pre)
    dbias = None if bias is None else dx.reshape(-1, dx.shape[-1]).sum(0)
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


def silu_derivative(x):
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


def silu_jvp(x, x_dot):
    """``y = x sigmoid(x)``, ``y' = sigmoid(x) (1 + x (1 - sigmoid(x))) x'``."""
    xf, xdf = _up(x, x_dot)
    return (xf * torch.sigmoid(xf)).to(x.dtype), (silu_derivative(xf) * xdf).to(x.dtype)


def silu_jvp_fast(x, x_dot):
    """:func:`silu_jvp` through torch's fused SiLU backward (see :func:`gelu_tanh_jvp_fast`)."""
    return torch.nn.functional.silu(x), torch.ops.aten.silu_backward(x_dot, x)


# -------------------------------------------------------------- gated residual


def gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot):
    """``y = x + g f``, ``y' = x' + g' f + g f'`` with ``g`` per sample, ``(batch, dim)``."""
    xf, xdf, g, gd, ff, fdf = _up(x, x_dot, gate, gate_dot, f, f_dot)
    y = xf + g[:, None] * ff
    y_dot = xdf + gd[:, None] * ff + g[:, None] * fdf
    return y.to(x.dtype), y_dot.to(x.dtype)


def gated_residual_jvp_fast(x, x_dot, gate, gate_dot, f, f_dot):
    """:func:`gated_residual_jvp` as three fused multiply-adds."""
    xf, xdf, g, gd, ff, fdf = _up(x, x_dot, gate, gate_dot, f, f_dot)
    y = torch.addcmul(xf, g[:, None], ff)
    y_dot = torch.addcmul(xdf, gd[:, None], ff).addcmul_(g[:, None], fdf)
    return y.to(x.dtype), y_dot.to(x.dtype)


def gated_residual_backward(grad_y, gate, f):
    """``(dx, dgate, df)`` of ``x + g f``."""
    gf, g, ff = _up(grad_y, gate, f)
    return gf, (gf * ff).sum(1), gf * g[:, None]


# -------------------------------------------------------------------- attention


def attention(q, k, v, scale=None):
    """Softmax attention computed the textbook way: returns ``(O, LSE)``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf = _up(q, k, v)
    s = scale * qf @ kf.transpose(-1, -2)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.exp(s - lse[..., None]) @ vf
    return o.to(q.dtype), lse


def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None):
    """``O = P V`` and ``O' = P V' + (P * S') V - rowsum(P * S') O``, plus the row LSE.

    ``S' = scale (Q' K^T + Q K'^T)``. LSE is the natural-log row log-sum-exp of ``S`` in
    the accumulation dtype; ``O`` and ``O'`` come back in the input dtype.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf, qdf, kdf, vdf = _up(q, k, v, q_dot, k_dot, v_dot)
    s = scale * qf @ kf.transpose(-1, -2)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    s_dot = scale * (qdf @ kf.transpose(-1, -2) + qf @ kdf.transpose(-1, -2))
    o = p @ vf
    ps_dot = p * s_dot
    o_dot = p @ vdf + ps_dot @ vf - ps_dot.sum(-1, keepdim=True) * o
    return o.to(q.dtype), o_dot.to(q.dtype), lse


def attention_backward(grad_o, q, k, v, o, lse, scale=None):
    """Primal gradients ``(dQ, dK, dV)`` from the saved ``O`` and ``LSE`` (FlashAttention-2).

    ``P = exp(S - LSE)``, ``dV = P^T dO``, ``dS = P (dO V^T - rowsum(dO * O))``,
    ``dQ = scale dS K``, ``dK = scale dS^T Q``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf, of, gf = _up(q, k, v, o, grad_o)
    p = torch.exp(scale * qf @ kf.transpose(-1, -2) - lse.to(qf.dtype)[..., None])
    ds = p * (gf @ vf.transpose(-1, -2) - (gf * of).sum(-1, keepdim=True))
    return scale * ds @ kf, scale * ds.transpose(-1, -2) @ qf, p.transpose(-1, -2) @ gf


@_without_autocast
def attention_jvp_fast(q, k, v, q_dot, k_dot, v_dot, scale=None):
    """:func:`attention_jvp` with fewer passes over the ``N x M`` scores; the reference
    backend runs this one (on the CPU the dual DiT spends a quarter of its time here).

    Batched GEMMs over ``(batch * heads)`` with ``scale`` folded into ``Q`` and ``Q'``;
    ``S' = Q' K^T + Q K'^T`` and ``P V' + (P * S') V`` each accumulate their second product
    into the first (``baddbmm``); the softmax and ``P * S'`` are done in place, and the row
    LSE comes from the softmax's own max and sum.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    *batch, n, dv = *q.shape[:-1], v.shape[-1]

    def flat(t):  # one copy of a strided view (the DiT's heads of the qkv projection)
        return t.reshape(-1, *t.shape[-2:])

    qf, kf, vf, qdf, kdf, vdf = (flat(t) for t in _up(q, k, v, q_dot, k_dot, v_dot))
    qs, kt = qf * scale, kf.transpose(-1, -2)
    p = torch.bmm(qs, kt)
    row_max = p.amax(-1, keepdim=True)
    p = p.sub_(row_max).exp_()
    row_sum = p.sum(-1, keepdim=True)
    p = p.div_(row_sum)
    lse = (row_max + row_sum.log()).reshape(*batch, n)
    ps_dot = torch.bmm(qdf * scale, kt).baddbmm_(qs, kdf.transpose(-1, -2)).mul_(p)
    o = torch.bmm(p, vf)
    o_dot = torch.bmm(p, vdf).baddbmm_(ps_dot, vf).sub_(ps_dot.sum(-1, keepdim=True) * o)
    return o.reshape(*batch, n, dv).to(q.dtype), o_dot.reshape(*batch, n, dv).to(q.dtype), lse


@_without_autocast
def attention_backward_fast(grad_o, q, k, v, o, lse, scale=None):
    """:func:`attention_backward` with ``scale`` folded into ``Q`` and ``P``, ``dS`` in place.

    On the CPU this is torch's own flash-attention backward, which takes exactly our saved
    ``O`` and natural-log ``LSE`` and never forms the ``N x M`` matrices (1.4-1.8x faster at
    DiT sizes).
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.device.type == "cpu" and v.shape[-1] == q.shape[-1]:
        lse = lse.to(compute_dtype(q.dtype))
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_o.to(q.dtype), q, k, v, o.to(q.dtype), lse, 0.0, False, scale=scale
        )
    qf, kf, vf, of, gf = _up(q, k, v, o, grad_o)
    p = torch.matmul(qf * scale, kf.transpose(-1, -2)).sub_(lse.to(qf.dtype)[..., None]).exp_()
    delta = (gf * of).sum(-1, keepdim=True)
    ds = torch.matmul(gf, vf.transpose(-1, -2)).sub_(delta).mul_(p)
    dq = torch.matmul(ds, kf).mul_(scale)
    dk = torch.matmul(ds.transpose(-1, -2), qf).mul_(scale)
    return dq, dk, torch.matmul(p.transpose(-1, -2), gf)


# ---------------------------------------------------------- time embedding


def timestep_frequencies(dim, max_period=10000.0, dtype=torch.float64, device=None):
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=device) / half)


def timestep_embedding_jvp(t, t_dot, dim, max_period=10000.0):
    """DiT's sinusoidal embedding ``[cos(w t), sin(w t)]`` of a ``(batch,)`` time.

    Tangent ``[-w sin(w t), w cos(w t)] t'``. An odd ``dim`` gets a zero last column, as in
    DiT. Computed in float32 (float64 for float64 input), returned as ``(batch, dim)``.
    """
    dtype = compute_dtype(t.dtype)
    freqs = timestep_frequencies(dim, max_period, dtype, t.device)
    args = t.to(dtype)[:, None] * freqs
    td = t_dot.to(dtype)[:, None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    emb_dot = torch.cat([-torch.sin(args) * freqs * td, torch.cos(args) * freqs * td], dim=-1)
    if dim % 2:
        pad = torch.zeros_like(emb[:, :1])
        emb, emb_dot = torch.cat([emb, pad], -1), torch.cat([emb_dot, pad], -1)
    return emb, emb_dot


# ------------------------------------------------------------------- RMSNorm


def rms_norm(x, weight=None, eps=1e-6):
    xf = _up(x)[0]
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


def rms_norm_jvp(x, x_dot, weight=None, eps=1e-6):
    """``y = x / rms * g``, ``y' = (x' - n mean(n x')) / rms * g`` with ``n = x / rms``."""
    xf, xdf = _up(x, x_dot)
    rrms = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    n = xf * rrms
    n_dot = (xdf - n * (n * xdf).mean(-1, keepdim=True)) * rrms
    if weight is not None:
        g = weight.to(n.dtype)
        n, n_dot = n * g, n_dot * g
    return n.to(x.dtype), n_dot.to(x.dtype)


def rms_norm_backward(grad_y, x, weight=None, eps=1e-6):
    """``(dx, dweight)`` of ``x / rms * g``; ``dweight`` sums over all leading dims."""
    xf, gf = _up(x, grad_y)
    rrms = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    n = xf * rrms
    dn = gf if weight is None else gf * weight.to(gf.dtype)
    dx = (dn - n * (dn * n).mean(-1, keepdim=True)) * rrms
    dweight = None if weight is None else (gf * n).reshape(-1, n.shape[-1]).sum(0)
    return dx, dweight
