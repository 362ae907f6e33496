"""What MeanFlowLoss and FlowMatchingLoss refuse, naming the argument, instead of a loss that is
NaN (or 0) without a word or an error from deep inside the step (docs/design.md section 3)."""

import pytest

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
