"""The mutants ``tools/mutants.py`` plants: realistic one-line bugs (a dropped term, a swapped
order, an off-by-one, a wrong constant, a skipped call) in the loss, sampler, checkpoints,
trainer and kernels, each with the few test files that should catch it.

``find`` must occur exactly once in ``path`` (else the mutant "does not apply": say so, then
update or drop it). Mutants of the trainer and the checkpoints sit on lines that rarely move.
The csrc kernels are not mutated: each change would need a rebuild of the extension.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    find: str
    replace: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids, the fastest first (-x stops at a kill)
    why: str  # the bug it stands for


LOSS = ("tests/meanflow/test_loss_time_range.py", "tests/meanflow/test_loss.py")
SAMPLER = ("tests/meanflow/test_sampler_pixels.py", "tests/meanflow/test_sampler.py")
CHECKPOINT = (
    "tests/meanflow/test_checkpoint_safety.py",
    "tests/meanflow/test_train.py::test_atomic_write_survives_a_crash",
    "tests/meanflow/test_train.py::test_cache_dir_precedence",
    "tests/meanflow/test_pretrained.py",
    "tests/meanflow/test_generate_cli.py",
)
# The whole trainer test file: tests added there (EMA, RNG restore) count without an edit here.
TRAIN = (
    "tests/meanflow/test_train_schedule.py",
    "tests/meanflow/test_train.py",
    "tests/meanflow/test_train_step.py",
)
ADAPTER_TRAIN = "tests/meanflow/test_train_adapters.py"
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
DISPATCH = ("tests/mfkernels/test_dispatch_auto.py", "tests/mfkernels/test_dispatch.py")

_LOSS_PY = "meanflow/loss.py"
_REF_PY = "mfkernels/reference.py"

CATALOG = [
    # ---------------------------------------------------------------- meanflow/loss.py
    Mutant(
        "loss-gap-clamped-at-half",
        _LOSS_PY,
        "(t - r).clamp(0, 1)",
        "(t - r).clamp(0, 0.5)",
        LOSS,
        "target uses min(t - r, 0.5)",
    ),
    Mutant(
        "loss-target-sign", _LOSS_PY, "(v_g - _bcast(", "(v_g + _bcast(", LOSS, "target v + (t - r) du/dt"
    ),
    Mutant(
        "loss-target-not-detached",
        _LOSS_PY,
        "* dudt.to(v_g.dtype)).detach()",
        "* dudt.to(v_g.dtype))",
        LOSS,
        "no stop-gradient on the target",
    ),
    Mutant(
        "loss-interpolation-swapped",
        _LOSS_PY,
        "z = (1 - tb) * x + tb * e\n        v = e - x\n        labels",
        "z = tb * x + (1 - tb) * e\n        v = e - x\n        labels",
        LOSS,
        "t = 1 is data, not noise",
    ),
    Mutant(
        "loss-velocity-sign",
        _LOSS_PY,
        "v = e - x\n        labels",
        "v = x - e\n        labels",
        LOSS,
        "v = x - e",
    ),
    Mutant(
        "loss-adaptive-weight-not-detached",
        _LOSS_PY,
        "(sq.detach() + self.adaptive_c)",
        "(sq + self.adaptive_c)",
        LOSS,
        "gradient flows through the adaptive weight",
    ),
    Mutant(
        "loss-adaptive-c-dropped",
        _LOSS_PY,
        "(sq.detach() + self.adaptive_c).pow",
        "sq.detach().pow",
        LOSS,
        "weight 1 / l^p without c",
    ),
    Mutant(
        "loss-times-unordered",
        _LOSS_PY,
        "t, r = torch.maximum(t, r), torch.minimum(t, r)",
        "t, r = torch.minimum(t, r), torch.maximum(t, r)",
        LOSS,
        "r > t",
    ),
    Mutant(
        "loss-kept-rows-inverted",
        _LOSS_PY,
        "torch.where(_to(keep, device), r, t)",
        "torch.where(_to(keep, device), t, r)",
        LOSS,
        "ratio_r_neq_t of rows get r = t instead",
    ),
    Mutant(
        "loss-null-weight-sign",
        _LOSS_PY,
        "weight = 1 - self.cfg_w - self.cfg_k",
        "weight = 1 - self.cfg_w + self.cfg_k",
        LOSS,
        "v_g's null-label weight 1 - w + k",
    ),
    Mutant(
        "loss-guidance-window-strict",
        _LOSS_PY,
        "(t >= self.cfg_t_min) & (t <= self.cfg_t_max)",
        "(t > self.cfg_t_min) & (t < self.cfg_t_max)",
        LOSS,
        "window excludes its ends",
    ),
    Mutant(
        "loss-dropped-rows-guided",
        _LOSS_PY,
        "use = ~drop & (t",
        "use = (t",
        LOSS,
        "class-dropout rows get guidance too",
    ),
    Mutant(
        "loss-dropout-label-swapped",
        _LOSS_PY,
        "torch.where(drop, torch.full_like(y, model.null_class), y)",
        "torch.where(drop, y, torch.full_like(y, model.null_class))",
        LOSS,
        "kept rows get the null label",
    ),
    Mutant(
        "loss-spread-rows-all",
        _LOSS_PY,
        "(i * ratio + phase).floor().diff() > 0",
        "(i * ratio + phase).floor().diff() >= 0",
        LOSS,
        "every row keeps r != t",
    ),
    # ------------------------------------------------------------- meanflow/sampler.py
    Mutant(
        "sampler-grid-reversed",
        "meanflow/sampler.py",
        "torch.linspace(1.0, 0.0, steps + 1",
        "torch.linspace(0.0, 1.0, steps + 1",
        SAMPLER,
        "integrates from data to noise",
    ),
    Mutant(
        "sampler-step-sign",
        "meanflow/sampler.py",
        "z = z - (t - r) * u",
        "z = z + (t - r) * u",
        SAMPLER,
        "z_r = z_t + (t - r) u",
    ),
    Mutant(
        "sampler-r-t-swapped",
        "meanflow/sampler.py",
        "u = model(z, torch.full((batch,), r, device=device), torch.full((batch,), t, device=device), y)",
        "u = model(z, torch.full((batch,), t, device=device), torch.full((batch,), r, device=device), y)",
        SAMPLER,
        "u(z, t, r)",
    ),
    Mutant(
        "sampler-mode-not-restored",
        "meanflow/sampler.py",
        "    model.train(was_training)\n    return z",
        "    return z",
        SAMPLER,
        "the model stays in eval mode",
    ),
    Mutant(
        "sampler-uint8-range",
        "meanflow/sampler.py",
        "(images.float() / 2 + 0.5).clamp(0, 1)",
        "(images.float() + 1).clamp(0, 1)",
        SAMPLER + ("tests/meanflow/test_generate_cli.py",),
        "[-1, 1] -> [0, 2] before the clamp",
    ),
    # ---------------------------------------------------------- meanflow/checkpoint.py
    Mutant(
        "checkpoint-temp-left-on-error",
        "meanflow/checkpoint.py",
        "        if os.path.exists(tmp):\n            os.unlink(tmp)\n",
        "",
        CHECKPOINT,
        "a failed write leaves its temporary file",
    ),
    Mutant(
        "checkpoint-unpickles",
        "meanflow/checkpoint.py",
        "map_location=map_location, weights_only=True)",
        "map_location=map_location, weights_only=False)",
        CHECKPOINT,
        "torch.load runs arbitrary pickles",
    ),
    Mutant(
        "checkpoint-overwrites-user-folder",
        "meanflow/checkpoint.py",
        "    written = _exported_entries(path)\n    if written is None:",
        "    written = _exported_entries(path)\n    if False:",
        CHECKPOINT,
        "a non-empty folder that is not ours is replaced",
    ),
    Mutant(
        "checkpoint-cache-env-ignored",
        "meanflow/checkpoint.py",
        'return os.environ.get("MEANFLOW_CACHE") or default',
        "return default",
        CHECKPOINT,
        "$MEANFLOW_CACHE ignored",
    ),
    Mutant(
        "checkpoint-private-files",
        "meanflow/checkpoint.py",
        "os.chmod(tmp, 0o666 & ~current_umask())",
        "os.chmod(tmp, 0o600)",
        CHECKPOINT,
        "checkpoints readable by their owner only",
    ),
    # ----------------------------------------------------- meanflow/train.py (stable lines)
    Mutant(
        "train-ema-decay-complement",
        "meanflow/train_step.py",
        "weights = [1.0 - ema_decay(d, step) for d in decays]",
        "weights = [ema_decay(d, step) for d in decays]",
        TRAIN,
        "EMA moves by decay, not 1 - decay",
    ),
    Mutant(
        "train-ema-no-warmup",
        "meanflow/train_step.py",
        "return min(decay, (1 + step) / (10 + step))",
        "return decay",
        TRAIN,
        "EMA decay without its warm-up",
    ),
    Mutant(
        "train-lr-warmup-off-by-one",
        "meanflow/train.py",
        "config.lr * (step + 1) / warmup",
        "config.lr * step / warmup",
        TRAIN,
        "first step at lr 0",
    ),
    Mutant(
        "train-lr-decay-off-by-one",
        "meanflow/train.py",
        "(step - warmup) / max(1, config.steps - warmup)",
        "(step - warmup + 1) / max(1, config.steps - warmup)",
        TRAIN,
        "the decay starts a step early and reaches lr 0 on the last step",
    ),
    Mutant(
        "train-clip-ignored",
        "meanflow/train_step.py",
        'grad_clip or float("inf")',
        'float("inf")',
        TRAIN,
        "grad_clip never applied",
    ),
    Mutant(
        "graphed-step-ema-no-warmup",
        "meanflow/train_step.py",
        "weight.fill_(1.0 - ema_decay(decay, step))",
        "weight.fill_(1.0 - decay)",
        TRAIN,
        "the graphed step's EMA weights skip the warm-up",
    ),
    Mutant(
        "resume-takes-the-checkpoints-optimizer-flags",
        "meanflow/train_state.py",
        "        group.update(kept)\n",
        "        pass\n",
        TRAIN,
        "a capturable checkpoint's flags break a CPU resume",
    ),
    Mutant(
        "train-rng-not-restored",
        "meanflow/train_state.py",
        "        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0], device)\n",
        "",
        ("tests/faults/test_fault_resume.py", *TRAIN),
        "resume keeps the fresh RNG state",
    ),
    Mutant(
        "train-same-noise-every-step",
        "meanflow/train.py",
        "generator.manual_seed(config.seed * 1_000_003 + step)",
        "generator.manual_seed(config.seed)",
        TRAIN,
        "every step draws the same times and noise",
    ),
    # ------------------------------------- meanflow/train.py, config.py: --model_class adapters
    Mutant(
        "train-adapter-no-ddp",
        "meanflow/train.py",
        "    if world > 1:\n        # The only buffer",
        "    if world > 1 and config.model_class == DIT_CLASS:\n        # The only buffer",
        (f"{ADAPTER_TRAIN}::test_two_ranks_equal_one",),
        "an adapter's gradients are not all-reduced: each rank trains on its half alone",
    ),
    Mutant(
        "train-adapter-bf16-ignored",
        "meanflow/train.py",
        'bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")',
        'bf16 = (config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"))'
        " and config.model_class == DIT_CLASS",
        (f"{ADAPTER_TRAIN}::test_cpu_bf16_autocast_trains_close_to_fp32",),
        "--precision bf16 silently runs an adapter in fp32",
    ),
    Mutant(
        "config-adapter-model-dropped",
        "meanflow/config.py",
        "    config.validate()\n    _refuse_unused_model(config, preset)\n",
        "    config.validate()\n",
        (f"{ADAPTER_TRAIN}::test_a_model_preset_other_than_the_presets_is_refused",),
        "--model with an adapter is dropped without a word",
    ),
    Mutant(
        "config-adapter-model-vs-default",
        "meanflow/config.py",
        'preset_model = PRESETS[preset].get("model", TrainConfig.model)',
        "preset_model = TrainConfig.model",
        (f"{ADAPTER_TRAIN}::test_a_model_preset_other_than_the_presets_is_refused",),
        "--model_class X with the default preset (model DiT-T/8) refused",
    ),
    Mutant(
        "train-adapter-built-silently",
        "meanflow/train.py",
        "        print(adapter_line(config, model), flush=True)\n",
        "        pass\n",
        (f"{ADAPTER_TRAIN}::test_run_says_what_it_built_and_that_model_is_unused",),
        "an adapter run does not say what it built, nor that model is unused",
    ),
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
        "mfkernels/backends/triton/attention_kernels.py",
        "ds_t = (p_t * (dp_t - delta[None, :]))",
        "ds_t = (p_t * dp_t)",
        ATTENTION,
        "dS without -delta",
    ),
    Mutant(
        "attn-atomic-dq-keeps-rows-past-nk",
        "mfkernels/backends/triton/attention_kernels.py",
        "p_t = tl.where(n_ok[:, None], p_t, 0.0)",
        "p_t = p_t",
        KERNEL_VARIANTS,
        "atomic dQ adds the padded key rows' exp2(-lse) * 0 (NaN at very negative logits)",
    ),
    Mutant(
        "attn-atomic-dq-second-part-into-first",
        "mfkernels/backends/triton/attention_kernels.py",
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
