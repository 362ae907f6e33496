"""The public dual ops: argument checks, the ``mfkernels::<name>`` custom ops (``torch.library``)
with their fake implementations and autograd formulas, and the functions users call.

Each op body hands its arguments to :func:`dispatch.call`, which runs them on one backend
(``mfkernels/backends``); the only maths here is the plain-torch primal
:func:`layernorm_modulate`. Formulas: docs/design.md section 2. Every
backward is the primal one; tangent outputs take no gradient (the MeanFlow target is
stop-gradient).
"""

import math

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import (
    check_attention_bias,
    check_eps,
    check_feature_vector,
    check_modulation,
    check_pair,
    check_same_device,
    check_same_dtype,
    check_tensor,
)
from .dual_op import DualOp, mark_tangent_outputs
from .layouts import attention_output

# ------------------------------------------------------- LayerNorm + adaLN modulate
#
# ``m = a (1 + scale) + shift`` with ``a = (x - mean) / s``; ``x`` is ``(batch, tokens, dim)``,
# ``shift``, ``scale`` and their tangents ``(batch, dim)``. The backward gives
# ``(dx, dshift, dscale)``, the sums over tokens in the accumulation dtype: shift and scale may
# differ in dtype, and each is cast to its own in the autograd formula.


def _layernorm_modulate_jvp(
    x: Tensor,
    x_dot: Tensor,
    shift: Tensor,
    scale: Tensor,
    shift_dot: Tensor,
    scale_dot: Tensor,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    m, m_dot = dispatch.call(
        "layernorm_modulate_jvp", backend, x, x_dot, shift, scale, shift_dot, scale_dot, eps
    )
    return m.contiguous(), m_dot.contiguous()


def _layernorm_modulate_jvp_fake(x, x_dot, shift, scale, shift_dot, scale_dot, eps, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _layernorm_modulate_backward(
    grad_m: Tensor, x: Tensor, scale: Tensor, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    dx, dshift, dscale = dispatch.call(
        "layernorm_modulate_backward", backend, grad_m.contiguous(), x, scale, eps
    )
    acc = reference.compute_dtype(x.dtype)
    return dx.to(x.dtype).contiguous(), dshift.to(acc), dscale.to(acc)


def _layernorm_modulate_backward_fake(grad_m, x, scale, eps, backend):
    acc = reference.compute_dtype(x.dtype)
    return x.new_empty(x.shape), x.new_empty(scale.shape, dtype=acc), x.new_empty(scale.shape, dtype=acc)


def _layernorm_modulate_setup_context(ctx, inputs, output):
    x, _, shift, scale, _, _, eps, backend = inputs
    ctx.save_for_backward(x, scale)
    ctx.eps, ctx.backend, ctx.shift_dtype = eps, backend, shift.dtype
    mark_tangent_outputs(ctx, output[1])


def _layernorm_modulate_grad(ctx, grad_m, _grad_m_dot):
    x, scale = ctx.saved_tensors
    dx, dshift, dscale = _layernorm_modulate_backward_op(grad_m, x, scale, ctx.eps, ctx.backend)
    return dx, None, dshift.to(ctx.shift_dtype), dscale.to(scale.dtype), None, None, None, None


_layernorm_modulate_jvp_op = DualOp(
    "layernorm_modulate_jvp",
    _layernorm_modulate_jvp,
    _layernorm_modulate_jvp_fake,
    _layernorm_modulate_setup_context,
    _layernorm_modulate_grad,
)
_layernorm_modulate_backward_op = DualOp(
    "layernorm_modulate_backward", _layernorm_modulate_backward, _layernorm_modulate_backward_fake
)


def layernorm_modulate_jvp(
    x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6, backend=None
) -> tuple[Tensor, Tensor]:
    """Value and tangent of ``LayerNorm(x) (1 + scale) + shift``; returns ``(m, m_dot)``."""
    check_pair("x", x, x_dot)
    check_pair("shift", shift, shift_dot)
    check_pair("scale", scale, scale_dot)
    check_modulation("shift", shift, x)
    check_modulation("scale", scale, x)
    check_same_device(x=x, shift=shift, scale=scale)
    check_eps(eps)
    return _layernorm_modulate_jvp_op(
        x, x_dot, shift, scale, shift_dot, scale_dot, float(eps), dispatch.check_backend(backend)
    )


def layernorm_modulate(x, shift, scale, eps=1e-6):
    """The primal alone, in plain torch (differentiable, and transparent to ``torch.func``), on
    the shapes :func:`layernorm_modulate_jvp` takes: ``(dim,)`` vectors would broadcast over
    tokens instead of features."""
    for name, t in (("x", x), ("shift", shift), ("scale", scale)):
        check_tensor(name, t)
    check_modulation("shift", shift, x)
    check_modulation("scale", scale, x)
    check_same_device(x=x, shift=shift, scale=scale)
    check_eps(eps)
    normed = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * (1 + scale[:, None]) + shift[:, None]


# ------------------------------------------------------------------- gated residual
#
# ``y = x + g f``; ``x``, ``f`` and their tangents ``(batch, tokens, dim)``, the adaLN gate
# ``(batch, dim)``. Each input may have its own dtype (autocast); outputs take x's.


def _gated_residual_jvp(
    x: Tensor, x_dot: Tensor, gate: Tensor, gate_dot: Tensor, f: Tensor, f_dot: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gated_residual_jvp", backend, x, x_dot, gate, gate_dot, f, f_dot)
    return y.contiguous(), y_dot.contiguous()


def _gated_residual_fake(x, x_dot, gate, gate_dot, f, f_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


# (dgate, df) in the dtypes of gate and f. The primal dx is grad_y itself, so it stays out of
# the op: a custom op may not return an alias of its input, and a copy would be a wasted pass.
def _gated_residual_backward(grad_y: Tensor, gate: Tensor, f: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    _, dgate, df = dispatch.call("gated_residual_backward", backend, grad_y, gate, f)
    return dgate.to(gate.dtype), df.to(f.dtype).contiguous()


def _gated_residual_backward_fake(grad_y, gate, f, backend):
    return gate.new_empty(gate.shape), f.new_empty(f.shape)


def _gated_residual_setup_context(ctx, inputs, output):
    x, _, gate, _, f, _, backend = inputs
    ctx.save_for_backward(gate, f)
    ctx.x_dtype, ctx.backend = x.dtype, backend
    mark_tangent_outputs(ctx, output[1])


def _gated_residual_grad(ctx, grad_y, _grad_y_dot):
    gate, f = ctx.saved_tensors
    dgate, df = _gated_residual_backward_op(grad_y, gate, f, ctx.backend)
    return grad_y.to(ctx.x_dtype), None, dgate, None, df, None, None


_gated_residual_jvp_op = DualOp(
    "gated_residual_jvp",
    _gated_residual_jvp,
    _gated_residual_fake,
    _gated_residual_setup_context,
    _gated_residual_grad,
)
_gated_residual_backward_op = DualOp(
    "gated_residual_backward", _gated_residual_backward, _gated_residual_backward_fake
)


def gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot, backend=None) -> tuple[Tensor, Tensor]:
    """``(x + gate f, x_dot + gate_dot f + gate f_dot)`` with ``gate`` per sample."""
    check_pair("x", x, x_dot)
    check_pair("gate", gate, gate_dot)
    check_pair("f", f, f_dot)
    if f.shape != x.shape:
        raise ValueError(f"f must have the shape of x {tuple(x.shape)}, got {tuple(f.shape)}")
    check_modulation("gate", gate, x)
    check_same_device(x=x, gate=gate, f=f)
    return _gated_residual_jvp_op(x, x_dot, gate, gate_dot, f, f_dot, dispatch.check_backend(backend))


# -------------------------------------------------------------------------- RMSNorm
#
# ``y = x / rms * g`` over the last dim of any shape, for the optional qk-norm; the weight
# ``g`` is optional and ``(dim,)``.


def _rms_norm_jvp(
    x: Tensor, x_dot: Tensor, weight: Tensor | None, eps: float, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("rms_norm_jvp", backend, x, x_dot, weight, eps)
    return y.contiguous(), y_dot.contiguous()


def _rms_norm_fake(x, x_dot, weight, eps, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _rms_norm_setup_context(ctx, inputs, output):
    x, _, weight, eps, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps
    mark_tangent_outputs(ctx, output[1])


def _rms_norm_grad(ctx, grad_y, _grad_y_dot):
    x, weight = ctx.saved_tensors
    dx, dweight = reference.rms_norm_backward(grad_y, x, weight, ctx.eps)
    return dx.to(x.dtype), None, None if weight is None else dweight.to(weight.dtype), None, None


_rms_norm_jvp_op = DualOp(
    "rms_norm_jvp", _rms_norm_jvp, _rms_norm_fake, _rms_norm_setup_context, _rms_norm_grad
)


def rms_norm_jvp(x, x_dot, weight=None, eps=1e-6, backend=None) -> tuple[Tensor, Tensor]:
    check_pair("x", x, x_dot)
    if weight is not None:
        check_feature_vector("weight", weight, x)
    check_eps(eps)
    return _rms_norm_jvp_op(x, x_dot, weight, float(eps), dispatch.check_backend(backend))


# --------------------------------------------------------------------- activations
#
# ``gelu_tanh_jvp`` takes an optional bias added before the activation, so a Linear without
# bias followed by it is the fused bias+GELU of a DiT MLP; ``silu_jvp`` serves the adaLN and
# time-embedding MLPs. SiLU's backward is plain torch; GELU's is an op of its own returning
# ``dx`` and the bias gradient, which backends may compute in one pass over x and dy.


def _gelu_tanh_jvp(x: Tensor, x_dot: Tensor, bias: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gelu_tanh_jvp", backend, x, x_dot, bias)
    return y.contiguous(), y_dot.contiguous()


def _gelu_tanh_fake(x, x_dot, bias, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


# (dx, dbias): dbias in the accumulation dtype, so that an fp32 bias (autocast) gets the sum of
# the unrounded dx where the backend can; an empty tensor without a bias (ops return tensors).
def _gelu_tanh_backward(
    grad_y: Tensor, x: Tensor, bias: Tensor | None, backend: str
) -> tuple[Tensor, Tensor]:
    dx, dbias = dispatch.call("gelu_tanh_backward", backend, grad_y, x, bias)
    if dbias is None:
        dbias = x.new_empty(0, dtype=reference.compute_dtype(x.dtype))
    return dx.to(x.dtype).contiguous(), dbias.to(reference.compute_dtype(x.dtype))


def _gelu_tanh_backward_fake(grad_y, x, bias, backend):
    dbias_size = 0 if bias is None else bias.shape[0]
    return x.new_empty(x.shape), x.new_empty(dbias_size, dtype=reference.compute_dtype(x.dtype))


def _gelu_tanh_setup_context(ctx, inputs, output):
    x, _, bias, backend = inputs
    ctx.save_for_backward(x, bias)
    ctx.backend = backend
    mark_tangent_outputs(ctx, output[1])


def _gelu_tanh_grad(ctx, grad_y, _grad_y_dot):
    x, bias = ctx.saved_tensors
    dx, dbias = _gelu_tanh_backward_op(grad_y, x, bias, ctx.backend)
    return dx, None, None if bias is None else dbias.to(bias.dtype), None


_gelu_tanh_jvp_op = DualOp(
    "gelu_tanh_jvp", _gelu_tanh_jvp, _gelu_tanh_fake, _gelu_tanh_setup_context, _gelu_tanh_grad
)
_gelu_tanh_backward_op = DualOp("gelu_tanh_backward", _gelu_tanh_backward, _gelu_tanh_backward_fake)


def gelu_tanh_jvp(x, x_dot, bias=None, backend=None) -> tuple[Tensor, Tensor]:
    """``(gelu_tanh(x + bias), gelu_tanh'(x + bias) x_dot)``; ``bias`` is ``(x.shape[-1],)``."""
    check_pair("x", x, x_dot)
    if bias is not None:
        check_feature_vector("bias", bias, x)
    return _gelu_tanh_jvp_op(x, x_dot, bias, dispatch.check_backend(backend))


def _silu_jvp(x: Tensor, x_dot: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("silu_jvp", backend, x, x_dot)
    return y.contiguous(), y_dot.contiguous()


def _silu_fake(x, x_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _silu_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    mark_tangent_outputs(ctx, output[1])


def _silu_grad(ctx, grad_y, _grad_y_dot):
    (x,) = ctx.saved_tensors
    return torch.ops.aten.silu_backward(grad_y, x), None, None


_silu_jvp_op = DualOp("silu_jvp", _silu_jvp, _silu_fake, _silu_setup_context, _silu_grad)


def silu_jvp(x, x_dot, backend=None) -> tuple[Tensor, Tensor]:
    """``(x sigmoid(x), silu'(x) x_dot)``."""
    check_pair("x", x, x_dot)
    return _silu_jvp_op(x, x_dot, dispatch.check_backend(backend))


# ------------------------------------------------------------------------ attention
#
# ``(batch, heads, seq, head_dim)`` tensors as in ``F.scaled_dot_product_attention``; outputs
# ``O``, ``O'`` and the row ``LSE``, ``(batch, heads, seq)`` in float32 (float64 for float64
# input). The backward ``dO -> (dQ, dK, dV)`` runs from the saved ``O`` and ``LSE``.


def _heads_inner(t: Tensor) -> Tensor:
    """``t`` in :func:`layouts.attention_output`'s layout (copied only when it is not)."""
    if t.transpose(1, 2).is_contiguous():
        return t
    return attention_output(*t.shape, like=t).copy_(t)


def _attention_jvp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_dot: Tensor,
    k_dot: Tensor,
    v_dot: Tensor,
    scale: float,
    causal: bool,
    backend: str,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    o, o_dot, lse = dispatch.call("attention_jvp", backend, q, k, v, q_dot, k_dot, v_dot, scale, causal, bias)
    return _heads_inner(o), _heads_inner(o_dot), lse.contiguous()


def _attention_jvp_fake(q, k, v, q_dot, k_dot, v_dot, scale, causal, backend, bias=None):
    o_shape = (*q.shape[:-1], v.shape[-1])
    lse = q.new_empty(q.shape[:-1], dtype=reference.compute_dtype(q.dtype))
    return attention_output(*o_shape, like=q), attention_output(*o_shape, like=q), lse


def _attention_backward(
    grad_o: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    scale: float,
    causal: bool,
    backend: str,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    # Any strides: the gradient of a merged-heads view arrives as a view of (batch, seq, dim).
    dq, dk, dv = dispatch.call("attention_backward", backend, grad_o, q, k, v, o, lse, scale, causal, bias)
    return dq.to(q.dtype).contiguous(), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()


def _attention_backward_fake(grad_o, q, k, v, o, lse, scale, causal, backend, bias=None):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attention_setup_context(ctx, inputs, output):
    q, k, v, _, _, _, scale, causal, backend, *bias = inputs  # bias: given or defaulted
    o, o_dot, lse = output
    ctx.save_for_backward(q, k, v, o, lse, bias[0] if bias else None)
    ctx.scale, ctx.causal, ctx.backend, ctx.inputs = scale, causal, backend, len(inputs)
    mark_tangent_outputs(ctx, o_dot, lse)


def _attention_grad(ctx, grad_o, _grad_o_dot, _grad_lse):
    q, k, v, o, lse, bias = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(grad_o, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.backend, bias)
    return dq, dk, dv, *[None] * (ctx.inputs - 3)  # the bias, a mask, takes no gradient


_attention_jvp_op = DualOp(
    "attention_jvp", _attention_jvp, _attention_jvp_fake, _attention_setup_context, _attention_grad
)
_attention_backward_op = DualOp("attention_backward", _attention_backward, _attention_backward_fake)


def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None, backend=None, *, causal=False, bias=None):
    """Returns ``(o, o_dot, lse)`` for ``(batch, heads, seq, head_dim)`` inputs.

    ``scale`` defaults to ``head_dim ** -0.5``. Any sequence length >= 1; keys and values
    may have their own length (``seq_k``), shared by ``k`` and ``v``, and fewer heads
    (grouped-query attention, SDPA's ``enable_gqa``): ``kv_heads`` dividing ``heads``, query
    head ``h`` reading key/value head ``h // (heads // kv_heads)``. ``causal``: query ``i``
    attends to keys ``j <= i`` only, aligned at the top left as SDPA's ``is_causal``.
    ``bias``: SDPA's float ``attn_mask``, broadcastable to ``(batch, heads, seq_q, seq_k)`` and
    added to the scaled scores (``-inf`` masks a key; a row that sees no key gives zeros, as
    math SDPA); it has no tangent and takes no gradient.
    """
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    check_pair("q", q, q_dot)
    check_pair("k", k, k_dot)
    check_pair("v", v, v_dot)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
    if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
        raise ValueError(
            f"q, k, v must share their batch size: got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if 0 in (q.shape[1], k.shape[1], v.shape[1]):
        heads = f"{q.shape[1]} for q, {k.shape[1]} for k, {v.shape[1]} for v"
        raise ValueError(f"q, k and v need at least one head: got {heads}")
    if v.shape[1] != k.shape[1] or q.shape[1] % k.shape[1]:
        raise ValueError(
            "k and v must have q's heads or a divisor of them (grouped-query attention), the same "
            f"for both: got {q.shape[1]} for q, {k.shape[1]} for k, {v.shape[1]} for v"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's head_dim {q.shape[-1]}, got {k.shape[-1]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"v must have k's sequence length {k.shape[2]}, got {v.shape[2]}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError("q and k need a sequence length of at least 1")
    if q.shape[-1] < 1 or v.shape[-1] < 1:
        raise ValueError("q, k and v need a head_dim of at least 1")
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    if bias is not None:
        check_attention_bias(bias, q, k)
        bias = bias.expand(*q.shape[:3], k.shape[2])  # 4-D; broadcast dims at stride 0
    if isinstance(scale, bool):  # float(True) is 1.0: a causal flag passed positionally as scale
        raise TypeError(f"scale must be a number or None, got {scale!r} (causal is a keyword: causal=True)")
    try:
        scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale must be a number or None, got {scale!r}") from None
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    backend = dispatch.check_backend(backend)
    return _attention_jvp_op(q, k, v, q_dot, k_dot, v_dot, scale, causal, backend, bias)
