"""A latent folder prepared again at the same path between a run and its resume (another VAE,
other flips): the same count of the same classes, so nothing else notices. A resume would mix
two latent spaces in one model, and sampling would accept the new folder's VAE for a model
trained on the old one's; both are refused, naming what changed."""

import os
import shutil
import warnings

import pytest
import torch

pytest.importorskip("diffusers")

SIZE = 16


def vae_folder(config, folder, perturb):
    """A diffusers VAE folder of the tiny architecture (``perturb``: another VAE of it)."""
    from meanflow.vae import load_vae

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights, said on purpose
        vae = load_vae("random", config)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(perturb)
    vae.save_pretrained(folder)
    return folder


def prepare(src, dst, vae, **kw):
    from meanflow.prepare_latents import prepare_latents

    args = dict(image_size=SIZE, batch_size=4, shard_size=4, num_workers=0, scan_workers=0)
    args.update(progress=False, device="cpu", reader="torch", preview=0)
    shutil.rmtree(dst, ignore_errors=True)  # made again from nothing, as a user would
    return prepare_latents(src, dst, vae, **{**args, **kw})


def config(tmp_path, steps):
    from meanflow.config import TrainConfig

    c = TrainConfig.from_name("imagenet256-b2")
    c.model, c.model_kwargs = "DiT-T/4", {"depth": 1, "time_scale": 1.0}
    c.data.path, c.data.num_workers, c.data.backend = str(tmp_path / "latents"), 0, "torch"
    c.out_dir, c.steps, c.batch_size, c.progress = str(tmp_path / "run"), steps, 2, False
    c.sample_every, c.eval_every, c.ckpt_every, c.threads = 0, 0, 0, 1
    return c


def trained(tmp_path, tiny_vae):
    """``(source, latent folder, vae-a, vae-b, last.pt)``: a 1-step run on latents made with vae-a."""
    from meanflow.data.synthetic import make_image_tree
    from meanflow.train import main

    src, dst = str(tmp_path / "train"), str(tmp_path / "latents")
    make_image_tree(src, classes=2, per_class=4, sides=(16, 40), extras=False)
    vae_a = vae_folder(tiny_vae[0], str(tmp_path / "vae-a"), 0.0)
    vae_b = vae_folder(tiny_vae[0], str(tmp_path / "vae-b"), 1e-2)
    prepare(src, dst, vae_a)
    main(config(tmp_path, 1))
    return src, dst, vae_a, vae_b, os.path.join(str(tmp_path / "run"), "last.pt")


def test_a_resume_onto_latents_prepared_again_otherwise_is_refused(tmp_path, tiny_vae):
    from meanflow.train import main

    src, dst, vae_a, vae_b, last = trained(tmp_path, tiny_vae)
    before = open(last, "rb").read()
    prepare(src, dst, vae_b)
    with pytest.raises(ValueError, match=r"last\.pt.*vae: .*vae-a.* then, .*vae-b.* now"):
        main(config(tmp_path, 2))
    prepare(src, dst, vae_a, flips=2)
    with pytest.raises(ValueError, match="flips: 1 then, 2 now"):
        main(config(tmp_path, 2))
    assert open(last, "rb").read() == before

    prepare(src, dst, vae_a)  # made as before: the run goes on
    assert main(config(tmp_path, 2))["step"] == 2


def test_a_resume_onto_latents_of_images_decoded_by_other_rules_is_refused(tmp_path, tiny_vae, monkeypatch):
    """The same VAE, reader and images, but decoded by later rules (16-bit scaling, EXIF
    orientation): other latents of the same classes and count."""
    from meanflow import prepare_latents
    from meanflow.train import main

    src, dst, vae_a, _, last = trained(tmp_path, tiny_vae)
    monkeypatch.setattr(prepare_latents, "DECODE_VERSION", prepare_latents.DECODE_VERSION + 1)
    prepare(src, dst, vae_a)
    with pytest.raises(ValueError, match=r"decode_version: (\d+) then, (?!\1)\d+ now"):
        main(config(tmp_path, 2))


def test_sampling_checks_the_vae_the_run_trained_with_not_the_folders_new_one(tmp_path, tiny_vae):
    from meanflow.export import export
    from meanflow.generate import run

    src, dst, vae_a, vae_b, last = trained(tmp_path, tiny_vae)
    prepare(src, dst, vae_b)
    refused = "VAE .*vae-b.* is not the VAE the latents were made with"
    with pytest.raises(ValueError, match=refused):
        run(last, str(tmp_path / "samples"), num=2, batch_size=2, vae=vae_b, device="cpu", progress=False)
    with pytest.raises(ValueError, match=refused):
        export(last, str(tmp_path / "pipe"), pipeline=True, vae=vae_b)
    assert not os.path.exists(tmp_path / "pipe")
    export(last, str(tmp_path / "pipe"), pipeline=True, vae=vae_a)
