"""meanflow.evaluate through torch-fidelity with a tiny registered feature extractor (no
Inception download): FID(A, A) ~ 0, FID grows with a controlled shift, directory / npz /
precomputed-statistics inputs agree, a class-folder tree read with --ref-size is the ADM
center crops the trainer sees, and bad inputs fail before anything is written."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("torch_fidelity")

from fidelity_tiny import (  # noqa: E402
    RUN,
    TINY,
    TinyExtractor,
    adm_tree,
    as_uint8,
    cli_error,
    image_set,
    tiny_features,
    write_dir,
    write_npz,
)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor  # noqa: E402

from meanflow import evaluate as ev  # noqa: E402
from meanflow import evaluate_inputs  # noqa: E402


@pytest.fixture
def sets(tmp_path):
    base = image_set()
    a = as_uint8(base)
    return {
        "a_dir": write_dir(tmp_path / "a", a),
        "a_npz": write_npz(tmp_path / "a.npz", a),
        **{f"shift{s}": write_npz(tmp_path / f"s{s}.npz", as_uint8(base + s)) for s in (8, 16, 32)},
        "other": write_npz(tmp_path / "other.npz", as_uint8(image_set(seed=1))),
    }


def test_fid_zero_on_itself_and_monotone_in_the_shift(sets, tmp_path):
    same = ev.evaluate(sets["a_dir"], sets["a_npz"], metrics=["fid"], **RUN)
    assert abs(same["fid"]) < 1e-6
    fids = [ev.evaluate(sets[f"shift{s}"], sets["a_dir"], metrics=["fid"], **RUN)["fid"] for s in (8, 16, 32)]
    assert 1e-3 < fids[0] < fids[1] < fids[2]
    # a pure shift moves only the mean: FID = |mu shift|^2, 4x per doubling
    assert fids[2] / fids[1] == pytest.approx(4, rel=0.05) and fids[1] / fids[0] == pytest.approx(4, rel=0.05)
    # and a fresh draw of the same distribution lands far below the largest shift
    assert ev.evaluate(sets["other"], sets["a_dir"], metrics=["fid"], **RUN)["fid"] < fids[2]


def test_all_metrics_to_json(sets, tmp_path):
    out = tmp_path / "res" / "metrics.json"
    report = ev.evaluate(
        sets["shift8"], sets["a_dir"], metrics=["fid", "isc", "prc", "kid"], out=str(out), **RUN
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["num_samples"] == report["num_reference"] == 48 and report["feature_extractor"] == TINY
    assert report["inception_score_mean"] >= 1.0 and report["inception_score_std"] >= 0
    for key in ("precision", "recall", "f_score"):
        assert 0.0 <= report[key] <= 1.0
    assert report["kid_mean"] > 0
    # identical sets: full precision and recall
    same = ev.evaluate(sets["a_npz"], sets["a_dir"], metrics=["prc"], **RUN)
    assert same["precision"] == same["recall"] == 1.0
    # default metrics: fid, isc and, as the reference has images, prc
    assert {"fid", "inception_score_mean", "precision"} <= set(
        ev.evaluate(sets["a_npz"], sets["a_dir"], **RUN)
    )


def test_precomputed_reference_statistics(sets, tmp_path):
    stats = tmp_path / "ref_stats.npz"
    direct = ev.evaluate(sets["shift16"], sets["a_dir"], metrics=["fid"], save_ref_stats=str(stats), **RUN)
    with np.load(stats) as data:  # allow_pickle=False: the record is plain strings
        assert set(data.files) == {"mu", "sigma", "feature_extractor", "feature_layer", "weights_sha256"} | {
            "torch_fidelity",
            "image_size",
            "num_images",
        }
        assert str(data["num_images"][()]) == "48"
        assert data["mu"].shape == (16,)
        record = {k: str(data[k][()]) for k in ("feature_extractor", "feature_layer", "weights_sha256")}
    assert record == {"feature_extractor": TINY, "feature_layer": "feat", "weights_sha256": ""}
    via_stats = ev.evaluate(sets["shift16"], str(stats), metrics=["fid"], **RUN)
    assert via_stats["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert via_stats["reference_stats"] == "precomputed" and via_stats["num_reference"] is None
    with pytest.raises(ValueError, match="statistics only: prc and kid need reference images"):
        ev.evaluate(sets["a_npz"], str(stats), metrics=["prc"], **RUN)
    np.savez(tmp_path / "adm_like.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match=r"dimension \(2048,\).*another feature extractor"):
        ev.evaluate(sets["a_npz"], str(tmp_path / "adm_like.npz"), metrics=["fid"], **RUN)


TINY_TWIN = "meanflow-test-tiny-twin"  # the same features under another name: its 16 dimensions match
if TINY_TWIN not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(TINY_TWIN, TinyExtractor)


def test_reference_statistics_from_other_features_are_refused(sets, tmp_path, monkeypatch, capsys):
    """Statistics record the extractor, layer and weights file that made them: FID against them
    from other features (same dimension, so nothing else shows it) is refused before any
    extraction, naming both; the same features give the FID of the reference images."""
    weights = {name: str(tmp_path / f"{name}.pt") for name in "ab"}
    for seed, path in enumerate(weights.values(), 1):
        torch.save(torch.randn(48, 16, generator=torch.Generator().manual_seed(seed)) / 7, path)
    digest = {name: ev.file_sha256(path) for name, path in weights.items()}
    stats, out, copy = tmp_path / "stats_a.npz", tmp_path / "fid.json", tmp_path / "copy.npz"

    def fid(reference, weights_path=weights["a"], **kwargs):
        run = {**RUN, "metrics": ["fid"], "weights_path": weights_path, **kwargs}
        return ev.evaluate(sets["shift16"], str(reference), **run)

    direct = fid(sets["a_dir"], save_ref_stats=str(stats))
    with np.load(stats) as data:
        assert str(data["weights_sha256"][()]) == digest["a"]
    same = fid(stats)
    assert same["fid"] == pytest.approx(direct["fid"], rel=1e-9) and same["reference_stats"] == "precomputed"

    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the reference statistics were checked")

    monkeypatch.setattr(ev, "extract", extract)
    with pytest.raises(ValueError) as refused:
        fid(stats, weights["b"], out=str(out))
    message = str(refused.value)
    assert "\n" not in message and str(stats) in message and "Recompute" in message
    assert f"weights_sha256 '{digest['a']}' there, '{digest['b']}' in this run" in message
    # no weights file at all (the extractor's own), another extractor's name: refused as well
    with pytest.raises(ValueError, match=rf"weights_sha256 '{digest['a']}' there, \(no weights file\) in"):
        fid(stats, None)
    with pytest.raises(ValueError, match=rf"feature_extractor '{TINY}' there, '{TINY_TWIN}' in this run"):
        fid(stats, feature_extractor=TINY_TWIN)
    # a copy of them (--save-ref-stats from them) carries their record: refused the same
    with pytest.raises(ValueError, match="come from other features"):
        fid(stats, weights["b"], save_ref_stats=str(copy))
    assert not out.exists() and not copy.exists()
    # the CLI: one line, exit status 2
    argv = [
        sets["shift16"],
        "--ref",
        str(stats),
        "--feature-extractor",
        TINY,
        "--quiet",
        "--extractor-weights",
    ]
    with pytest.raises(SystemExit) as exit_info:
        ev.main([*argv, weights["b"]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and digest["b"] in err

    # a damaged record cannot vouch for anything: refused, not used unchecked
    monkeypatch.undo()
    with np.load(stats) as data:
        np.savez(copy, mu=data["mu"], sigma=data["sigma"], feature_extractor=data["feature_extractor"])
    with pytest.raises(ValueError, match=r"copy.npz has a damaged feature record \(feature_layer missing"):
        fid(copy)


def test_reference_statistics_without_a_record_are_used_as_before(sets, tmp_path, capsys):
    """ADM's reference batches, and statistics written before the record existed: no record,
    so nothing to check; used as they are, saying so (verbose), and a copy claims nothing."""
    stats, old, copy = tmp_path / "stats.npz", tmp_path / "old.npz", tmp_path / "copy.npz"
    direct = ev.evaluate(sets["shift16"], sets["a_dir"], metrics=["fid"], save_ref_stats=str(stats), **RUN)
    with np.load(stats) as data:
        np.savez(old, mu=data["mu"], sigma=data["sigma"])
    capsys.readouterr()
    quiet = ev.evaluate(sets["shift16"], str(old), metrics=["fid"], save_ref_stats=str(copy), **RUN)
    assert quiet["fid"] == pytest.approx(direct["fid"], rel=1e-9) and capsys.readouterr().err == ""
    with np.load(copy) as data:
        assert set(data.files) == {"mu", "sigma"}
    told = ev.evaluate(sets["shift16"], str(old), metrics=["fid"], **{**RUN, "verbose": True})
    assert told["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert f"reference statistics {old} record no feature extractor" in capsys.readouterr().err


def test_gray_images_and_sample_output_dirs(tmp_path):
    gray = as_uint8(image_set(n=20)[..., 0])
    rgb = np.repeat(gray[..., None], 3, -1)
    write_npz(tmp_path / "gray.npz", gray)  # (N, H, W): MNIST-like
    write_dir(tmp_path / "gray_dir", gray)
    out = tmp_path / "sampled"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    write_npz(out / "samples.npz", rgb)
    for source in (tmp_path / "gray.npz", tmp_path / "gray_dir", out):
        assert abs(ev.evaluate(str(source), str(tmp_path / "gray.npz"), metrics=["fid"], **RUN)["fid"]) < 1e-6


def test_weights_path_goes_to_the_extractor(sets, tmp_path):
    torch.save(torch.zeros(48, 16), tmp_path / "zero.pt")
    far = ev.evaluate(sets["shift32"], sets["a_dir"], metrics=["fid"], **RUN)["fid"]
    zero = ev.evaluate(
        sets["shift32"], sets["a_dir"], metrics=["fid"], weights_path=str(tmp_path / "zero.pt"), **RUN
    )
    assert far > 1e-2 and abs(zero["fid"]) < 1e-9


def test_missing_inception_weights_say_what_and_where(sets, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ev.WEIGHTS_ENV, raising=False)
    out = tmp_path / "fid.json"
    with pytest.raises(FileNotFoundError) as err:
        ev.evaluate(sets["a_npz"], sets["a_dir"], metrics=["fid"], device="cpu", out=str(out), verbose=False)
    message = str(err.value)
    for needed in (ev.INCEPTION_FILE, "--inception-weights", ev.WEIGHTS_ENV, "never downloads", "torch_home"):
        assert needed in message
    monkeypatch.setenv(ev.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=rf"given by \${ev.WEIGHTS_ENV} not found: .*nope.pth"):
        ev.evaluate(sets["a_npz"], sets["a_dir"], metrics=["fid"], device="cpu", out=str(out), verbose=False)
    assert not out.exists()
    # the CLI turns it into a one-line error and exit status 2
    with pytest.raises(SystemExit) as exit_info:
        ev.main([sets["a_npz"], "--ref", sets["a_dir"], "--out", str(out), "--quiet"])
    assert exit_info.value.code == 2 and not out.exists()


def test_bad_reference_folders_write_nothing(sets, tmp_path):
    out = tmp_path / "fid.json"
    ref = tmp_path / "ref"
    write_dir(ref, as_uint8(image_set(n=8)))
    (ref / "labels.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"not images .*labels.txt"):
        ev.evaluate(sets["a_npz"], str(ref), out=str(out), **RUN)
    os.unlink(ref / "labels.txt")
    # a class-folder tree of photos (the trainer's input) has many sizes: one line naming two,
    # whether they fall in one extractor batch (np.stack failed unnamed) or in two
    write_dir(ref / "big", as_uint8(image_set(n=1, size=24)))
    for batch_size in (16, 4):
        with pytest.raises(ValueError, match=r"different sizes .*0000.png is 16x16, .*big/0000.png 24x24"):
            ev.evaluate(sets["a_npz"], str(ref), out=str(out), **{**RUN, "batch_size": batch_size})
    shutil.rmtree(ref / "big")
    (ref / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=r"broken.png is not a readable image"):
        ev.evaluate(sets["a_npz"], str(ref), out=str(out), **RUN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        ev.evaluate(sets["a_npz"], str(tmp_path / "empty"), out=str(out), **RUN)
    np.savez(tmp_path / "floats.npz", arr_0=np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="arr_0 must be uint8"):
        ev.evaluate(str(tmp_path / "floats.npz"), sets["a_dir"], out=str(out), **RUN)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npz"):
        ev.evaluate(str(tmp_path / "junk.npz"), sets["a_dir"], out=str(out), **RUN)
    with pytest.raises(FileNotFoundError, match="not found"):
        ev.evaluate(str(tmp_path / "missing"), sets["a_dir"], out=str(out), **RUN)
    with pytest.raises(ValueError, match=r"compare against a reference: pass reference \(--ref\)"):
        ev.evaluate(sets["a_npz"], None, metrics=["fid"], out=str(out), **RUN)
    with pytest.raises(ValueError, match="subset of"):
        ev.evaluate(sets["a_npz"], sets["a_dir"], metrics=["fidd"], out=str(out), **RUN)
    assert not out.exists()
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".")) == []


def test_outputs_never_replace_inputs_or_foreign_files_and_are_checked_first(sets, tmp_path, monkeypatch):
    """The JSON and the statistics are written after all the feature extraction: a path that
    cannot take them is refused before it, and neither may land on an input or on a file that
    is not one evaluate writes (the samples becoming a report, the reference images lost)."""
    stats, user_json, user_npz = tmp_path / "stats.npz", tmp_path / "notes.json", tmp_path / "mine.npz"
    ev.evaluate(sets["shift8"], sets["a_npz"], metrics=["fid"], save_ref_stats=str(stats), **RUN)
    user_json.write_text('{"todo": "my own notes"}')
    np.savez(user_npz, mu=np.zeros(3), sigma=np.eye(3), labels=np.arange(3))
    # the record's members and one more: not ours either
    with np.load(stats) as data:
        np.savez(tmp_path / "more.npz", **{k: data[k] for k in data.files}, labels=np.arange(3))
    (tmp_path / "folder").mkdir()
    files = [sets["shift8"], sets["a_npz"], stats, user_json, user_npz, tmp_path / "more.npz"]
    before = {str(f): open(f, "rb").read() for f in files}

    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the outputs were checked")

    monkeypatch.setattr(ev, "extract", extract)
    samples, ref = sets["shift8"], sets["a_npz"]
    for reference, kwargs, message in (
        (ref, dict(out=samples), r"--out .*s8.npz is the samples"),
        (ref, dict(save_ref_stats=ref), r"--save-ref-stats .*a.npz is the reference"),
        (str(stats), dict(save_ref_stats=str(stats)), r"--save-ref-stats .*stats.npz is the reference"),
        (ref, dict(out=str(tmp_path / "folder")), r"--out .*folder is a directory"),
        (ref, dict(save_ref_stats=str(tmp_path / "folder")), r"--save-ref-stats .*folder is a directory"),
        (ref, dict(save_ref_stats=str(user_json / "s.npz")), r"--save-ref-stats .*notes.json is a file"),
        (ref, dict(out=str(user_json)), r"--out .*notes.json exists and is not a file meanflow.evaluate"),
        (ref, dict(save_ref_stats=str(user_npz)), r"--save-ref-stats .*mine.npz exists and is not"),
        (ref, dict(save_ref_stats=str(tmp_path / "more.npz")), r"--save-ref-stats .*more.npz exists and is"),
        (ref, dict(out=str(stats), save_ref_stats=str(stats)), "--out and --save-ref-stats are both"),
        (ref, dict(out=str(tmp_path / "r.json"), save_ref_stats=str(tmp_path / "r.json")), "are both"),
    ):
        with pytest.raises(ValueError, match=message):
            ev.evaluate(samples, reference, metrics=["fid"], **kwargs, **RUN)
    with pytest.raises(SystemExit) as exit_info:
        ev.main([samples, "--ref", ref, "--save-ref-stats", ref, "--feature-extractor", TINY, "--quiet"])
    assert exit_info.value.code == 2
    assert {str(f): open(f, "rb").read() for f in files} == before
    assert not (tmp_path / "r.json").exists()

    # its own earlier outputs, and empty files (mktemp), are written over
    monkeypatch.undo()
    report = tmp_path / "report.json"
    for _ in range(2):
        ev.evaluate(samples, ref, metrics=["fid"], out=str(report), save_ref_stats=str(stats), **RUN)
    user_json.write_text("")
    ev.evaluate(samples, ref, metrics=["fid"], out=str(user_json), **RUN)
    assert json.loads(report.read_text()) == json.loads(user_json.read_text())
    # and statistics in the format before the record: replaced by ones with it
    old = tmp_path / "old_stats.npz"
    np.savez(old, mu=np.zeros(16), sigma=np.eye(16))
    ev.evaluate(samples, ref, metrics=["fid"], save_ref_stats=str(old), **RUN)
    with np.load(old) as data:
        assert "weights_sha256" in data.files and data["mu"].any()


def test_cli_writes_json(sets, tmp_path, capsys):
    out = tmp_path / "m.json"
    ev.main([sets["shift8"], "--ref", sets["a_dir"], "--metrics", "fid,isc", "--feature-extractor", TINY])
    ev.main(
        [sets["shift8"], "--ref", sets["a_dir"], "--out", str(out), "--feature-extractor", TINY, "--quiet"]
    )
    printed = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert printed["fid"] == pytest.approx(json.loads(out.read_text())["fid"])


def test_cli_under_torchrun_is_refused_before_any_work(sets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "m.json"
    with pytest.raises(SystemExit) as stop:
        ev.main([sets["shift8"], "--ref", sets["a_dir"], "--out", str(out), "--feature-extractor", TINY])
    assert stop.value.code == 2 and "not torchrun" in capsys.readouterr().err
    assert not out.exists()


def test_npz_members_are_memory_mapped(tmp_path):
    array = as_uint8(image_set(n=5))
    np.savez(tmp_path / "plain.npz", arr_0=array, arr_1=np.arange(5))
    np.savez_compressed(tmp_path / "small.npz", arr_0=array)
    load = evaluate_inputs.load_npz_member
    plain = load(str(tmp_path / "plain.npz"), "arr_0")
    assert isinstance(plain, np.memmap) and np.array_equal(plain, array)
    assert np.array_equal(load(str(tmp_path / "small.npz"), "arr_0"), array)
    assert np.array_equal(load(str(tmp_path / "plain.npz"), "arr_1"), np.arange(5))


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file for torch-fidelity's Inception-v3 with random values (the real file is a
    download): the architecture and the weights-path plumbing are the real ones."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as inc

    torch.manual_seed(0)
    with (
        mock.patch.object(inc, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        net = inc.FeatureExtractorInceptionV3(ev.INCEPTION, ["2048"])
    path = tmp_path_factory.mktemp("inception") / ev.INCEPTION_FILE
    torch.save(net.state_dict(), path)
    return str(path)


def test_real_inception_path_with_a_local_weights_file(tmp_path, random_inception_weights, monkeypatch):
    """IS (logits) and KID (the 2048-d pool features FID also uses); FID's 2048x2048 eigvals
    are left to the tiny extractor's tests to keep this fast."""
    write_npz(tmp_path / "a.npz", as_uint8(image_set(n=2)))
    write_npz(tmp_path / "b.npz", as_uint8(image_set(n=2, seed=3)))
    monkeypatch.setenv(ev.WEIGHTS_ENV, random_inception_weights)
    digest = ev.file_sha256(random_inception_weights)  # stands in for the published file's
    published = ev.PUBLISHED_WEIGHTS[ev.INCEPTION]._replace(sha256=digest)
    monkeypatch.setitem(ev.PUBLISHED_WEIGHTS, ev.INCEPTION, published)
    report = ev.evaluate(
        str(tmp_path / "b.npz"), str(tmp_path / "a.npz"), metrics=["isc", "kid"], device="cpu", verbose=False
    )
    assert report["feature_extractor"] == ev.INCEPTION and report["num_reference"] == 2
    assert report["weights_sha256"] == digest and report["weights_verified"] is True
    assert report["inception_score_mean"] >= 1.0 - 1e-9  # ~1: random logits are near uniform
    assert np.isfinite(report["kid_mean"])


@pytest.mark.gpu
def test_gpu_features_match_cpu(sets):
    cpu = ev.evaluate(sets["shift16"], sets["a_dir"], metrics=["fid", "prc"], **RUN)
    gpu = ev.evaluate(sets["shift16"], sets["a_dir"], metrics=["fid", "prc"], **{**RUN, "device": "cuda"})
    assert gpu["fid"] == pytest.approx(cpu["fid"], rel=1e-3)
    assert gpu["precision"] == cpu["precision"] and gpu["recall"] == cpu["recall"]


def test_precision_recall_and_inception_score_values(tmp_path):
    """Precision is the share of samples inside some reference image's 3-NN ball, recall the
    share of references inside some sample's (Kynkaenniemi et al. 2019): a collapsed set of
    near-copies of one reference image is all precision and no recall, never the other way
    round. The Inception Score against its formula, exp(E KL(p(y|x) || p(y))), one split and
    the ``isc_splits`` asked for."""
    ref = as_uint8(image_set())
    rng = np.random.default_rng(3)
    collapsed = as_uint8(ref[5].astype(float) + rng.uniform(-2, 2, size=ref.shape))  # 48 near-copies
    ref_npz, col_npz = write_npz(tmp_path / "ref.npz", ref), write_npz(tmp_path / "col.npz", collapsed)
    report = ev.evaluate(col_npz, ref_npz, metrics=["prc"], **RUN)
    assert report["precision"] == 1.0 and report["recall"] < 1.5 / 48, report  # at most ref[5]

    # The 3-NN balls by hand on a set where neither share is 0 or 1.
    shifted = as_uint8(image_set() + 40)
    report = ev.evaluate(write_npz(tmp_path / "s.npz", shifted), ref_npz, metrics=["prc"], **RUN)
    fake, real = tiny_features(shifted).double(), tiny_features(ref).double()

    def covered(points, centres):
        radius = torch.cdist(centres, centres).sort(dim=1).values[:, 3]  # index 0 is the centre itself
        return (torch.cdist(points, centres) <= radius).any(dim=1).double().mean().item()

    want = {"precision": covered(fake, real), "recall": covered(real, fake)}
    assert 0 < want["precision"] < 1 and 0 < want["recall"] < 1 and want["precision"] != want["recall"]
    # every distance is >= 0.5% away from its ball's radius: float32 gives the same counts
    assert {k: report[k] for k in want} == pytest.approx(want, abs=1e-6), (report, want)

    logits = tiny_features(shifted, "logits").double()
    p = logits.softmax(1)
    kl = (p * (p.log() - p.mean(0, keepdim=True).log())).sum(1)
    one = ev.evaluate(str(tmp_path / "s.npz"), metrics=["isc"], isc_splits=1, **RUN)
    assert one["inception_score_mean"] == pytest.approx(kl.mean().exp().item(), rel=1e-6)
    assert one["inception_score_std"] == 0
    from torch_fidelity.metric_isc import isc_features_to_metric

    split = isc_features_to_metric(logits, splits=6)
    six = ev.evaluate(str(tmp_path / "s.npz"), metrics=["isc"], isc_splits=6, **RUN)
    assert six["inception_score_mean"] == pytest.approx(split["inception_score_mean"], rel=1e-6)
    assert six["inception_score_std"] == pytest.approx(split["inception_score_std"], rel=1e-6)
    assert six["inception_score_mean"] != pytest.approx(one["inception_score_mean"], rel=1e-3)


def test_an_unfinished_generate_output_is_refused(tmp_path):
    out = tmp_path / "sampled"
    (out / "images").mkdir(parents=True)
    (out / "manifest.json").write_text('{"ckpt": "last.pt", "num": 40, "complete": false}')
    write_dir(out / "images", as_uint8(image_set(n=20)))  # half the set, as a run still going leaves it
    with pytest.raises(ValueError, match=r"sampled is an unfinished meanflow.generate output.*run the same"):
        ev.evaluate(str(out), str(out), metrics=["fid"], **RUN)


# ------------------------------------------------------------- --ref-size


@pytest.fixture
def photo_tree(tmp_path):
    """A class-folder tree of photos of many sizes and the hand-built .npz of its 16x16 crops."""
    return adm_tree(tmp_path, 16)


def test_ref_size_reads_a_class_folder_tree_as_the_adm_crops(sets, photo_tree, tmp_path, monkeypatch):
    """--ref-size 16 turns the tree (refused without it: many sizes) into the reference the
    hand-built .npz of the same crops is: the same FID, precision/recall and KID; its saved
    statistics record the crop and give that FID again."""
    tree, adm_npz, n = photo_tree
    with pytest.raises(ValueError, match=r"train holds images of \d+x\d+ .*--ref-size 16"):
        ev.evaluate(sets["shift16"], tree, metrics=["fid"], **RUN)
    metrics, stats = ["fid", "prc", "kid"], tmp_path / "ref_stats.npz"
    by_hand = ev.evaluate(sets["shift16"], adm_npz, metrics=metrics, **RUN)
    cropped = ev.evaluate(
        sets["shift16"], tree, metrics=metrics, ref_size=16, save_ref_stats=str(stats), **RUN
    )
    assert cropped["num_reference"] == by_hand["num_reference"] == n and cropped["ref_size"] == 16
    assert by_hand["ref_size"] is None and cropped["fid"] > 1e-3
    for key in ("fid", "precision", "recall", "kid_mean"):
        assert cropped[key] == pytest.approx(by_hand[key], rel=1e-9, abs=1e-12), key
    with np.load(stats) as data:
        assert str(data["crop_size"][()]) == "16" and data["crop_size"].dtype.kind == "U"
        assert set(data.files) == {"mu", "sigma", "feature_extractor", "feature_layer"} | {
            "weights_sha256",
            "crop_size",
            "torch_fidelity",
            "num_images",
        }
        assert str(data["num_images"][()]) == str(n)

    # saved once, then reused: the tree is not read again
    def extract(images, *args, **kwargs):
        assert images.role == "samples", "the reference was read again"
        return extract_all(images, *args, **kwargs)

    extract_all = ev.extract
    monkeypatch.setattr(ev, "extract", extract)
    again = ev.evaluate(sets["shift16"], str(stats), metrics=["fid"], **RUN)
    assert again["fid"] == pytest.approx(by_hand["fid"], rel=1e-9) and again["ref_size"] == 16
    assert again["reference_stats"] == "precomputed"
    # a copy of them keeps the crop, and --save-ref-stats replaces its own file with the crop
    copy = tmp_path / "copy.npz"
    ev.evaluate(sets["shift16"], str(stats), metrics=["fid"], save_ref_stats=str(copy), **RUN)
    with np.load(copy) as data:
        assert str(data["crop_size"][()]) == "16"
    assert ev.reference_stats.is_stats(str(stats)) and ev.reference_stats.is_stats(str(copy))


def test_ref_size_leaves_images_of_that_size_unchanged(sets, tmp_path):
    """The ADM crop of an N x N image is the image itself: a folder already of the samples'
    size scores the same with --ref-size as without."""
    files = evaluate_inputs.list_images(sets["a_dir"], "reference")
    for path in files[:8]:
        assert np.array_equal(evaluate_inputs.read_image(path, 16), evaluate_inputs.read_image(path))
    plain = ev.evaluate(sets["shift8"], sets["a_dir"], metrics=["fid", "prc"], **RUN)
    cropped = ev.evaluate(sets["shift8"], sets["a_dir"], metrics=["fid", "prc"], ref_size=16, **RUN)
    assert cropped["fid"] == plain["fid"] and cropped["precision"] == plain["precision"]
    # gray images too: converted to RGB, then cropped
    gray = write_dir(tmp_path / "gray", as_uint8(image_set(n=6)[..., 0]))
    for path in evaluate_inputs.list_images(gray, "reference"):
        assert np.array_equal(evaluate_inputs.read_image(path, 16), evaluate_inputs.read_image(path))


def test_crop_size_and_samples_size_must_match(sets, photo_tree, tmp_path, monkeypatch, capsys):
    """64x64 samples against 256x256 crops: the extractor resizes both, so FID would be a
    number; refused in one line naming both sizes, before any features are extracted, whether
    the crop is asked for now or recorded by saved statistics."""
    tree, _, _ = photo_tree
    stats, out = tmp_path / "ref_stats.npz", tmp_path / "fid.json"
    ev.evaluate(sets["shift16"], tree, metrics=["fid"], ref_size=16, save_ref_stats=str(stats), **RUN)
    small = write_npz(tmp_path / "small.npz", as_uint8(image_set(n=8, size=8)))
    wide = write_npz(tmp_path / "wide.npz", as_uint8(image_set(n=8, size=16)[:, :8]))

    def extract(*args, **kwargs):
        raise AssertionError("features extracted before the sizes were checked")

    monkeypatch.setattr(ev, "extract", extract)
    with pytest.raises(ValueError) as refused:
        ev.evaluate(small, tree, metrics=["fid"], ref_size=16, out=str(out), **RUN)
    message = str(refused.value)
    assert "samples are 8x8" in message and "16x16 center crops (--ref-size 16)" in message
    assert "give --ref-size 8" in message and "\n" not in message
    with pytest.raises(ValueError, match=rf"samples are 8x8 .*statistics {stats} .* 16x16 center crops"):
        ev.evaluate(small, str(stats), metrics=["fid"], out=str(out), **RUN)
    with pytest.raises(ValueError, match=r"samples are 16x8 .*center crop is square"):
        ev.evaluate(wide, tree, metrics=["fid"], ref_size=16, **RUN)
    # a samples folder is measured by its first image (the rest must match it when read)
    folder = write_dir(tmp_path / "small_dir", as_uint8(image_set(n=4, size=8)))
    with pytest.raises(ValueError, match=r"samples are 8x8 "):
        ev.evaluate(folder, tree, metrics=["kid"], ref_size=16, **RUN)
    quick = ["--feature-extractor", TINY, "--quiet", "--out", str(out)]
    err = cli_error(capsys, [small, "--ref", str(stats), *quick])
    assert "8x8" in err and "16x16" in err and str(stats) in err
    err = cli_error(capsys, [small, "--ref", tree, "--ref-size", "16", *quick])
    assert "8x8" in err and "--ref-size 16" in err
    assert not out.exists()
    # the Inception Score alone never meets the reference: nothing to refuse
    monkeypatch.undo()
    assert "inception_score_mean" in ev.evaluate(small, str(stats), metrics=["isc"], **RUN)


def test_bad_ref_size_values_are_refused(sets, photo_tree, tmp_path, capsys):
    """Not an int, < 1, without a reference, or with a reference it cannot apply to (an .npz
    of images or statistics, a meanflow.generate output): refused naming --ref-size (a bad
    number while the command line is parsed, in argparse's words). The
    samples are never cropped: a mixed-size samples folder is refused as before."""
    tree, adm_npz, _ = photo_tree
    stats, out = tmp_path / "ref_stats.npz", tmp_path / "fid.json"
    ev.evaluate(sets["shift16"], adm_npz, metrics=["fid"], save_ref_stats=str(stats), **RUN)
    generated = tmp_path / "generated"
    generated.mkdir()
    (generated / "manifest.json").write_text("{}")
    write_npz(generated / "samples.npz", as_uint8(image_set(n=8)))
    quick = [sets["shift16"], "--feature-extractor", TINY, "--quiet", "--out", str(out)]
    for value, shown in (("0", "0"), ("-3", "-3"), ("abc", "'abc'"), ("1.5", "'1.5'"), ("", "''")):
        with pytest.raises(SystemExit) as exit_info:  # argparse's usage line and error
            ev.main([*quick, "--ref", tree, "--ref-size", value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err
        assert err.endswith(f"error: argument --ref-size: must be an integer >= 1, got {shown}\n"), err
    for bad in (0, 2.0, True, "16"):
        with pytest.raises(ValueError, match=r"^ref_size \(--ref-size\) must be an int >= 1"):
            ev.evaluate(sets["shift16"], tree, metrics=["fid"], ref_size=bad, **RUN)
    for reference in (adm_npz, str(stats), str(generated)):
        err = cli_error(capsys, [*quick, "--ref", reference, "--ref-size", "16"])
        assert f"--ref-size 16 center-crops the images of a folder; reference {reference} is an .npz" in err
    err = cli_error(capsys, [*quick, "--ref-size", "16"])
    assert "ref_size (--ref-size) center-crops the reference's images: pass a reference folder (--ref)" in err
    assert not out.exists()
    mixed = write_dir(tmp_path / "mixed", as_uint8(image_set(n=8)))
    write_dir(tmp_path / "mixed" / "big", as_uint8(image_set(n=1, size=24)))
    with pytest.raises(ValueError, match=r"samples folder .*mixed holds images of different sizes"):
        ev.evaluate(mixed, tree, metrics=["fid"], ref_size=16, **RUN)


def test_a_damaged_crop_record_is_refused(sets, photo_tree, tmp_path):
    tree, _, _ = photo_tree
    stats, damaged = tmp_path / "ref_stats.npz", tmp_path / "damaged.npz"
    ev.evaluate(sets["shift16"], tree, metrics=["fid"], ref_size=16, save_ref_stats=str(stats), **RUN)
    with np.load(stats) as data:
        members = {k: data[k] for k in data.files}
    for value in (np.str_("sixteen"), np.str_("0"), np.int64(16)):
        np.savez(damaged, **{**members, "crop_size": value})
        with pytest.raises(ValueError, match=r"damaged.npz has a damaged feature record \(crop_size"):
            ev.evaluate(sets["shift16"], str(damaged), metrics=["fid"], **RUN)
    # the crop alone, without the record it belongs to, vouches for nothing either
    np.savez(damaged, mu=members["mu"], sigma=members["sigma"], crop_size=members["crop_size"])
    with pytest.raises(ValueError, match=r"damaged feature record \(feature_extractor missing"):
        ev.evaluate(sets["shift16"], str(damaged), metrics=["fid"], **RUN)
