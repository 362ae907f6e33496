"""Triton kernels of attention's value and tangent (``O``, ``O'``, ``LSE``), and the tile
helpers the backward kernels (``attention_backward_kernels.py``) share (docs/design.md
section 2); launched from ``attention.py``, configured in ``attention_configs.py``.

Forward: one program per (query block, batch * head) streams K, K', V, V' tiles with an
online softmax (FlashAttention-2): running max m and sum l of the primal scores, and, all
rescaled by alpha = exp2(m_old - m_new) when the max moves,
  acc_o  = sum_j P_ij V_j,                      acc_ps = sum_j P_ij S'_ij,
  acc_t  = sum_j P_ij V'_j + sum_j (P_ij S'_ij) V_j   (P V' and (P * S') V share one sum),
with P the unnormalised exp2(S log2(e) - m). At the end O = acc_o / l and
O' = acc_t / l - (acc_ps / l) O (docs/design.md section 2). Six GEMMs of N_q x N_k x d per head:
Q K^T, Q' K^T, Q K'^T, P V, P V', (P * S') V. Nothing of size N x N reaches memory.

Tensors are read through their strides (q, k, v may be views of a packed qkv tensor). Tiles
are powers of two wide, so a head dim is padded inside the kernels with masks, or, just above
a power of two, split in two parts each padded on its own (d = 72 -> 64 + 16, not 128): every
product over the head dim is then two dots, and every tile of it two tiles.
"""

from .triton_compat import dot, tl, triton, wide_mul

# Scores go through exp2, as in the Triton tutorial: log2(e) scales them into base 2, ln(2)
# brings the LSE back to natural units.
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# The lowest finite bias the kernels add, float32(-FLT_MAX * ln 2). Lower ones (Hugging Face
# masks with finfo(float32).min) would overflow to -inf in base 2, and the row would count as
# seeing no key instead of attending uniformly as SDPA does. At this value the LSE of a row
# masked whole survives the forward's ln 2 and the backward's log2(e) exactly, so the
# backward's exp2(s - lse) is 1 where the forward's was.
BIAS_MIN = tl.constexpr(-2.3586574359122396e38)


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
def _row_ptrs(X, off_b, off_h, first, stride_b, stride_h, stride_n, ROWS: tl.constexpr):
    """Pointers to rows ``first...first + ROWS`` of head ``(off_b, off_h)`` of X, at column 0
    (a column). ``off_b``, ``off_h`` are int64, and so is the first row's offset, which passes
    2**31 - 1 within one head (a dense bias past 46340 x 46340, a packed qkv of 3 x 1152 wide
    rows past 621378 tokens); the rows' offsets from it stay int32, a register each. With X = 0,
    the offsets alone (outputs that share strides)."""
    rows = tl.arange(0, ROWS)[:, None] * stride_n
    return X + off_b * stride_b + off_h * stride_h + wide_mul(first, stride_n) + rows


@triton.jit
def _add_bias(s, bias_ptrs, row_ok, col_ok):
    """Log2-domain scores ``s`` plus the bias at ``bias_ptrs`` (natural units, any float dtype,
    finite values below ``BIAS_MIN`` counted as ``BIAS_MIN``, -inf kept): a tile read where
    ``row_ok`` and ``col_ok`` both hold, or a row ``(1, cols)`` or column ``(rows, 1)``
    broadcast over the other dim (a key-padding mask: one value per key)."""
    if bias_ptrs.shape[0] == 1:
        bias = tl.load(bias_ptrs, mask=col_ok[None, :], other=0.0)
    elif bias_ptrs.shape[1] == 1:
        bias = tl.load(bias_ptrs, mask=row_ok[:, None], other=0.0)
    else:
        bias = tl.load(bias_ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    if bias.dtype == tl.float64:  # below -FLT_MAX it would be -inf in float32: clamp it first
        bias = tl.where((bias < BIAS_MIN) & (bias > float("-inf")), BIAS_MIN, bias)
    bias = bias.to(tl.float32)
    bias = tl.where((bias < BIAS_MIN) & (bias > float("-inf")), BIAS_MIN, bias)
    return s + bias * LOG2E


@triton.jit
def _query_major_bias_ptrs(
    BIAS, off_b, off_h, first_m, offs_n, stride_bb, stride_bh, stride_bm, stride_bn,
    KEY_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Pointers to the bias of queries ``first_m...first_m + BLOCK_M`` at keys ``offs_n``
    (the first key tile's), a (queries, keys) tile;
    with ``KEY_BIAS`` (the same row of keys for every query) a ``(1, keys)`` row, so that a
    key-padding mask is read once per key tile, not once per query."""
    if KEY_BIAS:
        ptrs = BIAS + off_b * stride_bb + off_h * stride_bh + offs_n[None, :] * stride_bn
    else:
        ptrs = (
            _row_ptrs(BIAS, off_b, off_h, first_m, stride_bb, stride_bh, stride_bm, BLOCK_M)
            + offs_n[None, :] * stride_bn
        )
    return ptrs


@triton.jit
def _lse_seeing_no_key_as_inf(lse2):
    """A row that saw no key has LSE -inf; as +inf, ``exp2(s - lse)`` gives it P = 0, not NaN."""
    return tl.where(lse2 == float("-inf"), float("inf"), lse2)


@triton.jit
def _part_ptrs(rows, offs_d, offs_e, stride_d):
    """The tiles of ``rows`` at the head dim's two parts: columns ``offs_d`` and ``offs_e``."""
    return rows + offs_d[None, :] * stride_d, rows + offs_e[None, :] * stride_d


@triton.jit
def _columns(HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    """The head dim's two parts: their column offsets, and which columns exist."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_e = BLOCK_D + tl.arange(0, BLOCK_E)
    return offs_d, offs_e, offs_d < HEAD_DIM, offs_e < HEAD_DIM


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
def _causal_key_ranges(first_query, n_k, n_full, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """For the causal query block starting at ``first_query``: the end of the key tiles its
    first query already sees whole (read unmasked; at most ``n_full``, the whole tiles of
    ``n_k`` keys), and the end of the keys its last query sees (the diagonal's tiles run up
    to there, masked). The first diagonal tile holds key 0 when no tile is whole."""
    n_whole = tl.minimum(n_full, ((first_query + 1) // BLOCK_N) * BLOCK_N)
    n_seen = tl.minimum(n_k, first_query + BLOCK_M)
    return n_whole, n_seen


@triton.jit
def _with_alignment(stride_b, stride_h, stride_n, ALIGN: tl.constexpr):
    """The strides, with their divisibility by ``ALIGN`` (checked by the launcher) made
    visible to the compiler. Triton only learns alignment from arguments divisible by 16;
    head dim 72 gives strides divisible by 8 only, and without this hint the K/V tiles are
    not loaded asynchronously (no cp.async pipelining) and the kernels spill registers."""
    if ALIGN > 1:
        return (stride_b // ALIGN) * ALIGN, (stride_h // ALIGN) * ALIGN, (stride_n // ALIGN) * ALIGN
    return stride_b, stride_h, stride_n


@triton.jit
def _kv_descriptors(X, offset, n_rows, stride_n, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr):  # fmt: skip
    """Tensor descriptors (TMA on Hopper) of one head's ``(n_rows, HEAD_DIM)`` rows at
    ``X + offset``, for the head dim's first part and, with ``SPLIT``, its second (else the
    first again, never read). Their loads fill rows past ``n_rows`` and columns past
    ``HEAD_DIM`` with zeros: no masks."""
    low = tl.make_tensor_descriptor(
        X + offset, shape=[n_rows, HEAD_DIM], strides=[stride_n, 1], block_shape=[ROWS, BLOCK_D]
    )
    high = low
    if SPLIT:
        high = tl.make_tensor_descriptor(
            X + offset, shape=[n_rows, HEAD_DIM], strides=[stride_n, 1], block_shape=[ROWS, BLOCK_E]
        )
    return low, high


@triton.jit
def _load_kv(src, start_n, stride_n, n_ok, col_ok, MASK_N: tl.constexpr, MASK_COLS: tl.constexpr,
             TMA: tl.constexpr, COL: tl.constexpr, WIDE: tl.constexpr):  # fmt: skip
    """Key rows ``start_n...`` of one head-dim part (from column ``COL``): ``src`` is a tensor
    descriptor (``TMA``) or the part's pointers at key row 0."""
    if TMA:  # the else matters: the compiler would build a statement after the if for TMA too
        tile = src.load([start_n, COL])
    else:
        tile = _load_tile(src + wide_mul(start_n, stride_n, WIDE), n_ok, col_ok, MASK_N, MASK_COLS)
    return tile


@triton.jit
def _attn_jvp_fwd_tile(
    acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
    k_src, kd_src, v_src, vd_src, k_src2, kd_src2, v_src2, vd_src2,
    stride_kn, stride_kdn, stride_vn, stride_vdn,
    start_n, n_k, offs_n, offs_m, d_ok, e_ok, qk_scale, scale, bias_ptrs, stride_bn, m_ok,
    MASK_N: tl.constexpr, MASK_D: tl.constexpr, MASK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
):  # fmt: skip
    """One K/V tile of the online-softmax JVP loop; ``*_src`` are the tensors' sources for
    :func:`_load_kv`, ``*2`` the head dim's second part (used only with ``SPLIT``). With
    ``MASK_N`` keys past ``n_k`` are masked, and with ``CAUSAL`` too keys after the query
    (``offs_m``: the tile's query rows): the tile must hold a key each row sees, or follow one
    that did (else the row's max is still -inf and alpha NaN). With ``HAS_BIAS`` the bias tile
    at ``bias_ptrs`` (key 0) is added to the scores, and a row that has seen only masked keys
    so far keeps a finite reference for its exponentials."""
    n_ok = (start_n + offs_n) < n_k
    k = _load_kv(k_src, start_n, stride_kn, n_ok, d_ok, MASK_N, MASK_D, TMA, 0, WIDE_ROWS)
    k_dot = _load_kv(kd_src, start_n, stride_kdn, n_ok, d_ok, MASK_N, MASK_D, TMA, 0, WIDE_ROWS)
    zero = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    s = dot(q, tl.trans(k), zero, PREC)
    s_dot = dot(q_dot, tl.trans(k), zero, PREC)
    s_dot = dot(q, tl.trans(k_dot), s_dot, PREC)
    if SPLIT:
        k2 = _load_kv(k_src2, start_n, stride_kn, n_ok, e_ok, MASK_N, MASK_E, TMA, q.shape[1], WIDE_ROWS)
        k_dot2 = _load_kv(
            kd_src2, start_n, stride_kdn, n_ok, e_ok, MASK_N, MASK_E, TMA, q.shape[1], WIDE_ROWS
        )
        s = dot(q2, tl.trans(k2), s, PREC)
        s_dot = dot(q_dot2, tl.trans(k2), s_dot, PREC)
        s_dot = dot(q2, tl.trans(k_dot2), s_dot, PREC)
    s = s * qk_scale  # log2 domain
    s_dot = s_dot * scale  # natural units, as in docs/design.md section 2
    if HAS_BIAS:
        s = _add_bias(s, bias_ptrs + wide_mul(start_n, stride_bn, WIDE_ROWS), m_ok, n_ok)
    if MASK_N:
        keep = n_ok[None, :]
        if CAUSAL:
            keep = keep & ((start_n + offs_n)[None, :] <= offs_m[:, None])
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_ref = m_new
    if HAS_BIAS:  # every key so far masked: exp2(-inf - -inf) would be NaN
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_ref)
    p = tl.math.exp2(s - m_ref[:, None])
    ps = p * s_dot
    l_i = l_i * alpha + tl.sum(p, 1)
    v = _load_kv(v_src, start_n, stride_vn, n_ok, d_ok, MASK_N, MASK_D, TMA, 0, WIDE_ROWS)
    v_dot = _load_kv(vd_src, start_n, stride_vdn, n_ok, d_ok, MASK_N, MASK_D, TMA, 0, WIDE_ROWS)
    p_lo, ps_lo = p.to(v.dtype), ps.to(v.dtype)
    # O' = acc_t / l - (acc_ps / l) O cancels the (P * S') V part of acc_t against acc_ps O only
    # if both sum the same values: the rounded ps_lo the dot takes. Summing the fp32 ps leaves
    # |S'| times their 16-bit rounding behind, an error that grows with the activations.
    acc_ps = acc_ps * alpha + tl.sum(ps_lo.to(tl.float32), 1)
    acc_o = dot(p_lo, v, acc_o * alpha[:, None], PREC)
    acc_t = dot(p_lo, v_dot, acc_t * alpha[:, None], PREC)
    acc_t = dot(ps_lo, v, acc_t, PREC)
    if SPLIT:
        v2 = _load_kv(v_src2, start_n, stride_vn, n_ok, e_ok, MASK_N, MASK_E, TMA, q.shape[1], WIDE_ROWS)
        v_dot2 = _load_kv(
            vd_src2, start_n, stride_vdn, n_ok, e_ok, MASK_N, MASK_E, TMA, q.shape[1], WIDE_ROWS
        )
        acc_o2 = dot(p_lo, v2, acc_o2 * alpha[:, None], PREC)
        acc_t2 = dot(p_lo, v_dot2, acc_t2 * alpha[:, None], PREC)
        acc_t2 = dot(ps_lo, v2, acc_t2, PREC)
    return acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_new, l_i


@triton.jit
def _attn_jvp_fwd_kernel(
    Q, K, V, QD, KD, VD, OUT, OUT_DOT, LSE, BIAS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_qdb, stride_qdh, stride_qdn, stride_qdd,
    stride_kdb, stride_kdh, stride_kdn, stride_kdd,
    stride_vdb, stride_vdh, stride_vdn, stride_vdd,
    stride_ob, stride_oh, stride_on,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, N_Q, N_K, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr, SPLIT: tl.constexpr,
    PREC: tl.constexpr, ALIGN: tl.constexpr, TMA: tl.constexpr, CAUSAL: tl.constexpr,
    KV_GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, KEY_BIAS: tl.constexpr, WIDE_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(N_Q, BLOCK_M), heads, batch)`` (:func:`attention.launch_grid`).

    Q, QD: (B, H, N_Q, HEAD_DIM); K, KD, V, VD: (B, H / KV_GROUP, N_K, HEAD_DIM), query head
    ``h`` reading key/value head ``h // KV_GROUP`` (grouped-query attention), any strides (with
    ``TMA``: unit head-dim stride, the others and the heads' starts 16-byte aligned; K, V and
    their tangents are then read through tensor descriptors).
    OUT, OUT_DOT: (B, H, N_Q, HEAD_DIM) with unit last stride; LSE: (B, H, N_Q) contiguous float32.
    Head-dim columns ``[0, BLOCK_D)`` and, with ``SPLIT``, ``[BLOCK_D, BLOCK_D + BLOCK_E)``.
    ``CAUSAL``: query ``i`` sees keys ``j <= i`` only (top-left aligned, as SDPA's ``is_causal``).
    ``HAS_BIAS``: BIAS, (B, H, N_Q, N_K) at any strides (0 where it broadcasts), is added to
    the scaled scores; a row that sees no key gets O = O' = 0 and LSE = -inf. ``KEY_BIAS``:
    its query stride is 0 (a key-padding mask), read as one row of keys. ``WIDE_ROWS``: the
    K/V loop's offsets (key position times row stride) in int64 (``attention.wide_rows``).
    """
    MASK_D: tl.constexpr = BLOCK_D > HEAD_DIM
    MASK_E: tl.constexpr = BLOCK_D + BLOCK_E > HEAD_DIM
    stride_qb, stride_qh, stride_qn = _with_alignment(stride_qb, stride_qh, stride_qn, ALIGN)
    stride_kb, stride_kh, stride_kn = _with_alignment(stride_kb, stride_kh, stride_kn, ALIGN)
    stride_vb, stride_vh, stride_vn = _with_alignment(stride_vb, stride_vh, stride_vn, ALIGN)
    stride_qdb, stride_qdh, stride_qdn = _with_alignment(stride_qdb, stride_qdh, stride_qdn, ALIGN)
    stride_kdb, stride_kdh, stride_kdn = _with_alignment(stride_kdb, stride_kdh, stride_kdn, ALIGN)
    stride_vdb, stride_vdh, stride_vdn = _with_alignment(stride_vdb, stride_vdh, stride_vdn, ALIGN)
    stride_ob, stride_oh, stride_on = _with_alignment(stride_ob, stride_oh, stride_on, ALIGN)
    first_m = tl.program_id(0) * BLOCK_M
    off_h = tl.program_id(1).to(tl.int64)
    off_b = tl.program_id(2).to(tl.int64)
    pid_bh = off_b * H + off_h
    off_kv = off_h // KV_GROUP
    offs_m = first_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d, offs_e, d_ok, e_ok = _columns(HEAD_DIM, BLOCK_D, BLOCK_E)
    m_ok = offs_m < N_Q

    # Row pointers (one column); each part of the head dim adds its own columns.
    q_rows = _row_ptrs(Q, off_b, off_h, first_m, stride_qb, stride_qh, stride_qn, BLOCK_M)
    qd_rows = _row_ptrs(QD, off_b, off_h, first_m, stride_qdb, stride_qdh, stride_qdn, BLOCK_M)
    k_rows = _row_ptrs(K, off_b, off_kv, 0, stride_kb, stride_kh, stride_kn, BLOCK_N)
    kd_rows = _row_ptrs(KD, off_b, off_kv, 0, stride_kdb, stride_kdh, stride_kdn, BLOCK_N)
    v_rows = _row_ptrs(V, off_b, off_kv, 0, stride_vb, stride_vh, stride_vn, BLOCK_N)
    vd_rows = _row_ptrs(VD, off_b, off_kv, 0, stride_vdb, stride_vdh, stride_vdn, BLOCK_N)
    q, q2 = _load_parts(
        q_rows, offs_d, offs_e, stride_qd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    q_dot, q_dot2 = _load_parts(
        qd_rows, offs_d, offs_e, stride_qdd, m_ok, d_ok, e_ok, BLOCK_M, BLOCK_E, MASK_D, MASK_E, SPLIT
    )
    if TMA:
        k_src, k_src2 = _kv_descriptors(
            K, off_b * stride_kb + off_kv * stride_kh, N_K, stride_kn,
            HEAD_DIM, BLOCK_N, BLOCK_D, BLOCK_E, SPLIT,
        )  # fmt: skip
        kd_src, kd_src2 = _kv_descriptors(
            KD, off_b * stride_kdb + off_kv * stride_kdh, N_K, stride_kdn,
            HEAD_DIM, BLOCK_N, BLOCK_D, BLOCK_E, SPLIT,
        )  # fmt: skip
        v_src, v_src2 = _kv_descriptors(
            V, off_b * stride_vb + off_kv * stride_vh, N_K, stride_vn,
            HEAD_DIM, BLOCK_N, BLOCK_D, BLOCK_E, SPLIT,
        )  # fmt: skip
        vd_src, vd_src2 = _kv_descriptors(
            VD, off_b * stride_vdb + off_kv * stride_vdh, N_K, stride_vdn,
            HEAD_DIM, BLOCK_N, BLOCK_D, BLOCK_E, SPLIT,
        )  # fmt: skip
    else:
        k_src, k_src2 = _part_ptrs(k_rows, offs_d, offs_e, stride_kd)
        kd_src, kd_src2 = _part_ptrs(kd_rows, offs_d, offs_e, stride_kdd)
        v_src, v_src2 = _part_ptrs(v_rows, offs_d, offs_e, stride_vd)
        vd_src, vd_src2 = _part_ptrs(vd_rows, offs_d, offs_e, stride_vdd)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc_ps = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc_o = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc_o2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    acc_t2 = tl.zeros([BLOCK_M, BLOCK_E], dtype=tl.float32)
    qk_scale = scale * LOG2E
    bias_ptrs = _query_major_bias_ptrs(
        BIAS, off_b, off_h, first_m, offs_n, stride_bb, stride_bh, stride_bm, stride_bn, KEY_BIAS, BLOCK_M
    )

    # Full key tiles without row masks, then the ragged last tile (if any) with them. Causal:
    # the tiles every row of the block sees whole, then those on the diagonal, masked.
    n_full = (N_K // BLOCK_N) * BLOCK_N
    if CAUSAL:
        n_whole, n_seen = _causal_key_ranges(first_m, N_K, n_full, BLOCK_M, BLOCK_N)
    else:
        n_whole = n_full
    for start_n in range(0, n_whole, BLOCK_N):
        acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i = _attn_jvp_fwd_tile(
            acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
            k_src, kd_src, v_src, vd_src, k_src2, kd_src2, v_src2, vd_src2,
            stride_kn, stride_kdn, stride_vn, stride_vdn,
            start_n, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, scale, bias_ptrs, stride_bn, m_ok,
            False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, TMA, False, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip
    if CAUSAL:
        for start_n in range(n_whole, n_seen, BLOCK_N):
            acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i = _attn_jvp_fwd_tile(
                acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
                k_src, kd_src, v_src, vd_src, k_src2, kd_src2, v_src2, vd_src2,
                stride_kn, stride_kdn, stride_vn, stride_vdn,
                start_n, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, scale, bias_ptrs, stride_bn, m_ok,
                True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, TMA, True, HAS_BIAS, WIDE_ROWS,
            )  # fmt: skip
    elif n_full < N_K:
        acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i = _attn_jvp_fwd_tile(
            acc_o, acc_o2, acc_t, acc_t2, acc_ps, m_i, l_i, q, q2, q_dot, q_dot2,
            k_src, kd_src, v_src, vd_src, k_src2, kd_src2, v_src2, vd_src2,
            stride_kn, stride_kdn, stride_vn, stride_vdn,
            n_full, N_K, offs_n, offs_m, d_ok, e_ok, qk_scale, scale, bias_ptrs, stride_bn, m_ok,
            True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, TMA, False, HAS_BIAS, WIDE_ROWS,
        )  # fmt: skip

    inv_l = 1.0 / l_i
    if HAS_BIAS:  # rows that see no key: zeros, as math SDPA
        inv_l = tl.where(l_i > 0, inv_l, 0.0)
    ps_mean = acc_ps * inv_l
    o = acc_o * inv_l[:, None]
    o_dot = acc_t * inv_l[:, None] - ps_mean[:, None] * o
    lse = (m_i + tl.math.log2(l_i)) * LN2

    out_rows = _row_ptrs(0, off_b, off_h, first_m, stride_ob, stride_oh, stride_on, BLOCK_M)
    out_mask = m_ok[:, None] & d_ok[None, :]
    tl.store(OUT + out_rows + offs_d[None, :], o.to(OUT.dtype.element_ty), mask=out_mask)
    tl.store(OUT_DOT + out_rows + offs_d[None, :], o_dot.to(OUT_DOT.dtype.element_ty), mask=out_mask)
    if SPLIT:
        o2 = acc_o2 * inv_l[:, None]
        o_dot2 = acc_t2 * inv_l[:, None] - ps_mean[:, None] * o2
        out_mask2 = m_ok[:, None] & e_ok[None, :]
        tl.store(OUT + out_rows + offs_e[None, :], o2.to(OUT.dtype.element_ty), mask=out_mask2)
        tl.store(OUT_DOT + out_rows + offs_e[None, :], o_dot2.to(OUT_DOT.dtype.element_ty), mask=out_mask2)
    tl.store(LSE + pid_bh * N_Q + offs_m, lse, mask=m_ok)
