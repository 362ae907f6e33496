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
