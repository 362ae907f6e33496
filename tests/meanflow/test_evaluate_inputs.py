"""What meanflow.evaluate hands the extractor is the images named, every one of them, as they
are saved: whatever the batch size, from an .npz in either memory order, from a folder without
the hidden copies beside it (``.ipynb_checkpoints``), at the size a folder of wide images has;
and the report names the files it scored."""

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from fidelity_tiny import RUN, as_uint8, image_set, tiny_features, write_dir, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402
from meanflow import evaluate_inputs  # noqa: E402


@pytest.fixture
def extracted(monkeypatch):
    """``{role: features}`` of each set evaluate extracted in its last call."""
    seen = {}
    extract = ev.extract

    def spy(images, *args, **kwargs):
        seen[images.role] = extract(images, *args, **kwargs)["feat"]
        return {"feat": seen[images.role]}

    monkeypatch.setattr(ev, "extract", spy)
    return seen


@pytest.mark.parametrize("batch_size", [1, 4, 16, 64])
def test_every_image_is_extracted_as_saved_whatever_the_batch_size(tmp_path, extracted, batch_size):
    """21 samples and 19 reference images (no batch size divides both): each set's features are
    those of all its images, in order, as the arrays hold them; the report counts those."""
    samples, reference = as_uint8(image_set(n=21, seed=1)), as_uint8(image_set(n=19, seed=2)[:, :, ::-1])
    report = ev.evaluate(
        write_npz(tmp_path / "s.npz", samples),
        write_dir(tmp_path / "ref", reference),
        metrics=["fid"],
        **{**RUN, "batch_size": batch_size},
    )
    for role, array in (("samples", samples), ("reference", reference)):
        assert torch.allclose(extracted[role], tiny_features(array).double(), rtol=1e-6, atol=1e-6), role
    assert report["num_samples"] == len(extracted["samples"]) == 21
    assert report["num_reference"] == len(extracted["reference"]) == 19


def test_an_npz_saved_in_fortran_order_holds_its_images(tmp_path, extracted):
    """``np.savez`` of a transposed or ``asfortranarray`` array stores it in Fortran order; the
    memory-mapped read must lay it out as the array was, not as C order over the same bytes."""
    array = as_uint8(image_set(n=6, seed=3))
    fortran = np.asfortranarray(array)
    assert not fortran.flags.c_contiguous
    np.savez(tmp_path / "f.npz", arr_0=fortran)
    read = evaluate_inputs.load_npz_member(str(tmp_path / "f.npz"), "arr_0")
    assert isinstance(read, np.memmap) and np.array_equal(read, array)
    report = ev.evaluate(
        str(tmp_path / "f.npz"), write_npz(tmp_path / "c.npz", array), metrics=["fid"], **RUN
    )
    assert torch.allclose(extracted["samples"], tiny_features(array).double(), rtol=1e-6, atol=1e-6)
    assert abs(report["fid"]) < 1e-6


def test_hidden_folders_and_files_beside_the_images_are_not_scored(tmp_path):
    """Jupyter's ``.ipynb_checkpoints`` (copies of images opened in it), a ``.Trash`` and a
    ``.DS_Store`` are not part of a sample folder: the set is the visible images alone."""
    array = as_uint8(image_set(n=10, seed=4))
    folder = write_dir(tmp_path / "samples", array)
    write_dir(tmp_path / "samples" / ".ipynb_checkpoints", as_uint8(image_set(n=7, seed=5) + 30))
    write_dir(tmp_path / "samples" / ".Trash", as_uint8(image_set(n=3, seed=6)))
    (tmp_path / "samples" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert len(evaluate_inputs.ImageSet(folder, "samples")) == 10
    report = ev.evaluate(folder, write_npz(tmp_path / "same.npz", array), metrics=["fid"], **RUN)
    assert report["num_samples"] == 10 and abs(report["fid"]) < 1e-6


def test_a_folder_of_wide_images_is_measured_height_first(tmp_path):
    """16 high, 32 wide: a folder of them scores against an .npz of the same images, and the
    statistics saved from it record ``32x16`` (width first), as those of the .npz do."""
    wide = as_uint8(image_set(n=8, size=32)[:, :16])
    assert wide.shape[1:3] == (16, 32)
    folder, npz = write_dir(tmp_path / "wide", wide), write_npz(tmp_path / "wide.npz", wide)
    assert evaluate_inputs.ImageSet(folder, "samples").image_size() == (16, 32)
    stats = tmp_path / "stats.npz"
    report = ev.evaluate(folder, npz, metrics=["fid"], save_ref_stats=str(stats), **RUN)
    assert abs(report["fid"]) < 1e-6
    ev.evaluate(npz, folder, metrics=["fid"], save_ref_stats=str(stats), **RUN)
    with np.load(stats) as data:
        assert str(data["image_size"][()]) == "32x16"
    assert abs(ev.evaluate(folder, str(stats), metrics=["fid"], **RUN)["fid"]) < 1e-6


def test_the_report_names_the_files_it_scored(tmp_path, monkeypatch):
    """``samples`` and ``reference`` are the absolute paths of the two inputs, each its own."""
    samples = write_npz(tmp_path / "s.npz", as_uint8(image_set(n=8, seed=1)))
    reference = write_dir(tmp_path / "ref", as_uint8(image_set(n=8, seed=2)))
    out = tmp_path / "fid.json"
    monkeypatch.chdir(tmp_path)
    report = ev.evaluate("s.npz", "ref", metrics=["fid"], out=str(out), **RUN)
    assert report["samples"] == os.path.abspath(samples) and report["reference"] == os.path.abspath(reference)
    assert json.loads(out.read_text())["reference"] == os.path.abspath(reference)
    assert ev.evaluate(samples, metrics=["isc"], **RUN)["reference"] is None


def test_a_folder_is_read_in_name_order_whatever_the_order_written(tmp_path):
    """Files written in a shuffled order are listed sorted (the file system's order differs by
    disk, and with it KID's subsets and the files a report names); upper-case extensions, as
    cameras write them (``IMG_0001.JPG``), are images too."""
    from PIL import Image

    array = as_uint8(image_set(n=12, seed=7))
    names = [f"{i:04d}.{'PNG' if i % 3 == 0 else 'png'}" for i in range(12)]
    for i in np.random.default_rng(0).permutation(12):
        Image.fromarray(array[i]).save(tmp_path / names[i], format="PNG")
    files = evaluate_inputs.list_images(str(tmp_path), "samples")
    assert [os.path.basename(f) for f in files] == names
    batches = list(evaluate_inputs.ImageSet(str(tmp_path), "samples").batches(5))
    assert np.array_equal(torch.cat(batches).permute(0, 2, 3, 1).numpy(), array)


def test_an_npz_of_rgba_images_is_refused_naming_arr_0(tmp_path):
    """Four channels are not an image the extractor reads (an alpha plane scored as colour)."""
    rgba = np.concatenate([as_uint8(image_set(n=4)), np.full((4, 16, 16, 1), 255, np.uint8)], -1)
    with pytest.raises(ValueError, match=r"rgba.npz: arr_0 must be uint8 images .*uint8 \(4, 16, 16, 4\)"):
        evaluate_inputs.ImageSet(write_npz(tmp_path / "rgba.npz", rgba), "samples")


def test_a_folder_of_one_height_and_two_widths_is_refused_naming_both(tmp_path):
    """16x16 and 24-wide, 16-high images: one line naming the two sizes, whatever the batch."""
    folder = write_dir(tmp_path / "mixed", as_uint8(image_set(n=3, size=16)))
    write_dir(tmp_path / "mixed" / "wide", as_uint8(image_set(n=1, size=24)[:, :16]))
    for size in (1, 8):
        with pytest.raises(ValueError, match=r"different sizes .*0000.png is 16x16, .*wide/0000.png 24x16"):
            list(evaluate_inputs.ImageSet(folder, "samples").batches(size))


def test_a_reference_of_the_samples_size_turned_on_its_side_is_refused(tmp_path):
    """8 high and 16 wide samples against 16 high and 8 wide reference images: the extractor
    would stretch both to its input and compare them."""
    wide = as_uint8(image_set(n=4, size=16)[:, :8])
    samples = evaluate_inputs.ImageSet(write_npz(tmp_path / "wide.npz", wide), "samples")
    tall = evaluate_inputs.ImageSet(write_npz(tmp_path / "tall.npz", wide.transpose(0, 2, 1, 3)), "reference")
    assert samples.image_size() == (8, 16) and tall.image_size() == (16, 8)
    with pytest.raises(ValueError, match=r"holds 8x16 images and the samples are 16x8"):
        evaluate_inputs.check_same_size(samples, tall)
    evaluate_inputs.check_same_size(samples, samples)
