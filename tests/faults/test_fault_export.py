"""meanflow.export writes only where it may: a training run or any folder it did not export is
refused and left byte for byte as it was; its own earlier export is replaced."""

import dataclasses
import errno
import json
import os

import pytest
import torch
from tree_snapshot import tree_snapshot

from meanflow import export
from meanflow.checkpoint import EXPORT_MARKER
from meanflow.models import DiT


def trainer_checkpoint(path, model):
    """A checkpoint shaped like meanflow.train's, with two EMA weight sets."""
    emas = [{k: v + 0.01 * (i + 1) for k, v in model.state_dict().items()} for i in range(2)]
    state = {"model": model.state_dict(), "ema": emas, "ema_decays": [0.9, 0.99], "step": 2}
    torch.save({**state, "model_config": dataclasses.asdict(model.config)}, path)
    return emas


def run_export(capsys, *args):
    """``python -m meanflow.export ARGS`` in-process: (exit status, stderr)."""
    try:
        export.main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def run_dir(tmp_path, tiny):
    """A training run as meanflow.train leaves it."""
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    trainer_checkpoint(run / "last.pt", tiny())
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    (run / "config.json").write_text('{"steps": 2}\n')
    (run / "samples" / "step_0000002.png").write_bytes(b"\x89PNG not really")
    return run


@pytest.mark.parametrize("pipeline", [False, True])
def test_export_into_its_training_run_is_refused_and_removes_nothing(run_dir, capsys, pipeline):
    before = tree_snapshot(run_dir, folders=True)
    flags = ["--pipeline"] if pipeline else []
    code, err = run_export(capsys, "--ckpt", str(run_dir / "last.pt"), "--out", str(run_dir), *flags)
    assert code == 2
    assert err.count("\n") == 1 and str(run_dir) in err and "refusing to overwrite" in err
    assert tree_snapshot(run_dir, folders=True) == before
    assert os.listdir(run_dir.parent) == ["run"]  # no temporary left beside it


def test_a_model_folder_of_someone_else_is_refused(tmp_path, run_dir, capsys):
    theirs = tmp_path / "sd-vae"  # a diffusers folder: config.json, like our exports used to show
    theirs.mkdir()
    (theirs / "config.json").write_text('{"_class_name": "AutoencoderKL"}\n')
    (theirs / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    before = tree_snapshot(theirs, folders=True)
    code, err = run_export(capsys, "--ckpt", str(run_dir / "last.pt"), "--out", str(theirs))
    assert code == 2 and str(theirs) in err and EXPORT_MARKER in err
    assert tree_snapshot(theirs, folders=True) == before


@pytest.mark.parametrize("pipeline", [False, True])
def test_rerun_over_its_own_export_replaces_it(tmp_path, run_dir, capsys, pipeline):
    out = tmp_path / "exported"
    flags = ["--pipeline"] if pipeline else []
    ckpt = str(run_dir / "last.pt")
    assert run_export(capsys, "--ckpt", ckpt, "--out", str(out), "--ema", "0", *flags)[0] == 0
    assert run_export(capsys, "--ckpt", ckpt, "--out", str(out), "--ema", "1", *flags)[0] == 0
    emas = torch.load(ckpt, weights_only=True)["ema"]
    model = DiT.from_pretrained(str(out / "transformer" if pipeline else out))
    for name, value in model.state_dict().items():
        assert torch.equal(value, emas[1][name]), name
    assert sorted(os.listdir(tmp_path)) == ["exported", "run"]
    listed = json.loads((out / EXPORT_MARKER).read_text())["files"]
    assert sorted(listed) == sorted(set(tree_snapshot(out, folders=True)) - {EXPORT_MARKER})


def test_a_file_added_to_an_export_is_never_removed(tmp_path, run_dir, capsys):
    out = tmp_path / "exported"
    ckpt = str(run_dir / "last.pt")
    assert run_export(capsys, "--ckpt", ckpt, "--out", str(out))[0] == 0
    (out / "README.md").write_text("my model card\n")
    before = tree_snapshot(out, folders=True)
    code, err = run_export(capsys, "--ckpt", ckpt, "--out", str(out), "--raw")
    assert code == 2 and "README.md" in err and str(out) in err
    assert tree_snapshot(out, folders=True) == before


def test_full_disk_during_an_export_keeps_the_previous_one(tmp_path, run_dir, capsys, monkeypatch):
    out = tmp_path / "exported"
    ckpt = str(run_dir / "last.pt")
    assert run_export(capsys, "--ckpt", ckpt, "--out", str(out))[0] == 0
    before = tree_snapshot(out, folders=True)
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    code, err = run_export(capsys, "--ckpt", ckpt, "--out", str(out), "--raw")
    assert code == 1 and err == f"error: no space left writing {out} (left as it was)\n"
    assert tree_snapshot(out, folders=True) == before
    assert sorted(os.listdir(tmp_path)) == ["exported", "run"]


def test_a_new_temporary_another_export_removed_before_holding_it_is_made_again(tmp_path, monkeypatch):
    """Between ``mkdtemp`` and its lock a new temporary looks like a killed export's leftover to
    another export starting then, whose recovery removes it; the export makes another and
    publishes whole (it failed before)."""
    import tempfile

    from meanflow import checkpoint

    out = str(tmp_path / "export")
    real, made = tempfile.mkdtemp, []

    def mkdtemp_then_another_exports_recovery(*args, **kwargs):
        made.append(real(*args, **kwargs))
        if len(made) == 1:
            with pytest.warns(UserWarning, match="interrupted export"):
                assert checkpoint.recover_interrupted_publish(out)
        return made[-1]

    monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", mkdtemp_then_another_exports_recovery)
    with checkpoint.atomic_directory(out) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert sorted(os.listdir(out)) == [EXPORT_MARKER, "new.txt"] and len(made) == 2
    assert os.listdir(tmp_path) == ["export"]
