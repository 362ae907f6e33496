"""What a training run keeps between processes (docs/design.md section 5): the random
states, the checkpoint it writes (``last.pt``, kept ``ckpt_<step>.pt``) and how a run
resumes from one, and the output folder's first writes.

A checkpoint is ``{model, ema, ema_decays, opt, config, model_config, step, data, classes,
data_identity, rng, world_size}``: the DiT trainer's ``{model, ema, opt, args, step}`` plus what
an exact resume needs (data position, every rank's random states), what each label id meant
(``classes``: a resume onto other class names is refused; an export names its classes by them)
and how the data was made (``data_identity``: a latent folder's VAE, reader and crop, MNIST's
hash; a resume onto data made otherwise is refused, and sampling and export check their VAE
against it).
``model_config`` is the model's ``config``: a ``DiTConfig``, or an adapter's ``AdapterConfig``
(class and constructor keywords, which rebuild it: ``meanflow/adapters.py``).
"""

import dataclasses
import os
import random
import re

import numpy as np
import torch

from .checkpoint import (
    atomic_copy,
    atomic_save,
    exclusive_folder,
    load_torch_file,
    refuse_directory,
    refuse_symlink,
    remove_stale_temporaries,
    write_json_atomic,
)
from .config import TrainConfig
from .data import run_config_dict
from .distributed import gather, on_rank0
from .run_identity import run_identity_changes

# What main() reads from a checkpoint to resume a run.
CHECKPOINT_KEYS = ("model", "ema", "opt", "data", "rng", "step", "config", "model_config")
# What a kept ckpt_<step>.pt holds unless keep_full: the EMA weights sampling and export read,
# a quarter of a last.pt with one EMA (no AdamW moments; raw weights only without an EMA,
# kept_state). DiT-XL/2 in fp32:
# 2.7 GB a kept checkpoint per EMA decay, where last.pt is 10.8 GB.
SAMPLING_KEYS = ("ema", "ema_decays", "config", "model_config", "step", "classes", "data_identity")
# The files of a run that atomic_write writes: a kill -9 mid-write leaves a temporary of each.
RUN_FILES = r"last\.pt|ckpt_\d{7,}\.pt|config\.json|metrics\.jsonl"
KEPT_NAME = re.compile(r"ckpt_(\d{7,})\.pt")  # ckpt_{step:07d}.pt


def rng_state(device):
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_global_rngs(seed: int, step: int, rank: int) -> None:
    """Seed rank ``rank``'s torch, numpy and python generators for a run of ``seed`` starting
    at ``step``: a SeedSequence of the three, so no two ranks (nor two runs whose seeds differ
    by a rank) share a stream."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint32)
    derived = int(state[0]) << 32 | int(state[1])
    torch.manual_seed(derived)
    np.random.seed(int(state[0]))
    random.seed(derived)


def restore_rngs(rngs: list, seed: int, step: int, rank: int, world: int, device) -> None:
    """Rank ``rank``'s own saved states when the checkpoint was written by ``world`` ranks.
    Under another world size no saved stream belongs to this rank (one copied to every rank
    would give all of them the same dropout masks), so each takes a fresh one from
    ``(seed, step, rank)``: the same for any world size."""
    if len(rngs) == world:
        set_rng_state(rngs[rank], device)
    else:
        seed_global_rngs(seed, step, rank)


def load_checkpoint(path: str, model, device, config: TrainConfig) -> dict:
    """Read ``path`` and check it holds this run (:func:`check_same_run`: model_class first) and
    this architecture; raises before anything is written."""
    ckpt = load_torch_file(path, map_location=device)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path!r} is not a meanflow.train checkpoint")
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        ema_only = set(ckpt) <= set(SAMPLING_KEYS)
        kept = " (a kept checkpoint holds the EMA weights only unless keep_full is set)" if ema_only else ""
        raise ValueError(
            f"checkpoint {path!r} lacks the key(s) {', '.join(missing)}: it cannot resume a run{kept}"
        )
    check_same_run(ckpt, path, config)
    want, got = dataclasses.asdict(model.config), ckpt["model_config"]
    diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if diff:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"checkpoint {path!r} is for another model ({listing}); use another out_dir or the "
            f"matching --model / --model_kwargs"
        )
    return ckpt


def check_same_run(ckpt: dict, path: str, config: TrainConfig) -> None:
    """Refuse a checkpoint saved with other values of the keys that define a run."""
    changes = run_identity_changes(ckpt["config"], config)
    if changes:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in changes.items())
        raise ValueError(
            f"checkpoint {path!r} is for another run ({listing}); use another out_dir or the checkpoint's "
            f"values (steps, lr, warmup_steps, lr_schedule, grad_clip and the *_every cadences may change "
            f"on resume)"
        )


def restore(ckpt: dict, path: str, model, emas, opt, loader, rank: int, world: int, device, seed: int) -> int:
    """Load a checkpoint's states into the run; returns its step. A state that does not fit
    (a key missing inside it, other parameters) is a one-line ValueError naming the file."""
    if len(ckpt["ema"]) != len(emas):
        raise ValueError(f"checkpoint {path!r} has {len(ckpt['ema'])} EMAs, this run {len(emas)} ema_decays")
    try:
        model.load_state_dict(ckpt["model"])
        for ema, state in zip(emas, ckpt["ema"]):
            ema.load_state_dict(state)
        load_optimizer_state(opt, ckpt["opt"])
        check_same_classes(ckpt.get("classes"), getattr(loader, "class_names", None))
        check_same_data(ckpt.get("data_identity"), loader)
        loader.load_state_dict(loader_state(ckpt, rank, world))
        step = int(ckpt["step"])
        restore_rngs(ckpt["rng"], seed, step, rank, world, device)
        return step
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        # load_state_dict's messages span several lines; a KeyError's is only the key.
        reason = f"missing key {e}" if isinstance(e, KeyError) else " ".join(str(e).split())
        raise ValueError(f"checkpoint {path!r} does not fit this run: {reason}") from e


def loader_state(ckpt: dict, rank: int, world: int) -> dict:
    """This rank's saved data-loader state: its own where the checkpoint holds every rank's
    (a loader's mid-epoch read-failure count is its rank's), else rank 0's (the data position
    every rank shares; a rank's own parts then start afresh)."""
    ranks = ckpt.get("data_ranks")
    return ranks[rank] if ranks and len(ranks) == world else ckpt["data"]


def check_same_classes(recorded: list | None, now: list | None) -> None:
    """A ValueError unless the data's label ids mean what they meant when the checkpoint was
    written (a checkpoint of an older version, or a loader without names, records none)."""
    if recorded is None or now is None or list(recorded) == list(now):
        return
    if len(recorded) != len(now):
        change = f"it had {len(recorded)} classes, now {len(now)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(recorded, now)) if a != b)
        change = f"label {i} was class {recorded[i]!r}, now {now[i]!r}"
    raise ValueError(
        f"the data's classes changed since it was written ({change}): resumed, every label would "
        "mean another class; resume with the data the run trained on, or start a new out_dir"
    )


def check_same_data(recorded: dict | None, loader) -> None:
    """A ValueError unless the data was made as it was when the checkpoint was written (a
    latent folder prepared again at the same path with another VAE, reader or crop size,
    other images in MNIST's files, or an image folder with images replaced or renamed: the
    same count of the same classes, other data). A checkpoint of an older version, or a
    loader that records nothing, is not compared."""
    if recorded is None or not hasattr(loader, "data_changes"):
        return
    changes = loader.data_changes(recorded)
    if changes:
        raise ValueError(
            f"the data at data.path changed since it was written ({'; '.join(changes)}): "
            "resumed, the run would mix two kinds of data; resume with the data the run trained on, "
            "or start a new out_dir"
        )


# How this run's optimizer computes, not what it learned: a checkpoint written with CUDA graphs
# on (capturable) resumes with them off, on the CPU too, and the other way round.
OPTIMIZER_IMPLEMENTATION = ("capturable", "fused", "foreach", "differentiable")


def load_optimizer_state(opt, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping this run's implementation flags and learning rate
    (a float, or the device tensor a CUDA-graphed step reads)."""
    keep = [{k: g[k] for k in (*OPTIMIZER_IMPLEMENTATION, "lr") if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, kept in zip(opt.param_groups, keep):
        group.update(kept)


def resume(config: TrainConfig, model, emas, opt, loader, rank, world, device):
    """``(step, the checkpoint read or None)``: the run continues from ``config.resume``
    (``auto``: ``out_dir/last.pt`` when it exists), checked whole before anything is loaded
    or written, so a bad checkpoint changes nothing."""
    last = os.path.join(config.out_dir, "last.pt")
    path = last if config.resume == "auto" else config.resume
    if config.resume != "auto":
        if os.path.isdir(path):
            where = os.path.join(path, "last.pt")
            raise ValueError(f"resume {path!r} is a directory; a run resumes from a file, e.g. {where!r}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"resume checkpoint {path!r} does not exist")
        refuse_replacing_another_run(last, path, config)
        refuse_replacing_later_steps(last, path, config)
    if not os.path.isfile(path):
        refuse_starting_over_kept(config.out_dir)
        return 0, None
    ckpt = load_checkpoint(path, model, device, config)
    step = restore(ckpt, path, model, emas, opt, loader, rank, world, device, config.seed)
    if rank == 0:
        keep_missing(config, step, ckpt, path)
    return step, path


def kept_path(out_dir: str, step: int) -> str:
    return os.path.join(out_dir, f"ckpt_{step:07d}.pt")


def kept_checkpoints(out_dir: str) -> list[str]:
    """The kept ``ckpt_<step>.pt`` files in ``out_dir``, the oldest step first."""
    if not os.path.isdir(out_dir):
        return []
    steps = sorted(int(m.group(1)) for m in map(KEPT_NAME.fullmatch, os.listdir(out_dir)) if m)
    return [kept_path(out_dir, step) for step in steps]


def refuse_starting_over_kept(out_dir: str) -> None:
    """A run that starts at step 0 would replace the kept checkpoints of an earlier run in its
    out_dir (one whose last.pt was removed or never copied there): refused, naming them."""
    kept = kept_checkpoints(out_dir)
    if kept:
        raise ValueError(
            f"out_dir {out_dir!r} holds kept checkpoints ({os.path.basename(kept[0])} .. "
            f"{os.path.basename(kept[-1])}) but no last.pt: a new run there would replace them; "
            f"resume one (--resume {kept[-1]}, if written with keep_full) or use another out_dir"
        )


def keep_missing(config: TrainConfig, step: int, ckpt: dict, path: str) -> None:
    """Write the ``ckpt_<step>.pt`` of the resumed ``step`` when it is due and missing: a run
    killed (or out of disk) after its last.pt and before this copy would otherwise never
    keep that step, since the resumed run writes its next kept checkpoint later."""
    kept = kept_path(config.out_dir, step)
    if not keeps(config, step) or os.path.lexists(kept):
        return
    write_kept(config, kept, ckpt, path)
    print(f"wrote {kept}: the run that reached step {step} stopped before keeping it", flush=True)


def keeps(config: TrainConfig, step: int) -> bool:
    """Whether ``step`` has a kept ``ckpt_<step>.pt`` (``keep_every``)."""
    return bool(config.keep_every) and step % config.keep_every == 0


def write_kept(config: TrainConfig, kept: str, state: dict, full: str) -> None:
    """The kept checkpoint ``kept`` of ``state``, whose full checkpoint is the file ``full``:
    a copy of it with ``keep_full``, else :func:`kept_state`."""
    if config.keep_full:
        atomic_copy(full, kept)
    else:
        atomic_save(kept_state(state), kept)


def kept_state(state: dict) -> dict:
    """What a kept checkpoint holds unless keep_full: the :data:`SAMPLING_KEYS` (an older
    trainer's checkpoint may lack classes and data_identity), and for a run without EMAs its
    raw weights, the only ones it has (its sample grids use them too)."""
    keys = SAMPLING_KEYS if state["ema"] else (*SAMPLING_KEYS, "model")
    return {k: state[k] for k in keys if k in state}


def refuse_replacing_another_run(last: str, path: str, config: TrainConfig) -> None:
    """A run resumed from ``path`` writes ``last``, the out_dir's ``last.pt`` (or, where there
    is none, its kept checkpoints): refused when that holds another run (the same run may go
    back to an earlier checkpoint of its own)."""
    what = "the last.pt"
    if not os.path.isfile(last):
        kept = kept_checkpoints(config.out_dir)
        if not kept:
            return
        last, what = kept[-1], f"the kept {os.path.basename(kept[-1])}"
    if os.path.samefile(last, path):
        return
    saved = load_torch_file(last, mmap=True)  # its config only: the tensors stay on disk
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)):
        raise ValueError(f"{last!r} is not a meanflow.train checkpoint: resuming {path!r} would replace it")
    changes = run_identity_changes(saved["config"], config)
    if changes:
        listing = ", ".join(f"{k}: {a!r} there vs {b!r} here" for k, (a, b) in changes.items())
        raise ValueError(
            f"out_dir {config.out_dir!r} holds {what} of another run ({listing}): resuming "
            f"{path!r} there would replace it; use another out_dir"
        )


def refuse_replacing_later_steps(last: str, path: str, config: TrainConfig) -> None:
    """Going back to an earlier checkpoint of the run in out_dir would replace what that run
    wrote after it (its last.pt, its kept checkpoints of later steps) as the resumed run
    reaches them: refused, naming them; the user moves them away or branches into a new
    out_dir, and nothing is lost by a resume."""
    saved = load_torch_file(path, mmap=True)  # its step only: the tensors stay on disk
    if not (isinstance(saved, dict) and isinstance(saved.get("step"), int)):
        return  # load_checkpoint names what is wrong with it
    step, later = saved["step"], []
    if os.path.isfile(last) and not os.path.samefile(last, path):
        last_step = load_torch_file(last, mmap=True).get("step")
        if isinstance(last_step, int) and last_step > step:
            later.append(f"last.pt at step {last_step}")
    later += [
        os.path.basename(kept)
        for kept in kept_checkpoints(config.out_dir)
        if int(KEPT_NAME.fullmatch(os.path.basename(kept)).group(1)) > step
    ]
    if later:
        raise ValueError(
            f"out_dir {config.out_dir!r} holds what its run wrote after step {step} ({', '.join(later)}): "
            f"resuming {path!r} there would replace it; to go back, move those files out of "
            f"out_dir first; to branch, resume into a new --out_dir"
        )


def exclusive_out_dir(out_dir: str):
    """Hold ``out_dir`` for one trainer (:func:`exclusive_folder`): a second one started on it
    would resume from the first one's checkpoint while that run goes on."""
    return exclusive_folder(out_dir, "meanflow.train", "out_dir")


def prepare_out_dir(config: TrainConfig) -> None:
    """Check the files a run writes can be written (no directory, no symbolic link where one
    belongs), remove what killed checkpoint writes left, then write ``config.json``."""
    out_dir = config.out_dir
    for name in ("last.pt", "config.json", "metrics.jsonl"):
        refuse_directory(os.path.join(out_dir, name))
    refuse_symlink(os.path.join(out_dir, "metrics.jsonl"))  # appended to: a link would be followed
    for stale in remove_stale_temporaries(out_dir, RUN_FILES):
        print(f"removed {stale}: the temporary of a checkpoint write that did not finish", flush=True)
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "config.json"), run_config_dict(config), indent=2)


def kept_message(good) -> str:
    """What a diverged run says about ``good``, the last good ``(checkpoint, step)`` or None."""
    if good is None:
        return "no checkpoint was written"
    where, at = good
    return f"{where} (step {at}) is kept; resume from it with a lower lr or a tighter grad_clip"


def save_checkpoint(config: TrainConfig, step: int, model, emas, opt, loader, rank, world, device, good):
    """Write ``last.pt`` (rank 0; every rank takes part, and fails with it) and, every
    ``keep_every`` steps, a copy ``ckpt_<step>.pt``; returns the new last good ``(checkpoint,
    step)``. NaN or inf weights never replace the last good checkpoint ``good`` (every rank
    holds the same weights, so every rank stops here alike)."""
    weights = [p for m in (model, *emas) for p in m.parameters()]
    if not torch.stack([torch.isfinite(p).all() for p in weights]).all():
        raise FloatingPointError(f"step {step}: the weights hold NaN or inf (diverged): {kept_message(good)}")
    rngs, loader_states = zip(*gather(world, (rng_state(device), loader.state_dict())))
    on_rank0(
        rank, world, _write_checkpoint, config, step, model, emas, opt, loader, loader_states, rngs, world
    )
    return os.path.join(config.out_dir, "last.pt"), step


def _write_checkpoint(config: TrainConfig, step: int, model, emas, opt, loader, loader_states, rngs, world):
    state = {
        "model": model.state_dict(),
        "ema": [ema.state_dict() for ema in emas],
        "ema_decays": list(config.ema_decays),
        "opt": opt.state_dict(),
        "config": config.to_dict(),
        "model_config": dataclasses.asdict(model.config),
        "step": step,
        "data": loader_states[0],
        "data_ranks": list(loader_states),
        "classes": getattr(loader, "class_names", None),
        "data_identity": getattr(loader, "data_identity", None),
        "rng": list(rngs),
        "world_size": world,
    }
    last = os.path.join(config.out_dir, "last.pt")
    atomic_save(state, last)
    if keeps(config, step):
        write_kept(config, kept_path(config.out_dir, step), state, last)
