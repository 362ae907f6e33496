"""What MeanFlowLoss and FlowMatchingLoss refuse, naming the argument, instead of a loss that is
NaN (or 0) without a word or an error from deep inside the step (docs/design.md section 3)."""

import pytest
import torch

from meanflow.loss import FlowMatchingLoss, MeanFlowLoss

NAN, INF = float("nan"), float("inf")
OBJECTIVES = [MeanFlowLoss, FlowMatchingLoss]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["meanflow", "fm"])
@pytest.mark.parametrize("name", ["time_mean", "time_std"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_time_options_must_be_finite(objective, name, value):
    with pytest.raises(ValueError, match=name):
        objective(**{name: value})


@pytest.mark.parametrize("name", ["adaptive_p", "adaptive_c", "cfg_w", "cfg_k"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_weights_and_guidance_must_be_finite(name, value):
    with pytest.raises(ValueError, match=name):
        MeanFlowLoss(**{name: value})


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["meanflow", "fm"])
def test_options_must_be_numbers_not_strings_or_bools(objective):
    with pytest.raises(TypeError, match="time_mean must be a number, got str"):
        objective(time_mean="0")
    with pytest.raises(ValueError, match="class_dropout"):
        objective(class_dropout=True)


@pytest.mark.parametrize(
    "objective",
    [MeanFlowLoss(), MeanFlowLoss(tangent_rows="all"), FlowMatchingLoss()],
    ids=["meanflow", "meanflow-all-rows", "fm"],
)
def test_an_empty_batch_is_refused(tiny, objective):
    """It raised 'not enough values to unpack' (rows split) or gave a NaN loss (a mean over none)."""
    model = tiny()
    x, y = torch.randn(0, 1, 8, 8), torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"x must hold at least one row, got shape \(0, 1, 8, 8\)"):
        objective(model, x, y)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["meanflow", "fm"])
def test_draws_that_do_not_describe_the_batch_are_refused(tiny, objective):
    model = tiny()
    objective = objective()
    x, y = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"noise lacks \['t'\]"):
        objective(model, x, y, noise={k: v for k, v in noise.items() if k != "t"})
    for key in ("t", "r", "drop"):
        with pytest.raises(ValueError, match=rf"noise\['{key}'\] must have shape \(4,\)"):
            objective(model, x, y, noise={**noise, key: noise[key][:3]})
