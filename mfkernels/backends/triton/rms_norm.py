"""Triton RMSNorm, value and tangent, for the optional qk-norm (docs/design.md section 2).

``y = x / rms * g``, ``y' = (x' - n mean(n x')) / rms * g`` with ``n = x / rms``, over the
last dim of any shape; ``g`` (``weight``) is optional and ``(dim,)``.
"""

import torch

from . import launch
from .triton_compat import device_guard, tl, triton, vector_alignment


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
    rows, block_d, num_warps = launch.row_settings(dim, n_rows)
    has_weight = weight is not None
    with device_guard(x):
        _rms_norm_jvp_kernel[(triton.cdiv(n_rows, rows),)](
            x, x_dot, weight.contiguous() if has_weight else x, y, y_dot, n_rows, dim, float(eps),
            HAS_WEIGHT=has_weight, ROWS=rows, BLOCK_D=block_d, ALIGN=vector_alignment(x.element_size(), dim),
            num_warps=num_warps,
        )  # fmt: skip
    return y, y_dot


def unsupported(x, x_dot, weight=None, eps=1e-6):
    dim = x.shape[-1] if x.dim() else 1
    return launch.unsupported(("x", x), ("x_dot", x_dot), ("weight", weight), row_dim=dim)
