"""What a loader reads is what the data set holds: every label with its own sample, every rank
with the same list of samples, and the samples an epoch leaves out said, not silent."""

import os

import numpy as np
import pytest

from meanflow.data.latents import LatentIndex
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
