"""Triton gated residual, value and tangent: ``y = x + g f``, ``y' = x' + g' f + g f'``.

``x``, ``f`` and their tangents are ``(batch, tokens, dim)``; the adaLN gate ``g`` and its
tangent are ``(batch, dim)``, broadcast over tokens (docs/design.md section 2). The Triton backend
does both outputs in one pass, reading the gate in place at its row stride; each input may
have its own dtype (autocast: fp32 residual stream, bf16 branch and gate), outputs take x's.
"""

import torch

from . import launch
from .triton_compat import tl, triton


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
    rows, block_d, num_warps = launch.col_settings(dim, n_rows)
    grid = (triton.cdiv(n_rows, rows), triton.cdiv(dim, block_d))
    _gated_residual_jvp_kernel[grid](
        x, x_dot, gate, gate_dot, f, f_dot, y, y_dot,
        gate.stride(0), gate_dot.stride(0), n_rows, tokens, dim,
        ROWS=rows, BLOCK_D=block_d, num_warps=num_warps,
    )  # fmt: skip
    return y, y_dot


def unsupported(x, x_dot, gate, gate_dot, f, f_dot):
    named = dict(x=x, x_dot=x_dot, gate=gate, gate_dot=gate_dot, f=f, f_dot=f_dot)
    return launch.unsupported(*named.items())
