"""What an image-folder scan lists, and in which order: every rank must list the same images in
the same order (the epoch's permutation indexes that list), whatever order the file system
returns them in, and the files a desktop or an editor leaves behind are not samples."""

import os

import numpy as np
import pytest

from meanflow.data.image_folder import scan_image_folder

SIDE = 8


def write_image(path, value):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((SIDE, SIDE, 3), value, dtype=np.uint8)).save(path, format="JPEG")


def scan(root, **kw):
    return scan_image_folder(str(root), cache=kw.pop("cache", None), workers=0, **kw)


def test_classes_and_files_are_listed_in_sorted_order_whatever_the_directory_order(tmp_path):
    """Class folders and files created in a shuffled order (a directory lists them in its own,
    hash or creation order): labels are the sorted class names' indices, and the files come in
    os.walk's order over sorted names (a folder's files, then its subfolders, depth first)."""
    rng = np.random.default_rng(0)
    classes = [f"n{k:02d}" for k in range(12)]
    for c in rng.permutation(len(classes)):
        for k in rng.permutation(5):
            write_image(str(tmp_path / classes[c] / f"img_{k}.jpg"), 10 * c + k)
    for sub in ("b_sub", "a_sub"):  # nested folders, created out of order, beside files
        write_image(str(tmp_path / "n03" / sub / "deep.jpg"), 200)
        write_image(str(tmp_path / "n03" / sub / "inner" / "deeper.jpg"), 210)
    index = scan(tmp_path)
    assert index.classes == classes
    expected = []
    for name in classes:
        for folder, subfolders, files in os.walk(tmp_path / name):
            subfolders.sort()
            expected += [os.path.relpath(os.path.join(folder, f), tmp_path) for f in sorted(files)]
    assert index.files == expected
    assert (
        index.files.index(os.path.join("n03", "img_4.jpg"))
        < index.files.index(os.path.join("n03", "a_sub", "deep.jpg"))
        < index.files.index(os.path.join("n03", "a_sub", "inner", "deeper.jpg"))
        < index.files.index(os.path.join("n03", "b_sub", "deep.jpg"))
    )
    assert [classes[label] for label in index.labels] == [f.split(os.sep)[0] for f in index.files]


@pytest.mark.parametrize("name", ["IMG_0001.JPEG", "photo.jpeg", "scan.Jpg"])
def test_image_extensions_are_matched_whatever_their_case(tmp_path, name):
    """ImageNet's own files end in .JPEG: they are images, not 'other files'."""
    write_image(str(tmp_path / "a" / "plain.jpg"), 1)
    write_image(str(tmp_path / "a" / name), 2)
    index = scan(tmp_path)
    assert index.files == sorted([os.path.join("a", name), os.path.join("a", "plain.jpg")])
    assert index.summary["not_image"] == 0


def test_hidden_folders_and_files_are_not_samples(tmp_path):
    """A hidden folder under ROOT (.git, .Trash) is no class, and one under a class (Jupyter's
    .ipynb_checkpoints) holds copies, not samples; macOS's ._name files are not images."""
    write_image(str(tmp_path / "a" / "img.jpg"), 1)
    write_image(str(tmp_path / "b" / "img.jpg"), 2)
    write_image(str(tmp_path / ".trash" / "img.jpg"), 3)
    write_image(str(tmp_path / "a" / ".ipynb_checkpoints" / "img-checkpoint.jpg"), 4)
    (tmp_path / "b" / "._img.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    index = scan(tmp_path)
    assert index.classes == ["a", "b"]
    assert index.files == [os.path.join("a", "img.jpg"), os.path.join("b", "img.jpg")]
    assert (index.summary["corrupt"], index.summary["not_image"]) == (0, 0)


def test_a_file_rewritten_at_the_same_size_is_scanned_again(tmp_path):
    """The scan cache is keyed by size and mtime: a file damaged in place (same size, new
    mtime) must be opened again, not taken on the cache's old verdict."""
    for k in range(3):
        write_image(str(tmp_path / "a" / f"img_{k}.jpg"), 50 * k)
    cache = str(tmp_path / "scan.json")
    assert len(scan(tmp_path, cache=cache)) == 3
    path = tmp_path / "a" / "img_1.jpg"
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    path.write_bytes(b"\0" * size)  # zeroed: not an image any more
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    again = scan(tmp_path, cache=cache)
    assert again.summary["scanned_now"] == 1 and again.summary["corrupt"] == 1
    assert again.files == [os.path.join("a", "img_0.jpg"), os.path.join("a", "img_2.jpg")]


@pytest.mark.parametrize("entries", ["a list", "a number per file", "no verdict"])
def test_a_malformed_scan_cache_is_ignored_and_rewritten(tmp_path, entries):
    """The cache lies in the user's folder, where anything may have written it: one of the right
    version whose entries are not ``[size, mtime_ns, status, info, format]`` is warned about and
    rescanned, not a crash of every run on that folder."""
    import json

    for k in range(2):
        write_image(str(tmp_path / "a" / f"img_{k}.jpg"), 50 * k)
    cache = str(tmp_path / "scan.json")
    first = scan(tmp_path, cache=cache)
    with open(cache) as f:
        saved = json.load(f)
    good = saved["entries"]
    saved["entries"] = {
        "a list": list(good),
        "a number per file": {rel: 5 for rel in good},
        "no verdict": {rel: v[:2] for rel, v in good.items()},  # size and mtime still match
    }[entries]
    with open(cache, "w") as f:
        json.dump(saved, f)
    with pytest.warns(UserWarning, match="ignoring unreadable scan cache"):
        again = scan(tmp_path, cache=cache)
    assert again.files == first.files and again.summary["scanned_now"] == 2
    with open(cache) as f:
        assert json.load(f)["entries"] == good


def test_a_parallel_scan_gives_each_file_its_own_verdict(tmp_path):
    """Over 256 files the scan opens them in worker processes, 256 a chunk: each file must
    keep its own verdict there, so the images kept and the corrupt ones named are the
    in-process scan's, whichever chunk they fell in."""
    bad = {3, 255, 256, 290}  # at a chunk's start and end, and deep in the second chunk
    for k in range(300):
        path = str(tmp_path / "a" / f"img_{k:03d}.jpg")
        if k in bad:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"not an image")
        else:
            write_image(path, k % 256)
    serial = scan(tmp_path)
    parallel = scan_image_folder(str(tmp_path), cache=None, workers=2)
    wanted = [os.path.join("a", f"img_{k:03d}.jpg") for k in range(300) if k not in bad]
    assert serial.files == parallel.files == wanted
    named = sorted(e.split(": ")[0] for e in parallel.summary["examples"]["corrupt"])
    assert named == [os.path.join("a", f"img_{k:03d}.jpg") for k in sorted(bad)]
