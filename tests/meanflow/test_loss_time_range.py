"""MeanFlowLoss on hand-built times that cover the whole range of ``t - r``: ``r = 0, t = 1``
(pure noise to data in one step), ``t - r > 0.5``, small gaps and ``r = t``, against the target
``v - (t - r) du/dt`` written out with torch.func.jvp.

Logit-normal draws almost never give ``t - r`` above ~0.4, so a target that clamps or scales
the gap wrongly there would pass every test built on :meth:`MeanFlowLoss.sample_noise`.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow.loss import MeanFlowLoss

# (r, t) per row: the full gap, gaps above 0.5, small gaps, and r = t at both ends and inside.
TIMES = [(0.0, 1.0), (0.1, 0.95), (0.2, 0.8), (0.0, 0.6), (0.45, 0.5), (0.3, 0.3), (1.0, 1.0), (0.0, 0.0)]


def hand_built_noise(x, with_row_lists, generator):
    """Draws for ``x`` with the times of TIMES, no class dropout; with the row lists that
    :meth:`MeanFlowLoss.sample_noise` adds (dual pass on ``r != t`` only) or without them
    (dual pass on every row)."""
    r, t = torch.tensor(TIMES).T
    noise = {
        "t": t,
        "r": r,
        "e": torch.randn(x.shape, generator=generator),
        "drop": torch.zeros(len(TIMES), dtype=torch.bool),
    }
    if with_row_lists:
        noise["tangent_rows"] = (r != t).nonzero().flatten()
        noise["plain_rows"] = (r == t).nonzero().flatten()
    return noise


def row_noise(noise, i, with_row_lists):
    """The draws of row ``i`` alone, as a batch of one."""
    row = {k: noise[k][i : i + 1] for k in ("t", "r", "e", "drop")}
    if with_row_lists:
        dual = row["r"] != row["t"]
        row["tangent_rows"], row["plain_rows"] = dual.nonzero().flatten(), (~dual).nonzero().flatten()
    return row


def guided_velocity(model, z, t, y, v, w, k):
    """``v_g = w v + (1 - w - k) u(z, t, t, null) + k u(z, t, t, y)``, the values in eval mode
    without grad; every time here is inside the default window [0, 1], its ends included."""
    null = torch.full_like(y, model.null_class)
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        u_null, u_cond = model(z, t, t, null), model(z, t, t, y)
    model.train()
    return w * v + (1 - w - k) * u_null + k * u_cond


def per_row_reference(model, x, y, noise, w=1.0, k=0.0):
    """Per-row squared error ``||u(z, r, t) - stopgrad(v_g - (t - r) du/dt)||^2`` with
    ``du/dt`` by torch.func.jvp of the plain forward along ``(v_g, 0, 1)`` (no dropout, no
    adaptive weight), and no clamp: every gap here is in [0, 1]."""
    t, r, e = noise["t"], noise["r"], noise["e"]
    z = (1 - t[:, None, None, None]) * x + t[:, None, None, None] * e
    v_g = guided_velocity(model, z, t, y, e - x, w, k)
    with sdpa_kernel(SDPBackend.MATH):
        with torch.no_grad():
            tangents = (v_g, torch.zeros_like(r), torch.ones_like(t))
            _, dudt = torch.func.jvp(lambda z_, r_, t_: model(z_, r_, t_, y), (z, r, t), tangents)
        u = model(z, r, t, y)
    target = v_g - (t - r)[:, None, None, None] * dudt
    return (u - target).square().flatten(1).sum(1)


def batch(model, g):
    x = torch.randn(len(TIMES), 1, 8, 8, generator=g)
    return x, torch.randint(0, model.config.num_classes, (len(TIMES),), generator=g)


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
@pytest.mark.parametrize("with_row_lists", [True, False], ids=["dual-on-r-neq-t", "dual-on-all"])
def test_loss_over_the_whole_time_range(tiny, time_cond, with_row_lists):
    """The loss (unweighted: a mean of the per-row errors) and its gradients match the
    reference on each row: the batch mean first, then each row alone (one row's error
    is lost in a mean over eight)."""
    model = tiny(time_cond=time_cond)
    g = torch.Generator().manual_seed(2)
    x, y = batch(model, g)
    noise = hand_built_noise(x, with_row_lists, g)
    objective = MeanFlowLoss(cfg_w=1.0, cfg_k=0.0, class_dropout=0.0, adaptive_p=0.0)

    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    per_row = per_row_reference(model, x, y, noise)
    per_row.mean().backward()
    torch.testing.assert_close(loss, per_row.mean(), rtol=1e-6, atol=0)
    for got, p in zip(grads, model.parameters()):
        torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-6 * p.grad.abs().max().item())

    for i, (r, t) in enumerate(TIMES):
        row = row_noise(noise, i, with_row_lists)
        with torch.no_grad():
            row_loss, _ = objective(model, x[i : i + 1], y[i : i + 1], noise=row)
        want = per_row[i].item()
        assert abs(row_loss.item() - want) <= 1e-5 * want, f"r = {r}, t = {t}: {row_loss.item()} != {want}"


@pytest.mark.parametrize("with_row_lists", [True, False], ids=["dual-on-r-neq-t", "dual-on-all"])
def test_guided_loss_over_the_whole_time_range(tiny, with_row_lists):
    """Guidance folded into the target on every row, t = 0 and t = 1 (the window's ends) too."""
    model = tiny()
    g = torch.Generator().manual_seed(3)
    x, y = batch(model, g)
    noise = hand_built_noise(x, with_row_lists, g)
    objective = MeanFlowLoss(cfg_w=1.5, cfg_k=0.3, class_dropout=0.0, adaptive_p=0.0)
    with torch.no_grad():
        loss, _ = objective(model, x, y, noise=noise)
        want = per_row_reference(model, x, y, noise, w=1.5, k=0.3).mean()
    torch.testing.assert_close(loss, want, rtol=1e-6, atol=0)
