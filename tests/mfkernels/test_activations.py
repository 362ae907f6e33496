"""Triton bias + GELU-tanh and SiLU (value and tangent) against the float64 reference, and
the primal gradients through the public API against the reference backend's (docs/design.md
sections 2-3: fp32 <= 1e-5, bf16/fp16 <= 3e-2 relative to the reference's max abs). On the
CPU the kernels run in the Triton interpreter (bf16 casts truncate there: 16-bit numerics
are checked properly in the ``gpu`` tests)."""

import pytest
import torch
import torch.nn.functional as F
from numerics import DEVICE, TOL, assert_close, needs_triton, rel_err

import mfkernels
from mfkernels import reference
from mfkernels.backends.triton.pointwise import gelu_tanh_jvp_triton, silu_jvp_triton


def inputs(shape, dtype, spread=3.0):
    """Values over the whole interesting range of both activations (tails included)."""
    x = (torch.randn(shape, device=DEVICE) * spread).to(dtype)
    return x, torch.randn(shape, device=DEVICE).to(dtype)


def run_gelu(x, x_dot, bias, grad, backend):
    x = x.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend=backend)
    assert not y_dot.requires_grad
    y.backward(grad)
    return y.detach(), y_dot, x.grad, None if bias is None else bias.grad


def check_gelu(shape, dtype, bias_dtype):
    x, x_dot = inputs(shape, dtype)
    bias = None if bias_dtype is None else torch.randn(shape[-1], device=DEVICE).to(bias_dtype)
    grad = torch.randn(shape, device=DEVICE).to(dtype)
    out = run_gelu(x, x_dot, bias, grad, "triton")
    b64 = None if bias is None else bias.double()
    ref = run_gelu(x.double(), x_dot.double(), b64, grad.double(), "reference")
    assert out[0].dtype == dtype and out[1].dtype == dtype
    for name, o, r in zip(("y", "y_dot", "dx", "dbias"), out, ref):
        if r is not None:
            assert_close(name, o, r, TOL[o.dtype])


def run_silu(x, x_dot, grad, backend):
    x = x.detach().requires_grad_()
    y, y_dot = mfkernels.silu_jvp(x, x_dot, backend=backend)
    y.backward(grad)
    return y.detach(), y_dot, x.grad


def check_silu(shape, dtype):
    x, x_dot = inputs(shape, dtype, spread=6.0)
    grad = torch.randn(shape, device=DEVICE).to(dtype)
    out = run_silu(x, x_dot, grad, "triton")
    ref = run_silu(x.double(), x_dot.double(), grad.double(), "reference")
    assert out[0].dtype == dtype and out[1].dtype == dtype
    for name, o, r in zip(("y", "y_dot", "dx"), out, ref):
        assert_close(name, o, r, TOL[dtype])


# ----------------------------------------------------------- interpreter-sized (CPU) tests


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 72), (3, 17, 384), (1, 130, 1152), (5,)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gelu_fp32_against_float64(shape, with_bias):
    check_gelu(shape, torch.float32, torch.float32 if with_bias else None)


@needs_triton
@pytest.mark.parametrize("shape", [(3, 17, 384), (1, 130, 1152), (2, 300, 72), (1, 5, 384)])
def test_gelu_gpu_tiles(gpu_launch_settings, shape):
    """Blocks of 1024 elements, whose bias rows start mid-block, and a ragged last block; the
    backward's column strips (a ragged last one) and 256-row chunks (bias partial sums over
    three chunks, the last ragged), and fewer rows than one tile."""
    check_gelu(shape, torch.float32, torch.float32)


@needs_triton
@pytest.mark.parametrize(
    "dtype, bias_dtype",
    [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32), (torch.float16, torch.float16)],
)
def test_gelu_mixed_and_low_precision(dtype, bias_dtype):
    check_gelu((3, 17, 72), dtype, bias_dtype)


@needs_triton
def test_gelu_tails_and_strided_input():
    """Large |x| (the sigmoid saturates) and a non-contiguous x (copied, not misread)."""
    x = torch.linspace(-60, 60, 2 * 9 * 16, device=DEVICE).reshape(2, 16, 9).transpose(1, 2)
    x_dot = torch.randn_like(x)
    bias = torch.randn(16, device=DEVICE)
    y, y_dot = gelu_tanh_jvp_triton(x, x_dot, bias)
    ref_y, ref_y_dot = reference.gelu_tanh_jvp(x.double(), x_dot.double(), bias.double())
    assert_close("y", y, ref_y, 1e-5)
    assert_close("y_dot", y_dot, ref_y_dot, 1e-5)


@needs_triton
@pytest.mark.parametrize("shape", [(3, 72), (1, 130, 384), (7,)])
def test_silu_fp32_against_float64(shape):
    check_silu(shape, torch.float32)


@needs_triton
def test_silu_gpu_tiles(gpu_launch_settings):
    check_silu((3, 17, 72), torch.float32)  # 3672 elements: four blocks of 1024, the last ragged


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_silu_low_precision(dtype):
    check_silu((3, 384), dtype)


@needs_triton
def test_silu_tails():
    x = torch.linspace(-200, 200, 401, device=DEVICE)
    x_dot = torch.randn_like(x)
    y, y_dot = silu_jvp_triton(x, x_dot)
    ref_y, ref_y_dot = reference.silu_jvp(x.double(), x_dot.double())
    assert_close("y", y, ref_y, 1e-5)
    assert_close("y_dot", y_dot, ref_y_dot, 1e-5)


@needs_triton
def test_opcheck():
    x, x_dot = inputs((2, 3, 8), torch.float32)
    x.requires_grad_()
    bias = torch.randn(8, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.mfkernels.gelu_tanh_jvp.default, (x, x_dot, bias, "triton"))
    torch.library.opcheck(torch.ops.mfkernels.gelu_tanh_jvp.default, (x, x_dot, None, "triton"))
    torch.library.opcheck(torch.ops.mfkernels.silu_jvp.default, (x, x_dot, "triton"))


# ---------------------------------------------------------------------- GPU (DiT-XL sizes)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "dtype, bias_dtype",
    [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.float32, torch.bfloat16),
        (torch.bfloat16, None),
    ],
)
def test_gpu_gelu_dit_xl(dtype, bias_dtype):
    check_gelu((8, 256, 4 * 1152), dtype, bias_dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(8, 1152), (8, 256, 1152), (3, 17, 72)])
def test_gpu_silu(shape, dtype):
    check_silu(shape, dtype)


@pytest.mark.gpu
def test_gpu_gelu_bf16_error_within_twice_torch():
    """flash-attention's rule: our bf16 error vs float64 is at most 2x torch's own bf16 GELU
    (and its fused backward as the tangent), plus a small floor."""
    x, x_dot = inputs((8, 256, 4 * 1152), torch.bfloat16)
    bias = torch.randn(4 * 1152, device=DEVICE).to(torch.bfloat16)
    ours = gelu_tanh_jvp_triton(x, x_dot, bias)
    pre = x + bias
    theirs = F.gelu(pre, approximate="tanh"), torch.ops.aten.gelu_backward(x_dot, pre, approximate="tanh")
    ref = reference.gelu_tanh_jvp(x.double(), x_dot.double(), bias.double())
    for name, o, t, r in zip(("y", "y_dot"), ours, theirs, ref):
        assert rel_err(o, r) <= 2 * rel_err(t, r) + 1e-3, name
