"""benchmarks/csrc_ops.py's check of which backends really run a case (a fallback to the
reference backend is no row of the backend asked for)."""

import torch

import mfkernels
from benchmarks.csrc_ops import backend_runs, make_case


def test_backend_runs_tells_a_fallback_from_a_run():
    fn, nbytes = make_case("gelu_tanh_backward", 2, 5, 8, torch.float32, torch.device("cpu"))
    assert nbytes == 12 * 2 * 5 * 8 * 4
    assert backend_runs(fn, "reference")
    assert not backend_runs(fn, "cuda")  # CPU tensors: the cuda backend falls back
    assert backend_runs(fn, "cpu") == ("cpu" in mfkernels.available_backends())


def test_the_gated_residual_backward_runs_on_the_reference_and_triton_only():
    """No csrc kernel: the cpu backend falls back (no row), Triton runs where it can."""
    fn, nbytes = make_case("gated_residual_backward", 2, 5, 8, torch.float32, torch.device("cpu"))
    assert nbytes == (3 * 2 * 5 * 8 + 2 * 2 * 8) * 4  # dy, f, df; the gate and dgate
    assert backend_runs(fn, "reference")
    assert not backend_runs(fn, "cpu")
    assert backend_runs(fn, "triton") == ("triton" in mfkernels.available_backends("cpu"))


def test_a_gpu_without_the_extension_still_times_the_triton_rows(monkeypatch):
    """gpu_validate.sh runs csrc_ops for the Triton rows too: a failed build (a fresh machine
    without nvcc or pybind11) must not end the run before them; a CPU has nothing to compare."""
    import pytest

    from benchmarks import csrc_ops

    monkeypatch.setattr(csrc_ops.csrc_ops, "available", lambda: False)
    assert csrc_ops.plan_backends(True) == ["reference", "triton"]
    with pytest.raises(SystemExit, match="nothing to benchmark"):
        csrc_ops.plan_backends(False)
    monkeypatch.setattr(csrc_ops.csrc_ops, "available", lambda: True)
    assert csrc_ops.plan_backends(True) == ["reference", "cuda", "triton"]
    assert csrc_ops.plan_backends(False) == ["reference", "cpu"]
