"""Gated residual, value and tangent: ``y = x + g f``, ``y' = x' + g' f + g f'``.

``x``, ``f`` and their tangents are ``(batch, tokens, dim)``; the adaLN gate ``g`` and its
tangent are ``(batch, dim)``, broadcast over tokens (docs/design.md section 2). The Triton backend
does both outputs in one pass, reading the gate in place at its row stride; each input may
have its own dtype (autocast: fp32 residual stream, bf16 branch and gate), outputs take x's.
"""

import torch
from torch import Tensor

from . import _rows, dispatch, reference
from ._autograd import DualOp, mark_tangent_outputs
from ._checks import check_modulation, check_pair, check_same_device
from ._triton import tl, triton

# --------------------------------------------------------------------------- triton kernel


@triton.jit
def _gated_residual_jvp_kernel(
    X, XD, G, GD, F, FD, Y, YD,
    stride_g, stride_gd, n_rows, tokens, dim,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """``y = x + g f``, ``y' = x' + g' f + g f'`` on a ``(ROWS, BLOCK_D)`` tile of the flattened
    ``(batch * tokens, dim)`` tensors (grid ``(row tiles, column tiles)``).

    X, XD, F, FD, Y, YD: contiguous ``(batch, tokens, dim)``, each in its own dtype;
    G, GD: ``(batch, dim)`` at any row stride (chunks of the adaLN projection).
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (cols < dim)[None, :]
    b = (rows // tokens)[:, None]
    offs = rows[:, None] * dim + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    xd = tl.load(XD + offs, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(F + offs, mask=mask, other=0.0).to(tl.float32)
    fd = tl.load(FD + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + b * stride_g + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    gd = tl.load(GD + b * stride_gd + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, (x + g * f).to(Y.dtype.element_ty), mask=mask)
    tl.store(YD + offs, (xd + gd * f + g * fd).to(YD.dtype.element_ty), mask=mask)


def gated_residual_jvp_triton(x, x_dot, gate, gate_dot, f, f_dot):
    """Triton :func:`reference.gated_residual_jvp`: ``(y, y_dot)`` in x's dtype, one pass."""
    batch, tokens, dim = x.shape
    x, x_dot, f, f_dot = (t.contiguous() for t in (x, x_dot, f, f_dot))
    gate, gate_dot = (t if t.stride(-1) == 1 else t.contiguous() for t in (gate, gate_dot))
    y, y_dot = torch.empty_like(x), torch.empty_like(x)
    n_rows = batch * tokens
    if n_rows == 0 or dim == 0:
        return y, y_dot
    rows, block_d, num_warps = _rows.col_settings(dim, n_rows)
    grid = (triton.cdiv(n_rows, rows), triton.cdiv(dim, block_d))
    _gated_residual_jvp_kernel[grid](
        x, x_dot, gate, gate_dot, f, f_dot, y, y_dot,
        gate.stride(0), gate_dot.stride(0), n_rows, tokens, dim,
        ROWS=rows, BLOCK_D=block_d, num_warps=num_warps,
    )  # fmt: skip
    return y, y_dot


def _unsupported(x, x_dot, gate, gate_dot, f, f_dot):
    named = dict(x=x, x_dot=x_dot, gate=gate, gate_dot=gate_dot, f=f, f_dot=f_dot)
    return _rows.unsupported(*named.items())


# ------------------------------------------------------------------------ op registration


def _gated_residual_jvp(
    x: Tensor, x_dot: Tensor, gate: Tensor, gate_dot: Tensor, f: Tensor, f_dot: Tensor, backend: str
) -> tuple[Tensor, Tensor]:
    y, y_dot = dispatch.call("gated_residual_jvp", backend, x, x_dot, gate, gate_dot, f, f_dot)
    return y.contiguous(), y_dot.contiguous()


def _fake(x, x_dot, gate, gate_dot, f, f_dot, backend):
    return x.new_empty(x.shape), x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    x, _, gate, _, f, _, _ = inputs
    ctx.save_for_backward(gate, f)
    ctx.x_dtype = x.dtype
    mark_tangent_outputs(ctx, output[1])


def _backward(ctx, grad_y, _grad_y_dot):
    gate, f = ctx.saved_tensors
    dx, dgate, df = reference.gated_residual_backward(grad_y, gate, f)
    return dx.to(ctx.x_dtype), None, dgate.to(gate.dtype), None, df.to(f.dtype), None, None


_gated_residual_jvp_op = DualOp("gated_residual_jvp", _gated_residual_jvp, _fake, _setup_context, _backward)
dispatch.register("gated_residual_jvp", "reference", reference.gated_residual_jvp_fast)
dispatch.register("gated_residual_jvp", "triton", gated_residual_jvp_triton, _unsupported)


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
