"""How the Triton attention kernels are launched: the grid keeps batch x heads within CUDA's
limits per axis, and what cannot launch falls back. No kernel runs."""

import torch
from numerics import needs_triton

from mfkernels.backends.triton import attention
from mfkernels.backends.triton.attention import (
    attention_backward_triton,
    attention_jvp_triton,
)
from mfkernels.backends.triton.attention import (
    jvp_unsupported as triton_attention_unsupported,
)


class RecordedLaunches:
    """Stands in for a kernel (``kernel[grid](...)``): records the grid it would launch, as
    the autotuner would evaluate it for a config's tiles, and runs nothing."""

    META = {"BLOCK_M": 1, "BLOCK_N": 2}

    def __init__(self, name, grids):
        self.name, self.grids = name, grids

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grids[self.name] = grid(self.META) if callable(grid) else grid

        return launch


@needs_triton
def test_launch_grids_keep_batch_times_heads_within_cuda_limits(monkeypatch):
    """4096 windows of 16 heads (65536 (batch, head) pairs, past CUDA's 65535 on a grid's y
    and z axes) launch every attention kernel with heads and batch on axes of their own,
    query (or key) blocks still on x; no kernel runs."""
    grids = {}
    for name in ("_attn_jvp_fwd", "_attn_bwd_delta_kernel", "_attn_bwd_dkdv", "_attn_bwd_dq"):
        monkeypatch.setattr(attention, name, RecordedLaunches(name, grids))
    monkeypatch.delenv(attention.DQ_ENV_VAR, raising=False)
    batch, heads, kv_heads, n, d = 4096, 16, 4, 3, 16
    q = torch.zeros(batch, heads, n, d)
    k = torch.zeros(batch, kv_heads, n, d)
    o, _, lse = attention_jvp_triton(q, k, k, q, k, k, 0.25)
    attention_backward_triton(o, q, k, k, o, lse, 0.25)
    assert grids == {
        "_attn_jvp_fwd": (3, heads, batch),
        "_attn_bwd_delta_kernel": (1, heads, batch),
        "_attn_bwd_dkdv": (2, kv_heads, batch),
        "_attn_bwd_dq": (3, heads, batch),
    }
    assert all(max(grid[1:]) <= attention.MAX_GRID_YZ for grid in grids.values())


def test_batch_or_heads_past_the_grid_limit_fall_back():
    """Past 65535 on the batch (or heads) axis itself the kernels cannot launch: the dispatch
    falls back, with the reason."""
    small = torch.zeros(1, 1, 1, 16)
    assert triton_attention_unsupported(small, small, small) is None
    for shape in ((65536, 1, 1, 16), (1, 65536, 1, 16)):
        big = small.expand(shape)
        assert "65535" in triton_attention_unsupported(big, big, big)
