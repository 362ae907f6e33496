"""Checkpoint files: atomic writes (a crash mid-write never corrupts the last good file) and
loading a trained DiT for sampling.

The data goes to a temporary file in the destination's directory (same filesystem), is
flushed and fsynced, and only then renamed over the destination with ``os.replace``
(atomic on POSIX); the directory is fsynced so the rename itself survives a power cut.
"""

import os
import shutil
import tempfile

import torch

from .models import DiT, DiTConfig


def _commit(tmp: str, path: str):
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, write) -> None:
    """``write(f)`` fills a binary file object that becomes ``path`` only once complete."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make checkpoints private
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: str, path: str) -> None:
    def write(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)

    atomic_write(path, write)


def load_for_sampling(path: str, ema: bool = True, device="cpu") -> DiT:
    """The DiT of a trainer checkpoint with its first EMA (or raw) weights, in eval mode."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = DiT(DiTConfig(**ckpt["model_config"])).to(device)
    model.load_state_dict(ckpt["ema"][0] if ema and ckpt["ema"] else ckpt["model"])
    return model.eval()
