"""The DiT against its definitions (docs/design.md section 1; DiT's and MAE's ``models.py``),
where the JVP tests, which compare the model with itself, cannot see a bug: what each time
embedder is fed, the adaLN-Zero start, the fixed 2-D positions, the default time scale, the
preset sizes and the null label."""

import math

import pytest
import torch

from meanflow import PRESETS, DiT, DiTConfig

F64 = torch.float64
SMALL = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=5)


def randomised(**overrides):
    """Every weight random: adaLN-Zero's zeros would hide which time reaches which embedder."""
    model = DiT(DiTConfig(**{**SMALL, **overrides})).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def record_inputs(embedder, seen):
    """Wrap ``embedder``'s forward and jvp so that each call appends the time (and tangent) it gets."""
    forward, jvp = embedder.forward, embedder.jvp

    def recording_forward(t):
        seen.append(("forward", t.clone(), None))
        return forward(t)

    def recording_jvp(t, t_dot, backend=None):
        seen.append(("jvp", t.clone(), t_dot.clone()))
        return jvp(t, t_dot, backend)

    embedder.forward, embedder.jvp = recording_forward, recording_jvp


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
def test_each_time_embedder_gets_its_time(time_cond):
    """``"t,h"``: t and h = t - r (tangent t_dot - r_dot); ``"r,t"``: t and r."""
    model = randomised(time_cond=time_cond)
    second = "h_embedder" if time_cond == "t,h" else "r_embedder"
    first_seen, second_seen = [], []
    record_inputs(model.t_embedder, first_seen)
    record_inputs(getattr(model, second), second_seen)
    z = torch.randn(3, 3, 8, 8, dtype=F64)
    t = torch.tensor([0.9, 0.5, 1.0], dtype=F64)
    r = torch.tensor([0.2, 0.5, 0.0], dtype=F64)
    r_dot, t_dot = torch.tensor([0.3, -1.0, 2.0], dtype=F64), torch.tensor([1.0, 0.5, -0.25], dtype=F64)
    y = torch.tensor([0, 4, 5])
    model(z, r, t, y)
    model.jvp(z, r, t, y, torch.randn_like(z), r_dot=r_dot, t_dot=t_dot)
    want_second = (t - r, t_dot - r_dot) if time_cond == "t,h" else (r, r_dot)
    assert [kind for kind, _, _ in first_seen] == ["forward", "jvp"] == [k for k, _, _ in second_seen]
    for kind, time, tangent in first_seen:
        assert torch.equal(time, t) and (tangent is None or torch.equal(tangent, t_dot)), kind
    for kind, time, tangent in second_seen:
        assert torch.equal(time, want_second[0]), kind
        assert tangent is None or torch.equal(tangent, want_second[1]), kind


def test_every_block_starts_as_the_identity():
    """adaLN-Zero: at initialisation each block returns its input, whatever the conditioning,
    and carries the tangent through unchanged; the final layer gives zero."""
    model = DiT(DiTConfig(**SMALL))
    x, x_dot = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    c_act, c_dot = torch.randn(2, 32), torch.randn(2, 32)
    for i, block in enumerate(model.blocks):
        assert torch.equal(block(x, c_act), x), f"block {i}"
        out, out_dot = block.jvp(x, x_dot, c_act, c_dot, backend="reference")
        assert torch.equal(out, x) and torch.equal(out_dot, x_dot), f"block {i}"
    assert torch.count_nonzero(model.final_layer(x, c_act)) == 0


def test_positions_are_mae_sincos():
    """Token ``k = i * grid + j`` (row i, column j): the first half of the channels embeds the
    column, the second the row, each as ``[sin(p w_c), cos(p w_c)]`` with ``w_c = 10000^(-c / (D / 4))``
    (MAE's ``get_2d_sincos_pos_embed``, which DiT uses), written out here entry by entry."""
    grid, dim = 4, 32
    model = DiT(DiTConfig(**{**SMALL, "hidden_size": dim}))
    quarter = dim // 4
    want = torch.empty(grid * grid, dim, dtype=F64)
    for i in range(grid):
        for j in range(grid):
            for c in range(quarter):
                w = 10000.0 ** (-c / quarter)
                want[i * grid + j, c] = math.sin(j * w)
                want[i * grid + j, quarter + c] = math.cos(j * w)
                want[i * grid + j, 2 * quarter + c] = math.sin(i * w)
                want[i * grid + j, 3 * quarter + c] = math.cos(i * w)
    assert model.pos_embed.shape == (1, grid * grid, dim)
    assert (model.pos_embed[0].double() - want).abs().max() < 1e-6


def test_default_time_scale_feeds_dit_timesteps():
    """Without a ``time_scale`` the time MLP sees DiT's embedding of the timestep ``1000 t``:
    ``[cos(1000 t f_k), sin(1000 t f_k)]``, ``f_k = 10000^(-k / 128)``."""
    model = DiT(DiTConfig(**SMALL)).to(F64)
    fed = []
    model.t_embedder.mlp[0].register_forward_pre_hook(lambda module, args: fed.append(args[0]))
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    model.t_embedder(t)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(128, dtype=F64) / 128)
    args = 1000.0 * t[:, None] * freqs
    want = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    assert (fed[0] - want).abs().max() < 1e-5  # the embedding is computed in float32


def test_presets_are_the_dit_papers():
    """(depth, width, heads) of DiT's Table 1 at patch sizes 2, 4, 8, plus the tiny T."""
    sizes = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
    sizes["T"] = (6, 256, 4)
    want = {f"DiT-{s}/{p}": (d, w, p, h) for s, (d, w, h) in sizes.items() for p in (2, 4, 8)}
    assert PRESETS == want


def test_from_name_overrides_win_over_the_preset():
    cfg = DiTConfig.from_name("DiT-S/2", depth=3, patch_size=4, hidden_size=64, num_heads=4, input_size=16)
    assert (cfg.depth, cfg.patch_size, cfg.hidden_size, cfg.num_heads) == (3, 4, 64, 4)


def test_null_class_is_the_extra_last_row():
    """Labels ``0 .. num_classes - 1`` are classes; ``num_classes`` is the null label, the table's
    extra row, distinct from every class."""
    model = randomised()
    assert model.null_class == 5 and model.y_embedder.embedding_table.num_embeddings == 6
    z = torch.randn(1, 3, 8, 8, dtype=F64)
    null = model(z, 0.2, 0.7, torch.tensor([model.null_class]))
    for label in range(5):
        assert not torch.allclose(null, model(z, 0.2, 0.7, torch.tensor([label])))
