"""The read-failure limits of the image loaders (``data.max_read_failures``), exactly at their
edges: how many failures an epoch may have, when a class counts as lost, what a resumed rank
takes over from a checkpoint, and a batch of which nothing could be read."""

import os
import warnings

import numpy as np
import pytest

from meanflow.data.dali_images import DALIImageLoader, dali_available
from meanflow.data.image_folder import (
    FolderIndex,
    ImageReadError,
    ReadFailed,
    ReadFailureLog,
    TorchImageLoader,
    scan_image_folder,
)
from meanflow.data.synthetic import make_image_tree

needs_dali = pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"), reason="nvidia-dali-cuda130 is not installed"
)
SIZE = 8


def fake_index(class_sizes):
    """A FolderIndex of ``class_sizes[c]`` images of class ``c`` (names only: never read here)."""
    labels = np.repeat(np.arange(len(class_sizes)), class_sizes).astype(np.int64)
    files = [os.path.join(f"c{label}", f"img_{i}.jpg") for i, label in enumerate(labels)]
    return FolderIndex("/nowhere", [f"c{c}" for c in range(len(class_sizes))], files, labels)


def fail(*indices):
    return [ReadFailed(int(i), "OSError: injected") for i in indices]


def test_the_limit_allows_exactly_max_read_failures_of_an_epoch():
    """0.25 of 12 images: 3 failures go on, the 4th stops (spread over classes: none lost)."""
    index = fake_index([4, 4, 4])
    log = ReadFailureLog(index, images_per_epoch=12, max_fraction=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in (0, 4, 8):
            log.record(0, [i, i + 1], fail(i), last_of_epoch=False)
        assert log.total == 3
        with pytest.raises(ImageReadError, match=r"epoch 0: 4 of the 12 images"):
            log.record(0, [2, 3], fail(2), last_of_epoch=False)


def test_max_read_failures_zero_reads_a_clean_folder(tmp_path):
    """0 means no failure is tolerated, not that every batch fails."""
    root = str(tmp_path / "t")
    make_image_tree(root, classes=2, per_class=4, sides=(8, 12), extras=False)
    loader = TorchImageLoader(root, 4, image_size=SIZE, num_workers=0, cache=None, max_read_failures=0)
    it = iter(loader)
    for _ in range(5):  # two epochs and more
        x, _ = next(it)
        assert x.shape == (4, 3, SIZE, SIZE)
    assert loader.failures == 0


def test_a_class_counts_as_lost_after_enough_reads_of_it_failed():
    """A class of 6 images: one failed read in an epoch says little (no error at its end), all
    of 5 reads failing is a lost class (an error, though the 6th image was left out)."""
    index = fake_index([6, 6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log = ReadFailureLog(index, images_per_epoch=12, max_fraction=0.9)
        log.record(0, [0, 6, 7], fail(0), last_of_epoch=True)  # class 0 read once, and it failed
        assert log.total == 1
        log = ReadFailureLog(index, images_per_epoch=12, max_fraction=0.9)
        with pytest.raises(ImageReadError, match=r"every image read of class c0 \(5 reads\) failed"):
            log.record(1, [0, 1, 2, 3, 4, 6, 7], fail(0, 1, 2, 3, 4), last_of_epoch=True)


def test_max_read_failures_one_never_stops():
    index = fake_index([4, 4])
    log = ReadFailureLog(index, images_per_epoch=8, max_fraction=1)
    with pytest.warns(UserWarning, match="4 of the 8 images read on this rank failed"):
        log.record(0, range(8), fail(0, 1, 2, 3), last_of_epoch=True)  # all of class c0
    assert log.total == 4


def test_a_resumed_rank_does_not_take_over_another_ranks_failures():
    """A checkpoint holds rank 0's count: rank 1 resumes its epoch's count at zero (its own
    failures are not rank 0's), and keeps the run's total."""
    index = fake_index([4, 4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rank0 = ReadFailureLog(index, images_per_epoch=6, max_fraction=0.2)  # 1.2 failures
        rank0.record(0, [0, 4], fail(0), last_of_epoch=False)
        state = rank0.state_dict(0, 2)
        rank1 = ReadFailureLog(index, images_per_epoch=6, max_fraction=0.2)
        rank1.load_state_dict(state, 1, 2)
        rank1.record(0, [1, 5], fail(5), last_of_epoch=False)  # its first of the epoch: goes on
        assert rank1.total == 2
        again = ReadFailureLog(index, images_per_epoch=6, max_fraction=0.2)
        again.load_state_dict(state, 0, 2)  # rank 0 itself goes on counting
        with pytest.raises(ImageReadError, match=r"epoch 0: 2 of the 6 images"):
            again.record(0, [1, 5], fail(5), last_of_epoch=False)


@pytest.mark.parametrize("kind", ["torch", pytest.param("dali", marks=needs_dali)])
def test_a_batch_of_which_nothing_reads_stops_with_a_clear_error(tmp_path, kind):
    """Every image of a batch removed after the scan, under a limit that tolerates it: nothing
    is left to replace them with, so the loader stops and names the files."""
    root = str(tmp_path / "t")
    make_image_tree(root, classes=2, per_class=4, sides=(8, 12), extras=False)
    index = scan_image_folder(root, cache=None, workers=0)
    for i in range(len(index)):
        os.remove(index.path(i))
    make = TorchImageLoader if kind == "torch" else DALIImageLoader
    threads = {"num_workers": 0} if kind == "torch" else {"num_threads": 1}
    loader = make(None, 4, image_size=SIZE, index=index, max_read_failures=1, **threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ImageReadError, match=r"every image of a batch of 4 failed to read \(class_00"):
            next(iter(loader))


def test_an_epochs_first_failure_is_warned_at_once_and_the_rest_at_its_end():
    """One warning when an epoch's first read fails, one summing the epoch up at its end: not
    one per batch with a failure, which floods a long epoch's log."""
    log = ReadFailureLog(fake_index([4, 4, 4]), images_per_epoch=12, max_fraction=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch, last in (([0, 4], False), ([5, 9], False), ([8, 1], True)):
            log.record(0, batch, fail(batch[0]), last_of_epoch=last)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and log.total == 3, messages
    assert messages[0].startswith(f"epoch 0: could not read {os.path.join('c0', 'img_0.jpg')}")
    assert messages[1].startswith("epoch 0: 3 of the 6 images read on this rank failed")
