"""The VAE of latent-space models: a diffusers ``AutoencoderKL`` loaded offline, and decoding.

One loader serves every place that needs the VAE (``prepare_latents``, the latent loaders'
``decode``, ``sample``, ``export``, ``MeanFlowPipeline``)::

    vae = load_vae("/models/sd-vae-ft-ema")                    # a diffusers folder
    vae = load_vae("vae.safetensors")                           # weights + sd-vae-ft-ema's config
    vae = load_vae("sd.ckpt", "config.json", device="cuda", dtype=torch.float16)
    vae = load_vae("random", "config.json")                     # random weights: tests, dry runs
    images = decode_latents(vae, latents)                       # scale/shift from the VAE config
    check_vae(vae, manifest["vae"], "/models/sd-vae-ft-ema")    # is it the latents' VAE?

A VAE is identified by :func:`vae_identity` (what ``prepare_latents`` records in a latent
folder's manifest): its config and :func:`weights_sha256`, a hash of the loaded weights that
does not depend on the file's format, name or place.

Weights are only ever read from a local path (``HF_HUB_OFFLINE`` semantics); diffusers is
imported when a VAE is first needed, so pixel-space models never need it.
"""

import hashlib
import json
import os
import warnings

import torch

from .checkpoint import load_safetensors, load_torch_file

# stabilityai/sd-vae-ft-ema's config.json (the VAE of DiT, SiT, REPA, MeanFlow); the tests
# shrink block_out_channels and use random weights.
SD_VAE_FT_EMA_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD_VAE_SCALE = SD_VAE_FT_EMA_CONFIG["scaling_factor"]  # the latent scale of DiT/SiT/MeanFlow
RANDOM = "random"  # load_vae("random", config): the architecture with random weights (seed 0)


def needs_vae(model_config) -> bool:
    """Whether a model of ``model_config`` makes latents that only a VAE turns into images
    (pixel models make 1 or 3 channels)."""
    return model_config.in_channels not in (1, 3)


def _autoencoder_kl():
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise ImportError(
            "the VAE (latent-space models) needs diffusers: pip install 'meanflow-engine[eval]' "
            "(or the [data] extra, or just diffusers)"
        ) from e
    return AutoencoderKL


def vae_config(config=None) -> dict:
    """The ``AutoencoderKL`` config: a dict, a JSON file, a folder holding ``config.json``, or
    None for sd-vae-ft-ema's. Keys starting with ``_`` (diffusers' metadata) are dropped."""
    if config is None:
        return dict(SD_VAE_FT_EMA_CONFIG)
    if isinstance(config, dict):
        return {k: v for k, v in config.items() if not k.startswith("_")}
    path = os.path.join(config, "config.json") if os.path.isdir(config) else config
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VAE config {path!r} does not exist")
    with open(path) as f:
        return vae_config(json.load(f))


def _read_state_dict(path: str) -> dict:
    if path.endswith(".safetensors"):
        state = load_safetensors(path, "VAE weights")
    else:
        state = load_torch_file(path, what="VAE weights")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        kind = type(state).__name__
        raise ValueError(f"VAE weights {path!r} hold a {kind}, not a state dict (name -> tensor)")
    prefix = "first_stage_model."  # a whole Stable Diffusion checkpoint
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_vae(weights: str, config=None, device="cpu", dtype: torch.dtype | None = None):
    """A diffusers ``AutoencoderKL`` in eval mode, without grad, on ``device`` (in ``dtype``).

    ``weights``: a diffusers model folder (``config.json`` + weights), a weights file
    (``.safetensors``/``.bin``/``.pt``/``.ckpt``, diffusers or original-LDM key names) used
    with ``config`` (see :func:`vae_config`; default sd-vae-ft-ema), or ``"random"`` (the
    ``config`` architecture with weights drawn from seed 0, with a warning: tests and smoke
    runs only). Never downloads. ``"random"`` where a file or folder of that name exists is
    refused, naming both: given ``./random``, that path is loaded.
    """
    AutoencoderKL = _autoencoder_kl()
    if weights == RANDOM and os.path.lexists(RANDOM):
        # Random weights in place of the user's VAE would make latents that look like a real
        # VAE's to every later check but decode into noise.
        raise ValueError(
            f"VAE {RANDOM!r} names both random weights (tests, dry runs) and {os.path.abspath(RANDOM)!r}, "
            f"which exists here: give that path as {os.path.join('.', RANDOM)!r} to load it, or run from "
            "another folder for random weights"
        )
    if weights == RANDOM:
        warnings.warn("VAE with RANDOM weights (for tests and dry runs only)", stacklevel=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vae = AutoencoderKL.from_config(vae_config(config))
    elif os.path.isdir(weights):
        if config is not None:
            raise ValueError(
                f"a VAE config goes with a weights file; the folder {weights!r} has its own config.json"
            )
        if not os.path.isfile(os.path.join(weights, "config.json")):
            raise FileNotFoundError(
                f"VAE folder {weights!r} has no config.json: give a diffusers AutoencoderKL folder "
                "(config.json + diffusion_pytorch_model.safetensors, e.g. stabilityai/sd-vae-ft-ema "
                "saved with save_pretrained) or a weights file; nothing is downloaded"
            )
        vae = _load_folder(AutoencoderKL, weights)
    elif os.path.isfile(weights):
        cfg = vae_config(config)
        state = _read_state_dict(weights)
        if any(k.startswith("encoder.down.") for k in state):  # original LDM key names
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            state = convert_ldm_vae_checkpoint(state, cfg)
        vae = AutoencoderKL.from_config(cfg)
        which = "the given config" if config is not None else "sd-vae-ft-ema's config"
        _load_strict(vae, state, f"VAE weights {weights!r} do not fit {which}")
    else:
        raise FileNotFoundError(
            f"VAE {weights!r}: no such file or folder (a local diffusers folder, a weights file, or "
            f"{RANDOM!r}; nothing is downloaded)"
        )
    vae = vae.to(device) if dtype is None else vae.to(device=device, dtype=dtype)
    return vae.eval().requires_grad_(False)


FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _load_folder(AutoencoderKL, folder: str):
    """The ``AutoencoderKL`` of a diffusers folder, every weight read from it. Not diffusers'
    ``from_pretrained``: that fills weights missing from the file (or the whole model, for
    another class's folder) with random ones and only logs it."""
    config_path = os.path.join(folder, "config.json")
    try:
        with open(config_path) as f:
            raw = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"VAE folder {folder!r}: config.json is not JSON ({e})") from e
    name = raw.get("_class_name", "AutoencoderKL") if isinstance(raw, dict) else None
    if name != "AutoencoderKL":
        raise ValueError(
            f"VAE folder {folder!r} holds {'a ' + repr(name) if name else 'no model config'}, not an "
            "AutoencoderKL: give the VAE's own folder (a pipeline's vae/, e.g. stabilityai/sd-vae-ft-ema)"
        )
    files = [os.path.join(folder, n) for n in FOLDER_WEIGHTS if os.path.isfile(os.path.join(folder, n))]
    if not files:
        raise FileNotFoundError(f"VAE folder {folder!r} has no {' or '.join(FOLDER_WEIGHTS)}")
    vae = AutoencoderKL.from_config(vae_config(raw))
    _load_strict(
        vae, _read_state_dict(files[0]), f"VAE folder {folder!r}: its weights do not fit its config.json"
    )
    return vae


def _load_strict(vae, state: dict, message: str) -> None:
    """``vae.load_state_dict(state)``; missing, unexpected or mis-shaped tensors are one
    ``ValueError``: ``message`` and torch's first complaint."""
    try:
        vae.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).splitlines()
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "").strip()[:300]
        raise ValueError(f"{message}: {detail}") from e


def latent_scale(vae) -> tuple[float, float]:
    """``(scale_factor, shift_factor)`` of ``vae``'s config (0.18215 and 0 where unset):
    the trainer sees ``(z - shift) * scale``."""
    scale = getattr(vae.config, "scaling_factor", None) or SD_VAE_SCALE
    return float(scale), float(getattr(vae.config, "shift_factor", None) or 0.0)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, scale_factor: float | None = None, shift_factor=None):
    """Scaled latents ``(B, C, h, w)`` (what the trainer sees) -> float32 images ``(B, 3, H, W)``
    in [-1, 1] on the latents' device (decoded on the VAE's). ``scale_factor``/``shift_factor``:
    those the latents were made with; None takes the VAE config's (:func:`latent_scale`)."""
    default_scale, default_shift = latent_scale(vae)
    scale = default_scale if scale_factor is None else scale_factor
    shift = default_shift if shift_factor is None else shift_factor
    param = next(vae.parameters())
    # A VAE whose config says force_upcast (diffusers' default, sd-vae-ft-ema's) overflows in
    # float16: decoded in float32, then given back its float16 weights, as diffusers' pipelines do.
    upcast = param.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    dtype = torch.float32 if upcast else param.dtype
    z = latents.to(device=param.device, dtype=dtype) / scale + shift
    if upcast:
        vae.to(torch.float32)
    try:
        return vae.decode(z).sample.float().clamp(-1, 1).to(latents.device)
    finally:
        if upcast:
            vae.to(torch.float16)


def plain_config(vae) -> dict:
    """``vae``'s config as JSON reads it back (lists, not tuples), without diffusers' ``_`` keys."""
    return json.loads(json.dumps({k: v for k, v in dict(vae.config).items() if not k.startswith("_")}))


def weights_sha256(vae) -> str:
    """sha256 of the weights: each state-dict tensor's name, shape and float32 bytes, in key
    order. The same for a diffusers folder, a .safetensors or an LDM checkpoint of the same
    weights, on any device; about a second for sd-vae-ft-ema's 84M parameters."""
    h = hashlib.sha256()
    for key, tensor in sorted(vae.state_dict().items()):
        values = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{key}{tuple(values.shape)}".encode())
        h.update(values.numpy().tobytes())
    return h.hexdigest()


def vae_identity(vae, weights: str) -> dict:
    """What a latent manifest records of the VAE the latents were made with: where its
    weights were read from, its config and :func:`weights_sha256`."""
    info = {
        "weights": weights if weights == RANDOM else os.path.abspath(weights),
        "config": plain_config(vae),
    }
    if weights != RANDOM and os.path.isfile(weights):
        info["bytes"] = os.path.getsize(weights)
    info["sha256"] = weights_sha256(vae)
    return info


def records_a_vae(record: dict | None) -> bool:
    """Whether a VAE record names a VAE at all: a weights path, a hash or a config (latents
    made without one record one of Nones; another tool's may lack the path alone)."""
    return bool(record and (record.get("weights") or record.get("sha256") or record.get("config")))


def describe_identity(record: dict) -> str:
    """How messages name a recorded VAE: its weights path (a record of another tool's may have
    none) and the first 12 digits of its hash."""
    sha, weights = record.get("sha256"), record.get("weights")
    if not records_a_vae(record):
        return "no recorded VAE"
    where = repr(weights) if weights else "an unnamed VAE"
    return f"{where} ({f'sha256 {sha[:12]}' if sha else 'no weights hash recorded'})"


def vae_mismatch(vae, record: dict) -> str | None:
    """Why ``vae`` is not the VAE that ``record`` (a :func:`vae_identity`) describes, or None.
    Config keys only one side has (another diffusers version) are not compared."""
    config, recorded = plain_config(vae), record.get("config") or {}
    differ = sorted(k for k in recorded if k in config and config[k] != recorded[k])
    if differ:
        return f"their configs differ in {', '.join(differ)}"
    sha = record.get("sha256")
    mine = weights_sha256(vae) if sha else None
    if sha and mine != sha:
        return f"their weights differ (sha256 {mine[:12]} here, {sha[:12]} recorded)"
    return None


def check_vae(vae, record: dict, name: str, strict: bool = True) -> None:
    """Refuse (ValueError naming both; ``strict``) or warn when ``vae`` (read from ``name``)
    is not the VAE of ``record``: images decoded with another VAE than the latents were
    encoded with are wrong without looking broken. A record without a weights hash (an older
    manifest) is checked by its config only, with a warning."""
    why = vae_mismatch(vae, record)
    if why is None:
        if not record.get("sha256"):
            warnings.warn(
                f"cannot verify the weights of VAE {name!r}: the latents' manifest records no hash",
                stacklevel=2,
            )
        return
    message = f"VAE {name!r} is not the VAE the latents were made with, {describe_identity(record)}: {why}"
    if strict:
        raise ValueError(message)
    warnings.warn(message, stacklevel=2)
