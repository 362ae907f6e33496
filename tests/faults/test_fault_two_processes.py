"""Two processes on the same files: a second prepare_latents on a destination another one is
filling is refused before it removes or writes anything. Each interleaving is forced by a
step that stops until the test goes on, never by timing."""

import json
import os
import subprocess
import sys

import pytest

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


def snapshot(folder) -> dict:
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
        found.update({os.path.relpath(os.path.join(root, d), folder): "dir" for d in dirs})
    return found


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
        before = snapshot(dst)
        assert ".shard_00000.tmp" in before
        with pytest.raises(SystemExit) as refused:
            main(argv)
        after = snapshot(dst)
    finally:
        stop(first)
    err = capsys.readouterr().err
    assert refused.value.code == 2 and err.count("\n") == 1, err
    assert f"destination {str(dst)!r} is in use by another meanflow.prepare_latents run" in err
    assert after == before
    assert main(argv) == 0  # the first one killed: the folder is free, and resumed
    with open(dst / "manifest.json") as f:
        assert json.load(f)["complete"]
