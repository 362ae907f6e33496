"""Mutants of the op and data benchmarks: ``benchmarks/csrc_ops.py`` (the row and pointwise
kernels' times and bytes moved, against torch), ``benchmarks/data_throughput.py`` (the loaders'
images per second) and ``benchmarks/triton_static.py`` (every attention config compiled: its
registers, spills and shared memory): a row that times other work than it names, a byte count
off, a table that misreports what the compiler said.

Of the 30 mutants of csrc_ops.py and data_throughput.py, 26 survived the tests before
test_op_benchmarks.py: test_csrc_ops_bench.py checks two fp32 byte counts (it kills the
gated residual backward's), test_data_throughput.py runs the script end to end and checks
little of its arithmetic (it kills the short epoch, the images made per class and the GPU row
on a CPU). The 18 of triton_static.py were not run against test_triton_static.py (minutes of
compiling each). test_op_benchmarks.py kills all 48, with stand-in clocks, timers, loaders
and compiler. No bug was found in the three benchmarks.

Left unmutated: the GPU shapes and do_bench's warm-up (no GPU runs these tests), the loaders
each data row builds (the rows' measure is a stand-in: only an end-to-end run tells them
apart), ``record_launches``' Recorder defaults and the launchers of ``cases`` beyond their
dtypes and shapes (only a compile for a real target exercises them)."""

from mutant import Mutant

__all__ = ["BENCH_OPS_MUTANTS"]

_OPS = "benchmarks/csrc_ops.py"
_DATA = "benchmarks/data_throughput.py"
_STATIC = "benchmarks/triton_static.py"
_NEW = "tests/benchmarks/test_op_benchmarks.py"


def _tests(*names):
    return tuple(f"{_NEW}::test_{name}" for name in names)


# The tests each mutant runs, the fastest first (-x stops at the first failure).
BYTES = _tests("csrc_cases_count_the_bytes_of_their_dtype_and_run_their_own_op")
CPU_TIME = _tests("csrc_cpu_time_is_the_median_of_the_rounds_after_a_warmup")
GPU_TIME = _tests(
    "csrc_gpu_time_is_do_bench_median_in_seconds", "csrc_gpu_time_without_triton_is_events_over_the_reps"
)
ROWS = _tests("csrc_rows_report_ms_gb_per_s_and_the_speedup")
RATE = _tests("data_rate_leaves_out_the_warmup_batch_and_runs_its_seconds")
IMAGES = _tests("data_images_not_a_multiple_of_the_8_classes_is_refused")
DATA_ROWS = _tests("data_rows_time_an_epoch_and_compare_with_torch")
USAGE = _tests(
    "static_resource_usage_reads_registers_and_stack", "static_rows_flag_spills_and_show_shared_memory_in_kib"
)
COMPILE = _tests(
    "static_compiles_for_the_arch_asked_and_fails_tiles_over_its_limit",
    "static_a_compile_error_is_a_row_and_the_others_still_compile",
)
TUNED = _tests("static_autotuned_kernels_compile_every_pruned_config")
CASES = _tests("static_cases_cover_the_dtypes_and_head_dims_asked")
MAIN = _tests("static_main_saves_the_rows_and_fails_on_a_failed_config")


def _m(name, path, find, replace, tests, why):
    return Mutant(f"bops-{name}", path, find, replace, tests, why)


# One mutant per five lines, as a table: the formatter would spread each over eight.
# fmt: off
BENCH_OPS_MUTANTS = [
    # ---------------------------------------------------------------- benchmarks/csrc_ops.py
    _m("csrc-bf16-as-4-bytes", _OPS,
       "big = batch * tokens * dim * dtype.itemsize", "big = batch * tokens * dim * 4", BYTES,
       "bf16 activations counted as 4 bytes: the bf16 rows' GB/s doubled"),
    _m("csrc-ln-jvp-no-tangent-bytes", _OPS,
       "4 * big + 4 * vec_bytes,", "2 * big + 2 * vec_bytes,", BYTES,
       "LayerNorm-modulate's JVP counts the primal only: the tangent's reads and writes missing"),
    _m("csrc-ln-backward-no-vector-grads", _OPS,
       "3 * big + 3 * vec_bytes", "3 * big + vec_bytes", BYTES,
       "the backward's dshift and dscale writes left out"),
    _m("csrc-residual-backward-no-df", _OPS,
       "3 * big + 2 * vec_bytes", "2 * big + 2 * vec_bytes", BYTES,
       "the gated residual's backward reads dy and f but its df write is not counted"),
    _m("csrc-gelu-value-counted-as-the-jvp", _OPS,
       "backend=b), 8 * big", "backend=b), 16 * big", BYTES,
       "the value-only GELU counted with a tangent it has not: its GB/s doubled"),
    _m("csrc-residual-jvp-no-tangent-bytes", _OPS,
       "6 * big + 2 * vec_bytes,", "3 * big + vec_bytes,", BYTES,
       "the gated residual's JVP counts the primal only"),
    _m("csrc-gelu-jvp-hidden-not-4-wide", _OPS,
       "gelu_tanh_jvp(h, h_dot, bias, backend=b), 16 * big",
       "gelu_tanh_jvp(h, h_dot, bias, backend=b), 4 * big",
       BYTES, "the MLP hidden counted dim wide, not 4 dim: GB/s a quarter of the truth"),
    _m("csrc-silu-no-tangent-bytes", _OPS,
       "silu_jvp(h, h_dot, backend=b), 16 * big", "silu_jvp(h, h_dot, backend=b), 8 * big", BYTES,
       "SiLU's JVP counts the primal only"),
    _m("csrc-gelu-row-times-silu", _OPS,
       "mfkernels.gelu_tanh_jvp(h, h_dot, bias, backend=b)", "mfkernels.silu_jvp(h, h_dot, backend=b)", BYTES,
       "the gelu_tanh_jvp rows time the SiLU kernel"),
    _m("csrc-inputs-stay-fp32", _OPS,
       "return torch.randn(*shape, device=device).to(dtype)", "return torch.randn(*shape, device=device)",
       BYTES, "every case runs in fp32: the bf16 rows time fp32 kernels"),
    _m("csrc-cpu-no-warmup", _OPS,
       "    for fn in fns.values():\n        fn()\n", "", CPU_TIME,
       "the first call (allocation, first touch) is one of the timed rounds"),
    _m("csrc-cpu-mean-not-median", _OPS,
       "statistics.median(s)", "statistics.mean(s)", CPU_TIME,
       "one preempted round drags the CPU time: the mean of a noisy machine"),
    _m("csrc-gpu-do-bench-ms-as-s", _OPS,
       'return_mode="median") / 1e3', 'return_mode="median")', GPU_TIME,
       "do_bench's milliseconds taken as seconds: GPU rows a thousand times slow"),
    _m("csrc-gpu-events-not-per-call", _OPS,
       "return start.elapsed_time(end) / 1e3 / reps", "return start.elapsed_time(end) / 1e3", GPU_TIME,
       "without Triton, all the reps' time reported per call"),
    _m("csrc-row-ms-as-s", _OPS,
       '"backend": b, "ms": times[b] * 1e3,', '"backend": b, "ms": times[b],', ROWS,
       "seconds in the ms column"),
    _m("csrc-row-gbs-with-ms", _OPS,
       '"GB/s": nbytes / times[b] / 1e9', '"GB/s": nbytes / (times[b] * 1e3) / 1e9', ROWS,
       "GB/s over milliseconds: the bandwidth a thousand times low (the 3 TB/s target judged on it)"),
    _m("csrc-row-speedup-inverted", _OPS,
       '"vs_reference": times["reference"] / times[b]', '"vs_reference": times[b] / times["reference"]', ROWS,
       "the speedup over the reference inverted: a faster kernel reads slower"),
    _m("csrc-dtypes-ignored", _OPS,
       'for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:', "for dtype in [torch.float32]:",
       ROWS, "--dtypes ignored: only fp32 rows"),
    _m("csrc-fallback-rows-kept", _OPS,
       "names = [b for b in backends if backend_runs(fn, b)]", "names = list(backends)", ROWS,
       "a backend that falls back to the reference gets a row: the reference timed under its name"),
    _m("csrc-quick-rounds-ignored", _OPS,
       "rounds = 5 if args.quick else 30", "rounds = 30", ROWS,
       "--quick times 30 rounds"),
    _m("csrc-file-without-threads", _OPS,
       "csrc_ops_{tag}_{device.type}{env['threads']}t.json", "csrc_ops_{tag}_{device.type}.json", ROWS,
       "a run at another thread count replaces the last run's file"),
    # --------------------------------------------------------- benchmarks/data_throughput.py
    _m("data-images-not-whole-classes", _DATA,
       "if value is None or value < 8 or value % 8:", "if value is None or value < 8:", IMAGES,
       "--images 10 makes 8 classes of 1 JPEG: 8 timed, 10 recorded"),
    _m("data-warmup-timed", _DATA,
       "    x, _ = next(batches)\n    C.sync(device)\n    assert x.dtype == torch.float32\n"
       "    count, start = 0, time.perf_counter()",
       "    count, start = 0, time.perf_counter()\n"
       "    x, _ = next(batches)\n    C.sync(device)\n    assert x.dtype == torch.float32",
       RATE, "the warm-up batch (pipeline build, worker start) inside the timed wall time"),
    _m("data-seconds-ignored", _DATA,
       "while count < min_samples or time.perf_counter() - start < seconds:", "while count < min_samples:",
       RATE,
       "the time budget ignored: one epoch however long --seconds asks"),
    _m("data-count-batches", _DATA,
       "count += len(y)", "count += 1", RATE,
       "batches counted as samples: images/s divided by the batch"),
    _m("data-epoch-one-batch-short", _DATA,
       "total - total % args.batch,", "total - total % args.batch - args.batch,", DATA_ROWS,
       "the minimum is one batch short of an epoch"),
    _m("data-latents-epoch-of-images", _DATA,
       'total = len(index) if unit == "images" else num_latents', "total = len(index)", DATA_ROWS,
       "the latent rows' minimum is the image count"),
    _m("data-seconds-zero-ignored", _DATA,
       "seconds = args.seconds if args.seconds is not None else (1.0 if q else 10.0)",
       "seconds = args.seconds or (1.0 if q else 10.0)", DATA_ROWS,
       "--seconds 0 runs the default time"),
    _m("data-x-torch-latents-vs-images", _DATA,
       'ref = base.get("torchvision") if r["unit"] == "images" else base.get("latents_torch")',
       'ref = base.get("torchvision")', DATA_ROWS,
       "latents/s compared with torchvision's images/s"),
    _m("data-x-torch-inverted", _DATA,
       'round(r["per_s"] / ref, 2)', 'round(ref / r["per_s"], 2)', DATA_ROWS,
       "the speedup over torch inverted"),
    _m("data-images-per-class", _DATA,
       "per_class=per_class,", "per_class=images,", DATA_ROWS,
       "--images made per class: eight times the JPEGs asked"),
    _m("data-gpu-row-on-cpu", _DATA,
       '"dali_gpu": (have_dali and device.type == "cuda", "images"),', '"dali_gpu": (have_dali, "images"),',
       DATA_ROWS, "a CPU run builds the nvJPEG row"),
    # ----------------------------------------------------------- benchmarks/triton_static.py
    _m("static-arch-ignored", _STATIC,
       'GPUTarget("cuda", arch, 32)', 'GPUTarget("cuda", 90, 32)', COMPILE,
       "--arch ignored: every run compiles for Hopper"),
    _m("static-shared-limit-of-hopper", _STATIC,
       "shared_limit = SHARED_LIMIT.get(arch, 99 * 1024)", "shared_limit = SHARED_LIMIT[90]", COMPILE,
       "every target judged by Hopper's 227 KB: tiles too big for a 99 KB card pass"),
    _m("static-blackwell-limit-missing", _STATIC,
       "    100: 227 * 1024,\n", "", COMPILE,
       "sm_100 falls to the 99 KB default: Blackwell's tiles fail"),
    _m("static-config-block-keys-lowercase", _STATIC,
       "if k.isupper() and k not in", "if k not in", COMPILE,
       "the config column lists every launch argument (scales, strides), not the tile"),
    _m("static-stages-from-warps", _STATIC,
       "num_stages=meta.num_stages)", "num_stages=meta.num_warps)", COMPILE,
       "num_stages read from the warps field"),
    _m("static-async-copies-bulk-only", _STATIC,
       'count("cp.async")', 'count("cp.async.bulk")', COMPILE,
       "cp.async copies not counted: Ampere's pipelined loads read as staged through registers"),
    _m("static-compile-error-dropped", _STATIC,
       "                        rows.append(row)\n"
       "                        log(format_row(row))\n                        continue",
       "                        log(format_row(row))\n                        continue", COMPILE,
       "a config that does not compile leaves no row: the run passes"),
    _m("static-driver-not-restored", _STATIC,
       "driver.set_active(previous)", "pass", COMPILE,
       "the stand-in driver stays active after the run"),
    _m("static-ops-filter-ignored", _STATIC,
       "            if ops is not None and op not in ops:\n                continue\n", "", COMPILE,
       "--ops ignored: every op compiles"),
    _m("static-first-config-only", _STATIC,
       "for config in kernel.prune_configs(kwargs)]", "for config in kernel.prune_configs(kwargs)[:1]]",
       TUNED,
       "an autotuned kernel's other configs are skipped: their spills go unseen"),
    _m("static-nargs-left-set", _STATIC,
       "        kernel.nargs = None", "        pass", TUNED,
       "the autotuner keeps the recorded arguments of the last launch"),
    _m("static-registers-stack-swapped", _STATIC,
       '{"registers": int(match[1]), "stack_bytes": int(match[2])}',
       '{"registers": int(match[2]), "stack_bytes": int(match[1])}', USAGE,
       "registers and stack bytes swapped"),
    _m("static-stack-from-shared", _STATIC,
       r'r"REG:(\d+)\s+STACK:(\d+)"', r'r"REG:(\d+).*?SHARED:(\d+)"', USAGE,
       "the stack read from the SHARED field: spills go unseen"),
    _m("static-spill-flag-at-zero", _STATIC,
       "isinstance(stack, int) and stack > 0", "isinstance(stack, int) and stack >= 0", USAGE,
       "every row flagged SPILLS"),
    _m("static-bias-dtype-ignored", _STATIC,
       "DTYPES[bias_dtype_name or dtype_name]", "DTYPES[dtype_name]", CASES,
       "--bias-dtype ignored: the fp32 bias of autocast never compiled"),
    _m("static-failures-pass", _STATIC,
       "return 1 if failed else 0", "return 0", MAIN,
       "a config that does not compile or fit exits 0: CI passes it"),
    _m("static-quick-one-head-dim", _STATIC,
       "head_dims = [64, 72] if args.quick", "head_dims = [64] if args.quick", MAIN,
       "--quick leaves out head dim 72 (DiT-XL/2)"),
    _m("static-file-without-arch", _STATIC,
       'f"{BENCHMARK}_sm{args.arch}.json"', 'f"{BENCHMARK}.json"', MAIN,
       "an sm_80 run replaces the sm_90 results"),
]
# fmt: on
