"""The csrc extension's ``cpu`` backend on the awkward inputs users hand the public ops: 0-d and
one-element tensors, expanded (stride-0) and offset views, thread counts, and what happens
when ``mfkernels._C`` is missing or stale or asked for an ISA that does not exist.
Every result is held to the float64 reference (docs/design.md section 3).
"""

import pytest
import torch
from numerics import assert_close

import mfkernels
from mfkernels import reference
from mfkernels.backends import csrc

_C = csrc._C
pytestmark = [
    pytest.mark.skipif(_C is None, reason=str(csrc.import_error)),
    pytest.mark.filterwarnings("error:mfkernels"),  # a silent fallback would test nothing
]


def f64(*tensors):
    return [None if t is None else t.detach().double() for t in tensors]


def grads(fn, *inputs):
    """``fn``'s first output and the gradients of a weighted sum of it w.r.t. ``inputs``."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)[0]
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)
    (out.double() * weight).sum().backward()
    return [out.detach(), *(t.grad for t in inputs)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("backend", ["cpu", None])
def test_gelu_on_a_0d_tensor(dtype, backend):
    """A scalar is a valid GELU input (as for SiLU): the kernels see one row of one element."""
    x, x_dot = torch.tensor(0.7).to(dtype), torch.tensor(-1.3).to(dtype)
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, backend=backend)
    y_ref, y_dot_ref = reference.gelu_tanh_jvp(*f64(x, x_dot))
    assert y.shape == () and y_dot.shape == () and y.dtype == dtype
    assert_close("y", y, y_ref, dtype)
    assert_close("y_dot", y_dot, y_dot_ref, dtype)
    run = lambda b: grads(lambda t: mfkernels.gelu_tanh_jvp(t, x_dot, backend=b), x)  # noqa: E731
    for name, out, ref in zip(("y", "dx"), run(backend), run("reference")):
        assert out.shape == () and out.dtype == dtype
        assert_close(name, out, ref.double(), dtype)
