"""Image folders on real file systems: broken symlinks, symlink loops, a folder linked from two
classes, images deleted or damaged after the scan (both readers), prepare_latents' messages.
Trees are a few 8x8 images per class, made in tmp_path."""

import os
import warnings

import numpy as np
import pytest
import torch

from meanflow.data.dali_images import DALIImageLoader, dali_available
from meanflow.data.image_folder import ImageReadError, TorchImageLoader, scan_image_folder

needs_dali = pytest.mark.skipif(
    not dali_available() and not os.environ.get("CI"), reason="nvidia-dali-cuda130 is not installed"
)
READERS = ["torch", pytest.param("dali", marks=needs_dali)]
SIDE = 8


def write_images(folder, count, start=0, fmt="PNG"):
    """``count`` distinct 8x8 images ``img_<k>.png|jpg`` in ``folder``; their paths."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(start, start + count):
        pixels = np.full((SIDE, SIDE, 3), (37 * k) % 256, dtype=np.uint8)
        path = os.path.join(folder, f"img_{k}.{'png' if fmt == 'PNG' else 'jpg'}")
        Image.fromarray(pixels).save(path, format=fmt)
        paths.append(path)
    return paths


def make_tree(root, classes=("a", "b"), per_class=3):
    for c, name in enumerate(classes):
        write_images(os.path.join(root, name), per_class, start=10 * c, fmt="PNG" if c % 2 else "JPEG")
    return str(root)


def scan(root):
    return scan_image_folder(str(root), cache=None, workers=0)


# ----------------------------------------------------------------------------- the scan


def test_dangling_symlinks_are_skipped_counted_and_named(tmp_path):
    root = make_tree(tmp_path / "t")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "t" / "a" / "lost.jpg")
    os.symlink(tmp_path / "gone_dir", tmp_path / "t" / "b" / "lost_dir")
    os.symlink(tmp_path / "unmounted", tmp_path / "t" / "c")  # a class folder on a missing disk
    index = scan(root)
    assert len(index) == 6 and index.classes == ["a", "b"]
    assert index.summary["broken_link"] == 3
    assert index.summary["examples"]["broken_link"] == ["c", os.path.join("a", "lost.jpg"), "b/lost_dir"]
    text = index.describe()
    assert "3 broken link (c, a/lost.jpg, b/lost_dir)" in text, text


def test_a_symlink_loop_lists_each_image_once(tmp_path):
    root = make_tree(tmp_path / "t")
    os.symlink(".", tmp_path / "t" / "a" / "self")
    os.symlink("..", tmp_path / "t" / "b" / "up")  # back to the root: every class again
    os.symlink("self_loop", tmp_path / "t" / "a" / "self_loop")  # a link to itself: broken
    index = scan(root)
    assert len(index) == 6 and len(set(index.files)) == 6
    assert sorted(index.files) == sorted(
        os.path.join(c, f"img_{k}.{ext}")
        for c, ext, ks in (("a", "jpg", (0, 1, 2)), ("b", "png", (10, 11, 12)))
        for k in ks
    )
    assert index.summary["repeated_folder"] == 2 and index.summary["broken_link"] == 1
    assert "2 folders reached again through symlinks were read once (a/self, b/up)" in index.describe()


def test_a_link_back_to_a_subfolder_lists_its_images_once(tmp_path):
    """A loop below a class folder (a/sub/loop -> .): the subfolder's images once, the link
    counted as a folder reached again, not a chain of a/sub/loop/loop/... copies."""
    root = make_tree(tmp_path / "t")
    write_images(str(tmp_path / "t" / "a" / "sub"), 1, start=5)
    os.symlink(".", tmp_path / "t" / "a" / "sub" / "loop")
    index = scan(root)
    assert [f for f in index.files if "sub" in f] == [os.path.join("a", "sub", "img_5.png")]
    assert len(index) == 7 and index.summary["broken_link"] == 0
    assert index.summary["examples"]["repeated_folder"] == [os.path.join("a", "sub", "loop")]


def test_a_folder_linked_from_two_classes_goes_to_the_first(tmp_path):
    shared = write_images(str(tmp_path / "shared"), 2, start=50)
    root = make_tree(tmp_path / "t")
    os.symlink(tmp_path / "shared", tmp_path / "t" / "b" / "extra")
    os.symlink(tmp_path / "shared", tmp_path / "t" / "a" / "extra")
    os.symlink(tmp_path / "t" / "a", tmp_path / "t" / "c")  # a class that is another class's folder
    os.symlink(os.path.join("..", "b"), tmp_path / "t" / "a" / "b_inside_a")  # b stays b's
    with pytest.warns(UserWarning, match=r"hold no readable image.*\['c'\]"):
        index = scan(root)
    assert len(index) == 8 and index.classes == ["a", "b", "c"]
    extra = [(f, index.classes[y]) for f, y in zip(index.files, index.labels) if "extra" in f]
    assert extra == [(os.path.join("a", "extra", os.path.basename(p)), "a") for p in shared]
    assert sorted(index.summary["examples"]["repeated_folder"]) == sorted(
        [os.path.join("a", "b_inside_a"), os.path.join("b", "extra"), "c"]
    )
    assert [index.classes[y] for f, y in zip(index.files, index.labels) if f.startswith("b")] == ["b"] * 3


def test_symlinked_files_are_kept(tmp_path):
    root = make_tree(tmp_path / "t")
    os.symlink(tmp_path / "t" / "a" / "img_0.jpg", tmp_path / "t" / "b" / "from_a.jpg")
    index = scan(root)
    assert len(index) == 7 and os.path.join("b", "from_a.jpg") in index.files


# ----------------------------------------------------------------------------- the readers


def make_loader(kind, index, batch_size=4, **kw):
    kw = {"image_size": SIDE, "index": index, "flip": False, **kw}
    if kind == "dali":
        loader = DALIImageLoader(None, batch_size, num_threads=1, **kw)
    else:
        loader = TorchImageLoader(None, batch_size, num_workers=kw.pop("num_workers", 0), **kw)
    loader.plan.shuffle = False  # batches in folder order
    return loader


def one_epoch(loader):
    """The batches of epoch 0 and the warnings raised while reading them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        it = iter(loader)
        batches = [next(it) for _ in range(len(loader))]
    messages = [str(w.message) for w in caught if w.category is not ResourceWarning]  # another test's garbage
    return (
        batches,
        [m for m in messages if "DALI failed" not in m],
        [m for m in messages if "DALI failed" in m],
    )


@pytest.mark.parametrize("kind", READERS)
def test_an_image_removed_after_the_scan_is_replaced_counted_and_named(tmp_path, kind):
    index = scan(make_tree(tmp_path / "t", per_class=6))
    os.remove(index.path(5))  # a/img_5.jpg, in batch 1: a/img_4, a/img_5, b/img_10, b/img_11
    loader = make_loader(kind, index, max_read_failures=0.1)
    batches, messages, dali_messages = one_epoch(loader)
    assert loader.failures == 1 and len(messages) == 2, messages
    if kind == "dali":  # the DALI error names the file, not only "pipeline no longer valid"
        assert dali_messages == [
            f"DALI failed on a batch (File mapping failed: {index.path(5)}); decoding it with PIL"
        ]
    assert messages[0].startswith("epoch 0: could not read a/img_5.jpg (FileNotFoundError")
    assert messages[1] == (
        "epoch 0: 1 of the 12 images read on this rank failed to read and were replaced within their "
        "batch: a/img_5.jpg"
    )
    x, y = batches[1]
    assert torch.equal(x[1], x[2]) and y.tolist() == [0, 1, 1, 1]  # b/img_10 with its own label
    assert [y.tolist() for _, y in batches[::2]] == [[0] * 4, [1] * 4]


@pytest.mark.parametrize("kind", READERS)
def test_too_many_read_failures_stop_with_a_clear_error(tmp_path, kind):
    index = scan(make_tree(tmp_path / "t", per_class=6))
    for i in (1, 2):
        os.remove(index.path(i))
    workers = {"num_workers": 1} if kind == "torch" else {}  # failures cross a worker process too
    loader = make_loader(kind, index, max_read_failures=0.1, **workers)
    expected = r"epoch 0: 2 of the 12 images .* max_read_failures=0.1 allows \(a/img_1.jpg, a/img_2.jpg\); "
    with pytest.raises(ImageReadError, match=expected + "restore the files, or restart to re-scan"):
        one_epoch(loader)
    assert issubclass(ImageReadError, ValueError)  # the CLIs report it in one line


@pytest.mark.parametrize("kind", READERS)
def test_a_class_unreadable_after_the_scan_stops_at_the_epoch_end(tmp_path, kind):
    index = scan(make_tree(tmp_path / "t", classes=("a", "b", "c"), per_class=4))
    for i in np.flatnonzero(index.labels == 2):  # damaged, not removed
        with open(index.path(i), "wb") as f:
            f.write(b"not an image any more\n")
    loader = make_loader(kind, index, max_read_failures=0.5)
    with pytest.raises(ImageReadError, match=r"every image read of class c \(4 reads\) failed"):
        one_epoch(loader)
    assert loader.failures == 4


def test_max_read_failures_is_checked(tmp_path):
    index = scan(make_tree(tmp_path / "t"))
    with pytest.raises(ValueError, match=r"max_read_failures must lie in \[0, 1\], got 5"):
        make_loader("torch", index, batch_size=2, max_read_failures=5)


def test_the_config_sets_the_limit(tmp_path):
    from meanflow.config import TrainConfig
    from meanflow.data import build_loader

    config = TrainConfig(batch_size=2)
    config.data.name, config.data.path, config.data.backend = (
        "imagefolder",
        make_tree(tmp_path / "t"),
        "torch",
    )
    config.data.image_size, config.data.num_workers, config.data.max_read_failures = SIDE, 0, 0.25
    assert build_loader(config, 0, 1, "cpu").read_failures.max_fraction == 0.25
    config.data.max_read_failures = -1
    with pytest.raises(ValueError, match="max_read_failures"):
        build_loader(config, 0, 1, "cpu")


# ----------------------------------------------------------------------------- prepare_latents


def test_prepare_latents_names_what_it_skipped_at_the_scan_and_at_decoding(
    tmp_path, tiny_vae, monkeypatch, capsys
):
    pytest.importorskip("diffusers")
    import meanflow.prepare_latents as prepare

    root = make_tree(tmp_path / "t")
    with open(tmp_path / "t" / "b" / "broken.png", "wb") as f:
        f.write(b"not a png\n")
    (tmp_path / "t" / "b" / "notes.txt").write_text("not an image\n")

    def scan_then_lose_one(*args, **kwargs):
        index = scan_image_folder(*args, **kwargs)
        os.remove(os.path.join(index.root, "a", "img_1.jpg"))  # gone before it is encoded
        return index

    monkeypatch.setattr(prepare, "scan_image_folder", scan_then_lose_one)
    dst = str(tmp_path / "latents")
    with pytest.warns(UserWarning, match="RANDOM"):
        manifest = prepare.prepare_latents(
            root, dst, "random", tiny_vae[1], image_size=SIDE, batch_size=4, shard_size=4, device="cpu",
            reader="torch", num_workers=0, scan_workers=0, progress=False,
        )  # fmt: skip
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("prepare_latents:")]
    assert lines[0].endswith("skipped 1 corrupt (b/broken.png), 1 not image (b/notes.txt)"), lines
    assert lines[-1] == (
        f"prepare_latents: 5 latents [4, 4, 4] in 2 shards at {dst} from 6 images; "
        "skipped 2 (b/broken.png, b/notes.txt) at the scan and 1 (a/img_1.jpg) at decoding"
    )
    assert (manifest["num_samples"], manifest["failed"], manifest["scan"]["corrupt"]) == (5, 1, 1)


def test_prepare_latents_cli_says_when_the_source_is_not_a_folder(tmp_path, capsys):
    from meanflow.prepare_latents import main

    (tmp_path / "train.txt").write_text("a file, not a folder\n")
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "train.txt"), str(tmp_path / "dst"), "--vae", "random", "--no-progress"])
    assert stop.value.code == 2 and not (tmp_path / "dst").exists()
    assert (
        capsys.readouterr().err == f"error: image folder {str(tmp_path / 'train.txt')!r} is not a directory\n"
    )
