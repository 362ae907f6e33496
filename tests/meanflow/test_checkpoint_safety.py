"""What meanflow.checkpoint promises about files: nothing is unpickled (and a refusal says why,
not how to load unsafely), and files it writes
get the permissions of any file the user creates (the umask), not mkstemp's private 0600,
without setting the umask to read it (a file another thread made meanwhile would get umask 0)."""

import argparse
import os

import pytest
import torch

from meanflow.checkpoint import atomic_save, load_torch_file


class _RunsCodeWhenUnpickled:
    """Unpickling this calls ``os.makedirs(path)``: evidence that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_load_never_unpickles_code(tmp_path):
    evidence = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCodeWhenUnpickled(str(evidence))}, path)
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*evil\.pt") as e:
        load_torch_file(str(path))
    assert not evidence.exists()
    assert "GLOBAL os.makedirs" in str(e.value)  # the reason
    assert "weights_only" not in str(e.value)  # torch's advice to load it unsafely is not passed on


def test_a_train_py_checkpoint_with_its_command_line_loads(tmp_path):
    """DiT's and SiT's train.py save their arguments as an argparse.Namespace: plain data."""
    args = argparse.Namespace(model="DiT-XL/2", image_size=256)
    torch.save({"model": {"w": torch.ones(2)}, "args": args}, tmp_path / "0400000.pt")
    loaded = load_torch_file(str(tmp_path / "0400000.pt"))
    assert loaded["args"] == args and torch.equal(loaded["model"]["w"], torch.ones(2))


def test_a_file_that_is_no_pickle_says_why(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"step": 1}')
    with pytest.raises(
        ValueError, match=r"config\.json' \(corrupt, or not a torch file\): Unsupported operand"
    ):
        load_torch_file(str(path))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_save({"step": 1}, str(tmp_path / "last.pt"))
    finally:
        os.umask(previous)
    assert os.stat(tmp_path / "last.pt").st_mode & 0o777 == 0o666 & ~umask
    assert load_torch_file(str(tmp_path / "last.pt")) == {"step": 1}


def _proc_shows_the_umask() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Umask:") for line in f)
    except OSError:
        return False


@pytest.mark.skipif(not _proc_shows_the_umask(), reason="reads the umask from /proc/self/status")
def test_the_umask_is_read_without_being_set(tmp_path, monkeypatch):
    set_umask = os.umask
    previous = set_umask(0o027)
    try:
        with monkeypatch.context() as m:
            m.setattr(os, "umask", lambda mask: pytest.fail(f"os.umask({mask:o}) while writing"))
            atomic_save({"step": 1}, str(tmp_path / "last.pt"))
    finally:
        set_umask(previous)
    assert os.stat(tmp_path / "last.pt").st_mode & 0o777 == 0o640
