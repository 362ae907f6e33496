"""What the model side's loaders and builders must refuse or keep, where a slip would give a user
another model than the one asked for without an error: a trainer checkpoint's EMA picked by a
bool, an official state dict with weights the model has no place for, an export of a state dict
that no load can read, a dtype asked of ``from_pretrained``, the adapters' keyword arguments."""

import dataclasses

import pytest
import torch

from meanflow import pretrained
from meanflow.models import DiT


def trainer_checkpoint(path, model, emas=2, raw=True):
    """A ``meanflow.train``-style checkpoint of ``model``: ``emas`` EMA sets, each a shifted copy
    of the weights (so which one was loaded shows), and the raw weights when ``raw``."""
    state = model.state_dict()
    ckpt = {
        "ema": [{k: v + (i + 1) for k, v in state.items()} for i in range(emas)],
        "ema_decays": [0.999, 0.9999][:emas],
        "model_config": dataclasses.asdict(model.config),
    }
    if raw:
        ckpt["model"] = state
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize("ema", [True, False, 1.0])
def test_an_ema_given_as_a_bool_or_a_float_is_refused(tmp_path, tiny, ema):
    """``ema=True`` would read as EMA 1 (the second decay's) and ``ema=False`` as EMA 0."""
    path = str(tmp_path / "last.pt")
    trainer_checkpoint(path, tiny())
    with pytest.raises(ValueError, match=rf"ema must be an EMA's index .* got {ema!r}"):
        pretrained.load_model(path, ema=ema)
    with pytest.raises(ValueError, match="ema must be an EMA's index"):
        pretrained.load_trainer_checkpoint(path, ema=ema)
    folder = str(tmp_path / "export")
    tiny().save_pretrained(folder)
    with pytest.raises(ValueError, match="ema must be an EMA's index"):
        pretrained.load_model(folder, ema=ema)


def test_each_ema_index_and_the_raw_weights_load_what_they_name(tmp_path, tiny):
    path = str(tmp_path / "last.pt")
    ckpt = trainer_checkpoint(path, tiny())
    for ema in (0, 1):
        model = pretrained.load_model(path, ema=ema)
        assert not model.training
        assert all(torch.equal(v, ckpt["ema"][ema][k]) for k, v in model.state_dict().items())
    raw = pretrained.load_model(path, ema=None)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in raw.state_dict().items())
    with pytest.raises(ValueError, match=r"2 EMA weight sets \(decays \[0.999, 0.9999\]\); ema=2"):
        pretrained.load_model(path, ema=2)


def test_the_raw_weights_of_a_kept_checkpoint_are_named_missing(tmp_path, tiny):
    path = str(tmp_path / "kept.pt")
    trainer_checkpoint(path, tiny(), raw=False)
    with pytest.raises(ValueError, match="holds EMA weights only"):
        pretrained.load_model(path, ema=None)


def test_a_z_of_another_size_is_named(tiny):
    """The patch convolution takes any size: only the positions' add would fail, and not by name."""
    model = tiny()
    t = torch.rand(2)
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 1, 8, 8\), got \(2, 1, 10, 10\)"):
        model(torch.randn(2, 1, 10, 10), t / 2, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 1, 8, 8\), got \(2, 1, 8, 4\)"):
        model.jvp(torch.randn(2, 1, 8, 4), t / 2, t, torch.tensor([0, 1]), torch.randn(2, 1, 8, 4))


def test_an_official_state_with_a_weight_of_no_place_is_refused(tiny):
    """``from_official_dit`` loads with ``strict=False`` (the second time embedder is fresh):
    only the key check stands between an extra weight and its silent loss."""
    state = {k: v for k, v in tiny().state_dict().items() if not k.startswith("h_embedder.")}
    state["blocks.0.attn.q_bias"] = torch.zeros(32)
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.0.attn.q_bias'\]"):
        DiT.from_official_dit(state, num_heads=2)


def test_save_pretrained_refuses_a_state_dict_no_load_could_read(tmp_path, tiny):
    model = tiny()
    state = dict(model.state_dict())
    del state["final_layer.linear.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['final_layer.linear.bias'\]"):
        model.save_pretrained(str(tmp_path / "m"), state_dict=state)
    assert not (tmp_path / "m").exists()


def test_from_pretrained_gives_the_dtype_asked_for(tmp_path, tiny):
    model = tiny()
    model.save_pretrained(str(tmp_path / "m"))
    loaded = DiT.from_pretrained(str(tmp_path / "m"), dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.state_dict().values()} == {torch.bfloat16}
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k].to(torch.bfloat16)), k
    assert not loaded.training
