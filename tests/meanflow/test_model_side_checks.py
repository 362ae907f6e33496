"""What the model side's loaders and builders must refuse or keep, where a slip would give a user
another model than the one asked for without an error: a trainer checkpoint's EMA picked by a
bool, an official state dict with weights the model has no place for, an export of a state dict
that no load can read, a dtype asked of ``from_pretrained``, the adapters' keyword arguments."""

import dataclasses

import pytest
import torch
from numerics import rel_err

from meanflow import pretrained
from meanflow.models import DiT, DiTConfig
from mfkernels.reference import timestep_embedding_jvp


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


def test_the_adapters_use_and_keep_every_keyword_they_are_built_with():
    """A keyword taken and not used (``time_scale``, ``frequency_embedding_size``) gives another
    model than the one asked for; one not kept in ``config.kwargs`` gives a trainer checkpoint
    that rebuilds another model."""
    pytest.importorskip("diffusers")
    pytest.importorskip("timm")
    from meanflow.adapters import AdapterConfig

    dit = dict(num_attention_heads=2, attention_head_dim=8, num_layers=1, patch_size=2, time_scale=10.0)
    vit = dict(patch_size=2, embed_dim=32, depth=1, num_heads=2, time_scale=3.0, frequency_embedding_size=64)
    for name, kwargs in (("diffusers.DiTTransformer2DModel", dit), ("timm.VisionTransformer", vit)):
        config = AdapterConfig(name, 8, 4, 10, dict(kwargs))
        model = config.build()
        assert model.config == config
        rebuilt = AdapterConfig(**dataclasses.asdict(model.config)).build()
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }
    diffusers_dit = AdapterConfig("diffusers.DiTTransformer2DModel", 8, 4, 10, dit).build()
    projected = []
    block = diffusers_dit.transformer.transformer_blocks[0]
    block.norm1.emb.inner.time_proj.register_forward_pre_hook(lambda m, args: projected.append(args[0]))
    t = torch.tensor([0.25, 0.5])
    diffusers_dit(torch.randn(2, 4, 8, 8), torch.zeros(2), t, torch.tensor([1, 2]))  # h = t
    assert projected and all(torch.equal(p, 10.0 * t) for p in projected)
    timm_vit = AdapterConfig("timm.VisionTransformer", 8, 4, 10, vit).build()
    for embedder in (timm_vit.t_embedder, timm_vit.h_embedder):
        assert embedder.mlp[0].in_features == 64
        assert embedder.time_scale == 3.0


@pytest.mark.parametrize("hidden,width", [(44, 15), (44, 30), (704, 1920)])
def test_an_official_mlp_of_any_width_loads(hidden, width):
    """The MLP width is read as ``mlp_ratio = width / hidden``, and DiT builds ``int(hidden *
    mlp_ratio)`` units: for these widths the quotient rounds one unit short."""
    ratio = (width + 0.5) / hidden  # a ratio that builds exactly `width` units
    config = DiTConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=hidden, depth=1,
                       num_heads=2, mlp_ratio=ratio, num_classes=3)  # fmt: skip
    torch.manual_seed(0)
    source = DiT(config)
    assert source.blocks[0].mlp.fc1.out_features == width
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("h_embedder.")}
    loaded = DiT.from_official_dit(state, num_heads=2)
    assert loaded.blocks[0].mlp.fc1.out_features == width
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_a_default_dit_embeds_the_interval():
    """MeanFlow's default conditioning (docs/design.md section 1) is ``(t, t - r)``: a preset
    built without ``time_cond`` feeds its second embedder ``h = t - r``."""
    model = DiT.from_config("DiT-T/8", input_size=16, in_channels=1, depth=1, num_classes=0)
    seen = []
    model.second_embedder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    t, r = torch.tensor([0.9, 0.5]), torch.tensor([0.2, 0.5])
    model(torch.randn(2, 1, 16, 16), r, t)
    assert model.second_time == "h" and hasattr(model, "h_embedder")
    assert len(seen) == 1 and torch.equal(seen[0], t - r)


def test_an_input_the_patches_do_not_tile_is_refused():
    """Patches of 4 over 10 pixels would leave the last 2 rows and columns out of ``u``."""
    with pytest.raises(ValueError, match="input_size 10 is not a multiple of patch_size 4"):
        DiTConfig(input_size=10, patch_size=4, hidden_size=32, num_heads=2, depth=1)


def test_an_official_state_with_unbatched_positions_loads(tiny):
    """Some conversions save DiT's ``pos_embed`` as ``(tokens, hidden)`` without its batch axis."""
    source = tiny()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("h_embedder.")}
    state["pos_embed"] = state["pos_embed"][0] + 0.5  # not the model's own: shows it was loaded
    loaded = DiT.from_official_dit(state, num_heads=2)
    assert torch.equal(loaded.pos_embed, state["pos_embed"][None])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_16_bit_sit_is_flipped_in_time_to_float32_accuracy(tiny, dtype):
    """SiT's time flip rotates the first time-MLP layer's weights; rounded back to 16 bits the
    loaded model's time embedding would be off by 1e-3 where the float32 model can hold 1e-7."""
    state = {k: v.to(dtype) for k, v in tiny().state_dict().items() if not k.startswith("h_embedder.")}
    loaded = DiT.from_official_dit(state, num_heads=2, family="sit")
    weight = state["t_embedder.mlp.0.weight"].double()
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    embed = lambda t: timestep_embedding_jvp(t, torch.zeros_like(t), weight.shape[1])[0]  # noqa: E731
    flipped = embed(t) @ loaded.t_embedder.mlp[0].weight.double().T
    assert loaded.t_embedder.mlp[0].weight.dtype == torch.float32
    assert rel_err(flipped, embed(1 - t) @ weight.T) < 1e-6


def test_from_pretrained_reads_again_when_an_export_replaces_the_folder(tmp_path, tiny, monkeypatch):
    """An export swaps a whole new folder in while ``from_pretrained`` reads the old one: what was
    read is one export's config with maybe another's weights, so the folder is read again."""
    folder = str(tmp_path / "m")
    tiny(seed=0).save_pretrained(folder)
    newer = tiny(seed=1)
    read = DiT._read_pretrained.__func__
    reads = []

    def read_while_an_export_lands(cls, directory, backend):
        model = read(cls, directory, backend)
        if not reads:
            newer.save_pretrained(folder)
        reads.append(directory)
        return model

    monkeypatch.setattr(DiT, "_read_pretrained", classmethod(read_while_an_export_lands))
    loaded = DiT.from_pretrained(folder)
    assert len(reads) == 2
    for k, v in newer.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
