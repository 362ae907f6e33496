"""The random draws of a step (docs/design.md section 1, step 1): the logit-normal's own mean
and std, a row split that moves from step to step, and the same number of rows with
``r != t`` in every rank's slice.

The loss tests take their draws from the objective under test and hand the same draws to
the reference, so a draw made with the wrong parameters passes every one of them.
"""

import math

import pytest
import torch

from meanflow.loss import FlowMatchingLoss, MeanFlowLoss, spread_rows

MEAN, STD = 0.7, 1.3  # not the defaults (-0.4, 1.0): an option dropped or swapped shows


def _mean_std(logits):
    """``(mean, std)`` of a sample."""
    return logits.mean().item(), logits.std().item()


def test_meanflow_times_are_the_logit_normal_asked_for():
    """On the rows with ``r != t``, ``t`` and ``r`` are the larger and the smaller of two
    independent logit-normal draws: pooled, their logits are ``N(mean, std)``, and the larger's
    logit has the mean ``mean + std / sqrt(pi)``."""
    objective = MeanFlowLoss(time_mean=MEAN, time_std=STD, ratio_r_neq_t=0.5)
    draws = objective.sample_noise(torch.zeros(40000, 1), torch.Generator().manual_seed(0))
    rows = draws["tangent_rows"]
    t, r = torch.logit(draws["t"][rows].double()), torch.logit(draws["r"][rows].double())
    mean, std = _mean_std(torch.cat([t, r]))
    # 40000 logits: the sample's mean and std are within 0.01 of the true ones (1.5 sigma).
    assert abs(mean - MEAN) <= 0.03 and abs(std - STD) <= 0.03, (mean, std)
    assert abs(t.mean().item() - (MEAN + STD / math.sqrt(math.pi))) <= 0.03


def test_flow_matching_times_are_the_logit_normal_asked_for():
    objective = FlowMatchingLoss(time_mean=MEAN, time_std=STD)
    draws = objective.sample_noise(torch.zeros(40000, 1), torch.Generator().manual_seed(0))
    mean, std = _mean_std(torch.logit(draws["t"].double()))
    assert abs(mean - MEAN) <= 0.03 and abs(std - STD) <= 0.03, (mean, std)


def test_the_rows_with_r_neq_t_move_from_step_to_step():
    """On the CPU too, the spread's phase is a draw of the step's generator: a fixed phase
    would give the same rows ``r != t`` at every step (the same rows of every rank's slice)."""
    objective = MeanFlowLoss()
    x = torch.zeros(16, 1)
    spreads = set()
    for step in range(8):
        draws = objective.sample_noise(x, torch.Generator().manual_seed(step))
        assert torch.equal(draws["tangent_rows"], (draws["r"] != draws["t"]).nonzero().flatten())
        spreads.add(tuple(draws["tangent_rows"].tolist()))
    assert len(spreads) > 1


def _integer_counts():
    """``(ratio, rows)`` with ``rows * ratio`` an integer, ratios that binary floats do not hold."""
    for ratio in (0.1, 0.3, 0.35, 0.7, 0.9):
        for rows in range(1, 1401):
            if abs(rows * ratio - round(rows * ratio)) < 1e-9:
                yield ratio, rows


@pytest.mark.parametrize("phase", [0.0, 0.5, 1 - 2**-24])
def test_exactly_rows_times_ratio_marked_at_any_phase(phase):
    """``180 * 0.35`` is 62.99... in floats: at phase 0 (a float32 uniform draw can be 0) a
    batch of 180 had 62 rows with ``r != t``, not 63, and a rank's slice one row fewer or more
    than at other steps (a new shape for a compiled or CUDA-graphed step)."""
    wrong = [
        (ratio, rows)
        for ratio, rows in _integer_counts()
        if int(spread_rows(rows, ratio, phase).sum()) != round(rows * ratio)
    ]
    assert not wrong, wrong[:5]
    slices = spread_rows(800, 0.7, phase).view(8, 100).sum(1)  # 8 ranks of 100 rows
    assert slices.tolist() == [70] * 8
