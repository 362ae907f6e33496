"""NVIDIA DALI pipeline for ImageNet-style class folders (``pip install nvidia-dali-cuda130``).

One pipeline per rank and epoch: ``fn.readers.file`` reads this rank's shard of the epoch's
seeded permutation (:class:`~meanflow.data.sharding.EpochPlan`) in order, the decoder turns
JPEG/PNG/... into RGB (``mixed`` = nvJPEG/GPU decode when the loader's device is a GPU, the
CPU decoder otherwise; grayscale and CMYK come out as RGB; an EXIF orientation tag is
ignored, as PIL ignores it), then the ADM center crop, the random horizontal flip and the
scaling to [-1, 1] (``crop_mirror_normalize``, CHW float32).
The flip bit of each sample travels in its reader label (``label = 2 * class + flip``), so
flips are drawn from the seed like the order and a resumed run is identical. Building a
pipeline takes milliseconds, so a new one per epoch (and on resume, from the position) is
cheap and no sample is read twice.

ADM center crop in DALI (:func:`~meanflow.data.image_folder.center_crop_arr` is the
reference): PIL's steps, BOX halvings while the short side is >= 2 * size (one axis per
pass, in float, rounded half up to uint8 as PIL rounds; linear without antialiasing at scale
2 is exactly the 2-pixel box at an even side), then the antialiased cubic resize (PIL's
BICUBIC) to ADM's ``round(side * scale)``, then ADM's integer crop offsets ``(side - size) //
2`` (DALI's ``crop_pos=0.5`` would round half-pixel offsets up). The cubic step is one resize
in the training loader, and PIL's two passes with uint8 rounding in between with
``exact=True`` (:func:`iterate_files`, which ``prepare_latents`` uses: half the CPU
throughput). Measured against PIL on noisy synthetic PNGs and JPEGs of 24x40 to 521x777
(``tests/meanflow/test_latent_provenance.py`` bounds it), in levels of 255, exact (loader):
without a halving or with halvings at even sides only, max 1-3 (1-6) and mean <= 0.05
(~0.2); a halving at an odd side (PIL's box then averages 3 pixels once, at a place set by
float rounding; DALI's antialiased linear filter stands in) max 4-6, mean 0.6-1.3, and up to
max 24, mean 3 when the odd halving lands just above the final size (521x777 to 256: the
cubic step then hardly smooths it). The single antialiased cubic resize of earlier versions
was at mean 0.7-3.6 wherever ADM halves. On a GPU, nvJPEG's decode adds its own differences.

A read error at run time (a file removed or damaged after the scan, or one the PIL pre-scan
accepted but DALI cannot decode) does not stop training by itself: that batch is run again by a
pipeline over its own files (DALI reads ahead, so the error may be a later batch's), and if it
fails there too it is decoded with PIL instead, as
:class:`~meanflow.data.image_folder.TorchImageLoader` reads it (an image PIL cannot read either
is replaced by another of the same batch, with its label); the pipeline is rebuilt after it.
Both loaders count, warn and stop on read failures alike
(:class:`~meanflow.data.image_folder.ReadFailureLog`, ``max_read_failures``).
"""

import os
import warnings

import numpy as np
import torch

from ..checks import check_int_at_least
from .folder_identity import FolderIdentity
from .image_folder import (
    FolderIndex,
    ImageReadError,
    ReadFailureLog,
    collate_skipping,
    load_image,
    read_sample,
    scan_image_folder,
    unreadable_batch,
)
from .sharding import ShardedLoader

# nvJPEG scratch sizes from DALI's ImageNet examples: avoids reallocations on large JPEGs.
_MIXED_PADDING = dict(device_memory_padding=211_025_920, host_memory_padding=140_544_512)


def check_dali_names(index: FolderIndex, instead: str) -> None:
    """DALI takes file names as UTF-8 text: one that is not (undecodable bytes, an old archive's
    latin-1, in the image's name or in a folder above it, the root's too) is refused here,
    naming it and what to do ``instead``, rather than failing inside the pipeline."""
    for rel in index.files:
        path = os.path.join(index.root, rel)
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"image {os.fsencode(path)!r} has a name that is not UTF-8, "
                f"which the DALI reader cannot open: rename it, or {instead}"
            ) from None


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def dali_device_id(device) -> int | None:
    """The CUDA ordinal for a cuda ``device`` (GPU decode), None for the CPU-only pipeline."""
    device = torch.device(device)
    if device.type == "cuda":
        return device.index if device.index is not None else torch.cuda.current_device()
    if device.type != "cpu":
        raise ValueError(f"device must be cpu or cuda, got {device}")
    return None


# ADM's BOX halvings, unrolled (DALI graphs have no loops): enough for a short side of
# 2**8 * size, 65536 px at 256; a larger image gets a longer final cubic step instead.
MAX_HALVINGS = 8


def _round_to_uint8(x):
    """Float pixels -> uint8 rounded half up, as PIL rounds after each pass of a resize."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    return fn.cast(dmath.clamp(dmath.floor(x + 0.5), 0, 255), dtype=types.UINT8)


def _resize_pass(images, height, width, interp, antialias):
    """One PIL-like pass: resize to ``(height, width)`` (integer DataNodes) in float, then
    round to uint8. Resizing one axis per pass rounds between the passes like PIL does."""
    from nvidia.dali import fn, types

    size = fn.cast(fn.stack(height, width), dtype=types.FLOAT)
    resized = fn.resize(images, size=size, interp_type=interp, antialias=antialias, dtype=types.FLOAT)
    return _round_to_uint8(resized)


def _halve_axis(images, height, width, odd):
    """One axis of PIL's BOX halving (the other axis passes through unchanged). At an even
    side linear interpolation without antialiasing at scale 2 is exactly the 2-pixel box
    average; at an odd side PIL's box holds 3 pixels once (where is a float-rounding matter),
    and DALI's antialiased linear (triangle) filter is the closer of its filters (measured)."""
    from nvidia.dali import types

    if odd:
        images = _resize_pass(images, height, width, types.INTERP_LINEAR, True)
    else:
        images = _resize_pass(images, height, width, types.INTERP_LINEAR, False)
    return images


def _box_halving(images):
    """PIL's ``resize((w // 2, h // 2), BOX)``: the width, then the height."""
    h, w = images.shape()[0], images.shape()[1]
    images = _halve_axis(images, h, w // 2, w % 2 == 1)
    return _halve_axis(images, h // 2, w // 2, h % 2 == 1)


def _adm_side(side, short, image_size):
    """ADM's ``round(side * (image_size / short))``, computed as Python computes it: in float64,
    rounded half to even. Halves occur (70 x 64 to 48, 335 x 320 to 224: 52.5, 234.5), and
    rounding them up resamples the whole image to one pixel more than PIL."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    value = fn.cast(side, dtype=types.FLOAT64) * (image_size / fn.cast(short, dtype=types.FLOAT64))
    low = dmath.floor(value)
    odd = (low - 2 * dmath.floor(low / 2)) == 1
    up = (value - low > 0.5) | ((value - low == 0.5) & odd)
    return fn.cast(low + fn.cast(up, dtype=types.FLOAT64), dtype=types.INT64)


def _adm_resize(images, image_size, exact):
    """ADM's resize before the crop (:func:`~meanflow.data.image_folder.center_crop_arr`):
    BOX halvings while the short side is >= 2 * size, then an antialiased cubic resize (PIL's
    BICUBIC, a = -0.5) to short side = size: ``exact``: width, then height, rounded to uint8
    in between as PIL does; else in one resize (half the CPU time). Needs a pipeline built
    with ``enable_conditionals=True``."""
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    for _ in range(MAX_HALVINGS):
        if dmath.min(images.shape()[0], images.shape()[1]) >= 2 * image_size:
            images = _box_halving(images)
    h, w = images.shape()[0], images.shape()[1]
    short = dmath.min(h, w)
    height, width = _adm_side(h, short, image_size), _adm_side(w, short, image_size)
    cubic = dict(interp_type=types.INTERP_CUBIC, antialias=True)  # DALI's rounding is PIL's here: no ties
    if exact:
        images = fn.resize(images, size=fn.cast(fn.stack(h, width), dtype=types.FLOAT), **cubic)
    return fn.resize(images, size=fn.cast(fn.stack(height, width), dtype=types.FLOAT), **cubic)


def image_pipeline(files, codes, batch_size, image_size, device_id=None, num_threads=4, pad_last_batch=False,
                   exact=False):  # fmt: skip
    """A built DALI pipeline over ``files`` (read in order, wrapping around) with outputs
    ``images`` float32 ``(B, 3, size, size)`` in [-1, 1] and ``codes`` int32 ``(B, 1)``,
    where ``codes = 2 * label + flip`` and the image is mirrored where ``flip`` is 1.
    ``exact``: the cubic step in PIL's two rounded passes (module docstring)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(enable_conditionals=True)
    def graph():
        encoded, label_codes = fn.readers.file(
            files=list(files),
            labels=[int(c) for c in codes],
            random_shuffle=False,
            pad_last_batch=pad_last_batch,
            name="reader",
        )
        # The pixels as stored, as PIL reads them (ADM's crops, the reference batches): DALI
        # would turn a photo by its EXIF orientation tag, PIL's decode does not.
        decode = dict(output_type=types.RGB, adjust_orientation=False)
        if device_id is None:
            images = fn.decoders.image(encoded, device="cpu", **decode)
        else:
            images = fn.decoders.image(encoded, device="mixed", **decode, **_MIXED_PADDING)
        images = _adm_resize(images, image_size, exact)
        # ADM's integer crop offsets: (side - size) // 2.
        anchor = fn.cast((images.shape()[0:2] - image_size) // 2, dtype=types.INT32)
        crop = types.Constant(np.array([image_size, image_size], dtype=np.int32))
        images = fn.slice(images, anchor, crop, axes=[0, 1])
        flip = fn.reshape(label_codes & 1, shape=[])
        images = fn.crop_mirror_normalize(
            images, mirror=flip, mean=[127.5] * 3, std=[127.5] * 3, output_layout="CHW", dtype=types.FLOAT
        )
        return images, label_codes

    pipe = graph(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=0)
    pipe.build()
    return pipe


def build_or_cpu(build, device_id):
    """``(device_id, build(device_id))``; when DALI cannot use the GPU (say, a driver older
    than the CUDA 13 that nvidia-dali-cuda130 needs) it warns and returns
    ``(None, build(None))``: the CPU pipeline, whose batches are then copied to the GPU."""
    try:
        return device_id, build(device_id)
    except RuntimeError as e:
        if device_id is None:
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        warnings.warn(f"DALI cannot run on GPU {device_id} ({reason}); decoding on the CPU", stacklevel=3)
        return None, build(None)


def to_torch(tensor_list, device) -> torch.Tensor:
    """Copy a dense DALI TensorList (CPU or GPU) into a new torch tensor on ``device``."""
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    tensor = tensor_list.as_tensor()
    on_gpu = hasattr(tensor, "device_id")
    out = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device if on_gpu else "cpu")
    feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(out.device) if on_gpu else None)
    return out.to(device, non_blocking=True)


def dali_error_line(error: Exception) -> str:
    """The line of a DALI pipeline error that says what went wrong (say, which file could not
    be opened): the one after ``encountered:``, else the last one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    after = lines.index("encountered:") + 1 if "encountered:" in lines else len(lines)
    return lines[after if after < len(lines) else -1][:200]


def run_batches(build, count, batch_size, convert):
    """``(convert(outputs), None)`` for each of ``count`` batches of the pipeline
    ``build(start, stop)`` over files ``start:stop`` (``stop`` None: to the end), or ``(None,
    error)`` for a batch DALI cannot read; the caller reads that one otherwise. DALI reads ahead,
    so a failed run's error may be a later batch's: the batch is run again over its own files
    alone, and only if it fails there is it the caller's. The pipeline is rebuilt after it."""
    pipe = build(0, None)
    for k in range(count):
        start, stop = k * batch_size, (k + 1) * batch_size
        try:
            batch, error = convert(pipe.run()), None  # while pipe lives: its outputs are its buffers
        except RuntimeError as e:
            del pipe
            try:
                batch, error = convert(build(start, stop).run()), None
            except RuntimeError:
                batch, error = None, e
            pipe = build(stop, None) if k + 1 < count else None
        yield batch, error
    del pipe


def warn_pil_fallback(error: Exception):
    """Say that a batch DALI failed on (``error``) is decoded with PIL instead, at the caller's
    caller: the loop that asked for the batch."""
    warnings.warn(f"DALI failed on a batch ({dali_error_line(error)}); decoding it with PIL", stacklevel=3)


class DALIImageLoader(FolderIdentity, ShardedLoader):
    """The :class:`meanflow.data.Loader` over an image folder through DALI (module docstring);
    a checkpoint records which images, as the torch loader's does (:class:`FolderIdentity`).

    ``root``: the class-folder tree (or pass a ready ``index`` from
    :func:`~meanflow.data.image_folder.scan_image_folder`); ``batch_size`` per rank;
    ``device``: where batches go, and a cuda device also means GPU decode; ``num_threads``:
    DALI CPU threads; ``cache``/``scan_workers``: as in ``scan_image_folder``.
    """

    channels = 3
    resumable_parts = ("read_failures",)

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, image_size=256,
                 num_threads=4, flip=True, index: FolderIndex | None = None, cache="auto",
                 scan_workers=None, max_read_failures=0.01):  # fmt: skip
        if not dali_available():
            raise ImportError("DALIImageLoader needs NVIDIA DALI: pip install nvidia-dali-cuda130")
        check_int_at_least("image_size", image_size)
        self.index = index if index is not None else scan_image_folder(root, cache, scan_workers)
        check_dali_names(self.index, "train with data.backend torch")
        super().__init__(len(self.index), batch_size, rank, world_size, seed, flip=flip)
        self.device = torch.device(device)
        self.device_id = dali_device_id(self.device)
        self.image_size, self.num_threads = image_size, num_threads
        self.num_classes, self.class_names = len(self.index.classes), list(self.index.classes)
        self.read_failures = ReadFailureLog(self.index, len(self) * batch_size, max_read_failures)
        self.fallback_batches = 0  # batches decoded with PIL after a DALI error

    @property
    def failures(self) -> int:
        """Images of this run that failed to read (each replaced within its batch)."""
        return self.read_failures.total

    def _pipeline(self, files, codes):
        def build(device_id):
            return image_pipeline(files, codes, self.batch_size, self.image_size, device_id, self.num_threads)

        self.device_id, pipe = build_or_cpu(build, self.device_id)
        return pipe

    def _batch(self, outputs):
        images, label_codes = outputs
        return to_torch(images, self.device), to_torch(label_codes, self.device)[:, 0].long() >> 1

    def _epoch(self, epoch, start, indices, flips):
        files = [self.index.path(i) for i in indices]
        codes = 2 * self.index.labels[indices] + flips
        bs, count = self.batch_size, len(files) // self.batch_size

        def build(first, stop):
            return self._pipeline(files[first:stop], codes[first:stop])

        for b, (batch, error) in enumerate(run_batches(build, count, bs, self._batch)):
            part, failed = slice(b * bs, (b + 1) * bs), []
            if error is None:
                x, y = batch
            else:
                warn_pil_fallback(error)
                pairs = zip(indices[part], flips[part])
                x, y, failed = collate_skipping(
                    [read_sample(self.index, i, self.image_size, f) for i, f in pairs]
                )
                self.fallback_batches += 1
            self.read_failures.record(epoch, indices[part], failed, b == count - 1)
            if x is None:
                raise ImageReadError(unreadable_batch(self.index, failed))
            yield x.to(self.device), y.to(self.device)


def _read_with_pil(paths, image_size):
    """``(x, ok)`` as :func:`iterate_files` yields them, read with PIL: zeros where it fails."""
    rows, ok = [], []
    for path in paths:
        try:
            rows.append(load_image(path, image_size))
            ok.append(True)
        except Exception:
            rows.append(torch.zeros(3, image_size, image_size))
            ok.append(False)
    return torch.stack(rows), torch.tensor(ok)


def iterate_files(paths, image_size, batch_size, device="cpu", num_threads=4, exact=True):
    """Decode ``paths`` in order (ADM center crop, no flip) through DALI, for preprocessing:
    yields ``(x float32 (n, 3, size, size) in [-1, 1] on device, ok bool (n,))`` per chunk of
    ``batch_size``; ``ok`` is False for files that failed to decode (their rows are junk).
    ``exact`` (the default here: latents are made once) as in :func:`image_pipeline`."""
    device = torch.device(device)
    paths = list(paths)
    if not paths:
        return
    device_id = dali_device_id(device)

    def build(start, stop):
        nonlocal device_id
        files = paths[start:stop]

        def make(dev):
            return image_pipeline(
                files, [0] * len(files), batch_size, image_size, dev, num_threads, True, exact
            )

        device_id, pipe = build_or_cpu(make, device_id)
        return pipe

    def images(outputs):
        return to_torch(outputs[0], device)

    count = -(-len(paths) // batch_size)  # a short last batch is padded: its first n rows
    for k, (x, error) in enumerate(run_batches(build, count, batch_size, images)):
        start = k * batch_size
        n = min(batch_size, len(paths) - start)
        ok = torch.ones(n, dtype=torch.bool)
        if error is not None:
            # As the loader does: a DALI that fails on every batch would otherwise make a whole
            # latent set with PIL's crop under a manifest that says DALI's.
            warn_pil_fallback(error)
            x, ok = _read_with_pil(paths[start : start + n], image_size)
        yield x[:n].to(device), ok
