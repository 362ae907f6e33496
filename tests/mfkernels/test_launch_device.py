"""Every Triton launcher makes its tensors' device current around its launches: Triton runs a
kernel on the current CUDA device and stream, so ``cuda:1`` tensors launched while ``cuda:0``
is current would be read by a kernel on the wrong GPU (an illegal address there)."""

import contextlib

import pytest
import torch
from numerics import DEVICE, needs_triton

from mfkernels.backends.triton import attention, gated_residual, layernorm_modulate, pointwise, rms_norm
from mfkernels.backends.triton.triton_compat import device_guard

LAUNCHER_MODULES = (attention, gated_residual, layernorm_modulate, pointwise, rms_norm)


@pytest.fixture
def guarded_devices(monkeypatch):
    """The devices each launch was guarded for, in order (the guard itself is the real one)."""
    devices = []

    @contextlib.contextmanager
    def recording_guard(t):
        devices.append(t.device)
        with device_guard(t):
            yield

    for module in LAUNCHER_MODULES:
        monkeypatch.setattr(module, "device_guard", recording_guard, raising=False)
    return devices


def _rand(*shape):
    return torch.randn(*shape, device=DEVICE)


def _launches():
    """``(name, call)`` for every Triton launcher, on small inputs."""
    x, x_dot, f, f_dot = (_rand(2, 3, 8) for _ in range(4))
    mod = [_rand(2, 8) for _ in range(4)]
    q, k, v, q_dot, k_dot, v_dot = (_rand(1, 1, 5, 16) for _ in range(6))
    lse = _rand(1, 1, 5)
    return {
        "ln_modulate_jvp": lambda: layernorm_modulate.layernorm_modulate_jvp_triton(x, x_dot, *mod),
        "ln_modulate_backward": lambda: layernorm_modulate.layernorm_modulate_backward_triton(f, x, mod[1]),
        "gated_residual_jvp": lambda: gated_residual.gated_residual_jvp_triton(x, x_dot, *mod[:2], f, f_dot),
        "gated_residual_backward": lambda: gated_residual.gated_residual_backward_triton(f, mod[0], x),
        "gelu_tanh_jvp": lambda: pointwise.gelu_tanh_jvp_triton(x, x_dot, mod[0][0]),
        "gelu_tanh_backward": lambda: pointwise.gelu_tanh_backward_triton(f, x, mod[0][0]),
        "silu_jvp": lambda: pointwise.silu_jvp_triton(x, x_dot),
        "rms_norm_jvp": lambda: rms_norm.rms_norm_jvp_triton(x, x_dot, mod[0][0]),
        "attention_jvp": lambda: attention.attention_jvp_triton(q, k, v, q_dot, k_dot, v_dot, 0.25),
        "attention_backward": lambda: attention.attention_backward_triton(q_dot, q, k, v, q, lse, 0.25),
    }


@needs_triton
@pytest.mark.parametrize("name", list(_launches()))
def test_every_launch_runs_on_its_tensors_device(monkeypatch, guarded_devices, name):
    monkeypatch.delenv(attention.BACKWARD_ENV_VAR, raising=False)  # our kernels, not a library's
    _launches()[name]()
    assert guarded_devices, f"{name} launched without making its tensors' device current"
    expected = torch.empty(0, device=DEVICE).device  # cuda:0 where the suite runs on a GPU
    assert set(guarded_devices) == {expected}, guarded_devices


@pytest.mark.gpu
def test_gpu_guard_makes_the_tensors_device_current():
    """On every GPU of the machine (one is enough to check the guard sets, not just restores)."""
    before = torch.cuda.current_device()
    for index in range(torch.cuda.device_count()):
        t = torch.empty(1, device=f"cuda:{index}")
        with device_guard(t):
            assert torch.cuda.current_device() == index
        assert torch.cuda.current_device() == before
