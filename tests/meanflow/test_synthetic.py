"""The synthetic data of tests and benchmarks is what its arguments say: the same seed writes
the same bytes and another seed other images, sides within the range asked for (both ends
included), the counts a scan should find, and latent folders of the dtype, count and labels
their manifest records."""

import json
import os

import numpy as np
import pytest
from tree_snapshot import tree_snapshot

from meanflow.data.synthetic import make_image_tree, make_latent_folder


def test_an_image_tree_is_its_seed(tmp_path):
    trees = {}
    for name, seed in (("a", 0), ("again", 0), ("b", 1)):
        make_image_tree(str(tmp_path / name), classes=2, per_class=3, sides=(8, 12), seed=seed)
        trees[name] = tree_snapshot(tmp_path / name)
    assert trees["a"] == trees["again"]
    assert sorted(trees["a"]) == sorted(trees["b"])
    assert all(trees["a"][k] != trees["b"][k] for k in trees["a"] if k.endswith("img_0000.jpg"))


def test_image_sides_span_the_range_asked_for_both_ends_included(tmp_path):
    from PIL import Image

    make_image_tree(str(tmp_path / "fixed"), classes=1, per_class=2, sides=(16, 16), extras=False)
    make_image_tree(str(tmp_path / "two"), classes=2, per_class=10, sides=(8, 9), extras=False)
    sides = {"fixed": set(), "two": set()}
    for name in sides:
        for folder, _, files in os.walk(tmp_path / name):
            for file in files:
                with Image.open(os.path.join(folder, file)) as image:
                    sides[name].update(image.size)
    assert sides == {"fixed": {16}, "two": {8, 9}}


def test_the_counts_returned_are_those_written(tmp_path):
    """Every image is a readable JPEG except the truncated one and the text named .jpg."""
    from PIL import Image

    counts = make_image_tree(str(tmp_path / "tree"), classes=3, per_class=2, sides=(8, 12))
    readable, unreadable, other = 0, 0, 0
    for folder, _, files in os.walk(tmp_path / "tree"):
        for file in files:
            if not file.endswith(".jpg"):
                other += 1
                continue
            try:
                with Image.open(os.path.join(folder, file)) as image:
                    image.load()
                readable += 1
            except OSError:
                unreadable += 1
    assert (readable, unreadable, other) == (counts["images"], counts["corrupt"], counts["not_image"])
    assert counts["images"] == 3 * 2 + 3 and counts["corrupt"] == 2


def read_latents(root) -> tuple[dict, list, np.ndarray]:
    """The manifest, every latent file's array in order, and the labels of a latent folder."""
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    arrays, labels = [], []
    for shard in manifest["shards"]:
        folder = os.path.join(root, shard["name"])
        latents = sorted(n for n in os.listdir(folder) if n != "labels.npy")
        arrays += [np.load(os.path.join(folder, n)) for n in latents]
        labels.append(np.load(os.path.join(folder, "labels.npy")))
    return manifest, arrays, np.concatenate(labels)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_latent_folder_holds_what_its_manifest_says(tmp_path, dtype):
    """10 latents in shards of 4, 4 and 2: label i is ``i % classes`` across shards, every
    file is of the manifest's dtype and shape, and the standard deviations are positive."""
    root = make_latent_folder(
        str(tmp_path / "lat"), num=10, classes=3, shape=(2, 4, 4), dtype=dtype, shard_size=4
    )
    manifest, arrays, labels = read_latents(root)
    assert manifest["num_samples"] == len(arrays) == sum(s["count"] for s in manifest["shards"]) == 10
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 2]
    assert np.array_equal(labels, np.arange(10) % 3)
    assert {(a.dtype.name, a.shape) for a in arrays} == {(dtype, (1, 2, 2, 4, 4))}
    assert all((a[:, 1] >= 0).all() for a in arrays) and manifest["dtype"] == dtype


def test_a_latent_folder_is_its_seed(tmp_path):
    folders = {
        name: read_latents(make_latent_folder(str(tmp_path / name), num=3, shape=(1, 2, 2), seed=seed))[1]
        for name, seed in (("a", 0), ("again", 0), ("b", 1))
    }
    assert all(np.array_equal(x, y) for x, y in zip(folders["a"], folders["again"]))
    assert not any(np.array_equal(x, y) for x, y in zip(folders["a"], folders["b"]))
