"""An export replacing the previous one (meanflow.checkpoint.atomic_directory): nothing of the
previous export is left beside the new one, an empty folder is filled, a file the user put
into the folder meanwhile is never removed, a killed export's leftover is never recovered over
a folder that is there, the files get a plain file's modes, and a symbolic link is never
replaced."""

import os

import pytest

from meanflow import checkpoint


def export(path, text: str):
    with checkpoint.atomic_directory(str(path)) as tmp:
        with open(os.path.join(tmp, "weights.txt"), "w") as f:
            f.write(text)


def test_a_re_export_leaves_nothing_of_the_previous_one(tmp_path):
    export(tmp_path / "pipe", "first")
    export(tmp_path / "pipe", "second")
    assert os.listdir(tmp_path) == ["pipe"]
    assert (tmp_path / "pipe" / "weights.txt").read_text() == "second"


def test_a_file_put_into_the_folder_during_an_export_is_kept(tmp_path):
    export(tmp_path / "pipe", "first")
    with pytest.raises(ValueError, match=r"pipe holds files its export did not write \(notes\.txt\)"):
        with checkpoint.atomic_directory(str(tmp_path / "pipe")) as tmp:
            (tmp_path / "pipe" / "notes.txt").write_text("the user's")
            with open(os.path.join(tmp, "weights.txt"), "w") as f:
                f.write("second")
    assert (tmp_path / "pipe" / "notes.txt").read_text() == "the user's"
    assert (tmp_path / "pipe" / "weights.txt").read_text() == "first"
    assert os.listdir(tmp_path) == ["pipe"]


def test_a_leftover_is_not_put_back_over_a_folder_that_is_there(tmp_path):
    """A killed export's ``.old`` holder beside a folder exported again since: the holder is
    removed, the newer export stays."""
    export(tmp_path / "pipe", "newer")
    (tmp_path / ".pipe.ab12cd_3.old" / "d").mkdir(parents=True)
    (tmp_path / ".pipe.ab12cd_3.old" / "d" / "weights.txt").write_text("older")
    with pytest.warns(UserWarning, match="removed .*ab12cd_3.old, left by an interrupted export"):
        checkpoint.recover_interrupted_publish(str(tmp_path / "pipe"))
    assert (tmp_path / "pipe" / "weights.txt").read_text() == "newer"
    assert os.listdir(tmp_path) == ["pipe"]


def test_exported_files_are_not_executable(tmp_path):
    previous = os.umask(0o022)
    try:
        export(tmp_path / "pipe", "first")
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "pipe").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "pipe" / "weights.txt").st_mode & 0o777 == 0o644


def test_a_link_where_the_export_goes_is_refused(tmp_path):
    (tmp_path / "theirs").mkdir()
    os.symlink(tmp_path / "theirs", tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"pipe is a symbolic link: refusing to replace it"):
        export(tmp_path / "pipe", "first")
    assert os.path.islink(tmp_path / "pipe") and os.listdir(tmp_path / "theirs") == []


def test_an_empty_folder_made_for_the_export_is_filled(tmp_path):
    (tmp_path / "pipe").mkdir()
    export(tmp_path / "pipe", "first")
    assert (tmp_path / "pipe" / "weights.txt").read_text() == "first"
