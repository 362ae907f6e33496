"""The trainer's own step, eager and replayed as one CUDA graph (docs/design.md sections 5-6).

    python benchmarks/trainer_step.py                       # DiT-B/2 and XL/2, batch 32 and 256, bf16 (GPU)
    python benchmarks/trainer_step.py --presets DiT-XL/2 --batches 64 --out-dir D
    python benchmarks/trainer_step.py --quick               # DiT-T/4, batch 4, fp32: a smoke run (CPU)

Each case is the step ``meanflow.train`` runs, built by its own functions: the loss module,
fused AdamW, gradient clipping, one EMA, bf16 autocast, the draws of the ``(seed, step)``
generator; with ``--cuda_graphs on`` (``graphs``) or ``off`` (``eager``). Objectives: flow
matching (``fm``), MeanFlow's default (du/dt on the rows with r != t, ``mf``) and MeanFlow
with du/dt on every row (``mf_all``); no guidance and no class dropout, so that they differ
only in the passes they run.

Per case, after the warmup (a graphed step captures at its fourth step): ``ms``, the median
wall time of ``--steps`` steps, each from a sync to a sync; ``host_ms``, the median time the
Python call of a step takes from that sync (a step whose host time reaches its wall time is
host-bound: the GPU waits for launches; without the sync before it, a GPU-bound step's call
would wait for the kernels of the steps before it and look host-bound too);
``device_busy_ms``, the time per step the GPU runs kernels (torch.profiler over two more
steps; None on the CPU, or where a graph's kernels were not traced): a step whose host time
exceeds it keeps the GPU waiting; ``mfu``, model FLOPs per second against the datasheet's
dense bf16 peak of the GPU (``_common.DATASHEET_BF16_TFLOPS``). Model FLOPs are those of FM's
step, 3 forward passes per image (forward and backward), counted by
``torch.utils.flop_counter`` on one forward with math attention, for every objective: what a
MeanFlow step does beyond them is its overhead, not useful work.
"""

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, uninstalled
from benchmarks import _common as C  # noqa: E402
from benchmarks import training_step as T  # noqa: E402
from meanflow import train  # noqa: E402
from meanflow.config import LossConfig, TrainConfig  # noqa: E402
from meanflow.models import unfused_attention  # noqa: E402

BENCHMARK = "trainer_step"
OBJECTIVES = {
    "fm": dict(objective="flow_matching", class_dropout=0.0),
    "mf": dict(objective="meanflow", class_dropout=0.0, cfg_w=1.0, cfg_k=0.0, tangent_rows="r_neq_t"),
    "mf_all": dict(objective="meanflow", class_dropout=0.0, cfg_w=1.0, cfg_k=0.0, tangent_rows="all"),
}


def forward_flops(model, x, y) -> int:
    """FLOPs of one forward of ``model`` on ``(x, y)``, counted on its first row (math
    attention, so that SDPA is counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    t = torch.full((1,), 0.5, device=x.device)
    with torch.no_grad(), unfused_attention(model), FlopCounterMode(display=False) as counter:
        model(x[:1], t, t, y[:1])
    return counter.get_total_flops() * x.shape[0]


def device_busy_ms(one, first_step, device):
    """Milliseconds per step the GPU spends in kernels over two steps from ``first_step``
    (``one(step)`` runs a step); None on the CPU or where no kernel was traced."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for step in (first_step, first_step + 1):
            one(step)
        C.sync(device)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time_total for e in kernels) / 1e3 / 2
    return round(busy, 3) if busy > 0 else None


def run_case(preset, batch, objective, mode, device, dtype, steps) -> dict:
    row = dict(preset=preset, batch=batch, objective=objective, mode=mode, dtype=dtype, device=device.type)
    config = TrainConfig(model=preset, batch_size=batch, precision=dtype, ema_decays=[0.9999])
    config.loss = LossConfig(**OBJECTIVES[objective])
    config.cuda_graphs = "on" if mode == "graphs" else "off"
    model = T.build_model(preset, None, device)
    in_ch, size, classes = T.preset_inputs(preset, None)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, in_ch, size, size, device=device, generator=g)
    y = torch.randint(0, classes, (batch,), device=device, generator=g)
    emas = [copy.deepcopy(model).requires_grad_(False).eval()]
    opt = train.build_optimizer(model, config, device)
    loss = config.loss.build()
    step_module = train.build_step_module(model, loss, config, 1, device)
    try:
        run_step = train.build_step(step_module, model, emas, opt, config, loss, 1, device, master=False)
    except ValueError as e:
        return {**row, "status": f"skipped: {e}"}

    def one(step):
        noise = loss.sample_noise(x, g.manual_seed(step))
        return run_step(step, (x, y), noise, config.lr)

    for step in range(5):  # a graphed step: 3 eager on a side stream, a capture, a replay
        one(step)
    C.sync(device)
    host, wall = [], []
    for step in range(5, 5 + steps):
        C.sync(device)
        t0 = time.perf_counter()
        stats = one(step)
        host.append((time.perf_counter() - t0) * 1e3)
        C.sync(device)
        wall.append((time.perf_counter() - t0) * 1e3)
    ms = statistics.median(wall)
    row.update(status="ok", ms=ms, host_ms=statistics.median(host), loss=float(stats["loss"]))
    row["device_busy_ms"] = device_busy_ms(one, 5 + steps, device)
    flops = 3 * forward_flops(model, x, y)
    row.update(model_tflop_per_step=flops / 1e12, tflops=flops / ms / 1e9)
    peak = C.datasheet_peak_tflops(C.device_name(device))
    if peak and dtype == "bf16":
        row["mfu"] = round(row["tflops"] / peak, 3)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["DiT-B/2", "DiT-XL/2"])
    p.add_argument("--batches", nargs="+", type=int, default=[32, 256])
    p.add_argument("--objectives", nargs="+", choices=tuple(OBJECTIVES), default=list(OBJECTIVES))
    p.add_argument("--modes", nargs="+", choices=("eager", "graphs"), default=["eager", "graphs"])
    p.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on a GPU, fp32 on the CPU"
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per case, after 5 warmup steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; the cases after it are skipped")
    p.add_argument("--quick", action="store_true", help="DiT-T/4, batch 4, 2 steps: a smoke run")
    p.add_argument("--out-dir", default=None, help="write the JSON there")
    args = p.parse_args(argv)
    device = C.use_device(args.device)
    C.set_cpu_threads(device, None)
    if args.quick:
        args.presets, args.batches, args.steps = ["DiT-T/4"], [4], 2
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    settings = {k: v for k, v in vars(args).items() if k != "out_dir"} | {"dtype": dtype}
    payload = {**C.header(BENCHMARK, device, sys.argv if argv is None else argv, settings), "rows": []}
    path = (
        C.result_path(args.out_dir, BENCHMARK, device, args.quick, "json", settings) if args.out_dir else None
    )
    start = time.perf_counter()
    for preset in args.presets:
        for batch in args.batches:
            for objective in args.objectives:
                for mode in args.modes:
                    if args.time_budget and time.perf_counter() - start > args.time_budget:
                        row = dict(
                            preset=preset, batch=batch, objective=objective, mode=mode, status="skipped: time"
                        )
                    else:
                        try:
                            row = run_case(preset, batch, objective, mode, device, dtype, args.steps)
                        except Exception as e:  # one failing case must not hide the others
                            row = dict(preset=preset, batch=batch, objective=objective, mode=mode)
                            row["status"] = f"error: {C.short_error(e)}"
                        finally:
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
                    payload["rows"].append(row)
                    print(format_row(row), flush=True)
                    if path:
                        C.write_json(path, payload)
    print(table(payload["rows"]))
    return payload


def format_row(row) -> str:
    case = f"{row['preset']} b{row['batch']} {row['objective']} {row['mode']}"
    if row["status"] != "ok":
        return f"{case}: {row['status']}"
    mfu = f", MFU {100 * row['mfu']:.0f}%" if "mfu" in row else ""
    busy = f", GPU busy {row['device_busy_ms']:.1f}" if row.get("device_busy_ms") else ""
    return f"{case}: {row['ms']:.1f} ms/step (host {row['host_ms']:.1f}{busy}){mfu}"


def table(rows) -> str:
    """Per preset and batch, each objective's ms per step eager and graphed, and its ratio to
    the fastest FM step of the same preset and batch."""
    ok = [r for r in rows if r["status"] == "ok"]
    best_fm = {}
    for r in ok:
        if r["objective"] == "fm":
            key = (r["preset"], r["batch"])
            best_fm[key] = min(best_fm.get(key, float("inf")), r["ms"])
    lines = []
    for r in ok:
        fm = best_fm.get((r["preset"], r["batch"]))
        ratio = f"{r['ms'] / fm:.2f}x" if fm else "-"
        mfu = f"{100 * r['mfu']:.0f}%" if "mfu" in r else "-"
        lines.append(
            [
                r["preset"],
                r["batch"],
                r["objective"],
                r["mode"],
                f"{r['ms']:.1f}",
                f"{r['host_ms']:.1f}",
                "-" if r.get("device_busy_ms") is None else f"{r['device_busy_ms']:.1f}",
                ratio,
                mfu,
            ]
        )
    headers = ["preset", "batch", "objective", "mode", "ms/step", "host ms", "GPU busy", "x best FM", "MFU"]
    return C.format_table(lines, headers)


if __name__ == "__main__":
    main()
