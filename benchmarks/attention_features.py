"""What causal attention, grouped-query heads and masks cost the fused attention kernels, each
against plain attention at the same shape and against math attention's ``torch.func.jvp``
and SDPA's own kernels given the same feature (docs/attention-tuning.md).

    python benchmarks/attention_features.py            # GPU: bf16, d:N 72:1024 64:4096 128:4096
    python benchmarks/attention_features.py --quick    # tiny sizes, seconds (CPU / CI smoke run)

Features (q of (batch, heads, N, d), batch = --tokens // N):
  full       plain attention: the row each feature is compared with ("x full")
  causal     ``is_causal`` (top-left aligned); its FLOPs are counted as half of full's
  gqa        ``heads / --kv-group`` key/value heads (``enable_gqa``)
  mask       a key-padding mask (every other image masks its last quarter of keys) given to
             our kernels as an additive bias in q's dtype, broadcast from (batch, 1, 1, N): the
             kernels read it once per key
  bias       a bias per head, query and key (a quarter of it -inf) in q's dtype: read as tiles
  bias_fp32  the same bias in fp32: a 16-bit bias tile is prefetched through registers, an
             fp32 one copied asynchronously (docs/attention-tuning.md "Attention bias")
Variants, each with its feature:
  ours_jvp       ``mfkernels.attention_jvp`` (O, O' and LSE; the reference backend on a CPU)
  ours_bwd       ``mfkernels::attention_backward`` from our saved O and LSE
  func_jvp_math  ``torch.func.jvp`` over math SDPA (N <= --math-max-n)
  sdpa_fwd/bwd   SDPA's primal forward and backward, the backend torch picks (the bool mask,
                 the bias in q's dtype)

TFLOP/s with attention_jvp.py's counts per (batch*head): JVP 12 N^2 d, backward 10 N^2 d,
primal forward 4 N^2 d; causal at half of each. Timing as attention_jvp.py (``do_bench``
medians on the GPU, the wall clock on the CPU).
"""

import argparse
import gc
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
from mfkernels import dispatch
from mfkernels.sdpa import _additive_bias as additive_bias

BENCHMARK = "attention_features"
FEATURES = ("full", "causal", "gqa", "mask", "bias", "bias_fp32")
FLOPS_PER_N2D = {"ours_jvp": 12, "func_jvp_math": 12, "sdpa_fwd": 4, "ours_bwd": 10, "sdpa_bwd": 10}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GPU_SHAPES = ((72, 1024), (64, 4096), (128, 4096))  # DiT-XL/2 at 512 x 512, then the judged dims


def key_padding_mask(batch: int, n: int, device) -> torch.Tensor:
    """(batch, 1, 1, n) bool, True where a key takes part: every other image drops its last
    quarter of keys (text padding in a cross-attention batch)."""
    keep = torch.ones(batch, 1, 1, n, dtype=torch.bool, device=device)
    keep[1::2, ..., n - n // 4 :] = False
    return keep


class Inputs:
    """One shape's tensors and, per feature, what each implementation is given."""

    def __init__(self, args, device, dtype, d, n):
        self.batch, self.heads = max(1, args.tokens // n), args.heads
        kv_heads = max(1, args.heads // args.kv_group)
        gen = torch.Generator(device=device).manual_seed(0)

        def rand(heads):
            return torch.randn(self.batch, heads, n, d, device=device, dtype=dtype, generator=gen)

        self.q, self.q_dot, self.grad_o = rand(self.heads), rand(self.heads), rand(self.heads)
        self.kv = [rand(self.heads) for _ in range(4)]  # k, v, k_dot, v_dot
        self.kv_grouped = [t[:, :kv_heads].contiguous() for t in self.kv]
        self.scale = d**-0.5
        self.keep = key_padding_mask(self.batch, n, device)
        dense = torch.randn(self.batch, self.heads, n, n, device=device, generator=gen)
        dense = dense.masked_fill_(
            torch.rand(dense.shape, device=device, generator=gen) < 0.25, float("-inf")
        )
        self.bias = {
            "mask": additive_bias(self.keep, dtype),  # as sdpa_forward_ad turns a bool mask into one
            "bias": dense.to(dtype),
            "bias_fp32": dense,
        }

    def ours(self, feature):
        """``(k, v, k_dot, v_dot), causal, bias`` for our kernels."""
        kv = self.kv_grouped if feature == "gqa" else self.kv
        return kv, feature == "causal", self.bias.get(feature)

    def sdpa_kwargs(self, feature):
        """SDPA's keyword arguments for the same feature (the bool mask, as models pass it; the
        bias in q's dtype, which SDPA wants)."""
        masks = {"mask": self.keep, "bias": self.bias["bias"], "bias_fp32": self.bias["bias"]}
        return {
            "scale": self.scale,
            "is_causal": feature == "causal",
            "enable_gqa": feature == "gqa",
            "attn_mask": masks.get(feature),
        }


def variants(inputs: Inputs, feature: str, backend: str):
    """``{variant: no-argument callable}`` for one feature (our backward from our forward's
    saved O and LSE, SDPA's from its own forward run here once)."""
    q, q_dot, grad_o = inputs.q, inputs.q_dot, inputs.grad_o
    (k, v, k_dot, v_dot), causal, bias = inputs.ours(feature)
    scale = inputs.scale

    def ours_jvp():
        return mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, scale, backend, causal=causal, bias=bias)

    with torch.no_grad():
        o, _, lse = ours_jvp()
    full_bias = None if bias is None else bias.expand(*q.shape[:3], k.shape[2])

    def ours_bwd():
        op = torch.ops.mfkernels.attention_backward
        return op(grad_o, q, k, v, o, lse, scale, causal, backend, full_bias)

    sdpa = inputs.sdpa_kwargs(feature)

    def func_jvp_math():
        with sdpa_kernel(SDPBackend.MATH):
            attention = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **sdpa)  # noqa: E731
            return torch.func.jvp(attention, (q, k, v), (q_dot, k_dot, v_dot))

    def sdpa_fwd():
        return F.scaled_dot_product_attention(q, k, v, **sdpa)

    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    sdpa_out = F.scaled_dot_product_attention(*leaves, **sdpa)

    def sdpa_bwd():
        return torch.autograd.grad(sdpa_out, leaves, grad_o, retain_graph=True)

    return {
        "ours_jvp": ours_jvp,
        "func_jvp_math": func_jvp_math,
        "sdpa_fwd": sdpa_fwd,
        "ours_bwd": ours_bwd,
        "sdpa_bwd": sdpa_bwd,
    }


def run_shape(args, device, backend, dtype_name, d, n, rows, deadline):
    inputs = Inputs(args, device, DTYPES[dtype_name], d, n)
    base = {"dtype": dtype_name, "d": d, "N": n, "batch": inputs.batch, "heads": inputs.heads}
    work = inputs.batch * inputs.heads * n * n * d
    ms_full = {}
    for feature in FEATURES:
        if time.perf_counter() > deadline:  # before the set-up: it compiles and autotunes
            skipped = {**base, "feature": feature, "status": "skipped: time budget used up"}
            rows.extend({**skipped, "variant": variant} for variant in FLOPS_PER_N2D)
            continue
        try:  # our forward and SDPA's, run once to set up the backwards
            fns = variants(inputs, feature, backend)
        except Exception as exc:
            rows.append(
                {**base, "feature": feature, "variant": "all", "status": f"failed: {C.short_error(exc)}"}
            )
            continue
        o_dot = o_dot_math = None
        with torch.no_grad():
            try:
                _, o_dot, _ = fns["ours_jvp"]()
                if n <= args.math_max_n:
                    _, o_dot_math = fns["func_jvp_math"]()
            except Exception:  # e.g. math attention's N x N temporaries: its row says so below
                pass
        for variant, fn in fns.items():
            other = "math" if variant == "func_jvp_math" else "torch's choice"
            row = {**base, "feature": feature, "variant": variant}
            row["backend"] = backend if variant.startswith("ours") else other
            if time.perf_counter() > deadline:
                row["status"] = "skipped: time budget used up"
            elif variant == "func_jvp_math" and n > args.math_max_n:
                row["status"] = f"skipped: N > --math-max-n {args.math_max_n}"
            else:
                try:
                    ms, lo, hi = C.kernel_ms(fn, device, repeats=args.repeats, max_seconds=args.max_seconds)
                    # after the timing's warmup: a first call's peak holds autotuning's trials
                    row["peak_extra_mib"] = C.peak_extra_mib(fn, device)
                    flops = FLOPS_PER_N2D[variant] * work * (0.5 if feature == "causal" else 1.0)
                    row.update(status="ok", ms=ms, ms_p20=lo, ms_p80=hi, tflops=flops / ms / 1e9)
                    if feature == "full":
                        ms_full[variant] = ms
                    elif variant in ms_full:
                        row["x_full"] = round(ms / ms_full[variant], 3)
                except Exception as exc:
                    row["status"] = f"failed: {C.short_error(exc)}"
            if variant == "ours_jvp" and o_dot_math is not None:
                scale = o_dot_math.float().abs().max().clamp_min(1e-30)
                row["err_o_dot_vs_math"] = float((o_dot.float() - o_dot_math.float()).abs().max() / scale)
            rows.append(row)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def print_table(rows):
    def cell(r):
        if r is None:
            return ""
        if r["status"] != "ok":
            return r["status"].split(":")[0]
        x = f" ({r['x_full']:.2f}x)" if "x_full" in r else ""
        return f"{r['tflops']:.3g}{x}"

    by_case = {}
    for r in rows:
        by_case.setdefault((r["dtype"], r["d"], r["N"], r["feature"]), {})[r["variant"]] = r
    table = []
    for (dtype, d, n, feature), vs in by_case.items():
        err = vs["ours_jvp"].get("err_o_dot_vs_math")
        table.append(
            [dtype, d, n, feature]
            + [cell(vs.get(v)) for v in FLOPS_PER_N2D]
            + ["" if err is None else f"{err:.1e}"]
        )
    heads = ["dtype", "d", "N", "feature", "ours JVP", "func.jvp math", "sdpa fwd", "ours bwd", "sdpa bwd"]
    print(C.format_table(table, heads + ["O' err vs math"]))
    print(
        "TFLOP/s (JVP 12, forward 4, backward 10 N^2 d per (batch*head); causal half), in brackets"
        " the time over the same variant's full attention."
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run in seconds")
    parser.add_argument(
        "--backend",
        choices=mfkernels.BACKENDS,
        help="backend of 'ours' (default: triton on CUDA, reference on the CPU)",
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument(
        "--shapes", nargs="+", help="d:N pairs (default GPU 72:1024 64:4096 128:4096, CPU 64:64)"
    )
    parser.add_argument("--heads", type=int, help="query heads (default GPU 16, CPU 4)")
    parser.add_argument("--kv-group", type=int, default=4, help="query heads per key/value head (gqa)")
    parser.add_argument("--tokens", type=int, help="batch = max(1, tokens // N); default GPU 32768, CPU 128")
    parser.add_argument(
        "--math-max-n",
        type=int,
        default=2048,
        help="largest N for math attention's torch.func.jvp (N x N temporaries)",
    )
    parser.add_argument("--repeats", type=int, help="CPU timed calls (default 5, quick 2)")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="CPU time per case at most")
    parser.add_argument("--time-budget", type=float, help="seconds for the whole run (default GPU 60)")
    parser.add_argument("--threads", type=int, help="CPU threads (default 1; 0: torch's)")
    parser.add_argument("--out-dir", default=str(C.RESULTS_DIR))
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    defaults = dict(
        dtype="bf16" if gpu else "fp32",
        heads=16 if gpu else 4,
        tokens=32768 if gpu else 128,
        repeats=2 if args.quick else 5,
        time_budget=60.0 if gpu and not args.quick else None,
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.shapes is None:
        args.shapes = ["64:64"] if args.quick or not gpu else [f"{d}:{n}" for d, n in GPU_SHAPES]
    try:
        args.shapes = [tuple(int(x) for x in s.split(":")) for s in args.shapes]
    except ValueError:
        parser.error(f"--shapes: want d:N pairs such as 72:1024, got {args.shapes}")
    if any(len(s) != 2 or min(s) < 1 for s in args.shapes):
        parser.error(f"--shapes: want positive d:N pairs, got {args.shapes}")
    if args.kv_group < 1 or args.heads % args.kv_group:
        parser.error(f"--kv-group must divide --heads {args.heads}, got {args.kv_group}")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = C.use_device(args.device)
    C.set_cpu_threads(device, args.threads)
    backend = args.backend or ("triton" if device.type == "cuda" else "reference")
    start = time.perf_counter()
    deadline = start + args.time_budget if args.time_budget else float("inf")
    payload = C.header(BENCHMARK, device, sys.argv, settings={**vars(args), "shapes": args.shapes})
    payload["ours_backend"] = backend
    path = C.result_path(args.out_dir, BENCHMARK, device, args.quick, "json", payload["settings"])
    name = C.device_name(device)
    print(f"{name} | torch {torch.__version__} | ours = backend {backend!r}", flush=True)
    probe = torch.zeros(1, 1, 16, 64, device=device)
    if dispatch.resolve("attention_jvp", backend, *[probe] * 6, 1.0) != backend:
        print(f"backend {backend!r} does not run here", file=sys.stderr)
        return 2
    rows = []
    for d, n in args.shapes:
        try:
            run_shape(args, device, backend, args.dtype, d, n, rows, deadline)
        except Exception as exc:  # e.g. OOM allocating the inputs: record, go on
            failed = f"failed: {C.short_error(exc)}"
            rows.append(
                {"dtype": args.dtype, "d": d, "N": n, "feature": "all", "variant": "all", "status": failed}
            )
        payload["rows"] = rows
        payload["elapsed_s"] = round(time.perf_counter() - start, 1)
        C.write_json(path, payload)
        print(f"[{time.perf_counter() - start:6.1f}s] d={d} N={n} done", flush=True)
    print()
    print_table([r for r in rows if r.get("variant") != "all"])
    print(f"\nwrote {path}")
    return payload


if __name__ == "__main__":
    result = main()
    sys.exit(result if isinstance(result, int) else 0)
