"""Data sources for the trainer, behind one interface (:class:`Loader`) and one factory.

A loader is an endless iterable of ``(x, y)`` batches already on the training device:
``x`` float ``(B, C, H, W)`` (pixels in [-1, 1], or latents), ``y`` long ``(B,)``, where ``B``
is the per-rank batch. Each global batch is one slice of a per-epoch permutation drawn from
the seed; rank ``k`` of ``n`` takes its ``k``-th part, so a run's data does not depend on the
number of ranks. ``state_dict()`` / ``load_state_dict()`` hold the exact position (epoch and
batch) for resume. Sources register a builder under a name with :func:`register_loader`.
"""

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Loader(Protocol):
    batch_size: int  # per rank
    num_classes: int  # 0 = unconditional
    channels: int
    image_size: int

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _mnist(config, rank, world_size, device):
    from .mnist import MNISTLoader

    return MNISTLoader(
        config.batch_size // world_size, rank, world_size, device, config.seed, config.data.path
    )


# name -> builder(config, rank, world_size, device); other sources (DALI, latents) add theirs.
LOADERS: dict[str, Callable] = {"mnist": _mnist}


def register_loader(name: str, builder: Callable) -> None:
    LOADERS[name] = builder


def build_loader(config, rank: int, world_size: int, device) -> Loader:
    """The loader for ``config.data.name`` (global batch ``config.batch_size``, ``config.seed``)."""
    if config.data.name not in LOADERS:
        raise ValueError(f"unknown data.name {config.data.name!r}; registered: {sorted(LOADERS)}")
    if config.batch_size % world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the world size {world_size}")
    return LOADERS[config.data.name](config, rank, world_size, device)
