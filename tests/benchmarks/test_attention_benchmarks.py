"""What the attention benchmarks' rows say they timed: each row's FLOP count, shape, kernel
choice and skip reason (``benchmarks/attention_jvp.py``), the libraries' calls
(``benchmarks/attention_baselines.py``) and the features' inputs and ratios
(``benchmarks/attention_features.py``). The clock is a stand-in: each timed function is
called once, its output and the kernel-choice variables kept, and a chosen time returned."""

import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from numerics import needs_triton
from torch.nn.attention import SDPBackend

from benchmarks import _common as C
from benchmarks import attention_baselines as baselines
from benchmarks import attention_features as features
from benchmarks import attention_jvp
from mfkernels import dispatch
from mfkernels.backends import library_attention
from mfkernels.backends.triton import attention as triton_attention

CPU = torch.device("cpu")
CHOICES = (triton_attention.LOADS_ENV_VAR, triton_attention.DQ_ENV_VAR, triton_attention.BACKWARD_ENV_VAR)


class Clock:
    """Stands in for ``C.kernel_ms``: calls ``fn`` once (unless ``run`` is off) and returns
    ``ms()`` as (median, fast end, slow end)."""

    def __init__(self, monkeypatch, ms=lambda: 2.0, run=True):
        self.calls, self.ms, self.run = [], ms, run  # calls: (output, kernel choices) per timed fn
        monkeypatch.setattr(C, "kernel_ms", self)

    def __call__(self, fn, device, **kwargs):
        out = fn() if self.run else None
        self.calls.append((out, {name: os.environ.get(name) for name in CHOICES}))
        ms = self.ms()
        return ms, ms / 2, ms * 1.5


def _bench(tmp_path, *extra):
    argv = ["--device", "cpu", "--quick", "--no-plot", "--heads", "2", "--tokens", "32"]
    bench = attention_jvp.Bench(attention_jvp.parse_args([*argv, "--out-dir", str(tmp_path), *extra]), CPU)
    bench.peak, bench.datasheet = {"tflops": 1.0}, None
    return bench


def _timed(bench, clock):
    """``{variant: (row, output, kernel choices)}`` of the rows that were timed, in order."""
    ok = [r for r in bench.rows if r["status"] == "ok"]
    assert len(ok) == len(clock.calls)
    return {r["variant"]: (r, *call) for r, call in zip(ok, clock.calls, strict=True)}


def _close(got, want, tol=1e-4):
    """Relative to the largest entry, so that exact zeros compare too."""
    got, want = got.double(), want.double()
    return float((got - want).abs().max()) <= tol * float(want.abs().max().clamp_min(1e-30))


# ------------------------------------------------------------------ attention_jvp.py


def test_jvp_rows_count_their_flops_per_batch_and_head(tmp_path, monkeypatch):
    """At batch 3 (a DiT shape's own batch, not tokens // N = 2) x 2 heads, N 16, d 8 and a
    stand-in 2 ms: JVP 12, primal forward 4 and backward 10 N^2 d per (batch*head)."""
    clock = Clock(monkeypatch)
    bench = _bench(tmp_path)
    bench.run_shape("fp32", 8, 16, batch=3)
    timed = _timed(bench, clock)
    assert set(timed) == {"ours_jvp", "func_jvp_math", "sdpa_flash_fwd", "ours_bwd", "sdpa_flash_bwd"}
    work = 3 * 2 * 16 * 16 * 8
    per_n2d = {"ours_jvp": 12, "func_jvp_math": 12, "sdpa_flash_fwd": 4, "ours_bwd": 10, "sdpa_flash_bwd": 10}
    for variant, (row, _, _) in timed.items():
        assert (row["batch"], row["heads"], row["N"], row["d"]) == (3, 2, 16, 8)
        assert row["tflops"] == pytest.approx(per_n2d[variant] * work / 2.0 / 1e9, rel=1e-9)
        assert row["pct_measured_peak"] == round(100 * row["tflops"], 1)  # of the stand-in 1 TFLOP/s
    # Our backward and the library's take the same inputs: full attention's gradients both.
    ours, library = timed["ours_bwd"][1], timed["sdpa_flash_bwd"][1]
    for got, want in zip(ours, library, strict=True):
        assert _close(got, want)
    # The library's forward row runs its forward: one (batch, heads, N, d) output.
    assert timed["sdpa_flash_fwd"][1].shape == (3, 2, 16, 8)


def test_jvp_error_columns_are_relative_and_per_output(tmp_path, monkeypatch):
    """Our O' made 1.5 times too large: its error against math attention reads 0.5 whatever
    the size of O', and O's stays at rounding."""
    real = attention_jvp.mfkernels.attention_jvp

    def wrong_tangent(*args, **kwargs):
        o, o_dot, lse = real(*args, **kwargs)
        return o, 1.5 * o_dot, lse

    monkeypatch.setattr(attention_jvp.mfkernels, "attention_jvp", wrong_tangent)
    Clock(monkeypatch)
    bench = _bench(tmp_path)
    bench.run_shape("fp32", 8, 16)
    (row,) = [r for r in bench.rows if r["variant"] == "ours_jvp"]
    assert row["err_o_dot_vs_math"] == pytest.approx(0.5, rel=1e-4)
    assert row["err_o_vs_math"] < 1e-5


def test_jvp_dense_peak_is_the_fast_end(tmp_path, monkeypatch):
    Clock(monkeypatch, run=False)  # 2 ms median, 1 ms fast end, 3 ms slow end
    peak = _bench(tmp_path).dense_peak()
    assert peak == {"shape": "1024^3", "dtype": "float32", "tflops": 2 * 1024**3 / 1.0 / 1e9}


def test_jvp_skip_reasons(tmp_path, monkeypatch):
    """A backend that falls back is not timed under its name, forward or backward; --math-max-n
    N still runs N; a spent time budget skips what was to run, and leaves the reasons of rows
    skipped for their own."""
    monkeypatch.setattr(dispatch, "resolve", lambda op, backend, *args: "reference")
    clock = Clock(monkeypatch)
    bench = _bench(tmp_path, "--backend", "triton", "--math-max-n", "16")
    bench.run_shape("fp32", 8, 16)
    status = {r["variant"]: r["status"] for r in bench.rows}
    fallback = "skipped: backend 'triton' unavailable here (would fall back to 'reference')"
    assert status["ours_jvp"] == status["ours_bwd"] == status["ours_bwd_atomic"] == fallback
    assert status["func_jvp_math"] == "ok" and len(clock.calls) == 3  # math and sdpa_flash's two
    bench.rows.clear()
    bench.run_shape("fp32", 8, 32)
    assert {r["variant"]: r["status"] for r in bench.rows}["func_jvp_math"] == (
        "skipped: OOM risk (N > --math-max-n 16)"
    )
    bench = _bench(tmp_path)
    bench.deadline = 0.0  # spent
    bench.run_shape("fp32", 8, 16)
    status = {r["variant"]: r["status"] for r in bench.rows}
    assert status["ours_jvp"] == status["sdpa_flash_fwd"] == "skipped: time budget used up"
    assert status["sdpa_cudnn_fwd"] == "skipped: sdpa_cudnn needs a CUDA device"


def test_jvp_a_failed_timing_of_ours_keeps_the_shapes_other_rows(tmp_path, monkeypatch):
    """Our forward ran once, then its timing failed (an OOM in a later call): its row says so,
    and the other variants of the shape are still timed. The error columns were read from the
    rows that ran, so a failed ours_jvp row lost the whole shape to a KeyError."""
    clock = Clock(monkeypatch)

    def first_fails(fn, device, **kwargs):
        fn()
        monkeypatch.setattr(C, "kernel_ms", clock)
        raise torch.OutOfMemoryError("stand-in out of memory")

    monkeypatch.setattr(C, "kernel_ms", first_fails)
    bench = _bench(tmp_path)
    bench.run_shape("fp32", 8, 16)
    status = {r["variant"]: r["status"] for r in bench.rows}
    assert status["ours_jvp"].startswith("failed: ")
    assert status["func_jvp_math"] == status["ours_bwd"] == status["sdpa_flash_bwd"] == "ok"


@needs_triton
def test_jvp_kernel_variant_rows_run_their_variant(tmp_path, monkeypatch):
    """Each row that names a kernel variant is timed with the variable that picks it set:
    TMA loads, atomic dQ, a library's backward from our O and LSE."""
    clock = Clock(monkeypatch)
    bench = _bench(tmp_path, "--backend", "triton")
    bench.run_shape("fp32", 16, 16)
    choices = {variant: chosen for variant, (_, _, chosen) in _timed(bench, clock).items()}
    loads, dq, backward = CHOICES
    assert choices["ours_jvp"][loads] is None and choices["ours_bwd"][dq] is None
    probe = torch.randn(2, 2, 16, 16)
    with C.environment(**{loads: "tma"}):
        tma = triton_attention.kv_by_tma(probe, probe, probe, probe)  # this Triton has descriptors
    if tma:
        assert choices["ours_jvp_tma"][loads] == "tma"
    else:
        assert "ours_jvp_tma" not in choices
    assert choices["ours_bwd_atomic"][dq] == "atomic"
    for library in library_attention.LIBRARIES:
        if f"ours_bwd_{library}" in choices:
            assert choices[f"ours_bwd_{library}"][backward] == library
    assert "ours_bwd_flash" in choices  # flash takes fp32 on the CPU


@needs_triton
def test_jvp_tma_row_is_checked_on_its_own_output(tmp_path, monkeypatch):
    """TMA loads that got O' and the LSE wrong: the error shows on the TMA row alone, and our
    backward still runs from the default loads' O and LSE. The TMA row wrote over the default
    row's output, whose error columns and backward rows then took the TMA run's."""
    real, loads = attention_jvp.mfkernels.attention_jvp, triton_attention.LOADS_ENV_VAR

    def wrong_under_tma(*args, **kwargs):
        o, o_dot, lse = real(*args, **kwargs)
        return (o, 1.5 * o_dot, lse + 5.0) if os.environ.get(loads) == "tma" else (o, o_dot, lse)

    monkeypatch.setattr(attention_jvp.mfkernels, "attention_jvp", wrong_under_tma)
    clock = Clock(monkeypatch)
    bench = _bench(tmp_path, "--backend", "triton")
    bench.run_shape("fp32", 16, 16)
    timed = _timed(bench, clock)
    assert timed["ours_jvp"][0]["err_o_dot_vs_math"] < 1e-5
    assert timed["ours_jvp_tma"][0]["err_o_dot_vs_math"] == pytest.approx(0.5, rel=1e-4)
    # dQ from an LSE 5 too high would be e^-5 of the library's, from the same dO, Q, K, V
    assert _close(timed["ours_bwd"][1][0], timed["sdpa_flash_bwd"][1][0])


def _row(variant, ms, batch):
    return dict(
        dtype="bf16", d=72, N=256, batch=batch, heads=16, variant=variant, status="ok", ms=ms, tflops=1.0
    )


def test_jvp_table_compares_ours_with_the_fastest_library_forward(capsys):
    """Per shape (the DiT's batch and the sweep's at one N are two), ours over the fastest
    library forward."""
    rows = [_row("ours_jvp", 3.0, 64), _row("sdpa_flash_fwd", 1.0, 64), _row("fa3_fwd", 2.0, 64)]
    rows += [_row("ours_jvp", 6.0, 2), _row("sdpa_flash_fwd", 1.0, 2)]
    attention_jvp.print_table(rows, None, None)
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("bf16")]
    assert [(line[3], "3.00" in line, "6.00" in line) for line in lines] == [
        ("1024", True, False),
        ("32", False, True),
    ]


def test_jvp_best_library_line_names_the_fastest_other_library():
    results = {
        "ours_bwd": {"tflops": 50.0},
        "sdpa_flash_bwd": {"tflops": 10.0},
        "fa3_bwd": {"tflops": 20.0},
        "fa3_fwd": {"tflops": 90.0},
    }
    assert attention_jvp._best(results, "bwd") == "best primal bwd fa3 20.0"
    assert attention_jvp._best({"ours_fwd": {"tflops": 1.0}}, "fwd") == "best primal fwd -"


def test_jvp_arguments_keep_what_was_asked():
    gpu = torch.device("cuda")
    args = attention_jvp.parse_args(["--device", "cuda", "--dit-batch", "0", "--dtypes", "fp16"])
    assert args.dit_batch == 0
    planned = attention_jvp.shapes(args, gpu)
    assert planned and {dtype for dtype, *_ in planned} == {"fp16"}


def test_jvp_runs_with_other_settings_keep_their_own_files(tmp_path, monkeypatch):
    Clock(monkeypatch, run=False)
    argv = [
        "--device",
        "cpu",
        "--quick",
        "--no-plot",
        "--heads",
        "1",
        "--tokens",
        "16",
        "--out-dir",
        str(tmp_path),
    ]
    attention_jvp.main([*argv, "--seqlens", "16"])
    attention_jvp.main([*argv, "--seqlens", "32"])
    assert len(list(tmp_path.glob("attention_jvp_*.json"))) == 2


# ------------------------------------------------------------ attention_baselines.py


def test_sdpa_flash_runs_the_flash_backend(monkeypatch):
    chosen = []

    class Recorder:
        def __init__(self, backend):
            chosen.append(backend)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(baselines, "sdpa_kernel", Recorder)
    q = torch.randn(1, 2, 8, 4)
    baselines.forward("sdpa_flash", q, q, q, 0.5)()
    assert chosen == [SDPBackend.FLASH_ATTENTION]


def test_library_backward_times_the_backward_alone(monkeypatch):
    """The forward runs once when the call is made, never inside it."""
    forwards = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **kw: forwards.append(1) or sdpa(*a, **kw)
    )
    q = torch.randn(1, 2, 8, 4)
    call = baselines.backward("sdpa_flash", q, q, q, q, 0.5)
    call()
    call()
    assert len(forwards) == 1


@pytest.mark.parametrize("provider, package", [("flash_attn", "flash_attn"), ("fa3", "flash_attn_interface")])
def test_flash_attn_packages_get_their_layout_and_scale(provider, package, monkeypatch):
    """The packages take (batch, N, heads, d); FA3 may also return the LSE. Each provider calls
    its own package (stand-ins here: neither is installed on a CPU machine)."""
    seen = []

    def flash_attn_func(q, k, v, softmax_scale=None):
        seen.append((package, q.shape, softmax_scale))
        return (q + 1, "lse") if package == "flash_attn_interface" else q + 1

    for name in ("flash_attn", "flash_attn_interface"):
        module = types.ModuleType(name)
        module.flash_attn_func = flash_attn_func if name == package else None
        monkeypatch.setitem(sys.modules, name, module)
    attention, layout = baselines._primal(provider, torch.device("cuda"), 0.25)
    q = layout(torch.zeros(2, 3, 5, 4))
    assert q.shape == (2, 5, 3, 4) and q.is_contiguous()
    out = attention(q, q, q)
    assert torch.equal(out, torch.ones(2, 5, 3, 4))
    assert seen == [(package, (2, 5, 3, 4), 0.25)]


# ------------------------------------------------------------- attention_features.py


def _features_args(*extra):
    return features.parse_args(["--device", "cpu", "--heads", "8", "--tokens", "32", *extra])


def test_features_inputs_are_the_ones_described():
    """8 heads in groups of 4: 2 key/value heads; every other image drops its last quarter of
    keys; the fp32 bias stays fp32 for ours, SDPA gets it in q's dtype."""
    inputs = features.Inputs(_features_args(), CPU, torch.bfloat16, 8, 16)
    (k, v, k_dot, v_dot), causal, bias = inputs.ours("gqa")
    assert k.shape == v_dot.shape == (2, 2, 16, 8) and not causal and bias is None
    keep = inputs.keep.reshape(2, 16)
    assert keep[0].all() and keep[1, :12].all() and not keep[1, 12:].any()
    assert (
        inputs.ours("bias_fp32")[2].dtype == torch.float32 and inputs.ours("bias")[2].dtype == torch.bfloat16
    )
    assert inputs.sdpa_kwargs("bias_fp32")["attn_mask"].dtype == torch.bfloat16


def test_features_rows_count_flops_and_compare_with_full(monkeypatch):
    """Full attention's variants at a stand-in 1 ms, every feature's at 3: each feature reads
    3x full; causal counts half the FLOPs; our backward computes what SDPA's does given the
    same feature (a causal flag or a bias it dropped would not)."""
    times = iter([1.0] * 5 + [3.0] * 25)
    clock = Clock(monkeypatch, ms=lambda: next(times))
    args = _features_args("--math-max-n", "16")
    rows = []
    features.run_shape(args, CPU, "reference", "fp32", 8, 16, rows, float("inf"))
    assert [r["status"] for r in rows] == ["ok"] * 30
    outputs = {(r["feature"], r["variant"]): out for r, (out, _) in zip(rows, clock.calls, strict=True)}
    work = 2 * 8 * 16 * 16 * 8
    per_n2d = {"ours_jvp": 12, "func_jvp_math": 12, "sdpa_fwd": 4, "ours_bwd": 10, "sdpa_bwd": 10}
    for r in rows:
        half = 0.5 if r["feature"] == "causal" else 1.0
        assert r["tflops"] * r["ms"] * 1e9 == pytest.approx(per_n2d[r["variant"]] * work * half, rel=1e-9)
        assert r.get("x_full") == (None if r["feature"] == "full" else 3.0)
        if r["variant"] == "ours_jvp":
            assert r["err_o_dot_vs_math"] < 1e-4
    for feature in features.FEATURES:
        ours, sdpa = outputs[feature, "ours_bwd"], outputs[feature, "sdpa_bwd"]
        for got, want in zip(ours, sdpa, strict=True):
            assert _close(got, want), feature


def test_features_cpu_default_shape():
    assert _features_args().shapes == [(64, 64)]
