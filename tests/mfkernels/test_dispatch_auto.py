"""The automatic backend per device (mfkernels.dispatch.auto_backend): ``cpu`` for CPU tensors
where the csrc extension is built, else ``reference``; ``triton`` for CUDA tensors."""

import os
import subprocess
import sys

import pytest
import torch

from mfkernels import dispatch
from mfkernels.backends import csrc


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


@pytest.mark.skipif(not csrc.available(), reason="mfkernels._C is not built")
def test_cpu_tensors_go_to_the_built_extension(no_env):
    x, v = torch.randn(1, 2, 8), torch.randn(1, 8)
    assert dispatch.auto_backend(x.device) == "cpu"
    assert dispatch.resolve("layernorm_modulate_jvp", None, x, x, v, v, v, v, 1e-6) == "cpu"


def test_cpu_tensors_without_the_extension_go_to_the_reference():
    """A fresh process whose ``mfkernels._C`` does not import (``sys.modules`` entry None)."""
    code = (
        "import sys, warnings; sys.modules['mfkernels._C'] = None; warnings.simplefilter('ignore')\n"
        "import torch; from mfkernels import dispatch\n"
        "x, v = torch.randn(1, 2, 8), torch.randn(1, 8)\n"
        "print(dispatch.auto_backend(x.device), "
        "dispatch.resolve('layernorm_modulate_jvp', 'auto', x, x, v, v, v, v, 1e-6))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != dispatch.ENV_VAR}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["reference", "reference"]


def test_cuda_tensors_go_to_triton():
    assert dispatch.auto_backend(torch.device("cuda", 0)) == "triton"
