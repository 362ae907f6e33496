"""Sample a large set for FID: PNGs and the ADM-style ``.npz`` (uint8 NHWC in ``arr_0``).

    python -m meanflow.generate --ckpt runs/in256/last.pt --num-samples 50000 --steps 1 \\
        --out samples/ --vae /models/sd-vae-ft-ema
    torchrun --nproc_per_node 8 -m meanflow.generate ...      # same images, split over ranks

Index ``i`` gets its own noise (and, with ``--classes random``, its own label) from a seed
derived from ``(--seed, i)``, so an image depends on neither the rank count nor on which run
made it. Indices go in batches of ``--batch-size``; batch ``k`` belongs to rank
``k % world_size``. A finished batch is a file ``shards/k.npz`` (written atomically) next to
its PNGs ``images/i.png``; a re-run skips finished batches, so an interrupted run resumes and
ends with the same images. When every batch is done, rank 0 streams the shards into
``samples.npz`` (``arr_0`` images, ``arr_1`` labels, as ADM's ``image_sample.py``), atomically,
and removes the shards. ``manifest.json`` records the settings and the checkpoint's and the
VAE's sha256; a re-run with other settings, or from a checkpoint that changed since (a live
run's ``last.pt``) or a VAE replaced at its path, into the same ``--out`` is refused. So is an
``--out`` whose ``manifest.json`` is damaged or not ours, or that holds files of these names
(``images/*.png`` too) but no manifest: nothing this program did not write is overwritten.
One run holds an ``--out`` at a time (a second one is refused), and a resumed run removes the
temporaries that a killed one's writes left there, a new one that of a first manifest
(``meanflow/generate_out.py``: the folder's rules).

The math is ``meanflow.sampler.sample`` (the function ``from meanflow import sample``; this
file is its batch driver, ``python -m meanflow.sampler`` draws a quick grid PNG).
``python -m meanflow.sample`` is the older name of this program and still runs it.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import zipfile

import numpy as np
import torch

from . import sampler
from .checkpoint import atomic_write, hash_file
from .checks import check_int_at_least
from .cli import add_weights_options, errors_as_one_line, int_at_least
from .data.latents import load_vae_for_checkpoint
from .distributed import gather, on_rank0, setup_distributed, together
from .generate_out import (  # noqa: F401 (read_manifest, RESULT_KEYS: this program's API)
    MANIFEST,
    NPZ,
    RESULT_KEYS,
    check_out,
    hold_out,
    png_path,
    prepare_out,
    read_manifest,
    shard_path,
    write_manifest,
)
from .pretrained import load_model
from .vae import RANDOM, decode_latents, latent_scale, weights_sha256


def index_seed(seed: int, index: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for sample ``index`` (``stream`` 0: noise, 1: label)."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def noise_for(indices, shape, seed: int) -> torch.Tensor:
    """``(len(indices), *shape)`` float32 CPU noise, each row from its own generator."""
    g = torch.Generator()
    rows = []
    for i in indices:
        g.manual_seed(index_seed(seed, i))
        rows.append(torch.randn(shape, generator=g))
    return torch.stack(rows)


def labels_for(indices, num_classes: int, mode: str, seed: int):
    """Class-balanced (``i % num_classes``) or per-index random labels; None if unconditional."""
    if num_classes == 0:
        return None
    if mode == "balanced":
        return torch.tensor([i % num_classes for i in indices], dtype=torch.long)
    g = torch.Generator()
    out = []
    for i in indices:
        g.manual_seed(index_seed(seed, i, stream=1))
        out.append(int(torch.randint(num_classes, (), generator=g)))
    return torch.tensor(out, dtype=torch.long)


def batch_ranges(num: int, batch_size: int):
    return [(k, s, min(s + batch_size, num)) for k, s in enumerate(range(0, num, batch_size))]


def rank_batches(num: int, batch_size: int, rank: int, world: int):
    """The batches of ``rank``: every ``world``-th, starting at ``rank``."""
    return [b for b in batch_ranges(num, batch_size) if b[0] % world == rank]


def check_scaling_factor(scaling_factor, vae) -> None:
    """``scaling_factor``: None (the VAE's own), else a finite number > 0 given with a VAE. A 0
    would silently become the VAE's own factor, a negative one flip every latent."""
    if scaling_factor is None:
        return
    if not vae:
        raise ValueError("scaling_factor goes with vae or vae_config (it scales latents for the VAE)")
    number = isinstance(scaling_factor, (int, float)) and not isinstance(scaling_factor, bool)
    if not (number and math.isfinite(scaling_factor) and scaling_factor > 0):
        raise ValueError(f"scaling_factor must be a finite number > 0, got {scaling_factor!r}")


def _checkpoint_files(path: str) -> list:
    """The file, or every file of a ``save_pretrained`` directory (sorted)."""
    if not os.path.isdir(path):
        return [path]
    found = [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
    return sorted(found)


def checkpoint_stamp(path: str) -> tuple:
    """Which files ``path`` is now: an atomic replace gives a new inode, a rewrite a new mtime."""
    stats = [(f, os.stat(f)) for f in _checkpoint_files(path)]
    return tuple((f, st.st_ino, st.st_size, st.st_mtime_ns) for f, st in stats)


def checkpoint_sha256(path: str) -> str:
    """The content hash of a checkpoint file or directory. Measured at 1.7 GB/s on a slow
    shared CPU: a 10 GB trainer checkpoint costs seconds once per run, against minutes to hours
    of sampling; size + mtime would also refuse a plain copy of the same file, and miss a
    rewrite within the mtime resolution."""
    digest = hashlib.sha256()
    for f in _checkpoint_files(path):
        if f != path:  # a directory's file names count; a file's hash is its sha256sum
            digest.update(os.path.relpath(f, path).encode() + b"\0")
        hash_file(digest, f)
    return digest.hexdigest()


def read_shard(path: str, *names: str) -> list:
    """The arrays ``names`` of a finished shard; an unreadable one is named, with what to do."""
    try:
        # Our own file object: np.load leaves the one it opens unclosed when the zip is damaged.
        with open(path, "rb") as f, np.load(f) as shard:
            return [shard[name] for name in names]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"sample shard {path} is unreadable ({type(e).__name__}: {e}): delete it and run "
            "again with the same settings; its batch is then sampled anew"
        ) from e


def _write_png(path: str, array: np.ndarray):
    # Not fsynced: the shard .npz is the durable record, PNGs are rewritten from it when missing.
    sampler.save_png(path, array, durable=False)


def _save_npz(path: str, **arrays):
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_npz_streaming(path: str, num: int, parts, labels=None):
    """``path`` with ``arr_0`` = the concatenation of the uint8 NHWC ``parts`` (an iterable,
    ``num`` rows in all), written member by member so the whole set is never in memory;
    gray images become RGB (the ImageNet evaluator feeds Inception 3 channels)."""
    parts = iter(parts)

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            first = next(parts)
            shape = (num, first.shape[1], first.shape[2], 3)
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": shape,
            }
            written = 0
            with zf.open("arr_0.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_2_0(member, header)
                for part in (first, *parts):
                    if part.shape[1:3] != shape[1:3]:
                        raise ValueError(f"image size {part.shape[1:3]} differs from {shape[1:3]}")
                    rgb = np.repeat(part, 3, axis=-1) if part.shape[-1] == 1 else part
                    member.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
                    written += len(part)
            if written != num:
                raise ValueError(f"got {written} images, expected {num}")
            if labels is not None:
                with zf.open("arr_1.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(labels, dtype=np.int64))

    atomic_write(path, write)


def _load_identified(ckpt: str, ema, device, world: int):
    """``(model, sha256 of the checkpoint it was loaded from)``. The checkpoint may be a live
    run's ``last.pt``, replaced while we read it: the hash must describe the loaded weights,
    and every rank must have loaded the same ones."""
    model, digest, changed = together(world, _load_and_hash, ckpt, ema, device)
    if any(gather(world, changed)):
        raise ValueError(
            f"ckpt {ckpt} changed while it was read (a run saving it?): run again, or sample a copy"
        )
    digests = gather(world, digest)
    if len(set(digests)) > 1:
        raise ValueError(f"ranks read different files as ckpt {ckpt} (sha256 {sorted(set(digests))})")
    return model, digest


def _load_and_hash(ckpt: str, ema, device):
    """``(model, sha256, whether the checkpoint's files changed meanwhile)``."""
    stamp = checkpoint_stamp(ckpt) if os.path.exists(ckpt) else None
    model = load_model(ckpt, ema=ema, device=device)
    digest = checkpoint_sha256(ckpt)
    return model, digest, checkpoint_stamp(ckpt) != stamp


def run(
    ckpt: str,
    out: str,
    num: int = 50000,
    steps: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    classes: str = "balanced",
    ema: int | None = 0,
    vae: str | None = None,
    vae_config: str | None = None,
    scaling_factor: float | None = None,
    dtype: str = "fp32",
    device: str = "auto",
    png: bool = True,
    keep_shards: bool = False,
    compile: bool = False,
    progress: bool = True,
) -> str | None:
    """Generate ``num`` images into ``out``; returns the ``samples.npz`` path on the rank that
    wrote it (rank 0), None on the others."""
    for name, value, low in (
        ("num", num, 1),
        ("steps", steps, 1),
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
    ):
        check_int_at_least(name, value, low)
    if classes not in ("balanced", "random"):
        raise ValueError(f"classes must be 'balanced' or 'random', got {classes!r}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    check_scaling_factor(scaling_factor, vae or vae_config)
    if vae_config and not vae:
        vae = RANDOM  # the architecture alone: random weights (tests, smoke runs)
    check_out(out)
    rank, world, dev = setup_distributed(device)
    with contextlib.ExitStack() as held:
        # Every rank waits for rank 0 to hold --out: its refusal is every rank's, and no rank
        # loads and hashes a checkpoint for a folder another run is filling.
        on_rank0(rank, world, hold_out, held, out)
        model, ckpt_sha256 = _load_identified(ckpt, ema, dev, world)
        cfg = model.config
        decoder, scaling_factor = together(
            world, _load_decoder, cfg, ckpt, vae, vae_config, scaling_factor, dev
        )

        out = os.path.abspath(out)
        settings = {
            "ckpt": os.path.abspath(ckpt),
            "ckpt_sha256": ckpt_sha256,
            "ema": ema if not os.path.isdir(ckpt) else None,
            "num": num,
            "steps": steps,
            "seed": seed,
            "batch_size": batch_size,
            "classes": classes if cfg.num_classes else None,
            "vae": os.path.abspath(vae) if vae and vae != RANDOM else vae,
            "vae_sha256": weights_sha256(decoder) if decoder is not None else None,
            "vae_config": os.path.abspath(vae_config) if vae_config else None,
            "scaling_factor": scaling_factor if decoder is not None else None,
            # Decoding is z / scale + shift: without the shift (SD3's, FLUX's VAEs) a reader of the
            # manifest could not decode latents as these images were; None where the VAE has none.
            "shift_factor": getattr(decoder.config, "shift_factor", None) if decoder is not None else None,
            "dtype": dtype,
            "model_config": {k: v for k, v in vars(cfg).items()},
        }
        on_rank0(rank, world, prepare_out, out, settings)
        final = os.path.join(out, NPZ)
        with open(os.path.join(out, MANIFEST)) as f:
            done = json.load(f).get("complete") and os.path.exists(final)
        if done:
            if rank == 0 and progress:
                print(f"{final}: already complete ({num} samples)", file=sys.stderr)
            return final if rank == 0 else None

        net = torch.compile(model) if compile else model
        shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
        mine = rank_batches(num, batch_size, rank, world)
        todo = [b for b in mine if not os.path.exists(shard_path(out, b[0]))]
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            total = sum(e - s for _, s, e in mine)
            bar = tqdm(
                total=total, initial=total - sum(e - s for _, s, e in todo), unit="img", dynamic_ncols=True
            )
        autocast = torch.autocast(dev.type, dtype=dtypes[dtype], enabled=dtype != "fp32")

        def make(start, end):
            indices = range(start, end)
            return _generate_batch(
                net, decoder, scaling_factor, indices, shape, cfg, classes, seed, steps, dev, autocast
            )

        # Every rank's batches end in one collective: a rank that fails alone must not leave the
        # others waiting for it, nor rank 0 assemble without its shards. Rank 0 then assembles
        # alone (minutes for 50k images: longer than NCCL lets the others wait at a collective).
        together(world, _make_batches, out, mine, make, png, bar)
        if rank != 0:
            return None
        return assemble(out, num, batch_size, settings, keep_shards)


def _make_batches(out: str, mine: list, make, png: bool, bar):
    """Sample each batch of ``mine`` without a shard (``make(start, end) -> (images, labels)``),
    then write its PNGs and its shard; rewrite the missing PNGs of finished ones."""
    try:
        for k, start, end in mine:
            indices = range(start, end)
            if not os.path.exists(shard_path(out, k)):
                images, labels = make(start, end)
                if png:
                    for i, image in zip(indices, images):
                        _write_png(png_path(out, i), image)
                arrays = {"images": images, "indices": np.arange(start, end)}
                if labels is not None:
                    arrays["labels"] = labels
                _save_npz(shard_path(out, k), **arrays)
                if bar is not None:
                    bar.update(end - start)
            elif png and not all(os.path.exists(png_path(out, i)) for i in indices):
                (images,) = read_shard(shard_path(out, k), "images")
                for i, image in zip(indices, images):
                    _write_png(png_path(out, i), image)
    finally:
        if bar is not None:
            bar.close()


def _load_decoder(cfg, ckpt: str, vae, vae_config, scaling_factor, dev):
    """``(VAE or None, scaling factor)`` for a model of config ``cfg``: a latent model needs one
    (:func:`meanflow.data.latents.load_vae_for_checkpoint`, as ``meanflow.sampler`` loads it)."""
    decoder = load_vae_for_checkpoint(cfg, ckpt, vae, vae_config, dev)
    if decoder is None:
        return None, scaling_factor
    return decoder, scaling_factor or latent_scale(decoder)[0]


def _generate_batch(net, decoder, scaling_factor, indices, shape, cfg, classes, seed, steps, dev, autocast):
    noise = noise_for(indices, shape, seed).to(dev)
    y = labels_for(indices, cfg.num_classes, classes, seed)
    with torch.no_grad():
        with autocast:
            x = sampler.sample(net, None if y is None else y.to(dev), steps=steps, noise=noise)
        images = decode_latents(decoder, x, scaling_factor) if decoder is not None else x.float()
    return sampler.to_uint8(images), None if y is None else y.numpy()


def assemble(out: str, num: int, batch_size: int, settings: dict, keep_shards: bool = False) -> str:
    """Stream the finished shards into ``out/samples.npz`` and mark the manifest complete."""
    ranges = batch_ranges(num, batch_size)
    missing = [k for k, _, _ in ranges if not os.path.exists(shard_path(out, k))]
    if missing:
        raise RuntimeError(
            f"{len(missing)} batches are unfinished (e.g. {missing[:5]}): run again to finish them"
        )
    final = os.path.join(out, NPZ)
    labels = None
    if settings["classes"] is not None:
        # Labels are tiny: read them first so that arr_1 can follow arr_0 in one pass.
        labels = np.concatenate([read_shard(shard_path(out, k), "labels")[0] for k, _, _ in ranges])

    def image_parts():
        for k, start, end in ranges:
            (images,) = read_shard(shard_path(out, k), "images")
            if images.shape[0] != end - start:
                raise ValueError(f"{shard_path(out, k)} has {images.shape[0]} images, expected {end - start}")
            yield images

    write_npz_streaming(final, num, image_parts(), labels)
    write_manifest(out, settings, complete=True, npz=NPZ)
    if not keep_shards:
        for k, _, _ in ranges:
            os.unlink(shard_path(out, k))
    return final


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meanflow.generate",
        allow_abbrev=False,
        description="Sample --num-samples images (PNGs + ADM .npz) from a MeanFlow model.",
    )
    p.add_argument("--ckpt", required=True, help="trainer checkpoint (.pt) or save_pretrained directory")
    p.add_argument("--out", required=True, help="output directory (resumable)")
    # torchrun's parser rejects "--num" as an ambiguous prefix of its --numa-binding, even after
    # the script name; the short spelling still works without torchrun.
    p.add_argument(
        "--num-samples",
        "--num",
        dest="num",
        type=int_at_least(1),
        default=50000,
        help="images to make (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int_at_least(1),
        default=1,
        help="network evaluations per image (1 = one step; default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=64,
        help="images per batch, per process; fixed for a resumable --out (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        help="image i's noise and label come from (seed, i) (default: 0)",
    )
    p.add_argument(
        "--classes",
        choices=("balanced", "random"),
        default="balanced",
        help="class-conditional models: image i gets class i %% num_classes (balanced, the "
        "default) or a random one",
    )
    add_weights_options(p)
    p.add_argument(
        "--vae",
        help="latent models: a local diffusers AutoencoderKL folder, a weights file, or 'random' "
        "(default: none, for a pixel model)",
    )
    p.add_argument(
        "--vae-config",
        help="AutoencoderKL config JSON for a weights file or 'random' (default sd-vae-ft-ema); "
        "alone: that architecture with random weights (tests/smoke runs)",
    )
    p.add_argument("--scaling-factor", type=float, help="latent scale (default: the VAE config's, 0.18215)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast dtype of the model (default: fp32)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (the default: cuda when available, else cpu), cpu, cuda (under torchrun, each "
        "process's LOCAL_RANK GPU) or cuda:N",
    )
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-png", action="store_true", help="only the .npz")
    p.add_argument(
        "--keep-shards", action="store_true", help="keep shards/*.npz (one per batch) after samples.npz"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.scaling_factor is not None:
        if not (args.vae or args.vae_config):
            p.error(
                "argument --scaling-factor: only with --vae or --vae-config (it scales latents for the VAE)"
            )
        if not (math.isfinite(args.scaling_factor) and args.scaling_factor > 0):
            p.error(f"argument --scaling-factor: must be a finite number > 0, got {args.scaling_factor}")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        with errors_as_one_line(p):
            path = run(
                args.ckpt,
                args.out,
                num=args.num,
                steps=args.steps,
                batch_size=args.batch_size,
                seed=args.seed,
                classes=args.classes,
                ema=None if args.raw else args.ema,
                vae=args.vae,
                vae_config=args.vae_config,
                scaling_factor=args.scaling_factor,
                dtype=args.dtype,
                device=args.device,
                png=not args.no_png,
                keep_shards=args.keep_shards,
                compile=args.compile,
                progress=not args.quiet,
            )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if path:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
