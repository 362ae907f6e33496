"""The images and statistics ``meanflow.evaluate`` reads: an image folder (searched recursively),
an ``.npz`` (ADM's ``arr_0`` images and/or ``mu``/``sigma`` statistics) or a ``meanflow.generate``
output folder, each behind one :class:`ImageSet`.

A folder's images must be of one size, unless it is read with ``crop``: then every image goes
through the ADM center crop to ``crop x crop`` (``meanflow.data.image_folder.center_crop_arr``,
the crop the trainer and ``prepare_latents`` apply to a class-folder tree), which is how ADM
builds its reference batches from a data set of photos of any sizes. An image already
``crop x crop`` comes out unchanged (the crop of a square image of the target size is itself).
A folder read so that holds folders is the class-folder tree a model was trained on: its images
are the ones the trainer's scan keeps (``scan_image_folder``: other files, corrupt images and
broken links skipped, linked folders followed), so that the reference is the training data.
Any other folder is read as it is, and a file in it that is not an image is refused.
"""

import os
import zipfile

import numpy as np
import torch

from . import reference_stats
from .data.image_folder import IMAGE_EXTENSIONS, _class_folders, center_crop_arr, scan_image_folder, to_rgb


class ImageSet:
    """A uniform view of an image source: ``len``, ``batches(size)`` of uint8 ``(B, 3, H, W)``
    tensors, ``stats`` (precomputed ``mu``/``sigma`` or None) and ``stats_record`` (what made
    them, when the file says: ``meanflow.reference_stats``). ``crop``: read a folder's images
    through the ADM center crop to ``crop x crop`` (module docstring); only a folder takes it."""

    def __init__(self, path: str, role: str, crop: int | None = None):
        self.path, self.role, self.crop = path, role, crop
        self.files, self.array, self.stats, self.stats_record, self.npz = None, None, None, None, None
        self.index = None  # the trainer's scan of a class-folder tree read with crop
        self._first_size = None  # (file, (H, W)) of a folder's first image read
        if os.path.isdir(path):
            manifest = os.path.join(path, "manifest.json")
            npz = os.path.join(path, "samples.npz")
            if os.path.isfile(manifest) and os.path.isfile(npz):  # a meanflow.generate output
                self._load_npz(npz)
            elif os.path.isfile(manifest):
                # Its images are a part of the set (a run still going, or killed): scoring them
                # would give a number for another set than the one asked for.
                raise ValueError(
                    f"{role} {path} is an unfinished meanflow.generate output (no samples.npz yet): "
                    "wait for the run, or run the same meanflow.generate command again to finish it"
                )
            elif crop is not None and _class_folders(path)[0]:  # a tree, as the trainer's scan finds one
                self.index = scan_image_folder(path)
                self.files = [self.index.path(i) for i in range(len(self.index))]
            else:
                # a training tree's stray files are the trainer's to skip: say how to read it so
                tree = role == "reference" and crop is None
                self.files = list_images(path, role, TREE_ADVICE if tree else "")
        elif os.path.isfile(path) and path.endswith(".npz"):
            self._load_npz(path)
        elif os.path.exists(path):
            raise ValueError(f"{role} {path} is neither a directory of images nor an .npz file")
        else:
            raise FileNotFoundError(f"{role} {path} not found")
        if crop is not None and self.files is None:
            # an .npz holds images of one size already (or statistics, past any crop): cropping
            # them would be a resize of another data set than the one its author wrote
            raise ValueError(
                f"--ref-size {crop} center-crops the images of a folder; {role} {path} is an .npz "
                "(or a meanflow.generate output): leave --ref-size out"
            )

    def _load_npz(self, path):
        try:
            data = np.load(path)
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{self.role} {path} is not a readable .npz: {e}") from e
        with data:
            names = set(data.files)
            self.stats, self.stats_record = reference_stats.read(data, path, self.role)
        if "arr_0" in names:
            array = load_npz_member(path, "arr_0")
            if (
                array.dtype != np.uint8
                or array.ndim not in (3, 4)
                or (array.ndim == 4 and array.shape[-1] not in (1, 3))
            ):
                raise ValueError(
                    f"{self.role} {path}: arr_0 must be uint8 images (N, H, W, 3) or (N, H, W[, 1]), "
                    f"got {array.dtype} {array.shape}"
                )
            self.array = array
        if self.array is None and self.stats is None:
            raise ValueError(
                f"{self.role} {path} has neither images (arr_0) nor statistics (mu, sigma): {sorted(names)}"
            )
        self.npz = path

    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images the extractor gets: the crop's, the array's, or the folder's
        first image's (``batches`` refuses any other size in the folder); None without images."""
        if self.crop is not None:
            return self.crop, self.crop
        if self.array is not None:
            return tuple(int(d) for d in self.array.shape[1:3])
        if self.files:
            return image_size(self.files[0])
        return None

    @property
    def has_images(self) -> bool:
        return self.files is not None or self.array is not None

    def __len__(self):
        return (
            len(self.files) if self.files is not None else (len(self.array) if self.array is not None else 0)
        )

    def batches(self, size: int):
        n = len(self)
        for start in range(0, n, size):
            if self.array is not None:
                chunk = np.array(self.array[start : start + size])  # a writable copy
                if chunk.ndim == 3:
                    chunk = chunk[..., None]
            elif self.crop is not None:
                chunk = np.stack([read_image(f, self.crop) for f in self.files[start : start + size]])
            else:
                chunk = np.stack([self._read_same_size(f) for f in self.files[start : start + size]])
            x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            yield x.contiguous()

    def _read_same_size(self, path: str) -> np.ndarray:
        """``read_image(path)``, refused unless it has the size of the set's first image: one
        batch of mixed sizes cannot be stacked, and mixed sizes in separate batches would be
        scored or not by ``--batch-size``. A class-folder tree of photos, which the trainer
        and prepare_latents crop on the way, is such a folder: ``crop`` reads it as they do."""
        image = read_image(path)
        if self._first_size is None:
            self._first_size = (path, image.shape[:2])
        first, (h, w) = self._first_size
        if image.shape[:2] != (h, w):
            raise ValueError(
                f"{self.role} folder {self.path} holds images of different sizes ({first} is {w}x{h}, "
                f"{path} {image.shape[1]}x{image.shape[0]}): give images of one size, or center-crop "
                "a reference to the samples' size with --ref-size"
            )
        return image


def check_same_size(samples: ImageSet, reference: ImageSet) -> None:
    """Refuse reference images of another size than the samples': the extractor resizes every
    image to its input, so FID, precision/recall and KID between them would be numbers that
    nothing shows to mean nothing. ADM's reference batches are made at the samples' resolution
    (``VIRTUAL_imagenet256`` for 256x256 samples), and a folder can be brought to it with the
    training crop (``crop``)."""
    h, w = samples.image_size()
    rh, rw = reference.image_size()
    if (rh, rw) == (h, w):
        return
    if h != w:
        fix = f"give a reference of {w}x{h} images (the center crop of --ref-size is square)"
    elif reference.files is not None:
        fix = f"read it with --ref-size {w} (the ADM center crop to the samples' size, as training does)"
    else:
        fix = (
            f"give a reference of {w}x{h} images (ADM's batch at that resolution, or the image "
            f"folder with --ref-size {w})"
        )
    # a folder is measured by its first image (it may hold other sizes: the fix is the same)
    held = f"{rw}x{rh} images" if reference.files is None else f"images of {rw}x{rh} ({reference.files[0]})"
    raise ValueError(
        f"--ref {reference.path} holds {held} and the samples are {w}x{h}: FID, "
        f"precision/recall and KID between images of two sizes mean nothing, though the extractor "
        f"resizes both; {fix}"
    )


TREE_ADVICE = (
    ", or, if it is the class-folder tree a model was trained on, read it as the trainer does "
    "with --ref-size N (the samples' size), which skips them"
)


def list_images(directory: str, role: str, advice: str = "") -> list:
    """Image files under ``directory`` (recursive, sorted; hidden files skipped). Any other file
    is an error: a stray file in a sample or reference folder usually means the wrong folder
    (a training tree, which holds such files, is read with ``crop`` by the trainer's scan);
    ``advice`` ends its message after "move them away"."""
    images, others = [], []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(os.path.join(root, name))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(
            f"{role} folder {directory} holds files that are not images ({', '.join(IMAGE_EXTENSIONS)}): "
            f"{shown}: move them away{advice}"
        )
    if not images:
        raise ValueError(f"{role} folder {directory} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return images


def read_image(path: str, crop: int | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (gray and palette images converted, 16-bit gray scaled to 8 bits:
    ``to_rgb``), or with ``crop`` its ADM center crop ``(crop, crop, 3)``: converted first, as
    the trainer's ``load_image`` does, so that a reference holds the images training read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = to_rgb(image)
        return np.asarray(rgb) if crop is None else center_crop_arr(rgb, crop)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from e


def image_size(path: str) -> tuple[int, int]:
    """``(H, W)`` of an image file, from its header (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image: {e}") from e


def load_npz_member(path: str, name: str) -> np.ndarray:
    """An array of an ``.npz``, memory-mapped when stored uncompressed (``np.savez``), so that a
    50k-image file is not read into memory at once."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with np.load(path) as data:
                return data[name]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: corrupt zip member {name}.npy")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{path}: {name} holds Python objects")
        offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
