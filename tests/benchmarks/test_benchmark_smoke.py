"""The benchmark scripts' --quick runs work end to end on the CPU and write sane JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script, out_dir, *extra):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / script),
        "--quick",
        "--device",
        "cpu",
        "--out-dir",
        str(out_dir),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = Path(out_dir).glob(f"{script.removesuffix('.py')}_*_quick.json")
    return json.loads(path.read_text()), proc.stdout


def test_jvp_throughput_quick(tmp_path):
    data, stdout = _run("jvp_throughput.py", tmp_path)
    assert data["device"]["type"] == "cpu" and data["versions"]["torch"] and "commit" in data["git"]
    rows = {r["variant"]: r for r in data["rows"]}
    for variant in ("fm", "func_jvp", "dual_ref"):
        assert rows[variant]["status"] == "ok", rows[variant]
        assert rows[variant]["ms"] > 0 and rows[variant]["repeats"] >= 2
        assert rows[variant]["x_fm"] > 0
    assert rows["fm"]["x_fm"] == 1.0
    # The timed dual path computes what torch.func.jvp computes (fp32).
    (check,) = data["numerics"]
    assert check["dual_ref"]["u"] < 1e-4 and check["dual_ref"]["dudt"] < 1e-4
    assert "ms/step" in stdout and "Targets (CPU dual reference vs torch.func.jvp):" in stdout


def test_trainer_step_quick(tmp_path):
    """The trainer's own step for each objective; on the CPU the graphed cases say why not."""
    data, stdout = _run("trainer_step.py", tmp_path)
    rows = {(r["objective"], r["mode"]): r for r in data["rows"]}
    for objective in ("fm", "mf", "mf_all"):
        eager = rows[objective, "eager"]
        assert eager["status"] == "ok" and eager["ms"] > 0 and eager["host_ms"] > 0, eager
        assert eager["model_tflop_per_step"] > 0 and "mfu" not in eager  # no datasheet peak for a CPU
        assert eager["device_busy_ms"] is None
        assert "not a GPU" in rows[objective, "graphs"]["status"]
    assert rows["fm", "eager"]["model_tflop_per_step"] == rows["mf", "eager"]["model_tflop_per_step"]
    assert "x best FM" in stdout and "GPU busy" in stdout


def test_any_model_jvp_quick(tmp_path):
    """Both adapters, math attention against patch_sdpa, the JVP alone and whole steps."""
    pytest.importorskip("diffusers")
    pytest.importorskip("timm")
    data, _ = _run("any_model_jvp.py", tmp_path)
    rows = {(r["model"], r["attention"], r["what"]): r for r in data["rows"]}
    assert len(rows) == 10
    assert all(r["status"] == "ok" and r["ms"] > 0 for r in rows.values()), rows


def test_any_model_jvp_targets():
    from benchmarks.any_model_jvp import targets

    def row(attention, what, ms, peak, tokens=1024):
        case = dict(model="timm", tokens=tokens, attention=attention, what=what)
        return dict(case, ms=ms, peak_gib=peak, status="ok")

    rows = [row("math", "jvp", 90.0, 4.0), row("patched", "jvp", 20.0, 3.0), row("fm", "step", 10.0, 1.0)]
    rows += [row("math", "step", 99.0, 9.0), row("patched", "step", 16.0, 2.0)]
    rows += [row("patched", "jvp", 9.0, 1.0, tokens=256)]  # no math row at N = 256: not judged
    assert targets(rows) == [
        "[PASS] timm N=1024 JVP 4.50x faster than math (>= 3)",
        "[FAIL] timm N=1024 JVP peak 0.75x math's (<= 0.5)",
        "[FAIL] timm N=1024 step 1.60x the FM step (<= 1.5)",
    ]


def test_jvp_throughput_guided_quick(tmp_path):
    """--cfg-w/--cfg-k: a step with guidance folded into the target, in a file of its own and
    with no verdict on the targets (stated for the step without guidance)."""
    extra = ["--cfg-w", "2", "--cfg-k", "0", "--variants", "fm", "dual_ref", "--no-plot"]
    data, stdout = _run("jvp_throughput.py", tmp_path, *extra)
    names = [p.name for p in tmp_path.glob("*.json")]
    assert names == [f"jvp_throughput_cfg_{data['device']['slug']}_quick.json"]
    assert data["settings"]["cfg_w"] == 2.0 and data["settings"]["cfg_k"] == 0.0
    assert {r["variant"]: r["status"] for r in data["rows"]} == {"fm": "ok", "dual_ref": "ok"}
    assert data["targets"] == [] and "not judged on a guided step" in stdout


def test_jvp_throughput_cuda_graphs_mode_quick(tmp_path):
    """--compile-mode cudagraphs: the regional graphs with mode="reduce-overhead" (on the CPU
    inductor compiles them without graphs), each step marked as new, in a file of its own."""
    extra = ["--compile-mode", "cudagraphs", "--variants", "fm+compile", "dual_ref+compile", "--no-plot"]
    data, _ = _run("jvp_throughput.py", tmp_path, *extra)
    names = [p.name for p in tmp_path.glob("*.json")]
    assert names == [f"jvp_throughput_cudagraphs_{data['device']['slug']}_quick.json"]
    rows = {r["variant"]: r for r in data["rows"]}
    assert {v: r["status"] for v, r in rows.items()} == {"fm+compile": "ok", "dual_ref+compile": "ok"}
    assert all(r["compile_mode"] == "cudagraphs" for r in rows.values())


def test_attention_jvp_quick(tmp_path):
    data, stdout = _run("attention_jvp.py", tmp_path)
    assert data["ours_backend"] == "reference"  # the CPU rows time the oracle, and say so
    assert "REFERENCE backend" in stdout and "12 N^2 d" in stdout
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    assert {"ours_jvp", "func_jvp_math", "ours_bwd"} <= {r["variant"] for r in ok}
    for r in ok:
        assert r["tflops"] > 0 and r["ms"] > 0
    ours = [r for r in ok if r["variant"] == "ours_jvp"]
    assert all(r["err_o_dot_vs_math"] < 1e-4 for r in ours)
    # The other libraries: SDPA's flash backend runs on the CPU too, the rest say why not.
    status = {r["variant"]: r["status"] for r in data["rows"] if r["N"] == 64}
    assert status["sdpa_flash_fwd"] == status["sdpa_flash_bwd"] == "ok"
    assert status["ours_bwd_atomic"] == "skipped: only the triton backend sums dQ by atomics"
    for library in ("cudnn", "flash"):
        assert status[f"ours_bwd_{library}"] == "skipped: the triton backend hands its O and LSE over"
    assert status["ours_jvp_tma"] == "skipped: tensor descriptors need the triton backend on sm_90 or newer"
    for provider in ("sdpa_cudnn", "flash_attn", "fa3"):
        why = f"skipped: {provider} needs a CUDA device"
        assert status[f"{provider}_fwd"] == status[f"{provider}_bwd"] == why
    assert "BxH" in stdout and "sdpa_cudnn fwd" in stdout
    assert "cut_short" not in data


def test_attention_jvp_cut_by_its_time_budget_says_so_in_its_json(tmp_path):
    from benchmarks import attention_jvp

    argv = ["--device", "cpu", "--quick", "--no-plot", "--seqlens", "64", "128", "--out-dir", str(tmp_path)]
    data = attention_jvp.main([*argv, "--time-budget", "0.001"])
    assert data["cut_short"] == "time budget: 2 of 2 shapes not run"


def test_attention_features_quick(tmp_path):
    """Every feature (causal, grouped heads, a mask, a bias in two dtypes) and every variant runs; ours
    agrees with math attention given the same feature (a bias our kernels ignored would not);
    causal attention counts half the FLOPs; each feature is compared with full attention."""
    data, stdout = _run("attention_features.py", tmp_path)
    rows = {(r["feature"], r["variant"]): r for r in data["rows"]}
    features = ("full", "causal", "gqa", "mask", "bias", "bias_fp32")
    variants = ("ours_jvp", "func_jvp_math", "sdpa_fwd", "ours_bwd", "sdpa_bwd")
    assert set(rows) == {(f, v) for f in features for v in variants}
    for (feature, variant), r in rows.items():
        assert r["status"] == "ok" and r["ms"] > 0, r
        assert ("x_full" in r) == (feature != "full"), r
        work = r["batch"] * r["heads"] * r["N"] ** 2 * r["d"] * {"causal": 0.5}.get(feature, 1.0)
        flops = {"ours_jvp": 12, "func_jvp_math": 12, "sdpa_fwd": 4}.get(variant, 10) * work
        assert r["tflops"] * r["ms"] * 1e9 == pytest.approx(flops), r
    for feature in features:
        assert rows[feature, "ours_jvp"]["err_o_dot_vs_math"] < 1e-4
    assert "O' err vs math" in stdout and "causal half" in stdout


def test_attention_features_arguments():
    from benchmarks import attention_features

    args = attention_features.parse_args(["--device", "cuda"])
    assert args.shapes == [(72, 1024), (64, 4096), (128, 4096)] and args.dtype == "bf16"
    assert attention_features.parse_args(["--shapes", "72:256"]).shapes == [(72, 256)]
    for bad in (["--shapes", "72x256"], ["--shapes", "0:64"], ["--heads", "6", "--kv-group", "4"]):
        with pytest.raises(SystemExit):
            attention_features.parse_args(bad)


def test_step_phases_on_the_cpu(tmp_path, monkeypatch):
    """The phase split adds up to the step, each variant lists its top ops, a failing variant
    is a row (an unknown one is refused up front), and the JSON is written."""
    from benchmarks import step_phases

    argv = ["--device", "cpu", "--preset", "DiT-T/4", "--batch", "2", "--dtype", "fp32", "--steps", "1"]
    rows = step_phases.main([*argv, "--variants", "fm", "dual_ref", "--top", "3", "--out-dir", str(tmp_path)])
    assert [r["variant"] for r in rows] == ["fm", "dual_ref"]
    for row in rows:
        phases = [row[f"{name}_ms"] for name in step_phases.PHASES]
        assert min(phases) > 0 and abs(sum(phases) - row["step_ms"]) < 1e-2
        assert 1 <= len(row["kernels"]) <= 3 and all(k["ms_per_step"] > 0 for k in row["kernels"])
        assert 0 < row["host_ms"] <= row["wall_ms"] and row["device_busy_ms"] is None  # no device
    (path,) = tmp_path.glob("step_phases_*.json")
    assert [r["variant"] for r in json.loads(path.read_text())["rows"]] == ["fm", "dual_ref"]
    (skipped,) = step_phases.main([*argv, "--variants", "fused_triton"])
    assert skipped["status"] == "skipped: its kernels do not run on cpu"
    monkeypatch.setattr(step_phases.T, "make_loss", lambda *a: 1 / 0)
    (failed,) = step_phases.main([*argv, "--variants", "fm"])
    assert failed["status"] == "failed: ZeroDivisionError: division by zero"
    for bad in (["--variants", "fm", "x"], ["--batch", "0"], ["--preset", "DiT-Q/3"], ["--device", "tpu"]):
        with pytest.raises(SystemExit):
            step_phases.parse_args([*argv, *bad])


def test_step_phases_step_time_is_the_median_step(monkeypatch):
    """Three steps each with one slow phase: every phase's median is 1 ms, the median step 12."""
    from benchmarks import step_phases

    timings = iter([[10.0, 1.0, 1.0], [1.0, 10.0, 1.0], [1.0, 1.0, 10.0]])
    monkeypatch.setattr(step_phases.PhaseTimer, "durations_ms", lambda self: next(timings))
    argv = ["--device", "cpu", "--preset", "DiT-T/4", "--batch", "2", "--dtype", "fp32", "--steps", "3"]
    (row,) = step_phases.main([*argv, "--variants", "fm", "--top", "1"])
    assert [row[f"{name}_ms"] for name in step_phases.PHASES] == [1.0, 1.0, 1.0]
    assert row["step_ms"] == 12.0


def test_step_phases_keeps_what_it_measured_when_cut_short(tmp_path, monkeypatch):
    """gpu_validate.sh killed step_phases at its cap on the H200 (2026-12-04) after the first
    compiled DiT-XL/2 variant, and the JSON, written only at the end, was lost: it is written
    after every variant, and --time-budget skips the variants that would start past it."""
    from benchmarks import step_phases

    calls = []

    def run_variant(variant, *args):
        calls.append(variant)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill looks like from here: nothing after it runs
        return {"variant": variant, "status": "ok (stand-in)"}

    monkeypatch.setattr(step_phases, "run_variant", run_variant)
    argv = ["--device", "cpu", "--preset", "DiT-T/4", "--batch", "2", "--out-dir", str(tmp_path)]
    with pytest.raises(KeyboardInterrupt):
        step_phases.main([*argv, "--variants", "fm", "dual_ref"])
    (path,) = tmp_path.glob("step_phases_*.json")
    assert [r["variant"] for r in json.loads(path.read_text())["rows"]] == ["fm"]
    calls.clear()
    ticks = iter(range(0, 1000, 10))  # each look at the clock: 10 s later
    monkeypatch.setattr(step_phases.time, "perf_counter", lambda: next(ticks))
    rows = step_phases.main([*argv, "--variants", "fm", "dual_ref", "--time-budget", "15"])
    assert rows[0]["variant"] == "fm" and rows[0]["status"] == "ok (stand-in)"
    assert rows[1]["status"] == "skipped: time budget (15 s) used up" and calls == ["fm"]


def test_attention_gpu_sweep_covers_every_head_dim_early():
    """On a GPU, DiT-XL/2's own attention comes first (batch 64 x 16 heads, d 72, N 256 and
    1024); a short --time-budget then still reaches the judged head dims (64, 128) and the DiT's
    (72) at long sequences: the sweep takes every other N first."""
    import torch

    from benchmarks import attention_jvp

    args = attention_jvp.parse_args(["--device", "cuda"])
    assert args.heads == 16 and args.dit_batch == 64
    sweep = attention_jvp.shapes(args, torch.device("cuda"))
    assert len(sweep) == len(set(sweep)) == 2 + 3 * 7 + 7
    assert sweep[:2] == [("bf16", 72, 256, 64), ("bf16", 72, 1024, 64)]
    grid = [("bf16", d, n, None) for d in (72, 128, 64) for n in (256, 1024, 4096, 16384)]
    assert sweep[2:14] == grid
    assert sweep[-7:] == [("fp16", 128, 256 * 2**i, None) for i in range(7)]
    quick = attention_jvp.parse_args(["--device", "cuda", "--quick"])
    assert quick.dit_batch == 0
    assert all(batch is None for *_, batch in attention_jvp.shapes(quick, torch.device("cuda")))


@pytest.mark.parametrize("script", ["attention_jvp", "attention_features"])
def test_attention_memory_peaks_are_read_after_the_warmup(script, tmp_path, monkeypatch):
    """A row's peak memory is one warm call's: the first call of a Triton kernel also holds its
    autotuning trials, which no later call allocates."""
    import importlib

    from benchmarks import _common as C

    module = importlib.import_module(f"benchmarks.{script}")
    seen, timed = [], set()
    kernel_ms = C.kernel_ms

    def timing(fn, *args, **kwargs):
        timed.add(fn)
        return kernel_ms(fn, *args, **kwargs)

    def peak(fn, device):
        seen.append(fn in timed)
        return 1.0

    monkeypatch.setattr(C, "kernel_ms", timing)
    monkeypatch.setattr(C, "peak_extra_mib", peak)
    argv = ["--device", "cpu", "--quick", "--out-dir", str(tmp_path)]
    if script == "attention_jvp":
        argv += ["--no-plot", "--seqlens", "64"]
    module.main(argv)
    assert seen and all(seen)
