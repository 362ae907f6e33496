"""Time one full MeanFlow training step per way of computing ``(u, du/dt)`` (docs/design.md section 6).

    python benchmarks/jvp_throughput.py                 # default sweep for the device (GPU: ~5 min)
    python benchmarks/jvp_throughput.py --quick         # tiny model, seconds (CPU / CI smoke run)
    python benchmarks/jvp_throughput.py --presets DiT-XL/2 --batches 64 --variants 'fm*,fused_*'
    python benchmarks/jvp_throughput.py --tangent-rows r_neq_t --cfg-w 1 --cfg-k 0.5   # the trainer's loss

A step is: sample ``t, r`` and noise, the network pass, the target, the loss, the backward and
an AdamW step (torch's fused AdamW), with bf16 autocast on the GPU (fp32 master weights). Variants
differ only in how ``(u, du/dt)`` is computed:

  fm                  plain flow matching, ``u(z, t, t)`` regressed on ``v`` (one forward;
                      SDPA picks flash attention on the GPU): the baseline every ratio uses
  func_jvp            ``torch.func.jvp`` over the model's plain ``forward``, attention in plain
                      ops (flash attention has no forward-mode AD), as public PyTorch MeanFlow
                      code does
  dual_ref            the dual engine ``model.jvp`` with the plain-torch reference ops
  fused_triton        ``model.jvp`` with the Triton kernels (CUDA)
  fused_cuda          ``model.jvp`` with the csrc CUDA kernels (when the extension is built)
  fused_cpu           ``model.jvp`` with the csrc CPU kernels (when the extension is built)
  <name>+compile      the same under ``torch.compile``. torch.func: the whole loss function
                      (the function that calls ``torch.func.jvp``; ``jvp(compile(f))`` would
                      not compile anything). Others: ``--compile-mode regional`` (default)
                      compiles each DiT block's ``forward`` / ``jvp`` (one graph shared by
                      every block, seconds to compile), ``full`` the whole loss function,
                      ``cudagraphs`` the regional graphs replayed as CUDA graphs
                      (``mode="reduce-overhead"``; every variant, FM too): no host cost per
                      kernel launch, for models too small to keep the GPU busy.

Timing: one first call (compilation, autotuning), ``--warmup`` more, then up to ``--repeats``
timed steps (CUDA events on the GPU) within ``--max-seconds``; median, min/max and IQR are
kept. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps (parameters,
AdamW state and activations; not measured on the CPU). A failing case (OOM, a compile error,
a compile past ``--compile-timeout``) is recorded as ``failed: <reason>`` and the run goes on;
``--time-budget`` skips what no longer fits. Results: a table on stdout, JSON and a PNG plot
in ``--out-dir`` (default benchmarks/results/), file names carrying the device name.

The step, its variants and the runner are ``benchmarks/training_step.py`` and
``benchmarks/step_runner.py``; the ratios, the targets (docs/design.md section 6), the table and
the plot are ``benchmarks/step_report.py``.
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import mfkernels
from benchmarks import _common as C
from benchmarks import step_report
from benchmarks.step_runner import Runner, build_plan
from benchmarks.training_step import DTYPES, LOSS_DEFAULTS, ORDER


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 repeats: a smoke run in seconds")
    parser.add_argument("--presets", nargs="+", help="e.g. DiT-XL/2 DiT-B/2 (default: the device's sweep)")
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="bf16/fp16: autocast; fp32: none")
    parser.add_argument(
        "--variants",
        nargs="+",
        type=lambda text: text.split(","),
        help=f"names or globs (space- or comma-separated) from: {', '.join(ORDER)}",
    )
    parser.add_argument("--no-compile", action="store_true", help="drop the +compile variants")
    parser.add_argument(
        "--compile-mode", choices=("regional", "full", "cudagraphs"), default=LOSS_DEFAULTS["compile_mode"]
    )
    parser.add_argument("--input-size", type=int, help="latent/image side (default 32; 16 with --quick)")
    parser.add_argument("--warmup", type=int, help="steps after the first call (default 1, quick 0)")
    parser.add_argument("--repeats", type=int, help="timed steps at most (default 7, quick 2)")
    parser.add_argument("--max-seconds", type=float, help="time per case at most, once 2 steps are timed")
    parser.add_argument(
        "--compile-timeout", type=float, help="seconds for a first compiled call (GPU 90, CPU 300)"
    )
    parser.add_argument("--eager-timeout", type=float, default=600.0)
    parser.add_argument(
        "--time-budget", type=float, help="seconds for the whole run (default GPU 290, CPU none)"
    )
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        help="time the eager variants round robin (default on the CPU, where other jobs' load varies)",
    )
    parser.add_argument(
        "--tangent-rows",
        choices=("all", "r_neq_t"),
        default=LOSS_DEFAULTS["tangent_rows"],
        help="MeanFlow variants run the JVP on every row (all: as public MeanFlow code, the targets' "
        "terms) or only on the rows with r != t (r_neq_t: the engine's default loss)",
    )
    parser.add_argument(
        "--cfg-w",
        type=float,
        default=LOSS_DEFAULTS["cfg_w"],
        help="guidance folded into the MeanFlow target (loss.cfg_w; default 1 with --cfg-k 0: none, "
        "the targets' terms)",
    )
    parser.add_argument("--cfg-k", type=float, default=LOSS_DEFAULTS["cfg_k"], help="loss.cfg_k (default 0)")
    parser.add_argument("--no-forward", action="store_true", help="skip timing the network pass alone")
    parser.add_argument("--no-check", action="store_true", help="skip the numerics check against torch.func")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default 1: stable on shared machines; 0: torch's)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out-dir", default=str(C.RESULTS_DIR))
    args = parser.parse_args(argv)
    if args.variants:
        args.variants = [pattern for patterns in args.variants for pattern in patterns]
    gpu = args.device.startswith("cuda")
    defaults = dict(
        warmup=0 if args.quick else 1,
        repeats=2 if args.quick else 7,
        max_seconds=1.0 if args.quick else (3.0 if gpu else 60.0),
        compile_timeout=90.0 if gpu else 300.0,
        time_budget=None if args.quick else (290.0 if gpu else None),
        input_size=16 if args.quick else None,
        interleave=not gpu,
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    device = C.use_device(args.device)
    C.set_cpu_threads(device, args.threads)
    runner = Runner(args, device)
    groups = build_plan(args, device)
    backends = sorted(mfkernels.available_backends())
    budget = f" | time budget {args.time_budget:.0f} s" if args.time_budget else ""
    runner.log(f"{C.device_name(device)} | torch {torch.__version__} | backends {backends}{budget}")
    if device.type == "cpu":
        runner.log("CPU run: no fused GPU kernels here; fused_cpu needs the csrc extension")
    for g in groups:
        runner.run_group(g)
    runner.save()
    print()
    step_report.print_table(runner.rows)
    print()
    step_report.print_targets(runner.payload["targets"], vars(args))
    print(f"\nwrote {runner.json_path}")
    if not args.no_plot:
        label = step_report.step_title(vars(args))
        png = step_report.plot(runner.rows, runner.json_path.with_suffix(".png"), label)
        if png:
            runner.payload["plot"] = png.name
            C.write_json(runner.json_path, runner.payload)
            print(f"wrote {png}")
    return runner.payload


if __name__ == "__main__":
    main()
