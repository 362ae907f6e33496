"""Synthetic ImageNet-style trees for tests and benchmarks (no data set to download).

Each image is a smooth two-colour gradient in a random direction with mild noise, so
JPEGs compress like photographs and every image is distinguishable from the others.
"""

import os

import numpy as np


def synthetic_image(height, width, rng, noise=4.0) -> np.ndarray:
    """uint8 ``(height, width, 3)``: a random-direction gradient between two random colours,
    plus Gaussian noise of std ``noise`` (more noise = larger, slower-to-decode JPEGs)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1) / 2
    a, b = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    image = a * (1 - t[..., None]) + b * t[..., None] + rng.normal(0, noise, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_tree(
    root, classes=3, per_class=4, sides=(40, 100), seed=0, extras=True, quality=90, noise=4.0
):
    """Write ``classes`` class folders ``class_000 ..`` of ``per_class`` RGB JPEGs (sides drawn
    from ``sides``) under ``root``. With ``extras``: the first class also gets a grayscale and
    a CMYK JPEG, the second a truncated JPEG, a non-image with a .jpg name and a ``notes.txt``,
    the last an image in a nested folder. Returns the expected scan counts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = [f"class_{c:03d}" for c in range(classes)]

    def image():
        h, w = rng.integers(sides[0], sides[1] + 1, size=2)
        return Image.fromarray(synthetic_image(int(h), int(w), rng, noise))

    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image().save(os.path.join(root, name, f"img_{i:04d}.jpg"), quality=quality)
    counts = {"images": classes * per_class, "corrupt": 0, "not_image": 0, "converted": {}}
    if extras:
        first, second, last = (os.path.join(root, names[k]) for k in (0, min(1, classes - 1), -1))
        image().convert("L").save(os.path.join(first, "gray.jpg"), quality=quality)
        image().convert("CMYK").save(os.path.join(first, "cmyk.jpg"), quality=quality)
        path = os.path.join(second, "truncated.jpg")
        image().save(path, quality=quality)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with open(os.path.join(second, "not_really.jpg"), "wb") as f:
            f.write(b"this is not an image\n" * 8)
        with open(os.path.join(second, "notes.txt"), "w") as f:
            f.write("not an image\n")
        os.makedirs(os.path.join(last, "nested"), exist_ok=True)
        image().save(os.path.join(last, "nested", "deep.jpg"), quality=quality)
        counts = {
            "images": classes * per_class + 3,
            "corrupt": 2,
            "not_image": 1,
            "converted": {"CMYK": 1, "L": 1},
        }
    return counts


def make_latent_folder(root, num=256, classes=10, shape=(4, 32, 32), flips=1, dtype="float32",
                       shard_size=4096, seed=0) -> str:  # fmt: skip
    """A latent folder in ``prepare_latents``' layout with random moments (no VAE, no images):
    for reader benchmarks and tests. Returns ``root``."""
    from ..checkpoint import write_json_atomic
    from .latents import FORMAT, MANIFEST

    rng = np.random.default_rng(seed)
    shards = []
    for k, start in enumerate(range(0, num, shard_size)):
        count, name = min(shard_size, num - start), f"shard_{k:05d}"
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(count):
            moments = rng.standard_normal((flips, 2, *shape), dtype=np.float32)
            moments[:, 1] = np.abs(moments[:, 1]) * 0.05
            np.save(os.path.join(root, name, f"{i:06d}.npy"), moments.astype(dtype))
        np.save(
            os.path.join(root, name, "labels.npy"),
            (np.arange(start, start + count) % classes).astype(np.int64),
        )
        shards.append({"name": name, "start": start, "images": count, "count": count, "done": True})
    manifest = {
        "format": FORMAT,
        "version": 1,
        "source": "synthetic",
        "vae": {"weights": "none"},
        "scale_factor": 0.18215,
        "shift_factor": 0.0,
        "latent_shape": list(shape),
        "flips": flips,
        "dtype": dtype,
        "classes": [f"class_{c:03d}" for c in range(classes)],
        "shards": shards,
        "num_samples": num,
        "complete": True,
    }
    write_json_atomic(os.path.join(root, MANIFEST), manifest, indent=1)
    return root
