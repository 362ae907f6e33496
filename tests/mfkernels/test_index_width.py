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
