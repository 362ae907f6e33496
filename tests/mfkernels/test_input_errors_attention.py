"""Bad arguments to the attention op and the SDPA switch that were taken silently or failed
deep inside: refused with a TypeError/ValueError naming the argument, before any kernel runs."""

import pytest
import torch

import mfkernels


def _qkv():
    q, k, v = (torch.randn(1, 2, 8, 16) for _ in range(3))
    return q, k, v, torch.randn_like(q), torch.randn_like(k), torch.randn_like(v)


@pytest.mark.parametrize("flag", [True, False])
def test_a_causal_flag_passed_as_the_scale_is_refused(flag):
    """``attention_jvp(q, k, v, q_dot, k_dot, v_dot, True)`` read as scale 1.0, not causal."""
    with pytest.raises(TypeError, match=rf"scale must be a number or None, got {flag}.*causal=True"):
        mfkernels.attention_jvp(*_qkv(), flag, backend="reference")


def test_a_number_or_a_one_element_tensor_is_still_a_scale():
    args = _qkv()
    o_float = mfkernels.attention_jvp(*args, 0.5, backend="reference")[0]
    o_tensor = mfkernels.attention_jvp(*args, torch.tensor(0.5), backend="reference")[0]
    torch.testing.assert_close(o_tensor, o_float, rtol=0, atol=0)


@pytest.mark.parametrize("model", ["a string", None, lambda x: x, torch.nn.Linear])
def test_patch_sdpa_refuses_what_is_not_a_module(model):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got "):
        mfkernels.patch_sdpa(model)
    assert not hasattr(model, "_mfk_sdpa_backend")  # nothing was set on it


def test_flash_sdpa_refuses_an_unknown_backend_outside_a_jvp_too():
    """Outside forward AD ``flash_sdpa`` is PyTorch's SDPA: a typo'd backend passed there until
    the first jvp, maybe hours into a run."""
    q, k, v, *_ = _qkv()
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'trition'"):
        mfkernels.flash_sdpa(q, k, v, backend="trition")
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(mfkernels.flash_sdpa(q, k, v, backend="reference"), expected, rtol=0, atol=0)
