"""prepare_latents never removes or overwrites what it did not write (a folder without its
manifest, a shard folder holding someone's files, a destination inside the image folder), says
in one line before writing anything when the DALI reader is not installed, takes image names
that are not UTF-8 (and refuses one holding a line break, which files.txt cannot list), and a
latent folder missing a file is named when it is opened, not mid-training."""

import json
import os
import shutil

import pytest

pytest.importorskip("diffusers", reason="prepare_latents encodes with a diffusers AutoencoderKL")

from manifests import edit_manifest  # noqa: E402
from prepare_latents_cli import argv  # noqa: E402
from tree_snapshot import tree_snapshot  # noqa: E402

from meanflow.data.image_folder import scan_image_folder  # noqa: E402
from meanflow.data.latents import LatentIndex, TorchLatentLoader  # noqa: E402
from meanflow.data.synthetic import make_image_tree  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM.*:UserWarning")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images") / "train")
    make_image_tree(root, classes=2, per_class=2, sides=(16, 40), extras=False)  # 4 images
    return root


def run(src, dst, vae_config, *more):
    from meanflow.prepare_latents import main

    return main(argv(src, dst, vae_config, *more))


def refused(capsys, src, dst, vae_config, *more) -> str:
    """The one-line error (exit status 2: the arguments) of a refused run."""
    with pytest.raises(SystemExit) as stop:
        run(src, dst, vae_config, *more)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def made(src, tiny_vae, tmp_path_factory):
    dst = tmp_path_factory.mktemp("made") / "latents"
    assert run(src, dst, tiny_vae[1], "--reader", "torch") == 0
    return str(dst)


# ------------------------------------------------------------------- what is not ours stays


def test_a_non_empty_folder_without_a_manifest_is_refused_untouched(src, tiny_vae, tmp_path, capsys):
    dst = tmp_path / "mystuff"
    (dst / "shard_00000").mkdir(parents=True)
    (dst / "shard_00000" / "thesis.tex").write_text("my only copy")
    (dst / "preview.png").write_text("my picture")
    (dst / "scan.json").write_text('{"mine": 1}')
    before = tree_snapshot(dst, folders=True)
    err = refused(capsys, src, dst, tiny_vae[1], "--preview", "2")
    assert f"destination {str(dst)!r} is a non-empty folder without manifest.json" in err
    assert "preview.png, scan.json, shard_00000" in err
    assert tree_snapshot(dst, folders=True) == before


def test_an_empty_folder_or_one_holding_the_scan_cache_of_a_killed_run_is_filled(src, tiny_vae, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(src, empty, tiny_vae[1], "--reader", "torch") == 0
    killed = tmp_path / "killed"  # killed after the scan, before the manifest was written
    scan_image_folder(src, cache=str(killed / "scan.json"), workers=0)
    assert os.listdir(killed) == ["scan.json"]
    assert run(src, killed, tiny_vae[1], "--reader", "torch") == 0
    assert LatentIndex(str(killed)).files and LatentIndex(str(empty)).files


def test_a_manifest_of_something_else_is_refused(src, tiny_vae, tmp_path, capsys):
    dst = tmp_path / "other"
    dst.mkdir()
    (dst / "manifest.json").write_text('{"format": "webdataset", "shards": []}\n')
    before = tree_snapshot(dst, folders=True)
    err = refused(capsys, src, dst, tiny_vae[1], "--reader", "torch")
    assert "is not a prepare_latents manifest" in err and str(dst) in err
    assert tree_snapshot(dst, folders=True) == before


def test_an_unfinished_shard_folder_holding_other_files_is_never_replaced(
    made, src, tiny_vae, tmp_path, capsys
):
    dst = str(tmp_path / "resumed")
    shutil.copytree(made, dst)
    m = json.load(open(os.path.join(dst, "manifest.json")))
    m["shards"][1]["done"] = False  # killed after the shard was renamed into place
    edit_manifest(dst, shards=m["shards"], complete=False)
    with open(os.path.join(dst, "shard_00001", "notes.txt"), "w") as f:
        f.write("mine")
    before = tree_snapshot(dst, folders=True)
    err = refused(capsys, src, dst, tiny_vae[1], "--reader", "torch")
    assert "shard_00001" in err and "did not write (notes.txt)" in err
    assert tree_snapshot(dst, folders=True) == before

    os.remove(os.path.join(dst, "shard_00001", "notes.txt"))  # only what a shard holds: redone
    assert run(src, dst, tiny_vae[1], "--reader", "torch") == 0
    assert json.load(open(os.path.join(dst, "manifest.json")))["complete"]


@pytest.mark.parametrize("inside", ["dst in src", "src in dst"])
def test_a_destination_inside_the_image_folder_or_around_it_is_refused(
    src, tiny_vae, tmp_path, capsys, inside
):
    if inside == "dst in src":
        images, dst = src, os.path.join(src, "latents")
    else:
        images, dst = str(tmp_path / "data" / "train"), str(tmp_path / "data")
        shutil.copytree(src, images)
    before = tree_snapshot(images, folders=True)
    err = refused(capsys, images, dst, tiny_vae[1], "--reader", "torch")
    assert "inside" in err and images in err and dst in err
    assert tree_snapshot(images, folders=True) == before


# ------------------------------------------------------------------- a machine without DALI


@pytest.fixture
def no_dali(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nvidia.dali", None)  # an import of it fails


def test_reader_dali_without_dali_is_one_line_before_any_write(src, tiny_vae, tmp_path, capsys, no_dali):
    dst = tmp_path / "latents"
    err = refused(capsys, src, dst, tiny_vae[1], "--reader", "dali")
    assert "--reader dali" in err and "not installed" in err
    assert not dst.exists()


def test_resuming_a_dali_folder_without_dali_names_the_folder(made, src, tiny_vae, tmp_path, capsys, no_dali):
    dst = str(tmp_path / "dali")
    shutil.copytree(made, dst)
    m = json.load(open(os.path.join(dst, "manifest.json")))
    m["shards"][1]["done"] = False
    edit_manifest(dst, reader="dali", shards=m["shards"], complete=False)
    before = tree_snapshot(dst, folders=True)
    err = refused(capsys, src, dst, tiny_vae[1])
    assert f"{dst!r} was started with the DALI reader, which is not installed" in err
    assert tree_snapshot(dst, folders=True) == before


def test_a_folder_with_no_finished_shard_starts_over_with_another_reader(made, src, tiny_vae, tmp_path):
    dst = str(tmp_path / "nothing-done")
    shutil.copytree(made, dst)
    m = json.load(open(os.path.join(dst, "manifest.json")))
    for shard in m["shards"]:
        shard["done"] = False
    edit_manifest(dst, reader="dali", shards=m["shards"], complete=False)
    assert run(src, dst, tiny_vae[1], "--reader", "torch") == 0
    m = json.load(open(os.path.join(dst, "manifest.json")))
    assert m["reader"] == "torch" and m["complete"]


def test_a_folder_begun_under_other_decoding_rules_is_not_finished(made, src, tiny_vae, tmp_path, capsys):
    """A folder half made before the image decoding changed (its manifest without
    decode_version: version 1) or by another version is refused untouched, naming it, where
    finishing it would mix two decodes in one folder; training reads it as it is. One of this
    version is finished."""
    from meanflow.data.image_folder import DECODE_VERSION

    m = json.load(open(os.path.join(made, "manifest.json")))
    assert m["decode_version"] == DECODE_VERSION
    m["shards"][1]["done"], m["complete"] = False, False
    for version in (None, DECODE_VERSION + 1, DECODE_VERSION):
        dst = str(tmp_path / f"version{version}")
        shutil.copytree(made, dst)
        half = {k: v for k, v in m.items() if k != "decode_version"}  # None: as written before it
        with open(os.path.join(dst, "manifest.json"), "w") as f:
            json.dump(half if version is None else {**half, "decode_version": version}, f)
        assert len(LatentIndex(dst, allow_partial=True)) == 2  # readable for training as it is
        if version == DECODE_VERSION:
            assert run(src, dst, tiny_vae[1]) == 0
            assert len(LatentIndex(dst)) == 4
            continue
        before = tree_snapshot(dst, folders=True)
        err = refused(capsys, src, dst, tiny_vae[1])
        there = 1 if version is None else version
        assert f"error: {dst!r} was begun by a prepare_latents that decoded images by other rules " in err
        assert f"(version {there} there, {DECODE_VERSION} now)" in err and "prepare the latents anew" in err
        assert tree_snapshot(dst, folders=True) == before


# ------------------------------------------------------------------- what a resume must repeat


@pytest.mark.parametrize(
    "more, said",
    [
        (("--shard-size", "3"), "shard_size: 2 there, 3 now"),  # shards kept by name: images twice
        (("--flips", "both"), "flips: 1 there, 2 now"),  # shards of two shapes in one folder
    ],
)
def test_a_resume_with_other_storage_settings_is_refused_naming_them(
    made, src, tiny_vae, tmp_path, capsys, more, said
):
    dst = str(tmp_path / "resumed")
    shutil.copytree(made, dst)
    m = json.load(open(os.path.join(dst, "manifest.json")))
    m["shards"][1]["done"] = False
    edit_manifest(dst, shards=m["shards"], complete=False)
    before = tree_snapshot(dst, folders=True)
    err = refused(capsys, src, dst, tiny_vae[1], "--reader", "torch", *more)
    assert f"{dst!r} holds latents made with other settings (" in err and said in err
    assert tree_snapshot(dst, folders=True) == before


def test_a_resume_with_the_same_vae_weights_under_another_config_is_refused(src, tiny_vae, tmp_path, capsys):
    """One weights file read as two architectures is two VAEs: the weights hash alone does not
    say which one made a folder's latents."""
    from safetensors.torch import save_file

    from meanflow.vae import load_vae

    vae = load_vae("random", tiny_vae[1])
    weights = str(tmp_path / "vae.safetensors")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, weights)
    other = tmp_path / "other.json"  # the same parameter shapes, other group norms
    other.write_text(json.dumps({**json.load(open(tiny_vae[1])), "norm_num_groups": 2}))

    def args(config):
        given = argv(src, tmp_path / "latents", config, "--reader", "torch")
        given[given.index("random")] = weights
        return given

    from meanflow.prepare_latents import main

    assert main(args(tiny_vae[1])) == 0
    dst = str(tmp_path / "latents")
    m = json.load(open(os.path.join(dst, "manifest.json")))
    m["shards"][1]["done"] = False
    edit_manifest(dst, shards=m["shards"], complete=False)
    before = tree_snapshot(dst, folders=True)
    with pytest.raises(SystemExit):
        main(args(str(other)))
    err = capsys.readouterr().err
    assert "holds latents made with other settings (vae: " in err, err
    assert tree_snapshot(dst, folders=True) == before


def test_a_run_killed_in_its_last_shard_leaves_the_folder_incomplete(src, tiny_vae, tmp_path, monkeypatch):
    """Training refuses an incomplete folder by default: a kill in the last shard must leave
    the manifest saying so, and no trace of that shard; the next run finishes it."""
    import meanflow.prepare_latents as pl

    real, calls = pl.encode_moments, []

    def killed_at_the_last_shard(*args):
        calls.append(1)
        if len(calls) == 2:  # 4 images, 2 shards of 2, one batch each
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(pl, "encode_moments", killed_at_the_last_shard)
    dst = tmp_path / "latents"
    with pytest.raises(KeyboardInterrupt):
        run(src, dst, tiny_vae[1], "--reader", "torch")
    m = json.load(open(dst / "manifest.json"))
    assert [s["done"] for s in m["shards"]] == [True, False] and m["complete"] is False
    assert m["num_samples"] == 2 and sorted(n for n in os.listdir(dst) if "shard" in n) == ["shard_00000"]
    with pytest.raises(ValueError, match="incomplete"):
        LatentIndex(str(dst))
    assert run(src, dst, tiny_vae[1], "--reader", "torch") == 0
    assert len(LatentIndex(str(dst))) == 4


# ------------------------------------------------------------------- names that are not UTF-8


@pytest.fixture
def latin1_tree(src, tmp_path):
    root = str(tmp_path / "latin1")
    shutil.copytree(src, root)
    folder = os.path.join(os.fsencode(root), b"class_000")
    try:
        os.rename(os.path.join(folder, b"img_0000.jpg"), os.path.join(folder, b"caf\xe9.jpg"))
    except (OSError, UnicodeError):
        pytest.skip("this file system takes UTF-8 names only")
    return root


def test_image_names_that_are_not_utf8_are_encoded_and_listed_as_their_bytes(latin1_tree, tiny_vae, tmp_path):
    dst = tmp_path / "latents"
    assert run(latin1_tree, dst, tiny_vae[1], "--reader", "torch", "--preview", "4") == 0
    m = json.load(open(dst / "manifest.json"))
    assert m["complete"] and m["num_samples"] == 4 and m["failed"] == 0
    listed = b"".join((dst / s["name"] / "files.txt").read_bytes() for s in m["shards"])
    assert b"class_000/caf\xe9.jpg\n" in listed
    assert (dst / "preview.png").exists() and len(LatentIndex(str(dst))) == 4
    assert run(latin1_tree, dst, tiny_vae[1], "--reader", "torch") == 0  # the same fingerprint again


def test_the_dali_reader_refuses_a_name_that_is_not_utf8_naming_it(
    latin1_tree, tiny_vae, tmp_path, capsys, monkeypatch
):
    import meanflow.data.dali_images as dali_images

    monkeypatch.setattr(dali_images, "dali_available", lambda: True)
    err = refused(capsys, latin1_tree, tmp_path / "latents", tiny_vae[1], "--reader", "dali")
    assert "class_000/caf\\xe9.jpg'" in err and "--reader torch" in err
    assert not (tmp_path / "latents" / "manifest.json").exists()


def renamed_tree(src, tmp_path, new_name):
    root = str(tmp_path / "renamed")
    shutil.copytree(src, root)
    folder = os.path.join(root, "class_000")
    try:
        os.rename(os.path.join(folder, "img_0000.jpg"), os.path.join(folder, new_name))
    except OSError:
        pytest.skip("this file system refuses the name")
    return root


def test_a_carriage_return_in_an_image_name_stays_one_name_in_files_txt(src, tiny_vae, tmp_path):
    root = renamed_tree(src, tmp_path, "a\rb.jpg")
    dst = tmp_path / "latents"
    assert run(root, dst, tiny_vae[1], "--reader", "torch", "--preview", "4") == 0
    m = json.load(open(dst / "manifest.json"))
    listed = b"".join((dst / s["name"] / "files.txt").read_bytes() for s in m["shards"])
    assert listed.count(b"\n") == 4 and b"class_000/a\rb.jpg\n" in listed
    assert (dst / "preview.png").exists()  # the preview reads the names back from files.txt


def test_a_line_break_in_an_image_name_is_refused_naming_it(src, tiny_vae, tmp_path, capsys):
    root = renamed_tree(src, tmp_path, "a\nb.jpg")
    err = refused(capsys, root, tmp_path / "latents", tiny_vae[1], "--reader", "torch")
    assert "'class_000/a\\nb.jpg'" in err and "line break" in err
    assert not (tmp_path / "latents" / "manifest.json").exists()


# ------------------------------------------------------------------- a latent folder missing a file


@pytest.mark.parametrize("lost", ["shard_00001/000001.npy", "shard_00000/labels.npy", "shard_00001"])
def test_a_latent_folder_missing_a_file_is_named_when_opened(made, tmp_path, lost):
    dst = str(tmp_path / "copy")
    shutil.copytree(made, dst)
    path = os.path.join(dst, lost)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    shard, _, name = lost.partition("/")
    with pytest.raises(FileNotFoundError) as error:
        TorchLatentLoader(dst, 2, num_workers=0)
    message = str(error.value)
    assert "\n" not in message and dst in message and f"shard {shard} " in message and name in message


def test_dtype_help_says_it_is_the_stored_dtype(capsys):
    from meanflow.prepare_latents import main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "stored in; the VAE always runs in float32" in help_text


def test_a_bad_vae_is_named_before_the_scan(src, tmp_path, capsys, monkeypatch):
    """The scan of an ImageNet folder takes minutes: a --vae that does not load is said first."""
    from meanflow import prepare_latents

    def scan(*args, **kwargs):
        raise AssertionError("scanned before the VAE was loaded")

    monkeypatch.setattr(prepare_latents, "scan_image_folder", scan)
    missing = tmp_path / "no-vae.safetensors"
    with pytest.raises(SystemExit):
        prepare_latents.main([*argv(src, tmp_path / "dst", "")[:2], "--vae", str(missing), "--device", "cpu"])
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


def test_the_dali_training_loader_refuses_a_name_that_is_not_utf8_when_built(latin1_tree):
    """Training on the image folder itself: named before the first batch, not a pipeline error."""
    from meanflow.data.dali_images import DALIImageLoader, dali_available

    if not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    with pytest.raises(ValueError, match=r"class_000/caf\\xe9.jpg'.*data.backend torch"):
        DALIImageLoader(latin1_tree, 2, image_size=16, num_threads=1, cache=None, scan_workers=0)


NO_HUB = r"""
import os, socket, sys

before = dict(os.environ)
import meanflow.prepare_latents as prepare

assert dict(os.environ) == before, {k: v for k, v in os.environ.items() if before.get(k) != v}


def no_network(*args, **kwargs):
    raise AssertionError("prepare_latents went to the network")


socket.socket.connect = socket.socket.connect_ex = no_network
socket.getaddrinfo = socket.create_connection = no_network
src, dst = sys.argv[1:3]
try:
    prepare.main([src, dst, "--vae", "stabilityai/sd-vae-ft-ema", "--device", "cpu", "--workers", "0"])
except SystemExit as stop:
    sys.exit(stop.code)
"""


def test_importing_leaves_the_hub_alone_and_a_hub_name_is_refused_offline(src, tmp_path):
    """Importing prepare_latents changes no environment variable (a program that imports it,
    directly or not, keeps its hub access); its own --vae is read from a local path only: a hub
    name is refused in one line, with no connection made, in a process whose hub is online."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_", "HF_ENDPOINT"))}
    dst = tmp_path / "latents"
    done = subprocess.run(
        [sys.executable, "-c", NO_HUB, src, str(dst)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "stabilityai/sd-vae-ft-ema" in done.stderr and "nothing is downloaded" in done.stderr
    assert not dst.exists()
