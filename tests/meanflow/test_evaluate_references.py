"""What meanflow.evaluate takes as a reference: images of the samples' size (the extractor
resizes every image, so nothing else would show a mismatch), a class-folder training tree read
as the trainer reads it, and saved statistics that say what made them."""

import re

import numpy as np
import pytest

torch_fidelity = pytest.importorskip("torch_fidelity")

from fidelity_tiny import (  # noqa: E402
    RUN,
    TINY,
    TinyExtractor,
    adm_tree,
    as_uint8,
    cli_error,
    image_set,
    write_dir,
    write_npz,
)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402


@pytest.fixture
def no_extraction(monkeypatch):
    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the sizes were checked")

    monkeypatch.setattr(ev, "extract", extract)


def test_reference_images_of_another_size_are_refused(tmp_path, monkeypatch, capsys, no_extraction):
    """ADM's reference batches are at the samples' resolution (VIRTUAL_imagenet256 for 256x256
    samples): 16x16 samples against 32x32 reference images, in an .npz (with or without its
    statistics) or a folder, are refused in one line naming both sizes and the fix, before any
    features are extracted."""
    samples = write_npz(tmp_path / "samples.npz", as_uint8(image_set(n=8, size=16)))
    big = as_uint8(image_set(n=8, size=32))
    ref_npz = write_npz(tmp_path / "ref32.npz", big)
    ref_dir = write_dir(tmp_path / "ref32", big)
    adm_like = tmp_path / "adm_like.npz"
    np.savez(adm_like, arr_0=big, mu=np.zeros(16), sigma=np.eye(16))
    out = tmp_path / "fid.json"
    for reference, fix in (
        (ref_npz, "give a reference of 16x16 images (ADM's batch at that resolution"),
        (str(adm_like), "give a reference of 16x16 images (ADM's batch at that resolution"),
        (ref_dir, "read it with --ref-size 16"),
    ):
        for metrics in (["fid"], ["prc"], ["kid"]):
            with pytest.raises(ValueError) as refused:
                ev.evaluate(samples, reference, metrics=metrics, out=str(out), **RUN)
            message = str(refused.value)
            assert f"--ref {reference} holds " in message and "32x32" in message, message
            assert "and the samples are 16x16" in message
            assert fix in message and "\n" not in message
    err = cli_error(capsys, [samples, "--ref", ref_dir, "--feature-extractor", TINY, "--out", str(out)])
    assert "32x32" in err and "16x16" in err and "--ref-size 16" in err
    assert not out.exists()
    # the folder read through the crop to the samples' size is a reference, as are statistics
    # alone (they say nothing of a size) and the Inception Score (it never meets the reference)
    monkeypatch.undo()
    assert ev.evaluate(samples, ref_dir, metrics=["fid"], ref_size=16, **RUN)["ref_size"] == 16
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(16), sigma=np.eye(16))
    assert "fid" in ev.evaluate(samples, str(stats), metrics=["fid"], **RUN)
    assert "inception_score_mean" in ev.evaluate(samples, ref_npz, metrics=["isc"], **RUN)


def test_images_beside_statistics_of_center_crops_must_be_of_the_samples_size(tmp_path, monkeypatch):
    """An .npz of reference images with statistics of 16x16 center crops beside them (saved
    from a tree with --ref-size 16): the statistics fit 16x16 samples, and precision/recall and
    KID read the images, which must fit them too; 32x32 images are refused before extraction,
    not scored against the 16x16 samples after the extractor resized both."""
    tree, crops, _ = adm_tree(tmp_path, 16)
    samples = write_npz(tmp_path / "s.npz", as_uint8(image_set(n=20, size=16)))
    stats = tmp_path / "stats.npz"
    ev.evaluate(samples, tree, metrics=["fid"], ref_size=16, save_ref_stats=str(stats), **RUN)
    with np.load(stats) as data:
        members = {k: data[k] for k in data.files}
    assert str(members["crop_size"][()]) == "16"
    with np.load(crops) as data:
        np.savez(tmp_path / "fits.npz", arr_0=data["arr_0"], **members)
    np.savez(tmp_path / "big.npz", arr_0=as_uint8(image_set(n=20, size=32)), **members)
    fits = ev.evaluate(samples, str(tmp_path / "fits.npz"), metrics=["fid", "prc", "kid"], **RUN)
    assert fits["ref_size"] == 16 and fits["reference_stats"] == "precomputed"

    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the sizes were checked")

    monkeypatch.setattr(ev, "extract", extract)
    for metrics in (["prc"], ["kid"], ["fid", "prc"]):
        with pytest.raises(ValueError, match=r"big.npz holds 32x32 images and the samples are 16x16"):
            ev.evaluate(samples, str(tmp_path / "big.npz"), metrics=metrics, **RUN)


def test_non_square_samples_need_a_reference_of_their_size(tmp_path, no_extraction):
    """The center crop is square: for 16x8 samples the fix is a reference of 16x8 images."""
    wide = write_npz(tmp_path / "wide.npz", as_uint8(image_set(n=8, size=16)[:, :8]))
    square = write_npz(tmp_path / "square.npz", as_uint8(image_set(n=8, size=16)))
    with pytest.raises(ValueError, match=r"holds 16x16 images and the samples are 16x8: .*16x8 images"):
        ev.evaluate(wide, square, metrics=["fid"], **RUN)


def test_a_class_folder_tree_is_the_images_the_trainer_reads(tmp_path, capsys):
    """A training tree holds what the trainer's scan skips (notes.txt, a truncated JPEG, a
    non-image named .jpg) and may link a class folder from elsewhere. Read with --ref-size it is
    the images that scan keeps, in its order, told on stderr, not refused over a stray file;
    read as it is, a stray file is still refused, naming it and --ref-size."""
    from PIL import Image

    from meanflow.data.image_folder import center_crop_arr, scan_image_folder
    from meanflow.data.synthetic import make_image_tree

    tree = tmp_path / "train"
    make_image_tree(str(tree), classes=3, per_class=4, sides=(20, 48), extras=True)
    make_image_tree(str(tmp_path / "elsewhere"), classes=1, per_class=3, sides=(20, 48), extras=False, seed=1)
    (tree / "class_003").symlink_to(tmp_path / "elsewhere" / "class_000")
    index = scan_image_folder(str(tree), cache=None, workers=0)
    assert index.summary["not_image"] and index.summary["corrupt"] and index.labels[-1] == 3
    crops = []
    for i in range(len(index)):
        with Image.open(index.path(i)) as image:
            crops.append(center_crop_arr(image.convert("RGB"), 16))
    by_hand = write_npz(tmp_path / "crops.npz", np.stack(crops))
    samples = write_npz(tmp_path / "samples.npz", as_uint8(image_set(n=24, size=16)))
    metrics = ["fid", "prc", "kid"]
    want = ev.evaluate(samples, by_hand, metrics=metrics, **RUN)
    capsys.readouterr()
    got = ev.evaluate(samples, str(tree), metrics=metrics, ref_size=16, **{**RUN, "verbose": True})
    assert got["num_reference"] == len(index)
    for key in ("fid", "precision", "recall", "kid_mean"):
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    err = capsys.readouterr().err
    assert f"reference: {len(index)} images in 4 classes" in err and "notes.txt" in err
    with pytest.raises(
        ValueError, match=r"reference folder .*train holds files that are not images .*notes.txt"
    ):
        ev.evaluate(samples, str(tree), metrics=["fid"], **RUN)
    with pytest.raises(ValueError, match=r"read it as the trainer does with --ref-size"):
        ev.evaluate(samples, str(tree), metrics=["fid"], **RUN)
    # a folder of images only is no training tree: with --ref-size too, a stray file is refused
    flat = write_dir(tmp_path / "flat", as_uint8(image_set(n=4, size=16)))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"flat/notes.txt: move them away$"):
        ev.evaluate(samples, flat, metrics=["fid"], ref_size=16, **RUN)


@pytest.mark.parametrize("flag", ["--out", "--save-ref-stats"])
def test_a_bad_destination_is_refused_before_a_class_tree_is_scanned(tmp_path, monkeypatch, flag):
    """The scan of a training tree read with --ref-size takes minutes on ImageNet: a destination
    that would be refused at the end (here a folder) is refused before it, as promised."""
    from meanflow import evaluate_inputs
    from meanflow.data.synthetic import make_image_tree

    tree = tmp_path / "train"
    make_image_tree(str(tree), classes=2, per_class=2, sides=(20, 48), extras=False)
    samples = write_npz(tmp_path / "samples.npz", as_uint8(image_set(n=4, size=16)))

    def scan(*args, **kwargs):
        raise AssertionError("the tree was scanned before the destination was checked")

    monkeypatch.setattr(evaluate_inputs, "scan_image_folder", scan)
    where = {"--out": "out", "--save-ref-stats": "save_ref_stats"}[flag]
    with pytest.raises(ValueError, match=f"^{flag} .* is a directory"):
        ev.evaluate(samples, str(tree), ref_size=16, **{where: str(tmp_path)}, **RUN)


def test_saved_statistics_record_the_torch_fidelity_version(tmp_path):
    """The version whose extractor made the features, kept by a copy of them; not compared on
    reuse (the features of one extractor and weights file do not change with it)."""
    ref = write_npz(tmp_path / "ref.npz", as_uint8(image_set(n=8)))
    stats, copy = tmp_path / "stats.npz", tmp_path / "copy.npz"
    ev.evaluate(ref, ref, metrics=["fid"], save_ref_stats=str(stats), **RUN)
    ev.evaluate(ref, str(stats), metrics=["fid"], save_ref_stats=str(copy), **RUN)
    for path in (stats, copy):
        with np.load(path) as data:
            assert str(data["torch_fidelity"][()]) == torch_fidelity.__version__
        assert ev.reference_stats.is_stats(str(path))


FOLDER = "meanflow-test-folder-weights"  # takes a weights path that is not a file


class FolderWeightsExtractor(TinyExtractor):
    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)


if FOLDER not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(FOLDER, FolderWeightsExtractor)


def test_weights_that_are_not_a_file_are_recorded_unhashed(tmp_path, capsys):
    """A registered extractor given a weights path that is not a file (a folder, a name it
    resolves itself) records ``unhashed: PATH is not a file``: statistics made with one folder
    are refused for a run given another one or none (all three recorded "" and matched), and
    reused with the same path, saying that the weights themselves went unchecked."""
    ref = write_npz(tmp_path / "ref.npz", as_uint8(image_set(n=8)))
    a, b, stats = tmp_path / "weights_a", tmp_path / "weights_b", tmp_path / "stats.npz"
    a.mkdir()
    b.mkdir()
    run = {**RUN, "feature_extractor": FOLDER, "metrics": ["fid"]}
    ev.evaluate(ref, ref, weights_path=str(a), save_ref_stats=str(stats), **run)
    with np.load(stats) as data:
        assert str(data["weights_sha256"][()]) == f"unhashed: {a} is not a file"
    for other, shown in ((str(b), f"'unhashed: {b} is not a file'"), (None, "(no weights file)")):
        there = f"weights_sha256 'unhashed: {a} is not a file' there, {shown} in this run"
        with pytest.raises(ValueError, match=re.escape(there)):
            ev.evaluate(ref, str(stats), weights_path=other, **run)
    capsys.readouterr()
    assert abs(ev.evaluate(ref, str(stats), weights_path=str(a), **{**run, "verbose": True})["fid"]) < 1e-6
    assert f"record 'unhashed: {a} is not a file' for their weights" in capsys.readouterr().err


def test_saved_statistics_of_images_read_as_they_are_keep_their_size(tmp_path, capsys):
    """Statistics saved from 32x32 reference images (no --ref-size) record that size, and a copy
    of them keeps it: reused against 16x16 samples they are refused in one line naming --ref and
    both sizes, before any features are extracted. Statistics that record no size (an older
    file, ADM's mu/sigma) are used as before."""
    samples = write_npz(tmp_path / "samples.npz", as_uint8(image_set(n=8, size=16)))
    big = write_npz(tmp_path / "ref32.npz", as_uint8(image_set(n=8, size=32)))
    wide = write_npz(tmp_path / "wide.npz", as_uint8(image_set(n=8, size=32)[:, :16]))
    stats, copy, wide_stats = tmp_path / "stats.npz", tmp_path / "copy.npz", tmp_path / "wide_stats.npz"
    ev.evaluate(big, big, metrics=["fid"], save_ref_stats=str(stats), **RUN)
    ev.evaluate(big, str(stats), metrics=["fid"], save_ref_stats=str(copy), **RUN)
    ev.evaluate(wide, wide, metrics=["fid"], save_ref_stats=str(wide_stats), **RUN)
    for path, shown in ((stats, "32x32"), (copy, "32x32"), (wide_stats, "32x16")):
        with np.load(path) as data:
            assert str(data["image_size"][()]) == shown and "crop_size" not in data.files
        assert ev.reference_stats.is_stats(str(path))
    # the same size scores as the images do
    assert abs(ev.evaluate(big, str(stats), metrics=["fid"], **RUN)["fid"]) < 1e-6
    out = tmp_path / "fid.json"
    for path in (stats, copy):
        with pytest.raises(ValueError) as refused:
            ev.evaluate(samples, str(path), metrics=["fid"], out=str(out), **RUN)
        message = str(refused.value)
        assert f"--ref {path} holds statistics of 32x32 images and the samples are 16x16" in message
        assert "--save-ref-stats" in message and "--ref-size 16" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"statistics of 16x32 images and the samples are 32x16"):
        ev.evaluate(wide, str(turned_size(tmp_path, wide_stats)), metrics=["fid"], **RUN)
    err = cli_error(capsys, [samples, "--ref", str(stats), "--feature-extractor", TINY, "--out", str(out)])
    assert "--ref" in err and "32x32" in err and "16x16" in err
    assert not out.exists()
    # a record without a size (statistics written before it was kept) reads as before
    with np.load(stats) as data:
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "image_size"})
    assert "fid" in ev.evaluate(samples, str(tmp_path / "old.npz"), metrics=["fid"], **RUN)
    for bad in ("32", "0x32", "32x", "ax32", "32x32x3"):
        with np.load(stats) as data:
            np.savez(tmp_path / "bad.npz", **{**{k: data[k] for k in data.files}, "image_size": np.str_(bad)})
        with pytest.raises(ValueError, match=r"bad.npz has a damaged feature record \(image_size"):
            ev.evaluate(big, str(tmp_path / "bad.npz"), metrics=["fid"], **RUN)


def turned_size(tmp_path, path):
    """A copy of the statistics at ``path`` that records their size turned by 90 degrees."""
    with np.load(path) as data:
        members = {k: data[k] for k in data.files}
    w, h = str(members["image_size"][()]).split("x")
    turned = tmp_path / "turned.npz"
    np.savez(turned, **{**members, "image_size": np.str_(f"{h}x{w}")})
    return turned


def test_16_bit_grayscale_references_are_read_as_the_trainer_reads_them(tmp_path):
    """A 16-bit grayscale PNG, TIFF or PGM in a reference folder is its levels * 255 / 65535,
    rounded, as the trainer's loader and DALI read it, as it is or through --ref-size's crop
    (PIL's own conversion clips every level above 255: an image of white)."""
    from PIL import Image

    from meanflow.data.image_folder import load_image
    from meanflow.evaluate_inputs import ImageSet

    side = 12
    levels = np.linspace(0, 65535, side * side).round().astype(np.uint16).reshape(side, side)
    folder = tmp_path / "ref"
    folder.mkdir()
    names = ["gray16.pgm", "gray16.png", "gray16.tif"]  # list_images' sorted order
    for name in names:
        Image.fromarray(levels).save(folder / name)
    want = np.floor(levels.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)  # by hand
    for crop in (None, side):
        (batch,) = ImageSet(str(folder), "reference", crop).batches(len(names))
        assert np.array_equal(batch.numpy(), np.broadcast_to(want, (len(names), 3, side, side))), crop
    trained = load_image(str(folder / names[1]), side)
    assert np.array_equal(((trained + 1) * 127.5).round().numpy(), batch[1].numpy())
