"""Triton gated residual, value and tangent: ``y = x + g f``, ``y' = x' + g' f + g f'``.

``x``, ``f`` and their tangents are ``(batch, tokens, dim)``; the adaLN gate ``g`` and its
tangent are ``(batch, dim)``, broadcast over tokens (docs/design.md section 2). The Triton backend
does both outputs in one pass, reading the gate in place at its row stride; each input may
have its own dtype (autocast: fp32 residual stream, bf16 branch and gate), outputs take x's.

The backward is the primal one: ``dx = dy``, ``df = dy g`` and ``dg = sum_tokens dy f``.
One pass over ``dy`` and ``f`` writes ``df`` and reduces ``dg`` in two deterministic
stages (per-chunk fp32 partial sums, then a sum over chunks), as the LayerNorm-modulate
backward does; ``dx`` is ``dy`` itself.
"""

import torch

from . import launch
from .triton_compat import device_guard, tl, triton, wide_mul


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
    # int64: columns are tiled, so dim has no row limit, and its ids pass 2**31 - 1 with it.
    cols = wide_mul(tl.program_id(1), BLOCK_D) + tl.arange(0, BLOCK_D)
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
    with device_guard(x):
        _gated_residual_jvp_kernel[grid](
            x, x_dot, gate, gate_dot, f, f_dot, y, y_dot,
            gate.stride(0), gate_dot.stride(0), n_rows, tokens, dim,
            ROWS=rows, BLOCK_D=block_d, num_warps=num_warps,
        )  # fmt: skip
    return y, y_dot


@triton.jit
def _gated_residual_bwd_kernel(
    DY, G, F, DF, DG_PART,
    stride_dyb, stride_dyt, stride_g, stride_fb, stride_ft,
    tokens, dim, tokens_per_chunk,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Primal backward over one chunk of tokens of one sample (grid ``(batch, n_chunks)``).

    DY, F: ``(batch, tokens, dim)`` with unit column stride, each in its own dtype; G:
    ``(batch, dim)`` at any row stride; DF: contiguous in F's dtype, ``dy g``. The chunk's
    sum of ``dy f`` over its tokens goes to DG_PART ``(batch, n_chunks, dim)`` fp32, summed
    afterwards (deterministic, no atomics).
    """
    b = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    col = cols[None, :]
    g = tl.load(G + b * stride_g + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    dg = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_start = chunk * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, tokens)
    for t0 in range(0, tokens_per_chunk, ROWS):
        t = t_start + t0 + tl.arange(0, ROWS)
        mask = (t < t_end)[:, None] & col_ok[None, :]
        dy = tl.load(DY + (b * stride_dyb + t * stride_dyt)[:, None] + col, mask=mask, other=0.0)
        f = tl.load(F + (b * stride_fb + t * stride_ft)[:, None] + col, mask=mask, other=0.0)
        dy = dy.to(tl.float32)
        tl.store(DF + ((b * tokens + t) * dim)[:, None] + col, (dy * g).to(DF.dtype.element_ty), mask=mask)
        dg += tl.sum(dy * f.to(tl.float32), axis=0)
    tl.store(DG_PART + (b * tl.num_programs(1) + chunk) * dim + cols, dg, mask=col_ok)


# Tuned per (tokens, dim) on a GPU as the LayerNorm backward is (launch.autotune_rows); looked
# up at call time (benchmarks/triton_static.py swaps it).
_gated_residual_bwd = launch.autotune_rows(_gated_residual_bwd_kernel, "tokens", tile=4096)


def gated_residual_backward_triton(grad_y, gate, f, tokens_per_chunk=None):
    """Triton :func:`reference.gated_residual_backward`: ``dx`` is ``grad_y`` itself, ``dgate``
    fp32, ``df`` in f's dtype. ``tokens_per_chunk`` (tokens one program reduces) is for tests."""
    batch, tokens, dim = f.shape
    dx = grad_y
    grad_y, gate, f = launch.unit_cols(grad_y), launch.unit_cols(gate), launch.unit_cols(f)
    df = torch.empty(f.shape, dtype=f.dtype, device=f.device)
    if batch * tokens == 0 or dim == 0:
        return dx, torch.zeros(batch, dim, dtype=torch.float32, device=f.device), df
    if tokens_per_chunk is None:
        tokens_per_chunk = launch.tokens_per_chunk(tokens, batch, dim, f.device)
    n_chunks = triton.cdiv(tokens, tokens_per_chunk)
    dgate = torch.empty(batch, n_chunks, dim, dtype=torch.float32, device=f.device)
    with device_guard(f):
        _gated_residual_bwd[(batch, n_chunks)](
            grad_y, gate, f, df, dgate,
            grad_y.stride(0), grad_y.stride(1), gate.stride(0), f.stride(0), f.stride(1),
            tokens, dim, tokens_per_chunk, BLOCK_D=launch.next_power_of_2(dim),
        )  # fmt: skip
    return dx, dgate[:, 0] if n_chunks == 1 else dgate.sum(1), df


def unsupported(x, x_dot, gate, gate_dot, f, f_dot):
    named = dict(x=x, x_dot=x_dot, gate=gate, gate_dot=gate_dot, f=f, f_dot=f_dot)
    return launch.unsupported(*named.items())


def backward_unsupported(grad_y, gate, f):
    named = (("grad_y", grad_y), ("gate", gate), ("f", f))
    return launch.unsupported(*named, row_dim=f.shape[-1])
