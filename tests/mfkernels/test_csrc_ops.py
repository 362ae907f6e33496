"""The csrc extension (mfkernels._C) against the float64 reference, docs/design.md sections 2-3:
fp32 <= 1e-5 and bf16/fp16 <= 3e-2 relative to the reference's max abs, per output and per
gradient, through the public mfkernels API with backend="cpu" (the "cuda" backend:
test_csrc_cuda_ops.py). Also:
every CPU ISA build, mixed dtypes as autocast produces them, non-contiguous modulation
chunks, bad inputs raising a named Python exception (in the wrapper and in C++), and
``torch.library.opcheck``.
"""

import os
import warnings

import pytest
import torch
from numerics import assert_close, f64

import mfkernels
from mfkernels import dispatch, reference
from mfkernels.backends import csrc

_C = csrc._C
needs_ext = pytest.mark.skipif(_C is None, reason=str(csrc.import_error))
needs_cuda_ext = pytest.mark.skipif(
    not csrc.has_cuda(), reason="mfkernels._C was built without CUDA (no nvcc at build time)"
)
pytestmark = pytest.mark.filterwarnings("error:mfkernels")  # a silent fallback would test nothing

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# (batch, tokens, dim): tokens 1, 17, 130 and dims 72 (DiT-XL/2 head dim), 384 (DiT-S).
SHAPES = [(1, 1, 72), (2, 17, 72), (2, 130, 384), (3, 17, 384)]
ISAS = ["avx512", "avx2", "base"]


def modulation(batch, dim, dtype, n=2, device="cpu"):
    """n per-sample vectors as the DiT makes them: chunks of one (batch, 6 dim) tensor."""
    mod = torch.randn(batch, 6 * dim, device=device).to(dtype)
    return list(mod.chunk(6, dim=1)[:n])


def ln_inputs(shape, dtype, mod_dtype=None, device="cpu"):
    batch, _, dim = shape
    x = (torch.randn(shape, device=device) * 2 + 0.5).to(dtype)
    x_dot = torch.randn(shape, device=device).to(dtype)
    shift, scale = modulation(batch, dim, mod_dtype or dtype, device=device)
    shift_dot, scale_dot = modulation(batch, dim, mod_dtype or dtype, device=device)
    return x, x_dot, shift, scale, shift_dot, scale_dot


@pytest.fixture
def isa():
    """Gives back the ISA in use before a test that forced one: that is the automatic choice
    only without MFK_CPU_ISA (csrc/README.md), and the rest of the session runs on it."""
    before = None if _C is None else _C.cpu_isa()
    yield
    if before is not None:
        _C.set_cpu_isa(before)


def use_isa(name):
    if not _C.set_cpu_isa(name):
        pytest.skip(f"this CPU cannot run the {name} build")


# ------------------------------------------------------------------------- the build


def test_extension_is_built_and_registered():
    if _C is None:
        if os.environ.get("CI"):
            pytest.fail(
                f"CI installs with `pip install -e .`, which builds mfkernels._C: {csrc.import_error}"
            )
        pytest.skip(str(csrc.import_error))
    assert _C.cpu_isa() in ISAS
    for op in csrc.CPU_OPS:
        assert dispatch.resolve(op, "cpu", torch.zeros(1, 1, 8)) == "cpu"
    assert dispatch.auto_backend(torch.device("cpu")) == "cpu"
    assert ("cuda" in dispatch.available_backends()) == bool(_C.WITH_CUDA)


# ------------------------------------------------------- LayerNorm + adaLN modulate


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_modulate_jvp(shape, dtype):
    inputs = ln_inputs(shape, dtype)
    m, m_dot = mfkernels.layernorm_modulate_jvp(*inputs, backend="cpu")
    m_ref, m_dot_ref = reference.layernorm_modulate_jvp(*f64(*inputs))
    assert m.dtype == dtype and m_dot.dtype == dtype
    assert_close("m", m, m_ref, dtype)
    assert_close("m_dot", m_dot, m_dot_ref, dtype)


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_modulate_gradients(shape, dtype):
    """Autograd through the op: the cpu primal backward (dx, dshift, dscale) vs float64 autograd
    of the plain primal formula, with shift/scale as non-contiguous chunks of one tensor."""
    batch, _, dim = shape
    x = torch.randn(shape).to(dtype).requires_grad_()
    mod = torch.randn(batch, 6 * dim).to(dtype).requires_grad_()
    x_dot = torch.randn(shape).to(dtype)
    mod_dot = torch.randn(batch, 6 * dim).to(dtype)
    weight = torch.randn(shape, dtype=torch.float64)
    shift, scale = mod.chunk(6, dim=1)[:2]
    m, m_dot = mfkernels.layernorm_modulate_jvp(
        x, x_dot, shift, scale, *mod_dot.chunk(6, dim=1)[:2], backend="cpu"
    )
    assert not m_dot.requires_grad
    (m.double() * weight).sum().backward()

    x64 = x.detach().double().requires_grad_()
    mod64 = mod.detach().double().requires_grad_()
    shift64, scale64 = mod64.chunk(6, dim=1)[:2]
    (reference.layernorm_modulate(x64, shift64, scale64) * weight).sum().backward()
    assert_close("dx", x.grad, x64.grad, dtype)
    assert_close("dshift", mod.grad[:, :dim], mod64.grad[:, :dim], dtype)
    assert_close("dscale", mod.grad[:, dim : 2 * dim], mod64.grad[:, dim : 2 * dim], dtype)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layernorm_modulate_backward_op(dtype):
    """The backward op alone (its own rounding: dshift/dscale in the accumulation dtype),
    with tokens not a multiple of the 32-row reduction chunk."""
    x, _, _, scale, _, _ = ln_inputs((3, 70, 72), dtype)
    grad_m = torch.randn_like(x)
    dx, dshift, dscale = csrc.layernorm_modulate_backward(grad_m, x, scale, 1e-6)
    assert dshift.dtype == reference.compute_dtype(dtype)
    for name, out, ref in zip(
        ("dx", "dshift", "dscale"),
        (dx, dshift, dscale),
        reference.layernorm_modulate_backward(*f64(grad_m, x, scale)),
    ):
        assert_close(name, out, ref, dtype)


@needs_ext
def test_layernorm_modulate_mixed_dtypes():
    """Autocast hands fp32 activations with bf16 modulation (and the reverse)."""
    for x_dtype, mod_dtype in [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32)]:
        inputs = ln_inputs((2, 17, 72), x_dtype, mod_dtype)
        m, m_dot = mfkernels.layernorm_modulate_jvp(*inputs, backend="cpu")
        m_ref, m_dot_ref = reference.layernorm_modulate_jvp(*f64(*inputs))
        tol_dtype = torch.bfloat16 if torch.bfloat16 in (x_dtype, mod_dtype) else x_dtype
        assert m.dtype == x_dtype
        assert_close("m", m, m_ref, tol_dtype)
        assert_close("m_dot", m_dot, m_dot_ref, tol_dtype)


@needs_ext
def test_layernorm_modulate_constant_rows_and_eps():
    """A constant row has zero variance: the output is shift (eps keeps rstd finite)."""
    x = torch.full((1, 3, 72), 2.5)
    x_dot = torch.randn(1, 3, 72)
    shift, scale, shift_dot, scale_dot = (torch.randn(1, 72) for _ in range(4))
    m, m_dot = mfkernels.layernorm_modulate_jvp(
        x, x_dot, shift, scale, shift_dot, scale_dot, eps=1e-5, backend="cpu"
    )
    m_ref, m_dot_ref = reference.layernorm_modulate_jvp(
        *f64(x, x_dot, shift, scale, shift_dot, scale_dot), eps=1e-5
    )
    assert_close("m", m, m_ref, torch.float32)
    assert_close("m_dot", m_dot, m_dot_ref, torch.float32)


# ---------------------------------------------------------------------- activations


@needs_ext
@pytest.mark.parametrize("shape", [(1, 1, 72), (2, 17, 288), (2, 130, 1536)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_gelu_tanh_jvp(shape, dtype, with_bias):
    x = (torch.randn(shape) * 3).to(dtype)
    x_dot = torch.randn(shape).to(dtype)
    bias = torch.randn(shape[-1]).to(dtype) if with_bias else None
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend="cpu")
    y_ref, y_dot_ref = reference.gelu_tanh_jvp(*f64(x, x_dot, bias))
    assert_close("y", y, y_ref, dtype)
    assert_close("y_dot", y_dot, y_dot_ref, dtype)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias_dtype", [None, "same", torch.float32])
def test_gelu_tanh_gradients(dtype, bias_dtype):
    """dx and dbias of the CPU backward kernel against the float64 reference backend's."""
    x = (torch.randn(2, 17, 288) * 3).to(dtype)
    grad = torch.randn(2, 17, 288).to(dtype)
    bias = None if bias_dtype is None else torch.randn(288).to(dtype if bias_dtype == "same" else bias_dtype)

    def grads(backend, x, bias, grad):
        x = x.detach().requires_grad_()
        bias = None if bias is None else bias.detach().requires_grad_()
        y, _ = mfkernels.gelu_tanh_jvp(x, torch.zeros_like(x), bias, backend=backend)
        y.backward(grad)
        return x.grad, None if bias is None else bias.grad

    got = grads("cpu", x, bias, grad)
    ref = grads("reference", *f64(x, bias, grad))
    assert got[0].dtype == dtype
    assert_close("dx", got[0], ref[0], dtype)
    if bias is not None:
        assert got[1].dtype == bias.dtype
        coarser = max(dtype, bias.dtype, key=lambda d: torch.finfo(d).eps)
        assert_close("dbias", got[1], ref[1], coarser)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gelu_tanh_backward_bias_gradient_is_the_same_for_any_thread_count(dtype):
    """The CPU kernel sums its bias gradient in fixed chunks of rows, then the chunks in order."""
    x, grad = (torch.randn(3, 130, 96) * 3).to(dtype), torch.randn(3, 130, 96).to(dtype)
    bias = torch.randn(96)
    threads = torch.get_num_threads()
    try:
        sums = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            sums.append(csrc.gelu_tanh_backward(grad, x, bias)[1])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(s, sums[0]) for s in sums)


@needs_ext
def test_gelu_tanh_jvp_fp32_bias_on_bf16_input_and_extremes():
    """An fp32 bias (an nn.Linear parameter under autocast) on bf16 activations; and inputs far
    in both tails, where tanh saturates (no inf/NaN from the exp-based tanh)."""
    x = torch.randn(2, 17, 72).bfloat16()
    x_dot = torch.randn(2, 17, 72).bfloat16()
    bias = torch.randn(72)
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend="cpu")
    y_ref, y_dot_ref = reference.gelu_tanh_jvp(*f64(x, x_dot, bias))
    assert_close("y", y, y_ref, torch.bfloat16)
    assert_close("y_dot", y_dot, y_dot_ref, torch.bfloat16)

    x = torch.tensor([[-1e4, -200.0, -30.0, -9.0, -1e-4, 0.0, 1e-4, 9.0, 30.0, 200.0, 1e4]])
    x_dot = torch.ones_like(x)
    y, y_dot = mfkernels.gelu_tanh_jvp(x, x_dot, backend="cpu")
    y_ref, y_dot_ref = reference.gelu_tanh_jvp(*f64(x, x_dot))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_dot.double(), y_dot_ref, rtol=1e-5, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("shape", [(1,), (3, 72), (2, 17, 384), (4097,)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_jvp(shape, dtype):
    x = (torch.randn(shape) * 4).to(dtype)
    x_dot = torch.randn(shape).to(dtype)
    y, y_dot = mfkernels.silu_jvp(x, x_dot, backend="cpu")
    y_ref, y_dot_ref = reference.silu_jvp(*f64(x, x_dot))
    assert_close("y", y, y_ref, dtype)
    assert_close("y_dot", y_dot, y_dot_ref, dtype)


@needs_ext
def test_silu_jvp_extremes():
    x = torch.tensor([-1e4, -100.0, -88.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 88.0, 100.0, 1e4])
    y, y_dot = mfkernels.silu_jvp(x, torch.ones_like(x), backend="cpu")
    y_ref, y_dot_ref = reference.silu_jvp(*f64(x, torch.ones_like(x)))
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y_dot.double(), y_dot_ref, rtol=1e-5, atol=1e-6)
    nan = torch.tensor([float("nan"), 1.0])
    assert torch.isnan(mfkernels.silu_jvp(nan, nan, backend="cpu")[0][0])


# ------------------------------------------------------------------- gated residual


@needs_ext
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_residual_jvp(shape, dtype):
    batch, _, dim = shape
    x, x_dot, f, f_dot = (torch.randn(shape).to(dtype) for _ in range(4))
    gate, gate_dot = modulation(batch, dim, dtype)
    y, y_dot = mfkernels.gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot, backend="cpu")
    y_ref, y_dot_ref = reference.gated_residual_jvp(*f64(x, x_dot, gate, gate_dot, f, f_dot))
    assert_close("y", y, y_ref, dtype)
    assert_close("y_dot", y_dot, y_dot_ref, dtype)


@needs_ext
def test_gated_residual_jvp_mixed_dtypes():
    """Under autocast the residual stream is fp32 while the branch output and gate are bf16."""
    x, x_dot = torch.randn(2, 17, 72), torch.randn(2, 17, 72)
    f, f_dot = torch.randn(2, 17, 72).bfloat16(), torch.randn(2, 17, 72).bfloat16()
    gate, gate_dot = modulation(2, 72, torch.bfloat16)
    y, y_dot = mfkernels.gated_residual_jvp(x, x_dot, gate, gate_dot, f, f_dot, backend="cpu")
    y_ref, y_dot_ref = reference.gated_residual_jvp(*f64(x, x_dot, gate, gate_dot, f, f_dot))
    assert y.dtype == torch.float32
    # Inputs are exact in bf16, math in fp32: fp32 accuracy.
    assert_close("y", y, y_ref, torch.float32)
    assert_close("y_dot", y_dot, y_dot_ref, torch.float32)


# ------------------------------------------------------------- every CPU ISA build


@needs_ext
@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_isa_build(name, dtype, isa):
    """The avx512, avx2 and base builds each compute every op correctly (tails included:
    dim 72 + 3 is no multiple of any vector width)."""
    use_isa(name)
    shape = (2, 17, 75)
    inputs = ln_inputs(shape, dtype)
    for out, ref in zip(
        mfkernels.layernorm_modulate_jvp(*inputs, backend="cpu"),
        reference.layernorm_modulate_jvp(*f64(*inputs)),
    ):
        assert_close(f"ln_modulate[{name}]", out, ref, dtype)
    grad_m = torch.randn(shape).to(dtype)
    got = csrc.layernorm_modulate_backward(grad_m, inputs[0], inputs[3], 1e-6)
    for out, ref in zip(got, reference.layernorm_modulate_backward(*f64(grad_m, inputs[0], inputs[3]))):
        assert_close(f"ln_modulate_backward[{name}]", out, ref, dtype)
    x, x_dot = (torch.randn(shape) * 3).to(dtype), torch.randn(shape).to(dtype)
    bias = torch.randn(75).to(dtype)
    for out, ref in zip(
        mfkernels.gelu_tanh_jvp(x, x_dot, bias, backend="cpu"), reference.gelu_tanh_jvp(*f64(x, x_dot, bias))
    ):
        assert_close(f"gelu[{name}]", out, ref, dtype)
    y, y_ref = mfkernels.gelu_tanh(x, bias, backend="cpu"), reference.gelu_tanh(*f64(x, bias))
    assert_close(f"gelu_value[{name}]", y, y_ref, dtype)
    for out, ref in zip(mfkernels.silu_jvp(x, x_dot, backend="cpu"), reference.silu_jvp(*f64(x, x_dot))):
        assert_close(f"silu[{name}]", out, ref, dtype)
    gate, gate_dot = modulation(2, 75, dtype)
    args = (x, x_dot, gate, gate_dot, inputs[0], inputs[1])
    for out, ref in zip(
        mfkernels.gated_residual_jvp(*args, backend="cpu"), reference.gated_residual_jvp(*f64(*args))
    ):
        assert_close(f"gated_residual[{name}]", out, ref, dtype)


@needs_ext
def test_results_do_not_depend_on_threads():
    inputs = ln_inputs((4, 130, 384), torch.float32)
    grad_m = torch.randn(4, 130, 384)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (
            *csrc.layernorm_modulate_jvp(*inputs),
            *csrc.layernorm_modulate_backward(grad_m, inputs[0], inputs[3]),
        )
        torch.set_num_threads(max(2, threads))
        many = (
            *csrc.layernorm_modulate_jvp(*inputs),
            *csrc.layernorm_modulate_backward(grad_m, inputs[0], inputs[3]),
        )
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------ bad input


@needs_ext
def test_non_contiguous_activations_are_copied():
    x = torch.randn(2, 72, 17).transpose(1, 2)
    x_dot = torch.randn(2, 72, 17).transpose(1, 2)
    inputs = (x, x_dot, *modulation(2, 72, torch.float32), *modulation(2, 72, torch.float32))
    for out, ref in zip(
        mfkernels.layernorm_modulate_jvp(*inputs, backend="cpu"),
        reference.layernorm_modulate_jvp(*f64(*inputs)),
    ):
        assert_close("m", out, ref, torch.float32)
    # A modulation vector whose columns are strided (not a plain chunk) is copied too.
    shift = torch.randn(72, 2).t()
    args = (x, x_dot, shift, *inputs[3:])
    for out, ref in zip(
        mfkernels.layernorm_modulate_jvp(*args, backend="cpu"), reference.layernorm_modulate_jvp(*f64(*args))
    ):
        assert_close("m", out, ref, torch.float32)


@needs_ext
@pytest.mark.parametrize("shape", [(0, 17, 72), (2, 0, 72)], ids=["no_samples", "no_tokens"])
def test_empty_inputs_launch_nothing(shape):
    """An empty batch (or no tokens) gives empty values and tangents and zero modulation
    gradients, as the reference does; the extension is not called with empty tensors."""
    batch, _, dim = shape
    x, x_dot, f, f_dot = (torch.randn(shape, requires_grad=i == 0) for i in range(4))
    shift, scale, shift_dot, scale_dot = (torch.randn(batch, dim, requires_grad=i < 2) for i in range(4))
    m, m_dot = mfkernels.layernorm_modulate_jvp(x, x_dot, shift, scale, shift_dot, scale_dot, backend="cpu")
    h, h_dot = mfkernels.gelu_tanh_jvp(m, m_dot, torch.randn(dim), backend="cpu")
    s, s_dot = mfkernels.silu_jvp(h, h_dot, backend="cpu")
    y, y_dot = mfkernels.gated_residual_jvp(x, x_dot, shift, shift_dot, s, s_dot, backend="cpu")
    assert all(t.shape == shape for t in (m, m_dot, h, h_dot, s, s_dot, y, y_dot))
    with warnings.catch_warnings():  # csrc has no gated residual backward: the reference runs it
        warnings.filterwarnings("ignore", "mfkernels.gated_residual_backward")
        y.sum().backward()
    assert x.grad.shape == shape
    zeros = torch.zeros(batch, dim)
    assert torch.equal(shift.grad, zeros) and torch.equal(scale.grad, zeros)


@needs_ext
def test_public_api_names_the_bad_argument():
    x, x_dot, shift, scale, shift_dot, scale_dot = ln_inputs((2, 17, 72), torch.float32)
    with pytest.raises(ValueError, match="shift"):
        mfkernels.layernorm_modulate_jvp(x, x_dot, shift[:, :8], scale, shift_dot, scale_dot, backend="cpu")
    with pytest.raises(TypeError, match="x_dot"):
        mfkernels.layernorm_modulate_jvp(x, x_dot.double(), shift, scale, shift_dot, scale_dot, backend="cpu")
    with pytest.raises(ValueError, match="x_dot"):
        mfkernels.layernorm_modulate_jvp(x, x_dot[:, :3], shift, scale, shift_dot, scale_dot, backend="cpu")
    with pytest.raises(ValueError, match="scale"):
        mfkernels.layernorm_modulate_jvp(
            x, x_dot, shift, scale.to("meta"), shift_dot, scale_dot.to("meta"), backend="cpu"
        )
    with pytest.raises(ValueError, match="bias"):
        mfkernels.gelu_tanh_jvp(x, x_dot, torch.randn(71), backend="cpu")
    with pytest.raises(ValueError, match="f"):
        mfkernels.gated_residual_jvp(x, x_dot, shift, shift_dot, x[:1], x_dot[:1], backend="cpu")
    with pytest.raises(TypeError, match="x"):
        mfkernels.silu_jvp(torch.ones(3, dtype=torch.int32), torch.ones(3, dtype=torch.int32), backend="cpu")


def targ(t, dtype=None, shape=None, stride=None, device=-1, ptr=None):
    """A TensorArg describing t, with any field overridden (to build bad calls)."""
    code = csrc.DTYPE_CODES[t.dtype] if dtype is None else dtype
    return _C.TensorArg(
        t.data_ptr() if ptr is None else ptr,
        code,
        list(t.shape if shape is None else shape),
        list(t.stride() if stride is None else stride),
        device,
    )


@needs_ext
def test_extension_checks_every_argument():
    """Calls straight into _C with bad descriptors raise ValueError/TypeError naming the
    argument (the C++ checks are the second line behind the Python wrapper)."""
    x, x_dot, shift, scale, shift_dot, scale_dot = ln_inputs((2, 17, 72), torch.float32)
    m, m_dot = torch.empty_like(x), torch.empty_like(x)
    good = dict(
        x=targ(x), x_dot=targ(x_dot), shift=targ(shift), scale=targ(scale), shift_dot=targ(shift_dot),
        scale_dot=targ(scale_dot), m=targ(m), m_dot=targ(m_dot), eps=1e-6,
    )  # fmt: skip
    _C.ln_modulate_jvp(**good)  # the good call runs
    bad_cases = [
        (ValueError, "x must be contiguous", dict(x=targ(x, stride=(17 * 72, 1, 17)))),
        (TypeError, "x_dot must have dtype float32", dict(x_dot=targ(x_dot, dtype=2))),
        (TypeError, "x must be float32, float16, bfloat16 or float64", dict(x=targ(x, dtype=9))),
        (ValueError, "m_dot must have the shape of x", dict(m_dot=targ(m_dot, shape=(2, 16, 72)))),
        (ValueError, r"shift must have shape \(2, 72\)", dict(shift=targ(shift, shape=(2, 71)))),
        (ValueError, "scale must have unit stride", dict(scale=targ(scale, stride=(432, 2)))),
        (ValueError, "shift_dot is on cuda:0 but x is on cpu", dict(shift_dot=targ(shift_dot, device=0))),
        (ValueError, "x must be \\(batch, tokens, dim\\)", dict(x=targ(x, shape=(34, 72), stride=(72, 1)))),
        (ValueError, "scale_dot has no data pointer", dict(scale_dot=targ(scale_dot, ptr=0))),
        (ValueError, "eps must be non-negative", dict(eps=-1.0)),
    ]
    if not _C.WITH_CUDA:
        cuda_everywhere = {k: targ(v, device=0) for k, v in dict(x=x, x_dot=x_dot, m=m, m_dot=m_dot).items()}
        cuda_everywhere.update({k: targ(v, device=0) for k, v in dict(shift=shift, scale=scale).items()})
        cuda_everywhere.update(
            {k: targ(v, device=0) for k, v in dict(shift_dot=shift_dot, scale_dot=scale_dot).items()}
        )
        bad_cases.append((ValueError, "built without CUDA", cuda_everywhere))
    for error, message, override in bad_cases:
        with pytest.raises(error, match=message):
            _C.ln_modulate_jvp(**{**good, **override})

    grad_m, dx = torch.randn_like(x), torch.empty_like(x)
    dshift, dscale = torch.empty(2, 72), torch.empty(2, 72)
    good_bwd = dict(
        grad_m=targ(grad_m),
        x=targ(x),
        scale=targ(scale),
        dx=targ(dx),
        dshift=targ(dshift),
        dscale=targ(dscale),
        eps=1e-6,
    )
    _C.ln_modulate_backward(**good_bwd)
    with pytest.raises(TypeError, match="dshift must have dtype float32"):
        _C.ln_modulate_backward(**{**good_bwd, "dshift": targ(dshift.double())})
    with pytest.raises(ValueError, match="grad_m must have the shape of x"):
        _C.ln_modulate_backward(**{**good_bwd, "grad_m": targ(grad_m, shape=(2, 17, 71))})
    with pytest.raises(ValueError, match="bias must have shape"):
        _C.gelu_tanh_jvp(targ(x), targ(x_dot), targ(shift), targ(m), targ(m_dot))
    bias, dbias = torch.randn(72), torch.empty(72)
    _C.gelu_tanh_backward(targ(x), targ(x_dot), targ(bias), targ(m), targ(dbias))
    with pytest.raises(ValueError, match="bias and dbias must be given together"):
        _C.gelu_tanh_backward(targ(x), targ(x_dot), targ(bias), targ(m), None)
    with pytest.raises(TypeError, match="dbias must have dtype float32"):
        _C.gelu_tanh_backward(targ(x), targ(x_dot), targ(bias), targ(m), targ(dbias.double()))
    with pytest.raises(ValueError, match="grad_y must have the shape of x"):
        _C.gelu_tanh_backward(targ(x), targ(x_dot[:1]), targ(bias), targ(m), targ(dbias))
    with pytest.raises(TypeError, match="y_dot must have dtype"):
        _C.silu_jvp(targ(x), targ(x_dot), targ(m), targ(m_dot.double()))
    with pytest.raises(ValueError, match="f must have the shape of x"):
        _C.gated_residual_jvp(
            targ(x),
            targ(x_dot),
            targ(shift),
            targ(shift_dot),
            targ(x[:1]),
            targ(x_dot[:1]),
            targ(m),
            targ(m_dot),
        )


@needs_ext
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a usable GPU")
def test_cuda_call_without_a_gpu_raises():
    """With CUDA compiled in but no GPU/driver, a CUDA-device call is a RuntimeError, not a crash."""
    if not _C.WITH_CUDA:
        pytest.skip("mfkernels._C was built without CUDA")
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="CUDA"):
        _C.silu_jvp(*(targ(x, device=0) for _ in range(4)))


@needs_ext
def test_cpu_backend_falls_back_for_unsupported_dtype():
    """A dtype the kernels do not take goes to reference with a one-time warning."""
    reason = csrc.cpu_unsupported(torch.zeros(2, dtype=torch.complex64))
    assert reason is not None and "complex64" in reason
    assert csrc.cpu_unsupported(torch.zeros(2), 1e-6) is None


# -------------------------------------------------------------- torch.library / model


@needs_ext
def test_opcheck_cpu_backend():
    x, x_dot, shift, scale, shift_dot, scale_dot = ln_inputs((2, 17, 72), torch.float32)
    x.requires_grad_()
    shift.requires_grad_()
    scale.requires_grad_()
    ops = torch.ops.mfkernels
    torch.library.opcheck(
        ops.layernorm_modulate_jvp.default, (x, x_dot, shift, scale, shift_dot, scale_dot, 1e-6, "cpu")
    )
    torch.library.opcheck(
        ops.layernorm_modulate_backward.default,
        (torch.randn(2, 17, 72), x.detach(), scale.detach(), 1e-6, "cpu"),
    )
    h = torch.randn(2, 17, 288, requires_grad=True)
    bias = torch.randn(288, requires_grad=True)
    torch.library.opcheck(ops.gelu_tanh_jvp.default, (h, torch.randn(2, 17, 288), bias, "cpu"))
    torch.library.opcheck(ops.silu_jvp.default, (h, torch.randn(2, 17, 288), "cpu"))
    f = torch.randn(2, 17, 72, requires_grad=True)
    # csrc has no gated residual backward: opcheck's backward runs the reference, said once
    # (docs/design.md section 4), and no other fallback may happen.
    with pytest.warns(UserWarning, match="gated_residual_backward: backend 'cpu' is not available"):
        torch.library.opcheck(
            ops.gated_residual_jvp.default,
            (x, x_dot, shift, shift_dot.detach(), f, torch.randn(2, 17, 72), "cpu"),
        )


@needs_ext
def test_dit_jvp_on_cpu_backend_matches_reference():
    """A whole tiny DiT's (u, du/dt) and the gradient of a loss on u, cpu backend vs reference."""
    from meanflow.models import DiT

    torch.manual_seed(0)
    model = DiT.from_config("DiT-T/4", num_classes=10, in_channels=1, input_size=16)
    for p in model.parameters():  # adaLN-Zero would make every modulation zero: perturb it
        torch.nn.init.normal_(p, std=0.05)
    z, v = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    r, t, y = torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.9]), torch.tensor([3, 7])
    outs = {}
    for backend in ("cpu", "reference"):
        model.zero_grad()
        model.backend = backend
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ops without a cpu kernel (attention) use reference
            u, du = model.jvp(z, r, t, y, v)
            u.square().sum().backward()
        outs[backend] = (u.detach(), du, [p.grad.clone() for p in model.parameters()])
    assert_close("u", outs["cpu"][0], outs["reference"][0], torch.float32)
    assert_close("du", outs["cpu"][1], outs["reference"][1], torch.float32)
    for g_cpu, g_ref in zip(outs["cpu"][2], outs["reference"][2]):
        assert_close("grad", g_cpu, g_ref, torch.float32)
