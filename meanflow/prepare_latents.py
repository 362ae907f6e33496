"""Encode an image folder into VAE latents once, for latent-space training.

    python -m meanflow.prepare_latents /data/imagenet/train /data/in256-latents \\
        --vae /models/sd-vae-ft-ema            # a diffusers folder (config.json + weights)
    python -m meanflow.prepare_latents SRC DST --vae vae.safetensors   # a weights file; the
        # architecture is the sd-vae-ft-ema config (or --vae-config config.json)

Nothing is downloaded: ``--vae`` is a local folder or file, read by
:func:`meanflow.vae.load_vae` (never diffusers' ``from_pretrained``), so a hub name is refused;
importing this module leaves the process's hub settings alone. Images
are read in folder order (``meanflow.data.image_folder``: class folders, corrupt files
skipped and counted) through DALI (``--reader dali``, GPU decode on a GPU) or PIL
(``--reader torch``), ADM center-cropped to ``--image-size``, and encoded with the diffusers
``AutoencoderKL``. What is stored is the posterior, not a sample: per image one ``.npy`` of
shape ``(F, 2, C, h, w)`` = (mean, std) before the scale factor, ``F = 2`` with
``--flips both`` (the mirrored image is encoded too), so training draws a fresh sample every
epoch (``meanflow.data.latents``). Images are grouped in shards of ``--shard-size``; a shard
is written into a temporary folder and renamed when complete, and ``manifest.json`` (scale
factor 0.18215 for sd-vae-ft-ema, counts, shard list, scan summary) is rewritten atomically
after each shard, so an interrupted run resumes by re-running the same command: finished
shards are skipped; the manifest records the reader (``--reader auto`` resumes with the
recorded one) and the VAE (:func:`meanflow.vae.vae_identity`: path, config, weights sha256),
and a resume with another reader or VAE is refused, naming both. ``DST`` must be new, empty or
such a folder, outside ``SRC``: anything else there is someone else's and is never removed or
overwritten. ``--preview N`` writes ``preview.png``: N source crops over their VAE
reconstructions (:func:`meanflow.vae.decode_latents` turns sampled latents back into images).
File names go into ``files.txt`` as the file system's bytes, UTF-8 or not.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys

import numpy as np
import torch

from .checkpoint import exclusive_folder, publish_directory, write_json_atomic
from .checks import check_int_at_least
from .cli import BAD_INPUT, errors_as_one_line, int_at_least
from .data.image_folder import DECODE_VERSION, SKIPPED, FolderIndex, name_a_few, scan_image_folder
from .data.latents import FORMAT, MANIFEST
from .distributed import resolve_device
from .vae import RANDOM, decode_latents, describe_identity, latent_scale, load_vae, vae_config, vae_identity


@torch.no_grad()
def encode_moments(vae, images: torch.Tensor, flips: int = 1) -> torch.Tensor:
    """Images ``(B, 3, H, W)`` in [-1, 1] -> float32 ``(B, flips, 2, C, h, w)``: posterior
    (mean, std) of each image and, for ``flips=2``, of its mirror image."""
    x = torch.cat([images, images.flip(-1)]) if flips == 2 else images
    posterior = vae.encode(x.to(vae.dtype)).latent_dist
    moments = torch.stack([posterior.mean, posterior.std], 1).float()
    return torch.stack(moments.chunk(flips), 1)


# Settings a resume must share with the run that started the folder (the VAE is compared by
# _same_vae): any other value would mix two kinds of latents in one folder.
RESUME_KEYS = (
    "format", "source", "source_fingerprint", "image_size", "reader", "flips", "dtype", "shard_size",
)  # fmt: skip


# What a shard folder (or its temporary) holds when this program wrote it: a folder holding
# anything else is someone else's and is never removed.
_SHARD_FOLDER = re.compile(r"shard_\d{5}|\.shard_\d{5}\.tmp")
_SHARD_FILE = re.compile(r"\d{6}\.npy|labels\.npy|files\.txt")
_SCAN_CACHE = "scan.json"
# files.txt holds file names as the file system gave them, one per line: a name that is not
# UTF-8 (an old archive's latin-1) goes through as its own bytes, as os.fsencode would write it,
# and only "\n" ends a line (text mode's universal newlines would also split a name at "\r").
_NAMES = dict(encoding="utf-8", errors="surrogateescape")
_LINES = dict(_NAMES, newline="\n")


def _check_listable_names(index: FolderIndex) -> None:
    """files.txt lists one name per line: a name holding a line break would read back as two."""
    broken = [name for name in index.files if "\n" in name]
    if broken:
        raise ValueError(
            f"{len(broken)} image names under {index.root!r} hold a line break "
            f"({name_a_few([repr(b) for b in broken], len(broken))}): files.txt lists one name "
            "per line, so rename them"
        )


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _check_placement(src, dst) -> None:
    """Refuse a ``dst`` inside ``src`` or around it, before anything (``dst`` included) is made."""
    if _inside(dst, src):
        raise ValueError(
            f"destination {dst!r} is inside the image folder {src!r}, where its files would be read "
            "as a class: choose a destination outside it"
        )
    if _inside(src, dst):
        raise ValueError(
            f"the image folder {src!r} is inside the destination {dst!r}: choose another destination"
        )
    if os.path.lexists(dst) and not os.path.isdir(dst):
        raise ValueError(f"destination {dst!r} exists and is not a folder")


def _check_destination(dst) -> dict | None:
    """Refuse, before anything is written, a ``dst`` that is not this program's to write into;
    returns its manifest when it is a prepare_latents folder to resume. A folder without a
    manifest must be new or empty (or hold only the scan cache of an interrupted first run).
    ``dst`` is held (and so a folder) by now: :func:`_check_placement` ran before."""
    path = os.path.join(dst, MANIFEST)
    if not os.path.lexists(path):
        foreign = [name for name in sorted(os.listdir(dst)) if not _own_scan_cache(os.path.join(dst, name))]
        if foreign:
            raise ValueError(
                f"destination {dst!r} is a non-empty folder without {MANIFEST} (it holds "
                f"{name_a_few(foreign, len(foreign))}), not a prepare_latents output: refusing to "
                "write into it; choose a new or empty folder"
            )
        return None
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} cannot be read ({e}): refusing to write into {dst!r}") from e
    ours = isinstance(old, dict) and old.get("format") == FORMAT and isinstance(old.get("shards"), list)
    if not (ours and all(isinstance(s, dict) for s in old["shards"])):  # each entry is read as one
        raise ValueError(f"{path!r} is not a prepare_latents manifest: refusing to write into {dst!r}")
    done = {s.get("name") for s in old["shards"] if s.get("done")}
    for name in sorted(os.listdir(dst)):
        if _SHARD_FOLDER.fullmatch(name) and name not in done:
            _check_own_shard(os.path.join(dst, name))
    return old


def _own_scan_cache(path) -> bool:
    """Whether ``path`` is a scan cache (``meanflow.data.image_folder``) an interrupted run left."""
    if os.path.basename(path) != _SCAN_CACHE or os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(cache, dict) and set(cache) == {"version", "root", "entries"}


def _check_own_shard(path) -> None:
    """A ValueError naming ``path`` unless it is a (half-)written shard folder of ours."""
    if os.path.islink(path) or not os.path.isdir(path):
        raise ValueError(
            f"{path!r} is not a shard folder prepare_latents wrote: refusing to replace it; move it away"
        )
    foreign = [
        e.name
        for e in os.scandir(path)
        if not (_SHARD_FILE.fullmatch(e.name) and e.is_file(follow_symlinks=False))
    ]
    if foreign:
        named = name_a_few(sorted(foreign), len(foreign))
        raise ValueError(
            f"{path!r} holds files prepare_latents did not write ({named}): refusing to replace it; "
            "move them out"
        )


def _remove_own_shard(path) -> None:
    """Remove what an interrupted run left at ``path`` (checked again: it may have changed)."""
    if os.path.lexists(path):
        _check_own_shard(path)
        shutil.rmtree(path)


def _resolve_reader(reader: str, recorded: str | None, dst) -> str:
    """``auto`` is the reader a resumed folder was started with, else DALI when installed:
    the DALI and the PIL crops differ slightly (``meanflow.data.dali_images``)."""
    from .data.dali_images import dali_available

    asked = reader
    if reader == "auto":
        reader = recorded or ("dali" if dali_available() else "torch")
    if reader not in ("dali", "torch"):
        raise ValueError(f"reader must be auto, dali or torch, got {reader!r}")
    if reader == "dali" and not dali_available():
        if asked == "auto":
            raise ValueError(
                f"{dst!r} was started with the DALI reader, which is not installed here: install "
                "nvidia-dali-cuda130 to finish it with the same crops, or choose a new destination"
            )
        raise ValueError(
            "--reader dali: NVIDIA DALI is not installed here (pip install nvidia-dali-cuda130); "
            "use --reader torch"
        )
    return reader


def _same_vae(old: dict, new: dict) -> bool:
    """The same weights (by hash where both record one, else by path and size) and config."""
    if old.get("sha256") and new.get("sha256"):
        same_weights = old["sha256"] == new["sha256"]
    else:
        same_weights = (old.get("weights"), old.get("bytes")) == (new.get("weights"), new.get("bytes"))
    return same_weights and old.get("config") == new.get("config")


def _resume_conflicts(old: dict, new: dict) -> list:
    """What differs between a folder's manifest and this run's, each naming both values."""

    def there(key):
        return repr(old[key]) if key in old else "not recorded (an older prepare_latents)"

    conflicts = [f"{k}: {there(k)} there, {new[k]!r} now" for k in RESUME_KEYS if old.get(k) != new[k]]
    old_vae = old.get("vae") or {}
    if not _same_vae(old_vae, new["vae"]):
        conflicts.append(f"vae: {describe_identity(old_vae)} there, {describe_identity(new['vae'])} now")
    return conflicts


def _check_decode_version(old: dict, dst) -> None:
    """Refuse to finish a folder begun under other image decoding rules (``DECODE_VERSION``):
    its shards and the new ones would hold latents of images decoded two ways, and nothing in
    the folder would tell them apart. Training on it as it is stays possible."""
    version = old.get("decode_version", 1)  # written before the version was recorded
    if version != DECODE_VERSION:
        raise ValueError(
            f"{dst!r} was begun by a prepare_latents that decoded images by other rules (version "
            f"{version} there, {DECODE_VERSION} now): finishing it would mix latents of images decoded "
            "two ways; prepare the latents anew into another destination (or remove this one first)"
        )


def _fingerprint(index: FolderIndex) -> str:
    h = hashlib.sha1()
    for rel, label in zip(index.files, index.labels.tolist()):
        h.update(f"{rel}\t{label}\n".encode(**_NAMES))
    return h.hexdigest()


def prepare_latents(src, dst, weights, config=None, *, image_size=256, batch_size=32, shard_size=4096,
                    flips=1, dtype="float32", device="auto", reader="auto", num_workers=4,
                    scan_workers=None, progress=True, preview=0) -> dict:  # fmt: skip
    """Encode ``src`` into ``dst`` (module docstring); returns the manifest. Resumable, by one
    run at a time: a second run on ``dst`` is refused, naming it. Unrefused, it would remove the
    first one's temporary shard folder while that run fills it, and both would rewrite the
    shards and the manifest (docs/design.md section 5)."""
    if flips not in (1, 2):
        raise ValueError(f"flips must be 1 or 2 (--flips none|both), got {flips}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    for name, value, low in (
        ("image_size", image_size, 1),
        ("batch_size", batch_size, 1),
        ("shard_size", shard_size, 1),
        ("preview", preview, 0),  # checked now, not when the preview is drawn after every shard
        ("num_workers", num_workers, 0),  # else refused by DataLoader after the scan
        ("scan_workers", 0 if scan_workers is None else scan_workers, 0),  # else one process, silently
    ):
        check_int_at_least(name, value, low)
    _check_placement(src, dst)  # before the hold makes dst: never a folder inside the images
    with exclusive_folder(dst, "meanflow.prepare_latents", "destination"):
        old = _check_destination(dst)
        if old is not None and not any(s.get("done") for s in old["shards"]):
            old = None  # no latents there yet, so none made otherwise: start over with these settings
        reader = _resolve_reader(reader, old.get("reader") if old else None, dst)
        device = resolve_device(device)
        # The VAE before the scan, which takes minutes on ImageNet: a bad --vae is said at once.
        vae = load_vae(weights, config, device)
        factor = downsampling_factor(vae.config.block_out_channels)
        if image_size % factor:
            raise ValueError(
                f"image_size {image_size} is not a multiple of the VAE's downsampling factor {factor}"
            )
        # The scan checks src before anything is written (its cache makes dst): bad input leaves nothing.
        index = scan_image_folder(src, cache=os.path.join(dst, _SCAN_CACHE), workers=scan_workers)
        _check_listable_names(index)
        if reader == "dali":
            from .data.dali_images import check_dali_names

            check_dali_names(index, "use --reader torch")
        os.makedirs(dst, exist_ok=True)
        print(f"prepare_latents: {index.describe()}", flush=True)

        n = len(index)
        shards = [
            {
                "name": f"shard_{k:05d}",
                "start": s,
                "images": min(shard_size, n - s),
                "count": 0,
                "done": False,
            }
            for k, s in enumerate(range(0, n, shard_size))
        ]
        scale, shift = latent_scale(vae)
        manifest = {
            "format": FORMAT,
            "version": 2,  # 2: the reader and the VAE's weights hash are recorded
            "source": index.root,
            "source_fingerprint": _fingerprint(index),
            "image_size": image_size,
            "crop": "adm-center",  # as closely as the reader does it: meanflow.data.dali_images
            "reader": reader,
            "decode_version": DECODE_VERSION,
            "vae": vae_identity(vae, weights),
            "scale_factor": scale,
            "shift_factor": shift,
            "latent_shape": [vae.config.latent_channels, image_size // factor, image_size // factor],
            "stored": "posterior moments: each file (flips, 2, C, h, w) = [mean, std] before scale_factor",
            "flips": flips,
            "dtype": dtype,
            "classes": index.classes,
            "shard_size": shard_size,
            "num_images": n,
            "scan": {k: v for k, v in index.summary.items() if k != "scanned_now"},
        }
        manifest = json.loads(json.dumps(manifest))  # tuples -> lists, as read back from disk
        path = os.path.join(dst, MANIFEST)
        if old is not None:
            _check_decode_version(old, dst)
            conflicts = _resume_conflicts(old, manifest)
            if conflicts:
                raise ValueError(
                    f"{dst!r} holds latents made with other settings ({'; '.join(conflicts)}): "
                    "use another destination, or the same settings to resume"
                )
            done = {s["name"]: s for s in old["shards"] if s.get("done")}
            shards = [done.get(s["name"], s) for s in shards]
        manifest["shards"] = shards

        def commit():
            written = [s for s in shards if s["done"]]
            manifest["num_samples"] = sum(s["count"] for s in written)
            manifest["failed"] = sum(s["images"] - s["count"] for s in written)
            manifest["complete"] = len(written) == len(shards)
            write_json_atomic(path, manifest, indent=1)

        commit()
        if reader == "dali":
            from .data.dali_images import iterate_files

            def read(paths):
                return iterate_files(paths, image_size, batch_size, device, num_threads=max(1, num_workers))
        else:
            from .data.image_folder import iterate_files as torch_iterate

            def read(paths):
                return torch_iterate(paths, image_size, batch_size, device, num_workers=num_workers)

        from tqdm import tqdm

        done_images = sum(s["images"] for s in shards if s["done"])
        bar = tqdm(total=n, initial=done_images, unit="img", disable=not progress, dynamic_ncols=True)
        skipped = sum(1 for s in shards if s["done"])
        if skipped:
            print(f"prepare_latents: {skipped} of {len(shards)} shards already done, skipped", flush=True)
        for shard in shards:
            if shard["done"]:
                continue
            final, tmp = os.path.join(dst, shard["name"]), os.path.join(dst, f".{shard['name']}.tmp")
            _remove_own_shard(tmp)
            _remove_own_shard(final)  # published, but the run was killed before its manifest entry
            os.makedirs(tmp)
            try:
                ids = range(shard["start"], shard["start"] + shard["images"])
                labels, sources, count = [], [], 0
                for (x, ok), chunk in zip(read([index.path(i) for i in ids]), _chunks(list(ids), batch_size)):
                    moments = encode_moments(vae, x, flips).cpu().numpy().astype(dtype)
                    for row, i in enumerate(chunk):
                        if ok[row]:
                            np.save(os.path.join(tmp, f"{count:06d}.npy"), moments[row])
                            labels.append(int(index.labels[i]))
                            sources.append(index.files[i])
                            count += 1
                    bar.update(len(chunk))
                np.save(os.path.join(tmp, "labels.npy"), np.asarray(labels, dtype=np.int64))
                with open(os.path.join(tmp, "files.txt"), "w", **_LINES) as f:
                    f.write("".join(s + "\n" for s in sources))
                publish_directory(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
                raise
            shard.update(count=count, done=True)
            commit()
        bar.close()
        if preview:
            write_preview(index, dst, vae, min(preview, n), image_size)
        print(f"prepare_latents: {_outcome(manifest, index, dst)}", flush=True)
        return manifest


def _outcome(manifest, index: FolderIndex, dst) -> str:
    """The closing line: what was written, and every file left out (by the scan or the
    decoder), a few named, in the words of the opening line (``index.describe()``)."""
    skipped = sum(index.summary.get(k, 0) for k in SKIPPED)
    failed = _failed_sources(index, dst, manifest["shards"])
    at_scan, at_decoding = (
        _count_naming(skipped, index.skipped_examples()),
        _count_naming(len(failed), failed),
    )
    return (
        f"{manifest['num_samples']} latents {manifest['latent_shape']} in {len(manifest['shards'])} "
        f"shards at {dst} from {len(index)} images; skipped {at_scan} at the scan and {at_decoding} "
        "at decoding"
    )


def _count_naming(count: int, names: list) -> str:
    return f"{count} ({name_a_few(names, count)})" if count else "none"


def _failed_sources(index: FolderIndex, dst, shards) -> list:
    """The images of the finished shards that failed to decode: those missing from their
    shard's ``files.txt`` (so a resumed run names the failures of earlier runs too)."""
    failed = []
    for shard in (s for s in shards if s["done"] and s["count"] < s["images"]):
        with open(os.path.join(dst, shard["name"], "files.txt"), **_LINES) as f:
            written = {line.rstrip("\n") for line in f}
        ids = range(shard["start"], shard["start"] + shard["images"])
        failed += [index.files[i] for i in ids if index.files[i] not in written]
    return failed


def _chunks(items, size):
    return [items[i : i + size] for i in range(0, len(items), size)]


def write_preview(index, dst, vae, count, image_size):
    """``dst/preview.png``: the first ``count`` source crops above their reconstructions."""
    from .data.image_folder import load_image
    from .data.latents import LatentIndex, moments_to_latents
    from .sampler import save_grid

    latents = LatentIndex(dst, allow_partial=True)
    count = min(count, len(latents))
    moments = torch.stack([torch.from_numpy(np.load(latents.files[i])) for i in range(count)])
    z = moments_to_latents(moments, torch.zeros(count, dtype=torch.bool), None, latents.scale, latents.shift)
    recon = decode_latents(vae, z, latents.scale, latents.shift).cpu()
    names = []
    for shard in (s for s in latents.manifest["shards"] if s.get("done")):
        with open(os.path.join(dst, shard["name"], "files.txt"), **_LINES) as f:
            names += [line.rstrip("\n") for line in f]
        if len(names) >= count:
            break
    names = names[:count]
    source = torch.stack([load_image(os.path.join(index.root, n), image_size) for n in names])
    save_grid(torch.cat([source, recon]), os.path.join(dst, "preview.png"), nrow=count)


def downsampling_factor(block_out_channels) -> int:
    """The image pixels a latent's side stands for: the encoder halves the size at every level
    but the last."""
    return 2 ** (len(block_out_channels) - 1)


def _refuse_image_size_off_the_vae_factor(parser, args) -> None:
    """``--image-size`` not a multiple of the VAE's downsampling factor, refused naming the
    option: the factor is in the VAE's config, read before its weights load and the scan (minutes
    on ImageNet). A config that cannot be read here is left for :func:`prepare_latents` to refuse."""
    folder = args.vae != RANDOM and os.path.isdir(args.vae)
    if folder and args.vae_config is not None:
        return  # both: refused by load_vae, in its words
    try:
        config = vae_config(args.vae if folder else args.vae_config)
    except (OSError, ValueError, TypeError):
        return
    levels = config.get("block_out_channels")
    if isinstance(levels, list) and levels and args.image_size % downsampling_factor(levels):
        parser.error(
            f"argument --image-size: {args.image_size} is not a multiple of the VAE's downsampling "
            f"factor {downsampling_factor(levels)}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m meanflow.prepare_latents",
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="image folder: SRC/<class>/<image>")
    parser.add_argument("dst", help="output folder (created; re-run to resume)")
    parser.add_argument(
        "--vae", required=True, help="diffusers VAE folder, weights file, or 'random' (tests)"
    )
    parser.add_argument(
        "--vae-config", help="AutoencoderKL config JSON for a weights file (default sd-vae-ft-ema)"
    )
    parser.add_argument(
        "--image-size", type=int_at_least(1), default=256, help="ADM center-crop size (default: 256)"
    )
    parser.add_argument(
        "--batch-size", type=int_at_least(1), default=32, help="images per VAE batch (default: 32)"
    )
    parser.add_argument(
        "--shard-size",
        type=int_at_least(1),
        default=4096,
        help="images per shard, the unit of resume (default: 4096)",
    )
    parser.add_argument(
        "--flips",
        choices=["none", "both"],
        default="none",
        help="both: also encode mirror images (default: none)",
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="dtype the posteriors are stored in; the VAE always runs in float32 (default: float32)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N (default: auto)"
    )
    parser.add_argument(
        "--reader",
        choices=["auto", "dali", "torch"],
        default="auto",
        help="image reader; auto: a resumed folder's own, else dali when installed (default: auto)",
    )
    parser.add_argument(
        "--workers", type=int_at_least(0), default=4, help="DALI threads or DataLoader workers (default: 4)"
    )
    parser.add_argument(
        "--scan-workers",
        type=int_at_least(0),
        default=None,
        help="processes validating images, 0: this one (default: up to 8)",
    )
    parser.add_argument(
        "--preview", type=int_at_least(0), default=8, help="images in preview.png, 0: none (default: 8)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _refuse_image_size_off_the_vae_factor(parser, args)
    with errors_as_one_line(parser, (*BAD_INPUT, NotADirectoryError)):
        prepare_latents(
            args.src, args.dst, args.vae, args.vae_config,
            image_size=args.image_size, batch_size=args.batch_size, shard_size=args.shard_size,
            flips=2 if args.flips == "both" else 1, dtype=args.dtype, device=args.device, reader=args.reader,
            num_workers=args.workers, scan_workers=args.scan_workers, progress=not args.no_progress,
            preview=args.preview,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
