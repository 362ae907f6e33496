"""``DiT.from_official_dit`` against the peers' own networks: a state dict in the layout of
facebookresearch/DiT and willisma/SiT with random values, run through an independent forward
of that layout (written here from reading the peers' ``models.py``) and through our loaded
model. DiT must be reproduced at ``1000 t``; SiT (``t = 1`` is data, output ``x - e``) as
``u(z, t, t, y) = -SiT(z, 1 - t, y)`` (docs/design.md sections 1 and 7)."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from numerics import rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow import pretrained
from meanflow.models import DiT

F64 = torch.float64
HIDDEN, DEPTH, HEADS, PATCH, CHANNELS, GRID, CLASSES, FREQ = 32, 2, 2, 2, 2, 4, 5, 256
# The loaded model holds float32 weights (the SiT time flip is rounded once to float32).
FP32_TOL = 1e-5


def official_shapes(learn_sigma):
    h, p = HIDDEN, PATCH
    out = p * p * CHANNELS * (2 if learn_sigma else 1)
    shapes = {
        "pos_embed": (1, GRID * GRID, h),
        "x_embedder.proj.weight": (h, CHANNELS, p, p),
        "x_embedder.proj.bias": (h,),
        "t_embedder.mlp.0.weight": (h, FREQ),
        "t_embedder.mlp.0.bias": (h,),
        "t_embedder.mlp.2.weight": (h, h),
        "t_embedder.mlp.2.bias": (h,),
        "y_embedder.embedding_table.weight": (CLASSES + 1, h),
        "final_layer.linear.weight": (out, h),
        "final_layer.linear.bias": (out,),
        "final_layer.adaLN_modulation.1.weight": (2 * h, h),
        "final_layer.adaLN_modulation.1.bias": (2 * h,),
    }
    for b in range(DEPTH):
        for name, rows, cols in [("attn.qkv", 3 * h, h), ("attn.proj", h, h), ("mlp.fc1", 4 * h, h),
                                 ("mlp.fc2", h, 4 * h), ("adaLN_modulation.1", 6 * h, h)]:  # fmt: skip
            shapes[f"blocks.{b}.{name}.weight"] = (rows, cols)
            shapes[f"blocks.{b}.{name}.bias"] = (rows,)
    return shapes


def random_official_state(learn_sigma, seed=0):
    """Every tensor random (adaLN-Zero's zeros would hide the time path), at a scale that keeps
    activations of order one."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_shapes(learn_sigma).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 and "pos_embed" not in name else 1
        state[name] = torch.randn(shape, generator=g) / math.sqrt(fan_in) * (0.3 if len(shape) == 1 else 1.0)
    return state


# --------------------------------------------------------- the peers' forward


def _linear(state, name, x):
    return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])


def _modulated_norm(x, shift, scale):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _sinusoid(timesteps, dim):
    """GLIDE's embedding as DiT and SiT use it: cos half, then sin half, max period 10^4."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=F64) / half)
    args = timesteps.to(F64)[:, None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _attention(state, name, x):
    b, n, d = x.shape
    q, k, v = _linear(state, f"{name}.qkv", x).reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) * (d // HEADS) ** -0.5).softmax(dim=-1)
    return _linear(state, f"{name}.proj", (weights @ v).transpose(1, 2).reshape(b, n, d))


def peer_forward(state, x, timesteps, y):
    """The official network's full output (``2 C`` channels with learn_sigma, the first ``C``
    being the prediction: DiT's noise, SiT's velocity)."""
    w = state["x_embedder.proj.weight"]
    p = w.shape[-1]
    h = F.conv2d(x, w, state["x_embedder.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    h = h + state["pos_embed"]
    emb = _linear(
        state, "t_embedder.mlp.2", F.silu(_linear(state, "t_embedder.mlp.0", _sinusoid(timesteps, FREQ)))
    )
    c = F.silu(emb + state["y_embedder.embedding_table.weight"][y])  # each adaLN starts with a SiLU
    for i in range(DEPTH):
        sh1, sc1, g1, sh2, sc2, g2 = _linear(state, f"blocks.{i}.adaLN_modulation.1", c).chunk(6, dim=1)
        h = h + g1[:, None] * _attention(state, f"blocks.{i}.attn", _modulated_norm(h, sh1, sc1))
        m = _modulated_norm(h, sh2, sc2)
        mlp = _linear(
            state, f"blocks.{i}.mlp.fc2", F.gelu(_linear(state, f"blocks.{i}.mlp.fc1", m), approximate="tanh")
        )
        h = h + g2[:, None] * mlp
    shift, scale = _linear(state, "final_layer.adaLN_modulation.1", c).chunk(2, dim=1)
    out = _linear(state, "final_layer.linear", _modulated_norm(h, shift, scale))
    # Each token's row is a (p, p, C_out) patch, channels fastest.
    b, n, _ = out.shape
    g, c_out = math.isqrt(n), out.shape[-1] // (p * p)
    return out.reshape(b, g, g, p, p, c_out).permute(0, 5, 1, 3, 2, 4).reshape(b, c_out, g * p, g * p)


# ------------------------------------------------------------------- tests


def as_f64(state):
    return {k: v.to(F64) for k, v in state.items()}


def cases(seed=1):
    """A batch with the endpoints t = 0 and t = 1, a null label, and r both = t and < t."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(4, CHANNELS, GRID * PATCH, GRID * PATCH, generator=g, dtype=F64)
    t = torch.tensor([0.0, 1.0, 0.3, 0.77], dtype=F64)
    y = torch.tensor([0, 3, CLASSES, 1])
    return z, t, y, [t, t * torch.rand(4, generator=g, dtype=F64)]


def load(state, family, time_cond="t,h"):
    model = DiT.from_official_dit(state, num_heads=HEADS, family=family, time_cond=time_cond)
    return model.to(F64)


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_loaded_dit_is_dit(learn_sigma, time_cond):
    """DiT's timesteps are 0..999 with 999 the noisiest: ours at time t is DiT at 1000 t, for
    any r (the second time embedder starts with a zero output)."""
    state = random_official_state(learn_sigma)
    model = load(state, "dit", time_cond)
    assert model.config.time_scale == 1000.0
    z, t, y, rs = cases()
    ref = peer_forward(as_f64(state), z, 1000 * t, y)[:, :CHANNELS]
    with torch.no_grad():
        for r in rs:
            err = rel_err(model(z, r, t, y), ref)
            assert err <= FP32_TOL, f"relative error {err:.2e}"


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_loaded_sit_is_sit_in_our_convention(learn_sigma, time_cond):
    """SiT: x_s = s x + (1 - s) e (s = 1 is data), s fed unscaled, output x - e. Ours has t = 1
    as noise and predicts v = e - x: u(z, r, t, y) = -SiT(z, 1 - t, y) at the start."""
    state = random_official_state(learn_sigma, seed=2)
    model = load(state, "sit", time_cond)
    assert model.config.time_scale == 1.0
    z, t, y, rs = cases()
    ref = -peer_forward(as_f64(state), z, 1 - t, y)[:, :CHANNELS]
    with torch.no_grad():
        for r in rs:
            err = rel_err(model(z, r, t, y), ref)
            assert err <= FP32_TOL, f"relative error {err:.2e}"


@pytest.mark.parametrize("family", ["dit", "sit"])
def test_loaded_model_jvp(family):
    """The dual pass of a loaded model: against torch.func.jvp of its own forward (float64,
    docs/design.md section 3), and du/dt against the peer's derivative along the path."""
    state = random_official_state(learn_sigma=True, seed=3)
    model = load(state, family)
    z, t, y, (_, r) = cases()
    v = torch.randn_like(z)
    u, dudt = model.jvp(z, r, t, y, v)
    with sdpa_kernel(SDPBackend.MATH):
        ref_u, ref_dudt = torch.func.jvp(lambda z, t: model(z, r, t, y), (z, t), (v, torch.ones_like(t)))
    assert rel_err(u, ref_u) <= 1e-10 and rel_err(dudt, ref_dudt) <= 1e-10

    peer = as_f64(state)
    if family == "dit":
        field = lambda z, t: peer_forward(peer, z, 1000 * t, y)[:, :CHANNELS]
    else:
        field = lambda z, t: -peer_forward(peer, z, 1 - t, y)[:, :CHANNELS]
    peer_u, peer_dudt = torch.func.jvp(field, (z, t), (v, torch.ones_like(t)))
    # du/dt is 1000x the field's scale for DiT: measure it against its own magnitude.
    assert rel_err(u, peer_u) <= FP32_TOL
    assert rel_err(dudt, peer_dudt, floor=peer_dudt.abs().max().item()) <= FP32_TOL


def test_time_scale_is_the_weights(tmp_path):
    """A time scale other than the one the weights were trained with is refused, by name."""
    state = random_official_state(learn_sigma=False)
    with pytest.raises(ValueError, match=r"time_scale 1.0 .* 'dit' .* 1000"):
        DiT.from_official_dit(state, num_heads=HEADS, time_scale=1.0)
    with pytest.raises(ValueError, match=r"time_scale 1000.0 .* 'sit' .* 1.0"):
        DiT.from_official_dit(state, num_heads=HEADS, family="sit", time_scale=1000.0)
    with pytest.raises(ValueError, match=r"family must be one of \('dit', 'sit'\), got 'edm'"):
        pretrained.convert_official_dit(state, num_heads=HEADS, family="edm")
    # the scale and the folded weights survive save_pretrained / from_pretrained
    model = load(state, "sit").float()
    model.save_pretrained(str(tmp_path / "sit"))
    again = DiT.from_pretrained(str(tmp_path / "sit"))
    assert again.config.time_scale == 1.0
    assert torch.equal(again.t_embedder.mlp[0].weight, model.t_embedder.mlp[0].weight)


@pytest.mark.parametrize("family", ["dit", "sit"])
def test_export_cli_converts_each_family(tmp_path, family):
    from meanflow import export

    state = random_official_state(learn_sigma=True, seed=4)
    if family == "dit":  # a released checkpoint: the bare EMA state dict
        torch.save(state, tmp_path / "official.pt")
    else:  # a train.py checkpoint, with the run's argparse.Namespace as "args"
        args = argparse.Namespace(model="SiT-XL/2", image_size=256, path_type="Linear")
        torch.save({"model": state, "ema": state, "opt": {}, "args": args}, tmp_path / "official.pt")
    out = str(tmp_path / "converted")
    export.main(
        ["--ckpt", str(tmp_path / "official.pt"), "--out", out, f"--official-{family}", "--num-heads", "2"]
    )
    model = DiT.from_pretrained(out).to(F64)
    z, t, y, (_, r) = cases()
    peer = as_f64(state)
    ref = peer_forward(peer, z, 1000 * t, y) if family == "dit" else -peer_forward(peer, z, 1 - t, y)
    with torch.no_grad():
        assert rel_err(model(z, r, t, y), ref[:, :CHANNELS]) <= FP32_TOL


def test_export_of_an_official_checkpoint_is_reproducible(tmp_path):
    """The fresh second time embedder's input layer is drawn from a fixed seed: one checkpoint
    exported twice gives the same weights, whatever the global RNG did in between."""
    from safetensors.torch import load_file

    from meanflow import export

    torch.save(random_official_state(learn_sigma=False, seed=5), tmp_path / "official.pt")
    weights = []
    for k, seed in enumerate((1, 2)):
        torch.manual_seed(seed)
        out = str(tmp_path / f"converted{k}")
        export.main(
            ["--ckpt", str(tmp_path / "official.pt"), "--out", out, "--official-dit", "--num-heads", "2"]
        )
        weights.append(load_file(f"{out}/model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_an_official_pipeline_names_imagenet_classes_only_for_1000(monkeypatch):
    """An official DiT or SiT of ImageNet's 1000 labels gets ImageNet's names; one of another
    label count (fine-tuned on other data) gets none rather than names of the wrong classes."""
    from meanflow import class_names
    from meanflow.export import pipeline_id2label

    names = [f"class {i}" for i in range(1000)]
    monkeypatch.setattr(class_names, "imagenet_readable_names", lambda: names)  # torchvision's, or none
    model = DiT.from_official_dit(random_official_state(learn_sigma=False), num_heads=HEADS)
    assert model.config.num_classes == CLASSES
    for family in ("dit", "sit"):
        assert pipeline_id2label("official.pt", model, family) == {}
    imagenet = argparse.Namespace(config=argparse.Namespace(num_classes=1000))
    assert pipeline_id2label("official.pt", imagenet, "dit") == dict(enumerate(names))
