"""The catalog's mutants of the trainer's entry: how ``python -m meanflow.train`` reads its
command line and ``--config`` file (a mapping that joins a preset's, a number that stays a
number, a key that needs its value), which keys a resume compares, the learning rate of each
step, the signal handler and the one-line errors. Each is a bug that starts a run other than
the one asked for, or resumes one that should be refused, without a word."""

from mutant import Mutant

__all__ = ["TRAINER_ENTRY_MUTANTS"]

T = "tests/meanflow/"
OVERRIDES = f"{T}test_trainer_entry_overrides.py"
UNITS = f"{T}test_trainer_entry_units.py"
IDENTITY = f"{T}test_run_identity.py"
CONFIG = f"{T}test_config.py"
LR = f"{UNITS}::test_decay_runs_from_lr_after_the_warmup_towards_zero_at_steps"
WARMUP = f"{UNITS}::test_warmup_ramps_to_lr_without_a_step_at_zero"
SIGNALS = f"{UNITS}::test_the_first_signal_asks_for_a_stop_the_second_stops_and_the_handlers_come_back"
CLI = f"{UNITS}::test_cli_says_an_error_in_one_line_with_status_1"
FILES = f"{UNITS}::test_a_config_file_that_is_no_mapping_is_refused_naming_it"

_OVR = "meanflow/config_overrides.py"
_CONFIG = "meanflow/config.py"
_FILE = "meanflow/config_file.py"
_TRAIN = "meanflow/train.py"
_IDENT = "meanflow/run_identity.py"

TRAINER_ENTRY_MUTANTS = [
    # ------------------------------------------------------- meanflow/config_overrides.py
    Mutant(
        "entry-model-kwargs-mapping-replaces-the-presets",
        _OVR,
        "entries = {**(current or {}), **{k: _entry(v) for k, v in entries.items()}}",
        "entries = {k: _entry(v) for k, v in entries.items()}",
        (OVERRIDES,),
        "a file's model_kwargs: {depth: 3} drops every preset's time_scale 1: DiT's 1000 blows up the target",
    ),
    Mutant(
        "entry-model-keyword-exponent-a-string",
        _OVR,
        "    return _scalar(value) if isinstance(value, str) else value\n",
        "    return value\n",
        (OVERRIDES,),
        "--model_kwargs.time_scale 1e3 reaches the DiT as the string '1e3' and is refused",
    ),
    Mutant(
        "entry-bare-flag-true-for-any-key",
        _OVR,
        "            elif takes_a_bare_flag(config, key):",
        "            elif True:",
        (OVERRIDES,),
        "--out_dir --steps 5 trains into a folder named 'true'",
    ),
    Mutant(
        "entry-bare-flag-refused-for-bools",
        _OVR,
        "        return kind is bool or (kind is dict and i < len(parts) - 1)",
        "        return kind is dict and i < len(parts) - 1",
        (OVERRIDES, CONFIG),
        "--compile alone is refused as a key without its value",
    ),
    Mutant(
        "entry-yaml-boolean-unexplained",
        _OVR,
        "got {value!r}{quote}",
        "got {value!r}",
        (OVERRIDES,),
        "cuda_graphs: on in a YAML file says 'must be str, got True' and not how to write it",
    ),
    Mutant(
        "entry-any-bool-word-is-true",
        _OVR,
        "            return BOOL_WORDS[value.lower()]",
        "            return value.lower() in BOOL_WORDS",
        (CONFIG,),
        "--compile false turns compilation on",
    ),
    Mutant(
        "entry-file-whole-number-for-a-float-refused",
        _OVR,
        "        if kind is float and isinstance(value, int) and not isinstance(value, bool):\n"
        "            return float(value)\n",
        "",
        (OVERRIDES,),
        "grad_clip: 2 in a YAML file is refused: only 2.0 reads as a float",
    ),
    Mutant(
        "entry-presets-lists-shared",
        _OVR,
        "            return copy.deepcopy(value)  # never share a preset's list or dict",
        "            return value",
        (OVERRIDES,),
        "a config's ema_decays is the preset's own list: appending to one changes every later config",
    ),
    Mutant(
        "entry-none-lowercase-only",
        _OVR,
        'value.lower() in ("none", "null")',
        'value in ("none", "null")',
        (OVERRIDES,),
        "--data.path None reads the MNIST files from a folder named 'None'",
    ),
    Mutant(
        "entry-none-for-any-key",
        _OVR,
        "    if optional and (value is None",
        "    if (value is None",
        (OVERRIDES,),
        "--out_dir none makes out_dir None: the run fails late instead of writing to ./none",
    ),
    Mutant(
        "entry-list-items-left-strings",
        _OVR,
        "            return [_scalar(v) for v in parsed]",
        "            return list(parsed)",
        (CONFIG,),
        "--ema_decays 0.9,0.99 holds strings: refused as not numbers",
    ),
    Mutant(
        "entry-section-takes-a-scalar",
        _OVR,
        "                if not isinstance(value, dict):\n"
        '                    raise TypeError(f"config key {key!r} takes a mapping, got {value!r}")\n',
        "",
        (OVERRIDES,),
        "--loss 0.5 or a file's data: /data/mnist fails with a traceback (no .items), not one line",
    ),
    Mutant(
        "entry-key-below-a-value-sets-the-value",
        _OVR,
        "        if not last:\n            raise _unknown(key, config, source)\n",
        "",
        (OVERRIDES,),
        "--lr.value 3 sets lr to 3 instead of naming an unknown key",
    ),
    Mutant(
        "entry-dashes-not-underscores",
        _OVR,
        '        key = key.replace("-", "_")\n',
        "",
        (OVERRIDES,),
        "--batch-size 32 is an unknown key",
    ),
    Mutant(
        "entry-negative-value-taken-for-a-flag",
        _OVR,
        'not args[i + 1].startswith("--")',
        'not args[i + 1].startswith("-")',
        (OVERRIDES,),
        "--loss.time_mean -0.4 is refused as a key without its value",
    ),
    # ----------------------------------------------------------------- meanflow/config.py
    Mutant(
        "entry-file-preset-over-the-command-lines",
        _CONFIG,
        "preset = known.preset or file_preset or DEFAULT_PRESET",
        "preset = file_preset or known.preset or DEFAULT_PRESET",
        ("tests/faults/test_fault_trainer_options.py::test_config_file_preset_chooses_the_preset",),
        "--preset mnist is ignored when the --config file names preset: mnist-long",
    ),
    Mutant(
        "entry-command-line-before-the-file",
        _CONFIG,
        '    apply(config, values, f"--config {known.config}")\n    apply_command_line(config, rest)\n',
        '    apply_command_line(config, rest)\n    apply(config, values, f"--config {known.config}")\n',
        (CONFIG,),
        "--steps 12 loses to the --config file's steps: 11",
    ),
    Mutant(
        "entry-loss-floats-unchecked",
        _CONFIG,
        '                _require(key, _get(self, key), _is_number, "a finite number")\n',
        "                pass\n",
        ("tests/faults/test_fault_trainer_options.py::test_out_of_range_option_is_one_line_naming_it",),
        "--loss.time_mean nan trains NaN from the first step",
    ),
    Mutant(
        "entry-unused-loss-keys-accepted",
        _CONFIG,
        "    _refuse_unused_model(config, preset)\n    _refuse_unused_loss_keys(config, preset)\n",
        "    _refuse_unused_model(config, preset)\n",
        (
            "tests/faults/test_fault_trainer_options.py::test_meanflow_loss_keys_the_baseline_never_reads_are_refused",
        ),
        "flow_matching with --loss.cfg_w 3 trains without guidance and records cfg_w 3",
    ),
    # ------------------------------------------------------------ meanflow/config_file.py
    Mutant(
        "entry-file-no-mapping-accepted",
        _FILE,
        "    if not isinstance(values, dict):\n",
        "    if values is None:\n",
        (FILES,),
        "a --config file holding a list fails with a traceback (no .pop), not one line naming it",
    ),
    Mutant(
        "entry-file-folder-opened",
        _FILE,
        "    if not os.path.isfile(path):",
        "    if not os.path.exists(path):",
        (f"{UNITS}::test_a_config_folder_is_refused",),
        "--config runs/ (a folder) fails with IsADirectoryError, not 'does not exist'",
    ),
    Mutant(
        "entry-file-binary-traceback",
        _FILE,
        "    except UnicodeDecodeError:",
        "    except UnicodeTranslateError:",
        (FILES,),
        "a binary --config file fails with a UnicodeDecodeError traceback",
    ),
    # ----------------------------------------------------------------- meanflow/train.py
    Mutant(
        "entry-lr-linear-decay-inverted",
        _TRAIN,
        "        return config.lr * (1.0 - done)",
        "        return config.lr * done",
        (LR,),
        "--lr_schedule linear grows from 0 to lr instead of decaying",
    ),
    Mutant(
        "entry-lr-decay-counts-the-warmup",
        _TRAIN,
        "    done = (step - warmup) / max(1, config.steps - warmup)",
        "    done = step / max(1, config.steps - warmup)",
        (LR,),
        "the decay starts warmup_steps in: it reaches 0 before the run ends and goes negative",
    ),
    Mutant(
        "entry-lr-cosine-double-amplitude",
        _TRAIN,
        "config.lr * 0.5 * (1.0 + math.cos(math.pi * done))",
        "config.lr * (1.0 + math.cos(math.pi * done))",
        (LR,),
        "--lr_schedule cosine starts at twice lr",
    ),
    Mutant(
        "entry-lr-cosine-is-linear",
        _TRAIN,
        '    if config.lr_schedule == "cosine":',
        '    if config.lr_schedule == "cosinus":',
        (LR,),
        "--lr_schedule cosine keeps a constant lr",
    ),
    Mutant(
        "entry-lr-warmup-over-one-step-more",
        _TRAIN,
        "        return config.lr * (step + 1) / warmup",
        "        return config.lr * (step + 1) / (warmup + 1)",
        (WARMUP,),
        "the warm-up ends below lr and jumps to it at the first step after",
    ),
    Mutant(
        "entry-second-signal-ignored",
        _TRAIN,
        "        if self.reason is not None:\n            raise KeyboardInterrupt\n",
        "",
        (SIGNALS,),
        "a second Ctrl-C does not stop a run stuck in its step or a long evaluation",
    ),
    Mutant(
        "entry-signal-handlers-not-restored",
        _TRAIN,
        "            signal.signal(s, handler)\n",
        "            pass\n",
        (SIGNALS,),
        "after train.main returns in a notebook, Ctrl-C no longer interrupts anything",
    ),
    Mutant(
        "entry-divergence-a-traceback",
        _TRAIN,
        "    except (ValueError, TypeError, OSError, FloatingPointError) as e:",
        "    except (ValueError, TypeError, OSError) as e:",
        (CLI,),
        "a diverged run ends in a traceback, not the one line naming the last good checkpoint",
    ),
    # --------------------------------------------------------- meanflow/run_identity.py
    Mutant(
        "entry-identity-betas-free",
        _IDENT,
        '    "betas",\n',
        "",
        (IDENTITY,),
        "a resume with --betas 0.8,0.95 keeps the checkpoint's betas without a word",
    ),
    Mutant(
        "entry-identity-ema-decays-free",
        _IDENT,
        '    "ema_decays",\n',
        "",
        (IDENTITY,),
        "a resume with other ema_decays loads the EMAs of other decays into them",
    ),
    Mutant(
        "entry-identity-batch-size-free",
        _IDENT,
        '    "batch_size",\n',
        "",
        (IDENTITY,),
        "a resume with another batch_size goes on as the same run: its curve and its recorded config lie",
    ),
    Mutant(
        "entry-identity-latent-mode-free",
        _IDENT,
        '    "data.latent_mode",\n',
        "",
        (IDENTITY,),
        "a resume switches the latents from posterior samples to means without a word",
    ),
    Mutant(
        "entry-identity-lr-schedule-fixed",
        _IDENT,
        '    "weight_decay",\n',
        '    "weight_decay",\n    "lr_schedule",\n',
        (IDENTITY,),
        "a resume that adds --lr_schedule cosine to a run's last steps is refused",
    ),
    Mutant(
        "entry-file-single-ema-decay-refused",
        _OVR,
        "            return [value]  # a file's ema_decays: 0.99",
        "            raise TypeError(key)  # a file's ema_decays: 0.99",
        (OVERRIDES,),
        "a file's ema_decays: 0.99 is refused where --ema_decays 0.99 is one EMA",
    ),
    Mutant(
        "entry-preset-prefix-accepted",
        _CONFIG,
        "        allow_abbrev=False,",
        "        allow_abbrev=True,",
        (OVERRIDES,),
        "--pre mnist-long is taken as --preset: a later key --pre... would change an old command",
    ),
    Mutant(
        "entry-float-key-check-skipped",
        _CONFIG,
        "if kind is float]  # NaN and inf parse as floats",
        "if kind is int]  # NaN and inf parse as floats",
        ("tests/faults/test_fault_trainer_options.py",),
        "--loss.cfg_w inf is accepted: the loss's float keys go unchecked",
    ),
    Mutant(
        "entry-long-warmup-not-noted",
        _TRAIN,
        "    if master and config.warmup_steps >= config.steps:",
        "    if master and config.warmup_steps > config.steps:",
        (f"{T}test_train_step.py::test_a_warmup_as_long_as_the_run_is_noted_once",),
        "a run whose lr never reaches its peak says nothing",
    ),
]
