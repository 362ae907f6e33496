"""Which tiles an attention launch may take on a GPU (docs/attention-tuning.md), checked on
the CPU: the GPU generation of a target, the head-dim class of a head dim, and the GPU's
autotuners (built as on a GPU, the driver's target faked) pruning and caching per launch.
Nothing is compiled or timed: each launch is recorded."""

import pytest
import torch
from numerics import needs_triton

from mfkernels.backends.triton import attention, attention_configs
from mfkernels.backends.triton.attention_backward_kernels import _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel
from mfkernels.backends.triton.attention_kernels import _attn_jvp_fwd_kernel
from mfkernels.backends.triton.triton_compat import triton

TUNED = attention_configs.TUNED


@pytest.mark.parametrize(
    "arch, generation",
    [(80, "sm80"), (87, "sm80"), (86, "sm86"), (89, "sm86"), (90, "sm90"), (100, "sm90"), (103, "sm90"),
     (120, "sm86"), (121, "sm86"), ("gfx942", "sm80")],
)  # fmt: skip
def test_the_generation_of_a_target(arch, generation):
    """Hopper (sm_90) and the data-centre Blackwells take the sm_90 lists; the GPUs with 99 KB
    of shared memory a block (sm_86, sm_89, sm_120 on) the sm_86 ones; the A100, Orin and a
    target named by a string (an AMD GPU's) the sm_80 ones."""
    assert attention_configs.generation(arch) == generation


@needs_triton
@pytest.mark.parametrize(
    "d, block_d, block_e, width",
    [(8, 16, None, "narrow"), (16, 16, None, "narrow"), (32, 32, None, "narrow"), (40, 32, 16, "split"),
     (64, 64, None, "narrow"), (65, 64, 16, "split"), (72, 64, 16, "split"), (96, 64, 32, "split"),
     (100, 128, None, "wide"), (128, 128, None, "wide")],
)  # fmt: skip
def test_the_head_dim_tiling_and_its_class(d, block_d, block_e, width):
    """Columns a head dim is tiled in (dots of at least 16 columns; two parts only where they
    are fewer than the padded tile's) and the lists its launches take."""
    parts = attention.head_dim_parts(d)
    assert parts["BLOCK_D"] == block_d and parts["SPLIT"] == (block_e is not None)
    if block_e is not None:
        assert parts["BLOCK_E"] == block_e
    assert attention_configs.width_class(parts) == width


class FakeDriver:
    """The driver's active target as a GPU of compute capability ``arch`` reports it."""

    def __init__(self, arch):
        self.arch = arch

    def get_current_target(self):
        return self


class RecordedKernel:
    """Stands in for a kernel under the autotuner: records each run's tile, adds 1 into the
    dK/dV kernel's atomic dQ sums (as a real run adds its part) and computes nothing."""

    def __init__(self):
        self.runs = []

    def run(self, *args, **kwargs):
        self.runs.append((kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["num_warps"], kwargs["num_stages"]))
        if kwargs.get("DQ_ACC") is not None:
            kwargs["DQ_ACC"].add_(1)


@pytest.fixture
def gpu_tuner(monkeypatch):
    """``make(name, arch)``: kernel ``name``'s autotuner as a GPU of ``arch`` builds it."""
    monkeypatch.setattr(attention_configs, "INTERPRET", False)
    kernels = {"fwd": _attn_jvp_fwd_kernel, "dkdv": _attn_bwd_dkdv_kernel, "dq": _attn_bwd_dq_kernel}

    def make(name, arch):
        monkeypatch.setattr(triton.runtime.driver, "_active", FakeDriver(arch))
        tuner = attention_configs.autotune(kernels[name], name)
        tuner.fn = RecordedKernel()
        return tuner

    return make


def launch_args(d, n_k, dtype=torch.bfloat16, causal=False, n_q=128):
    """The arguments of an attention launch that its tiles depend on."""
    q = torch.zeros(1, dtype=dtype)
    return dict(Q=q, N_Q=n_q, N_K=n_k, HEAD_DIM=d, **attention.head_dim_parts(d), CAUSAL=causal)


def pruned(tuner, args):
    tuner.nargs = {}
    return {attention_configs.config_shape(c) for c in tuner.prune_configs(args)}


@needs_triton
@pytest.mark.parametrize("arch, generation", [(80, "sm80"), (89, "sm86"), (90, "sm90")])
@pytest.mark.parametrize("name", ["fwd", "dkdv", "dq"])
@pytest.mark.parametrize("d, width", [(64, "narrow"), (72, "split"), (128, "wide")])
def test_a_16_bit_launch_times_its_generations_list(monkeypatch, gpu_tuner, arch, generation, name, d, width):
    """Every config of the list (fenced for the split forward), and under MFK_AUTOTUNE=0 the
    first alone; fp32 the one fp32 config."""
    monkeypatch.setenv("MFK_AUTOTUNE", "1")
    tuner = gpu_tuner(name, arch)
    listed = TUNED[generation][name][width]
    for n_k, causal in ((128, False), (130, False), (128, True)):
        args = launch_args(d, n_k, causal=causal)
        fenced = name == "fwd" and width == "split" and (n_k % 64 or causal)
        expected = [c for c in listed if c[1] < 64] if fenced else listed
        assert pruned(tuner, args) == set(expected), (n_k, causal)
        fp32_config = attention_configs.FP32_CONFIG[generation]
        assert pruned(tuner, launch_args(d, n_k, torch.float32, causal)) == {fp32_config}
        with monkeypatch.context() as untimed:
            untimed.setenv("MFK_AUTOTUNE", "0")
            assert pruned(tuner, args) == {expected[0]}
            assert pruned(tuner, launch_args(d, n_k, torch.float16, causal)) == {expected[0]}


@needs_triton
def test_launches_that_may_take_other_tiles_never_share_a_tuned_one(monkeypatch, gpu_tuner):
    """The autotuner keeps one tile per key: a causal or ragged launch after a whole one of the
    same shape, and a head dim of 72 after one of 64, take their own first tile (MFK_AUTOTUNE=0,
    so the first is the tile a launch takes)."""
    monkeypatch.setenv("MFK_AUTOTUNE", "0")
    hopper = gpu_tuner("fwd", 90)
    for args in (launch_args(72, 128), launch_args(72, 128, causal=True), launch_args(72, 130)):
        hopper.run(**args)
    assert hopper.fn.runs == [TUNED["sm90"]["fwd"]["split"][0], (128, 32, 8, 3), (128, 32, 8, 3)]
    ampere = gpu_tuner("fwd", 80)
    ampere.run(**launch_args(64, 128))
    ampere.run(**launch_args(72, 128))
    assert ampere.fn.runs == [TUNED["sm80"]["fwd"]["narrow"][0], TUNED["sm80"]["fwd"]["split"][0]]


@needs_triton
def test_the_atomic_dq_sums_hold_one_run_after_tuning(monkeypatch, gpu_tuner):
    """Timing runs the dK/dV kernel once per config and repeat: the atomic dQ sums it adds into
    hold the returned run's part alone."""
    monkeypatch.setenv("MFK_AUTOTUNE", "1")
    tuner = gpu_tuner("dkdv", 90)
    tuner.do_bench = lambda kernel_call, quantiles: [(kernel_call(), kernel_call(), 1.0)[-1]] * 3
    dq_sums = torch.zeros(4)
    tuner.run(**launch_args(64, 128), DQ_ACC=dq_sums)
    assert len(tuner.fn.runs) == 2 * len(TUNED["sm90"]["dkdv"]["narrow"]) + 1
    assert torch.equal(dq_sums, torch.ones(4))


def test_the_99_kb_lists_keep_the_a100_order_and_never_run_empty():
    """sm_86's lists are the A100's in order, less the tiles that do not fit in 99 KB there
    (test_triton_static.py compiles them for sm_86)."""
    for name, lists in TUNED["sm80"].items():
        for width, tiles in lists.items():
            kept = TUNED["sm86"][name][width]
            assert kept and kept == [c for c in tiles if c in kept], (name, width)
