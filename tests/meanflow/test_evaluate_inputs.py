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
