"""The order in which a sharded loader visits a data set, and its resumable position.

Every loader over a list of ``n`` samples (image folders, latent shards) follows the contract
of :mod:`meanflow.data`: epoch ``e`` is a permutation of ``range(n)`` drawn from
``(seed, e)``; global batch ``b`` is its ``b``-th slice of ``batch_size * world_size``
entries and rank ``k`` takes the ``k``-th part, so concatenating the ranks' batches gives
the one-rank batch and a run does not depend on the number of ranks. The random horizontal
flip of each sample is drawn from the same generator, so flips are also a function of the
seed only, and resuming at ``(epoch, position)`` reproduces the uninterrupted run exactly.
The ``n % global_batch`` samples left over at the end of a permutation are dropped for that
epoch (they are different samples every epoch; the trainer's ``build_loader`` warns when they
are a tenth of the data set or more).
"""

from collections.abc import Iterator

import numpy as np
import torch

from ..checks import check_int_at_least


class EpochPlan:
    """Which samples (and flips) rank ``rank`` of ``world_size`` reads in each epoch."""

    def __init__(self, num_samples, batch_size, rank=0, world_size=1, seed=0, shuffle=True, flip=True):
        check_int_at_least("batch_size", batch_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
        self.num_samples, self.batch_size, self.rank, self.world_size = (
            num_samples,
            batch_size,
            rank,
            world_size,
        )
        self.seed, self.shuffle, self.flip = seed, shuffle, flip
        self.global_batch = batch_size * world_size
        if self.global_batch > num_samples:
            # the trainer's batch_size is the global batch; a loader's own is per rank
            ranks = f" ({batch_size} per rank x {world_size} ranks)" if world_size > 1 else ""
            raise ValueError(
                f"batch_size {self.global_batch}{ranks} exceeds the {num_samples} samples of the data set"
            )
        self.batches_per_epoch = num_samples // self.global_batch
        self.left_out = num_samples - self.batches_per_epoch * self.global_batch  # per epoch

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(permutation int64 (n,), flips uint8 (n,))`` of the whole data set for ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = self.num_samples
        perm = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        flips = torch.randint(0, 2, (n,), generator=g) if self.flip else torch.zeros(n, dtype=torch.long)
        return perm.numpy(), flips.to(torch.uint8).numpy()

    def rank_order(self, epoch: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """This rank's ``(indices, flips)`` for batches ``start ..`` of ``epoch``, concatenated:
        ``(batches_per_epoch - start) * batch_size`` entries, batch after batch."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"position {start} outside [0, {self.batches_per_epoch}]")
        perm, flips = self.epoch_order(epoch)
        used = self.batches_per_epoch * self.global_batch
        shape = (self.batches_per_epoch, self.world_size, self.batch_size)
        mine = np.s_[start:, self.rank]
        return perm[:used].reshape(shape)[mine].reshape(-1), flips[:used].reshape(shape)[mine].reshape(-1)


class ShardedLoader:
    """Base of the sharded loaders: endless iteration over epochs, ``state_dict`` resume.

    Subclasses set ``num_classes``, ``channels``, ``image_size`` and implement
    ``_epoch(epoch, start, indices, flips)``, a generator of ``(x, y)`` batches for batches
    ``start ..`` of ``epoch`` (``indices``/``flips`` from :meth:`EpochPlan.rank_order`).
    """

    num_classes: int
    channels: int
    image_size: int
    # What each label id means (a class folder's name, a digit); a checkpoint records them, since
    # the same count of other names would shift every label of a resumed run without an error.
    class_names: list | None = None
    # Attributes with a resume state of their own (``state_dict(rank, world_size)``,
    # ``load_state_dict(state or None, rank, world_size)``), kept under their names: an image
    # loader's read-failure count, else a resumed epoch would count its failures from zero.
    resumable_parts: tuple = ()

    def __init__(self, num_samples, batch_size, rank, world_size, seed, flip=True, shuffle=True):
        self.plan = EpochPlan(num_samples, batch_size, rank, world_size, seed, shuffle=shuffle, flip=flip)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.num_samples = num_samples
        self.epoch, self.position = 0, 0  # position: global batches already yielded this epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.plan.batches_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            if self.position < self.plan.batches_per_epoch:
                indices, flips = self.plan.rank_order(self.epoch, self.position)
                for batch in self._epoch(self.epoch, self.position, indices, flips):
                    self.position += 1  # counted when handed out, not when prefetched
                    yield batch
            self.epoch, self.position = self.epoch + 1, 0

    def _epoch(self, epoch, start, indices, flips):
        raise NotImplementedError

    def _batch_stream(self):
        """This rank's ``(indices, flips)`` per batch from the current position on, endlessly
        (for one long-lived DataLoader: its workers start once, not every epoch)."""
        epoch, position, bs = self.epoch, self.position, self.batch_size
        while True:
            if position < self.plan.batches_per_epoch:
                indices, flips = self.plan.rank_order(epoch, position)
                for k in range(len(indices) // bs):
                    yield indices[k * bs : (k + 1) * bs], flips[k * bs : (k + 1) * bs]
            epoch, position = epoch + 1, 0

    def _advance(self) -> tuple[int, int]:
        """Count one batch handed out of a :meth:`_batch_stream`; its ``(epoch, position)``."""
        if self.position >= self.plan.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        self.position += 1
        return self.epoch, self.position - 1

    def state_dict(self) -> dict:
        rank, world = self.rank, self.world_size
        parts = {name: getattr(self, name).state_dict(rank, world) for name in self.resumable_parts}
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_samples": self.num_samples,
            **parts,
        }

    def load_state_dict(self, state: dict) -> None:
        n = state.get("num_samples", self.num_samples)
        if n != self.num_samples:
            import warnings

            warnings.warn(
                f"resuming a loader saved over {n} samples with {self.num_samples} now: the data set "
                "changed, so this epoch's order differs from the interrupted run",
                stacklevel=2,
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if "seed" in state:
            self.seed = self.plan.seed = int(state["seed"])
        if self.position > self.plan.batches_per_epoch:  # fewer batches per epoch than before
            self.epoch, self.position = self.epoch + 1, 0
        for name in self.resumable_parts:  # after the position: it may have moved to the next epoch
            getattr(self, name).load_state_dict(state.get(name), self.rank, self.world_size)
