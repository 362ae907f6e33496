"""meanflow.evaluate runs no code from a weights file, downloads nothing, and uses only the
published weights unless told otherwise: a crafted pickle is refused without running, the
extractors that would download are refused naming the file to provide, and a weights file
whose sha256 is not the published one is refused unless --allow-unverified-weights."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torch_fidelity")

from fidelity_tiny import cli_error  # noqa: E402
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402

PINNED = "meanflow-fault-pinned"


class PinnedExtractor(FeatureExtractorBase):
    """Pooled RGB through a 48x4 projection read from its weights file (like the built-in
    extractors, it is handed whatever ``make_extractor`` passes as the weights path)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.register_buffer("proj", torch.load(feature_extractor_weights_path, weights_only=True))

    def forward(self, x):
        feat = F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1) @ self.proj
        return tuple({"feat": feat, "logits": feat}[k] for k in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits"}.get(metric, "feat")

    @staticmethod
    def can_be_compiled():
        return False


if PINNED not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(PINNED, PinnedExtractor)


class WritesMarker:
    """Unpickling this runs ``exec``: what a crafted weights file does to ``weights_only=False``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", arr_0=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8))
        paths.append(str(tmp_path / f"{name}.npz"))
    return paths


@pytest.fixture
def no_downloads(monkeypatch):
    """Any fetch through torch hub (state dicts, torchvision weights, hub repositories) fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def pin(monkeypatch, name, path):
    """Make ``path`` the published weights of ``name`` (the real files are downloads)."""
    published = ev.PublishedWeights(
        os.path.basename(path), "https://example.invalid/w.pt", ev.file_sha256(path)
    )
    monkeypatch.setitem(ev.PUBLISHED_WEIGHTS, name, published)


def test_crafted_inception_pickle_never_runs(images, tmp_path, monkeypatch, capsys, no_downloads):
    marker = tmp_path / "marker"
    crafted = tmp_path / ev.INCEPTION_FILE
    torch.save({"Conv2d_1a_3x3.conv.weight": WritesMarker(marker)}, crafted)
    out = tmp_path / "fid.json"
    argv = [images[0], "--ref", images[1], "--inception-weights", str(crafted), "--out", str(out), "--quiet"]
    # not the published file: refused on its hash, before it is read
    err = cli_error(capsys, argv + ["--metrics", "isc"])
    assert "sha256" in err and ev.ALLOW_FLAG in err
    # let it through the hash check (overridden, or even a forged match): read as tensors only
    with pytest.warns(UserWarning, match="not the published"):
        err = cli_error(capsys, argv + ["--metrics", "isc", ev.ALLOW_FLAG])
    assert f"cannot read {ev.INCEPTION} weights '{crafted}'" in err
    pin(monkeypatch, ev.INCEPTION, str(crafted))
    with pytest.raises(ValueError, match="cannot read"):
        ev.evaluate(images[0], images[1], metrics=["isc"], weights_path=str(crafted), verbose=False)
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("extractor", ["dinov2-vit-s-14", "clip-rn50"])
def test_extractors_that_download_are_refused(images, extractor, no_downloads, capsys):
    with pytest.raises(ValueError, match=rf"{extractor}.*never downloads: use {ev.INCEPTION} or vgg16"):
        ev.evaluate(images[0], images[1], metrics=["fid"], feature_extractor=extractor, verbose=False)
    assert "never downloads" in cli_error(
        capsys, [*images[:1], "--ref", images[1], "--feature-extractor", extractor]
    )


def test_vgg16_without_a_local_file_names_the_file(images, tmp_path, monkeypatch, no_downloads, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af.pth .*--extractor-weights PATH"):
        ev.evaluate(images[0], images[1], metrics=["fid"], feature_extractor="vgg16", verbose=False)
    # a local file goes through the same hash check as the Inception's
    wrong = tmp_path / "vgg16-397923af.pth"
    torch.save({"w": torch.zeros(2)}, wrong)
    err = cli_error(
        capsys,
        [images[0], "--ref", images[1], "--feature-extractor", "vgg16", "--extractor-weights", str(wrong)],
    )
    assert "not the published 397923af" in err and ev.ALLOW_FLAG in err


def test_weights_must_have_the_published_sha256(images, tmp_path, monkeypatch, capsys, no_downloads):
    good, other = tmp_path / "good.pt", tmp_path / "other.pt"
    torch.save(torch.randn(48, 4, generator=torch.Generator().manual_seed(0)), good)
    torch.save(torch.randn(48, 4, generator=torch.Generator().manual_seed(1)), other)
    pin(monkeypatch, PINNED, str(good))
    run = dict(metrics=["fid"], feature_extractor=PINNED, device="cpu", verbose=False)
    report = ev.evaluate(images[0], images[1], weights_path=str(good), **run)
    assert report["weights_sha256"] == ev.file_sha256(str(good)) and report["weights_verified"] is True

    out = tmp_path / "fid.json"
    with pytest.raises(ValueError) as refused:
        ev.evaluate(images[0], images[1], weights_path=str(other), out=str(out), **run)
    for named in (str(other), ev.file_sha256(str(other)), ev.file_sha256(str(good)), ev.ALLOW_FLAG):
        assert named in str(refused.value)
    assert not out.exists()
    with pytest.warns(UserWarning, match="not the published"):
        report = ev.evaluate(
            images[0], images[1], weights_path=str(other), allow_unverified_weights=True, **run
        )
    assert report["weights_verified"] is False and report["weights_sha256"] == ev.file_sha256(str(other))

    # the Inception itself: a file of its name and shape but other content is refused
    fake = tmp_path / "fake" / ev.INCEPTION_FILE
    fake.parent.mkdir()
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, fake)
    err = cli_error(capsys, [images[0], "--ref", images[1], "--inception-weights", str(fake)])
    assert ev.PUBLISHED_WEIGHTS[ev.INCEPTION].sha256 in err and ev.ALLOW_FLAG in err


def test_statistics_from_unverified_weights_never_pass_for_the_published(
    images, tmp_path, monkeypatch, capsys, no_downloads
):
    """Statistics saved from another weights file (let through by --allow-unverified-weights)
    and taken later as the reference of a run on the published file: same extractor, same
    dimension, so only their record shows the FID would compare two feature spaces."""
    good, other = tmp_path / "good.pt", tmp_path / "other.pt"
    torch.save(torch.randn(48, 4, generator=torch.Generator().manual_seed(0)), good)
    torch.save(torch.randn(48, 4, generator=torch.Generator().manual_seed(1)), other)
    pin(monkeypatch, PINNED, str(good))
    stats = tmp_path / "stats.npz"
    cli = ["--feature-extractor", PINNED, "--metrics", "fid", "--quiet", "--extractor-weights"]
    with pytest.warns(UserWarning, match="not the published"):
        ev.main(
            [images[0], "--ref", images[1], *cli, str(other), ev.ALLOW_FLAG, "--save-ref-stats", str(stats)]
        )
    capsys.readouterr()
    err = cli_error(capsys, [images[0], "--ref", str(stats), *cli, str(good)])
    for named in (str(stats), ev.file_sha256(str(other)), ev.file_sha256(str(good)), "Recompute"):
        assert named in err
    # with the weights that made them, they are the reference images' FID
    run = dict(metrics=["fid"], feature_extractor=PINNED, weights_path=str(other), verbose=False)
    with pytest.warns(UserWarning, match="not the published"):
        via_stats = ev.evaluate(images[0], str(stats), allow_unverified_weights=True, **run)
        direct = ev.evaluate(images[0], images[1], allow_unverified_weights=True, **run)
    assert via_stats["fid"] == pytest.approx(direct["fid"], rel=1e-9)


def test_the_weights_asked_for_come_before_the_variable_and_the_hub_cache(tmp_path, monkeypatch):
    """``--inception-weights``, else ``$MEANFLOW_INCEPTION_WEIGHTS``, else torch hub's cache,
    where each extractor's file keeps its own name: the file asked for is the one hashed and run."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    given, named = tmp_path / "given.pth", tmp_path / "named.pth"
    for path in (given, named, cache / ev.INCEPTION_FILE, cache / "vgg16-397923af.pth"):
        path.write_bytes(b"weights")
    monkeypatch.setenv(ev.WEIGHTS_ENV, str(named))
    assert ev.resolve_weights(ev.INCEPTION, str(given)) == str(given)
    assert ev.resolve_weights(ev.INCEPTION) == str(named)
    monkeypatch.delenv(ev.WEIGHTS_ENV)
    assert ev.resolve_weights(ev.INCEPTION) == str(cache / ev.INCEPTION_FILE)
    assert ev.resolve_weights("vgg16") == str(cache / "vgg16-397923af.pth")


def test_a_digest_prefix_as_torch_hub_names_verifies_its_file(tmp_path, monkeypatch):
    """torch hub's file names carry the first 8 hex digits of the sha256 (vgg16-397923af.pth),
    the only digest published for them: a file whose sha256 begins with them is verified."""
    path = tmp_path / "w.pt"
    torch.save(torch.zeros(2), path)
    digest = ev.file_sha256(str(path))
    for prefix in (digest[:8], digest):
        published = ev.PublishedWeights("w.pt", "https://example.invalid/w.pt", prefix)
        monkeypatch.setitem(ev.PUBLISHED_WEIGHTS, PINNED, published)
        assert ev.verify_weights(PINNED, str(path)) == (digest, True)
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    monkeypatch.setitem(ev.PUBLISHED_WEIGHTS, PINNED, ev.PublishedWeights("w.pt", "u", wrong))
    with pytest.raises(ValueError, match=rf"not the published {wrong} .*{ev.ALLOW_FLAG}"):
        ev.verify_weights(PINNED, str(path))
