"""The mutants ``tools/mutants.py`` plants: realistic one-line bugs (a dropped term, a swapped
order, an off-by-one, a wrong constant, a skipped call), each with the few test files that
should catch it. This file holds the sampler's, the checkpoints' and the trainer's; the others:
- ``mutant_catalog_loss.py``: the MeanFlow loss;
- ``mutant_catalog_kernels.py``: the kernels, their launchers and the dispatch, with
  ``mutant_catalog_kernel_modules.py`` (the Python modules around them),
  ``mutant_catalog_index_width.py`` (the 32-bit index limits);
- ``mutant_catalog_kernel_api.py``: the dispatch, the dual ops' Python side, the SDPA switch;
- ``mutant_catalog_kernel_inputs.py``: the kernel API's argument checks;
- ``mutant_catalog_models.py``: the models, interchange formats, adapters, pipeline and VAE,
  with ``mutant_catalog_model_side.py`` (more of the DiT, official weights, adapters, saved
  models), ``mutant_catalog_data.py`` (the data loaders and latent folders, with
  ``mutant_catalog_data_paths.py``: image-folder scans, crops, read failures, the distributed
  helpers) and ``mutant_catalog_evaluation.py`` (FID/IS/KID inputs, reference statistics,
  MNIST scoring);
- ``mutant_catalog_programs.py``: generate, prepare_latents, the run's reports, the command
  lines and the trainer's config checks, demo and the benchmarks' shared code, with
  ``mutant_catalog_outputs.py`` (what generate, prepare_latents, export and interchange write
  and read) and ``mutant_catalog_program_runs.py`` (more of generate, prepare_latents and
  export: their arguments, resumes and temporaries);
- ``mutant_catalog_trainer.py``: more of the trainer's core (the step and its EMAs, the lr
  schedule, the ranks' rows, the DiT's initialisation and conditioning, a resume's restore),
  with ``mutant_catalog_trainer_entry.py`` (its config overrides, files, command line, run
  identity and lr schedule);
- ``mutant_catalog_persistence.py``: what is saved and loaded (atomic files and exports,
  the exported pipeline, VAE files and records).

``find`` must occur exactly once in ``path`` (else the mutant "does not apply": say so, then
update or drop it). Mutants of the trainer and the checkpoints sit on lines that rarely move.
A mutant of the C++ CPU kernels or the bindings is rebuilt into the copy's extension first; the
CUDA kernels are mutated only where a CPU test reads their source.
"""

from mutant import Mutant
from mutant_catalog_bench_attention import BENCH_ATTENTION_MUTANTS
from mutant_catalog_bench_ops import BENCH_OPS_MUTANTS
from mutant_catalog_bench_report import BENCH_REPORT_MUTANTS
from mutant_catalog_bench_steps import BENCH_STEP_MUTANTS
from mutant_catalog_config_report import CONFIG_REPORT_MUTANTS
from mutant_catalog_csrc_cpu import CSRC_CPU_MUTANTS
from mutant_catalog_data_flow import DATA_FLOW_MUTANTS
from mutant_catalog_data_sources import DATA_SOURCE_MUTANTS
from mutant_catalog_eval_pipeline import EVAL_PIPELINE_MUTANTS
from mutant_catalog_image_data import IMAGE_DATA_MUTANTS
from mutant_catalog_kernel_api import KERNEL_API_MUTANTS
from mutant_catalog_kernel_backward import KERNEL_BACKWARD_MUTANTS
from mutant_catalog_kernel_infra import KERNEL_INFRA_MUTANTS
from mutant_catalog_kernel_inputs import KERNEL_INPUT_MUTANTS
from mutant_catalog_kernel_math import KERNEL_MATH_MUTANTS
from mutant_catalog_kernels import KERNEL_MUTANTS
from mutant_catalog_loss import LOSS_MUTANTS
from mutant_catalog_models import MODEL_MUTANTS
from mutant_catalog_persistence import PERSISTENCE_MUTANTS
from mutant_catalog_plumbing import PLUMBING_MUTANTS
from mutant_catalog_primal import PRIMAL_MUTANTS
from mutant_catalog_program_args import PROGRAM_ARG_MUTANTS
from mutant_catalog_programs import PROGRAM_MUTANTS
from mutant_catalog_resume_data import RESUME_DATA_MUTANTS
from mutant_catalog_runtime import RUNTIME_MUTANTS
from mutant_catalog_trainer import TRAINER_MUTANTS

__all__ = ["CATALOG", "Mutant"]

SAMPLER = ("tests/meanflow/test_sampler_pixels.py", "tests/meanflow/test_sampler.py")
CHECKPOINT = (
    "tests/meanflow/test_checkpoint_safety.py",
    "tests/meanflow/test_train.py::test_atomic_write_survives_a_crash",
    "tests/meanflow/test_train.py::test_cache_dir_precedence",
    "tests/meanflow/test_pretrained.py",
    "tests/meanflow/test_generate_cli.py",
)
# The whole trainer test file: tests added there (EMA, RNG restore) count without an edit here.
TRAIN = (
    "tests/meanflow/test_train_schedule.py",
    "tests/meanflow/test_train.py",
    "tests/meanflow/test_train_step.py",
)
ADAPTER_TRAIN = "tests/meanflow/test_train_adapters.py"
RNG_WORLD = "tests/faults/test_fault_resume.py::test_global_rngs_under_another_world_size_are_each_ranks_own"
KEPT = "tests/faults/test_fault_train_kept.py::"
KEPT_KILL = (KEPT + "test_a_kill_between_last_pt_and_the_kept_copy_keeps_that_step_on_resume",)
KEPT_DISK = (KEPT + "test_a_full_disk_at_the_kept_copy_keeps_that_step_on_resume",)
KEPT_OTHER = (KEPT + "test_a_new_run_never_replaces_the_kept_checkpoints_of_another",)
KEPT_SPLIT = (KEPT + "test_a_batch_the_ranks_cannot_split_evenly_is_refused_before_any_write",)
KEPT_NO_EMA = (KEPT + "test_a_run_without_emas_keeps_its_raw_weights",)


CATALOG = [
    *LOSS_MUTANTS,
    # ------------------------------------------------------------- meanflow/sampler.py
    Mutant(
        "sampler-grid-reversed",
        "meanflow/sampler.py",
        "torch.linspace(1.0, 0.0, steps + 1",
        "torch.linspace(0.0, 1.0, steps + 1",
        SAMPLER,
        "integrates from data to noise",
    ),
    Mutant(
        "sampler-step-sign",
        "meanflow/sampler.py",
        "z = z - (t - r) * model(z, r_, t_, y)",
        "z = z + (t - r) * model(z, r_, t_, y)",
        SAMPLER,
        "z_r = z_t + (t - r) u",
    ),
    Mutant(
        "sampler-r-t-swapped",
        "meanflow/sampler.py",
        "z = z - (t - r) * model(z, r_, t_, y)",
        "z = z - (t - r) * model(z, t_, r_, y)",
        SAMPLER,
        "u(z, t, r)",
    ),
    Mutant(
        "sampler-mode-not-restored",
        "meanflow/sampler.py",
        "    model.train(was_training)\n    return z",
        "    return z",
        SAMPLER,
        "the model stays in eval mode",
    ),
    Mutant(
        "sampler-uint8-range",
        "meanflow/sampler.py",
        "(images.float() / 2 + 0.5).clamp(0, 1)",
        "(images.float() + 1).clamp(0, 1)",
        SAMPLER + ("tests/meanflow/test_generate_cli.py",),
        "[-1, 1] -> [0, 2] before the clamp",
    ),
    Mutant(
        "sampler-steps-true-accepted",
        "meanflow/sampler.py",
        'check_int_at_least("steps", steps)',
        'check_int_at_least("steps", int(steps))',
        ("tests/meanflow/test_sampler.py::test_steps_must_be_a_positive_int_not_a_bool",),
        "steps=True (a flag mistaken for a count) runs one step",
    ),
    # ---------------------------------------------------------- meanflow/checkpoint.py
    Mutant(
        "export-temporary-removed-before-held-fails",
        "meanflow/checkpoint.py",
        "fd = os.open(tmp, os.O_RDONLY)\n        except FileNotFoundError:\n            continue\n",
        "fd = os.open(tmp, os.O_RDONLY)\n        except FileNotFoundError:\n            raise\n",
        (
            "tests/faults/test_fault_export.py::test_a_new_temporary_another_export_removed_before_holding_it_is_made_again",
        ),
        "a temporary another export's recovery removed before it was held ends the export with an error",
    ),
    Mutant(
        "checkpoint-temp-left-on-error",
        "meanflow/checkpoint.py",
        "        if os.path.exists(tmp):\n            os.unlink(tmp)\n",
        "",
        CHECKPOINT,
        "a failed write leaves its temporary file",
    ),
    Mutant(
        "checkpoint-unpickles",
        "meanflow/checkpoint.py",
        "map_location=map_location, weights_only=True, mmap=mmap)",
        "map_location=map_location, weights_only=False, mmap=mmap)",
        CHECKPOINT,
        "torch.load runs arbitrary pickles",
    ),
    Mutant(
        "checkpoint-overwrites-user-folder",
        "meanflow/checkpoint.py",
        "    written = _exported_entries(path)\n    if written is None:",
        "    written = _exported_entries(path)\n    if False:",
        CHECKPOINT,
        "a non-empty folder that is not ours is replaced",
    ),
    Mutant(
        "checkpoint-cache-env-ignored",
        "meanflow/checkpoint.py",
        'return os.environ.get("MEANFLOW_CACHE") or default',
        "return default",
        CHECKPOINT,
        "$MEANFLOW_CACHE ignored",
    ),
    Mutant(
        "checkpoint-private-files",
        "meanflow/checkpoint.py",
        "os.fchmod(f.fileno(), 0o666 & ~current_umask())",
        "os.fchmod(f.fileno(), 0o600)",
        CHECKPOINT,
        "checkpoints readable by their owner only",
    ),
    # ----------------------------------------------------- meanflow/train.py (stable lines)
    Mutant(
        "train-ema-decay-complement",
        "meanflow/train_step.py",
        "weights = [1.0 - ema_decay(d, step) for d in decays]",
        "weights = [ema_decay(d, step) for d in decays]",
        TRAIN,
        "EMA moves by decay, not 1 - decay",
    ),
    Mutant(
        "train-ema-no-warmup",
        "meanflow/train_step.py",
        "return min(decay, (1 + step) / (10 + step))",
        "return decay",
        TRAIN,
        "EMA decay without its warm-up",
    ),
    Mutant(
        "train-lr-warmup-off-by-one",
        "meanflow/train.py",
        "config.lr * (step + 1) / warmup",
        "config.lr * step / warmup",
        TRAIN,
        "first step at lr 0",
    ),
    Mutant(
        "train-lr-decay-off-by-one",
        "meanflow/train.py",
        "(step - warmup) / max(1, config.steps - warmup)",
        "(step - warmup + 1) / max(1, config.steps - warmup)",
        TRAIN,
        "the decay starts a step early and reaches lr 0 on the last step",
    ),
    Mutant(
        "train-clip-ignored",
        "meanflow/train_step.py",
        'grad_clip or float("inf")',
        'float("inf")',
        TRAIN,
        "grad_clip never applied",
    ),
    Mutant(
        "graphed-step-ema-no-warmup",
        "meanflow/train_step.py",
        "weight.fill_(1.0 - ema_decay(decay, step))",
        "weight.fill_(1.0 - decay)",
        TRAIN,
        "the graphed step's EMA weights skip the warm-up",
    ),
    Mutant(
        "resume-takes-the-checkpoints-optimizer-flags",
        "meanflow/train_state.py",
        "        group.update(kept)\n",
        "        pass\n",
        TRAIN,
        "a capturable checkpoint's flags break a CPU resume",
    ),
    Mutant(
        "train-rng-not-restored",
        "meanflow/train_state.py",
        "        set_rng_state(rngs[rank], device)\n",
        "        pass\n",
        ("tests/faults/test_fault_resume.py", *TRAIN),
        "resume keeps the fresh RNG state",
    ),
    Mutant(
        "train-rngs-other-world-take-rank-0",
        "meanflow/train_state.py",
        "    else:\n        seed_global_rngs(seed, step, rank)\n",
        "    else:\n        set_rng_state(rngs[0], device)\n",
        (RNG_WORLD,),
        "resumed under another world size, every rank takes rank 0's stream: the same dropout masks",
    ),
    Mutant(
        "train-loader-state-rank-0-for-all",
        "meanflow/train_state.py",
        '    return ranks[rank] if ranks and len(ranks) == world else ckpt["data"]',
        '    return ckpt["data"]',
        ("tests/faults/test_fault_ranks.py::test_each_rank_resumes_its_own_loader_state",),
        "every rank resumes rank 0's loader state: the others' read failures of the epoch start at zero",
    ),
    Mutant(
        "train-rngs-seeded-without-rank",
        "meanflow/train_state.py",
        "np.random.SeedSequence([seed, step, rank])",
        "np.random.SeedSequence([seed, step])",
        (RNG_WORLD,),
        "every rank's global generators seeded alike: the same dropout masks on every rank",
    ),
    Mutant(
        "train-same-noise-every-step",
        "meanflow/train.py",
        "generator.manual_seed(config.seed * 1_000_003 + step)",
        "generator.manual_seed(config.seed)",
        TRAIN,
        "every step draws the same times and noise",
    ),
    Mutant(
        "train-img-per-s-counts-pauses",
        "meanflow/train.py",
        "            t_log += time.perf_counter() - paused\n",
        "",
        ("tests/meanflow/test_train.py::test_images_per_second_leave_out_checkpoints_grids_and_evaluations",),
        "img_per_s counts the checkpoints, sample grids and evaluations made between its steps",
    ),
    # ------------------------------------------ kept checkpoints, the batch split, the lock
    Mutant(
        "keep-missing-skipped",
        "meanflow/train_state.py",
        "        keep_missing(config, step, ckpt, path)",
        "        pass",
        KEPT_KILL,
        "a kill -9 between last.pt and its kept copy loses that step's ckpt for good",
    ),
    Mutant(
        "keep-missing-rewrites-existing",
        "meanflow/train_state.py",
        " or os.path.lexists(kept):",
        ":",
        KEPT_KILL,
        "a kept checkpoint already there is written again at every resume",
    ),
    Mutant(
        "keep-missing-full-as-sampling",
        "meanflow/train_state.py",
        "        atomic_copy(full, kept)",
        "        atomic_save(kept_state(state), kept)",
        KEPT_DISK,
        "keep_full's missed copy rewritten without its optimizer state",
    ),
    Mutant(
        "fresh-start-over-kept",
        "meanflow/train_state.py",
        "        refuse_starting_over_kept(config.out_dir)\n",
        "",
        KEPT_OTHER,
        "a new run in a folder of another run's kept checkpoints replaces them",
    ),
    Mutant(
        "resume-ignores-foreign-kept",
        "meanflow/train_state.py",
        '        last, what = kept[-1], f"the kept {os.path.basename(kept[-1])}"',
        "        return",
        KEPT_OTHER,
        "--resume of one run into another's folder of kept checkpoints replaces them",
    ),
    Mutant(
        "resume-back-replaces-later-last",
        "meanflow/train_state.py",
        "        if isinstance(last_step, int) and last_step > step:",
        "        if isinstance(last_step, int) and last_step < step:",
        ("tests/faults/test_fault_resume.py::test_resume_into_another_runs_out_dir_is_refused",),
        "--resume of an earlier checkpoint replaces the run's newer last.pt: its later steps are lost",
    ),
    Mutant(
        "resume-back-replaces-later-kept",
        "meanflow/train_state.py",
        "        if int(KEPT_NAME.fullmatch(os.path.basename(kept)).group(1)) > step",
        "        if int(KEPT_NAME.fullmatch(os.path.basename(kept)).group(1)) > step + 1",
        ("tests/faults/test_fault_resume.py::test_resume_into_another_runs_out_dir_is_refused",),
        "going back one step replaces the kept checkpoint of the step after it",
    ),
    Mutant(
        "batch-split-unchecked",
        "meanflow/train.py",
        "    check_batch_split(config.batch_size, world)\n",
        "",
        KEPT_SPLIT,
        "a global batch of 8 over 3 ranks trains on 6 rows a step",
    ),
    Mutant(
        "kept-without-ema-no-weights",
        "meanflow/train_state.py",
        'keys = SAMPLING_KEYS if state["ema"] else (*SAMPLING_KEYS, "model")',
        "keys = SAMPLING_KEYS",
        KEPT_NO_EMA,
        "a run without EMAs keeps checkpoints with no weights",
    ),
    Mutant(
        "no-flock-silent",
        "meanflow/checkpoint.py",
        "                if held is None:",
        "                if False:",
        ("tests/meanflow/test_checkpoint_locks.py",),
        "on Lustre or NFS without flock a second run on the folder goes unnoticed",
    ),
    Mutant(
        "empty-out-dir-accepted",
        "meanflow/config.py",
        'isinstance(v, str) and v.strip() != ""',
        "isinstance(v, str)",
        ("tests/meanflow/test_config.py::test_bad_keys_and_values",),
        "--out_dir '' fails only after the data and model are built",
    ),
    # ------------------------------------- meanflow/train.py, config.py: --model_class adapters
    Mutant(
        "train-adapter-no-ddp",
        "meanflow/train.py",
        "    if world > 1:\n        step_module = wrap_ddp(",
        "    if world > 1 and config.model_class == DIT_CLASS:\n        step_module = wrap_ddp(",
        (f"{ADAPTER_TRAIN}::test_two_ranks_equal_one",),
        "an adapter's gradients are not all-reduced: each rank trains on its half alone",
    ),
    Mutant(
        "train-adapter-bf16-ignored",
        "meanflow/train.py",
        'bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")',
        'bf16 = (config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"))'
        " and config.model_class == DIT_CLASS",
        (f"{ADAPTER_TRAIN}::test_cpu_bf16_autocast_trains_close_to_fp32",),
        "--precision bf16 silently runs an adapter in fp32",
    ),
    Mutant(
        "config-adapter-model-dropped",
        "meanflow/config.py",
        "    config.validate()\n    _refuse_unused_model(config, preset)\n",
        "    config.validate()\n",
        (f"{ADAPTER_TRAIN}::test_a_model_preset_other_than_the_presets_is_refused",),
        "--model with an adapter is dropped without a word",
    ),
    Mutant(
        "config-adapter-model-vs-default",
        "meanflow/config.py",
        'preset_model = PRESETS[preset].get("model", TrainConfig.model)',
        "preset_model = TrainConfig.model",
        (f"{ADAPTER_TRAIN}::test_a_model_preset_other_than_the_presets_is_refused",),
        "--model_class X with the default preset (model DiT-T/8) refused",
    ),
    Mutant(
        "train-adapter-built-silently",
        "meanflow/train.py",
        "        print(adapter_line(config, model), flush=True)\n",
        "        pass\n",
        (f"{ADAPTER_TRAIN}::test_run_says_what_it_built_and_that_model_is_unused",),
        "an adapter run does not say what it built, nor that model is unused",
    ),
    # ---------------------------------------------------------------- failures and refusals
    Mutant(
        "ranks-error-not-shared",
        "meanflow/distributed.py",
        "        if error is None and failed is not None:",
        "        if False:",
        ("tests/faults/test_fault_ranks.py",),
        "a rank's error stays its own: the others wait at their next collective",
    ),
    Mutant(
        "sdpa-tangent-gradient-dropped",
        "mfkernels/sdpa.py",
        "        if grad_o_dot is not None:\n            raise RuntimeError(TANGENT_IS_A_STOP_GRADIENT)",
        "        if False:\n            raise RuntimeError(TANGENT_IS_A_STOP_GRADIENT)",
        ("tests/mfkernels/test_sdpa_inputs.py",),
        "a loss on the fused tangent loses that term's gradient without a word",
    ),
    Mutant(
        "dual-op-second-derivative-dropped",
        "mfkernels/dual_op.py",
        "        if torch.is_grad_enabled():\n            raise RuntimeError(",
        "        if False:\n            raise RuntimeError(",
        ("tests/mfkernels/test_dual_op.py",),
        "create_graph=True through an op takes its first derivative as a constant",
    ),
    *PROGRAM_MUTANTS,
    *TRAINER_MUTANTS,
    *MODEL_MUTANTS,
    *KERNEL_MUTANTS,
    *KERNEL_INPUT_MUTANTS,
    *PERSISTENCE_MUTANTS,  # checkpoints, exported pipelines, VAE files: tools/mutant_catalog_persistence.py
    *KERNEL_API_MUTANTS,  # the kernels' public API: tools/mutant_catalog_kernel_api.py
    *RESUME_DATA_MUTANTS,  # an image folder's identity on resume: tools/mutant_catalog_resume_data.py
    *PROGRAM_ARG_MUTANTS,  # the programs' command lines: tools/mutant_catalog_program_args.py
    *DATA_SOURCE_MUTANTS,  # small data sources, MNIST evaluation: tools/mutant_catalog_data_sources.py
    *KERNEL_INFRA_MUTANTS,  # tiles, Triton, launches, csrc: tools/mutant_catalog_kernel_infra.py
    *DATA_FLOW_MUTANTS,  # latents, sharding, reference statistics: tools/mutant_catalog_data_flow.py
    *KERNEL_MATH_MUTANTS,  # the small kernels' duals: tools/mutant_catalog_kernel_math.py
    *EVAL_PIPELINE_MUTANTS,  # evaluation runs, the exported pipeline: tools/mutant_catalog_eval_pipeline.py
    *KERNEL_BACKWARD_MUTANTS,  # attention's backward, the ops: tools/mutant_catalog_kernel_backward.py
    *IMAGE_DATA_MUTANTS,  # image-folder scans, decodes, DALI: tools/mutant_catalog_image_data.py
    *CONFIG_REPORT_MUTANTS,  # the trainer's config, its reports: tools/mutant_catalog_config_report.py
    *BENCH_REPORT_MUTANTS,  # the benchmarks' timing, counts, tables: tools/mutant_catalog_bench_report.py
    *RUNTIME_MUTANTS,  # saved train state, launches, csrc: tools/mutant_catalog_runtime.py
    *PLUMBING_MUTANTS,  # the step, ranks, demo, scan cache: tools/mutant_catalog_plumbing.py
    *PRIMAL_MUTANTS,  # the value-only GELU of a plain forward: tools/mutant_catalog_primal.py
    *BENCH_STEP_MUTANTS,  # the step benchmarks: tools/mutant_catalog_bench_steps.py
    *CSRC_CPU_MUTANTS,  # the C++ CPU kernels, ISA dispatch, bindings: tools/mutant_catalog_csrc_cpu.py
    *BENCH_ATTENTION_MUTANTS,  # the attention benchmarks: tools/mutant_catalog_bench_attention.py
    *BENCH_OPS_MUTANTS,  # the op, data and compile benchmarks: tools/mutant_catalog_bench_ops.py
]
