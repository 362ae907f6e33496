"""Mutants of the step benchmarks: ``benchmarks/step_runner.py`` (the timed training steps,
eager, compiled and graphed) and the programs that report them (``jvp_throughput.py``,
``step_phases.py``, ``trainer_step.py``, ``training_step.py``, ``any_model_jvp.py``): a step
that times other work than it names, a FLOP count or MFU off, a row that reports the wrong
setting."""

from mutant import Mutant

__all__ = ["BENCH_STEP_MUTANTS"]

_RUNNER = "benchmarks/step_runner.py"
_JVP = "benchmarks/jvp_throughput.py"
_PHASES = "benchmarks/step_phases.py"
_TRAINER = "benchmarks/trainer_step.py"
_STEP = "benchmarks/training_step.py"
_ANY = "benchmarks/any_model_jvp.py"
_NEW = "tests/benchmarks/test_step_benchmarks.py"
_SMOKE = "tests/benchmarks/test_benchmark_smoke.py"
_PARTS = "tests/benchmarks/test_jvp_throughput_parts.py"
_TIMING = "tests/benchmarks/test_flops_and_timing.py"
_COMMON = "tests/benchmarks/test_bench_common.py"

# The tests each mutant runs, the fastest first (-x stops at the first failure).
RUNNER = tuple(
    f"{_NEW}::{name}"
    for name in (
        "test_runner_round_robin_counts",
        "test_runner_network_pass_is_the_steps_own",
        "test_runner_compiled_rows",
        "test_runner_rows",
    )
)
PLAN = (f"{_PARTS}::test_plan_filters", f"{_NEW}::test_plan_and_defaults")
PHASES = (f"{_NEW}::test_step_phases_counts",)
TRAINER = (f"{_NEW}::test_trainer_step_rows",)
FLOPS = (f"{_TIMING}::test_dit_forward_flops_match_the_layer_count",)
STEP = (f"{_PARTS}::test_guided_step", f"{_NEW}::test_training_step_library")
ANY = (f"{_SMOKE}::test_any_model_jvp_targets", f"{_NEW}::test_any_model_cases")


def _m(name, path, find, replace, tests, why):
    return Mutant(f"bstep-{name}", path, find, replace, tests, why)


# One mutant per five lines, as a table: the formatter would spread each over eight.
# fmt: off
BENCH_STEP_MUTANTS = [
    # -------------------------------------------------------------- benchmarks/step_runner.py
    _m("runner-extra-warmup-step", _RUNNER,
       "for _ in range(args.warmup):", "for _ in range(args.warmup + 1):", RUNNER,
       "one more untimed step than --warmup says: the recorded settings misstate the run"),
    _m("runner-img-per-s-per-ms", _RUNNER,
       'case.row["batch"] / (case.row["ms"] / 1e3)', 'case.row["batch"] / case.row["ms"]', RUNNER,
       "images per second reported per millisecond: a thousand times low"),
    _m("runner-func-jvp-compile-mode-as-asked", _RUNNER,
       'row["compile_mode"] = "full" if family(variant) == "func_jvp" else args.compile_mode',
       'row["compile_mode"] = args.compile_mode', RUNNER,
       "compiled torch.func is always compiled whole, but its row says regional"),
    _m("runner-fm-pass-r-not-t", _RUNNER,
       'run = lambda: model(p["z"], p["t"], p["t"], p["y"])',
       'run = lambda: model(p["z"], p["r"], p["t"], p["y"])', RUNNER,
       "FM's network pass is fed r != t: not the FM baseline's forward"),
    _m("runner-pass-tangent-rows-inverted", _RUNNER,
       'elif self.args.tangent_rows == "all":', 'elif self.args.tangent_rows == "r_neq_t":', RUNNER,
       "--tangent-rows all times the pass on the r != t rows only, and the reverse"),
    _m("runner-pass-jvp-r-t-swapped", _RUNNER,
       'run = lambda: jvp_fn(model, p["z"], p["r"], p["t"], p["y"], p["v"])',
       'run = lambda: jvp_fn(model, p["z"], p["t"], p["r"], p["y"], p["v"])', RUNNER,
       "the pass alone takes du/dt at (t, r): another point than the step's"),
    _m("runner-pass-backend-unset", _RUNNER,
       "model.backend = backend", "model.backend = None", RUNNER,
       "the fused variants' network pass runs the default ops: fwd_ms of the wrong kernels"),
    _m("runner-pass-no-autocast", _RUNNER,
       "with torch.no_grad(), autocast(device, dtype), context():\n                run()",
       "with torch.no_grad(), context():\n                run()", RUNNER,
       "a bf16 row's network pass is timed in fp32"),
    _m("runner-round-robin-extra-round", _RUNNER,
       "while rounds < repeats and", "while rounds <= repeats and", RUNNER,
       "one timed step more than --repeats"),
    _m("runner-round-robin-budget-not-per-case", _RUNNER,
       "time.perf_counter() - start < max_seconds * len(fns)", "time.perf_counter() - start < max_seconds",
       RUNNER, "interleaved cases share one case's --max-seconds: fewer steps each than asked"),
    _m("runner-fwd-ms-from-step-times", _RUNNER,
       "for case, t in zip(passes, pass_times):", "for case, t in zip(passes, times):", RUNNER,
       "fwd_ms is the whole step's time"),
    _m("runner-interleaved-flag-inverted", _RUNNER,
       "status=\"ok\", interleaved=not alone)", "status=\"ok\", interleaved=alone)", RUNNER,
       "rows timed round robin say they were timed alone (the CPU speedup's pairing reads it)"),
    _m("runner-compiled-interleaved", _RUNNER,
       "elif args.interleave and not is_compiled(variant):", "elif args.interleave:", RUNNER,
       "compiled variants join the eager round robin, and lose their own peak memory"),
    _m("runner-file-ignores-tangent-rows", _RUNNER,
       'rows = "_r_neq_t" if args.tangent_rows == "r_neq_t" else ""', 'rows = ""', RUNNER,
       "an r_neq_t run overwrites the default run's file"),
    _m("runner-settings-not-recorded", _RUNNER,
       "settings=vars(args).copy())", "settings={})", RUNNER,
       "the JSON does not say which step (tangent rows, guidance, compile mode) it timed"),
    _m("runner-batch-asked-for-ignored", _RUNNER,
       "for batch in args.batches or [", "for batch in [", PLAN,
       "--batches is ignored: each preset runs at its default batch"),
    # ----------------------------------------------------------- benchmarks/jvp_throughput.py

    _m("jvp-default-warmup-zero", _JVP,
       "warmup=0 if args.quick else 1,", "warmup=0,", PLAN,
       "full runs time the step right after its first (compiling) call"),
    _m("jvp-explicit-zero-overridden", _JVP,
       "if getattr(args, name) is None:", "if not getattr(args, name):", PLAN,
       "--warmup 0 or --no-interleave is replaced by the default"),
    _m("jvp-interleave-on-gpu", _JVP,
       "interleave=not gpu,", "interleave=gpu,", PLAN,
       "GPU variants timed round robin: no peak memory for any"),
    # -------------------------------------------------------------- benchmarks/step_phases.py
    _m("phases-result-path-without-settings", _PHASES,
       'C.result_path(args.out_dir, BENCHMARK, device, False, "json", payload["settings"])',
       'C.result_path(args.out_dir, BENCHMARK, device, False, "json")',
       (f"{_COMMON}::test_step_phases_keeps_the_results_of_two_batches_in_one_folder",),
       "a batch sweep into one folder keeps only its last batch's result"),
    _m("phases-cpu-marks-in-seconds", _PHASES,
       "return [(b - a) * 1e3 for a, b in", "return [(b - a) for a, b in", PHASES,
       "CPU phase times in seconds, labelled ms"),
    _m("phases-no-warmup-step", _PHASES,
       "        step()\n        per_phase, totals", "        per_phase, totals", PHASES,
       "the step after the compiling call is timed: autotuning and allocator growth in the median"),
    _m("phases-one-step-short", _PHASES,
       "        for _ in range(args.steps):", "        for _ in range(args.steps - 1):", PHASES,
       "one timed step fewer than --steps"),
    _m("phases-host-after-sync", _PHASES,
       "        host.append(time.perf_counter() - start)\n        C.sync(device)",
       "        C.sync(device)\n        host.append(time.perf_counter() - start)", PHASES,
       "host time taken after waiting for the device: every step reads host-bound"),
    _m("phases-busy-two-steps-as-one", _PHASES,
       "busy = round(sum(e.device_time_total for e in kernels) / 1e3 / 2, 3)",
       "busy = round(sum(e.device_time_total for e in kernels) / 1e3, 3)", PHASES,
       "GPU-busy time per step doubled: host-bound steps look device-bound"),
    _m("phases-compiled-backend-lost", _PHASES,
       "backend = T.BACKEND_OF.get(T.family(variant))", "backend = T.BACKEND_OF.get(variant)", PHASES,
       "a fused +compile variant steps with model.backend None: the reference ops, timed as fused"),
    # ------------------------------------------------------------- benchmarks/trainer_step.py
    _m("trainer-flops-two-passes", _TRAINER,
       "flops = 3 * forward_flops(model, x, y)", "flops = 2 * forward_flops(model, x, y)", TRAINER,
       "a step's model FLOPs without the weight gradients: MFU a third low"),
    _m("trainer-flops-one-row", _TRAINER,
       "return counter.get_total_flops() * x.shape[0]", "return counter.get_total_flops()", FLOPS,
       "the FLOPs of one image for the whole batch"),
    _m("trainer-tflops-units", _TRAINER,
       "tflops=flops / ms / 1e9)", "tflops=flops / ms / 1e12)", TRAINER,
       "TFLOP/s a thousand times low (ms is not s)"),
    _m("trainer-ms-is-host-time", _TRAINER,
       "ms = statistics.median(wall)", "ms = statistics.median(host)", TRAINER,
       "the step time is the host's: a GPU-bound step reads as fast as its launches"),
    _m("trainer-host-is-wall-time", _TRAINER,
       "host_ms=statistics.median(host)", "host_ms=statistics.median(wall)", TRAINER,
       "the host time is the wall time: every step reads host-bound"),
    _m("trainer-mfu-inverted", _TRAINER,
       'row["mfu"] = round(row["tflops"] / peak, 3)', 'row["mfu"] = round(peak / row["tflops"], 3)',
       TRAINER, "MFU is peak over achieved"),
    _m("trainer-mfu-for-fp32", _TRAINER,
       'if peak and dtype == "bf16":', "if peak:", TRAINER,
       "an fp32 step's MFU against the bf16 tensor-core peak"),
    _m("trainer-warmup-one-short", _TRAINER,
       "for step in range(5):  # a graphed step", "for step in range(4):  # a graphed step", TRAINER,
       "the graphed step's replay is never warmed: step 4 is skipped and step 5 replays first when timed"),
    _m("trainer-busy-two-steps-as-one", _TRAINER,
       "busy = sum(e.device_time_total for e in kernels) / 1e3 / 2",
       "busy = sum(e.device_time_total for e in kernels) / 1e3", TRAINER,
       "GPU-busy time of two steps reported per step"),
    _m("trainer-graphs-mode-off", _TRAINER,
       'config.cuda_graphs = "on" if mode == "graphs" else "off"', 'config.cuda_graphs = "off"', TRAINER,
       "the graphs rows time the eager step"),
    _m("trainer-mf-all-is-default-rows", _TRAINER,
       'cfg_k=0.0, tangent_rows="all")', 'cfg_k=0.0, tangent_rows="r_neq_t")', TRAINER,
       "mf_all runs du/dt on the r != t rows only: the same step as mf"),
    _m("trainer-fm-runs-meanflow", _TRAINER,
       '"fm": dict(objective="flow_matching"', '"fm": dict(objective="meanflow"', TRAINER,
       "the FM baseline silently runs the MeanFlow loss: every ratio reads ~1"),
    _m("trainer-dtype-not-passed", _TRAINER,
       "run_case(preset, batch, objective, mode, device, dtype, args.steps)",
       'run_case(preset, batch, objective, mode, device, "fp32", args.steps)', TRAINER,
       "--dtype bf16 times fp32 steps"),
    _m("trainer-best-fm-slowest", _TRAINER,
       'best_fm[key] = min(best_fm.get(key, float("inf")), r["ms"])',
       'best_fm[key] = max(best_fm.get(key, 0.0), r["ms"])', TRAINER,
       "ratios against the slowest FM step: MeanFlow looks cheaper than it is"),
    # ------------------------------------------------------------ benchmarks/training_step.py
    _m("step-no-autocast", _STEP,
       "    with autocast(device, dtype), context():\n        loss = loss_fn(x, y)",
       "    with context():\n        loss = loss_fn(x, y)", STEP,
       "a bf16 row's step runs in fp32"),
    _m("step-func-jvp-compiled-regionally", _STEP,
       'if fam == "func_jvp" or args.compile_mode == "full":', 'if args.compile_mode == "full":', STEP,
       "func_jvp+compile compiles the blocks under jvp(compile(f)): nothing compiles, row says compiled"),
    _m("step-cudagraphs-not-graphed", _STEP,
       'mode = "reduce-overhead" if cuda_graphs else None', "mode = None", STEP,
       "--compile-mode cudagraphs compiles without graphs: the graphed rows time regional compile"),
    _m("step-tangent-rows-dropped", _STEP,
       "jvp=jvp_of(fam), tangent_rows=args.tangent_rows", "jvp=jvp_of(fam)", STEP,
       "--tangent-rows r_neq_t times every row's du/dt"),
    # ----------------------------------------------------------- benchmarks/any_model_jvp.py

    _m("any-measure-no-warmup", _ANY,
       "    fn()  # warmup (autotuning, allocator)\n", "", ANY,
       "the first call (autotuning, allocator growth) is timed"),
    _m("any-meanflow-default-rows", _ANY,
       'MeanFlowLoss(jvp=func_jvp, tangent_rows="all", class_dropout=0.0)',
       "MeanFlowLoss(jvp=func_jvp, class_dropout=0.0)", ANY,
       "the step the docstring says runs every row's du/dt runs the r != t rows only"),
    _m("any-fm-yardstick-runs-meanflow", _ANY,
       'cases = [("fm", "step", contextlib.nullcontext, step(fm))]',
       'cases = [("fm", "step", contextlib.nullcontext, step(meanflow))]', ANY,
       "the FM yardstick runs the MeanFlow step: the 1.5x target compares it with itself"),
    _m("any-side-of-tokens", _ANY,
       "{n: 2 * int(n**0.5) for n in args.tokens}", "{n: int(n**0.5) for n in args.tokens}", ANY,
       "N = 1024 runs a 32 x 32 latent: 256 tokens"),
    _m("any-speed-inverted", _ANY,
       'speed = base["ms"] / r["ms"]', 'speed = r["ms"] / base["ms"]', ANY,
       "the JVP speedup is math over patched inverted"),
]
# fmt: on
