"""What the step benchmarks report, checked on the CPU with stand-in clocks, steps and
profilers: that a row's step does the work it names (the FM baseline, the tangent rows, eager
against compiled or graphed, the dtype and batch asked for), that warm-up steps are not timed
and the timed ones are counted as asked, that host time, wall time and GPU-busy time are not
swapped, that FLOPs, TFLOP/s and MFU follow from what was counted, and that the results carry
their settings. No timing is asserted: every clock here is a stand-in."""

import contextlib
import json
import types

import pytest
import torch
from fake_clock import FakeClock

from benchmarks import any_model_jvp as AM
from benchmarks import jvp_throughput as J
from benchmarks import step_phases as P
from benchmarks import step_runner as SR
from benchmarks import trainer_step as TS
from benchmarks import training_step as T
from meanflow import FlowMatchingLoss, MeanFlowLoss
from meanflow.config import LossConfig

CPU = torch.device("cpu")


class FakeProfile:
    """Stands in for ``torch.profiler.profile``: runs the body, reports the given averages."""

    events: list = []

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def key_averages(self):
        return self.events


def _kernel(name, total_us, self_us, count):
    cuda = torch.autograd.DeviceType.CUDA
    return types.SimpleNamespace(
        key=name, device_type=cuda, device_time_total=total_us, self_device_time_total=self_us, count=count
    )


# ------------------------------------------------------------------ step_runner / jvp_throughput


def _runner(tmp_path, *argv):
    args = J.parse_args(["--device", "cpu", "--no-check", "--no-plot", "--out-dir", str(tmp_path), *argv])
    return SR.Runner(args, CPU)


class PassModel:
    """Records each network call of the pass alone: r, t, rows, backend, grad and autocast."""

    def __init__(self, log):
        self.log, self.backend = log, "unset"

    def __call__(self, z, r, t, y):
        self.log.append(("forward", r.tolist(), t.tolist(), self.backend, *_modes()))


def _modes():
    return torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("fam, rows", [("fm", "all"), ("dual_ref", "all"), ("dual_ref", "r_neq_t")])
def test_runner_network_pass_is_the_steps_own(tmp_path, monkeypatch, fam, rows):
    """FM's pass is u(z, t, t); a MeanFlow pass takes du/dt at (r, t) on the rows
    --tangent-rows names and a forward at (t, t) on the others; no grad, the row's autocast
    and backend."""
    log = []

    def jvp(model, z, r, t, y, v):
        log.append(("jvp", r.tolist(), t.tolist(), model.backend, *_modes()))

    monkeypatch.setattr(SR, "jvp_of", lambda fam: jvp)
    runner = _runner(tmp_path, "--tangent-rows", rows)
    t = torch.tensor([0.9, 0.8, 0.7, 0.6])
    r = torch.tensor([0.1, 0.2, 0.3, 0.4])
    probe = {"z": torch.zeros(4, 1), "v": torch.zeros(4, 1), "t": t, "r": r, "y": torch.zeros(4)}
    backend = T.BACKEND_OF.get(fam)
    runner.network_pass(fam, backend, PassModel(log), probe, "bf16", contextlib.nullcontext)()
    if fam == "fm":
        assert log == [("forward", t.tolist(), t.tolist(), None, False, True)]
    elif rows == "all":
        assert log == [("jvp", r.tolist(), t.tolist(), "reference", False, True)]
    else:
        k = int(SR.spread_rows(4, MeanFlowLoss().ratio_r_neq_t, 0.5).sum())
        assert 0 < k < 4
        assert log == [
            ("jvp", r[:k].tolist(), t[:k].tolist(), "reference", False, True),
            ("forward", t[k:].tolist(), t[k:].tolist(), "reference", False, True),
        ]


def test_runner_rows(tmp_path, monkeypatch):
    """Each eager variant: one first call and --warmup untimed steps, then --repeats timed
    rounds; ms is the steps' time, fwd_ms the pass's, images/s per second; the row says it
    was interleaved and what it ran on; the JSON carries the settings."""
    calls = []
    real_step = SR.training_step

    def counted(model, opt, backend, *args):
        calls.append(backend)
        real_step(model, opt, backend, *args)

    def fake_time_calls(fn, device, repeats, max_seconds, min_repeats=2):
        fn()
        return [{"step": 40.0, "call": 4.0}[fn.__name__]]

    monkeypatch.setattr(SR, "training_step", counted)
    monkeypatch.setattr(SR.C, "time_calls", fake_time_calls)
    argv = ["--presets", "DiT-T/4", "--batches", "3", "--input-size", "8", "--variants", "fm", "dual_ref"]
    runner = _runner(tmp_path, *argv, "--warmup", "2", "--repeats", "3", "--tangent-rows", "r_neq_t")
    (group,) = SR.build_plan(runner.args, CPU)
    runner.run_group(group)
    assert calls == [None] * 3 + ["reference"] * 3 + [None, "reference"] * 3
    fm, dual = runner.rows
    for row in (fm, dual):
        assert row["status"] == "ok" and row["batch"] == 3 and row["tokens"] == 4
        assert row["ms"] == 40.0 and row["repeats"] == 3 and row["fwd_ms"] == 4.0
        assert row["img_per_s"] == 75.0 and row["interleaved"] is True
    assert runner.json_path.name.startswith("jvp_throughput_r_neq_t_")
    data = json.loads(runner.json_path.read_text())
    assert data["settings"]["tangent_rows"] == "r_neq_t" and data["settings"]["warmup"] == 2
    assert [r["variant"] for r in data["rows"]] == ["fm", "dual_ref"]


def test_runner_compiled_rows(tmp_path, monkeypatch):
    """A compiled variant is timed alone, whatever comes before it; compiled torch.func is
    compiled whole, and its row says so."""
    timed = []

    def prepare(self, row, variant, *args):
        return SR.Prepared(row, lambda: None, None, lambda: None)

    def time_cases(self, cases):
        timed.append([c.row["variant"] for c in cases])
        for case in cases:
            case.row["status"] = "ok (stand-in)"
            self.rows.append(case.row)

    monkeypatch.setattr(SR.Runner, "prepare", prepare)
    monkeypatch.setattr(SR.Runner, "time_cases", time_cases)
    runner = _runner(tmp_path, "--input-size", "8")
    variants = ["fm+compile", "fm", "dual_ref", "func_jvp+compile"]
    runner.run_group(SR.Group("DiT-T/4", 2, "fp32", variants))
    assert timed == [["fm+compile"], ["fm", "dual_ref"], ["func_jvp+compile"]]
    modes = {r["variant"]: r["compile_mode"] for r in runner.rows}
    assert modes == {"fm+compile": "regional", "fm": None, "dual_ref": None, "func_jvp+compile": "full"}


def test_runner_round_robin_counts(monkeypatch):
    """--repeats rounds at most; --max-seconds is each case's, so two cases get twice it."""
    clock = FakeClock()
    monkeypatch.setattr(SR, "time", clock)

    def call_taking(fn, device, repeats, max_seconds, min_repeats=2):
        clock.advance(0.4)
        return [400.0]

    monkeypatch.setattr(SR.C, "time_calls", call_taking)
    fns = [lambda: None, lambda: None]
    assert [len(t) for t in SR._round_robin(fns, CPU, 2, 100.0)] == [2, 2]
    assert [len(t) for t in SR._round_robin(fns, CPU, 10, 1.0)] == [3, 3]


def test_plan_and_defaults():
    """The batches asked for are the batches run; full runs warm up before timing; an explicit
    0 or --no-interleave is kept, not replaced by the default."""
    args = J.parse_args(["--device", "cpu", "--presets", "DiT-B/2", "--batches", "3", "5"])
    assert [g.batch for g in SR.build_plan(args, CPU)] == [3, 5]
    for device in ("cpu", "cuda"):
        args = J.parse_args(["--device", device])
        assert (args.warmup, args.repeats) == (1, 7)
    args = J.parse_args(["--device", "cpu", "--warmup", "0", "--no-interleave"])
    assert args.warmup == 0 and args.interleave is False


# ------------------------------------------------------------------ step_phases


def test_step_phases_counts(monkeypatch):
    """One first call and one warm-up step untimed, then --steps timed steps with the phase
    marks, with the variant's backend even when compiled; host time until the call returns,
    wall time until the device is done; CPU marks in ms; kernels and GPU-busy time per step."""
    log = []

    def fake_step(model, opt, backend, loss_fn, context, x, y, device, dtype, mark=None):
        log.append((backend, mark is not None))
        for _ in range(4 if mark else 0):
            mark()

    monkeypatch.setattr(P.T, "training_step", fake_step)
    top_kernels = P.top_kernels
    monkeypatch.setattr(P, "top_kernels", lambda *args: ([], None))
    argv = ["--device", "cpu", "--preset", "DiT-T/4", "--batch", "2", "--dtype", "fp32", "--steps", "3"]
    args = P.parse_args([*argv, "--variants", "dual_ref+compile"])
    model = T.build_model("DiT-T/4", 8, CPU)
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    P.run_variant("dual_ref+compile", model, opt, x, y, args, CPU)
    assert log == [("reference", False)] * 2 + [("reference", True)] * 3 + [("reference", False)] * 3
    assert all(b._compiled_call_impl is None for b in model.blocks)  # undone

    clock = FakeClock()
    monkeypatch.setattr(P, "time", clock)
    timer = P.PhaseTimer(CPU)
    for seconds in (0.5, 1.0, 0.25, 0):
        timer.mark()
        clock.advance(seconds)
    assert timer.durations_ms() == [500.0, 1000.0, 250.0]
    monkeypatch.setattr(P.C, "sync", lambda device: clock.advance(2.0))
    assert P.host_and_wall_ms(lambda: clock.advance(1.0), CPU, 3) == {"host_ms": 1000.0, "wall_ms": 3000.0}

    FakeProfile.events = [_kernel("gemm", 6000, 6000, 4), _kernel("launch wrapper", 8000, 0, 2)]
    monkeypatch.setattr(P, "profile", FakeProfile)
    monkeypatch.setattr(P.C, "sync", lambda device: None)
    top, busy = top_kernels(
        lambda: None, torch.device("cuda"), types.SimpleNamespace(top=5, traces=False), "v"
    )
    assert top == [{"name": "gemm", "ms_per_step": 3.0, "calls_per_step": 2}] and busy == 7.0


# ------------------------------------------------------------------ trainer_step


def _trainer_case(monkeypatch, dtype="fp32", mode="eager", objective="fm", device_name=None):
    """run_case with a stand-in step taking 1 ms of host time and a device busy 3 ms more."""
    clock, log = FakeClock(), []

    def build_step(step_module, model, emas, opt, config, loss, *args, **kwargs):
        log.append(("built", config.cuda_graphs, type(loss).__name__))

        def run_step(step, batch, noise, lr):
            log.append(step)
            clock.advance(1e-3)
            return {"loss": torch.tensor(0.5)}

        return run_step

    monkeypatch.setattr(TS.train, "build_step", build_step)
    monkeypatch.setattr(TS, "time", clock)
    monkeypatch.setattr(TS.C, "sync", lambda device: clock.advance(3e-3))
    monkeypatch.setattr(TS, "forward_flops", lambda model, x, y: 1e12)
    if device_name:
        monkeypatch.setattr(TS.C, "device_name", lambda device: device_name)
    return TS.run_case("DiT-T/4", 2, objective, mode, CPU, dtype, steps=3), log


def test_trainer_step_rows(monkeypatch, tmp_path):
    """Five untimed steps (a graphed step's capture and first replay), then the timed ones;
    ms is the wall time and host_ms the call's; FLOPs are FM's three passes; TFLOP/s per
    second; MFU achieved over the datasheet's bf16 peak, for bf16 steps only."""
    row, log = _trainer_case(monkeypatch, dtype="bf16", mode="graphs", device_name="NVIDIA H100 80GB HBM3")
    assert log == [("built", "on", "FlowMatchingLoss"), 0, 1, 2, 3, 4, 5, 6, 7]
    assert row["ms"] == pytest.approx(4.0) and row["host_ms"] == pytest.approx(1.0)
    assert row["model_tflop_per_step"] == 3.0 and row["tflops"] == pytest.approx(750.0)
    assert row["mfu"] == round(750.0 / 989.0, 3)
    row, _ = _trainer_case(monkeypatch, dtype="fp32", device_name="NVIDIA H100 80GB HBM3")
    assert "mfu" not in row
    losses = {name: LossConfig(**kw).build() for name, kw in TS.OBJECTIVES.items()}
    assert isinstance(losses["fm"], FlowMatchingLoss)
    assert (losses["mf"].tangent_rows, losses["mf_all"].tangent_rows) == ("r_neq_t", "all")

    FakeProfile.events = [_kernel("gemm", 6000, 6000, 4)]
    monkeypatch.setattr(torch.profiler, "profile", FakeProfile)
    monkeypatch.setattr(TS.C, "sync", lambda device: None)
    steps = []
    assert TS.device_busy_ms(steps.append, 8, torch.device("cuda")) == 3.0 and steps == [8, 9]

    cases = []

    def run_case(preset, batch, objective, mode, device, dtype, steps):
        cases.append(dtype)
        return dict(
            preset=preset, batch=batch, objective=objective, mode=mode, status="ok", host_ms=1.0, ms=10.0
        )

    monkeypatch.setattr(TS, "run_case", run_case)
    monkeypatch.setattr(TS.C, "set_cpu_threads", lambda device, threads: None)
    payload = TS.main(["--device", "cpu", "--dtype", "bf16", "--presets", "P", "--out-dir", str(tmp_path)])
    assert set(cases) == {"bf16"} and payload["settings"]["dtype"] == "bf16"
    (path,) = tmp_path.glob("trainer_step_*.json")
    assert len(json.loads(path.read_text())["rows"]) == 12  # 2 default batches, 3 objectives, 2 modes
    rows = [
        dict(preset="P", batch=2, objective=o, mode=m, status="ok", ms=ms, host_ms=1.0)
        for o, m, ms in [("fm", "eager", 10.0), ("fm", "graphs", 5.0), ("mf", "graphs", 20.0)]
    ]
    assert [line.split()[-2] for line in TS.table(rows).splitlines()[2:]] == ["2.00x", "1.00x", "4.00x"]


# ------------------------------------------------------------------ training_step


def test_training_step_library(monkeypatch):
    """A bf16 step's loss runs under autocast (fp32: none); every MeanFlow variant takes
    du/dt on the rows --tangent-rows names (either value, neither left to the loss's default);
    compiled torch.func is compiled whole, never block by block; --compile-mode cudagraphs
    asks every compile for graphs."""
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([param])
    seen = []

    def loss_fn(x, y):
        seen.append(torch.is_autocast_enabled("cpu"))
        return (param * 2).sum()

    for dtype in ("bf16", "fp32"):
        T.training_step(torch.nn.Module(), opt, None, loss_fn, contextlib.nullcontext, None, None, CPU, dtype)
    assert seen == [True, False]

    for rows in ("all", "r_neq_t"):
        args = J.parse_args(["--device", "cpu", "--tangent-rows", rows])
        assert {T.objective(fam, args).tangent_rows for fam in ("func_jvp", "dual_ref", "fused_cpu")} == {
            rows
        }

    model = T.build_model("DiT-T/4", 8, CPU)
    _, _, undo = T.make_loss("func_jvp+compile", model, J.parse_args(["--device", "cpu"]))
    assert all(b._compiled_call_impl is None and "jvp" not in b.__dict__ for b in model.blocks)
    undo()
    modes = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, **kw: modes.append(mode) or fn)
    args = J.parse_args(["--device", "cpu", "--compile-mode", "cudagraphs"])
    _, _, undo = T.make_loss("dual_ref+compile", model, args)
    undo()
    assert len(modes) == 2 * len(model.blocks) and set(modes) == {"reduce-overhead"}


# ------------------------------------------------------------------ any_model_jvp


def test_any_model_cases(monkeypatch):
    """The FM yardstick runs flow matching, math and patched the MeanFlow step with du/dt on
    every row, the JVP at r <= t; each case warmed up before it is timed; the sides and
    batches each N runs at."""
    ran, log = [], []

    def loss_class(name):
        def make(**kwargs):
            def loss(net, x, y, generator=None):
                ran.append((name, kwargs.get("tangent_rows")))
                return sum(p.sum() for p in net.parameters()), {}

            return loss

        return make

    def jvp(net, z, r, t, y, v):
        log.append(bool((r <= t).all()))

    def measure(fn, device, repeats):
        ran.clear()
        fn()
        log.append(list(ran))
        return {"ms": 1.0}

    monkeypatch.setattr(AM, "build", lambda *args: torch.nn.Linear(1, 1))
    monkeypatch.setattr(AM, "MeanFlowLoss", loss_class("mf"))
    monkeypatch.setattr(AM, "FlowMatchingLoss", loss_class("fm"))
    monkeypatch.setattr(AM, "func_jvp", jvp)
    monkeypatch.setattr(AM.mfkernels, "patch_sdpa", lambda net: None)
    monkeypatch.setattr(AM, "measure", measure)
    rows = AM.run_model("timm", 8, 2, AM.XL, CPU, 1, contextlib.nullcontext)
    cases = [("fm", "step"), ("math", "jvp"), ("math", "step"), ("patched", "jvp"), ("patched", "step")]
    assert [(r["attention"], r["what"]) for r in rows] == cases and {r["tokens"] for r in rows} == {16}
    mf = [("mf", "all")]
    assert log == [[("fm", None)], True, [], mf, True, [], mf]

    monkeypatch.undo()
    counts = []
    monkeypatch.setattr(AM.C, "time_calls", lambda fn, *args, **kwargs: counts.append(len(calls)) or [1.0])
    calls = []
    AM.measure(lambda: calls.append(1), CPU, 3)
    assert counts == [1]

    runs = []
    monkeypatch.setattr(AM.C, "set_cpu_threads", lambda device, threads: None)
    monkeypatch.setattr(AM, "run_model", lambda model, side, batch, *args: runs.append((side, batch)) or [])
    AM.main(["--device", "cpu", "--models", "timm", "--tokens", "256", "1024"])
    assert runs == [(32, 32), (64, 8)]
