"""The catalog's mutants of the Triton kernels, their launchers and the dispatch
(``tools/mutant_catalog.py`` holds the rest and the rules)."""

from mutant import Mutant

LAYERNORM = ("tests/mfkernels/test_layernorm_edge_rows.py", "tests/mfkernels/test_layernorm_modulate.py")
REFERENCE = ("tests/mfkernels/test_reference_ops.py",)
ACTIVATIONS = ("tests/mfkernels/test_activations.py",)
RESIDUAL = ("tests/mfkernels/test_residual.py",)
RESIDUAL_BACKWARD = ("tests/mfkernels/test_residual_backward.py", "tests/mfkernels/test_residual.py")
RMS_NORM = ("tests/mfkernels/test_rms_norm_edge_rows.py", "tests/mfkernels/test_rms_norm_triton.py")
ATTENTION = ("tests/mfkernels/test_attention_jvp.py",)
KERNEL_VARIANTS = (
    "tests/mfkernels/test_attention_jvp.py::test_fp32_kernel_variants",
    "tests/mfkernels/test_attention_jvp.py::test_fp32_very_negative_logits_stay_finite",
)
LIBRARY_BACKWARD = ("tests/mfkernels/test_attention_library_backward.py",)
DISPATCH = ("tests/mfkernels/test_dispatch_auto.py", "tests/mfkernels/test_dispatch.py")

_REF_PY = "mfkernels/reference.py"

KERNEL_MUTANTS = [
    # ------------------------------- mfkernels/backends/triton/layernorm_modulate.py, ops.py
    Mutant(
        "ln-fwd-eps-outside-sqrt",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "    rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / dim + eps)\n    a = xc * rstd[:, None]\n    mean_xd",
        "    rstd = 1.0 / (tl.sqrt(tl.sum(xc * xc, axis=1) / dim) + eps)\n    a = xc * rstd[:, None]\n"
        "    mean_xd",
        LAYERNORM,
        "1 / (sqrt(var) + eps) in the forward kernel",
    ),
    Mutant(
        "ln-bwd-eps-outside-sqrt",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "        rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / dim + eps)",
        "        rstd = 1.0 / (tl.sqrt(tl.sum(xc * xc, axis=1) / dim) + eps)",
        LAYERNORM,
        "1 / (sqrt(var) + eps) in the backward kernel",
    ),
    Mutant(
        "ln-fwd-padding-in-variance",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "    xc = tl.where(mask, x - mean[:, None], 0.0)\n    rstd",
        "    xc = x - mean[:, None]\n    rstd",
        LAYERNORM,
        "padded columns count in the variance",
    ),
    Mutant(
        "ln-tangent-drops-a-term",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "a_dot = (xd - mean_xd[:, None] - a * mean_axd[:, None])",
        "a_dot = (xd - mean_xd[:, None])",
        LAYERNORM,
        "a' without -a mean(a x')",
    ),
    Mutant(
        "ln-tangent-drops-scale-dot",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "md = a_dot * (1.0 + sc) + a * scd + shd",
        "md = a_dot * (1.0 + sc) + shd",
        LAYERNORM,
        "m' without a scale'",
    ),
    Mutant(
        "ln-bwd-drops-mean-da",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "dx = (da - mean_da[:, None] - a * mean_daa[:, None])",
        "dx = (da - a * mean_daa[:, None])",
        LAYERNORM,
        "dx without -mean(da)",
    ),
    Mutant(
        "ln-bwd-first-chunk-only",
        "mfkernels/backends/triton/layernorm_modulate.py",
        "return dx, dshift.sum(1), dscale.sum(1)",
        "return dx, dshift[:, 0], dscale[:, 0]",
        LAYERNORM,
        "dshift/dscale of the first token chunk",
    ),
    Mutant(
        "ln-backward-default-eps",
        "mfkernels/ops.py",
        "(grad_m, x, scale, ctx.eps, ctx.backend)",
        "(grad_m, x, scale, 1e-6, ctx.backend)",
        LAYERNORM,
        "the backward ignores the eps given",
    ),
    # ------------------------------------------------------------- mfkernels/reference.py
    Mutant(
        "ref-ln-fast-bwd-default-eps",
        "mfkernels/backends/torch_ops.py",
        "    xf, scf, gf = upcast(x, scale, grad_m)\n    a, mean, rstd = torch.ops.aten.native_layer_norm("
        "xf, xf.shape[-1:], None, None, eps)",
        "    xf, scf, gf = upcast(x, scale, grad_m)\n    a, mean, rstd = torch.ops.aten.native_layer_norm("
        "xf, xf.shape[-1:], None, None, 1e-6)",
        REFERENCE + LAYERNORM,
        "fast LN backward ignores eps",
    ),
    Mutant(
        "ref-gelu-constant",
        _REF_PY,
        "GELU_TANH_C = 0.044715",
        "GELU_TANH_C = 0.04715",
        REFERENCE + ACTIVATIONS,
        "GELU-tanh's cubic coefficient mistyped",
    ),
    Mutant(
        "ref-gelu-fast-slope",
        "mfkernels/backends/torch_ops.py",
        "x2.mul_(6 * GELU_TANH_K * GELU_TANH_C)",
        "x2.mul_(3 * GELU_TANH_K * GELU_TANH_C)",
        REFERENCE,
        "sigmoid-form GELU slope 3C instead of 6C",
    ),
    Mutant(
        "ref-attention-drops-rowsum",
        _REF_PY,
        "o_dot = p @ vdf + ps_dot @ vf - ps_dot.sum(-1, keepdim=True) * o",
        "o_dot = p @ vdf + ps_dot @ vf",
        REFERENCE,
        "O' without -rowsum(P S') O",
    ),
    Mutant(
        "ref-attention-fast-unscaled-qdot",
        "mfkernels/backends/torch_ops.py",
        "torch.bmm(qdf * scale, kt)",
        "torch.bmm(qdf, kt)",
        REFERENCE,
        "S' misses the softmax scale on Q'",
    ),
    Mutant(
        "ref-rms-tangent-drops-term",
        _REF_PY,
        "n_dot = (xdf - n * (n * xdf).mean(-1, keepdim=True)) * rrms",
        "n_dot = xdf * rrms",
        REFERENCE + RMS_NORM,
        "RMSNorm tangent without its projection",
    ),
    Mutant(
        "ref-timestep-tangent-sign",
        _REF_PY,
        "emb_dot = torch.cat([-torch.sin(args)",
        "emb_dot = torch.cat([torch.sin(args)",
        REFERENCE,
        "d cos = +sin",
    ),
    Mutant(
        "ref-residual-fast-gate",
        "mfkernels/backends/torch_ops.py",
        "y_dot = torch.addcmul(xdf, gd[:, None], ff)",
        "y_dot = torch.addcmul(xdf, g[:, None], ff)",
        REFERENCE + RESIDUAL,
        "y' uses g f, not g' f",
    ),
    Mutant(
        "ref-silu-fast-args-swapped",
        "mfkernels/backends/torch_ops.py",
        "torch.ops.aten.silu_backward(x_dot, x)",
        "torch.ops.aten.silu_backward(x, x_dot)",
        REFERENCE + ACTIVATIONS,
        "silu' at x' times x",
    ),
    # ---------------------------------------------- mfkernels/backends/triton/pointwise.py
    Mutant(
        "act-gelu-slope-cubic",
        "mfkernels/backends/triton/pointwise.py",
        "* (1.0 + 3.0 * C * x2)",
        "* (1.0 + C * x2)",
        ACTIVATIONS,
        "GELU slope's 3C x^2 as C x^2",
    ),
    Mutant(
        "act-gelu-bias-index",
        "mfkernels/backends/triton/pointwise.py",
        "x += tl.load(BIAS + offs % dim",
        "x += tl.load(BIAS + offs // dim",
        ACTIVATIONS,
        "bias indexed by row, not column",
    ),
    Mutant(
        "act-silu-tangent",
        "mfkernels/backends/triton/pointwise.py",
        "(s * (1.0 + x * tl.sigmoid(-xc)) * xd)",
        "(s * (1.0 + x * s) * xd)",
        ACTIVATIONS,
        "silu' with s where 1 - s belongs",
    ),
    Mutant(
        "act-dbias-sums-dy",
        "mfkernels/backends/triton/pointwise.py",
        "dbias += tl.sum(dx, axis=0)",
        "dbias += tl.sum(dy, axis=0)",
        ACTIVATIONS,
        "bias gradient sums dy, not dx",
    ),
    # ----------------------------------------- mfkernels/backends/triton/gated_residual.py
    Mutant(
        "res-tangent-gate",
        "mfkernels/backends/triton/gated_residual.py",
        "(xd + gd * f + g * fd)",
        "(xd + g * f + g * fd)",
        RESIDUAL,
        "y' uses g f, not g' f",
    ),
    Mutant(
        "res-gate-row-stride",
        "mfkernels/backends/triton/gated_residual.py",
        "g = tl.load(G + b * stride_g + cols[None, :]",
        "g = tl.load(G + b * dim + cols[None, :]",
        RESIDUAL,
        "gate read as contiguous (chunks of adaLN are not)",
    ),
    Mutant(
        "res-bwd-chunk-end-off-by-one",
        "mfkernels/backends/triton/gated_residual.py",
        "t_end = tl.minimum(t_start + tokens_per_chunk, tokens)",
        "t_end = tl.minimum(t_start + tokens_per_chunk + 1, tokens)",
        RESIDUAL_BACKWARD,
        "a token chunk's partial dgate also sums the next chunk's first token",
    ),
    # --------------------------------------------- mfkernels/backends/triton/rms_norm.py
    Mutant(
        "rms-eps-outside-sqrt",
        "mfkernels/backends/triton/rms_norm.py",
        "rrms = tl.rsqrt(tl.sum(x * x, axis=1) / dim + eps)",
        "rrms = 1.0 / (tl.sqrt(tl.sum(x * x, axis=1) / dim) + eps)",
        RMS_NORM,
        "1 / (rms + eps)",
    ),
    Mutant(
        "rms-tangent-drops-term",
        "mfkernels/backends/triton/rms_norm.py",
        "nd = (xd - n * mean_nxd[:, None]) * rrms[:, None]",
        "nd = xd * rrms[:, None]",
        RMS_NORM,
        "tangent without its projection",
    ),
    Mutant(
        "rms-tangent-unweighted",
        "mfkernels/backends/triton/rms_norm.py",
        "        n = n * g\n        nd = nd * g\n",
        "        n = n * g\n",
        RMS_NORM,
        "tangent misses the weight",
    ),
    Mutant(
        "rms-backward-default-eps",
        "mfkernels/ops.py",
        "reference.rms_norm_backward(grad_y, x, weight, ctx.eps)",
        "reference.rms_norm_backward(grad_y, x, weight)",
        RMS_NORM,
        "the backward ignores the eps given",
    ),
    # ------------------------------------- mfkernels/backends/triton/attention_kernels.py
    Mutant(
        "attn-sum-not-rescaled",
        "mfkernels/backends/triton/attention_kernels.py",
        "l_i = l_i * alpha + tl.sum(p, 1)",
        "l_i = l_i + tl.sum(p, 1)",
        ATTENTION,
        "online softmax forgets to rescale l",
    ),
    Mutant(
        "attn-ps-not-rescaled",
        "mfkernels/backends/triton/attention_kernels.py",
        "acc_ps = acc_ps * alpha + tl.sum(ps_lo.to(tl.float32), 1)",
        "acc_ps = acc_ps + tl.sum(ps_lo.to(tl.float32), 1)",
        ATTENTION,
        "rowsum(P S') not rescaled",
    ),
    Mutant(
        "attn-lse-in-log2",
        "mfkernels/backends/triton/attention_kernels.py",
        "lse = (m_i + tl.math.log2(l_i)) * LN2",
        "lse = m_i + tl.math.log2(l_i)",
        ATTENTION,
        "LSE saved in log2 units",
    ),
    Mutant(
        "attn-bwd-drops-delta",
        "mfkernels/backends/triton/attention_backward_kernels.py",
        "ds_t = (p_t * (dp_t - delta[None, :]))",
        "ds_t = (p_t * dp_t)",
        ATTENTION,
        "dS without -delta",
    ),
    Mutant(
        "attn-atomic-dq-keeps-rows-past-nk",
        "mfkernels/backends/triton/attention_backward_kernels.py",
        "p_t = tl.where(n_ok[:, None], p_t, 0.0)",
        "p_t = p_t",
        KERNEL_VARIANTS,
        "atomic dQ adds the padded key rows' exp2(-lse) * 0 (NaN at very negative logits)",
    ),
    Mutant(
        "attn-atomic-dq-second-part-into-first",
        "mfkernels/backends/triton/attention_backward_kernels.py",
        "tl.atomic_add(dq_ptrs2, dq2,",
        "tl.atomic_add(dq_ptrs, dq2,",
        KERNEL_VARIANTS,
        "a split head dim's second dQ part added into the first's columns",
    ),
    Mutant(
        "attn-tma-second-part-at-column-0",
        "mfkernels/backends/triton/attention_kernels.py",
        "k2 = _load_kv(k_src2, start_n, stride_kn, n_ok, e_ok, MASK_N, MASK_E, TMA, q.shape[1])",
        "k2 = _load_kv(k_src2, start_n, stride_kn, n_ok, e_ok, MASK_N, MASK_E, TMA, 0)",
        KERNEL_VARIANTS,
        "a tensor descriptor reads a split head dim's second part of K from column 0",
    ),
    # ------------------------------------------------ mfkernels/backends/library_attention.py
    Mutant(
        "library-backward-default-scale",
        "mfkernels/backends/library_attention.py",
        "grad_o, q, k, v, o, lse, 0.0, False, scale=scale",
        "grad_o, q, k, v, o, lse, 0.0, False, scale=None",
        LIBRARY_BACKWARD,
        "a library's backward left to its default scale 1/sqrt(d) instead of ours",
    ),
    Mutant(
        "library-backward-log2-lse",
        "mfkernels/backends/library_attention.py",
        "lse = lse.to(torch.float32)",
        "lse = lse.to(torch.float32) / 0.6931471805599453",
        LIBRARY_BACKWARD,
        "the LSE handed over in base 2 (the kernels' inner units) instead of natural log",
    ),
    # ------------------------------------------------------------ mfkernels/dispatch.py
    Mutant(
        "dispatch-auto-skips-cpu",
        "mfkernels/dispatch.py",
        'if device.type == "cpu" and _table("cpu"):  # the extension is built\n        return "cpu"',
        'if device.type == "cpu" and _table("cpu"):  # the extension is built\n        return "reference"',
        DISPATCH,
        "auto never picks the built cpu backend",
    ),
    Mutant(
        "linear-tangent-gets-bias",
        "mfkernels/linear.py",
        "y_dot = F.linear(x_dot, weight)",
        "y_dot = F.linear(x_dot, weight, bias)",
        REFERENCE,
        "the bias added to the tangent",
    ),
]
