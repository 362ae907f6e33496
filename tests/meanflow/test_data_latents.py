"""prepare_latents (a tiny random-weight AutoencoderKL, offline) and the latent loaders."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from meanflow.config import TrainConfig
from meanflow.data import Loader, build_loader
from meanflow.data.dali_images import dali_available
from meanflow.data.image_folder import load_image, scan_image_folder
from meanflow.data.latents import DALILatentLoader, LatentIndex, TorchLatentLoader, moments_to_latents
from meanflow.data.sharding import EpochPlan
from meanflow.data.synthetic import make_image_tree

# CI installs the test extra (DALI and diffusers): there a missing one fails instead of skipping.
_ci = bool(os.environ.get("CI"))
needs_dali = pytest.mark.skipif(
    not dali_available() and not _ci, reason="nvidia-dali-cuda130 is not installed"
)
try:
    import diffusers  # noqa: F401

    _diffusers = True
except ImportError:
    _diffusers = False
needs_diffusers = pytest.mark.skipif(not _diffusers and not _ci, reason="diffusers is not installed")
pytestmark = needs_diffusers  # every test here reads latents that prepare_latents made

SIZE = 32
KINDS = ["torch", pytest.param("dali", marks=needs_dali)]


def make_loader(kind, root, bs, **kw):
    if kind == "dali":
        return DALILatentLoader(root, bs, num_threads=1, **kw)
    return TorchLatentLoader(root, bs, num_workers=0, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images") / "train")
    make_image_tree(root, classes=3, per_class=4, sides=(24, 70))  # 15 good images, 2 corrupt, 1 .txt
    return root


@pytest.fixture(scope="module")
def vae_config(tiny_vae):
    return tiny_vae[1]  # conftest's: a factor-2 latent with 4 channels


def prepare(src, dst, vae_config, **kw):
    from meanflow.prepare_latents import prepare_latents

    args = dict(image_size=SIZE, batch_size=4, shard_size=4, num_workers=0, scan_workers=0, progress=False)
    args["device"] = "cpu"  # also on a GPU machine: the tests compare with CPU-side encodings
    return prepare_latents(src, dst, "random", vae_config, **{**args, **kw})


@pytest.fixture(scope="module")
def latents(tree, vae_config, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp("latents") / "in32")
    with pytest.warns(UserWarning, match="RANDOM"):
        prepare(tree, dst, vae_config, preview=4)
    return dst


def test_manifest(latents, tree):
    with open(os.path.join(latents, "manifest.json")) as f:
        m = json.load(f)
    assert m["format"] == "meanflow-latents" and m["complete"] and m["scale_factor"] == 0.18215
    assert m["num_samples"] == m["num_images"] == 15 and m["failed"] == 0
    assert m["latent_shape"] == [4, SIZE // 2, SIZE // 2] and m["flips"] == 1 and m["dtype"] == "float32"
    assert [s["count"] for s in m["shards"]] == [4, 4, 4, 3] and all(s["done"] for s in m["shards"])
    assert m["classes"] == ["class_000", "class_001", "class_002"] and m["image_size"] == SIZE
    assert (m["scan"]["corrupt"], m["scan"]["not_image"], m["scan"]["converted"]) == (
        2,
        1,
        {"CMYK": 1, "L": 1},
    )
    assert m["vae"]["weights"] == "random" and m["vae"]["config"]["block_out_channels"] == [8, 8]
    assert os.path.isfile(os.path.join(latents, "preview.png"))
    assert not [n for n in os.listdir(latents) if n.endswith(".tmp")]


def test_stored_moments_are_the_posterior_of_each_image(latents, tree, vae_config):
    from meanflow.vae import load_vae

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", vae_config)
    index = scan_image_folder(tree, cache=None, workers=0)
    stored = LatentIndex(latents)
    assert np.array_equal(stored.labels, index.labels)
    sources = [
        ln.strip()
        for s in stored.manifest["shards"]
        for ln in open(os.path.join(latents, s["name"], "files.txt"))
    ]
    assert sources == index.files
    paths = [index.path(i) for i in range(len(index))]
    if dali_available():  # the fixture's reader ("auto")
        from meanflow.data.dali_images import iterate_files

        images = torch.cat([x for x, ok in iterate_files(paths, SIZE, 4, num_threads=1)])
    else:
        images = torch.stack([load_image(p, SIZE) for p in paths])
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
    moments = torch.stack([torch.from_numpy(np.load(f)) for f in stored.files])
    assert moments.shape == (15, 1, 2, 4, SIZE // 2, SIZE // 2)
    assert torch.allclose(moments[:, 0, 0], posterior.mean, atol=1e-5)
    assert torch.allclose(moments[:, 0, 1], posterior.std, atol=1e-5)


def test_resume_skips_finished_shards(latents, tree, vae_config, tmp_path, monkeypatch):
    import meanflow.prepare_latents as pl

    dst = str(tmp_path / "resumed")
    shutil.copytree(latents, dst)
    with open(os.path.join(dst, "manifest.json")) as f:
        m = json.load(f)
    m["shards"][2]["done"] = m["shards"][3]["done"] = False  # as if killed during shard 2
    m["complete"] = False
    with open(os.path.join(dst, "manifest.json"), "w") as f:
        json.dump(m, f)
    os.rename(os.path.join(dst, "shard_00003"), os.path.join(dst, ".shard_00003.tmp"))  # half-written
    before = {
        n: os.stat(os.path.join(dst, "shard_00000", n)).st_mtime_ns
        for n in os.listdir(os.path.join(dst, "shard_00000"))
    }
    with pytest.raises(ValueError, match="incomplete"):
        LatentIndex(dst)
    encoded = []
    real = pl.encode_moments
    monkeypatch.setattr(
        pl, "encode_moments", lambda vae, x, flips: encoded.append(len(x)) or real(vae, x, flips)
    )
    with pytest.warns(UserWarning, match="RANDOM"):
        pl.main([tree, dst, "--vae", "random", "--vae-config", vae_config, "--image-size", str(SIZE),
                 "--batch-size", "4", "--shard-size", "4", "--workers", "0", "--scan-workers", "0",
                 "--preview", "0", "--no-progress"])  # fmt: skip
    assert sum(encoded) == 7  # shards 2 and 3 only
    assert before == {n: os.stat(os.path.join(dst, "shard_00000", n)).st_mtime_ns for n in before}
    assert not os.path.exists(os.path.join(dst, ".shard_00003.tmp"))
    for s in ("shard_00002", "shard_00003"):
        for name in os.listdir(os.path.join(latents, s)):
            a, b = (os.path.join(root, s, name) for root in (latents, dst))
            assert open(a, "rb").read() == open(b, "rb").read(), name  # the same bytes again
    with open(os.path.join(dst, "manifest.json")) as f:
        assert json.load(f)["complete"]
    with pytest.raises(ValueError, match="image_size"), pytest.warns(UserWarning, match="RANDOM"):
        prepare(tree, dst, vae_config, image_size=16)


def test_flips_both_and_float16(tree, vae_config, tmp_path):
    from meanflow.prepare_latents import encode_moments
    from meanflow.vae import load_vae

    dst = str(tmp_path / "both")
    with pytest.warns(UserWarning, match="RANDOM"):
        m = prepare(tree, dst, vae_config, flips=2, dtype="float16", shard_size=100, reader="torch")
    assert m["flips"] == 2 and m["dtype"] == "float16" and len(m["shards"]) == 1
    stored = np.load(LatentIndex(dst).files[0])
    assert stored.shape == (2, 2, 4, SIZE // 2, SIZE // 2) and stored.dtype == np.float16
    image = load_image(scan_image_folder(tree, cache=None, workers=0).path(0), SIZE)[None]
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", vae_config)
    mirrored = encode_moments(vae, image.flip(-1))[0, 0]
    assert torch.allclose(torch.from_numpy(stored[1]).float(), mirrored, atol=2e-3, rtol=2e-3)


def test_moments_to_latents():
    moments = torch.randn(3, 1, 2, 4, 5, 5)
    moments[:, :, 1] = moments[:, :, 1].abs()
    flips, noise = torch.tensor([False, True, False]), torch.randn(3, 4, 5, 5)
    z = moments_to_latents(moments, flips, noise, 0.5, 0.1)
    want = (moments[:, 0, 0] + moments[:, 0, 1] * noise - 0.1) * 0.5
    assert torch.allclose(z[0], want[0]) and torch.allclose(z[2], want[2])
    assert torch.allclose(
        z[1], ((moments[1, 0, 0] + moments[1, 0, 1] * noise[1].flip(-1)) - 0.1).flip(-1) * 0.5
    )
    two = torch.stack([moments[:, 0], moments[:, 0] * 2], 1)  # stored mirror encodings are taken as is
    assert torch.allclose(moments_to_latents(two, flips, None, 1.0)[1], 2 * moments[1, 0, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_loader_batches(latents, kind):
    loader = make_loader(kind, latents, 4, seed=1, latent_mode="mean")
    assert isinstance(loader, Loader) and (loader.channels, loader.image_size, loader.num_classes) == (
        4,
        16,
        3,
    )
    index = loader.index
    order, flips = EpochPlan(15, 4, seed=1).rank_order(0)
    x, y = next(iter(loader))
    assert (
        x.shape == (4, 4, 16, 16)
        and x.dtype == torch.float32
        and torch.equal(y, torch.as_tensor(index.labels[order[:4]]))
    )
    stds = []
    for row, (i, f) in enumerate(zip(order[:4], flips[:4])):
        mean, std = torch.from_numpy(np.load(index.files[i]))[0] * 0.18215
        assert torch.allclose(x[row], mean.flip(-1) if f else mean)
        stds.append(std.flip(-1) if f else std)
    sampled = next(iter(make_loader(kind, latents, 4, seed=1)))[0]
    # A posterior sample: mean + std * noise, so (sample - mean) / std is standard normal noise,
    # its size unrelated to the VAE's std (noise / std or std * noise would be).
    stds = torch.stack(stds)
    noise = (sampled - x) / stds
    assert abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1, (noise.mean(), noise.std())
    size_vs_std = torch.corrcoef(torch.stack([noise.abs().flatten(), stds.flatten()]))[0, 1]
    assert abs(size_vs_std) < 0.08, size_vs_std


@needs_dali
def test_dali_and_torch_loaders_are_identical(latents):
    dali, ref = iter(make_loader("dali", latents, 5, seed=2)), iter(make_loader("torch", latents, 5, seed=2))
    for _ in range(4):
        (x, y), (xr, yr) = next(dali), next(ref)
        assert torch.equal(x, xr) and torch.equal(y, yr)


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_and_resume(latents, kind):
    one = make_loader(kind, latents, 4, seed=3)
    two = [iter(make_loader(kind, latents, 2, rank=r, world_size=2, seed=3)) for r in range(2)]
    it = iter(one)
    for _ in range(4):  # crosses the epoch boundary (3 batches per epoch)
        x, y = next(it)
        parts = [next(i) for i in two]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(
            y, torch.cat([p[1] for p in parts])
        )
    resumed = make_loader(kind, latents, 4)
    resumed.load_state_dict(one.state_dict())
    itr = iter(resumed)
    for _ in range(3):
        (xa, ya), (xb, yb) = next(it), next(itr)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_errors(tmp_path, latents):
    with pytest.raises(FileNotFoundError, match="nope"):
        LatentIndex(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        LatentIndex(str(tmp_path))
    with pytest.raises(ValueError, match="latent_mode"):
        TorchLatentLoader(latents, 2, latent_mode="median")
    from meanflow.prepare_latents import prepare_latents
    from meanflow.vae import load_vae

    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_vae(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="flips"):
        prepare_latents(str(tmp_path), str(tmp_path / "o"), "random", flips=3)


def test_vae_from_a_file_and_a_folder_offline(vae_config, tmp_path):
    from safetensors.torch import save_file

    from meanflow.vae import decode_latents, load_vae

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", vae_config)
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(state, str(tmp_path / "vae.safetensors"))
    from_file = load_vae(str(tmp_path / "vae.safetensors"), vae_config)
    vae.save_pretrained(str(tmp_path / "folder"))
    from_folder = load_vae(str(tmp_path / "folder"))
    x = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    for other in (from_file, from_folder):
        assert torch.equal(other.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean)
    images = decode_latents(vae, torch.randn(2, 4, SIZE // 2, SIZE // 2))
    assert images.shape == (2, 3, SIZE, SIZE) and images.min() >= -1 and images.max() <= 1
    with pytest.raises(ValueError, match="do not fit"):
        load_vae(str(tmp_path / "vae.safetensors"))  # the full-size sd-vae-ft-ema config


def test_decode_with_the_manifest_vae(latents):
    loader = TorchLatentLoader(latents, 2, num_workers=0)
    x, _ = next(iter(loader))
    with pytest.warns(UserWarning, match="RANDOM"):
        images = loader.decode(x)
    assert images.shape == (2, 3, SIZE, SIZE)


def test_trainer_runs_on_latents_and_decodes_its_grids(latents, tmp_path):
    """Training on a latent folder (3 classes: fewer than the grid's 10 columns), and the sample
    grid is images decoded with the VAE of the manifest, not raw latents."""
    from PIL import Image

    from meanflow.pretrained import load_trainer_checkpoint
    from meanflow.sampler import sample, save_grid
    from meanflow.train import main

    config = TrainConfig.from_name("imagenet256-b2")
    config.model, config.model_kwargs = "DiT-T/4", {"depth": 1}
    config.data.path, config.data.num_workers, config.data.backend = latents, 0, "torch"
    config.out_dir, config.steps, config.batch_size, config.progress = str(tmp_path / "run"), 2, 4, False
    config.sample_every, config.ckpt_every, config.threads = 0, 0, 1
    with pytest.warns(UserWarning, match="RANDOM"):
        summary = main(config)
    assert summary["step"] == 2
    ckpt = torch.load(os.path.join(config.out_dir, "last.pt"), weights_only=True)
    assert ckpt["model_config"]["in_channels"] == 4 and ckpt["model_config"]["input_size"] == SIZE // 2
    assert ckpt["data"]["position"] == 2

    grid = Image.open(os.path.join(config.out_dir, "samples", "step_0000002.png"))
    assert grid.mode == "RGB" and grid.size == (3 * (SIZE + 2) + 2, 10 * (SIZE + 2) + 2)
    # The same grid by hand: the EMA model's samples, decoded by the loader.
    model = load_trainer_checkpoint(os.path.join(config.out_dir, "last.pt"), ema=0)
    noise = torch.randn(30, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(config.seed))
    with pytest.warns(UserWarning, match="RANDOM"):
        images = TorchLatentLoader(latents, 2, num_workers=0).decode(
            sample(model, torch.arange(30) % 3, steps=config.sample_steps, noise=noise)
        )
    save_grid(images, str(tmp_path / "want.png"), nrow=3)
    want = np.asarray(Image.open(tmp_path / "want.png")).astype(int)
    assert np.abs(np.asarray(grid).astype(int) - want).max() <= 1  # decoded 10 at a time there


def test_builder_needs_path():
    config = TrainConfig.from_name("imagenet256-xl2")
    with pytest.raises(ValueError, match="data.path"):
        build_loader(config, 0, 1, "cpu")


def test_torch_latent_loader_with_workers(latents):
    a = TorchLatentLoader(latents, 4, num_workers=2, seed=8)
    b = TorchLatentLoader(latents, 4, num_workers=0, seed=8)
    ia, ib = iter(a), iter(b)
    for _ in range(7):
        (xa, ya), (xb, yb) = next(ia), next(ib)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.state_dict() == b.state_dict() == {"epoch": 2, "position": 1, "seed": 8, "num_samples": 15}


@pytest.mark.gpu
def test_prepare_on_gpu_matches_cpu(latents, tree, vae_config, tmp_path):
    dst = str(tmp_path / "gpu")
    with pytest.warns(UserWarning, match="RANDOM"):
        prepare(tree, dst, vae_config, device="cuda", preview=0)
    cpu, gpu = LatentIndex(latents), LatentIndex(dst)
    assert np.array_equal(cpu.labels, gpu.labels)
    a = np.stack([np.load(f) for f in cpu.files])
    b = np.stack([np.load(f) for f in gpu.files])
    assert np.abs(a - b).max() < 0.1 and np.abs(a - b).mean() < 0.01  # nvJPEG decode + cuDNN convs


@pytest.mark.gpu
@needs_dali
def test_gpu_latent_loaders(latents):
    dali = iter(DALILatentLoader(latents, 5, device="cuda", num_threads=1, seed=2))
    ref = iter(TorchLatentLoader(latents, 5, device="cuda", num_workers=0, seed=2))
    for _ in range(4):
        (x, y), (xr, yr) = next(dali), next(ref)
        assert x.is_cuda and y.is_cuda and torch.equal(x, xr) and torch.equal(y, yr)
