"""Gated residual, value and tangent: ``y = x + g f``, ``y' = x' + g' f + g f'``.

``x``, ``f`` and their tangents are ``(batch, tokens, dim)``; the adaLN gate ``g`` and its
tangent are ``(batch, dim)``, broadcast over tokens (SPEC.md section 2).
"""

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import check_modulation, check_pair, check_same_device


@torch.library.custom_op("mfkernels::gated_residual_jvp", mutates_args=())
def _gated_residual_jvp_op(
    x: Tensor, x_dot: Tensor, gate: Tensor, gate_dot: Tensor, f: Tensor, f_dot: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gated_residual_jvp", backend, x, x_dot, gate, gate_dot, f, f_dot)
    return y.contiguous(), y_dot.contiguous()


@_gated_residual_jvp_op.register_fake
def _(x, x_dot, gate, gate_dot, f, f_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, _, gate, _, f, _, _ = inputs
    ctx.save_for_backward(gate, f)
    ctx.x_dtype = x.dtype
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_y, _grad_y_dot):
    gate, f = ctx.saved_tensors
    dx, dgate, df = reference.gated_residual_backward(grad_y, gate, f)
    return dx.to(ctx.x_dtype), None, dgate.to(gate.dtype), None, df.to(f.dtype), None, None


_gated_residual_jvp_op.register_autograd(_backward, setup_context=_setup_context)
dispatch.register("gated_residual_jvp", "reference", reference.gated_residual_jvp)


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
