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


def test_each_key_that_defines_a_run_is_compared():
    """A resume restores betas and weight_decay from the optimizer state: a new value would
    silently not apply. The others change what the run trains."""
    saved = config().to_dict()
    changed = dict(
        model_class="timm.VisionTransformer",
        data__name="latents",
        data__latent_mode="mean",
        loss__objective="flow_matching",
        batch_size=32,
        seed=1,
        ema_decays=[0.9],
        betas=[0.8, 0.95],
        weight_decay=0.1,
    )
    for key, value in changed.items():
        dotted = key.replace("__", ".")
        expected = {dotted: (saved_value(saved, dotted), value)}
        assert run_identity_changes(saved, config(**{key: value})) == expected, key


def test_what_a_resume_may_change_is_not_compared():
    saved = config().to_dict()
    free = dict(
        steps=50, lr=0.5, warmup_steps=7, lr_schedule="cosine", grad_clip=0.0, sample_every=3, eval_every=3,
        ckpt_every=3, keep_every=3, keep_full=True, log_every=0, device="cpu", precision="bf16",
        compile=True, cuda_graphs="on", threads=1, sample_steps=2, eval_samples=0, backend="reference",
        data__backend="torch", data__num_workers=0, data__max_read_failures=1.0, data__vae="vae/",
        out_dir="elsewhere", resume="other.pt", progress=False, tensorboard=True,
    )  # fmt: skip
    assert run_identity_changes(saved, config(**free)) == {}


def saved_value(saved: dict, dotted: str):
    for part in dotted.split("."):
        saved = saved[part]
    return saved
