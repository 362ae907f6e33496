"""LayerNorm (no affine) + adaLN modulate, value and tangent in one op (SPEC.md section 2).

``m = a (1 + scale) + shift`` with ``a = (x - mean) / s``;
``m' = a' (1 + scale) + a scale' + shift'`` with ``a' = (x' - mean(x') - a mean(a x')) / s``.
``x`` is ``(batch, tokens, dim)``; ``shift``, ``scale`` and their tangents are ``(batch, dim)``.
The backward is the primal one: ``(dx, dshift, dscale)``.
"""

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import check_modulation, check_pair, check_same_device


@torch.library.custom_op("mfkernels::layernorm_modulate_jvp", mutates_args=())
def _layernorm_modulate_jvp_op(
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


@_layernorm_modulate_jvp_op.register_fake
def _(x, x_dot, shift, scale, shift_dot, scale_dot, eps, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.custom_op("mfkernels::layernorm_modulate_backward", mutates_args=())
def _layernorm_modulate_backward_op(
    grad_m: Tensor, x: Tensor, scale: Tensor, eps: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    dx, dshift, dscale = dispatch.call(
        "layernorm_modulate_backward", backend, grad_m.contiguous(), x, scale, eps
    )
    return dx.to(x.dtype).contiguous(), dshift.to(scale.dtype), dscale.to(scale.dtype)


@_layernorm_modulate_backward_op.register_fake
def _(grad_m, x, scale, eps, backend):
    return x.new_empty(x.shape), scale.new_empty(scale.shape), scale.new_empty(scale.shape)


def _setup_context(ctx, inputs, output):
    x, _, _, scale, _, _, eps, backend = inputs
    ctx.save_for_backward(x, scale)
    ctx.eps, ctx.backend = eps, backend
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_m, _grad_m_dot):
    x, scale = ctx.saved_tensors
    dx, dshift, dscale = _layernorm_modulate_backward_op(grad_m, x, scale, ctx.eps, ctx.backend)
    return dx, None, dshift, dscale, None, None, None, None


_layernorm_modulate_jvp_op.register_autograd(_backward, setup_context=_setup_context)

dispatch.register("layernorm_modulate_jvp", "reference", reference.layernorm_modulate_jvp)
dispatch.register("layernorm_modulate_backward", "reference", reference.layernorm_modulate_backward)


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
    return _layernorm_modulate_jvp_op(
        x, x_dot, shift, scale, shift_dot, scale_dot, float(eps), dispatch.check_backend(backend)
    )


def layernorm_modulate(x, shift, scale, eps=1e-6):
    """The primal alone, in plain torch (differentiable, and transparent to ``torch.func``)."""
    normed = torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return normed * (1 + scale[:, None]) + shift[:, None]
