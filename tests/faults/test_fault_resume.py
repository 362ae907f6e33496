"""Resuming a run: a finished run is left alone, a resume says from which step, a checkpoint of
another run or missing a key is refused in one line naming it, the global RNGs resume exactly;
no run replaces another's checkpoint, and one out_dir holds one trainer at a time."""

import os
import random
import shutil
import subprocess
import sys

import numpy as np
import torch
from trainer_cli import cli_error
from trainer_cli import tiny_argv as one_step_argv
from tree_snapshot import tree_snapshot

from meanflow import train, train_state


def tiny_argv(out_dir, data_path, *extra):
    """A 2-step run, a checkpoint and a log line every step."""
    return one_step_argv(out_dir, data_path, "--steps", "2", "--ckpt_every", "1", "--log_every", "1", *extra)


def test_finished_run_is_left_alone(tmp_path, fake_mnist, capsys):
    """Re-running a finished run (or asking for fewer steps) trains nothing and touches no file:
    config.json keeps describing last.pt, metrics.jsonl gets no second summary."""
    out = tmp_path / "run"
    train.cli(tiny_argv(out, fake_mnist))
    before = tree_snapshot(out, times=True)
    assert {"last.pt", "config.json", "metrics.jsonl"} <= set(before)
    capsys.readouterr()
    for steps in ("2", "1"):
        train.cli(tiny_argv(out, fake_mnist, "--steps", steps))  # exit status 0: no SystemExit
        assert capsys.readouterr().out == f"{out} is already at step 2 >= {steps}: nothing to do\n"
        assert tree_snapshot(out, times=True) == before


def test_resume_says_so_and_takes_a_new_schedule(tmp_path, fake_mnist, capsys):
    """steps, lr, warmup, grad_clip and the cadences may change on resume."""
    out = tmp_path / "run"
    train.cli(tiny_argv(out, fake_mnist))
    capsys.readouterr()
    schedule = ["--lr", "2e-3", "--warmup_steps", "5", "--grad_clip", "0.5", "--log_every", "2"]
    train.cli(tiny_argv(out, fake_mnist, "--steps", "3", "--ckpt_every", "3", *schedule))
    assert capsys.readouterr().out.startswith(f"resuming {out} from step 2\n")
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


def test_resume_refuses_another_run_naming_the_key(tmp_path, fake_mnist):
    out, other_data = tmp_path / "run", str(tmp_path / "other-mnist")
    shutil.copytree(fake_mnist, other_data)
    train.cli(tiny_argv(out, fake_mnist))
    before = tree_snapshot(out, times=True)
    for extra, change in [
        (["--seed", "1"], "seed: checkpoint 0 vs this run 1"),
        (["--batch_size", "4"], "batch_size: checkpoint 8 vs this run 4"),
        (["--loss.cfg_w", "2"], "loss.cfg_w: checkpoint 1.0 vs this run 2.0"),
        (["--loss.objective", "flow_matching"], "loss.objective: checkpoint 'meanflow' vs this run 'flow"),
        (["--ema_decays", "0.5"], "ema_decays: checkpoint [0.999] vs this run [0.5]"),
        (["--weight_decay", "0.1"], "weight_decay: checkpoint 0.0 vs this run 0.1"),
        (["--data.path", other_data], f"data.path: checkpoint {fake_mnist!r} vs this run {other_data!r}"),
    ]:
        message = cli_error(tiny_argv(out, fake_mnist, "--steps", "4", *extra))
        assert f"checkpoint {str(out / 'last.pt')!r} is for another run ({change}" in message
        assert tree_snapshot(out, times=True) == before


def test_checkpoint_missing_a_key_is_one_line_naming_file_and_key(tmp_path, fake_mnist):
    train.cli(tiny_argv(tmp_path / "run", fake_mnist))
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    for key in ("opt", "rng"):
        path = str(tmp_path / f"no-{key}.pt")
        torch.save({k: v for k, v in ckpt.items() if k != key}, path)
        message = cli_error(tiny_argv(tmp_path / "new", fake_mnist, "--steps", "4", "--resume", path))
        assert f"checkpoint {path!r} lacks the key(s) {key}: it cannot resume a run" in message
    path = str(tmp_path / "no-epoch.pt")
    torch.save({**ckpt, "data": {"position": 2}, "data_ranks": [{"position": 2}]}, path)
    message = cli_error(tiny_argv(tmp_path / "new", fake_mnist, "--steps", "4", "--resume", path))
    assert f"checkpoint {path!r} does not fit this run: missing key 'epoch'" in message
    assert not (tmp_path / "new").exists()


def test_global_rngs_resume_exactly(tmp_path, fake_mnist, monkeypatch):
    """torch, numpy and random draws made during training (as a registered loader or another
    objective might) are the same in 2 steps + resume + 2 steps as in 4 uninterrupted steps."""
    from meanflow.loss import MeanFlowLoss

    draws, sample_noise = [], MeanFlowLoss.sample_noise

    def drawing(self, *args, **kwargs):
        draws.append((torch.rand(()).item(), np.random.rand(), random.random()))
        return sample_noise(self, *args, **kwargs)

    monkeypatch.setattr(MeanFlowLoss, "sample_noise", drawing)
    train.main(tiny_argv(tmp_path / "full", fake_mnist, "--steps", "4"))
    full = draws[:]
    draws.clear()
    train.main(tiny_argv(tmp_path / "half", fake_mnist, "--steps", "2"))
    train.main(tiny_argv(tmp_path / "half", fake_mnist, "--steps", "4"))
    assert len(set(full)) == 4 and draws == full


def _draws_after_restore(rngs, rank, world):
    """The torch, numpy and python draws of rank ``rank`` of ``world`` after it restored ``rngs``
    (the caller's generators are left as they were)."""
    saved = train_state.rng_state(torch.device("cpu"))
    try:
        train_state.restore_rngs(rngs, 0, 5, rank, world, torch.device("cpu"))
        return torch.rand(()).item(), np.random.rand(), random.random()
    finally:
        train_state.set_rng_state(saved, torch.device("cpu"))


def test_global_rngs_under_another_world_size_are_each_ranks_own():
    """A checkpoint of one rank resumed by 2 or 4: no rank is given rank 0's stream (every rank
    would draw the same dropout masks); each rank's stream depends on its rank, not the world
    size. Under the same world size every rank takes back its own saved state."""
    saved = [train_state.rng_state(torch.device("cpu"))]
    draws = {world: [_draws_after_restore(saved, r, world) for r in range(world)] for world in (2, 4)}
    assert len(set(draws[4])) == 4 and draws[2] == draws[4][:2]
    assert _draws_after_restore(saved, 0, 1) not in draws[4]
    two = [train_state.rng_state(torch.device("cpu")) for _ in range(2)]
    two[1]["python"] = random.Random(1).getstate()
    assert _draws_after_restore(two, 1, 2)[2] == random.Random(1).random()


def test_resume_into_another_runs_out_dir_is_refused(tmp_path, fake_mnist):
    """``--resume`` of one run's checkpoint with ``--out_dir`` of another would replace that
    run's last.pt: refused, naming the key. Going back to an earlier checkpoint of the run
    that out_dir holds would replace what it wrote later (its last.pt, its later kept
    checkpoints): refused naming them, until the user moves them away."""
    first, second = tmp_path / "first", tmp_path / "second"
    train.cli(tiny_argv(first, fake_mnist))
    train.cli(tiny_argv(second, fake_mnist, "--seed", "7", "--keep_every", "1", "--keep_full", "true"))
    before = tree_snapshot(second, times=True)
    message = cli_error(tiny_argv(second, fake_mnist, "--steps", "3", "--resume", str(first / "last.pt")))
    assert f"out_dir {str(second)!r} holds the last.pt of another run (seed: 7 there vs 0 here)" in message
    assert tree_snapshot(second, times=True) == before
    back = tiny_argv(second, fake_mnist, "--seed", "7", "--resume", str(second / "ckpt_0000001.pt"))
    message = cli_error(back)
    assert (
        f"out_dir {str(second)!r} holds what its run wrote after step 1 (last.pt at step 2, ckpt_0000002.pt)"
        in message
    )
    assert tree_snapshot(second, times=True) == before
    moved = tmp_path / "moved"
    moved.mkdir()
    os.replace(second / "ckpt_0000002.pt", moved / "ckpt_0000002.pt")
    assert "(last.pt at step 2)" in cli_error(back)
    os.replace(second / "last.pt", moved / "last.pt")
    train.cli(back)
    assert torch.load(second / "last.pt", weights_only=True)["step"] == 2


def test_a_second_trainer_on_a_busy_out_dir_is_refused(tmp_path, fake_mnist):
    """While another process holds out_dir as a trainer does, a trainer started on it (which
    would resume from the first one's checkpoint and rewrite it) stops before reading or
    writing anything; once that process is killed (-9) the run goes on. (A trainer killed in
    a checkpoint write and restarted: tests/faults/test_fault_writes.py.)"""
    out = tmp_path / "run"
    train.cli(tiny_argv(out, fake_mnist))
    before = tree_snapshot(out, times=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUT_DIR, str(out)], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        message = cli_error(tiny_argv(out, fake_mnist, "--steps", "4"))
    finally:
        holder.kill()
        holder.communicate()
    assert f"out_dir {str(out)!r} is in use by another meanflow.train run" in message
    assert tree_snapshot(out, times=True) == before
    train.cli(tiny_argv(out, fake_mnist, "--steps", "3"))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD_OUT_DIR = """
import sys, time
from meanflow.train_state import exclusive_out_dir
with exclusive_out_dir(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_out_dir_and_resume_of_the_wrong_kind_say_so(tmp_path, fake_mnist):
    run, not_a_folder = tmp_path / "run", tmp_path / "file"
    train.cli(tiny_argv(run, fake_mnist))
    message = cli_error(tiny_argv(tmp_path / "new", fake_mnist, "--steps", "4", "--resume", str(run)))
    assert (
        f"resume {str(run)!r} is a directory; a run resumes from a file, e.g. {str(run / 'last.pt')!r}"
        in message
    )
    assert not (tmp_path / "new").exists()
    not_a_folder.write_text("mine")
    assert cli_error(tiny_argv(not_a_folder, fake_mnist)).endswith(
        f"out_dir {str(not_a_folder)!r} is not a directory"
    )
    assert not_a_folder.read_text() == "mine"


def test_resume_onto_renamed_class_folders_is_refused_and_export_keeps_the_names(tmp_path):
    """Labels are class folders' sorted positions: another set of names with the same count
    (one class swapped for another) would shift labels of a resumed run without a word, and
    name an export's classes after the new folders."""
    from meanflow.class_names import checkpoint_id2label
    from meanflow.data.synthetic import make_image_tree

    root = tmp_path / "images"
    make_image_tree(str(root), classes=3, per_class=4, sides=(16, 20), extras=False)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    folder = ["--data.name", "imagefolder", "--data.path", str(root), "--data.backend", "torch"]
    folder += ["--data.image_size", "16", "--data.num_workers", "0", "--model", "DiT-T/8"]
    out = tmp_path / "run"
    train.cli(tiny_argv(out, str(root), *folder))
    assert checkpoint_id2label(str(out / "last.pt"), 3) == dict(enumerate(classes))
    before = tree_snapshot(out, times=True)

    os.rename(root / classes[1], root / "zzz_new_class")  # labels 1, 2 now mean other folders
    message = cli_error(tiny_argv(out, str(root), *folder, "--steps", "3"))
    assert f"label 1 was class {classes[1]!r}, now {classes[2]!r}" in message
    assert "last.pt" in message and tree_snapshot(out, times=True) == before
    assert checkpoint_id2label(str(out / "last.pt"), 3) == dict(enumerate(classes))

    shutil.rmtree(root / "zzz_new_class")
    message = cli_error(tiny_argv(out, str(root), *folder, "--steps", "3"))
    assert (
        "checkpoint" in message and tree_snapshot(out, times=True) == before
    )  # 2 classes: the model's shape says so


def test_resume_onto_other_images_in_the_mnist_files_is_refused(tmp_path, fake_mnist):
    """Another data set in MNIST's files (Fashion-MNIST: as many images of 10 classes) passes
    the count and class checks: the checkpoint records the data's hash."""
    import gzip

    out = tmp_path / "run"
    train.cli(tiny_argv(out, fake_mnist))
    before = tree_snapshot(out, times=True)
    path = os.path.join(fake_mnist, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as f:
        data = bytearray(f.read())
    data[16:] = bytes(255 - b for b in data[16:])  # other images, the same header and count
    with gzip.open(path, "wb") as f:
        f.write(bytes(data))
    message = cli_error(tiny_argv(out, fake_mnist, "--steps", "3"))
    assert "last.pt" in message and "MNIST images and labels: sha256" in message
    assert tree_snapshot(out, times=True) == before
