"""Triton gated residual ``y = x + g f``, ``y' = x' + g' f + g f'`` against the float64
reference, and its primal gradients through the public API against the reference backend's
(docs/design.md sections 2-3). The gate is a chunk of a ``(batch, 6 * dim)`` projection, as the DiT
makes it; under autocast x is the fp32 residual stream while f and the gate are bf16."""

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton

import mfkernels
from mfkernels.backends.triton.gated_residual import unsupported


def run_public(x, x_dot, mod, mod_dot, f, f_dot, grad, backend):
    """Public API with autograd; the gate is chunk 2 of ``mod`` (``g1`` in ``DiTBlock``)."""
    x, mod, f = (t.detach().requires_grad_() for t in (x, mod, f))
    gate, gate_dot = mod.chunk(6, dim=1)[2], mod_dot.chunk(6, dim=1)[2]
    y, y_dot = mfkernels.gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot, backend=backend)
    assert not y_dot.requires_grad
    y.backward(grad)
    return y.detach(), y_dot, x.grad, mod.grad, f.grad


def check(batch, tokens, dim, x_dtype, f_dtype, mod_dtype):
    shape = (batch, tokens, dim)
    x, x_dot = (torch.randn(shape, device=DEVICE).to(x_dtype) for _ in range(2))
    f, f_dot = (torch.randn(shape, device=DEVICE).to(f_dtype) for _ in range(2))
    mod, mod_dot = (torch.randn(batch, 6 * dim, device=DEVICE).to(mod_dtype) for _ in range(2))
    grad = torch.randn(shape, device=DEVICE).to(x_dtype)
    args = (x, x_dot, mod, mod_dot, f, f_dot, grad)
    out = run_public(*args, "triton")
    ref = run_public(*(t.double() for t in args), "reference")
    assert out[0].dtype == x_dtype and out[1].dtype == x_dtype
    for name, o, r in zip(("y", "y_dot", "dx", "dmod", "df"), out, ref):
        assert_close(name, o, r, TOL[o.dtype])


# ----------------------------------------------------------- interpreter-sized (CPU) tests


@needs_triton
@pytest.mark.parametrize("batch, tokens, dim", [(1, 1, 72), (3, 17, 384), (1, 130, 1152), (3, 130, 72)])
def test_fp32_against_float64(batch, tokens, dim):
    f32 = torch.float32
    check(batch, tokens, dim, f32, f32, f32)


@needs_triton
@pytest.mark.parametrize("batch, tokens, dim", [(3, 17, 1152), (3, 130, 72)])
def test_gpu_tiles(gpu_launch_settings, batch, tokens, dim):
    """Rows of 1152 in two column tiles of 1024; 16-row tiles over 390 rows."""
    f32 = torch.float32
    check(batch, tokens, dim, f32, f32, f32)


@needs_triton
@pytest.mark.parametrize(
    "x_dtype, f_dtype, mod_dtype",
    [
        (torch.float32, torch.bfloat16, torch.bfloat16),  # autocast DiT block
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float32, torch.float16),
    ],
)
def test_mixed_and_low_precision(x_dtype, f_dtype, mod_dtype):
    check(3, 17, 72, x_dtype, f_dtype, mod_dtype)


@needs_triton
def test_unsupported_reasons():
    x, g = torch.randn(1, 2, 8, device=DEVICE), torch.randn(1, 8, device=DEVICE)
    assert unsupported(x, x, g, g, x, x) is None
    assert "float64 for gate" in unsupported(x, x, g.double(), g, x, x)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_branch_that_would_broadcast_over_tokens_is_refused(backend):
    """f of (batch, 1, dim) broadcasts against x: refused, not summed into every token."""
    x, x_dot = torch.randn(2, 3, 8, device=DEVICE), torch.randn(2, 3, 8, device=DEVICE)
    f, f_dot = torch.randn(2, 1, 8, device=DEVICE), torch.randn(2, 1, 8, device=DEVICE)
    gate = torch.randn(2, 8, device=DEVICE)
    with pytest.raises(ValueError, match=r"f must have the shape of x \(2, 3, 8\), got \(2, 1, 8\)"):
        mfkernels.gated_residual_jvp(x, x_dot, gate, gate, f, f_dot, backend=backend)


@needs_triton
def test_opcheck():
    x, x_dot, f, f_dot = (torch.randn(2, 3, 8, device=DEVICE) for _ in range(4))
    gate, gate_dot = torch.randn(2, 8, device=DEVICE), torch.randn(2, 8, device=DEVICE)
    for t in (x, gate, f):
        t.requires_grad_()
    args = (x, x_dot, gate, gate_dot, f, f_dot, "triton")
    torch.library.opcheck(torch.ops.mfkernels.gated_residual_jvp.default, args)


# ---------------------------------------------------------------------- GPU (DiT-XL sizes)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "x_dtype, f_dtype, mod_dtype",
    [
        (torch.float32, torch.float32, torch.float32),
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16, torch.float16),
    ],
)
@pytest.mark.parametrize("batch, tokens, dim", [(8, 256, 1152), (3, 130, 72), (2, 1, 1152)])
def test_gpu_against_float64(batch, tokens, dim, x_dtype, f_dtype, mod_dtype):
    check(batch, tokens, dim, x_dtype, f_dtype, mod_dtype)
