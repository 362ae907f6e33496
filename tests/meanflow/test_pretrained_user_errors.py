"""What a user gets wrong with a trained model, and what each mistake gives: a MeanFlow
checkpoint passed as an official DiT, an argument that contradicts the official weights, a
pretrained folder asked for weights it does not hold, a file where a folder belongs, a
config.json cut short or from a later format. Each is an error naming the argument or file,
never another model loaded without a word."""

import dataclasses
import json
import os
import pickle

import pytest
import torch
from test_pretrained import official_state, outputs, trainer_ckpt

from meanflow import export, interchange, pretrained
from meanflow.models import DiT

# --------------------------------------------------------------- official weights


def test_a_meanflow_model_is_never_loaded_as_an_official_one(tmp_path, tiny, capsys):
    """Its keys pass the check, so it used to load: the raw weights of a trainer checkpoint (its
    EMAs are a list), the second time embedder zeroed and the time scale the family's."""
    model = tiny(time_scale=1.0)
    trainer_ckpt(tmp_path / "last.pt", model)
    model.save_pretrained(str(tmp_path / "exported"))
    for time_cond in ("t,h", "r,t"):
        with pytest.raises(ValueError, match=r"not an official DiT/SiT state dict: it holds [hr]_embedder"):
            DiT.from_official_dit(tiny(time_cond=time_cond).state_dict(), num_heads=2, time_cond=time_cond)
    with pytest.raises(ValueError, match=r"h_embedder.*meanflow.pretrained.load_model"):
        DiT.from_official_dit(str(tmp_path / "last.pt"), num_heads=2)
    with pytest.raises(ValueError, match=r"exported.* is a folder.*DiT.from_pretrained"):
        DiT.from_official_dit(str(tmp_path / "exported"), num_heads=2)
    for ckpt in ("last.pt", "exported"):
        argv = ["--ckpt", str(tmp_path / ckpt), "--official-sit", "--num-heads", "2"]
        with pytest.raises(SystemExit) as e:
            export.main([*argv, "--out", str(tmp_path / "out")])
        assert e.value.code == 2 and "error: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_arguments_that_contradict_the_official_weights_are_named(tiny):
    state = official_state(tiny(num_classes=5))
    for name, value in [("input_size", 16), ("depth", 3), ("in_channels", 4), ("num_classes", 3),
                        ("qk_norm", True), ("frequency_embedding_size", 128)]:  # fmt: skip
        with pytest.raises(ValueError, match=rf"^{name}={value!r} does not fit the checkpoint"):
            DiT.from_official_dit(state, num_heads=2, **{name: value})
    # the weights' own values, and a label table's row count (no null row) are accepted
    assert DiT.from_official_dit(state, num_heads=2, depth=2, mlp_ratio=4).config.depth == 2
    assert DiT.from_official_dit(state, num_heads=2, num_classes=6).config.num_classes == 6


def test_a_broken_official_state_is_a_value_error_naming_what(tiny):
    state = official_state(tiny(num_classes=5))
    no_bias = {k: v for k, v in state.items() if k != "final_layer.linear.bias"}
    with pytest.raises(ValueError, match="final_layer.linear.bias is missing"):
        DiT.from_official_dit(no_bias, num_heads=2)
    stray = {**state, "blocks.ema.attn.qkv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.ema.attn.qkv.weight'\]"):
        DiT.from_official_dit(stray, num_heads=2)


def test_an_official_safetensors_file_is_read_by_safetensors(tmp_path, tiny, monkeypatch):
    """torch.load reads safetensors only from torch 2.14 on; this package supports 2.5."""
    from safetensors.torch import save_file

    state = official_state(tiny(num_classes=5))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "DiT.safetensors"))
    torch.save(state, tmp_path / "DiT.pt")
    want = DiT.from_official_dit(str(tmp_path / "DiT.pt"), num_heads=2).state_dict()

    def old_torch(path, *args, **kwargs):
        raise ValueError(f"cannot read DiT checkpoint {path!r}: invalid load key")

    monkeypatch.setattr(interchange, "load_torch_file", old_torch)
    got = DiT.from_official_dit(str(tmp_path / "DiT.safetensors"), num_heads=2).state_dict()
    assert set(got) == set(want)
    for name in want:
        if not name.startswith("h_embedder.mlp.0."):
            assert torch.equal(got[name], want[name]), name


# --------------------------------------------------------------- pretrained folders


def test_a_folder_holds_one_set_of_weights(tmp_path, tiny, capsys):
    """--raw or another --ema of an exported folder used to give the export's weights under
    that name (and meanflow.generate recorded them so)."""
    model = tiny()
    emas = trainer_ckpt(tmp_path / "last.pt", model)
    export.main(["--ckpt", str(tmp_path / "last.pt"), "--out", str(tmp_path / "e0")])
    for ema, which in [(None, "raw weights"), (1, "EMA 1")]:
        with pytest.raises(ValueError, match=rf"e0 is a pretrained directory.*no {which} to pick"):
            pretrained.load_model(str(tmp_path / "e0"), ema=ema)
    with pytest.raises(SystemExit) as e:
        export.main(["--ckpt", str(tmp_path / "e0"), "--out", str(tmp_path / "raw"), "--raw"])
    assert e.value.code == 2 and "no raw weights to pick" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists()
    loaded = pretrained.load_model(str(tmp_path / "e0"), ema=0)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in emas[0].items())


def test_a_file_or_a_pipeline_folder_is_named_as_one(tmp_path, tiny):
    model = tiny()
    trainer_ckpt(tmp_path / "last.pt", model)
    with pytest.raises(ValueError, match=r"last.pt is a file, not a pretrained directory.*load_model"):
        DiT.from_pretrained(str(tmp_path / "last.pt"))
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"a MeanFlowPipeline folder: its DiT is .*pipe/transformer"):
        pretrained.load_model(str(tmp_path / "pipe"))


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"input_size": 8,', r"config.json is not valid JSON \(cut short"),
        ("[8, 2]", r"config.json: expected a JSON object of DiTConfig fields, got list"),
        (None, r"config.json is in pretrained format 2, written by a newer meanflow.*reads format 1"),
        ("version-text", r"_format_version must be an int >= 1, got '1'"),
    ],
)
def test_a_config_this_reader_cannot_take_names_the_file(tmp_path, tiny, text, error):
    tiny().save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    if text is None:  # a later format may hold other weights under the same names
        text = json.dumps({**config, "_format_version": interchange.FORMAT_VERSION + 1})
    elif text == "version-text":
        text = json.dumps({**config, "_format_version": "1"})
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        DiT.from_pretrained(str(tmp_path / "m"))


def test_an_export_without_a_format_version_still_loads(tmp_path, tiny):
    model = tiny()
    model.save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" / "config.json"
    path.write_text(
        json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "_format_version"})
    )
    for a, b in zip(outputs(model), outputs(DiT.from_pretrained(str(tmp_path / "m")))):
        assert torch.equal(a, b)


def test_a_folder_of_another_model_class_is_refused_naming_it(tmp_path, tiny):
    """A folder another class saved (its config.json's _class_name) holds another network's
    weights under its names: read into a DiT, it would load whatever fits, without a word."""
    tiny().save_pretrained(str(tmp_path / "m"))
    path = tmp_path / "m" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_class_name": "SiT"}))
    with pytest.raises(ValueError, match=r"config.json: _class_name is 'SiT', not 'DiT'"):
        DiT.from_pretrained(str(tmp_path / "m"))


# --------------------------------------------------------------- trainer checkpoints


def test_trainer_checkpoints_are_memory_mapped_where_torch_can(tmp_path, tiny, monkeypatch):
    """A full last.pt is mostly AdamW moments and other EMAs: mapped, they are never read.
    A file in torch's legacy (non-zip) format cannot be mapped and loads as before."""
    model = tiny()
    emas = trainer_ckpt(tmp_path / "last.pt", model)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.save(ckpt, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    load, mapped = pretrained.load_torch_file, []
    monkeypatch.setattr(
        pretrained, "load_torch_file", lambda path, **kw: mapped.append(kw.get("mmap")) or load(path, **kw)
    )
    for name in ("last.pt", "legacy.pt"):
        for ema, want in [(1, emas[1]), (None, model.state_dict())]:
            got = pretrained.load_trainer_checkpoint(str(tmp_path / name), ema=ema).state_dict()
            assert all(torch.equal(got[k], v) for k, v in want.items()), (name, ema)
    assert mapped == [True, True, False, False]


def test_a_trainer_checkpoint_is_never_unpickled_as_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model_config": {}, "model": Payload()}, f, protocol=2)
    for load in (pretrained.load_model, DiT.from_official_dit):
        with pytest.raises(ValueError, match="cannot read"):
            load(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "ran").exists()


def test_export_of_a_latent_model_as_a_pipeline_asks_for_vae(tmp_path, tiny, capsys):
    pytest.importorskip("diffusers")
    model = tiny(in_channels=4)
    torch.save(
        {"model": model.state_dict(), "ema": [], "model_config": dataclasses.asdict(model.config)},
        tmp_path / "last.pt",
    )
    with pytest.raises(SystemExit) as e:
        export.main(
            ["--ckpt", str(tmp_path / "last.pt"), "--raw", "--pipeline", "--out", str(tmp_path / "p")]
        )
    assert e.value.code == 2
    assert "4-channel latents, not images: pass --vae" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_export_vae_without_pipeline_is_refused_before_writing(tmp_path, tiny, capsys):
    """A model folder holds no VAE: --vae without --pipeline would be dropped without a word."""
    tiny().save_pretrained(str(tmp_path / "m"))
    with pytest.raises(SystemExit) as e:
        export.main(
            ["--ckpt", str(tmp_path / "m"), "--out", str(tmp_path / "e"), "--vae", str(tmp_path / "v")]
        )
    assert e.value.code == 2
    assert "--vae goes with --pipeline" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
