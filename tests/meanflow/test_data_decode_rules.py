"""The ADM center crop at its edges (a resized side that is not a whole number, an odd crop
margin, a short side of exactly 2 * size, many BOX halvings), in PIL and in DALI, and what the
DALI loader does where it hands a batch to PIL: flips, failed files, names it cannot open."""

import os
import warnings

import numpy as np
import pytest
import torch

from meanflow.data import image_folder
from meanflow.data.dali_images import DALIImageLoader, dali_available, dali_device_id
from meanflow.data.image_folder import FolderIndex, TorchImageLoader, center_crop_arr, load_image
from meanflow.data.sharding import EpochPlan
from meanflow.data.synthetic import make_image_tree, synthetic_image

needs_dali = pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"), reason="nvidia-dali-cuda130 is not installed"
)


def noisy_png(path, height, width):
    from PIL import Image

    pixels = synthetic_image(height, width, np.random.default_rng(height * width), noise=40)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_adm_crop_rounds_the_long_side_and_floors_the_margin():
    """64 x 73 to 48: the long side is resized to round(73 * 0.75) = round(54.75) = 55 (not 54),
    and the crop starts at (55 - 48) // 2 = 3 (not 4), as ADM computes both."""
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 256, size=(64, 73, 3), dtype=np.uint8)
    by_hand = np.asarray(Image.fromarray(arr).resize((55, 48), resample=Image.BICUBIC))[:, 3:51]
    assert np.array_equal(center_crop_arr(Image.fromarray(arr), 48), by_hand)
    tall = np.ascontiguousarray(arr.transpose(1, 0, 2))  # 73 x 64: the same along the other axis
    by_hand = np.asarray(Image.fromarray(tall).resize((48, 55), resample=Image.BICUBIC))[3:51]
    assert np.array_equal(center_crop_arr(Image.fromarray(tall), 48), by_hand)


@needs_dali
@pytest.mark.parametrize(
    "height, width",
    [
        (64, 100),  # short side exactly 2 * size: one BOX halving, then no resize is left
        (1024, 1280),  # five halvings, all at even sides
        (39, 45),  # an odd crop margin (37 - 32 = 5 columns): ADM's offset is 2
        (45, 39),
    ],
)
def test_dali_follows_the_adm_crop_at_its_edges(tmp_path, height, width):
    """Where ADM's steps are exact (even halvings; a cubic step PIL rounds as DALI does), DALI's
    crop is PIL's to a fraction of a level: a halving skipped, or the crop window one pixel off,
    is levels apart on these noisy images."""
    from meanflow.data.dali_images import iterate_files

    path = noisy_png(tmp_path / "image.png", height, width)
    want = load_image(path, 32)
    for exact, bound in ((True, 0.15), (False, 0.6)):
        x, ok = next(iterate_files([path], 32, 1, num_threads=1, exact=exact))
        mean = float((x[0] - want).abs().mean() * 127.5)
        assert ok.all() and mean < bound, (exact, mean)


def tree_with_a_removed_image(tmp_path):
    root = str(tmp_path / "t")
    make_image_tree(root, classes=2, per_class=5, sides=(20, 40), extras=False)
    index = image_folder.scan_image_folder(root, cache=None, workers=0)
    order = EpochPlan(len(index), 5, seed=3).rank_order(0)[0]
    os.remove(index.path(order[2]))  # in the first batch of epoch 0
    return index


@needs_dali
def test_dalis_pil_batch_is_the_torch_loaders_batch_flips_included(tmp_path):
    """A batch DALI cannot read is decoded by PIL as the torch loader decodes it: the same
    images, flipped where the seed flips them, the failed one replaced alike."""
    index = tree_with_a_removed_image(tmp_path)
    flips = EpochPlan(len(index), 5, seed=3).rank_order(0)[1][:5]
    assert 0 < flips.sum() < 5  # both orientations in the batch
    dali = DALIImageLoader(None, 5, image_size=16, num_threads=1, index=index, seed=3, max_read_failures=0.5)
    torch_loader = TorchImageLoader(None, 5, image_size=16, num_workers=0, index=index, seed=3,
                                    max_read_failures=0.5)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (x, y), (xt, yt) = next(iter(dali)), next(iter(torch_loader))
    assert dali.fallback_batches == 1 and dali.failures == 1
    assert torch.equal(y, yt) and torch.equal(x, xt)


@pytest.mark.parametrize("reader", ["torch", pytest.param("dali", marks=needs_dali)])
def test_iterate_files_marks_the_files_it_could_not_read(tmp_path, reader):
    """prepare_latents keeps only the rows marked ok: a missing file's row is junk."""
    from meanflow.data import dali_images

    good = [noisy_png(tmp_path / f"{k}.png", 20 + k, 24) for k in range(2)]
    paths = [good[0], str(tmp_path / "missing.png"), good[1]]
    iterate = image_folder.iterate_files if reader == "torch" else dali_images.iterate_files
    threads = {"num_workers": 0} if reader == "torch" else {"num_threads": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chunks = list(iterate(paths, 16, 3, **threads))
    assert len(chunks) == 1
    x, ok = chunks[0]
    assert ok.tolist() == [True, False, True]
    if reader == "dali":  # the batch PIL decoded instead, said as the loader says it
        with pytest.warns(UserWarning, match=r"^DALI failed on a batch \(.*\); decoding it with PIL$"):
            list(iterate(paths, 16, 3, **threads))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            list(iterate(good, 16, 2, **threads))
    for row, path in ((0, good[0]), (2, good[1])):
        assert (x[row] - load_image(path, 16)).abs().mean() * 127.5 < 1


@needs_dali
def test_iterate_files_gives_pil_only_the_batch_that_fails(tmp_path):
    """DALI reads ahead: the run of the batch before an unreadable file fails too. That batch is
    still DALI's decode (latents are made under a manifest that says DALI); only the file's own
    batch goes to PIL, with one warning."""
    from meanflow.data.dali_images import iterate_files

    paths = [noisy_png(tmp_path / f"{k}.png", 20 + k, 24) for k in range(6)]
    dali_alone = [x for x, _ in iterate_files(paths[:4], 16, 2, num_threads=1)]
    paths[4] = str(tmp_path / "missing.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = list(iterate_files(paths, 16, 2, num_threads=1))
    assert [str(w.message) for w in caught if "DALI failed" in str(w.message)] == [
        "DALI failed on a batch (File mapping failed: " + paths[4] + "); decoding it with PIL"
    ], [str(w.message) for w in caught]
    assert [ok.tolist() for _, ok in chunks] == [[True, True], [True, True], [False, True]]
    assert torch.equal(chunks[0][0], dali_alone[0]) and torch.equal(chunks[1][0], dali_alone[1])
    assert (chunks[2][0][1] - load_image(paths[5], 16)).abs().mean() * 127.5 < 1


@needs_dali
def test_the_dali_loader_refuses_a_name_that_is_not_utf8_before_it_runs():
    files = [os.path.join("a", "ok.jpg"), os.path.join("a", "caf\udce9.jpg")]  # latin-1 bytes on disk
    index = FolderIndex("/data", ["a"], files, np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"caf\\xe9.jpg'.* not UTF-8.*train with data.backend torch"):
        DALIImageLoader(None, 1, index=index)
    # the same bytes in the folder above the classes: DALI opens whole paths
    index = FolderIndex("/caf\udce9", ["a"], [os.path.join("a", "ok.jpg")], np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match=r"caf\\xe9/a/ok.jpg'.* not UTF-8"):
        DALIImageLoader(None, 1, index=index)


def test_dali_device_is_cpu_or_cuda():
    assert dali_device_id("cpu") is None
    with pytest.raises(ValueError, match="device must be cpu or cuda, got meta"):
        dali_device_id("meta")


@needs_dali
def test_dali_after_a_pil_batch_reads_the_torch_loaders_batches(tmp_path):
    """The pipeline DALI rebuilds after a batch it handed to PIL starts at the next batch with
    that batch's labels and flips: the rest of the epoch is the torch loader's, sample by
    sample (labels equal, pixels up to the resize filter's differences)."""
    index = tree_with_a_removed_image(tmp_path)  # in batch 1 of 5 at a batch size of 2
    kw = dict(image_size=16, index=index, seed=3, max_read_failures=0.5)
    dali = DALIImageLoader(None, 2, num_threads=1, **kw)
    torch_loader = TorchImageLoader(None, 2, num_workers=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = [(a, b) for _, a, b in zip(range(len(dali)), iter(dali), iter(torch_loader))]
    # One batch to PIL: not also the batch before it, whose run met the removed file read ahead.
    assert dali.fallback_batches == 1 and dali.failures == 1 and len(pairs) == 5
    for (x, y), (xt, yt) in pairs:
        assert torch.equal(y, yt)
        assert (x - xt).abs().mean(dim=(1, 2, 3)).max() * 127.5 < 3


@needs_dali
def test_dali_iterate_files_is_exact_by_default(tmp_path):
    """prepare_latents calls iterate_files with its defaults: latents are made once, so they
    take the cubic step in PIL's two rounded passes, not the training loader's single pass."""
    from meanflow.data.dali_images import iterate_files

    path = noisy_png(tmp_path / "image.png", 45, 70)
    default, exact, one_pass = (
        next(iterate_files([path], 32, 1, num_threads=1, **kw))[0]
        for kw in ({}, {"exact": True}, {"exact": False})
    )
    assert torch.equal(default, exact) and not torch.equal(exact, one_pass)
    want = load_image(path, 32)
    assert (exact - want).abs().mean() < (one_pass - want).abs().mean()


@needs_dali
def test_the_dali_loader_crops_odd_margins_itself(tmp_path):
    """The DALI loader's own crop (not a batch handed to PIL after an error) at an odd margin
    along either axis: PIL's crop to a fraction of a level."""
    root = tmp_path / "t"
    for c, (height, width) in enumerate([(39, 45), (45, 39)]):
        os.makedirs(root / f"c{c}")
        noisy_png(root / f"c{c}" / "a.png", height, width)
    index = image_folder.scan_image_folder(str(root), cache=None, workers=0)
    loader = DALIImageLoader(None, 2, image_size=32, num_threads=1, index=index, flip=False)
    loader.plan.shuffle = False
    x, _ = next(iter(loader))
    want = torch.stack([load_image(index.path(i), 32) for i in range(2)])
    assert loader.fallback_batches == 0 and (x - want).abs().mean() * 127.5 < 0.6
