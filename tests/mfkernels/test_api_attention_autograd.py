"""``mfkernels.attention_jvp`` as autograd sees it: the default scale is q's head dim's (as
SDPA's) when v's head dim differs, and the tangent output takes no gradient (a stop-gradient:
a loss on it must detach it, not lose its term in silence)."""

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_close
from torch.nn.attention import SDPBackend, sdpa_kernel

import mfkernels


def test_the_default_scale_is_q_head_dims_where_v_has_another():
    q, k = torch.randn(2, 1, 2, 7, 16, dtype=torch.float64).unbind(0)
    v = torch.randn(1, 2, 7, 4, dtype=torch.float64)
    q_dot, k_dot, v_dot = (torch.randn_like(t) for t in (q, k, v))
    o, o_dot, _ = mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, backend="reference")
    with sdpa_kernel(SDPBackend.MATH):
        ref_o, ref_o_dot = torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (q_dot, k_dot, v_dot))
    assert_close("O", o, ref_o, torch.float64)
    assert_close("O'", o_dot, ref_o_dot, torch.float64)


@pytest.mark.parametrize("backend", ["reference", None])
def test_only_the_value_takes_a_gradient(backend):
    q, k, v, q_dot, k_dot, v_dot = torch.randn(6, 1, 2, 5, 8).unbind(0)
    q.requires_grad_()
    o, o_dot, lse = mfkernels.attention_jvp(q, k, v, q_dot, k_dot, v_dot, backend=backend)
    assert o.requires_grad
    assert not o_dot.requires_grad and not lse.requires_grad
