"""The catalog's mutants of the kernel package's public API around the kernels: the backend
choice (``mfkernels/dispatch.py``), the dual ops' autograd (``mfkernels/ops.py``), the SDPA
switch (``mfkernels/sdpa.py``) and the launchers' choices in ``backends/triton/attention.py``
and ``backends/csrc.py``. Each is a bug that runs a user's call on another backend than the
one asked for without a word, warns too little, or gives a gradient or tangent that is wrong."""

from mutant import Mutant

__all__ = ["KERNEL_API_MUTANTS"]

_DISPATCH = "mfkernels/dispatch.py"
_OPS = "mfkernels/ops.py"
_SDPA = "mfkernels/sdpa.py"
_TRITON = "mfkernels/backends/triton/attention.py"
_CSRC = "mfkernels/backends/csrc.py"
DISPATCH = "tests/mfkernels/test_dispatch.py::"
API_DISPATCH = "tests/mfkernels/test_api_dispatch_choice.py"
API_SDPA = "tests/mfkernels/test_api_sdpa_backend.py"
FWD_AD = "tests/mfkernels/test_sdpa_forward_ad.py::"
OUT_OF_SIGHT = f"{FWD_AD}test_tangents_out_of_sight_take_the_autograd_function"

KERNEL_API_MUTANTS = [
    # ----------------------------------------------------------------- mfkernels/dispatch.py
    Mutant(
        "dispatch-environment-ignored",
        _DISPATCH,
        'name = os.environ.get(ENV_VAR, "").strip() or "auto"',
        'name = "auto"',
        (f"{DISPATCH}test_argument_then_environment_then_auto",),
        "MFK_BACKEND=reference is ignored: every call runs on the automatic backend",
    ),
    Mutant(
        "dispatch-environment-over-the-argument",
        _DISPATCH,
        "    if check_backend(backend):\n        return backend",
        "    if check_backend(backend) and ENV_VAR not in os.environ:\n        return backend",
        (f"{DISPATCH}test_argument_then_environment_then_auto",),
        "a backend= argument loses to MFK_BACKEND: a benchmark of 'triton' times the reference",
    ),
    Mutant(
        "dispatch-empty-backend-is-a-name",
        _DISPATCH,
        '    if backend in (None, ""):\n        return ""',
        '    if backend is None:\n        return ""',
        (API_DISPATCH,),
        "backend='' (the ops' 'not given', what the SDPA switch passes) raises ValueError",
    ),
    Mutant(
        "dispatch-named-backend-without-the-op-silently-to-reference",
        _DISPATCH,
        "    if impl is None and automatic:",
        "    if impl is None:",
        (f"{DISPATCH}test_a_backend_without_the_op_falls_back_to_the_automatic_one",),
        "a backend asked for by name that lacks the op runs the reference without a warning",
    ),
    Mutant(
        "dispatch-one-warning-for-every-reason",
        _DISPATCH,
        "    key = (op, name, reason)",
        "    key = (op, name)",
        (API_DISPATCH,),
        "after one fallback warning, a fallback of the same op for another reason is silent",
    ),
    Mutant(
        "dispatch-fallback-to-an-automatic-backend-that-refuses",
        _DISPATCH,
        " and impl is not None and impl.unsupported(*args, **kwargs) is None:",
        " and impl is not None:",
        (f"{DISPATCH}test_then_to_the_reference_when_the_automatic_one_refuses_too",),
        "a fallback lands on the automatic backend even where it cannot run the call",
    ),
    Mutant(
        "dispatch-records-the-request-not-the-backend-that-ran",
        _DISPATCH,
        "        seen.setdefault(op, set()).add(name)",
        "        seen.setdefault(op, set()).add(requested_backend(backend))",
        (f"{DISPATCH}test_record_backends_names_where_each_call_ran", API_DISPATCH),
        "benchmarks label a timing 'triton' whose ops fell back to the reference",
    ),
    Mutant(
        "dispatch-forget-warnings-without-ops-forgets-none",
        _DISPATCH,
        "if not ops or key[0] in ops]",
        "if key[0] in ops]",
        (API_DISPATCH,),
        "forget_warnings() (all ops) forgets nothing: a later fallback is silent",
    ),
    Mutant(
        "dispatch-available-triton-needs-a-gpu",
        _DISPATCH,
        '"triton": gpu or (kind == "cpu" and INTERPRET),',
        '"triton": gpu,',
        (API_DISPATCH,),
        "available_backends('cpu') leaves triton out under TRITON_INTERPRET=1: its tests skip",
    ),
    Mutant(
        "dispatch-available-cpu-on-any-device",
        _DISPATCH,
        '"cpu": kind == "cpu",',
        '"cpu": True,',
        (API_DISPATCH,),
        "available_backends('cuda') lists the csrc cpu backend, which cannot take CUDA tensors",
    ),
    Mutant(
        "dispatch-auto-cuda-to-reference",
        _DISPATCH,
        '    if device.type == "cuda":\n        return "triton"',
        '    if device.type == "cuda":\n        return "reference"',
        ("tests/mfkernels/test_dispatch_auto.py::test_cuda_tensors_go_to_triton",),
        "CUDA tensors run the plain-torch reference: the kernels are never used on a GPU",
    ),
    # ---------------------------------------------------------------------- mfkernels/ops.py
    Mutant(
        "ops-attention-grad-dk-dv-swapped",
        _OPS,
        "    return dq, dk, dv, *[None] * (ctx.inputs - 3)",
        "    return dq, dv, dk, *[None] * (ctx.inputs - 3)",
        (f"{FWD_AD}test_func_jvp_and_grads_match_math[vit-reference-dtype0]",),
        "the keys get the values' gradient and the values the keys'",
    ),
    Mutant(
        "ops-attention-backward-default-scale",
        _OPS,
        "(grad_o, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.backend, bias)\n    return dq, dk, dv, *",
        "(grad_o, q, k, v, o, lse, q.shape[-1] ** -0.5, ctx.causal, ctx.backend, bias)\n"
        "    return dq, dk, dv, *",
        (f"{FWD_AD}test_scale_keyword_and_positional[reference-dtype0]",),
        "gradients of attention with a custom scale use head_dim ** -0.5",
    ),
    Mutant(
        "ops-attention-backward-not-causal",
        _OPS,
        "(grad_o, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.backend, bias)\n    return dq, dk, dv, *",
        "(grad_o, q, k, v, o, lse, ctx.scale, False, ctx.backend, bias)\n    return dq, dk, dv, *",
        (f"{FWD_AD}test_is_causal_takes_the_kernels[fewer_keys-reference-dtype0]",),
        "causal attention's backward attends to the future: wrong gradients",
    ),
    Mutant(
        "ops-attention-bias-not-saved",
        _OPS,
        "ctx.save_for_backward(q, k, v, o, lse, bias[0] if bias else None)",
        "ctx.save_for_backward(q, k, v, o, lse, None)",
        (f"{FWD_AD}test_attn_mask_takes_the_kernels[key_padding-reference-dtype0]",),
        "a masked attention's backward ignores the mask: padded keys get gradients",
    ),
    Mutant(
        "ops-attention-default-scale-from-v",
        _OPS,
        "scale = q.shape[-1] ** -0.5 if scale is None else float(scale)",
        "scale = v.shape[-1] ** -0.5 if scale is None else float(scale)",
        ("tests/mfkernels/test_api_attention_autograd.py",),
        "the default scale of a value head dim unlike q's is the value's",
    ),
    Mutant(
        "ops-attention-tangent-takes-gradients",
        _OPS,
        "    mark_tangent_outputs(ctx, o_dot, lse)",
        "    mark_tangent_outputs(ctx, lse)",
        ("tests/mfkernels/test_api_attention_autograd.py",),
        "attention_jvp's tangent looks differentiable, and a loss on it gets no gradient from it",
    ),
    Mutant(
        "ops-gelu-bias-no-gradient",
        _OPS,
        "    return dx, None, None if bias is None else dbias.to(bias.dtype), None",
        "    return dx, None, None, None",
        ("tests/mfkernels/test_activations.py", "tests/mfkernels/test_csrc_ops.py"),
        "the bias of a fused bias+GELU never trains",
    ),
    Mutant(
        "ops-rms-weight-no-gradient",
        _OPS,
        "None if weight is None else dweight.to(weight.dtype), None, None",
        "None, None, None",
        ("tests/mfkernels/test_rms_norm_edge_rows.py", "tests/mfkernels/test_rms_norm_triton.py"),
        "the qk-norm weight never trains",
    ),
    Mutant(
        "ops-silu-grad-drops-a-term",
        _OPS,
        "return torch.ops.aten.silu_backward(grad_y, x), None, None",
        "return grad_y * torch.sigmoid(x), None, None",
        ("tests/mfkernels/test_api_dual_op_gradients.py",),
        "SiLU's gradient without its x sigmoid'(x) term",
    ),
    # --------------------------------------------------------------------- mfkernels/sdpa.py
    Mutant(
        "sdpa-a-tangent-on-a-subset-takes-two-passes",
        _SDPA,
        "return any(fwAD.unpack_dual(t).tangent is not None for t in tensors)",
        "return all(fwAD.unpack_dual(t).tangent is not None for t in tensors)",
        (API_SDPA,),
        "a jvp with a tangent on q alone (the others constant) runs attention twice",
    ),
    Mutant(
        "sdpa-out-of-sight-tangent-default-scale",
        _SDPA,
        "                q, k, v, *tangents, ctx.scale, ctx.backend, causal=ctx.causal, bias=bias",
        "                q, k, v, *tangents, None, ctx.backend, causal=ctx.causal, bias=bias",
        (API_SDPA,),
        "with tangents out of sight, a custom scale is lost in the tangent alone",
    ),
    Mutant(
        "sdpa-out-of-sight-tangents-k-v-swapped",
        _SDPA,
        "for t, p in ((q_dot, q), (k_dot, k), (v_dot, v)))",
        "for t, p in ((q_dot, q), (v_dot, k), (k_dot, v)))",
        (OUT_OF_SIGHT,),
        "with tangents out of sight, K' and V' trade places",
    ),
    Mutant(
        "sdpa-out-of-sight-backward-dk-dv-swapped",
        _SDPA,
        "        return dq, dk, dv, None, None, None, None",
        "        return dq, dv, dk, None, None, None, None",
        (OUT_OF_SIGHT,),
        "with tangents out of sight, K and V trade gradients",
    ),
    Mutant(
        "sdpa-out-of-sight-forward-drops-the-mask",
        _SDPA,
        "o, _, lse = attention_jvp(q, k, v, *zeros, scale, backend, causal=causal, bias=bias)",
        "o, _, lse = attention_jvp(q, k, v, *zeros, scale, backend, causal=causal, bias=None)",
        (f"{FWD_AD}test_attn_mask_with_tangents_out_of_sight",),
        "with tangents out of sight, the value attends to padded keys",
    ),
    Mutant(
        "sdpa-fallback-on-a-fused-sdpa",
        _SDPA,
        "        with sdpa_kernel(SDPBackend.MATH):\n"
        "            return _SDPA(query, key, value, *args, **kwargs)",
        "        return _SDPA(query, key, value, *args, **kwargs)",
        (f"{FWD_AD}test_fallbacks_warn_once_and_match_math",),
        "the fallback runs a fused SDPA kernel, which has no forward-mode AD",
    ),
    Mutant(
        "sdpa-fallback-warns-every-call",
        _SDPA,
        "        _WARNED.add(reason)\n",
        "",
        (f"{FWD_AD}test_fallbacks_warn_once_and_match_math",),
        "a fallback warns at every attention call of every step",
    ),
    Mutant(
        "sdpa-nested-jvp-takes-the-kernels",
        _SDPA,
        "    if len(kinds) > 1:",
        "    if len(kinds) > 2:",
        (f"{FWD_AD}test_other_transforms_fall_back",),
        "a jvp of a jvp gets the stop-gradient tangent: a second derivative of zero",
    ),
    Mutant(
        "sdpa-zero-tangent-is-one",
        _SDPA,
        "    return t.new_zeros(()).expand_as(t)",
        "    return t.new_ones(()).expand_as(t)",
        (f"{FWD_AD}test_tangents_on_a_subset",),
        "an input without a tangent counts as one with a tangent of ones",
    ),
    Mutant(
        "sdpa-multihead-attention-not-caught",
        _SDPA,
        "        if func in _CALL_SDPA_INSIDE:",
        "        if False:",
        (f"{FWD_AD}test_multihead_attention_module",),
        "nn.MultiheadAttention's SDPA runs math attention under the switch",
    ),
    Mutant(
        "sdpa-mode-backend-dropped",
        _SDPA,
        "            return flash_sdpa(*args, backend=self.backend, **kwargs)",
        "            return flash_sdpa(*args, **kwargs)",
        (API_SDPA,),
        "sdpa_forward_ad('reference') runs attention on the automatic backend",
    ),
    Mutant(
        "sdpa-multihead-attention-backend-dropped",
        _SDPA,
        "    return flash_sdpa(*args, backend=backends[-1], **kwargs)",
        "    return flash_sdpa(*args, **kwargs)",
        (API_SDPA,),
        "nn.MultiheadAttention under sdpa_forward_ad(backend) runs the automatic backend",
    ),
    Mutant(
        "sdpa-patch-backend-dropped",
        _SDPA,
        "    model._mfk_sdpa_backend = backend\n",
        "    model._mfk_sdpa_backend = None\n",
        (API_SDPA,),
        "patch_sdpa(model, backend) runs the model's attention on the automatic backend",
    ),
    # ------------------------------------------------ mfkernels/backends/triton/attention.py
    Mutant(
        "triton-attention-forward-ignores-grouped-heads",
        _TRITON,
        "KV_GROUP=heads // kv_heads, HAS_BIAS=bias is not None",
        "KV_GROUP=1, HAS_BIAS=bias is not None",
        ("tests/mfkernels/test_attention_groups_and_bias.py::test_fp32_grouped_query_heads",),
        "grouped-query attention reads the wrong key/value heads in the forward",
    ),
    Mutant(
        "triton-attention-v-head-dim-unchecked",
        _TRITON,
        "    if v.shape[-1] != q.shape[-1]:\n",
        "    if False:\n",
        ("tests/mfkernels/test_attention_jvp.py::test_unsupported_reasons",),
        "a value head dim unlike q's runs the triton kernels, which assume them equal",
    ),
    # ------------------------------------------------------------ mfkernels/backends/csrc.py
    Mutant(
        "csrc-ln-jvp-shift-and-scale-swapped",
        _CSRC,
        "vecs = [_unit_col_stride(t) for t in (shift, scale, shift_dot, scale_dot)]",
        "vecs = [_unit_col_stride(t) for t in (scale, shift, shift_dot, scale_dot)]",
        ("tests/mfkernels/test_csrc_ops.py::test_layernorm_modulate_jvp",),
        "the cpu backend's adaLN shifts by the scale and scales by the shift",
    ),
    Mutant(
        "csrc-cpu-refuses-float64",
        _CSRC,
        'return _unsupported_on("cpu", DTYPE_CODES, "", args)',
        'return _unsupported_on("cpu", CUDA_DTYPES, "", args)',
        ("tests/mfkernels/test_csrc_ops.py",),
        "the cpu backend falls back to the reference for float64",
    ),
]
