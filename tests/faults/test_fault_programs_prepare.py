"""prepare_latents refuses each bad value before it loads a VAE or makes its destination, makes
again a shard a killed run published before its manifest said so, and takes a folder holding
a scan.json for the cache of its own killed run only when that file is one."""

import json
import os
import re

import pytest

pytest.importorskip("diffusers", reason="prepare_latents encodes with a diffusers AutoencoderKL")

from manifests import edit_manifest  # noqa: E402
from prepare_latents_cli import argv as prepare_argv  # noqa: E402

from meanflow.data.latents import LatentIndex  # noqa: E402
from meanflow.data.synthetic import make_image_tree  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM.*:UserWarning")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images") / "train")
    make_image_tree(root, classes=2, per_class=2, sides=(16, 40), extras=False)  # 4 images
    return root


def argv(src, dst, vae_config, *more):
    return prepare_argv(src, dst, vae_config, "--reader", "torch", *more)


def run(src, dst, vae_config, *more):
    from meanflow.prepare_latents import main

    return main(argv(src, dst, vae_config, *more))


@pytest.mark.parametrize(
    "more, said",
    [
        (dict(preview=-1), "preview must be an int >= 0, got -1"),
        (dict(shard_size=0), "shard_size must be an int >= 1, got 0"),
        (dict(batch_size=True), "batch_size must be an int >= 1, got True"),  # a flag, not a batch of one
        (dict(image_size=16.0), "image_size must be an int >= 1, got 16.0"),
        (dict(image_size=15), "image_size 15 is not a multiple of the VAE's downsampling factor 2"),
    ],
)
def test_bad_values_are_refused_before_anything_is_made(src, tiny_vae, tmp_path, more, said):
    """Refused, naming the keyword, with no destination made: not a traceback after every shard
    is encoded. (The command line refuses --preview -1 and --shard-size 0 while it parses:
    tests/meanflow/test_program_args.py.)"""
    from meanflow.prepare_latents import prepare_latents

    dst = tmp_path / "latents"
    settings = dict(image_size=16, device="cpu", reader="torch", num_workers=0, scan_workers=0, preview=0)
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        prepare_latents(src, str(dst), "random", tiny_vae[1], **{**settings, **more}, progress=False)
    assert not dst.exists()


@pytest.mark.parametrize(
    "kwargs, said",
    [(dict(flips=3), "flips must be 1 or 2"), (dict(dtype="bfloat16"), "dtype must be float32 or float16")],
)
def test_bad_values_of_the_function_are_refused_before_anything_is_made(
    src, tiny_vae, tmp_path, kwargs, said
):
    from meanflow.prepare_latents import prepare_latents

    dst = tmp_path / "latents"
    settings = dict(image_size=16, device="cpu", reader="torch", num_workers=0, scan_workers=0)
    with pytest.raises(ValueError, match=said):
        prepare_latents(src, str(dst), "random", tiny_vae[1], **settings, progress=False, preview=0, **kwargs)
    assert not dst.exists()


def test_what_a_killed_run_left_of_a_shard_is_made_again(src, tiny_vae, tmp_path):
    """A kill between a shard's rename and the manifest's rewrite leaves the shard folder with
    the manifest saying it is not done, a kill mid-shard its half-filled temporary: the resume
    makes the shard again instead of failing on either."""
    dst = tmp_path / "latents"
    assert run(src, dst, tiny_vae[1]) == 0
    shards = json.loads((dst / "manifest.json").read_text())["shards"]
    shards[1].update(count=0, done=False)
    edit_manifest(dst, shards=shards, complete=False, num_samples=2)
    latent = dst / "shard_00001" / "000000.npy"
    whole = latent.read_bytes()
    latent.write_bytes(b"cut short")  # what the kill may have left of it
    (dst / ".shard_00001.tmp").mkdir()
    (dst / ".shard_00001.tmp" / "000000.npy").write_bytes(b"cut short")
    assert run(src, dst, tiny_vae[1]) == 0
    after = json.loads((dst / "manifest.json").read_text())
    assert after["complete"] and after["num_samples"] == 4 and after["shards"][1]["done"]
    assert latent.read_bytes() == whole  # written anew
    assert len(LatentIndex(str(dst))) == 4 and not (dst / ".shard_00001.tmp").exists()


@pytest.mark.parametrize(
    "more, said",
    [
        (["--image-size", "32"], "image_size: 16 there, 32 now"),
        (["--dtype", "float16"], "dtype: 'float32' there"),
    ],
)
def test_a_resume_with_another_image_size_or_dtype_is_refused(src, tiny_vae, tmp_path, capsys, more, said):
    """Latents of two crop sizes (shapes) or two dtypes in one folder: refused, naming both."""
    dst = tmp_path / "latents"
    assert run(src, dst, tiny_vae[1]) == 0
    before = (dst / "manifest.json").read_bytes()
    with pytest.raises(SystemExit) as stop:
        run(src, dst, tiny_vae[1], *more)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and said in err, err
    assert (dst / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("content", ['{"mine": 1}', '{"version": 1}', "[1, 2]"])
def test_a_folder_holding_someone_elses_scan_json_is_refused_untouched(
    src, tiny_vae, tmp_path, capsys, content
):
    """Only the scan cache a killed run of ours left (its three keys) is taken as ours: a user's
    scan.json of any other shape is theirs, and the folder is refused."""
    dst = tmp_path / "latents"
    dst.mkdir()
    (dst / "scan.json").write_text(content)
    with pytest.raises(SystemExit) as stop:
        run(src, dst, tiny_vae[1])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "non-empty folder without manifest.json" in err, err
    assert os.listdir(dst) == ["scan.json"] and (dst / "scan.json").read_text() == content


@pytest.mark.parametrize("shards", [[1], ["shard_00000"], [None, {"name": "shard_00000"}]])
def test_a_manifest_whose_shards_are_not_entries_is_refused_in_one_line(
    src, tiny_vae, tmp_path, capsys, shards
):
    """A damaged manifest (shards that are not entries) is named, not an AttributeError's traceback."""
    dst = tmp_path / "latents"
    assert run(src, dst, tiny_vae[1]) == 0
    path = dst / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "shards": shards}))
    before = path.read_bytes()
    with pytest.raises(SystemExit) as stop:
        run(src, dst, tiny_vae[1])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "is not a prepare_latents manifest: refusing to write" in err, err
    assert err.count("\n") == 1 and path.read_bytes() == before
