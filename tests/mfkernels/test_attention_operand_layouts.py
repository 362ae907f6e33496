"""The Triton attention kernels on operands that each have a layout of their own: the kernels
take every stride of Q, K, V and dO separately, and one read with another operand's strides
is right only while the two share a layout (a packed qkv or kv, dO as ``randn_like(O)``, as in
test_attention_jvp.py). Here no two share a batch, head or row stride, nor K and V or Q and dO
a head-dim stride: Q rows of a longer buffer, K heads-inner, V every other column, dO
transposed (its rows at unit stride), against the float64 reference (docs/design.md section 3)."""

import pytest
import torch
from numerics import DEVICE, assert_close, input_scale, needs_triton

from mfkernels import reference
from mfkernels.backends.triton.attention import attention_backward_triton, attention_jvp_triton

B, H = 2, 3  # 3 heads: a heads-inner row (H d) never equals every other column's (2 d)


def heads_inner(n, d):
    return torch.randn(B, n, H, d, device=DEVICE).transpose(1, 2)


def every_other_column(n, d):
    return torch.randn(B, H, n, 2 * d, device=DEVICE)[..., ::2]


def transposed(n, d):
    return torch.randn(B, H, d, n, device=DEVICE).transpose(-1, -2)


def rows_of_a_longer_buffer(n, d):
    return torch.randn(B, H, n + 1, d, device=DEVICE)[:, :, :n]


@needs_triton
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_q, n_k, d", [(40, 37, 72), (17, 33, 40)])  # d = 64 + 16 split; 40 padded
def test_fp32_q_k_v_and_grad_of_four_layouts(n_q, n_k, d, causal):
    q, q_dot = rows_of_a_longer_buffer(n_q, d), rows_of_a_longer_buffer(n_q, d)
    k, k_dot = heads_inner(n_k, d), heads_inner(n_k, d)
    v, v_dot = every_other_column(n_k, d), every_other_column(n_k, d)
    grad_o = transposed(n_q, d)
    strides = {name: t.stride() for name, t in (("q", q), ("k", k), ("v", v), ("dO", grad_o))}
    for dim in range(3):  # the premise: no two operands share a batch, head or row stride
        assert len({s[dim] for s in strides.values()}) == 4, strides
    assert k.stride(3) != v.stride(3) and q.stride(3) != grad_o.stride(3)
    inputs = (q, k, v, q_dot, k_dot, v_dot)
    scale = 0.3
    o, o_dot, lse = attention_jvp_triton(*inputs, scale, causal)
    assert o.stride() != grad_o.stride()
    ref_o, ref_o_dot, ref_lse = reference.attention_jvp(*(t.double() for t in inputs), scale, causal)
    floor = input_scale(*inputs, grad_o)  # an absolute floor at the inputs' magnitude
    for name, out, ref in (("O", o, ref_o), ("O'", o_dot, ref_o_dot), ("LSE", lse, ref_lse)):
        assert_close(name, out, ref, 1e-5, floor)
    grads = attention_backward_triton(grad_o, q, k, v, o, lse, scale, causal)
    ref_grads = reference.attention_backward(
        grad_o.double(), q.double(), k.double(), v.double(), ref_o, ref_lse, scale, causal
    )
    for name, out, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert_close(name, out, ref, 1e-5, floor)
