"""The ``--out`` folder of ``meanflow.generate``: where each file goes, the manifest that says
the folder is ours and with which settings its images were made, and the rules a run follows
before it writes there (one run at a time; nothing it did not write is overwritten or
removed)."""

import glob
import json
import os
import sys

from .checkpoint import exclusive_folder, remove_stale_temporaries, write_json_atomic

MANIFEST = "manifest.json"
NPZ = "samples.npz"
# Settings that decide the images; a resumed run must repeat them.
RESULT_KEYS = (
    "ckpt",
    "ckpt_sha256",
    "ema",
    "num",
    "steps",
    "seed",
    "batch_size",
    "classes",
    "vae",
    "vae_sha256",
    "vae_config",
    "scaling_factor",
    "shift_factor",
    "dtype",
    "model_config",
)
# How a refused resume names each of them: the option the user typed (``--raw`` is ema None),
# or for a setting read from a file, the option that gave the file.
FLAG_OF_SETTING = {
    "ckpt": "--ckpt",
    "ckpt_sha256": "--ckpt's sha256",
    "ema": "--ema/--raw",
    "num": "--num-samples",
    "steps": "--steps",
    "seed": "--seed",
    "batch_size": "--batch-size",
    "classes": "--classes",
    "vae": "--vae",
    "vae_sha256": "--vae's sha256",
    "vae_config": "--vae-config",
    "scaling_factor": "--scaling-factor",
    "shift_factor": "the VAE config's shift_factor",
    "dtype": "--dtype",
    "model_config": "--ckpt's model_config",
}
# Recorded since a later version: a manifest without it (an older set) is not compared on it.
# The VAE's weights hash, as the checkpoint's: a VAE replaced at the same path decodes otherwise.
# The VAE's shift too: one config's shift (not part of vae_sha256) decodes the same latents otherwise.
ADDED_KEYS = frozenset(("vae_sha256", "shift_factor"))
# What every manifest has held since the first version; older ones lack ckpt_sha256.
MANIFEST_KEYS = frozenset(("ckpt", "num", "complete"))
# The files a run writes with atomic_write, by folder: a kill mid-write leaves a temporary.
WRITTEN = {".": r"samples\.npz|manifest\.json", "shards": r"\d{6,}\.npz", "images": r"\d{6,}\.png"}


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, "shards", f"{k:06d}.npz")


def png_path(out: str, i: int) -> str:
    return os.path.join(out, "images", f"{i:06d}.png")


def check_out(out: str):
    """``out`` must be (or become) a directory: an existing file there or above is refused, and
    so is a folder holding files of ours without a readable manifest of ours (we would overwrite
    them, or mix unknown images into the set)."""
    existing = os.path.abspath(out)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(out) else f" ({existing} is)"
        raise ValueError(f"--out {out} must be a directory, but it is a file{where}: give a folder path")
    if os.path.exists(os.path.join(out, MANIFEST)):
        read_manifest(out)
    else:
        _refuse_unowned(out)


def hold_out(held, out: str):
    """Hold ``out`` until the ``contextlib.ExitStack`` ``held`` closes: two runs started together
    on a new folder would both find no manifest, both write one, and mix their images."""
    held.enter_context(exclusive_folder(out, "meanflow.generate", "--out"))


def _refuse_unowned(out: str):
    found = _our_file_names(out)
    if found:
        raise ValueError(
            f"--out {out} holds {found[0]} but no {MANIFEST}: meanflow.generate would overwrite or mix "
            "with files it did not record writing; use an empty or new --out"
        )


def _our_file_names(out: str) -> list:
    """Files in ``out`` with the names this program writes."""
    patterns = (NPZ, os.path.join("shards", "*.npz"), os.path.join("images", "*.png"))
    return [path for pattern in patterns for path in sorted(glob.glob(os.path.join(out, pattern)))]


def read_manifest(out: str) -> dict:
    """The settings recorded in ``out``'s manifest; a damaged or foreign file is a ValueError
    naming it, so that nothing of a folder we cannot identify is overwritten."""
    path = os.path.join(out, MANIFEST)
    try:
        with open(path, "rb") as f:
            manifest = json.load(f)
    except (ValueError, IsADirectoryError) as e:  # UnicodeDecodeError is a ValueError too
        reason = f"{type(e).__name__}: {e}"
    else:
        if isinstance(manifest, dict) and MANIFEST_KEYS <= manifest.keys():
            return manifest
        reason = f"a JSON {type(manifest).__name__} without {', '.join(sorted(MANIFEST_KEYS))}"
    raise ValueError(
        f"{path} is not a meanflow.generate manifest ({reason}): --out {out} was not written by "
        "meanflow.generate, or its manifest is damaged; use another --out"
    )


def write_manifest(out: str, settings: dict, **status):
    write_json_atomic(os.path.join(out, MANIFEST), {**settings, **status}, indent=2)


def prepare_out(out: str, settings: dict):
    """Rank 0's part, with ``out`` held: the folders, the manifest written or checked against
    ``settings``, and in a folder of ours the temporaries a killed run's writes left."""
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    resumed = os.path.exists(os.path.join(out, MANIFEST))
    problem = _check_manifest(out, settings)
    if problem:
        raise ValueError(problem)
    # Without a manifest, nothing says a temporary of the other files was ours; a run killed
    # while it wrote the first manifest left only that one's, which nothing else would remove.
    _remove_killed_writes(out, WRITTEN if resumed else {".": r"manifest\.json"})


def _remove_killed_writes(out: str, written: dict):
    """A killed run's temporary of samples.npz is as large as the set (~10 GB for 50k ImageNet
    images): remove the ones of the names we write; only a run holding ``out`` may."""
    stale = [
        path
        for folder, names in written.items()
        for path in remove_stale_temporaries(os.path.join(out, folder), names)
    ]
    if stale:
        listing = ", ".join(os.path.normpath(path) for path in stale)
        print(
            f"removed {len(stale)} {'temporary' if len(stale) == 1 else 'temporaries'} of writes a "
            f"killed run left: {listing}",
            file=sys.stderr,
            flush=True,
        )


def _check_manifest(out: str, settings: dict):
    """None when ``out`` is new or was made with ``settings``; else the reason it was not."""
    path = os.path.join(out, MANIFEST)
    try:
        if not os.path.exists(path):
            _refuse_unowned(out)  # again: files may have come while the checkpoint loaded
            write_manifest(out, settings, complete=False)
            return None
        old = read_manifest(out)
    except ValueError as e:
        return str(e)
    if old.get("ckpt_sha256") != settings["ckpt_sha256"]:
        return (
            f"{out} holds samples of checkpoint {old.get('ckpt')} with sha256 "
            f"{old.get('ckpt_sha256') or '(not recorded)'}, "
            f"but {settings['ckpt']} now has sha256 {settings['ckpt_sha256']}: the checkpoint changed "
            "(a live run's last.pt?), and its images would mix with the others; use another --out"
        )
    diff = [
        f"{FLAG_OF_SETTING.get(k, k)}: {old.get(k)!r} there, {settings[k]!r} now"
        for k in RESULT_KEYS
        if old.get(k) != settings[k] and (k in old or k not in ADDED_KEYS)
    ]
    if diff:
        return f"{out} was sampled with other settings ({'; '.join(diff)}): use another --out"
    return None
