"""Pointwise activations, value and tangent: ``y = f(x)``, ``y' = f'(x) x'`` (docs/design.md section 2).

``gelu_tanh_jvp`` takes an optional bias added before the activation, so a Linear without
bias followed by it is the fused bias+GELU of a DiT MLP. ``silu_jvp`` serves the adaLN and
time-embedding MLPs. The Triton backend computes value and tangent in one elementwise pass
(fp32 math, any of fp32/bf16/fp16 in and out). Backwards are the primal ones: SiLU's in plain
torch, GELU's an op of its own returning ``dx`` and the bias gradient, which the Triton and
csrc CPU backends compute in one pass over x and dy (the csrc CUDA backend runs its tangent
pass with the gradient as the tangent and sums it).
"""

import torch
from torch import Tensor

from . import _rows, dispatch, reference
from ._autograd import DualOp, mark_tangent_outputs
from ._checks import check_pair, check_same_device, check_tensor
from ._triton import tl, triton

# --------------------------------------------------------------------------- triton kernels

_GELU_K = reference.GELU_TANH_K
_GELU_C = reference.GELU_TANH_C


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
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    dbias = tl.zeros((BLOCK_D,), tl.float32)
    first_row = tl.program_id(0) * CHUNK
    for start in range(0, CHUNK, ROWS):
        rows = first_row + start + tl.arange(0, ROWS)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        offs = rows.to(tl.int64)[:, None] * dim + cols[None, :]
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
        tl.store(DBIAS_PARTS + tl.program_id(0) * dim + cols, dbias, mask=col_ok)


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


def gelu_tanh_jvp_triton(x, x_dot, bias=None):
    """Triton :func:`reference.gelu_tanh_jvp`: ``(y, y_dot)`` in x's dtype, one pass."""
    x, x_dot = x.contiguous(), x_dot.contiguous()
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y, y_dot
    block = _rows.pointwise_block(n)
    has_bias = bias is not None
    _gelu_tanh_jvp_kernel[(triton.cdiv(n, block),)](
        x, x_dot, bias.contiguous() if has_bias else x, y, y_dot, n, x.shape[-1] if x.dim() else 1,
        K=_GELU_K, C=_GELU_C, HAS_BIAS=has_bias, BLOCK=block, num_warps=4,
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
    rows, block_d, chunk = _rows.chunk_settings(dim, n_rows)
    grid = (triton.cdiv(n_rows, chunk), triton.cdiv(dim, block_d))
    has_bias = bias is not None
    parts = torch.empty((grid[0], dim), dtype=torch.float32, device=x.device) if has_bias else dx
    _gelu_tanh_backward_kernel[grid](
        x, grad_y, bias.contiguous() if has_bias else x, dx, parts, n_rows, dim,
        K=_GELU_K, C=_GELU_C, HAS_BIAS=has_bias, ROWS=rows, BLOCK_D=block_d, CHUNK=chunk, num_warps=4,
    )  # fmt: skip
    return dx, parts.sum(0) if has_bias else None


def silu_jvp_triton(x, x_dot):
    """Triton :func:`reference.silu_jvp`: ``(y, y_dot)`` in x's dtype, one pass."""
    x, x_dot = x.contiguous(), x_dot.contiguous()
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y, y_dot
    block = _rows.pointwise_block(n)
    _silu_jvp_kernel[(triton.cdiv(n, block),)](x, x_dot, y, y_dot, n, BLOCK=block, num_warps=4)
    return y, y_dot


def _gelu_unsupported(x, x_dot, bias=None):
    return _rows.unsupported(("x", x), ("x_dot", x_dot), ("bias", bias))


def _gelu_backward_unsupported(grad_y, x, bias=None):
    return _rows.unsupported(("grad_y", grad_y), ("x", x), ("bias", bias))


def _silu_unsupported(x, x_dot):
    return _rows.unsupported(("x", x), ("x_dot", x_dot))


# ------------------------------------------------------------------------ op registration


def _gelu_tanh_jvp(x: Tensor, x_dot: Tensor, bias: Tensor | None, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gelu_tanh_jvp", backend, x, x_dot, bias)
    return y.contiguous(), y_dot.contiguous()


def _gelu_fake(x, x_dot, bias, backend):
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


def _gelu_backward_fake(grad_y, x, bias, backend):
    dbias_size = 0 if bias is None else bias.shape[0]
    return x.new_empty(x.shape), x.new_empty(dbias_size, dtype=reference.compute_dtype(x.dtype))


def _gelu_setup_context(ctx, inputs, output):
    x, _, bias, backend = inputs
    ctx.save_for_backward(x, bias)
    ctx.backend = backend
    mark_tangent_outputs(ctx, output[1])


def _gelu_backward(ctx, grad_y, _grad_y_dot):
    x, bias = ctx.saved_tensors
    dx, dbias = _gelu_tanh_backward_op(grad_y, x, bias, ctx.backend)
    return dx, None, None if bias is None else dbias.to(bias.dtype), None


_gelu_tanh_jvp_op = DualOp("gelu_tanh_jvp", _gelu_tanh_jvp, _gelu_fake, _gelu_setup_context, _gelu_backward)
_gelu_tanh_backward_op = DualOp("gelu_tanh_backward", _gelu_tanh_backward, _gelu_backward_fake)
dispatch.register("gelu_tanh_jvp", "reference", reference.gelu_tanh_jvp_fast)
dispatch.register("gelu_tanh_jvp", "triton", gelu_tanh_jvp_triton, _gelu_unsupported)
dispatch.register("gelu_tanh_backward", "reference", reference.gelu_tanh_backward)
dispatch.register("gelu_tanh_backward", "triton", gelu_tanh_backward_triton, _gelu_backward_unsupported)


def gelu_tanh_jvp(x, x_dot, bias=None, backend=None) -> tuple[Tensor, Tensor]:
    """``(gelu_tanh(x + bias), gelu_tanh'(x + bias) x_dot)``; ``bias`` is ``(x.shape[-1],)``."""
    check_pair("x", x, x_dot)
    if bias is not None:
        check_tensor("bias", bias)
        if tuple(bias.shape) != (x.shape[-1],):
            raise ValueError(f"bias must have shape ({x.shape[-1]},), got {tuple(bias.shape)}")
        check_same_device(x=x, bias=bias)
    return _gelu_tanh_jvp_op(x, x_dot, bias, dispatch.check_backend(backend))


def _silu_jvp(x: Tensor, x_dot: Tensor, backend: str) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("silu_jvp", backend, x, x_dot)
    return y.contiguous(), y_dot.contiguous()


def _silu_fake(x, x_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _silu_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    mark_tangent_outputs(ctx, output[1])


def _silu_backward(ctx, grad_y, _grad_y_dot):
    (x,) = ctx.saved_tensors
    return torch.ops.aten.silu_backward(grad_y, x), None, None


_silu_jvp_op = DualOp("silu_jvp", _silu_jvp, _silu_fake, _silu_setup_context, _silu_backward)
dispatch.register("silu_jvp", "reference", reference.silu_jvp_fast)
dispatch.register("silu_jvp", "triton", silu_jvp_triton, _silu_unsupported)


def silu_jvp(x, x_dot, backend=None) -> tuple[Tensor, Tensor]:
    """``(x sigmoid(x), silu'(x) x_dot)``."""
    check_pair("x", x, x_dot)
    return _silu_jvp_op(x, x_dot, dispatch.check_backend(backend))
