"""Value-only ops for a model's plain forward (no tangent).

``gelu_tanh(x, bias)`` is ``F.gelu(x + bias, approximate="tanh")``. On the CPU, in plain eager
mode, it runs the extension's kernel: bias and GELU in one pass, 3-4x ATen's tanh GELU there
(ATen's tanh is slower than its sigmoid and erf), and a one-pass backward that also sums the
bias gradient. Wherever torch itself must see the computation -- forward-mode AD
(``torch.func.jvp``, ``forward_ad``), the other ``torch.func`` transforms, dispatch modes
(fake tensors, ``FlopCounterMode``), tensor subclasses, ``torch.compile`` (which fuses the two
itself), ``torch.jit.trace`` (and the ONNX export built on it) -- it is that plain torch
expression, so a model using it stays differentiable, traceable and compilable by every means
torch has. A second derivative (``create_graph=True``) takes plain torch too.
"""

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from . import dispatch, reference
from ._checks import check_feature_vector, check_tensor
from .backends import torch_ops
from .dual_op import plain_eager


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, backend):
        ctx.save_for_backward(x, bias)
        ctx.backend = backend
        return dispatch.call("gelu_tanh", backend, x, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, bias = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward autograd can differentiate
            dx, dbias = reference.gelu_tanh_backward(grad_y, x, bias)
        else:
            dx, dbias = dispatch.call("gelu_tanh_backward", ctx.backend, grad_y, x, bias)
        return dx, None if bias is None else dbias.to(bias.dtype), None


def gelu_tanh(x: Tensor, bias: Tensor | None = None, backend: str | None = None) -> Tensor:
    """``gelu_tanh(x + bias)`` in x's dtype; ``bias`` is ``(x.shape[-1],)`` (module docstring)."""
    check_tensor("x", x)
    if bias is not None:
        check_feature_vector("bias", bias, x)
    backend = dispatch.check_backend(backend)
    args = (x,) if bias is None else (x, bias)
    if not plain_eager(args) or fwAD._current_level >= 0 or torch.jit.is_tracing():
        return torch_ops.gelu_tanh(x, bias)
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        return _GeluTanh.apply(x, bias, backend)
    return dispatch.call("gelu_tanh", backend, x, bias)
