"""Triton LayerNorm (no affine) + adaLN modulate, value and tangent in one kernel (docs/design.md section 2).

``m = a (1 + scale) + shift`` with ``a = (x - mean) / s``;
``m' = a' (1 + scale) + a scale' + shift'`` with ``a' = (x' - mean(x') - a mean(a x')) / s``.
``x`` is ``(batch, tokens, dim)``; ``shift``, ``scale`` and their tangents are ``(batch, dim)``.
The backward is the primal one: ``(dx, dshift, dscale)``.

The value and tangent in one kernel, one pass over each row of ``x`` and
``x'`` (fp32 statistics), reading the modulation vectors in place at their row stride (the
DiT passes chunks of one ``(batch, 6 dim)`` projection); the backward recomputes the row
statistics, writes ``dx`` and reduces ``dshift``/``dscale`` over tokens in two
deterministic stages (per-chunk partial sums, then a sum over chunks).
"""

import torch

from . import launch
from .triton_compat import device_guard, tl, triton


@triton.jit
def _ln_modulate_jvp_fwd_kernel(
    X, XD, SH, SC, SHD, SCD, M, MD,
    stride_xb, stride_xt, stride_xdb, stride_xdt,
    stride_sh, stride_sc, stride_shd, stride_scd,
    n_rows, tokens, dim, eps,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One tile of ``ROWS`` rows of the flattened ``(batch * tokens, dim)`` input.

    X, XD: ``(batch, tokens, dim)`` with unit column stride; SH, SC, SHD, SCD: ``(batch, dim)``
    rows at any row stride (chunks of the adaLN projection); M, MD: contiguous outputs.
    Statistics in fp32: ``mean``, ``rstd``, ``mean(x')``, ``mean(a x')`` (docs/design.md section 2).
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (cols < dim)[None, :]
    b = rows // tokens
    t = rows - b * tokens
    col = cols[None, :]
    x = tl.load(X + (b * stride_xb + t * stride_xt)[:, None] + col, mask=mask, other=0.0).to(tl.float32)
    xd = tl.load(XD + (b * stride_xdb + t * stride_xdt)[:, None] + col, mask=mask, other=0.0)
    xd = xd.to(tl.float32)

    mean = tl.sum(x, axis=1) / dim
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / dim + eps)
    a = xc * rstd[:, None]
    mean_xd = tl.sum(xd, axis=1) / dim
    mean_axd = tl.sum(a * xd, axis=1) / dim
    a_dot = (xd - mean_xd[:, None] - a * mean_axd[:, None]) * rstd[:, None]

    b = b[:, None]
    sh = tl.load(SH + b * stride_sh + col, mask=mask, other=0.0).to(tl.float32)
    sc = tl.load(SC + b * stride_sc + col, mask=mask, other=0.0).to(tl.float32)
    shd = tl.load(SHD + b * stride_shd + col, mask=mask, other=0.0).to(tl.float32)
    scd = tl.load(SCD + b * stride_scd + col, mask=mask, other=0.0).to(tl.float32)
    m = a * (1.0 + sc) + sh
    md = a_dot * (1.0 + sc) + a * scd + shd
    out = rows[:, None] * dim + col
    tl.store(M + out, m.to(M.dtype.element_ty), mask=mask)
    tl.store(MD + out, md.to(MD.dtype.element_ty), mask=mask)


@triton.jit
def _ln_modulate_bwd_kernel(
    G, X, SC, DX, DSH_PART, DSC_PART,
    stride_gb, stride_gt, stride_xb, stride_xt, stride_sc, stride_part,
    tokens, dim, tokens_per_chunk, eps,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, SPLIT: tl.constexpr = 1,
):  # fmt: skip
    """Primal backward over one chunk of ``cdiv(tokens_per_chunk, SPLIT)`` tokens of one
    sample (grid ``(batch, n_chunks)``).

    G, X: ``(batch, tokens, dim)`` with unit column stride; SC: ``(batch, dim)`` at any row
    stride; DX: contiguous like X. ``da = g (1 + scale)``,
    ``dx = (da - mean(da) - a mean(da a)) rstd``; the chunk's sums of ``g`` and ``g a`` over
    its tokens go to DSH_PART, DSC_PART ``(batch, >= n_chunks, dim)`` fp32 (batch stride
    ``stride_part``), summed afterwards (deterministic, no atomics).
    """
    b = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1).to(tl.int64)
    tokens_per_chunk = (tokens_per_chunk + SPLIT - 1) // SPLIT
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < dim
    col = cols[None, :]
    one_plus_sc = 1.0 + tl.load(SC + b * stride_sc + cols, mask=col_ok, other=0.0).to(tl.float32)
    dsh = tl.zeros([BLOCK_D], dtype=tl.float32)
    dsc = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_start = chunk * tokens_per_chunk
    t_end = tl.minimum(t_start + tokens_per_chunk, tokens)
    for t0 in range(0, tokens_per_chunk, ROWS):
        t = t_start + t0 + tl.arange(0, ROWS)
        mask = (t < t_end)[:, None] & col_ok[None, :]
        x = tl.load(X + (b * stride_xb + t * stride_xt)[:, None] + col, mask=mask, other=0.0)
        g = tl.load(G + (b * stride_gb + t * stride_gt)[:, None] + col, mask=mask, other=0.0)
        x = x.to(tl.float32)
        g = g.to(tl.float32)
        mean = tl.sum(x, axis=1) / dim
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / dim + eps)
        a = xc * rstd[:, None]
        da = g * one_plus_sc[None, :]
        mean_da = tl.sum(da, axis=1) / dim
        mean_daa = tl.sum(da * a, axis=1) / dim
        dx = (da - mean_da[:, None] - a * mean_daa[:, None]) * rstd[:, None]
        tl.store(DX + ((b * tokens + t) * dim)[:, None] + col, dx.to(DX.dtype.element_ty), mask=mask)
        dsh += tl.sum(g, axis=0)
        dsc += tl.sum(g * a, axis=0)
    part = b * stride_part + chunk * dim + cols
    tl.store(DSH_PART + part, dsh, mask=col_ok)
    tl.store(DSC_PART + part, dsc, mask=col_ok)


# Tuned per (rows, dim) on a GPU (launch.autotune_rows); module globals the launchers look up
# at call time (benchmarks/triton_static.py swaps them).
_ln_modulate_jvp_fwd = launch.autotune_rows(_ln_modulate_jvp_fwd_kernel, "n_rows")
_ln_modulate_bwd = launch.autotune_rows(_ln_modulate_bwd_kernel, "tokens", tile=4096)


def layernorm_modulate_jvp_triton(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    """Triton :func:`reference.layernorm_modulate_jvp`: ``(m, m_dot)`` in x's dtype, one kernel."""
    batch, tokens, dim = x.shape
    x, x_dot = launch.unit_cols(x), launch.unit_cols(x_dot)
    shift, scale, shift_dot, scale_dot = map(launch.unit_cols, (shift, scale, shift_dot, scale_dot))
    m = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    m_dot = torch.empty_like(m)
    n_rows = batch * tokens
    if n_rows == 0 or dim == 0:
        return m, m_dot
    with device_guard(x):
        _ln_modulate_jvp_fwd[lambda meta: (triton.cdiv(n_rows, meta["ROWS"]),)](
            x, x_dot, shift, scale, shift_dot, scale_dot, m, m_dot,
            x.stride(0), x.stride(1), x_dot.stride(0), x_dot.stride(1),
            shift.stride(0), scale.stride(0), shift_dot.stride(0), scale_dot.stride(0),
            n_rows, tokens, dim, float(eps), BLOCK_D=launch.next_power_of_2(dim),
        )  # fmt: skip
    return m, m_dot


def layernorm_modulate_backward_triton(grad_m, x, scale, eps=1e-6, tokens_per_chunk=None):
    """Triton :func:`reference.layernorm_modulate_backward`: ``dx`` in x's dtype, ``dshift``
    and ``dscale`` in fp32. ``tokens_per_chunk`` (tokens one program reduces) is for tests."""
    batch, tokens, dim = x.shape
    grad_m, x, scale = launch.unit_cols(grad_m), launch.unit_cols(x), launch.unit_cols(scale)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if batch * tokens == 0 or dim == 0:
        zeros = torch.zeros(batch, dim, dtype=torch.float32, device=x.device)
        return dx, zeros, zeros.clone()
    if tokens_per_chunk is None:
        tokens_per_chunk = launch.tokens_per_chunk(tokens, batch, dim, x.device)

    def chunks(split):  # programs per sample with the chunks cut in ``split`` (the tile's SPLIT)
        return triton.cdiv(tokens, triton.cdiv(tokens_per_chunk, split))

    most = chunks(max(launch.CHUNK_SPLITS))
    dshift = torch.empty(batch, most, dim, dtype=torch.float32, device=x.device)
    dscale = torch.empty_like(dshift)
    with launch.TUNED_LAUNCH, device_guard(x):
        _ln_modulate_bwd[lambda meta: (batch, chunks(meta.get("SPLIT", 1)))](
            grad_m, x, scale, dx, dshift, dscale,
            grad_m.stride(0), grad_m.stride(1), x.stride(0), x.stride(1), scale.stride(0), dshift.stride(0),
            tokens, dim, tokens_per_chunk, float(eps), BLOCK_D=launch.next_power_of_2(dim),
        )  # fmt: skip
        n_chunks = chunks(launch.chosen_split(_ln_modulate_bwd))
    if most == 1:  # one chunk, written in place
        return dx, dshift[:, 0], dscale[:, 0]
    return dx, dshift[:, :n_chunks].sum(1), dscale[:, :n_chunks].sum(1)


def jvp_unsupported(x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-6):
    named = dict(x=x, x_dot=x_dot, shift=shift, scale=scale, shift_dot=shift_dot, scale_dot=scale_dot)
    return launch.unsupported(*named.items(), row_dim=x.shape[-1])


def backward_unsupported(grad_m, x, scale, eps=1e-6):
    return launch.unsupported(("grad_m", grad_m), ("x", x), ("scale", scale), row_dim=x.shape[-1])
