"""What makes a write of meanflow.checkpoint survive: the bytes fsynced before the rename that
publishes them and the directory after it, every file of an exported folder fsynced before
the folder appears; a hash of the whole file; a full quota named like a full disk; only a
killed write's own temporaries removed; never a write over a folder or through a link."""

import errno
import hashlib
import os
import re
import stat

import pytest

from meanflow import checkpoint


class Events(list):
    """``os.fsync`` and ``os.replace`` as they happen: ``("file" | "dir", path, size, published)``
    for an fsync (``published``: whether ``watched``, the destination, exists yet) and
    ``("replace", destination)``."""

    watched = None


@pytest.fixture
def events(monkeypatch):
    seen, fsync, replace = Events(), os.fsync, os.replace

    def spy_fsync(fd):
        info = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
        published = seen.watched is not None and os.path.exists(seen.watched)
        seen.append((kind, os.readlink(f"/proc/self/fd/{fd}"), info.st_size, published))
        fsync(fd)

    def spy_replace(src, dst):
        seen.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    return seen


def small_writes(f):
    """1000 bytes in writes small enough that Python's buffer holds them until a flush."""
    for _ in range(100):
        f.write(b"0123456789")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced files through /proc")
def test_a_file_is_synced_whole_before_its_rename_and_its_folder_after(tmp_path, events):
    path = tmp_path / "last.pt"
    checkpoint.atomic_write(str(path), small_writes)
    assert path.read_bytes() == b"0123456789" * 100
    (kind, synced, size, _), renamed, folder = events
    assert (kind, size) == ("file", 1000) and os.path.basename(synced).startswith(".last.pt.")
    assert renamed == ("replace", str(path))
    assert folder[:2] == ("dir", str(tmp_path))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced files through /proc")
def test_a_derived_file_is_written_whole_without_syncs(tmp_path, events):
    checkpoint.atomic_write(str(tmp_path / "cache.json"), small_writes, durable=False)
    assert (tmp_path / "cache.json").read_bytes() == b"0123456789" * 100
    assert events == [("replace", str(tmp_path / "cache.json"))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fsynced files through /proc")
def test_every_file_of_an_export_is_synced_before_the_folder_appears(tmp_path, events):
    export = tmp_path / "export"
    events.watched = str(export)
    with checkpoint.atomic_directory(str(export)) as tmp:
        filled = tmp
        os.makedirs(os.path.join(tmp, "transformer"))
        for name in ("model_index.json", "transformer/model.safetensors"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("x" * 100)
    synced = sorted(os.path.relpath(p, filled) for kind, p, _, _ in events if kind == "file")
    assert synced == sorted([checkpoint.EXPORT_MARKER, "model_index.json", "transformer/model.safetensors"])
    assert not any(published for *_, published in events[:-1])  # the last: its parent after the rename
    assert events[-1][:2] == ("dir", str(tmp_path))


def test_a_hash_covers_the_whole_file(tmp_path):
    """Past the 4 MiB block a file is read in: two checkpoints differing in their tail differ."""
    data = os.urandom((1 << 22) + 17)
    (tmp_path / "a.pt").write_bytes(data)
    (tmp_path / "b.pt").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert checkpoint.file_sha256(str(tmp_path / "a.pt")) == hashlib.sha256(data).hexdigest()
    assert checkpoint.file_sha256(str(tmp_path / "a.pt")) != checkpoint.file_sha256(str(tmp_path / "b.pt"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("as_torch", [False, True])
def test_a_full_disk_or_quota_is_named_and_keeps_the_previous_file(tmp_path, code, as_torch):
    """torch.save reports the failed write as a RuntimeError raised while handling it."""
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous")

    def write(f):
        f.write(b"partial")
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            if as_torch:
                raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64") from None
            raise

    with pytest.raises(checkpoint.NoSpaceError, match=rf"no space left writing {re.escape(str(path))} \("):
        checkpoint.atomic_write(str(path), write)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["last.pt"]


def test_only_a_killed_writes_own_temporaries_are_removed(tmp_path):
    names = {
        ".last.pt.ab12cd_3.tmp": "removed",  # atomic_write's name for a last.pt it did not finish
        ".last.pt.ab12cd_3.tmp.keep": "kept",  # the user's copy of one: only its name starts alike
        ".last.pt.ab12cd_3.tmp~": "kept",
        ".other.pt.ab12cd_3.tmp": "kept",  # another destination's
        "last.pt": "kept",
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".last.pt.zz12cd_3.tmp").mkdir()  # a folder of that name is no temporary of ours
    removed = checkpoint.remove_stale_temporaries(str(tmp_path), re.escape("last.pt"))
    assert removed == [str(tmp_path / ".last.pt.ab12cd_3.tmp")]
    kept = {n for n, fate in names.items() if fate == "kept"} | {".last.pt.zz12cd_3.tmp"}
    assert set(os.listdir(tmp_path)) == kept


def test_a_folder_where_a_file_goes_is_refused_and_kept(tmp_path):
    (tmp_path / "last.pt").mkdir()
    (tmp_path / "last.pt" / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match=r"last\.pt is a directory, where meanflow writes a file: move it"):
        checkpoint.atomic_save({"step": 1}, str(tmp_path / "last.pt"))
    assert (tmp_path / "last.pt" / "notes.txt").read_text() == "the user's"
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_an_append_never_writes_through_a_link(tmp_path):
    (tmp_path / "theirs.txt").write_text("not ours\n")
    os.symlink(tmp_path / "theirs.txt", tmp_path / "metrics.jsonl")
    with pytest.raises(ValueError, match=r"metrics\.jsonl is a symbolic link: .* never writes through"):
        with checkpoint.open_for_append(str(tmp_path / "metrics.jsonl")) as f:
            f.write("{}\n")
    assert (tmp_path / "theirs.txt").read_text() == "not ours\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_a_write_that_cannot_set_its_modes_closes_its_file_and_removes_it(tmp_path, monkeypatch):
    """A file system that refuses the temporary's modes (some network mounts) fails the write
    with its error; the temporary's descriptor is closed (a trainer retrying every checkpoint
    would run out of them) and the temporary removed, the previous file kept."""
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous")

    def refuse(*args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    monkeypatch.setattr(os, "chmod", refuse)
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(PermissionError):
            checkpoint.atomic_write(str(path), small_writes)
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert os.listdir(tmp_path) == ["last.pt"] and path.read_bytes() == b"previous"
