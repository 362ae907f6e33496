"""A fresh DiT's every parameter as DiT's ``initialize_weights`` makes it: Xavier-uniform
linears (the patch embedding's convolution as a linear over flattened patches) with zero
biases, N(0, 0.02) label table and time-embedder MLPs, adaLN-Zero modulations and a zero
output layer. A parameter left at torch's default init trains, only worse, so the test reads
each one's distribution: a uniform's bound and spread, a normal's spread."""

import math

import pytest
import torch

from meanflow.models import DiT, DiTConfig

HIDDEN, FREQ, CHANNELS, PATCH = 128, 256, 4, 2


def expected_init(name: str, param: torch.Tensor):
    """``("zeros" | "ones" | "normal" | "xavier", scale)`` for a DiT parameter's name."""
    if name.endswith(".bias") or "adaLN_modulation" in name or name.startswith("final_layer.linear"):
        return "zeros", 0.0
    if name.endswith("_norm.weight"):
        return "ones", 1.0
    if name == "y_embedder.embedding_table.weight" or "_embedder.mlp." in name:
        return "normal", 0.02
    fan_out, fan_in = param.shape[0], param[0].numel()  # a convolution: a linear over patches
    return "xavier", math.sqrt(6.0 / (fan_in + fan_out))


def make(time_cond):
    torch.manual_seed(0)
    config = DiTConfig(
        input_size=8, patch_size=PATCH, in_channels=CHANNELS, hidden_size=HIDDEN, depth=2, num_heads=4,
        num_classes=10, time_cond=time_cond, qk_norm=True, frequency_embedding_size=FREQ,
    )  # fmt: skip
    return DiT(config)


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
def test_every_parameter_starts_as_dits_init(time_cond):
    model = make(time_cond)
    second = "h_embedder" if time_cond == "t,h" else "r_embedder"
    names = dict(model.named_parameters())
    # the parameters whose init this test reads, each of them there
    for name in ("x_embedder.proj.weight", "y_embedder.embedding_table.weight",
                 "t_embedder.mlp.0.weight", f"{second}.mlp.2.weight"):  # fmt: skip
        assert name in names
    for name, param in names.items():
        kind, scale = expected_init(name, param)
        w = param.detach().double()
        if kind in ("zeros", "ones"):
            assert torch.equal(w, torch.full_like(w, scale)), name
        elif kind == "normal":
            assert w.numel() >= 1000, name
            assert abs(w.mean().item()) < 0.1 * scale, name
            assert w.std().item() == pytest.approx(scale, rel=0.1), name
        else:  # uniform on [-bound, bound]: std bound / sqrt(3)
            assert w.numel() >= 1000, name
            assert w.abs().max().item() <= scale, name
            assert w.std().item() == pytest.approx(scale / math.sqrt(3), rel=0.05), name
