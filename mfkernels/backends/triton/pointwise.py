"""Triton pointwise activations, value and tangent: ``y = f(x)``, ``y' = f'(x) x'``
(docs/design.md section 2).

``gelu_tanh_jvp`` takes an optional bias added before the activation, so a Linear without
bias followed by it is the fused bias+GELU of a DiT MLP. ``silu_jvp`` serves the adaLN and
time-embedding MLPs. Value and tangent in one elementwise pass (fp32 math, any of
fp32/bf16/fp16 in and out); GELU's backward, ``dx`` and the bias gradient, in one pass over x
and dy.
"""

import torch

from ...reference import GELU_TANH_C, GELU_TANH_K
from . import launch
from .triton_compat import device_guard, tl, triton, wide_mul


@triton.jit
def _gelu_tanh_and_slope(x, K: tl.constexpr, C: tl.constexpr):
    """``(gelu_tanh(x), gelu_tanh'(x))`` in fp32.

    ``0.5 (1 + tanh(u)) = sigmoid(2u)`` with ``u = K (x + C x^3)``, so
    ``y = x s`` and ``y' = s + 2 x s (1 - s) K (1 + 3 C x^2)`` with ``s = sigmoid(2u)``:
    no tanh intrinsic needed (its home in triton.language moves between versions).
    """
    x2 = x * x
    # Clamped where sigmoid is 0 or 1 to fp32 precision anyway: no exp overflow.
    two_u = tl.minimum(tl.maximum(2.0 * K * x * (1.0 + C * x2), -80.0), 80.0)
    s = tl.sigmoid(two_u)
    # 1 - s as sigmoid(-2u): no cancellation in the tails, where x (1 - s) still matters.
    return x * s, s + 2.0 * K * x * s * tl.sigmoid(-two_u) * (1.0 + 3.0 * C * x2)


@triton.jit
def _gelu_tanh_jvp_kernel(
    X, XD, BIAS, Y, YD, n, dim,
    K: tl.constexpr, C: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``y = gelu_tanh(x + b)``, ``y' = gelu_tanh'(x + b) x'`` over ``n`` contiguous elements;
    BIAS is ``(dim,)``, broadcast over rows of ``dim``."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    xd = tl.load(XD + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(BIAS + offs % dim, mask=mask, other=0.0).to(tl.float32)
    y, slope = _gelu_tanh_and_slope(x, K, C)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(YD + offs, (slope * xd).to(YD.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_tanh_backward_kernel(
    X, DY, BIAS, DX, DBIAS_PARTS, n_rows, dim,
    K: tl.constexpr, C: tl.constexpr, HAS_BIAS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """``dx = gelu_tanh'(x + b) dy`` over ``(n_rows, dim)``, written in DX's dtype. With a bias,
    program ``(i, j)`` also sums its ``CHUNK`` rows of the unrounded fp32 ``dx`` into
    ``DBIAS_PARTS[i, columns j]``: the bias gradient without a full-size fp32 ``dx``."""
    # int64 from the program ids on: a flat (n,) input has dim = n, its column ids pass
    # 2**31 - 1 past 2**31 elements, and row ids pass it when dim is a few elements.
    cols = wide_mul(tl.program_id(1), BLOCK_D) + tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    dbias = tl.zeros((BLOCK_D,), tl.float32)
    first_row = wide_mul(tl.program_id(0), CHUNK)
    for start in range(0, CHUNK, ROWS):
        rows = first_row + start + tl.arange(0, ROWS)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        offs = rows[:, None] * dim + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            x += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        _, slope = _gelu_tanh_and_slope(x, K, C)
        dx = slope * dy
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_BIAS:
            dbias += tl.sum(dx, axis=0)  # masked lanes loaded dy = 0: they add nothing
    if HAS_BIAS:
        tl.store(DBIAS_PARTS + wide_mul(tl.program_id(0), dim) + cols, dbias, mask=col_ok)


@triton.jit
def _silu_jvp_kernel(X, XD, Y, YD, n, BLOCK: tl.constexpr):
    """``y = x s``, ``y' = s (1 + x (1 - s)) x'`` with ``s = sigmoid(x)``, ``n`` elements."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    xd = tl.load(XD + offs, mask=mask, other=0.0).to(tl.float32)
    xc = tl.minimum(tl.maximum(x, -80.0), 80.0)  # sigmoid saturates in fp32: no exp overflow
    s = tl.sigmoid(xc)
    tl.store(Y + offs, (x * s).to(Y.dtype.element_ty), mask=mask)
    tl.store(YD + offs, (s * (1.0 + x * tl.sigmoid(-xc)) * xd).to(YD.dtype.element_ty), mask=mask)


def _pointwise_operands(x, x_dot):
    """``(x, x_dot, y, y_dot)``: the inputs contiguous (the kernels walk flat offsets) and
    empty outputs like them."""
    x, x_dot = x.contiguous(), x_dot.contiguous()
    return x, x_dot, torch.empty_like(x), torch.empty_like(x)


def gelu_tanh_jvp_triton(x, x_dot, bias=None):
    """Triton :func:`reference.gelu_tanh_jvp`: ``(y, y_dot)`` in x's dtype, one pass."""
    x, x_dot, y, y_dot = _pointwise_operands(x, x_dot)
    n = x.numel()
    if n == 0:
        return y, y_dot
    block = launch.pointwise_block(n)
    has_bias = bias is not None
    with device_guard(x):
        _gelu_tanh_jvp_kernel[(triton.cdiv(n, block),)](
            x, x_dot, bias.contiguous() if has_bias else x, y, y_dot, n, x.shape[-1] if x.dim() else 1,
            K=GELU_TANH_K, C=GELU_TANH_C, HAS_BIAS=has_bias, BLOCK=block, num_warps=4,
        )  # fmt: skip
    return y, y_dot


def gelu_tanh_backward_triton(grad_y, x, bias=None):
    """Triton :func:`reference.gelu_tanh_backward`: ``(dx, dbias)`` in one pass over x and dy,
    ``dbias`` summed from the unrounded ``dx`` (None without a bias)."""
    x, grad_y = x.contiguous(), grad_y.contiguous()
    dx = torch.empty_like(x)
    dim = x.shape[-1] if x.dim() else 1
    if x.numel() == 0:
        return dx, None if bias is None else torch.zeros(dim, dtype=torch.float32, device=x.device)
    n_rows = x.numel() // dim
    rows, block_d, chunk = launch.chunk_settings(dim, n_rows)
    grid = (triton.cdiv(n_rows, chunk), triton.cdiv(dim, block_d))
    has_bias = bias is not None
    parts = torch.empty((grid[0], dim), dtype=torch.float32, device=x.device) if has_bias else dx
    with device_guard(x):
        _gelu_tanh_backward_kernel[grid](
            x, grad_y, bias.contiguous() if has_bias else x, dx, parts, n_rows, dim,
            K=GELU_TANH_K, C=GELU_TANH_C, HAS_BIAS=has_bias, ROWS=rows, BLOCK_D=block_d, CHUNK=chunk,
            num_warps=4,
        )  # fmt: skip
    return dx, parts.sum(0) if has_bias else None


def silu_jvp_triton(x, x_dot):
    """Triton :func:`reference.silu_jvp`: ``(y, y_dot)`` in x's dtype, one pass."""
    x, x_dot, y, y_dot = _pointwise_operands(x, x_dot)
    n = x.numel()
    if n == 0:
        return y, y_dot
    block = launch.pointwise_block(n)
    with device_guard(x):
        _silu_jvp_kernel[(triton.cdiv(n, block),)](x, x_dot, y, y_dot, n, BLOCK=block, num_warps=4)
    return y, y_dot


def gelu_tanh_jvp_unsupported(x, x_dot, bias=None):
    return launch.unsupported(("x", x), ("x_dot", x_dot), ("bias", bias))


def gelu_tanh_backward_unsupported(grad_y, x, bias=None):
    return launch.unsupported(("grad_y", grad_y), ("x", x), ("bias", bias))


def silu_jvp_unsupported(x, x_dot):
    return launch.unsupported(("x", x), ("x_dot", x_dot))
