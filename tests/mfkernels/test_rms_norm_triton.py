"""Triton RMSNorm (value and tangent, for the optional qk-norm) against the float64
reference, and gradients through the public API against the reference backend's (docs/design.md
sections 2-3). Shapes are attention's ``(batch, heads, seq, head_dim)``."""

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton

import mfkernels


def run_public(x, x_dot, weight, grad, backend):
    x = x.detach().requires_grad_()
    weight = None if weight is None else weight.detach().requires_grad_()
    y, y_dot = mfkernels.rms_norm_jvp(x, x_dot, weight, eps=1e-6, backend=backend)
    y.backward(grad)
    return y.detach(), y_dot, x.grad, None if weight is None else weight.grad


def check(shape, dtype, with_weight):
    x = (torch.randn(shape, device=DEVICE) * 2 + 0.3).to(dtype)
    x_dot, grad = (torch.randn(shape, device=DEVICE).to(dtype) for _ in range(2))
    weight = (torch.rand(shape[-1], device=DEVICE) + 0.5).to(dtype) if with_weight else None
    out = run_public(x, x_dot, weight, grad, "triton")
    w64 = None if weight is None else weight.double()
    ref = run_public(x.double(), x_dot.double(), w64, grad.double(), "reference")
    assert out[0].dtype == dtype and out[1].dtype == dtype
    for name, o, r in zip(("y", "y_dot", "dx", "dweight"), out, ref):
        if r is not None:
            assert_close(name, o, r, TOL[dtype])


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 1, 72), (2, 3, 17, 64), (1, 2, 130, 72), (5,)])
@pytest.mark.parametrize("with_weight", [True, False])
def test_fp32_against_float64(shape, with_weight):
    check(shape, torch.float32, with_weight)


@needs_triton
@pytest.mark.parametrize("shape", [(1, 2, 130, 72), (2, 3, 17, 128)])
def test_gpu_tiles(gpu_launch_settings, shape):
    """16-row tiles of 72 and 128 over 260 and 102 rows, the last one ragged."""
    check(shape, torch.float32, True)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    check((2, 3, 17, 72), dtype, True)


@needs_triton
def test_opcheck():
    x, x_dot = torch.randn(2, 3, 8, device=DEVICE, requires_grad=True), torch.randn(2, 3, 8, device=DEVICE)
    weight = torch.rand(8, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.mfkernels.rms_norm_jvp.default, (x, x_dot, weight, 1e-6, "triton"))
    torch.library.opcheck(torch.ops.mfkernels.rms_norm_jvp.default, (x, x_dot, None, 1e-6, "triton"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(8, 16, 256, 72), (3, 2, 130, 128)])
def test_gpu_against_float64(shape, dtype):
    check(shape, dtype, True)
