"""The catalog's mutants of the kernels' Python modules around the kernels: the float64 oracle
(``mfkernels/reference.py``), the time embedding, the input checks and the ops' own checks,
the eager path (``DualOp``), the output layouts, the launch settings, the copies the Triton
launchers make of views their kernels cannot read, the csrc extension's Python side and the
deprecated module paths (``tools/mutant_catalog_kernels.py`` holds the kernels' own,
``tools/mutant_catalog.py`` the rules).

The oracle's mutants name only the tests that check it against float64 ``torch.func.jvp`` or
autograd of plain torch formulas: a bug shared by the oracle and a kernel passes every
kernel-against-oracle test, so those must not be what kills them."""

from mutant import Mutant

ORACLE = ("tests/mfkernels/test_reference_oracle.py", "tests/mfkernels/test_reference_ops.py")
CHECKS = ("tests/mfkernels/test_input_checks.py", "tests/mfkernels/test_reference_ops.py")
LAUNCH = ("tests/mfkernels/test_launch_settings.py",)
STRIDED = ("tests/mfkernels/test_csrc_inputs.py::test_vectors_with_strided_columns",)
GRAD_DTYPE = (
    "tests/mfkernels/test_csrc_inputs.py::test_layernorm_backward_op_takes_a_float32_gradient_of_bf16_x",
)
DEPRECATED = ("tests/mfkernels/test_deprecated_paths.py",)
CSRC = ("tests/mfkernels/test_csrc_ops.py", "tests/mfkernels/test_csrc_inputs.py")
LAYOUT = ("tests/mfkernels/test_attention_jvp.py::test_outputs_are_laid_out_heads_inner",)
GELU_TILES = ("tests/mfkernels/test_activations.py::test_gelu_gpu_tiles",)
EMB_INPUTS = ("tests/mfkernels/test_timestep_embedding_inputs.py",)
VIEWS = ("tests/mfkernels/test_unusual_layouts.py",)
WIDTH = "tests/mfkernels/test_index_width.py::"
SDPA_MASK = ("tests/mfkernels/test_sdpa_inputs.py::test_a_float_mask_sdpa_refuses_is_refused_naming_it",)

_REF = "mfkernels/reference.py"
_EMB = "mfkernels/embedding.py"
_CHECKS = "mfkernels/_checks.py"
_LAUNCH = "mfkernels/backends/triton/launch.py"
_CSRC = "mfkernels/backends/csrc.py"
_TRITON = "mfkernels/backends/triton/"

MODULE_MUTANTS = [
    # ------------------------------------------------------------- mfkernels/reference.py
    Mutant(
        "ref-compute-dtype-keeps-16-bit",
        _REF,
        "return torch.float64 if dtype == torch.float64 else torch.float32",
        "return torch.float64 if dtype == torch.float64 else dtype",
        ORACLE,
        "the oracle (and every backend that asks it) computes bf16 inputs in bf16",
    ),
    Mutant(
        "ref-ln-jvp-unbiased-variance",
        _REF,
        "    var = (xf - mean).square().mean(-1, keepdim=True)\n    rstd = torch.rsqrt(var + eps)",
        "    var = xf.var(-1, keepdim=True)\n    rstd = torch.rsqrt(var + eps)",
        ORACLE,
        "LayerNorm's variance with Bessel's correction (torch.var's default)",
    ),
    Mutant(
        "ref-ln-primal-torch-default-eps",
        _REF,
        "    a = (xf - mean) * torch.rsqrt(var + eps)\n",
        "    a = (xf - mean) * torch.rsqrt(var + 1e-5)\n",
        ORACLE,
        "the primal-only LayerNorm with nn.LayerNorm's default eps, not the one passed",
    ),
    Mutant(
        "ref-ln-bwd-dscale-from-da",
        _REF,
        "return dx, gf.sum(1), (gf * a).sum(1)",
        "return dx, gf.sum(1), (da * a).sum(1)",
        ORACLE,
        "dscale summed from dm (1 + scale) instead of dm",
    ),
    Mutant(
        "ref-gelu-derivative-cubic-slope",
        _REF,
        "(1 + 3 * GELU_TANH_C * x**2)",
        "(1 + GELU_TANH_C * x**2)",
        ORACLE,
        "d/dx (x + C x^3) taken as 1 + C x^2",
    ),
    Mutant(
        "ref-sum-rows-of-no-features",
        _REF,
        "return t.reshape(math.prod(t.shape[:-1]), t.shape[-1]).sum(0, dtype=dtype)",
        "return t.reshape(-1, t.shape[-1]).sum(0, dtype=dtype)",
        ("tests/mfkernels/test_empty_features.py",),
        "a bias or weight gradient over rows of no features raises (reshape(-1, 0) is ambiguous)",
    ),
    Mutant(
        "ref-gelu-dbias-from-rounded-dx",
        _REF,
        "dbias = None if bias is None else sum_rows(dx)",
        "dbias = None if bias is None else sum_rows(dx.to(x.dtype), dtype=dx.dtype)",
        ORACLE,
        "the bias gradient summed from dx rounded to bf16, not the unrounded dx",
    ),
    Mutant(
        "ref-silu-derivative-sign",
        _REF,
        "return sig * (1 + x * (1 - sig))",
        "return sig * (1 + x * sig)",
        ORACLE,
        "silu' with sigmoid(x) where 1 - sigmoid(x) belongs",
    ),
    Mutant(
        "ref-residual-bwd-dgate-misses-f",
        _REF,
        "return gf, (gf * ff).sum(1), gf * g[:, None]",
        "return gf, gf.sum(1), gf * g[:, None]",
        ORACLE,
        "dgate without the factor f",
    ),
    Mutant(
        "ref-attn-bwd-drops-delta",
        _REF,
        "ds = p * (gf @ vf.transpose(-1, -2) - (gf * of).sum(-1, keepdim=True))",
        "ds = p * (gf @ vf.transpose(-1, -2))",
        ORACLE,
        "dS without -rowsum(dO * O): the softmax's Jacobian half dropped",
    ),
    Mutant(
        "ref-attn-bwd-dk-dv-swapped",
        _REF,
        "return scale * ds @ kf, sum_groups(dk, kv_heads), sum_groups(dv, kv_heads)",
        "return scale * ds @ kf, sum_groups(dv, kv_heads), sum_groups(dk, kv_heads)",
        ORACLE,
        "dK and dV returned in each other's place",
    ),
    Mutant(
        "ref-attn-jvp-sdot-drops-kdot",
        _REF,
        "s_dot = scale * (qdf @ kf.transpose(-1, -2) + qf @ kdf.transpose(-1, -2))",
        "s_dot = scale * (qdf @ kf.transpose(-1, -2))",
        ORACLE,
        "S' without Q K'^T: the product rule's second term dropped",
    ),
    Mutant(
        "ref-attn-empty-rows-nan",
        _REF,
        'return torch.exp(s - lse.masked_fill(lse == float("-inf"), float("inf"))[..., None])',
        "return torch.exp(s - lse[..., None])",
        ORACLE,
        "a row that sees no key gets exp(-inf + inf) = NaN, not 0",
    ),
    Mutant(
        "ref-sum-groups-interleaved",
        _REF,
        "return grad.reshape(batch, kv_heads, heads // kv_heads, *rest).sum(2)",
        "return grad.reshape(batch, heads // kv_heads, kv_heads, *rest).sum(1)",
        ORACLE,
        "grouped heads summed as if query head h read key head h % kv_heads",
    ),
    Mutant(
        "ref-causal-mask-strict",
        _REF,
        "return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril()",
        "return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(-1)",
        ORACLE,
        "a query no longer sees its own key",
    ),
    Mutant(
        "ref-rms-bwd-dweight-from-dn",
        _REF,
        "dweight = None if weight is None else sum_rows(gf * n)",
        "dweight = None if weight is None else sum_rows(dn * n)",
        ORACLE,
        "dweight from dy * weight instead of dy",
    ),
    Mutant(
        "ref-rms-primal-eps-outside-sqrt",
        _REF,
        "y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)",
        "y = xf / (xf.square().mean(-1, keepdim=True).sqrt() + eps)",
        ORACLE,
        "the primal-only RMSNorm's eps added outside the square root",
    ),
    # ------------------------------------------------------------- mfkernels/embedding.py
    Mutant(
        "emb-primal-in-16-bit",
        _EMB,
        "    dtype = reference.compute_dtype(t.dtype)\n",
        "    dtype = t.dtype\n",
        ORACLE,
        "a bf16 time's embedding computed in bf16: w t rounds badly for t of hundreds",
    ),
    Mutant(
        "emb-primal-ignores-max-period",
        _EMB,
        "freqs = reference.timestep_frequencies(dim, max_period, dtype, t.device)",
        "freqs = reference.timestep_frequencies(dim, 10000.0, dtype, t.device)",
        ORACLE,
        "the value's frequencies from the default max_period (the tangent's from the argument)",
    ),
    Mutant(
        "emb-primal-sin-first",
        _EMB,
        "    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)\n    if dim % 2:  # not zeros_like",
        "    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)\n    if dim % 2:  # not zeros_like",
        ORACLE,
        "[sin, cos] (another convention) while the tangent is [cos, sin]'s",
    ),
    Mutant(
        "emb-dim-1-without-its-column",
        _EMB,
        "emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=-1)",
        "emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)",
        EMB_INPUTS,
        "dim 1 gives a (batch, 0) embedding: emb has no column to copy its zero from",
    ),
    Mutant(
        "emb-primal-unchecked",
        _EMB,
        "    _check_arguments(t, dim, max_period)\n    dtype = reference.compute_dtype(t.dtype)",
        "    dtype = reference.compute_dtype(t.dtype)",
        EMB_INPUTS,
        "the primal takes a (batch, 1) t (a 3-D embedding) or max_period 0 ('math domain error')",
    ),
    # ---------------------------------------------------------------- mfkernels/_checks.py
    Mutant(
        "checks-bias-broadcast-may-grow",
        _CHECKS,
        "return len(shape) <= len(to) and all(",
        "return all(",
        CHECKS,
        "a bias with more leading dims than (batch, heads, seq_q, seq_k) accepted",
    ),
    Mutant(
        "checks-pair-dtype-by-size",
        _CHECKS,
        "if tangent.dtype != primal.dtype:",
        "if tangent.dtype.itemsize != primal.dtype.itemsize:",
        CHECKS,
        "a float16 tangent accepted for a bfloat16 primal",
    ),
    Mutant(
        "checks-bias-grad-only-leaves",
        _CHECKS,
        "    if bias.requires_grad:\n",
        "    if bias.requires_grad and bias.is_leaf:\n",
        CHECKS,
        "a bias computed from parameters accepted, its gradient silently dropped",
    ),
    Mutant(
        "checks-one-device-allows-two",
        _CHECKS,
        "    if len(set(devices.values())) > 1:",
        "    if len(set(devices.values())) > 2:",
        CHECKS,
        "tensors on two devices let through to a kernel",
    ),
    Mutant(
        "checks-eps-nan-accepted",
        _CHECKS,
        '    if not value >= 0:\n        raise ValueError(f"eps must',
        '    if value < 0:\n        raise ValueError(f"eps must',
        ("tests/mfkernels/test_input_checks.py::test_a_negative_or_nan_eps_is_refused_on_every_backend",),
        "a NaN eps taken: the reference and Triton backends return NaN rows",
    ),
    Mutant(
        "ops-rms-norm-eps-unchecked",
        "mfkernels/ops.py",
        '        check_feature_vector("weight", weight, x)\n    check_eps(eps)\n',
        '        check_feature_vector("weight", weight, x)\n',
        ("tests/mfkernels/test_input_checks.py::test_a_negative_or_nan_eps_is_refused_on_every_backend",),
        "rms_norm_jvp takes a negative or NaN eps: NaN rows, where LayerNorm's is refused",
    ),
    Mutant(
        "dual-op-forward-ad-tangent-dropped",
        "mfkernels/dual_op.py",
        "            self._refuse_forward_ad_tangents(args)\n",
        "            pass\n",
        ("tests/mfkernels/test_dual_op.py::test_a_forward_ad_tangent_on_an_input_is_refused",),
        "an op under torch.func.jvp or forward_ad drops its inputs' tangents: zero output tangents",
    ),
    Mutant(
        "dual-op-forward-ad-unchecked-when-compiled",
        "mfkernels/dual_op.py",
        "if not torch.compiler.is_dynamo_compiling() and _get_current_dispatch_mode() is not None:",
        "if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:",
        ("tests/mfkernels/test_dual_op.py::test_a_forward_ad_tangent_is_refused_under_torch_compile_too",),
        "compiled, torch.func.jvp through an op still gives zero tangents without a word",
    ),
    Mutant(
        "dual-op-func-grad-torch-error",
        "mfkernels/dual_op.py",
        "                self._refuse_functorch_grad(args)\n",
        "                pass\n",
        ("tests/mfkernels/test_dual_op.py::test_torch_func_gradients_of_an_op_are_refused_in_its_terms",),
        "torch.func.grad through an op fails with torch's words on an autograd.Function's setup_context",
    ),
    Mutant(
        "dual-op-func-grad-refuses-parameters",
        "mfkernels/dual_op.py",
        "a.requires_grad and tracked(a) for a in args",
        "a.requires_grad for a in args",
        ("tests/mfkernels/test_dual_op.py::test_torch_func_gradients_of_an_op_are_refused_in_its_terms",),
        "under torch.func.grad an op on a parameter that requires grad (torch takes it) refused",
    ),
    Mutant(
        "ops-ln-primal-shapes-unchecked",
        "mfkernels/ops.py",
        '    check_modulation("shift", shift, x)\n    check_modulation("scale", scale, x)\n'
        "    check_same_device(x=x, shift=shift, scale=scale)\n    check_eps(eps)\n    normed",
        "    check_same_device(x=x, shift=shift, scale=scale)\n    check_eps(eps)\n    normed",
        (
            "tests/mfkernels/test_input_checks.py::test_the_primal_layernorm_modulate_refuses_what_its_jvp_refuses",
        ),
        "the primal LayerNorm-modulate broadcasts (dim,) vectors over tokens, where its jvp refuses them",
    ),
    Mutant(
        "ops-ln-dshift-in-scale-dtype",
        "mfkernels/ops.py",
        "return dx.to(x.dtype).contiguous(), dshift.to(acc), dscale.to(acc)",
        "return dx.to(x.dtype).contiguous(), dshift.to(scale.dtype), dscale.to(acc)",
        (
            "tests/mfkernels/test_layernorm_modulate.py::test_shift_and_scale_of_two_dtypes_each_get_a_gradient_of_their_own",
        ),
        "an fp32 shift beside a bf16 scale gets its gradient rounded to bf16",
    ),
    Mutant(
        "checks-sdpa-mask-float64-taken",
        _CHECKS,
        "attn_mask.dtype not in (torch.float32, q.dtype)",
        "attn_mask.dtype not in (torch.float32, torch.float64, q.dtype)",
        SDPA_MASK,
        "a float64 mask taken as wider under a jvp, which torch's SDPA refuses in the plain forward",
    ),
    # ---------------------------------------------------------------- mfkernels/layouts.py
    Mutant(
        "layout-attention-output-heads-outer",
        "mfkernels/layouts.py",
        "return like.new_empty((batch, seq, heads, head_dim)).transpose(1, 2)",
        "return like.new_empty((batch, heads, seq, head_dim))",
        LAYOUT,
        "O laid out (batch, heads, seq, d): merging the heads becomes a copy",
    ),
    # ------------------------------------------------- mfkernels/backends/triton/launch.py
    Mutant(
        "launch-next-power-of-2-floor",
        _LAUNCH,
        "return 1 << (max(n, 1) - 1).bit_length()",
        "return 1 << max(n, 1).bit_length() - 1",
        ("tests/mfkernels/test_residual.py",),
        "the power of two below n: a block shorter than the row",
    ),
    Mutant(
        "launch-row-limit-off-by-one",
        _LAUNCH,
        "if row_dim is not None and row_dim > MAX_ROW_DIM:",
        "if row_dim is not None and row_dim >= MAX_ROW_DIM:",
        LAUNCH,
        "the widest supported row refused",
    ),
    Mutant(
        "launch-chunk-shorter-than-tile",
        _LAUNCH,
        "return rows, block_d, max(rows, min(256, next_power_of_2(max(n_rows, 1))))",
        "return rows, block_d, min(256, next_power_of_2(max(n_rows, 1)))",
        LAUNCH + GELU_TILES,
        "a bias-gradient chunk shorter than its tile: the tile's rows past it counted twice",
    ),
    Mutant(
        "launch-unit-cols-never-copies",
        _LAUNCH,
        "return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()",
        "return t",
        ("tests/mfkernels/test_residual.py", "tests/mfkernels/test_layernorm_modulate.py"),
        "a modulation vector with strided columns read as if unit-stride",
    ),
    # ------------------------- Triton: views the kernels read at their strides or launchers copy
    Mutant(
        "attention-head-dim-stride-ignored",
        _TRITON + "attention_kernels.py",
        "    return rows + offs_d[None, :] * stride_d, rows + offs_e[None, :] * stride_d",
        "    return rows + offs_d[None, :], rows + offs_e[None, :]",
        VIEWS,
        "attention reads the head dim as unit-stride: a transposed view, or a stride-0 zero tangent",
    ),
    Mutant(
        "launcher-gelu-bias-strided",
        _TRITON + "pointwise.py",
        "x, x_dot, bias.contiguous() if has_bias else x, y, y_dot",
        "x, x_dot, bias if has_bias else x, y, y_dot",
        VIEWS,
        "a GELU bias every other element read as adjacent",
    ),
    Mutant(
        "launcher-rms-tangent-strided",
        _TRITON + "rms_norm.py",
        "x, x_dot = x.contiguous(), x_dot.contiguous()",
        "x = x.contiguous()",
        VIEWS,
        "an RMSNorm tangent that is a view read as a flat buffer",
    ),
    Mutant(
        "launcher-rms-weight-strided",
        _TRITON + "rms_norm.py",
        "weight.contiguous() if has_weight else x",
        "weight if has_weight else x",
        VIEWS,
        "an RMSNorm weight every other element read as adjacent",
    ),
    Mutant(
        "launcher-residual-tangents-strided",
        _TRITON + "gated_residual.py",
        "x, x_dot, f, f_dot = (t.contiguous() for t in (x, x_dot, f, f_dot))",
        "x, f = x.contiguous(), f.contiguous()",
        VIEWS,
        "the gated residual's tangents read as flat buffers (a stride-0 zero tangent reads past it)",
    ),
    Mutant(
        "launcher-residual-gate-columns",
        _TRITON + "gated_residual.py",
        "gate, gate_dot = (t if t.stride(-1) == 1 else t.contiguous() for t in (gate, gate_dot))",
        "pass",
        VIEWS,
        "a gate with strided columns read as unit-stride",
    ),
    Mutant(
        "launcher-residual-bwd-grad-columns",
        _TRITON + "gated_residual.py",
        "grad_y, gate, f = launch.unit_cols(grad_y), launch.unit_cols(gate), launch.unit_cols(f)",
        "gate = launch.unit_cols(gate)",
        VIEWS,
        "the residual backward reads a gradient and f with strided columns as unit-stride",
    ),
    Mutant(
        "launcher-ln-tangent-columns",
        _TRITON + "layernorm_modulate.py",
        "x, x_dot = launch.unit_cols(x), launch.unit_cols(x_dot)",
        "x = launch.unit_cols(x)",
        VIEWS,
        "a LayerNorm tangent with strided columns read as unit-stride",
    ),
    Mutant(
        "launcher-ln-vectors-columns",
        _TRITON + "layernorm_modulate.py",
        "shift, scale, shift_dot, scale_dot = map(launch.unit_cols, (shift, scale, shift_dot, scale_dot))",
        "pass",
        VIEWS,
        "modulation vectors with strided columns read as unit-stride",
    ),
    # -------------------------------------------------------- mfkernels/backends/csrc.py
    Mutant(
        "csrc-dtype-codes-16-bit-swapped",
        _CSRC,
        "DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}",
        "DTYPE_CODES = {torch.float32: 0, torch.float16: 2, torch.bfloat16: 1, torch.float64: 3}",
        CSRC,
        "bf16 bits handed to the kernels as fp16",
    ),
    Mutant(
        "csrc-gate-strided-columns",
        _CSRC,
        "gate, gate_dot = _unit_col_stride(gate), _unit_col_stride(gate_dot)",
        "gate, gate_dot = gate, gate_dot",
        STRIDED,
        "a gate with strided columns passed to a kernel that reads unit-stride columns",
    ),
    Mutant(
        "csrc-ln-bwd-grad-not-cast",
        _CSRC,
        "grad_m = _contiguous_aligned(grad_m.to(x.dtype))",
        "grad_m = _contiguous_aligned(grad_m)",
        GRAD_DTYPE,
        "an fp32 gradient of a bf16 LayerNorm handed over uncast (the extension refuses it)",
    ),
    Mutant(
        "csrc-stale-only-if-older",
        _CSRC,
        'if _C is not None and getattr(_C, "API_VERSION", None) != API_VERSION:',
        'if _C is not None and getattr(_C, "API_VERSION", 0) < API_VERSION:',
        ("tests/mfkernels/test_csrc_inputs.py::test_missing_or_stale_extension_falls_back_with_one_message",),
        "an extension built from newer sources (other bindings) taken as current",
    ),
    # ------------------------------------------------------------- deprecated module paths
    Mutant(
        "deprecated-residual-is-the-oracle",
        "mfkernels/residual.py",
        "from .ops import gated_residual_jvp",
        "from .reference import gated_residual_jvp",
        DEPRECATED,
        "the old path exports the plain-torch oracle, not the dispatched op",
    ),
    Mutant(
        "deprecated-activations-are-the-oracle",
        "mfkernels/activations.py",
        "from .ops import gelu_tanh_jvp, silu_jvp",
        "from .reference import gelu_tanh_jvp, silu_jvp",
        DEPRECATED,
        "the old path exports the plain-torch oracles, not the dispatched ops",
    ),
    Mutant(
        "deprecated-rms-norm-is-the-oracle",
        "mfkernels/rms_norm.py",
        "from .ops import rms_norm_jvp",
        "from .reference import rms_norm_jvp",
        DEPRECATED,
        "the old path exports the plain-torch oracle, not the dispatched op",
    ),
    Mutant(
        "deprecated-attention-backward-check",
        "mfkernels/attention.py",
        "import jvp_unsupported as triton_attention_unsupported",
        "import backward_unsupported as triton_attention_unsupported",
        DEPRECATED,
        "the old name of the JVP's support check bound to the backward's",
    ),
    Mutant(
        "deprecated-csrc-ops-not-a-deprecation",
        "mfkernels/csrc_ops.py",
        '"mfkernels.csrc_ops is deprecated: use mfkernels.backends.csrc", DeprecationWarning',
        '"mfkernels.csrc_ops is deprecated: use mfkernels.backends.csrc", UserWarning',
        DEPRECATED,
        "the old path announced as a UserWarning, which deprecation filters miss",
    ),
    Mutant(
        "sdpa-compiled-tangent-check-never-raises",
        "mfkernels/sdpa.py",
        "    if bool(grad_o_dot.ne(0).any()):  # NaN too",
        "    if False:",
        ("tests/mfkernels/test_sdpa_inputs.py",),
        "compiled, a loss on the fused tangent loses that term's gradient without a word",
    ),
    Mutant(
        "sdpa-compiled-takes-the-eager-function",
        "mfkernels/sdpa.py",
        "    if torch.compiler.is_compiling():\n        # The tangents as they are",
        "    if False:\n        # The tangents as they are",
        ("tests/mfkernels/test_sdpa_inputs.py",),
        "traced, the eager Function is inlined and its check with it: the tangent becomes a constant",
    ),
    Mutant(
        "sdpa-mask-dtype-unchecked",
        "mfkernels/sdpa.py",
        "    check_sdpa_mask_dtype(attn_mask, q)\n",
        "",
        SDPA_MASK,
        "a float16 mask on bfloat16 inputs passes under a jvp and fails in the model's plain forward",
    ),
    # ------------------------------------------- offsets past 2**31 - 1 (index width)
    Mutant(
        "triton-wide-mul-in-int32",
        _TRITON + "triton_compat.py",
        "index = tl.cast(index, tl.int64)",
        "index = index",
        (WIDTH + "test_wide_mul_passes_2_to_the_31",),
        "every kernel's int64 offset wraps at 2**31 again",
    ),
]
