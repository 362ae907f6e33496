"""``torch.func.jvp`` through other libraries' transformers: math attention against
``mfkernels.patch_sdpa`` (docs/design.md section 2, "Forward-mode AD through any model's SDPA").

    python benchmarks/any_model_jvp.py                  # DiT-XL/2-sized models, N = 256 and 1024 (GPU)
    python benchmarks/any_model_jvp.py --models timm --tokens 1024 --out-dir D
    python benchmarks/any_model_jvp.py --quick          # tiny models on the CPU: a smoke run

Models, through their MeanFlow adapters (``meanflow/adapters.py``): diffusers'
``DiTTransformer2DModel`` with its default (DiT-XL/2) size, and a timm ``VisionTransformer``
of the same size (1152 wide, 28 blocks, 16 heads of 72, patch 2); 4-channel latents of 32 x 32
(N = 256 tokens) or 64 x 64 (N = 1024). Per model and N:

- ``jvp``: ``torch.func.jvp`` of ``u(z, r, t, y)`` with tangent ``(v, 0, 1)``, no grad (the
  MeanFlow target's pass), math attention (``sdpa_kernel(MATH)``) against the patched model;
- ``step``: a whole MeanFlow training step (``MeanFlowLoss(jvp=func_jvp)``, every row's du/dt,
  backward, AdamW), math against patched, and the same model's flow-matching step (``fm``,
  PyTorch's fused attention) as the yardstick.

Times are medians of CUDA-event timings after a warmup (bf16 autocast on a GPU); memory is the
peak allocated during the timed calls above what the model and optimizer hold. Targets: at
N = 1024 the patched JVP >= 3x faster and <= 0.5x the peak memory of math; the patched step
within 1.5x of the FM step. A library that is not installed is a skipped row.
"""

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, uninstalled
import mfkernels  # noqa: E402
from benchmarks import _common as C  # noqa: E402
from meanflow import FlowMatchingLoss, MeanFlowLoss  # noqa: E402
from meanflow.adapters import AdapterConfig  # noqa: E402
from meanflow.loss import func_jvp  # noqa: E402

BENCHMARK = "any_model_jvp"
XL = dict(depth=28, width=1152, heads=16)
MODELS = {"diffusers": "diffusers.DiTTransformer2DModel", "timm": "timm.VisionTransformer"}


def model_kwargs(model: str, size: dict) -> dict:
    if model == "diffusers":
        head_dim = size["width"] // size["heads"]
        return dict(num_layers=size["depth"], num_attention_heads=size["heads"], attention_head_dim=head_dim)
    return dict(patch_size=2, embed_dim=size["width"], depth=size["depth"], num_heads=size["heads"])


def build(model: str, side: int, size: dict, device) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        net = AdapterConfig(MODELS[model], side, 4, 1000, kwargs=model_kwargs(model, size)).build()
    with torch.no_grad():  # adaLN-Zero / zero heads would make every output 0: put the math to work
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


def measure(fn, device, repeats) -> dict:
    fn()  # warmup (autotuning, allocator)
    C.sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = C.time_calls(fn, device, repeats, max_seconds=30)
    out = C.summarize(times)
    if device.type == "cuda":
        out["peak_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**30
    return out


def run_model(model, side, batch, size, device, repeats, autocast) -> list[dict]:
    net = build(model, side, size, device)
    g = torch.Generator(device=device).manual_seed(0)
    z, v = (torch.randn(batch, 4, side, side, device=device, generator=g) for _ in range(2))
    r, t = torch.rand(2, batch, device=device, generator=g).sort(0).values
    y = torch.randint(0, 1000, (batch,), device=device, generator=g)
    x = torch.randn(batch, 4, side, side, device=device, generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    meanflow = MeanFlowLoss(jvp=func_jvp, tangent_rows="all", class_dropout=0.0)
    fm = FlowMatchingLoss(class_dropout=0.0)

    def jvp():
        with torch.no_grad(), autocast():
            func_jvp(net, z, r, t, y, v)

    def step(loss):
        def one():
            opt.zero_grad(set_to_none=True)
            with autocast():
                value, _ = loss(net, x, y, generator=g.manual_seed(1))
            value.backward()
            opt.step()

        return one

    def math():
        return sdpa_kernel(SDPBackend.MATH)

    cases = [("fm", "step", contextlib.nullcontext, step(fm))]
    cases += [("math", "jvp", math, jvp), ("math", "step", math, step(meanflow))]
    cases += [("patched", "jvp", None, jvp), ("patched", "step", None, step(meanflow))]
    rows = []
    for attention, what, context, fn in cases:
        if attention == "patched" and context is None:
            mfkernels.patch_sdpa(net)
            context = contextlib.nullcontext
        row = dict(model=model, tokens=(side // 2) ** 2, batch=batch, attention=attention, what=what)
        try:
            with context():
                row.update(status="ok", **measure(fn, device, repeats))
        except Exception as e:  # math attention's backward under autocast, out of memory: say so
            row["status"] = f"error: {C.short_error(e)}"
        rows.append(row)
        print(format_row(row), flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def format_row(row) -> str:
    case = f"{row['model']} N={row['tokens']} b{row['batch']} {row['what']} {row['attention']}"
    if row["status"] != "ok":
        return f"{case}: {row['status']}"
    mem = f", peak +{row['peak_gib']:.2f} GiB" if "peak_gib" in row else ""
    return f"{case}: {row['ms']:.1f} ms{mem}"


def verdict(passed: bool, text: str) -> str:
    return f"[{'PASS' if passed else 'FAIL'}] {text}"


def targets(rows) -> list[str]:
    """The verdicts at N = 1024 (and the step at every N), from the rows that ran."""
    ok = {(r["model"], r["tokens"], r["attention"], r["what"]): r for r in rows if r["status"] == "ok"}
    lines = []
    for (model, tokens, attention, what), r in sorted(ok.items()):
        if attention != "patched":
            continue
        base = ok.get((model, tokens, "math" if what == "jvp" else "fm", what if what == "jvp" else "step"))
        if not base:
            continue
        if what == "jvp" and tokens >= 1024:
            speed = base["ms"] / r["ms"]
            lines.append(verdict(speed >= 3, f"{model} N={tokens} JVP {speed:.2f}x faster than math (>= 3)"))
            if "peak_gib" in r and base.get("peak_gib"):
                mem = r["peak_gib"] / base["peak_gib"]
                lines.append(verdict(mem <= 0.5, f"{model} N={tokens} JVP peak {mem:.2f}x math's (<= 0.5)"))
        if what == "step":
            ratio = r["ms"] / base["ms"]
            lines.append(verdict(ratio <= 1.5, f"{model} N={tokens} step {ratio:.2f}x the FM step (<= 1.5)"))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    p.add_argument("--tokens", nargs="+", type=int, choices=(256, 1024), default=[256, 1024])
    p.add_argument("--batch", type=int, default=None, help="default: 32 at N = 256, 8 at N = 1024")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--time-budget", type=float, default=None, help="seconds; the models after it are skipped")
    p.add_argument(
        "--quick", action="store_true", help="2-block models 64 wide, N = 16, batch 2: a smoke run"
    )
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    device = C.use_device(args.device)
    C.set_cpu_threads(device, None)
    size = dict(depth=2, width=64, heads=2) if args.quick else XL
    sides = {16: 8} if args.quick else {n: 2 * int(n**0.5) for n in args.tokens}
    bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if bf16 else contextlib.nullcontext
    settings = {**{k: v for k, v in vars(args).items() if k != "out_dir"}, "size": size, "bf16": bf16}
    payload = {**C.header(BENCHMARK, device, sys.argv if argv is None else argv, settings), "rows": []}
    path = (
        C.result_path(args.out_dir, BENCHMARK, device, args.quick, "json", settings) if args.out_dir else None
    )
    start = time.perf_counter()
    for model in args.models:
        for tokens, side in sides.items():
            batch = args.batch or (2 if args.quick else 32 if tokens <= 256 else 8)
            if args.time_budget and time.perf_counter() - start > args.time_budget:
                payload["rows"].append(dict(model=model, tokens=tokens, status="skipped: time"))
            else:
                try:
                    payload["rows"] += run_model(model, side, batch, size, device, args.repeats, autocast)
                except ImportError as e:
                    payload["rows"].append(dict(model=model, tokens=tokens, status=f"skipped: {e}"))
            if path:
                C.write_json(path, payload)
    payload["targets"] = targets(payload["rows"]) if device.type == "cuda" and not args.quick else []
    print("\n".join(payload["targets"]) or "targets: judged on full runs on a GPU only")
    if path:
        C.write_json(path, payload)
    return payload


if __name__ == "__main__":
    main()
