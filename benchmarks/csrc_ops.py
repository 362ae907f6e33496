"""Speed of the csrc kernels (mfkernels._C) against the torch composite (the ``reference``
backend, eager) and, on a GPU, against the Triton kernels where those exist. The gated
residual's backward has no csrc kernel: its rows are the reference and, on a GPU, Triton; the
value-only GELU has only a CPU kernel (on a GPU the plain forward runs ATen's GELU).

    python benchmarks/csrc_ops.py            # DiT-S (CPU) or DiT-S + DiT-XL (GPU) shapes
    python benchmarks/csrc_ops.py --quick    # one small shape, few repetitions
    python benchmarks/csrc_ops.py --save     # also write benchmarks/results/csrc_ops_<device>.json
    python benchmarks/csrc_ops.py --out-dir D  # ... into D instead (gpu_validate.sh)

Every op is called through the public mfkernels API with an explicit backend (so the
wrapper's cost is included, as a user sees it). GB/s counts the bytes an ideal kernel moves:
each input read once and each output written once (x, x' and both outputs for the pointwise
ops; plus the per-sample vectors for LayerNorm-modulate and the gated residual). On the CPU
the time is the median over interleaved rounds (other processes add noise: compare rows
taken in one run); on a GPU it is triton.testing.do_bench (or CUDA events without Triton).
"""

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, uninstalled
import mfkernels  # noqa: E402
from benchmarks._common import device_name, git_info, record_backends, use_device, versions  # noqa: E402
from mfkernels.backends import csrc as csrc_ops  # noqa: E402

OPS = (
    "layernorm_modulate_jvp",
    "layernorm_modulate_backward",
    "gelu_tanh_jvp",
    "gelu_tanh_backward",
    "gelu_tanh",
    "silu_jvp",
    "gated_residual_jvp",
    "gated_residual_backward",
)


def make_case(op, batch, tokens, dim, dtype, device):
    """(callable taking a backend, bytes an ideal kernel moves)."""
    big = batch * tokens * dim * dtype.itemsize

    def rand(*shape):
        return torch.randn(*shape, device=device).to(dtype)

    mod, mod_dot = rand(batch, 6 * dim), rand(batch, 6 * dim)
    vec_bytes = batch * dim * dtype.itemsize
    x, x_dot = rand(batch, tokens, dim), rand(batch, tokens, dim)
    if op == "layernorm_modulate_jvp":
        shift, scale = mod.chunk(6, 1)[:2]
        shift_dot, scale_dot = mod_dot.chunk(6, 1)[:2]
        return (
            lambda b: mfkernels.layernorm_modulate_jvp(
                x, x_dot, shift, scale, shift_dot, scale_dot, backend=b
            ),
            4 * big + 4 * vec_bytes,
        )
    if op == "layernorm_modulate_backward":
        scale, grad = mod.chunk(6, 1)[1], rand(batch, tokens, dim)
        backward = torch.ops.mfkernels.layernorm_modulate_backward
        return lambda b: backward(grad, x, scale, 1e-6, b), 3 * big + 3 * vec_bytes
    if op == "gated_residual_backward":  # df and dgate from dy, f and the gate (dx is dy itself)
        gate, f, grad = mod.chunk(6, 1)[2], rand(batch, tokens, dim), rand(batch, tokens, dim)
        backward = torch.ops.mfkernels.gated_residual_backward
        return lambda b: backward(grad, gate, f, b), 3 * big + 2 * vec_bytes
    if op == "gated_residual_jvp":
        gate, gate_dot = mod.chunk(6, 1)[2], mod_dot.chunk(6, 1)[2]
        f, f_dot = rand(batch, tokens, dim), rand(batch, tokens, dim)
        return (
            lambda b: mfkernels.gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot, backend=b),
            6 * big + 2 * vec_bytes,
        )
    # The MLP hidden activation is 4 dim wide.
    h, h_dot, bias = rand(batch, tokens, 4 * dim), rand(batch, tokens, 4 * dim), rand(4 * dim)
    if op == "gelu_tanh_jvp":
        return lambda b: mfkernels.gelu_tanh_jvp(h, h_dot, bias, backend=b), 16 * big
    if op == "gelu_tanh_backward":  # dx and the bias gradient from x and dy
        return lambda b: torch.ops.mfkernels.gelu_tanh_backward(h_dot, h, bias, b), 12 * big
    if op == "gelu_tanh":  # the value alone, a plain forward's (CPU kernel; ATen's GELU elsewhere)
        return lambda b: mfkernels.gelu_tanh(h, bias, backend=b), 8 * big
    return lambda b: mfkernels.silu_jvp(h, h_dot, backend=b), 16 * big


def time_cpu(fns: dict, rounds: int) -> dict:
    """Median seconds per call, the backends interleaved round by round."""
    for fn in fns.values():
        fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def time_gpu(fn, reps: int) -> float:
    """Seconds per call: the median of ``reps`` milliseconds of calls under ``do_bench`` (its
    ``warmup`` and ``rep`` are milliseconds, not counts), else the mean of ``reps`` calls."""
    try:
        from triton.testing import do_bench

        return do_bench(fn, warmup=10, rep=max(reps, 20), return_mode="median") / 1e3  # as the CPU rows
    except ImportError:
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / reps


def backend_runs(fn, backend) -> bool:
    """True when ``fn(backend)`` runs every op it dispatches on ``backend`` (no fallback to
    another backend): the backends' own support checks, on the case's real arguments."""
    if backend == "reference":
        return True
    with warnings.catch_warnings(), record_backends() as seen:
        warnings.simplefilter("ignore")
        fn(backend)
    return set().union(*seen.values()) == {backend}


def plan_backends(on_gpu: bool) -> list[str]:
    """The backends to time, the reference (the yardstick) first. Without the extension a GPU
    still has Triton rows to compare (a build that failed on a fresh machine must not cost
    them); a CPU has nothing left to compare."""
    if on_gpu:
        return ["reference", *(["cuda"] if csrc_ops.available() else []), "triton"]
    if not csrc_ops.available():
        raise SystemExit(f"{csrc_ops.import_error}; nothing to benchmark on the CPU")
    return ["reference", "cpu"]


def environment(device) -> dict:
    git = git_info()
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": versions()["triton"],
        "commit": git["commit"][:10],
        "dirty": git["dirty"],
        "cpu_isa": csrc_ops._C.cpu_isa() if csrc_ops.available() else None,
        "threads": torch.get_num_threads(),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one small shape, few repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/csrc_ops_<device>.json")
    parser.add_argument("--out-dir", type=Path, help="write the JSON here instead (implies --save)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = use_device(args.device)
    on_gpu = device.type == "cuda"
    backends = plan_backends(on_gpu)
    if not csrc_ops.available():
        print(f"# no csrc extension ({csrc_ops.import_error}): reference and Triton rows only")
    if args.quick:
        shapes = [("small", 2, 64, 384)]
    elif on_gpu:
        shapes = [("DiT-S/2 b256", 256, 256, 384), ("DiT-XL/2 b64", 64, 256, 1152)]
    else:
        shapes = [("DiT-S/2 b8", 8, 256, 384)]
    rounds = 5 if args.quick else 30
    env = environment(device)
    print(f"# {env}")
    if not on_gpu:
        print("# CPU: medians of interleaved rounds; on a shared machine compare rows of one run only")
    header = f"{'op':28s} {'shape':14s} {'dtype':9s} {'backend':9s} {'ms':>9s} {'GB/s':>8s} {'vs ref':>7s}"
    print(header)
    print("-" * len(header))
    rows = []
    for label, batch, tokens, dim in shapes:
        for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:
            for op in OPS:
                fn, nbytes = make_case(op, batch, tokens, dim, dtype, device)
                names = [b for b in backends if backend_runs(fn, b)]
                fns = {b: (lambda b=b, fn=fn: fn(b)) for b in names}
                if on_gpu:
                    times = {b: time_gpu(f, 20 if args.quick else 100) for b, f in fns.items()}
                else:
                    times = time_cpu(fns, rounds)
                for b in names:
                    row = {
                        "op": op, "shape": label, "batch": batch, "tokens": tokens, "dim": dim,
                        "dtype": str(dtype).removeprefix("torch."), "backend": b, "ms": times[b] * 1e3,
                        "GB/s": nbytes / times[b] / 1e9, "vs_reference": times["reference"] / times[b],
                    }  # fmt: skip
                    row.update(env)
                    rows.append(row)
                    print(
                        f"{op:28s} {label:14s} {row['dtype']:9s} {b:9s} {row['ms']:9.3f} {row['GB/s']:8.1f} "
                        f"{row['vs_reference']:6.2f}x"
                    )
    if args.save or args.out_dir:
        tag = "".join(ch if ch.isalnum() else "_" for ch in env["device"])
        out_dir = args.out_dir or Path(__file__).parent / "results"
        out = out_dir / f"csrc_ops_{tag}_{device.type}{env['threads']}t.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
        print(f"# wrote {out}")


if __name__ == "__main__":
    main()
