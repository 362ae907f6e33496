"""ImageNet-style class folders: a validating scan, the ADM center crop, and the torch loader.

Layout: ``ROOT/<class>/.../<image>``; the label of an image is the index of its class folder
among the sorted class-folder names (torchvision ``ImageFolder``'s rule, so ImageNet's
``n01440764`` is class 0). Files are found recursively below each class folder.

:func:`scan_image_folder` walks the tree once and opens every image with PIL (a reduced-size
JPEG decode, which still reads the whole entropy-coded stream, so truncated files fail):
files with other extensions, corrupt or truncated images and broken symlinks (a missing
target, or a link that points at itself) are skipped; grayscale, CMYK, palette and alpha
images are kept and converted to RGB when decoded (16-bit grayscale scaled to 8 bits, as DALI
does: :func:`to_rgb`). Everything is counted in
``FolderIndex.summary``. The verdicts are cached in a JSON file keyed by each file's size
and mtime, so a re-scan only opens new or changed files.

Symlinked folders are followed, but each real folder (its ``(st_dev, st_ino)``) is read once:
a link back up the tree (``a/self -> .``) would otherwise repeat its images until the path
grows too long. A class folder belongs to its own class even when another class links to
it; a folder linked from two classes (``a/x -> /shared``, ``b/x -> /shared``) is listed
under the first class in sorted order. The folders skipped this way are counted and named
(``repeated_folder``). Symlinked files are always listed: a file linked from two folders is
two samples, as in torchvision's ``ImageFolder``.

:func:`center_crop_arr` is the ADM/DiT center crop (guided-diffusion ``image_datasets.py``):
halve with a BOX filter while the short side is >= 2 * size, resize the short side to
``size`` with BICUBIC, crop the center. :class:`TorchImageLoader` (the fallback when DALI is
missing) uses it exactly; the DALI pipeline approximates it (see ``dali_images``).
"""

import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..checks import check_int_at_least
from .folder_identity import FolderIdentity
from .scan_cache import default_cache_path, read_scan_cache, write_scan_cache
from .sharding import ShardedLoader

# What both the DALI decoder and PIL read (GIF is not decoded by DALI).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm")
# What the scan skips, as counted in ``FolderIndex.summary`` (files named in its "examples").
SKIPPED = ("corrupt", "not_image", "broken_link")


@dataclass
class FolderIndex:
    """The valid images of a class-folder tree, in a fixed order (class, then path)."""

    root: str
    classes: list
    files: list  # paths relative to root
    labels: np.ndarray  # int64, index into classes
    summary: dict = field(default_factory=dict)
    sizes: np.ndarray | None = None  # int64 bytes of each file, as the scan found them

    def __len__(self) -> int:
        return len(self.files)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.files[i])

    def skipped_examples(self, kinds=SKIPPED) -> list:
        """The paths of the first (up to 20 per kind) files or folders the scan skipped as ``kinds``."""
        examples = self.summary.get("examples", {})
        # corrupt examples read "relpath: why"; a message names the files only
        return [e.split(": ", 1)[0] if k == "corrupt" else e for k in kinds for e in examples.get(k, [])]

    def describe(self) -> str:
        s = self.summary
        parts = [f"{s['images']} images in {len(self.classes)} classes under {self.root}"]
        skipped = [k for k in SKIPPED if s.get(k)]
        if skipped:
            parts.append(
                "skipped "
                + ", ".join(
                    f"{s[k]} {k.replace('_', ' ')} ({name_a_few(self.skipped_examples([k]), s[k])})"
                    for k in skipped
                )
            )
        if s.get("repeated_folder"):
            parts.append(
                f"{s['repeated_folder']} folders reached again through symlinks were read once "
                f"({name_a_few(self.skipped_examples(['repeated_folder']), s['repeated_folder'])})"
            )
        if s.get("converted"):
            parts.append(
                "converted to RGB: " + ", ".join(f"{v} {m}" for m, v in sorted(s["converted"].items()))
            )
        if s.get("empty_classes"):
            parts.append(f"{len(s['empty_classes'])} classes without images: {s['empty_classes'][:5]}")
        return "; ".join(parts)


def name_a_few(names, total: int | None = None, few: int = 3) -> str:
    """``"a, b, c and 5 more"``: the first ``few`` of ``names`` (of ``total`` in all) for a message."""
    shown = [str(n) for n in list(names)[:few]]
    rest = (len(names) if total is None else total) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


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


@dataclass
class _Walk:
    """What a walk of the class folders found: image candidates and what it skipped."""

    candidates: list = field(default_factory=list)  # (relpath, label, size, mtime_ns)
    not_image: list = field(default_factory=list)
    broken_link: list = field(default_factory=list)
    repeated_folder: list = field(default_factory=list)


def _class_folders(root: str) -> tuple[list, list, list]:
    """The sorted class-folder names under ``root``, its broken symlinks (a class folder linked
    from an unmounted disk must not vanish unnoticed: the labels after it would shift) and the
    images lying in ``root`` itself, which have no class and are not read."""
    classes, broken, loose = [], [], []
    for entry in os.scandir(root):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            classes.append(entry.name)
        elif entry.is_symlink() and not os.path.exists(entry.path):
            broken.append(entry.name)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
            loose.append(entry.name)
    return sorted(classes), sorted(broken), sorted(loose)


def _folder_key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _walk_classes(root: str, classes: list, found: _Walk) -> _Walk:
    """List the files below each class folder into ``found``, each real folder once (module
    docstring)."""
    owners = {}  # real folder -> the first class (sorted) whose folder it is
    for name in classes:
        owners.setdefault(_folder_key(os.stat(os.path.join(root, name))), name)
    seen = {_folder_key(os.stat(root)), *owners}  # class folders are read by their own class only
    for label, name in enumerate(classes):
        if owners[_folder_key(os.stat(os.path.join(root, name)))] != name:
            found.repeated_folder.append(name)
            continue
        _walk_folder(root, os.path.join(root, name), label, seen, found)
    return found


def _walk_folder(root: str, top: str, label: int, seen: set, found: _Walk) -> None:
    """Depth first below ``top`` in sorted order, a folder's files before its subfolders
    (``os.walk``'s order); folders already in ``seen`` are skipped and recorded."""
    pending = [top]
    while pending:
        subfolders = []
        for entry in sorted(os.scandir(pending.pop()), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            rel = os.path.relpath(entry.path, root)
            try:
                st = entry.stat()  # follows symlinks
            except OSError:  # a missing target, a link loop, or a file removed meanwhile
                found.broken_link.append(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                if _folder_key(st) in seen:
                    found.repeated_folder.append(rel)
                else:
                    seen.add(_folder_key(st))
                    subfolders.append(entry.path)
            elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                found.not_image.append(rel)
            else:
                found.candidates.append((rel, label, st.st_size, st.st_mtime_ns))
        pending.extend(reversed(subfolders))


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
    classes, broken_classes, loose = _class_folders(root)
    holds = f" (it holds {len(loose)} images directly: move them into class folders)" if loose else ""
    if not classes:
        raise ValueError(
            f"no class folders in {root!r}{holds}: expected ROOT/<class>/<image> (the ImageNet train layout)"
        )
    if loose:  # e.g. an unfinished move into class folders: the data set would silently shrink
        warnings.warn(
            f"ignoring {len(loose)} images directly under {root!r} ({name_a_few(loose, len(loose))}): "
            "an image needs a class folder, ROOT/<class>/<image>",
            stacklevel=2,
        )
    cache = default_cache_path(root) if cache == "auto" else cache
    cached = read_scan_cache(cache, root)

    found = _walk_classes(root, classes, _Walk(broken_link=broken_classes))
    candidates, not_image = found.candidates, found.not_image
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

    files, labels, sizes, corrupt, modes, formats = [], [], [], [], Counter(), Counter()
    for rel, label, size, _ in candidates:
        status, info, fmt = verdicts[rel]
        if status != "ok":
            corrupt.append((rel, info))
            continue
        files.append(rel)
        labels.append(label)
        sizes.append(size)
        modes[info] += 1
        formats[fmt] += 1
    if not files:  # before the cache is written: a folder of no use leaves nothing behind
        raise ValueError(
            f"no readable images under {root!r} ({len(corrupt)} corrupt, {len(not_image)} other files, "
            f"{len(found.broken_link)} broken links)"
        )
    if cache and (todo or set(cached) != {c[0] for c in candidates}):
        entries = {c[0]: [c[2], c[3], *verdicts[c[0]]] for c in candidates}
        write_scan_cache(cache, root, entries)
    counts = np.bincount(labels, minlength=len(classes))
    summary = {
        "images": len(files),
        "classes": len(classes),
        "corrupt": len(corrupt),
        "not_image": len(not_image),
        "broken_link": len(found.broken_link),
        "repeated_folder": len(found.repeated_folder),
        "converted": {m: n for m, n in sorted(modes.items()) if m != "RGB"},
        "formats": dict(sorted(formats.items())),
        "empty_classes": [classes[i] for i in np.flatnonzero(counts == 0)],
        "examples": {
            "corrupt": [f"{r}: {why}" for r, why in corrupt[:20]],
            "not_image": not_image[:20],
            "broken_link": found.broken_link[:20],
            "repeated_folder": found.repeated_folder[:20],
        },
        "scanned_now": len(todo),
    }
    if summary["empty_classes"]:
        warnings.warn(
            f"{len(summary['empty_classes'])} class folders under {root!r} hold no readable image "
            f"(kept as labels): {summary['empty_classes'][:10]}",
            stacklevel=2,
        )
    labels = np.asarray(labels, dtype=np.int64)
    return FolderIndex(root, classes, files, labels, summary, np.asarray(sizes, dtype=np.int64))


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


# The version of the rules by which both readers decode an image (to_rgb and the ADM crop here,
# DALI's decoder and resize in dali_images): bumped whenever an image decodes otherwise, so that
# prepare_latents never finishes a folder with other decodes than it began with (a manifest
# without it is version 1; 2: 16-bit grayscale scaled, EXIF orientation ignored by DALI too,
# DALI's resize rounded half to even as ADM's).
DECODE_VERSION = 2


def to_rgb(im):
    """A PIL image in RGB as DALI's decoder gives it. 16-bit grayscale (a PNG or TIFF: mode
    ``I;16``; a PGM: ``I``) is scaled to 8 bits, ``round(v * 255 / 65535)``: PIL's own
    conversion clips every value above 255, so most of such an image would come out white."""
    from PIL import Image

    if im.mode == "I" or im.mode.startswith("I;16"):
        levels = np.floor(np.asarray(im, dtype=np.float64) * (255 / 65535) + 0.5)
        im = Image.fromarray(levels.clip(0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


def load_image(path: str, image_size: int, flip: bool = False) -> torch.Tensor:
    """One image file -> float32 ``(3, size, size)`` in [-1, 1] (RGB, ADM center crop, optional flip)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = center_crop_arr(to_rgb(im), image_size)
    arr = arr[:, ::-1].copy() if flip else arr.copy()  # PIL's buffer is read-only
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1.0


class ImageReadError(ValueError):
    """Too many of a loader's images failed to read (removed or damaged after the scan). A
    ValueError: the command-line tools report it in one line, as they do other bad input."""


class ReadFailed(NamedTuple):
    """An image that could not be read: its position in the :class:`FolderIndex`, and why."""

    index: int
    reason: str


def read_sample(index: FolderIndex, i: int, image_size: int, flip: bool = False):
    """``(image, label, i)`` for image ``i`` of ``index``, or :class:`ReadFailed`."""
    try:
        return load_image(index.path(i), image_size, bool(flip)), int(index.labels[i]), i
    except Exception as e:  # PIL raises many kinds; a removed file raises FileNotFoundError
        return ReadFailed(i, f"{type(e).__name__}: {e}")


def collate_skipping(items):
    """Stack a batch of :func:`read_sample` items; each failed item is replaced by a good one of
    the same batch (its label too), so every rank still gets a full batch. Returns
    ``(x, y, failed)``: ``failed`` lists the :class:`ReadFailed` items, ``x``/``y`` are None
    when every item failed."""
    good = [it for it in items if not isinstance(it, ReadFailed)]
    failed = [it for it in items if isinstance(it, ReadFailed)]
    if not good:
        return None, None, failed
    filled = [good[k % len(good)] if isinstance(it, ReadFailed) else it for k, it in enumerate(items)]
    x = torch.stack([it[0] for it in filled])
    y = torch.tensor([it[1] for it in filled], dtype=torch.long)
    return x, y, failed


def unreadable_batch(index: FolderIndex, failed: list) -> str:
    """The message for a batch of which every image failed to read."""
    names = name_a_few([index.files[f.index] for f in failed[:3]], len(failed))
    return f"every image of a batch of {len(failed)} failed to read ({names}; {failed[0].reason})"


# Reads of a class in an epoch that may all fail before the class counts as unreadable (fewer
# for a class with fewer images): one failed read alone says little about a large class.
CLASS_UNREADABLE_READS = 4


class ReadFailureLog:
    """A loader's read failures per epoch: counted, warned, and an error past a limit.

    A failed image is replaced by another of its batch. The first failure of an epoch is warned
    at once, and the epoch's end sums them up (how many, which files). :class:`ImageReadError`
    stops the loader when more than ``max_fraction`` of the images this rank reads in an epoch
    fail, or at the end of an epoch in which every read of a class failed (at least
    ``min(class size, CLASS_UNREADABLE_READS)`` of them): that class would drop out of
    training. ``max_fraction=1`` never stops. ``total`` counts the failures of the whole run.
    """

    def __init__(self, index: FolderIndex, images_per_epoch: int, max_fraction: float = 0.01):
        if not 0 <= max_fraction <= 1:
            raise ValueError(f"max_read_failures must lie in [0, 1], got {max_fraction}")
        self.index, self.images_per_epoch, self.max_fraction = index, images_per_epoch, max_fraction
        self.class_sizes = np.bincount(index.labels, minlength=len(index.classes))
        self.total, self.epoch = 0, None

    def record(self, epoch: int, indices, failed: list, last_of_epoch: bool) -> None:
        """Count one batch (``indices`` read, ``failed`` among them) of ``epoch``."""
        if epoch != self.epoch:
            self._start(epoch)
        labels = self.index.labels
        self.reads += np.bincount(labels[np.asarray(indices)], minlength=len(self.class_sizes))
        for f in failed:
            self.class_failures[labels[f.index]] += 1
        self.failed += failed
        self.total += len(failed)
        if failed and len(self.failed) == len(failed):
            warnings.warn(
                f"epoch {epoch}: could not read {self.index.files[failed[0].index]} ({failed[0].reason}); "
                "replaced by another image of its batch (failures are summed up at the epoch's end)",
                stacklevel=3,
            )
        if len(self.failed) > self.max_fraction * self.images_per_epoch:
            raise ImageReadError(
                f"epoch {epoch}: {len(self.failed)} of the {self.images_per_epoch} images this rank "
                f"reads per epoch could not be read, more than max_read_failures={self.max_fraction} "
                f"allows ({self._names(self.failed)}); {self._advice()}"
            )
        if last_of_epoch:
            self._finish()

    def _start(self, epoch):
        self.epoch, self.failed = epoch, []
        self.reads = np.zeros(len(self.class_sizes), dtype=np.int64)
        self.class_failures = np.zeros_like(self.reads)

    def _finish(self):
        epoch, self.epoch = self.epoch, None
        if not self.failed:
            return
        warnings.warn(
            f"epoch {epoch}: {len(self.failed)} of the {int(self.reads.sum())} images read on this rank "
            f"failed to read and were replaced within their batch: {self._names(self.failed)}",
            stacklevel=4,
        )
        minimum = np.minimum(self.class_sizes, CLASS_UNREADABLE_READS)
        lost = np.flatnonzero(
            (self.reads > 0) & (self.reads >= minimum) & (self.class_failures == self.reads)
        )
        if len(lost) and self.max_fraction < 1:
            classes = [f"{self.index.classes[c]} ({self.reads[c]} reads)" for c in lost]
            raise ImageReadError(
                f"epoch {epoch}: every image read of class {name_a_few(classes)} failed, so it would "
                f"drop out of training ({self._names(self.failed)}); {self._advice()}"
            )

    def state_dict(self, rank: int, world_size: int) -> dict:
        """The run's count, and this rank's failures and reads of the epoch under way."""
        state = {"total": self.total, "rank": rank, "world_size": world_size, "epoch": self.epoch}
        if self.epoch is not None:
            failures = self.class_failures.tolist()
            state.update(failed=[list(f) for f in self.failed], reads=self.reads.tolist(), failures=failures)
        return state

    def load_state_dict(self, state: dict | None, rank: int, world_size: int) -> None:
        """Go on counting where ``state`` stopped, mid-epoch too: a resumed epoch is held to
        ``max_fraction`` of all its images. A state of another rank or world size (a checkpoint
        holds rank 0's), of another data set, or from before it was kept (None) starts at zero."""
        state = state or {}
        self.total, self.epoch = int(state.get("total", 0)), None
        if state.get("epoch") is None or (state["rank"], state["world_size"]) != (rank, world_size):
            return
        failed = [ReadFailed(int(i), str(why)) for i, why in state["failed"]]
        if len(state["reads"]) == len(self.class_sizes) and all(f.index < len(self.index) for f in failed):
            self._start(int(state["epoch"]))
            self.failed, self.reads[:], self.class_failures[:] = failed, state["reads"], state["failures"]

    def _names(self, failed):
        return name_a_few([self.index.files[f.index] for f in failed[:3]], len(failed))

    def _advice(self):
        return f"restore the files, or restart to re-scan {self.index.root} without them"


class _Samples(torch.utils.data.Dataset):
    """Items are ``(index, flip)`` pairs, read by :func:`read_sample`."""

    def __init__(self, index: FolderIndex, image_size: int):
        self.index, self.image_size = index, image_size

    def __len__(self):
        return len(self.index)

    def __getitem__(self, item):
        return read_sample(self.index, item[0], self.image_size, item[1])


def _collate_with_indices(items):
    """:func:`collate_skipping`'s ``(x, y, failed)`` and the indices of the batch's images."""
    indices = [it.index if isinstance(it, ReadFailed) else it[2] for it in items]
    return (*collate_skipping(items), indices)


class _Batches(torch.utils.data.Sampler):
    """A batch sampler over an endless stream of ``(indices, flips)`` batches."""

    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        for indices, flips in self.stream:
            yield list(zip(indices.tolist(), flips.tolist()))


class TorchImageLoader(FolderIdentity, ShardedLoader):
    """The :class:`meanflow.data.Loader` over an image folder with PIL + a torch DataLoader
    (no DALI): ADM center crop to ``image_size``, random horizontal flip, [-1, 1], labels; a
    checkpoint records which images (:class:`~meanflow.data.folder_identity.FolderIdentity`)."""

    channels = 3
    resumable_parts = ("read_failures",)

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, image_size=256,
                 num_workers=4, flip=True, index=None, cache="auto", scan_workers=None,
                 max_read_failures=0.01):  # fmt: skip
        check_int_at_least("image_size", image_size)
        self.index = index if index is not None else scan_image_folder(root, cache, scan_workers)
        super().__init__(len(self.index), batch_size, rank, world_size, seed, flip=flip)
        self.device, self.image_size, self.num_workers = torch.device(device), image_size, num_workers
        self.num_classes, self.class_names = len(self.index.classes), list(self.index.classes)
        self.read_failures = ReadFailureLog(self.index, len(self) * batch_size, max_read_failures)

    @property
    def failures(self) -> int:
        """Images of this run that failed to read (each replaced within its batch)."""
        return self.read_failures.total

    def __iter__(self):
        loader = torch.utils.data.DataLoader(
            _Samples(self.index, self.image_size),
            batch_sampler=_Batches(self._batch_stream()),
            num_workers=self.num_workers,
            collate_fn=_collate_with_indices,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.num_workers else None,
        )
        for x, y, failed, indices in loader:
            epoch, position = self._advance()
            self.read_failures.record(epoch, indices, failed, position == len(self) - 1)
            if x is None:
                raise ImageReadError(unreadable_batch(self.index, failed))
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
