"""The csrc extension's CUDA kernels (backend="cuda", GPU only) against the float64 reference,
with the inputs and tolerances of test_csrc_ops.py (docs/design.md sections 2-3)."""

import pytest
import torch
from numerics import assert_close
from test_csrc_ops import _C, f64, ln_inputs, modulation, needs_cuda_ext, targ

import mfkernels
from mfkernels import reference

pytestmark = pytest.mark.filterwarnings("error:mfkernels")  # a silent fallback would test nothing

CUDA_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# dims: 72 (vector path for every dtype), 100 (scalar path for 16-bit), 1152 (DiT-XL), 4000
CUDA_SHAPES = [(1, 1, 72), (2, 17, 100), (2, 130, 384), (2, 33, 1152), (1, 5, 4000)]


@pytest.mark.gpu
@needs_cuda_ext
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
def test_cuda_layernorm_modulate(shape, dtype):
    batch, _, dim = shape
    x = (torch.randn(shape, device="cuda") * 2 + 0.5).to(dtype).requires_grad_()
    x_dot = torch.randn(shape, device="cuda").to(dtype)
    mod = torch.randn(batch, 6 * dim, device="cuda").to(dtype).requires_grad_()
    mod_dot = torch.randn(batch, 6 * dim, device="cuda").to(dtype)
    shift, scale = mod.chunk(6, dim=1)[:2]
    shift_dot, scale_dot = mod_dot.chunk(6, dim=1)[:2]
    m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, backend="cuda")
    m_ref, m_dot_ref = reference.layernorm_modulate_jvp(*f64(x, x_dot, shift, scale, shift_dot, scale_dot))
    assert_close("m", m, m_ref, dtype)
    assert_close("m_dot", m_dot, m_dot_ref, dtype)
    weight = torch.randn(shape, device="cuda", dtype=torch.float64)
    (m.double() * weight).sum().backward()
    x64, mod64 = x.detach().double().requires_grad_(), mod.detach().double().requires_grad_()
    (reference.layernorm_modulate(x64, *mod64.chunk(6, dim=1)[:2]) * weight).sum().backward()
    assert_close("dx", x.grad, x64.grad, dtype)
    assert_close("dshift", mod.grad[:, :dim], mod64.grad[:, :dim], dtype)
    assert_close("dscale", mod.grad[:, dim : 2 * dim], mod64.grad[:, dim : 2 * dim], dtype)


@pytest.mark.gpu
@needs_cuda_ext
@pytest.mark.parametrize("shape", CUDA_SHAPES)
@pytest.mark.parametrize("dtype", CUDA_DTYPES)
def test_cuda_pointwise(shape, dtype):
    batch, _, dim = shape
    x, x_dot, f, f_dot = (torch.randn(shape, device="cuda").to(dtype) for _ in range(4))
    bias = torch.randn(dim, device="cuda")  # fp32 bias, as under autocast
    for with_bias in (bias, None):
        got = mfkernels.gelu_tanh_jvp(x * 3, x_dot, with_bias, backend="cuda")
        for name, out, ref in zip(
            ("y", "y_dot"), got, reference.gelu_tanh_jvp(*f64(x * 3, x_dot, with_bias))
        ):
            assert_close(f"gelu {name}", out, ref, dtype)
    for name, out, ref in zip(
        ("y", "y_dot"),
        mfkernels.silu_jvp(x * 4, x_dot, backend="cuda"),
        reference.silu_jvp(*f64(x * 4, x_dot)),
    ):
        assert_close(f"silu {name}", out, ref, dtype)
    gate, gate_dot = modulation(batch, dim, dtype, device="cuda")
    args = (x, x_dot, gate, gate_dot, f, f_dot)
    for name, out, ref in zip(
        ("y", "y_dot"),
        mfkernels.gated_residual_jvp(*args, backend="cuda"),
        reference.gated_residual_jvp(*f64(*args)),
    ):
        assert_close(f"gated_residual {name}", out, ref, dtype)
    # fp32 residual stream with a 16-bit branch (autocast)
    args = (x.float(), x_dot.float(), gate, gate_dot, f, f_dot)
    for name, out, ref in zip(
        ("y", "y_dot"),
        mfkernels.gated_residual_jvp(*args, backend="cuda"),
        reference.gated_residual_jvp(*f64(*args)),
    ):
        assert_close(f"gated_residual mixed {name}", out, ref, dtype)


@pytest.mark.gpu
@needs_cuda_ext
def test_cuda_misaligned_views_and_streams():
    """A view starting one element in (not 16-byte aligned) takes the scalar path; work on a
    side stream is ordered on that stream."""
    base = torch.randn(2 * 17 * 72 + 1, device="cuda").bfloat16()
    x = base[1:].view(2, 17, 72)
    x_dot = torch.randn(2, 17, 72, device="cuda").bfloat16()
    y, y_dot = mfkernels.silu_jvp(x, x_dot, backend="cuda")
    for name, out, ref in zip(("y", "y_dot"), (y, y_dot), reference.silu_jvp(*f64(x, x_dot))):
        assert_close(name, out, ref, torch.bfloat16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        inputs = ln_inputs((4, 256, 1152), torch.bfloat16, device="cuda")
        m, m_dot = mfkernels.layernorm_modulate_jvp(*inputs, backend="cuda")
    stream.synchronize()
    m_ref, m_dot_ref = reference.layernorm_modulate_jvp(*f64(*inputs))
    assert_close("m", m, m_ref, torch.bfloat16)
    assert_close("m_dot", m_dot, m_dot_ref, torch.bfloat16)


@pytest.mark.gpu
@needs_cuda_ext
def test_cuda_bad_inputs_and_fallback():
    x = torch.randn(2, 17, 72, device="cuda")
    with pytest.raises(ValueError, match="shift"):
        mfkernels.layernorm_modulate_jvp(x, x, torch.randn(2, 72), x[:, 0], x[:, 0], x[:, 0], backend="cuda")
    with pytest.warns(UserWarning, match="float64"):
        xd = x.double()
        mfkernels.silu_jvp(xd, xd, backend="cuda")
    with pytest.raises(TypeError, match="float64"):
        _C.silu_jvp(
            targ(x.double(), device=0),
            targ(x.double(), device=0),
            targ(x.double(), device=0),
            targ(x.double(), device=0),
        )
