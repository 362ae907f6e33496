"""Triton kernels of attention's primal backward ``dO -> (dQ, dK, dV)`` (docs/design.md
section 2), with the tile helpers of ``attention_kernels.py``; launched from ``attention.py``,
configured in ``attention_configs.py``.

FlashAttention-2 with the LSE the forward saved: delta = rowsum(dO * O), then a kernel per key
block accumulating dK, dV over all query blocks and a kernel per query block accumulating dQ
over all key blocks: no atomics, O(N) extra memory, seven GEMMs. Or, with ``ATOMIC_DQ``, the
key-block kernel also adds each tile's dS K into an fp32 dQ with atomics, as FlashAttention-2
does: five GEMMs, one launch fewer, a sum order that varies between runs.
"""

from .attention_kernels import (
    LOG2E,
    _add_bias,
    _causal_key_ranges,
    _columns,
    _load_parts,
    _load_tile,
    _lse_seeing_no_key_as_inf,
    _part_ptrs,
    _query_major_bias_ptrs,
    _row_ptrs,
    _with_alignment,
)
from .triton_compat import dot, tl, triton, wide_mul


@triton.jit
def _attn_bwd_delta_kernel(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """``delta = rowsum(dO * O)`` in float32, (B, H, N_Q) contiguous. Grid (cdiv(N_Q, BLOCK_M), H, B)."""
    stride_ob, stride_oh, stride_on = _with_alignment(stride_ob, stride_oh, stride_on, ALIGN)
    stride_dob, stride_doh, stride_don = _with_alignment(stride_dob, stride_doh, stride_don, ALIGN)
    off_h = tl.program_id(1).to(tl.int64)
    off_b = tl.program_id(2).to(tl.int64)
    pid_bh = off_b * H + off_h
    first_m = tl.program_id(0) * BLOCK_M
    offs_m = first_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o_rows = _row_ptrs(OUT, off_b, off_h, first_m, stride_ob, stride_oh, stride_on, BLOCK_M)
    do_rows = _row_ptrs(DO, off_b, off_h, first_m, stride_dob, stride_doh, stride_don, BLOCK_M)
    o = tl.load(o_rows + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_rows + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + pid_bh * N_Q + offs_m, delta, mask=offs_m < N_Q)


@triton.jit
def _attn_bwd_dkdv_tile(
    dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
    dq_ptrs, dq_ptrs2, stride_qn, stride_don, stride_an, start_m, n_q, offs_m, offs_n, n_ok,
    d_ok, e_ok, qk_scale, bias_ptrs, stride_bm,
    MASK_M: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
):  # fmt: skip
    """The query tile at ``start_m`` of the dK/dV loop (``*_ptrs`` at query row 0), in the
    transposed (key-major) orientation; with ``ATOMIC_DQ`` also this key tile's share of the
    tile's dQ, added at ``dq_ptrs`` (fp32). ``offs_n``: the block's key rows; with ``CAUSAL``
    a key after a query gets P = 0; with ``HAS_BIAS`` the transposed bias tile at
    ``bias_ptrs`` is added to the scores."""
    q_step, do_step = wide_mul(start_m, stride_qn, WIDE_ROWS), wide_mul(start_m, stride_don, WIDE_ROWS)
    q_ptrs, q_ptrs2 = q_ptrs + q_step, q_ptrs2 + q_step
    do_ptrs, do_ptrs2 = do_ptrs + do_step, do_ptrs2 + do_step
    lse_ptrs, delta_ptrs = lse_ptrs + start_m, delta_ptrs + start_m
    dq_step = wide_mul(start_m, stride_an, WIDE_ROWS)
    dq_ptrs, dq_ptrs2 = dq_ptrs + dq_step, dq_ptrs2 + dq_step
    bias_ptrs = bias_ptrs + wide_mul(start_m, stride_bm, WIDE_ROWS)
    m_ok = (start_m + offs_m) < n_q
    q = _load_tile(q_ptrs, m_ok, d_ok, MASK_M, MASK_D)
    do = _load_tile(do_ptrs, m_ok, d_ok, MASK_M, MASK_D).to(q.dtype)
    if MASK_M:
        # +inf LSE makes P exactly 0 on rows past the sequence.
        lse2 = tl.load(lse_ptrs, mask=m_ok, other=float("inf")) * LOG2E
        delta = tl.load(delta_ptrs, mask=m_ok, other=0.0)
    else:
        lse2 = tl.load(lse_ptrs) * LOG2E
        delta = tl.load(delta_ptrs)
    zero = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    s_t = dot(k, tl.trans(q), zero, PREC)
    if SPLIT:
        q2 = _load_tile(q_ptrs2, m_ok, e_ok, MASK_M, MASK_E)
        do2 = _load_tile(do_ptrs2, m_ok, e_ok, MASK_M, MASK_E).to(q.dtype)
        s_t = dot(k2, tl.trans(q2), s_t, PREC)
    s_t = s_t * qk_scale
    if HAS_BIAS:
        s_t = _add_bias(s_t, bias_ptrs, n_ok, m_ok)  # transposed: keys by queries
        lse2 = _lse_seeing_no_key_as_inf(lse2)
    # Key rows past N_K (last key block only) get garbage here; they are never stored.
    p_t = tl.math.exp2(s_t - lse2[None, :])
    if CAUSAL:
        # A masked key's exp2 may be inf (the LSE never counted it): select, never multiply.
        p_t = tl.where(offs_n[:, None] <= (start_m + offs_m)[None, :], p_t, 0.0)
    p_lo = p_t.to(q.dtype)
    dv = dot(p_lo, do, dv, PREC)
    dp_t = dot(v, tl.trans(do), zero, PREC)
    if SPLIT:
        dv2 = dot(p_lo, do2, dv2, PREC)
        dp_t = dot(v2, tl.trans(do2), dp_t, PREC)
    if ATOMIC_DQ:
        # dQ sums over key rows: rows past N_K must add exactly 0 (their exp2(-lse) may be inf).
        p_t = tl.where(n_ok[:, None], p_t, 0.0)
    ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
    dk = dot(ds_t, q, dk, PREC)
    if SPLIT:
        dk2 = dot(ds_t, q2, dk2, PREC)
    if ATOMIC_DQ:
        m_ok = (start_m + offs_m) < n_q
        ds = tl.trans(ds_t)
        dq = dot(ds, k, tl.zeros([BLOCK_M, k.shape[1]], dtype=tl.float32), PREC)
        tl.atomic_add(dq_ptrs, dq, mask=m_ok[:, None] & d_ok[None, :], sem="relaxed")
        if SPLIT:
            dq2 = dot(ds, k2, tl.zeros([BLOCK_M, k2.shape[1]], dtype=tl.float32), PREC)
            tl.atomic_add(dq_ptrs2, dq2, mask=m_ok[:, None] & e_ok[None, :], sem="relaxed")
    return dk, dk2, dv, dv2


@triton.jit
def _attn_bwd_dkdv_queries(
    dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
    dq_ptrs, dq_ptrs2, stride_qn, stride_don, stride_an, N_Q, offs_m, offs_n, n_ok, d_ok, e_ok,
    qk_scale, bias_ptrs, stride_bm,
    MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ATOMIC_DQ: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
):  # fmt: skip
    """The dK/dV loop of one key block over one query head's queries (``*_ptrs`` at its query
    row 0): whole query tiles unmasked, the ragged last one masked, and with ``CAUSAL`` only
    the tiles at or after the block's first key, those before its last key masked."""
    m_full = (N_Q // BLOCK_M) * BLOCK_M
    if CAUSAL:
        # Query tiles before the block's first key see none of it; those before its last key
        # see part of it (masked); the rest see all of it.
        first_key = tl.program_id(0) * BLOCK_N
        m_whole = tl.minimum(m_full, tl.cdiv(first_key + BLOCK_N - 1, BLOCK_M) * BLOCK_M)
        for start_m in range((first_key // BLOCK_M) * BLOCK_M, m_whole, BLOCK_M):
            dk, dk2, dv, dv2 = _attn_bwd_dkdv_tile(
                dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
                dq_ptrs, dq_ptrs2, stride_qn, stride_don, stride_an, start_m, N_Q, offs_m, offs_n, n_ok,
                d_ok, e_ok, qk_scale, bias_ptrs, stride_bm,
                False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, True, HAS_BIAS, WIDE_ROWS,
            )  # fmt: skip
    else:
        m_whole = 0
    for start_m in range(m_whole, m_full, BLOCK_M):
        dk, dk2, dv, dv2 = _attn_bwd_dkdv_tile(
            dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
            dq_ptrs, dq_ptrs2, stride_qn, stride_don, stride_an, start_m, N_Q, offs_m, offs_n, n_ok,
            d_ok, e_ok, qk_scale, bias_ptrs, stride_bm,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, False, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip
    if m_full < N_Q:
        dk, dk2, dv, dv2 = _attn_bwd_dkdv_tile(
            dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2, lse_ptrs, delta_ptrs,
            dq_ptrs, dq_ptrs2, stride_qn, stride_don, stride_an, m_full, N_Q, offs_m, offs_n, n_ok,
            d_ok, e_ok, qk_scale, bias_ptrs, stride_bm,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, CAUSAL, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip
    return dk, dk2, dv, dv2


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, BIAS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_ab, stride_ah, stride_an,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, ATOMIC_DQ: tl.constexpr, CAUSAL: tl.constexpr,
    KV_GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, KEY_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_K, BLOCK_N), H, B)``: dK, dV for one key block over all queries (with
    ``CAUSAL``, over the queries at or after its first key) of the ``KV_GROUP`` query heads
    that read its key/value head (grouped-query attention: Q, dO, LSE and delta have
    ``H * KV_GROUP`` heads, K and V ``H``), summed in registers.

    ``dV = P^T dO``, ``dK = scale dS^T Q`` with ``dS = P (dO V^T - delta)``; DK and DV are
    (B, H, N_K, HEAD_DIM) with unit last stride. Head-dim parts as in the forward.
    With ``ATOMIC_DQ`` the kernel also adds ``dS K`` (unscaled) into DQ_ACC, a zeroed fp32
    (B, H * KV_GROUP, N_Q, HEAD_DIM) tensor with unit last stride (``stride_a*``), with atomics: the whole
    backward then does five products of N_q x N_k x d (FlashAttention-2's scheme) instead of
    seven, summed in an order that varies from run to run. Without it DQ_ACC is not read.
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _with_alignment(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _with_alignment(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _with_alignment(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_dob, stride_doh, stride_don = _with_alignment(stride_dob, stride_doh, stride_don, ALIGN)
    stride_gb, stride_gh, stride_gn = _with_alignment(stride_gb, stride_gh, stride_gn, ALIGN)
    off_h = tl.program_id(1).to(tl.int64)
    off_b = tl.program_id(2).to(tl.int64)
    pid_bh = off_b * H + off_h
    first_n = tl.program_id(0) * BLOCK_N
    offs_n = first_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d, offs_e, d_ok, e_ok = _columns(HEAD_DIM, BLOCK_D, BLOCK_E)
    n_ok = offs_n < N_K

    k_rows = _row_ptrs(K, off_b, off_h, first_n, stride_kb, stride_kh, stride_kn, BLOCK_N)
    v_rows = _row_ptrs(V, off_b, off_h, first_n, stride_vb, stride_vh, stride_vn, BLOCK_N)
    k, k2 = _load_parts(
        k_rows, offs_d, offs_e, stride_kd, n_ok, d_ok, e_ok, BLOCK_N, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    v, v2 = _load_parts(
        v_rows, offs_d, offs_e, stride_vd, n_ok, d_ok, e_ok, BLOCK_N, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    qk_scale = scale * LOG2E

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dk2 = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    dv2 = tl.zeros([BLOCK_N, BLOCK_E], dtype=tl.float32)
    for group_h in range(KV_GROUP):  # the query heads reading this key/value head
        off_hq = off_h * KV_GROUP + group_h
        # Their LSE and delta rows: (batch, query head), the grid's own row without groups.
        row = pid_bh if KV_GROUP == 1 else off_b * H * KV_GROUP + off_hq
        q_rows = _row_ptrs(Q, off_b, off_hq, 0, stride_qb, stride_qh, stride_qn, BLOCK_M)
        do_rows = _row_ptrs(DO, off_b, off_hq, 0, stride_dob, stride_doh, stride_don, BLOCK_M)
        q_ptrs, q_ptrs2 = _part_ptrs(q_rows, offs_d, offs_e, stride_qd)
        do_ptrs, do_ptrs2 = _part_ptrs(do_rows, offs_d, offs_e, stride_dod)
        dq_rows = _row_ptrs(DQ_ACC, off_b, off_hq, 0, stride_ab, stride_ah, stride_an, BLOCK_M)
        dq_ptrs, dq_ptrs2 = _part_ptrs(dq_rows, offs_d, offs_e, 1)
        # Transposed, as the tiles here: rows are keys, columns queries (with KEY_BIAS one
        # column, read once per key: its query stride is 0).
        bias_ptrs = _row_ptrs(BIAS, off_b, off_hq, first_n, stride_bb, stride_bh, stride_bn, BLOCK_N)
        if not KEY_BIAS:
            bias_ptrs = bias_ptrs + offs_m[None, :] * stride_bm
        dk, dk2, dv, dv2 = _attn_bwd_dkdv_queries(
            dk, dk2, dv, dv2, k, k2, v, v2, q_ptrs, q_ptrs2, do_ptrs, do_ptrs2,
            LSE + row * N_Q + offs_m, DELTA + row * N_Q + offs_m, dq_ptrs, dq_ptrs2,
            stride_qn, stride_don, stride_an, N_Q, offs_m, offs_n, n_ok, d_ok, e_ok, qk_scale,
            bias_ptrs, stride_bm, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, CAUSAL,
            HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip

    out_rows = _row_ptrs(0, off_b, off_h, first_n, stride_gb, stride_gh, stride_gn, BLOCK_N)
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
    start_n, n_k, offs_n, offs_m, d_ok, e_ok, qk_scale, bias_ptrs, stride_bn, m_ok,
    MASK_N: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
):  # fmt: skip
    """One key tile of the dQ loop; with ``MASK_N`` keys past ``n_k`` are masked, and with
    ``CAUSAL`` too keys after the query (``offs_m``: the tile's query rows); with ``HAS_BIAS``
    the bias tile at ``bias_ptrs`` (key 0) is added to the scores."""
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
    if HAS_BIAS:
        s = _add_bias(s, bias_ptrs + wide_mul(start_n, stride_bn, WIDE_ROWS), m_ok, n_ok)
    if MASK_N:
        # Zero K rows alone would give exp2(-lse), which overflows when every logit < -89.
        keep = n_ok[None, :]
        if CAUSAL:
            keep = keep & ((start_n + offs_n)[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
    ds = (tl.math.exp2(s) * (dp - delta[:, None])).to(k.dtype)
    dq = dot(ds, k, dq, PREC)
    if SPLIT:
        dq2 = dot(ds, k2, dq2, PREC)
    return dq, dq2


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, BIAS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, CAUSAL: tl.constexpr, KV_GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr, KEY_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_Q, BLOCK_M), H, B)``: ``dQ = scale dS K`` for one query block (with
    ``CAUSAL``, over the keys at or before its last query: the forward's tiles). K and V have
    ``H / KV_GROUP`` heads, as in the forward.

    DQ is (B, H, N_Q, HEAD_DIM) with unit last stride. Head-dim parts as in the forward.
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _with_alignment(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _with_alignment(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _with_alignment(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_dob, stride_doh, stride_don = _with_alignment(stride_dob, stride_doh, stride_don, ALIGN)
    stride_gb, stride_gh, stride_gn = _with_alignment(stride_gb, stride_gh, stride_gn, ALIGN)
    off_h = tl.program_id(1).to(tl.int64)
    off_b = tl.program_id(2).to(tl.int64)
    pid_bh = off_b * H + off_h
    off_kv = off_h // KV_GROUP
    first_m = tl.program_id(0) * BLOCK_M
    offs_m = first_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d, offs_e, d_ok, e_ok = _columns(HEAD_DIM, BLOCK_D, BLOCK_E)
    m_ok = offs_m < N_Q

    q_rows = _row_ptrs(Q, off_b, off_h, first_m, stride_qb, stride_qh, stride_qn, BLOCK_M)
    do_rows = _row_ptrs(DO, off_b, off_h, first_m, stride_dob, stride_doh, stride_don, BLOCK_M)
    k_rows = _row_ptrs(K, off_b, off_kv, 0, stride_kb, stride_kh, stride_kn, BLOCK_N)
    v_rows = _row_ptrs(V, off_b, off_kv, 0, stride_vb, stride_vh, stride_vn, BLOCK_N)
    q, q2 = _load_parts(
        q_rows, offs_d, offs_e, stride_qd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    do, do2 = _load_parts(
        do_rows, offs_d, offs_e, stride_dod, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    do, do2 = do.to(q.dtype), do2.to(q.dtype)
    lse2 = tl.load(LSE + pid_bh * N_Q + offs_m, mask=m_ok, other=0.0) * LOG2E
    if HAS_BIAS:
        lse2 = _lse_seeing_no_key_as_inf(lse2)
    bias_ptrs = _query_major_bias_ptrs(
        BIAS, off_b, off_h, first_m, offs_n, stride_bb, stride_bh, stride_bm, stride_bn, KEY_BIAS, BLOCK_M
    )
    delta = tl.load(DELTA + pid_bh * N_Q + offs_m, mask=m_ok, other=0.0)
    k_ptrs, k_ptrs2 = _part_ptrs(k_rows, offs_d, offs_e, stride_kd)
    v_ptrs, v_ptrs2 = _part_ptrs(v_rows, offs_d, offs_e, stride_vd)
    qk_scale = scale * LOG2E

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    dq2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    n_full = (N_K // BLOCK_N) * BLOCK_N
    if CAUSAL:  # the forward's key tiles: those the whole block sees, then the diagonal's, masked
        n_whole, n_seen = _causal_key_ranges(first_m, N_K, n_full, BLOCK_M, BLOCK_N)
    else:
        n_whole = n_full
    for start_n in range(0, n_whole, BLOCK_N):
        k_step, v_step = wide_mul(start_n, stride_kn, WIDE_ROWS), wide_mul(start_n, stride_vn, WIDE_ROWS)
        dq, dq2 = _attn_bwd_dq_tile(
            dq, dq2, q, q2, do, do2, lse2, delta,
            k_ptrs + k_step, k_ptrs2 + k_step, v_ptrs + v_step, v_ptrs2 + v_step,
            start_n, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, bias_ptrs, stride_bn, m_ok,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, False, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip
    if CAUSAL:
        for start_n in range(n_whole, n_seen, BLOCK_N):
            k_step, v_step = wide_mul(start_n, stride_kn, WIDE_ROWS), wide_mul(start_n, stride_vn, WIDE_ROWS)
            dq, dq2 = _attn_bwd_dq_tile(
                dq, dq2, q, q2, do, do2, lse2, delta,
                k_ptrs + k_step, k_ptrs2 + k_step, v_ptrs + v_step, v_ptrs2 + v_step,
                start_n, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, bias_ptrs, stride_bn, m_ok,
                True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, True, HAS_BIAS, WIDE_ROWS,
            )  # fmt: skip
    elif n_full < N_K:
        k_step, v_step = wide_mul(n_full, stride_kn, WIDE_ROWS), wide_mul(n_full, stride_vn, WIDE_ROWS)
        dq, dq2 = _attn_bwd_dq_tile(
            dq, dq2, q, q2, do, do2, lse2, delta,
            k_ptrs + k_step, k_ptrs2 + k_step, v_ptrs + v_step, v_ptrs2 + v_step,
            n_full, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, bias_ptrs, stride_bn, m_ok,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, False, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip

    out_rows = _row_ptrs(0, off_b, off_h, first_m, stride_gb, stride_gh, stride_gn, BLOCK_M)
    tl.store(
        DQ + out_rows + offs_d[None, :],
        (dq * scale).to(DQ.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    if SPLIT:
        out_mask2 = m_ok[:, None] & e_ok[None, :]
        tl.store(DQ + out_rows + offs_e[None, :], (dq2 * scale).to(DQ.dtype.element_ty), mask=out_mask2)
