"""Pointwise activations, value and tangent: ``y = f(x)``, ``y' = f'(x) x'`` (SPEC.md section 2).

``gelu_tanh_jvp`` takes an optional bias added before the activation, so a Linear without
bias followed by it is the fused bias+GELU of a DiT MLP. ``silu_jvp`` serves the adaLN and
time-embedding MLPs. Backwards are the primal ones, written in plain torch so that
``torch.compile`` fuses them into the surrounding graph.
"""

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import check_pair, check_same_device, check_tensor


@torch.library.custom_op("mfkernels::gelu_tanh_jvp", mutates_args=())
def _gelu_tanh_jvp_op(x: Tensor, x_dot: Tensor, bias: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gelu_tanh_jvp", backend, x, x_dot, bias)
    return y.contiguous(), y_dot.contiguous()


@_gelu_tanh_jvp_op.register_fake
def _(x, x_dot, bias, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _gelu_setup_context(ctx, inputs, output):
    x, _, bias, _ = inputs
    ctx.save_for_backward(x, bias)
    ctx.mark_non_differentiable(output[1])


def _gelu_backward(ctx, grad_y, _grad_y_dot):
    x, bias = ctx.saved_tensors
    dx, dbias = reference.gelu_tanh_backward(grad_y, x, bias)
    return dx.to(x.dtype), None, None if bias is None else dbias.to(bias.dtype), None


_gelu_tanh_jvp_op.register_autograd(_gelu_backward, setup_context=_gelu_setup_context)
dispatch.register("gelu_tanh_jvp", "reference", reference.gelu_tanh_jvp_fast)


def gelu_tanh_jvp(x, x_dot, bias=None, backend=None) -> tuple[Tensor, Tensor]:
    """``(gelu_tanh(x + bias), gelu_tanh'(x + bias) x_dot)``; ``bias`` is ``(x.shape[-1],)``."""
    check_pair("x", x, x_dot)
    if bias is not None:
        check_tensor("bias", bias)
        if tuple(bias.shape) != (x.shape[-1],):
            raise ValueError(f"bias must have shape ({x.shape[-1]},), got {tuple(bias.shape)}")
        check_same_device(x=x, bias=bias)
    return _gelu_tanh_jvp_op(x, x_dot, bias, dispatch.check_backend(backend))


@torch.library.custom_op("mfkernels::silu_jvp", mutates_args=())
def _silu_jvp_op(x: Tensor, x_dot: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("silu_jvp", backend, x, x_dot)
    return y.contiguous(), y_dot.contiguous()


@_silu_jvp_op.register_fake
def _(x, x_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _silu_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.mark_non_differentiable(output[1])


def _silu_backward(ctx, grad_y, _grad_y_dot):
    (x,) = ctx.saved_tensors
    return reference.silu_backward(grad_y, x).to(x.dtype), None, None


_silu_jvp_op.register_autograd(_silu_backward, setup_context=_silu_setup_context)
dispatch.register("silu_jvp", "reference", reference.silu_jvp_fast)


def silu_jvp(x, x_dot, backend=None) -> tuple[Tensor, Tensor]:
    """``(x sigmoid(x), silu'(x) x_dot)``."""
    check_pair("x", x, x_dot)
    return _silu_jvp_op(x, x_dot, dispatch.check_backend(backend))
