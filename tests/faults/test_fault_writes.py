"""Files the trainer, exporter, sampler and latent encoder write: a kill -9 or a full disk
mid-checkpoint keeps the last good checkpoint, the next start removes the leftover
temporary, modes follow the umask, and a symbolic link or a folder where a file of ours
belongs is an error, never written through."""

import os
import runpy
import stat
import subprocess
import sys
import warnings

import pytest
from full_disk import fill_the_disk
from kill_at_flag import kill_when_flagged

from meanflow import export, train
from meanflow.checkpoint import NoSpaceError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_argv(out_dir, data_path, steps, ckpt_every=2):
    return [
        "--model", "DiT-T/8", "--model_kwargs", "{depth: 1, hidden_size: 32, num_heads: 2}",
        "--steps", str(steps), "--batch_size", "8", "--data.path", data_path, "--out_dir", str(out_dir),
        "--ckpt_every", str(ckpt_every), "--log_every", "1", "--sample_every", "0",
        "--eval_samples", "0", "--progress", "false",
    ]  # fmt: skip


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


# ------------------------------------------------------------------ kill -9 mid-write

# Runs the trainer with a checkpoint write that stalls once its temporary is complete, and
# says so through a flag file: the test kills it there, as a power user's kill -9 would.
STALLED_TRAINER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import torch
real_save = torch.save
def stalled_save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    f.flush()
    open(sys.argv[2], "w").close()
    time.sleep(600)
torch.save = stalled_save
from meanflow import train
train.main(sys.argv[3:])
"""


def test_kill_during_a_checkpoint_write_keeps_last_pt_and_the_next_start_cleans_up(
    tmp_path, fake_mnist, capsys
):
    run = tmp_path / "run"
    train.main(train_argv(run, fake_mnist, steps=2))
    good = read_bytes(run / "last.pt")
    flag = tmp_path / "writing"
    argv = train_argv(run, fake_mnist, steps=4, ckpt_every=1)
    kill_when_flagged(STALLED_TRAINER, ROOT, flag, argv)
    [leftover] = temporaries(run)
    assert leftover.startswith(".last.pt.") and os.path.getsize(run / leftover) > 0
    assert read_bytes(run / "last.pt") == good
    # Look-alikes that are not the atomic writer's temporaries, or not of a run file, stay.
    decoys = [".last.pt.tmp", ".last.pt.abcdefgh.tmp.keep", "notes.tmp", ".notes.json.abcdefgh.tmp"]
    for name in decoys:
        (run / name).write_text("not ours to remove")
    (run / ".ckpt_0000004.pt.abcdefgh.tmp").mkdir()  # a folder, not a file we wrote
    # Ours too: a kept checkpoint's past step 9,999,999, and the log's rewrite on a resume.
    killed_writes = [leftover, ".ckpt_12345678.pt.k2_9abcd.tmp", ".metrics.jsonl.q8x0zz1m.tmp"]
    for name in killed_writes[1:]:
        (run / name).write_text("half written")

    capsys.readouterr()
    summary = train.main(train_argv(run, fake_mnist, steps=3))
    assert summary["step"] == 3 and summary["steps_run"] == 1
    said = capsys.readouterr().out
    for name in killed_writes:
        assert f"removed {run / name}" in said
        assert not (run / name).exists()
    assert temporaries(run) == sorted([".ckpt_0000004.pt.abcdefgh.tmp", *decoys[:1], *decoys[2:]])
    assert (run / ".last.pt.abcdefgh.tmp.keep").exists()


# ------------------------------------------------------------------ full disk


def test_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(
    tmp_path, fake_mnist, monkeypatch, capsys
):
    run = tmp_path / "run"
    train.main(train_argv(run, fake_mnist, steps=2))
    good = read_bytes(run / "last.pt")
    fill_the_disk(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["meanflow.train", *train_argv(run, fake_mnist, steps=4)])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as stop:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already
        runpy.run_module("meanflow.train", run_name="__main__")
    message = f"meanflow.train: error: no space left writing {run / 'last.pt'} (left as it was)"
    assert stop.value.code == message
    assert read_bytes(run / "last.pt") == good
    assert temporaries(run) == []


@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs (root only); skipped with the reason where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the full disk is simulated in the test above instead")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the test above simulates it")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_filesystem_keeps_the_previous_checkpoint(small_filesystem, fake_mnist):
    run = small_filesystem / "run"
    train.main(train_argv(run, fake_mnist, steps=2))
    good = read_bytes(run / "last.pt")
    # Leave room for config.json and the metrics, not for a second checkpoint.
    free = os.statvfs(run).f_bavail * os.statvfs(run).f_frsize
    (small_filesystem / "filler").write_bytes(b"\0" * max(0, free - len(good) // 2))
    with pytest.raises(NoSpaceError, match=f"^no space left writing {run / 'last.pt'}"):
        train.main(train_argv(run, fake_mnist, steps=4))
    assert read_bytes(run / "last.pt") == good
    assert temporaries(run) == []


# ------------------------------------------------------------------ where our files belong


def test_last_pt_that_is_a_folder_is_an_error_before_training(tmp_path, fake_mnist):
    run = tmp_path / "run"
    (run / "last.pt").mkdir(parents=True)
    (run / "last.pt" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match=f"^{run / 'last.pt'} is a directory"):
        train.main(train_argv(run, fake_mnist, steps=2))
    assert (run / "last.pt" / "mine.txt").read_text() == "keep"
    assert os.listdir(run) == ["last.pt"]  # nothing written before the error


def test_metrics_symlink_is_refused_before_anything_is_written(tmp_path, fake_mnist):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere.jsonl"
    run.mkdir()
    elsewhere.write_text("someone's log\n")
    (run / "metrics.jsonl").symlink_to(elsewhere)
    with pytest.raises(ValueError, match=f"^{run / 'metrics.jsonl'} is a symbolic link"):
        train.main(train_argv(run, fake_mnist, steps=1))
    assert elsewhere.read_text() == "someone's log\n"
    assert sorted(os.listdir(run)) == ["metrics.jsonl"]


def test_config_symlink_is_replaced_not_written_through(tmp_path, fake_mnist):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere.json"
    run.mkdir()
    elsewhere.write_text("{}\n")
    (run / "config.json").symlink_to(elsewhere)
    train.main(train_argv(run, fake_mnist, steps=1))
    assert elsewhere.read_text() == "{}\n"
    assert not (run / "config.json").is_symlink() and '"steps": 1' in (run / "config.json").read_text()


# ------------------------------------------------------------------ modes under the umask


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def assert_modes(root, umask):
    """Every file ``0o666 & ~umask``, every folder ``0o777 & ~umask`` (root included)."""
    wrong = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name, want in [(n, 0o777) for n in dirnames] + [(n, 0o666) for n in filenames]:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            if mode != want & ~umask:
                wrong[os.path.relpath(os.path.join(dirpath, name), root)] = oct(mode)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o777 & ~umask
    assert wrong == {}


def test_checkpoint_and_run_files_follow_the_umask(tmp_path, fake_mnist, umask):
    train.main(train_argv(tmp_path / "run", fake_mnist, steps=2))
    assert_modes(tmp_path / "run", umask)


@pytest.mark.parametrize("pipeline", [False, True])
def test_export_follows_the_umask(tmp_path, tiny, umask, pipeline):
    tiny().save_pretrained(str(tmp_path / "model"))
    flags = ["--pipeline"] if pipeline else []
    export.main(["--ckpt", str(tmp_path / "model"), "--out", str(tmp_path / "exported"), *flags])
    assert_modes(tmp_path / "exported", umask)


def test_sample_set_follows_the_umask(tmp_path, tiny, umask):
    import meanflow.generate as generate_cli

    tiny().save_pretrained(str(tmp_path / "model"))
    out = tmp_path / "samples"
    args = ["--ckpt", str(tmp_path / "model"), "--out", str(out), "--num", "3", "--batch-size", "2"]
    generate_cli.main([*args, "--keep-shards", "--quiet"])
    assert sorted(os.listdir(out)) == ["images", "manifest.json", "samples.npz", "shards"]
    assert_modes(out, umask)


def test_latent_shards_follow_the_umask(tmp_path, tiny_vae, umask):
    pytest.importorskip("diffusers", reason="prepare_latents encodes with a diffusers AutoencoderKL")
    from meanflow.data.synthetic import make_image_tree
    from meanflow.prepare_latents import prepare_latents

    make_image_tree(str(tmp_path / "images"), classes=2, per_class=2, sides=(24, 40), extras=False)
    dst = tmp_path / "latents"
    with pytest.warns(UserWarning, match="RANDOM"):
        prepare_latents(
            str(tmp_path / "images"), str(dst), "random", tiny_vae[1], image_size=16, batch_size=2,
            shard_size=2, num_workers=0, scan_workers=0, progress=False, device="cpu", preview=2,
        )  # fmt: skip
    assert len([n for n in os.listdir(dst) if n.startswith("shard")]) == 2
    assert_modes(dst, umask)
