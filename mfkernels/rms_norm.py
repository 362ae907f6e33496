"""RMSNorm, value and tangent, for the optional qk-norm (SPEC.md section 2).

``y = x / rms * g``, ``y' = (x' - n mean(n x')) / rms * g`` with ``n = x / rms``, over the
last dim of any shape; ``g`` (``weight``) is optional and ``(dim,)``.
"""

import torch
from torch import Tensor

from . import dispatch, reference
from ._checks import check_pair, check_same_device, check_tensor


@torch.library.custom_op("mfkernels::rms_norm_jvp", mutates_args=())
def _rms_norm_jvp_op(
    x: Tensor, x_dot: Tensor, weight: Tensor | None, eps: float, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("rms_norm_jvp", backend, x, x_dot, weight, eps)
    return y.contiguous(), y_dot.contiguous()


@_rms_norm_jvp_op.register_fake
def _(x, x_dot, weight, eps, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, _, weight, eps, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_y, _grad_y_dot):
    x, weight = ctx.saved_tensors
    dx, dweight = reference.rms_norm_backward(grad_y, x, weight, ctx.eps)
    return dx.to(x.dtype), None, None if weight is None else dweight.to(weight.dtype), None, None


_rms_norm_jvp_op.register_autograd(_backward, setup_context=_setup_context)
dispatch.register("rms_norm_jvp", "reference", reference.rms_norm_jvp)


def rms_norm_jvp(x, x_dot, weight=None, eps=1e-6, backend=None) -> tuple[Tensor, Tensor]:
    check_pair("x", x, x_dot)
    if weight is not None:
        check_tensor("weight", weight)
        if tuple(weight.shape) != (x.shape[-1],):
            raise ValueError(f"weight must have shape ({x.shape[-1]},), got {tuple(weight.shape)}")
        check_same_device(x=x, weight=weight)
    return _rms_norm_jvp_op(x, x_dot, weight, float(eps), dispatch.check_backend(backend))
