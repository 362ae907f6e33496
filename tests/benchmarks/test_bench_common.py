"""benchmarks/_common.py: the clocks, units, file names and tables every benchmark's numbers
pass through. Clocks and CUDA counters are stood in for, so each number is known exactly."""

import json
import os
import signal
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from fake_clock import FakeClock

from benchmarks import _common as C

CPU = torch.device("cpu")


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(C.time, "perf_counter", fake)
    return fake


def test_slugs_are_lowercase_and_tell_cards_apart():
    assert C.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert C.slug("Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon-cpu-2-20ghz"
    names = ["NVIDIA H100 PCIe", "NVIDIA H100 PCIe MIG 3g.40gb", "NVIDIA H200", "NVIDIA H100 80GB HBM3"]
    assert len({C.slug(n) for n in names}) == len(names)
    assert len(C.slug("x" * 100)) == 60


def test_a_gpu_is_recorded_with_its_memory_in_gib(monkeypatch):
    props = types.SimpleNamespace(major=9, minor=0, total_memory=80 * 2**30, multi_processor_count=132)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    info = C.device_info(torch.device("cuda", 0))
    assert info["slug"] == "nvidia-h100-80gb-hbm3" and info["capability"] == "9.0"
    assert info["memory_gib"] == 80.0 and info["multiprocessors"] == 132


def test_a_tree_without_git_takes_its_commit_from_the_environment(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(C.subprocess, "run", no_git)
    monkeypatch.setenv("MFK_GIT_COMMIT", "feedface")
    assert C.git_info() == {"commit": "feedface", "dirty": None}
    monkeypatch.delenv("MFK_GIT_COMMIT")
    assert C.git_info() == {"commit": "unknown", "dirty": None}


def test_a_quick_run_never_writes_the_full_runs_file(tmp_path):
    full = C.result_path(tmp_path, "jvp_throughput", CPU, False, "json")
    quick = C.result_path(tmp_path, "jvp_throughput", CPU, True, "json")
    assert quick != full and quick.name.endswith("_quick.json") and full.parent == tmp_path
    assert full.name.startswith("jvp_throughput_cpu-")


def test_a_run_with_other_settings_never_replaces_a_result(tmp_path):
    """Two runs into one folder (DiT-B/2, then DiT-XL/2) keep both files; a rerun with the same
    settings replaces its own; a file that is not a result is kept too."""
    b2, xl2 = {"preset": "DiT-B/2", "out_dir": tmp_path}, {"preset": "DiT-XL/2", "out_dir": tmp_path}
    first = C.result_path(tmp_path, "step_phases", CPU, False, "json", b2)
    C.write_json(first, C.header("step_phases", CPU, [], b2))
    assert C.result_path(tmp_path, "step_phases", CPU, False, "json", b2) == first
    second = C.result_path(tmp_path, "step_phases", CPU, False, "json", xl2)
    assert second.name == first.name.replace(".json", "_2.json")
    C.write_json(second, C.header("step_phases", CPU, [], xl2))
    assert C.result_path(tmp_path, "step_phases", CPU, False, "json", xl2) == second
    assert C.recorded_settings(first)["preset"] == "DiT-B/2"
    second.write_text("{not json")
    third = C.result_path(tmp_path, "step_phases", CPU, False, "json", xl2)
    assert third.name == first.name.replace(".json", "_3.json")
    assert C.result_path(tmp_path, "step_phases", CPU, False, "json") == first  # no settings: the name


def test_step_phases_keeps_the_results_of_two_batches_in_one_folder(tmp_path, monkeypatch):
    """The batch sweep a GPU session runs (one preset, batch 32 then 256, one --out-dir): the
    second run wrote over the first one's file."""
    from benchmarks import step_phases

    monkeypatch.setattr(step_phases, "run_variant", lambda variant, *a: {"variant": variant, "status": "ok"})
    for batch in ("2", "3", "2"):
        argv = ["--device", "cpu", "--preset", "DiT-T/4", "--batch", batch, "--variants", "fm"]
        step_phases.main([*argv, "--out-dir", str(tmp_path)])
    batches = sorted(json.loads(p.read_text())["settings"]["batch"] for p in tmp_path.glob("step_phases_*"))
    assert batches == ["2", "3"]


def test_result_files_take_paths_and_leave_no_temporary_behind(tmp_path):
    path = tmp_path / "out" / "r.json"
    C.write_json(path, {"settings": {"out_dir": Path("benchmarks/results")}, "rows": [1.5]})
    assert json.loads(path.read_text()) == {"settings": {"out_dir": "benchmarks/results"}, "rows": [1.5]}
    assert os.listdir(path.parent) == ["r.json"]


def test_table_aligns_numbers_and_ratios_right_text_left():
    rows = [["fm", 1.5, "1.35x", None], ["dual_ref", 12.25, "0.9x", "50%"]]
    text = C.format_table(rows, ["variant", "ms", "x FM", "pct of peak"])
    assert text.split("\n") == [
        "variant      ms   x FM  pct of peak",
        "--------  -----  -----  -----------",
        "fm          1.5  1.35x             ",
        "dual_ref  12.25   0.9x          50%",
    ]


def test_cpu_runs_default_to_one_thread(monkeypatch):
    calls = []
    monkeypatch.setattr(C.torch, "set_num_threads", calls.append)
    C.set_cpu_threads(CPU, None)
    C.set_cpu_threads(CPU, 4)
    C.set_cpu_threads(CPU, 0)  # keep torch's own choice
    C.set_cpu_threads(torch.device("cuda", 0), None)
    assert calls == [1, 4]


def test_summary_is_the_median_and_the_interquartile_range():
    s = C.summarize([3.0, 1.0, 100.0, 2.0, 4.0])
    # statistics.quantiles' default (exclusive) method: quartiles 1.5 and 52.
    assert s == {"ms": 3.0, "ms_min": 1.0, "ms_max": 100.0, "ms_iqr": 50.5, "repeats": 5}
    assert C.summarize([5.0]) == {"ms": 5.0, "ms_min": 5.0, "ms_max": 5.0, "ms_iqr": 0.0, "repeats": 1}


def test_cpu_calls_are_timed_in_milliseconds(clock):
    times = C.time_calls(clock.call_taking(0.002, 0.004, 0.003), CPU, repeats=3, max_seconds=10.0)
    assert times == pytest.approx([2.0, 4.0, 3.0])


@pytest.mark.parametrize("seconds, calls", [(0.4, 3), (0.6, 2)])
def test_timing_stops_past_its_seconds_once_the_minimum_is_done(clock, seconds, calls):
    """A 1 s cap: 0.4 s calls run until the cap has passed (the third), 0.6 s calls stop at
    the minimum of two."""
    times = C.time_calls(clock.call_taking(seconds), CPU, repeats=10, max_seconds=1.0, min_repeats=2)
    assert len(times) == calls


def test_kernel_time_leaves_out_the_warmup_and_gives_low_then_high(clock):
    fn = clock.call_taking(0.5, 0.003, 0.001, 0.002)  # the first call: lazy init, allocations
    assert C.kernel_ms(fn, CPU, repeats=3) == pytest.approx((2.0, 1.0, 3.0))


def test_gpu_kernel_time_is_do_bench_median_then_low_then_high(monkeypatch):
    testing = types.ModuleType("triton.testing")

    def do_bench(fn, warmup, rep, quantiles):
        return [{0.5: 2.0, 0.2: 1.0, 0.8: 3.0}[q] for q in quantiles]

    testing.do_bench = do_bench
    triton = types.ModuleType("triton")
    triton.testing = testing
    monkeypatch.setitem(sys.modules, "triton", triton)
    monkeypatch.setitem(sys.modules, "triton.testing", testing)
    assert C.kernel_ms(lambda: None, torch.device("cuda", 0)) == (2.0, 1.0, 3.0)


def test_peak_extra_memory_is_in_mib_beyond_what_was_there(monkeypatch):
    allocated = {"now": 10 * 2**20, "peak": 0}

    def fn():
        allocated["peak"] = allocated["now"] + 3.5 * 2**20

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: allocated["peak"])
    assert C.peak_extra_mib(fn, torch.device("cuda", 0)) == 3.5
    assert C.peak_extra_mib(fn, CPU) is None


def test_environment_is_put_back_as_it_was(monkeypatch):
    monkeypatch.setenv("MFK_BENCH_SET", "before")
    monkeypatch.delenv("MFK_BENCH_UNSET", raising=False)
    with C.environment(MFK_BENCH_SET="inside", MFK_BENCH_UNSET="inside"):
        assert os.environ["MFK_BENCH_SET"] == os.environ["MFK_BENCH_UNSET"] == "inside"
    assert os.environ["MFK_BENCH_SET"] == "before" and "MFK_BENCH_UNSET" not in os.environ


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="POSIX alarms only")
def test_time_limit_interrupts_and_leaves_no_alarm_behind():
    previous = signal.getsignal(signal.SIGALRM)
    with C.time_limit(30):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is previous
    with pytest.raises(C.CaseTimeout, match="timed out after 0 s"):
        with C.time_limit(0.05):
            for _ in range(1000):  # bounded: a limit that never fires fails, not hangs
                time.sleep(0.01)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_errors_fit_on_one_table_line():
    exc = RuntimeError("first line\n   second line\t" + "x" * 300)
    text = C.short_error(exc)
    assert text.startswith("RuntimeError: first line second line x") and len(text) == 160
    assert "\n" not in text and C.short_error(ValueError()) == "ValueError: ValueError"
