"""Where a training step's time goes: the loss (network pass and target), the backward and the
optimiser step timed apart, then the kernels that take the most device time.

    python benchmarks/step_phases.py                                  # DiT-XL/2 b64 bf16 (GPU)
    python benchmarks/step_phases.py --variants fm+compile fused_triton+compile --out-dir D
    python benchmarks/step_phases.py --device cpu --preset DiT-T/4 --batch 2 --dtype fp32 \\
        --variants fm dual_ref                                        # CPU smoke run

The same steps as ``jvp_throughput.py`` (``benchmarks/training_step.py``: its loss, compile
mode and autocast), so its ratios can be split: a fused step over FM is a forward-side or a
backward-side gap, and a host-side or a device-side one (the host time of a step against the
time the GPU is busy in it). Phases are timed with CUDA events (perf_counter on the CPU); the
median over ``--steps`` steps after one warm-up. The kernel table is torch.profiler over two
more steps, by self device time (self CPU time on the CPU), one list per variant.
``--out-dir``: the JSON goes there after every variant, so a run killed mid-way keeps the
variants before it (``--traces``: a Chrome trace per variant too). ``--time-budget``: the
variants that would start after it are rows ``skipped: time budget``.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, uninstalled
from benchmarks import _common as C  # noqa: E402
from benchmarks import training_step as T  # noqa: E402
from meanflow import PRESETS  # noqa: E402

BENCHMARK = "step_phases"
PHASES = ("loss", "backward", "optimizer")


class PhaseTimer:
    """Marks between phases of one step; device events on CUDA, the host clock elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"  # events: the host clock would time the launches
        self.marks = []

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def durations_ms(self):
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def run_variant(variant, model, opt, x, y, args, device):
    loss_fn, context, undo = T.make_loss(variant, model, args)
    backend = T.BACKEND_OF.get(T.family(variant))
    if T.is_compiled(variant):
        torch._dynamo.reset()

    def step(timer=None):
        mark = timer.mark if timer else None
        T.training_step(model, opt, backend, loss_fn, context, x, y, device, args.dtype, mark)

    try:
        start = time.perf_counter()
        step()  # compilation, autotuning
        C.sync(device)
        first_call_s = time.perf_counter() - start
        step()
        per_phase, totals = {name: [] for name in PHASES}, []
        for _ in range(args.steps):
            timer = PhaseTimer(device)
            step(timer)
            durations = timer.durations_ms()
            for name, ms in zip(PHASES, durations):
                per_phase[name].append(ms)
            totals.append(sum(durations))
        row = {"variant": variant, "first_call_s": round(first_call_s, 2)}
        row.update({f"{name}_ms": round(statistics.median(v), 3) for name, v in per_phase.items()})
        # The median step, not the sum of the phases' medians (taken from different steps).
        row["step_ms"] = round(statistics.median(totals), 3)
        row.update(host_and_wall_ms(step, device, args.steps))
        row["kernels"], row["device_busy_ms"] = top_kernels(step, device, args, variant)
        return row
    finally:
        undo()
        opt.zero_grad(set_to_none=True)


def host_and_wall_ms(step, device, steps):
    """Medians of a whole step's wall time and of its host time (until ``step()`` returns,
    not waiting for the device). Host time close to the wall time, with the device busy
    for much less (``device_busy_ms``), means a step bound by launching its kernels."""
    host, wall = [], []
    for _ in range(steps):
        C.sync(device)
        start = time.perf_counter()
        step()
        host.append(time.perf_counter() - start)
        C.sync(device)
        wall.append(time.perf_counter() - start)
    return {
        "host_ms": round(statistics.median(host) * 1e3, 3),
        "wall_ms": round(statistics.median(wall) * 1e3, 3),
    }


def top_kernels(step, device, args, variant):
    """The ops with the most self device time over two steps, in ms per step, and the time the
    device was busy per step (all its kernels; None on the CPU)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            step()
        C.sync(device)
    if args.traces:
        prof.export_chrome_trace(str(Path(args.out_dir) / f"{BENCHMARK}_{C.slug(variant)}_trace.json"))
    averages = prof.key_averages()
    busy = None
    if device.type == "cuda":
        kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = round(sum(e.device_time_total for e in kernels) / 1e3 / 2, 3)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(averages, key=lambda e: getattr(e, attr), reverse=True)[: args.top]
    per_step = [(e, getattr(e, attr) / 1e3 / 2) for e in events]
    top = [
        {"name": e.key[:90], "ms_per_step": round(ms, 3), "calls_per_step": e.count // 2}
        for e, ms in per_step
        if ms > 0
    ]
    return top, busy


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda[:N]")
    parser.add_argument("--preset", default="DiT-XL/2", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", choices=sorted(T.DTYPES))
    parser.add_argument("--variants", nargs="+", default=["fm+compile", "fused_triton+compile"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed per variant")
    parser.add_argument("--tangent-rows", choices=["all", "r_neq_t"], default="all")
    parser.add_argument("--time-budget", type=float, help="seconds; the variants after it are skipped")
    parser.add_argument("--out-dir", type=Path, help="write the JSON here")
    parser.add_argument("--traces", action="store_true", help="and a Chrome trace per variant (large)")
    args = parser.parse_args(argv)
    if args.traces and not args.out_dir:
        parser.error("--traces needs --out-dir")
    unknown = [v for v in args.variants if v not in T.ORDER]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)} (choose from {', '.join(T.ORDER)})")
    for name in ("batch", "steps", "top"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        args.device = C.use_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    # What the loss needs besides: unguided, blocks compiled one by one (as jvp_throughput).
    for name, value in vars(T.loss_settings(tangent_rows=args.tangent_rows)).items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    device = args.device
    in_ch, size, classes = T.preset_inputs(args.preset, None)
    model = T.build_model(args.preset, None, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as jvp_throughput
    x = torch.randn(args.batch, in_ch, size, size, device=device)
    y = torch.randint(0, classes, (args.batch,), device=device)
    print(f"{C.device_name(device)} | {args.preset} batch {args.batch} {args.dtype}", end="")
    print(f" | torch {torch.__version__}")
    payload = C.header(BENCHMARK, device, sys.argv, settings={k: str(v) for k, v in vars(args).items()})
    rows = []
    path = (
        C.result_path(args.out_dir, BENCHMARK, device, False, "json", payload["settings"])
        if args.out_dir
        else None
    )
    start = time.perf_counter()
    for variant in args.variants:
        if args.time_budget is not None and time.perf_counter() - start > args.time_budget:
            rows.append(
                {"variant": variant, "status": f"skipped: time budget ({args.time_budget:.0f} s) used up"}
            )
        elif T.family(variant) in T.foreign_families(device):
            rows.append({"variant": variant, "status": f"skipped: its kernels do not run on {device.type}"})
        else:
            try:
                rows.append(run_variant(variant, model, opt, x, y, args, device))
            except Exception as exc:  # a failing variant is a result
                rows.append({"variant": variant, "status": f"failed: {C.short_error(exc)}"})
        print_row(rows[-1])
        if path:  # after each variant: a DiT-XL/2 compile can outlast the caller's timeout
            payload["rows"] = rows
            C.write_json(path, payload)
    if path:
        print(f"wrote {path}")
    return rows


def print_row(row):
    if "status" in row:
        print(f"\n{row['variant']}: {row['status']}")
        return
    phases = ", ".join(f"{name} {row[f'{name}_ms']:.2f}" for name in PHASES)
    print(f"\n{row['variant']}: step {row['step_ms']:.2f} ms = {phases} (first call {row['first_call_s']} s)")
    busy = "" if row["device_busy_ms"] is None else f", device busy {row['device_busy_ms']:.2f} ms"
    print(f"  unsplit step {row['wall_ms']:.2f} ms: host {row['host_ms']:.2f} ms{busy}")
    for k in row["kernels"]:
        print(f"  {k['ms_per_step']:9.3f} ms  x{k['calls_per_step']:<4d} {k['name']}")


if __name__ == "__main__":
    main()
