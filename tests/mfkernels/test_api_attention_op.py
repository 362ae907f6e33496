"""The ``mfkernels::attention_jvp`` op as torch sees it: its fake implementation gives what the
op gives (a 16-bit input's float32 LSE, the heads-inner layout of O and O'), so that a traced
model allocates what the kernels return; and a key head dim unlike the query's is refused
naming ``k`` before any backend runs."""

import pytest
import torch

import mfkernels


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_fake_op_gives_what_the_op_gives(dtype):
    q, k, v, q_dot, k_dot, v_dot = torch.randn(6, 1, 2, 5, 8, dtype=dtype).unbind(0)
    torch.library.opcheck(
        torch.ops.mfkernels.attention_jvp.default,
        (q, k, v, q_dot, k_dot, v_dot, 8**-0.5, False, "reference"),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_a_key_head_dim_unlike_the_querys_is_refused_naming_k():
    q = torch.randn(1, 2, 5, 8)
    k = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="k must have q's head_dim 8, got 4"):
        mfkernels.attention_jvp(q, k, k, q, k, k, backend="reference")
