import os

import torch

# Triton kernels run in the interpreter on a CPU-only machine. This must be set before any
# @triton.jit function is defined, i.e. before mfkernels is imported by a test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    # One config per attention kernel, untimed, instead of compiling and timing every candidate
    # for each of the suite's shapes; test_every_tuned_config runs each candidate once.
    os.environ.setdefault("MFK_AUTOTUNE", "0")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def gpu_launch_settings(monkeypatch):
    """The row and pointwise kernels' GPU tiles under the interpreter, which otherwise takes
    one big tile: rows split over column tiles, ragged row tiles and bias rows that straddle
    blocks then run on the CPU too. A no-op on a GPU."""
    from mfkernels import _rows

    monkeypatch.setattr(_rows, "INTERPRET", False)
