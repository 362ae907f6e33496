"""Autotuning of the attention kernels: the candidate tiles ``(BLOCK_M, BLOCK_N, warps,
stages)`` per GPU generation, kernel and head-dim class, and the pruner that picks a launch's.
How the lists were chosen: docs/attention-tuning.md.
"""

from .triton_compat import INTERPRET, autotune_enabled, triton

# Each kernel times the configs of its list for the GPU generation and the launch's head-dim
# class (head_dim_parts): "narrow" (<= 64 columns), "wide" (padded to 128) and "split"
# (72 = 64 + 16). The lists hold what compiles without register spills and within 163 KB of
# shared memory (`python benchmarks/triton_static.py [--arch 80]` checks this on any machine)
# and, for "split" on sm_90, what passed test_every_tuned_config on a GPU. fp32 inputs take
# IEEE dots, which spill at every tile: one config, the one that spills least that fits. The
# interpreter takes exactly one config. MFK_AUTOTUNE=0 runs the first config of each list,
# untimed (tests/conftest.py sets it on a GPU). docs/attention-tuning.md has the measurements.
FP32_CONFIG = {"sm90": (32, 32, 8, 2), "sm80": (32, 32, 8, 2), "sm86": (32, 32, 8, 1)}
TUNED = {
    "sm90": {
        "fwd": {
            "narrow": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "wide": [(128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 2), (64, 32, 4, 3)],
            "split": [(128, 64, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3)],
        },
        "dkdv": {
            "narrow": [(64, 64, 8, 2), (64, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 3), (64, 32, 4, 3)],
            "wide": [(64, 64, 8, 2), (64, 64, 8, 3), (64, 32, 8, 2), (64, 32, 8, 3)],
            "split": [(64, 64, 8, 2)],
        },
        "dq": {
            "narrow": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "wide": [(128, 64, 8, 2), (128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
            "split": [(128, 64, 8, 2)],
        },
    },
    "sm80": {
        "fwd": {
            "narrow": [(128, 32, 8, 2), (128, 32, 8, 3), (64, 32, 4, 3), (64, 32, 8, 3)],
            "wide": [(32, 32, 8, 2), (32, 32, 8, 3), (32, 64, 8, 2), (32, 64, 8, 3)],
            "split": [(64, 32, 8, 3), (32, 32, 8, 2), (32, 32, 8, 3)],
        },
        "dkdv": {
            "narrow": [(64, 32, 8, 2), (64, 32, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3)],
            "wide": [(64, 32, 8, 2), (64, 32, 8, 3), (32, 32, 8, 2), (32, 32, 8, 3)],
            "split": [(32, 32, 8, 2), (32, 32, 8, 3), (64, 32, 8, 3)],
        },
        "dq": {
            "narrow": [(128, 32, 8, 3), (128, 64, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3)],
            "wide": [(32, 32, 8, 2), (32, 32, 8, 3), (32, 64, 8, 2), (32, 64, 8, 3)],
            "split": [(128, 32, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3), (32, 64, 8, 3), (32, 32, 8, 2)],
        },
    },
}

# Split-head-dim (d = 72) tiles for sm_90 that compile without spills (triton_static.py, bf16)
# but have not run on a GPU: `test_gpu_candidate_config` checks each against the reference
# there; one that passes moves into its TUNED list (where the autotuner times it). The split
# backward has one tuned config per kernel, so DiT-XL/2's backward is not tuned at all today.
CANDIDATES = {
    "sm90": {
        "fwd": {"split": [(128, 64, 8, 3), (64, 64, 4, 3)]},
        "dkdv": {"split": [(64, 64, 8, 3), (64, 64, 4, 3)]},
        "dq": {"split": [(128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)]},
    },
}


# GPUs with 99 KB of shared memory a block take the A100's lists without the tiles that need
# more there (`triton_static.py --arch 86`: the d = 128 forward's 32 x 64 x 3 stages 153 KB, the
# atomic-dQ dK/dV kernel's 106-113 KB). fp32 takes one stage: two need 104 KB at d = 128.
OVER_99_KB = {
    "fwd": {"wide": [(32, 64, 8, 3)]},
    "dkdv": {"narrow": [(128, 32, 8, 3)], "wide": [(64, 32, 8, 3)]},
}
TUNED["sm86"] = {
    name: {
        width: [c for c in tiles if c not in OVER_99_KB.get(name, {}).get(width, ())]
        for width, tiles in lists.items()
    }
    for name, lists in TUNED["sm80"].items()
}


def config(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


def config_shape(c):
    return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages


def generation(arch) -> str:
    """The ``TUNED`` lists for a compute capability given as major * 10 + minor: Hopper's for
    sm_90 and the data-centre Blackwells (sm_100, sm_103: 227 KB of shared memory a block);
    the 99 KB ones for Ampere's and Ada's desktop parts (sm_86, sm_89) and the desktop
    Blackwells (sm_120 on), which lack Hopper's warp-group MMA too; the A100's for the rest
    (sm_80, sm_87 and an AMD target, named by a string)."""
    if not isinstance(arch, int):
        return "sm80"
    if arch in (86, 89) or arch >= 120:
        return "sm86"
    return "sm90" if arch >= 90 else "sm80"


def tuned_for(name: str, generation: str, args: dict) -> list[tuple]:
    """The ``TUNED`` configs for a launch of kernel ``name`` (its arguments ``args``), in order."""
    tuned = TUNED[generation][name][width_class(args)]
    if name == "fwd" and args["SPLIT"]:  # 64-key tiles only where no key tile is masked
        tuned = [c for c in tuned if c[1] < 64 or (args["N_K"] % c[1] == 0 and not args.get("CAUSAL"))]
    return tuned


def autotune(kernel, name):
    if INTERPRET:
        return triton.autotune(configs=[config(32, 32, 4, 1)], key=KEY)(kernel)
    every = set(FP32_CONFIG.values())
    for lists in TUNED.values():
        every.update(*lists[name].values())

    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        # The driver's target, not the tensor's device: the static check compiles from CPU.
        arch = triton.runtime.driver.active.get_current_target().arch
        if args["Q"].element_size() == 4:
            keep = {FP32_CONFIG[generation(arch)]}
        else:
            tuned = tuned_for(name, generation(arch), args)
            keep = set(tuned if autotune_enabled() else tuned[:1])
        return [c for c in configs if config_shape(c) in keep]

    configs = [config(*c) for c in sorted(every)]
    # Timing runs the kernel again and again: the atomic dQ sums it adds into must start from
    # zero for each run and for the real one after (the dK/dV kernel's DQ_ACC).
    reset = ["DQ_ACC"] if name == "dkdv" else None
    prune_by = {"early_config_prune": prune}
    return triton.autotune(configs=configs, key=KEY, prune_configs_by=prune_by, reset_to_zero=reset)(kernel)


def width_class(args: dict) -> str:
    """Which ``TUNED`` list a launch's head-dim tiling takes."""
    if args["SPLIT"]:
        return "split"
    return "wide" if args["BLOCK_D"] > 64 else "narrow"


# Arguments a kernel lacks are left out of its key (TMA: the forward's, ATOMIC_DQ: the dK/dV kernel's).
KEY = ["N_Q", "N_K", "HEAD_DIM", "PREC", "ALIGN", "TMA", "ATOMIC_DQ", "CAUSAL", "KV_GROUP"]
KEY += ["HAS_BIAS", "KEY_BIAS"]
