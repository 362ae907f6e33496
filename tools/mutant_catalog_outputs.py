"""The catalog's mutants of what the programs write and read for a user: ``generate``'s sample
set (which index gets which noise, label, batch and rank; what a resume redoes), its ``--out``
folder's manifest, ``prepare_latents``' shards (which image goes where, a flip, a resume),
``export``'s folders and the official DiT/SiT weights ``interchange`` reads. Each is a bug that
costs a user an FID that is wrong, a shard skipped or encoded twice, a class-unbalanced set, or
a file of theirs (``tools/mutant_catalog_programs.py`` holds the programs' other mutants)."""

from mutant import Mutant

__all__ = ["OUTPUT_MUTANTS"]

_GEN = "meanflow/generate.py"
_OUT = "meanflow/generate_out.py"
_PREP = "meanflow/prepare_latents.py"
_EXPORT = "meanflow/export.py"
_INTER = "meanflow/interchange.py"
GEN_CLI = "tests/meanflow/test_generate_cli.py::"
GEN_FAULTS = "tests/faults/test_fault_generate.py::"
LATENTS = "tests/meanflow/test_data_latents.py::"
PREP_FAULTS = "tests/faults/test_fault_prepare_latents.py::"
PEERS = "tests/meanflow/test_official_peers.py::"
PRETRAINED = "tests/meanflow/test_pretrained.py::"
USER_ERRORS = "tests/meanflow/test_pretrained_user_errors.py::"
SEEDS = f"{GEN_CLI}test_per_index_seeds_and_the_rank_split"

OUTPUT_MUTANTS = [
    # ------------------------------------------------------------------ meanflow/generate.py
    Mutant(
        "generate-noise-seeded-by-batch-position",
        _GEN,
        "    for i in indices:\n        g.manual_seed(index_seed(seed, i))",
        "    for k, i in enumerate(indices):\n        g.manual_seed(index_seed(seed, k))",
        (SEEDS,),
        "every batch draws the same noise rows: an image depends on its place in its batch",
    ),
    Mutant(
        "generate-labels-from-the-noise-stream",
        _GEN,
        "g.manual_seed(index_seed(seed, i, stream=1))",
        "g.manual_seed(index_seed(seed, i))",
        (f"{GEN_CLI}test_random_labels_come_from_their_own_stream_not_the_noise",),
        "--classes random draws each label from its image's noise generator: labels tied to the noise",
    ),
    Mutant(
        "generate-random-labels-miss-the-last-class",
        _GEN,
        "torch.randint(num_classes, (), generator=g)",
        "torch.randint(num_classes - 1, (), generator=g)",
        (SEEDS,),
        "--classes random never draws the last class",
    ),
    Mutant(
        "generate-balanced-labels-per-batch",
        _GEN,
        "[i % num_classes for i in indices]",
        "[k % num_classes for k, _ in enumerate(indices)]",
        (SEEDS, f"{GEN_CLI}test_cli_writes_pngs_and_adm_npz"),
        "balanced classes restart at class 0 in every batch: a 50k set over-weights the first classes",
    ),
    Mutant(
        "generate-last-batch-dropped",
        _GEN,
        "for k, s in enumerate(range(0, num, batch_size))",
        "for k, s in enumerate(range(0, num - batch_size + 1, batch_size))",
        (SEEDS, f"{GEN_CLI}test_cli_writes_pngs_and_adm_npz"),
        "a last, partial batch is never made",
    ),
    Mutant(
        "generate-ranks-split-by-start-index",
        _GEN,
        "if b[0] % world == rank]",
        "if b[1] % world == rank]",
        (f"{GEN_CLI}test_each_rank_gets_its_share_of_the_batches",),
        "batches dealt by their first index, not their number: with an even batch size one rank of "
        "two makes every image while the other idles",
    ),
    Mutant(
        "generate-lost-png-of-a-finished-batch-kept-lost",
        _GEN,
        "elif png and not all(os.path.exists(png_path(out, i)) for i in indices):",
        "elif png and not any(os.path.exists(png_path(out, i)) for i in indices):",
        (f"{GEN_CLI}test_resume_skips_finished_batches_and_ends_identical",),
        "a resume rewrites a finished batch's PNGs only when all of them are lost",
    ),
    Mutant(
        "generate-complete-without-samples-npz",
        _GEN,
        'done = json.load(f).get("complete") and os.path.exists(final)',
        'done = json.load(f).get("complete")',
        (f"{GEN_CLI}test_a_complete_set_whose_samples_npz_was_removed_is_made_again",),
        "a complete set whose samples.npz was moved away returns its path as written: nothing is made",
    ),
    Mutant(
        "generate-shards-removed-with-keep-shards",
        _GEN,
        "    if not keep_shards:\n",
        "    if True:\n",
        (f"{GEN_CLI}test_keep_shards_keeps_each_batch_beside_samples_npz",),
        "--keep-shards removes the shards all the same",
    ),
    Mutant(
        "generate-vae-config-named-as-vae",
        "meanflow/data/latents.py",
        'option = "--vae-config" if vae == RANDOM and vae_config else "--vae"',
        'option = "--vae"',
        (f"{GEN_CLI}test_a_vae_config_alone_is_refused_by_its_own_name",),
        "--vae-config alone on a pixel model refused as a --vae the user never passed",
    ),
    # -------------------------------------------------------------- meanflow/generate_out.py
    Mutant(
        "generate-resume-with-another-step-count",
        _OUT,
        '    "steps",\n    "seed",\n',
        '    "seed",\n',
        (f"{GEN_FAULTS}test_a_resume_with_other_settings_is_refused_naming_each",),
        "a resume with --steps 2 finishes a 1-step set: one set of images made two ways",
    ),
    Mutant(
        "generate-resume-with-other-classes",
        _OUT,
        '    "classes",\n    "vae",\n',
        '    "vae",\n',
        (f"{GEN_FAULTS}test_a_resume_with_other_settings_is_refused_naming_each",),
        "a resume with --classes random finishes a balanced set: its classes are no longer balanced",
    ),
    Mutant(
        "generate-manifest-missing-a-setting-taken",
        _OUT,
        "if old.get(k) != settings[k] and (k in old or k not in ADDED_KEYS)",
        "if old.get(k) != settings[k] and k in old",
        (f"{GEN_FAULTS}test_a_manifest_missing_a_setting_is_not_taken_for_any",),
        "a manifest that lost a setting (edited by hand, cut) is resumed under any value of it",
    ),
    Mutant(
        "generate-users-pngs-without-manifest-overwritten",
        _OUT,
        '    patterns = (NPZ, os.path.join("shards", "*.npz"), os.path.join("images", "*.png"))',
        '    patterns = (NPZ, os.path.join("shards", "*.npz"))',
        (f"{GEN_FAULTS}test_an_out_holding_files_of_ours_without_their_manifest_is_refused",),
        "an --out holding images/*.png but no manifest is written into: a user's PNGs overwritten",
    ),
    # ------------------------------------------------------------ meanflow/prepare_latents.py
    Mutant(
        "prepare-latents-flip-upside-down",
        _PREP,
        "torch.cat([images, images.flip(-1)])",
        "torch.cat([images, images.flip(-2)])",
        (f"{LATENTS}test_flips_both_and_float16",),
        "--flips both stores the image upside down, not mirrored",
    ),
    Mutant(
        "prepare-latents-flips-interleaved",
        _PREP,
        "return torch.stack(moments.chunk(flips), 1)",
        "return moments.reshape(-1, flips, *moments.shape[1:])",
        (f"{LATENTS}test_flips_both_and_float16",),
        "--flips both pairs image i with image i+1, not with its mirror",
    ),
    Mutant(
        "prepare-latents-label-by-row-of-batch",
        _PREP,
        "labels.append(int(index.labels[i]))",
        "labels.append(int(index.labels[row]))",
        (f"{LATENTS}test_stored_moments_are_the_posterior_of_each_image",),
        "each latent is labelled with the class of the image at its row in the first batch",
    ),
    Mutant(
        "prepare-latents-last-shard-short",
        _PREP,
        '"images": min(shard_size, n - s),',
        '"images": min(shard_size, n - s - 1),',
        (f"{LATENTS}test_manifest",),
        "the last image of every data set is never encoded",
    ),
    Mutant(
        "prepare-latents-resume-with-another-shard-size",
        _PREP,
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype", "shard_size",',
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype",',
        (f"{PREP_FAULTS}test_a_resume_with_other_storage_settings_is_refused_naming_them",),
        "a resume with another --shard-size keeps the finished shards by name: images encoded twice "
        "or skipped",
    ),
    Mutant(
        "prepare-latents-resume-with-another-flips",
        _PREP,
        '"format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype", "shard_size",',
        '"format", "source", "source_fingerprint", "image_size", "reader", "dtype", "shard_size",',
        (f"{PREP_FAULTS}test_a_resume_with_other_storage_settings_is_refused_naming_them",),
        "a resume with --flips both finishes a --flips none folder: shards of two shapes",
    ),
    Mutant(
        "prepare-latents-complete-before-the-last-shard",
        _PREP,
        'manifest["complete"] = len(written) == len(shards)',
        'manifest["complete"] = len(written) >= len(shards) - 1',
        (f"{PREP_FAULTS}test_a_run_killed_in_its_last_shard_leaves_the_folder_incomplete",),
        "a run killed in its last shard leaves a manifest that says complete: training reads a part",
    ),
    Mutant(
        "prepare-latents-vae-config-unchecked",
        _PREP,
        '    return same_weights and old.get("config") == new.get("config")',
        "    return same_weights",
        (f"{PREP_FAULTS}test_a_resume_with_the_same_vae_weights_under_another_config_is_refused",),
        "a resume with the same weights file under another --vae-config mixes two VAEs' latents",
    ),
    # ---------------------------------------------------------------------- meanflow/export.py
    Mutant(
        "export-vae-without-pipeline-ignored",
        _EXPORT,
        '            raise ValueError("--vae goes with --pipeline")',
        "            pass",
        (f"{USER_ERRORS}test_export_vae_without_pipeline_is_refused_before_writing",),
        "export --vae without --pipeline writes a model folder without the VAE asked for, silently",
    ),
    Mutant(
        "export-official-names-any-classes-imagenet",
        _EXPORT,
        "return imagenet_id2label() if model.config.num_classes == 1000 else {}",
        "return imagenet_id2label()",
        (f"{PEERS}test_an_official_pipeline_names_imagenet_classes_only_for_1000",),
        "an official DiT of 10 classes exported as a pipeline gets ImageNet's 1000 names",
    ),
    # ----------------------------------------------------------------- meanflow/interchange.py
    Mutant(
        "interchange-sigma-bias-channel-major",
        _INTER,
        '        out["final_layer.linear.bias"] = lin_b.reshape(patch, patch, out_channels)[\n'
        "            :, :, :in_channels\n"
        "        ].reshape(-1)",
        '        out["final_layer.linear.bias"] = lin_b[: patch * patch * in_channels]',
        (f"{PRETRAINED}test_sigma_channels_follow_dit_unpatchify", f"{PEERS}test_loaded_dit_is_dit"),
        "learn_sigma's bias halves split channel-major (the weight right): half the kept biases are sigma's",
    ),
    Mutant(
        "interchange-null-row-unseeded",
        _INTER,
        "null = torch.randn(1, hidden, generator=torch.Generator().manual_seed(0), dtype=table.dtype)",
        "null = torch.randn(1, hidden, dtype=table.dtype)",
        (f"{PRETRAINED}test_label_table_without_the_null_row",),
        "the null row added to a label table without one is the global RNG's: loads differ",
    ),
    Mutant(
        "interchange-config-class-unchecked",
        _INTER,
        'if raw.get("_class_name", cls.__name__) != cls.__name__:',
        "if False:",
        (f"{USER_ERRORS}test_a_folder_of_another_model_class_is_refused_naming_it",),
        "a folder saved by another model class loads its config into a DiT",
    ),
    Mutant(
        "interchange-mlp-ratio-from-the-input-width",
        _INTER,
        '"mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,',
        '"mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[1] / hidden,',
        (f"{PRETRAINED}test_official_dit_state_dict",),
        "an official DiT's MLP ratio read from fc1's input width (always 1)",
    ),
    Mutant(
        "interchange-fresh-embedder-from-the-global-rng",
        "meanflow/interchange.py",
        """            torch.manual_seed(seed)
            model = cls(config, backend=backend)""",
        """            model = cls(config, backend=backend)""",
        (
            "tests/meanflow/test_pretrained.py::test_the_fresh_second_time_embedder_is_drawn_from_the_loads_seed",
        ),
        "two loads of one official checkpoint fine-tune from different second time embedders",
    ),
]
