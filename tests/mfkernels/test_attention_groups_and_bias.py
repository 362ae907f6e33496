"""Grouped-query attention (fewer key/value heads) and an additive bias (attention masks) on
the Triton attention kernels, against the float64 reference as in test_attention_jvp.py
(whose helpers and kernel-variant fixture these tests share): the interpreter on the CPU,
compiled tiles in the ``gpu`` tests. Every test runs in each kernel variant."""

import pytest
import torch
from numerics import TOL, needs_triton
from test_attention_jvp import (  # noqa: F401 (kernel_variant: the fixture every test here takes)
    attention_bias,
    check_against_reference,
    grouped_inputs,
    kernel_variant,
    make_inputs,
)

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
