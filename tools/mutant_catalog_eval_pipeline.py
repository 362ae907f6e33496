"""The catalog's mutants of evaluation and the exported pipeline: FID/IS/KID runs
(``meanflow/evaluate.py``) and the diffusers-style pipeline (``meanflow/pipeline.py``). Each is
a bug that scores, samples or saves something other than what was asked, without a word."""

from mutant import Mutant

__all__ = ["EVAL_PIPELINE_MUTANTS"]

_EV = "meanflow/evaluate.py"
_PIPE = "meanflow/pipeline.py"
EV = "tests/meanflow/test_evaluate.py"
EV_COUNTS = "tests/meanflow/test_evaluate_counts.py"
EV_REPORT = "tests/meanflow/test_evaluate_report.py"
EV_ORDER = "tests/meanflow/test_evaluate_order.py"
EV_REFS = "tests/meanflow/test_evaluate_references.py"
EV_FAULT = "tests/faults/test_fault_evaluate.py"
EV_ARGS = "tests/meanflow/test_evaluate_arguments.py"
WEIGHTS_ORDER = f"{EV_FAULT}::test_the_weights_asked_for_come_before_the_variable_and_the_hub_cache"
PIPE = "tests/meanflow/test_pipeline.py"
PIPE_ARGS = "tests/meanflow/test_pipeline_arguments.py"
PIPE_DIFFUSERS = "tests/meanflow/test_pipeline_diffusers.py"
PIPE_LOADING = "tests/meanflow/test_pipeline_loading.py"
PIPE_FOLDERS = "tests/meanflow/test_pipeline_folders.py"
PIPE_FLOAT64 = f"{PIPE}::test_a_float64_pipeline_casts_the_noise_it_is_given"

EVAL_PIPELINE_MUTANTS = [
    # ------------------------------------------------------------- meanflow/evaluate.py: weights
    Mutant(
        "evpipe-weights-env-before-the-flag",
        _EV,
        'candidates.append((f"${published.env}", os.environ.get(published.env)))',
        'candidates.insert(0, (f"${published.env}", os.environ.get(published.env)))',
        (WEIGHTS_ORDER,),
        "--inception-weights PATH loses to $MEANFLOW_INCEPTION_WEIGHTS: the file asked for never runs",
    ),
    Mutant(
        "evpipe-weights-env-ignored",
        _EV,
        '        candidates.append((f"${published.env}", os.environ.get(published.env)))\n',
        "",
        (EV,),
        "$MEANFLOW_INCEPTION_WEIGHTS never read: a machine set up by it is told the weights are missing",
    ),
    Mutant(
        "evpipe-weights-hub-file-of-the-inception",
        _EV,
        "        return hub_weights_path(published.file)\n",
        "        return hub_weights_path()\n",
        (WEIGHTS_ORDER,),
        "vgg16 found in torch hub's cache runs the Inception's file from there (or a missing path)",
    ),
    Mutant(
        "evpipe-weights-flag-always-inception",
        _EV,
        'return "--inception-weights" if extractor == INCEPTION else "--extractor-weights"',
        'return "--inception-weights"',
        (EV_FAULT,),
        "a missing vgg16 file is told to come through --inception-weights",
    ),
    Mutant(
        "evpipe-weights-prefix-must-be-whole",
        _EV,
        "    if digest.startswith(published.sha256):\n",
        "    if digest == published.sha256:\n",
        (f"{EV_FAULT}::test_a_digest_prefix_as_torch_hub_names_verifies_its_file",),
        "the published vgg16 file (known by its hub name's 8-hex prefix) refused as unverified",
    ),
    Mutant(
        "evpipe-weights-mismatch-only-warns",
        _EV,
        "    if not allow_unverified:\n",
        "    if False:\n",
        (EV_FAULT,),
        "weights of another sha256 used with a warning only: metrics not comparable, reported anyway",
    ),
    Mutant(
        "evpipe-weights-unverified-reported-verified",
        _EV,
        "    return digest, False\n",
        "    return digest, True\n",
        (EV_FAULT,),
        "a report from --allow-unverified-weights says weights_verified: true",
    ),
    Mutant(
        "evpipe-weights-buffer-not-rewound",
        _EV,
        "    buffer.seek(0)\n",
        "",
        (f"{EV}::test_real_inception_path_with_a_local_weights_file",),
        "the re-saved weights handed over at their end: the Inception cannot read them",
    ),
    Mutant(
        "evpipe-downloading-extractor-let-through",
        _EV,
        "    if _downloads(name):\n",
        "    if False:\n",
        (EV_FAULT,),
        "CLIP or DINOv2 asked for: torch-fidelity downloads weights (DINOv2 code) at the first batch",
    ),
    # -------------------------------------------------------- meanflow/evaluate.py: destinations
    Mutant(
        "evpipe-report-only-with-the-extractor-key",
        _EV,
        "return isinstance(report, dict) and not report.keys().isdisjoint(REPORT_KEYS)",
        'return isinstance(report, dict) and "feature_extractor" in report',
        (f"{EV_ARGS}::test_a_report_trimmed_to_its_metrics_is_written_over",),
        "a report trimmed to its metrics (or another tool's) refused as a foreign file by --out",
    ),
    Mutant(
        "evpipe-report-json-list-crashes",
        _EV,
        "return isinstance(report, dict) and not report.keys().isdisjoint(REPORT_KEYS)",
        "return not report.keys().isdisjoint(REPORT_KEYS)",
        (f"{EV_ARGS}::test_out_writes_over_a_report_not_another_json",),
        "--out onto a JSON list fails with an AttributeError, not a refusal naming --out",
    ),
    # ------------------------------------------------------------- meanflow/evaluate.py: inputs
    Mutant(
        "evpipe-batch-size-bool",
        _EV,
        "check_int_at_least(name, value)",
        "check_int_at_least(name, int(value))",
        (f"{EV_ARGS}::test_bad_arguments_are_refused_naming_them",),
        "batch_size=True taken as a batch of one image (isc_splits=True as one split)",
    ),
    Mutant(
        "evpipe-statistics-as-samples",
        _EV,
        "    if not sample_set.has_images:\n",
        "    if False:\n",
        (f"{EV_ARGS}::test_samples_of_statistics_only_are_refused",),
        "samples that hold statistics only fail deep in the extraction, not with a refusal",
    ),
    Mutant(
        "evpipe-default-prc-of-statistics",
        _EV,
        "        if ref_set is not None and ref_set.has_images:\n",
        "        if ref_set is not None:\n",
        (EV,),
        "the default metrics against ADM-style statistics alone ask for prc, then refuse it",
    ),
    Mutant(
        "evpipe-no-metrics-taken",
        _EV,
        "    if unknown or not metrics:\n",
        "    if unknown:\n",
        (f"{EV_ARGS}::test_bad_arguments_are_refused_naming_them",),
        "metrics=[] (--metrics ,) runs and writes a report of no metric",
    ),
    Mutant(
        "evpipe-save-ref-stats-without-reference",
        _EV,
        "    if save_ref_stats and ref_set is None:\n",
        "    if False:\n",
        (f"{EV_ARGS}::test_bad_arguments_are_refused_naming_them",),
        "--save-ref-stats without --ref fails with an AttributeError, not a refusal naming it",
    ),
    Mutant(
        "evpipe-statistics-recorded-of-the-samples",
        _EV,
        "        count = len(ref_set) if ref_set.has_images else None\n",
        "        count = len(sample_set) if ref_set.has_images else None\n",
        (EV_REPORT,),
        "saved statistics record the samples' count as the reference's",
    ),
    # ------------------------------------------------------------ meanflow/evaluate.py: metrics
    Mutant(
        "evpipe-features-in-float32",
        _EV,
        "out.setdefault(k, []).append(v.double().cpu())",
        "out.setdefault(k, []).append(v.cpu())",
        (f"{EV_COUNTS}::test_features_are_kept_in_float64",),
        "features summed in float32: FID's mean and covariance of 50k images lose digits",
    ),
    Mutant(
        "evpipe-saved-sigma-float32",
        _EV,
        '"sigma": np.asarray(stats["sigma"], np.float64)}',
        '"sigma": np.asarray(stats["sigma"], np.float32)}',
        (EV,),
        "reference statistics computed and saved with a float32 covariance",
    ),
    Mutant(
        "evpipe-prc-neighbourhood",
        _EV,
        "prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size",
        "prc_neighborhood=PRC_NEIGHBORHOOD + 2, prc_batch_size",
        (f"{EV}::test_precision_recall_and_inception_score_values",),
        "precision/recall with 5-NN balls where the counts checked (and the paper's) use 3",
    ),
    Mutant(
        "evpipe-isc-splits-ignored",
        _EV,
        "        splits = isc_splits_for(len(sample_set), isc_splits)\n",
        "        splits = isc_splits_for(len(sample_set), 10)\n",
        (f"{EV}::test_precision_recall_and_inception_score_values",),
        "isc_splits asked for ignored: the Inception Score always over 10 splits",
    ),
    Mutant(
        "evpipe-report-torch-fidelity-version",
        _EV,
        '        "torch_fidelity": fidelity.__version__,\n    }',
        "    }",
        (
            f"{EV_REPORT}::test_the_program_prints_the_report_with_its_torch_fidelity_and_quiet_says_nothing_else",
        ),
        "the report never says which torch-fidelity version made the numbers",
    ),
    Mutant(
        "evpipe-report-samples-relative",
        _EV,
        '"samples": os.path.abspath(samples),',
        '"samples": samples,',
        ("tests/meanflow/test_evaluate_inputs.py::test_the_report_names_the_files_it_scored",),
        "the report names the samples by the relative path given: ambiguous once moved",
    ),
    Mutant(
        "evpipe-cli-quiet-ignored",
        _EV,
        "            verbose=not args.quiet,\n",
        "            verbose=True,\n",
        (EV,),
        "--quiet still draws progress bars and notes on stderr",
    ),
    Mutant(
        "evpipe-cli-allow-flag-dropped",
        _EV,
        "            allow_unverified_weights=args.allow_unverified_weights,\n",
        "",
        (EV_FAULT,),
        "--allow-unverified-weights parsed but never handed on: the run is refused anyway",
    ),
    # --------------------------------------------------------------------- meanflow/pipeline.py
    Mutant(
        "evpipe-pipeline-guidance-one-takes-two-passes",
        _PIPE,
        "        if self.guidance_scale == 1 or y is None:\n",
        "        if y is None:\n",
        (PIPE_DIFFUSERS,),
        "guidance_scale=1 (the default) runs the null class too: twice the work per image",
    ),
    Mutant(
        "evpipe-pipeline-whole-entry-not-a-name",
        _PIPE,
        'for name in {value.strip(), *(part.strip() for part in value.split(","))} - {""}:',
        'for name in {*(part.strip() for part in value.split(","))} - {""}:',
        (f"{PIPE_ARGS}::test_id2label_must_map_ids_to_names",),
        "id2label's whole entry ('tench, Tinca tinca', as ImageNet's names read) is not a class name",
    ),
    Mutant(
        "evpipe-pipeline-negative-label",
        _PIPE,
        "        if y.min() < 0 or y.max() > num_classes:\n",
        "        if y.max() > num_classes:\n",
        (f"{PIPE_ARGS}::test_labels_of_no_class_are_refused_naming_class_labels",),
        "class_labels=[-1] reaches the embedding: an index error, or torch's last row on some backends",
    ),
    Mutant(
        "evpipe-pipeline-empty-labels",
        _PIPE,
        "if y.dtype not in (torch.int32, torch.int64) or y.numel() == 0:",
        "if y.dtype not in (torch.int32, torch.int64):",
        (f"{PIPE_ARGS}::test_labels_of_no_class_are_refused_naming_class_labels",),
        "an empty label tensor fails in y.min() with torch's words, not a TypeError naming class_labels",
    ),
    Mutant(
        "evpipe-pipeline-unconditional-batch-0",
        _PIPE,
        'check_int_at_least("batch_size", batch_size, why=',
        'check_int_at_least("batch_size", batch_size, 0, why=',
        (f"{PIPE_ARGS}::test_an_unconditional_call_of_no_image_is_refused",),
        "batch_size=0 of an unconditional model returns no image without a word",
    ),
    Mutant(
        "evpipe-pipeline-generators-noise-dtype",
        _PIPE,
        "            return torch.cat([n.to(device) for n in noise]).to(dtype)\n",
        "            return torch.cat([n.to(device) for n in noise])\n",
        (PIPE_FLOAT64,),
        "one generator per image on a float64 (or half) pipeline: float32 noise meets its weights",
    ),
    Mutant(
        "evpipe-pipeline-latents-dtype",
        _PIPE,
        "            latents = latents.to(self._execution_device, self.transformer.dtype)\n",
        "            latents = latents.to(self._execution_device)\n",
        (PIPE_FLOAT64,),
        "latents= in float32 given to a float64 (or half) pipeline: its weights meet another dtype",
    ),
    Mutant(
        "evpipe-pipeline-integer-latents",
        _PIPE,
        "    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():\n",
        "    if not isinstance(latents, torch.Tensor):\n",
        (f"{PIPE_ARGS}::test_integer_latents_are_refused_naming_latents",),
        "integer latents fail deep in the sampler, not with an error naming latents",
    ),
    Mutant(
        "evpipe-pipeline-callers-vae-frozen",
        _PIPE,
        "            if name not in options and getattr(pipe, name) is not None:\n",
        "            if getattr(pipe, name) is not None:\n",
        (f"{PIPE_LOADING}::test_a_vae_passed_in_keeps_its_autograd_state",),
        "from_pretrained(folder, vae=mine) turns off requires_grad of the caller's own VAE",
    ),
    Mutant(
        "evpipe-pipeline-not-eval",
        _PIPE,
        "        transformer = MeanFlowTransformer2DModel.from_dit(transformer).eval()\n",
        "        transformer = MeanFlowTransformer2DModel.from_dit(transformer)\n",
        (PIPE_DIFFUSERS, "tests/meanflow/test_pipeline_views.py"),
        "a pipeline of a DiT in train mode samples in train mode (dropout, label dropout)",
    ),
    Mutant(
        "evpipe-pipeline-velocity-mode-not-the-transformers",
        _PIPE,
        "        self.train(transformer.training)  # the sampler",
        "        pass  # the sampler",
        (PIPE_DIFFUSERS,),
        "the sampler restores the wrapper's train mode: the pipeline's transformer left in train mode",
    ),
    Mutant(
        "evpipe-pipeline-saved-shift-missing-vae-is-zero",
        _PIPE,
        "    if not os.path.isfile(path):\n        return None\n",
        "    if not os.path.isfile(path):\n        return 0.0\n",
        (f"{PIPE_FOLDERS}::test_an_older_export_without_its_vae_decodes_with_the_given_vaes_shift",),
        "an older export without vae/, read with a shifted VAE, decodes with shift 0, not that VAE's",
    ),
    Mutant(
        "evpipe-pipeline-id2label-names-unchecked",
        _PIPE,
        "int(key) >= num_classes or not isinstance(value, str):",
        "int(key) >= num_classes:",
        (f"{PIPE_ARGS}::test_id2label_must_map_ids_to_names",),
        "id2label {0: 5} fails in .strip() with an AttributeError, not a ValueError naming id2label",
    ),
    Mutant(
        "evpipe-pipeline-id2label-list-taken",
        _PIPE,
        "    if not isinstance(id2label, dict):\n",
        "    if False:\n",
        (f"{PIPE_ARGS}::test_id2label_must_map_ids_to_names",),
        "id2label=['tench', ...] fails in .items() with an AttributeError, not a TypeError naming it",
    ),
    Mutant(
        "evpipe-pipeline-flashpack-ignored",
        _PIPE,
        '        if options.get("use_flashpack"):\n',
        "        if False:\n",
        (PIPE_LOADING,),
        "use_flashpack=True silently ignored by the transformer's loader",
    ),
]
