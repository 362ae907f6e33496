"""Attention JVP kernel microbenchmark: TFLOP/s and memory (docs/design.md section 6).

    python benchmarks/attention_jvp.py            # GPU: N 256..16384, d 72/128/64, bf16 (+ fp16 at d 128)
    python benchmarks/attention_jvp.py --quick    # tiny sizes, seconds (CPU / CI smoke run)

Forward, value and tangent (``O, O', LSE`` from ``Q, K, V, Q', K', V'``):
  ours_jvp        ``mfkernels.attention_jvp(..., backend="triton")`` (the fused kernel). On a
                  CPU it runs the plain-torch *reference* backend: those rows time the
                  oracle, not a kernel, and are labelled so.
  ours_jvp_tma     the same with ``MFK_ATTENTION_LOADS=tma`` (K, V and their tangents read through
                  tensor descriptors; triton backend on Hopper only)
  func_jvp_math   ``torch.func.jvp`` over ``F.scaled_dot_product_attention`` with the math
                  backend (materialises N x N; skipped where it would risk an OOM)
  <provider>_fwd  the primal forward alone of sdpa_flash (SDPA's flash backend), sdpa_cudnn,
                  flash_attn (FlashAttention-2) and fa3 (FlashAttention-3), each where this
                  machine has it (benchmarks/attention_baselines.py): the speeds to compare with
Backward (primal only, ``dO -> dQ, dK, dV``):
  ours_bwd        ``mfkernels::attention_backward`` from our saved ``O, LSE``
  ours_bwd_atomic the same with ``MFK_ATTENTION_DQ=atomic`` (dQ summed by atomics in the
                  dK/dV kernel: five products instead of seven; triton backend only)
  ours_bwd_cudnn  cuDNN's backward from our saved ``O, LSE`` (``MFK_ATTENTION_BACKWARD=cudnn``)
  ours_bwd_flash  FlashAttention-2's (SDPA's flash backend) the same way (``=flash``)
  <provider>_bwd  the same providers' backward

Shapes: on a GPU first DiT-XL/2's own attention (d = 72, N = 256 and 1024: 256x256 and 512x512
images; ``--dit-batch`` 64 x 16 heads = 1024 batch x heads), then a sweep over N and d at
``--tokens`` tokens per head (batch = tokens // N).

FLOPs counted per (batch * head), with N_q = N_k = N, from the matrix products only
(softmax and elementwise work not counted), the same count for every implementation:
  primal forward   4 N^2 d   (S = Q K^T: 2 N^2 d; O = P V: 2 N^2 d)
  JVP forward     12 N^2 d   (S, Q' K^T, Q K'^T, P V, (P * S') V, P V': six products)
  backward        10 N^2 d   (recompute S, dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q;
                              2.5x the primal forward, as flash-attention counts it)
TFLOP/s = count * batch * heads / time. "% peak" is against a measured dense 8192^3 bf16
matmul on the same device (and the datasheet's dense bf16 peak: 989 TFLOP/s for H100/H200 SXM).
Memory: peak allocated during one call minus what was allocated before it (outputs and
workspace), in MiB. Timing: ``triton.testing.do_bench`` medians on the GPU, the wall clock
on the CPU.
"""

import argparse
import gc
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels
from benchmarks import _common as C
from benchmarks import attention_baselines as baselines
from mfkernels import dispatch
from mfkernels.backends import library_attention
from mfkernels.backends.triton import attention as triton_attention

BENCHMARK = "attention_jvp"
FLOPS_PER_N2D = {"jvp": 12, "fwd": 4, "bwd": 10}
KIND = {
    "ours_jvp": "jvp",
    "ours_jvp_tma": "jvp",
    "func_jvp_math": "jvp",
    **{f"{p}_fwd": "fwd" for p in baselines.PROVIDERS},
    "ours_bwd": "bwd",
    "ours_bwd_atomic": "bwd",
    **{f"ours_bwd_{library}": "bwd" for library in library_attention.LIBRARIES},
    **{f"{p}_bwd": "bwd" for p in baselines.PROVIDERS},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def datasheet_peak(name: str):
    return C.datasheet_peak_tflops(name)  # bf16; fp16's dense peak is the same on these parts


class Bench:
    def __init__(self, args, device):
        self.args, self.device = args, device
        self.start = time.perf_counter()
        self.deadline = self.start + args.time_budget if args.time_budget else math.inf
        self.rows = []
        self.payload = C.header(BENCHMARK, device, sys.argv, settings=vars(args).copy())
        self.payload["flop_count"] = {
            "jvp": "12 N^2 d per (batch*head)",
            "fwd": "4 N^2 d per (batch*head)",
            "bwd": "10 N^2 d per (batch*head)",
        }
        self.json_path = C.result_path(
            args.out_dir, BENCHMARK, device, args.quick, "json", self.payload["settings"]
        )
        self.ours_backend = args.backend or ("triton" if device.type == "cuda" else "reference")

    def log(self, text):
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)

    def save(self):
        self.payload["rows"] = self.rows
        self.payload["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        C.write_json(self.json_path, self.payload)

    # ------------------------------------------------------------ timing

    def time_ms(self, fn):
        """(median, 20th, 80th percentile) ms of ``fn``."""
        a = self.args
        return C.kernel_ms(
            fn, self.device, cuda_events=a.cuda_events, warmup_ms=a.warmup_ms, rep_ms=a.rep_ms,
            repeats=a.repeats, max_seconds=a.max_seconds,
        )  # fmt: skip

    def peak_extra_mib(self, fn):
        return C.peak_extra_mib(fn, self.device)

    def dense_peak(self):
        """Measured dense matmul TFLOP/s: 8192^3 bf16 on the GPU, 1024^3 fp32 on the CPU."""
        n, dtype = (8192, torch.bfloat16) if self.device.type == "cuda" else (1024, torch.float32)
        a = torch.randn(n, n, device=self.device, dtype=dtype)
        b = torch.randn(n, n, device=self.device, dtype=dtype)
        ms = self.time_ms(lambda: torch.mm(a, b))[1]  # the fast end: a peak is a best case
        return {"shape": f"{n}^3", "dtype": str(dtype).removeprefix("torch."), "tflops": 2 * n**3 / ms / 1e9}

    # ------------------------------------------------------------ one shape

    def run_shape(self, dtype_name, d, n, batch=None):
        """Every variant at one shape; ``batch`` defaults to the sweep's ``tokens // N``."""
        args, device = self.args, self.device
        dtype = DTYPES[dtype_name]
        batch, heads = batch or max(1, args.tokens // n), args.heads
        base = {"dtype": dtype_name, "d": d, "N": n, "batch": batch, "heads": heads}
        gen = torch.Generator(device=device).manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

        shape = (batch, heads, n, d)
        q, k, v, qd, kd, vd, do = (rand(*shape) for _ in range(7))
        scale = d**-0.5
        work = batch * heads * n * n * d

        results = {}

        def record(variant, fn, backend=None, skip=None):
            row = {**base, "variant": variant, "kind": KIND[variant], "backend": backend}
            flops = FLOPS_PER_N2D[KIND[variant]] * work
            row["flop_formula"] = f"{FLOPS_PER_N2D[KIND[variant]]} N^2 d per (batch*head)"
            if skip is None and time.perf_counter() > self.deadline:
                skip = "skipped: time budget used up"
            if skip:
                row["status"] = skip
            else:
                try:
                    ms, lo, hi = self.time_ms(fn)
                    # after the timing's warmup: a first call's peak holds autotuning's trials
                    row["peak_extra_mib"] = self.peak_extra_mib(fn)
                    row.update(status="ok", ms=ms, ms_p20=lo, ms_p80=hi, tflops=flops / ms / 1e9)
                    if self.peak:
                        row["pct_measured_peak"] = round(100 * row["tflops"] / self.peak["tflops"], 1)
                    if self.datasheet:
                        row["pct_datasheet_peak"] = round(100 * row["tflops"] / self.datasheet, 1)
                    results[variant] = row
                except Exception as exc:
                    row["status"] = f"failed: {C.short_error(exc)}"
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            self.rows.append(row)

        # Our fused JVP, only where the dispatch really runs the asked-for backend.
        resolved = dispatch.resolve("attention_jvp", self.ours_backend, q, k, v, qd, kd, vd, scale)
        skip = None
        if resolved != self.ours_backend:
            skip = (
                f"skipped: backend {self.ours_backend!r} unavailable here (would fall back to {resolved!r})"
            )
        outs = {"ours_jvp": {}, "ours_jvp_tma": {}}  # each row's own O, O' and LSE

        def ours_jvp_into(out):
            def ours_jvp():
                out["o"], out["o_dot"], out["lse"] = mfkernels.attention_jvp(
                    q, k, v, qd, kd, vd, scale=scale, backend=self.ours_backend
                )

            return ours_jvp

        with torch.no_grad():
            record("ours_jvp", ours_jvp_into(outs["ours_jvp"]), self.ours_backend, skip)
        tma_skip = skip
        with C.environment(**{triton_attention.LOADS_ENV_VAR: "tma"}):
            if self.ours_backend != "triton" or not triton_attention.kv_by_tma(k, v, kd, vd):
                tma_skip = "skipped: tensor descriptors need the triton backend on sm_90 or newer"
            with torch.no_grad():
                record("ours_jvp_tma", ours_jvp_into(outs["ours_jvp_tma"]), self.ours_backend, tma_skip)

        # torch.func.jvp over math SDPA: N x N tensors, a handful of them, kept for a while.
        est_gib = 8 * batch * heads * n * n * 4 / 2**30
        limit = C.device_info(device).get("memory_gib") or 0
        math_skip = None
        if n > args.math_max_n:
            math_skip = f"skipped: OOM risk (N > --math-max-n {args.math_max_n})"
        elif device.type == "cuda" and est_gib > 0.5 * limit:
            math_skip = f"skipped: OOM risk (~{est_gib:.0f} GiB of N x N temporaries)"
        ref = {}

        def func_jvp_math():
            with sdpa_kernel(SDPBackend.MATH):
                ref["o"], ref["o_dot"] = torch.func.jvp(
                    lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=scale),
                    (q, k, v),
                    (qd, kd, vd),
                )

        with torch.no_grad():
            record("func_jvp_math", func_jvp_math, "math", math_skip)
        # Each of our rows from its own output, so that a fault of one loading scheme shows on
        # its row alone. A timing that failed after its first call leaves an output but no row.
        for variant, out in outs.items():
            if variant in results and "o" in ref:
                results[variant]["err_o_vs_math"] = _rel_err(out["o"], ref["o"])
                results[variant]["err_o_dot_vs_math"] = _rel_err(out["o_dot"], ref["o_dot"])
        ref.clear()
        out = outs["ours_jvp"]  # the backward's O and LSE: the default loads'

        def record_baseline(kind, provider, *inputs):
            make = baselines.forward if kind == "fwd" else baselines.backward
            try:
                fn, skip = make(provider, *inputs, scale), None
            except baselines.Unavailable as exc:
                fn, skip = None, f"skipped: {exc}"
            except Exception as exc:  # e.g. a head dim the backend does not take
                fn, skip = None, f"failed: {C.short_error(exc)}"
            record(f"{provider}_{kind}", fn, provider, skip)

        for provider in baselines.PROVIDERS:
            record_baseline("fwd", provider, q, k, v)

        # Backward: ours from the saved O and LSE of our forward.
        bwd_skip = skip or (None if "o" in out else "skipped: no forward output")
        if bwd_skip is None:
            bwd_resolved = dispatch.resolve(
                "attention_backward", self.ours_backend, do, q, k, v, out["o"], out["lse"], scale
            )
            if bwd_resolved != self.ours_backend:
                bwd_skip = (
                    f"skipped: backward backend {self.ours_backend!r} unavailable (would be {bwd_resolved!r})"
                )

        def ours_bwd():
            return torch.ops.mfkernels.attention_backward(
                do, q, k, v, out["o"], out["lse"], scale, False, self.ours_backend
            )

        record("ours_bwd", ours_bwd, self.ours_backend, bwd_skip)
        atomic_skip = bwd_skip
        if self.ours_backend != "triton":
            atomic_skip = "skipped: only the triton backend sums dQ by atomics"
        with C.environment(**{triton_attention.DQ_ENV_VAR: "atomic"}):
            record("ours_bwd_atomic", ours_bwd, self.ours_backend, atomic_skip)
        for library in library_attention.LIBRARIES:
            library_skip = bwd_skip
            if library_skip is None and self.ours_backend != "triton":
                library_skip = "skipped: the triton backend hands its O and LSE over"
            elif library_skip is None and library_attention.unsupported(library, q, k, v):
                library_skip = f"skipped: {library_attention.unsupported(library, q, k, v)}"
            elif library_skip is None:
                library_skip = _library_failure(library, do, q, k, v, out["o"], out["lse"], scale)
            with C.environment(**{triton_attention.BACKWARD_ENV_VAR: library}):
                record(f"ours_bwd_{library}", ours_bwd, self.ours_backend, library_skip)
        out.clear()

        for provider in baselines.PROVIDERS:
            record_baseline("bwd", provider, q, k, v, do)

        # Report one line per shape as it goes.
        def tflops(name):
            return f"{name} {_fmt(results[name]['tflops'])}" if name in results else f"{name} -"

        shown = [tflops("ours_jvp"), tflops("func_jvp_math"), _best(results, "fwd")]
        shown += [tflops("ours_bwd"), _best(results, "bwd")]
        self.log(f"{dtype_name} d={d} N={n} (batch {batch}, heads {heads}) TFLOP/s: " + ", ".join(shown))
        self.save()


def _library_failure(library, do, q, k, v, o, lse, scale):
    """Why ``library``'s backward fails on these inputs (no cuDNN plan for a shape, say), or
    None. Where it fails the triton backend runs its own kernels instead, with one warning
    per reason, and a row named after the library would time ours."""
    try:
        library_attention.attention_backward(library, do, q, k, v, o, lse, scale)
    except RuntimeError as exc:
        return f"failed: {C.short_error(exc)} (the triton backward would run instead)"
    return None


def _best(results, kind):
    """``"best <kind> <provider> <TFLOP/s>"`` among the other libraries' rows that ran."""
    rows = [(r["tflops"], v) for v, r in results.items() if v.endswith(f"_{kind}") and v != f"ours_{kind}"]
    if not rows:
        return f"best primal {kind} -"
    tflops, variant = max(rows)
    return f"best primal {kind} {variant.removesuffix('_' + kind)} {_fmt(tflops)}"


def _rel_err(a, ref):
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------ output


def print_table(rows, peak, datasheet):
    by_shape = {}
    for r in rows:
        key = (r["dtype"], r["d"], r["N"], r["batch"] * r["heads"])
        by_shape.setdefault(key, {})[r["variant"]] = r

    def tf(r):
        if r is None:
            return ""
        if r["status"] != "ok":
            return r["status"].split(":")[0]
        return _fmt(r["tflops"])

    table = []
    for (dtype, d, n, bh), vs in by_shape.items():
        ours = vs.get("ours_jvp")
        fwds = [vs[v] for v in vs if KIND[v] == "fwd" and vs[v]["status"] == "ok"]
        fwd = min(fwds, key=lambda r: r["ms"], default=None)
        ratio = ours["ms"] / fwd["ms"] if ours and fwd and "ms" in ours else None
        pct = ours.get("pct_measured_peak") if ours else None
        table.append(
            [dtype, d, n, bh, tf(ours), "" if pct is None else f"{pct:.0f}%", tf(vs.get("ours_jvp_tma"))]
            + [tf(vs.get("func_jvp_math"))]
            + [tf(vs.get(f"{p}_fwd")) for p in baselines.PROVIDERS]
            + ["" if ratio is None else f"{ratio:.2f}", tf(vs.get("ours_bwd")), tf(vs.get("ours_bwd_atomic"))]
            + [tf(vs.get(f"ours_bwd_{library}")) for library in library_attention.LIBRARIES]
            + [tf(vs.get(f"{p}_bwd")) for p in baselines.PROVIDERS]
            + [_mem(ours), _mem(vs.get("func_jvp_math")), _mem(fwd)]
        )
    heads = (
        ["dtype", "d", "N", "BxH", "ours JVP", "%peak", "TMA loads", "func.jvp math"]
        + [f"{p} fwd" for p in baselines.PROVIDERS]
        + ["JVP/fwd time", "ours bwd", "atomic dQ"]
        + [f"{library} bwd of ours" for library in library_attention.LIBRARIES]
        + [f"{p} bwd" for p in baselines.PROVIDERS]
        + ["MiB ours", "MiB math", "MiB fwd"]
    )
    print(C.format_table(table, heads))
    print("TFLOP/s with JVP = 12 N^2 d, forward = 4 N^2 d, backward = 10 N^2 d per (batch*head).")
    if peak:
        extra = f"; datasheet {datasheet:.0f} TFLOP/s" if datasheet else ""
        dense = f"{peak['shape']} {peak['dtype']} matmul, {_fmt(peak['tflops'])} TFLOP/s"
        print(f"%peak: of a measured dense {dense}{extra}.")
    print(
        "JVP/fwd time: ours JVP over the fastest primal forward (3.0 would match the FLOP ratio"
        " 12/4); MiB fwd: that forward's."
    )


def _fmt(x):
    return f"{x:.1f}" if x >= 10 else f"{x:.3g}"


def _mem(r):
    return "" if r is None or r.get("peak_extra_mib") is None else f"{r['peak_extra_mib']:.0f}"


def plot(rows, path, title):
    plt = C.pyplot()
    if plt is None:
        return None
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    ds = sorted({r["d"] for r in ok})
    fig, axes = plt.subplots(2, len(ds), figsize=(4.2 * len(ds), 6.5), squeeze=False)
    styles = {"bf16": "-", "fp16": "--", "fp32": ":"}
    for col, d in enumerate(ds):
        for row_i, kinds in enumerate((("jvp", "fwd"), ("bwd",))):
            ax = axes[row_i, col]
            for variant in KIND:
                if KIND[variant] not in kinds:
                    continue
                for dtype in styles:
                    pts = sorted(
                        (r["N"], r["tflops"])
                        for r in ok
                        if r["d"] == d and r["variant"] == variant and r["dtype"] == dtype
                    )
                    if pts:
                        ax.plot(*zip(*pts), styles[dtype], marker="o", ms=3, label=f"{variant} {dtype}")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{'forward (JVP and primal)' if row_i == 0 else 'backward'}, d={d}", fontsize=9)
            ax.set_xlabel("sequence length N", fontsize=8)
            ax.set_ylabel("TFLOP/s", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run in seconds")
    parser.add_argument(
        "--backend",
        choices=mfkernels.BACKENDS,
        help="backend of 'ours' (default: triton on CUDA, reference on the CPU; triton on the CPU needs"
        " TRITON_INTERPRET=1 and only checks the code path)",
    )
    parser.add_argument("--seqlens", nargs="+", type=int, help="GPU default 256 ... 16384 (powers of 2)")
    parser.add_argument("--head-dims", nargs="+", type=int, help="default 72 128 64")
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), help="GPU default bf16, then fp16 at d=128"
    )
    parser.add_argument("--heads", type=int, help="default GPU 16, CPU 2")
    parser.add_argument("--tokens", type=int, help="batch = max(1, tokens // N); default GPU 32768, CPU 256")
    parser.add_argument(
        "--math-max-n", type=int, default=8192, help="largest N for torch.func.jvp over math SDPA"
    )
    parser.add_argument(
        "--dit-batch",
        type=int,
        help="batch of the DiT-XL/2 shapes (bf16, d 72, N 256 and 1024) run first; 0 = none"
        " (default: 64 on a GPU, so batch x heads = 1024; 0 on the CPU and with --quick)",
    )
    parser.add_argument("--warmup-ms", type=int, default=10, help="do_bench warm-up (GPU)")
    parser.add_argument("--rep-ms", type=int, default=40, help="do_bench measuring time (GPU)")
    parser.add_argument(
        "--cuda-events", action="store_true", help="time with CUDA events instead of do_bench"
    )
    parser.add_argument("--repeats", type=int, help="CPU timed calls (default 5, quick 2)")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="CPU time per case at most")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run (default GPU 100)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default 1: stable on shared machines; 0: torch's)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out-dir", default=str(C.RESULTS_DIR))
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    defaults = dict(
        heads=16 if gpu else 2,
        tokens=32768 if gpu else 256,
        repeats=2 if args.quick else 5,
        time_budget=100.0 if gpu and not args.quick else None,
        dit_batch=64 if gpu and not args.quick else 0,
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# DiT-XL/2's attention: head dim 72 (1152 / 16 heads) over 16 x 16 and 32 x 32 latent patches.
DIT_SHAPES = (("bf16", 72, 256), ("bf16", 72, 1024))


def shapes(args, device):
    """``(dtype, d, N, batch)`` in the order they run, batch None for the sweep's tokens // N:
    the DiT-XL/2 shapes at ``--dit-batch``, then the sweep with the DiT head dim first at each N."""
    dit = [(dt, d, n, args.dit_batch) for dt, d, n in DIT_SHAPES] if args.dit_batch else []
    return dit + [(dt, d, n, None) for dt, d, n in _sweep(args, device)]


def _sweep(args, device):
    """(dtype, d, N) over sequence lengths and head dims."""
    if args.quick:
        seqlens, dims, dtypes = args.seqlens or [64, 128], args.head_dims or [64], args.dtypes or ["fp32"]
        if device.type == "cuda":
            dtypes = args.dtypes or ["bf16"]
        return [(dt, d, n) for dt in dtypes for d in dims for n in seqlens]
    if device.type == "cuda":
        seqlens = args.seqlens or [256 * 2**i for i in range(7)]
        if args.head_dims or args.dtypes:
            return [
                (dt, d, n)
                for dt in args.dtypes or ["bf16"]
                for d in args.head_dims or [72, 128, 64]
                for n in seqlens
            ]
        # Every head dim at every other N first, so that a short --time-budget still covers
        # the DiT-XL/2 dim (72) and the judged ones (64, 128); then the N in between, then fp16.
        coarse, fine = seqlens[::2], seqlens[1::2]
        bf16 = [("bf16", d, n) for part in (coarse, fine) for d in (72, 128, 64) for n in part]
        return bf16 + [("fp16", 128, n) for n in seqlens]
    seqlens = args.seqlens or [64, 128, 256, 512]
    return [(dt, d, n) for dt in args.dtypes or ["fp32"] for d in args.head_dims or [64, 72] for n in seqlens]


def main(argv=None):
    args = parse_args(argv)
    device = C.use_device(args.device)
    C.set_cpu_threads(device, args.threads)
    bench = Bench(args, device)
    name = C.device_name(device)
    bench.datasheet = datasheet_peak(name)
    bench.peak = None
    bench.log(f"{name} | torch {torch.__version__} | ours = backend {bench.ours_backend!r}")
    if device.type != "cuda":
        what = "the plain-torch REFERENCE backend, not the fused kernel"
        if bench.ours_backend != "reference":
            what = f"backend {bench.ours_backend!r} (under TRITON_INTERPRET a code-path check, not a timing)"
        bench.log(f"CPU run: tiny sizes; 'ours' is {what}")
    bench.peak = bench.dense_peak()
    bench.payload["dense_peak"] = bench.peak
    bench.payload["datasheet_peak_tflops"] = bench.datasheet
    bench.payload["ours_backend"] = bench.ours_backend
    bench.log(
        f"dense matmul peak {bench.peak['shape']} {bench.peak['dtype']}: {bench.peak['tflops']:.1f} TFLOP/s"
    )
    planned = shapes(args, device)
    for i, (dtype, d, n, batch) in enumerate(planned):
        if time.perf_counter() > bench.deadline:
            bench.log(f"time budget used up: skipping {dtype} d={d} N={n} and later shapes")
            # A sweep cut short must not read as complete: the rows alone do not say how many
            # shapes were planned.
            bench.payload["cut_short"] = f"time budget: {len(planned) - i} of {len(planned)} shapes not run"
            bench.rows.append(
                {"dtype": dtype, "d": d, "N": n, "variant": "all", "status": "skipped: time budget"}
            )
            break
        try:
            bench.run_shape(dtype, d, n, batch)
        except Exception as exc:  # e.g. OOM allocating the inputs: record, go on
            bench.rows.append(
                {"dtype": dtype, "d": d, "N": n, "variant": "all", "status": f"failed: {C.short_error(exc)}"}
            )
            bench.log(f"{dtype} d={d} N={n}: failed: {C.short_error(exc)}")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        bench.save()
    bench.save()
    print()
    rows = [r for r in bench.rows if r.get("variant") != "all"]
    print_table(rows, bench.peak, bench.datasheet)
    print(f"\nwrote {bench.json_path}")
    if not args.no_plot:
        title = f"attention JVP, {name}, ours = {bench.ours_backend}, {bench.payload['date'][:10]}"
        png = plot(rows, bench.json_path.with_suffix(".png"), title)
        if png:
            bench.payload["plot"] = png.name
            C.write_json(bench.json_path, bench.payload)
            print(f"wrote {png}")
    return bench.payload


if __name__ == "__main__":
    main()
