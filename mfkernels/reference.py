"""Plain-torch oracle for every dual (value, tangent) op.

Each function maps primal inputs and their tangents to ``(value, tangent)`` with the
formulas of docs/design.md section 2. They are written for reading, not speed: float64 works,
low-precision inputs are computed in float32 and cast back (as the kernels do), and the
tests check every backward against autograd of the primal formula.

The ``reference`` backend runs ``mfkernels/backends/torch_ops.py`` instead: the same maths
through torch's fused kernels and in-place ops. Tests pin each of those to its twin here.

Shapes used throughout: ``x`` is ``(batch, tokens, dim)``; per-sample modulation
vectors (``shift``, ``scale``, ``gate``) are ``(batch, dim)`` and broadcast over tokens;
attention tensors are ``(batch, heads, seq, head_dim)``.
"""

import math

import torch

GELU_TANH_K = math.sqrt(2.0 / math.pi)
GELU_TANH_C = 0.044715


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 stays float64, everything else runs in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def upcast(*tensors):
    return [t.to(compute_dtype(t.dtype)) for t in tensors]


def sum_rows(t, dtype=None):
    """``t`` summed over every dim but the last: the ``(dim,)`` gradient of a per-feature
    bias or weight, zeros where there are no rows, and empty for ``dim`` 0 (which
    ``reshape(-1, dim)`` cannot take)."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1]).sum(0, dtype=dtype)


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
    xf, shiftf, scalef = upcast(x, shift, scale)
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).square().mean(-1, keepdim=True)
    a = (xf - mean) * torch.rsqrt(var + eps)
    m = a * (1 + scalef[:, None]) + shiftf[:, None]
    return m.to(x.dtype)


def layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    xf, xdf, shf, scf, shdf, scdf = upcast(x, x_dot, shift, scale, shift_dot, scale_dot)
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
    xf, scf, gf = upcast(x, scale, grad_m)
    mean = xf.mean(-1, keepdim=True)
    rstd = torch.rsqrt((xf - mean).square().mean(-1, keepdim=True) + eps)
    a = (xf - mean) * rstd
    da = gf * (1 + scf[:, None])
    dx = (da - da.mean(-1, keepdim=True) - a * (da * a).mean(-1, keepdim=True)) * rstd
    return dx, gf.sum(1), (gf * a).sum(1)


# ------------------------------------------------------------------- activations


def gelu_tanh(x, bias=None):
    """``gelu_tanh(x + b)`` in x's dtype, computed in the accumulation dtype."""
    (xf,) = upcast(x)
    if bias is not None:
        xf = xf + bias.to(xf.dtype)
    return (0.5 * xf * (1 + torch.tanh(GELU_TANH_K * (xf + GELU_TANH_C * xf**3)))).to(x.dtype)


def gelu_tanh_derivative(x):
    th = torch.tanh(GELU_TANH_K * (x + GELU_TANH_C * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * GELU_TANH_K * (1 + 3 * GELU_TANH_C * x**2)


def gelu_tanh_jvp(x, x_dot, bias=None):
    """``y = gelu_tanh(x + b)``, ``y' = gelu_tanh'(x + b) x'``."""
    xf, xdf = upcast(x, x_dot)
    if bias is not None:
        xf = xf + bias.to(xf.dtype)
    return gelu_tanh(xf).to(x.dtype), (gelu_tanh_derivative(xf) * xdf).to(x.dtype)


def gelu_tanh_backward(grad_y, x, bias=None):
    """``(dx, dbias)``: ``dx = gelu_tanh'(x + b) dy`` in x's dtype and ``dbias`` the sum of the
    unrounded ``dx`` over rows, in the accumulation dtype (None without a bias)."""
    xf, gf = upcast(x, grad_y)
    if bias is not None:
        xf = xf + bias.to(xf.dtype)
    dx = gelu_tanh_derivative(xf) * gf
    dbias = None if bias is None else sum_rows(dx)
    return dx.to(x.dtype), dbias


def silu_derivative(x):
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


def silu_jvp(x, x_dot):
    """``y = x sigmoid(x)``, ``y' = sigmoid(x) (1 + x (1 - sigmoid(x))) x'``."""
    xf, xdf = upcast(x, x_dot)
    return (xf * torch.sigmoid(xf)).to(x.dtype), (silu_derivative(xf) * xdf).to(x.dtype)


# -------------------------------------------------------------- gated residual


def gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot):
    """``y = x + g f``, ``y' = x' + g' f + g f'`` with ``g`` per sample, ``(batch, dim)``."""
    xf, xdf, g, gd, ff, fdf = upcast(x, x_dot, gate, gate_dot, f, f_dot)
    y = xf + g[:, None] * ff
    y_dot = xdf + gd[:, None] * ff + g[:, None] * fdf
    return y.to(x.dtype), y_dot.to(x.dtype)


def gated_residual_backward(grad_y, gate, f):
    """``(dx, dgate, df)`` of ``x + g f``."""
    gf, g, ff = upcast(grad_y, gate, f)
    return gf, (gf * ff).sum(1), gf * g[:, None]


# -------------------------------------------------------------------- attention


def causal_mask(n_q: int, n_k: int, device=None) -> torch.Tensor:
    """``(n_q, n_k)`` bool, True where query ``i`` sees key ``j``: ``j <= i``, aligned at the top
    left as in ``F.scaled_dot_product_attention(is_causal=True)`` (every query sees key 0)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()


def _scores(q, k, scale, causal, bias=None):
    s = scale * q @ k.transpose(-1, -2)
    if bias is not None:
        s = s + bias.to(s.dtype)
    if causal:
        s = s.masked_fill(~causal_mask(s.shape[-2], s.shape[-1], s.device), float("-inf"))
    return s


def _probabilities(s, lse):
    """``exp(S - LSE)``; 0 on rows that see no key at all (LSE -inf), as math SDPA gives them."""
    return torch.exp(s - lse.masked_fill(lse == float("-inf"), float("inf"))[..., None])


def repeat_kv(t, heads):
    """Grouped-query attention (SDPA's ``enable_gqa``): key/value heads ``t`` of shape
    ``(batch, kv_heads, seq, d)``, each repeated for the ``heads // kv_heads`` query heads that
    read it, query head ``h`` reading key/value head ``h // (heads // kv_heads)``."""
    return t if heads == t.shape[1] else t.repeat_interleave(heads // t.shape[1], dim=1)


def sum_groups(grad, kv_heads):
    """The gradient through :func:`repeat_kv`: per key/value head, the sum over its query heads."""
    batch, heads, *rest = grad.shape
    if heads == kv_heads:
        return grad
    return grad.reshape(batch, kv_heads, heads // kv_heads, *rest).sum(2)


def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None, causal=False, bias=None):
    """``O = P V`` and ``O' = P V' + (P * S') V - rowsum(P * S') O``, plus the row LSE.

    ``S' = scale (Q' K^T + Q K'^T)``. LSE is the natural-log row log-sum-exp of ``S`` in
    the accumulation dtype; ``O`` and ``O'`` come back in the input dtype. ``causal``: key
    ``j`` is masked out of query ``i``'s softmax where ``j > i`` (:func:`causal_mask`), so
    ``P`` is 0 there and its ``S'`` never counts. K, V and their tangents may have fewer heads
    than Q (:func:`repeat_kv`). ``bias`` (SDPA's float ``attn_mask``, broadcast to
    ``(batch, heads, seq_q, seq_k)``, no tangent) is added to ``S``; ``-inf`` masks a key, and a
    row that sees no key gives ``O = O' = 0`` and ``LSE = -inf``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k, k_dot, v, v_dot = (repeat_kv(t, q.shape[1]) for t in (k, k_dot, v, v_dot))
    qf, kf, vf, qdf, kdf, vdf = upcast(q, k, v, q_dot, k_dot, v_dot)
    s = _scores(qf, kf, scale, causal, bias)
    lse = torch.logsumexp(s, dim=-1)
    p = _probabilities(s, lse)
    # A row that a huge finite bias (Hugging Face's finfo(float32).min) masks whole has scores
    # that round to one value: its LSE loses log(seq_k) to rounding, exp(S - LSE) is 1 per key,
    # and only dividing by the sum gives math SDPA's uniform softmax.
    p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    s_dot = scale * (qdf @ kf.transpose(-1, -2) + qf @ kdf.transpose(-1, -2))
    o = p @ vf
    ps_dot = p * s_dot
    o_dot = p @ vdf + ps_dot @ vf - ps_dot.sum(-1, keepdim=True) * o
    return o.to(q.dtype), o_dot.to(q.dtype), lse


def attention_backward(grad_o, q, k, v, o, lse, scale=None, causal=False, bias=None):
    """Primal gradients ``(dQ, dK, dV)`` from the saved ``O`` and ``LSE`` (FlashAttention-2).

    ``P = exp(S - LSE)`` (0 where ``causal`` or ``bias`` masks a key), ``dV = P^T dO``,
    ``dS = P (dO V^T - rowsum(dO * O))``, ``dQ = scale dS K``, ``dK = scale dS^T Q``; with
    fewer key/value heads (:func:`repeat_kv`) dK and dV sum over each one's query heads.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kv_heads = k.shape[1]
    qf, kf, vf, of, gf = upcast(q, repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1]), o, grad_o)
    p = _probabilities(_scores(qf, kf, scale, causal, bias), lse.to(qf.dtype))
    ds = p * (gf @ vf.transpose(-1, -2) - (gf * of).sum(-1, keepdim=True))
    dk, dv = scale * ds.transpose(-1, -2) @ qf, p.transpose(-1, -2) @ gf
    return scale * ds @ kf, sum_groups(dk, kv_heads), sum_groups(dv, kv_heads)


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
        pad = emb.new_zeros(emb.shape[0], 1)  # for dim 1, emb has no column to copy
        emb, emb_dot = torch.cat([emb, pad], -1), torch.cat([emb_dot, pad], -1)
    return emb, emb_dot


# ------------------------------------------------------------------- RMSNorm


def rms_norm(x, weight=None, eps=1e-6):
    xf = upcast(x)[0]
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


def rms_norm_jvp(x, x_dot, weight=None, eps=1e-6):
    """``y = x / rms * g``, ``y' = (x' - n mean(n x')) / rms * g`` with ``n = x / rms``."""
    xf, xdf = upcast(x, x_dot)
    rrms = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    n = xf * rrms
    n_dot = (xdf - n * (n * xdf).mean(-1, keepdim=True)) * rrms
    if weight is not None:
        g = weight.to(n.dtype)
        n, n_dot = n * g, n_dot * g
    return n.to(x.dtype), n_dot.to(x.dtype)


def rms_norm_backward(grad_y, x, weight=None, eps=1e-6):
    """``(dx, dweight)`` of ``x / rms * g``; ``dweight`` sums over all leading dims."""
    xf, gf = upcast(x, grad_y)
    rrms = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    n = xf * rrms
    dn = gf if weight is None else gf * weight.to(gf.dtype)
    dx = (dn - n * (dn * n).mean(-1, keepdim=True)) * rrms
    dweight = None if weight is None else sum_rows(gf * n)
    return dx, dweight
