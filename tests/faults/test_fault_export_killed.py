"""An export killed (SIGKILL) at any moment: the folder holds a whole export, the previous one
or the new one, never nothing and never a mix; the next export cleans up what the killed one
left beside it, and says so."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from test_fault_export import run_export, trainer_checkpoint
from tree_snapshot import tree_snapshot

from meanflow.models import DiT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs ``meanflow.export ARGV`` with one step replaced by ``os.kill(self, SIGKILL)``.
KILLED_EXPORT = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import safetensors.torch
from meanflow import checkpoint, export

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

where = sys.argv[2]
if where == "writing":  # half-way through the weights file
    safetensors.torch.save_file = die
elif where == "after-swap":  # the new folder in place, the previous one not yet removed
    checkpoint.shutil.rmtree = die
elif where == "between-renames":  # no atomic swap here: killed after moving the previous one away
    checkpoint._exchange = lambda a, b: False
    real_rename, renames = os.rename, []
    def rename_then_die(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            die()
        real_rename(src, dst)
    checkpoint.os.rename = rename_then_die
export.main(sys.argv[3:])
"""


def killed_export(where, *argv):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_EXPORT, ROOT, where, *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def leftovers(folder) -> list:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def weights(path) -> dict:
    return DiT.from_pretrained(str(path)).state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "where, kept", [("writing", "previous"), ("after-swap", "new"), ("between-renames", "previous")]
)
def test_a_killed_export_leaves_a_whole_one_and_the_next_cleans_up(tmp_path, tiny, capsys, where, kept):
    ckpt = tmp_path / "last.pt"
    emas = trainer_checkpoint(ckpt, tiny())
    out = tmp_path / "exported"
    assert run_export(capsys, "--ckpt", str(ckpt), "--out", str(out), "--ema", "0")[0] == 0
    previous = tree_snapshot(out, folders=True)

    killed_export(where, "--ckpt", str(ckpt), "--out", str(out), "--ema", "1")
    assert leftovers(tmp_path), "the killed export left nothing to clean up: the test kills too late"
    if where == "between-renames":
        assert not out.exists()  # the window that recovery closes
    else:
        assert same(weights(out), emas[0] if kept == "previous" else emas[1])

    with pytest.warns(UserWarning, match="interrupted export") as warned:
        assert run_export(capsys, "--ckpt", str(ckpt), "--out", str(out), "--ema", "1")[0] == 0
    if where == "between-renames":
        assert any("put back" in str(w.message) for w in warned)
    assert leftovers(tmp_path) == []
    assert same(weights(out), emas[1])
    assert set(tree_snapshot(out, folders=True)) == set(previous)


def test_recovery_puts_the_previous_export_back_before_anything_else(tmp_path, tiny, capsys):
    """Killed between the renames, then asked for nothing but a look: the previous export is
    back at its path before ``check_replaceable`` decides anything about it."""
    from meanflow.checkpoint import recover_interrupted_publish

    ckpt = tmp_path / "last.pt"
    emas = trainer_checkpoint(ckpt, tiny())
    out = tmp_path / "exported"
    assert run_export(capsys, "--ckpt", str(ckpt), "--out", str(out), "--ema", "0")[0] == 0
    killed_export("between-renames", "--ckpt", str(ckpt), "--out", str(out), "--ema", "1")
    with pytest.warns(UserWarning) as warned:
        recover_interrupted_publish(str(out))
    assert sorted(str(w.message).split()[0] for w in warned) == ["put", "removed", "removed"]
    assert same(weights(out), emas[0]) and leftovers(tmp_path) == []
    # a folder named like ours but for another path is not touched
    (tmp_path / ".other.abcdefgh.tmp").mkdir()
    assert recover_interrupted_publish(str(out)) == []
    assert leftovers(tmp_path) == [".other.abcdefgh.tmp"]
