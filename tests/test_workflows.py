"""The README's two workflows chained end to end on tiny data, each program through its CLI
entry, each one's output the next one's input: where a file name, an npz key, a dtype, the
VAE record, a label convention or a checkpoint key that one program writes and the next reads
would disagree (each program's own tests build their inputs by hand).

a. Data at scale + Sampling, evaluation, interchange: image tree -> prepare_latents (a random
   AutoencoderKL saved as a diffusers folder) -> train -> generate --vae -> evaluate (FID with
   a tiny torch-fidelity extractor, the image tree as reference through --ref-size) -> export
   --pipeline --vae -> MeanFlowPipeline.
b. MNIST: train (preset mnist) -> eval_mnist on the checkpoint -> generate, sampler
   -> export -> DiT.from_pretrained, export --pipeline -> MeanFlowPipeline.
"""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from meanflow import eval_mnist, evaluate, export, generate, prepare_latents, sampler, train
from meanflow.data.synthetic import make_image_tree

# CI installs the test extra (diffusers, torch-fidelity): there a missing one fails, as in
# tests/meanflow/test_data_latents.py, instead of skipping.
_ci = bool(os.environ.get("CI"))
try:
    import diffusers  # noqa: F401

    _diffusers = True
except ImportError:
    _diffusers = False
try:
    import torch_fidelity  # noqa: F401

    _fidelity = True
except ImportError:
    _fidelity = False
needs_diffusers = pytest.mark.skipif(not _diffusers and not _ci, reason="diffusers is not installed")
needs_fidelity = pytest.mark.skipif(not _fidelity and not _ci, reason="torch-fidelity is not installed")

IMAGE = 32  # --image-size: the tiny VAE halves it into 4x16x16 latents
SCALE = 0.5  # the VAE config's scaling_factor
TINY_MODEL = [
    "--model_kwargs.depth",
    "1",
    "--model_kwargs.hidden_size",
    "32",
    "--model_kwargs.num_heads",
    "2",
]
# lr and EMA that move the weights in 3-4 steps: adaLN-Zero makes an untrained DiT output
# exactly 0, and samples of a zero velocity would be the noise whatever the checkpoint holds.
MOVING = ["--lr", "0.01", "--warmup_steps", "0", "--ema_decays", "[0.5]"]


def _json(path):
    with open(path) as f:
        return json.load(f)


def _npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _one_line_exit(capsys, call, argv):
    """Run a CLI expected to refuse ``argv``: exit status 2; returns the reason, stderr's last line."""
    with pytest.raises(SystemExit) as info:
        call(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def _pipeline_images(pipe, labels, cfg, seed=0):
    """``pipe``'s PIL images of ``labels`` from the noise meanflow.generate gives index i."""
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    noise = generate.noise_for(range(len(labels)), shape, seed)
    with torch.no_grad():
        images = pipe(labels, latents=noise).images
    return np.stack([np.asarray(im) for im in images])


def _assert_same_images(a, b):
    """uint8 images equal to one level: both programs decode the same weights and noise, in
    batches of other sizes (another summation order)."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@needs_diffusers
@needs_fidelity
def test_latent_workflow_images_to_pipeline(tmp_path, capsys):
    from conftest import TINY_VAE
    from diffusers import AutoencoderKL
    from fidelity_tiny import TINY

    from meanflow import MeanFlowPipeline
    from meanflow.data.image_folder import scan_image_folder

    # An ImageNet-style tree with its usual mess (gray, CMYK, corrupt, a .txt, a nested folder).
    tree = str(tmp_path / "imagenet" / "train")
    counts = make_image_tree(tree, classes=3, per_class=4, sides=(24, 70))
    folders = sorted(os.listdir(tree))
    index = scan_image_folder(tree, cache=None, workers=0)
    per_class = np.bincount(index.labels, minlength=len(folders)).tolist()
    assert per_class == [6, 4, 5]  # + gray and CMYK; corrupt ones skipped; + nested/deep.jpg
    torch.manual_seed(0)
    vae_dir = str(tmp_path / "sd-vae-ft-ema")
    # A local diffusers folder, as the README's, with a scale factor other than sd-vae-ft-ema's
    # 0.18215: a program that took that default instead of the VAE's record shows.
    AutoencoderKL(**{**TINY_VAE, "scaling_factor": SCALE}).save_pretrained(vae_dir)

    # python -m meanflow.prepare_latents /data/imagenet/train /data/in256-latents --vae VAE
    latents = str(tmp_path / "in32-latents")
    prep = ["--image-size", str(IMAGE), "--batch-size", "8", "--shard-size", "8", "--workers", "1"]
    prepare_latents.main([tree, latents, "--vae", vae_dir, *prep, "--scan-workers", "0", "--no-progress"])
    manifest = _json(os.path.join(latents, "manifest.json"))
    assert manifest["complete"] and manifest["classes"] == folders
    assert manifest["num_samples"] == counts["images"] == sum(per_class)
    assert manifest["scale_factor"] == SCALE
    assert manifest["latent_shape"] == [4, IMAGE // 2, IMAGE // 2] and manifest["dtype"] == "float32"
    assert manifest["vae"]["weights"] == os.path.abspath(vae_dir)
    labels = np.concatenate(
        [np.load(os.path.join(latents, s["name"], "labels.npy")) for s in manifest["shards"]]
    )
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == per_class

    # python -m meanflow.train --preset imagenet256-xl2 --data.path /data/in256-latents
    run = str(tmp_path / "runs" / "in256")
    train.cli(
        ["--preset", "imagenet256-xl2", "--data.path", latents, "--out_dir", run, *TINY_MODEL, *MOVING]
        + ["--steps", "3", "--batch_size", "4", "--data.num_workers", "0", "--log_every", "1"]
        + ["--ckpt_every", "3", "--sample_every", "3", "--progress", "false", "--device", "cpu"]
    )
    ckpt = os.path.join(run, "last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["step"] == 3 and state["classes"] == folders
    cfg = {k: state["model_config"][k] for k in ("in_channels", "input_size", "num_classes")}
    assert cfg == {"in_channels": 4, "input_size": IMAGE // 2, "num_classes": len(folders)}
    # the grid is decoded by the VAE the manifest recorded: images, not latents
    with Image.open(os.path.join(run, "samples", "step_0000003.png")) as grid:
        assert grid.mode == "RGB"

    # python -m meanflow.generate --ckpt runs/in256/last.pt --num-samples N --steps 1 --out samples/ --vae VAE
    samples, n = str(tmp_path / "samples"), 7
    # (--vae left out: a latent model's samples cannot be images without it, said in one line)
    assert "pass --vae" in _one_line_exit(capsys, generate.main, ["--ckpt", ckpt, "--out", samples + "-2"])
    generate.main(
        ["--ckpt", ckpt, "--num-samples", str(n), "--steps", "1", "--out", samples, "--vae", vae_dir]
    )
    made = _npz(os.path.join(samples, "samples.npz"))
    assert set(made) == {"arr_0", "arr_1"}
    assert made["arr_0"].dtype == np.uint8 and made["arr_0"].shape == (n, IMAGE, IMAGE, 3)
    assert made["arr_1"].dtype == np.int64 and made["arr_1"].tolist() == [i % 3 for i in range(n)]
    assert sorted(os.listdir(os.path.join(samples, "images"))) == [f"{i:06d}.png" for i in range(n)]
    settings = _json(os.path.join(samples, "manifest.json"))
    assert settings["vae_sha256"] == manifest["vae"]["sha256"]  # the VAE the latents were made with
    assert settings["scaling_factor"] == manifest["scale_factor"]

    # python -m meanflow.evaluate samples/samples.npz --ref TREE --ref-size 32 --out fid.json: the
    # data itself as the reference, read through the crop the trainer's data went through (as
    # ADM's reference batches are made), as the images the trainer's scan keeps: the files it
    # skipped (notes.txt and the like) stay in the tree.
    ref_size = ["--ref-size", str(IMAGE)]
    fid_json, stats = str(tmp_path / "fid.json"), str(tmp_path / "ref_stats.npz")
    quick = ["--feature-extractor", TINY, "--device", "cpu", "--batch-size", "8", "--quiet"]
    evaluate.main(
        [
            os.path.join(samples, "samples.npz"),
            "--ref",
            tree,
            *ref_size,
            "--out",
            fid_json,
            "--save-ref-stats",
            stats,
            *quick,
        ]
    )
    report = _json(fid_json)
    assert {"fid", "inception_score_mean", "precision", "recall"} <= set(report)
    assert report["num_samples"] == n and report["num_reference"] == len(index)
    assert report["feature_extractor"] == TINY and report["fid"] > 0 and report["ref_size"] == IMAGE
    # the generate folder, and the saved statistics as reference, give the same FID
    again = str(tmp_path / "fid2.json")
    evaluate.main([samples, "--ref", stats, "--metrics", "fid", "--out", again, *quick])
    assert _json(again)["fid"] == pytest.approx(report["fid"], rel=1e-9, abs=1e-12)
    assert _json(again)["reference_stats"] == "precomputed"
    # and they are statistics of 32x32 crops: samples of another size are refused against them
    small = str(tmp_path / "small.npz")
    np.savez(small, arr_0=made["arr_0"][:, ::2, ::2])
    refused = _one_line_exit(capsys, evaluate.main, [small, "--ref", stats, *quick])
    assert "samples are 16x16" in refused and "32x32 center crops" in refused

    # python -m meanflow.export --ckpt runs/in256/last.pt --out pipe/ --pipeline --vae VAE
    pipe_dir = str(tmp_path / "pipe")
    export.main(["--ckpt", ckpt, "--out", pipe_dir, "--pipeline", "--vae", vae_dir])
    pipe = MeanFlowPipeline.from_pretrained(pipe_dir)
    assert list(pipe.id2label.values()) == folders and pipe.get_label_ids(folders[::-1]) == [2, 1, 0]
    assert pipe.config.scaling_factor == manifest["scale_factor"]
    # by class name, as the README calls it: the images generate made for the same noise
    names = [folders[y] for y in made["arr_1"]]
    _assert_same_images(_pipeline_images(pipe, names, pipe.transformer.config), made["arr_0"])
    # diffusers' own loader runs the folder's pipeline_meanflow.py
    loaded = diffusers.DiffusionPipeline.from_pretrained(pipe_dir, trust_remote_code=True)
    assert type(loaded).__name__ == "MeanFlowPipeline"


@needs_diffusers  # the chain ends in MeanFlowPipeline, a diffusers DiffusionPipeline
def test_mnist_workflow_train_to_pipeline(tmp_path, fake_mnist, monkeypatch, capsys):
    from meanflow import DiT, MeanFlowPipeline
    from meanflow.pretrained import load_model

    # The classifier of the fake digits in a second (as tests/meanflow/test_eval_mnist.py):
    # 96 images are fewer than its batch of 256. Cached apart from the user's cache.
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    fit = eval_mnist.train_classifier
    monkeypatch.setattr(
        eval_mnist, "train_classifier", lambda path, log, **k: fit(path, epochs=2, log=log, batch=16, **k)
    )

    # python -m meanflow.train (preset mnist) on the fake MNIST, leaving last.pt, samples/*.png,
    # metrics.jsonl with the final evaluation
    run = str(tmp_path / "runs" / "mnist")
    mnist = ["--data.path", fake_mnist, "--out_dir", run, "--steps", "4", "--batch_size", "8"]
    quiet = ["--log_every", "2", "--eval_samples", "20", "--progress", "false", "--device", "cpu"]
    train.cli([*mnist, *TINY_MODEL, *MOVING, *quiet])
    ckpt = os.path.join(run, "last.pt")
    assert os.listdir(os.path.join(run, "samples")) == ["step_0000004.png"]
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    summary = lines[-1]["summary"]
    assert summary["step"] == 4 and summary["eval/samples"] == 20 and 0 <= summary["eval/acc"] <= 1
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["classes"] == [str(d) for d in range(10)]

    # python -m meanflow.eval_mnist runs/mnist/last.pt --data DIR: the trainer's score, as the
    # README says (the same first EMA, samples, seed and classifier)
    capsys.readouterr()
    eval_mnist.main([ckpt, "--data", fake_mnist, "--samples", "20", "--json"])
    scored = json.loads(capsys.readouterr().out)
    assert scored["samples"] == 20 and scored["nfe"] == 1
    assert scored["acc"] == pytest.approx(summary["eval/acc"], abs=1e-6)
    assert scored["fd"] == pytest.approx(summary["eval/fd"], rel=1e-6, abs=1e-9)

    # python -m meanflow.generate (python -m meanflow.sample, its older name, runs the same main:
    # tests/meanflow/test_generate_cli.py; importing it here would rebind meanflow.sample)
    n = 12
    generate.main(["--ckpt", ckpt, "--num-samples", str(n), "--out", str(tmp_path / "samples"), "--quiet"])
    made = _npz(str(tmp_path / "samples" / "samples.npz"))
    assert made["arr_0"].dtype == np.uint8 and made["arr_0"].shape == (n, 32, 32, 3)  # gray as RGB
    assert np.array_equal(made["arr_0"][..., 0], made["arr_0"][..., 2])
    assert made["arr_1"].tolist() == [i % 10 for i in range(n)]
    # python -m meanflow.sampler: the quick grid
    grid = str(tmp_path / "grid.png")
    sampler.main([ckpt, "--out", grid, "--device", "cpu"])
    with Image.open(grid) as image:
        assert image.size == (10 * 34 + 2, 10 * 34 + 2)

    # python -m meanflow.export --ckpt runs/mnist/last.pt --out exported/ (EMA 0) -> DiT.from_pretrained
    exported = str(tmp_path / "exported")
    export.main(["--ckpt", ckpt, "--out", exported])
    model = DiT.from_pretrained(exported)
    want = load_model(ckpt, ema=0).state_dict()
    got = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # ... and as a pipeline: digits by name or id, the images generate made
    pipe_dir = str(tmp_path / "pipe")
    export.main(["--ckpt", ckpt, "--out", pipe_dir, "--pipeline"])
    pipe = MeanFlowPipeline.from_pretrained(pipe_dir)
    assert pipe.id2label == {d: str(d) for d in range(10)}
    labels = [str(y) if i % 2 else int(y) for i, y in enumerate(made["arr_1"])]  # names and ids mixed
    _assert_same_images(_pipeline_images(pipe, labels, model.config), made["arr_0"][..., 0])
