"""The catalog's mutants of the model side (``tools/mutant_catalog.py`` holds the loss, sampler,
checkpoints and trainer): the DiT and its config, the interchange formats (official DiT/SiT
weights, pretrained folders, trainer checkpoints, export), the library adapters, the pipeline,
the VAE, the data (``tools/mutant_catalog_data.py``) and the evaluation's references
(``evaluate``, its inputs and saved statistics). Each is a bug that gives wrong numbers without
an error: a transposed layout, a dropped sign, a skipped initialisation, a wrong key or index, a
check left out."""

from mutant import Mutant
from mutant_catalog_data import DATA_MUTANTS

__all__ = ["MODEL_MUTANTS"]

T = "tests/meanflow/"
MODELS = (f"{T}test_models_definitions.py", f"{T}test_official_peers.py", f"{T}test_models.py")
INTERCHANGE = (f"{T}test_official_peers.py", f"{T}test_pretrained.py")
DIFFUSERS_DIT = (f"{T}test_adapters.py", f"{T}test_adapter_inputs.py")
TIMM_VIT = (f"{T}test_adapter_timm.py", f"{T}test_adapter_inputs.py")
PIPELINE = (f"{T}test_pipeline.py", f"{T}test_pipeline_diffusers.py")
VAE = (f"{T}test_vae.py", f"{T}test_pipeline.py", f"{T}test_latent_provenance.py")
REFS = f"{T}test_evaluate_references.py"
STATS_SIZE = (f"{REFS}::test_saved_statistics_of_images_read_as_they_are_keep_their_size",)

_MODELS_PY = "meanflow/models.py"
_INTERCHANGE_PY = "meanflow/interchange.py"
_ADAPTERS_PY = "meanflow/adapters.py"
_PIPELINE_PY = "meanflow/pipeline.py"

MODEL_MUTANTS = [
    # ------------------------------------------------------------------ meanflow/models.py
    Mutant(
        "models-adaln-shift-scale-swapped",
        _MODELS_PY,
        "sh1, sc1, g1, sh2, sc2, g2 = self.adaLN_modulation[1](c_act).chunk(6, dim=1)",
        "sc1, sh1, g1, sh2, sc2, g2 = self.adaLN_modulation[1](c_act).chunk(6, dim=1)",
        MODELS,
        "the attention's adaLN shift and scale read from each other's chunk",
    ),
    Mutant(
        "models-unpatchify-grid-transposed",
        _MODELS_PY,
        "x = x.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)",
        "x = x.reshape(b, g, g, p, p, c).permute(0, 5, 2, 3, 1, 4)",
        MODELS,
        "output patches laid out column-major: u transposed patch-wise",
    ),
    Mutant(
        "models-jvp-patches-column-major",
        _MODELS_PY,
        "z.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)",
        "z.reshape(b, c, h // p, p, w // p, p).permute(0, 4, 2, 1, 3, 5)",
        MODELS,
        "the dual pass's patch embedding takes patches column-major",
    ),
    Mutant(
        "models-jvp-time-tangent-unscaled",
        _MODELS_PY,
        "t * self.time_scale, t_dot * self.time_scale, self.frequency_embedding_size",
        "t * self.time_scale, t_dot, self.frequency_embedding_size",
        MODELS,
        "du/dt misses the time scale's chain-rule factor",
    ),
    Mutant(
        "models-interval-sign",
        _MODELS_PY,
        'return t - r if self.second_time == "h" else r',
        'return r - t if self.second_time == "h" else r',
        MODELS,
        "the second time embedder sees r - t, not h = t - r",
    ),
    Mutant(
        "models-blocks-not-zero-init",
        _MODELS_PY,
        "for layer in (*self.blocks, self.final_layer):",
        "for layer in (self.final_layer,):",
        MODELS,
        "adaLN-Zero skipped for the blocks: they do not start as the identity",
    ),
    Mutant(
        "models-pos-embed-axes-swapped",
        _MODELS_PY,
        'cols, rows = torch.meshgrid(coords, coords, indexing="xy")',
        'cols, rows = torch.meshgrid(coords, coords, indexing="ij")',
        MODELS,
        "the 2-D positions with rows and columns swapped (MAE/DiT put columns first)",
    ),
    Mutant(
        "models-null-class-last-label",
        _MODELS_PY,
        "    def null_class(self) -> int:\n        return self.config.num_classes\n",
        "    def null_class(self) -> int:\n        return self.config.num_classes - 1\n",
        (*MODELS, f"{T}test_loss.py", f"{T}test_pipeline_diffusers.py"),
        "the null label is the last real class",
    ),
    # -------------------------------------------------------------- meanflow/dit_config.py
    Mutant(
        "dit-config-time-scale-default",
        "meanflow/dit_config.py",
        "time_scale: float = 1000.0",
        "time_scale: float = 1.0",
        MODELS,
        "a DiT's times fed unscaled by default: the embedding barely varies over [0, 1]",
    ),
    Mutant(
        "dit-config-preset-heads",
        "meanflow/dit_config.py",
        '"L": (24, 1024, 16),',
        '"L": (24, 1024, 8),',
        MODELS,
        "DiT-L with 8 heads of 128, not the paper's 16 of 64",
    ),
    Mutant(
        "dit-config-overrides-ignored",
        "meanflow/dit_config.py",
        "return cls(**{**base, **overrides})",
        "return cls(**{**overrides, **base})",
        MODELS,
        "from_name drops overrides of the preset's own fields (depth, patch, ...)",
    ),
    # ------------------------------------------------------------- meanflow/interchange.py
    Mutant(
        "interchange-sit-time-not-flipped",
        _INTERCHANGE_PY,
        'state["t_embedder.mlp.0.weight"] = _reflect_time(state["t_embedder.mlp.0.weight"])',
        'state["t_embedder.mlp.0.weight"] = state["t_embedder.mlp.0.weight"]',
        INTERCHANGE,
        "SiT loaded at s = t, not s = 1 - t",
    ),
    Mutant(
        "interchange-sit-bias-sign-kept",
        _INTERCHANGE_PY,
        'state["final_layer.linear.bias"] = -state["final_layer.linear.bias"]',
        'state["final_layer.linear.bias"] = state["final_layer.linear.bias"]',
        INTERCHANGE,
        "SiT's output sign flipped in the weight, not the bias",
    ),
    Mutant(
        "interchange-reflect-sin-sign",
        _INTERCHANGE_PY,
        "out[:, half : 2 * half] = on_cos * sin_w - on_sin * cos_w",
        "out[:, half : 2 * half] = on_sin * cos_w - on_cos * sin_w",
        INTERCHANGE,
        "sin(w - wt) with the wrong sign",
    ),
    Mutant(
        "interchange-sigma-split-channel-major",
        _INTERCHANGE_PY,
        "lin_w.reshape(patch, patch, out_channels, hidden)[\n            :, :, :in_channels\n        ]",
        "lin_w.reshape(out_channels, patch, patch, hidden)[:in_channels]",
        INTERCHANGE,
        "learn_sigma's halves split channel-major: half the kept rows are sigma's",
    ),
    Mutant(
        "interchange-train-checkpoint-raw-weights",
        _INTERCHANGE_PY,
        'if isinstance(obj, dict) and isinstance(obj.get("ema"), dict):\n        return obj["ema"]',
        'if isinstance(obj, dict) and isinstance(obj.get("model"), dict):\n        return obj["model"]',
        INTERCHANGE,
        "a DiT train.py checkpoint read for its raw weights, not the EMA",
    ),
    Mutant(
        "interchange-second-time-not-silenced",
        _INTERCHANGE_PY,
        "        model._silence_second_time()\n",
        "",
        INTERCHANGE,
        "a loaded official DiT is moved off itself by the fresh second time embedder",
    ),
    Mutant(
        "interchange-meanflow-state-as-official",
        _INTERCHANGE_PY,
        "    if ours:\n        # Loaded as official",
        "    if False:\n        # Loaded as official",
        (f"{T}test_pretrained_user_errors.py",),
        "a MeanFlow checkpoint passed as official loads: raw weights, h embedder zeroed, DiT's time scale",
    ),
    Mutant(
        "interchange-later-format-read",
        _INTERCHANGE_PY,
        "    if version > FORMAT_VERSION:\n",
        "    if False:\n",
        (f"{T}test_pretrained_user_errors.py",),
        "a pretrained folder of a later format is read as this one",
    ),
    # ------------------------------------------------------- meanflow/pretrained.py, export.py
    Mutant(
        "pretrained-ema-index-ignored",
        "meanflow/pretrained.py",
        'state, what = emas[ema], f"ema[{ema}]"',
        'state, what = emas[0], f"ema[{ema}]"',
        (f"{T}test_pretrained.py",),
        "every --ema N loads the first EMA",
    ),
    Mutant(
        "pretrained-raw-gives-ema",
        "meanflow/pretrained.py",
        'state, what = ckpt["model"], "model"',
        'state, what = ckpt["ema"][0], "model"',
        (f"{T}test_pretrained.py",),
        "--raw exports the first EMA",
    ),
    Mutant(
        "pretrained-folder-any-weights",
        "meanflow/pretrained.py",
        "        if ema != 0:\n",
        "        if False:\n",
        (f"{T}test_pretrained_user_errors.py",),
        "--raw (or --ema N) of an exported folder gives its one weight set under that name",
    ),
    Mutant(
        "export-raw-ignored",
        "meanflow/export.py",
        "ema=None if args.raw else args.ema,",
        "ema=args.ema,",
        (f"{T}test_pretrained.py",),
        "--raw exports EMA 0",
    ),
    Mutant(
        "export-official-unseeded",
        "meanflow/export.py",
        "        torch.manual_seed(seed)  # the fresh second time embedder\n",
        "",
        (f"{T}test_official_peers.py", f"{T}test_pretrained.py"),
        "two exports of one official checkpoint differ (the fresh embedder's draw)",
    ),
    Mutant(
        "export-vae-not-checked",
        "meanflow/export.py",
        "if decoder is not None and not official:",
        "if False:",
        (f"{T}test_latent_provenance.py",),
        "export --pipeline --vae bundles a VAE the latents were not made with",
    ),
    # ---------------------------------------------------------------- meanflow/adapters.py
    Mutant(
        "adapters-diffusers-interval-sign",
        _ADAPTERS_PY,
        "timestep = torch.cat([t, t - r]) * self.time_scale",
        "timestep = torch.cat([t, r - t]) * self.time_scale",
        DIFFUSERS_DIT,
        "the diffusers DiT's interval embedder sees r - t",
    ),
    Mutant(
        "adapters-diffusers-sigma-half",
        _ADAPTERS_PY,
        "return out[:, : z.shape[1]]",
        "return out[:, -z.shape[1] :]",
        DIFFUSERS_DIT,
        "a learned-sigma DiT gives its sigma channels as the velocity",
    ),
    Mutant(
        "adapters-diffusers-interval-not-zero-init",
        _ADAPTERS_PY,
        "        nn.init.zeros_(self.interval_embedder.linear_2.weight)\n",
        "",
        DIFFUSERS_DIT,
        "the wrapped DiT does not start as itself: u depends on r at initialisation",
    ),
    Mutant(
        "adapters-diffusers-label-dropout-kept",
        _ADAPTERS_PY,
        "            block.norm1.emb.class_embedder.dropout_prob = 0.0\n",
        "",
        (*DIFFUSERS_DIT, f"{T}test_train_adapters.py"),
        "the DiT drops labels on top of the loss's class dropout",
    ),
    Mutant(
        "adapters-diffusers-out-channels-unchecked",
        _ADAPTERS_PY,
        "        if out_channels not in (c.in_channels, 2 * c.in_channels):\n",
        "        if False:\n",
        (f"{T}test_adapters_shapes.py",),
        "a DiT with 3 C output channels gives its first C as the velocity",
    ),
    Mutant(
        "adapters-timm-interval-is-r",
        _ADAPTERS_PY,
        "c = self.t_embedder(t) + self.h_embedder(t - r)",
        "c = self.t_embedder(t) + self.h_embedder(r)",
        TIMM_VIT,
        "the ViT's second time embedder sees r, not h = t - r",
    ),
    Mutant(
        "adapters-none-label-is-zero",
        _ADAPTERS_PY,
        "torch.full((z.shape[0],), model.null_class, dtype=torch.long, device=z.device)",
        "torch.full((z.shape[0],), 0, dtype=torch.long, device=z.device)",
        TIMM_VIT,
        "y=None samples class 0, not the null class",
    ),
    # ---------------------------------------------------------------- meanflow/pipeline.py
    Mutant(
        "pipeline-guidance-from-cond",
        _PIPELINE_PY,
        "return uncond + self.guidance_scale * (cond - uncond)",
        "return cond + self.guidance_scale * (cond - uncond)",
        PIPELINE,
        "guidance u_cond + s (u_cond - u_null)",
    ),
    Mutant(
        "pipeline-guidance-halves-swapped",
        _PIPELINE_PY,
        "cond, uncond = u.chunk(2)",
        "uncond, cond = u.chunk(2)",
        PIPELINE,
        "guidance pushes towards the null class",
    ),
    Mutant(
        "pipeline-np-height-width-swapped",
        _PIPELINE_PY,
        'x.cpu().permute(0, 2, 3, 1).numpy() if output_type == "np"',
        'x.cpu().permute(0, 3, 2, 1).numpy() if output_type == "np"',
        PIPELINE,
        'output_type="np" images transposed',
    ),
    Mutant(
        "pipeline-vae-scaling-ignored",
        _PIPELINE_PY,
        'return _checked_number("the vae\'s scaling_factor", latent_scale(vae)[0], 0, above=True)',
        "return SD_VAE_SCALE",
        PIPELINE,
        "a VAE's own scaling_factor (SDXL's 0.13025) replaced by sd-vae-ft-ema's",
    ),
    Mutant(
        "pipeline-transformer-read-from-the-folder",
        _PIPELINE_PY,
        'if "transformer" not in kwargs and not os.path.isdir(os.path.join(folder, "transformer")):',
        "if False:",
        (f"{T}test_pipeline_folders.py",),
        "a pipeline folder without transformer/ loads the DiT files lying beside model_index.json",
    ),
    # --------------------------------------------------------------------- meanflow/vae.py
    Mutant(
        "vae-decode-scale-multiplied",
        "meanflow/vae.py",
        "dtype=param.dtype) / scale + shift",
        "dtype=param.dtype) * scale + shift",
        VAE,
        "latents multiplied by the scale before decoding, not divided",
    ),
    Mutant(
        "vae-decode-shift-sign",
        "meanflow/vae.py",
        "dtype=param.dtype) / scale + shift",
        "dtype=param.dtype) / scale - shift",
        VAE,
        "a shifted VAE's (FLUX's) latents decoded with the shift subtracted again",
    ),
    Mutant(
        "vae-random-unseeded",
        "meanflow/vae.py",
        "            torch.manual_seed(0)\n            vae = AutoencoderKL.from_config",
        "            vae = AutoencoderKL.from_config",
        VAE,
        "load_vae('random') differs at each call",
    ),
    *DATA_MUTANTS,  # meanflow/data/, prepare_latents: tools/mutant_catalog_data.py
    # ------------------------------------ meanflow/evaluate.py, evaluate_inputs, reference_stats
    Mutant(
        "evaluate-reference-size-unchecked",
        "meanflow/evaluate.py",
        "            check_same_size(sample_set, ref_set)\n",
        "            pass\n",
        (f"{REFS}::test_reference_images_of_another_size_are_refused",),
        "FID between 16x16 samples and 32x32 reference images scored in silence (both resized)",
    ),
    Mutant(
        "evaluate-stats-size-unchecked",
        "meanflow/evaluate.py",
        "        reference_stats.check_image_size(ref_set.npz, recorded, sample_set.image_size())\n",
        "",
        STATS_SIZE,
        "saved statistics of 32x32 images scored against 16x16 samples in silence",
    ),
    Mutant(
        "ref-stats-size-recorded-as-hxw",
        "meanflow/reference_stats.py",
        'found[SIZE] = f"{int(w)}x{int(h)}"',
        'found[SIZE] = f"{int(h)}x{int(w)}"',
        STATS_SIZE,
        "statistics of wide images record them as tall: refused for their own samples",
    ),
    Mutant(
        "ref-stats-unhashed-weights-blank",
        "meanflow/reference_stats.py",
        "file_sha256(weights_path) if os.path.isfile(weights_path) else _unhashed(weights_path)",
        "file_sha256(weights_path) if os.path.isfile(weights_path) else None",
        (f"{REFS}::test_weights_that_are_not_a_file_are_recorded_unhashed",),
        "statistics made with one weights folder match a run given another folder or none",
    ),
    Mutant(
        "evaluate-class-tree-listed",
        "meanflow/evaluate_inputs.py",
        "elif crop is not None and _class_folders(path)[0]:",
        "elif False:",
        (f"{REFS}::test_a_class_folder_tree_is_the_images_the_trainer_reads",),
        "a training tree read with --ref-size refused over a notes.txt the trainer skips",
    ),
    Mutant(
        "evaluate-reference-16-bit-clipped",
        "meanflow/evaluate_inputs.py",
        "rgb = to_rgb(image)",
        'rgb = image.convert("RGB")',
        (f"{REFS}::test_16_bit_grayscale_references_are_read_as_the_trainer_reads_them",),
        "16-bit grayscale reference images clipped to near-white: FID against other images than trained on",
    ),
    Mutant(
        "evaluate-destinations-checked-after-the-scan",
        "meanflow/evaluate.py",
        "    check_destinations(out, save_ref_stats, inputs)\n",
        "",
        (f"{REFS}::test_a_bad_destination_is_refused_before_a_class_tree_is_scanned",),
        "a bad --out refused only after minutes of scanning the reference tree",
    ),
    Mutant(
        "resume-classes-unchecked",
        "meanflow/train_state.py",
        '        check_same_classes(ckpt.get("classes"), getattr(loader, "class_names", None))\n',
        "",
        ("tests/faults/test_fault_resume.py",),
        "a resume onto renamed class folders trains every label as another class",
    ),
    Mutant(
        "checkpoint-classes-not-recorded",
        "meanflow/train_state.py",
        '"classes": getattr(loader, "class_names", None),',
        '"classes": None,',
        ("tests/faults/test_fault_resume.py",),
        "an export names its classes after the folder as it is now, not as the run trained on it",
    ),
    Mutant(
        "resume-data-identity-unchecked",
        "meanflow/train_state.py",
        '        check_same_data(ckpt.get("data_identity"), loader)\n',
        "",
        ("tests/faults/test_fault_changed_latents.py", "tests/faults/test_fault_resume.py"),
        "a resume onto latents made with another VAE, or other images in MNIST's files, mixes two data sets",
    ),
]
