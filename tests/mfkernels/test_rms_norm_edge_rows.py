"""RMSNorm on rows where ``eps`` decides the result: all-zero rows and rows of rms ~1e-4,
with eps 1e-6 and 1e-2, on every backend that has the op, value, tangent and gradients
through the public op against float64 ``torch.func`` of torch's own ``rms_norm``.

Ordinary rows cannot tell ``1 / sqrt(ms + eps)`` from ``1 / (rms + eps)``; on a zero row the
tangent is ``x' / sqrt(eps)`` against ``x' / eps``."""

import warnings

import pytest
import torch
from numerics import DEVICE, needs_triton
from test_layernorm_edge_rows import assert_rows_close, triton_runs

import mfkernels
from mfkernels import dispatch

DIM = 72
BACKEND_PARAMS = [pytest.param("reference"), pytest.param("triton", marks=[needs_triton, triton_runs])]


def edge_rows():
    """x ``(12, DIM)``: 4 ordinary rows (std 2, mean 0.3), 4 of rms ~1e-4, 4 of zeros; then
    ``x_dot``, a weight around 1 and the incoming gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(4, DIM, generator=g) * 2 + 0.3, torch.randn(4, DIM, generator=g) * 1e-4])
    x = torch.cat([x, torch.zeros(4, DIM)])
    x_dot, grad = torch.randn(2, *x.shape, generator=g)
    weight = torch.rand(DIM, generator=g) + 0.5
    return [t.to(DEVICE) for t in (x, x_dot, weight, grad)]


def oracle(x, x_dot, weight, grad, eps):
    """float64 ``(y, y_dot, dx, dweight)``: torch.func.jvp and vjp of ``F.rms_norm``."""
    x, x_dot, weight, grad = (t.double() for t in (x, x_dot, weight, grad))

    def primal(x_, weight_):
        return torch.nn.functional.rms_norm(x_, (DIM,), weight_, eps)

    y, y_dot = torch.func.jvp(primal, (x, weight), (x_dot, torch.zeros_like(weight)))
    _, vjp = torch.func.vjp(primal, x, weight)
    return (y, y_dot, *vjp(grad))


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_value_tangent_and_gradients_on_edge_rows(backend, eps):
    x, x_dot, weight, grad = edge_rows()
    ref = oracle(x, x_dot, weight, grad, eps)
    assert dispatch.resolve("rms_norm_jvp", backend, x, x_dot, weight, eps) == backend
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback warns: it must not happen here
        y, y_dot = mfkernels.rms_norm_jvp(x, x_dot, weight, eps=eps, backend=backend)
        y.backward(grad)
    out = (y.detach(), y_dot, x.grad, weight.grad[None])
    for name, o, r in zip(("y", "y_dot", "dx", "dweight"), out, (*ref[:3], ref[3][None])):
        assert_rows_close(f"{backend} {name} (eps {eps:g})", o, r, floor=1.0)
