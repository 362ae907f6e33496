"""The sinusoidal time embedding on edge-case arguments: an odd width down to 1, and the
refusals its primal shares with its jvp (docs/design.md section 3)."""

import pytest
import torch

import mfkernels
from mfkernels import reference


@pytest.mark.parametrize("dim", [1, 3])
def test_an_odd_width_gets_its_zero_column_even_at_1(dim):
    """At dim 1 there is no frequency: the embedding is the zero column alone, not (batch, 0)."""
    t = torch.rand(3)
    emb = mfkernels.timestep_embedding(t, dim)
    value, tangent = mfkernels.timestep_embedding_jvp(t, torch.ones(3), dim)
    ref_value, ref_tangent = reference.timestep_embedding_jvp(t, torch.ones(3), dim)
    for out in (emb, value, tangent, ref_value, ref_tangent):
        assert out.shape == (3, dim)
        assert (out[:, -1] == 0).all()


@pytest.mark.parametrize(
    "t, dim, max_period, match",
    [
        (torch.tensor(0.5), 8, 10000.0, r"t must be a \(batch,\) tensor, got \(\)"),
        (torch.rand(3, 1), 8, 10000.0, r"t must be a \(batch,\) tensor, got \(3, 1\)"),
        (0.5, 8, 10000.0, r"t must be a \(batch,\) tensor, got float"),
        (torch.rand(3), -2, 10000.0, "dim must be a positive int"),
        (torch.rand(3), 8, 0.0, "max_period must be a positive finite number"),
    ],
)
def test_the_primal_refuses_what_its_jvp_refuses(t, dim, max_period, match):
    """The primal gave an IndexError, a (3, 1, 8) embedding, or a 'math domain error'."""
    with pytest.raises(ValueError, match=match):
        mfkernels.timestep_embedding(t, dim, max_period)


def test_integer_timesteps_as_dit_gives_them():
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(mfkernels.timestep_embedding(t, 8), mfkernels.timestep_embedding(t.float(), 8))
