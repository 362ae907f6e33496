"""Image folders: the validating scan, the DALI pipeline and the PIL fallback, on a tiny tree
made on the fly (3 classes, a grayscale and a CMYK JPEG, a truncated JPEG, a fake .jpg, a
.txt, a nested folder). DALI runs on the CPU here; the gpu test runs its mixed decoder."""

import os
import shutil

import numpy as np
import pytest
import torch

from meanflow.config import TrainConfig
from meanflow.data import Loader, build_loader
from meanflow.data.dali_images import DALIImageLoader, dali_available, iterate_files
from meanflow.data.image_folder import TorchImageLoader, center_crop_arr, load_image, scan_image_folder
from meanflow.data.sharding import EpochPlan
from meanflow.data.synthetic import make_image_tree

# CI installs the test extra (DALI included): there a missing DALI fails instead of skipping.
needs_dali = pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"),
    reason="nvidia-dali-cuda130 is not installed (pip install -e .[data])",
)
BOTH = ["torch", pytest.param("dali", marks=needs_dali)]
SIZE = 32
LOADERS = {
    "dali": lambda root, bs, **kw: DALIImageLoader(root, bs, image_size=SIZE, num_threads=1, **kw),
    "torch": lambda root, bs, **kw: TorchImageLoader(root, bs, image_size=SIZE, num_workers=0, **kw),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images") / "train")
    expected = make_image_tree(root, classes=3, per_class=4, sides=(24, 90))  # some >= 2*SIZE: BOX path
    return root, expected


@pytest.fixture(scope="module")
def index(tree):
    return scan_image_folder(tree[0], cache=None, workers=0)


def test_scan_skips_corrupt_and_counts(tree, index):
    root, expected = tree
    s = index.summary
    assert (s["images"], s["corrupt"], s["not_image"]) == (expected["images"], 2, 1) == (len(index), 2, 1)
    assert s["converted"] == {"CMYK": 1, "L": 1} and s["formats"] == {"JPEG": 15}
    assert sorted(e.split(":")[0] for e in s["examples"]["corrupt"]) == [
        os.path.join("class_001", "not_really.jpg"),
        os.path.join("class_001", "truncated.jpg"),
    ]
    assert s["examples"]["not_image"] == [os.path.join("class_001", "notes.txt")]
    assert os.path.join("class_002", "nested", "deep.jpg") in index.files
    # labels: index of the class folder among the sorted names
    assert index.classes == ["class_000", "class_001", "class_002"]
    for rel, label in zip(index.files, index.labels):
        assert index.classes[label] == rel.split(os.sep)[0]
    assert "skipped 2 corrupt (class_001/not_really.jpg, class_001/truncated.jpg), 1 not image " in (
        index.describe()
    )
    assert "1 CMYK, 1 L" in index.describe()


def test_scan_cache_rescans_only_changed_files(tree, tmp_path):
    root = str(tmp_path / "copy")
    shutil.copytree(tree[0], root)
    cache = str(tmp_path / "scan.json")
    first = scan_image_folder(root, cache=cache, workers=0)
    assert first.summary["scanned_now"] == 17 and os.path.isfile(cache)
    again = scan_image_folder(root, cache=cache, workers=0)
    assert again.summary["scanned_now"] == 0 and again.files == first.files
    with open(os.path.join(root, "class_000", "img_0000.jpg"), "r+b") as f:  # now truncated
        f.truncate(200)
    changed = scan_image_folder(root, cache=cache, workers=0)
    assert changed.summary["scanned_now"] == 1 and changed.summary["corrupt"] == 3 and len(changed) == 14


def test_scan_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_image_folder(missing, cache=None)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"no class folders in .*flat.* \(it holds 1 images directly"):
        scan_image_folder(str(tmp_path / "flat"), cache=None)
    (tmp_path / "bad" / "cls").mkdir(parents=True)
    (tmp_path / "bad" / "cls" / "a.jpg").write_bytes(b"not a jpeg")
    cache = tmp_path / "out" / "scan.json"
    with pytest.raises(ValueError, match="no readable images under .*bad"):
        scan_image_folder(str(tmp_path / "bad"), cache=str(cache))
    assert not (tmp_path / "out").exists()  # prepare_latents' destination: nothing written
    with pytest.raises(TypeError, match="root"):
        scan_image_folder(3, cache=None)


def test_images_outside_class_folders_are_warned(tree, tmp_path):
    """Images lying in ROOT itself (an unfinished move into class folders) have no class: they
    are left out as before, but named in a warning instead of shrinking the data set silently."""
    root = str(tmp_path / "t")
    shutil.copytree(tree[0], root)
    first = scan_image_folder(root, cache=None, workers=0)
    for name in ("loose_a.jpg", "loose_b.png", "LOOSE_C.JPEG"):  # ImageNet's own files end in .JPEG
        shutil.copy(first.path(0), os.path.join(root, name))
    (tmp_path / "t" / "README.txt").write_text("not an image: no warning")
    with pytest.warns(
        UserWarning, match=r"ignoring 3 images directly under .*\(LOOSE_C.JPEG, loose_a.jpg, loose_b"
    ):
        index = scan_image_folder(root, cache=None, workers=0)
    assert index.files == first.files and index.summary == first.summary


def test_empty_class_is_kept_as_a_label_and_warned(tree, tmp_path):
    root = str(tmp_path / "t")
    shutil.copytree(tree[0], root)
    os.makedirs(os.path.join(root, "class_003"))
    with pytest.warns(UserWarning, match="class_003"):
        index = scan_image_folder(root, cache=None, workers=0)
    assert len(index.classes) == 4 and index.summary["empty_classes"] == ["class_003"]


def test_adm_center_crop_reference():
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, size=(150, 97, 3), dtype=np.uint8)  # short side 97 >= 2 * 32: one BOX halving
    out = center_crop_arr(Image.fromarray(arr), 32)
    half = Image.fromarray(arr).resize((48, 75), resample=Image.BOX)
    want = np.asarray(half.resize((32, 50), resample=Image.BICUBIC))[9:41]
    assert out.shape == (32, 32, 3) and np.array_equal(out, want)
    # ADM halves while the short side is >= 2 * size: at exactly 64 once, then no resize is left
    edge = rng.integers(0, 255, size=(100, 64, 3), dtype=np.uint8)
    halved = np.asarray(Image.fromarray(edge).resize((32, 50), resample=Image.BOX))[9:41]
    assert np.array_equal(center_crop_arr(Image.fromarray(edge), 32), halved)


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif", "gray16.pgm"])
def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path, name):
    """A 16-bit grayscale image (PIL's mode I;16 or I) reads as its levels * 255 / 65535,
    rounded, in each channel, as DALI decodes it (PIL's own conversion clips at 255: white)."""
    from PIL import Image

    levels = np.linspace(0, 65535, SIZE * SIZE).round().astype(np.uint16).reshape(SIZE, SIZE)
    path = str(tmp_path / name)
    Image.fromarray(levels).save(path)
    want = np.floor(levels.astype(np.float64) * 255 / 65535 + 0.5)  # by hand; SIZE x SIZE: no resize
    want = torch.from_numpy(np.stack([want] * 3)).float() / 127.5 - 1
    assert torch.equal(load_image(path, SIZE), want)
    if dali_available():
        x, ok = next(iterate_files([path], SIZE, 1, num_threads=1))
        assert ok.all() and (x[0] - want).abs().max() * 127.5 < 0.01


@needs_dali
@pytest.mark.parametrize("ext", ["png", "jpg", "webp"])
def test_dali_reads_the_pixels_as_stored_whatever_the_exif_orientation(tmp_path, ext):
    """PIL (ADM's crops, the reference) does not turn an image by its EXIF orientation tag; DALI's
    decoder must not either, or the two loaders train on differently turned images."""
    from PIL import Image

    stored = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    stored[:, : SIZE // 2] = 250  # left half white: any turn or mirror moves it
    want = torch.from_numpy(stored).permute(2, 0, 1).float() / 127.5 - 1  # by hand; no resize
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = str(tmp_path / f"turned{orientation}.{ext}")
        Image.fromarray(stored).save(path, exif=exif, **({"quality": 100} if ext == "jpg" else {}))
        for device in ["cpu"] + ["cuda"] * torch.cuda.is_available():  # nvJPEG's decode too
            x, ok = next(iterate_files([path], SIZE, 1, device=device, num_threads=1))
            assert ok.all() and (x[0].cpu() - want).abs().mean() * 127.5 < 1, (orientation, device)
        assert (load_image(path, SIZE) - want).abs().mean() * 127.5 < 1, orientation


def test_flip_mirrors_left_to_right(index):
    """The random flip is horizontal: the flipped image is the unflipped one with its columns reversed."""
    for i in range(3):
        image = load_image(index.path(i), SIZE)
        assert torch.equal(load_image(index.path(i), SIZE, flip=True), image.flip(-1))
        assert not torch.equal(image.flip(-1), image.flip(-2))


@needs_dali
def test_dali_matches_the_adm_crop(index):
    """DALI's single antialiased cubic resize vs ADM's BOX + BICUBIC: close, same crop window."""
    paths = [index.path(i) for i in range(len(index))]
    got = torch.cat([x for x, ok in iterate_files(paths, SIZE, 4, num_threads=1)])
    want = torch.stack([load_image(p, SIZE) for p in paths])
    diff = (got - want).abs() * 127.5  # in 8-bit levels
    assert got.shape == (15, 3, SIZE, SIZE) and got.dtype == torch.float32
    assert diff.mean() < 1.5 and diff.mean(dim=(1, 2, 3)).max() < 3, diff.mean(dim=(1, 2, 3))
    # a one-pixel shift of the crop window or a flip would be far larger
    assert (got - want.flip(-1)).abs().mean() * 127.5 > 3 * diff.mean()


@needs_dali
@pytest.mark.parametrize("height, width, size", [(70, 64, 48), (64, 70, 48), (335, 320, 224)])
def test_dali_rounds_the_resized_side_as_adm(tmp_path, height, width, size):
    """ADM resizes the long side to round(side * size / short): 52.5 -> 52 and 234.5 -> 234 here
    (Python rounds half to even). Rounded up, DALI would resample the whole image to one pixel
    more than PIL: 6 levels of 255 apart on average, where the crops otherwise agree to ~0.2."""
    from PIL import Image

    from meanflow.data.synthetic import synthetic_image

    path = str(tmp_path / "tie.png")
    Image.fromarray(synthetic_image(height, width, np.random.default_rng(0), noise=20)).save(path)
    want = load_image(path, size)
    for exact in (False, True):
        x, ok = next(iterate_files([path], size, 1, num_threads=1, exact=exact))
        assert ok.all() and (x[0] - want).abs().mean() * 127.5 < 0.5, exact


@pytest.mark.parametrize("kind", BOTH)
@pytest.mark.parametrize(
    "keyword, value",
    [("image_size", 0), ("image_size", True), ("image_size", 16.0), ("batch_size", 0), ("batch_size", True)],
)
def test_bad_sizes_are_refused_naming_them(index, kind, keyword, value):
    """A size that is not an int >= 1 is refused before anything is read (True is a flag passed
    where a size goes, not one pixel or a batch of one)."""
    make = {"dali": DALIImageLoader, "torch": TorchImageLoader}[kind]
    kwargs = {"batch_size": 2, "image_size": SIZE, keyword: value}
    with pytest.raises(ValueError, match=rf"^{keyword} must be an int >= 1, got {value!r}$"):
        make(None, index=index, **kwargs)


@pytest.mark.parametrize("kind", BOTH)
def test_batches_shapes_range_labels(index, kind):
    loader = LOADERS[kind](None, 4, index=index, seed=1)
    assert isinstance(loader, Loader) and (loader.channels, loader.image_size, loader.num_classes) == (
        3,
        SIZE,
        3,
    )
    assert len(loader) == 3  # 15 images // 4: 3 batches per epoch, 3 images left over (others each epoch)
    it = iter(loader)
    order = EpochPlan(15, 4, seed=1).rank_order(0)[0]
    for b in range(3):
        x, y = next(it)
        assert x.shape == (4, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.dtype == torch.long
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.05
        assert torch.equal(y, torch.as_tensor(index.labels[order[4 * b : 4 * b + 4]]))
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["position"] == 3


@needs_dali
def test_dali_and_torch_agree_sample_by_sample(index):
    """Same seed -> same files, same flips, same labels; pixels differ only by the resize filter."""
    dali, ref = (
        iter(LOADERS["dali"](None, 5, index=index, seed=4)),
        iter(LOADERS["torch"](None, 5, index=index, seed=4)),
    )
    flips = EpochPlan(15, 5, seed=4).epoch_order(0)[1]
    assert 0 < flips.sum() < 15  # both orientations occur
    for _ in range(3):
        (x, y), (xr, yr) = next(dali), next(ref)
        assert torch.equal(y, yr)
        per_sample = (x - xr).abs().mean(dim=(1, 2, 3)) * 127.5
        assert per_sample.max() < 3, per_sample


@pytest.mark.parametrize("kind", BOTH)
def test_two_ranks_concatenate_to_one_rank(index, kind):
    one = iter(LOADERS[kind](None, 4, index=index, seed=2))
    two = [iter(LOADERS[kind](None, 2, rank=r, world_size=2, index=index, seed=2)) for r in range(2)]
    for _ in range(5):  # crosses an epoch boundary
        x, y = next(one)
        parts = [next(it) for it in two]
        assert torch.equal(y, torch.cat([p[1] for p in parts]))
        assert torch.equal(x, torch.cat([p[0] for p in parts]))


def test_two_shards_cover_the_set_exactly_once():
    for n, shuffle in ((16, True), (16, False), (19, True)):
        plans = [EpochPlan(n, 4, rank=r, world_size=2, seed=7, shuffle=shuffle) for r in range(2)]
        for epoch in range(3):
            a, b = (p.rank_order(epoch)[0] for p in plans)
            used = 8 * (n // 8)
            assert len(a) == len(b) == used // 2 and not set(a) & set(b)
            assert sorted(np.concatenate([a, b])) == sorted(plans[0].epoch_order(epoch)[0][:used])
            if n == 16:
                assert sorted(np.concatenate([a, b])) == list(range(16))


@pytest.mark.parametrize("kind", BOTH)
def test_resume_at_a_position(index, kind):
    a = LOADERS[kind](None, 4, index=index, seed=3)
    it = iter(a)
    for _ in range(4):  # one epoch (3 batches) and one more
        next(it)
    state = a.state_dict()
    assert (state["epoch"], state["position"]) == (1, 1)
    b = LOADERS[kind](None, 4, index=index, seed=0)
    b.load_state_dict(state)
    itb = iter(b)
    for _ in range(4):
        (xa, ya), (xb, yb) = next(it), next(itb)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@needs_dali
def test_dali_decode_error_falls_back_to_pil(index, tree):
    """A file the scan did not catch: the batch comes from PIL, the bad image is replaced."""
    bad = os.path.join(tree[0], "class_001", "truncated.jpg")
    files = list(index.files)
    files[0] = os.path.relpath(bad, index.root)
    broken = type(index)(index.root, index.classes, files, index.labels, index.summary)
    loader = DALIImageLoader(
        None, 5, image_size=SIZE, num_threads=1, index=broken, flip=False, max_read_failures=0.1
    )
    loader.plan.shuffle = False
    with pytest.warns(UserWarning) as caught:
        batches = [next(it) for it in [iter(loader)] for _ in range(3)]
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("DALI failed") for m in messages), messages
    assert any(m.startswith("epoch 0: could not read class_001/truncated.jpg") for m in messages), messages
    assert loader.failures == 1 and loader.fallback_batches == 1
    assert all(x.shape == (5, 3, SIZE, SIZE) for x, _ in batches)
    good = torch.stack([load_image(index.path(i), SIZE) for i in range(1, 5)])
    assert (batches[0][0][1:] - good).abs().mean() < 1e-6  # the PIL batch is the exact ADM crop
    assert torch.equal(batches[0][0][0], batches[0][0][1])  # the bad image replaced by a good one
    assert loader.state_dict()["position"] == 3


@needs_dali
def test_registered_builder(tree, tmp_path):
    config = TrainConfig(batch_size=4)
    config.data.name = "imagefolder"
    with pytest.raises(ValueError, match="data.path"):
        build_loader(config, 0, 1, "cpu")
    root = str(tmp_path / "t")
    shutil.copytree(tree[0], root)
    config.data.path, config.data.image_size, config.data.num_workers = root, SIZE, 1
    for backend, cls in (("dali", DALIImageLoader), ("torch", TorchImageLoader)):
        config.data.backend = backend
        loader = build_loader(config, 1, 2, "cpu")
        assert type(loader) is cls and loader.batch_size == 2 and loader.rank == 1
        x, y = next(iter(loader))
        assert x.shape == (2, 3, SIZE, SIZE) and y.shape == (2,)
    assert os.path.isfile(os.path.join(root, ".meanflow_scan.json"))  # the scan cache
    config.data.backend = "nvjpeg"
    with pytest.raises(ValueError, match="data.backend"):
        build_loader(config, 0, 1, "cpu")


@needs_dali
def test_size_parameter(index):
    loader = DALIImageLoader(None, 2, image_size=48, num_threads=1, index=index)
    x, _ = next(iter(loader))
    assert x.shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match=r"batch_size 16 \(8 per rank x 2 ranks\) exceeds the 15 samples"):
        DALIImageLoader(None, 8, world_size=2, index=index)


@pytest.mark.gpu
@needs_dali
def test_gpu_mixed_decode_matches_cpu(index):
    gpu = DALIImageLoader(None, 5, device="cuda", image_size=SIZE, num_threads=2, index=index, seed=5)
    cpu = DALIImageLoader(None, 5, device="cpu", image_size=SIZE, num_threads=2, index=index, seed=5)
    for (xg, yg), (xc, yc) in zip(iter(gpu), iter(cpu)):
        assert gpu.device_id is not None, "DALI fell back to CPU decode (see the warning)"
        assert xg.is_cuda and yg.is_cuda and torch.equal(yg.cpu(), yc)
        assert (xg.cpu() - xc).abs().mean() * 127.5 < 2  # nvJPEG's IDCT vs libjpeg-turbo's
        if gpu.state_dict()["epoch"] == 2:
            break


def test_torch_loader_with_workers_is_the_same_stream(index):
    """One DataLoader for all epochs (workers start once): same batches as in-process loading."""
    a = iter(TorchImageLoader(None, 4, image_size=SIZE, num_workers=2, index=index, seed=6))
    b = iter(TorchImageLoader(None, 4, image_size=SIZE, num_workers=0, index=index, seed=6))
    for _ in range(7):  # two epochs and more
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@needs_dali
@pytest.mark.skipif(torch.cuda.is_available(), reason="pretends a GPU that DALI cannot use")
def test_unusable_gpu_falls_back_to_cpu_decode(index):
    loader = DALIImageLoader(None, 4, image_size=SIZE, num_threads=1, index=index)
    loader.device_id = 0  # as if the device were cuda:0 but DALI could not use it
    with pytest.warns(UserWarning, match="decoding on the CPU"):
        x, y = next(iter(loader))
    assert loader.device_id is None and x.shape == (4, 3, SIZE, SIZE)


def test_without_dali_auto_means_torch(tree, index, monkeypatch, tmp_path):
    import meanflow.data.dali_images as dali_images

    monkeypatch.setattr(dali_images, "dali_available", lambda: False)
    root = str(tmp_path / "t")
    shutil.copytree(tree[0], root)  # the builder writes a scan cache into the tree
    config = TrainConfig(batch_size=2)
    config.data.name, config.data.path, config.data.image_size = "imagefolder", root, SIZE
    config.data.num_workers = 0
    assert type(build_loader(config, 0, 1, "cpu")) is TorchImageLoader
    with pytest.raises(ImportError, match="pip install nvidia-dali-cuda130"):
        DALIImageLoader(None, 2, index=index)


@pytest.mark.parametrize("kind", BOTH)
def test_an_epochs_read_failures_are_counted_across_a_resume(index, kind):
    """Two of an epoch's 12 images fail to read, one before a checkpoint and one after, with
    max_read_failures 0.1 (1.2 images): the resumed loader stops at the second as the
    uninterrupted one does. A loader state saved before the count was kept resumes at zero."""
    import warnings

    from meanflow.data.image_folder import ImageReadError

    files = list(index.files)
    files[1] = files[9] = os.path.join("class_000", "gone.jpg")  # in batches 0 and 2 of 4
    broken = type(index)(index.root, index.classes, files, index.labels, index.summary)

    def loader():
        made = LOADERS[kind](None, 4, index=broken, flip=False, max_read_failures=0.1)
        made.plan.shuffle = False
        return made

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = loader()
        next(iter(first))
        state = first.state_dict()
        assert first.failures == 1 and state["position"] == 1
        resumed = loader()
        resumed.load_state_dict(state)
        it = iter(resumed)
        next(it)
        with pytest.raises(ImageReadError, match=r"^epoch 0: 2 of the 12 images this rank reads per epoch"):
            next(it)
        assert resumed.failures == 2
        older = loader()
        older.load_state_dict({k: v for k, v in state.items() if k != "read_failures"})
        it = iter(older)
        next(it), next(it)  # the second failure of the epoch is its first
        assert older.failures == 1
