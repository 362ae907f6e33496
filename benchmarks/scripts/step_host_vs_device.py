"""One-off diagnosis (2026-12-04, H200): is the fused step bound by the host? Per step, the host
time (until ``step()`` returns, unsynchronised), the wall time and the GPU busy time (kernel
times in a profile), for FM and the fused step on DiT-S/2 and DiT-XL/2 at batch 64, compiled
regionally as in ``jvp_throughput.py`` and with CUDA graphs, plus a cProfile of one fused
DiT-S/2 step. ``step_phases.py`` now reports the host, wall and busy times of any variant;
this script adds the CUDA-graph mode and the cProfile.

    python benchmarks/scripts/step_host_vs_device.py     # GPU; on the CPU: DiT-T/4, a smoke run
    DIAG_BUDGET=60 python benchmarks/scripts/step_host_vs_device.py   # seconds (default 150)

Its output: ``benchmarks/results/nvidia-h200-20261204-b/step_host_vs_device.log``.
"""

import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout, uninstalled
from benchmarks import training_step as T  # noqa: E402

T0 = time.perf_counter()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FUSED = "fused_triton" if dev.type == "cuda" else "dual_ref"
args = T.loss_settings(tangent_rows="all")


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run(preset, batch, variant, mode=None, cprof=False):
    if time.perf_counter() - T0 > float(os.environ.get("DIAG_BUDGET", "150")):
        print("SKIP (budget)", preset, variant, mode)
        return
    torch._dynamo.reset()
    in_ch, size, classes = T.preset_inputs(preset, None)
    model = T.build_model(preset, None, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    x = torch.randn(batch, in_ch, size, size, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    fam = T.family(variant)
    if mode:  # regional compile in another mode
        loss_fn, context, undo = T.make_loss(fam, model, args)
        for b in model.blocks:
            b.compile(mode=mode)
            if fam != "fm":
                b.jvp = torch.compile(b.jvp, mode=mode)
    else:
        loss_fn, context, undo = T.make_loss(variant, model, args)

    def step():
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        with T.autocast(dev, "bf16" if dev.type == "cuda" else "fp32"), context():
            loss = loss_fn(x, y)
        loss.backward()
        opt.step()

    try:
        t = time.perf_counter()
        step()
        sync()
        first = time.perf_counter() - t
        for _ in range(2):
            step()
        sync()
        host, total = [], []
        for _ in range(6):
            sync()
            t = time.perf_counter()
            step()
            h = time.perf_counter() - t
            sync()
            total.append(time.perf_counter() - t)
            host.append(h)
        busy = float("nan")
        if dev.type == "cuda":
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
                step()
                sync()
            busy = (
                sum(
                    e.device_time_total
                    for e in prof.key_averages()
                    if e.device_type == torch.autograd.DeviceType.CUDA
                )
                / 1e3
            )
            nk = sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
        else:
            nk = 0
        step_ms, host_ms = statistics.median(total) * 1e3, statistics.median(host) * 1e3
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0
        print(
            f"== {preset} b{batch} {variant} mode={mode}: first {first:.1f}s step {step_ms:.1f} ms, "
            f"host {host_ms:.1f} ms, GPU busy {busy:.1f} ms in {nk} kernels, peak {peak:.1f} GiB",
            flush=True,
        )
        if cprof:
            pr = cProfile.Profile()
            pr.enable()
            step()
            sync()
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
            print(s.getvalue()[:6000])
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("cumtime").print_stats(40)
            print(s.getvalue()[:7000])
    except Exception as exc:
        print("FAILED", preset, variant, mode, repr(exc)[:500])
    finally:
        undo()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


if dev.type == "cuda":
    run("DiT-S/2", 64, "fm+compile")
    run("DiT-S/2", 64, FUSED + "+compile", cprof=True)
    run("DiT-S/2", 64, FUSED)
    run("DiT-XL/2", 64, "fm+compile")
    run("DiT-XL/2", 64, FUSED + "+compile")
    run("DiT-S/2", 64, FUSED, mode="reduce-overhead")
    # FM replayed the same way: a ratio to FM is fair only when both have CUDA graphs (the
    # 2026-12-04 log compared the graphed fused S/2 step with FM's regional compile alone).
    run("DiT-S/2", 64, "fm", mode="reduce-overhead")
    run("DiT-XL/2", 64, FUSED, mode="reduce-overhead")
    run("DiT-XL/2", 64, "fm", mode="reduce-overhead")
else:
    run("DiT-T/4", 2, "fm+compile")
    run("DiT-T/4", 2, FUSED + "+compile", cprof=True)
    run("DiT-T/4", 2, FUSED, mode="reduce-overhead")
    run("DiT-T/4", 2, "fm", mode="reduce-overhead")
print(f"total {time.perf_counter() - T0:.0f}s")
