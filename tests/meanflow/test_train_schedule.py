"""What the optimizer sees at each trainer step: the warm-up learning rate and its decay
(``lr_schedule``), gradients clipped to ``grad_clip``, and a fresh draw of times and noise
(seeded per step, never repeated)."""

import json

import pytest
import torch
from test_train import tiny_config

from meanflow import train
from meanflow.loss import MeanFlowLoss

GRAD_CLIP = 1e-3  # far below the tiny model's gradient norm: every step is clipped


@pytest.fixture
def spy(monkeypatch):
    """Records, per optimizer step, the learning rate and the global norm of the gradients it
    is about to apply, and each step's drawn times ``t``."""
    seen = {"lr": [], "grad_norm": [], "t": []}

    def record_step(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen["grad_norm"].append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        seen["lr"].append(optimizer.param_groups[0]["lr"])

    build_optimizer, sample_noise = train.build_optimizer, MeanFlowLoss.sample_noise

    def spied_optimizer(*args, **kwargs):
        optimizer = build_optimizer(*args, **kwargs)
        optimizer.register_step_pre_hook(record_step)
        return optimizer

    def spied_noise(self, *args, **kwargs):
        noise = sample_noise(self, *args, **kwargs)
        seen["t"].append(noise["t"].clone())
        return noise

    monkeypatch.setattr(train, "build_optimizer", spied_optimizer)
    monkeypatch.setattr(MeanFlowLoss, "sample_noise", spied_noise)
    return seen


def test_warmup_clipping_and_fresh_draws(tmp_path, fake_mnist, spy):
    config = tiny_config(tmp_path / "run", fake_mnist, steps=3, warmup_steps=2, grad_clip=GRAD_CLIP)
    train.main(config)
    # lr * min(1, (step + 1) / warmup_steps): no step at lr 0.
    assert spy["lr"] == pytest.approx([config.lr / 2, config.lr, config.lr], rel=1e-12)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 10 * GRAD_CLIP for r in logged if "grad_norm" in r)  # before clipping
    assert len(spy["grad_norm"]) == 3 and max(spy["grad_norm"]) <= GRAD_CLIP * (1 + 1e-4)
    draws = spy["t"]
    assert len(draws) == 3 and not any(torch.equal(a, b) for a, b in zip(draws, draws[1:]))


@pytest.mark.parametrize(
    "schedule, factors",
    [
        # 2 warmup steps, then 3 steps of decay: its fraction done is 0, 1/3, 2/3.
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.5, 1.0, 1.0, 2 / 3, 1 / 3]),
        ("cosine", [0.5, 1.0, 1.0, 0.75, 0.25]),
    ],
)
def test_lr_schedule_decays_after_the_warmup(tmp_path, fake_mnist, spy, schedule, factors):
    config = tiny_config(tmp_path / "run", fake_mnist, steps=5, warmup_steps=2, lr_schedule=schedule)
    train.main(config)
    assert spy["lr"] == pytest.approx([config.lr * f for f in factors], rel=1e-12)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if "lr" in r] == pytest.approx(spy["lr"], rel=1e-12)
