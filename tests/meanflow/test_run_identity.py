"""Which options define a run (meanflow/run_identity.py): the keys a resume compares, and how."""

import os

from meanflow.config import TrainConfig
from meanflow.run_identity import run_identity_changes


def config(**values) -> TrainConfig:
    c = TrainConfig.from_name("mnist")
    for key, value in values.items():
        section, _, name = key.rpartition("__")
        setattr(getattr(c, section) if section else c, name, value)
    return c


def test_only_the_run_identity_is_compared_nested_keys_included():
    saved = config().to_dict()
    assert run_identity_changes(saved, config(steps=5, lr=1e-4, log_every=1, data__num_workers=0)) == {}
    assert run_identity_changes(saved, config(loss__cfg_w=2.0, seed=3)) == {
        "loss.cfg_w": (1.0, 2.0),
        "seed": (0, 3),
    }


def test_the_same_data_by_another_path_is_the_same_run(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    os.symlink(tmp_path / "mnist", tmp_path / "link")
    saved = config(data__path=str(tmp_path / "mnist")).to_dict()
    monkeypatch.chdir(tmp_path)
    for path in ("mnist", "./mnist/", str(tmp_path / "link")):
        assert run_identity_changes(saved, config(data__path=path)) == {}, path
    other = str(tmp_path / "other")
    assert run_identity_changes(saved, config(data__path=other)) == {
        "data.path": (str(tmp_path / "mnist"), other)
    }


def test_a_key_an_older_trainers_checkpoint_lacks_is_not_compared():
    saved = config().to_dict()
    del saved["weight_decay"], saved["loss"]["tangent_rows"]
    assert run_identity_changes(saved, config(weight_decay=0.1, loss__tangent_rows="all")) == {}
