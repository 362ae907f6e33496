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


def _shapes(q=(1, 2, 8, 16), k=(1, 2, 8, 16), v=(1, 2, 8, 16), v_dot=None):
    q, k, v = (torch.randn(s) for s in (q, k, v))
    v_dot = torch.randn_like(v) if v_dot is None else torch.randn(v_dot)
    return q, k, v, torch.randn_like(q), torch.randn_like(k), v_dot


# Where q and k agree and only v (or its tangent, or a flag) is off: each check's second half.
@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (_shapes(v=(2, 2, 8, 16)), {}, ValueError, "share their batch size"),
        (_shapes(q=(1, 4, 8, 16), v=(1, 1, 8, 16)), {}, ValueError, "k and v must have q's heads"),
        (_shapes(k=(1, 2, 0, 16), v=(1, 2, 0, 16)), {}, ValueError, "sequence length of at least 1"),
        (_shapes(v=(1, 2, 8, 0)), {}, ValueError, "head_dim of at least 1"),
        (_shapes(v_dot=(1, 2, 8, 8)), {}, ValueError, "v_dot must have the shape of v"),
        (_shapes(), {"causal": "yes"}, TypeError, "causal must be a bool, got 'yes'"),
    ],
    ids=["v_batch", "v_heads", "no_keys", "v_head_dim_0", "v_dot_shape", "causal_str"],
)
def test_what_only_v_or_a_flag_gets_wrong_is_refused(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        mfkernels.attention_jvp(*args, backend="reference", **kwargs)


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
