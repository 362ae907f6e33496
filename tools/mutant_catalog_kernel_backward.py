"""The catalog's mutants of the attention backward kernels and the dual ops' Python side
(``mfkernels/backends/triton/attention_backward_kernels.py``, ``mfkernels/ops.py``). Each is a
bug that gives a gradient other than the float64 reference's without a word, or lets an input
through that the ops refuse. The backward kernels have no GPU-only path of their own (the TMA
loads are the forward's; ``WIDE_ROWS`` only widens offsets, tests/mfkernels/test_index_width.py),
so every mutant here runs in the Triton interpreter."""

from mutant import Mutant

__all__ = ["KERNEL_BACKWARD_MUTANTS"]

_BWD = "mfkernels/backends/triton/attention_backward_kernels.py"
_OPS = "mfkernels/ops.py"
_JVP = "tests/mfkernels/test_attention_jvp.py::"
_GB = "tests/mfkernels/test_attention_groups_and_bias.py::"
SPLIT = (_JVP + "test_fp32_kernel_variants[default-40-90-96]",)  # ragged both ways, d in two parts
ONE_KEY = (_JVP + "test_fp32_kernel_variants[default-130-1-72]",)
ATOMIC = (_JVP + "test_fp32_kernel_variants[atomic_dq-40-90-96]",)
CAUSAL = (
    _JVP + "test_fp32_causal[default-81-81-72-config0]",
    _JVP + "test_fp32_causal[default-40-90-16-config1]",
    _JVP + "test_fp32_causal[default-90-40-16-config2]",
)
CAUSAL_ATOMIC = (_JVP + "test_fp32_causal[atomic_dq-81-81-72-config0]",)
PER_QUERY_BIAS = (_GB + "test_fp32_bias[default-40-37-72-False-per_query]",)
KEY_BIAS = (_GB + "test_fp32_bias[default-17-70-16-False-key_padding]",)
GROUPED_ATOMIC = (_GB + "test_fp32_grouped_query_heads[atomic_dq-False-4-2]",)
NEGATIVE = (_JVP + "test_fp32_very_negative_logits_stay_finite[default]",)
SHAPES = ("tests/mfkernels/test_reference_ops.py::test_attention_shape_errors",)
# Q, K, V and dO of four layouts: every other test's K and V (and O and dO) share strides.
_LAYOUTS = "tests/mfkernels/test_attention_operand_layouts.py::test_fp32_q_k_v_and_grad_of_four_layouts"
LAYOUTS = (_LAYOUTS + "[40-37-72-False]",)
V_CHECKS = (
    "tests/mfkernels/test_input_errors_attention.py::test_what_only_v_or_a_flag_gets_wrong_is_refused",
)

KERNEL_BACKWARD_MUTANTS = [
    # ------------------------------------------------------------------ delta = rowsum(dO * O)
    Mutant(
        "kbwd-delta-reads-padded-columns",
        _BWD,
        "mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]",
        "mask = (offs_m < N_Q)[:, None]",
        SPLIT,
        "delta sums dO * O over the padded head-dim columns too: the next head's or row's values",
    ),
    Mutant(
        "kbwd-delta-o-strides-for-do",
        _BWD,
        "do_rows = _row_ptrs(DO, off_b, off_h, first_m, stride_dob, stride_doh, stride_don, BLOCK_M)\n"
        "    o = tl.load",
        "do_rows = _row_ptrs(DO, off_b, off_h, first_m, stride_ob, stride_oh, stride_on, BLOCK_M)\n"
        "    o = tl.load",
        LAYOUTS + SPLIT,
        "delta reads dO with O's strides: a gradient in another layout than O's (a merged-heads view)",
    ),
    Mutant(
        "kbwd-delta-o-column-stride-for-do",
        _BWD,
        "do = tl.load(do_rows + offs_d[None, :] * stride_dod, mask=mask, other=0.0)",
        "do = tl.load(do_rows + offs_d[None, :] * stride_od, mask=mask, other=0.0)",
        LAYOUTS + SPLIT,
        "delta reads dO's columns with O's head-dim stride",
    ),
    # ------------------------------------------------------------------------ dK/dV query tile
    Mutant(
        "kbwd-dkdv-ragged-lse-natural-units",
        _BWD,
        'lse2 = tl.load(lse_ptrs, mask=m_ok, other=float("inf")) * LOG2E',
        'lse2 = tl.load(lse_ptrs, mask=m_ok, other=float("inf"))',
        SPLIT,
        "the ragged last query tile subtracts the LSE in natural units",
    ),
    Mutant(
        "kbwd-dkdv-scores-without-log2e",
        _BWD,
        "    qk_scale = scale * LOG2E\n\n    dk = tl.zeros",
        "    qk_scale = scale\n\n    dk = tl.zeros",
        SPLIT,
        "the dK/dV kernel's scores in natural units against a log2 LSE",
    ),
    Mutant(
        "kbwd-dkdv-rows-past-nq-read",
        _BWD,
        "    m_ok = (start_m + offs_m) < n_q\n    q = _load_tile",
        "    m_ok = (start_m + offs_m) <= n_q\n    q = _load_tile",
        SPLIT,
        "one query row past the sequence counted in dK and dV (the next head's row and LSE)",
    ),
    Mutant(
        "kbwd-dkdv-second-part-of-dp-dropped",
        _BWD,
        "dp_t = dot(v2, tl.trans(do2), dp_t, PREC)",
        "dp_t = dp_t",
        SPLIT,
        "dP = dO V^T without the second head-dim part",
    ),
    Mutant(
        "kbwd-dkdv-delta-of-keys",
        _BWD,
        "ds_t = (p_t * (dp_t - delta[None, :]))",
        "ds_t = (p_t * (dp_t - delta[:, None]))",
        SPLIT,
        "dS^T subtracts delta along keys, not queries (square tiles broadcast it without an error)",
    ),
    Mutant(
        "kbwd-dkdv-dk-unscaled",
        _BWD,
        "tl.store(DK + out_rows + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=out_mask)",
        "tl.store(DK + out_rows + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=out_mask)",
        SPLIT,
        "dK without the softmax scale",
    ),
    Mutant(
        "kbwd-dkdv-v-strides-of-k",
        _BWD,
        "v_rows = _row_ptrs(V, off_b, off_h, first_n, stride_vb, stride_vh, stride_vn, BLOCK_N)",
        "v_rows = _row_ptrs(V, off_b, off_h, first_n, stride_kb, stride_kh, stride_kn, BLOCK_N)",
        LAYOUTS + SPLIT,
        "the dK/dV kernel reads V with K's strides: right only while both share a layout",
    ),
    Mutant(
        "kbwd-dkdv-v-column-stride-of-k",
        _BWD,
        "v_rows, offs_d, offs_e, stride_vd, n_ok",
        "v_rows, offs_d, offs_e, stride_kd, n_ok",
        LAYOUTS + SPLIT,
        "the dK/dV kernel reads V's columns with K's head-dim stride",
    ),
    Mutant(
        "kbwd-dkdv-do-steps-by-q-rows",
        _BWD,
        "wide_mul(start_m, stride_don, WIDE_ROWS)",
        "wide_mul(start_m, stride_qn, WIDE_ROWS)",
        SPLIT,
        "the dK/dV loop steps dO by Q's row stride",
    ),
    Mutant(
        "kbwd-atomic-dq-steps-by-q-rows",
        _BWD,
        "dq_step = wide_mul(start_m, stride_an, WIDE_ROWS)",
        "dq_step = wide_mul(start_m, stride_qn, WIDE_ROWS)",
        ATOMIC + CAUSAL_ATOMIC,
        "the atomic dQ sums step by Q's row stride: a packed qkv adds each tile's dQ rows far apart",
    ),
    Mutant(
        "kbwd-atomic-dq-of-the-kv-head",
        _BWD,
        "dq_rows = _row_ptrs(DQ_ACC, off_b, off_hq, 0, stride_ab, stride_ah, stride_an, BLOCK_M)",
        "dq_rows = _row_ptrs(DQ_ACC, off_b, off_h, 0, stride_ab, stride_ah, stride_an, BLOCK_M)",
        GROUPED_ATOMIC,
        "grouped heads' atomic dQ added into the key/value head's query head",
    ),
    # -------------------------------------------------------------- dK/dV loop over query tiles
    Mutant(
        "kbwd-dkdv-last-tile-read-whole",
        _BWD,
        "m_full = (N_Q // BLOCK_M) * BLOCK_M",
        "m_full = tl.cdiv(N_Q, BLOCK_M) * BLOCK_M",
        SPLIT,
        "the ragged last query tile read unmasked, past the sequence",
    ),
    Mutant(
        "kbwd-dkdv-ragged-tile-skipped",
        _BWD,
        "    if m_full < N_Q:",
        "    if m_full + BLOCK_M < N_Q:",
        SPLIT,
        "the ragged last query tile left out of dK and dV",
    ),
    Mutant(
        "kbwd-dkdv-causal-diagonal-tile-whole",
        _BWD,
        "tl.cdiv(first_key + BLOCK_N - 1, BLOCK_M) * BLOCK_M",
        "((first_key + BLOCK_N - 1) // BLOCK_M) * BLOCK_M",
        CAUSAL,
        "the causal dK/dV loop reads the query tile holding the block's last key unmasked",
    ),
    Mutant(
        "kbwd-dkdv-causal-past-the-whole-tiles",
        _BWD,
        "m_whole = tl.minimum(m_full, tl.cdiv(",
        "m_whole = tl.maximum(m_full, tl.cdiv(",
        CAUSAL,
        "the causal masked loop runs into the ragged tile, which then counts twice",
    ),
    Mutant(
        "kbwd-dkdv-causal-ragged-tile-unmasked",
        _BWD,
        "True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, CAUSAL, HAS_BIAS, WIDE_ROWS,",
        "True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, ATOMIC_DQ, False, HAS_BIAS, WIDE_ROWS,",
        CAUSAL,
        "the ragged last query tile of causal attention sees the keys after each query",
    ),
    # ------------------------------------------------------------------ dK/dV bias and masks
    Mutant(
        "kbwd-dkdv-bias-of-query-tile-0",
        _BWD,
        "bias_ptrs = bias_ptrs + wide_mul(start_m, stride_bm, WIDE_ROWS)",
        "bias_ptrs = bias_ptrs",
        PER_QUERY_BIAS,
        "every query tile of the dK/dV loop adds the first query tile's bias",
    ),
    Mutant(
        "kbwd-dkdv-bias-one-query-column",
        _BWD,
        "        if not KEY_BIAS:\n            bias_ptrs = bias_ptrs + offs_m[None, :] * stride_bm",
        "        if False:\n            bias_ptrs = bias_ptrs + offs_m[None, :] * stride_bm",
        PER_QUERY_BIAS,
        "the dK/dV kernel reads a per-query bias as a key-padding row (the first query's)",
    ),
    Mutant(
        "kbwd-dkdv-bias-keys-by-query-stride",
        _BWD,
        "first_n, stride_bb, stride_bh, stride_bn, BLOCK_N)",
        "first_n, stride_bb, stride_bh, stride_bm, BLOCK_N)",
        KEY_BIAS + PER_QUERY_BIAS,
        "the dK/dV kernel steps the bias's key rows by its query stride (0 for a key-padding mask)",
    ),
    Mutant(
        "kbwd-dkdv-empty-rows-lse-taken",
        _BWD,
        "        lse2 = _lse_seeing_no_key_as_inf(lse2)\n    # Key rows",
        "        lse2 = lse2\n    # Key rows",
        PER_QUERY_BIAS,
        "a row that sees no key (LSE -inf) gives -inf - -inf = NaN in dK and dV",
    ),
    # --------------------------------------------------------------------------------- dQ kernel
    Mutant(
        "kbwd-dq-lse-of-batch-0",
        _BWD,
        "lse2 = tl.load(LSE + pid_bh * N_Q + offs_m, mask=m_ok, other=0.0) * LOG2E",
        "lse2 = tl.load(LSE + off_h * N_Q + offs_m, mask=m_ok, other=0.0) * LOG2E",
        SPLIT,
        "every batch's dQ uses batch 0's LSE",
    ),
    Mutant(
        "kbwd-dq-causal-diagonal-masked",
        _BWD,
        "keep = keep & ((start_n + offs_n)[None, :] <= offs_m[:, None])",
        "keep = keep & ((start_n + offs_n)[None, :] < offs_m[:, None])",
        CAUSAL,
        "the causal dQ kernel drops the query's own key",
    ),
    Mutant(
        "kbwd-dq-causal-diagonal-unmasked",
        _BWD,
        "True, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, True, HAS_BIAS, WIDE_ROWS,",
        "False, MASK_D, MASK_E, SPLIT, PREC, BLOCK_M, BLOCK_N, True, HAS_BIAS, WIDE_ROWS,",
        CAUSAL,
        "the causal dQ kernel's diagonal tiles read without the mask that holds the causal test",
    ),
    Mutant(
        "kbwd-dq-ragged-keys-unmasked",
        _BWD,
        "    if MASK_N:\n        # Zero K rows",
        "    if CAUSAL:\n        # Zero K rows",
        NEGATIVE,
        "the ragged key tile's padded rows give exp2(-lse) * 0 in dQ: NaN once every logit is below -89",
    ),
    Mutant(
        "kbwd-dq-ragged-tile-off-by-one",
        _BWD,
        "    elif n_full < N_K:",
        "    elif n_full + 1 < N_K:",
        (_LAYOUTS + "[17-33-40-False]",) + ONE_KEY,
        "a last key tile of one key (N_K = 32 k + 1) left out of dQ",
    ),
    Mutant(
        "kbwd-dq-bias-of-key-tile-0",
        _BWD,
        "s = _add_bias(s, bias_ptrs + wide_mul(start_n, stride_bn, WIDE_ROWS), m_ok, n_ok)",
        "s = _add_bias(s, bias_ptrs, m_ok, n_ok)",
        KEY_BIAS,
        "every key tile of the dQ loop adds the first key tile's bias",
    ),
    Mutant(
        "kbwd-dq-empty-rows-lse-taken",
        _BWD,
        "        lse2 = _lse_seeing_no_key_as_inf(lse2)\n    bias_ptrs",
        "        lse2 = lse2\n    bias_ptrs",
        PER_QUERY_BIAS,
        "a row that sees no key gives NaN in dQ",
    ),
    Mutant(
        "kbwd-dq-v-row-stride-of-k",
        _BWD,
        "v_rows = _row_ptrs(V, off_b, off_kv, 0, stride_vb, stride_vh, stride_vn, BLOCK_N)",
        "v_rows = _row_ptrs(V, off_b, off_kv, 0, stride_vb, stride_vh, stride_kn, BLOCK_N)",
        LAYOUTS + SPLIT,
        "the dQ kernel reads V's rows with K's row stride",
    ),
    Mutant(
        "kbwd-dq-v-steps-by-k-rows",
        _BWD,
        "wide_mul(n_full, stride_vn, WIDE_ROWS)",
        "wide_mul(n_full, stride_kn, WIDE_ROWS)",
        LAYOUTS + SPLIT,
        "the dQ kernel's ragged key tile steps V by K's row stride",
    ),
    Mutant(
        "kbwd-dq-do-column-stride-of-q",
        _BWD,
        "do_rows, offs_d, offs_e, stride_dod, m_ok",
        "do_rows, offs_d, offs_e, stride_qd, m_ok",
        LAYOUTS + SPLIT,
        "the dQ kernel reads dO's columns with Q's head-dim stride",
    ),
    Mutant(
        "kbwd-dq2-unscaled",
        _BWD,
        "(dq2 * scale).to(DQ.dtype.element_ty)",
        "dq2.to(DQ.dtype.element_ty)",
        SPLIT,
        "the second head-dim part of dQ without the softmax scale",
    ),
    # ------------------------------------------------------------------------- mfkernels/ops.py
    Mutant(
        "kbwd-ops-v-batch-unchecked",
        _OPS,
        "if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:",
        "if k.shape[0] != q.shape[0]:",
        V_CHECKS + SHAPES,
        "v of another batch size broadcast against q and k instead of refused",
    ),
    Mutant(
        "kbwd-ops-v-heads-unchecked",
        _OPS,
        "if v.shape[1] != k.shape[1] or q.shape[1] % k.shape[1]:",
        "if q.shape[1] % k.shape[1]:",
        V_CHECKS + SHAPES,
        "v with other heads than k let through",
    ),
    Mutant(
        "kbwd-ops-empty-keys-taken",
        _OPS,
        "if q.shape[2] < 1 or k.shape[2] < 1:",
        "if q.shape[2] < 1:",
        V_CHECKS + SHAPES,
        "no keys at all let through: a softmax over nothing",
    ),
    Mutant(
        "kbwd-ops-empty-value-head-dim-taken",
        _OPS,
        "if q.shape[-1] < 1 or v.shape[-1] < 1:",
        "if q.shape[-1] < 1:",
        V_CHECKS + SHAPES,
        "values of head dim 0 let through",
    ),
    Mutant(
        "kbwd-ops-causal-not-a-bool-taken",
        _OPS,
        "    if not isinstance(causal, bool):\n",
        "    if False:\n",
        V_CHECKS + SHAPES,
        "causal='no' taken as True",
    ),
    Mutant(
        "kbwd-ops-v-tangent-unchecked",
        _OPS,
        '    check_pair("v", v, v_dot)\n',
        "",
        V_CHECKS + SHAPES,
        "a v_dot of another shape than v let into the kernels",
    ),
    Mutant(
        "kbwd-ops-outputs-not-heads-inner",
        _OPS,
        "return _heads_inner(o), _heads_inner(o_dot), lse.contiguous()",
        "return o, o_dot, lse.contiguous()",
        ("tests/mfkernels/test_attention_jvp.py::test_outputs_are_laid_out_heads_inner",),
        "O and O' in whatever layout a backend gives, not the layout the fake op promises",
    ),
    Mutant(
        "kbwd-ops-residual-f-shape-unchecked",
        _OPS,
        "    if f.shape != x.shape:\n",
        "    if False:\n",
        ("tests/mfkernels/test_residual.py::test_a_branch_that_would_broadcast_over_tokens_is_refused",),
        "gated_residual_jvp broadcasts an f of another shape than x",
    ),
    Mutant(
        "kbwd-ops-residual-df-in-gate-dtype",
        _OPS,
        "return dgate.to(gate.dtype), df.to(f.dtype).contiguous()",
        "return dgate.to(gate.dtype), df.to(gate.dtype).contiguous()",
        ("tests/mfkernels/test_residual.py",),
        "f's gradient in the gate's dtype: an fp32 adaLN gate with a bf16 branch",
    ),
    Mutant(
        "kbwd-ops-gelu-dbias-in-input-dtype",
        _OPS,
        "return dx.to(x.dtype).contiguous(), dbias.to(reference.compute_dtype(x.dtype))",
        "return dx.to(x.dtype).contiguous(), dbias.to(x.dtype)",
        ("tests/mfkernels/test_activations.py",),
        "an fp32 GELU bias beside bf16 activations gets its gradient sum rounded to bf16",
    ),
    Mutant(
        "kbwd-ops-ln-modulate-saves-shift-for-scale",
        _OPS,
        "    ctx.save_for_backward(x, scale)\n",
        "    ctx.save_for_backward(x, shift)\n",
        ("tests/mfkernels/test_layernorm_modulate.py",),
        "LayerNorm-modulate's backward takes the shift for the scale",
    ),
    Mutant(
        "kbwd-ops-ln-modulate-scale-unchecked",
        _OPS,
        '    check_modulation("scale", scale, x)\n    check_same_device(x=x, shift=shift, scale=scale)\n'
        "    check_eps(eps)\n    return",
        "    check_same_device(x=x, shift=shift, scale=scale)\n    check_eps(eps)\n    return",
        ("tests/mfkernels/test_input_checks.py::test_a_scale_of_another_shape_than_batch_by_dim_is_refused",),
        "layernorm_modulate_jvp takes a (dim,) scale and broadcasts it over tokens",
    ),
]
