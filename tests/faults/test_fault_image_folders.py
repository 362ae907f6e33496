"""Image folders on real file systems: broken symlinks, symlink loops, a folder linked from two
classes, images deleted or damaged after the scan (both readers), prepare_latents' messages.
Trees are a few 8x8 images per class, made in tmp_path."""

import os

import numpy as np
import pytest

from meanflow.data.dali_images import dali_available
from meanflow.data.image_folder import scan_image_folder

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
