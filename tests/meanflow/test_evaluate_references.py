"""What meanflow.evaluate takes as a reference: images of the samples' size (the extractor
resizes every image, so nothing else would show a mismatch), a class-folder training tree read
as the trainer reads it, and saved statistics that say what made them."""

import numpy as np
import pytest

pytest.importorskip("torch_fidelity")

from fidelity_tiny import TINY, as_uint8, cli_error, image_set, write_dir, write_npz  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402

RUN = dict(feature_extractor=TINY, device="cpu", batch_size=16, verbose=False)


@pytest.fixture
def no_extraction(monkeypatch):
    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the sizes were checked")

    monkeypatch.setattr(ev, "extract", extract)


def test_reference_images_of_another_size_are_refused(tmp_path, monkeypatch, capsys, no_extraction):
    """ADM's reference batches are at the samples' resolution (VIRTUAL_imagenet256 for 256x256
    samples): 16x16 samples against 32x32 reference images, in an .npz (with or without its
    statistics) or a folder, are refused in one line naming both sizes and the fix, before any
    features are extracted."""
    samples = write_npz(tmp_path / "samples.npz", as_uint8(image_set(n=8, size=16)))
    big = as_uint8(image_set(n=8, size=32))
    ref_npz = write_npz(tmp_path / "ref32.npz", big)
    ref_dir = write_dir(tmp_path / "ref32", big)
    adm_like = tmp_path / "adm_like.npz"
    np.savez(adm_like, arr_0=big, mu=np.zeros(16), sigma=np.eye(16))
    out = tmp_path / "fid.json"
    for reference, fix in (
        (ref_npz, "give a reference of 16x16 images (ADM's batch at that resolution"),
        (str(adm_like), "give a reference of 16x16 images (ADM's batch at that resolution"),
        (ref_dir, "read it with --ref-size 16"),
    ):
        for metrics in (["fid"], ["prc"], ["kid"]):
            with pytest.raises(ValueError) as refused:
                ev.evaluate(samples, reference, metrics=metrics, out=str(out), **RUN)
            message = str(refused.value)
            assert f"--ref {reference} holds " in message and "32x32" in message, message
            assert "and the samples are 16x16" in message
            assert fix in message and "\n" not in message
    err = cli_error(capsys, [samples, "--ref", ref_dir, "--feature-extractor", TINY, "--out", str(out)])
    assert "32x32" in err and "16x16" in err and "--ref-size 16" in err
    assert not out.exists()
    # the folder read through the crop to the samples' size is a reference, as are statistics
    # alone (they say nothing of a size) and the Inception Score (it never meets the reference)
    monkeypatch.undo()
    assert ev.evaluate(samples, ref_dir, metrics=["fid"], ref_size=16, **RUN)["ref_size"] == 16
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.zeros(16), sigma=np.eye(16))
    assert "fid" in ev.evaluate(samples, str(stats), metrics=["fid"], **RUN)
    assert "inception_score_mean" in ev.evaluate(samples, ref_npz, metrics=["isc"], **RUN)


def test_non_square_samples_need_a_reference_of_their_size(tmp_path, no_extraction):
    """The center crop is square: for 16x8 samples the fix is a reference of 16x8 images."""
    wide = write_npz(tmp_path / "wide.npz", as_uint8(image_set(n=8, size=16)[:, :8]))
    square = write_npz(tmp_path / "square.npz", as_uint8(image_set(n=8, size=16)))
    with pytest.raises(ValueError, match=r"holds 16x16 images and the samples are 16x8: .*16x8 images"):
        ev.evaluate(wide, square, metrics=["fid"], **RUN)
