"""The gradient of every elementwise dual op's value, against autograd of the same primal in
plain torch (float64), on the reference backend and the automatic one (the csrc extension's
ops where it is built, the others' reference): the autograd formulas in
``mfkernels/ops.py`` (SiLU's is plain torch whatever the backend) must be the primal's."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close

import mfkernels

B, N, D = 2, 5, 8


def _gelu_tanh(x, bias):
    return F.gelu(x + bias, approximate="tanh")


def _layernorm_modulate(x, shift, scale):
    return F.layer_norm(x, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _rms_norm(x, weight):
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * weight


# (name, primal shapes, the dual op's value from primals and tangents, plain torch's)
CASES = {
    "silu": ([(B, N, D)], lambda b, x, x_dot: mfkernels.silu_jvp(x, x_dot, backend=b), F.silu),
    "gelu_tanh": (
        [(B, N, D), (D,)],
        lambda b, x, bias, x_dot, _: mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend=b),
        _gelu_tanh,
    ),
    "gated_residual": (
        [(B, N, D), (B, D), (B, N, D)],
        lambda b, x, g, f, x_dot, g_dot, f_dot: mfkernels.gated_residual_jvp(
            x, x_dot, g, g_dot, f, f_dot, backend=b
        ),
        lambda x, g, f: x + g[:, None] * f,
    ),
    "layernorm_modulate": (
        [(B, N, D), (B, D), (B, D)],
        lambda b, x, sh, sc, x_dot, sh_dot, sc_dot: mfkernels.layernorm_modulate_jvp(
            x, x_dot, sh, sc, sh_dot, sc_dot, backend=b
        ),
        _layernorm_modulate,
    ),
    "rms_norm": (
        [(B, N, D), (D,)],
        lambda b, x, w, x_dot, _: mfkernels.rms_norm_jvp(x, x_dot, w, backend=b),
        _rms_norm,
    ),
}


@pytest.mark.parametrize("backend", ["reference", None])
@pytest.mark.parametrize("case", CASES.keys())
def test_value_gradients_are_the_primals(case, backend):
    shapes, dual, plain = CASES[case]
    primals = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    tangents = [torch.randn(s, dtype=torch.float64) for s in shapes]
    grad_y = torch.randn(B, N, D, dtype=torch.float64)
    y, _ = dual(backend, *primals, *tangents)
    grads = torch.autograd.grad(y, primals, grad_y)
    expected = torch.autograd.grad(plain(*primals), primals, grad_y)
    for i, (grad, ref) in enumerate(zip(grads, expected, strict=True)):
        assert_close(f"{case} d(input {i})", grad, ref, torch.float64)


def test_the_plain_layernorm_modulate_is_the_dual_ops_value():
    """``mfkernels.layernorm_modulate``, the primal a model runs without tangents, is the value
    of ``layernorm_modulate_jvp`` and the formula above."""
    x = torch.randn(B, N, D, dtype=torch.float64)
    shift, scale = torch.randn(2, B, D, dtype=torch.float64).unbind(0)
    m = mfkernels.layernorm_modulate(x, shift, scale)
    dual, _ = mfkernels.layernorm_modulate_jvp(x, x, shift, scale, shift, scale, backend="reference")
    assert_close("m", m, _layernorm_modulate(x, shift, scale), torch.float64)
    assert_close("m against the dual op", m, dual, torch.float64)
