"""The catalog's mutants of the kernels' plumbing: which tiles a launch may take, how Triton
is found and run (the interpreter, the compile cache), how a kernel is launched, and how the
csrc extension's ops are reached. Each is a bug that runs a kernel other than the one meant,
or on arguments it was not checked for, without a word."""

from mutant import Mutant

__all__ = ["KERNEL_INFRA_MUTANTS"]

_CONFIGS = "mfkernels/backends/triton/attention_configs.py"
_COMPAT = "mfkernels/backends/triton/triton_compat.py"
_LAUNCH = "mfkernels/backends/triton/launch.py"
_CSRC = "mfkernels/backends/csrc.py"
_CSRC_OPS = "mfkernels/csrc_ops.py"
_CACHE = "mfkernels/_compile_cache.py"
_ATTN = "mfkernels/backends/triton/attention.py"
JVP = "tests/mfkernels/test_attention_jvp.py::"
NEVER_EMPTY = f"{JVP}test_tuned_configs_never_empty"
ROW_TUNER = (
    "tests/mfkernels/test_layernorm_modulate.py::test_the_gpu_tunes_tiles_of_4_to_32_elements_a_thread"
)
LAUNCH_SETTINGS = "tests/mfkernels/test_launch_settings.py"
ATTN_LAUNCH = "tests/mfkernels/test_attention_launch.py"
CSRC_OPS = "tests/mfkernels/test_csrc_ops.py"
CSRC_INPUTS = "tests/mfkernels/test_csrc_inputs.py"
DISPATCH = "tests/mfkernels/test_dispatch.py"
CACHE = "tests/mfkernels/test_compile_cache.py"
DEPRECATED = "tests/mfkernels/test_deprecated_paths.py"
GROUPS = "tests/mfkernels/test_attention_groups_and_bias.py::test_fp32_grouped_query_heads"
CFG = "tests/mfkernels/test_attention_configs.py"
HEAD_DIM_CLASS = f"{CFG}::test_the_head_dim_tiling_and_its_class"
PLUMB = "tests/mfkernels/test_kernel_plumbing.py::"
LAUNCH_ARGS = f"{PLUMB}test_attention_launches_are_told_their_dots_and_alignment"
TMA = f"{PLUMB}test_tma_loads_only_on_hopper_and_for_views_tma_can_address"

_CONFIG_MUTANTS = [
    Mutant(
        "infra-configs-fence-takes-long-ragged-keys",
        _CONFIGS,
        'args["N_K"] % c[1] == 0',
        'args["N_K"] >= c[1]',
        (
            CFG,
            NEVER_EMPTY,
        ),
        "the split forward's 64-key tiles (wrong at a ragged key tile on an H200) taken past 64 keys",
    ),
    Mutant(
        "infra-configs-fence-on-every-kernel",
        _CONFIGS,
        'if name == "fwd" and args["SPLIT"]:',
        'if args["SPLIT"]:',
        (
            CFG,
            NEVER_EMPTY,
        ),
        "the forward's fence kept on the backward too: a ragged split backward has no config",
    ),
    Mutant(
        "infra-configs-hopper-is-past-sm90",
        _CONFIGS,
        "arch >= 90",
        "arch > 90",
        (
            f"{CFG}::test_the_generation_of_a_target",
            NEVER_EMPTY,
        ),
        "an H100/H200 (sm_90) tunes over the A100's lists",
    ),
    Mutant(
        "infra-configs-generation-of-a-named-target",
        _CONFIGS,
        '    if not isinstance(arch, int):\n        return "sm80"\n',
        "",
        (
            f"{CFG}::test_the_generation_of_a_target",
            NEVER_EMPTY,
        ),
        "a target named by a string (AMD's 'gfx942') raises TypeError in the pruner at launch",
    ),
    Mutant(
        "infra-configs-head-dim-64-is-wide",
        _CONFIGS,
        'args["BLOCK_D"] > 64',
        'args["BLOCK_D"] >= 64',
        (
            HEAD_DIM_CLASS,
            NEVER_EMPTY,
        ),
        "head dim 64 takes the 128-column lists (32-row tiles on an A100)",
    ),
    Mutant(
        "infra-configs-split-class-misspelt",
        _CONFIGS,
        '    if args["SPLIT"]:\n        return "split"',
        '    if args.get("split"):\n        return "split"',
        (
            HEAD_DIM_CLASS,
            NEVER_EMPTY,
        ),
        "d = 72 takes the narrow lists, whose tiles never ran on a split head dim",
    ),
    Mutant(
        "infra-configs-interpreter-takes-the-gpu-tuner",
        _CONFIGS,
        "    if INTERPRET:\n        return triton.autotune(",
        "    if False:\n        return triton.autotune(",
        (
            f"{PLUMB}test_a_16_bit_attention_runs_in_the_interpreter",
            NEVER_EMPTY,
        ),
        "the interpreter's one config lost: a 16-bit launch on the CPU asks for a GPU driver",
    ),
    Mutant(
        "infra-configs-prune-fp32-by-two-bytes",
        _CONFIGS,
        'args["Q"].element_size() == 4',
        'args["Q"].element_size() == 2',
        (
            CFG,
            NEVER_EMPTY,
        ),
        "fp32 launches time the spilling 16-bit tiles and fp16 takes the fp32 config",
    ),
    Mutant(
        "infra-configs-prune-times-all-with-autotune-off",
        _CONFIGS,
        "keep = set(tuned if autotune_enabled() else tuned[:1])",
        "keep = set(tuned)",
        (
            CFG,
            NEVER_EMPTY,
        ),
        "MFK_AUTOTUNE=0 (the GPU test suite) still compiles and times every config",
    ),
    Mutant(
        "infra-configs-candidates-of-one-generation",
        _CONFIGS,
        "for lists in TUNED.values():",
        'for lists in (TUNED["sm90"],):',
        (
            CFG,
            NEVER_EMPTY,
        ),
        "an A100 prunes to the sm_90 tiles its lists share: its own are never built",
    ),
    Mutant(
        "infra-configs-dq-sums-not-reset",
        _CONFIGS,
        'reset = ["DQ_ACC"] if name == "dkdv" else None',
        "reset = None",
        (
            f"{CFG}::test_the_atomic_dq_sums_hold_one_run_after_tuning",
            NEVER_EMPTY,
        ),
        "atomic dQ returned summed over every timing run of its first launch",
    ),
    Mutant(
        "infra-configs-key-without-causal",
        _CONFIGS,
        '"ATOMIC_DQ", "CAUSAL", "KV_GROUP"',
        '"ATOMIC_DQ", "KV_GROUP"',
        (
            f"{CFG}::test_launches_that_may_take_other_tiles_never_share_a_tuned_one",
            NEVER_EMPTY,
        ),
        "a causal launch reuses the 64-key tile a non-causal one of its shape was tuned to",
    ),
    Mutant(
        "infra-configs-key-without-keys",
        _CONFIGS,
        'KEY = ["N_Q", "N_K", "HEAD_DIM"',
        'KEY = ["N_Q", "HEAD_DIM"',
        (
            f"{CFG}::test_launches_that_may_take_other_tiles_never_share_a_tuned_one",
            NEVER_EMPTY,
        ),
        "a ragged key length reuses the 64-key tile a whole one was tuned to",
    ),
    Mutant(
        "infra-configs-key-without-head-dim",
        _CONFIGS,
        '"N_K", "HEAD_DIM", "PREC"',
        '"N_K", "PREC"',
        (
            f"{CFG}::test_launches_that_may_take_other_tiles_never_share_a_tuned_one",
            NEVER_EMPTY,
        ),
        "a head dim of 72 reuses the tile a head dim of 64 of the same lengths was tuned to",
    ),
    Mutant(
        "infra-configs-shape-swapped",
        _CONFIGS,
        'return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps',
        'return c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"], c.num_warps',
        (
            CFG,
            NEVER_EMPTY,
        ),
        "the pruner matches (BLOCK_N, BLOCK_M): only square tiles survive, others swapped in",
    ),
]

_COMPAT_MUTANTS = [
    Mutant(
        "infra-compat-autotune-off-by-default",
        _COMPAT,
        'os.environ.get("MFK_AUTOTUNE", "1") != "0"',
        'os.environ.get("MFK_AUTOTUNE", "0") != "0"',
        (ROW_TUNER,),
        "nothing is tuned unless MFK_AUTOTUNE=1 is set",
    ),
    Mutant(
        "infra-compat-cpu-tensors-without-the-interpreter",
        _COMPAT,
        'device.type == "cpu" and INTERPRET',
        'device.type == "cpu"',
        (
            f"{PLUMB}test_cpu_tensors_take_the_triton_backend_only_in_the_interpreter",
            DISPATCH,
        ),
        "CPU tensors taken by the triton backend without TRITON_INTERPRET: a Triton error, no fallback",
    ),
    Mutant(
        "infra-compat-alignment-in-bytes",
        _COMPAT,
        "math.gcd(16 // element_size, *extents)",
        "math.gcd(16, *extents)",
        (
            f"{PLUMB}test_vector_alignment_is_counted_in_elements_of_16_bytes",
            ATTN_LAUNCH,
        ),
        "ALIGN counted in bytes: fp32 rows claimed 64-byte aligned, misaligned vector loads",
    ),
]

_LAUNCH_MUTANTS = [
    Mutant(
        "infra-launch-only-the-first-dtype-checked",
        _LAUNCH,
        "    for name, t in named_tensors:\n",
        "    for name, t in named_tensors[:1]:\n",
        (
            f"{PLUMB}test_every_tensor_of_a_row_kernel_is_checked",
            DISPATCH,
        ),
        "a float64 modulation vector beside an fp32 x handed to the triton kernels",
    ),
    Mutant(
        "infra-launch-chunks-of-the-smallest-tile",
        _LAUNCH,
        "rows = max(TUNER_ROWS) if",
        "rows = min(TUNER_ROWS) if",
        (
            f"{PLUMB}test_gpu_token_chunks_are_whole_steps_of_every_row_tile",
            LAUNCH_SETTINGS,
        ),
        "a GPU chunk of tokens not a whole number of the 8-row tiles the tuner may pick",
    ),
]

_CSRC_MUTANTS = [
    Mutant(
        "infra-csrc-other-devices-taken",
        _CSRC,
        "        if t.device.type != device_type:\n            return",
        "        if False:\n            return",
        (
            f"{PLUMB}test_the_cpu_backend_takes_cpu_tensors_of_its_dtypes_only",
            CSRC_OPS,
        ),
        "the cpu backend handed CUDA tensors: raw device pointers read on the host",
    ),
    Mutant(
        "infra-csrc-only-the-first-tensor-checked",
        _CSRC,
        "for t in (a for a in args if isinstance(a, torch.Tensor)):",
        "for t in (a for a in args[:1] if isinstance(a, torch.Tensor)):",
        (
            f"{PLUMB}test_the_cpu_backend_takes_cpu_tensors_of_its_dtypes_only",
            CSRC_OPS,
        ),
        "a complex or CUDA tensor after x handed to the extension",
    ),
    Mutant(
        "infra-csrc-cuda-without-kernels-says-nothing",
        _CSRC,
        '"CUDA_OPS": import_error or "mfkernels._C is built without its CUDA kernels",',
        '"CUDA_OPS": import_error,',
        (
            f"{PLUMB}test_a_build_without_cuda_has_no_cuda_backend_and_says_why",
            DISPATCH,
        ),
        "backend='cuda' on a CPU-only build falls back without saying why",
    ),
    Mutant(
        "infra-csrc-cuda-table-on-a-cpu-build",
        _CSRC,
        "if has_cuda() else {}",
        "if available() else {}",
        (
            f"{PLUMB}test_a_build_without_cuda_has_no_cuda_backend_and_says_why",
            DISPATCH,
        ),
        "a CPU-only build offers the cuda backend: a CUDA call fails in the extension",
    ),
    Mutant(
        "infra-csrc-ops-export-dropped",
        _CSRC_OPS,
        "    silu_jvp,\n)",
        ")",
        (DEPRECATED,),
        "the deprecated path lists silu_jvp and lacks it: `from mfkernels.csrc_ops import *` fails",
    ),
]

_CACHE_MUTANTS = [
    Mutant(
        "infra-cache-names-not-hashed",
        _CACHE,
        'digest.update(path.relative_to(package).as_posix().encode() + b"\\0" + path.read_bytes())',
        "digest.update(path.read_bytes())",
        (f"{CACHE}::test_a_module_renamed_in_place_changes_the_key",),
        "a module moved to another file keeps the key: a cached graph of the old layout served",
    ),
    Mutant(
        "infra-cache-top-level-only",
        _CACHE,
        'package.rglob("*.py")',
        'package.glob("*.py")',
        (CACHE,),
        "an edit of a backend's kernels keeps the key: code compiled against the old one served",
    ),
    Mutant(
        "infra-cache-other-tag-replaced",
        _CACHE,
        'config.cache_key_tag = f"{config.cache_key_tag}+{tag}" if config.cache_key_tag else tag',
        "config.cache_key_tag = tag",
        (
            f"{PLUMB}test_a_users_own_compile_cache_tag_is_kept",
            CACHE,
        ),
        "a user's own cache tag is dropped on import: their caches are keyed by ours alone",
    ),
]

_ATTN_MUTANTS = [
    Mutant(
        "infra-attn-head-dim-128-split",
        _ATTN,
        "low + high >= padded",
        "low + high > padded",
        (
            HEAD_DIM_CLASS,
            NEVER_EMPTY,
        ),
        "d = 128 tiled 64 + 64 and tuned over the split lists, whose tiles never ran at 128",
    ),
    Mutant(
        "infra-attn-block-d-below-16",
        _ATTN,
        "return max(16, triton.next_power_of_2(head_dim))",
        "return triton.next_power_of_2(head_dim)",
        (
            HEAD_DIM_CLASS,
            f"{JVP}test_fp32_kernel_variants[default-130-130-72]",
        ),
        "a head dim of 8 gets 8-column dots, below tl.dot's 16",
    ),
    Mutant(
        "infra-attn-fp32-tf32-dots",
        _ATTN,
        'return "ieee" if dtype == torch.float32 else "tf32"',
        'return "tf32"',
        (
            LAUNCH_ARGS,
            ATTN_LAUNCH,
        ),
        "fp32 attention on a GPU takes TF32 dots (1e-3), missing its 1e-5 tolerance",
    ),
    Mutant(
        "infra-attn-align-without-k",
        _ATTN,
        "ALIGN=_stride_align(q, k, v, q_dot, k_dot, v_dot, o)",
        "ALIGN=_stride_align(q, v, q_dot, k_dot, v_dot, o)",
        (
            LAUNCH_ARGS,
            ATTN_LAUNCH,
        ),
        "a K with odd strides (a slice of a wider tensor) read with q's vector loads",
    ),
    Mutant(
        "infra-attn-align-without-row-strides",
        _ATTN,
        "for s in t.stride()[:3]))",
        "for s in t.stride()[:2]))",
        (
            LAUNCH_ARGS,
            ATTN_LAUNCH,
        ),
        "rows of 17 elements claimed 16-byte aligned",
    ),
    Mutant(
        "infra-attn-backward-lse-strided",
        _ATTN,
        "lse = lse.to(torch.float32).contiguous()",
        "lse = lse.to(torch.float32)",
        (
            f"{PLUMB}test_the_backward_reads_an_lse_of_any_strides",
            ATTN_LAUNCH,
        ),
        "an LSE of other strides (a compiled graph's) read as if contiguous",
    ),
    Mutant(
        "infra-attn-delta-grid-of-128-rows",
        _ATTN,
        "_attn_bwd_delta_kernel[launch_grid(n_q, 64, heads, batch)]",
        "_attn_bwd_delta_kernel[launch_grid(n_q, 128, heads, batch)]",
        (
            LAUNCH_ARGS,
            f"{JVP}test_fp32_kernel_variants[default-130-130-72]",
        ),
        "the delta kernel's grid counts 128-row blocks of its 64: half the rows' delta unset",
    ),
    Mutant(
        "infra-attn-backward-kv-group-one",
        _ATTN,
        "flags = dict(CAUSAL=bool(causal), KV_GROUP=heads // kv_heads)",
        "flags = dict(CAUSAL=bool(causal), KV_GROUP=1)",
        (GROUPS,),
        "the backward of grouped-query attention reads the wrong key/value heads",
    ),
    Mutant(
        "infra-attn-tma-on-ampere",
        _ATTN,
        "_arch(k) < 90",
        "_arch(k) < 80",
        (
            TMA,
            f"{JVP}test_tma_loads_fall_back_to_pointers_where_tma_cannot_address",
        ),
        "MFK_ATTENTION_LOADS=tma on an A100, which has no TMA: the forward fails to compile",
    ),
    Mutant(
        "infra-attn-tma-unaligned-start",
        _ATTN,
        "t.stride(-1) != 1 or t.data_ptr() % 16 or",
        "t.stride(-1) != 1 or",
        (
            TMA,
            f"{JVP}test_tma_loads_fall_back_to_pointers_where_tma_cannot_address",
        ),
        "a K view starting off a 16-byte boundary read through a tensor descriptor",
    ),
    Mutant(
        "infra-attn-tma-batch-stride-unchecked",
        _ATTN,
        "any(s * size % 16 for s in t.stride()[:3])",
        "any(s * size % 16 for s in t.stride()[1:3])",
        (
            TMA,
            f"{JVP}test_tma_loads_fall_back_to_pointers_where_tma_cannot_address",
        ),
        "a batch stride off 16 bytes read through a tensor descriptor",
    ),
]

STATIC_99_KB = "tests/benchmarks/test_triton_static.py::test_every_tile_fits_a_99_kb_gpu"
_SMALL_SHARED_MUTANTS = [
    Mutant(
        "infra-configs-ada-takes-the-a100-lists",
        _CONFIGS,
        "if arch in (86, 89) or arch >= 120:",
        "if arch == 86 or arch >= 120:",
        (f"{CFG}::test_the_generation_of_a_target",),
        "an RTX 4090 / L40 (sm_89, 99 KB a block) tunes over tiles that need 153 KB",
    ),
    Mutant(
        "infra-configs-desktop-blackwell-takes-hopper-lists",
        _CONFIGS,
        "if arch in (86, 89) or arch >= 120:",
        "if arch in (86, 89):",
        (f"{CFG}::test_the_generation_of_a_target",),
        "an RTX 5090 (sm_120: 99 KB, no warp-group MMA) takes Hopper's 128-row tiles",
    ),
    Mutant(
        "infra-configs-99-kb-keeps-the-big-forward-tile",
        _CONFIGS,
        '"fwd": {"wide": [(32, 64, 8, 3)]},',
        '"fwd": {"wide": []},',
        (STATIC_99_KB,),
        "a d = 128 forward tile of 153 KB stays in the 99 KB GPUs' list",
    ),
    Mutant(
        "infra-configs-fp32-two-stages-on-99-kb",
        _CONFIGS,
        '"sm86": (32, 32, 8, 1)}',
        '"sm86": (32, 32, 8, 2)}',
        (STATIC_99_KB,),
        "fp32 attention at head dim 128 cannot launch on an RTX 30/40/50 (104 KB, its only tile)",
    ),
    Mutant(
        "infra-configs-fp32-tile-of-the-a100",
        _CONFIGS,
        "keep = {FP32_CONFIG[generation(arch)]}",
        'keep = {FP32_CONFIG["sm80"]}',
        (f"{CFG}::test_a_16_bit_launch_times_its_generations_list",),
        "the 99 KB GPUs' fp32 launches take the A100's two-stage tile",
    ),
]

KERNEL_INFRA_MUTANTS = [
    *_CONFIG_MUTANTS,
    *_SMALL_SHARED_MUTANTS,
    *_COMPAT_MUTANTS,
    *_LAUNCH_MUTANTS,
    *_CSRC_MUTANTS,
    *_CACHE_MUTANTS,
    *_ATTN_MUTANTS,
]
