"""meanflow.generate never mixes checkpoints in one sample set and fails cleanly: resuming from
a checkpoint that changed since (a live run's last.pt) is refused naming both hashes, an
--out that is a file and an unreadable shard are one-line errors that say what to do; a second
run on a busy --out is refused, and a resumed run removes what a killed one's writes left."""

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from manifests import edit_manifest
from tree_snapshot import tree_snapshot

import meanflow.generate as generate_cli

RUN = dict(num=6, batch_size=2, device="cpu", progress=False)


def save_ckpt(path, model):
    state = model.state_dict()
    config = dataclasses.asdict(model.config)
    torch.save({"model": state, "ema": [state], "ema_decays": [0.99], "model_config": config}, path)
    return str(path)


def interrupted_run(monkeypatch, ckpt, out, batches_done=2):
    """A run killed after ``batches_done`` batches: their shards are on disk, no samples.npz."""
    real, calls = generate_cli._generate_batch, []

    def crash_after(*args):
        calls.append(1)
        if len(calls) > batches_done:
            raise KeyboardInterrupt
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(generate_cli, "_generate_batch", crash_after)
        with pytest.raises(KeyboardInterrupt):
            generate_cli.run(ckpt, out, **RUN)
    assert sorted(os.listdir(os.path.join(out, "shards"))) == ["000000.npz", "000001.npz"]


def cli_error(capsys, argv) -> str:
    """The one-line error of ``meanflow.generate argv`` (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def sha256sum(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_resume_from_a_changed_checkpoint_is_refused(tmp_path, tiny, monkeypatch, capsys):
    ckpt, out = str(tmp_path / "last.pt"), str(tmp_path / "s")
    save_ckpt(ckpt, tiny(in_channels=3, seed=0))
    interrupted_run(monkeypatch, ckpt, out)
    first = sha256sum(ckpt)
    before = tree_snapshot(out)
    save_ckpt(ckpt, tiny(in_channels=3, seed=1))  # the live run saved a newer last.pt
    second = sha256sum(ckpt)
    with pytest.raises(ValueError) as refused:
        generate_cli.run(ckpt, out, **RUN)
    for named in (first, second, ckpt, "use another --out"):
        assert named in str(refused.value)
    err = cli_error(capsys, ["--ckpt", ckpt, "--out", out, "--num-samples", "6", "--batch-size", "2"])
    assert first in err and second in err
    assert tree_snapshot(out) == before  # nothing sampled, nothing removed

    # the same weights saved again (another file, same bytes) resume as before
    save_ckpt(ckpt, tiny(in_channels=3, seed=0))
    assert generate_cli.run(ckpt, out, **RUN)
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert manifest["complete"] and manifest["ckpt_sha256"] == first


def test_a_checkpoint_directory_has_an_identity_too(tmp_path, tiny):
    model = tiny(in_channels=3)
    model.save_pretrained(str(tmp_path / "m"))
    first = generate_cli.checkpoint_sha256(str(tmp_path / "m"))
    tiny(in_channels=3, seed=1).save_pretrained(str(tmp_path / "m"))
    assert generate_cli.checkpoint_sha256(str(tmp_path / "m")) != first


def test_out_that_is_a_file_is_a_clean_error(tmp_path, tiny, capsys):
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    taken = tmp_path / "notes.txt"
    taken.write_text("the user's file")
    for out in (taken, taken / "samples"):
        err = cli_error(capsys, ["--ckpt", ckpt, "--out", str(out), "--num-samples", "2", "--quiet"])
        assert str(out) in err and "is a file" in err
    assert taken.read_text() == "the user's file"
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "notes.txt"]


@pytest.mark.parametrize("png", [True, False])
def test_a_corrupt_shard_is_named(tmp_path, tiny, monkeypatch, capsys, png):
    """With PNGs, a resume reads a finished shard to restore its missing PNGs; without, the
    final assembly reads it. Following the message (delete, run again) finishes the set."""
    ckpt, out = str(tmp_path / "last.pt"), str(tmp_path / "s")
    save_ckpt(ckpt, tiny(in_channels=3))
    interrupted_run(monkeypatch, ckpt, out)
    shard = generate_cli.shard_path(out, 1)
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)  # a disk fault, a partial copy
    os.unlink(generate_cli.png_path(out, 2))  # a PNG of that shard's batch, to restore from it
    argv = ["--ckpt", ckpt, "--out", out, "--num-samples", "6", "--batch-size", "2", "--quiet"]
    argv += [] if png else ["--no-png"]
    err = cli_error(capsys, argv)
    assert shard in err and "delete it and run again" in err
    assert not os.path.exists(os.path.join(out, "samples.npz"))
    os.unlink(shard)
    generate_cli.main(argv)
    whole = str(tmp_path / "whole")
    generate_cli.run(ckpt, whole, **RUN)
    with (
        np.load(os.path.join(out, "samples.npz")) as got,
        np.load(os.path.join(whole, "samples.npz")) as want,
    ):
        assert np.array_equal(got["arr_0"], want["arr_0"])


def test_a_checkpoint_replaced_while_it_is_read_is_refused(tmp_path, tiny, monkeypatch):
    """The hash must describe the weights that were loaded: a save landing between the load
    and the hash (a live run's atomic replace) is caught, and nothing is sampled."""
    ckpt, out = str(tmp_path / "last.pt"), tmp_path / "new" / "s"
    save_ckpt(ckpt, tiny(in_channels=3, seed=0))
    real_load = generate_cli.load_model

    def load_then_newer_save(*args, **kwargs):
        model = real_load(*args, **kwargs)
        save_ckpt(str(tmp_path / "next.pt"), tiny(in_channels=3, seed=1))
        os.replace(tmp_path / "next.pt", ckpt)
        return model

    monkeypatch.setattr(generate_cli, "load_model", load_then_newer_save)
    with pytest.raises(ValueError, match=r"changed while it was read"):
        generate_cli.run(ckpt, str(out), **RUN)
    assert not (tmp_path / "new").exists()  # nor the folders made to hold --out


def test_an_out_holding_files_of_ours_without_their_manifest_is_refused(tmp_path, tiny, capsys):
    """Without the manifest nothing says the PNGs were made with these settings, or by us at
    all: another seed would silently overwrite them, a user's own image too."""
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    out = str(tmp_path / "s")
    generate_cli.run(ckpt, out, **RUN)
    os.unlink(os.path.join(out, "manifest.json"))
    os.unlink(os.path.join(out, "samples.npz"))
    before = tree_snapshot(out)
    argv = ["--ckpt", ckpt, "--out", out, "--num-samples", "6", "--batch-size", "2", "--seed", "5"]
    err = cli_error(capsys, [*argv, "--quiet"])
    assert f"--out {out}" in err and "000000.png" in err and "no manifest.json" in err
    assert tree_snapshot(out) == before

    user = tmp_path / "mine"
    (user / "images").mkdir(parents=True)
    (user / "images" / "000000.png").write_bytes(b"the user's picture")
    with pytest.raises(ValueError, match="--out .*mine holds .*000000.png but no manifest.json"):
        generate_cli.run(ckpt, str(user), **RUN)
    assert tree_snapshot(user) == {os.path.join("images", "000000.png"): b"the user's picture"}
    assert sorted(os.listdir(user)) == ["images"]


@pytest.mark.parametrize("content", [b"{bad", b"[1, 2]", b'{"note": "mine"}', b"\xff\xfe\x00"])
def test_a_damaged_or_foreign_manifest_is_named(tmp_path, tiny, monkeypatch, capsys, content):
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    out = str(tmp_path / "s")
    generate_cli.run(ckpt, out, **RUN)
    manifest = os.path.join(out, "manifest.json")
    with open(manifest, "wb") as f:
        f.write(content)
    before = tree_snapshot(out)
    err = cli_error(capsys, ["--ckpt", ckpt, "--out", out, "--num-samples", "6", "--batch-size", "2"])
    assert f"{manifest} is not a meanflow.generate manifest" in err and "--out" in err
    # refused before the checkpoint is read and hashed
    monkeypatch.setattr(generate_cli, "load_model", None)
    with pytest.raises(ValueError, match="is not a meanflow.generate manifest"):
        generate_cli.run(ckpt, out, **{**RUN, "seed": 1})
    assert tree_snapshot(out) == before


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A generate run that has started on --out argv[2] and is still loading its checkpoint (a big
# one takes seconds): it has found no manifest there yet, and will write one.
LOADING_RUN = """
import sys, time
import meanflow.generate as generate
def slow_load(*args, **kwargs):
    print("loading", flush=True)
    time.sleep(600)
generate.load_model = slow_load
generate.run(sys.argv[1], sys.argv[2], num=6, batch_size=2, device="cpu", progress=False)
"""


def test_a_second_run_on_a_busy_out_is_refused(tmp_path, tiny, capsys):
    """Two runs started together on a new --out with other settings would both find no
    manifest, both write one and mix their images: the second one is refused before it reads
    its checkpoint or writes anything, and once the first is killed (-9) the folder is free."""
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), str(tmp_path / "s")
    first = subprocess.Popen(
        [sys.executable, "-c", LOADING_RUN, ckpt, out], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert first.stdout.readline() == "loading\n"
        with pytest.raises(ValueError) as refused:
            generate_cli.run(ckpt, out, **{**RUN, "seed": 1})
        before = tree_snapshot(out)
        argv = ["--ckpt", ckpt, "--out", out, "--num-samples", "6", "--batch-size", "2", "--quiet"]
        err = cli_error(capsys, argv)
    finally:
        first.kill()
        first.communicate()
    busy = f"--out {out!r} is in use by another meanflow.generate run; wait for it to end or use another"
    assert busy in str(refused.value) and busy in err
    assert tree_snapshot(out) == before == {}
    assert generate_cli.run(ckpt, out, **RUN)


# What a run killed in its writes leaves: the temporaries atomic_write names .NAME.<8>.tmp.
KILLED_WRITES = (
    ".samples.npz.k2_9abcd.tmp",
    ".manifest.json.q8x0zz1m.tmp",
    os.path.join("shards", ".000002.npz.a1b2c3d4.tmp"),
    os.path.join("images", ".000004.png.zz_00017.tmp"),
)
# Names like those that this program did not give: never removed.
FOREIGN = (
    ".samples.npz.notes.tmp",
    ".samples.npz.k2_9abcd.tmp.bak",
    ".mine.npz.k2_9abcd.tmp",
    ".000002.npz.a1b2c3d4.tmp",
    "samples.npz.k2_9abcd.tmp",
    os.path.join("shards", ".000002.npz.A1B2C3D4.tmp"),
    os.path.join("shards", ".notes.npz.a1b2c3d4.tmp"),
    os.path.join("images", ".000004.jpg.zz_00017.tmp"),
)


def test_a_resumed_run_removes_the_temporaries_a_killed_one_left(tmp_path, tiny, monkeypatch, capsys):
    """A killed run's temporary of samples.npz is as large as the whole set: a resumed run
    removes each one of its own, and says so in one line, once it knows the folder is its
    own; a refused run removes none, and nothing of another name (a folder or a link named
    like one included) is touched."""
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), str(tmp_path / "s")
    interrupted_run(monkeypatch, ckpt, out)
    for name in KILLED_WRITES + FOREIGN:
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"half written")
    os.mkdir(os.path.join(out, "images", ".000005.png.abcdefgh.tmp"))
    os.symlink(ckpt, os.path.join(out, "shards", ".000001.npz.abcdefgh.tmp"))
    capsys.readouterr()
    before = tree_snapshot(out)
    with pytest.raises(ValueError, match="other settings"):
        generate_cli.run(ckpt, out, **{**RUN, "seed": 1})
    assert tree_snapshot(out) == before

    assert generate_cli.run(ckpt, out, **RUN)
    for name in KILLED_WRITES:
        assert not os.path.lexists(os.path.join(out, name)), name
    for name in FOREIGN:
        assert open(os.path.join(out, name), "rb").read() == b"half written", name
    assert os.path.isdir(os.path.join(out, "images", ".000005.png.abcdefgh.tmp"))
    assert os.path.islink(os.path.join(out, "shards", ".000001.npz.abcdefgh.tmp"))
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 1 and said[0].startswith("removed 4 "), said
    assert all(os.path.join(out, name) in said[0] for name in KILLED_WRITES), said


def test_a_vae_replaced_at_its_path_is_refused_on_resume(tmp_path, tiny, tiny_vae, monkeypatch):
    """Half the set decoded with one VAE and half with another would look like one set: the
    manifest records the VAE's weights hash, as it does the checkpoint's, not its path alone."""
    pytest.importorskip("diffusers")
    from meanflow.vae import load_vae

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", tiny_vae[1])
    folder = str(tmp_path / "vae")
    vae.save_pretrained(folder)
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=4)), str(tmp_path / "s")
    monkeypatch.setitem(RUN, "vae", folder)
    interrupted_run(monkeypatch, ckpt, out)
    before = tree_snapshot(out)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(1e-2)
    vae.save_pretrained(folder)  # another VAE under the same path
    with pytest.raises(ValueError, match=r"--vae's sha256: .* there, .* now\): use another --out"):
        generate_cli.run(ckpt, out, **RUN)
    assert tree_snapshot(out) == before

    with torch.no_grad():
        for p in vae.parameters():
            p.sub_(1e-2)
    vae.save_pretrained(folder)  # the VAE the set began with: an older manifest without its
    edit_manifest(out, drop=["vae_sha256"])  # hash resumes as it did before the hash
    assert generate_cli.run(ckpt, out, **RUN)


def test_a_run_killed_in_its_first_manifest_write_leaves_nothing_after_the_next(tmp_path, tiny, capsys):
    """Killed while it wrote the first manifest, a run left its temporary in a folder without a
    manifest: the next run, once its own manifest is written, removes it (no later resume may
    come to) and says so; a temporary of another name stays, as nothing says it was ours."""
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), tmp_path / "s"
    out.mkdir()
    for name in (".manifest.json.q8x0zz1m.tmp", ".samples.npz.k2_9abcd.tmp"):
        (out / name).write_bytes(b"half written")
    assert generate_cli.run(ckpt, str(out), **RUN)
    assert not (out / ".manifest.json.q8x0zz1m.tmp").exists()
    assert (out / ".samples.npz.k2_9abcd.tmp").read_bytes() == b"half written"
    said = capsys.readouterr().err.splitlines()
    assert said == [f"removed 1 temporary of writes a killed run left: {out / '.manifest.json.q8x0zz1m.tmp'}"]


@pytest.mark.parametrize(
    "changed, said",
    [
        (dict(steps=2), "--steps: 1 there, 2 now"),
        (dict(classes="random"), "--classes: 'balanced' there, 'random' now"),
        (dict(batch_size=3), "--batch-size: 2 there, 3 now"),  # shard k would hold other indices
        (dict(dtype="bf16"), "--dtype: 'fp32' there, 'bf16' now"),
        (dict(ema=None), "--ema/--raw: 0 there, None now"),  # --raw: other weights
    ],
)
def test_a_resume_with_other_settings_is_refused_naming_each(tmp_path, tiny, monkeypatch, changed, said):
    """Half a set made in one step and half in two, or half class-balanced and half random,
    would read as one set: a resume must repeat every setting that decides the images."""
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), str(tmp_path / "s")
    interrupted_run(monkeypatch, ckpt, out)
    before = tree_snapshot(out)
    with pytest.raises(ValueError, match=re.escape(f"other settings ({said})")):
        generate_cli.run(ckpt, out, **{**RUN, **changed})
    assert tree_snapshot(out) == before


def test_a_manifest_missing_a_setting_is_not_taken_for_any(tmp_path, tiny, monkeypatch):
    """A manifest that lost a setting (edited by hand) says nothing of the images made with it:
    it is refused, not resumed under whatever the new run was given. Only a key that later
    versions added may be missing (an older set: ``test_a_vae_replaced_at_its_path...``)."""
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), str(tmp_path / "s")
    interrupted_run(monkeypatch, ckpt, out)
    edit_manifest(out, drop=["seed"])
    before = tree_snapshot(out)
    with pytest.raises(ValueError, match=re.escape("other settings (--seed: None there, 0 now)")):
        generate_cli.run(ckpt, out, **RUN)
    assert tree_snapshot(out) == before
