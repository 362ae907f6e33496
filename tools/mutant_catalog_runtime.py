"""The catalog's mutants of the trainer's saved state and the kernels' runtime plumbing:
``meanflow/train_state.py``, ``mfkernels/backends/triton/launch.py`` and
``mfkernels/backends/csrc.py``. Each is a bug that resumes, launches or loads otherwise than
asked, without a word.

Left unmutated because only a GPU shows them: the CUDA random state (``rng_state``'s
``"cuda"`` entry), csrc's device index and current stream (``_arg``, ``_launch``), its 16-byte
realignment of CUDA operands, ``cuda_unsupported``'s dtypes and ``cuda_ln_unsupported``'s row
limit (a CUDA tensor is needed to reach them), and ``launch.sm_count``."""

from mutant import Mutant

__all__ = ["RUNTIME_MUTANTS"]

_STATE = "meanflow/train_state.py"
_LAUNCH = "mfkernels/backends/triton/launch.py"
_CSRC = "mfkernels/backends/csrc.py"
UNITS = "tests/meanflow/test_train_state_units.py"
RESUME = "tests/faults/test_fault_resume.py"
RESUME_RNGS = f"{RESUME}::test_global_rngs_under_another_world_size_are_each_ranks_own"
RESUME_MISSING_KEY = f"{RESUME}::test_checkpoint_missing_a_key_is_one_line_naming_file_and_key"
RESUME_OTHER_OUT = f"{RESUME}::test_resume_into_another_runs_out_dir_is_refused"
RESUME_SAYS_SO = f"{RESUME}::test_resume_says_so_and_takes_a_new_schedule"
RESUME_WRONG_KIND = f"{RESUME}::test_out_dir_and_resume_of_the_wrong_kind_say_so"
RESUME_OTHER_IMAGES = f"{RESUME}::test_resume_onto_other_images_in_the_mnist_files_is_refused"
TRAIN = "tests/meanflow/test_train.py"
KEPT_HOLD = f"{TRAIN}::test_kept_checkpoints_hold_what_sampling_needs"
KEPT_CADENCE = f"{TRAIN}::test_checkpoints_are_kept_at_their_own_cadence"
CAPTURABLE = "tests/meanflow/test_train_step.py::test_a_capturable_optimizers_state_resumes_in_an_eager_run"
WRITES = "tests/faults/test_fault_writes.py"
WRITES_KILL = f"{WRITES}::test_kill_during_a_checkpoint_write_keeps_last_pt_and_the_next_start_cleans_up"
WRITES_SYMLINK = f"{WRITES}::test_metrics_symlink_is_refused_before_anything_is_written"
IMAGE_IDENTITY = "tests/meanflow/test_image_folder_identity.py"
RANKS_LOADER = "tests/faults/test_fault_ranks.py::test_each_rank_resumes_its_own_loader_state"
LAUNCH_SETTINGS = "tests/mfkernels/test_launch_settings.py"
PLUMBING = "tests/mfkernels/test_kernel_plumbing.py"
TUNER = "tests/mfkernels/test_layernorm_modulate.py::test_the_gpu_tunes_tiles_of_4_to_32_elements_a_thread"
CSRC_INPUTS = "tests/mfkernels/test_csrc_inputs.py"
CSRC_FALLBACK = f"{CSRC_INPUTS}::test_missing_or_stale_extension_falls_back_with_one_message"
CSRC_OPS = "tests/mfkernels/test_csrc_ops.py"

RUNTIME_MUTANTS = [
    # ------------------------------------------------------------ meanflow/train_state.py rngs
    Mutant(
        "rt-rng-torch-not-restored",
        _STATE,
        '    torch.set_rng_state(state["torch"])\n',
        "    pass\n",
        (UNITS, RESUME_RNGS),
        "a resume draws other noise times and dropout masks than the run it continues",
    ),
    Mutant(
        "rt-rng-python-not-restored",
        _STATE,
        '    random.setstate(state["python"])\n',
        "    pass\n",
        (UNITS, RESUME_RNGS),
        "a resume's python draws (a loader's augmentations) differ from the run it continues",
    ),
    Mutant(
        "rt-rng-numpy-not-restored",
        _STATE,
        "    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))\n",
        "    pass\n",
        (UNITS, RESUME_RNGS),
        "a resume's numpy draws differ from the run it continues",
    ),
    Mutant(
        "rt-rng-numpy-cached-gaussian-dropped",
        _STATE,
        "torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),",
        "torch.from_numpy(np_state[1].astype(np.int64)), np_state[2]),",
        (UNITS, RESUME_RNGS),
        "numpy's cached second gaussian is not saved: the first normal draw after a resume differs",
    ),
    Mutant(
        "rt-rng-seeded-without-step",
        _STATE,
        "np.random.SeedSequence([seed, step, rank])",
        "np.random.SeedSequence([seed, rank])",
        (UNITS, RESUME_RNGS),
        "under another world size every resume of a run, at any step, draws the same fresh streams",
    ),
    Mutant(
        "rt-rng-numpy-not-seeded",
        _STATE,
        "    np.random.seed(int(state[0]))\n",
        "",
        (UNITS, RESUME_RNGS),
        "under another world size numpy keeps whatever stream the process had",
    ),
    Mutant(
        "rt-rng-more-saved-ranks-taken",
        _STATE,
        "    if len(rngs) == world:",
        "    if len(rngs) >= world:",
        (UNITS, RESUME_RNGS),
        "a run of 4 ranks resumed by 2 gives ranks 0-1 saved streams instead of fresh ones",
    ),
    # -------------------------------------------------------- meanflow/train_state.py loading
    Mutant(
        "rt-load-missing-keys-unchecked",
        _STATE,
        "    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]",
        "    missing = []",
        (UNITS, RESUME_MISSING_KEY),
        "a checkpoint lacking a key fails later, not naming it as a missing key",
    ),
    Mutant(
        "rt-load-kept-hint-only-if-fewer",
        _STATE,
        "ema_only = set(ckpt) <= set(SAMPLING_KEYS)",
        "ema_only = set(ckpt) < set(SAMPLING_KEYS)",
        (UNITS, KEPT_HOLD),
        "a resume from a kept checkpoint is refused without saying keep_full would have kept it whole",
    ),
    Mutant(
        "rt-load-model-config-unchecked",
        _STATE,
        "    if diff:\n",
        "    if False:\n",
        (UNITS,),
        "a checkpoint of another architecture fails in load_state_dict, not naming the model's keys",
    ),
    Mutant(
        "rt-restore-ema-count-unchecked",
        _STATE,
        '    if len(ckpt["ema"]) != len(emas):',
        '    if len(ckpt["ema"]) < len(emas):',
        (UNITS,),
        "a checkpoint with more EMAs than the run restores the first ones and drops the rest silently",
    ),
    Mutant(
        "rt-restore-step-off-by-one",
        _STATE,
        '        step = int(ckpt["step"])\n',
        '        step = int(ckpt["step"]) + 1\n',
        (UNITS, RESUME_SAYS_SO),
        "a resume skips one step of the schedule and its data",
    ),
    Mutant(
        "rt-restore-key-error-unwrapped",
        _STATE,
        "    except (KeyError, RuntimeError, ValueError, TypeError) as e:",
        "    except (RuntimeError, ValueError, TypeError) as e:",
        (UNITS, RESUME_MISSING_KEY),
        "a state missing a key inside it is a bare KeyError, not naming the file",
    ),
    Mutant(
        "rt-optimizer-checkpoints-lr-taken",
        _STATE,
        'for k in (*OPTIMIZER_IMPLEMENTATION, "lr") if k in g}',
        "for k in OPTIMIZER_IMPLEMENTATION if k in g}",
        (CAPTURABLE, UNITS),
        "a resume takes the checkpoint's lr (a tensor from a CUDA-graphed run) instead of this run's",
    ),
    Mutant(
        "rt-loader-state-of-more-ranks-taken",
        _STATE,
        "ranks[rank] if ranks and len(ranks) == world else",
        "ranks[rank] if ranks and len(ranks) >= world else",
        (UNITS,),
        "a run of 4 ranks resumed by 2: rank 1 takes rank 1's loader state, not the shared position",
    ),
    Mutant(
        "rt-classes-compared-by-count",
        _STATE,
        "or list(recorded) == list(now):",
        "or len(recorded) == len(now):",
        (UNITS,),
        "a resume onto renamed class folders (as many) is taken: labels mean other classes",
    ),
    Mutant(
        "rt-data-check-only-without-identity",
        _STATE,
        'if recorded is None or not hasattr(loader, "data_changes"):',
        'if recorded is None or hasattr(loader, "data_changes"):',
        (IMAGE_IDENTITY, UNITS),
        "a resume onto data made otherwise is never refused",
    ),
    # ------------------------------------------------------- meanflow/train_state.py resume
    Mutant(
        "rt-resume-missing-file-starts-over",
        _STATE,
        '            raise FileNotFoundError(f"resume checkpoint {path!r} does not exist")',
        "            return 0, None",
        (UNITS,),
        "a misspelt --resume starts a new run from step 0 instead of saying the file does not exist",
    ),
    Mutant(
        "rt-resume-directory-taken",
        _STATE,
        "        if os.path.isdir(path):\n",
        "        if False:\n",
        (UNITS, RESUME_WRONG_KIND),
        "--resume of a run's folder fails in torch.load, not saying to name its last.pt",
    ),
    Mutant(
        "rt-later-kept-includes-its-own-step",
        _STATE,
        "        if int(KEPT_NAME.fullmatch(os.path.basename(kept)).group(1)) > step\n",
        "        if int(KEPT_NAME.fullmatch(os.path.basename(kept)).group(1)) >= step\n",
        (UNITS, RESUME_OTHER_OUT),
        "a resume from a kept checkpoint is refused for replacing itself",
    ),
    Mutant(
        "rt-later-last-at-the-same-step",
        _STATE,
        "and last_step > step:",
        "and last_step >= step:",
        (UNITS,),
        "a resume from a kept copy of last.pt's own step is refused for replacing a later step",
    ),
    Mutant(
        "rt-kept-checkpoints-sorted-by-name",
        _STATE,
        "    return [kept_path(out_dir, step) for step in steps]",
        "    return sorted(kept_path(out_dir, step) for step in steps)",
        (UNITS,),
        "ckpt_10000000.pt sorts before ckpt_9000000.pt: past 10M steps the newest kept is misnamed",
    ),
    Mutant(
        "rt-keeps-off-by-one",
        _STATE,
        "step % config.keep_every == 0",
        "(step + 1) % config.keep_every == 0",
        (UNITS, KEPT_CADENCE),
        "kept checkpoints are one step before their cadence",
    ),
    Mutant(
        "rt-keeps-every-step-when-off",
        _STATE,
        "return bool(config.keep_every) and step",
        "return not config.keep_every or step",
        (UNITS, KEPT_CADENCE),
        "keep_every 0 (keep none) keeps every checkpoint",
    ),
    Mutant(
        "rt-kept-state-without-classes",
        _STATE,
        '"model_config", "step", "classes", "data_identity")',
        '"model_config", "step", "data_identity")',
        (UNITS, KEPT_HOLD),
        "a kept checkpoint does not name its classes: an export of it calls them by number",
    ),
    Mutant(
        "rt-run-files-without-last-pt",
        _STATE,
        'RUN_FILES = r"last\\.pt|',
        'RUN_FILES = r"',
        (WRITES_KILL,),
        "the temporary of a killed last.pt write is never removed",
    ),
    Mutant(
        "rt-metrics-symlink-followed",
        _STATE,
        '    refuse_symlink(os.path.join(out_dir, "metrics.jsonl"))',
        "    pass",
        (WRITES_SYMLINK,),
        "a metrics.jsonl that is a symbolic link has the run's records appended to its target",
    ),
    # --------------------------------------------------- meanflow/train_state.py checkpoint
    Mutant(
        "rt-checkpoint-data-of-the-last-rank",
        _STATE,
        '"data": loader_states[0],',
        '"data": loader_states[-1],',
        (RANKS_LOADER,),
        "resumed by another number of ranks, every rank takes the last rank's data position",
    ),
    Mutant(
        "rt-checkpoint-data-identity-not-recorded",
        _STATE,
        '"data_identity": getattr(loader, "data_identity", None),',
        '"data_identity": None,',
        (UNITS, RESUME_OTHER_IMAGES),
        "a resume onto other data in the same files is taken",
    ),
    Mutant(
        "rt-checkpoint-one-ema-decay",
        _STATE,
        '"ema_decays": list(config.ema_decays),',
        '"ema_decays": list(config.ema_decays)[:1],',
        (UNITS, KEPT_HOLD),
        "a checkpoint of two EMAs names one decay: sampling takes the second EMA for the first's",
    ),
    Mutant(
        "rt-checkpoint-nan-ema-saved",
        _STATE,
        "    weights = [p for m in (model, *emas) for p in m.parameters()]",
        "    weights = list(model.parameters())",
        (UNITS,),
        "an EMA holding NaN replaces the last good checkpoint",
    ),
    # ------------------------------------------------- mfkernels/backends/triton/launch.py
    Mutant(
        "rt-launch-triton-reason-ignored",
        _LAUNCH,
        "    if reason is not None:\n        return reason\n",
        "",
        (PLUMBING, LAUNCH_SETTINGS),
        "CPU tensors outside the interpreter are handed to a Triton kernel",
    ),
    Mutant(
        "rt-launch-tuner-key-without-chunks",
        _LAUNCH,
        '    key = [n_arg, "dim", *(["tokens_per_chunk"] if splits else [])]',
        '    key = [n_arg, "dim"]',
        (LAUNCH_SETTINGS, TUNER),
        "a chunked backward's tuned SPLIT is reused for another batch's chunk length",
    ),
    Mutant(
        "rt-launch-tuner-cuts-shorter-than-a-tile",
        _LAUNCH,
        'triton.cdiv(named_args["tokens_per_chunk"], s) >= rows',
        'triton.cdiv(named_args["tokens_per_chunk"], s) >= 1',
        (TUNER, LAUNCH_SETTINGS),
        "the tuner times chunk parts shorter than one tile",
    ),
    Mutant(
        "rt-launch-tuner-ignores-autotune-off",
        _LAUNCH,
        "        if not autotune_enabled():\n            return [chosen]\n",
        "",
        (TUNER, LAUNCH_SETTINGS),
        "MFK_AUTOTUNE=0 still times every tile",
    ),
    Mutant(
        "rt-launch-interpreter-one-chunk",
        _LAUNCH,
        'if device.type == "cuda" else 2',
        'if device.type == "cuda" else 1',
        (LAUNCH_SETTINGS,),
        "in the interpreter a chunked backward never runs its sum over chunks",
    ),
    Mutant(
        "rt-launch-chunk-rounded-down",
        _LAUNCH,
        "// chunks + rows - 1) // rows * rows",
        "// chunks) // rows * rows",
        (PLUMBING, LAUNCH_SETTINGS),
        "fewer tokens than a tile per chunk rounds to chunks of 0 tokens",
    ),
    # ------------------------------------------------------------ mfkernels/backends/csrc.py
    Mutant(
        "rt-csrc-dependency-error-hidden",
        _CSRC,
        '    if e.name != "mfkernels._C":\n        raise\n',
        "",
        (CSRC_INPUTS,),
        "a module the extension imports, missing, passes for an extension that is not built",
    ),
    Mutant(
        "rt-csrc-broken-passes-for-missing",
        _CSRC,
        '_C, import_error = None, f"mfkernels._C does not load: {e}"',
        "_C, import_error = None, _NOT_BUILT",
        (CSRC_FALLBACK,),
        "an extension that does not load turns the backends off without a word",
    ),
    Mutant(
        "rt-csrc-not-built-warns",
        _CSRC,
        "if import_error not in (None, _NOT_BUILT):",
        "if import_error is not None:",
        (CSRC_FALLBACK,),
        "every import without the optional extension warns, though auto dispatch never needs it",
    ),
    Mutant(
        "rt-csrc-isa-auto-warns",
        _CSRC,
        'and _isa_wanted not in ("", "auto") and',
        'and _isa_wanted != "" and',
        (CSRC_INPUTS,),
        "MFK_CPU_ISA=auto warns that it is ignored",
    ),
    Mutant(
        "rt-csrc-cpu-ops-without-extension",
        _CSRC,
        "for op, fn in _ON_CPU.items()} if available() else {}",
        "for op, fn in _ON_CPU.items()}",
        (CSRC_FALLBACK,),
        "without the extension the cpu backend is offered and every CPU op fails in it",
    ),
    Mutant(
        "rt-csrc-cuda-without-nvcc",
        _CSRC,
        "return _C is not None and bool(_C.WITH_CUDA)",
        "return _C is not None",
        (PLUMBING,),
        "an extension built without nvcc is offered as the cuda backend",
    ),
    Mutant(
        "rt-csrc-silu-tangent-strided",
        _CSRC,
        "    x, x_dot = x.contiguous(), x_dot.contiguous()\n",
        "    x, x_dot = x.contiguous(), x_dot\n",
        (CSRC_INPUTS, CSRC_OPS),
        "a strided SiLU tangent is handed to the kernel as if contiguous",
    ),
    Mutant(
        "rt-csrc-gelu-0d-as-is",
        _CSRC,
        "return t.contiguous().reshape(1) if t.dim() == 0 else t.contiguous()",
        "return t.contiguous()",
        (CSRC_INPUTS,),
        "a 0-d GELU input reaches the kernel, which takes rows",
    ),
    Mutant(
        "rt-csrc-ln-backward-sums-in-x-dtype",
        _CSRC,
        "    acc = compute_dtype(x.dtype)\n",
        "    acc = x.dtype\n",
        (CSRC_OPS,),
        "bf16 LayerNorm backward returns dshift and dscale rounded to bf16",
    ),
]
