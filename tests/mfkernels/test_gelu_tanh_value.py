"""``mfkernels.gelu_tanh``: bias + tanh-GELU, the value alone, for a plain forward
(mfkernels/primal.py). On the CPU in plain eager mode the extension's kernel and its one-pass
backward, held to the float64 reference as every csrc op (test_csrc_ops.py); wherever torch
must see the computation (forward-mode AD, torch.func, dispatch modes, a second derivative)
plain torch, which those differentiate. The DiT's plain forward uses it on the CPU.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close, f64
from torch.utils.flop_counter import FlopCounterMode

import mfkernels
from mfkernels import dispatch, reference
from mfkernels.backends import csrc

_C = csrc._C
needs_ext = pytest.mark.skipif(_C is None, reason=str(csrc.import_error))
pytestmark = pytest.mark.filterwarnings("error:mfkernels")  # a silent fallback would test nothing

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def torch_gelu(x, bias):
    return F.gelu(x if bias is None else x + bias, approximate="tanh")


@needs_ext
@pytest.mark.parametrize("shape", [(1, 1, 72), (2, 17, 288), (2, 130, 1536), (5,)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_value_on_the_cpu_kernel(shape, dtype, with_bias):
    x = (torch.randn(shape) * 3).to(dtype)
    bias = torch.randn(shape[-1]).to(dtype) if with_bias else None
    with dispatch.record_backends() as seen:
        y = mfkernels.gelu_tanh(x, bias, backend="cpu")
    assert seen == {"gelu_tanh": {"cpu"}}
    assert y.dtype == dtype
    assert_close("y", y, reference.gelu_tanh(*f64(x, bias)), dtype)


@needs_ext
def test_fp32_bias_on_bf16_input_and_extremes():
    """An fp32 bias (an nn.Linear parameter under autocast) on bf16 activations: y is bf16; and
    inputs far in both tails, where tanh saturates (no inf/NaN from the exp-based tanh)."""
    x, bias = torch.randn(2, 17, 72).bfloat16(), torch.randn(72)
    y = mfkernels.gelu_tanh(x, bias, backend="cpu")
    assert y.dtype == torch.bfloat16
    assert_close("y", y, reference.gelu_tanh(*f64(x, bias)), torch.bfloat16)
    y_torch, _ = torch.func.jvp(mfkernels.gelu_tanh, (x, bias), (x, bias))  # plain torch: the same dtype
    assert y_torch.dtype == torch.bfloat16
    x = torch.tensor([[-1e4, -200.0, -30.0, -9.0, -1e-4, 0.0, 1e-4, 9.0, 30.0, 200.0, 1e4]])
    y = mfkernels.gelu_tanh(x, backend="cpu")
    torch.testing.assert_close(y.double(), reference.gelu_tanh(x.double()), rtol=1e-5, atol=1e-6)


def grads(fn, x, bias, grad):
    x = x.detach().requires_grad_()
    bias = None if bias is None else bias.detach().requires_grad_()
    fn(x, bias).backward(grad)
    return x.grad, None if bias is None else bias.grad


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_dtype", [None, "same", torch.float32])
def test_gradients_on_the_cpu_kernel(dtype, bias_dtype):
    """dx and dbias (in the bias's dtype) from the CPU backward kernel against float64 torch."""
    x, grad = (torch.randn(2, 17, 288) * 3).to(dtype), torch.randn(2, 17, 288).to(dtype)
    bias = None if bias_dtype is None else torch.randn(288).to(dtype if bias_dtype == "same" else bias_dtype)
    with dispatch.record_backends() as seen:
        got = grads(lambda x, b: mfkernels.gelu_tanh(x, b, backend="cpu"), x, bias, grad)
    assert seen == {"gelu_tanh": {"cpu"}, "gelu_tanh_backward": {"cpu"}}
    ref = grads(torch_gelu, *f64(x, bias, grad))
    assert got[0].dtype == dtype
    assert_close("dx", got[0], ref[0], dtype)
    if bias is not None:
        assert got[1].dtype == bias.dtype
        assert_close("dbias", got[1], ref[1], max(dtype, bias.dtype, key=lambda d: torch.finfo(d).eps))


def test_second_derivative_is_torch_s():
    """create_graph=True: the backward is plain torch, so a gradient of the gradient (a gradient
    penalty, a double-backward JVP) comes out as torch's own."""
    x, bias = torch.randn(3, 7, 16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)

    def second(fn):
        xr, br = x.clone().requires_grad_(), bias.clone().requires_grad_()
        (gx,) = torch.autograd.grad(fn(xr, br).sin().sum(), xr, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (xr, br))

    for got, want in zip(second(mfkernels.gelu_tanh), second(torch_gelu)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_forward_mode_ad_and_transforms_see_plain_torch():
    """torch.func.jvp, forward_ad, torch.func.grad and vmap differentiate (map) it as torch's
    GELU, as they would a plain forward; a dispatch mode (FlopCounterMode) sees torch ops."""
    x, bias = torch.randn(4, 16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    x_dot, bias_dot = torch.randn_like(x), torch.randn_like(bias)
    want = torch.func.jvp(torch_gelu, (x, bias), (x_dot, bias_dot))
    got = torch.func.jvp(mfkernels.gelu_tanh, (x, bias), (x_dot, bias_dot))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, x_dot)
        tangent = torch.autograd.forward_ad.unpack_dual(mfkernels.gelu_tanh(dual, bias)).tangent
    torch.testing.assert_close(tangent, torch.func.jvp(lambda x: torch_gelu(x, bias), (x,), (x_dot,))[1])
    for transform in (torch.func.grad, torch.func.grad_and_value):
        got = transform(lambda b: mfkernels.gelu_tanh(x, b).sum())(bias)
        want = transform(lambda b: torch_gelu(x, b).sum())(bias)
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.func.vmap(mfkernels.gelu_tanh)(x, x), torch_gelu(x, x))
    with dispatch.record_backends() as seen, FlopCounterMode(display=False):
        mfkernels.gelu_tanh(x, bias)
    assert seen == {}


def test_compiles_whole_as_torch_s_gelu():
    """torch.compile(fullgraph=True) traces it without a graph break: plain torch, which
    Inductor fuses (the kernel would be an opaque call)."""
    x, bias = torch.randn(4, 16), torch.randn(16)
    torch._dynamo.reset()
    compiled = torch.compile(mfkernels.gelu_tanh, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, bias), torch_gelu(x, bias))


def test_a_jit_trace_records_torch_s_gelu():
    """torch.jit.trace (and the ONNX export built on it) cannot see into the kernel: a trace
    of it would hold its output as a constant."""
    x, bias = torch.randn(4, 16), torch.randn(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "`torch.jit.trace` is deprecated", FutureWarning)
        traced = torch.jit.trace(mfkernels.gelu_tanh, (x, bias))
    other = torch.randn(4, 16)
    torch.testing.assert_close(traced(other, bias), torch_gelu(other, bias))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"bias must have shape \(16,\)"):
        mfkernels.gelu_tanh(torch.randn(2, 16), torch.randn(15))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        mfkernels.gelu_tanh(torch.ones(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="backend must be one of"):
        mfkernels.gelu_tanh(torch.randn(2, 16), backend="gpu")


@needs_ext
def test_binding_checks_its_arguments():
    x, y = torch.randn(2, 17, 72), torch.empty(2, 17, 72)
    arg = csrc._arg
    with pytest.raises(ValueError, match="bias must have shape"):
        _C.gelu_tanh(arg(x), arg(torch.randn(71)), arg(y))
    with pytest.raises(ValueError, match="y must have the shape of x"):
        _C.gelu_tanh(arg(x), None, arg(y[:1]))
    with pytest.raises(TypeError, match="y must have dtype"):
        _C.gelu_tanh(arg(x), None, arg(y.double()))


@needs_ext
def test_dit_plain_forward_runs_it_and_equals_torch_gelu():
    """The DiT's MLPs on the CPU: bias + GELU on the kernel, forward and gradients as the
    Linear + torch GELU they replace (fp32 rounding)."""
    from meanflow.models import DiT, Mlp

    torch.manual_seed(0)
    model = DiT.from_config("DiT-T/8", num_classes=10, in_channels=1, input_size=16)
    with torch.no_grad():  # adaLN-Zero starts with zero biases, gates and output: nothing to see
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, t, r, y = torch.randn(3, 1, 16, 16), torch.rand(3), torch.rand(3), torch.tensor([0, 4, 9])

    def run():
        model.zero_grad()
        out = model(x, t, r, y)
        out.square().sum().backward()
        return [out] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with dispatch.record_backends() as seen:
        got = run()
    assert seen["gelu_tanh"] == {"cpu"} and seen["gelu_tanh_backward"] == {"cpu"}
    fast = Mlp.forward
    Mlp.forward = lambda self, h: self.fc2(F.gelu(self.fc1(h), approximate="tanh"))
    try:
        want = run()
    finally:
        Mlp.forward = fast
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(f"output/grad {i}", g, w, torch.float32)
