"""Input-pipeline throughput: images/s of the DALI image pipeline against torch DataLoaders
with the same transforms, and latents/s of the DALI numpy reader against ``np.load``.

    python benchmarks/data_throughput.py                  # 512 JPEGs, 256x256 crops, CPU
    python benchmarks/data_throughput.py --device cuda    # adds DALI's GPU (nvJPEG) decode
    python benchmarks/data_throughput.py --quick          # seconds (smoke run)

Data are made on the fly in a temporary folder: a class tree of synthetic JPEGs (smooth
gradients with noise, quality 90, sides drawn from ``--sides``: by default ~80 KiB files of
about 400 x 400 px; ImageNet's train JPEGs average ~110 KiB at ~400 x 350)
and a latent folder in ``prepare_latents``' layout (random moments, ``(1, 2, 4, 32, 32)``
float32 = 32 KiB per file). Files are read from the page cache (they were just written), so
this measures decode + transform cost, not disk speed.

Rows (every loader yields float32 (B, 3, S, S) in [-1, 1] and labels on ``--device``):

  dali_cpu        DALIImageLoader, CPU decode, ``--workers`` DALI threads
  dali_gpu        DALIImageLoader, mixed (nvJPEG) decode (``--device cuda`` only)
  torchvision     torch DataLoader, ``--workers`` processes: PIL decode + torchvision
                  Resize(S, bicubic, antialias) + CenterCrop + RandomHorizontalFlip +
                  ToTensor + Normalize -- the same transform the DALI pipeline applies
  torch_adm       meanflow's fallback TorchImageLoader (PIL decode + the exact ADM crop)
  latents_dali    DALILatentLoader (numpy reader) incl. flip and posterior sampling
  latents_torch   TorchLatentLoader (DataLoader of np.load), the same work

Each row: one warm-up batch (pipeline build, worker start), then batches for at least
``--seconds`` (and one epoch of images at least, whole batches); samples/s = samples /
wall time. ``adm_diff`` on the DALI rows is the mean absolute difference of DALI's crops to
the exact ADM crops of the same files, in 8-bit levels. Results: a table on stdout and JSON
in ``--out-dir`` (default benchmarks/results/), the file name carrying the device name.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import _common as C  # noqa: E402
from meanflow.data.dali_images import dali_available  # noqa: E402
from meanflow.data.image_folder import TorchImageLoader, load_image, scan_image_folder  # noqa: E402
from meanflow.data.latents import DALILatentLoader, TorchLatentLoader  # noqa: E402
from meanflow.data.synthetic import make_image_tree, make_latent_folder  # noqa: E402

BENCHMARK = "data_throughput"


def torchvision_loader(index, size, batch, workers, device, seed):
    """A plain torchvision ImageFolder-style DataLoader with DALI's transform."""
    from PIL import Image
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )

    class Folder(torch.utils.data.Dataset):
        def __len__(self):
            return len(index)

        def __getitem__(self, i):
            with Image.open(index.path(i)) as im:
                return transform(im.convert("RGB")), int(index.labels[i])

    loader = torch.utils.data.DataLoader(
        Folder(),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,  # workers start once, as in the other rows
    )

    def endless():
        while True:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return endless()


def measure(batches, batch, min_samples, seconds, device):
    """``(samples/s, samples, seconds)`` after one warm-up batch."""
    x, _ = next(batches)
    C.sync(device)
    assert x.dtype == torch.float32
    count, start = 0, time.perf_counter()
    while count < min_samples or time.perf_counter() - start < seconds:
        x, y = next(batches)
        count += len(y)
    C.sync(device)
    elapsed = time.perf_counter() - start
    return count / elapsed, count, elapsed


def adm_difference(index, size, workers, device, limit=64):
    from meanflow.data.dali_images import iterate_files

    paths = [index.path(i) for i in range(min(limit, len(index)))]
    # exact=False: the crops of DALIImageLoader, the pipeline the dali rows time
    batches = iterate_files(paths, size, 16, device, num_threads=workers, exact=False)
    got = torch.cat([x.cpu() for x, _ in batches])
    want = torch.stack([load_image(p, size) for p in paths])
    return float((got - want).abs().mean() * 127.5)


def _images(text: str) -> int:
    """``--images``: the tree has 8 classes of as many JPEGs each, so a multiple of 8."""
    value = int(text) if text.strip().lstrip("+-").isdigit() else None
    if value is None or value < 8 or value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 (the tree's 8 classes), got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="where batches go; cuda adds the dali_gpu row")
    parser.add_argument("--quick", action="store_true", help="64 small images, short runs")
    parser.add_argument(
        "--images", type=_images, help="JPEGs in the tree, a multiple of 8 (8 classes; default 512; quick 64)"
    )
    parser.add_argument(
        "--sides", type=int, nargs=2, help="min/max image side (default 300 500; quick 80 120)"
    )
    parser.add_argument("--noise", type=float, default=20.0, help="pixel noise std: 20 gives ~80 KiB JPEGs")
    parser.add_argument("--size", type=int, help="crop size (default 256; quick 64)")
    parser.add_argument("--latents", type=int, help="latent files (default 2048; quick 128)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="DALI threads / DataLoader workers"
    )
    parser.add_argument("--seconds", type=float, help="time per row at least (default 10; quick 1)")
    parser.add_argument("--rows", nargs="+", help="subset of rows to run")
    parser.add_argument("--out-dir", default=str(C.RESULTS_DIR))
    args = parser.parse_args(argv)
    q = args.quick
    images = args.images or (64 if q else 512)
    sides = args.sides or ((80, 120) if q else (300, 500))
    size = args.size or (64 if q else 256)
    num_latents = args.latents or (128 if q else 2048)
    seconds = args.seconds if args.seconds is not None else (1.0 if q else 10.0)
    device = C.use_device(args.device)
    torch.set_num_threads(1)  # the loaders' own threads/workers do the work
    settings = dict(images=images, sides=list(sides), noise=args.noise, size=size, latents=num_latents,
                    batch=args.batch, workers=args.workers, seconds=seconds)  # fmt: skip
    payload = C.header(BENCHMARK, device, sys.argv if argv is None else argv, settings)
    versions = payload["versions"]
    for module in ("nvidia.dali", "torchvision", "PIL", "numpy"):
        try:
            versions[module] = __import__(module, fromlist=["_"]).__version__
        except Exception:
            versions[module] = None

    rows = []
    with tempfile.TemporaryDirectory(prefix="meanflow-data-bench-") as tmp:
        tree, latent_root = os.path.join(tmp, "train"), os.path.join(tmp, "latents")
        t0 = time.perf_counter()
        per_class = images // 8
        make_image_tree(
            tree, classes=8, per_class=per_class, sides=tuple(sides), extras=False, noise=args.noise
        )
        index = scan_image_folder(tree, cache=None)
        make_latent_folder(latent_root, num=num_latents, classes=8)
        mean_bytes = sum(os.path.getsize(index.path(i)) for i in range(len(index))) / len(index)
        print(f"data: {len(index)} JPEGs ({mean_bytes / 1024:.0f} KiB mean), {num_latents} latent files, "
              f"made in {time.perf_counter() - t0:.1f} s", flush=True)  # fmt: skip
        payload["data"] = {"jpegs": len(index), "jpeg_kib_mean": round(mean_bytes / 1024, 1)}
        have_dali = dali_available()
        cases = {
            "dali_cpu": (have_dali, "images"),
            "dali_gpu": (have_dali and device.type == "cuda", "images"),
            "torchvision": (True, "images"),
            "torch_adm": (True, "images"),
            "latents_dali": (have_dali, "latents"),
            "latents_torch": (True, "latents"),
        }
        for name, (available, unit) in cases.items():
            if args.rows and name not in args.rows:
                continue
            row = {"row": name, "unit": unit, "status": "ok"}
            if not available:
                row["status"] = "skipped: " + ("needs --device cuda" if have_dali else "DALI not installed")
                rows.append(row)
                continue
            try:
                common = dict(seed=0)
                if name in ("dali_cpu", "dali_gpu"):
                    from meanflow.data.dali_images import DALIImageLoader

                    where = "cpu" if name == "dali_cpu" else device
                    loader = DALIImageLoader(None, args.batch, device=where, image_size=size,
                                             num_threads=args.workers, index=index, **common)  # fmt: skip
                    batches = iter(loader)
                    row["adm_diff"] = round(adm_difference(index, size, args.workers, torch.device(where)), 3)
                elif name == "torchvision":
                    batches = torchvision_loader(index, size, args.batch, args.workers, device, 0)
                elif name == "torch_adm":
                    loader = TorchImageLoader(None, args.batch, device=device, image_size=size,
                                              num_workers=args.workers, index=index, **common)  # fmt: skip
                    batches = iter(loader)
                elif name == "latents_dali":
                    batches = iter(
                        DALILatentLoader(latent_root, args.batch, device=device, num_threads=args.workers)
                    )
                else:
                    batches = iter(
                        TorchLatentLoader(latent_root, args.batch, device=device, num_workers=args.workers)
                    )
                total = len(index) if unit == "images" else num_latents
                rate, count, elapsed = measure(
                    batches, args.batch, total - total % args.batch, seconds, device
                )
                row.update(per_s=round(rate, 1), samples=count, seconds=round(elapsed, 2))
                del batches
            except ImportError as e:
                row["status"] = f"skipped: {C.short_error(e)}"
            except Exception as e:  # a broken row is reported, the others still run
                row["status"] = f"failed: {C.short_error(e)}"
            rows.append(row)
            print(f"  {name}: {row.get('per_s', row['status'])}", flush=True)

    payload["rows"] = rows
    base = {r["row"]: r.get("per_s") for r in rows}
    for r in rows:
        ref = base.get("torchvision") if r["unit"] == "images" else base.get("latents_torch")
        r["x_torch"] = round(r["per_s"] / ref, 2) if r.get("per_s") and ref else None
    table = [
        [r["row"], r["unit"], r.get("per_s"), r.get("x_torch"), r.get("adm_diff"), r["status"]] for r in rows
    ]
    print(f"\n{payload['device']['name']}, {args.workers} workers/threads, batch {args.batch}, "
          f"{size}x{size} crops of {sides[0]}-{sides[1]} px JPEGs; latents 4x32x32 float32")  # fmt: skip
    print(C.format_table(table, ["row", "unit", "per_s", "x_torch", "adm_diff", "status"]))
    path = C.result_path(args.out_dir, BENCHMARK, device, q, "json", payload["settings"])
    C.write_json(path, payload)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
