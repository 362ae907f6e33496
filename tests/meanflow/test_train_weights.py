"""Which weights a run makes and which it shows: the initial weights are a function of
``--seed`` alone (not of whatever drew from torch's global generator before), and the sample
grids and evaluations come from the first EMA, not from the raw weights."""

import pytest
import torch
from test_train import _load, tiny_config

from meanflow import train


class _Built(Exception):
    """Raised by the spied build_model once it has the initial weights: nothing more to run."""


@pytest.fixture
def initial_weights(monkeypatch):
    """``initial_weights(config, global_seed)``: the weights ``train.main(config)`` builds,
    after torch's global generator was seeded with ``global_seed`` (another program's draws
    before the run)."""
    build_model, built = train.build_model, {}

    def spied(*args, **kwargs):
        built["weights"] = {k: v.clone() for k, v in build_model(*args, **kwargs).state_dict().items()}
        raise _Built

    monkeypatch.setattr(train, "build_model", spied)

    def run(config, global_seed):
        torch.manual_seed(global_seed)
        with pytest.raises(_Built):
            train.main(config)
        return built.pop("weights")

    return run


def test_initial_weights_are_the_seeds(tmp_path, fake_mnist, initial_weights):
    config = tiny_config(tmp_path / "run", fake_mnist)
    first, again = (initial_weights(config, g) for g in (123, 456))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = initial_weights(tiny_config(tmp_path / "run", fake_mnist, seed=1), 123)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_grids_and_evaluations_use_the_first_ema(tmp_path, fake_mnist, monkeypatch):
    """The run ends with samples_and_eval on its sampling model: that is ``ema[0]`` of the last
    checkpoint, which after three steps differs from the raw weights."""
    samples_and_eval, seen = train.samples_and_eval, []

    def spied(config, step, model, *args, **kwargs):
        seen.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return samples_and_eval(config, step, model, *args, **kwargs)

    monkeypatch.setattr(train, "samples_and_eval", spied)
    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=3, ema_decays=[0.5, 0.99]))
    ckpt = _load(tmp_path / "run" / "last.pt")
    step, weights = seen[-1]
    assert step == ckpt["step"] == 3
    assert all(torch.equal(weights[k], v) for k, v in ckpt["ema"][0].items())
    assert any(not torch.equal(weights[k], v) for k, v in ckpt["model"].items())
