"""exclusive_folder: on a file system without ``flock`` (a cluster disk mounted without it) the
run goes on, and says that a second run on the folder would not be refused; a lock held
elsewhere is refused whichever of its two errors the system gives; a file where the folder
goes is refused and kept; the folders it made for the run and left empty are removed again."""

import errno
import fcntl

import pytest

from meanflow import checkpoint


def test_a_folder_without_flock_is_used_with_a_warning(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=f"out_dir '{out}' is on a file system without flock: another "):
        with checkpoint.exclusive_folder(str(out), "meanflow.train", "out_dir"):
            assert out.is_dir()
    assert not out.exists()  # made for the run, left empty: removed again


def test_a_folder_with_flock_is_held_without_a_word(tmp_path, recwarn):
    with checkpoint.exclusive_folder(str(tmp_path / "run"), "meanflow.train", "out_dir"):
        with pytest.raises(ValueError, match="is in use by another meanflow.train run"):
            with checkpoint.exclusive_folder(str(tmp_path / "run"), "meanflow.train", "out_dir"):
                pass
    assert not [w for w in recwarn if "flock" in str(w.message)]


def test_the_folders_a_run_made_and_left_empty_are_removed_the_deepest_first(tmp_path):
    """``runs/exp/seed0`` where only ``tmp_path`` exists: all three are made for the run and
    removed again; a folder the run did not make (``tmp_path``) and one it filled stay."""
    out = tmp_path / "runs" / "exp" / "seed0"
    with checkpoint.exclusive_folder(str(out), "meanflow.train", "out_dir"):
        assert out.is_dir()
    assert tmp_path.is_dir() and not (tmp_path / "runs").exists()
    with checkpoint.exclusive_folder(str(out), "meanflow.train", "out_dir"):
        (tmp_path / "runs" / "exp" / "notes.txt").write_text("the user's\n")
    assert sorted(p.name for p in (tmp_path / "runs" / "exp").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EACCES])  # POSIX lets flock say either
def test_a_folder_locked_elsewhere_is_refused(tmp_path, monkeypatch, code):
    def held_elsewhere(fd, operation):
        raise OSError(code, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", held_elsewhere)
    with pytest.raises(ValueError, match="out_dir .* is in use by another meanflow.train run; wait"):
        with checkpoint.exclusive_folder(str(tmp_path / "run"), "meanflow.train", "out_dir"):
            pytest.fail("ran beside another run on its folder")


def test_a_file_where_the_folder_goes_is_refused_and_kept(tmp_path):
    (tmp_path / "run").write_text("the user's\n")
    with pytest.raises(ValueError, match=r"out_dir '.*run' is not a directory"):
        with checkpoint.exclusive_folder(str(tmp_path / "run"), "meanflow.train", "out_dir"):
            pytest.fail("ran on a file")
    assert (tmp_path / "run").read_text() == "the user's\n"
