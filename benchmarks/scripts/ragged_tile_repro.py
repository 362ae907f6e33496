"""One-off diagnosis, prepared for the next GPU session: where the attention JVP forward goes
wrong with 64-key tiles and a ragged last key tile (docs/attention-tuning.md: on an H200,
Triton 3.6, the split d = 72 forward got O wrong by 30-90% at N = 17 and 300, right at
N = 64..256, with 32-key tiles, and in the interpreter).

Each case runs the forward launcher with one explicit config (the autotuner's list replaced,
as ``test_every_tuned_config`` does) against the float64 reference and prints the errors of
O, O' and LSE relative to the reference's max, O's split by head-dim part (columns below 64
and from 64) and by query rows (the first 64 and the rest). The sweep varies one suspect at a
time around the failing case: the pipelining depth (``num_stages`` 1, 2, 3), the query tile,
the key tile (32 as the control), the stride-alignment hint (``ALIGN``, forced to 1), packed
(DiT's strided qkv) against contiguous inputs, and the head dims 64 (one part), 72 and 96
(two parts) and 80 (two parts, none masked), and K/V read through tensor descriptors (TMA,
``MFK_ATTENTION_LOADS=tma``: no masked loads at all). Last, causal attention with whole key
tiles (N = 256), whose diagonal key tiles are masked as a ragged one is: the 64-key split
forward is fenced off for causal attention too until this says it is right.

    python benchmarks/scripts/ragged_tile_repro.py             # a GPU: ~100 compiles, 1-2 minutes
    TRITON_INTERPRET=1 python benchmarks/scripts/ragged_tile_repro.py --quick   # the CPU: a few cases

Its output: a table on stdout; ``--out`` also writes the rows as JSON.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # runnable from a checkout, uninstalled
from benchmarks import _common as C  # noqa: E402
from mfkernels import reference  # noqa: E402
from mfkernels.backends.triton import attention, attention_configs  # noqa: E402

BASE = dict(d=72, n=300, config=(128, 64, 8, 2), packed=True, align=True, tma=False, causal=False)


def cases(quick: bool):
    """``BASE`` (the failing case), then one change at a time."""
    if quick:
        return [
            BASE,
            {**BASE, "n": 17, "config": (32, 32, 4, 1)},
            {**BASE, "align": False, "tma": True},
            {**BASE, "n": 96, "config": (64, 32, 4, 1), "causal": True},
        ]
    out = [BASE]
    for n in (17, 108, 256, 64):
        out.append({**BASE, "n": n})
    for config in [(128, 64, 8, 1), (128, 64, 8, 3), (64, 64, 4, 1), (64, 64, 4, 3), (128, 32, 8, 3)]:
        for n in (17, 300):
            out.append({**BASE, "n": n, "config": config})
    for n in (17, 300):
        out.append({**BASE, "n": n, "tma": True})  # K/V through tensor descriptors: no masked loads
        out.append({**BASE, "n": n, "align": False})
        out.append({**BASE, "n": n, "packed": False})
        for d in (64, 80, 96):
            out.append({**BASE, "n": n, "d": d})
    for config in [(128, 64, 8, 2), (64, 64, 4, 3), (128, 32, 8, 3)]:
        out.append({**BASE, "n": 256, "config": config, "causal": True})
    return out


def inputs(case, dtype, device):
    b, h, n, d = 2, 4, case["n"], case["d"]
    g = torch.Generator(device=device).manual_seed(0)
    if case["packed"]:  # q, k, v as views of one (B, N, 3, H, d) tensor, as the DiT makes them
        qkv = [torch.randn(b, n, 3, h, d, device=device, generator=g).to(dtype) for _ in range(2)]
        return (*qkv[0].permute(2, 0, 3, 1, 4).unbind(0), *qkv[1].permute(2, 0, 3, 1, 4).unbind(0))
    return tuple(torch.randn(b, h, n, d, device=device, generator=g).to(dtype) for _ in range(6))


def rel(out, ref):
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def run(case, dtype, device):
    q, k, v, q_dot, k_dot, v_dot = inputs(case, dtype, device)
    scale = case["d"] ** -0.5
    kernel = attention._attn_jvp_fwd
    saved_configs, saved_align = kernel.configs, attention._stride_align
    kernel.configs = [attention_configs.config(*case["config"])]
    if not case["align"]:
        attention._stride_align = lambda *tensors: 1
    try:
        with C.environment(**{attention.LOADS_ENV_VAR: "tma" if case["tma"] else "pointers"}):
            if case["tma"] and not attention.kv_by_tma(k, v, k_dot, v_dot):
                raise RuntimeError("tensor descriptors unavailable here (needs sm_90 and aligned strides)")
            o, o_dot, lse = attention.attention_jvp_triton(
                q, k, v, q_dot, k_dot, v_dot, scale, case["causal"]
            )
    finally:
        kernel.configs, attention._stride_align = saved_configs, saved_align
    ref_o, ref_o_dot, ref_lse = reference.attention_jvp(
        *(t.double() for t in (q, k, v, q_dot, k_dot, v_dot)), scale, case["causal"]
    )
    low = min(64, case["d"])
    row = {
        "O": rel(o, ref_o),
        "O'": rel(o_dot, ref_o_dot),
        "LSE": rel(lse, ref_lse),
        "O cols<64": rel(o[..., :low], ref_o[..., :low]),
        "O cols>=64": rel(o[..., low:], ref_o[..., low:]) if case["d"] > 64 else None,
        "O rows<64": rel(o[..., :64, :], ref_o[..., :64, :]),
        "O rows>=64": rel(o[..., 64:, :], ref_o[..., 64:, :]) if case["n"] > 64 else None,
    }
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="three small cases (the interpreter)")
    p.add_argument("--out", help="also write the rows as JSON to this path")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    import triton

    print(f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu (interpreter)'}, "
          f"triton {triton.__version__}, torch {torch.__version__}, {dtype}")  # fmt: skip
    rows, bound = [], 3e-2 if dtype != torch.float32 else 1e-5
    for case in cases(args.quick):
        start = time.perf_counter()
        try:
            row = {**case, **run(case, dtype, device)}
            row["verdict"] = "ok" if max(row["O"], row["O'"], row["LSE"]) <= bound else "WRONG"
        except Exception as e:  # a config that does not compile is a finding too
            row = {**case, "verdict": f"error: {type(e).__name__}: {str(e).splitlines()[0][:120]}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        errors = " ".join(
            f"{k} {row[k]:.1e}" if isinstance(row.get(k), float) else f"{k} -"
            for k in ("O", "O'", "LSE", "O cols<64", "O cols>=64", "O rows<64", "O rows>=64")
        )
        what = " ".join(
            f"{key}={case[key]}" for key in ("d", "n", "config", "packed", "align", "tma", "causal")
        )
        print(f"{row['verdict']:>5}  {what}  {errors}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
