"""RMSNorm, value and tangent, for the optional qk-norm (docs/design.md section 2).

``y = x / rms * g``, ``y' = (x' - n mean(n x')) / rms * g`` with ``n = x / rms``, over the
last dim of any shape; ``g`` (``weight``) is optional and ``(dim,)``.
"""

import torch
from torch import Tensor

from . import _rows, dispatch, reference
from ._autograd import DualOp, mark_tangent_outputs
from ._checks import check_pair, check_same_device, check_tensor
from ._triton import tl, triton, vector_alignment

# --------------------------------------------------------------------------- triton kernel


@triton.jit
def _rms_norm_jvp_kernel(
    X, XD, W, Y, YD, n_rows, dim, eps,
    HAS_WEIGHT: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """``ROWS`` rows of the contiguous ``(n_rows, dim)`` input; W is ``(dim,)``.

    ``n = x rrms``, ``y = n g``, ``y' = (x' - n mean(n x')) rrms g`` with fp32 ``rrms``.
    ``ALIGN`` divides ``dim`` (``vector_alignment``): a head dim of 72 then loads 16-byte vectors.
    """
    dim = (dim // ALIGN) * ALIGN
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (cols < dim)[None, :]
    offs = rows[:, None] * dim + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    xd = tl.load(XD + offs, mask=mask, other=0.0).to(tl.float32)
    rrms = tl.rsqrt(tl.sum(x * x, axis=1) / dim + eps)
    n = x * rrms[:, None]
    mean_nxd = tl.sum(n * xd, axis=1) / dim
    nd = (xd - n * mean_nxd[:, None]) * rrms[:, None]
    if HAS_WEIGHT:
        g = tl.load(W + cols, mask=cols < dim, other=0.0).to(tl.float32)[None, :]
        n = n * g
        nd = nd * g
    tl.store(Y + offs, n.to(Y.dtype.element_ty), mask=mask)
    tl.store(YD + offs, nd.to(YD.dtype.element_ty), mask=mask)


def rms_norm_jvp_triton(x, x_dot, weight=None, eps=1e-6):
    """Triton :func:`reference.rms_norm_jvp`: ``(y, y_dot)`` in x's dtype, one pass per row."""
    x, x_dot = x.contiguous(), x_dot.contiguous()
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    dim = x.shape[-1] if x.dim() else 1
    n_rows = x.numel() // dim if dim else 0
    if n_rows == 0:
        return y, y_dot
    rows, block_d, num_warps = _rows.row_settings(dim, n_rows)
    has_weight = weight is not None
    _rms_norm_jvp_kernel[(triton.cdiv(n_rows, rows),)](
        x, x_dot, weight.contiguous() if has_weight else x, y, y_dot, n_rows, dim, float(eps),
        HAS_WEIGHT=has_weight, ROWS=rows, BLOCK_D=block_d, ALIGN=vector_alignment(x.element_size(), dim),
        num_warps=num_warps,
    )  # fmt: skip
    return y, y_dot


def _unsupported(x, x_dot, weight=None, eps=1e-6):
    dim = x.shape[-1] if x.dim() else 1
    return _rows.unsupported(("x", x), ("x_dot", x_dot), ("weight", weight), row_dim=dim)


# ------------------------------------------------------------------------ op registration


def _rms_norm_jvp(
    x: Tensor, x_dot: Tensor, weight: Tensor | None, eps: float, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("rms_norm_jvp", backend, x, x_dot, weight, eps)
    return y.contiguous(), y_dot.contiguous()


def _fake(x, x_dot, weight, eps, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, _, weight, eps, _ = inputs
    ctx.save_for_backward(x, weight)
    ctx.eps = eps
    mark_tangent_outputs(ctx, output[1])


def _backward(ctx, grad_y, _grad_y_dot):
    x, weight = ctx.saved_tensors
    dx, dweight = reference.rms_norm_backward(grad_y, x, weight, ctx.eps)
    return dx.to(x.dtype), None, None if weight is None else dweight.to(weight.dtype), None, None


_rms_norm_jvp_op = DualOp("rms_norm_jvp", _rms_norm_jvp, _fake, _setup_context, _backward)
dispatch.register("rms_norm_jvp", "reference", reference.rms_norm_jvp)
dispatch.register("rms_norm_jvp", "triton", rms_norm_jvp_triton, _unsupported)


def rms_norm_jvp(x, x_dot, weight=None, eps=1e-6, backend=None) -> tuple[Tensor, Tensor]:
    check_pair("x", x, x_dot)
    if weight is not None:
        check_tensor("weight", weight)
        if tuple(weight.shape) != (x.shape[-1],):
            raise ValueError(f"weight must have shape ({x.shape[-1]},), got {tuple(weight.shape)}")
        check_same_device(x=x, weight=weight)
    return _rms_norm_jvp_op(x, x_dot, weight, float(eps), dispatch.check_backend(backend))
