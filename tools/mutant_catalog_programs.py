"""The catalog's mutants of the programs (``tools/mutant_catalog.py`` lists the other files):
``generate`` and its output folder, ``prepare_latents``, the training run's reports
(``meanflow/train_report.py``), the command lines' errors and help, the trainer's config checks,
the run's identity on resume, the class names an export writes, ``demo`` and the benchmarks'
shared code. Each is a bug a user of the program meets: a file left behind or removed, a wrong
number in a log line, a wrong exit status, a help text that says what the program does not do,
an option refused only after the data was read."""

from mutant import Mutant
from mutant_catalog_outputs import OUTPUT_MUTANTS
from mutant_catalog_program_runs import PROGRAM_RUN_MUTANTS

__all__ = ["PROGRAM_MUTANTS"]

T = "tests/meanflow/"
FIRST_MANIFEST = (
    "tests/faults/test_fault_generate.py"
    "::test_a_run_killed_in_its_first_manifest_write_leaves_nothing_after_the_next",
)
_REPORT_PY = "meanflow/train_report.py"
REPORT = f"{T}test_train_report.py"
TRAIN = f"{T}test_train.py"
OLD_NAME = f"{T}test_generate_cli.py::test_old_module_name_runs_the_program"
CLI, DEMO = f"{T}test_cli.py", f"{T}test_demo.py"
HELP = f"{T}test_cli_help.py"
COUNTS = f"{T}test_evaluate_counts.py"
REPORTED = f"{T}test_evaluate_report.py::"
EVAL_MNIST = f"{T}test_eval_mnist.py::"
LOG = "tests/faults/test_fault_metrics_log.py::"
_EARLY_CHECKS = (
    "    dev = resolve_device(device)\n"
    "    weights, provenance = extractor_weights(feature_extractor, weights_path, allow_unverified_weights)\n"
)
_READ_REFERENCE = '    ref_set = ImageSet(reference, "reference", crop=ref_size) if reference else None\n'
IDENTITY, CLASS_NAMES = f"{T}test_run_identity.py", f"{T}test_class_names.py"
CONFIG_ERRORS = f"{T}test_config_errors.py"
# The temporaries a run removes: every name it writes when resumed, else the first manifest's.
_REMOVED = 'WRITTEN if resumed else {".": r"manifest\\.json"}'

PROGRAM_MUTANTS = [
    # ------------------------------------------------------------------ meanflow/generate.py
    Mutant(
        "generate-out-not-held",
        "meanflow/generate.py",
        "        on_rank0(rank, world, hold_out, held, out)\n",
        "",
        ("tests/faults/test_fault_generate.py::test_a_second_run_on_a_busy_out_is_refused",),
        "two generate runs on one --out mix their images",
    ),
    Mutant(
        "generate-killed-writes-kept",
        "meanflow/generate_out.py",
        _REMOVED,
        '{".": r"manifest\\.json"}',
        (
            "tests/faults/test_fault_generate.py::test_a_resumed_run_removes_the_temporaries_a_killed_one_left",
        ),
        "a killed run's temporaries (samples.npz's: gigabytes) stay for good",
    ),
    Mutant(
        "generate-first-manifest-temporary-kept",
        "meanflow/generate_out.py",
        _REMOVED,
        "WRITTEN if resumed else {}",
        FIRST_MANIFEST,
        "a temporary of the first manifest, left by a run killed while writing it, stays for good",
    ),
    Mutant(
        "generate-new-run-removes-others-temporaries",
        "meanflow/generate_out.py",
        _REMOVED,
        "WRITTEN",
        FIRST_MANIFEST,
        "a new run in a folder without a manifest removes temporaries nothing says were ours",
    ),
    Mutant(
        "prepare-latents-line-break-names",
        "meanflow/prepare_latents.py",
        "        _check_listable_names(index)\n",
        "",
        ("tests/faults/test_fault_prepare_latents.py",),
        "an image name holding a line break reads back from files.txt as two",
    ),
    # ---------------------------------------------------------------- reports and small programs
    Mutant(
        "report-bar-final-drawn-twice",
        _REPORT_PY,
        "if self.bar.n + 1 < self.bar.total:",
        "if self.bar.n < self.bar.total:",
        (REPORT, f"{TRAIN}::test_progress_bar_shows_the_error_and_draws_the_end_once"),
        "the bar draws the last step and close() again: the final line twice in a log file",
    ),
    Mutant(
        "report-means-are-sums",
        _REPORT_PY,
        "self.sums[k] / self.count for k in keys",
        "self.sums[k] for k in keys",
        (REPORT,),
        "a log line holds the sums of log_every steps' stats, not their means",
    ),
    Mutant(
        "report-means-summed-over-ranks",
        _REPORT_PY,
        "            vec /= world\n",
        "",
        (REPORT,),
        "a log line holds the sum over the ranks of their means",
    ),
    Mutant(
        "report-grid-classes-by-row",
        _REPORT_PY,
        "torch.arange(10 * cols, device=device) % cols",
        "torch.arange(10 * cols, device=device) // 10",
        (REPORT,),
        "the grid's rows, not its columns, are its classes",
    ),
    Mutant(
        "report-eval-printed-onto-the-bar",
        _REPORT_PY,
        '    say(f"step {step}',
        '    print(f"step {step}',
        (REPORT,),
        "a mid-run evaluation's line lands at the end of the progress bar's line",
    ),
    Mutant(
        "sample-old-name-runs-nothing",
        "meanflow/sample.py",
        'if __name__ == "__main__":\n    main()',
        'if __name__ == "__main__":\n    pass',
        (OLD_NAME,),
        "python -m meanflow.sample (the older name) exits 0 having done nothing",
    ),
    Mutant(
        "cli-missing-file-is-environment",
        "meanflow/cli.py",
        "BAD_INPUT = (ValueError, FileNotFoundError)",
        "BAD_INPUT = (ValueError,)",
        (CLI,),
        "a path given that does not exist exits 1 (the environment), not 2 (the arguments)",
    ),
    Mutant(
        "cli-other-errors-swallowed",
        "meanflow/cli.py",
        "    except OSError as e:",
        "    except Exception as e:",
        (CLI,),
        "a bug (any exception) is one line and status 1: its traceback is lost",
    ),
    Mutant(
        "identity-nested-keys-free",
        "meanflow/run_identity.py",
        'key == k or key.startswith(k + ".")',
        "key == k",
        (IDENTITY, "tests/faults/test_fault_resume.py::test_resume_refuses_another_run_naming_the_key"),
        "a resume may change loss.cfg_w, loss.objective, ...: only a key named whole is compared",
    ),
    Mutant(
        "identity-data-path-as-typed",
        "meanflow/run_identity.py",
        "os.path.realpath(a) == os.path.realpath(b)",
        "a == b",
        (IDENTITY,),
        "the same data given by a relative path or a symbolic link is refused as other data",
    ),
    Mutant(
        "identity-old-checkpoint-key-error",
        "meanflow/run_identity.py",
        "_defines_the_run(key) and key in old and",
        "_defines_the_run(key) and",
        (IDENTITY,),
        "an older trainer's checkpoint (without a newer key) fails to resume with a KeyError",
    ),
    Mutant(
        "class-names-more-than-the-model",
        "meanflow/class_names.py",
        "if len(classes) != num_classes:",
        "if len(classes) < num_classes:",
        (CLASS_NAMES,),
        "an export names ids the model does not have",
    ),
    Mutant(
        "class-names-any-list-from-tench",
        "meanflow/class_names.py",
        "        and classes[-1] == IMAGENET_LAST_SYNSET\n",
        "",
        (CLASS_NAMES,),
        "1000 sorted synsets from tench, not ImageNet-1k's, get ImageNet-1k's readable names",
    ),
    Mutant(
        "demo-ratio-flip", "meanflow/demo.py", "func / ms_dual", "dual / ms_func", (DEMO,), "speed-up flipped"
    ),
    Mutant(
        "demo-model-left-at-zero",
        "meanflow/demo.py",
        "            p.add_(0.02 * torch.randn_like(p))",
        "            p.add_(0.0 * torch.randn_like(p))",
        (DEMO,),
        "a fresh adaLN-Zero model outputs zeros: the agreement printed is 0/0",
    ),
    Mutant(
        "generate-help-steps-default-unsaid",
        "meanflow/generate.py",
        'help="network evaluations per image (1 = one step; default: %(default)s)"',
        'help="network evaluations per image (1 = one step)"',
        (f"{HELP}::test_every_flag_with_a_default_says_it",),
        "generate --help does not say how many steps a run without --steps takes",
    ),
    Mutant(
        "evaluate-help-device-cuda-only",
        "meanflow/evaluate.py",
        'help="auto (the default: cuda when available, else cpu), cpu, cuda or cuda:N"',
        'help="auto (cuda when available), cpu or cuda"',
        (f"{HELP}::test_device_help_names_what_the_program_accepts",),
        "evaluate --help hides that --device takes cuda:N (and that auto is the default)",
    ),
    Mutant(
        "evaluate-extractor-on-the-current-gpu",
        "meanflow/evaluate.py",
        "cuda=False, **kwargs).to(device)",
        'cuda=device.type == "cuda", **kwargs)',
        (f"{HELP}::test_evaluate_puts_its_extractor_on_the_device_asked_for",),
        "evaluate --device cuda:1 fails at its first batch: the extractor sits on cuda:0",
    ),
    Mutant(
        "config-help-cuda-graphs-capitalised",
        "meanflow/config.py",
        "    # the whole step (loss, backward",
        "    # The whole step (loss, backward",
        (f"{HELP}::test_trainer_keys_read_alike",),
        "train --help's cuda_graphs line opens with a capital, unlike every other key",
    ),
    Mutant(
        "config-help-sample-grid-one-step-ema",
        "meanflow/config.py",
        "  # PNG grid of samples every this many steps (and eval_every's); 0 = at the end",
        "  # PNG grid of 1-NFE EMA samples; 0 = only at the end",
        (f"{HELP}::test_trainer_keys_say_what_a_sample_grid_shows",),
        "train --help says the grids are 1-NFE EMA samples: sample_steps and ema_decays decide",
    ),
    Mutant(
        "report-grid-decoder-errors-narrow",
        _REPORT_PY,
        "        except Exception as e:  # whatever it is",
        "        except (FileNotFoundError, ImportError, ValueError) as e:  # whatever it is",
        (f"{REPORT}::test_a_grid_decoder_that_fails_warns_once_and_the_run_goes_on",),
        "a damaged or unreadable VAE (RuntimeError, PermissionError) stops the run at its first grid",
    ),
    Mutant(
        "report-grid-decoder-tried-every-grid",
        _REPORT_PY,
        "    if not _undecodable(loader):",
        "    if True:",
        (f"{REPORT}::test_a_grid_decoder_that_fails_warns_once_and_the_run_goes_on",),
        "a VAE that does not load is read again, and warned about, at every grid",
    ),
    # ------------------------------- meanflow/evaluate.py, reference_stats.py: numbers or refusals
    Mutant(
        "evaluate-counts-unchecked",
        "meanflow/evaluate.py",
        '    check_counts(metrics, sample_set, ref_set, "fid" in layer and ref_set.stats is None)\n',
        "",
        (f"{COUNTS}::test_a_set_too_small_for_a_metric_is_refused_before_extraction",),
        "KID of one image reported as NaN, FID statistics of one reference image saved as NaN",
    ),
    Mutant(
        "evaluate-isc-splits-of-one-image",
        "meanflow/evaluate.py",
        "    return max(1, min(isc_splits, n // 2))",
        "    return max(1, min(isc_splits, n))",
        (f"{COUNTS}::test_inception_score_splits_hold_two_images_or_more",),
        "fewer than 10 samples score an Inception Score of 1 +- 0 whatever they show",
    ),
    Mutant(
        "reference-stats-nan-taken",
        "meanflow/reference_stats.py",
        "    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):",
        "    if False:",
        (f"{COUNTS}::test_reference_statistics_must_be_real_finite_mu_and_sigma",),
        "reference statistics holding infinity give an FID of inf, reported without an error",
    ),
    Mutant(
        "evaluate-weights-checked-after-the-reference",
        "meanflow/evaluate.py",
        _EARLY_CHECKS + _READ_REFERENCE,
        _READ_REFERENCE + _EARLY_CHECKS,
        (f"{T}test_evaluate_order.py",),
        "a missing Inception weights file or a --device typo is refused after minutes of a tree's scan",
    ),
    # ------------------------------- meanflow/evaluate.py, eval_mnist.py: what a report says
    Mutant(
        "evaluate-kid-subset-size-unreported",
        "meanflow/evaluate.py",
        '        result["kid_subset_size"], result["kid_subsets"] = size, KID_SUBSETS\n',
        "",
        (f"{REPORTED}test_kid_subsets_are_the_smaller_sets_size_below_1000",),
        "a KID of 200 images (subsets of 200) reads as one of the standard 1000-image subsets",
    ),
    Mutant(
        "evaluate-num-reference-unread-images",
        "meanflow/evaluate.py",
        '"num_reference": len(ref_set) if ref_feats is not None else None,',
        '"num_reference": len(ref_set) if ref_set is not None and ref_set.has_images else None,',
        (f"{REPORTED}test_fid_of_a_files_statistics_reports_their_count_not_the_images_beside_them",),
        "FID of an ADM batch's statistics (the whole training set) reported as of its 10k images",
    ),
    Mutant(
        "evaluate-reference-stats-count-unsaid",
        "meanflow/evaluate.py",
        "reference_stats.num_images(ref_set.stats_record) if precomputed else None",
        "None",
        (f"{REPORTED}test_fid_of_a_files_statistics_reports_their_count_not_the_images_beside_them",),
        "the report never says how many images the reference statistics of an FID are of",
    ),
    Mutant(
        "ref-stats-count-unwritten",
        "meanflow/reference_stats.py",
        "        found[COUNT] = str(int(num_images))\n",
        "        pass\n",
        (f"{REPORTED}test_a_copy_of_statistics_keeps_their_count",),
        "saved statistics forget how many images they are of",
    ),
    Mutant(
        "ref-stats-count-unchecked",
        "meanflow/reference_stats.py",
        '    for key, what in ((CROP, "a size"), (COUNT, "a count")):',
        '    for key, what in ((CROP, "a size"),):',
        (f"{REPORTED}test_a_damaged_count_is_refused",),
        "a statistics file's count of 0 (or a word) is reported, or fails as a bare int() error",
    ),
    Mutant(
        "eval-mnist-float-samples-scored",
        "meanflow/eval_mnist.py",
        "as_8bit(sample(model, y, steps=steps, generator=g))",
        "sample(model, y, steps=steps, generator=g).float().cpu().clamp(-1, 1)",
        (f"{EVAL_MNIST}test_the_classifier_scores_the_8_bit_images_a_user_saves",),
        "MNIST scores the sampler's floats, not the 8-bit images a user saves and meanflow.evaluate reads",
    ),
    # ------------------------------------ meanflow/train.py, train_report.py: the log on resume
    Mutant(
        "report-abandoned-records-kept",
        _REPORT_PY,
        "            set_aside_records_after(out_dir, step)\n",
        "",
        (f"{LOG}test_a_resume_after_a_kill_logs_each_step_once_and_keeps_what_it_set_aside",),
        "a resume after a kill logs the steps past its checkpoint a second time in metrics.jsonl",
    ),
    Mutant(
        "report-torn-record-kept",
        _REPORT_PY,
        "        return False  # the write of a killed run, cut short\n",
        "        pass\n",
        (f"{LOG}test_records_past_the_step_are_set_aside_from_the_first_one_on",),
        "a record a kill cut short before its newline stays, and the next record runs into it",
    ),
    Mutant(
        "report-own-step-set-aside",
        _REPORT_PY,
        "return isinstance(at, int) and at <= step",
        "return isinstance(at, int) and at < step",
        (f"{LOG}test_records_past_the_step_are_set_aside_from_the_first_one_on",),
        "the records of the resumed checkpoint's own step (its evaluation) are set aside too",
    ),
    Mutant(
        "report-tensorboard-not-purged",
        _REPORT_PY,
        ", purge_step=step + 1)",
        ")",
        (f"{LOG}test_tensorboard_purges_what_the_resume_trains_again",),
        "TensorBoard shows a killed run's steps past its checkpoint beside the resumed ones",
    ),
    Mutant(
        "train-last-checkpoint-written-twice",
        "meanflow/train.py",
        'if good != (os.path.join(config.out_dir, "last.pt"), step):',
        "if True:",
        (f"{LOG}test_a_run_ending_on_a_checkpoint_step_writes_it_once",),
        "a run ending on a checkpoint step writes its 10 GB last.pt a second time",
    ),
    Mutant(
        "train-kept-temporaries-seven-digits",
        "meanflow/train_state.py",
        r"ckpt_\d{7,}\.pt|config",
        r"ckpt_\d{7}\.pt|config",
        (
            "tests/faults/test_fault_writes.py::test_kill_during_a_checkpoint_write_keeps_last_pt_and_the_next_start_cleans_up",
        ),
        "a killed kept-checkpoint write past step 9,999,999 leaves its temporary (GBs) for good",
    ),
    # ------------------------------------------------ meanflow/config.py: refused before any work
    Mutant(
        "config-model-name-checked-after-data",
        "meanflow/config.py",
        '    ("model", lambda v: v in DIT_PRESETS, "a DiT preset: " + ", ".join(sorted(DIT_PRESETS))),\n',
        "",
        (f"{CONFIG_ERRORS}::test_a_bad_model_is_refused_before_the_data_is_read",),
        "--model DiT-T/3 fails only after an image folder's scan has read every image",
    ),
    Mutant(
        "config-model-kwargs-checked-after-data",
        "meanflow/config.py",
        "DiTConfig.from_name(self.model, **self.model_kwargs)",
        "DiTConfig.from_name(self.model)",
        (f"{CONFIG_ERRORS}::test_a_bad_model_is_refused_before_the_data_is_read",),
        "--model_kwargs.depth 0 (or a typo'd keyword) fails only after the data is read",
    ),
    Mutant(
        "config-kernel-backend-unchecked",
        "meanflow/config.py",
        'lambda v: v in (None, "auto", *BACKENDS)',
        "lambda v: True",
        (CONFIG_ERRORS,),
        "--backend trition fails only when the model is built, after the data is read",
    ),
    Mutant(
        "config-data-backend-unchecked",
        "meanflow/config.py",
        'lambda v: v in ("auto", *DATA_BACKENDS)',
        "lambda v: True",
        (CONFIG_ERRORS,),
        "--data.backend dalli fails only after an image folder's scan",
    ),
    Mutant(
        "config-read-failures-above-one",
        "meanflow/config.py",
        "_is_number(v) and 0 <= v <= 1",
        "_is_number(v) and 0 <= v",
        (CONFIG_ERRORS,),
        "--data.max_read_failures 2 fails only after the scan (imagefolder) or never (latents)",
    ),
    Mutant(
        "benchmark-gpu-not-made-current",
        "benchmarks/_common.py",
        "        torch.cuda.set_device(device)",
        "        pass",
        ("tests/benchmarks/test_flops_and_timing.py::test_the_benchmarked_gpu_is_made_the_current_one",),
        "--device cuda:1 times CUDA events on cuda:0's idle stream",
    ),
    Mutant(
        "config-adapter-kwargs-unchecked",
        "meanflow/config.py",
        "            check_model_kwargs(self.model_class, self.model_kwargs)\n",
        "",
        (f"{CONFIG_ERRORS}::test_a_library_models_unknown_keyword_is_refused_naming_it",),
        "--model_kwargs.embed_dimm 192 on a timm ViT fails only after the data is read",
    ),
    Mutant(
        "adapter-kwargs-library-unread",
        "meanflow/adapters.py",
        "for fn in (adapter.from_kwargs, library.__init__)",
        "for fn in (adapter.from_kwargs,)",
        (f"{CONFIG_ERRORS}::test_a_library_models_unknown_keyword_is_refused_naming_it",),
        "every keyword of the library's own constructor refused as unknown",
    ),
    *OUTPUT_MUTANTS,  # what generate, prepare_latents, export and interchange write and read
    *PROGRAM_RUN_MUTANTS,  # their options, argument checks and resume rules
]
