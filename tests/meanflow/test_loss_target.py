"""MeanFlowLoss's target and unweighted error against a float64 reference written here with
``torch.func.jvp`` (docs/design.md section 1, steps 2-6), at the default adaptive weight.

At the default weight (``p = 1``, ``c = 1e-3``) a row's weighted loss is ``l / (l + c)``:
1 - 5e-7 for the tiny DiT's ``l`` of ~2000, whatever the target. A dropped ``(t - r)``, a
swapped ``r`` and ``t``, a tangent of the wrong sign or a wrong guidance mix moves the loss's
value by less than a float32 test can see. These tests read what the weight hides: the
unweighted error ``stats["l"]`` of each row, the arguments the objective hands its ``jvp``,
and the gradient the weight leaves (a constant factor: no gradient through the weight).
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow.loss import MeanFlowLoss, dual_jvp, func_jvp

# (r, t, dropped) per row: the whole gap, gaps above 0.5, small gaps, r = t; class-dropped
# rows with r != t and with r = t. GUIDED's window [0.2, 0.9] leaves out t = 1, 0.95 and 0.1.
ROWS = [
    (0.0, 1.0, False),
    (0.1, 0.95, False),
    (0.2, 0.8, False),
    (0.0, 0.6, False),
    (0.45, 0.5, True),
    (0.3, 0.3, False),
    (0.7, 0.7, False),
    (0.1, 0.1, False),
    (0.5, 0.85, False),
    (0.85, 0.85, True),
]
# (cfg_w, cfg_k, cfg_t_min, cfg_t_max). At the default guidance k = 1 - k = 0.5, so a target
# that weighs u(z, t, t, y) by 1 - k instead of k passes there: GUIDED has k != 1 - k, w != 1
# and a window that leaves rows out.
UNGUIDED = (1.0, 0.0, 0.0, 1.0)
DEFAULT_GUIDANCE = (1.0, 0.5, 0.0, 1.0)
GUIDED = (1.5, 0.3, 0.2, 0.9)


def batch(model, row_lists, seed=0):
    """Float64 ``(x, y, noise)`` with the times and dropout of ROWS; ``noise`` with the row lists
    :meth:`MeanFlowLoss.sample_noise` adds (the dual pass on ``r != t`` only) or without them
    (the dual pass on every row)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(ROWS), 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, model.config.num_classes, (len(ROWS),), generator=g)
    r, t, drop = (torch.tensor(column) for column in zip(*ROWS))
    noise = {
        "t": t.double(),
        "r": r.double(),
        "e": torch.randn(x.shape, generator=g, dtype=x.dtype),
        "drop": drop,
    }
    if row_lists:
        noise["tangent_rows"] = (noise["r"] != noise["t"]).nonzero().flatten()
        noise["plain_rows"] = (noise["r"] == noise["t"]).nonzero().flatten()
    return x, y, noise


def one_row(noise, i):
    """The draws of row ``i`` alone, as a batch of one (its row lists too, if ``noise`` has them)."""
    row = {k: noise[k][i : i + 1] for k in ("t", "r", "e", "drop")}
    if "tangent_rows" in noise:
        dual = row["r"] != row["t"]
        row["tangent_rows"], row["plain_rows"] = dual.nonzero().flatten(), (~dual).nonzero().flatten()
    return row


def reference(model, x, y, noise, w, k, t_min, t_max):
    """docs/design.md section 1, steps 2-6, written out: ``z``, the labels after class dropout,
    ``v_g`` (guidance values in eval mode), ``u`` and ``du/dt`` by ``torch.func.jvp`` of the plain
    forward along ``(v_g, 0, 1)``, ``u_tgt = v_g - (t - r) du/dt`` (every gap here is in [0, 1])
    and the per-row squared error ``l``. No grad anywhere."""
    t, r, e, drop = noise["t"], noise["r"], noise["e"], noise["drop"]
    tb = t.view(-1, 1, 1, 1)
    z = (1 - tb) * x + tb * e
    v = e - x
    null = torch.full_like(y, model.null_class)
    labels = torch.where(drop, null, y)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model.eval()
        u_null, u_cond = model(z, t, t, null), model(z, t, t, y)
        model.train()
        guided = (~drop & (t >= t_min) & (t <= t_max)).view(-1, 1, 1, 1)
        v_g = torch.where(guided, w * v + (1 - w - k) * u_null + k * u_cond, v)
        u, dudt = torch.func.jvp(
            lambda z_, r_, t_: model(z_, r_, t_, labels),
            (z, r, t),
            (v_g, torch.zeros_like(r), torch.ones_like(t)),
        )
    u_tgt = v_g - (t - r).view(-1, 1, 1, 1) * dudt
    return {
        "z": z,
        "labels": labels,
        "v_g": v_g,
        "u": u,
        "u_tgt": u_tgt,
        "l": (u - u_tgt).square().flatten(1).sum(1),
    }


def _describe(i):
    r, t, dropped = ROWS[i]
    return f"row {i} (r = {r}, t = {t}{', dropped' if dropped else ''})"


@pytest.mark.parametrize(
    "guidance", [UNGUIDED, DEFAULT_GUIDANCE, GUIDED], ids=["unguided", "default", "guided"]
)
@pytest.mark.parametrize("jvp", [dual_jvp, func_jvp], ids=["dual_jvp", "func_jvp"])
@pytest.mark.parametrize("row_lists", [True, False], ids=["dual-on-r-neq-t", "dual-on-all"])
@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
def test_unweighted_error_row_by_row_at_the_default_weight(tiny, time_cond, row_lists, jvp, guidance):
    """``stats["l"]`` (the plain squared error, before the weight) and ``stats["mse"]`` of the
    batch and of each row alone equal the reference's, at the default weight, through either
    way of computing ``du/dt``. The loss is the weight applied to the reference's errors."""
    model = tiny(time_cond=time_cond).double()
    x, y, noise = batch(model, row_lists)
    w, k, t_min, t_max = guidance
    objective = MeanFlowLoss(cfg_w=w, cfg_k=k, cfg_t_min=t_min, cfg_t_max=t_max, jvp=jvp)
    assert (objective.adaptive_p, objective.adaptive_c) == (1.0, 1e-3)  # the defaults
    ref = reference(model, x, y, noise, *guidance)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        loss, stats = objective(model, x, y, noise=noise)
        rows = [
            objective(model, x[i : i + 1], y[i : i + 1], noise=one_row(noise, i))[1]["l"]
            for i in range(len(ROWS))
        ]
    # float64 throughout: they agree to ~1e-14 here (1e-10 leaves room for other CPUs' kernels).
    torch.testing.assert_close(stats["l"], ref["l"].mean(), rtol=1e-10, atol=0)
    torch.testing.assert_close(stats["mse"], (ref["u"] - ref["u_tgt"]).square().mean(), rtol=1e-10, atol=0)
    for i, got in enumerate(rows):
        want = ref["l"][i].item()
        assert abs(got.item() - want) <= 1e-10 * want, f"{_describe(i)}: l = {got.item()}, reference {want}"
    torch.testing.assert_close(loss, (ref["l"] / (ref["l"] + 1e-3)).mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_unweighted_error_on_the_objectives_own_draws(tiny, seed):
    """The objective with every default, on the draws of its own ``sample_noise``: the row
    lists it makes must name the rows with ``r != t`` (a row with ``r != t`` on the plain
    forward gets the target ``v_g``, without its ``(t - r) du/dt``)."""
    model = tiny().double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, model.config.num_classes, (16,), generator=g)
    objective = MeanFlowLoss()
    noise = objective.sample_noise(x, g)
    assert 0 < noise["tangent_rows"].numel() < 16
    with torch.no_grad():
        _, stats = objective(model, x, y, noise=noise)
    ref = reference(model, x, y, noise, *DEFAULT_GUIDANCE)
    torch.testing.assert_close(stats["l"], ref["l"].mean(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("guidance", [DEFAULT_GUIDANCE, GUIDED], ids=["default", "guided"])
@pytest.mark.parametrize("row_lists", [True, False], ids=["dual-on-r-neq-t", "dual-on-all"])
def test_the_jvp_gets_its_rows_their_times_and_the_guided_tangent(tiny, row_lists, guidance):
    """The objective's ``jvp`` is called once, on the rows with ``r != t`` (every row without
    row lists), with primals ``z, r, t`` in that order, the labels after class dropout, and the
    tangent ``v_g`` (guidance folded in, ``v`` on dropped rows and outside the window)."""
    model = tiny().double()
    x, y, noise = batch(model, row_lists)
    calls = []

    def recording_jvp(model, z, r, t, labels, v):
        calls.append({"z": z, "r": r, "t": t, "labels": labels, "v_g": v})
        return dual_jvp(model, z, r, t, labels, v)

    w, k, t_min, t_max = guidance
    objective = MeanFlowLoss(cfg_w=w, cfg_k=k, cfg_t_min=t_min, cfg_t_max=t_max, jvp=recording_jvp)
    with torch.no_grad():
        objective(model, x, y, noise=noise)
    ref = reference(model, x, y, noise, *guidance)
    rows = noise["tangent_rows"] if row_lists else torch.arange(len(ROWS))
    assert len(calls) == 1
    (call,) = calls
    assert torch.equal(call["r"], noise["r"][rows]), "r"
    assert torch.equal(call["t"], noise["t"][rows]), "t"
    assert torch.equal(call["labels"], ref["labels"][rows]), "labels"
    for key in ("z", "v_g"):
        torch.testing.assert_close(call[key], ref[key][rows], rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("p, c", [(1.0, 1e-3), (2.0, 1e-3), (1.0, 500.0), (0.5, 2000.0)])
@pytest.mark.parametrize("i", [0, 5], ids=["r-neq-t", "r-eq-t"])
def test_the_adaptive_weight_is_a_constant_factor(tiny, p, c, i):
    """On one row the weighted loss is ``l / (l + c)^p`` with ``l`` the plain squared error,
    and its gradient that of ``l`` times ``1 / (l + c)^p``: the weight is held constant (a
    gradient through it scales the default step by ``c / (l + c)``, ~5e-7)."""
    model = tiny().double()
    x, y, noise = batch(model, row_lists=True)
    row = one_row(noise, i)

    def run(**weight):
        model.zero_grad()
        objective = MeanFlowLoss(cfg_w=1.5, cfg_k=0.3, **weight)
        loss, stats = objective(model, x[i : i + 1], y[i : i + 1], noise=row)
        loss.backward()
        return loss.detach(), stats["l"], torch.cat([q.grad.flatten() for q in model.parameters()])

    plain, error, plain_grad = run(adaptive_p=0.0)
    weighted, weighted_error, grad = run(adaptive_p=p, adaptive_c=c)
    scale = (error + c) ** -p
    assert plain.item() == error.item() == weighted_error.item()
    torch.testing.assert_close(weighted, error * scale, rtol=1e-13, atol=0)
    want = plain_grad * scale
    assert (grad - want).abs().max() <= 1e-10 * want.abs().max()


@pytest.mark.parametrize("row_lists", [True, False], ids=["dual-on-r-neq-t", "dual-on-all"])
def test_no_gradient_flows_through_the_guided_target(tiny, row_lists):
    """With guidance folded in, the plain-MSE loss's gradients are those of
    ``||u - stopgrad(u_tgt)||^2``: neither ``du/dt`` nor a guidance value (nor the forward on the
    rows with ``r = t`` that lends its value to guidance) passes a gradient through the target."""
    model = tiny().double()
    x, y, noise = batch(model, row_lists)
    objective = MeanFlowLoss(cfg_w=1.5, cfg_k=0.3, cfg_t_min=0.2, cfg_t_max=0.9, adaptive_p=0.0)
    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    grads = [q.grad.clone() for q in model.parameters()]
    model.zero_grad()
    ref = reference(model, x, y, noise, *GUIDED)
    with sdpa_kernel(SDPBackend.MATH):
        u = model(ref["z"], noise["r"], noise["t"], ref["labels"])
    (u - ref["u_tgt"]).square().flatten(1).sum(1).mean().backward()
    for n, (got, q) in enumerate(zip(grads, model.parameters())):
        assert (got - q.grad).abs().max() <= 1e-10 * q.grad.abs().max() + 1e-14, f"gradient {n}"
