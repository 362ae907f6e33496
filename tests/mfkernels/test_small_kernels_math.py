"""The small dual ops' math where the other tests' inputs cannot see a bug: the GELU composite's
16-bit tangent (exact GELU's slope is within bf16's tolerance of tanh GELU's), the residual
stream's dtype under autocast on the reference backend, a forward-AD tangent on an input other
than the first, a gate and its tangent at different row strides, and fp16 rows whose squares
overflow fp16 (docs/design.md sections 2-3). Each against the float64 reference."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from numerics import DEVICE, TOL, assert_close, needs_triton

import mfkernels
from mfkernels import reference
from mfkernels.backends import torch_ops
from mfkernels.backends.triton.gated_residual import gated_residual_jvp_triton
from mfkernels.backends.triton.rms_norm import rms_norm_jvp_triton


def test_gelu_tanh_16bit_tangent_is_tanh_gelus_slope_to_rounding():
    """fp16 inputs take torch's fused GELU backward as the tangent (the GPU's path too): each
    element within 2 half-ulps of the float64 tanh-GELU slope, with a floor of 1/4 where the
    slope is small. Exact GELU's slope is up to 9e-4 off (3.6e-3 against that floor)."""
    x = torch.linspace(-6, 6, 4001, dtype=torch.float64).to(torch.float16)
    x_dot = torch.ones_like(x)  # y_dot is the slope itself
    y, y_dot = torch_ops.gelu_tanh_jvp(x, x_dot)
    ref_y, ref_y_dot = reference.gelu_tanh_jvp(x.double(), x_dot.double())
    assert y.dtype == y_dot.dtype == torch.float16
    for name, out, ref in (("y", y, ref_y), ("y_dot", y_dot, ref_y_dot)):
        err = ((out.double() - ref).abs() / ref.abs().clamp_min(0.25)).max().item()
        assert err <= 1e-3, f"{name}: elementwise error {err:.2e} > 1e-3"


@pytest.mark.parametrize("backend", ["reference", "composite"])
def test_gated_residual_keeps_the_fp32_stream_under_a_bf16_branch(backend):
    """Autocast's DiT block: x fp32, f and the gate bf16. Value and tangent come back in x's
    fp32, at fp32's tolerance against float64 of the same (rounded) inputs."""
    batch, tokens, dim = 2, 5, 24
    x, x_dot = (torch.randn(batch, tokens, dim) for _ in range(2))
    f, f_dot = (torch.randn(batch, tokens, dim).bfloat16() for _ in range(2))
    gate, gate_dot = (torch.randn(batch, dim).bfloat16() for _ in range(2))
    args = (x, x_dot, gate, gate_dot, f, f_dot)
    if backend == "reference":
        out = mfkernels.gated_residual_jvp(*args, backend="reference")
    else:
        out = torch_ops.gated_residual_jvp(*args)
    ref = reference.gated_residual_jvp(*(t.double() for t in args))
    for name, o, r in zip(("y", "y_dot"), out, ref):
        assert o.dtype == torch.float32, name
        assert_close(name, o, r, TOL[torch.float32])


def _forward_ad_cases():
    """(op, its arguments, the position of an input other than the first, that input's name)."""
    x, f, gate, bias = torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 8), torch.randn(8)
    return [
        ("gated_residual_jvp", mfkernels.gated_residual_jvp, (x, x, gate, gate, f, f), 2, "gate"),
        ("gated_residual_jvp", mfkernels.gated_residual_jvp, (x, x, gate, gate, f, f), 4, "f"),
        ("gelu_tanh_jvp", mfkernels.gelu_tanh_jvp, (x, x, bias), 2, "bias"),
        ("rms_norm_jvp", mfkernels.rms_norm_jvp, (x, x, bias), 2, "weight"),
        ("silu_jvp", mfkernels.silu_jvp, (x, x), 1, "x_dot"),
    ]


@pytest.mark.parametrize("case", _forward_ad_cases(), ids=lambda c: f"{c[0]}-{c[4]}")
def test_a_forward_ad_tangent_on_any_input_is_refused(case):
    """Not only the first input: a tangent on a gate, bias or weight would be dropped too."""
    name, op, args, position, arg_name = case

    def value(t):
        return op(*args[:position], t, *args[position + 1 :])[0]

    with pytest.raises(NotImplementedError, match=f"mfkernels.{name}: {arg_name} carries a forward-mode"):
        with fwAD.dual_level():
            value(fwAD.make_dual(args[position], torch.ones_like(args[position])))


@needs_triton
@pytest.mark.parametrize("chunked", ["gate", "gate_dot"])
def test_gate_and_its_tangent_each_at_its_own_row_stride(chunked):
    """One of the gate and its tangent a chunk of a (batch, 6 dim) projection, the other
    contiguous (a zero tangent, a detached gate): each read at its own row stride. batch 3,
    ragged dim."""
    batch, tokens, dim = 3, 5, 40
    x, x_dot, f, f_dot = (torch.randn(batch, tokens, dim, device=DEVICE) for _ in range(4))
    chunk = torch.randn(batch, 6 * dim, device=DEVICE).chunk(6, dim=1)[2]
    plain = torch.randn(batch, dim, device=DEVICE)
    gate, gate_dot = (chunk, plain) if chunked == "gate" else (plain, chunk)
    y, y_dot = gated_residual_jvp_triton(x, x_dot, gate, gate_dot, f, f_dot)
    args = (x, x_dot, gate, gate_dot, f, f_dot)
    ref_y, ref_y_dot = reference.gated_residual_jvp(*(t.double() for t in args))
    assert_close("y", y, ref_y, TOL[torch.float32])
    assert_close("y_dot", y_dot, ref_y_dot, TOL[torch.float32])


@needs_triton
def test_rms_norm_fp16_rows_whose_squares_overflow_fp16():
    """|x| ~ 300: x^2 passes fp16's 65504, so the statistics must be fp32 (the outputs, x / rms
    of order 1, fit fp16). Rows of 72 and a weight."""
    x = ((torch.rand(2, 3, 72, device=DEVICE) + 1) * 300 * torch.randn(2, 3, 72, device=DEVICE).sign()).half()
    x_dot = (torch.randn(2, 3, 72, device=DEVICE) * 300).half()
    weight = (torch.rand(72, device=DEVICE) + 0.5).half()
    y, y_dot = rms_norm_jvp_triton(x, x_dot, weight)
    ref_y, ref_y_dot = reference.rms_norm_jvp(x.double(), x_dot.double(), weight.double())
    assert_close("y", y, ref_y, TOL[torch.float16])
    assert_close("y_dot", y_dot, ref_y_dot, TOL[torch.float16])
