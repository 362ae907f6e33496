"""The op, data and compile benchmarks report what they measured: ``csrc_ops.py`` (bytes an
ideal kernel moves, times, GB/s), ``data_throughput.py`` (samples per second after a warm-up
batch) and ``triton_static.py`` (each config's registers, spills and shared memory). Clocks,
timers, loaders and the compiler are stand-ins: these check the arithmetic and the
bookkeeping, not the machine."""

import json
import sys
import types

import pytest
import torch
from fake_clock import FakeClock

from benchmarks import csrc_ops, data_throughput, triton_static

CPU = torch.device("cpu")


# ------------------------------------------------------------------- benchmarks/csrc_ops.py


def ideal_bytes(op, batch, tokens, dim, itemsize):
    """Each input read once, each output written once: activations (B, N, D), the MLP's
    hidden (B, N, 4D), per-sample vectors (B, D)."""
    big, vec, hidden = batch * tokens * dim, batch * dim, 4 * batch * tokens * dim
    elements = {
        "layernorm_modulate_jvp": 4 * big + 4 * vec,  # x, x' -> y, y'; shift, scale and tangents
        "layernorm_modulate_backward": 3 * big + 3 * vec,  # dy, x -> dx; scale -> dshift, dscale
        "gelu_tanh_jvp": 4 * hidden,  # h, h' -> y, y'
        "gelu_tanh_backward": 3 * hidden,  # dy, h -> dh
        "gelu_tanh": 2 * hidden,  # h -> y
        "silu_jvp": 4 * hidden,
        "gated_residual_jvp": 6 * big + 2 * vec,  # x, x', f, f' -> y, y'; gate, gate'
        "gated_residual_backward": 3 * big + 2 * vec,  # dy, f -> df; gate -> dgate
    }
    return elements[op] * itemsize


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_csrc_cases_count_the_bytes_of_their_dtype_and_run_their_own_op(dtype):
    from benchmarks._common import record_backends

    for op in csrc_ops.OPS:
        fn, nbytes = csrc_ops.make_case(op, 2, 3, 8, dtype, CPU)
        assert nbytes == ideal_bytes(op, 2, 3, 8, dtype.itemsize), op
        with record_backends() as seen:
            out = fn("reference")
        assert set(seen) == {op}, op  # the row times the op it names, nothing else
        outs = out if isinstance(out, (tuple, list)) else [out]
        assert all(o.dtype == dtype for o in outs if o.is_floating_point() and o.dim() == 3), op


def test_csrc_cpu_time_is_the_median_of_the_rounds_after_a_warmup(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(csrc_ops.time, "perf_counter", clock)
    durations = {"a": iter([100.0, 1.0, 2.0, 9.0]), "b": iter([100.0, 3.0, 3.0, 3.0])}
    calls = {"a": 0, "b": 0}

    def call(name):
        def fn():
            calls[name] += 1
            clock.advance(next(durations[name]))

        return fn

    times = csrc_ops.time_cpu({"a": call("a"), "b": call("b")}, rounds=3)
    assert times == {"a": 2.0, "b": 3.0}
    assert calls == {"a": 4, "b": 4}


def test_csrc_gpu_time_is_do_bench_median_in_seconds(monkeypatch):
    seen = {}

    def do_bench(fn, warmup, rep, return_mode):
        seen.update(warmup=warmup, rep=rep, mode=return_mode)
        return 4.0  # ms

    monkeypatch.setitem(sys.modules, "triton.testing", types.SimpleNamespace(do_bench=do_bench))
    assert csrc_ops.time_gpu(lambda: None, 50) == pytest.approx(4e-3)
    assert seen == {"warmup": 10, "rep": 50, "mode": "median"}


def test_csrc_gpu_time_without_triton_is_events_over_the_reps(monkeypatch):
    calls = []

    class Event:
        def __init__(self, enable_timing):
            pass

        def record(self):
            calls.append("record")

        def elapsed_time(self, end):
            return 10.0  # ms, for all the timed calls

    monkeypatch.setitem(sys.modules, "triton.testing", None)  # the import fails
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    assert csrc_ops.time_gpu(lambda: calls.append("fn"), 5) == pytest.approx(10e-3 / 5)
    # One untimed call, then the events around the timed ones.
    assert calls == ["fn", "record"] + ["fn"] * 5 + ["record"]


def test_csrc_rows_report_ms_gb_per_s_and_the_speedup(tmp_path, monkeypatch):
    asked = []

    def time_cpu(fns, n):
        asked.append(n)
        return {b: 2e-3 if b == "reference" else 1e-3 for b in fns}

    monkeypatch.setattr(csrc_ops, "time_cpu", time_cpu)
    argv = ["csrc_ops.py", "--quick", "--dtypes", "bfloat16", "--out-dir", str(tmp_path), "--threads", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    csrc_ops.main()
    (path,) = tmp_path.glob("csrc_ops_*_cpu1t.json")
    rows = json.loads(path.read_text())
    assert asked == [5] * len(csrc_ops.OPS)  # --quick's rounds
    by_op = {}
    for r in rows:
        by_op.setdefault(r["op"], []).append(r["backend"])
        assert (r["shape"], r["batch"], r["tokens"], r["dim"]) == ("small", 2, 64, 384)
        assert r["dtype"] == "bfloat16"
        ms = 2.0 if r["backend"] == "reference" else 1.0
        nbytes = ideal_bytes(r["op"], 2, 64, 384, 2)
        assert r["ms"] == pytest.approx(ms), r
        assert r["GB/s"] == pytest.approx(nbytes / (ms / 1e3) / 1e9), r
        assert r["vs_reference"] == pytest.approx(2.0 / ms), r
        assert r["threads"] == 1 and r["device"]
    # The gated residual's backward has no csrc kernel: its cpu row would time the fallback.
    fallback = "gated_residual_backward"
    assert by_op == {op: ["reference"] + ["cpu"] * (op != fallback) for op in csrc_ops.OPS}


# ------------------------------------------------------------- benchmarks/data_throughput.py


def test_data_rate_leaves_out_the_warmup_batch_and_runs_its_seconds(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(data_throughput.time, "perf_counter", clock)

    def batches():
        while True:
            clock.advance(1.0)  # each batch takes a second
            yield torch.zeros(4, 3, 2, 2), torch.zeros(4)

    # The minimum first: two batches, however few seconds are asked.
    assert data_throughput.measure(batches(), 4, 8, 0.0, CPU) == (4.0, 8, 2.0)
    # Then the seconds: five batches.
    assert data_throughput.measure(batches(), 4, 8, 5.0, CPU) == (4.0, 20, 5.0)


@pytest.mark.parametrize("images", ["10", "0", "4", "x"])
def test_data_images_not_a_multiple_of_the_8_classes_is_refused(images, capsys, tmp_path):
    """The tree has 8 classes of as many JPEGs each: 10 would make 8, timed as if 10."""
    quick = f"--quick --latents 8 --batch 4 --seconds 0 --workers 0 --out-dir {tmp_path}".split()
    with pytest.raises(SystemExit):  # (a quick run, should the refusal go)
        data_throughput.main([*quick, "--images", images])
    assert "argument --images: must be a multiple of 8" in capsys.readouterr().err


def test_data_rows_time_an_epoch_and_compare_with_torch(tmp_path, monkeypatch):
    rates = iter([100.0, 50.0, 200.0])  # torchvision, torch_adm, latents_torch, in run order
    asked = []

    def measure(batches, batch, min_samples, seconds, device):
        asked.append((batch, min_samples, seconds))
        return next(rates), min_samples, 1.0

    monkeypatch.setattr(data_throughput, "measure", measure)
    monkeypatch.setattr(data_throughput, "dali_available", lambda: False)
    base = f"--quick --images 16 --latents 12 --batch 5 --seconds 0 --workers 0 --out-dir {tmp_path}".split()
    payload = data_throughput.main([*base, "--rows", "torchvision", "torch_adm", "latents_torch", "dali_cpu"])
    rows = {r["row"]: r for r in payload["rows"]}
    assert list(rows) == ["dali_cpu", "torchvision", "torch_adm", "latents_torch"]
    assert rows["dali_cpu"]["status"] == "skipped: DALI not installed"
    # Whole batches of one epoch: 16 images -> 15, 12 latents -> 10; --seconds 0 as asked.
    assert asked == [(5, 15, 0.0), (5, 15, 0.0), (5, 10, 0.0)]
    assert payload["data"]["jpegs"] == 16
    assert [rows[n]["x_torch"] for n in ("torchvision", "torch_adm", "latents_torch")] == [1.0, 0.5, 1.0]
    assert [rows[n]["unit"] for n in ("torchvision", "latents_torch")] == ["images", "latents"]
    assert rows["torch_adm"]["per_s"] == 50.0 and rows["torch_adm"]["samples"] == 15
    assert payload["settings"]["seconds"] == 0.0
    # With DALI, a CPU run has no GPU decode to time.
    monkeypatch.setattr(data_throughput, "dali_available", lambda: True)
    payload = data_throughput.main([*base, "--rows", "dali_gpu"])
    assert [r["status"] for r in payload["rows"]] == ["skipped: needs --device cuda"]


# -------------------------------------------------------------- benchmarks/triton_static.py


def test_static_resource_usage_reads_registers_and_stack(tmp_path):
    tool = tmp_path / "cuobjdump"
    tool.write_text("#!/bin/sh\necho 'Function k: REG:40 STACK:16 SHARED:0 LOCAL:0'\n")
    tool.chmod(0o755)
    assert triton_static.resource_usage(b"cubin", str(tool)) == {"registers": 40, "stack_bytes": 16}
    assert triton_static.resource_usage(b"cubin", None) == {}


def test_static_rows_flag_spills_and_show_shared_memory_in_kib():
    row = {"op": "o", "dtype": "bf16", "shape": "d=64", "kernel": "k", "config": {"BLOCK_M": 64}}
    line = triton_static.format_row(
        {**row, "registers": 96, "stack_bytes": 8, "shared_bytes": 4096, "status": "ok"}
    )
    assert "BLOCK_M=64" in line and "regs  96" in line and "smem   4 KiB" in line
    assert line.endswith("ok SPILLS")
    assert "SPILLS" not in triton_static.format_row({**row, "stack_bytes": 0, "status": "ok"})


def test_static_launches_are_recorded_and_the_kernels_put_back():
    from triton.runtime.jit import JITFunction

    def body(x):
        pass

    kernel = JITFunction(body)
    module = types.SimpleNamespace(kern=kernel, other=1)

    def launcher():
        module.kern[(3,)](7, BLOCK=16)
        raise RuntimeError("after the launch")  # a launcher that fails still gives its kernels back

    with pytest.raises(RuntimeError):
        triton_static.record_launches([module], launcher)
    assert module.kern is kernel
    launches = triton_static.record_launches([module], lambda: module.kern[(3,)](7, BLOCK=16))
    assert launches == [("kern", kernel, (3,), (7,), {"BLOCK": 16})]


def test_static_autotuned_kernels_compile_every_pruned_config():
    import triton
    from triton.runtime.autotuner import Autotuner

    class Tuner(Autotuner):
        def __init__(self):  # only what the script reads
            self.arg_names, self.fn, self.nargs = ["a", "b"], "fn", None

        def prune_configs(self, kwargs):
            assert self.nargs == {"a": 1, "b": 2} and kwargs == {"K": 3}
            return [triton.Config({"BLOCK": 16}, num_warps=4), triton.Config({"BLOCK": 32}, num_warps=8)]

    tuner = Tuner()
    configs = triton_static._configs_to_compile(tuner, (1, 2), {"K": 3})
    assert [(c["BLOCK"], c["num_warps"], fn) for c, fn in configs] == [(16, 4, "fn"), (32, 8, "fn")]
    assert tuner.nargs is None
    assert triton_static._configs_to_compile("plain", (1,), {}) == [({}, "plain")]


class Compiled:
    def __init__(self, shared, ptx="cp.async.ca x; cp.async.wait"):
        self.metadata = types.SimpleNamespace(num_warps=4, num_stages=3, shared=shared)
        self.asm = {"cubin": b"", "ptx": ptx}


def stand_in_compiler(monkeypatch, shared, fail=()):
    """``compile_all`` over two ops whose one kernel "compiles" to ``shared`` bytes (raising
    for the ops in ``fail``); returns the targets it was compiled for."""
    from triton.runtime import driver

    targets = []

    class Kernel:
        def __init__(self, op):
            self.op = op

        def warmup(self, *args, grid, **kwargs):
            targets.append(driver.active.get_current_target().arch)
            if self.op in fail:
                raise ValueError("out of resources\nline two")
            return Compiled(shared)

    monkeypatch.setattr(triton_static, "kernel_modules", lambda: ())
    monkeypatch.setattr(triton_static, "find_cuobjdump", lambda: None)
    monkeypatch.setattr(
        triton_static, "cases", lambda dtypes, dims, bias: [(op, "bf16", "d=64", op) for op in ("a", "b")]
    )
    kwargs = {"BLOCK_M": 64, "HEAD_DIM": 64, "PREC": "ieee", "scale": 0.5}
    monkeypatch.setattr(
        triton_static, "record_launches", lambda modules, op: [("k_" + op, Kernel(op), (1,), (0,), kwargs)]
    )
    return targets


def test_static_compiles_for_the_arch_asked_and_fails_tiles_over_its_limit(monkeypatch):
    from triton.runtime import driver

    before = getattr(driver, "_active", None)
    targets = stand_in_compiler(monkeypatch, shared=120 * 1024)
    rows = triton_static.compile_all(90, ["bf16"], [64], log=lambda line: None)
    assert targets == [90, 90] and getattr(driver, "_active", None) is before
    assert [r["status"] for r in rows] == ["ok", "ok"]
    r = rows[0]
    assert (r["op"], r["dtype"], r["shape"], r["kernel"]) == ("a", "bf16", "d=64", "k_a")
    assert r["config"] == {"BLOCK_M": 64, "num_warps": 4, "num_stages": 3}
    assert r["shared_bytes"] == 120 * 1024 and r["async_copies"] == 2
    rows = triton_static.compile_all(86, ["bf16"], [64], ops=["b"], log=lambda line: None)
    assert targets[2:] == [86] and [r["op"] for r in rows] == ["b"]
    assert rows[0]["status"] == f"shared memory {120 * 1024} B > {99 * 1024} B"
    rows = triton_static.compile_all(100, ["bf16"], [64], log=lambda line: None)
    assert [r["status"] for r in rows] == ["ok", "ok"]  # sm_100's 227 KB


def test_static_a_compile_error_is_a_row_and_the_others_still_compile(monkeypatch):
    stand_in_compiler(monkeypatch, shared=0, fail=("a",))
    rows = triton_static.compile_all(90, ["bf16"], [64], log=lambda line: None)
    assert rows[0]["status"] == "compile error: ValueError: out of resources / line two"
    assert rows[1]["status"] == "ok"


def test_static_cases_cover_the_dtypes_and_head_dims_asked():
    import itertools

    seen = list(triton_static.cases(["bf16", "fp32"], [64, 72], "fp32"))
    assert {(dt, shape) for _, dt, shape, _ in seen} >= {
        (dt, s) for dt, s in itertools.product(["bf16", "fp32"], ["d=64", "d=72", "dim=768", "dim=1152"])
    }
    bias = {(op, dt, shape): launcher.args[-1] for op, dt, shape, launcher in seen if "bias" in op}
    assert bias[("attention_jvp_bias", "bf16", "d=72")].dtype == torch.float32  # the bias dtype asked
    assert bias[("attention_jvp_bias_full", "bf16", "d=72")].shape == (2, 16, 256, 256)
    q = {(op, dt, shape): launcher for op, dt, shape, launcher in seen}[
        ("attention_jvp", "bf16", "d=72")
    ].args[0]
    assert q.dtype == torch.bfloat16 and q.shape == (2, 16, 256, 72)


def test_static_main_saves_the_rows_and_fails_on_a_failed_config(tmp_path, monkeypatch):
    asked = []
    rows = [
        {"op": "a", "status": "ok", "stack_bytes": 8},
        {"op": "b", "status": "compile error: x"},
    ]

    def compile_all(arch, dtypes, dims, ops, bias):
        asked.append((arch, dtypes, dims, ops, bias))
        return rows

    monkeypatch.setattr(triton_static, "compile_all", compile_all)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert triton_static.main(["--arch", "80", "--quick", "--out-dir", str(tmp_path)]) == 1
    data = json.loads((tmp_path / "triton_static_sm80.json").read_text())
    assert data["target"] == "sm_80" and data["rows"] == rows and data["tokens"] == 256
    rows[1]["status"] = "ok"
    argv = ["--dtypes", "fp16", "--head-dims", "128", "--ops", "silu_jvp", "--bias-dtype", "fp32"]
    assert triton_static.main([*argv, "--no-save"]) == 0
    assert asked == [(80, ["bf16"], [64, 72], None, None), (90, ["fp16"], [128], ["silu_jvp"], "fp32")]
    with pytest.raises(SystemExit):
        triton_static.main(["--ops", "no_such_op", "--no-save"])
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        triton_static.main(["--no-save"])
