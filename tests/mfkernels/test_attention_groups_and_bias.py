"""Grouped-query attention (fewer key/value heads) and an additive bias (attention masks) on
the Triton attention kernels, against the float64 reference as in test_attention_jvp.py
(whose helpers and kernel-variant fixture these tests share): the interpreter on the CPU,
compiled tiles in the ``gpu`` tests. Every test runs in each kernel variant."""

import pytest
import torch
from numerics import DEVICE, TOL, assert_close, needs_triton
from test_attention_jvp import (  # noqa: F401 (kernel_variant: the fixture every test here takes)
    attention_bias,
    check_against_reference,
    grouped_inputs,
    kernel_variant,
    make_inputs,
)

from mfkernels import reference
from mfkernels.backends.triton.attention import attention_backward_triton, attention_jvp_triton

pytestmark = pytest.mark.usefixtures("kernel_variant")


@needs_triton
@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (3, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_fp32_grouped_query_heads(heads, kv_heads, causal):
    """Grouped-query attention (fewer key/value heads, each read by ``heads // kv_heads`` query
    heads; dK and dV summed over them): ragged query and key tiles, a head dim in two parts."""
    inputs = grouped_inputs(2, heads, kv_heads, 40, 37, 72, torch.float32)
    check_against_reference(inputs, 0.3, 1e-5, causal)


@needs_triton
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")  # 1 / l, log2(l) at l = 0
@pytest.mark.parametrize("kind", ["key_padding", "per_head_key", "per_query"])
@pytest.mark.parametrize(
    "n_q, n_k, d, causal", [(40, 37, 72, False), (17, 70, 16, False), (33, 33, 16, True)]
)
def test_fp32_bias(kind, n_q, n_k, d, causal):
    """An additive bias (attention masks): ragged query and key tiles, a head dim in two
    parts, with the causal mask; rows that see no key give zeros, not NaN."""
    inputs = make_inputs(2, 2, n_q, n_k, d, torch.float32)
    check_against_reference(inputs, 0.3, 1e-5, causal, attention_bias(2, 2, n_q, n_k, torch.float32, kind))


@needs_triton
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize("kind", ["per_head_key", "per_query"])
def test_fp32_grouped_query_heads_with_bias(kind):
    """Both at once (SDPA's enable_gqa with an attn_mask): each query head adds its own bias,
    also in the dK/dV kernel's loop over a group's query heads."""
    inputs = grouped_inputs(2, 4, 2, 40, 37, 72, torch.float32)
    check_against_reference(inputs, 0.3, 1e-5, bias=attention_bias(2, 4, 40, 37, torch.float32, kind))


@pytest.mark.gpu
@pytest.mark.parametrize("heads, kv_heads, n, d", [(8, 2, 300, 72), (16, 4, 1024, 128), (6, 1, 257, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_bf16_grouped_query_heads(heads, kv_heads, n, d, causal):
    """Grouped-query attention on compiled tiles (the first tuned config of each kernel)."""
    inputs = grouped_inputs(2, heads, kv_heads, n, n, d, torch.bfloat16)
    check_against_reference(inputs, d**-0.5, TOL[torch.bfloat16], causal)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["key_padding", "per_head_key", "per_query"])
@pytest.mark.parametrize("n_q, n_k, d", [(1024, 300, 72), (257, 257, 64), (300, 1000, 128)])
def test_gpu_bf16_bias(kind, n_q, n_k, d):
    """An additive bias (attention masks) on compiled tiles: a text-padding mask as
    cross-attention from image tokens to text tokens takes it, and a bias per query."""
    bias = attention_bias(2, 2, n_q, n_k, torch.bfloat16, kind)
    inputs = make_inputs(2, 2, n_q, n_k, d, torch.bfloat16)
    check_against_reference(inputs, d**-0.5, TOL[torch.bfloat16], bias=bias)


# The lowest LSE the kernels keep for a row whose every key has a bias at or below it:
# float32(-FLT_MAX * ln 2) (docs/design.md section 3).
LOWEST_LSE = torch.tensor(torch.finfo(torch.float32).min) * torch.tensor(0.6931471805599453)


def huge_negative_bias(n_q, n_k, dtype, kind):
    """Hugging Face's mask, ``finfo(dtype).min`` where a key is masked (fp32, bf16, fp64), with rows
    masked whole by it (math SDPA: uniform attention over the keys): per query, beside a row
    masked by -inf (no key) and one masked in part; or per key, one batch's keys all masked."""
    low = torch.finfo(dtype).min
    if kind == "key_padding":
        bias = torch.zeros(2, 1, 1, n_k, device=DEVICE, dtype=torch.float64)
        bias[0, ..., n_k // 2 :] = low
        bias[1] = low
    else:
        bias = torch.randn(2, 2, n_q, n_k, device=DEVICE, dtype=torch.float64)
        bias[:, :, 1] = low
        bias[0, 1, 3, 1::2] = low
        bias[1, 0, 4] = float("-inf")
    return bias.to(dtype).expand(2, 2, n_q, n_k)


@needs_triton
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize("kind", ["per_query", "key_padding"])
@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_fp32_rows_masked_whole_by_finfo_min_attend_uniformly(kind, mask_dtype):
    """A row whose every key has the bias finfo(mask_dtype).min attends to all of them alike,
    as the reference and math SDPA: its O, O' and the gradients match the reference's, not a
    row that sees no key (O = 0). Its LSE cannot go below LOWEST_LSE (the kernels keep scores
    in base 2, where -FLT_MAX * ln 2 is the floor) where the reference's is finfo.min; a row
    masked by -inf still sees no key."""
    n_q, n_k, scale = 5, 6, 0.25
    bias = huge_negative_bias(n_q, n_k, mask_dtype, kind)
    inputs = make_inputs(2, 2, n_q, n_k, 16, torch.float32, packed=False)
    q, k, v = inputs[:3]
    o, o_dot, lse = attention_jvp_triton(*inputs, scale, False, bias)
    inputs64, bias64 = [t.double() for t in inputs], bias.double()
    ref_o, ref_o_dot, ref_lse = reference.attention_jvp(*inputs64, scale, False, bias64)
    assert_close("O", o, ref_o, 1e-5)
    assert_close("O'", o_dot, ref_o_dot, 1e-5)
    low = LOWEST_LSE.item()
    whole = ((bias64 < low) & (bias64 > float("-inf"))).all(-1)  # masked whole by the huge bias
    assert_close("O of rows masked whole", o[whole], v.mean(2, keepdim=True).expand_as(o)[whole], 1e-6)
    floored = (ref_lse < low) & ref_lse.isfinite()
    assert torch.equal(floored, whole) and floored.any()
    assert (lse[floored] == LOWEST_LSE).all(), "LSE of rows below the floor: the floor"
    seen = torch.isfinite(ref_lse) & ~floored
    assert torch.equal(lse.isneginf(), ref_lse.isneginf()), "LSE: -inf exactly on rows that see no key"
    assert_close("LSE", lse[seen], ref_lse[seen], 1e-5)

    grad_o = torch.randn_like(o)
    grads = attention_backward_triton(grad_o, q, k, v, o, lse, scale, False, bias)
    ref_grads = reference.attention_backward(
        grad_o.double(), *inputs64[:3], ref_o, ref_lse, scale, False, bias64
    )
    for name, out, ref in zip(("dQ", "dK", "dV"), grads, ref_grads):
        assert_close(name, out, ref, 1e-5)
