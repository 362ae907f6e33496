"""Which training options define a run: a checkpoint resumes only under the same values of
them (``meanflow/train_state.py`` compares a checkpoint's saved config with the new one)."""

import os

# What a run trains: a checkpoint resumes only under the same values (the trainer checks the
# architecture too, from the checkpoint's model_config). Every other key may change on resume:
# steps, lr, warmup_steps, lr_schedule, grad_clip, the *_every cadences, device, precision,
# the data backend and workers. betas and weight_decay are here because a resume restores them
# from the optimizer state: a new value would silently not apply.
RUN_IDENTITY = (
    "model_class",
    "data.name",
    "data.path",
    "data.latent_mode",
    "loss",
    "batch_size",
    "seed",
    "ema_decays",
    "betas",
    "weight_decay",
)


def _flatten(values: dict, prefix="") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _defines_the_run(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUN_IDENTITY)


def _same(key: str, a, b) -> bool:
    if key == "data.path" and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    return a == b


def run_identity_changes(saved: dict, config) -> dict:
    """``{key: (saved value, config's value)}`` for the :data:`RUN_IDENTITY` keys where the
    config a checkpoint was saved with (``saved``, a ``to_dict()``) and ``config`` (a
    :class:`meanflow.config.TrainConfig`) differ. A key
    the saved config lacks (a checkpoint of an older trainer) is not compared."""
    old, new = _flatten(saved), _flatten(config.to_dict())
    return {
        key: (old[key], value)
        for key, value in new.items()
        if _defines_the_run(key) and key in old and not _same(key, old[key], value)
    }
