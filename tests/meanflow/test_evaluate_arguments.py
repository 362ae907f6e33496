"""meanflow.evaluate's arguments and destinations it cannot take, each refused by a ValueError
naming it before any feature is extracted (never a torch or numpy error from deep inside a
run), and the earlier reports --out may write over."""

import json

import numpy as np
import pytest

pytest.importorskip("torch_fidelity")

from fidelity_tiny import RUN, as_uint8, image_set, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402


@pytest.fixture
def samples(tmp_path):
    return write_npz(tmp_path / "s.npz", as_uint8(image_set(n=8)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": True}, r"^batch_size must be an int >= 1, got True"),  # not a batch of one
        ({"batch_size": 0}, r"^batch_size must be an int >= 1, got 0"),
        ({"metrics": []}, r"^metrics must be a non-empty subset of"),  # a report of no metric
        ({"save_ref_stats": "ref_stats.npz"}, r"^save_ref_stats \(--save-ref-stats\) needs a reference"),
    ],
)
def test_bad_arguments_are_refused_naming_them(samples, no_extraction, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ev.evaluate(samples, **{**RUN, "metrics": ["isc"], **kwargs})


def test_samples_of_statistics_only_are_refused(tmp_path, samples, no_extraction):
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(16), sigma=np.eye(16))
    with pytest.raises(ValueError, match=rf"^samples {stats} hold statistics only"):
        ev.evaluate(str(stats), samples, metrics=["fid"], **RUN)


def test_out_writes_over_a_report_not_another_json(tmp_path, samples, no_extraction):
    """A JSON that is not an object is someone else's file; an object with a metric is a report
    (trimmed by hand, or another tool's)."""
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"--out .*list.json exists and is not a file meanflow.evaluate"):
        ev.evaluate(samples, metrics=["isc"], out=str(listing), **RUN)


def test_a_report_trimmed_to_its_metrics_is_written_over(tmp_path, samples):
    trimmed = tmp_path / "fid.json"
    trimmed.write_text('{"fid": 3.1}')
    ev.evaluate(samples, metrics=["isc"], out=str(trimmed), **RUN)
    assert json.loads(trimmed.read_text())["feature_extractor"] == RUN["feature_extractor"]
