"""Interchange: save_pretrained / from_pretrained round trips, EMA export from trainer
checkpoints, official DiT state dicts, and bad files (clear errors, nothing half-written)."""

import argparse
import dataclasses
import json
import os

import pytest
import torch

from meanflow import export, pretrained
from meanflow.checkpoint import EXPORT_MARKER
from meanflow.models import DiT


def trainer_ckpt(path, model, n_ema=2):
    """A checkpoint shaped like meanflow.train's: raw weights plus distinct EMA weight sets."""
    emas = []
    for k in range(n_ema):
        emas.append({name: v + 0.01 * (k + 1) for name, v in model.state_dict().items()})
    torch.save(
        {
            "model": model.state_dict(),
            "ema": emas,
            "ema_decays": [0.9, 0.99][:n_ema],
            "model_config": dataclasses.asdict(model.config),
            "step": 3,
        },
        path,
    )
    return emas


def outputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    z = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    v = torch.randn(z.shape, generator=g)
    t = torch.rand(3, generator=g)
    r = t * torch.rand(3, generator=g)
    y = torch.tensor([0, 1, cfg.num_classes]) if cfg.num_classes else None
    with torch.no_grad():
        return model(z, r, t, y), model.jvp(z, r, t, y, v)[1]


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
def test_save_load_round_trip(tmp_path, tiny, time_cond):
    model = tiny(time_cond=time_cond, qk_norm=True)
    model.save_pretrained(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == [EXPORT_MARKER, "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["_class_name"] == "DiT" and config["time_cond"] == time_cond and config["qk_norm"] is True
    loaded = DiT.from_pretrained(str(tmp_path / "m"))
    assert loaded.config == model.config and not loaded.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    for a, b in zip(outputs(model), outputs(loaded)):
        assert torch.equal(a, b)
    # safetensors is readable without this package
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(model.state_dict())


def test_export_cli_picks_the_ema(tmp_path, tiny):
    model = tiny()
    emas = trainer_ckpt(tmp_path / "last.pt", model)
    export.main(["--ckpt", str(tmp_path / "last.pt"), "--out", str(tmp_path / "e1"), "--ema", "1"])
    export.main(["--ckpt", str(tmp_path / "last.pt"), "--out", str(tmp_path / "raw"), "--raw"])
    e1, raw = DiT.from_pretrained(str(tmp_path / "e1")), DiT.from_pretrained(str(tmp_path / "raw"))
    for name in emas[1]:
        assert torch.equal(e1.state_dict()[name], emas[1][name]), name
        assert torch.equal(raw.state_dict()[name], model.state_dict()[name]), name
    with pytest.raises(SystemExit):
        export.main(["--ckpt", str(tmp_path / "last.pt"), "--out", str(tmp_path / "e5"), "--ema", "5"])
    assert not (tmp_path / "e5").exists()
    with pytest.raises(ValueError, match=r"2 EMA weight sets .*ema=5"):
        pretrained.load_trainer_checkpoint(str(tmp_path / "last.pt"), ema=5)


def test_overwrite_only_a_previous_export(tmp_path, tiny):
    a, b = tiny(seed=0), tiny(seed=1)
    a.save_pretrained(str(tmp_path / "m"))
    b.save_pretrained(str(tmp_path / "m"))  # a previous export is replaced
    assert torch.equal(DiT.from_pretrained(str(tmp_path / "m")).pos_embed, b.pos_embed)
    assert torch.equal(
        DiT.from_pretrained(str(tmp_path / "m")).blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        a.save_pretrained(str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["m", "mine"]  # no temporary leftovers


def test_interrupted_save_keeps_the_old_export(tmp_path, tiny, monkeypatch):
    a, b = tiny(seed=0), tiny(seed=1)
    a.save_pretrained(str(tmp_path / "m"))
    import safetensors.torch

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        b.save_pretrained(str(tmp_path / "m"))
    with pytest.raises(OSError):
        b.save_pretrained(str(tmp_path / "new"))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["m"]
    loaded = DiT.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(loaded.blocks[0].mlp.fc1.weight, a.blocks[0].mlp.fc1.weight)


def test_bad_pretrained_dirs(tmp_path, tiny):
    from safetensors.torch import load_file, save_file

    model = tiny()
    model.save_pretrained(str(tmp_path / "m"))
    weights = str(tmp_path / "m" / "model.safetensors")
    state = load_file(weights)
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiT.from_pretrained(str(tmp_path / "nowhere"))

    del state["blocks.1.attn.proj.bias"]
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.proj.bias'\]"):
        DiT.from_pretrained(str(tmp_path / "m"))

    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    model.save_pretrained(str(tmp_path / "m"))
    config["hidden_size"] = 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"size mismatches: .*\(32,\) in the checkpoint, \(64,\) in the model"
    ):
        DiT.from_pretrained(str(tmp_path / "m"))
    config["hidden_size"], config["wings"] = 32, 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown DiTConfig fields \['wings'\]"):
        DiT.from_pretrained(str(tmp_path / "m"))

    model.save_pretrained(str(tmp_path / "m"))
    with open(weights, "r+b") as f:  # an interrupted copy
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ValueError, match=r"cannot read model weights .*model\.safetensors.*truncated"):
        DiT.from_pretrained(str(tmp_path / "m"))


def test_bad_trainer_checkpoints(tmp_path, tiny):
    model = tiny()
    torch.save({"model": model.state_dict()}, tmp_path / "no_config.pt")
    with pytest.raises(ValueError, match="needs keys 'model' or 'ema', and 'model_config'"):
        pretrained.load_model(str(tmp_path / "no_config.pt"))
    with pytest.raises(FileNotFoundError, match="not found"):
        pretrained.load_model(str(tmp_path / "missing.pt"))
    state = dict(model.state_dict())
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"][:10]
    state["extra.weight"] = torch.zeros(1)
    torch.save(
        {"model": state, "ema": [], "model_config": dataclasses.asdict(model.config)}, tmp_path / "bad.pt"
    )
    with pytest.raises(
        ValueError, match=r"unexpected keys \['extra.weight'\].*blocks.0.attn.qkv.weight: \(10, 32\)"
    ):
        pretrained.load_model(str(tmp_path / "bad.pt"), ema=None)
    with pytest.raises(ValueError, match="0 EMA weight sets"):
        pretrained.load_model(str(tmp_path / "bad.pt"), ema=0)


# ---------------------------------------------------------------- official DiT


def official_dit_keys(depth):
    """The parameter names of facebookresearch/DiT models.py (written out, not taken from ours)."""
    keys = ["pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias"]
    keys += [f"t_embedder.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    keys += ["y_embedder.embedding_table.weight"]
    for b in range(depth):
        for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            keys += [f"blocks.{b}.{layer}.weight", f"blocks.{b}.{layer}.bias"]
    keys += [f"final_layer.{m}.{p}" for m in ("linear", "adaLN_modulation.1") for p in ("weight", "bias")]
    return keys


def official_state(model, learn_sigma=True):
    """An official-layout DiT state dict holding ``model``'s weights; with ``learn_sigma`` the
    final layer gets DiT's 2C output channels (random sigma rows interleaved per pixel)."""
    ours = model.state_dict()
    state = {k: ours[k].clone() for k in official_dit_keys(model.config.depth)}
    if learn_sigma:
        p, c, d = model.config.patch_size, model.config.in_channels, model.config.hidden_size
        w = state["final_layer.linear.weight"].reshape(p, p, c, d)
        b = state["final_layer.linear.bias"].reshape(p, p, c)
        state["final_layer.linear.weight"] = torch.cat([w, torch.randn_like(w)], 2).reshape(p * p * 2 * c, d)
        state["final_layer.linear.bias"] = torch.cat([b, torch.randn_like(b)], 2).reshape(-1)
    return state


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_official_dit_state_dict(tmp_path, tiny, learn_sigma):
    model = tiny(num_classes=5)
    assert set(official_dit_keys(2)) | {k for k in model.state_dict() if k.startswith("h_embedder.")} == set(
        model.state_dict()
    )
    state = official_state(model, learn_sigma)
    # a train.py checkpoint {"model", "ema", "opt", "args"} (args: its argparse.Namespace): the EMA
    args = argparse.Namespace(model="DiT-XL/2", image_size=256, num_classes=5, global_batch_size=256)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).state_dict()
    torch.save({"model": {}, "ema": state, "opt": opt, "args": args}, tmp_path / "dit.pt")
    loaded = DiT.from_official_dit(str(tmp_path / "dit.pt"), num_heads=2)
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    with pytest.raises(
        ValueError, match=r"looks like an official DiT/SiT checkpoint: use DiT.from_official_dit"
    ):
        pretrained.load_trainer_checkpoint(str(tmp_path / "dit.pt"))  # as generate --ckpt does
    # the h embedder has no official counterpart: a fresh input layer, a zero output layer
    assert not torch.equal(loaded.h_embedder.mlp[0].weight, model.h_embedder.mlp[0].weight)
    assert not loaded.h_embedder.mlp[2].weight.any() and not loaded.h_embedder.mlp[2].bias.any()
    # with the h embedder copied over the two models are the same function
    loaded.h_embedder.load_state_dict(model.h_embedder.state_dict())
    for a, b in zip(outputs(model), outputs(loaded)):
        assert torch.allclose(a, b, atol=1e-6)


def test_sigma_channels_follow_dit_unpatchify(tiny):
    """DiT reads a final-layer row as (p, p, 2C) and keeps the first C channels per pixel."""
    model = tiny(num_classes=5)
    state = official_state(model, learn_sigma=True)
    p, c, d = 2, 1, 32
    feature = torch.randn(d)
    full = (state["final_layer.linear.weight"] @ feature + state["final_layer.linear.bias"]).reshape(
        p, p, 2 * c
    )
    _, converted = pretrained.convert_official_dit(state, num_heads=2)
    ours = converted["final_layer.linear.weight"] @ feature + converted["final_layer.linear.bias"]
    assert torch.allclose(ours.reshape(p, p, c), full[:, :, :c])


def test_official_dit_bad_inputs(tiny):
    model = tiny(num_classes=5)
    state = official_state(model)
    with pytest.raises(ValueError, match="matches no DiT preset: pass num_heads"):
        pretrained.convert_official_dit(state)
    broken = dict(state)
    del broken["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.mlp.fc2.bias'\]"):
        DiT.from_official_dit(broken, num_heads=2)
    with pytest.raises(ValueError, match="x_embedder.proj.weight is missing"):
        pretrained.convert_official_dit({"foo": torch.zeros(1)})
    odd = dict(state)
    odd["final_layer.linear.weight"] = torch.zeros(12, 32)
    with pytest.raises(ValueError, match="3 output channels per pixel"):
        pretrained.convert_official_dit(odd, num_heads=2)


def test_dit_preset_widths_give_the_heads():
    from meanflow.models import DiTConfig

    cfg = DiTConfig.from_name("DiT-S/8", input_size=16, num_classes=3)
    state = {k: torch.zeros(v.shape) for k, v in DiT(cfg).state_dict().items() if not k.startswith("h_")}
    config, _ = pretrained.convert_official_dit(state)
    assert (config.num_heads, config.depth, config.hidden_size, config.patch_size) == (6, 12, 384, 8)


def test_label_table_without_the_null_row(tiny):
    model = tiny(num_classes=5)
    state = official_state(model, learn_sigma=False)
    state["y_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"][:5]
    loaded = DiT.from_official_dit(state, num_heads=2, num_classes=5)
    table = loaded.y_embedder.embedding_table.weight
    assert table.shape == (6, 32) and torch.equal(table[:5], state["y_embedder.embedding_table.weight"])
    assert 0 < table[5].abs().max() < 0.2
    # The null row is drawn from its own seed: a second load, whatever the global RNG did in
    # between, is the same network under guidance (the null label's output) too.
    torch.manual_seed(1234)
    again = DiT.from_official_dit(state, num_heads=2, num_classes=5)
    assert torch.equal(again.y_embedder.embedding_table.weight, table)


def test_the_fresh_second_time_embedder_is_drawn_from_the_loads_seed(tiny):
    """Its input layer is not in the official weights: drawn from ``seed``, not from whatever
    the global RNG holds, so two loads fine-tune from the same network, and the caller's
    global RNG is left as it was."""
    state = official_state(tiny(), learn_sigma=False)
    torch.manual_seed(1)
    first = DiT.from_official_dit(state, num_heads=2).state_dict()
    torch.manual_seed(2)
    expected_next = torch.rand(3)
    torch.manual_seed(2)
    second = DiT.from_official_dit(state, num_heads=2).state_dict()
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG untouched by the load
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = DiT.from_official_dit(state, num_heads=2, seed=1).state_dict()
    fresh = [k for k in first if k in ("h_embedder.mlp.0.weight", "r_embedder.mlp.0.weight")]
    assert fresh and all(not torch.equal(first[k], other[k]) for k in fresh)
