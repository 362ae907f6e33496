"""Two processes on the same files: a second prepare_latents on a destination another one is
filling is refused before it removes or writes anything; a second export to a folder another
export is writing is refused and leaves that export's temporary alone, and two exports started
together each publish whole, the last one's staying, as when run one after the other; a reader
of a pretrained folder that an export replaces meanwhile loads one export whole, never the
config of one and the weights of the other. Each interleaving is forced by a step that stops
until the test goes on, never by timing."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tree_snapshot import tree_snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore:.*RANDOM.*:UserWarning")]


def start(script: str, *argv) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, ROOT, *map(str, argv)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )


def wait_for(process: subprocess.Popen, line: str) -> None:
    """Until ``process`` prints ``line`` (its other output passes by); a process that ends
    first fails the test."""
    for got in process.stdout:
        if got == line + "\n":
            return
    raise AssertionError(f"the other process ended (exit status {process.wait()}) before {line!r}")


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.communicate(timeout=60)


# ------------------------------------------------------------------- prepare_latents

# prepare_latents ARGV that stops in its first shard, its temporary shard folder made, until
# killed (a VAE batch on a GPU takes that long for a big shard).
ENCODING_RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
import meanflow.prepare_latents as p
def encoding(*args, **kwargs):
    print("encoding", flush=True)
    time.sleep(600)
p.encode_moments = encoding
p.main(sys.argv[2:])
"""


def prepare_argv(src, dst, vae_config):
    return [src, str(dst), "--vae", "random", "--vae-config", vae_config, "--image-size", "16",
            "--batch-size", "4", "--shard-size", "2", "--device", "cpu", "--workers", "0",
            "--scan-workers", "0", "--preview", "0", "--no-progress", "--reader", "torch"]  # fmt: skip


def test_a_second_prepare_latents_on_a_busy_destination_is_refused(tmp_path, tiny_vae, capsys):
    """Unrefused, the second run removed the first one's live temporary shard folder and wrote
    the shards and manifest under it: the first run then failed or rewrote them."""
    pytest.importorskip("diffusers")
    from meanflow.data.synthetic import make_image_tree
    from meanflow.prepare_latents import main

    src, dst = str(tmp_path / "train"), tmp_path / "latents"
    make_image_tree(src, classes=2, per_class=2, sides=(16, 40), extras=False)
    argv = prepare_argv(src, dst, tiny_vae[1])
    first = start(ENCODING_RUN, *argv)
    try:
        wait_for(first, "encoding")
        before = tree_snapshot(dst, folders=True)
        assert ".shard_00000.tmp" in before
        with pytest.raises(SystemExit) as refused:
            main(argv)
        after = tree_snapshot(dst, folders=True)
    finally:
        stop(first)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1, err
    assert f"destination {str(dst)!r} is in use by another meanflow.prepare_latents run" in err
    assert after == before
    assert main(argv) == 0  # the first one killed: the folder is free, and resumed
    with open(dst / "manifest.json") as f:
        assert json.load(f)["complete"]


# ------------------------------------------------------------------- export

# meanflow.export ARGV that stops half-way through its weights file, in its temporary folder
# beside --out, until killed (a big model's weights take that long to write).
WRITING_EXPORT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import safetensors.torch
from meanflow import export
def writing(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(600)
safetensors.torch.save_file = writing
export.main(sys.argv[2:])
"""


@pytest.mark.parametrize("previous", [False, True], ids=["new", "replacing"])
def test_a_second_export_to_a_folder_being_exported_is_refused(tmp_path, tiny, capsys, previous):
    """Unrefused, the second export's clean-up of killed exports removed the first one's live
    temporary folder as if that export had been killed, and the first then failed."""
    from test_fault_export import run_export, trainer_checkpoint

    ckpt, out = tmp_path / "last.pt", tmp_path / "exported"
    trainer_checkpoint(ckpt, tiny())
    argv = ["--ckpt", str(ckpt), "--out", str(out)]
    if previous:
        assert run_export(capsys, *argv)[0] == 0
    first = start(WRITING_EXPORT, *argv, "--ema", "1")
    try:
        wait_for(first, "writing")
        before = tree_snapshot(tmp_path, folders=True)
        assert any(name.startswith(".exported.") for name in os.listdir(tmp_path))
        code, err = run_export(capsys, *argv)
        after = tree_snapshot(tmp_path, folders=True)
    finally:
        stop(first)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out} is being written by another process" in err and "--out" not in err[:7], err
    assert after == before
    with pytest.warns(UserWarning, match="interrupted export"):  # the first one killed: cleaned up
        assert run_export(capsys, *argv)[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["exported", "last.pt"]


def test_a_pretrained_folder_replaced_while_it_is_read_loads_one_export_whole(tmp_path, tiny, monkeypatch):
    """The reader has read config.json (2 heads) when an export of another model (4 heads, the
    same shapes) replaces the folder: unchecked, it loaded the new weights into the old config
    without a word."""
    import meanflow.interchange as interchange
    from meanflow.models import DiT

    old_model, new_model = tiny(num_heads=2, seed=0), tiny(num_heads=4, seed=1)
    out, new_source = tmp_path / "exported", tmp_path / "new"
    old_model.save_pretrained(str(out))
    new_model.save_pretrained(str(new_source))
    read_weights, exports = interchange.load_safetensors, []

    def export_then_read(path, what):
        if not exports:  # between the reader's config.json and its weights
            exports.append(
                subprocess.run(
                    [sys.executable, "-m", "meanflow.export", "--ckpt", str(new_source), "--out", str(out)],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )  # fmt: skip
            )
            assert exports[0].returncode == 0, exports[0].stderr
        return read_weights(path, what)

    monkeypatch.setattr(interchange, "load_safetensors", export_then_read)
    loaded = DiT.from_pretrained(str(out))
    assert exports
    expected = new_model if loaded.config.num_heads == 4 else old_model
    assert loaded.config == expected.config
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.state_dict().items())


def test_a_folder_removed_while_it_is_being_locked_is_held_anew(tmp_path, monkeypatch):
    """A run ending removes the folder it made. Another run that opened the folder just before
    and locks it just after held a folder that no longer exists, and a third run then held the
    folder made anew beside it: two holders. The lock must be on the folder the path names."""
    import fcntl

    from meanflow import checkpoint

    out = tmp_path / "run"
    flock = fcntl.flock
    removed = []

    def flock_after_the_first_run_ended(fd, op):
        if not removed:  # the first run's clean-up, between this run's open and its lock
            os.rmdir(out)
            removed.append(True)
        return flock(fd, op)

    monkeypatch.setattr(checkpoint.fcntl, "flock", flock_after_the_first_run_ended)
    with checkpoint.exclusive_folder(str(out), "meanflow.train", "out_dir"):
        assert removed and out.is_dir()
        monkeypatch.setattr(checkpoint.fcntl, "flock", flock)
        with pytest.raises(ValueError, match="in use by another meanflow.train run"):
            with checkpoint.exclusive_folder(str(out), "meanflow.train", "out_dir"):
                pass
    assert not out.exists()  # made by the run, left empty: removed


def test_a_pipeline_folder_replaced_while_it_is_read_loads_one_export_whole(
    tmp_path, tiny, tiny_vae, monkeypatch
):
    """The reader has read vae/ (scaling factor 0.18215) and model_index.json when an export of
    another pipeline (a 4-head transformer of the same shapes, a VAE scaling by 0.5) replaces
    the folder while the transformer is read: unchecked, the new transformer loaded beside the
    old VAE and scale without a word (the transformer's own check reads its folder again)."""
    pytest.importorskip("diffusers")
    import meanflow.interchange as interchange
    from meanflow.pipeline import MeanFlowPipeline
    from meanflow.vae import load_vae

    def pipeline(num_heads, seed, scaling_factor):
        with pytest.warns(UserWarning, match="RANDOM"):
            vae = load_vae("random", {**tiny_vae[0], "scaling_factor": scaling_factor})
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(seed * 0.1)
        return MeanFlowPipeline(tiny(in_channels=4, num_heads=num_heads, seed=seed), vae)

    old, new = pipeline(2, 0, 0.18215), pipeline(4, 1, 0.5)
    out, sources = tmp_path / "exported", tmp_path / "new"
    old.save_pretrained(str(out))
    new.transformer.save_pretrained(str(sources / "transformer"))
    new.vae.save_pretrained(str(sources / "vae"))
    read_weights, exports = interchange.load_safetensors, []
    argv = ["--ckpt", sources / "transformer", "--pipeline", "--vae", sources / "vae", "--out", out]

    def export_then_read(path, what):
        if not exports:  # between the reader's transformer/config.json and its weights
            command = [sys.executable, "-m", "meanflow.export", *map(str, argv)]
            exports.append(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300))
            assert exports[0].returncode == 0, exports[0].stderr
        return read_weights(path, what)

    monkeypatch.setattr(interchange, "load_safetensors", export_then_read)
    loaded = MeanFlowPipeline.from_pretrained(str(out))
    assert exports
    expected = new if loaded.transformer.config.num_heads == 4 else old
    assert (loaded.transformer.config, loaded.scaling_factor) == (
        expected.transformer.config,
        expected.scaling_factor,
    )
    assert loaded.vae.config.scaling_factor == expected.vae.config.scaling_factor
    for got, want in ((loaded.transformer, expected.transformer), (loaded.vae, expected.vae)):
        state = got.state_dict()
        assert all(torch.equal(state[k], v) for k, v in want.state_dict().items())


# meanflow.export ARGV that stops while it loads the checkpoint, before its temporary folder
# exists, until a line comes on its stdin.
LOADING_EXPORT = """
import sys
sys.path.insert(0, sys.argv[1])
from meanflow import export
load = export.load_model
def loading(*args, **kwargs):
    print("loading", flush=True)
    sys.stdin.readline()
    return load(*args, **kwargs)
export.load_model = loading
export.main(sys.argv[2:])
"""


def test_two_exports_started_together_each_publish_whole_and_the_last_wins(tmp_path, tiny, capsys):
    """The first export is loading its checkpoint (no temporary yet) when a second one to the
    same --out runs whole: nothing refuses either, as nothing refuses two exports run one after
    the other; the folder is then the last one's export, whole, and nothing is left beside it."""
    from test_fault_export import run_export, trainer_checkpoint

    from meanflow.models import DiT

    ckpt, out = tmp_path / "last.pt", tmp_path / "exported"
    emas = trainer_checkpoint(ckpt, tiny())
    argv = ["--ckpt", str(ckpt), "--out", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-c", LOADING_EXPORT, ROOT, *argv, "--ema", "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        wait_for(first, "loading")
        assert run_export(capsys, *argv, "--ema", "0")[0] == 0
        second = DiT.from_pretrained(str(out)).state_dict()
        assert all(torch.equal(second[k], v) for k, v in emas[0].items())
        first.stdin.write("\n")
        first.stdin.close()
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            stop(first)
    last = DiT.from_pretrained(str(out)).state_dict()
    assert all(torch.equal(last[k], v) for k, v in emas[1].items())
    assert sorted(os.listdir(tmp_path)) == ["exported", "last.pt"]
