"""The catalog's mutants of what is saved and loaded: ``meanflow/checkpoint.py``'s atomic files
and folders (the fsyncs that make a write survive a power cut, a full disk or quota, the
temporaries a resume removes, an export replacing the previous one), ``meanflow/pipeline.py``'s
exported pipeline (``model_index.json``, what ``from_pretrained`` hands the components, the
argument checks) and ``meanflow/vae.py``'s VAE files and records. Each is a bug that costs a
user a checkpoint or export lost or silently wrong, a file of theirs, or images decoded wrong."""

from mutant import Mutant

__all__ = ["PERSISTENCE_MUTANTS"]

_CKPT = "meanflow/checkpoint.py"
_PIPE = "meanflow/pipeline.py"
_VAE = "meanflow/vae.py"
T = "tests/meanflow/"
DURABLE = (f"{T}test_checkpoint_durability.py",)
REPLACE = (f"{T}test_checkpoint_replace.py",)
LOADING = (f"{T}test_pipeline_loading.py",)
ARGUMENTS = (f"{T}test_pipeline_arguments.py",)
PIPELINE = (f"{T}test_pipeline.py",)
WEIGHTS = (f"{T}test_vae_weights.py",)
IDENTITY = (f"{T}test_vae_identity.py",)

PERSISTENCE_MUTANTS = [
    # --------------------------------------------------------------- meanflow/checkpoint.py
    Mutant(
        "persist-hash-reads-the-first-block-only",
        _CKPT,
        '        for block in iter(lambda: f.read(1 << 22), b""):\n            digest.update(block)\n',
        "        digest.update(f.read(1 << 22))\n",
        DURABLE,
        "file_sha256 hashes a file's first 4 MiB: two checkpoints that differ later look alike",
    ),
    Mutant(
        "persist-file-not-fsynced",
        _CKPT,
        "                os.fsync(f.fileno())\n",
        "                pass\n",
        DURABLE,
        "a checkpoint is renamed into place before its bytes reach the disk: a power cut empties last.pt",
    ),
    Mutant(
        "persist-fsync-before-flush",
        _CKPT,
        "                f.flush()\n",
        "                pass\n",
        DURABLE,
        "the fsync runs before Python's buffer is written: the file's tail is not on disk when it is renamed",
    ),
    Mutant(
        "persist-rename-not-fsynced",
        _CKPT,
        "    if durable:\n        fsync_dir(directory)",
        "    if False:\n        fsync_dir(directory)",
        DURABLE,
        "the rename of a new checkpoint is not made durable: a power cut brings the old one back",
    ),
    Mutant(
        "persist-published-files-not-fsynced",
        _CKPT,
        "                os.fsync(fd)\n",  # fsync_tree's, of each file (fsync_dir's is indented less)
        "                pass\n",
        DURABLE,
        "an export's files are renamed into place unsynced: a power cut leaves a folder of empty files",
    ),
    Mutant(
        "persist-quota-not-a-full-disk",
        _CKPT,
        "(errno.ENOSPC, errno.EDQUOT)",
        "(errno.ENOSPC,)",
        DURABLE,
        "a write past the user's disk quota is torch's cryptic RuntimeError, not 'no space left writing'",
    ),
    Mutant(
        "persist-stale-temporary-prefix-match",
        _CKPT,
        "if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):",
        "if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):",
        DURABLE,
        "a resume removes a user's file whose name only begins like a killed write's temporary",
    ),
    Mutant(
        "persist-write-over-a-folder",
        _CKPT,
        "    refuse_directory(path)\n    directory = os.path.dirname(os.path.abspath(path))",
        "    directory = os.path.dirname(os.path.abspath(path))",
        DURABLE,
        "a folder where a checkpoint goes is an IsADirectoryError naming the temporary, not a clear refusal",
    ),
    Mutant(
        "persist-append-through-a-link",
        _CKPT,
        "os.open(p, flags | os.O_NOFOLLOW, 0o666)",
        "os.open(p, flags, 0o666)",
        DURABLE,
        "metrics appended through a symbolic link into a file meanflow did not write",
    ),
    Mutant(
        "persist-swapped-export-left-behind",
        _CKPT,
        "shutil.rmtree(tmp, ignore_errors=True)  # the previous folder, now under",
        "pass  # the previous folder, now under",
        REPLACE,
        "every re-export leaves the previous one in a hidden sibling folder: the disk fills with old exports",
    ),
    Mutant(
        "persist-export-not-rechecked",
        _CKPT,
        "            check_replaceable(path)  # again: the user may have put a file there meanwhile\n",
        "            pass\n",
        REPLACE,
        "a file the user put into the folder while the export ran is deleted with the previous export",
    ),
    Mutant(
        "persist-recovery-over-a-live-export",
        _CKPT,
        "and not os.path.lexists(path) and os.path.isdir(previous):",
        "and os.path.isdir(previous):",
        REPLACE,
        "recovering a killed export's leftover over a folder that exists crashes, or replaces a newer export",
    ),
    Mutant(
        "persist-export-files-executable",
        _CKPT,
        "os.chmod(entry, (0o777 if os.path.isdir(entry) else 0o666) & ~umask)",
        "os.chmod(entry, 0o777 & ~umask)",
        REPLACE,
        "every file of an export is executable",
    ),
    Mutant(
        "persist-export-through-a-link",
        _CKPT,
        '        raise ValueError(f"{path} is a symbolic link: refusing to replace it")\n',
        "        pass\n",
        REPLACE,
        "an export to a symbolic link is not refused",
    ),
    Mutant(
        "persist-umask-set-to-read-it",
        _CKPT,
        '                if line.startswith("Umask:"):',
        "                if False:",
        (f"{T}test_checkpoint_safety.py::test_the_umask_is_read_without_being_set",),
        "each write sets the umask to 0 for a moment: a file another thread makes then is writable by all",
    ),
    Mutant(
        "persist-lock-held-elsewhere-as-no-flock",
        _CKPT,
        "return False if e.errno in (errno.EAGAIN, errno.EACCES) else None",
        "return False if e.errno in (errno.EAGAIN,) else None",
        (f"{T}test_checkpoint_locks.py::test_a_folder_locked_elsewhere_is_refused",),
        "where flock says EACCES for a held lock, a second run on a busy out_dir goes on with a warning",
    ),
    Mutant(
        "persist-out-dir-file-unnamed",
        _CKPT,
        '        raise ValueError(f"{argument} {path!r} is not a directory")\n',
        "        pass\n",
        (f"{T}test_checkpoint_locks.py::test_a_file_where_the_folder_goes_is_refused_and_kept",),
        "an out_dir that is a file is os.makedirs' FileExistsError, not an error naming the argument",
    ),
    Mutant(
        "persist-empty-folder-refused",
        _CKPT,
        "    if not entries:\n        return\n",
        "    if False:\n        return\n",
        REPLACE,
        "an export into the empty folder the user made for it is refused as a folder meanflow did not export",
    ),
    Mutant(
        "persist-train-py-args-refused",
        _CKPT,
        "with torch.serialization.safe_globals([argparse.Namespace]):",
        "with ExitStack():",
        (f"{T}test_checkpoint_safety.py::test_a_train_py_checkpoint_with_its_command_line_loads",),
        "a DiT/SiT train.py checkpoint (its args an argparse.Namespace) cannot be read",
    ),
    # ---------------------------------------------------------------- meanflow/pipeline.py
    Mutant(
        "persist-pipeline-null-class-refused",
        _PIPE,
        "if y.min() < 0 or y.max() > num_classes:",
        "if y.min() < 0 or y.max() >= num_classes:",
        ARGUMENTS,
        "the null class (unconditional samples of a conditional model) is refused",
    ),
    Mutant(
        "persist-pipeline-zero-steps",
        _PIPE,
        "            or num_inference_steps < 1\n",
        "            or num_inference_steps < 0\n",
        ARGUMENTS,
        "num_inference_steps=0 returns the noise itself as images",
    ),
    Mutant(
        "persist-pipeline-id2label-null-class",
        _PIPE,
        "if not str(key).isdigit() or int(key) >= num_classes or not isinstance(value, str):",
        "if not str(key).isdigit() or int(key) > num_classes or not isinstance(value, str):",
        ARGUMENTS,
        "id2label names a class past the model's last one, and its name samples the null class",
    ),
    Mutant(
        "persist-pipeline-unconditional-guidance",
        _PIPE,
        "        if guidance_scale != 1 and not conditional:\n",
        "        if False:\n",
        (
            "tests/meanflow/test_pipeline_diffusers.py::test_guidance_scale_adds_classifier_free_guidance_on_top",
        ),
        "guidance_scale=4 on an unconditional model is silently ignored",
    ),
    Mutant(
        "persist-pipeline-export-names-its-source",
        _PIPE,
        'index.pop("_name_or_path", None)',
        'index.get("_name_or_path", None)',
        LOADING,
        "re-exporting a loaded pipeline writes the local path it was read from into model_index.json",
    ),
    Mutant(
        "persist-pipeline-backend-ignored",
        _PIPE,
        "            pipe.transformer.backend = dispatch.check_backend(backend) or None\n",
        "            pass\n",
        LOADING,
        "from_pretrained(folder, backend=...) runs the automatic backend",
    ),
    Mutant(
        "persist-pipeline-loaded-weights-trainable",
        _PIPE,
        "getattr(pipe, name).requires_grad_(False)",
        "getattr(pipe, name).requires_grad_(True)",
        LOADING,
        "a loaded pipeline's weights require grad: autograd state kept, the VAE not on its inference kernels",
    ),
    Mutant(
        "persist-pipeline-vae-path-dtype-ignored",
        _PIPE,
        'vae = load_vae(vae, dtype=kwargs.get("dtype") or kwargs.get("torch_dtype"))',
        "vae = load_vae(vae)",
        LOADING,
        "from_pretrained(folder, torch_dtype=float16) loads the VAE in float32: twice its memory",
    ),
    Mutant(
        "persist-pipeline-transformer-torch-dtype-ignored",
        _PIPE,
        "str(pretrained_model_name_or_path), device=device, dtype=dtype or torch_dtype, backend=backend",
        "str(pretrained_model_name_or_path), device=device, dtype=dtype, backend=backend",
        LOADING,
        "diffusers' torch_dtype= does not reach the transformer: it loads in float32",
    ),
    Mutant(
        "persist-pipeline-variant-ignored",
        _PIPE,
        'for name in ("device_map", "variant", "quantization_config"):',
        'for name in ("device_map", "quantization_config"):',
        LOADING,
        "variant='fp16' silently loads the folder's full-precision weights",
    ),
    Mutant(
        "persist-pipeline-shift-unchecked",
        _PIPE,
        'return _checked_number("shift_factor", shift_factor, minimum=None)',
        "return float(shift_factor)",
        (f"{T}test_pipeline.py::test_the_shift_is_a_finite_number",),
        "shift_factor='0.1' or True is taken as a number, NaN as a shift that blackens every image",
    ),
    Mutant(
        "persist-pipeline-view-shares-hooks",
        _PIPE,
        "own = isinstance(value, (dict, set)) and key not in SHARED_STATE",
        "own = False",
        (f"{T}test_pipeline_views.py",),
        "diffusers' hooks on the pipeline's transformer (offload) also run when the caller uses the DiT",
    ),
    # --------------------------------------------------------------------- meanflow/vae.py
    Mutant(
        "persist-vae-model-key-not-unwrapped",
        _VAE,
        'for key in ("state_dict", "model"):',
        'for key in ("state_dict",):',
        WEIGHTS,
        "a VAE checkpoint saved as {'model': weights} is refused as not fitting the config",
    ),
    Mutant(
        "persist-vae-sd-checkpoint-keeps-the-unet",
        _VAE,
        "state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}",
        "state = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}",
        WEIGHTS,
        "a whole Stable Diffusion checkpoint is refused: its UNet's keys are taken for the VAE's",
    ),
    Mutant(
        "persist-vae-folder-bin-before-safetensors",
        _VAE,
        'vae, _read_state_dict(files[0]), f"VAE folder {folder!r}: its weights',
        'vae, _read_state_dict(files[-1]), f"VAE folder {folder!r}: its weights',
        WEIGHTS,
        "a folder with both files loads a stale .bin over the .safetensors diffusers would read",
    ),
    Mutant(
        "persist-vae-folder-without-class-name-refused",
        _VAE,
        'name = raw.get("_class_name", "AutoencoderKL") if isinstance(raw, dict) else None',
        'name = raw.get("_class_name") if isinstance(raw, dict) else None',
        WEIGHTS,
        "a VAE folder whose config.json has no _class_name (hand-written, older tools) is refused",
    ),
    Mutant(
        "persist-vae-decode-given-scale-ignored",
        _VAE,
        "    scale = default_scale if scale_factor is None else scale_factor\n",
        "    scale = default_scale\n",
        (f"{T}test_vae.py::test_shifted_latents_decode_as_the_vae_encoded_them",),
        "latents made with another scale than the VAE config's decode with the config's",
    ),
    Mutant(
        "persist-vae-identity-relative-path",
        _VAE,
        '"weights": weights if weights == RANDOM else os.path.abspath(weights),',
        '"weights": weights,',
        IDENTITY,
        "a manifest records the VAE by a relative path: read from another folder it names the wrong file",
    ),
    Mutant(
        "persist-vae-newer-config-keys-compared",
        _VAE,
        "differ = sorted(k for k in recorded if k in config and config[k] != recorded[k])",
        "differ = sorted(k for k in recorded if config.get(k) != recorded[k])",
        IDENTITY,
        "latents recorded under another diffusers version (a config key more) refuse the very same VAE",
    ),
    Mutant(
        "persist-vae-check-never-strict",
        _VAE,
        "    if strict:\n        raise ValueError(message)",
        "    if False:\n        raise ValueError(message)",
        IDENTITY,
        "another VAE than the latents' only warns where it must be refused: wrong images",
    ),
    Mutant(
        "persist-vae-unhashed-record-silent",
        _VAE,
        '        if not record.get("sha256"):\n',
        "        if False:\n",
        IDENTITY,
        "a record without a weights hash passes any VAE of that config without a word",
    ),
    Mutant(
        "persist-vae-config-tuples-kept",
        _VAE,
        'return json.loads(json.dumps({k: v for k, v in dict(vae.config).items() if not k.startswith("_")}))',
        'return {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}',
        (f"{T}test_vae_identity.py::test_a_record_read_back_from_json_matches_its_vae",),
        "a VAE configured with tuples never matches its own manifest record (JSON reads lists)",
    ),
]
