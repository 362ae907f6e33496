"""What a checkpoint records of an image folder (meanflow/data/folder_identity.py): a resume
onto other images of the same count and classes (one replaced by another of another size, one
renamed) is refused naming them; the same folder, a copy of it elsewhere, other modification
times, and a checkpoint that records no image folder resume as before."""

import os
import shutil

import numpy as np
import pytest
import torch

from meanflow import train
from meanflow.data.dali_images import DALIImageLoader, dali_available
from meanflow.data.folder_identity import folder_identity
from meanflow.data.image_folder import FolderIndex, TorchImageLoader, scan_image_folder
from meanflow.data.synthetic import synthetic_image
from meanflow.train_state import check_same_data

CLASSES, PER_CLASS = ("cat", "dog"), 4


def png(path, side, seed):
    from PIL import Image

    Image.fromarray(synthetic_image(side, side, np.random.default_rng(seed), noise=30)).save(path)


def png_folder(root):
    """``root/cat``, ``root/dog``: four noisy PNGs each, 16 to 22 pixels a side."""
    for c, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for i in range(PER_CLASS):
            png(root / name / f"img_{i}.png", 16 + 2 * i, seed=10 * c + i)
    return root


def loader_of(root, backend="torch"):
    if backend == "dali":
        return DALIImageLoader(str(root), 2, image_size=16, num_threads=1, cache=None)
    return TorchImageLoader(str(root), 2, image_size=16, num_workers=0, cache=None)


def replace_by_another_size(path):
    before = os.path.getsize(path)
    png(path, 30, seed=99)
    assert os.path.getsize(path) != before


def cli_error(argv) -> str:
    with pytest.raises(SystemExit) as e:
        train.cli(argv)
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def run_argv(out_dir, root, steps):
    """A tiny run on the folder, the torch backend, a checkpoint every step."""
    return [
        "--data.name", "imagefolder", "--data.path", str(root), "--data.backend", "torch",
        "--data.image_size", "16", "--data.num_workers", "0", "--model", "DiT-T/8",
        "--model_kwargs", "{depth: 1, hidden_size: 32, num_heads: 2}", "--batch_size", "4",
        "--steps", str(steps), "--ckpt_every", "1", "--log_every", "1", "--out_dir", str(out_dir),
        "--sample_every", "0", "--eval_samples", "0", "--progress", "false",
    ]  # fmt: skip


def test_resume_onto_an_image_replaced_by_another_size_is_refused_naming_it(tmp_path):
    """The trainer's own resume: the unchanged folder resumes, and after one image is replaced
    by another of another size (same count, same classes) the resume is refused naming it,
    the checkpoint untouched."""
    root, out = png_folder(tmp_path / "images"), tmp_path / "run"
    train.cli(run_argv(out, root, 1))
    train.cli(run_argv(out, root, 2))  # the same folder: resumes
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2
    with open(out / "last.pt", "rb") as f:
        before = f.read()

    replace_by_another_size(root / "dog" / "img_2.png")
    message = cli_error(run_argv(out, root, 3))
    assert "last.pt" in message and "changed since it was written" in message
    assert f"1 of {len(CLASSES) * PER_CLASS} images differ" in message
    assert os.path.join("dog", "img_2.png") in message
    with open(out / "last.pt", "rb") as f:
        assert f.read() == before


def test_a_checkpoint_without_the_record_resumes_as_before(tmp_path):
    """A checkpoint written before image folders were recorded (no data_identity) resumes,
    onto changed images too: there is nothing to compare."""
    root, out = png_folder(tmp_path / "images"), tmp_path / "run"
    train.cli(run_argv(out, root, 1))
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["data_identity"]["kind"] == "image_folder"
    del ckpt["data_identity"]
    torch.save(ckpt, out / "last.pt")
    replace_by_another_size(root / "cat" / "img_0.png")
    train.cli(run_argv(out, root, 2))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 2


def test_a_renamed_image_is_refused_naming_its_new_name(tmp_path):
    root = png_folder(tmp_path / "images")
    recorded = loader_of(root).data_identity
    os.rename(root / "cat" / "img_1.png", root / "cat" / "img_9.png")
    loader = loader_of(root)
    changes = loader.data_changes(recorded)
    assert changes == [
        "1 of 8 images differ from those it trained on (another name, size or class), "
        f"e.g. {os.path.join('cat', 'img_9.png')}"
    ]
    with pytest.raises(ValueError, match=r"changed since it was written \(1 of 8 images differ"):
        check_same_data(recorded, loader)


def test_an_image_moved_to_another_class_is_refused(tmp_path):
    root = png_folder(tmp_path / "images")
    recorded = loader_of(root).data_identity
    os.rename(root / "cat" / "img_3.png", root / "dog" / "img_cat.png")
    os.rename(root / "dog" / "img_0.png", root / "cat" / "img_dog.png")  # counts per class kept
    changes = loader_of(root).data_changes(recorded)
    assert len(changes) == 1 and changes[0].startswith("2 of 8 images differ")
    for moved in (os.path.join("cat", "img_dog.png"), os.path.join("dog", "img_cat.png")):
        assert moved in changes[0]


def test_removed_images_are_counted(tmp_path):
    root = png_folder(tmp_path / "images")
    recorded = loader_of(root).data_identity
    os.remove(root / "dog" / "img_3.png")
    changes = loader_of(root).data_changes(recorded)
    assert changes == ["8 images then, 7 now", "missing now: 1 of the 8 images it trained on"]


def test_a_copy_elsewhere_and_new_modification_times_are_the_same_data(tmp_path):
    """The record holds paths below ROOT, not ROOT, and no modification time: a copy (which
    changes them) at another path is the same data. data.path itself is compared apart, by
    its real path, with the run's options."""
    root = png_folder(tmp_path / "images")
    recorded = loader_of(root).data_identity
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # new modification times
    os.utime(root / "cat" / "img_0.png", ns=(1, 1))
    for folder in (root, copy):
        loader = loader_of(folder)
        assert loader.data_identity["sha256"] == recorded["sha256"]
        assert loader.data_changes(recorded) == []
        check_same_data(recorded, loader)


def test_records_of_other_kinds_or_none_are_not_compared(tmp_path):
    """A latent folder's or MNIST's record (a checkpoint of another data set: data.name says so
    on its own) and none at all are not this folder's to refuse."""
    root = png_folder(tmp_path / "images")
    loader = loader_of(root)
    for recorded in ({"sha256": "0" * 64}, {"vae": {"sha256": "1" * 64}, "image_size": 256}, {}):
        assert loader.data_changes(recorded) == []
    check_same_data(None, loader)


def test_a_record_without_its_per_image_digests_still_refuses(tmp_path):
    root = png_folder(tmp_path / "images")
    recorded = dict(loader_of(root).data_identity)
    del recorded["image_digests"]
    replace_by_another_size(root / "cat" / "img_2.png")
    (change,) = loader_of(root).data_changes(recorded)
    assert change.startswith(f"the images, sizes and labels: sha256 {recorded['sha256'][:12]} then, ")


def test_the_record_is_the_scans_and_a_hand_made_index_gives_the_same(tmp_path):
    """The sizes come from the scan (no image is read again); an index made without them
    (sizes read with os.stat) records the same."""
    root = png_folder(tmp_path / "images")
    index = scan_image_folder(str(root), cache=None)
    assert index.sizes.tolist() == [os.path.getsize(index.path(i)) for i in range(len(index))]
    by_hand = FolderIndex(index.root, index.classes, index.files, index.labels)
    a, b = folder_identity(index), folder_identity(by_hand)
    assert a["sha256"] == b["sha256"] and torch.equal(a["image_digests"], b["image_digests"])
    assert a["image_digests"].dtype == torch.int32 and len(a["image_digests"]) == len(index) == a["images"]


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali-cuda130 is not installed")
def test_dali_records_what_torch_records_and_refuses_alike(tmp_path):
    """The backend may change on resume: both loaders record the same, and DALI's refuses a
    replaced image as the torch loader's does."""
    root = png_folder(tmp_path / "images")
    recorded = loader_of(root, "torch").data_identity
    dali = loader_of(root, "dali")
    assert dali.data_identity["sha256"] == recorded["sha256"] and dali.data_changes(recorded) == []
    replace_by_another_size(root / "dog" / "img_1.png")
    with pytest.raises(ValueError, match=r"1 of 8 images differ.*dog.img_1\.png"):
        check_same_data(recorded, loader_of(root, "dali"))
