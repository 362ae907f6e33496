"""Element offsets that can pass 2**31 - 1 are formed in int64 (kernels on tensors of a few GB:
a dense attention bias at 46341 keys, a flat activation of 2**31 elements).

Triton passes an integer argument below 2**31 as int32 and multiplies int32 values in int32,
wrapping silently, so every offset built from a program id, a loop position or a row index
times a stride or row length must go through ``wide_mul`` or an int64 cast. Testing that on
the sizes themselves needs tensors past 2**31 elements; instead the helper is run in the
interpreter on a product past 2**31, and the kernels' sources are checked for the pattern.
The C++/CUDA kernels get the same check on their index types.
"""

import pytest
import torch

from mfkernels.backends.triton import attention
from mfkernels.backends.triton.triton_compat import HAS_TRITON, INTERPRET, tl, triton, wide_mul


@pytest.mark.skipif(not (HAS_TRITON and INTERPRET), reason="runs in the Triton interpreter")
def test_wide_mul_passes_2_to_the_31():
    @triton.jit
    def offsets(OUT, stride, first_pid):
        pid = tl.program_id(0) + first_pid
        tl.store(OUT + tl.program_id(0), wide_mul(pid, stride))

    out = torch.zeros(2, dtype=torch.int64)
    # Both factors fit in int32 (Triton passes them so); their products do not.
    offsets[(2,)](out, 40_000, 70_000)
    assert out.tolist() == [70_000 * 40_000, 70_001 * 40_000]
    assert out[0].item() > 2**31 - 1


def test_wide_rows_where_one_head_passes_2_to_the_31():
    """The attention launchers' ``WIDE_ROWS``: int64 loop offsets only where a row position
    times its stride can pass 2**31 - 1 within one head (batch and head offsets are int64
    always), so the DiT's shapes keep the int32 steps their registers were tuned with."""
    meta = dict(device="meta", dtype=torch.bfloat16)
    dit = torch.empty(256, 16, 1024, 72, **meta)  # DiT-XL/2 at 512 x 512, batch 256
    assert not attention.wide_rows(dit, None)
    assert not attention.wide_rows(torch.empty(4096, 16, 1024, 72, **meta))  # 4.8e9 elements
    bias = torch.empty(1, 1, 46341, 46341, **meta).expand(2, 16, -1, -1)
    assert attention.wide_rows(dit, bias)
    qkv = torch.empty(1, 621379, 3, 16, 72, **meta)  # q of a packed qkv: row stride 3456
    assert attention.wide_rows(qkv[:, :, 0].transpose(1, 2))
    assert not attention.wide_rows(qkv[:, :600000, 0].transpose(1, 2))


@pytest.mark.skipif(not (HAS_TRITON and INTERPRET), reason="runs in the Triton interpreter")
def test_attention_with_int64_row_steps_gives_the_same_bits(monkeypatch):
    q, k, v, qd, kd, vd, grad_o = (torch.randn(1, 2, 70, 72) for _ in range(7))
    bias = torch.randn(1, 2, 70, 70)

    def run():
        o, o_dot, lse = attention.attention_jvp_triton(q, k, v, qd, kd, vd, 0.1, bias=bias)
        return o, o_dot, lse, *attention.attention_backward_triton(grad_o, q, k, v, o, lse, 0.1, bias=bias)

    narrow = run()
    monkeypatch.setattr(attention, "wide_rows", lambda *tensors: True)
    for a, b in zip(narrow, run(), strict=True):
        assert torch.equal(a, b)
