"""ImageNet-style class folders: a validating scan, the ADM center crop, and the torch loader.

Layout: ``ROOT/<class>/.../<image>``; the label of an image is the index of its class folder
among the sorted class-folder names (torchvision ``ImageFolder``'s rule, so ImageNet's
``n01440764`` is class 0). Files are found recursively below each class folder.

:func:`scan_image_folder` walks the tree once and opens every image with PIL (a reduced-size
JPEG decode, which still reads the whole entropy-coded stream, so truncated files fail):
files with other extensions, corrupt or truncated images are skipped; grayscale, CMYK,
palette and alpha images are kept and converted to RGB when decoded. Everything is counted
in ``FolderIndex.summary``. The verdicts are cached in a JSON file keyed by each file's size
and mtime, so a re-scan only opens new or changed files.

:func:`center_crop_arr` is the ADM/DiT center crop (guided-diffusion ``image_datasets.py``):
halve with a BOX filter while the short side is >= 2 * size, resize the short side to
``size`` with BICUBIC, crop the center. :class:`TorchImageLoader` (the fallback when DALI is
missing) uses it exactly; the DALI pipeline approximates it (see ``dali_images``).
"""

import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checkpoint import cache_dir, write_json_atomic
from .sharding import ShardedLoader

# What both the DALI decoder and PIL read (GIF is not decoded by DALI).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
SCAN_VERSION = 1


@dataclass
class FolderIndex:
    """The valid images of a class-folder tree, in a fixed order (class, then path)."""

    root: str
    classes: list
    files: list  # paths relative to root
    labels: np.ndarray  # int64, index into classes
    summary: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.files[i])

    def describe(self) -> str:
        s = self.summary
        parts = [f"{s['images']} images in {len(self.classes)} classes under {self.root}"]
        skipped = {k: s[k] for k in ("corrupt", "not_image") if s.get(k)}
        if skipped:
            parts.append("skipped " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items()))
        if s.get("converted"):
            parts.append(
                "converted to RGB: " + ", ".join(f"{v} {m}" for m, v in sorted(s["converted"].items()))
            )
        if s.get("empty_classes"):
            parts.append(f"{len(s['empty_classes'])} classes without images: {s['empty_classes'][:5]}")
        return "; ".join(parts)


def check_image(path: str) -> tuple[str, str, str]:
    """``("ok", mode, format)`` when PIL decodes the whole file, else ``("corrupt", reason, "")``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode, fmt = im.mode, im.format or ""
            if fmt == "JPEG":  # a 1/8-scale DCT decode: fast, and still fails on truncation
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, DecompressionBombError, ...)
        return "corrupt", f"{type(e).__name__}: {e}", ""
    return "ok", mode, fmt


def _check_many(paths):
    return [check_image(p) for p in paths]


def default_cache_path(root: str) -> str:
    """``ROOT/.meanflow_scan.json`` where ROOT is writable, else one in :func:`cache_dir`."""
    root = os.path.abspath(root)
    if os.access(root, os.W_OK):
        return os.path.join(root, ".meanflow_scan.json")
    digest = hashlib.sha1(root.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"scan-{digest}.json")


def _read_cache(path, root):
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            cache = json.load(f)
        if cache.get("version") != SCAN_VERSION or cache.get("root") != root:
            return {}  # an older format, or the tree was moved: scan again
        return cache["entries"]
    except (OSError, ValueError, KeyError, AttributeError):
        warnings.warn(f"ignoring unreadable scan cache {path!r}", stacklevel=3)
        return {}


def scan_image_folder(root: str, cache: str | None = "auto", workers: int | None = None) -> FolderIndex:
    """Find, validate and label the images under ``root`` (see the module docstring).

    ``cache``: a JSON path, ``"auto"`` (:func:`default_cache_path`) or None (no cache).
    ``workers``: processes that open images (None: up to 8, 0: this process).
    """
    if not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    root = os.path.abspath(root)
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"image folder {root!r} is not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(
            f"no class folders in {root!r}: expected ROOT/<class>/<image> (the ImageNet train layout)"
        )
    cache = default_cache_path(root) if cache == "auto" else cache
    cached = _read_cache(cache, root)

    candidates, not_image = [], []  # (relpath, label, size, mtime_ns)
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, name), followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, fname), root)
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    not_image.append(rel)
                    continue
                st = os.stat(os.path.join(root, rel))
                candidates.append((rel, label, st.st_size, st.st_mtime_ns))

    todo = [c for c in candidates if cached.get(c[0], [None, None])[:2] != [c[2], c[3]]]
    verdicts = {rel: tuple(v[2:]) for rel, v in cached.items()}
    if todo:
        paths = [os.path.join(root, c[0]) for c in todo]
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        if workers > 1 and len(paths) > 256:
            from concurrent.futures import ProcessPoolExecutor

            chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]
            with ProcessPoolExecutor(workers) as pool:
                results = [r for chunk in pool.map(_check_many, chunks) for r in chunk]
        else:
            results = _check_many(paths)
        verdicts.update({c[0]: r for c, r in zip(todo, results)})

    files, labels, corrupt, modes, formats = [], [], [], Counter(), Counter()
    for rel, label, _, _ in candidates:
        status, info, fmt = verdicts[rel]
        if status != "ok":
            corrupt.append((rel, info))
            continue
        files.append(rel)
        labels.append(label)
        modes[info] += 1
        formats[fmt] += 1
    if cache and (todo or set(cached) != {c[0] for c in candidates}):
        entries = {c[0]: [c[2], c[3], *verdicts[c[0]]] for c in candidates}
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        write_json_atomic(cache, {"version": SCAN_VERSION, "root": root, "entries": entries})
    if not files:
        raise ValueError(
            f"no readable images under {root!r} ({len(corrupt)} corrupt, {len(not_image)} other files)"
        )
    counts = np.bincount(labels, minlength=len(classes))
    summary = {
        "images": len(files),
        "classes": len(classes),
        "corrupt": len(corrupt),
        "not_image": len(not_image),
        "converted": {m: n for m, n in sorted(modes.items()) if m != "RGB"},
        "formats": dict(sorted(formats.items())),
        "empty_classes": [classes[i] for i in np.flatnonzero(counts == 0)],
        "examples": {"corrupt": [f"{r}: {why}" for r, why in corrupt[:20]], "not_image": not_image[:20]},
        "scanned_now": len(todo),
    }
    if summary["empty_classes"]:
        warnings.warn(
            f"{len(summary['empty_classes'])} class folders under {root!r} hold no readable image "
            f"(kept as labels): {summary['empty_classes'][:10]}",
            stacklevel=2,
        )
    return FolderIndex(root, classes, files, np.asarray(labels, dtype=np.int64), summary)


# ----------------------------------------------------------------------------- ADM crop


def center_crop_arr(pil_image, image_size: int) -> np.ndarray:
    """The ADM/DiT center crop of a PIL image -> uint8 ``(size, size, 3)`` (module docstring)."""
    from PIL import Image

    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.asarray(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return arr[top : top + image_size, left : left + image_size]


def load_image(path: str, image_size: int, flip: bool = False) -> torch.Tensor:
    """One image file -> float32 ``(3, size, size)`` in [-1, 1] (RGB, ADM center crop, optional flip)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = center_crop_arr(im.convert("RGB"), image_size)
    arr = arr[:, ::-1].copy() if flip else arr.copy()  # PIL's buffer is read-only
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1.0


class _Samples(torch.utils.data.Dataset):
    """Items are ``(index, flip)`` pairs; a file that fails to decode gives ``None``."""

    def __init__(self, index: FolderIndex, image_size: int):
        self.index, self.image_size = index, image_size

    def __len__(self):
        return len(self.index)

    def __getitem__(self, item):
        i, flip = item
        try:
            return load_image(self.index.path(i), self.image_size, bool(flip)), int(self.index.labels[i])
        except Exception:
            return None


def collate_skipping(items):
    """Stack a batch; each failed item is replaced by a good one of the same batch (labels too),
    so every rank still gets a full batch. Returns ``(x, y, failures)``."""
    good = [it for it in items if it is not None]
    if not good:
        raise RuntimeError(f"every image of a batch of {len(items)} failed to decode")
    filled = [it if it is not None else good[k % len(good)] for k, it in enumerate(items)]
    x = torch.stack([it[0] for it in filled])
    y = torch.tensor([it[1] for it in filled], dtype=torch.long)
    return x, y, len(items) - len(good)


class _Batches(torch.utils.data.Sampler):
    """A batch sampler over an endless stream of ``(indices, flips)`` batches."""

    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        for indices, flips in self.stream:
            yield list(zip(indices.tolist(), flips.tolist()))


class TorchImageLoader(ShardedLoader):
    """The :class:`meanflow.data.Loader` over an image folder with PIL + a torch DataLoader
    (no DALI): ADM center crop to ``image_size``, random horizontal flip, [-1, 1], labels."""

    channels = 3

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, image_size=256,
                 num_workers=4, flip=True, index=None, cache="auto", scan_workers=None):  # fmt: skip
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.index = index if index is not None else scan_image_folder(root, cache, scan_workers)
        super().__init__(len(self.index), batch_size, rank, world_size, seed, flip=flip)
        self.device, self.image_size, self.num_workers = torch.device(device), image_size, num_workers
        self.num_classes = len(self.index.classes)
        self.failures = 0  # images that failed to decode (replaced within their batch)

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            _Samples(self.index, self.image_size),
            batch_sampler=_Batches(self._batch_stream()),
            num_workers=self.num_workers,
            collate_fn=collate_skipping,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
        )
        for x, y, failed in loader:
            self._advance()
            self.failures += failed
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _Paths(torch.utils.data.Dataset):
    def __init__(self, paths, image_size):
        self.paths, self.image_size = paths, image_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return load_image(self.paths[i], self.image_size), True
        except Exception:
            return torch.zeros(3, self.image_size, self.image_size), False


def iterate_files(paths, image_size, batch_size, device="cpu", num_workers=4):
    """PIL counterpart of :func:`meanflow.data.dali_images.iterate_files`: ``paths`` in order
    (ADM center crop, no flip) -> ``(x (n, 3, size, size) on device, ok bool (n,))`` chunks."""
    loader = torch.utils.data.DataLoader(
        _Paths(list(paths), image_size), batch_size=batch_size, num_workers=num_workers
    )
    for x, ok in loader:
        yield x.to(device), ok
