"""The catalog's mutants of how the programs run after training (``tools/mutant_catalog_outputs.py``
holds what they write): ``generate``'s argument checks, weights, autocast and resume rules,
``prepare_latents``' checks, resume and closing report, ``export``'s options. Each is a bug a
user meets: an option taken and then ignored, a bad value refused late or with a traceback, a
resume that mixes two kinds of images, a count in a report that is wrong."""

from mutant import Mutant

__all__ = ["PROGRAM_RUN_MUTANTS"]

_GEN = "meanflow/generate.py"
_OUT = "meanflow/generate_out.py"
_PREP = "meanflow/prepare_latents.py"
_EXPORT = "meanflow/export.py"
GEN_CLI = "tests/meanflow/test_generate_cli.py::"
GEN_FAULTS = "tests/faults/test_fault_generate.py::"
RUNS = "tests/meanflow/test_programs_runs.py::"
PREP_FAULTS = "tests/faults/test_fault_prepare_latents.py::"
PREP_RUNS = "tests/faults/test_fault_programs_prepare.py::"
SKIPPED = (
    "tests/faults/test_fault_image_folders.py"
    "::test_prepare_latents_names_what_it_skipped_at_the_scan_and_at_decoding"
)
LATENTS = "tests/meanflow/test_data_latents.py::"
RESUME_OTHER = f"{GEN_FAULTS}test_a_resume_with_other_settings_is_refused_naming_each"
USER_ERRORS = "tests/meanflow/test_pretrained_user_errors.py::"
PEERS = "tests/meanflow/test_official_peers.py::"
# generate's first check: every argument that must be a whole number of at least some value.
_INT_CHECKS = '        ("seed", seed, 0),\n'

PROGRAM_RUN_MUTANTS = [
    # ------------------------------------------------------------------ meanflow/generate.py
    Mutant(
        "generate-negative-seed-taken",
        _GEN,
        _INT_CHECKS,
        "",
        (f"{RUNS}test_generate_refuses_each_bad_value_before_writing",),
        "--seed -1 fails with numpy's words after the checkpoint is loaded and --out is made",
    ),
    Mutant(
        "generate-bool-taken-as-a-count",
        _GEN,
        "check_int_at_least(name, value, low)",
        "value >= low or check_int_at_least(name, value, low)",
        (f"{RUNS}test_generate_refuses_each_bad_value_before_writing",),
        "run(num=2.5) fails deep in range() after the checkpoint is loaded, not named",
    ),
    Mutant(
        "generate-true-taken-as-one",
        _GEN,
        "check_int_at_least(name, value, low)",
        "check_int_at_least(name, int(value) if isinstance(value, bool) else value, low)",
        (f"{RUNS}test_generate_refuses_each_bad_value_before_writing",),
        "run(batch_size=True) (a flag passed in a count's place) makes batches of one, in silence",
    ),
    Mutant(
        "generate-autocast-never-on",
        _GEN,
        'enabled=dtype != "fp32")',
        "enabled=False)",
        (f"{RUNS}test_dtype_bf16_samples_under_autocast",),
        "--dtype bf16 samples in fp32: the set is labelled bf16 and is not",
    ),
    Mutant(
        "generate-autocast-wrong-dtype",
        _GEN,
        'dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}',
        'dtypes = {"fp32": torch.float32, "bf16": torch.float16, "fp16": torch.float16}',
        (f"{RUNS}test_dtype_bf16_samples_under_autocast",),
        "--dtype bf16 samples in fp16 (overflow on large activations)",
    ),
    Mutant(
        "generate-raw-ignored",
        _GEN,
        "                ema=None if args.raw else args.ema,\n",
        "                ema=args.ema,\n",
        (f"{RUNS}test_raw_and_ema_pick_the_weights_sampled",),
        "generate --raw samples EMA 0",
    ),
    Mutant(
        "generate-ema-index-ignored",
        _GEN,
        "        model, ckpt_sha256 = _load_identified(ckpt, ema, dev, world)\n",
        "        model, ckpt_sha256 = _load_identified(ckpt, 0, dev, world)\n",
        (f"{RUNS}test_raw_and_ema_pick_the_weights_sampled",),
        "generate --ema 1 samples EMA 0 and records ema 1 in the manifest",
    ),
    Mutant(
        "generate-quiet-ignored",
        _GEN,
        "                progress=not args.quiet,\n",
        "                progress=True,\n",
        (f"{RUNS}test_quiet_prints_no_bar_and_the_default_does",),
        "generate --quiet still draws the progress bar into a log file",
    ),
    Mutant(
        "generate-no-bar-without-quiet",
        _GEN,
        "        if progress and rank == 0:\n",
        "        if False:\n",
        (f"{RUNS}test_quiet_prints_no_bar_and_the_default_does",),
        "a 50k-image run shows no progress at all",
    ),
    Mutant(
        "generate-no-png-rewrites-pngs",
        _GEN,
        "            elif png and not all(",
        "            elif not all(",
        (f"{RUNS}test_a_resume_with_no_png_writes_no_png",),
        "a resume with --no-png writes every PNG of the finished batches",
    ),
    Mutant(
        "generate-no-png-ignored",
        _GEN,
        "                png=not args.no_png,\n",
        "                png=True,\n",
        (f"{RUNS}test_a_resume_with_no_png_writes_no_png",),
        "--no-png writes the PNGs all the same (50k files nobody asked for)",
    ),
    Mutant(
        "generate-keep-shards-option-ignored",
        _GEN,
        "                keep_shards=args.keep_shards,\n",
        "                keep_shards=False,\n",
        (f"{RUNS}test_keep_shards_of_the_program_keeps_them",),
        "generate --keep-shards removes the shards",
    ),
    Mutant(
        "generate-gray-npz-not-rgb",
        _GEN,
        "rgb = np.repeat(part, 3, axis=-1) if part.shape[-1] == 1 else part",
        "rgb = part",
        (f"{GEN_CLI}test_unconditional_gray_model",),
        "a gray model's samples.npz header says 3 channels and holds one: unreadable",
    ),
    Mutant(
        "generate-labels-left-out-of-the-npz",
        _GEN,
        "            if labels is not None:\n                with zf.open",
        "            if False:\n                with zf.open",
        (f"{GEN_CLI}test_cli_writes_pngs_and_adm_npz",),
        "samples.npz lacks arr_1: class-conditional metrics cannot be computed",
    ),
    Mutant(
        "generate-replaced-checkpoint-unnoticed",
        _GEN,
        "    return model, digest, checkpoint_stamp(ckpt) != stamp\n",
        "    return model, digest, False\n",
        (f"{GEN_FAULTS}test_a_checkpoint_replaced_while_it_is_read_is_refused",),
        "a live run's last.pt replaced mid-read: the hash recorded is of other weights than sampled",
    ),
    Mutant(
        "generate-already-complete-redone",
        _GEN,
        "        if done:\n",
        "        if False:\n",
        (f"{GEN_CLI}test_resume_skips_finished_batches_and_ends_identical",),
        "a second run of a finished set samples it all again (its shards were removed)",
    ),
    Mutant(
        "generate-scaling-factor-zero-taken-as-unset",
        _GEN,
        "if not (math.isfinite(args.scaling_factor) and args.scaling_factor > 0):",
        "if not math.isfinite(args.scaling_factor):",
        ("tests/meanflow/test_cli_help.py",),
        "--scaling-factor 0 silently uses the VAE's own factor, -1 flips every latent",
    ),
    Mutant(
        "generate-run-scaling-factor-unchecked",
        _GEN,
        "    check_scaling_factor(scaling_factor, vae or vae_config)\n",
        "",
        (f"{RUNS}test_generate_refuses_each_bad_value_before_writing",),
        "run(scaling_factor=0) silently decodes with the VAE's own factor; -1 flips every latent",
    ),
    # -------------------------------------------------------------- meanflow/generate_out.py
    Mutant(
        "generate-resume-with-another-batch-size",
        _OUT,
        '    "seed",\n    "batch_size",\n',
        '    "seed",\n',
        (RESUME_OTHER,),
        "a resume with another --batch-size reads shard k as other indices: images dropped or repeated",
    ),
    Mutant(
        "generate-resume-with-another-dtype",
        _OUT,
        '    "shift_factor",\n    "dtype",\n',
        '    "shift_factor",\n',
        (RESUME_OTHER,),
        "a resume with --dtype bf16 finishes an fp32 set: one set sampled at two precisions",
    ),
    Mutant(
        "generate-resume-with-other-weights",
        _OUT,
        '    "ckpt_sha256",\n    "ema",\n',
        '    "ckpt_sha256",\n',
        (RESUME_OTHER,),
        "a resume with --raw finishes an EMA set: half the images from other weights",
    ),
    Mutant(
        "generate-damaged-manifest-found-after-the-load",
        _OUT,
        "    if os.path.exists(os.path.join(out, MANIFEST)):\n        read_manifest(out)\n",
        "    if os.path.exists(os.path.join(out, MANIFEST)):\n        pass\n",
        (f"{GEN_FAULTS}test_a_damaged_or_foreign_manifest_is_named",),
        "a damaged manifest is named only after a 10 GB checkpoint is loaded and hashed",
    ),
    Mutant(
        "generate-foreign-samples-npz-overwritten",
        _OUT,
        '    patterns = (NPZ, os.path.join("shards", "*.npz"), os.path.join("images", "*.png"))',
        '    patterns = (os.path.join("shards", "*.npz"), os.path.join("images", "*.png"))',
        (f"{RUNS}test_an_out_holding_a_file_of_one_of_our_names_without_a_manifest_is_refused",),
        "an --out holding a user's samples.npz but no manifest is written into: their set replaced",
    ),
    Mutant(
        "generate-manifest-any-dict",
        _OUT,
        "if isinstance(manifest, dict) and MANIFEST_KEYS <= manifest.keys():",
        "if isinstance(manifest, dict):",
        (f"{GEN_FAULTS}test_a_damaged_or_foreign_manifest_is_named",),
        "someone's manifest.json (any JSON object) is taken for ours: their folder written into",
    ),
    # ------------------------------------------------------------ meanflow/prepare_latents.py
    Mutant(
        "prepare-latents-negative-preview-at-the-end",
        _PREP,
        '("preview", preview, 0),',
        '("preview", preview, -(10**9)),',
        (f"{PREP_RUNS}test_bad_values_are_refused_before_anything_is_made",),
        "--preview -1 ends a finished run with a traceback (torch.stack of nothing), status 1",
    ),
    Mutant(
        "prepare-latents-flips-unchecked",
        _PREP,
        '        raise ValueError(f"flips must be 1 or 2 (--flips none|both), got {flips}")',
        "        pass",
        (f"{PREP_RUNS}test_bad_values_of_the_function_are_refused_before_anything_is_made",),
        "prepare_latents(flips=3) stores a third of each image's flips, in silence",
    ),
    Mutant(
        "prepare-latents-dtype-unchecked",
        _PREP,
        '        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")',
        "        pass",
        (f"{PREP_RUNS}test_bad_values_of_the_function_are_refused_before_anything_is_made",),
        "prepare_latents(dtype='bfloat16') fails in numpy after the VAE load and the scan",
    ),
    Mutant(
        "prepare-latents-zero-shard-size",
        _PREP,
        '        ("shard_size", shard_size, 1),\n',
        "",
        (f"{PREP_RUNS}test_bad_values_are_refused_before_anything_is_made",),
        "--shard-size 0 fails in range() with 'arg 3 must not be zero' after the scan",
    ),
    Mutant(
        "prepare-latents-image-size-off-the-vae-grid",
        _PREP,
        "        if image_size % factor:\n",
        "        if False:\n",
        (f"{PREP_RUNS}test_bad_values_are_refused_before_anything_is_made",),
        "--image-size 250 (not a multiple of 8) fails inside the VAE's convolutions after the scan",
    ),
    Mutant(
        "prepare-latents-killed-temporary-kept",
        _PREP,
        "            _remove_own_shard(tmp)\n",
        "",
        (f"{PREP_RUNS}test_what_a_killed_run_left_of_a_shard_is_made_again",),
        "a run killed mid-shard cannot be resumed: its half-filled temporary is in the way",
    ),
    Mutant(
        "prepare-latents-failed-not-counted",
        _PREP,
        'manifest["failed"] = sum(s["images"] - s["count"] for s in written)',
        'manifest["failed"] = 0',
        (SKIPPED,),
        "the manifest says no image failed when some did not decode",
    ),
    Mutant(
        "prepare-latents-num-samples-counts-the-failed",
        _PREP,
        'manifest["num_samples"] = sum(s["count"] for s in written)',
        'manifest["num_samples"] = sum(s["images"] for s in written)',
        (SKIPPED,),
        "the manifest counts images that failed to decode as latents",
    ),
    Mutant(
        "prepare-latents-decode-failures-unsaid",
        _PREP,
        "        _count_naming(len(failed), failed),\n",
        "        _count_naming(0, failed),\n",
        (SKIPPED,),
        "the closing line says no image failed at decoding when some did",
    ),
    Mutant(
        "prepare-latents-foreign-scan-json-taken",
        _PREP,
        'return isinstance(cache, dict) and set(cache) == {"version", "root", "entries"}',
        "return isinstance(cache, dict)",
        (f"{PREP_RUNS}test_a_folder_holding_someone_elses_scan_json_is_refused_untouched",),
        "a folder holding only a user's scan.json (any JSON object) is written into, the file replaced",
    ),
    Mutant(
        "prepare-latents-resume-with-another-image-size",
        _PREP,
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype", "shard_size",',
        '"format", "source", "source_fingerprint", "reader", "flips", "dtype", "shard_size",',
        (f"{PREP_RUNS}test_a_resume_with_another_image_size_or_dtype_is_refused",),
        "a resume with --image-size 512 finishes a 256 folder: latents of two shapes",
    ),
    Mutant(
        "prepare-latents-damaged-shard-entries-read",
        _PREP,
        'if not (ours and all(isinstance(s, dict) for s in old["shards"])):',
        "if not ours:",
        (f"{PREP_RUNS}test_a_manifest_whose_shards_are_not_entries_is_refused_in_one_line",),
        "a manifest whose shards are not entries (damaged, hand-edited) ends in an AttributeError traceback",
    ),
    Mutant(
        "prepare-latents-resume-with-another-dtype",
        _PREP,
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype", "shard_size",',
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "shard_size",',
        (f"{PREP_RUNS}test_a_resume_with_another_image_size_or_dtype_is_refused",),
        "a resume with --dtype float16 finishes a float32 folder: shards of two precisions",
    ),
    # ---------------------------------------------------------------------- meanflow/export.py
    Mutant(
        "export-official-raw-ignored",
        _EXPORT,
        "    if official and ema != 0:\n",
        "    if False:\n",
        (f"{RUNS}test_export_refuses_an_option_it_would_drop_before_reading_the_checkpoint",),
        "export --official-dit --raw converts the EMA all the same, the user believing it the raw weights",
    ),
    Mutant(
        "export-unused-options-checked-after-the-load",
        _EXPORT,
        "    _refuse_unused_options(official, ema, pipeline, vae)\n    if official:\n",
        "    if official:\n",
        (f"{RUNS}test_export_refuses_an_option_it_would_drop_before_reading_the_checkpoint",),
        "export --vae without --pipeline is refused only after minutes of converting the checkpoint",
    ),
    Mutant(
        "export-num-heads-without-official-ignored",
        _EXPORT,
        "    if args.num_heads is not None and not args.official:\n",
        "    if False:\n",
        (f"{RUNS}test_export_refuses_num_heads_without_official_naming_it",),
        "export --num-heads 4 of a trainer checkpoint is ignored in silence",
    ),
    Mutant(
        "export-latent-pipeline-without-vae-in-the-pipelines-words",
        _EXPORT,
        "        if not vae and needs_vae(model.config):",
        "        if False:",
        (f"{RUNS}test_export_of_a_latent_pipeline_without_vae_names_the_option",),
        "export --pipeline of a latent model without --vae is refused without naming --vae",
    ),
    Mutant(
        "export-official-pipeline-names-from-the-checkpoint",
        _EXPORT,
        "        id2label = pipeline_id2label(ckpt, model, official)\n",
        "        id2label = pipeline_id2label(ckpt, model)\n",
        (f"{RUNS}test_an_official_pipeline_of_1000_classes_is_exported_with_imagenets_names",),
        "an official DiT exported as a pipeline loses ImageNet's class names",
    ),
]
