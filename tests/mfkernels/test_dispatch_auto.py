"""The automatic backend per device (mfkernels.dispatch.auto_backend): ``cpu`` for CPU tensors
where the csrc extension is built, else ``reference``; ``triton`` for CUDA tensors."""

import pytest
import torch

from mfkernels import csrc_ops, dispatch


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


@pytest.mark.skipif(not csrc_ops.available(), reason="mfkernels._C is not built")
def test_cpu_tensors_go_to_the_built_extension(no_env):
    x, v = torch.randn(1, 2, 8), torch.randn(1, 8)
    assert dispatch.auto_backend(x.device) == "cpu"
    assert dispatch.resolve("layernorm_modulate_jvp", None, x, x, v, v, v, v, 1e-6) == "cpu"


def test_cpu_tensors_without_the_extension_go_to_the_reference(no_env, monkeypatch):
    without_cpu = {key: impl for key, impl in dispatch._registry.items() if key[1] != "cpu"}
    monkeypatch.setattr(dispatch, "_registry", without_cpu)
    x, v = torch.randn(1, 2, 8), torch.randn(1, 8)
    assert dispatch.auto_backend(x.device) == "reference"
    assert dispatch.resolve("layernorm_modulate_jvp", "auto", x, x, v, v, v, v, 1e-6) == "reference"


def test_cuda_tensors_go_to_triton():
    assert dispatch.auto_backend(torch.device("cuda", 0)) == "triton"
