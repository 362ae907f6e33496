"""Build a DiT and time ``model.jvp`` (the dual engine) against ``torch.func.jvp``.

python -m meanflow.demo                         # a DiT-T/4 on MNIST-sized 1x32x32 inputs
python -m meanflow.demo --preset DiT-S/2 --batch 8 --input-size 32 --channels 4
"""

import argparse
import statistics
import time
import warnings

import torch

from meanflow import DiT
from meanflow.cli import errors_as_one_line, int_at_least
from meanflow.distributed import resolve_device
from meanflow.models import unfused_attention


def _median_ms(fn, repeats, device):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m meanflow.demo",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset", default="DiT-T/4", help="a DiT preset (meanflow.PRESETS; default: DiT-T/4)"
    )
    parser.add_argument("--batch", type=int_at_least(1), default=8, help="images per call (default: 8)")
    parser.add_argument("--input-size", type=int_at_least(1), default=32, help="image side (default: 32)")
    parser.add_argument("--channels", type=int_at_least(1), default=1, help="image channels (default: 1)")
    parser.add_argument(
        "--num-classes", type=int_at_least(0), default=10, help="classes; 0 = unconditional (default: 10)"
    )
    parser.add_argument(
        "--repeats", type=int_at_least(1), default=5, help="timed calls; the median is shown (default: 5)"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (the default: cuda when available, else cpu), cpu, cuda or cuda:N",
    )
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    torch.manual_seed(0)
    with errors_as_one_line(parser):  # an unknown preset, a size the patches do not divide
        model = DiT.from_config(
            args.preset, num_classes=args.num_classes, in_channels=args.channels, input_size=args.input_size
        ).to(device)
    # adaLN-Zero makes a fresh model output zeros; perturb so the numbers mean something.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    b = args.batch
    z = torch.randn(b, args.channels, args.input_size, args.input_size, device=device)
    v = torch.randn_like(z)
    t = torch.rand(b, device=device)
    r = t * torch.rand(b, device=device)
    y = torch.randint(0, args.num_classes, (b,), device=device) if args.num_classes else None

    def dual():
        return model.jvp(z, r, t, y, v)

    def func_jvp():  # attention in plain ops, as jvp_throughput.py and public MeanFlow code do
        with unfused_attention(model):
            return torch.func.jvp(
                lambda z_, r_, t_: model(z_, r_, t_, y),
                (z, r, t),
                (v, torch.zeros_like(r), torch.ones_like(t)),
            )

    with torch.no_grad(), warnings.catch_warnings():
        # torch.func.jvp loads torch's own decompositions through torch.jit.script, which warns
        # that it is deprecated: nothing the reader of this demo can act on.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        u, dudt = dual()
        u_ref, dudt_ref = func_jvp()
        ms_forward = _median_ms(lambda: model(z, r, t, y), args.repeats, device)
        ms_dual = _median_ms(dual, args.repeats, device)
        ms_func = _median_ms(func_jvp, args.repeats, device)
    err_u = ((u - u_ref).abs().max() / u_ref.abs().max()).item()
    err_d = ((dudt - dudt_ref).abs().max() / dudt_ref.abs().max()).item()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.preset} ({params:.1f}M params), batch {b}, {z.dtype}, {device}")
    print(f"u     shape {tuple(u.shape)}  max|u|     {u.abs().max().item():.4g}")
    print(f"du/dt shape {tuple(dudt.shape)}  max|du/dt| {dudt.abs().max().item():.4g}")
    print(f"max relative difference to torch.func.jvp: u {err_u:.2e}, du/dt {err_d:.2e}")
    print(f"forward only          {ms_forward:8.2f} ms")
    print(f"model.jvp (dual)      {ms_dual:8.2f} ms")
    print(f"torch.func.jvp        {ms_func:8.2f} ms   -> dual is {ms_func / ms_dual:.2f}x faster")


if __name__ == "__main__":
    main()
