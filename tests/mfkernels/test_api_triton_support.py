"""Where the triton attention kernels step aside (``jvp_unsupported``, read by the dispatch to
fall back): head dims up to 128 inclusive run, and a batch or a head count past CUDA's grid
limit of 65535 on its axis is refused, whichever of the two it is."""

import pytest
import torch
from numerics import needs_triton

pytestmark = needs_triton


@pytest.fixture
def jvp_unsupported():
    from mfkernels.backends.triton.attention import jvp_unsupported

    return jvp_unsupported


def test_head_dim_128_runs_and_129_does_not(jvp_unsupported):
    q = torch.empty(1, 1, 4, 128)
    assert jvp_unsupported(q, q, q) is None
    q = torch.empty(1, 1, 4, 129)
    assert "head_dim <= 128" in jvp_unsupported(q, q, q)


@pytest.mark.parametrize("axis", [0, 1])
def test_a_batch_or_heads_past_the_grid_limit_is_refused(axis, jvp_unsupported):
    shape = [1, 1, 4, 16]
    shape[axis] = 65536
    q = torch.empty(1, 1, 4, 16).expand(*shape)  # no memory: stride 0 on the long axis
    assert "grid axes of at most 65535" in jvp_unsupported(q, q, q)
    shape[axis] = 65535
    assert jvp_unsupported(*(torch.empty(1, 1, 4, 16).expand(*shape),) * 3) is None
