"""Kept checkpoints (``ckpt_<step>.pt``) of a long run: a run stopped between its last.pt and
the kept copy of that step (kill -9, a full disk) keeps it when resumed, a new run never
replaces the kept checkpoints of another, and a global batch the ranks cannot split evenly is
refused before anything is written."""

import os

import pytest
import torch
from full_disk import fill_the_disk
from kill_at_flag import kill_when_flagged
from trainer_cli import cli_error, tiny_argv

from meanflow import train
from meanflow.checkpoint import NoSpaceError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kept_argv(out_dir, data_path, steps, *extra):
    """Checkpoints at step 2, kept there too: last.pt is written first, then ckpt_0000002.pt."""
    return tiny_argv(
        out_dir, data_path, "--steps", str(steps), "--ckpt_every", "2", "--keep_every", "2", *extra
    )


def load(path):
    return torch.load(path, weights_only=True)


def assert_same_ema(kept, last):
    assert kept["step"] == last["step"]
    for a, b in zip(kept["ema"], last["ema"]):
        for name, value in b.items():
            torch.testing.assert_close(a[name], value, rtol=0, atol=0, msg=name)


# Runs the trainer with the second torch.save (the kept copy of step 2, after last.pt's) stalled
# once its temporary is complete, and says so through a flag file: the test kills it there.
STALLED_KEPT_WRITE = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
real_save, calls = torch.save, []
def stalled_save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    calls.append(1)
    if len(calls) == 2:
        f.flush()
        open(sys.argv[2], "w").close()
        time.sleep(600)
torch.save = stalled_save
from meanflow import train
train.main(sys.argv[3:])
"""


def test_a_kill_between_last_pt_and_the_kept_copy_keeps_that_step_on_resume(tmp_path, fake_mnist, capsys):
    run, flag = tmp_path / "run", tmp_path / "writing"
    kill_when_flagged(STALLED_KEPT_WRITE, ROOT, flag, kept_argv(run, fake_mnist, 3))
    assert load(run / "last.pt")["step"] == 2 and not (run / "ckpt_0000002.pt").exists()

    capsys.readouterr()
    assert train.main(kept_argv(run, fake_mnist, 2))["steps_run"] == 0  # finished: nothing to train
    assert f"wrote {run / 'ckpt_0000002.pt'}" in capsys.readouterr().out
    assert_same_ema(load(run / "ckpt_0000002.pt"), load(run / "last.pt"))
    kept = (run / "ckpt_0000002.pt").stat()
    train.main(kept_argv(run, fake_mnist, 2))  # kept already: left as it is
    assert "wrote" not in capsys.readouterr().out
    assert (run / "ckpt_0000002.pt").stat().st_mtime_ns == kept.st_mtime_ns


@pytest.mark.parametrize("keep_full", [False, True])
def test_a_full_disk_at_the_kept_copy_keeps_that_step_on_resume(tmp_path, fake_mnist, monkeypatch, keep_full):
    run, full = tmp_path / "run", ["--keep_full", str(keep_full).lower()]
    with monkeypatch.context() as patch:
        fill_the_disk(patch, after=2)  # config.json and last.pt at step 2 fit, the kept copy not
        with pytest.raises(NoSpaceError, match="ckpt_0000002.pt"):
            train.main(kept_argv(run, fake_mnist, 3, *full))
    assert not (run / "ckpt_0000002.pt").exists()
    at_two = load(run / "last.pt")

    assert train.main(kept_argv(run, fake_mnist, 3, *full))["step"] == 3
    kept = load(run / "ckpt_0000002.pt")
    assert_same_ema(kept, at_two)
    assert ("opt" in kept) == keep_full


def test_a_new_run_never_replaces_the_kept_checkpoints_of_another(tmp_path, fake_mnist):
    run = tmp_path / "run"
    train.main(kept_argv(run, fake_mnist, 2, "--keep_full", "true"))
    os.unlink(run / "last.pt")  # removed by hand, or never copied with the kept ones
    kept = (run / "ckpt_0000002.pt").read_bytes()

    message = cli_error(kept_argv(run, fake_mnist, 4))
    assert "holds kept checkpoints (ckpt_0000002.pt .. ckpt_0000002.pt) but no last.pt" in message
    assert f"--resume {run / 'ckpt_0000002.pt'}" in message
    # Resumed from another run's checkpoint, this run would replace them too.
    other = tmp_path / "other"
    train.main(kept_argv(other, fake_mnist, 2, "--keep_full", "true", "--seed", "7"))
    message = cli_error(kept_argv(run, fake_mnist, 4, "--seed", "7", "--resume", str(other / "last.pt")))
    assert "holds the kept ckpt_0000002.pt of another run (seed: 0 there vs 7 here)" in message
    assert (run / "ckpt_0000002.pt").read_bytes() == kept and not (run / "last.pt").exists()

    # The same run going on from its own kept checkpoint is not refused.
    resumed = kept_argv(run, fake_mnist, 3, "--keep_full", "true", "--resume", str(run / "ckpt_0000002.pt"))
    assert train.main(resumed)["step"] == 3


def test_a_batch_the_ranks_cannot_split_evenly_is_refused_before_any_write(tmp_path, fake_mnist, monkeypatch):
    """batch_size is the global batch: 8 over 3 ranks would train on 6 rows a step, in silence."""
    monkeypatch.setattr(train, "setup_distributed", lambda device: (0, 3, torch.device("cpu")))
    message = cli_error(tiny_argv(tmp_path / "run", fake_mnist, "--batch_size", "8"))
    assert message.endswith("batch_size 8 (the global batch) must be a multiple of the 3 ranks, e.g. 6 or 9")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="batch_size 2 .* multiple of the 3 ranks, e.g. 3$"):
        train.check_batch_split(2, 3)
    train.check_batch_split(8, 2)


def test_a_run_without_emas_keeps_its_raw_weights(tmp_path, fake_mnist):
    """Without ema_decays a kept checkpoint of the EMAs alone held no weights at all."""
    from meanflow.pretrained import load_model

    run = tmp_path / "run"
    train.main(kept_argv(run, fake_mnist, 2, "--ema_decays", "[]"))
    kept, last = load(run / "ckpt_0000002.pt"), load(run / "last.pt")
    assert kept["ema"] == [] and "opt" not in kept
    for name, value in last["model"].items():
        torch.testing.assert_close(kept["model"][name], value, rtol=0, atol=0, msg=name)
    load_model(str(run / "ckpt_0000002.pt"), ema=None)
