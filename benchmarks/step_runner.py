"""The training-step runner behind ``jvp_throughput.py``: the plan of cases for a device, and
a :class:`Runner` that compiles, warms up and times each variant's step, checks its numerics
against ``torch.func.jvp`` and writes the JSON after every case (docs/design.md section 6).

Timing: one first call (compilation, autotuning), ``warmup`` more, then up to ``repeats``
timed steps (CUDA events on the GPU) within ``max_seconds``; median, min/max and IQR are kept.
Eager variants are timed round robin with ``interleave``. A failing case is a row
(``failed: <reason>``), and ``time_budget`` skips what no longer fits.
"""

import contextlib
import fnmatch
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch._dynamo.utils import counters

import mfkernels
from benchmarks import _common as C
from benchmarks import step_report
from benchmarks.training_step import (
    BACKEND_OF,
    DTYPES,
    FUSED_BACKENDS,
    ORDER,
    autocast,
    build_model,
    family,
    foreign_families,
    guided,
    is_compiled,
    jvp_of,
    make_loss,
    preset_inputs,
    training_step,
)
from meanflow import MeanFlowLoss
from meanflow.loss import dual_jvp, func_jvp, spread_rows
from meanflow.models import unfused_attention

BENCHMARK = "jvp_throughput"

# ------------------------------------------------------------------ the plan

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


def build_plan(args, device):
    """The groups of cases a run times, from its arguments: the device's sweep (or the quick
    one), narrowed or replaced by ``presets``, ``batches``, ``dtypes``, ``variants`` and
    ``no_compile``; each (preset, batch, dtype, variant) once."""
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


# ------------------------------------------------------------------ the runner


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
        self.json_path = C.result_path(
            args.out_dir, name, device, args.quick, "json", self.payload["settings"]
        )

    def log(self, text):
        print(f"[{time.perf_counter() - self.start:6.1f}s] {text}", flush=True)

    def save(self):
        step_report.annotate(self.rows)
        self.payload.update(
            rows=self.rows,
            numerics=self.checks,
            targets=step_report.judge_targets(self.rows, vars(self.args)),
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

        own_limit = args.compile_timeout if compiled else args.eager_timeout
        limit = max(5.0, min(own_limit, self.deadline - time.perf_counter()))
        try:
            loss_fn, context, undo = make_loss(variant, model, args)
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
        except Exception as exc:  # a failing variant is a result, not a crash
            if _timed_out(exc) and limit < own_limit:
                # Cut by what was left of the run's budget, not by the case's own cap: the
                # variant was not given its chance, which is no failure of it.
                row["status"] = (
                    f"skipped: time budget ({args.time_budget:.0f} s) used up during the first call"
                    f" (cut at {limit:.0f} s of its {own_limit:.0f})"
                )
            elif isinstance(exc, C.CaseTimeout):
                row["status"] = f"failed: {'compile ' if compiled else ''}{exc}"
            else:
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


def _timed_out(exc: BaseException) -> bool:
    """Whether :class:`C.CaseTimeout` ended the call (dynamo and inductor re-raise it wrapped)."""
    while exc is not None:
        if isinstance(exc, C.CaseTimeout):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


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


def _rel_err(a, ref):
    return float((a.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))
