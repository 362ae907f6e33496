"""Mutants of the attention benchmarks: ``benchmarks/attention_jvp.py`` (our JVP forward and
backward against the libraries: the TFLOP/s the kernels' targets are judged on),
``benchmarks/attention_baselines.py`` (the libraries' rows) and
``benchmarks/attention_features.py`` (causal, grouped-query and masked attention): a row that
times other work than it names, a FLOP count off, a shape or setting misreported.

Of the first 47, 36 survived the tests before test_attention_benchmarks.py: the smoke runs
check that a row ran and its TFLOP/s is positive, not its count, shape, kernel variable, skip
reason or ratio, and nothing checked the libraries' calls off a GPU. The new tests time with a
stand-in clock that runs each timed call once and keeps its output. The 48th,
jvp-error-read-from-a-failed-row, is a bug that survey found: ours_jvp failing after its first
call lost the shape's other rows to a KeyError. The 49th and 50th put back a second one: the
TMA row wrote over the default row's output, whose error columns and backward rows then took
the TMA run's.

Left unmutated: the math row's OOM estimate (GPU only), the plot, and the log lines."""

from mutant import Mutant

__all__ = ["BENCH_ATTENTION_MUTANTS"]

_JVP = "benchmarks/attention_jvp.py"
_BASE = "benchmarks/attention_baselines.py"
_FEAT = "benchmarks/attention_features.py"
_NEW = "tests/benchmarks/test_attention_benchmarks.py"
_SMOKE = "tests/benchmarks/test_benchmark_smoke.py"
_LIB = "tests/benchmarks/test_attention_jvp_library_rows.py"
_BASELINES = "tests/benchmarks/test_attention_baselines.py"

# The tests each mutant runs, the fastest first (-x stops at the first failure).
JVP_QUICK = (f"{_SMOKE}::test_attention_jvp_quick",)
CUT = (f"{_SMOKE}::test_attention_jvp_cut_by_its_time_budget_says_so_in_its_json",)
SWEEP = (f"{_SMOKE}::test_attention_gpu_sweep_covers_every_head_dim_early",)
MEMORY = (f"{_SMOKE}::test_attention_memory_peaks_are_read_after_the_warmup",)
LIBRARY = (_LIB,)
BASELINES = (_BASELINES,)
FEAT_QUICK = (f"{_SMOKE}::test_attention_features_quick",)
FEAT_ARGS = (f"{_SMOKE}::test_attention_features_arguments",)


def _new(*names):
    return tuple(f"{_NEW}::{name}" for name in names)


JVP_ROWS = _new("test_jvp_rows_count_their_flops_per_batch_and_head")
JVP_ERRORS = _new("test_jvp_error_columns_are_relative_and_per_output")
JVP_PEAK = _new("test_jvp_dense_peak_is_the_fast_end")
JVP_SKIPS = _new("test_jvp_skip_reasons")
JVP_FAILED = _new("test_jvp_a_failed_timing_of_ours_keeps_the_shapes_other_rows")
JVP_ENV = _new("test_jvp_kernel_variant_rows_run_their_variant")
JVP_TMA = _new("test_jvp_tma_row_is_checked_on_its_own_output")
JVP_TABLE = _new(
    "test_jvp_best_library_line_names_the_fastest_other_library",
    "test_jvp_table_compares_ours_with_the_fastest_library_forward",
)
JVP_ARGS = _new("test_jvp_arguments_keep_what_was_asked") + SWEEP
JVP_FILES = _new("test_jvp_runs_with_other_settings_keep_their_own_files")
BASE_CALLS = _new("test_sdpa_flash_runs_the_flash_backend", "test_library_backward_times_the_backward_alone")
BASE_LAYOUT = _new("test_flash_attn_packages_get_their_layout_and_scale")
FEAT_ROWS = _new("test_features_rows_count_flops_and_compare_with_full") + FEAT_QUICK
FEAT_INPUTS = _new("test_features_inputs_are_the_ones_described")
FEAT_ARGS = _new("test_features_cpu_default_shape") + FEAT_ARGS


def _m(name, path, find, replace, tests, why):
    return Mutant(f"battn-{name}", path, find, replace, tests, why)


# One mutant per five lines, as a table: the formatter would spread each over eight.
# fmt: off
BENCH_ATTENTION_MUTANTS = [
    # ----------------------------------------------------------- benchmarks/attention_jvp.py
    _m("jvp-flops-products-not-flops", _JVP,
       'FLOPS_PER_N2D = {"jvp": 12,', 'FLOPS_PER_N2D = {"jvp": 6,', JVP_ROWS,
       "the JVP counted as six products, not twelve FLOPs per N^2 d: its TFLOP/s half"),
    _m("jvp-bwd-flops-without-recompute", _JVP,
       '"fwd": 4, "bwd": 10}', '"fwd": 4, "bwd": 8}', JVP_ROWS,
       "the backward's recomputed S left out of its count: every bwd TFLOP/s a fifth low"),
    _m("jvp-library-forward-counted-as-jvp", _JVP,
       'f"{p}_fwd": "fwd" for', 'f"{p}_fwd": "jvp" for',
       JVP_ROWS, "the libraries' primal forwards credited with the JVP's FLOPs: three times fast"),
    _m("jvp-work-without-heads", _JVP,
       "work = batch * heads * n * n * d", "work = batch * n * n * d", JVP_ROWS,
       "FLOPs per batch, not per (batch * head): TFLOP/s a head count low"),
    _m("jvp-tflops-units", _JVP,
       "tflops=flops / ms / 1e9)", "tflops=flops / ms / 1e12)", JVP_ROWS,
       "TFLOP/s a thousand times low (ms is not s)"),
    _m("jvp-pct-peak-inverted", _JVP,
       '100 * row["tflops"] / self.peak["tflops"]', '100 * self.peak["tflops"] / row["tflops"]',
       JVP_ROWS, "% of the measured peak is peak over achieved"),
    _m("jvp-dense-peak-slow-end", _JVP,
       "torch.mm(a, b))[1]", "torch.mm(a, b))[2]", JVP_PEAK,
       "the measured peak from the 80th percentile: every % of peak reads high"),
    _m("jvp-dit-batch-ignored", _JVP,
       "batch, heads = batch or max(1, args.tokens // n), args.heads",
       "batch, heads = max(1, args.tokens // n), args.heads", JVP_ROWS,
       "the DiT-XL/2 shapes run at the sweep's tokens // N, not --dit-batch"),
    _m("jvp-budget-overrides-skip-reason", _JVP,
       "if skip is None and time.perf_counter() > self.deadline:", "if time.perf_counter() > self.deadline:",
       JVP_SKIPS, "a row skipped for its own reason reads 'time budget used up' once the budget is spent"),
    _m("jvp-budget-ignored-in-a-shape", _JVP,
       "self.deadline = self.start + args.time_budget if args.time_budget else math.inf",
       "self.deadline = math.inf", CUT,
       "--time-budget is ignored: a GPU sweep runs every shape whatever it costs"),
    _m("jvp-peak-memory-before-timing", _JVP,
       "ms, lo, hi = self.time_ms(fn)\n"
       "                    # after the timing's warmup: a first call's peak holds autotuning's trials\n"
       '                    row["peak_extra_mib"] = self.peak_extra_mib(fn)',
       'row["peak_extra_mib"] = self.peak_extra_mib(fn)\n                    ms, lo, hi = self.time_ms(fn)',
       MEMORY, "the peak memory of a first call: autotuning's trials counted as the kernel's"),
    _m("jvp-ours-timed-on-fallback", _JVP,
       'ours_jvp_into(outs["ours_jvp"]), self.ours_backend, skip)',
       'ours_jvp_into(outs["ours_jvp"]), self.ours_backend)',
       JVP_SKIPS, "where the asked-for backend falls back, the fallback is timed under its name"),
    _m("jvp-tma-row-without-tma", _JVP,
       "with C.environment(**{triton_attention.LOADS_ENV_VAR: \"tma\"}):",
       "with C.environment(**{triton_attention.LOADS_ENV_VAR: \"pointers\"}):", JVP_ENV,
       "the TMA row times the pointer loads: the same kernel as ours_jvp"),
    _m("jvp-math-max-n-exclusive", _JVP,
       "if n > args.math_max_n:", "if n >= args.math_max_n:", JVP_SKIPS,
       "--math-max-n N skips N itself"),
    _m("jvp-err-o-dot-compares-o", _JVP,
       'results[variant]["err_o_dot_vs_math"] = _rel_err(out["o_dot"], ref["o_dot"])',
       'results[variant]["err_o_dot_vs_math"] = _rel_err(out["o"], ref["o"])', JVP_ERRORS,
       "the tangent's error is the value's: a wrong O' passes"),
    _m("jvp-error-read-from-a-failed-row", _JVP,
       'if variant in results and "o" in ref:', 'if "o" in out and "o" in ref:', JVP_FAILED,
       "ours_jvp failed after its first call: the error columns' KeyError loses the shape's other rows"),
    _m("jvp-tma-row-writes-the-default-output", _JVP,
       'ours_jvp_into(outs["ours_jvp_tma"])', 'ours_jvp_into(outs["ours_jvp"])', JVP_TMA,
       "the TMA row writes over the default row's output: its fault shows on the default row"),
    _m("jvp-backward-from-the-tma-output", _JVP,
       'out = outs["ours_jvp"]  # the backward',
       'out = outs["ours_jvp_tma"] or outs["ours_jvp"]  # the backward', JVP_TMA,
       "our backward runs from the TMA loads' O and LSE, not the default loads'"),
    _m("jvp-rel-err-absolute", _JVP,
       "return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))",
       "return float((a.float() - ref.float()).abs().max())", JVP_ERRORS,
       "an absolute error labelled relative: small outputs always pass"),
    _m("jvp-ours-bwd-causal", _JVP,
       'scale, False, self.ours_backend', 'scale, True, self.ours_backend', JVP_ROWS,
       "our backward timed causal: half the work, counted as full"),
    _m("jvp-baseline-forward-runs-backward", _JVP,
       'make = baselines.forward if kind == "fwd" else baselines.backward',
       'make = baselines.forward if kind == "bwd" else baselines.backward', JVP_ROWS,
       "the libraries' fwd rows time their backward and the bwd rows their forward"),
    _m("jvp-unavailable-reads-failed", _JVP,
       'fn, skip = None, f"skipped: {exc}"', 'fn, skip = None, f"failed: {exc}"', JVP_SKIPS + JVP_QUICK,
       "a library this machine lacks reads as a library that failed"),
    _m("jvp-bwd-skip-reason-lost", _JVP,
       'bwd_skip = skip or (None if "o" in out else "skipped: no forward output")',
       'bwd_skip = None if "o" in out else "skipped: no forward output"', JVP_SKIPS,
       "our backward skipped for want of an output, not for the backend that does not run here"),
    _m("jvp-atomic-row-without-atomics", _JVP,
       "with C.environment(**{triton_attention.DQ_ENV_VAR: \"atomic\"}):",
       "with C.environment(**{triton_attention.DQ_ENV_VAR: \"separate\"}):", JVP_ENV,
       "the atomic-dQ row times the default dQ kernel"),
    _m("jvp-library-row-times-ours", _JVP,
       "with C.environment(**{triton_attention.BACKWARD_ENV_VAR: library}):",
       "with C.environment(**{triton_attention.BACKWARD_ENV_VAR: \"triton\"}):", JVP_ENV,
       "the ours_bwd_<library> rows time our own backward under the library's name"),
    _m("jvp-library-failure-timed", _JVP,
       "library_skip = _library_failure(library, do, q, k, v, out[\"o\"], out[\"lse\"], scale)",
       "library_skip = None", LIBRARY,
       "a library that fails on this shape is timed: the triton fallback under its name"),
    _m("jvp-best-includes-ours", _JVP,
       'if v.endswith(f"_{kind}") and v != f"ours_{kind}"]', 'if v.endswith(f"_{kind}")]', JVP_TABLE,
       "the 'best primal' library line can name our own kernel"),
    _m("jvp-table-fwd-slowest", _JVP,
       "fwd = min(fwds,", "fwd = max(fwds,",
       JVP_TABLE, "JVP/fwd time against the slowest library forward: the JVP looks cheap"),
    _m("jvp-table-ratio-inverted", _JVP,
       'ratio = ours["ms"] / fwd["ms"]', 'ratio = fwd["ms"] / ours["ms"]', JVP_TABLE,
       "JVP/fwd time is fwd over JVP"),
    _m("jvp-table-merges-batches", _JVP,
       'key = (r["dtype"], r["d"], r["N"], r["batch"] * r["heads"])', 'key = (r["dtype"], r["d"], r["N"])',
       JVP_TABLE, "the DiT-XL/2 shapes and the sweep's at one N share a line: one overwrites the other"),
    _m("jvp-explicit-zero-overridden", _JVP,
       "        if getattr(args, name) is None:\n            setattr(args, name, value)\n    return args",
       "        if not getattr(args, name):\n            setattr(args, name, value)\n    return args",
       JVP_ARGS,
       "--dit-batch 0 on a GPU is replaced by 64"),
    _m("jvp-dtypes-alone-ignored", _JVP,
       "if args.head_dims or args.dtypes:", "if args.head_dims:", JVP_ARGS,
       "--dtypes fp16 alone on a GPU runs the default bf16 sweep"),
    _m("jvp-cut-short-counts-run", _JVP,
       'f"time budget: {len(planned) - i} of {len(planned)} shapes not run"',
       'f"time budget: {i} of {len(planned)} shapes not run"', CUT,
       "the cut-short note counts the shapes that ran as those that did not"),
    _m("jvp-file-without-settings", _JVP,
       'args.out_dir, BENCHMARK, device, args.quick, "json", self.payload["settings"]',
       'args.out_dir, BENCHMARK, device, args.quick, "json"', JVP_FILES,
       "a second run with other settings into one folder writes over the first"),
    _m("jvp-backend-flag-ignored", _JVP,
       'self.ours_backend = args.backend or ("triton" if device.type == "cuda" else "reference")',
       'self.ours_backend = "triton" if device.type == "cuda" else "reference"', JVP_ENV + LIBRARY,
       "--backend is ignored: a CPU run with --backend triton times the reference"),
    # ----------------------------------------------------- benchmarks/attention_baselines.py
    _m("base-flash-row-runs-math", _BASE,
       '{"sdpa_flash": SDPBackend.FLASH_ATTENTION,', '{"sdpa_flash": SDPBackend.MATH,', BASE_CALLS,
       "the sdpa_flash row times math attention"),
    _m("base-package-layout-kept", _BASE,
       "lambda t: t.transpose(1, 2).contiguous()", "lambda t: t.contiguous()",
       BASE_LAYOUT, "flash-attn gets (batch, heads, N, d): it attends over the heads"),
    _m("base-fa3-lse-returned", _BASE,
       "return out[0] if isinstance(out, tuple) else out", "return out", BASE_LAYOUT,
       "an FA3 that also returns the LSE: the row's output is a tuple"),
    _m("base-fa3-is-fa2", _BASE,
       '"fa3": "flash_attn_interface"}', '"fa3": "flash_attn"}', BASE_LAYOUT,
       "the fa3 row times FlashAttention-2"),
    _m("base-backward-times-forward", _BASE,
       "return torch.autograd.grad(o, inputs, grad_o, retain_graph=True)",
       "return torch.autograd.grad(attention(*inputs), inputs, grad_o)", BASE_CALLS,
       "the libraries' backward rows also time a forward"),
    # ------------------------------------------------------ benchmarks/attention_features.py
    _m("feat-math-jvp-counted-as-forward", _FEAT,
       '"func_jvp_math": 12, "sdpa_fwd": 4', '"func_jvp_math": 4, "sdpa_fwd": 4', FEAT_ROWS,
       "math attention's JVP credited with the primal forward's FLOPs"),
    _m("feat-causal-not-halved", _FEAT,
       "(0.5 if feature == \"causal\" else 1.0)", "(1.0 if feature == \"causal\" else 1.0)", FEAT_ROWS,
       "causal attention counted at full attention's FLOPs: its TFLOP/s doubled"),
    _m("feat-x-full-inverted", _FEAT,
       'row["x_full"] = round(ms / ms_full[variant], 3)', 'row["x_full"] = round(ms_full[variant] / ms, 3)',
       FEAT_ROWS, "a feature's cost over full attention is full over the feature"),
    _m("feat-err-compares-o", _FEAT,
       '_, o_dot, _ = fns["ours_jvp"]()', 'o_dot, _, _ = fns["ours_jvp"]()', FEAT_ROWS,
       "our O compared with math's O'"),
    _m("feat-gqa-heads-per-group", _FEAT,
       "kv_heads = max(1, args.heads // args.kv_group)", "kv_heads = max(1, args.kv_group)", FEAT_INPUTS,
       "--kv-group taken as the count of key/value heads: at 4 of 4 heads gqa is full attention"),
    _m("feat-mask-drops-half", _FEAT,
       "keep[1::2, ..., n - n // 4 :] = False", "keep[1::2, ..., n - n // 2 :] = False", FEAT_INPUTS,
       "the padding mask drops half the keys, not the quarter the docstring says"),
    _m("feat-bias-fp32-in-q-dtype", _FEAT,
       '"bias_fp32": dense,', '"bias_fp32": dense.to(dtype),', FEAT_INPUTS,
       "the fp32-bias row gives our kernels a bias in q's dtype: the same row as bias"),
    _m("feat-bwd-bias-dropped", _FEAT,
       "return op(grad_o, q, k, v, o, lse, scale, causal, backend, full_bias)",
       "return op(grad_o, q, k, v, o, lse, scale, causal, backend, None)", FEAT_ROWS,
       "our backward of the masked and biased rows ignores the bias"),
    _m("feat-bwd-not-causal", _FEAT,
       "return op(grad_o, q, k, v, o, lse, scale, causal, backend, full_bias)",
       "return op(grad_o, q, k, v, o, lse, scale, False, backend, full_bias)", FEAT_ROWS,
       "our causal backward times full attention's, at half the FLOPs"),
    _m("feat-cpu-gets-gpu-shapes", _FEAT,
       'args.shapes = ["64:64"] if args.quick or not gpu else', 'args.shapes = ["64:64"] if args.quick else',
       FEAT_ARGS, "a CPU run without --quick takes the GPU's N = 4096 shapes"),
]
# fmt: on
