"""MFK_ATTENTION_BACKWARD: the primal attention backward by cuDNN or FlashAttention-2 from the
O and LSE of our fused forward (mfkernels/backends/library_attention.py), against the float64
reference. On the CPU ``flash`` is torch's CPU flash backward (the same LSE convention); cuDNN
and the GPU flash kernels run in the ``gpu`` tests."""

import warnings

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton
from test_attention_jvp import grouped_inputs, make_inputs

import mfkernels
from mfkernels import reference
from mfkernels.backends import library_attention
from mfkernels.backends.triton import attention
from mfkernels.backends.triton.attention import attention_backward_triton, attention_jvp_triton

SCALE = 0.3  # not the default 1/sqrt(d): a library left to its default scale is caught


@pytest.fixture
def library_only(monkeypatch):
    """Choose a library's backward; our backward kernels must not run (launching one raises)."""

    def choose(library):
        monkeypatch.setenv(attention.BACKWARD_ENV_VAR, library)
        for name in ("_attn_bwd_dkdv", "_attn_bwd_dq", "_attn_bwd_delta_kernel"):
            monkeypatch.setattr(attention, name, None)

    return choose


def check_library_backward(inputs, tol, causal=False):
    """Our forward's O and LSE into the chosen backward: the reference's dQ, dK, dV."""
    q, k, v = inputs[:3]
    o, _, lse = attention_jvp_triton(*inputs, SCALE, causal)
    grad_o = torch.randn_like(o)
    grads = attention_backward_triton(grad_o, q, k, v, o, lse, SCALE, causal)
    ref_o, _, ref_lse = reference.attention_jvp(*(t.double() for t in inputs), SCALE, causal)
    ref_grads = reference.attention_backward(
        grad_o.double(), q.double(), k.double(), v.double(), ref_o, ref_lse, SCALE, causal
    )
    for name, out, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert out.dtype == q.dtype
        assert_close(name, out, ref, tol)


@needs_triton
@pytest.mark.skipif(DEVICE != "cpu", reason="torch's CPU flash backward: CPU tensors")
@pytest.mark.parametrize(
    "n_q, n_k, d, causal",
    [
        (17, 17, 64, False),
        (130, 130, 72, False),
        (5, 64, 64, False),
        (33, 7, 72, False),
        (130, 130, 72, True),
    ],
)
def test_flash_backward_from_our_forward_on_the_cpu(library_only, n_q, n_k, d, causal):
    library_only("flash")
    check_library_backward(make_inputs(2, 3, n_q, n_k, d, torch.float32), TOL[torch.float32], causal)


@needs_triton
@pytest.mark.skipif(DEVICE != "cpu", reason="torch's CPU flash backward: CPU tensors")
@pytest.mark.parametrize("heads, kv_heads, causal", [(4, 1, False), (6, 2, True)])
def test_flash_backward_takes_grouped_query_heads_on_the_cpu(library_only, heads, kv_heads, causal):
    """K and V with fewer heads go to the library as they are: dK and dV sum their groups."""
    library_only("flash")
    inputs = grouped_inputs(2, heads, kv_heads, 33, 33, 72, torch.float32)
    check_library_backward(inputs, TOL[torch.float32], causal)


@needs_triton
@pytest.mark.skipif(DEVICE != "cpu", reason="torch's CPU flash backward: CPU tensors")
def test_public_api_gradients_through_the_flash_backward(library_only):
    library_only("flash")
    base = make_inputs(1, 2, 40, 40, 72, torch.float32)
    q, k, v = (t.detach().clone().requires_grad_() for t in base[:3])
    o, _, _ = mfkernels.attention_jvp(q, k, v, *base[3:], scale=SCALE, backend="triton")
    o.square().sum().backward()
    ref_o, _, ref_lse = reference.attention_jvp(*(t.double() for t in base), SCALE)
    ref_grads = reference.attention_backward(
        2 * ref_o, *(t.double() for t in base[:3]), ref_o, ref_lse, SCALE
    )
    for name, out, ref in zip(("dQ", "dK", "dV"), (q.grad, k.grad, v.grad), ref_grads):
        assert_close(name, out, ref, TOL[torch.float32])


@needs_triton
def test_a_library_that_cannot_run_falls_back_to_ours_with_one_warning(monkeypatch):
    """cuDNN on CPU tensors (or on fp32 ones on a GPU): our kernels run, said once."""
    monkeypatch.setenv(attention.BACKWARD_ENV_VAR, "cudnn")
    monkeypatch.setattr(attention, "_warned_library_fallbacks", set())
    inputs = make_inputs(1, 2, 17, 17, 64, torch.float32)
    with pytest.warns(UserWarning, match=r"MFK_ATTENTION_BACKWARD=cudnn: .*; running the triton backward"):
        check_library_backward(inputs, TOL[torch.float32])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_library_backward(inputs, TOL[torch.float32])


@needs_triton
def test_a_library_that_fails_falls_back_to_ours_with_a_warning(monkeypatch):
    """A library's own error (no cuDNN plan for a shape, say) is a warning, not a crash."""
    monkeypatch.setenv(attention.BACKWARD_ENV_VAR, "flash")
    monkeypatch.setattr(attention, "_warned_library_fallbacks", set())

    def fails(*args):
        raise RuntimeError("cuDNN Frontend error: no valid engine configs\nmore detail")

    monkeypatch.setattr(library_attention, "attention_backward", fails)
    inputs = make_inputs(1, 2, 17, 17, 64, torch.float32)
    warning = (
        r"MFK_ATTENTION_BACKWARD=flash: flash failed: cuDNN Frontend error: no valid engine configs; running"
    )
    with pytest.warns(UserWarning, match=warning):
        check_library_backward(inputs, TOL[torch.float32])


def test_backward_choice_is_checked(monkeypatch):
    monkeypatch.setenv(attention.BACKWARD_ENV_VAR, "cuDNN")
    with pytest.raises(
        ValueError, match="MFK_ATTENTION_BACKWARD must be one of 'triton', 'cudnn', 'flash', got 'cuDNN'"
    ):
        attention.backward_library()
    monkeypatch.delenv(attention.BACKWARD_ENV_VAR)
    assert attention.backward_library() is None
    monkeypatch.setenv(attention.BACKWARD_ENV_VAR, "flash")
    assert attention.backward_library() == "flash"


def test_unsupported_reasons_on_the_cpu():
    q, v = torch.empty(1, 1, 4, 64), torch.empty(1, 1, 4, 32)
    assert library_attention.unsupported("flash", q, q, q) is None
    assert "CUDA tensors only" in library_attention.unsupported("cudnn", q, q, q)
    assert "v's head_dim" in library_attention.unsupported("flash", q, q, v)
    assert library_attention.unsupported("flash", q, q, q, causal=True) is None
    k = torch.empty(1, 1, 5, 64)  # a library may align a causal mask at the bottom right
    assert "equally long" in library_attention.unsupported("flash", q, k, k, causal=True)
    assert library_attention.unsupported("flash", q, k, k) is None
    heads4 = torch.empty(1, 4, 4, 64)  # grouped-query attention: four query heads, one k/v head
    assert library_attention.unsupported("flash", heads4, q, q) is None
    assert "no grouped-query" in library_attention.unsupported("cudnn", heads4, q, q)
    assert "without a bias" in library_attention.unsupported("flash", q, q, q, bias=torch.zeros(1, 1, 4, 4))


# ------------------------------------------------------------------------------ GPU tests


@pytest.mark.gpu
@pytest.mark.parametrize("library", library_attention.LIBRARIES)
@pytest.mark.parametrize(
    "batch, heads, n_q, n_k, d, causal",
    [
        (4, 16, 256, 256, 72, False),
        (2, 2, 300, 300, 72, False),
        (2, 2, 1000, 777, 64, False),
        (1, 2, 1024, 1024, 128, False),
        (2, 2, 300, 300, 72, True),
    ],
)
def test_gpu_bf16_library_backward_from_our_forward(library_only, library, batch, heads, n_q, n_k, d, causal):
    """DiT-XL/2's attention (q, k, v views of one qkv tensor), ragged lengths, d 64 and 128,
    causal: the LSE we save is the one each library's backward expects."""
    reason = library_attention.unsupported(library, *make_inputs(1, 1, 8, 8, d, torch.bfloat16)[:3])
    if reason is not None:
        pytest.skip(reason)
    library_only(library)
    inputs = make_inputs(batch, heads, n_q, n_k, d, torch.bfloat16)
    check_library_backward(inputs, TOL[torch.bfloat16], causal)


@pytest.mark.gpu
def test_gpu_bf16_flash_backward_of_grouped_query_heads(library_only):
    """FlashAttention-2 sums each group's dK and dV itself (16 query heads over 4 k/v heads)."""
    reason = library_attention.unsupported("flash", *grouped_inputs(1, 4, 1, 8, 8, 64, torch.bfloat16)[:3])
    if reason is not None:
        pytest.skip(reason)
    library_only("flash")
    check_library_backward(grouped_inputs(2, 16, 4, 300, 300, 64, torch.bfloat16), TOL[torch.bfloat16])
