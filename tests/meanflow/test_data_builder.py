"""build_loader's choices for an image folder: the backend "auto" picks, and a global batch
the ranks cannot share evenly."""

import os
import shutil

import pytest

from meanflow.config import TrainConfig
from meanflow.data import build_loader
from meanflow.data.dali_images import DALIImageLoader, dali_available
from meanflow.data.synthetic import make_image_tree


@pytest.fixture
def config(tmp_path):
    config = TrainConfig(batch_size=4)
    root = str(tmp_path / "t")
    make_image_tree(root, classes=2, per_class=4, sides=(8, 12), extras=False)
    config.data.name, config.data.path, config.data.image_size, config.data.num_workers = (
        "imagefolder",
        root,
        8,
        0,
    )
    return config


@pytest.mark.skipif(not dali_available() and not os.environ.get("CI"), reason="nvidia-dali is not installed")
def test_auto_means_dali_where_it_is_installed(config):
    config.data.backend = "auto"
    loader = build_loader(config, 0, 1, "cpu")
    assert type(loader) is DALIImageLoader
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4,)


def test_a_batch_the_ranks_cannot_share_evenly_is_refused(config):
    """batch_size 6 over 4 ranks would give each 1 (6 // 4): a third of every batch lost."""
    config.batch_size = 6
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by the world size 4"):
        build_loader(config, 0, 4, "cpu")
    shutil.rmtree(config.data.path)  # refused before the folder is even looked at
    with pytest.raises(ValueError, match="not divisible"):
        build_loader(config, 0, 4, "cpu")
