"""Loaders for the VAE latents written by ``python -m meanflow.prepare_latents SRC DST``.

On disk (``DST``): ``manifest.json`` and shard folders ``shard_00000/`` ... holding one
``.npy`` per image, float32 or float16 of shape ``(F, 2, C, h, w)``: the mean and the std
of the VAE posterior (``[:, 0]`` and ``[:, 1]``, before the scale factor) of the image
(``F = 1``) or of the image and its mirror image (``F = 2``, ``--flips both``), plus
``labels.npy`` and ``files.txt`` (the source images) per shard. Opening a folder checks that
each finished shard holds its files (one listing per shard): a partial copy is named then, not
mid-training.

A batch is made as EDM2/REPA do with stored moments: ``z = (mean + std * eps - shift) *
scale`` with fresh ``eps ~ N(0, I)`` per read (``latent_mode="mean"`` drops the noise), and
the random horizontal flip is done in latent space: with ``F = 2`` the stored encoding of the
mirrored image is taken (as MAR does with its ``moments_flip``), with ``F = 1`` the latent is
mirrored along its width (exact for the mirror of the image only up to the VAE's own
equivariance error). Flips and ``eps`` are functions of ``(seed, epoch, batch)`` (``eps`` is
drawn for the whole global batch and sliced per rank), so every rank count and every resume
gives the same batches, and the DALI and the torch loader give identical ones.

:class:`DALILatentLoader` reads the files with DALI's numpy reader (CPU threads; copied to
the GPU inside the pipeline when ``device`` is cuda); :class:`TorchLatentLoader` is the
same with a torch DataLoader of ``np.load`` for machines without DALI. A file removed or
damaged while a run reads the folder stops both after the batches before it, with an error
naming the file (:func:`load_moments`).

Provenance: the manifest records the image reader (``dali`` or ``torch``: their crops differ
slightly) and the VAE's identity (:func:`meanflow.vae.vae_identity`: path, config, weights
hash). ``decode`` (the trainer's sample grids) loads the recorded VAE, or the one given as
``vae_path`` (config key ``data.vae``: latents made on another machine), and refuses one that
is not the recorded VAE (:func:`load_latents_vae`); :func:`check_vae_against_latents` is the
same check for any loaded VAE, and :func:`check_vae_for_checkpoint` makes it with the VAE a
trainer checkpoint recorded of its latents, for ``export --vae`` and (through
:func:`load_vae_for_checkpoint`) the ``--vae`` of ``meanflow.sampler`` and ``meanflow.generate``. A
checkpoint records how its latents were made (:meth:`LatentIndex.identity`), and a resume onto
a folder prepared again otherwise is refused (``meanflow/train_state.py``).
"""

import json
import os
import warnings

import numpy as np
import torch

from .image_folder import name_a_few
from .sharding import ShardedLoader

MANIFEST = "manifest.json"
LATENT_MODES = ("sample", "mean")  # a fresh draw of the VAE's posterior per read, or its mean
FORMAT = "meanflow-latents"
# A folder another tool made: its manifest names no VAE to decode with or to compare one to.
NO_VAE = f"the latents' {MANIFEST} records no VAE"


def read_manifest(root: str) -> dict:
    """The manifest of a latent folder; clear errors for a missing or unfinished one."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"latent folder {root!r} does not exist (make it with python -m meanflow.prepare_latents)"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: {root!r} is not a prepare_latents output")
    try:
        with open(path, "rb") as f:
            manifest = json.load(f)
    except ValueError as e:  # cut short by an interrupted copy, or not JSON at all
        raise ValueError(f"{path!r} is not readable JSON ({e}): copy the latent folder again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a {FORMAT} manifest")
    _check_keys(path, manifest)
    return manifest


# What reading a latent folder needs of its manifest (the other keys describe how it was made),
# and of each finished shard's entry.
REQUIRED_KEYS = ("shards", "classes", "flips", "latent_shape", "scale_factor")
SHARD_KEYS = ("name", "count")


def _check_keys(path: str, manifest: dict) -> None:
    """A ValueError naming ``path`` and the first key it lacks (a manifest edited by hand, or not
    written by prepare_latents), where reading on would fail with a bare KeyError."""

    def damaged(what):
        return ValueError(
            f"{path!r} {what}: the manifest is damaged (edited by hand, or not written by "
            "prepare_latents); copy the latent folder again or prepare it anew"
        )

    lacking = [k for k in REQUIRED_KEYS if k not in manifest]
    if lacking:
        raise damaged(f"lacks the key {lacking[0]!r}")
    shards = manifest["shards"]
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        raise damaged("holds 'shards' that are not a list of shard entries")
    for n, shard in enumerate(shards):
        key = next((k for k in SHARD_KEYS if k not in shard), None) if shard.get("done") else None
        if key is not None:
            raise damaged(f"lacks the key {key!r} in its entry of shard {shard.get('name', n)}")


def _check_shard(root: str, folder: str, names: list) -> None:
    """A FileNotFoundError naming the first of ``names`` missing from ``folder`` (a partial copy
    of the latent folder), found here rather than as a reader's traceback mid-training."""
    try:
        present = set(os.listdir(folder))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"latent folder {root!r}: shard {os.path.basename(folder)} is missing: the folder is "
            "incomplete (an interrupted copy?); copy it again or prepare it anew"
        ) from None
    missing = [name for name in names if name not in present]
    if missing:
        raise FileNotFoundError(
            f"latent folder {root!r}: shard {os.path.basename(folder)} lacks {name_a_few(missing, few=1)}: "
            "the folder is incomplete (an interrupted copy?); copy it again or prepare it anew"
        )


def _shard_labels(root: str, shard: dict, num_classes: int) -> np.ndarray:
    """A shard's ``labels.npy``, one class id per latent file of the shard. Checked per shard:
    labels are matched to files by position across the shards, so one shard with a label too
    many and another with one too few would shift every label between them without an error,
    and a label past the classes would train as the null class of classifier-free guidance."""
    path = os.path.join(root, shard["name"], "labels.npy")
    labels = np.load(path)
    if labels.shape != (shard["count"],):
        raise ValueError(
            f"latent folder {root!r}: {shard['name']}/labels.npy holds {labels.size} labels for the "
            f"shard's {shard['count']} latents: the folder is damaged; prepare it anew"
        )
    if labels.size and not (0 <= labels.min() and labels.max() < num_classes):
        raise ValueError(
            f"latent folder {root!r}: {shard['name']}/labels.npy has labels from {labels.min()} to "
            f"{labels.max()}, outside the manifest's {num_classes} classes: the folder is damaged; "
            "prepare it anew"
        )
    return labels


class LatentIndex:
    """Files and labels of every stored sample of a complete latent folder, in shard order."""

    def __init__(self, root: str, allow_partial: bool = False):
        self.root = os.path.abspath(root)
        self.manifest = m = read_manifest(root)
        done = [s for s in m["shards"] if s.get("done")]
        if len(done) < len(m["shards"]) and not allow_partial:
            raise ValueError(
                f"latent folder {root!r} is incomplete ({len(done)} of {len(m['shards'])} shards): "
                f"rerun python -m meanflow.prepare_latents {m.get('source')} {root} to finish it"
            )
        self.files, labels = [], []
        for shard in done:
            folder = os.path.join(self.root, shard["name"])
            names = [f"{i:06d}.npy" for i in range(shard["count"])]
            _check_shard(root, folder, ["labels.npy", *names])
            labels.append(_shard_labels(root, shard, len(m["classes"])))
            self.files += [os.path.join(folder, name) for name in names]
        self.labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
        if not self.files:
            raise ValueError(f"latent folder {root!r} holds no samples")
        self.classes = list(m["classes"])
        self.num_classes = len(self.classes)
        self.flips, (self.channels, self.height, self.width) = m["flips"], m["latent_shape"]
        self.scale, self.shift = float(m["scale_factor"]), float(m.get("shift_factor") or 0.0)

    def identity(self) -> dict:
        """How these latents were made (docs/design.md section 5), for a checkpoint to record: a
        folder prepared again at the same path with another VAE, reader, crop size or flips
        holds as many latents of the same classes, and a resumed run would mix two latent
        spaces without an error. The source images and their count may change (a warning)."""
        m = self.manifest
        vae = m.get("vae") or {}
        made = {k: m.get(k) for k in ("reader", "image_size", "crop", "flips", "dtype")}
        made["decode_version"] = m.get("decode_version", 1)  # unrecorded: made before the rules changed
        return {
            "vae": {k: vae.get(k) for k in ("weights", "config", "sha256")},
            **made,
            "latent_shape": list(m["latent_shape"]),
            "scale_factor": self.scale,
            "shift_factor": self.shift,
        }

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        """One line: what the folder holds and where it came from (the trainer prints it)."""
        m = self.manifest
        mirrored = ", with their mirror images'" if self.flips == 2 else ""
        vae = m.get("vae") or {}
        sha = f" sha256 {vae['sha256'][:12]}" if vae.get("sha256") else ""
        return (
            f"{len(self)} latents {self.channels}x{self.height}x{self.width} ({m.get('dtype')} posteriors"
            f"{mirrored}) of {self.num_classes} classes at {self.root}: {m.get('crop')} crops of "
            f"{m.get('image_size')} px by the {m.get('reader', 'unrecorded')} reader from {m.get('source')}, "
            f"VAE {vae.get('weights')!r}{sha}"
        )


def identity_changes(recorded: dict, now: dict) -> list:
    """What differs between two :meth:`LatentIndex.identity` records, each naming both values.
    The VAE is compared by its weights hash and config, not by where it was read from."""

    from ..vae import describe_identity

    def vae(record):
        return {k: record.get(k) for k in ("config", "sha256")}

    changes = [
        f"{k}: {recorded.get(k)!r} then, {now[k]!r} now"
        for k in now
        if k != "vae" and k in recorded and recorded[k] != now[k]
    ]
    if "vae" in recorded and vae(recorded["vae"]) != vae(now["vae"]):
        then, now_ = describe_identity(recorded["vae"]), describe_identity(now["vae"])
        changes.insert(0, f"vae: {then} then, {now_} now")
    return changes


def load_latents_vae(manifest: dict, vae_path: str | None = None, device="cpu"):
    """The VAE that decodes a latent folder's latents: the one its manifest records, or
    ``vae_path`` (a copy of it, where the latents were made on another machine; a weights file
    takes the recorded config). Refuses a VAE that is not the recorded one (ValueError naming
    both) and names the ``data.vae`` key when the recorded path is not here. A record without a
    weights path still checks ``vae_path`` against the config and hash it holds; only a manifest
    with nothing to compare (no config, no hash) takes ``vae_path`` unchecked, with a warning."""
    from ..vae import RANDOM, check_vae, load_vae, records_a_vae

    record = manifest.get("vae") or {}
    if not record.get("weights"):  # a folder made by another tool: no VAE to load
        if not vae_path:
            lacking = f"{NO_VAE} weights path" if records_a_vae(record) else NO_VAE
            raise ValueError(f"{lacking}: set data.vae to the one it was made with")
        if not records_a_vae(record):  # nor one to compare data.vae with
            _warn_unchecked(vae_path)
            return load_vae(vae_path, None, device)
    weights = vae_path or record["weights"]
    if weights != RANDOM and not os.path.exists(weights):
        raise FileNotFoundError(
            f"data.vae {weights!r} does not exist (a copy of the VAE the latents were made with)"
            if vae_path
            else f"the latents' VAE {weights!r} is not on this machine: set data.vae to a copy of it"
        )
    config = None if os.path.isdir(weights) else record.get("config")
    vae = load_vae(weights, config, device)
    check_vae(vae, record, weights)
    return vae


def check_vae_against_latents(vae, root: str, name: str, strict: bool = True) -> None:
    """Refuse (``strict``: ValueError naming both) or warn when ``vae``, read from ``name``, is
    not the VAE the latents in ``root`` were made with. A folder that is not here is warned
    about (nothing to compare with), never an error."""
    from ..vae import check_vae

    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, ValueError) as e:
        warnings.warn(f"cannot check VAE {name!r} against the training latents: {e}", stacklevel=2)
        return
    if not manifest.get("vae"):
        _warn_unchecked(name)
        return
    check_vae(vae, manifest["vae"], name, strict)


def _warn_unchecked(name: str) -> None:
    """The warning that VAE ``name`` is used unchecked, for the caller of our caller."""
    warnings.warn(f"cannot check VAE {name!r}: {NO_VAE}", stacklevel=3)


def latent_folder_of_checkpoint(ckpt: str) -> str | None:
    """The latent folder (``data.path``) a ``meanflow.train`` checkpoint was trained on, or
    None (not a trainer checkpoint, or not trained on latents)."""
    return _checkpoint_latents(ckpt)[0]


def _checkpoint_latents(ckpt: str) -> tuple:
    """``(data.path, the VAE record its data_identity holds or None)`` of a trainer checkpoint
    trained on latents, else ``(None, None)``."""
    from ..checkpoint import load_torch_file

    if not os.path.isfile(ckpt):
        return None, None
    saved = load_torch_file(ckpt)
    data = (saved.get("config") or {}).get("data") or {} if isinstance(saved, dict) else {}
    if data.get("name") != "latents":
        return None, None
    return data.get("path"), (saved.get("data_identity") or {}).get("vae")


def check_vae_for_checkpoint(vae, ckpt: str, name: str, strict: bool = True) -> None:
    """``sample --vae``/``export --vae``: :func:`meanflow.vae.check_vae` with the VAE the
    checkpoint recorded of its latents (the folder may have been prepared again with another
    since), or for an older checkpoint :func:`check_vae_against_latents` with the latent folder
    it was trained on; nothing to check for a model not trained on latents."""
    from ..vae import check_vae, records_a_vae

    root, record = _checkpoint_latents(ckpt)
    if records_a_vae(record):
        check_vae(vae, record, name, strict)
    elif root is not None:
        check_vae_against_latents(vae, root, name, strict)


def load_vae_for_checkpoint(cfg, ckpt: str, vae, vae_config=None, device="cpu"):
    """The VAE that decodes the samples of the model of config ``cfg`` read from ``ckpt``
    (``--vae`` of ``python -m meanflow.sampler`` and ``python -m meanflow.generate``), None for a
    pixel model given none. ``vae``/``vae_config``: as :func:`meanflow.vae.load_vae` takes them.

    Refused, the most useful error first: a latent model without a VAE (its latents saved as
    images looked like an untrained model's samples), a pixel model with one (nothing to
    decode: a VAE of 3 latent channels decoded a 3-channel model's images), then, once loaded,
    a VAE that is not the one the checkpoint's latents were made with
    (:func:`check_vae_for_checkpoint`: names the recorded one; not for :data:`meanflow.vae.RANDOM`
    weights, tests and smoke runs, which no record matches), and last one of other latent
    channels than the model's (a checkpoint that records no VAE)."""
    from ..vae import RANDOM, load_vae, needs_vae

    if not vae:
        if needs_vae(cfg):
            raise ValueError(
                f"the model makes {cfg.in_channels}-channel latents, not images: pass --vae, the VAE "
                "that decodes them"
            )
        return None
    option = "--vae-config" if vae == RANDOM and vae_config else "--vae"  # generate's config alone: random
    if not needs_vae(cfg):
        raise ValueError(f"{option}: the model makes {cfg.in_channels}-channel images, no latents to decode")
    decoder = load_vae(vae, vae_config, device=device)
    if vae != RANDOM:  # the VAE the latents were made with, or a refusal naming both
        check_vae_for_checkpoint(decoder, ckpt, vae)
    if decoder.config.latent_channels != cfg.in_channels:
        raise ValueError(
            f"{option} has {decoder.config.latent_channels} latent channels, the model {cfg.in_channels}"
        )
    return decoder


def moments_to_latents(moments, flips, noise, scale, shift=0.0):
    """``moments`` ``(B, F, 2, C, h, w)`` (mean, std), ``flips`` bool ``(B,)``, ``noise``
    ``(B, C, h, w)`` or None (posterior mean) -> scaled latents float32 ``(B, C, h, w)``."""
    moments = moments.float()
    if moments.shape[1] == 2:  # the stored encodings of the mirrored images
        moments = moments[torch.arange(len(moments), device=moments.device), flips.long()]
    else:
        moments = torch.where(flips.view(-1, 1, 1, 1, 1), moments[:, 0].flip(-1), moments[:, 0])
    mean, std = moments[:, 0], moments[:, 1]
    z = mean if noise is None else mean + std * noise
    return (z - shift) * scale


class _LatentLoader(ShardedLoader):
    reader = ""  # how the files are read, for describe()

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, flip=True,
                 latent_mode="sample", index=None, allow_partial=False, vae_path=None):  # fmt: skip
        if latent_mode not in LATENT_MODES:
            raise ValueError(f"latent_mode must be 'sample' or 'mean', got {latent_mode!r}")
        self.index = index if index is not None else LatentIndex(root, allow_partial)
        super().__init__(len(self.index), batch_size, rank, world_size, seed, flip=flip)
        self.device, self.latent_mode = torch.device(device), latent_mode
        self.num_classes, self.channels = self.index.num_classes, self.index.channels
        self.class_names = self.index.classes
        self.data_identity = self.index.identity()
        if self.index.height != self.index.width:
            raise ValueError(
                f"latent folder {self.index.root!r} holds {self.index.height}x{self.index.width} latents "
                f"(its {MANIFEST}'s latent_shape): the loaders need square latents"
            )
        self.image_size = self.index.height
        self.vae_path, self._vae = vae_path, None

    def data_changes(self, recorded: dict) -> list:
        """What differs between the latents a checkpoint recorded and these (:func:`identity_changes`)."""
        return identity_changes(recorded, self.data_identity)

    def describe(self) -> str:
        return f"{self.index.describe()}; read with {self.reader}, latent_mode {self.latent_mode}"

    def _finish(self, moments, epoch, batch, indices, flips):
        """Raw moments of this rank's part of global batch ``batch`` -> ``(x, y)`` on device."""
        noise = None
        if self.latent_mode == "sample":
            g = torch.Generator(device=self.device)
            g.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + batch) % 2**63)
            shape = (self.plan.global_batch, self.channels, self.image_size, self.image_size)
            noise = torch.randn(shape, generator=g, device=self.device)
            noise = noise[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        flips = torch.as_tensor(flips, dtype=torch.bool).to(self.device, non_blocking=True)
        x = moments_to_latents(
            moments.to(self.device, non_blocking=True), flips, noise, self.index.scale, self.index.shift
        )
        y = torch.as_tensor(self.index.labels[indices]).to(self.device, non_blocking=True)
        return x, y

    def decode(self, latents: torch.Tensor, vae=None) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] with the manifest's VAE or ``vae_path``
        (:func:`load_latents_vae`), or with the loaded ``vae`` given."""
        from ..vae import decode_latents

        if vae is None:
            if self._vae is None:
                self._vae = load_latents_vae(self.index.manifest, self.vae_path, latents.device)
            vae = self._vae
        return decode_latents(vae, latents, self.index.scale, self.index.shift)


class DALILatentLoader(_LatentLoader):
    """The :class:`meanflow.data.Loader` over a latent folder through DALI's numpy reader."""

    reader = "DALI's numpy reader"

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, flip=True,
                 latent_mode="sample", num_threads=4, index=None, allow_partial=False,
                 vae_path=None):  # fmt: skip
        from .dali_images import dali_available, dali_device_id

        if not dali_available():
            raise ImportError("DALILatentLoader needs NVIDIA DALI: pip install nvidia-dali-cuda130")
        super().__init__(root, batch_size, rank, world_size, device, seed, flip, latent_mode, index,
                         allow_partial, vae_path)  # fmt: skip
        self.device_id, self.num_threads = dali_device_id(self.device), num_threads

    def _pipeline(self, files):
        from nvidia.dali import fn
        from nvidia.dali.pipeline import Pipeline

        from .dali_images import build_or_cpu

        def build(device_id):
            pipe = Pipeline(
                batch_size=self.batch_size, num_threads=self.num_threads, device_id=device_id, seed=0
            )
            with pipe:
                data = fn.readers.numpy(
                    files=files, random_shuffle=False, cache_header_information=True, name="reader"
                )
                pipe.set_outputs(data.gpu() if device_id is not None else data)
            pipe.build()
            return pipe

        self.device_id, pipe = build_or_cpu(build, self.device_id)
        return pipe

    def _moments(self, outputs):
        from .dali_images import to_torch

        return to_torch(outputs[0], self.device)

    def _epoch(self, epoch, start, indices, flips):
        from .dali_images import dali_error_line, run_batches

        files = [self.index.files[i] for i in indices]
        bs, count = self.batch_size, len(files) // self.batch_size

        def build(first, stop):
            return self._pipeline(files[first:stop])

        for k, (moments, error) in enumerate(run_batches(build, count, bs, self._moments)):
            part = slice(k * bs, (k + 1) * bs)
            if error is not None:  # this batch's own failure: np.load names a file gone or damaged
                moments = torch.stack([torch.from_numpy(load_moments(f)) for f in files[part]])
                said = dali_error_line(error)
                warnings.warn(f"DALI failed on a batch ({said}); read with np.load", stacklevel=2)
            yield self._finish(moments, epoch, start + k, indices[part], flips[part])


def load_moments(path: str) -> np.ndarray:
    """One image's stored moments; a file gone since the folder was opened is a
    FileNotFoundError, a damaged one a ValueError, each naming the file."""
    try:
        return np.load(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"latent file {path!r} removed since the folder was opened") from None
    except (ValueError, EOFError) as e:
        raise ValueError(f"latent file {path!r} cannot be read: {e}") from None


class _Files(torch.utils.data.Dataset):
    """Items ``(index, flip)`` -> ``(moments, index, flip)``."""

    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, item):
        i, flip = item
        return torch.from_numpy(load_moments(self.files[i])), i, flip


class TorchLatentLoader(_LatentLoader):
    """The same loader with a torch DataLoader (``np.load`` in ``num_workers`` processes)."""

    reader = "torch (np.load)"

    def __init__(self, root, batch_size, rank=0, world_size=1, device="cpu", seed=0, flip=True,
                 latent_mode="sample", num_workers=4, index=None, allow_partial=False,
                 vae_path=None):  # fmt: skip
        super().__init__(root, batch_size, rank, world_size, device, seed, flip, latent_mode, index,
                         allow_partial, vae_path)  # fmt: skip
        self.num_workers = num_workers

    def __iter__(self):
        from .image_folder import _Batches

        loader = torch.utils.data.DataLoader(
            _Files(self.index.files),
            batch_sampler=_Batches(self._batch_stream()),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for moments, indices, flips in loader:
            epoch, position = self._advance()
            yield self._finish(moments, epoch, position, indices.numpy(), flips.numpy())
