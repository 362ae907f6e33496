"""Files meanflow writes get the modes of the umask (files ``0o666 & ~umask``, folders
``0o777 & ~umask``), not mkstemp's / mkdtemp's private ones."""

import os
import stat

import pytest

from meanflow import export, train


def train_argv(out_dir, data_path, steps, ckpt_every=2):
    return [
        "--model", "DiT-T/8", "--model_kwargs", "{depth: 1, hidden_size: 32, num_heads: 2}",
        "--steps", str(steps), "--batch_size", "8", "--data.path", data_path, "--out_dir", str(out_dir),
        "--ckpt_every", str(ckpt_every), "--log_every", "1", "--sample_every", "0",
        "--eval_samples", "0", "--progress", "false",
    ]  # fmt: skip


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
    import meanflow.sample as sample_cli

    tiny().save_pretrained(str(tmp_path / "model"))
    out = tmp_path / "samples"
    args = ["--ckpt", str(tmp_path / "model"), "--out", str(out), "--num", "3", "--batch-size", "2"]
    sample_cli.main([*args, "--keep-shards", "--quiet"])
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
