"""``meanflow/train_state.py`` without a training run: random states saved and restored,
checkpoints written, checked and restored into small stand-in models, and the resume checks
on the files of an out_dir."""

import dataclasses
import os
import random

import numpy as np
import pytest
import torch

from meanflow import train_state
from meanflow.config import TrainConfig

CPU = torch.device("cpu")


def _draws():
    return torch.randn(3).tolist(), np.random.standard_normal(), np.random.rand(), random.random()


@pytest.fixture
def own_rngs():
    """The process's generators are left as they were."""
    saved = train_state.rng_state(CPU)
    yield
    train_state.set_rng_state(saved, CPU)


def test_random_states_come_back_exactly(own_rngs):
    """torch, python and numpy, including numpy's cached second gaussian (an odd number of
    normal draws leaves one)."""
    np.random.standard_normal()
    saved = train_state.rng_state(CPU)
    first = _draws()
    train_state.set_rng_state(saved, CPU)
    assert _draws() == first


def _after_restore(rngs, step, rank, world):
    train_state.restore_rngs(rngs, 0, step, rank, world, CPU)
    return _draws()


def test_fresh_streams_depend_on_step_and_rank_only(own_rngs):
    """Under another world size each rank's streams come from (seed, step, rank): whatever
    the process drew before, whichever world size wrote the checkpoint, and not the same at
    another step."""
    one = [train_state.rng_state(CPU)]
    four = [train_state.rng_state(CPU) for _ in range(4)]
    np.random.seed(1)
    random.seed(1)
    at_5 = _after_restore(one, 5, 1, 2)
    np.random.seed(2)
    random.seed(2)
    assert _after_restore(one, 5, 1, 2) == at_5
    assert _after_restore(four, 5, 1, 2) == at_5  # 4 ranks' states resumed by 2: fresh ones
    assert _after_restore(one, 6, 1, 2) != at_5
    assert _after_restore(one, 5, 0, 2) != at_5


# ------------------------------------------------------------------------ checkpoints


@dataclasses.dataclass
class Shape:
    width: int = 2


class Model(torch.nn.Linear):
    def __init__(self, width=2):
        super().__init__(width, width)
        self.config = Shape(width)


class Loader:
    """A data loader's resume interface; ``changes`` is what :meth:`data_changes` reports."""

    class_names = ["cat", "dog"]
    data_identity = {"hash": "abc"}

    def __init__(self, state=None, changes=()):
        self.state, self.changes = state, list(changes)

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)

    def data_changes(self, recorded):
        return self.changes


def _run(tmp_path, decays=(0.9, 0.99), seed=0):
    torch.manual_seed(seed)
    config = TrainConfig(out_dir=str(tmp_path), ema_decays=list(decays), keep_every=0)
    model = Model()
    emas = [Model() for _ in decays]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return config, model, emas, opt


def _save(tmp_path, step=3, **kwargs):
    config, model, emas, opt = _run(tmp_path, **kwargs)
    train_state.save_checkpoint(config, step, model, emas, opt, Loader({"epoch": 1}), 0, 1, CPU, None)
    return config, model, emas, opt


def _load(path):
    return torch.load(path, weights_only=True)


def test_a_checkpoint_restores_weights_emas_optimizer_loader_and_step(tmp_path):
    config, model, emas, opt = _save(tmp_path)
    ckpt = _load(tmp_path / "last.pt")
    assert ckpt["ema_decays"] == [0.9, 0.99] and ckpt["classes"] == ["cat", "dog"]
    assert ckpt["data_identity"] == {"hash": "abc"}
    _, model2, emas2, opt2 = _run(tmp_path / "other", seed=1)
    loader = Loader()
    step = train_state.restore(ckpt, "last.pt", model2, emas2, opt2, loader, 0, 1, CPU, 0)
    assert step == 3 and loader.state == {"epoch": 1}
    for a, b in zip((model, *emas), (model2, *emas2)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_a_restore_that_does_not_fit_names_the_file(tmp_path):
    _save(tmp_path)
    ckpt = _load(tmp_path / "last.pt")
    _, model, emas, opt = _run(tmp_path / "other", decays=(0.9,))
    with pytest.raises(ValueError, match="'last.pt' has 2 EMAs, this run 1 ema_decays"):
        train_state.restore(ckpt, "last.pt", model, emas, opt, Loader(), 0, 1, CPU, 0)
    _, model, emas, opt = _run(tmp_path / "other")
    bad = {**ckpt, "data": {}, "data_ranks": [{}]}

    class Strict(Loader):
        def load_state_dict(self, state):
            state["epoch"]

    with pytest.raises(ValueError, match="'last.pt' does not fit this run: missing key 'epoch'"):
        train_state.restore(bad, "last.pt", model, emas, opt, Strict(), 0, 1, CPU, 0)


def test_nan_in_an_ema_never_replaces_the_last_good_checkpoint(tmp_path):
    config, model, emas, opt = _run(tmp_path)
    with torch.no_grad():
        emas[1].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged"):
        train_state.save_checkpoint(config, 3, model, emas, opt, Loader({}), 0, 1, CPU, None)
    assert not (tmp_path / "last.pt").exists()


def test_a_checkpoint_missing_a_key_or_of_another_model_is_refused(tmp_path):
    config, *_ = _save(tmp_path)
    ckpt = _load(tmp_path / "last.pt")
    path = str(tmp_path / "no-opt.pt")
    torch.save({k: v for k, v in ckpt.items() if k != "opt"}, path)
    with pytest.raises(ValueError, match="lacks the key.s. opt: it cannot resume a run$"):
        train_state.load_checkpoint(path, Model(), CPU, config)
    torch.save(train_state.kept_state(ckpt), path)
    with pytest.raises(ValueError, match="unless keep_full is set"):
        train_state.load_checkpoint(path, Model(), CPU, config)
    with pytest.raises(ValueError, match="is for another model .width: checkpoint 2 vs this run 4"):
        train_state.load_checkpoint(str(tmp_path / "last.pt"), Model(4), CPU, config)


def test_a_kept_checkpoint_holds_what_sampling_and_export_read():
    state = {k: k for k in ("model", "opt", "rng", *train_state.SAMPLING_KEYS)}
    state["ema"] = [{}]
    kept = train_state.kept_state(state)
    assert {"ema", "ema_decays", "classes", "data_identity", "step"} <= set(kept)
    assert "model" not in kept and "opt" not in kept
    assert "model" in train_state.kept_state({**state, "ema": []})


def test_a_rank_takes_its_own_loader_state_only_under_the_same_world_size():
    ckpt = {"data": "shared", "data_ranks": ["r0", "r1", "r2", "r3"]}
    assert train_state.loader_state(ckpt, 1, 4) == "r1"
    assert train_state.loader_state(ckpt, 1, 2) == "shared"
    assert train_state.loader_state({"data": "shared"}, 1, 4) == "shared"


def test_classes_and_data_must_be_the_ones_written():
    train_state.check_same_classes(["a", "b", "c"], ["a", "b", "c"])
    train_state.check_same_classes(None, ["a"])
    with pytest.raises(ValueError, match="label 1 was class 'b', now 'd'"):
        train_state.check_same_classes(["a", "b", "c"], ["a", "d", "c"])
    with pytest.raises(ValueError, match="it had 3 classes, now 2"):
        train_state.check_same_classes(["a", "b", "c"], ["a", "b"])
    train_state.check_same_data({"hash": "abc"}, Loader())
    train_state.check_same_data({"hash": "abc"}, object())
    with pytest.raises(ValueError, match=r"changed since it was written \(other VAE\)"):
        train_state.check_same_data({"hash": "abc"}, Loader(changes=["other VAE"]))


# --------------------------------------------------------------------- an out_dir's files


def test_keep_every_steps_and_none_when_zero():
    every_3 = TrainConfig(keep_every=3)
    assert [s for s in range(10) if train_state.keeps(every_3, s)] == [0, 3, 6, 9]
    assert not any(train_state.keeps(TrainConfig(keep_every=0), s) for s in range(4))


def test_kept_checkpoints_are_ordered_by_step_past_seven_digits(tmp_path):
    for name in ("ckpt_9000000.pt", "ckpt_10000000.pt", "ckpt_0000002.pt", "ckpt_12.pt", "last.pt"):
        (tmp_path / name).write_bytes(b"")
    names = [os.path.basename(p) for p in train_state.kept_checkpoints(str(tmp_path))]
    assert names == ["ckpt_0000002.pt", "ckpt_9000000.pt", "ckpt_10000000.pt"]


def test_going_back_is_refused_only_for_what_was_written_later(tmp_path):
    """A kept full copy of last.pt's own step resumes; an earlier one names the later files."""
    config = TrainConfig(out_dir=str(tmp_path))
    for name, step in (("last.pt", 2), ("ckpt_0000001.pt", 1), ("ckpt_0000002.pt", 2)):
        torch.save({"step": step}, tmp_path / name)
    last = str(tmp_path / "last.pt")
    train_state.refuse_replacing_later_steps(last, str(tmp_path / "ckpt_0000002.pt"), config)
    with pytest.raises(ValueError, match=r"after step 1 \(last.pt at step 2, ckpt_0000002.pt\)"):
        train_state.refuse_replacing_later_steps(last, str(tmp_path / "ckpt_0000001.pt"), config)


def test_resume_of_a_missing_file_or_a_folder_is_refused(tmp_path):
    _, model, emas, opt = _run(tmp_path)
    for path, error, message in [
        (tmp_path / "nope.pt", FileNotFoundError, "does not exist"),
        (tmp_path, ValueError, "is a directory; a run resumes from a file"),
    ]:
        config = TrainConfig(out_dir=str(tmp_path / "run"), resume=str(path))
        with pytest.raises(error, match=message):
            train_state.resume(config, model, emas, opt, Loader(), 0, 1, CPU)
