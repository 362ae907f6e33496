"""What meanflow.evaluate's report says of its numbers: the KID's subset size (smaller sets
than 1000 images score smaller subsets, whose KID is not comparable to a published one), and
which reference images and statistics FID and the other metrics read (an ADM reference batch
holds 10,000 images and statistics of the whole training set; FID takes the statistics)."""

import json

import numpy as np
import pytest

torch_fidelity = pytest.importorskip("torch_fidelity")

from fidelity_tiny import RUN, TINY, as_uint8, image_set, tiny_features, write_dir, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402


@pytest.mark.parametrize("num_samples, num_reference", [(30, 48), (48, 30)])
def test_kid_subsets_are_the_smaller_sets_size_below_1000(tmp_path, num_samples, num_reference):
    """KID is the mean MMD of ``kid_subsets`` pairs of random subsets of ``kid_subset_size``
    images: 1000, or the smaller set's size below it, whichever set that is (of the larger one
    they could not be drawn from the smaller). Both are in the report, as ``isc_splits`` is, and
    the KID is torch-fidelity's of exactly those."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    samples_array = as_uint8(image_set(n=num_samples, seed=1))
    ref_array = as_uint8(image_set(n=num_reference))
    samples, reference = (
        write_npz(tmp_path / "s.npz", samples_array),
        write_npz(tmp_path / "r.npz", ref_array),
    )
    report = ev.evaluate(samples, reference, metrics=["kid"], **RUN)
    assert report["kid_subset_size"] == 30 and report["kid_subsets"] == 100
    assert report["num_samples"] == num_samples and report["num_reference"] == num_reference
    features = tiny_features(samples_array), tiny_features(ref_array)
    want = kid_features_to_metric(*features, kid_subset_size=30, kid_subsets=100)
    assert report["kid_mean"] == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-6)
    assert report["kid_std"] == pytest.approx(want["kernel_inception_distance_std"], rel=1e-6)


def test_kid_of_sets_larger_than_the_subset_size_keeps_it(tmp_path, monkeypatch):
    """Sets larger than the subset size keep it (1000 here stands as 20): the KID of subsets of
    20, which differs from that of subsets of 30."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    samples_array, ref_array = as_uint8(image_set(n=30, seed=1)), as_uint8(image_set(n=48))
    samples, reference = (
        write_npz(tmp_path / "s.npz", samples_array),
        write_npz(tmp_path / "r.npz", ref_array),
    )
    monkeypatch.setattr(ev, "KID_SUBSET_SIZE", 20)
    small = ev.evaluate(samples, reference, metrics=["kid"], **RUN)
    assert small["kid_subset_size"] == 20 and small["kid_subsets"] == 100
    features = tiny_features(samples_array), tiny_features(ref_array)
    want = kid_features_to_metric(*features, kid_subset_size=20, kid_subsets=100)
    assert small["kid_mean"] == pytest.approx(want["kernel_inception_distance_mean"], rel=1e-6)
    of_30 = kid_features_to_metric(*features, kid_subset_size=30, kid_subsets=100)
    assert small["kid_mean"] != pytest.approx(of_30["kernel_inception_distance_mean"], rel=1e-3)
    monkeypatch.undo()
    assert [ev.kid_subset_size_for(n) for n in (2, 200, 1000, 50000)] == [2, 200, 1000, 1000]
    # no KID asked for: no KID keys
    assert "kid_subset_size" not in ev.evaluate(samples, reference, metrics=["fid"], **RUN)


@pytest.fixture
def adm_batch(tmp_path):
    """``(samples, images, stats, recorded, adm)``: 16x16 samples; a reference of 24 images
    (``images``); statistics of 96 other images saved by ``--save-ref-stats`` (``stats``, which
    records 96); an .npz of the 24 images with those statistics and their record
    (``recorded``), and one with them bare, as ADM's batches hold them (``adm``)."""
    samples = write_npz(tmp_path / "s.npz", as_uint8(image_set(n=20, seed=1) + 16))
    held = as_uint8(image_set(n=24, seed=2))
    images = write_npz(tmp_path / "images.npz", held)
    stats = tmp_path / "stats.npz"
    ev.evaluate(
        samples,
        write_dir(tmp_path / "whole", as_uint8(image_set(n=96, seed=3))),
        metrics=["isc"],
        save_ref_stats=str(stats),
        **RUN,
    )
    with np.load(stats) as data:
        members = {k: data[k] for k in data.files}
    assert str(members["num_images"][()]) == "96"
    np.savez(tmp_path / "recorded.npz", arr_0=held, **members)
    np.savez(tmp_path / "adm.npz", arr_0=held, mu=members["mu"], sigma=members["sigma"])
    return samples, images, str(stats), str(tmp_path / "recorded.npz"), str(tmp_path / "adm.npz")


def test_fid_of_a_files_statistics_reports_their_count_not_the_images_beside_them(adm_batch, monkeypatch):
    """An .npz with images and statistics scores FID against the statistics (ADM's are of the
    whole training set): ``num_reference`` counts the images only when a metric read them
    (precision/recall, KID), and ``reference_stats_images`` the images behind the statistics,
    when the file records it (``--save-ref-stats`` does; ADM's do not)."""
    samples, images, stats, recorded, adm = adm_batch
    of_stats = ev.evaluate(samples, stats, metrics=["fid"], **RUN)
    of_images = ev.evaluate(samples, images, metrics=["fid"], **RUN)
    assert abs(of_stats["fid"] - of_images["fid"]) > 1e-3  # the two references differ
    assert of_stats["num_reference"] is None and of_stats["reference_stats"] == "precomputed"
    assert of_stats["reference_stats_images"] == 96
    assert of_images["num_reference"] == 24 and of_images["reference_stats"] is None
    assert of_images["reference_stats_images"] is None

    extract = ev.extract
    read = []
    monkeypatch.setattr(
        ev, "extract", lambda images, *a, **k: read.append(images.role) or extract(images, *a, **k)
    )
    for reference, count in ((recorded, 96), (adm, None)):
        read.clear()
        fid = ev.evaluate(samples, reference, metrics=["fid"], **RUN)
        assert read == ["samples"] and fid["fid"] == pytest.approx(of_stats["fid"], rel=1e-9)
        # FID alone read none of the 24 images: they are not its reference
        assert fid["num_reference"] is None and fid["reference_stats"] == "precomputed"
        assert fid["reference_stats_images"] == count
        read.clear()
        every = ev.evaluate(samples, reference, metrics=["fid", "prc", "kid"], **RUN)
        assert read == ["samples", "reference"] and every["fid"] == pytest.approx(of_stats["fid"], rel=1e-9)
        assert every["num_reference"] == 24 and every["reference_stats_images"] == count
        assert every["kid_subset_size"] == 20
        # the default metrics of a reference with images: fid, isc, prc
        default = ev.evaluate(samples, reference, **RUN)
        assert default["num_reference"] == 24 and default["reference_stats_images"] == count
        # the Inception Score alone never meets the reference
        alone = ev.evaluate(samples, reference, metrics=["isc"], **RUN)
        assert alone["num_reference"] is None and alone["reference_stats_images"] is None


def test_a_copy_of_statistics_keeps_their_count(adm_batch, tmp_path):
    """--save-ref-stats from a file's statistics writes that file's record, its count
    included (this run saw no image behind them); from images, their count."""
    samples, images, stats, recorded, adm = adm_batch
    copy, own = tmp_path / "copy.npz", tmp_path / "own.npz"
    ev.evaluate(samples, recorded, metrics=["fid", "prc"], save_ref_stats=str(copy), **RUN)
    ev.evaluate(samples, images, metrics=["isc"], save_ref_stats=str(own), **RUN)
    for path, count in ((copy, 96), (own, 24)):
        with np.load(path) as data:
            assert str(data["num_images"][()]) == str(count) and data["num_images"].dtype.kind == "U"
        assert ev.reference_stats.is_stats(str(path))
        assert ev.evaluate(samples, str(path), metrics=["fid"], **RUN)["reference_stats_images"] == count


@pytest.mark.parametrize(
    "value", [np.str_("ninety-six"), np.str_("0"), np.str_("-3"), np.str_(""), np.int64(96)]
)
def test_a_damaged_count_is_refused(adm_batch, tmp_path, value):
    """A count that is not a positive whole number in a string cannot be reported."""
    samples, _, stats, _, _ = adm_batch
    with np.load(stats) as data:
        members = {k: data[k] for k in data.files}
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **{**members, "num_images": value})
    with pytest.raises(ValueError, match=r"damaged.npz has a damaged feature record \(num_images"):
        ev.evaluate(samples, str(damaged), metrics=["fid"], **RUN)


def test_the_program_prints_the_report_with_its_torch_fidelity_and_quiet_says_nothing_else(tmp_path, capsys):
    """The version of torch-fidelity whose formulas made the numbers is in every report; --quiet
    leaves stdout to the report alone and stderr empty (no progress bar)."""
    samples = write_npz(tmp_path / "s.npz", as_uint8(image_set(n=8)))
    ev.main([samples, "--metrics", "isc", "--feature-extractor", TINY, "--quiet"])
    printed = capsys.readouterr()
    assert printed.err == ""
    assert json.loads(printed.out)["torch_fidelity"] == torch_fidelity.__version__
