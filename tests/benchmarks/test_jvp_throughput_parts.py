"""Pieces of the training-step benchmark (jvp_throughput.py and the step library it runs on):
plans, losses, ratios and target verdicts."""

import gc
import subprocess
import sys
import weakref
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import mfkernels
from benchmarks import _common as C
from benchmarks import jvp_throughput as J
from benchmarks import step_report as R
from benchmarks import training_step as T
from benchmarks.step_runner import build_plan
from meanflow import DiT


def _row(
    variant, ms, peak=None, preset="DiT-XL/2", dtype="bf16", device="NVIDIA H100 80GB HBM3", status="ok"
):
    row = {
        "preset": preset,
        "batch": 64,
        "dtype": dtype,
        "device": device,
        "variant": variant,
        "status": status,
    }
    if status == "ok":
        row.update(ms=ms, peak_mem_gib=peak)
    return row


def test_ratios_and_gpu_targets():
    rows = [
        _row("fm", 100.0, 20.0),
        _row("fm+compile", 90.0, 19.0),
        _row("func_jvp", 400.0, 40.0),
        _row("func_jvp+compile", None, status="failed: compile timed out after 120 s"),
        _row("fused_triton", 150.0, 23.0),
        _row("fused_triton+compile", 120.0, 22.0),
    ]
    R.annotate(rows)
    by = {r["variant"]: r for r in rows}
    assert by["fused_triton"]["x_fm"] == 1.5 and by["fused_triton+compile"]["x_fm"] == pytest.approx(
        1.333, abs=1e-3
    )
    assert by["fused_triton+compile"]["x_fm_eager"] == 1.2
    assert by["fused_triton+compile"]["mem_x_fm"] == pytest.approx(22 / 19, abs=1e-3)
    targets = {t["name"]: t for t in R.evaluate_targets(rows)}
    step = targets["fused step <= 1.4x FM step"]
    assert step["value"] == pytest.approx(120 / 90, abs=1e-3) and step["pass"] is True
    speed = targets["fused >= 2x faster than best torch.func.jvp"]
    assert speed["value"] == pytest.approx(400 / 120, abs=1e-3) and speed["pass"] is True
    mem = targets["fused peak memory <= 1.2x FM"]
    assert mem["value"] == pytest.approx(22 / 19, abs=1e-3) and mem["pass"] is True
    # Slower fused kernels fail; no torch.func timing at all gives "n/a", not a pass.
    rows = [
        _row("fm", 100.0, 20.0),
        _row("fused_triton", 150.0, 30.0),
        _row("func_jvp", None, status="failed: OOM"),
    ]
    targets = {t["name"]: t for t in R.evaluate_targets(rows)}
    assert targets["fused step <= 1.4x FM step"]["pass"] is False
    assert targets["fused peak memory <= 1.2x FM"]["pass"] is False
    assert targets["fused >= 2x faster than best torch.func.jvp"]["pass"] is None
    assert "OOM" in targets["fused >= 2x faster than best torch.func.jvp"]["detail"]


def test_no_pass_over_torch_func_when_its_compiled_variant_was_never_tried():
    """The 2x target is against the best of eager and compiled torch.func.jvp: with the
    compiled one cut by the time budget (as in the H200 run of 2026-12-04) a pass over the
    eager one alone is no verdict; a fail stays a fail (the untried one could only be faster)."""
    skipped = _row("func_jvp+compile", None, status="skipped: time budget (55 s) used up")
    rows = [_row("fm", 100.0, 20.0), _row("func_jvp", 400.0, 40.0), _row("fused_triton", 150.0, 23.0)]
    name = "fused >= 2x faster than best torch.func.jvp"
    for extra in ([skipped], []):
        (speed,) = [t for t in R.evaluate_targets(rows + extra) if t["name"] == name]
        assert speed["value"] == pytest.approx(400 / 150, abs=1e-3) and speed["pass"] is None
        assert "func_jvp+compile" in speed["detail"] and "no verdict" in speed["detail"]
    rows[1] = _row("func_jvp", 250.0, 40.0)
    (speed,) = [t for t in R.evaluate_targets(rows + [skipped]) if t["name"] == name]
    assert speed["pass"] is False


def test_cpu_target_and_no_target_elsewhere():
    cpu = "CPU AMD EPYC (2 cores)"
    rows = [
        _row("func_jvp", 300.0, preset="DiT-S/2", dtype="fp32", device=cpu),
        _row("dual_ref", 150.0, preset="DiT-S/2", dtype="fp32", device=cpu),
        _row("fm", 1.0, preset="DiT-B/2"),  # a GPU preset with no targets
    ]
    (target,) = R.evaluate_targets(rows)
    assert target["value"] == 2.0 and target["pass"] is True and "DiT-S/2" in target["where"]


def test_targets_are_named_by_what_they_compare_or_say_why_there_are_none(capsys):
    rows = [_row("fm", 100.0, 20.0), _row("fused_triton", 130.0, 21.0)]
    targets = R.judge_targets(rows, {})
    heading = "Targets (fused step vs flow matching, fused vs torch.func.jvp, peak memory):"
    assert R.targets_heading(targets) == heading
    (no_func,) = [t for t in targets if t["name"] == "fused >= 2x faster than best torch.func.jvp"]
    assert no_func["pass"] is None and no_func["detail"].endswith("(no torch.func.jvp variant in the run)")
    R.print_targets(targets, {})
    printed = capsys.readouterr().out
    assert (
        printed.startswith(heading + "\n")
        and "  [n/a ] fused >= 2x faster than best torch.func.jvp  [" in printed
    )
    # A guided step is not judged; a run with no row the targets apply to says which rows they need.
    assert R.judge_targets(rows, {"cfg_w": 2.0, "cfg_k": 0.0}) == []
    R.print_targets([], {"cfg_w": 2.0, "cfg_k": 0.0})
    assert capsys.readouterr().out.startswith("Targets: not judged on a guided step (")
    assert R.judge_targets([_row("fm", 1.0, preset="DiT-B/2")], {}) == []
    R.print_targets([], {})
    assert "Targets: none apply to these rows (they are judged on DiT-XL/2 bf16" in capsys.readouterr().out


def test_the_library_has_no_import_circle():
    """render_readme and step_phases use the step library, never the jvp_throughput script."""
    code = (
        "import sys; import benchmarks.render_readme, benchmarks.step_phases; "
        "print(sorted(m for m in sys.modules if m.startswith('benchmarks.')))"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = proc.stdout
    assert "benchmarks.step_report" in loaded and "benchmarks.training_step" in loaded
    assert "benchmarks.jvp_throughput" not in loaded and "benchmarks.step_runner" not in loaded


def test_plan_filters():
    args = J.parse_args(
        ["--device", "cpu", "--presets", "DiT-T/4", "--variants", "fm*", "fused_*", "--no-compile"]
    )
    (group,) = build_plan(args, torch.device("cpu"))
    assert group.variants == ["fm", "fused_cpu"]  # no +compile, no GPU kernels on the CPU
    comma_separated = ["--presets", "DiT-T/4", "--variants", "fm*,fused_*", "--no-compile"]
    args = J.parse_args(["--device", "cpu", *comma_separated])
    assert build_plan(args, torch.device("cpu"))[0].variants == ["fm", "fused_cpu"]
    with pytest.raises(SystemExit, match="--variants x y matches none"):
        build_plan(J.parse_args(["--device", "cpu", "--variants", "x,y"]), torch.device("cpu"))
    args = J.parse_args(["--device", "cuda"])
    groups = build_plan(args, torch.device("cuda"))
    assert groups[0].preset == "DiT-XL/2" and "fused_triton+compile" in groups[0].variants
    assert all("fused_cpu" not in g.variants for g in groups)
    assert args.time_budget == 290.0 and not args.interleave
    # DiT-XL/2's target variants come first, its others last (compiled torch.func the very
    # last); every (preset, variant) runs once.
    assert groups[0].variants == ["fm", "func_jvp", "fused_triton", "fm+compile", "fused_triton+compile"]
    assert groups[-1].preset == "DiT-XL/2" and groups[-1].variants[-1] == "func_jvp+compile"
    for argv in ([], ["--variants", "fm", "func_jvp*"]):
        plan = build_plan(J.parse_args(argv), torch.device("cuda"))
        runs = [(g.preset, v) for g in plan for v in g.variants]
        assert len(runs) == len(set(runs)) and ("DiT-XL/2", "func_jvp+compile") in runs


def test_guided_step():
    """--cfg-w/--cfg-k reach the MeanFlow objectives (FM has no guidance) and the plot title."""
    from meanflow.loss import FlowMatchingLoss

    plain = J.parse_args(["--device", "cpu"])
    assert not T.objective("dual_ref", plain).guided and R.step_title(vars(plain)) == ""
    args = J.parse_args(["--device", "cpu", "--cfg-w", "2", "--cfg-k", "0", "--tangent-rows", "r_neq_t"])
    for fam in ("dual_ref", "func_jvp", "fused_cpu"):
        loss = T.objective(fam, args)
        assert (loss.cfg_w, loss.cfg_k, loss.tangent_rows) == (2.0, 0.0, "r_neq_t")
    assert isinstance(T.objective("fm", args), FlowMatchingLoss)
    title = R.step_title(vars(args))
    assert title == ", du/dt on the rows with r != t, guidance w = 2, k = 0"


@pytest.mark.parametrize("variant", ["fm+compile", "dual_ref+compile"])
def test_regional_compile_covers_both_paths(variant):
    """A MeanFlow step runs plain forwards too (the r = t rows, guidance): regional compile
    wraps each block's forward, and its jvp for the MeanFlow variants; the undo removes both."""
    from meanflow import DiT

    model = DiT.from_config("DiT-T/4", num_classes=10, in_channels=1, input_size=8)
    args = J.parse_args(["--device", "cpu", "--tangent-rows", "r_neq_t"])
    _, _, undo = T.make_loss(variant, model, args)
    for block in model.blocks:
        assert block._compiled_call_impl is not None
        assert ("jvp" in block.__dict__) == (variant != "fm+compile")
    undo()
    assert all(b._compiled_call_impl is None and "jvp" not in b.__dict__ for b in model.blocks)


class _Recorder:
    """Stands in for matplotlib's pyplot, a figure and its axes: records every call."""

    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, name):
        if name.startswith("__"):  # numpy asks an object in an array for its array protocols
            raise AttributeError(name)

        def record(*args, **kwargs):
            self.calls.append((name, args))
            if name == "subplots":
                axes = np.empty((args[0], 1), dtype=object)
                axes[:, 0] = [_Recorder(self.calls) for _ in range(args[0])]
                return self, axes

        return record


def test_plot_titles_name_the_group_and_the_step(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(R.C, "pyplot", lambda: _Recorder(calls))
    rows = [_row("fm", 100.0), _row("fused_triton", 130.0)]
    R.annotate(rows)
    R.plot(rows, tmp_path / "plot.png", ", du/dt on the rows with r != t")
    titles = [args[0] for name, args in calls if name == "set_title"]
    assert titles == ["DiT-XL/2, batch 64, bf16, NVIDIA H100 80GB HBM3, du/dt on the rows with r != t"]
    bar_texts = [args[2] for name, args in calls if name == "text"]
    assert bar_texts == [" 100.0 ms  1.00x FM", " 130.0 ms  1.30x FM"]


@pytest.mark.filterwarnings(  # csrc has no attention and no gated residual backward
    "ignore:mfkernels.(attention|gated_residual_backward).*backend 'cpu' is not available"
)
@pytest.mark.parametrize("tangent_rows", ["all", "r_neq_t"])
def test_dual_step_keeps_no_more_for_its_backward_than_flow_matching(tangent_rows):
    """The peak-memory target on the CPU: the tangents of a dual step never reach the autograd
    graph, so the step keeps no more activations for its backward than a flow-matching step;
    torch.func.jvp keeps its tangent graph too (which is what the measure must see)."""
    torch.manual_seed(0)
    model = DiT.from_config("DiT-T/4", num_classes=10, in_channels=1, input_size=16, depth=2)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    args = J.parse_args(["--tangent-rows", tangent_rows])
    variants = ["fm", "func_jvp", "dual_ref"]
    if "cpu" in mfkernels.available_backends():
        variants.append("fused_cpu")
    saved = {}
    for variant in variants:
        loss, context, undo = T.make_loss(variant, model, args)
        with context():
            saved[variant] = C.saved_for_backward_bytes(partial(loss, x, y), keep=list(model.parameters()))
        undo()
    assert saved["fm"] > 0
    for variant in variants[2:]:
        assert saved[variant] <= saved["fm"], saved
    assert saved["func_jvp"] > 1.2 * saved["fm"], saved


def test_saved_bytes_measure_frees_what_it_measured():
    """The measure drops the graph it builds: an op that saves its own output (exp) must not
    keep it alive (a pack hook returning the tensor itself made a cycle gc cannot see, and
    each eager variant of the benchmark left its activations behind on the GPU)."""
    a = torch.randn(1000, requires_grad=True)
    outputs = []

    def fn():
        e = torch.exp(a)
        outputs.append(weakref.ref(e))
        return (e * 2).sum()

    assert C.saved_for_backward_bytes(fn, keep=[a]) == 1000 * 4
    gc.collect()
    assert outputs[0]() is None


@pytest.mark.parametrize(
    "remaining, status", [(9.0, "skipped: time budget"), (None, "failed: InductorError")]
)
def test_a_first_call_cut_by_the_run_budget_is_skipped_not_failed(monkeypatch, tmp_path, remaining, status):
    """A compile cut at what was left of --time-budget (9 s of its 300: DiT-XL/2 fm+compile on
    the H200, 2026-12-04) said "failed", as if the variant could not compile; only a cut at the
    case's own cap, or another error, is a failure. Inductor re-raises the timeout wrapped."""
    from benchmarks import step_runner

    class InductorError(RuntimeError):
        pass

    def cut(*args, **kwargs):
        try:
            raise C.CaseTimeout("timed out after 9 s")
        except C.CaseTimeout as exc:
            raise InductorError("wrapped") from exc

    monkeypatch.setattr(step_runner, "training_step", cut)
    budget = [] if remaining is None else ["--time-budget", "100"]
    args = J.parse_args(["--device", "cpu", *budget, "--out-dir", str(tmp_path)])
    runner = step_runner.Runner(args, torch.device("cpu"))
    if remaining is not None:
        runner.deadline = step_runner.time.perf_counter() + remaining
    model = DiT.from_config("DiT-T/4", num_classes=10, in_channels=1, input_size=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    row = {"variant": "fm+compile"}
    assert runner.prepare(row, "fm+compile", model, opt, x, y, "fp32", {}, None) is None
    assert row["status"].startswith(status), row["status"]


def test_pass_and_saved_ratios_are_over_eager_fm():
    rows = [_row("fm", 100.0), _row("dual_ref", 150.0)]
    rows[0].update(fwd_ms=10.0, saved_mib=100.0)
    rows[1].update(fwd_ms=30.0, saved_mib=114.0)
    R.annotate(rows)
    assert rows[1]["fwd_x_fm"] == 3.0 and rows[1]["saved_x_fm"] == pytest.approx(1.14, abs=1e-9)


def test_a_step_of_exactly_the_threshold_passes():
    (step, *_) = R.evaluate_targets([_row("fm", 100.0, 20.0), _row("fused_triton", 140.0, 24.0)])
    assert step["name"] == R.STEP_VS_FM and step["value"] == 1.4 and step["pass"] is True


def test_peak_memory_is_against_fm_in_the_fused_steps_mode():
    """Compiled FM is the fastest FM and keeps less; the fastest fused step is eager, so its
    memory is against eager FM's."""
    rows = [_row("fm", 100.0, 20.0), _row("fm+compile", 80.0, 15.0), _row("fused_triton", 110.0, 22.0)]
    (mem,) = [t for t in R.evaluate_targets(rows) if t["name"] == R.PEAK_MEMORY]
    assert mem["value"] == pytest.approx(1.1, abs=1e-3) and mem["pass"] is True


def _cpu(variant, ms, times, interleaved=True, **extra):
    row = _row(variant, ms, preset="DiT-S/2", dtype="fp32", device="CPU AMD EPYC (2 cores)")
    row.update(times_ms=times, interleaved=interleaved, **extra)
    return row


def test_cpu_speedup_is_the_median_of_paired_rounds_when_both_were_interleaved():
    func = _cpu("func_jvp", 300.0, [200.0, 300.0, 400.0])
    for interleaved, speedup in ((True, 3.0), (False, 2.0)):  # rounds 1x, 3x, 4x; medians 300/150
        dual = _cpu("dual_ref", 150.0, [200.0, 100.0, 100.0], interleaved)
        (target,) = R.evaluate_targets([func, dual])
        assert target["value"] == speedup, (interleaved, target)


def test_cpu_target_names_the_speedup_of_the_pass_alone():
    func = _cpu("func_jvp", 300.0, [300.0], fwd_ms=120.0, fwd_times_ms=[120.0])
    dual = _cpu("dual_ref", 150.0, [150.0], fwd_ms=40.0, fwd_times_ms=[40.0])
    (target,) = R.evaluate_targets([func, dual])
    assert target["value"] == 2.0 and target["detail"].endswith("40.0 vs 120.0 ms, 3.00x")


def test_a_step_guided_by_k_alone_is_guided():
    assert R.is_guided({"cfg_w": 1.0, "cfg_k": 0.5}) and not R.is_guided({"cfg_w": 1.0, "cfg_k": 0.0})
    assert R.judge_targets([_row("fm", 100.0), _row("fused_triton", 120.0)], {"cfg_k": 0.5}) == []


def test_printed_table_puts_each_number_under_its_heading(capsys):
    rows = [
        _row("fm", 100.0, 20.0),
        _row("fm+compile", 80.0, 18.0),
        _row("fused_triton+compile", 120.0, 21.0),
    ]
    for row, iqr in zip(rows, (1.0, 2.0, 3.0)):
        row.update(ms_iqr=iqr, img_per_s=64e3 / row["ms"])
    R.annotate(rows)
    R.print_table(rows)
    head, rule, *lines = capsys.readouterr().out.splitlines()
    spans, at = [], 0
    for dashes in rule.split("  "):
        spans.append((at, at + len(dashes)))
        at += len(dashes) + 2
    table = [{head[a:b].strip(): line[a:b].strip() for a, b in spans} for line in lines[:3]]
    compiled = table[2]
    assert compiled["variant"] == "fused_triton+compile" and compiled["ms/step"] == "120.00"
    assert compiled["IQR"] == "3.00" and compiled["img/s"] == "533" and compiled["x FM"] == "1.50"
    assert compiled["mem x FM"] == "1.17" and table[0]["x FM"] == "1.00"
