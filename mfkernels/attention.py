"""Attention value and tangent in one pass: ``O``, ``O'`` and the row ``LSE`` (docs/design.md section 2).

With ``S = scale Q K^T``, ``P = softmax(S)``, ``O = P V`` and ``S' = scale (Q' K^T + Q K'^T)``:
``O' = P V' + (P * S') V - rowsum(P * S') O``. Tensors are ``(batch, heads, seq, head_dim)``
as in ``F.scaled_dot_product_attention``; ``LSE`` is ``(batch, heads, seq)`` in float32
(float64 for float64 input). The backward is the primal one, ``dO -> (dQ, dK, dV)``, from
the saved ``O`` and ``LSE``; tangent inputs get no gradient.
"""

import contextlib
import os

import torch
from torch import Tensor

from . import dispatch, reference
from ._autograd import DualOp, mark_tangent_outputs
from ._checks import check_pair, check_same_device, check_same_dtype
from ._triton import INTERPRET, dot, tl, triton, triton_unsupported, vector_alignment

_LOG2E = 1.4426950408889634  # 1 / ln 2: scores go through exp2, as in the Triton tutorial
_LN2 = 0.6931471805599453
_MAX_HEAD_DIM = 128


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return reference.compute_dtype(dtype)


def _new_output(batch, heads, seq, head_dim, like: Tensor) -> Tensor:
    """A ``(batch, heads, seq, head_dim)`` output laid out as ``(batch, seq, heads, head_dim)``,
    as flash attention writes it: merging the heads back into ``(batch, seq, heads * head_dim)``
    for the output projection is then a view, not a copy of O and of O'."""
    return like.new_empty((batch, seq, heads, head_dim)).transpose(1, 2)


def _heads_inner(t: Tensor) -> Tensor:
    """``t`` in :func:`_new_output`'s layout (copied only when it is not)."""
    if t.transpose(1, 2).is_contiguous():
        return t
    return _new_output(*t.shape, like=t).copy_(t)


def _attention_jvp(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_dot: Tensor,
    k_dot: Tensor,
    v_dot: Tensor,
    scale: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    o, o_dot, lse = dispatch.call("attention_jvp", backend, q, k, v, q_dot, k_dot, v_dot, scale)
    return _heads_inner(o), _heads_inner(o_dot), lse.contiguous()


def _jvp_fake(q, k, v, q_dot, k_dot, v_dot, scale, backend):
    o_shape = (*q.shape[:-1], v.shape[-1])
    lse = q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))
    return _new_output(*o_shape, like=q), _new_output(*o_shape, like=q), lse


def _attention_backward(
    grad_o: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, scale: float, backend: str
) -> tuple[Tensor, Tensor, Tensor]:
    # Any strides: the gradient of a merged-heads view arrives as a view of (batch, seq, dim).
    dq, dk, dv = dispatch.call("attention_backward", backend, grad_o, q, k, v, o, lse, scale)
    return dq.to(q.dtype).contiguous(), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()


def _backward_fake(grad_o, q, k, v, o, lse, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, _, _, _, scale, backend = inputs
    o, o_dot, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.scale, ctx.backend = scale, backend
    mark_tangent_outputs(ctx, o_dot, lse)


def _backward(ctx, grad_o, _grad_o_dot, _grad_lse):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _attention_backward_op(grad_o, q, k, v, o, lse, ctx.scale, ctx.backend)
    return dq, dk, dv, None, None, None, None, None


_attention_jvp_op = DualOp("attention_jvp", _attention_jvp, _jvp_fake, _setup_context, _backward)
_attention_backward_op = DualOp("attention_backward", _attention_backward, _backward_fake)
dispatch.register("attention_jvp", "reference", reference.attention_jvp_fast)
dispatch.register("attention_backward", "reference", reference.attention_backward_fast)


# --------------------------------------------------------------------------- triton backend
#
# Forward: one program per (query block, batch * head) streams K, K', V, V' tiles with an
# online softmax (FlashAttention-2): running max m and sum l of the primal scores, and, all
# rescaled by alpha = exp2(m_old - m_new) when the max moves,
#   acc_o  = sum_j P_ij V_j,                      acc_ps = sum_j P_ij S'_ij,
#   acc_t  = sum_j P_ij V'_j + sum_j (P_ij S'_ij) V_j   (P V' and (P * S') V share one sum),
# with P the unnormalised exp2(S log2(e) - m). At the end O = acc_o / l and
# O' = acc_t / l - (acc_ps / l) O (docs/design.md section 2). Six GEMMs of N_q x N_k x d per head:
# Q K^T, Q' K^T, Q K'^T, P V, P V', (P * S') V. Nothing of size N x N reaches memory.
#
# Backward (primal only, FlashAttention-2 with the saved LSE): delta = rowsum(dO * O), then a
# kernel per key block accumulating dK, dV over all query blocks and a kernel per query block
# accumulating dQ over all key blocks: no atomics, O(N) extra memory.
#
# Tensors are read through their strides (q, k, v may be views of a packed qkv tensor). Tiles
# are powers of two wide, so a head dim is padded inside the kernels with masks, or, just above
# a power of two, split in two parts each padded on its own (d = 72 -> 64 + 16, not 128): every
# product over the head dim is then two dots, and every tile of it two tiles.


@triton.jit
def _load_tile(ptrs, row_ok, col_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """A (rows, BLOCK_D) tile; rows past the sequence and padded head-dim columns read 0."""
    if MASK_ROWS:
        if MASK_COLS:
            return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        return tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    if MASK_COLS:
        return tl.load(ptrs, mask=col_ok[None, :], other=0.0)
    return tl.load(ptrs)


@triton.jit
def _row_ptrs(X, off_b, off_h, offs, stride_b, stride_h, stride_n):
    """Pointers to rows ``offs`` of head ``(off_b, off_h)`` of X, at column 0 (a column)."""
    return X + off_b * stride_b + off_h * stride_h + offs[:, None] * stride_n


@triton.jit
def _part_ptrs(rows, offs_d, offs_e, stride_d):
    """The tiles of ``rows`` at the head dim's two parts: columns ``offs_d`` and ``offs_e``."""
    return rows + offs_d[None, :] * stride_d, rows + offs_e[None, :] * stride_d


@triton.jit
def _load_parts(
    rows, offs_d, offs_e, stride_d, row_ok, d_ok, e_ok,
    ROWS: tl.constexpr, BLOCK_E: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr,
    SPLIT: tl.constexpr,
):  # fmt: skip
    """A tile of whole rows (``rows``: their pointers, one column) as its head-dim parts: the
    first ``BLOCK_D`` columns and, with ``SPLIT``, the next ``BLOCK_E`` (else a zero
    placeholder of that shape, which the kernels never read)."""
    low_ptrs, high_ptrs = _part_ptrs(rows, offs_d, offs_e, stride_d)
    low = _load_tile(low_ptrs, row_ok, d_ok, True, MASK_D)
    if SPLIT:
        high = _load_tile(high_ptrs, row_ok, e_ok, True, MASK_E)
    else:
        high = tl.zeros([ROWS, BLOCK_E], dtype=low.dtype)
    return low, high


@triton.jit
def _aligned(stride_b, stride_h, stride_n, ALIGN: tl.constexpr):
    """The strides, with their divisibility by ``ALIGN`` (checked by the launcher) made
    visible to the compiler. Triton only learns alignment from arguments divisible by 16;
    head dim 72 gives strides divisible by 8 only, and without this hint the K/V tiles are
    not loaded asynchronously (no cp.async pipelining) and the kernels spill registers."""
    if ALIGN > 1:
        return (stride_b // ALIGN) * ALIGN, (stride_h // ALIGN) * ALIGN, (stride_n // ALIGN) * ALIGN
    return stride_b, stride_h, stride_n


@triton.jit
def _attn_jvp_fwd_tile(
    acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
    k_ptrs, kd_ptrs, v_ptrs, vd_ptrs, k_ptrs2, kd_ptrs2, v_ptrs2, vd_ptrs2,
    start_n, n_k, offs_n, d_ok, e_ok, qk_scale, scale,
    MASK_N: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One K/V tile of the online-softmax JVP loop; ``*_ptrs`` point at key row 0, ``*2``
    are the head dim's second part (used only with ``SPLIT``)."""
    n_ok = (start_n + offs_n) < n_k
    k = _load_tile(k_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    k_dot = _load_tile(kd_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    zero = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    s = dot(q, tl.trans(k), zero, PREC)
    s_dot = dot(q_dot, tl.trans(k), zero, PREC)
    s_dot = dot(q, tl.trans(k_dot), s_dot, PREC)
    if SPLIT:
        k2 = _load_tile(k_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        k_dot2 = _load_tile(kd_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        s = dot(q2, tl.trans(k2), s, PREC)
        s_dot = dot(q_dot2, tl.trans(k2), s_dot, PREC)
        s_dot = dot(q2, tl.trans(k_dot2), s_dot, PREC)
    s = s * qk_scale  # log2 domain
    s_dot = s_dot * scale  # natural units, as in docs/design.md section 2
    if MASK_N:
        s = tl.where(n_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(s - m_new[:, None])
    ps = p * s_dot
    l_i = l_i * alpha + tl.sum(p, 1)
    acc_ps = acc_ps * alpha + tl.sum(ps, 1)
    v = _load_tile(v_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    v_dot = _load_tile(vd_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    p_lo, ps_lo = p.to(v.dtype), ps.to(v.dtype)
    acc_o = dot(p_lo, v, acc_o * alpha[:, None], PREC)
    acc_t = dot(p_lo, v_dot, acc_t * alpha[:, None], PREC)
    acc_t = dot(ps_lo, v, acc_t, PREC)
    if SPLIT:
        v2 = _load_tile(v_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        v_dot2 = _load_tile(vd_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        acc_o2 = dot(p_lo, v2, acc_o2 * alpha[:, None], PREC)
        acc_t2 = dot(p_lo, v_dot2, acc_t2 * alpha[:, None], PREC)
        acc_t2 = dot(ps_lo, v2, acc_t2, PREC)
    return acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_new, l_i


@triton.jit
def _attn_jvp_fwd_kernel(
    Q, K, V, QD, KD, VD, OUT, OUT_DOT, LSE,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_qdb, stride_qdh, stride_qdn, stride_qdd,
    stride_kdb, stride_kdh, stride_kdn, stride_kdd,
    stride_vdb, stride_vdh, stride_vdn, stride_vdd,
    stride_ob, stride_oh, stride_on,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_Q, BLOCK_M), batch * heads)``.

    Q, QD: (B, H, N_Q, HEAD_DIM); K, KD, V, VD: (B, H, N_K, HEAD_DIM), any strides.
    OUT, OUT_DOT: (B, H, N_Q, HEAD_DIM) with unit last stride; LSE: (B, H, N_Q) contiguous float32.
    Head-dim columns ``[0, BLOCK_D)`` and, with ``SPLIT``, ``[BLOCK_D, BLOCK_D + BLOCK_E)``.
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_qdb, stride_qdh, stride_qdn = _aligned(stride_qdb, stride_qdh, stride_qdn, ALIGN)
    stride_kdb, stride_kdh, stride_kdn = _aligned(stride_kdb, stride_kdh, stride_kdn, ALIGN)
    stride_vdb, stride_vdh, stride_vdn = _aligned(stride_vdb, stride_vdh, stride_vdn, ALIGN)
    stride_ob, stride_oh, stride_on = _aligned(stride_ob, stride_oh, stride_on, ALIGN)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = BLOCK_D + tl.arange(0, BLOCK_E)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    e_ok = offs_e < HEAD_DIM

    # Row pointers (one column); each part of the head dim adds its own columns.
    q_rows = _row_ptrs(Q, off_b, off_h, offs_m, stride_qb, stride_qh, stride_qn)
    qd_rows = _row_ptrs(QD, off_b, off_h, offs_m, stride_qdb, stride_qdh, stride_qdn)
    k_rows = _row_ptrs(K, off_b, off_h, offs_n, stride_kb, stride_kh, stride_kn)
    kd_rows = _row_ptrs(KD, off_b, off_h, offs_n, stride_kdb, stride_kdh, stride_kdn)
    v_rows = _row_ptrs(V, off_b, off_h, offs_n, stride_vb, stride_vh, stride_vn)
    vd_rows = _row_ptrs(VD, off_b, off_h, offs_n, stride_vdb, stride_vdh, stride_vdn)
    q, q2 = _load_parts(
        q_rows, offs_d, offs_e, stride_qd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    q_dot, q_dot2 = _load_parts(
        qd_rows, offs_d, offs_e, stride_qdd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    k_ptrs, k_ptrs2 = _part_ptrs(k_rows, offs_d, offs_e, stride_kd)
    kd_ptrs, kd_ptrs2 = _part_ptrs(kd_rows, offs_d, offs_e, stride_kdd)
    v_ptrs, v_ptrs2 = _part_ptrs(v_rows, offs_d, offs_e, stride_vd)
    vd_ptrs, vd_ptrs2 = _part_ptrs(vd_rows, offs_d, offs_e, stride_vdd)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc_ps = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc_o2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    acc_t2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    qk_scale = scale * 1.4426950408889634

    # Full key tiles without row masks, then the ragged last tile (if any) with them.
    n_full = (N_K // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i = _attn_jvp_fwd_tile(
            acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
            k_ptrs + start_n * stride_kn, kd_ptrs + start_n * stride_kdn,
            v_ptrs + start_n * stride_vn, vd_ptrs + start_n * stride_vdn,
            k_ptrs2 + start_n * stride_kn, kd_ptrs2 + start_n * stride_kdn,
            v_ptrs2 + start_n * stride_vn, vd_ptrs2 + start_n * stride_vdn,
            start_n, N_K, offs_n, d_ok, e_ok, qk_scale, scale,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    if n_full < N_K:
        acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i = _attn_jvp_fwd_tile(
            acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
            k_ptrs + n_full * stride_kn, kd_ptrs + n_full * stride_kdn,
            v_ptrs + n_full * stride_vn, vd_ptrs + n_full * stride_vdn,
            k_ptrs2 + n_full * stride_kn, kd_ptrs2 + n_full * stride_kdn,
            v_ptrs2 + n_full * stride_vn, vd_ptrs2 + n_full * stride_vdn,
            n_full, N_K, offs_n, d_ok, e_ok, qk_scale, scale,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip

    inv_l = 1.0 / l_i
    ps_mean = acc_ps * inv_l
    o = acc_o * inv_l[:, None]
    o_dot = acc_t * inv_l[:, None] - ps_mean[:, None] * o
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453

    out_rows = off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_on
    out_mask = m_ok[:, None] & d_ok[None, :]
    tl.store(OUT + out_rows + offs_d[None, :], o.to(OUT.dtype.element_ty), mask=out_mask)
    tl.store(OUT_DOT + out_rows + offs_d[None, :], o_dot.to(OUT_DOT.dtype.element_ty), mask=out_mask)
    if SPLIT:
        o2 = acc_o2 * inv_l[:, None]
        o_dot2 = acc_t2 * inv_l[:, None] - ps_mean[:, None] * o2
        out_mask2 = m_ok[:, None] & e_ok[None, :]
        tl.store(OUT + out_rows + offs_e[None, :], o2.to(OUT.dtype.element_ty), mask=out_mask2)
        tl.store(OUT_DOT + out_rows + offs_e[None, :], o_dot2.to(OUT_DOT.dtype.element_ty), mask=out_mask2)
    tl.store(LSE + pid_bh.to(tl.int64) * N_Q + offs_m, lse, mask=m_ok)


@triton.jit
def _attn_bwd_delta_kernel(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """``delta = rowsum(dO * O)`` in float32, (B, H, N_Q) contiguous. Grid (cdiv(N_Q, BLOCK_M), B * H)."""
    pid_bh = tl.program_id(1)
    stride_ob, stride_oh, stride_on = _aligned(stride_ob, stride_oh, stride_on, ALIGN)
    stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(
        OUT
        + off_b * stride_ob
        + off_h * stride_oh
        + offs_m[:, None] * stride_on
        + offs_d[None, :] * stride_od,
        mask=mask,
        other=0.0,
    )
    do = tl.load(
        DO
        + off_b * stride_dob
        + off_h * stride_doh
        + offs_m[:, None] * stride_don
        + offs_d[None, :] * stride_dod,
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + pid_bh.to(tl.int64) * N_Q + offs_m, delta, mask=offs_m < N_Q)


@triton.jit
def _attn_bwd_dkdv_tile(
    dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
    start_m, n_q, offs_m, d_ok, e_ok, qk_scale,
    MASK_M: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One query tile of the dK/dV loop, in the transposed (key-major) orientation."""
    m_ok = (start_m + offs_m) < n_q
    q = _load_tile(q_ptrs, m_ok, d_ok, MASK_M, MASK_D)
    do = _load_tile(do_ptrs, m_ok, d_ok, MASK_M, MASK_D).to(q.dtype)
    if MASK_M:
        # +inf LSE makes P exactly 0 on rows past the sequence.
        lse2 = tl.load(lse_ptrs, mask=m_ok, other=float("inf")) * 1.4426950408889634
        delta = tl.load(delta_ptrs, mask=m_ok, other=0.0)
    else:
        lse2 = tl.load(lse_ptrs) * 1.4426950408889634
        delta = tl.load(delta_ptrs)
    zero = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    s_t = dot(k, tl.trans(q), zero, PREC)
    if SPLIT:
        q2 = _load_tile(q_ptrs2, m_ok, e_ok, MASK_M, MASK_E)
        do2 = _load_tile(do_ptrs2, m_ok, e_ok, MASK_M, MASK_E).to(q.dtype)
        s_t = dot(k2, tl.trans(q2), s_t, PREC)
    # Key rows past N_K (last key block only) get garbage here; they are never stored.
    p_t = tl.math.exp2(s_t * qk_scale - lse2[None, :])
    p_lo = p_t.to(q.dtype)
    dv = dot(p_lo, do, dv, PREC)
    dp_t = dot(v, tl.trans(do), zero, PREC)
    if SPLIT:
        dv2 = dot(p_lo, do2, dv2, PREC)
        dp_t = dot(v2, tl.trans(do2), dp_t, PREC)
    ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
    dk = dot(ds_t, q, dk, PREC)
    if SPLIT:
        dk2 = dot(ds_t, q2, dk2, PREC)
    return dk, dk2, dv, dv2


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_K, BLOCK_N), B * H)``: dK, dV for one key block over all queries.

    ``dV = P^T dO``, ``dK = scale dS^T Q`` with ``dS = P (dO V^T - delta)``; DK and DV are
    (B, H, N_K, HEAD_DIM) with unit last stride. Head-dim parts as in the forward.
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
    stride_gb, stride_gh, stride_gn = _aligned(stride_gb, stride_gh, stride_gn, ALIGN)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = BLOCK_D + tl.arange(0, BLOCK_E)
    n_ok = offs_n < N_K
    d_ok = offs_d < HEAD_DIM
    e_ok = offs_e < HEAD_DIM

    k_rows = _row_ptrs(K, off_b, off_h, offs_n, stride_kb, stride_kh, stride_kn)
    v_rows = _row_ptrs(V, off_b, off_h, offs_n, stride_vb, stride_vh, stride_vn)
    q_rows = _row_ptrs(Q, off_b, off_h, offs_m, stride_qb, stride_qh, stride_qn)
    do_rows = _row_ptrs(DO, off_b, off_h, offs_m, stride_dob, stride_doh, stride_don)
    k, k2 = _load_parts(
        k_rows, offs_d, offs_e, stride_kd, n_ok, d_ok, e_ok, BLOCK_N, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    v, v2 = _load_parts(
        v_rows, offs_d, offs_e, stride_vd, n_ok, d_ok, e_ok, BLOCK_N, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    q_ptrs, q_ptrs2 = _part_ptrs(q_rows, offs_d, offs_e, stride_qd)
    do_ptrs, do_ptrs2 = _part_ptrs(do_rows, offs_d, offs_e, stride_dod)
    lse_ptrs = LSE + pid_bh.to(tl.int64) * N_Q + offs_m
    delta_ptrs = DELTA + pid_bh.to(tl.int64) * N_Q + offs_m
    qk_scale = scale * 1.4426950408889634

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dk2 = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    dv2 = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    m_full = (N_Q // BLOCK_M) * BLOCK_M
    for start_m in range(0, m_full, BLOCK_M):
        dk, dk2, dv, dv2 = _attn_bwd_dkdv_tile(
            dk, dk2, dv, dv2, k, k2, v, v2,
            q_ptrs + start_m * stride_qn, q_ptrs2 + start_m * stride_qn,
            do_ptrs + start_m * stride_don, do_ptrs2 + start_m * stride_don,
            lse_ptrs + start_m, delta_ptrs + start_m,
            start_m, N_Q, offs_m, d_ok, e_ok, qk_scale,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    if m_full < N_Q:
        dk, dk2, dv, dv2 = _attn_bwd_dkdv_tile(
            dk, dk2, dv, dv2, k, k2, v, v2,
            q_ptrs + m_full * stride_qn, q_ptrs2 + m_full * stride_qn,
            do_ptrs + m_full * stride_don, do_ptrs2 + m_full * stride_don,
            lse_ptrs + m_full, delta_ptrs + m_full,
            m_full, N_Q, offs_m, d_ok, e_ok, qk_scale,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip

    out_rows = off_b * stride_gb + off_h * stride_gh + offs_n[:, None] * stride_gn
    out_mask = n_ok[:, None] & d_ok[None, :]
    tl.store(DK + out_rows + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=out_mask)
    tl.store(DV + out_rows + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=out_mask)
    if SPLIT:
        out_mask2 = n_ok[:, None] & e_ok[None, :]
        tl.store(DK + out_rows + offs_e[None, :], (dk2 * scale).to(DK.dtype.element_ty), mask=out_mask2)
        tl.store(DV + out_rows + offs_e[None, :], dv2.to(DV.dtype.element_ty), mask=out_mask2)


@triton.jit
def _attn_bwd_dq_tile(
    dq, dq2, q, q2, do, do2, lse2, delta, k_ptrs, k_ptrs2, v_ptrs, v_ptrs2,
    start_n, n_k, offs_n, d_ok, e_ok, qk_scale,
    MASK_N: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """One key tile of the dQ loop."""
    n_ok = (start_n + offs_n) < n_k
    k = _load_tile(k_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    v = _load_tile(v_ptrs, n_ok, d_ok, MASK_N, MASK_D)
    zero = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    s = dot(q, tl.trans(k), zero, PREC)
    dp = dot(do, tl.trans(v), zero, PREC)
    if SPLIT:
        k2 = _load_tile(k_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        v2 = _load_tile(v_ptrs2, n_ok, e_ok, MASK_N, MASK_E)
        s = dot(q2, tl.trans(k2), s, PREC)
        dp = dot(do2, tl.trans(v2), dp, PREC)
    s = s * qk_scale - lse2[:, None]
    if MASK_N:
        # Zero K rows alone would give exp2(-lse), which overflows when every logit < -89.
        s = tl.where(n_ok[None, :], s, float("-inf"))
    ds = (tl.math.exp2(s) * (dp - delta[:, None])).to(k.dtype)
    dq = dot(ds, k, dq, PREC)
    if SPLIT:
        dq2 = dot(ds, k2, dq2, PREC)
    return dq, dq2


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_Q, BLOCK_M), B * H)``: ``dQ = scale dS K`` for one query block.

    DQ is (B, H, N_Q, HEAD_DIM) with unit last stride. Head-dim parts as in the forward.
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _aligned(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _aligned(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _aligned(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_dob, stride_doh, stride_don = _aligned(stride_dob, stride_doh, stride_don, ALIGN)
    stride_gb, stride_gh, stride_gn = _aligned(stride_gb, stride_gh, stride_gn, ALIGN)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // H).to(tl.int64)
    off_h = (pid_bh % H).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = BLOCK_D + tl.arange(0, BLOCK_E)
    m_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM
    e_ok = offs_e < HEAD_DIM

    q_rows = _row_ptrs(Q, off_b, off_h, offs_m, stride_qb, stride_qh, stride_qn)
    do_rows = _row_ptrs(DO, off_b, off_h, offs_m, stride_dob, stride_doh, stride_don)
    k_rows = _row_ptrs(K, off_b, off_h, offs_n, stride_kb, stride_kh, stride_kn)
    v_rows = _row_ptrs(V, off_b, off_h, offs_n, stride_vb, stride_vh, stride_vn)
    q, q2 = _load_parts(
        q_rows, offs_d, offs_e, stride_qd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    do, do2 = _load_parts(
        do_rows, offs_d, offs_e, stride_dod, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    do, do2 = do.to(q.dtype), do2.to(q.dtype)
    lse2 = tl.load(LSE + pid_bh.to(tl.int64) * N_Q + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + pid_bh.to(tl.int64) * N_Q + offs_m, mask=m_ok, other=0.0)
    k_ptrs, k_ptrs2 = _part_ptrs(k_rows, offs_d, offs_e, stride_kd)
    v_ptrs, v_ptrs2 = _part_ptrs(v_rows, offs_d, offs_e, stride_vd)
    qk_scale = scale * 1.4426950408889634

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    n_full = (N_K // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        dq, dq2 = _attn_bwd_dq_tile(
            dq, dq2, q, q2, do, do2, lse2, delta,
            k_ptrs + start_n * stride_kn, k_ptrs2 + start_n * stride_kn,
            v_ptrs + start_n * stride_vn, v_ptrs2 + start_n * stride_vn,
            start_n, N_K, offs_n, d_ok, e_ok, qk_scale,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    if n_full < N_K:
        dq, dq2 = _attn_bwd_dq_tile(
            dq, dq2, q, q2, do, do2, lse2, delta,
            k_ptrs + n_full * stride_kn, k_ptrs2 + n_full * stride_kn,
            v_ptrs + n_full * stride_vn, v_ptrs2 + n_full * stride_vn,
            n_full, N_K, offs_n, d_ok, e_ok, qk_scale,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N,
        )  # fmt: skip

    out_rows = off_b * stride_gb + off_h * stride_gh + offs_m[:, None] * stride_gn
    tl.store(
        DQ + out_rows + offs_d[None, :],
        (dq * scale).to(DQ.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    if SPLIT:
        out_mask2 = m_ok[:, None] & e_ok[None, :]
        tl.store(DQ + out_rows + offs_e[None, :], (dq2 * scale).to(DQ.dtype.element_ty), mask=out_mask2)


# Autotuning. On the GPU each kernel times a few configs (BLOCK_M, BLOCK_N, warps, stages),
# chosen per GPU generation and head-dim class from what compiles without register spills
# and within 163 KB of shared memory: `python benchmarks/triton_static.py [--arch 80]` compiles
# every config on any machine and stores the tables in benchmarks/results/triton_static_sm*.json.
# Three classes of head-dim tiling (head_dim_parts): "narrow" (<= 64 columns), "wide" (a head
# dim padded to 128, whose two fp32 accumulators leave room only for 32-wide score tiles in the
# forward and, on the A100, whose mma accumulators all live in registers, 32-row query tiles)
# and "split" (72 = 64 + 16: 80 columns, which fit the forward's 128 x 64 tiles on Hopper).
# Hopper's wgmma wants 64-row warpgroup tiles, so BLOCK_M = 128 runs with 8 warps. fp32
# inputs take IEEE dots on the FMA units, whose operands Triton holds in registers: every fp32
# tile spills (fp32 on the GPU is the exact path, not the fast one), and one config, no tuning.
# 32 x 32 tiles over 8 warps spill least on sm_80 and sm_90, for every kernel and head dim:
# 0.2-2.6 KB of stack a thread where 64 x 32 over 4 warps took up to 20 KB (the d = 128
# forward). The interpreter takes exactly one config.
#
# MFK_AUTOTUNE=0 runs the first config of each list, untimed: tests/conftest.py sets it on a
# GPU, where compiling and timing every candidate for each of the suite's many shapes would
# take minutes; test_every_tuned_config runs every listed config against the reference
# instead (the autotuner only times them).
#
# The "split" lists on sm_90 hold only configs that passed that test on an H200 (Triton 3.6,
# 2026-12-04). There the split forward with 64-key tiles got O wrong by 30-90% when the last
# key tile was ragged (N = 17, 300; right for N = 64..256 and with 32-key tiles, and in the
# interpreter). The source is the same for every tile size, so most likely a miscompile; such
# a tile runs only where it divides N_K (_tuned_for).
# (128, 64, 8, 3) and (64, 64, 4, 3) forward, and all but the first backward config, were
# never checked on a GPU and are left out until they are.
_FP32_CONFIG = (32, 32, 8, 2)
_TUNED = {
    "sm90": {
        "fwd": {
            "narrow": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "wide": [(128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 2), (64, 32, 4, 3)],
            "split": [(128, 64, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3)],
        },
        "dkdv": {
            "narrow": [(64, 64, 8, 2), (64, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 3)],
            "wide": [(64, 64, 8, 2), (64, 64, 8, 3), (64, 32, 8, 2), (64, 32, 8, 3)],
            "split": [(64, 64, 8, 2)],
        },
        "dq": {
            "narrow": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "wide": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "split": [(128, 64, 8, 2)],
        },
    },
    "sm80": {
        "fwd": {
            "narrow": [(128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3), (64, 32, 8, 3)],
            "wide": [(32, 32, 8, 2), (32, 32, 8, 3), (32, 64, 8, 2), (32, 64, 8, 3)],
            "split": [(64, 32, 8, 3), (32, 32, 8, 2), (32, 32, 8, 3)],
        },
        "dkdv": {
            "narrow": [(64, 32, 8, 2), (64, 32, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3)],
            "wide": [(64, 32, 8, 2), (64, 32, 8, 3), (32, 32, 8, 2), (32, 32, 8, 3)],
            "split": [(32, 32, 8, 2), (32, 32, 8, 3), (64, 32, 8, 3)],
        },
        "dq": {
            "narrow": [(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3)],
            "wide": [(32, 32, 8, 2), (32, 32, 8, 3), (32, 64, 8, 2), (32, 64, 8, 3)],
            "split": [(128, 32, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3), (32, 64, 8, 3), (32, 32, 8, 2)],
        },
    },
}


def _config(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


def _shape(config):
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


def generation(arch) -> str:
    """The ``_TUNED`` lists for a compute capability given as major * 10 + minor."""
    return "sm90" if isinstance(arch, int) and arch >= 90 else "sm80"


def _tuned_for(name: str, generation: str, args: dict) -> list[tuple]:
    """The ``_TUNED`` configs for a launch of kernel ``name`` (its arguments ``args``), in order."""
    tuned = _TUNED[generation][name][_width_class(args)]
    if name == "fwd" and args["SPLIT"]:
        tuned = [c for c in tuned if c[1] < 64 or args["N_K"] % c[1] == 0]
    return tuned


def _autotune(kernel, name):
    if INTERPRET:
        return triton.autotune(configs=[_config(32, 32, 4, 1)], key=_KEY)(kernel)
    every = {_FP32_CONFIG}
    for lists in _TUNED.values():
        every.update(*lists[name].values())

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        if args["Q"].element_size() == 4:
            keep = {_FP32_CONFIG}
        else:
            # The driver's target, not the tensor's device: the static check compiles from CPU.
            arch = triton.runtime.driver.active.get_current_target().arch
            tuned = _tuned_for(name, generation(arch), args)
            keep = set(tuned if os.environ.get("MFK_AUTOTUNE", "1") != "0" else tuned[:1])
        return [c for c in configs if _shape(c) in keep]

    configs = [_config(*c) for c in sorted(every)]
    return triton.autotune(configs=configs, key=_KEY, prune_configs_by={"early_config_prune": prune})(kernel)


_KEY = ["N_Q", "N_K", "HEAD_DIM", "PREC", "ALIGN"]
_attn_jvp_fwd = _autotune(_attn_jvp_fwd_kernel, "fwd")
_attn_bwd_dkdv = _autotune(_attn_bwd_dkdv_kernel, "dkdv")
_attn_bwd_dq = _autotune(_attn_bwd_dq_kernel, "dq")


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def head_dim_parts(head_dim: int) -> dict:
    """The kernels' head-dim tiling: ``BLOCK_D`` columns, and with ``SPLIT`` a second part of
    ``BLOCK_E`` (tl.dot wants power-of-two tiles of at least 16). A head dim just above a
    power of two takes two parts instead of padding to the next one: 72 = 64 + 16 (8 masked)
    does 80/128 of the padded tile's tensor-core work; 96 = 64 + 32 none wasted."""
    padded = _block_d(head_dim)
    low = max(16, padded // 2)
    high = max(16, triton.next_power_of_2(head_dim - low)) if head_dim > low else 0
    if high == 0 or low + high >= padded:
        return {"BLOCK_D": padded, "BLOCK_E": 16, "SPLIT": False}
    return {"BLOCK_D": low, "BLOCK_E": high, "SPLIT": True}


def _width_class(args: dict) -> str:
    """Which ``_TUNED`` list a launch's head-dim tiling takes."""
    if args["SPLIT"]:
        return "split"
    return "wide" if args["BLOCK_D"] > 64 else "narrow"


def _stride_align(*tensors: Tensor) -> int:
    """The kernels' ``ALIGN``: what divides every batch, head and row stride of ``tensors``."""
    return vector_alignment(tensors[0].element_size(), *(s for t in tensors for s in t.stride()[:3]))


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs need IEEE dots for the 1e-5 tolerance; 16-bit inputs ignore the setting.
    return "ieee" if dtype == torch.float32 else "tf32"


def _device_guard(t: Tensor):
    # Triton launches on the current CUDA device; tensors may live on another one.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def triton_attention_unsupported(q, k, v, *rest) -> str | None:
    """Why the triton kernels cannot run these inputs (then the dispatch falls back)."""
    reason = triton_unsupported(q, k, v)
    if reason is not None:
        return reason
    if q.shape[-1] > _MAX_HEAD_DIM:
        return f"supports head_dim <= {_MAX_HEAD_DIM}, got {q.shape[-1]}"
    if v.shape[-1] != q.shape[-1]:
        return f"needs v's head_dim equal to q's ({q.shape[-1]}), got {v.shape[-1]}"
    return None


def _backward_unsupported(grad_o, q, k, v, o, lse, scale) -> str | None:
    return triton_attention_unsupported(q, k, v)


def attention_jvp_triton(q, k, v, q_dot, k_dot, v_dot, scale):
    """Fused ``(O, O', LSE)`` with :func:`_attn_jvp_fwd_kernel`; signature of
    :func:`reference.attention_jvp`. Inputs (B, H, N, d) of any strides."""
    batch, heads, n_q, head_dim = q.shape
    n_k = k.shape[2]
    o, o_dot = _new_output(batch, heads, n_q, head_dim, q), _new_output(batch, heads, n_q, head_dim, q)
    lse = torch.empty((batch, heads, n_q), dtype=torch.float32, device=q.device)
    if o.numel() == 0:
        return o, o_dot, lse

    def grid(meta):
        return (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads)

    with _device_guard(q):
        _attn_jvp_fwd[grid](
            q, k, v, q_dot, k_dot, v_dot, o, o_dot, lse,
            *q.stride(), *k.stride(), *v.stride(), *q_dot.stride(), *k_dot.stride(), *v_dot.stride(),
            *o.stride()[:3],
            heads, n_q, n_k, float(scale),
            HEAD_DIM=head_dim, **head_dim_parts(head_dim), PREC=_precision(q.dtype),
            ALIGN=_stride_align(q, k, v, q_dot, k_dot, v_dot, o),
        )  # fmt: skip
    return o, o_dot, lse


def attention_backward_triton(grad_o, q, k, v, o, lse, scale):
    """Primal ``(dQ, dK, dV)`` from the saved ``O`` and float32 ``LSE``; signature of
    :func:`reference.attention_backward`. Three launches: delta, dK/dV, dQ."""
    batch, heads, n_q, head_dim = q.shape
    n_k = k.shape[2]
    dq = torch.empty((batch, heads, n_q, head_dim), dtype=q.dtype, device=q.device)
    dk = torch.empty((batch, heads, n_k, head_dim), dtype=q.dtype, device=q.device)
    dv = torch.empty_like(dk)
    if dq.numel() == 0:
        return dq, dk, dv
    lse = lse.to(torch.float32).contiguous()
    delta = torch.empty_like(lse)
    parts, prec = head_dim_parts(head_dim), _precision(q.dtype)
    align = _stride_align(q, k, v, grad_o, o, dq, dk)
    with _device_guard(q):
        _attn_bwd_delta_kernel[(triton.cdiv(n_q, 64), batch * heads)](
            o, grad_o, delta, *o.stride(), *grad_o.stride(), heads, n_q,
            HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=64, ALIGN=align,
        )  # fmt: skip
        strides = (*q.stride(), *k.stride(), *v.stride(), *grad_o.stride())
        _attn_bwd_dkdv[lambda meta: (triton.cdiv(n_k, meta["BLOCK_N"]), batch * heads)](
            q, k, v, grad_o, lse, delta, dk, dv, *strides, *dk.stride()[:3],
            heads, n_q, n_k, float(scale), HEAD_DIM=head_dim, **parts, PREC=prec, ALIGN=align,
        )  # fmt: skip
        _attn_bwd_dq[lambda meta: (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads)](
            q, k, v, grad_o, lse, delta, dq, *strides, *dq.stride()[:3],
            heads, n_q, n_k, float(scale), HEAD_DIM=head_dim, **parts, PREC=prec, ALIGN=align,
        )  # fmt: skip
    return dq, dk, dv


dispatch.register("attention_jvp", "triton", attention_jvp_triton, triton_attention_unsupported)
dispatch.register("attention_backward", "triton", attention_backward_triton, _backward_unsupported)


def attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale=None, backend=None):
    """Returns ``(o, o_dot, lse)`` for ``(batch, heads, seq, head_dim)`` inputs.

    ``scale`` defaults to ``head_dim ** -0.5``. Any sequence length >= 1; keys and values
    may have their own length (``seq_k``), shared by ``k`` and ``v``.
    """
    check_pair("q", q, q_dot)
    check_pair("k", k, k_dot)
    check_pair("v", v, v_dot)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"q, k, v must share (batch, heads): got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k must have q's head_dim {q.shape[-1]}, got {k.shape[-1]}")
    if v.shape[2] != k.shape[2]:
        raise ValueError(f"v must have k's sequence length {k.shape[2]}, got {v.shape[2]}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError("q and k need a sequence length of at least 1")
    if q.shape[-1] < 1 or v.shape[-1] < 1:
        raise ValueError("q, k and v need a head_dim of at least 1")
    check_same_dtype(q=q, k=k, v=v)
    check_same_device(q=q, k=k, v=v)
    try:
        scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"scale must be a number or None, got {scale!r}") from None
    return _attention_jvp_op(q, k, v, q_dot, k_dot, v_dot, scale, dispatch.check_backend(backend))
