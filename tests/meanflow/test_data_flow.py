"""How training data flows to the ranks: each seed and epoch its own order, a resume that
reads on from the saved batch (also onto a data set that shrank), fresh posterior noise per
batch and seed, the loader the trainer builds from its config, what a latent folder's identity
compares, and reference statistics read as they were saved. Fast: synthetic latent folders
(``make_latent_folder``), no VAE."""

import numpy as np
import pytest
import torch
from manifests import edit_manifest

from meanflow import reference_stats
from meanflow.config import TrainConfig
from meanflow.data import build_loader
from meanflow.data.dali_images import dali_available
from meanflow.data.latents import LatentIndex, TorchLatentLoader, identity_changes
from meanflow.data.sharding import EpochPlan
from meanflow.data.synthetic import make_latent_folder

SCALE = 0.18215  # make_latent_folder's scale_factor
SHAPE = (2, 4, 4)


def latent_folder(tmp_path, name, num, classes=None):
    """``num`` latents, each of its own class (unless ``classes``): a batch's labels name its samples."""
    return make_latent_folder(str(tmp_path / name), num=num, classes=classes or num, shape=SHAPE)


def torch_loader(root, batch_size, **kw):
    return TorchLatentLoader(root, batch_size, num_workers=0, **kw)


def test_each_seed_and_epoch_draws_its_own_order():
    """Epoch ``e`` of seed ``s`` is ``randperm`` from ``s * 1_000_003 + e``: no two of seeds 0
    and 1 and epochs 0 and 1 share an order (seed 1's first epoch is not seed 0's second)."""
    orders = {}
    for seed in (0, 1):
        for epoch in (0, 1):
            perm, _ = EpochPlan(1000, 10, seed=seed).epoch_order(epoch)
            want = torch.randperm(1000, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            assert np.array_equal(perm, want.numpy()), (seed, epoch)
            orders[seed, epoch] = perm
    keys = list(orders)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not np.array_equal(orders[a], orders[b]), (a, b)


def test_the_torch_latent_loader_reads_each_epochs_own_order(tmp_path):
    """Across three epochs, each batch holds the samples its epoch's plan names, and a loader
    resumed from any batch's state reads on from the next one."""
    root = latent_folder(tmp_path, "lat", 12)
    plan = EpochPlan(12, 4, seed=2)
    loader = torch_loader(root, 4, seed=2, latent_mode="mean")
    it = iter(loader)
    for epoch in range(3):
        order, _ = plan.rank_order(epoch)
        for b in range(3):
            _, y = next(it)
            assert y.tolist() == order[4 * b : 4 * b + 4].tolist(), (epoch, b)
            assert loader.state_dict()["position"] == b + 1 and loader.state_dict()["epoch"] == epoch
            resumed = torch_loader(root, 4, seed=2, latent_mode="mean")
            resumed.load_state_dict(loader.state_dict())
            following = plan.rank_order(epoch + 1)[0][:4] if b == 2 else order[4 * b + 4 : 4 * b + 8]
            assert next(iter(resumed))[1].tolist() == following.tolist(), (epoch, b)


def test_a_resume_past_the_end_of_a_shrunken_data_set_starts_the_next_epoch(tmp_path):
    """A state saved at batch 5 of 6 resumed onto a folder of 12 latents (3 batches of 4): said,
    and read on from the next epoch's first batch, not refused mid-run."""
    loader = torch_loader(latent_folder(tmp_path, "big", 24), 4, seed=1, latent_mode="mean")
    it = iter(loader)
    for _ in range(5):
        next(it)
    small = torch_loader(latent_folder(tmp_path, "small", 12), 4, seed=1, latent_mode="mean")
    with pytest.warns(UserWarning, match="saved over 24 samples with 12 now"):
        small.load_state_dict(loader.state_dict())
    assert (small.epoch, small.position) == (1, 0)
    _, y = next(iter(small))
    assert y.tolist() == EpochPlan(12, 4, seed=1).rank_order(1)[0][:4].tolist()


def _noise(root, seed, batches):
    """The posterior noise of the first ``batches`` batches: ``(sample - mean) / (std * scale)``
    where the std is not near zero (NaN elsewhere)."""
    sample = iter(torch_loader(root, 4, seed=seed, flip=False))
    mean = iter(torch_loader(root, 4, seed=seed, flip=False, latent_mode="mean"))
    index = LatentIndex(root)
    plan = EpochPlan(len(index), 4, seed=seed)
    order, _ = plan.rank_order(0)
    noise = []
    for b in range(batches):
        (xs, _), (xm, _) = next(sample), next(mean)
        std = torch.stack([torch.from_numpy(np.load(index.files[i]))[0, 1] for i in order[4 * b : 4 * b + 4]])
        std = std * SCALE
        noise.append(torch.where(std > 1e-4, (xs - xm) / std, torch.nan))
    return noise


def _differ(a, b):
    both = ~(a.isnan() | b.isnan())
    return bool(both.sum() > 8 and (a[both] - b[both]).abs().max() > 0.5)


def test_posterior_noise_is_fresh_for_each_batch_and_seed(tmp_path):
    """``eps`` is a function of ``(seed, epoch, batch)``: two batches of an epoch, or the same
    batch of two seeds, draw other noise, and each is standard normal."""
    root = latent_folder(tmp_path, "lat", 64, classes=4)
    seed0, seed1 = _noise(root, 0, 2), _noise(root, 1, 1)
    assert _differ(seed0[0], seed0[1]) and _differ(seed0[0], seed1[0])
    drawn = torch.cat([n[~n.isnan()] for n in seed0])
    assert drawn.numel() > 200 and abs(drawn.mean()) < 0.25 and abs(drawn.std() - 1) < 0.25


@pytest.mark.parametrize("backend", ["torch", pytest.param("dali", marks=pytest.mark.skipif(
    not dali_available(), reason="nvidia-dali-cuda130 is not installed"))])  # fmt: skip
def test_the_trainers_latent_loader_is_the_one_its_config_asks_for(tmp_path, backend):
    """Rank 1 of 2 of a global batch_size 8, seed 5, latent_mode mean: batches of 4, the very
    batches of a loader built by hand with those values."""
    root = latent_folder(tmp_path, "lat", 24)
    config = TrainConfig(batch_size=8, seed=5)
    config.data.name, config.data.path, config.data.backend = "latents", root, backend
    config.data.num_workers, config.data.latent_mode = 0, "mean"
    loader = build_loader(config, 1, 2, "cpu")
    assert (loader.batch_size, loader.seed, loader.latent_mode) == (4, 5, "mean")
    by_hand = iter(TorchLatentLoader(root, 4, 1, 2, seed=5, latent_mode="mean", num_workers=0))
    it = iter(loader)
    for _ in range(4):  # past the epoch's 3 batches
        (x, y), (xh, yh) = next(it), next(by_hand)
        assert x.shape == (4, *SHAPE) and torch.equal(x, xh) and torch.equal(y, yh)


MADE = {"reader": "dali", "image_size": 256, "crop": "adm", "flips": 1, "dtype": "float32"}
OTHER = {"reader": "torch", "image_size": 512, "crop": "resize", "flips": 2, "dtype": "float16"}


def test_latents_are_shifted_and_scaled_as_their_manifest_says(tmp_path):
    """A VAE of another scale and shift than SD's (SD3: 1.5305 and 0.0609): ``(mean - shift) *
    scale`` with the manifest's two, each latent as stored (no flip, the posterior mean)."""
    root = latent_folder(tmp_path, "lat", 8)
    edit_manifest(root, scale_factor=1.5, shift_factor=0.25)
    loader = torch_loader(root, 4, seed=3, flip=False, latent_mode="mean")
    x, _ = next(iter(loader))
    order, _ = EpochPlan(8, 4, seed=3).rank_order(0)
    mean = torch.stack([torch.from_numpy(np.load(loader.index.files[i]))[0, 0] for i in order[:4]])
    assert torch.allclose(x, (mean - 0.25) * 1.5, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("key", sorted(MADE))
def test_latents_made_otherwise_are_a_change_naming_the_key(tmp_path, key):
    """A folder prepared again at the same path with another reader, size, crop, flips or dtype
    holds as many latents of the same classes: only the identity a checkpoint records tells."""
    root = latent_folder(tmp_path, "lat", 4)
    edit_manifest(root, **MADE)
    recorded = LatentIndex(root).identity()
    assert identity_changes(recorded, LatentIndex(root).identity()) == []
    edit_manifest(root, **{key: OTHER[key]})
    changes = identity_changes(recorded, LatentIndex(root).identity())
    assert changes == [f"{key}: {MADE[key]!r} then, {OTHER[key]!r} now"]


def test_the_same_vae_elsewhere_and_an_older_record_are_no_change(tmp_path):
    """The VAE is compared by its config and hash, not by where it was read (a cluster's copy);
    a key the checkpoint did not yet record is no change."""
    vae = {"weights": "/home/a/vae", "config": {"latent_channels": 2}, "sha256": "ab" * 32}
    root = latent_folder(tmp_path, "lat", 4)
    edit_manifest(root, vae=vae, **MADE)
    recorded = LatentIndex(root).identity()
    edit_manifest(root, vae={**vae, "weights": "/scratch/b/vae"})
    now = LatentIndex(root).identity()
    assert identity_changes(recorded, now) == []
    older = {k: v for k, v in recorded.items() if k != "decode_version"}
    assert identity_changes(older, now) == []
    edit_manifest(root, vae={**vae, "sha256": "cd" * 32})
    assert identity_changes(recorded, LatentIndex(root).identity())[0].startswith("vae: ")


def test_reference_statistics_are_read_exactly_as_saved(tmp_path):
    """``mu`` and ``sigma`` saved in float64 come back in float64, every digit kept (FID of
    2048 features from float32 statistics is off in the third digit)."""
    mu = 1 + np.arange(4) * 2.0**-40
    sigma = np.eye(4) + 2.0**-45
    path = str(tmp_path / "ref.npz")
    reference_stats.write(path, {"mu": mu, "sigma": sigma})
    with np.load(path) as data:
        stats, found = reference_stats.read(data, path, "--ref")
    assert found is None and stats["mu"].dtype == stats["sigma"].dtype == np.float64
    assert np.array_equal(stats["mu"], mu) and np.array_equal(stats["sigma"], sigma)


def test_a_sigma_that_is_not_a_matrix_is_refused_naming_the_file(tmp_path):
    path = str(tmp_path / "ref.npz")
    np.savez(path, mu=np.zeros(4), sigma=np.ones(4))  # variances, not a covariance
    with np.load(path) as data, pytest.raises(ValueError, match=r"ref\.npz: mu and sigma must be .*\(D, D\)"):
        reference_stats.read(data, path, "--ref")


def test_statistics_of_another_layer_are_refused():
    current = reference_stats.record("inception-v3-compat", "2048", {"weights_sha256": "ab" * 32})
    recorded = {**current, "feature_layer": "logits_unbiased"}
    with pytest.raises(ValueError, match="feature_layer 'logits_unbiased' there, '2048' in this run"):
        reference_stats.check("ref.npz", recorded, current, verbose=False)


def test_statistics_of_square_images_are_refused_for_wide_samples():
    """Both sides count: samples 256 high but 512 wide are not the reference's 256 x 256."""
    with pytest.raises(ValueError, match="the samples are 512x256 images"):
        reference_stats.check_crop_size("ref", 256, (256, 512))
    with pytest.raises(ValueError, match="statistics of 256x256 images and the samples are 512x256"):
        reference_stats.check_image_size("ref.npz", (256, 256), (256, 512))
    reference_stats.check_crop_size("ref", 256, (256, 256))
    reference_stats.check_image_size("ref.npz", (256, 512), (256, 512))
