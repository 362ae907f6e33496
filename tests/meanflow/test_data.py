import pytest
import torch

from meanflow.config import TrainConfig
from meanflow.data import Loader, build_loader
from meanflow.data.mnist import MNISTLoader, load_mnist, to_pixels


def test_load_and_pixels(fake_mnist):
    images, labels = load_mnist("train", fake_mnist)
    assert images.shape == (96, 28, 28) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert load_mnist("test", fake_mnist)[0].shape == (40, 28, 28)
    x = to_pixels(images[:3])
    assert x.shape == (3, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()  # zero padding is black
    assert torch.allclose(x[:, 0, 2:30, 2:30], images[:3].float() / 127.5 - 1)


def test_shards_concatenate_to_the_single_rank_batch(fake_mnist):
    one = iter(MNISTLoader(8, 0, 1, "cpu", seed=3, path=fake_mnist))
    two = [iter(MNISTLoader(4, r, 2, "cpu", seed=3, path=fake_mnist)) for r in range(2)]
    for _ in range(30):  # crosses several epochs (12 batches each)
        x, y = next(one)
        parts = [next(it) for it in two]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(
            y, torch.cat([p[1] for p in parts])
        )


def test_state_dict_resumes_exactly(fake_mnist):
    a = MNISTLoader(8, 0, 1, "cpu", seed=1, path=fake_mnist)
    it = iter(a)
    for _ in range(17):
        next(it)
    b = MNISTLoader(8, 0, 1, "cpu", seed=1, path=fake_mnist)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == {"epoch": 1, "position": 5, "seed": 1, "num_samples": 96}
    itb = iter(b)
    for _ in range(10):
        (xa, ya), (xb, yb) = next(it), next(itb)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_order_is_the_seeded_permutation(fake_mnist):
    """Epoch e is randperm(n) from seed * 1_000_003 + e, read in global batches."""
    images, labels = load_mnist("train", fake_mnist)
    it = iter(MNISTLoader(8, 0, 1, "cpu", seed=3, path=fake_mnist))
    for epoch in range(2):
        perm = torch.randperm(96, generator=torch.Generator().manual_seed(3 * 1_000_003 + epoch))
        for b in range(12):
            x, y = next(it)
            idx = perm[8 * b : 8 * b + 8]
            assert torch.equal(x, to_pixels(images[idx])) and torch.equal(y, labels[idx])


def test_epochs_are_reshuffled(fake_mnist):
    it = iter(MNISTLoader(96, 0, 1, "cpu", seed=0, path=fake_mnist))
    (_, y0), (_, y1) = next(it), next(it)
    assert not torch.equal(y0, y1) and torch.equal(y0.sort().values, y1.sort().values)


def test_factory_and_protocol(fake_mnist):
    config = TrainConfig(batch_size=8)
    config.data.path = fake_mnist
    loader = build_loader(config, 1, 2, "cpu")
    assert isinstance(loader, Loader) and loader.batch_size == 4 and loader.num_classes == 10
    x, y = next(iter(loader))
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long


def test_bad_inputs(fake_mnist, tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST folder .*missing. does not exist"):
        load_mnist("train", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist("train", str(tmp_path))
    config = TrainConfig(batch_size=7)
    config.data.path = fake_mnist
    with pytest.raises(ValueError, match="batch_size 7"):
        build_loader(config, 0, 2, "cpu")
    config.data.name = "imagenet"
    with pytest.raises(ValueError, match="unknown data.name 'imagenet'"):
        build_loader(config, 0, 1, "cpu")


def test_broken_files_are_named(fake_mnist):
    """Every broken IDX file is one ValueError naming it, before any training starts."""
    import os

    import numpy as np
    from conftest import write_idx

    images = os.path.join(fake_mnist, "train-images-idx3-ubyte.gz")  # gzipped in fake_mnist
    whole = open(images, "rb").read()
    with open(images, "wb") as f:  # an interrupted download
        f.write(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is corrupt or cut short"):
        load_mnist("train", fake_mnist)

    raw = os.path.join(fake_mnist, "t10k-images-idx3-ubyte")  # raw in fake_mnist
    whole = open(raw, "rb").read()
    with open(raw, "wb") as f:
        f.write(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte holds \d+ bytes, .*\(40, 28, 28\)"):
        load_mnist("test", fake_mnist)

    write_idx(raw, np.zeros((40, 32, 32)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte holds \(32, 32\) images, not 28x28"):
        load_mnist("test", fake_mnist)

    write_idx(raw, np.zeros((40, 28, 28)))
    labels = os.path.join(fake_mnist, "t10k-labels-idx1-ubyte")
    write_idx(labels, np.arange(39) % 10)  # one label short: which of the two files is wrong?
    with pytest.raises(
        ValueError, match=r"t10k-images-idx3-ubyte and .*t10k-labels-idx1-ubyte hold 40 images but 39"
    ):
        load_mnist("test", fake_mnist)
    for top in (10, 25):  # 10 is the null class; EMNIST letters go up to 25
        write_idx(labels, np.arange(40) % (top + 1))
        with pytest.raises(ValueError, match=rf"labels-idx1-ubyte has labels up to {top}: MNIST's are 0-9"):
            load_mnist("test", fake_mnist)


def test_the_test_split_loader_iterates_the_test_digits(fake_mnist):
    """``MNISTLoader(split="test")`` is the 40 test images, each with its own label, not the
    training set."""
    test_x, test_y = load_mnist("test", fake_mnist)
    want = {bytes(image.numpy()): label.item() for image, label in zip(to_pixels(test_x), test_y)}
    x, y = next(iter(MNISTLoader(40, 0, 1, "cpu", path=fake_mnist, split="test")))
    assert {bytes(image.numpy()): label.item() for image, label in zip(x, y)} == want


def test_mnist_files_are_closed_after_reading(fake_mnist):
    """Reading both splits leaves no file to the garbage collector (a held handle per read)."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for split in ("train", "test"):
            load_mnist(split, fake_mnist)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_resume_onto_other_mnist_files_is_reported(fake_mnist):
    """The checkpoint's hash against the split's: equal or unrecorded is no change, another
    hash (Fashion-MNIST in MNIST's files) one line naming both."""
    from conftest import write_idx

    loader = MNISTLoader(8, 0, 1, "cpu", path=fake_mnist)
    recorded = dict(loader.data_identity)
    assert loader.data_changes(recorded) == [] and loader.data_changes({}) == []
    images, _ = load_mnist("train", fake_mnist)
    write_idx(f"{fake_mnist}/train-images-idx3-ubyte", 255 - images.numpy(), gz=True)
    changes = MNISTLoader(8, 0, 1, "cpu", path=fake_mnist).data_changes(recorded)
    assert len(changes) == 1 and changes[0].startswith("MNIST images and labels: sha256 ")
    assert recorded["sha256"][:12] in changes[0]
