"""What meanflow.evaluate refuses to score rather than report a number that means nothing: sets
too small for a metric (NaN, a constant, or torch-fidelity's error after the whole extraction),
Inception Score splits of one image, and reference statistics that are not real, finite
``mu (D,)`` and ``sigma (D, D)``."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from fidelity_tiny import RUN, TINY, as_uint8, cli_error, image_set, tiny_features, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402
from meanflow.evaluate_inputs import ImageSet  # noqa: E402


def images(tmp_path, name, n, seed=0):
    return write_npz(tmp_path / f"{name}.npz", as_uint8(image_set(n=n, seed=seed)))


@pytest.mark.parametrize(
    "metric, n_samples, n_reference, short, fewest",
    [
        ("kid", 1, 48, "samples", 2),  # KID's unbiased MMD divides by m - 1: NaN
        ("kid", 48, 1, "reference", 2),
        ("fid", 48, 1, "reference", 2),  # a covariance of one image: NaN, then a LinAlgError
        ("fid", 1, 48, "samples", 2),
        ("prc", 3, 48, "samples", 4),  # no 3rd neighbour: torch's kthvalue error after extraction
        ("prc", 48, 3, "reference", 4),
        ("isc", 1, 48, "samples", 2),  # the score of one image is 1
    ],
)
def test_a_set_too_small_for_a_metric_is_refused_before_extraction(
    tmp_path, no_extraction, metric, n_samples, n_reference, short, fewest
):
    samples, reference = images(tmp_path, "s", n_samples, 1), images(tmp_path, "r", n_reference)
    with pytest.raises(ValueError) as error:
        ev.evaluate(samples, reference, metrics=[metric], **RUN)
    path = samples if short == "samples" else reference
    message = str(error.value)
    assert message.startswith(f"{metric} needs at least {fewest} images in the {short} (")
    assert message.endswith(f"{path} holds {min(n_samples, n_reference)}")


def test_saved_statistics_of_one_reference_image_are_refused(tmp_path, no_extraction):
    """FID statistics written from one image hold a NaN covariance, which every later run
    against them would fail on (or score as NaN)."""
    stats = tmp_path / "stats.npz"
    reference = images(tmp_path, "r", 1)
    with pytest.raises(ValueError, match=r"^fid needs at least 2 images in the reference"):
        ev.evaluate(images(tmp_path, "s", 8), reference, metrics=["isc"], save_ref_stats=str(stats), **RUN)
    assert not stats.exists()


def test_too_few_images_is_one_line_from_the_program(tmp_path, capsys):
    samples, reference = images(tmp_path, "s", 1), images(tmp_path, "r", 48)
    err = cli_error(capsys, [samples, "--ref", reference, "--metrics", "kid", "--feature-extractor", TINY])
    assert "kid needs at least 2 images in the samples" in err


def test_inception_score_splits_hold_two_images_or_more(tmp_path):
    """Fewer than twice ``isc_splits`` images score ``n // 2`` splits, as torch-fidelity's
    formula does on them; a split of one image would score exactly 1 whatever it shows, and
    ``n`` such splits an IS of 1 +- 0 for any model. From 20 images on, torch-fidelity's 10."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    array = as_uint8(image_set(n=9, seed=2))
    samples = write_npz(tmp_path / "s.npz", array)
    report = ev.evaluate(samples, metrics=["isc"], **RUN)
    want = isc_features_to_metric(tiny_features(array, "logits").double(), splits=4)
    assert report["isc_splits"] == 4
    assert report["inception_score_mean"] == pytest.approx(want["inception_score_mean"], rel=1e-6)
    assert report["inception_score_std"] == pytest.approx(want["inception_score_std"], rel=1e-6, abs=1e-12)
    assert report["inception_score_mean"] > 1 + 1e-6  # distinct images, not the constant of one
    many = ev.evaluate(images(tmp_path, "m", 20), metrics=["isc"], **RUN)
    assert many["isc_splits"] == 10


@pytest.mark.parametrize("splits", [0, -1, 2.0, True])
def test_bad_isc_splits_are_refused(tmp_path, no_extraction, splits):
    """0 or fewer splits gave an IS of NaN (the mean of no score)."""
    with pytest.raises(ValueError, match=r"^isc_splits must be an int >= 1, got "):
        ev.evaluate(images(tmp_path, "s", 8), metrics=["isc"], isc_splits=splits, **RUN)


D = 16  # the tiny extractor's feature dimension
BAD_STATISTICS = {
    "an infinite mean": (np.full(D, np.inf), np.eye(D), "NaN or infinite"),  # FID inf, unflagged
    "a NaN covariance": (np.zeros(D), np.full((D, D), np.nan), "NaN or infinite"),
    "complex values": (np.zeros(D, complex), np.eye(D, dtype=complex), "real arrays"),  # imag dropped
    "strings": (np.array(["0"] * D), np.eye(D), "real arrays"),
    "a 2-d mean": (np.zeros((1, D)), np.eye(D), "shapes (D,) and (D, D)"),
    "a 3-d covariance": (np.zeros(D), np.zeros((D, D, 1)), "shapes (D,) and (D, D)"),
    "objects": (np.array([None] * D, dtype=object), np.eye(D), "numeric arrays"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATISTICS))
def test_reference_statistics_must_be_real_finite_mu_and_sigma(tmp_path, no_extraction, case):
    mu, sigma, reason = BAD_STATISTICS[case]
    stats = str(tmp_path / "stats.npz")
    np.savez(stats, mu=mu, sigma=sigma)
    with pytest.raises(ValueError) as error:
        ev.evaluate(images(tmp_path, "s", 8), stats, metrics=["fid"], **RUN)
    assert str(error.value).startswith(f"reference {stats}: mu ") and reason in str(error.value)


def test_float32_statistics_are_read_as_float64(tmp_path):
    """Another tool's float32 statistics score as their float64 copy does."""
    samples, reference = images(tmp_path, "s", 8, 1), images(tmp_path, "r", 48)
    saved = str(tmp_path / "stats.npz")
    full = ev.evaluate(samples, reference, metrics=["fid"], save_ref_stats=saved, **RUN)["fid"]
    with np.load(saved) as data:
        mu, sigma = data["mu"].astype(np.float32), data["sigma"].astype(np.float32)
    np.savez(os.path.join(tmp_path, "f32.npz"), mu=mu, sigma=sigma)
    want = ev.evaluate(samples, str(tmp_path / "f32.npz"), metrics=["fid"], **RUN)["fid"]
    assert np.isfinite(want) and want == pytest.approx(full, rel=1e-4, abs=1e-6 * max(1.0, abs(full)))


def test_features_are_kept_in_float64(tmp_path):
    """The extractor's float32 features reach the metrics in float64: the mean and covariance of
    50,000 images summed in float32 lose digits of the FID."""
    array = as_uint8(image_set(n=8))
    samples = ImageSet(write_npz(tmp_path / "s.npz", array), "samples")
    cpu = torch.device("cpu")
    extractor = ev.build_extractor(TINY, ["feat"], cpu, None, False)
    features = ev.extract(samples, extractor, cpu, 3, False)["feat"]
    assert features.dtype == torch.float64 and features.device == cpu
    torch.testing.assert_close(features, tiny_features(array).double(), rtol=1e-6, atol=1e-6)
