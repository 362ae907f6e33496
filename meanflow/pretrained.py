"""Loading a DiT from whatever a user has: a ``save_pretrained`` directory, a
``meanflow.train`` checkpoint (a chosen EMA or the raw weights), an official DiT / SiT file.

The formats themselves live in ``meanflow.interchange`` (also the ``DiT`` methods
``save_pretrained`` / ``from_pretrained`` / ``from_official_dit``); the functions here are their
functional forms plus the trainer checkpoints, which only this module reads into a model.
"""

import os
import zipfile

from .checkpoint import load_torch_file
from .interchange import (  # noqa: F401 (the functional interface's names)
    CONFIG_NAME,
    FORMAT_VERSION,
    OFFICIAL_TIME_SCALES,
    WEIGHTS_NAME,
    check_state_dict,
    config_from_dict,
    convert_official_dit,
    looks_like_official_dit,
    official_dit_state_dict,
)
from .models import DiT


def save_pretrained(model: DiT, directory: str, state_dict: dict | None = None):
    """``model.save_pretrained(directory, state_dict)``."""
    model.save_pretrained(directory, state_dict)


def from_pretrained(directory: str, device="cpu", dtype=None, backend=None) -> DiT:
    """``DiT.from_pretrained``: the DiT saved by ``save_pretrained``, in eval mode."""
    return DiT.from_pretrained(directory, device=device, dtype=dtype, backend=backend)


def from_official_dit(
    path_or_state, num_heads=None, device="cpu", backend=None, family="dit", seed=0, **overrides
) -> DiT:
    """``DiT.from_official_dit``: an official DiT or SiT checkpoint as our DiT."""
    return DiT.from_official_dit(
        path_or_state, num_heads, device=device, backend=backend, family=family, seed=seed, **overrides
    )


# --------------------------------------------------------- trainer checkpoints


def load_trainer_checkpoint(path: str, ema: int | None = 0, device="cpu", backend=None) -> DiT:
    """The DiT of a ``meanflow.train`` checkpoint: EMA number ``ema`` (in ``ema_decays``
    order), or the raw weights for ``ema=None``; eval mode."""
    _check_ema(ema)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    # Memory-mapped where torch can (its zip format, every torch.save since 1.6): a full last.pt
    # is mostly AdamW moments and the other EMAs, never read here (10.8 GB for DiT-XL/2's,
    # of which one weight set, 2.7 GB, is used).
    ckpt = load_torch_file(path, mmap=zipfile.is_zipfile(path))
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or not ("model" in ckpt or "ema" in ckpt):
        hint = ""
        if isinstance(ckpt, dict) and looks_like_official_dit(ckpt):
            hint = " (it looks like an official DiT/SiT checkpoint: use DiT.from_official_dit)"
        have = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path} is not a meanflow.train checkpoint: needs keys 'model' or 'ema', and 'model_config', "
            f"has {have}{hint}"
        )
    model_class = ckpt["model_config"].get("model_class") if isinstance(ckpt["model_config"], dict) else None
    if model_class is not None:  # an adapter's checkpoint (meanflow/adapters.py); a DiT's names none
        raise ValueError(
            f"{path} holds a {model_class} model (trained with --model_class {model_class}), not a "
            "meanflow.DiT: rebuild it with meanflow.adapters.AdapterConfig(**ckpt['model_config']).build()"
        )
    model = DiT(config_from_dict(ckpt["model_config"], f"{path}['model_config']"), backend=backend)
    if ema is None:
        if "model" not in ckpt:
            raise ValueError(
                f"{path} holds EMA weights only (a kept checkpoint): pick an EMA, not the raw weights"
            )
        state, what = ckpt["model"], "model"
    else:
        emas = ckpt.get("ema") or []
        if not isinstance(ema, int) or not 0 <= ema < len(emas):
            decays = ckpt.get("ema_decays", [])
            raise ValueError(
                f"{path} has {len(emas)} EMA weight sets (decays {decays}); ema={ema!r} is not one of them"
            )
        state, what = emas[ema], f"ema[{ema}]"
    check_state_dict(model, state, f"{path}['{what}']")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_model(path: str, ema: int | None = 0, device="cpu", backend=None) -> DiT:
    """A pretrained directory or a trainer checkpoint file (``ema`` picks the weights there).
    A directory holds one set of weights, the one its export chose: asking it for the raw
    weights (``ema=None``) or another EMA is an error, not that set under another name."""
    _check_ema(ema)
    if os.path.isdir(path):
        if ema != 0:
            which = "raw weights" if ema is None else f"EMA {ema!r}"
            raise ValueError(
                f"{path} is a pretrained directory, holding the one set of weights its export chose: "
                f"it has no {which} to pick (--ema/--raw pick among a trainer checkpoint's weights; "
                "export that checkpoint with them instead)"
            )
        return from_pretrained(path, device=device, backend=backend)
    return load_trainer_checkpoint(path, ema=ema, device=device, backend=backend)


def _check_ema(ema) -> None:
    """``ema`` is an index or None. A bool is an int to Python: ``ema=True`` ("the EMA, please")
    would pick EMA 1, the second decay's, and ``ema=False`` EMA 0, both silently."""
    if isinstance(ema, bool) or not (ema is None or isinstance(ema, int)):
        raise ValueError(
            f"ema must be an EMA's index (0: the first of ema_decays) or None (the raw weights), got {ema!r}"
        )
