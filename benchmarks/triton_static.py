"""Compile every Triton kernel of the dual DiT for a GPU target on any machine (no GPU, no
driver) and report, per autotune config, registers, spills and shared memory.

    python benchmarks/triton_static.py                 # sm_90: all kernels, bf16/fp16/fp32, d 64/72/128
    python benchmarks/triton_static.py --arch 80
    python benchmarks/triton_static.py --quick         # bf16, d 64 and 72 (what CI compiles)

GPU time is scarce here; this finds what needs none of it. A kernel that does not compile for
the target, or a config whose tiles overflow shared memory, fails the run (exit 1). Spills
(a stack frame: registers that did not fit) are reported: a config that spills in the inner
loop is slow, and the autotuner only ever sees the configs the pruner keeps.

How: Triton's own launch path is run with a stand-in driver that names the target, so each
launcher (``attention_jvp_triton`` etc.) is called on small CPU tensors, its launches are
recorded instead of run, and each is compiled with ``warmup`` exactly as the GPU would
compile it (same specialisation, the autotuner's pruned configs). Registers and stack come
from the cubin (``cuobjdump --dump-resource-usage``, shipped with Triton).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCHMARK = "triton_static"
# Largest dynamic shared memory one block may use (CUDA programming guide, per compute capability).
SHARED_LIMIT = {
    80: 163 * 1024,
    86: 99 * 1024,
    87: 163 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,
    100: 227 * 1024,
    103: 227 * 1024,
}
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# (hidden size, heads): DiT-B/2 (head dim 64), DiT-XL/2 (72), and a 128-wide head.
MODELS = {64: (768, 12), 72: (1152, 16), 128: (2048, 16)}
TOKENS = 256  # a 256 x 256 image as 32 x 32 latents in 2 x 2 patches


class _TargetDriver:
    """What Triton's launch path asks the active driver for, answered for a fixed target."""

    def __init__(self, target):
        self.target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def is_active(self):
        return True


def record_launches(modules, launcher):
    """Run ``launcher()`` with every kernel in ``modules`` replaced by a recorder; returns
    ``[(kernel name, kernel, grid, args, kwargs)]``, the kernels restored."""
    import triton
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    launches, saved = [], []

    class Recorder:
        best_config = triton.Config({})  # what a launcher reads after an autotuned launch: defaults

        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.name, self.kernel, grid, args, kwargs))

    for module in modules:
        for name, value in list(vars(module).items()):
            if isinstance(value, (JITFunction, Autotuner)):
                saved.append((module, name, value))
                setattr(module, name, Recorder(name, value))
    try:
        launcher()
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
    return launches


def resource_usage(cubin: bytes, cuobjdump: str | None) -> dict:
    """``{"registers", "stack_bytes"}`` of the one kernel in ``cubin`` (empty without cuobjdump)."""
    if cuobjdump is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True)
    match = re.search(r"REG:(\d+)\s+STACK:(\d+)", out.stdout)
    return {"registers": int(match[1]), "stack_bytes": int(match[2])} if match else {}


def find_cuobjdump() -> str | None:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if bundled.exists():
        return str(bundled)
    from shutil import which

    return which("cuobjdump")


def kernel_modules():
    """The modules that launch Triton kernels (the package re-exports functions under some
    of their names, hence the import by full name)."""
    import importlib

    names = ("pointwise", "attention", "layernorm_modulate", "gated_residual", "rms_norm")
    return tuple(importlib.import_module(f"mfkernels.backends.triton.{name}") for name in names)


def cases(dtype_names, head_dims, bias_dtype_name=None):
    """``(op, dtype, shape label, launcher)`` for every Triton op at DiT shapes, on CPU tensors
    laid out as the DiT passes them (q, k, v views of one qkv tensor; modulation chunks); the
    attention bias in ``bias_dtype_name`` (default: the activations' dtype)."""
    import torch

    activations, attention, layernorm_modulate, residual, rms_norm = kernel_modules()
    for dtype_name in dtype_names:
        dt = getattr(torch, DTYPES[dtype_name])
        for d in head_dims:
            hidden, heads = MODELS[d]
            q, k, v = torch.zeros(2, TOKENS, 3, heads, d, dtype=dt).permute(2, 0, 3, 1, 4).unbind(0)
            o = torch.zeros(2, heads, TOKENS, d, dtype=dt)
            lse = torch.zeros(2, heads, TOKENS)
            # A padding mask as models pass it (one row of keys per image, broadcast by strides:
            # the kernels read it per key), and a bias per head and query (read per tile).
            bias_dtype = getattr(torch, DTYPES[bias_dtype_name or dtype_name])
            bias = torch.zeros(2, 1, 1, TOKENS, dtype=bias_dtype).expand(2, heads, TOKENS, TOKENS)
            full_bias = torch.zeros(2, heads, TOKENS, TOKENS, dtype=bias_dtype)
            label = f"d={d}"
            yield (
                "attention_jvp",
                dtype_name,
                label,
                partial(attention.attention_jvp_triton, q, k, v, q, k, v, d**-0.5),
            )
            yield (
                "attention_jvp_tma",  # K, V and their tangents through tensor descriptors
                dtype_name,
                label,
                _under_env(
                    {attention.LOADS_ENV_VAR: "tma"},
                    attention.attention_jvp_triton,
                    q,
                    k,
                    v,
                    q,
                    k,
                    v,
                    d**-0.5,
                ),
            )
            yield (
                "attention_jvp_causal",
                dtype_name,
                label,
                partial(attention.attention_jvp_triton, q, k, v, q, k, v, d**-0.5, True),
            )
            for suffix, b in (("", bias), ("_full", full_bias)):
                jvp = partial(attention.attention_jvp_triton, q, k, v, q, k, v, d**-0.5, False, b)
                yield f"attention_jvp_bias{suffix}", dtype_name, label, jvp
            yield (
                "attention_backward",
                dtype_name,
                label,
                partial(attention.attention_backward_triton, o, q, k, v, o, lse, d**-0.5),
            )
            yield (
                "attention_backward_causal",
                dtype_name,
                label,
                partial(attention.attention_backward_triton, o, q, k, v, o, lse, d**-0.5, True),
            )
            yield (
                "attention_backward_gqa",  # one key/value head for all query heads
                dtype_name,
                label,
                partial(attention.attention_backward_triton, o, q, k[:, :1], v[:, :1], o, lse, d**-0.5),
            )
            for suffix, b in (("", bias), ("_full", full_bias)):
                backward = partial(attention.attention_backward_triton, o, q, k, v, o, lse, d**-0.5, False, b)
                yield f"attention_backward_bias{suffix}", dtype_name, label, backward
            yield (
                "attention_backward_atomic_dq",
                dtype_name,
                label,
                _under_env(
                    {attention.DQ_ENV_VAR: "atomic"},
                    attention.attention_backward_triton,
                    o,
                    q,
                    k,
                    v,
                    o,
                    lse,
                    d**-0.5,
                ),
            )
            yield (
                "rms_norm_jvp",
                dtype_name,
                label,
                partial(rms_norm.rms_norm_jvp_triton, q, q, torch.ones(d, dtype=dt)),
            )
        for d in head_dims:
            hidden, _ = MODELS[d]
            x = torch.zeros(2, TOKENS, hidden, dtype=dt)
            shift, scale, gate = torch.zeros(2, 6 * hidden, dtype=dt).chunk(6, dim=1)[:3]
            h = torch.zeros(2, TOKENS, 4 * hidden, dtype=dt)
            label = f"dim={hidden}"
            yield (
                "layernorm_modulate_jvp",
                dtype_name,
                label,
                partial(layernorm_modulate.layernorm_modulate_jvp_triton, x, x, shift, scale, shift, scale),
            )
            yield (
                "layernorm_modulate_backward",
                dtype_name,
                label,
                partial(layernorm_modulate.layernorm_modulate_backward_triton, x, x, scale),
            )
            yield (
                "gelu_tanh_jvp",
                dtype_name,
                f"dim={4 * hidden}",
                partial(activations.gelu_tanh_jvp_triton, h, h, torch.zeros(4 * hidden, dtype=dt)),
            )
            yield (
                "gelu_tanh_backward",
                dtype_name,
                f"dim={4 * hidden}",  # autocast: an fp32 bias on 16-bit activations
                partial(activations.gelu_tanh_backward_triton, h, h, torch.zeros(4 * hidden)),
            )
            yield "silu_jvp", dtype_name, label, partial(activations.silu_jvp_triton, gate, gate)
            yield (
                "gated_residual_jvp",
                dtype_name,
                label,
                partial(residual.gated_residual_jvp_triton, x, x, gate, gate, x, x),
            )
            yield (
                "gated_residual_backward",
                dtype_name,
                label,
                partial(residual.gated_residual_backward_triton, x, gate, x),
            )


def _under_env(variables: dict, launcher, *args):
    """``launcher(*args)`` run with the environment ``variables`` set (a kernel variant the
    launchers choose by environment, docs/attention-tuning.md), as a no-argument call."""

    def call():
        from benchmarks import _common

        with _common.environment(**variables):
            return launcher(*args)

    return call


def _configs_to_compile(kernel, args, kwargs):
    """``[(extra kwargs, JITFunction)]``: an autotuned kernel's configs after its pruner (the
    ones the GPU would time), else the kernel as launched."""
    from triton.runtime.autotuner import Autotuner

    if not isinstance(kernel, Autotuner):
        return [({}, kernel)]
    kernel.nargs = dict(zip(kernel.arg_names, args))
    try:
        return [(config.all_kwargs(), kernel.fn) for config in kernel.prune_configs(kwargs)]
    finally:
        kernel.nargs = None


def compile_all(arch: int, dtype_names, head_dims, ops=None, bias_dtype_name=None, log=print) -> list[dict]:
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    modules = kernel_modules()
    previous = getattr(driver, "_active", None)
    driver.set_active(_TargetDriver(GPUTarget("cuda", arch, 32)))
    cuobjdump = find_cuobjdump()
    shared_limit = SHARED_LIMIT.get(arch, 99 * 1024)
    rows = []
    try:
        for op, dtype_name, label, launcher in cases(dtype_names, head_dims, bias_dtype_name):
            if ops is not None and op not in ops:
                continue
            for kernel_name, kernel, grid, args, kwargs in record_launches(modules, launcher):
                base = {"op": op, "dtype": dtype_name, "shape": label, "kernel": kernel_name}
                for extra, fn in _configs_to_compile(kernel, args, kwargs):
                    merged = {**kwargs, **extra}
                    blocks = {
                        k: v for k, v in merged.items() if k.isupper() and k not in ("HEAD_DIM", "PREC")
                    }
                    row = {**base, "config": blocks}
                    start = time.perf_counter()
                    try:
                        compiled = fn.warmup(*args, grid=grid, **merged)
                    except Exception as exc:  # a compile error is the finding: record it, go on
                        lines = f"{type(exc).__name__}: {exc}".strip().splitlines()
                        row["status"] = "compile error: " + " / ".join(lines[:3])[:300]
                        rows.append(row)
                        log(format_row(row))
                        continue
                    meta = compiled.metadata
                    row["config"].update(num_warps=meta.num_warps, num_stages=meta.num_stages)
                    row.update(shared_bytes=meta.shared, **resource_usage(compiled.asm["cubin"], cuobjdump))
                    # Global -> shared copies that bypass registers (cp.async, or TMA's bulk form):
                    # how the pipelined K/V loads of the attention kernels show in the PTX.
                    row["async_copies"] = compiled.asm["ptx"].count("cp.async")
                    row["compile_s"] = round(time.perf_counter() - start, 2)
                    too_big = meta.shared > shared_limit
                    row["status"] = f"shared memory {meta.shared} B > {shared_limit} B" if too_big else "ok"
                    rows.append(row)
                    log(format_row(row))
    finally:
        driver.set_active(previous)  # resetting would look for a real driver
    return rows


def format_row(r: dict) -> str:
    cfg = " ".join(f"{k}={v}" for k, v in r.get("config", {}).items())
    regs = r.get("registers", "?")
    stack = r.get("stack_bytes", "?")
    flags = " SPILLS" if isinstance(stack, int) and stack > 0 else ""
    flags += " async" if r.get("async_copies") else ""
    return (
        f"{r['op']:28s} {r['dtype']:5s} {r['shape']:10s} {r['kernel']:32s} {cfg:52s} regs {regs!s:>3} "
        f"stack {stack!s:>5} B  smem {r.get('shared_bytes', 0) // 1024:>3} KiB  {r['status']}{flags}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90: H100/H200)")
    parser.add_argument("--dtypes", default="bf16,fp16,fp32", help="comma list of bf16, fp16, fp32")
    parser.add_argument("--head-dims", default="64,72,128", help=f"comma list of {sorted(MODELS)}")
    parser.add_argument("--quick", action="store_true", help="bf16 and head dims 64, 72 only")
    parser.add_argument("--ops", help="comma list of ops to compile (default all), e.g. attention_jvp_bias")
    parser.add_argument(
        "--bias-dtype", choices=sorted(DTYPES), help="the attention bias's dtype (default: the activations')"
    )
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("run without TRITON_INTERPRET=1: the interpreter compiles nothing")
    dtype_names = ["bf16"] if args.quick else args.dtypes.split(",")
    head_dims = [64, 72] if args.quick else [int(d) for d in args.head_dims.split(",")]
    for name in dtype_names:
        if name not in DTYPES:
            parser.error(f"--dtypes: unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    for d in head_dims:
        if d not in MODELS:
            parser.error(f"--head-dims: {d} is not one of {sorted(MODELS)}")

    ops = None
    if args.ops:
        ops = args.ops.split(",")
        known = {op for op, *_ in cases(["bf16"], [64])}
        for op in ops:
            if op not in known:
                parser.error(f"--ops: unknown op {op!r}; choose from {sorted(known)}")

    import triton

    start = time.perf_counter()
    rows = compile_all(args.arch, dtype_names, head_dims, ops, args.bias_dtype)
    failed = [r for r in rows if r["status"] != "ok"]
    spilling = [r for r in rows if r.get("stack_bytes", 0) > 0]
    print(
        f"\nsm_{args.arch}, triton {triton.__version__}: {len(rows)} kernel configs compiled in "
        f"{time.perf_counter() - start:.0f} s; {len(failed)} failed, {len(spilling)} spill registers"
    )
    if not args.no_save:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{BENCHMARK}_sm{args.arch}.json"
        payload = {
            "benchmark": BENCHMARK,
            "target": f"sm_{args.arch}",
            "triton": triton.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "tokens": TOKENS,
            "bias_dtype": args.bias_dtype or "the activations'",
            "rows": rows,
        }
        path.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
