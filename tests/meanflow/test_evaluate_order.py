"""meanflow.evaluate refuses a bad ``--device`` and a feature extractor it cannot run (not
registered, its weights file missing) before it reads the reference: a class-folder tree's
scan takes minutes, and these are a run's most common first errors."""

import pytest

pytest.importorskip("torch_fidelity")

from fidelity_tiny import RUN, as_uint8, image_set, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402


@pytest.fixture
def reference_never_read(monkeypatch):
    read = ev.ImageSet

    def image_set_of(path, role, crop=None):
        assert role != "reference", "the reference was read before the refusal"
        return read(path, role, crop)

    monkeypatch.setattr(ev, "ImageSet", image_set_of)


@pytest.mark.parametrize(
    "change, error, message",
    [
        # no GPU: "torch sees no CUDA GPU here"; a GPU machine: "GPU 7 asked for, this machine has N"
        ({"device": "cuda:7"}, ValueError, "device 'cuda:7': "),
        ({"device": "tpu"}, ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"feature_extractor": "nope"}, ValueError, "feature extractor 'nope' is not registered"),
        (
            {"feature_extractor": ev.INCEPTION, "weights_path": "missing.pth"},
            FileNotFoundError,
            "weights given by --inception-weights not found: missing.pth",
        ),
    ],
)
def test_device_and_extractor_are_refused_before_the_reference_is_read(
    tmp_path, monkeypatch, reference_never_read, change, error, message
):
    monkeypatch.chdir(tmp_path)
    samples = write_npz(tmp_path / "s.npz", as_uint8(image_set(n=8)))
    reference = write_npz(tmp_path / "r.npz", as_uint8(image_set(n=8, seed=1)))
    with pytest.raises(error) as raised:
        ev.evaluate(samples, reference, metrics=["fid"], **{**RUN, **change})
    assert str(raised.value).startswith(message)
