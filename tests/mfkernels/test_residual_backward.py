"""The gated residual's primal backward (``dx = dy``, ``df = dy g``, ``dg = sum_tokens dy f``):
the Triton kernel against the float64 reference, and the gradients of
``mfkernels.gated_residual_jvp`` against torch autograd of the plain formula ``x + g f``
(docs/design.md sections 2-3: fp32 <= 1e-5, bf16/fp16 <= 3e-2 relative to the reference's max
abs). The gate is a chunk of a ``(batch, 6 * dim)`` projection, as the DiT makes it. ``dg`` is
reduced over token chunks in two stages, so every shape runs at several chunk sizes. In the
CPU interpreter bf16 casts truncate: there 16-bit outputs are held to their loose tolerance
and the fp32 ``dg`` of 16-bit inputs to fp32's; the ``gpu`` tests check 16-bit rounding."""

import pytest
import torch
from numerics import DEVICE, assert_close, needs_triton, rel_err

import mfkernels
from mfkernels import dispatch, reference
from mfkernels.backends.triton.gated_residual import backward_unsupported, gated_residual_backward_triton
from mfkernels.backends.triton.launch import MAX_ROW_DIM
from mfkernels.backends.triton.triton_compat import INTERPRET

GATE_CHUNK = 2  # g1 of DiTBlock's six modulation chunks


def make_inputs(batch, tokens, dim, grad_dtype, f_dtype, mod_dtype):
    """``(grad_y, mod, f)``; the gate is chunk ``GATE_CHUNK`` of ``mod`` (row stride 6 dim)."""
    grad = torch.randn(batch, tokens, dim, device=DEVICE).to(grad_dtype)
    mod = torch.randn(batch, 6 * dim, device=DEVICE).to(mod_dtype)
    f = torch.randn(batch, tokens, dim, device=DEVICE).to(f_dtype)
    return grad, mod, f


def gate_of(mod):
    return mod.chunk(6, dim=1)[GATE_CHUNK]


def check_kernel(grad, gate, f, tokens_per_chunk=None):
    """Kernel outputs against the float64 reference on the same (rounded) inputs: ``dx`` is
    ``grad`` itself, ``dgate`` fp32 at fp32's tolerance, ``df`` at f's dtype's."""
    dx, dgate, df = gated_residual_backward_triton(grad, gate, f, tokens_per_chunk=tokens_per_chunk)
    _, ref_dgate, ref_df = reference.gated_residual_backward(grad.double(), gate.double(), f.double())
    assert dx is grad
    assert dgate.dtype == torch.float32 and df.dtype == f.dtype
    assert_close("dgate", dgate, ref_dgate, torch.float32)
    assert_close("df", df, ref_df, f.dtype)
    return dgate, df


# ----------------------------------------------------------- interpreter-sized (CPU) tests


@needs_triton
@pytest.mark.parametrize("tokens_per_chunk", [None, 1, 5, 64, 1000])
@pytest.mark.parametrize("batch, tokens, dim", [(1, 1, 72), (3, 17, 100), (2, 300, 72)])
def test_kernel_against_float64(batch, tokens, dim, tokens_per_chunk):
    """Ragged tokens and dims; one-token chunks, chunks that end inside a tile of rows, and
    one chunk for all tokens: the sum over chunks gives the same dgate."""
    grad, mod, f = make_inputs(batch, tokens, dim, torch.float32, torch.float32, torch.float32)
    check_kernel(grad, gate_of(mod), f, tokens_per_chunk)


@needs_triton
@pytest.mark.parametrize("batch, tokens, dim", [(3, 17, 1152), (2, 300, 72)])
def test_gpu_tiles(gpu_launch_settings, batch, tokens, dim):
    """The GPU's tiles in the interpreter: two rows of 1152 per loop step; 32-row steps of 72,
    the last one ragged, in chunks of 300 tokens."""
    grad, mod, f = make_inputs(batch, tokens, dim, torch.float32, torch.float32, torch.float32)
    check_kernel(grad, gate_of(mod), f)
    check_kernel(grad, gate_of(mod), f, tokens_per_chunk=7)


@needs_triton
@pytest.mark.parametrize(
    "grad_dtype, f_dtype, mod_dtype",
    [
        (torch.float32, torch.bfloat16, torch.bfloat16),  # autocast: fp32 residual stream
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float32, torch.float16),
        (torch.float32, torch.float32, torch.bfloat16),
    ],
)
def test_kernel_mixed_and_low_precision(grad_dtype, f_dtype, mod_dtype):
    grad, mod, f = make_inputs(3, 17, 100, grad_dtype, f_dtype, mod_dtype)
    check_kernel(grad, gate_of(mod), f, tokens_per_chunk=5)


@needs_triton
def test_kernel_reads_each_tensor_at_its_own_strides():
    """grad_y as a (tokens, batch, dim) buffer seen as (batch, tokens, dim), f a slice of
    longer rows: each with its own strides; a contiguous gate; a column-strided f and an
    all-stride-0 grad_y (copied, not misread)."""
    batch, tokens, dim = 3, 17, 100
    grad = torch.randn(tokens, batch, dim, device=DEVICE).transpose(0, 1)
    f = torch.randn(batch, tokens + 4, dim, device=DEVICE)[:, 2:-2]
    gate = torch.randn(batch, dim, device=DEVICE)
    check_kernel(grad, gate, f, tokens_per_chunk=5)
    check_kernel(grad, gate, torch.randn(batch, dim, tokens, device=DEVICE).transpose(1, 2))
    row = torch.randn(dim, device=DEVICE)
    check_kernel(row.expand(batch, tokens, dim), gate, f)  # stride-0 batch and tokens
    check_kernel(row[:1].expand(batch, tokens, dim), gate, f)  # all stride 0, as sum().backward()


@needs_triton
def test_zero_inputs_give_exact_zeros():
    """Sample 0 has a zero gate, sample 1 a zero f, sample 2 a zero dy, between non-zero
    neighbours (the gate's neighbouring chunks, the other samples): their outputs are exactly
    zero, so no sample reads another's rows, nor the gate another chunk's columns."""
    grad, mod, f = make_inputs(4, 17, 100, torch.float32, torch.float32, torch.float32)
    gate_of(mod)[0] = 0.0
    f[1] = 0.0
    grad[2] = 0.0
    dgate, df = check_kernel(grad, gate_of(mod), f, tokens_per_chunk=5)
    assert torch.count_nonzero(df[0]) == 0 and torch.count_nonzero(dgate[1]) == 0
    assert torch.count_nonzero(df[2]) == 0 and torch.count_nonzero(dgate[2]) == 0
    assert torch.count_nonzero(df[3]) == df[3].numel() and torch.count_nonzero(dgate[3]) == 100


@needs_triton
def test_deterministic():
    grad, mod, f = make_inputs(2, 300, 72, torch.float32, torch.float32, torch.float32)
    first = gated_residual_backward_triton(grad, gate_of(mod), f)
    second = gated_residual_backward_triton(grad, gate_of(mod), f)
    for a, b in zip(first[1:], second[1:]):
        assert torch.equal(a, b)


# -------------------------------------------------- through gated_residual_jvp's autograd


def autograd_grads(x, mod, f, grad, backend=None):
    """``(dx, dmod, df)`` of ``sum(y grad)``: through ``mfkernels.gated_residual_jvp`` on
    ``backend``, or with ``backend=None`` by torch autograd of ``x + g f`` in float64."""
    x, mod, f = (t.detach().requires_grad_() for t in (x, mod, f))
    gate = gate_of(mod)
    if backend is None:
        y = x + gate[:, None] * f
    else:
        zeros = torch.zeros_like
        y, _ = mfkernels.gated_residual_jvp(x, zeros(x), gate, zeros(gate), f, zeros(f), backend=backend)
    y.backward(grad)
    return x.grad, mod.grad, f.grad


@needs_triton
@pytest.mark.parametrize(
    "x_dtype, f_dtype, mod_dtype",
    [
        (torch.float32, torch.float32, torch.float32),
        (torch.float32, torch.bfloat16, torch.bfloat16),  # autocast DiT block
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    ],
)
@pytest.mark.parametrize("batch, tokens, dim", [(1, 1, 72), (2, 300, 100)])
def test_autograd_against_the_plain_formula(batch, tokens, dim, x_dtype, f_dtype, mod_dtype):
    """Each gradient in its input's dtype and tolerance, the gate's only in its chunk, dx is
    dy itself, and the backward ran on the Triton kernel (no silent fallback)."""
    grad, mod, f = make_inputs(batch, tokens, dim, x_dtype, f_dtype, mod_dtype)
    x = torch.randn(batch, tokens, dim, device=DEVICE).to(x_dtype)
    with dispatch.record_backends() as ran:
        out = autograd_grads(x, mod, f, grad, "triton")
    assert ran["gated_residual_backward"] == {"triton"}
    ref = autograd_grads(x.double(), mod.double(), f.double(), grad.double())
    for name, o, r, t in zip(("dx", "dmod", "df"), out, ref, (x, mod, f)):
        assert o.dtype == t.dtype, name
        assert_close(name, o, r, o.dtype)
    assert torch.equal(out[0], grad)
    outside = torch.ones(6, dtype=torch.bool)
    outside[GATE_CHUNK] = False
    assert torch.count_nonzero(out[1].view(batch, 6, dim)[:, outside]) == 0


@needs_triton
def test_reference_backend_is_the_oracle_cast():
    """On the reference backend the gradients are the oracle's, cast to the inputs' dtypes,
    bit for bit (autocast dtypes: fp32 x, bf16 f and gate)."""
    grad, mod, f = make_inputs(2, 17, 100, torch.float32, torch.bfloat16, torch.bfloat16)
    x = torch.randn_like(grad)
    dx, dmod, df = autograd_grads(x, mod, f, grad, "reference")
    _, ref_dgate, ref_df = reference.gated_residual_backward(grad, gate_of(mod), f)
    assert torch.equal(dx, grad)
    assert torch.equal(gate_of(dmod), ref_dgate.to(torch.bfloat16))
    assert torch.equal(df, ref_df.to(torch.bfloat16))


@needs_triton
def test_unsupported_reasons():
    g, v = torch.randn(1, 2, 8, device=DEVICE), torch.randn(1, 8, device=DEVICE)
    assert backward_unsupported(g, v, g) is None
    assert "float64 for f" in backward_unsupported(g, v, g.double())
    wide = torch.empty(1, 1, MAX_ROW_DIM + 1, device=DEVICE)
    assert "dim" in backward_unsupported(wide, wide[:, 0], wide)


@needs_triton
def test_too_wide_a_row_falls_back_with_a_warning():
    """The forward kernel tiles columns and takes the row; the backward's whole-row tile
    cannot, and falls back (once, with a warning) to the reference: the same gradients."""
    if DEVICE == "cpu" and not INTERPRET:
        pytest.skip("triton backend needs CUDA or TRITON_INTERPRET=1")
    dispatch.forget_warnings("gated_residual_backward")
    grad, mod, f = make_inputs(1, 1, MAX_ROW_DIM + 1, torch.float32, torch.float32, torch.float32)
    x = torch.randn_like(grad)
    with pytest.warns(UserWarning, match=f"gated_residual_backward.*at most {MAX_ROW_DIM}.*'reference'"):
        out = autograd_grads(x, mod, f, grad, "triton")
    for name, o, r in zip(("dx", "dmod", "df"), out, autograd_grads(x, mod, f, grad, "reference")):
        assert torch.equal(o, r), name


@needs_triton
def test_opcheck():
    grad, mod, f = make_inputs(2, 3, 8, torch.float32, torch.bfloat16, torch.bfloat16)
    op = torch.ops.mfkernels.gated_residual_backward.default
    torch.library.opcheck(op, (grad, gate_of(mod), f, "triton"))


# ---------------------------------------------------------------------- GPU (DiT-XL sizes)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "grad_dtype, f_dtype, mod_dtype",
    [
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float16, torch.float16),
    ],
)
@pytest.mark.parametrize("batch, tokens, dim", [(8, 256, 1152), (3, 130, 72), (2, 1, 1152)])
def test_gpu_against_float64(batch, tokens, dim, grad_dtype, f_dtype, mod_dtype):
    grad, mod, f = make_inputs(batch, tokens, dim, grad_dtype, f_dtype, mod_dtype)
    check_kernel(grad, gate_of(mod), f)
    x = torch.randn(batch, tokens, dim, device=DEVICE).to(grad_dtype)
    out = autograd_grads(x, mod, f, grad, "triton")
    ref = autograd_grads(x.double(), mod.double(), f.double(), grad.double())
    for name, o, r in zip(("dx", "dmod", "df"), out, ref):
        assert_close(name, o, r, o.dtype)


@pytest.mark.gpu
def test_gpu_bf16_error_within_twice_torch():
    """flash-attention's rule on the bf16 gradients (in their bf16 dtypes, as autograd hands
    them on): our error vs float64 is at most 2x that of the same math done by torch in bf16
    (plus a small floor for outputs torch happens to get exact)."""
    grad, mod, f = make_inputs(8, 256, 1152, torch.bfloat16, torch.bfloat16, torch.bfloat16)
    gate = gate_of(mod)
    _, dgate, df = gated_residual_backward_triton(grad, gate, f)
    _, ref_dgate, ref_df = reference.gated_residual_backward(grad.double(), gate.double(), f.double())
    torch_dgate, torch_df = (grad * f).sum(1), grad * gate[:, None]
    for name, o, t, r in zip(
        ("dgate", "df"), (dgate.bfloat16(), df), (torch_dgate, torch_df), (ref_dgate, ref_df)
    ):
        assert rel_err(o, r) <= 2 * rel_err(t, r) + 1e-3, name
