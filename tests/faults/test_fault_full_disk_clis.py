"""A full disk under generate, evaluate and prepare_latents: one line on stderr and exit status
1 (the environment, not the arguments), what was finished before stays, nothing half-written is
left behind, and the same command finishes the job once there is room."""

import errno
import os

import numpy as np
import pytest
import torch
from full_disk import fill_the_disk

import meanflow.generate as generate_cli


def one_line_error(capsys, main, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def temporaries(folder) -> list:
    found = (os.path.join(root, n) for root, dirs, files in os.walk(folder) for n in dirs + files)
    return sorted(p for p in found if os.path.basename(p).startswith("."))


def test_generate_keeps_its_finished_shards_and_resumes(tmp_path, tiny, capsys, monkeypatch):
    model = tiny(in_channels=3)
    model.save_pretrained(str(tmp_path / "m"))
    out = tmp_path / "samples"
    argv = ["--ckpt", str(tmp_path / "m"), "--out", str(out), "--num-samples", "6", "--batch-size", "2"]
    argv += ["--device", "cpu", "--quiet", "--no-png"]
    with monkeypatch.context() as patch:
        fill_the_disk(patch, room=64, after=2)  # the run's settings file and the first shard fit
        err = one_line_error(capsys, generate_cli.main, argv)
    assert "no space left writing" in err and "000001.npz" in err
    assert sorted(os.listdir(out / "shards")) == ["000000.npz"]
    assert temporaries(out) == []
    first = np.load(out / "shards" / "000000.npz")["images"].copy()

    generate_cli.main(argv)
    with np.load(out / "samples.npz") as done:
        assert done["arr_0"].shape[0] == 6
        np.testing.assert_array_equal(done["arr_0"][:2], first)


pytest.importorskip("torch_fidelity")


def test_evaluate_keeps_the_previous_report(tmp_path, capsys, monkeypatch):
    from test_fault_evaluate import PINNED, pin

    from meanflow import evaluate as ev

    rng = np.random.default_rng(0)
    a, b = (str(tmp_path / f"{n}.npz") for n in "ab")
    for path in (a, b):
        np.savez(path, arr_0=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
    weights = tmp_path / "w.pt"
    torch.save(torch.randn(48, 4), weights)
    pin(monkeypatch, PINNED, str(weights))
    out = tmp_path / "report.json"
    out.write_text('{"fid": 1.0}\n')
    argv = [a, "--ref", b, "--out", str(out), "--feature-extractor", PINNED]
    argv += ["--extractor-weights", str(weights), "--metrics", "fid"]
    with monkeypatch.context() as patch:
        fill_the_disk(patch, room=8)
        err = one_line_error(capsys, ev.main, argv + ["--quiet"])
    assert err == f"error: no space left writing {out} (left as it was)\n"
    assert out.read_text() == '{"fid": 1.0}\n'
    assert temporaries(tmp_path) == []


def test_prepare_latents_drops_the_half_shard_and_resumes(tmp_path, tiny_vae, capsys, monkeypatch):
    pytest.importorskip("diffusers")
    from meanflow.data.synthetic import make_image_tree
    from meanflow.prepare_latents import main

    src, dst = str(tmp_path / "train"), str(tmp_path / "latents")
    make_image_tree(src, classes=2, per_class=4, sides=(24, 40))  # 11 good images: 3 shards of 4
    argv = [src, dst, "--vae", "random", "--vae-config", tiny_vae[1], "--image-size", "32"]
    argv += ["--batch-size", "2", "--shard-size", "4", "--device", "cpu", "--reader", "torch"]
    argv += ["--workers", "0", "--scan-workers", "0", "--preview", "0", "--no-progress"]
    real_save, saved = np.save, []

    def save_until_full(path, array, *args, **kwargs):
        saved.append(path)
        if len(saved) > 6:  # the first shard (4 latents + labels) and one latent of the second
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_save(path, array, *args, **kwargs)

    with monkeypatch.context() as patch, pytest.warns(UserWarning, match="RANDOM"):
        patch.setattr(np, "save", save_until_full)
        err = one_line_error(capsys, main, argv)
    assert "No space left on device" in err
    assert [n for n in os.listdir(dst) if n.startswith("shard")] == ["shard_00000"]
    assert temporaries(dst) == []

    with pytest.warns(UserWarning, match="RANDOM"):
        assert main(argv) == 0
    assert "1 of 3 shards already done" in capsys.readouterr().out
    assert sorted(n for n in os.listdir(dst) if n.startswith("shard")) == [f"shard_0000{k}" for k in range(3)]
