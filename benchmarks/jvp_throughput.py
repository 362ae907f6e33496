"""Time one full MeanFlow training step per way of computing ``(u, du/dt)`` (docs/design.md section 6).

    python benchmarks/jvp_throughput.py                 # default sweep for the device (GPU: ~5 min)
    python benchmarks/jvp_throughput.py --quick         # tiny model, seconds (CPU / CI smoke run)
    python benchmarks/jvp_throughput.py --presets DiT-XL/2 --batches 64 --variants 'fm*,fused_*'
    python benchmarks/jvp_throughput.py --tangent-rows r_neq_t --cfg-w 1 --cfg-k 0.5   # the trainer's loss

A step is: sample ``t, r`` and noise, the network pass, the target, the loss, the backward and
an AdamW step (torch's fused AdamW), with bf16 autocast on the GPU (fp32 master weights). Variants
differ only in how ``(u, du/dt)`` is computed:

  fm                  plain flow matching, ``u(z, t, t)`` regressed on ``v`` (one forward;
                      SDPA picks flash attention on the GPU): the baseline every ratio uses
  func_jvp            ``torch.func.jvp`` over the model's plain ``forward``, attention in plain
                      ops (flash attention has no forward-mode AD), as public PyTorch MeanFlow
                      code does
  dual_ref            the dual engine ``model.jvp`` with the plain-torch reference ops
  fused_triton        ``model.jvp`` with the Triton kernels (CUDA)
  fused_cuda          ``model.jvp`` with the csrc CUDA kernels (when the extension is built)
  fused_cpu           ``model.jvp`` with the csrc CPU kernels (when the extension is built)
  <name>+compile      the same under ``torch.compile``. torch.func: the whole loss function
                      (the function that calls ``torch.func.jvp``; ``jvp(compile(f))`` would
                      not compile anything). Others: ``--compile-mode regional`` (default)
                      compiles each DiT block's ``forward`` / ``jvp`` (one graph shared by
                      every block, seconds to compile), ``full`` the whole loss function,
                      ``cudagraphs`` the regional graphs replayed as CUDA graphs
                      (``mode="reduce-overhead"``; every variant, FM too): no host cost per
                      kernel launch, for models too small to keep the GPU busy.

Timing: one first call (compilation, autotuning), ``--warmup`` more, then up to ``--repeats``
timed steps (CUDA events on the GPU) within ``--max-seconds``; median, min/max and IQR are
kept. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps (parameters,
AdamW state and activations; not measured on the CPU). A failing case (OOM, a compile error,
a compile past ``--compile-timeout``) is recorded as ``failed: <reason>`` and the run goes on;
``--time-budget`` skips what no longer fits. Results: a table on stdout, JSON and a PNG plot
in ``--out-dir`` (default benchmarks/results/), file names carrying the device name.
"""

import argparse
import contextlib
import fnmatch
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch._dynamo.utils import counters

import mfkernels
from benchmarks import _common as C
from benchmarks import render_readme
from meanflow import DiT, FlowMatchingLoss, MeanFlowLoss
from meanflow.loss import dual_jvp, func_jvp, spread_rows
from meanflow.models import unfused_attention

BENCHMARK = "jvp_throughput"

FUSED_BACKENDS = {"fused_triton": "triton", "fused_cuda": "cuda", "fused_cpu": "cpu"}
BACKEND_OF = {"dual_ref": "reference", **FUSED_BACKENDS}
# Eager first (cheap), then the compiled variants in the order they matter for the targets;
# compiled torch.func is last: the slowest to compile and the likeliest to fail.
ORDER = (
    "fm",
    "func_jvp",
    "dual_ref",
    "fused_triton",
    "fused_cuda",
    "fused_cpu",
    "fm+compile",
    "fused_triton+compile",
    "fused_cuda+compile",
    "fused_cpu+compile",
    "func_jvp+compile",
    "dual_ref+compile",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# The default sweeps. GPU: DiT-XL/2 first with the variants its targets are judged on, then
# the smaller presets with FM, eager torch.func and the fused kernels, then DiT-XL/2's other
# variants, compiled torch.func last with what time is left (its compile outlasted 67 s on an
# H200, 2026-12-04, and starved the presets after it). ~5 minutes on an H100 including
# compilation, enforced by --time-budget; under gpu_validate.sh's shorter budget the targets
# still get their timings (the eager dual reference and CUDA steps before them took ~20 s).
_SMALL = [v for v in ORDER if not v.startswith(("func_jvp+", "dual_ref"))]
_TARGET_VARIANTS = ["fm", "func_jvp", "fused_triton", "fm+compile", "fused_triton+compile"]
GPU_PLAN = [
    ("DiT-XL/2", 64, "bf16", _TARGET_VARIANTS),
    ("DiT-B/2", 256, "bf16", _SMALL),
    ("DiT-L/2", 128, "bf16", _SMALL),
    ("DiT-S/2", 256, "bf16", _SMALL),
    ("DiT-XL/2", 64, "bf16", ["dual_ref", "fused_cuda", "fused_cuda+compile", "func_jvp+compile"]),
]
CPU_PLAN = [
    ("DiT-T/4", 8, "fp32", list(ORDER)),
    ("DiT-S/2", 8, "fp32", [v for v in ORDER if "+" not in v]),
]
DEFAULT_BATCH = {"cuda": {"DiT-XL/2": 64, "DiT-L/2": 128, "DiT-B/2": 256, "DiT-S/2": 256}, "cpu": {}}


def family(variant: str) -> str:
    return variant.split("+")[0]


def is_compiled(variant: str) -> bool:
    return variant.endswith("+compile")


def preset_inputs(preset: str, input_size: int | None):
    """(in_channels, input_size, num_classes): MNIST-like for the tiny preset, else
    ImageNet-256 latents (4 x 32 x 32, 1000 classes)."""
    if preset.startswith("DiT-T/"):
        return 1, input_size or 32, 10
    return 4, input_size or 32, 1000


def build_model(preset: str, input_size: int | None, device):
    """The preset's DiT, seeded, with every block live: adaLN-Zero starts each as the identity,
    so the weights are perturbed to put all the math to work."""
    in_ch, size, classes = preset_inputs(preset, input_size)
    torch.manual_seed(0)
    with torch.device(device):
        model = DiT.from_config(preset, num_classes=classes, in_channels=in_ch, input_size=size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def foreign_families(device) -> tuple:
    """Fused variants whose kernels are for the other device kind (the Triton interpreter is no
    benchmark)."""
    return ("fused_cpu",) if device.type == "cuda" else ("fused_triton", "fused_cuda")


# ------------------------------------------------------------------ the step
# One training step with the project's own objectives (docs/design.md section 1), without class
# dropout and by default without CFG (w = 1, k = 0), so that variants differ only in how
# (u, du/dt) is computed. --cfg-w/--cfg-k fold guidance into the MeanFlow target, as training
# does: its no-grad pass is then part of every MeanFlow step (FM has none).


def jvp_of(fam: str):
    """How a MeanFlow variant computes ``(u, du/dt)``."""
    return func_jvp if fam == "func_jvp" else dual_jvp


def objective(fam: str, args):
    if fam == "fm":
        return FlowMatchingLoss(class_dropout=0.0)
    return MeanFlowLoss(
        cfg_w=args.cfg_w, cfg_k=args.cfg_k, class_dropout=0.0, jvp=jvp_of(fam), tangent_rows=args.tangent_rows
    )


def guided(args) -> bool:
    return args.cfg_w != 1.0 or args.cfg_k != 0.0


def make_loss(variant, model, args):
    """The loss function of a variant, and an undo for anything it changed on the model."""
    fam = family(variant)
    model.backend = BACKEND_OF.get(fam)
    loss_and_stats = objective(fam, args)

    def loss_of(x, y, noise):
        return loss_and_stats(model, x, y, noise=noise)[0]

    cuda_graphs = is_compiled(variant) and args.compile_mode == "cudagraphs"

    def loss(x, y):  # the draws outside any compiled region, as in the trainer
        if cuda_graphs:  # a new step: the graphs may overwrite the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        return loss_of(x, y, loss_and_stats.sample_noise(x))

    undo = []
    if is_compiled(variant):
        mode = "reduce-overhead" if cuda_graphs else None
        if fam == "func_jvp" or args.compile_mode == "full":
            loss_of = torch.compile(loss_of, mode=mode)
        else:
            # Both of a block's paths: a MeanFlow step also runs plain forwards (the rows with
            # r = t, the guidance pass), and FM runs nothing else.
            for block in model.blocks:
                block.compile(mode=mode)
                undo.append(lambda b=block: setattr(b, "_compiled_call_impl", None))
                if fam != "fm":
                    block.jvp = torch.compile(block.jvp, mode=mode)
                    undo.append(lambda b=block: b.__dict__.pop("jvp", None))
    # Flash attention has no forward-mode AD: torch.func goes through attention in plain ops.
    context = (lambda: unfused_attention(model)) if fam == "func_jvp" else contextlib.nullcontext
    return loss, context, lambda: [f() for f in undo]


# ------------------------------------------------------------------ the runner


@dataclass
class Group:
    preset: str
    batch: int
    dtype: str
    variants: list


@dataclass
class Prepared:
    """A variant compiled, warmed up and ready to time."""

    row: dict
    step: Callable
    network_pass: Callable | None
    close: Callable


class Runner:
    def __init__(self, args, device):
        self.args = args
        self.device = device
        self.start = time.perf_counter()
        self.deadline = self.start + args.time_budget if args.time_budget else math.inf
        self.rows = []
        self.checks = []
        self.payload = C.header(BENCHMARK, device, sys.argv, settings=vars(args).copy())
        self.payload["available_backends"] = sorted(mfkernels.available_backends())
        rows = "_r_neq_t" if args.tangent_rows == "r_neq_t" else ""
        graphs = "_cudagraphs" if args.compile_mode == "cudagraphs" else ""
        name = f"{BENCHMARK}{rows}{'_cfg' if guided(args) else ''}{graphs}"
        self.json_path = C.result_path(args.out_dir, name, device, args.quick, "json")

    def log(self, text):
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)

    def save(self):
        annotate(self.rows)
        self.payload.update(
            rows=self.rows,
            numerics=self.checks,
            # Issue 8's targets are in terms of the unguided step.
            targets=[] if guided(self.args) else evaluate_targets(self.rows),
            elapsed_s=round(time.perf_counter() - self.start, 1),
        )
        C.write_json(self.json_path, self.payload)

    def finish(self, row):
        self.rows.append(row)
        self.save()
        shown = f"{row['ms']:.2f} ms" if row["status"] == "ok" else row["status"]
        extra = f" (first call {row['first_call_s']:.1f} s)" if row.get("first_call_s") else ""
        self.log(f"  {row['variant']:22s} {shown}{extra}")

    # -------------------------------------------------------------- one group

    def run_group(self, g: Group):
        args, device = self.args, self.device
        in_ch, size, classes = preset_inputs(g.preset, args.input_size)
        model = build_model(g.preset, args.input_size, device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x = torch.randn(g.batch, in_ch, size, size, device=device)
        y = torch.randint(0, classes, (g.batch,), device=device)
        base = {
            "preset": g.preset,
            "batch": g.batch,
            "dtype": g.dtype,
            "device": C.device_name(device),
            "tokens": (size // model.config.patch_size) ** 2,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "input": [in_ch, size, size],
        }
        self.log(f"{g.preset} batch {g.batch} {g.dtype}: {base['params_m']}M params, {base['tokens']} tokens")
        # Fixed (z, r, t, v) for the numerics check and the timing of the network pass alone.
        gen = torch.Generator(device=device).manual_seed(1)
        t = torch.rand(g.batch, device=device, generator=gen)
        probe = {
            "z": torch.randn(x.shape, device=device, generator=gen),
            "v": torch.randn(x.shape, device=device, generator=gen),
            "t": t,
            "r": t * torch.rand(g.batch, device=device, generator=gen),
            "y": y,
        }
        base["workaround"] = self.autocast_workaround(model, probe, g)
        self.numerics_check(model, probe, g)
        first_row = len(self.rows)
        resolved, pending = {}, []
        for variant in g.variants:
            if is_compiled(variant) and pending:
                self.time_cases(pending)
                pending = []
            row = {**base, "variant": variant, "compile_mode": None}
            if is_compiled(variant):
                row["compile_mode"] = "full" if family(variant) == "func_jvp" else args.compile_mode
            row["status"] = self.skip_reason(variant, resolved)
            case = None
            if row["status"] is None:
                case = self.prepare(row, variant, model, opt, x, y, g.dtype, resolved, probe)
            if case is None:
                self.finish(row)
            elif args.interleave and not is_compiled(variant):
                pending.append(case)  # timed together with the other eager variants
            else:
                self.time_cases([case])
        if pending:
            self.time_cases(pending)
        self.rows[first_row:] = sorted(self.rows[first_row:], key=lambda r: g.variants.index(r["variant"]))
        self.save()
        del model, opt
        self.cleanup()

    def skip_reason(self, variant, resolved):
        fam = family(variant)
        backend = FUSED_BACKENDS.get(fam)
        if time.perf_counter() > self.deadline - 3:
            return f"skipped: time budget ({self.args.time_budget:.0f} s) used up"
        if backend == "triton" and self.device.type != "cuda":
            return "skipped: the triton backend needs CUDA (the interpreter is no benchmark)"
        if backend == "cpu" and self.device.type != "cpu":
            return "skipped: the cpu backend runs CPU tensors"
        if backend == "cuda" and self.device.type != "cuda":
            return "skipped: the cuda backend needs CUDA"
        if backend and backend not in mfkernels.available_backends():
            return f"skipped: backend {backend!r} not available (not in mfkernels.available_backends())"
        if backend and resolved.get(fam) is not None and backend not in "/".join(resolved[fam].values()):
            return f"skipped: every op fell back to another backend than {backend!r}"
        if is_compiled(variant) and resolved.get(fam, "missing") is None:
            return f"skipped: the eager {fam} failed"
        return None

    def prepare(self, row, variant, model, opt, x, y, dtype, resolved, probe):
        """First call (compilation, autotuning) and warm-up; None when the variant failed or
        turned out not to run its backend (``row["status"]`` says why)."""
        args, device = self.args, self.device
        fam, compiled = family(variant), is_compiled(variant)
        backend = BACKEND_OF.get(fam)
        loss_fn, context, undo = None, contextlib.nullcontext, lambda: None
        if compiled:
            torch._dynamo.reset()  # fresh caches: no recompile limit carried across variants
            counters.clear()

        def step():
            training_step(model, opt, backend, loss_fn, context, x, y, device, dtype)

        def close():
            undo()
            opt.zero_grad(set_to_none=True)
            if compiled:
                torch._dynamo.reset()
            self.cleanup()

        try:
            loss_fn, context, undo = make_loss(variant, model, args)
            limit = args.compile_timeout if compiled else args.eager_timeout
            limit = max(5.0, min(limit, self.deadline - time.perf_counter()))
            t0 = time.perf_counter()
            with C.time_limit(limit), C.record_backends() as seen:
                step()
                C.sync(device)
            row["first_call_s"] = round(time.perf_counter() - t0, 2)
            if fam in BACKEND_OF:
                ran = {op: "/".join(sorted(names)) for op, names in sorted(seen.items())}
                row["ops_backend"] = ran
                if backend != "reference":
                    row["ops_fallback"] = sorted(op for op, names in seen.items() if backend not in names)
                if not compiled:
                    resolved[fam] = ran
                if backend != "reference" and ran and not any(backend in names for names in seen.values()):
                    row["status"] = f"skipped: every op fell back to another backend than {backend!r}"
                    close()
                    return None
            if compiled:
                row["graphs"] = counters["stats"]["unique_graphs"]
                row["graph_breaks"] = sum(counters["graph_break"].values())
            for _ in range(args.warmup):
                step()
            if not compiled:  # what the step keeps for its backward (no peak counter on the CPU)
                params = list(model.parameters())
                with autocast(device, dtype), context():
                    saved = C.saved_for_backward_bytes(lambda: loss_fn(x, y), keep=params)
                row["saved_mib"] = round(saved / 2**20, 1)
            network_pass = None
            if not compiled and not args.no_forward:
                network_pass = self.network_pass(fam, backend, model, probe, dtype, context)
                network_pass()
            C.sync(device)
            return Prepared(row, step, network_pass, close)
        except C.CaseTimeout as exc:
            row["status"] = f"failed: {'compile ' if compiled else ''}{exc}"
        except Exception as exc:  # a failing variant is a result, not a crash
            row["status"] = f"failed: {C.short_error(exc)}"
            if fam in BACKEND_OF and not compiled:
                resolved[fam] = None
        close()
        return None

    def network_pass(self, fam, backend, model, probe, dtype, context):
        """The network pass alone under no_grad: ``model(z, t, t, y)`` for FM, ``(u, du/dt)``
        for the others (on the rows ``--tangent-rows`` says, a forward on the rest). Shows where
        a step's time goes (the backward and the optimiser step are the same work in every
        variant)."""
        device, p = self.device, probe
        jvp_fn = jvp_of(fam)
        if fam == "fm":
            run = lambda: model(p["z"], p["t"], p["t"], p["y"])
        elif self.args.tangent_rows == "all":
            run = lambda: jvp_fn(model, p["z"], p["r"], p["t"], p["y"], p["v"])
        else:  # as the loss does it: du/dt on the rows with r != t, a forward on the others
            k = int(spread_rows(p["z"].shape[0], MeanFlowLoss().ratio_r_neq_t, 0.5).sum())

            def run():
                if k:
                    jvp_fn(model, *(p[n][:k] for n in ("z", "r", "t", "y", "v")))
                if k < p["z"].shape[0]:
                    model(p["z"][k:], p["t"][k:], p["t"][k:], p["y"][k:])

        def call():
            model.backend = backend
            with torch.no_grad(), autocast(device, dtype), context():
                run()

        return call

    def time_cases(self, cases):
        """Time prepared variants. Several at once (CPU default, ``--interleave``) run round
        robin, one step each per round, so that load from other processes falls on all of
        them alike. A single one on CUDA also gets its peak memory."""
        args, device = self.args, self.device
        alone = len(cases) == 1
        try:
            if device.type == "cuda" and alone:
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            times = _round_robin([c.step for c in cases], device, args.repeats, args.max_seconds)
            if device.type == "cuda" and alone:
                cases[0].row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                cases[0].row["resident_gib"] = round(resident / 2**30, 3)
            passes = [c for c in cases if c.network_pass is not None]
            pass_times = _round_robin(
                [c.network_pass for c in passes], device, args.repeats, args.max_seconds / 2
            )
            for case, t in zip(cases, times):
                case.row.update(C.summarize(t), status="ok", interleaved=not alone)
                case.row["times_ms"] = [round(v, 3) for v in t]
                case.row["img_per_s"] = round(case.row["batch"] / (case.row["ms"] / 1e3), 1)
                if device.type == "cpu":
                    case.row["loadavg_1m"] = round(os.getloadavg()[0], 2)
            for case, t in zip(passes, pass_times):
                case.row["fwd_ms"] = round(C.summarize(t)["ms"], 3)
                case.row["fwd_times_ms"] = [round(v, 3) for v in t]
        except Exception as exc:
            for case in cases:
                if case.row["status"] != "ok":
                    case.row["status"] = f"failed: {C.short_error(exc)}"
        finally:
            for case in cases:
                case.close()
                self.finish(case.row)

    def autocast_workaround(self, model, probe, g: Group):
        """Make ``model.jvp`` run under autocast if it does not, the same way for every variant.

        The DiT adds its fp32 label embedding to the autocast-bf16 time embeddings, so the
        conditioning becomes fp32 while its tangent stays bf16 and the dual ops reject the
        pair. If a one-sample probe shows that, the label embedding is cast to the autocast
        dtype by a forward hook (a no-op once the model does it itself); recorded in the JSON.
        """
        if g.dtype == "fp32" or not any(family(v) in BACKEND_OF for v in g.variants):
            return None
        p = {k: val[:1] for k, val in probe.items()}

        def failure():
            try:
                with torch.no_grad(), autocast(self.device, g.dtype):
                    model.backend = "reference"
                    model.jvp(p["z"], p["r"], p["t"], p["y"], p["v"])
                return None
            except (TypeError, ValueError, RuntimeError) as exc:
                return C.short_error(exc)
            finally:
                model.backend = None

        error = failure()
        if error is None or model.y_embedder is None:
            return None
        dtype = DTYPES[g.dtype]
        model.y_embedder.register_forward_hook(lambda module, args, out: out.to(dtype))
        still = failure()
        note = f"label embedding cast to {g.dtype} (model.jvp under autocast failed: {error})"
        if still is not None:
            note += f"; did not help: {still}"
        self.payload.setdefault("workarounds", []).append(f"{g.preset} {g.dtype}: {note}")
        self.log(f"  workaround: {note}")
        return note

    def numerics_check(self, model, probe, g: Group):
        """Max error of each jvp path against ``torch.func.jvp`` on the same inputs (relative
        to the reference's max abs), so the timed variants are known to compute the same thing."""
        fams = [f for f in dict.fromkeys(family(v) for v in g.variants) if f in BACKEND_OF]
        if self.args.no_check or not fams or time.perf_counter() > self.deadline - 10:
            return
        device = self.device
        z, r, t, y, v = (probe[k] for k in ("z", "r", "t", "y", "v"))
        record = {"preset": g.preset, "batch": g.batch, "dtype": g.dtype, "reference": "func_jvp"}
        try:
            with torch.no_grad(), autocast(device, g.dtype):
                with unfused_attention(model):
                    u_ref, d_ref = func_jvp(model, z, r, t, y, v)
                for fam in fams:
                    if fam in FUSED_BACKENDS and self.skip_reason(fam, {}) is not None:
                        continue
                    model.backend = BACKEND_OF[fam]
                    u, d = dual_jvp(model, z, r, t, y, v)
                    record[fam] = {"u": _rel_err(u, u_ref), "dudt": _rel_err(d, d_ref)}
        except Exception as exc:
            record["error"] = C.short_error(exc)
        finally:
            model.backend = None
        self.checks.append(record)
        shown = ", ".join(
            f"{k} u {val['u']:.1e} du/dt {val['dudt']:.1e}"
            for k, val in record.items()
            if isinstance(val, dict)
        )
        self.log(f"  max rel. error vs torch.func.jvp: {shown or record.get('error', '-')}")
        self.cleanup()

    def cleanup(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _round_robin(fns, device, repeats, max_seconds):
    """Per function, the ms of each call: rounds of one call each, until ``repeats`` rounds, or
    (after two rounds) ``max_seconds`` per function have passed."""
    times = [[] for _ in fns]
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats and (rounds < 2 or time.perf_counter() - start < max_seconds * len(fns)):
        for fn, t in zip(fns, times):
            t.extend(C.time_calls(fn, device, 1, 0.0, min_repeats=1))
        rounds += 1
    return times


def training_step(model, opt, backend, loss_fn, context, x, y, device, dtype, mark=None):
    """One timed step: the loss (network pass and target), its backward and the AdamW step.
    ``mark()``, where given, is called before and after each of the three phases."""
    mark = mark or (lambda: None)
    model.backend = backend
    opt.zero_grad(set_to_none=True)
    mark()
    with autocast(device, dtype), context():
        loss = loss_fn(x, y)
    mark()
    loss.backward()
    mark()
    opt.step()
    mark()


def autocast(device, dtype):
    """bf16/fp16: autocast (fp32 master weights, as in training); fp32: nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def _rel_err(a, ref):
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------ derived numbers


def _key(row):
    return (row["preset"], row["batch"], row["dtype"], row["device"])


def annotate(rows):
    """Ratios to the FM step of the same preset/batch/dtype: ``x_fm`` against FM in the same
    mode (eager vs eager, compiled vs compiled; eager FM when compiled FM is missing),
    ``x_fm_eager`` against eager FM, ``mem_x_fm`` for peak memory likewise, ``saved_x_fm`` for
    the activations saved for the backward against eager FM's."""
    ok = {(_key(r), r["variant"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        if row["status"] != "ok":
            continue
        fm_eager = ok.get((_key(row), "fm"))
        fm_same = ok.get((_key(row), "fm+compile" if is_compiled(row["variant"]) else "fm")) or fm_eager
        if fm_same:
            row["x_fm"] = round(row["ms"] / fm_same["ms"], 3)
            if row.get("peak_mem_gib") and fm_same.get("peak_mem_gib"):
                row["mem_x_fm"] = round(row["peak_mem_gib"] / fm_same["peak_mem_gib"], 3)
        if fm_eager:
            row["x_fm_eager"] = round(row["ms"] / fm_eager["ms"], 3)
            if row.get("fwd_ms") and fm_eager.get("fwd_ms"):
                row["fwd_x_fm"] = round(row["fwd_ms"] / fm_eager["fwd_ms"], 3)
            if row.get("saved_mib") and fm_eager.get("saved_mib"):
                row["saved_x_fm"] = round(row["saved_mib"] / fm_eager["saved_mib"], 3)


def _best(rows, prefix):
    cands = [r for r in rows if r["status"] == "ok" and family(r["variant"]).startswith(prefix)]
    return min(cands, key=lambda r: r["ms"]) if cands else None


def _target(name, where, value=None, threshold=None, passed=None, detail=""):
    out = {"name": name, "where": where, "pass": passed, "detail": detail}
    if value is not None:
        out.update(value=round(value, 3), threshold=threshold)
    return out


def _speedup(slow, fast, times_key, median_key):
    """``slow / fast``: the median of per-round ratios when both were timed round robin
    (paired, so that load from other processes cancels), else the ratio of the medians."""
    a, b = slow.get(times_key), fast.get(times_key)
    if slow.get("interleaved") and fast.get("interleaved") and a and b and len(a) == len(b):
        return statistics.median(x / y for x, y in zip(a, b)), f"median of {len(a)} paired rounds"
    return slow[median_key] / fast[median_key], "ratio of medians"


def evaluate_targets(rows):
    """Issue 8's targets, on the rows they apply to: DiT-XL/2 bf16 on a GPU (fused step vs FM
    step and vs the best torch.func.jvp variant, peak memory) and fp32 on the CPU (dual
    reference vs eager torch.func.jvp). ``pass`` is None where a side has no timing."""
    targets = []
    groups = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    for (preset, batch, dtype, device), grp in groups.items():
        where = f"{preset} batch {batch} {dtype} on {device}"
        if preset == "DiT-XL/2" and dtype == "bf16" and not device.startswith("CPU"):
            fused, fm, func = _best(grp, "fused_"), _best(grp, "fm"), _best(grp, "func_jvp")
            name = "fused step <= 1.4x FM step"
            if fused is None or fm is None:
                targets.append(_target(name, where, detail="no fused or no FM timing"))
                continue
            ratio = fused["ms"] / fm["ms"]
            detail = f"fused {fused['variant']} {fused['ms']:.1f} ms, FM {fm['variant']} {fm['ms']:.1f} ms"
            targets.append(_target(name, where, ratio, 1.4, ratio <= 1.4, detail))
            name = "fused >= 2x faster than best torch.func.jvp"
            if func is None:
                why = "; ".join(
                    f"{r['variant']}: {r['status']}" for r in grp if family(r["variant"]) == "func_jvp"
                )
                targets.append(_target(name, where, detail=f"no torch.func.jvp timing ({why})"))
            else:
                speedup = func["ms"] / fused["ms"]
                detail = f"best torch.func {func['variant']} {func['ms']:.1f} ms"
                targets.append(_target(name, where, speedup, 2.0, speedup >= 2.0, detail))
            same_mode = "fm+compile" if is_compiled(fused["variant"]) else "fm"
            fm_mem = next((r for r in grp if r["status"] == "ok" and r["variant"] == same_mode), fm)
            if fused.get("peak_mem_gib") and fm_mem.get("peak_mem_gib"):
                mem = fused["peak_mem_gib"] / fm_mem["peak_mem_gib"]
                detail = (
                    f"{fused['variant']} {fused['peak_mem_gib']:.2f} GiB, "
                    f"{fm_mem['variant']} {fm_mem['peak_mem_gib']:.2f} GiB"
                )
                targets.append(_target("fused peak memory <= 1.2x FM", where, mem, 1.2, mem <= 1.2, detail))
        elif device.startswith("CPU") and dtype == "fp32":
            ok = {r["variant"]: r for r in grp if r["status"] == "ok"}
            if "dual_ref" in ok and "func_jvp" in ok:
                dual, func = ok["dual_ref"], ok["func_jvp"]
                speedup, how = _speedup(func, dual, "times_ms", "ms")
                detail = f"full steps: dual_ref {dual['ms']:.1f} ms, func_jvp {func['ms']:.1f} ms ({how})"
                if dual.get("fwd_ms") and func.get("fwd_ms"):
                    pass_speedup, _ = _speedup(func, dual, "fwd_times_ms", "fwd_ms")
                    detail += (
                        f"; the (u, du/dt) pass alone: {dual['fwd_ms']:.1f} vs {func['fwd_ms']:.1f} ms,"
                        f" {pass_speedup:.2f}x"
                    )
                name = "CPU: dual reference >= 1.5x faster than eager torch.func.jvp"
                targets.append(_target(name, where, speedup, 1.5, speedup >= 1.5, detail))
    return targets


# ------------------------------------------------------------------ output


def print_table(rows):
    table = []
    for r in rows:
        ok = r["status"] == "ok"
        table.append(
            [
                r["preset"],
                r["batch"],
                r["dtype"],
                r["variant"],
                f"{r['ms']:.2f}" if ok else r["status"][:48],
                f"{r['ms_iqr']:.2f}" if ok else "",
                f"{r['img_per_s']:.0f}" if ok else "",
                f"{r['peak_mem_gib']:.2f}" if ok and r.get("peak_mem_gib") is not None else "",
                f"{r['x_fm']:.2f}" if r.get("x_fm") else "",
                f"{r['mem_x_fm']:.2f}" if r.get("mem_x_fm") else "",
                f"{r['first_call_s']:.1f}" if r.get("first_call_s") else "",
                f"{r['fwd_ms']:.2f}" if r.get("fwd_ms") else "",
                f"{r['fwd_x_fm']:.2f}" if r.get("fwd_x_fm") else "",
                f"{r['saved_mib']:.1f} ({r['saved_x_fm']:.2f}x)" if r.get("saved_x_fm") else "",
                len(r["ops_fallback"]) if r.get("ops_fallback") is not None else "",
            ]
        )
    heads = [
        "preset",
        "batch",
        "dtype",
        "variant",
        "ms/step",
        "IQR",
        "img/s",
        "peak GiB",
        "x FM",
        "mem x FM",
        "1st call s",
        "pass ms",
        "pass x FM",
        "saved MiB (x FM)",
        "fallbacks",
    ]
    print(C.format_table(table, heads))
    print("x FM: time over the FM step in the same mode (compiled vs compiled FM, else eager FM).")
    print("pass ms: the network pass alone under no_grad (FM: forward; others: u and du/dt), eager only.")
    print("saved MiB: activations autograd keeps for the backward (parameters left out), eager only.")
    print("fallbacks: ops of a fused variant that ran on another backend (names in the JSON).")


def print_targets(targets, args):
    if guided(args):
        print("targets: not judged on a guided step (issue 8 states them without guidance)")
        return
    if not targets:
        print("targets: none evaluated (they need DiT-XL/2 bf16 on a GPU, or fp32 rows on the CPU)")
        return
    print("targets (issue 8):")
    for t in targets:
        mark = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
        value = f" {t['value']:.2f} (threshold {t['threshold']})" if "value" in t else ""
        print(f"  [{mark}] {t['name']}:{value}  [{t['where']}] {t['detail']}")


def plot(rows, path, label=""):
    plt = C.pyplot()
    if plt is None:
        return None
    groups = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(_key(r), []).append(r)
    if not groups:
        return None
    colors = {
        "fm": "tab:gray",
        "func_jvp": "tab:red",
        "dual_ref": "tab:blue",
        "fused_triton": "tab:green",
        "fused_cuda": "tab:olive",
        "fused_cpu": "tab:cyan",
    }
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(8, 1.2 + 0.45 * max(len(g) for g in groups.values()) * len(groups)),
        squeeze=False,
    )
    for ax, ((preset, batch, dtype, device), grp) in zip(axes[:, 0], groups.items()):
        ms = [r["ms"] for r in grp]
        for i, r in enumerate(grp):
            compiled = is_compiled(r["variant"])
            ax.barh(
                i,
                r["ms"],
                color=colors.get(family(r["variant"]), "k"),
                hatch="//" if compiled else None,
                edgecolor="white" if compiled else None,
            )
            value = f" {r['ms']:.1f} ms" + (f"  {r['x_fm']:.2f}x FM" if r.get("x_fm") else "")
            ax.text(r["ms"], i, value, va="center", fontsize=7)
        ax.set_yticks(range(len(grp)), [r["variant"] for r in grp])
        ax.invert_yaxis()
        ax.set_xlim(0, max(ms) * 1.45)
        ax.set_title(f"{preset}, batch {batch}, {dtype}, {device}{label}", fontsize=9)
        ax.set_xlabel("ms per training step (lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ main


def build_plan(args, device):
    if args.quick:
        variants = ["fm", "func_jvp", "dual_ref", "fused_triton" if device.type == "cuda" else "fused_cpu"]
        plan = [("DiT-T/4", 2, "fp32" if device.type == "cpu" else "bf16", variants)]
    else:
        plan = GPU_PLAN if device.type == "cuda" else CPU_PLAN
    if args.presets or args.batches or args.dtypes:
        default_variants = plan[0][3] if args.quick else list(ORDER)
        presets = args.presets or list(dict.fromkeys(p for p, *_ in plan))
        dtypes = args.dtypes or list(dict.fromkeys(d for *_, d, _ in plan))
        defaults = {p: b for p, b, *_ in plan}
        plan = []
        for preset in presets:
            for batch in args.batches or [defaults.get(preset, DEFAULT_BATCH[device.type].get(preset, 8))]:
                for dtype in dtypes:
                    plan.append((preset, batch, dtype, default_variants))
    foreign = foreign_families(device)
    groups = []
    for preset, batch, dtype, variants in plan:
        if args.variants:
            variants = [v for v in ORDER if any(fnmatch.fnmatchcase(v, pat) for pat in args.variants)]
            if not variants:
                raise SystemExit(f"--variants {' '.join(args.variants)} matches none of: {', '.join(ORDER)}")
        variants = [v for v in variants if family(v) not in foreign]
        if args.no_compile:
            variants = [v for v in variants if not is_compiled(v)]
        # A preset may come back later in the plan for more variants: each variant runs once.
        same = [g for g in groups if (g.preset, g.batch, g.dtype) == (preset, batch, dtype)]
        done = {v for g in same for v in g.variants}
        variants = [v for v in variants if v not in done]
        if variants:
            groups.append(Group(preset, batch, dtype, variants))
    return groups


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 repeats: a smoke run in seconds")
    parser.add_argument("--presets", nargs="+", help="e.g. DiT-XL/2 DiT-B/2 (default: the device's sweep)")
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="bf16/fp16: autocast; fp32: none")
    parser.add_argument(
        "--variants",
        nargs="+",
        type=lambda text: text.split(","),
        help=f"names or globs (space- or comma-separated) from: {', '.join(ORDER)}",
    )
    parser.add_argument("--no-compile", action="store_true", help="drop the +compile variants")
    parser.add_argument("--compile-mode", choices=("regional", "full", "cudagraphs"), default="regional")
    parser.add_argument("--input-size", type=int, help="latent/image side (default 32; 16 with --quick)")
    parser.add_argument("--warmup", type=int, help="steps after the first call (default 1, quick 0)")
    parser.add_argument("--repeats", type=int, help="timed steps at most (default 7, quick 2)")
    parser.add_argument("--max-seconds", type=float, help="time per case at most, once 2 steps are timed")
    parser.add_argument(
        "--compile-timeout", type=float, help="seconds for a first compiled call (GPU 90, CPU 300)"
    )
    parser.add_argument("--eager-timeout", type=float, default=600.0)
    parser.add_argument(
        "--time-budget", type=float, help="seconds for the whole run (default GPU 290, CPU none)"
    )
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        help="time the eager variants round robin (default on the CPU, where other jobs' load varies)",
    )
    parser.add_argument(
        "--tangent-rows",
        choices=("all", "r_neq_t"),
        default="all",
        help="MeanFlow variants run the JVP on every row (all: as public MeanFlow code, the targets' "
        "terms) or only on the rows with r != t (r_neq_t: the engine's default loss)",
    )
    parser.add_argument(
        "--cfg-w",
        type=float,
        default=1.0,
        help="guidance folded into the MeanFlow target (loss.cfg_w; default 1 with --cfg-k 0: none, "
        "the targets' terms)",
    )
    parser.add_argument("--cfg-k", type=float, default=0.0, help="loss.cfg_k (default 0)")
    parser.add_argument("--no-forward", action="store_true", help="skip timing the network pass alone")
    parser.add_argument("--no-check", action="store_true", help="skip the numerics check against torch.func")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default 1: stable on shared machines; 0: torch's)"
    )
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--out-dir", default=str(C.RESULTS_DIR))
    args = parser.parse_args(argv)
    if args.variants:
        args.variants = [pattern for patterns in args.variants for pattern in patterns]
    gpu = args.device.startswith("cuda")
    defaults = dict(
        warmup=0 if args.quick else 1,
        repeats=2 if args.quick else 7,
        max_seconds=1.0 if args.quick else (3.0 if gpu else 60.0),
        compile_timeout=90.0 if gpu else 300.0,
        time_budget=None if args.quick else (290.0 if gpu else None),
        input_size=16 if args.quick else None,
        interleave=not gpu,
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    C.set_cpu_threads(device, args.threads)
    runner = Runner(args, device)
    groups = build_plan(args, device)
    backends = sorted(mfkernels.available_backends())
    budget = f" | time budget {args.time_budget:.0f} s" if args.time_budget else ""
    runner.log(f"{C.device_name(device)} | torch {torch.__version__} | backends {backends}{budget}")
    if device.type == "cpu":
        runner.log("CPU run: no fused GPU kernels here; fused_cpu needs the csrc extension")
    for g in groups:
        runner.run_group(g)
    runner.save()
    print()
    print_table(runner.rows)
    print()
    print_targets(runner.payload["targets"], args)
    print(f"\nwrote {runner.json_path}")
    if not args.no_plot:
        png = plot(runner.rows, runner.json_path.with_suffix(".png"), render_readme.step_title(vars(args)))
        if png:
            runner.payload["plot"] = png.name
            C.write_json(runner.json_path, runner.payload)
            print(f"wrote {png}")
    return runner.payload


if __name__ == "__main__":
    main()
