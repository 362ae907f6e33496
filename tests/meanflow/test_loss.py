"""MeanFlowLoss against an independent implementation on torch.func.jvp (docs/design.md sections 1, 3).

At the default adaptive weight (p = 1, c = 1e-3) a row's loss is l / (l + c) ~= 1 whatever
its error l: a float32 comparison of loss values there cannot see a wrong target. Tests at
that weight also compare the unweighted error ``stats["l"]`` (and the gradients); tests
that compare only loss values run the plain MSE (``adaptive_p=0``).
"""

import math

import pytest
import torch
from numerics import rel_err
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow.loss import FlowMatchingLoss, LossModule, MeanFlowLoss, func_jvp, spread_rows


def reference_loss(model, x, y, noise, w, k, t_min=0.0, t_max=1.0, p=1.0, c=1e-3):
    """docs/design.md section 1, steps 2-6, written out with torch.func.jvp of model.forward:
    ``(loss, l)``, ``l`` the per-sample squared error before the weight (detached)."""
    t, r, e, drop = noise["t"], noise["r"], noise["e"], noise["drop"]
    tb = t[:, None, None, None]
    z = (1 - tb) * x + tb * e
    v = e - x
    null = torch.full_like(y, model.null_class)
    y_in = torch.where(drop, null, y)
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        u_null = model(z, t, t, null)
        u_cond = model(z, t, t, y)
    model.train()
    v_g = v.clone()
    for i in range(x.shape[0]):
        if not drop[i] and t_min <= t[i] <= t_max:
            v_g[i] = w * v[i] + (1 - w - k) * u_null[i] + k * u_cond[i]
    with sdpa_kernel(SDPBackend.MATH):
        with torch.no_grad():
            _, dudt = torch.func.jvp(
                lambda z_, r_, t_: model(z_, r_, t_, y_in),
                (z, r, t),
                (v_g, torch.zeros_like(r), torch.ones_like(t)),
            )
        u = model(z, r, t, y_in)
    u_tgt = v_g - (t - r).clamp(0, 1)[:, None, None, None] * dudt
    per_sample = ((u - u_tgt) ** 2).sum(dim=(1, 2, 3))
    loss = (per_sample / (per_sample.detach() + c) ** p).mean()
    return loss, per_sample.detach()


def _batch(model, b=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 8, 8, generator=g)
    y = torch.randint(0, model.config.num_classes, (b,), generator=g)
    return x, y


def assert_grads_close(grads, ref_grads, tol):
    """Each gradient relative to its own scale; a gradient that is zero in exact arithmetic
    against a hundredth of the largest one (the tiny DiT's gradients span 0.01-0.25)."""
    floor = 1e-2 * max(g.abs().max().item() for g in ref_grads)
    for i, (g, ref) in enumerate(zip(grads, ref_grads)):
        assert rel_err(g, ref, floor) <= tol, f"gradient {i}"


def _draws(objective, x, seed, **kwargs):
    return objective.sample_noise(x, torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
@pytest.mark.parametrize(
    "w, k, t_min, t_max",
    # unguided; both guidance terms; w alone (k = 0: no conditional pass);
    # w + k = 1 (no null pass)
    [
        (1.0, 0.0, 0.0, 1.0),
        (1.5, 0.5, 0.0, 1.0),
        (2.0, 0.3, 0.2, 0.8),
        (2.0, 0.0, 0.0, 1.0),
        (0.7, 0.3, 0.0, 1.0),
    ],
)
@pytest.mark.parametrize("tangent_rows", ["r_neq_t", "all"])
def test_matches_func_jvp(tiny, time_cond, w, k, t_min, t_max, tangent_rows):
    """Both ways of running the dual pass (rows with r != t only, or all rows) give the loss of
    docs/design.md section 1."""
    model = tiny(time_cond=time_cond)
    x, y = _batch(model, b=8)
    objective = MeanFlowLoss(
        cfg_w=w, cfg_k=k, cfg_t_min=t_min, cfg_t_max=t_max, class_dropout=0.25, tangent_rows=tangent_rows
    )
    noise = _draws(objective, x, 3)
    assert noise["drop"].any() and (noise["r"] < noise["t"]).any()  # all branches are exercised

    loss, stats = objective(model, x, y, noise=noise)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref, ref_l = reference_loss(model, x, y, noise, w, k, t_min, t_max)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    assert stats["loss"].item() == loss.item()
    torch.testing.assert_close(stats["l"], ref_l.mean(), rtol=1e-5, atol=0)  # what the weight hides
    assert_grads_close(grads, [p.grad for p in model.parameters()], 1e-5)


@pytest.mark.parametrize("tangent_rows", ["r_neq_t", "all"])
def test_float64_end_to_end(tiny, tangent_rows):
    """A float64 model on float64 data: times drawn and squared errors summed in float64, so
    the loss and its gradients equal the independent torch.func.jvp loss to float64 rounding."""
    model = tiny().double()
    x, y = _batch(model, b=8)
    x = x.double()
    objective = MeanFlowLoss(cfg_w=1.5, cfg_k=0.5, class_dropout=0.25, tangent_rows=tangent_rows)
    noise = _draws(objective, x, 3)
    assert noise["t"].dtype == noise["r"].dtype == torch.float64
    loss, stats = objective(model, x, y, noise=noise)
    assert loss.dtype == torch.float64
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref, ref_l = reference_loss(model, x, y, noise, 1.5, 0.5)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-12 * abs(ref.item())
    torch.testing.assert_close(stats["l"], ref_l.mean(), rtol=1e-10, atol=0)
    assert_grads_close(grads, [p.grad for p in model.parameters()], 1e-10)


def test_flow_matching_float64(tiny):
    model = tiny().double()
    x, y = _batch(model)
    objective = FlowMatchingLoss()
    noise = _draws(objective, x.double(), 3)
    loss, _ = objective(model, x.double(), y, noise=noise)
    t = noise["t"][:, None, None, None]
    u = model(
        (1 - t) * x.double() + t * noise["e"],
        noise["t"],
        noise["t"],
        torch.where(noise["drop"], model.null_class, y),
    )
    assert loss.dtype == torch.float64
    assert abs(loss.item() - (u - (noise["e"] - x.double())).square().mean().item()) <= 1e-13 * loss.item()


@pytest.mark.parametrize("p, c", [(0.5, 500.0), (2.0, 2000.0)])
def test_adaptive_weight_options(tiny, p, c):
    """The weight ``1 / stopgrad(l + c)^p`` with the ``p`` and ``c`` asked for. The tiny DiT's
    ``l`` is ~2000: at the default ``c = 1e-3`` and ``p = 1`` the loss is 1 - 5e-7 whatever ``l``
    and ``c``, so here ``c`` is of ``l``'s size and the loss's value depends on both."""
    model = tiny()
    x, y = _batch(model, b=8)
    objective = MeanFlowLoss(adaptive_p=p, adaptive_c=c)
    noise = _draws(objective, x, 3)
    loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    grads = [param.grad.clone() for param in model.parameters()]
    model.zero_grad()
    ref, _ = reference_loss(model, x, y, noise, 1.0, 0.5, p=p, c=c)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    assert_grads_close(grads, [param.grad for param in model.parameters()], 1e-5)


def test_target_matches_func_jvp(tiny):
    """u_tgt itself (through the plain MSE stat, the same up to the mean) agrees to 1e-6."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0)
    noise = _draws(objective, x, 3)
    _, stats = objective(model, x, y, noise=noise)
    ref, _ = reference_loss(model, x, y, noise, 1.0, 0.5, p=0.0)
    mse_ref = ref.item() / x[0].numel()
    assert abs(stats["mse"].item() - mse_ref) <= 1e-6 * mse_ref


def test_unguided_reduction(tiny):
    """w = 1, k = 0 is plain conditional MeanFlow: v_g = v, whatever the window (plain MSE:
    at the default weight the values compared would be ~1 whatever the target)."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(cfg_w=1.0, cfg_k=0.0, adaptive_p=0.0)
    assert not objective.guided
    noise = _draws(objective, x, 4)
    loss, _ = objective(model, x, y, noise=noise)
    # The guided formula with w=1, k=0 and an explicit v_g = v agree with it.
    guided_form, _ = reference_loss(model, x, y, noise, 1.0, 0.0, p=0.0)
    unguided, _ = reference_loss(model, x, y, noise, 1.0, 0.0, t_min=1.0, t_max=1.0, p=0.0)
    assert abs(loss.item() - guided_form.item()) <= 1e-6 * guided_form.item()
    assert abs(loss.item() - unguided.item()) <= 1e-6 * unguided.item()


def test_generator_and_global_rng(tiny):
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss()
    # stats["l"]: the loss at the default weight is ~1 whatever the draws.
    _, a = objective(model, x, y, generator=torch.Generator().manual_seed(5))
    _, b = objective(model, x, y, noise=_draws(objective, x, 5))
    assert a["l"].item() == b["l"].item()
    torch.manual_seed(6)
    _, c = objective(model, x, y)
    torch.manual_seed(6)
    _, d = objective(model, x, y)
    assert c["l"].item() == d["l"].item() != a["l"].item()


def test_gradients_reach_every_parameter(tiny):
    model = tiny()
    x, y = _batch(model)
    loss, _ = MeanFlowLoss()(model, x, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("tangent_rows", ["all", "r_neq_t"])
@pytest.mark.parametrize("reuse", [True, False])
# 1 - 0.7 - 0.3 is 5.6e-17 in floats: zero weight all the same.
@pytest.mark.parametrize("w, k, runs_null, runs_cond", [(1.0, 0.5, 1, 1), (2.0, 0.0, 1, 0), (0.7, 0.3, 0, 1)])
def test_guidance_passes(tiny, tangent_rows, reuse, w, k, runs_null, runs_cond):
    """The guidance pass runs in eval mode, the forward on the r = t rows is a training pass.
    A model that computes the same function in both modes (the DiT) lends that forward's value
    to guidance, which then runs the conditional pass on the r != t rows only. A value whose
    weight in v_g is zero (k for the conditional one, 1 - w - k for the null one) is not run."""
    model = tiny()
    if not reuse:
        model.same_in_train_and_eval = False
    calls = []
    forward = model.forward
    model.forward = lambda z, *a: (calls.append((model.training, z.shape[0])), forward(z, *a))[1]
    x, y = _batch(model, b=8)
    objective = MeanFlowLoss(cfg_w=w, cfg_k=k, tangent_rows=tangent_rows)
    noise = _draws(objective, x, 3)
    objective(model, x, y, noise=noise)
    dual = noise["tangent_rows"].numel()
    if tangent_rows == "all":
        assert calls == [(False, 8 * runs_null + 8 * runs_cond)]
    else:
        cond_rows = dual if reuse else 8
        assert calls == [(False, 8 * runs_null + cond_rows * runs_cond), (True, 8 - dual)]
    assert model.training


@pytest.mark.parametrize("w, k", [(1.5, 0.5), (2.0, 0.3), (0.7, 0.3)])
def test_guidance_from_the_training_forward_is_the_same_loss(tiny, w, k):
    """Reading u(z, t, t, y) off the r = t rows' forward changes no loss or gradient."""
    errors, grads = [], []
    for reuse in (True, False):
        model = tiny()
        model.same_in_train_and_eval = reuse
        x, y = _batch(model, b=8)
        objective = MeanFlowLoss(cfg_w=w, cfg_k=k, class_dropout=0.25)
        loss, stats = objective(model, x, y, noise=_draws(objective, x, 3))
        loss.backward()
        errors.append(stats["l"].item())
        grads.append([p.grad for p in model.parameters()])
    assert abs(errors[0] - errors[1]) <= 1e-6 * abs(errors[1])
    assert_grads_close(*grads, 1e-5)


def test_sample_noise_statistics():
    objective = MeanFlowLoss(ratio_r_neq_t=0.25, class_dropout=0.1)
    x = torch.zeros(20000, 1, 2, 2)
    n = _draws(objective, x, 0)
    t, r = n["t"], n["r"]
    assert (t >= r).all() and (t < 1).all() and (r > 0).all()
    assert (r != t).sum().item() == 5000
    assert abs(n["drop"].float().mean().item() - 0.1) < 0.01
    # t = max of two logit-normals: its logit has a mean above -0.4; r = t rows dominate.
    assert torch.logit(t).mean().item() > -0.4
    assert n["e"].shape == x.shape


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.3, 1 / 3, 0.5, 1.0])
def test_spread_rows(ratio):
    """Every window of L rows holds floor or ceil of L * ratio marked rows, and over the phase
    every row is marked with probability ratio."""
    phases = torch.linspace(0, 1, 401)[:-1].tolist()
    marks = torch.stack([spread_rows(24, ratio, phase) for phase in phases])
    for length in (1, 5, 8, 24):
        counts = marks.unfold(1, length, 1).sum(-1).float()
        assert counts.min() >= math.floor(length * ratio - 1e-9)
        assert counts.max() <= math.ceil(length * ratio + 1e-9)
    # (up to the grid of 400 phases)
    assert (marks.double().mean(0) - ratio).abs().max() <= 1 / 400 + 1e-9


def test_sample_noise_rank_slices():
    """A rank's ``rows`` are the whole batch's draws sliced, its row lists index its rows with
    r != t and r = t, and their sizes do not change from step to step."""
    objective = MeanFlowLoss()
    x = torch.zeros(16, 1, 2, 2)
    sizes = set()
    for step in range(6):
        whole = _draws(objective, x, step)
        for rank in range(4):
            sl = slice(4 * rank, 4 * rank + 4)
            part = _draws(objective, x, step, rows=sl)
            for key in ("t", "r", "e", "drop"):
                assert torch.equal(part[key], whole[key][sl]), key
            neq = (part["r"] != part["t"]).nonzero().flatten()
            assert torch.equal(part["tangent_rows"], neq)
            assert torch.equal(part["plain_rows"], (part["r"] == part["t"]).nonzero().flatten())
            sizes.add((part["tangent_rows"].numel(), part["plain_rows"].numel()))
    assert sizes == {(1, 3)}
    with pytest.raises(TypeError, match="rows"):
        objective.sample_noise(x, rows=[0, 1])


@pytest.mark.gpu
def test_sample_noise_on_cuda_waits_for_nothing():
    """On a CUDA generator the draws need no host sync (no ``.item()``, no blocking copy): the
    phase of the row spread comes from the generator's host-side state. Rank slices are still
    the whole batch's draws, and the spread changes from step to step."""
    objective = MeanFlowLoss()
    x = torch.zeros(64, 4, 8, 8, device="cuda")
    g = torch.Generator(device="cuda")
    spreads = set()
    for step in range(8):
        torch.cuda.set_sync_debug_mode("error")
        try:
            part = objective.sample_noise(x, g.manual_seed(step), rows=slice(16, 32))
            whole = objective.sample_noise(x, g.manual_seed(step))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for key in ("t", "r", "e", "drop", "tangent_rows"):
            assert part[key].device.type == "cuda", key
        for key in ("t", "r", "e", "drop"):
            assert torch.equal(part[key], whole[key][16:32]), key
        assert torch.equal(whole["tangent_rows"], (whole["r"] != whole["t"]).nonzero().flatten())
        assert torch.equal(part["tangent_rows"], (part["r"] != part["t"]).nonzero().flatten())
        spreads.add(tuple(whole["tangent_rows"].tolist()))
    assert len(spreads) > 1


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_rows_all_plain_or_all_dual(tiny, ratio):
    """With no row (or every row) keeping r != t, one of the two passes is skipped."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(ratio_r_neq_t=ratio, adaptive_p=0.0)
    noise = _draws(objective, x, 0)
    loss, _ = objective(model, x, y, noise=noise)
    full, _ = MeanFlowLoss(ratio_r_neq_t=ratio, adaptive_p=0.0, tangent_rows="all")(model, x, y, noise=noise)
    torch.testing.assert_close(loss, full)


def test_noise_without_row_lists_runs_the_whole_batch(tiny):
    """A hand-made ``noise`` (no ``tangent_rows``) is honoured as given: any r, every row dual."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0)
    noise = _draws(objective, x, 0)
    custom = {k: noise[k] for k in ("t", "r", "e", "drop")}
    custom["r"] = custom["t"] * 0.5  # every row r != t
    a, _ = objective(model, x, y, noise=custom)
    b, _ = reference_loss(model, x, y, custom, w=1.0, k=0.5, p=0.0)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=0)


def test_unconditional_model(tiny):
    model = tiny(num_classes=0)
    x = torch.randn(4, 1, 8, 8)
    loss, _ = MeanFlowLoss()(model, x, None)
    loss.backward()
    assert torch.isfinite(loss)


def test_flow_matching(tiny):
    model = tiny()
    x, y = _batch(model)
    objective = FlowMatchingLoss(class_dropout=0.0)
    noise = _draws(objective, x, 0)
    loss, _ = objective(model, x, y, noise=noise)
    t = noise["t"][:, None, None, None]
    u = model((1 - t) * x + t * noise["e"], noise["t"], noise["t"], y)
    assert torch.allclose(loss, ((u - (noise["e"] - x)) ** 2).mean(), rtol=1e-6)


def test_loss_module_is_the_loss(tiny):
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss()
    noise = _draws(objective, x, 0)
    a, a_stats = LossModule(model, objective)(x, y, noise)
    b, b_stats = objective(model, x, y, noise=noise)
    assert a.item() == b.item()
    assert {k: v.item() for k, v in a_stats.items()} == {k: v.item() for k, v in b_stats.items()}


def test_func_jvp_option_gives_the_same_loss_and_gradients(tiny):
    """``jvp=func_jvp`` (torch.func through the plain forward) is the same step as the dual pass."""
    model = tiny()
    with torch.no_grad():  # off adaLN-Zero's zeros, so every parameter gets a gradient
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x, y = _batch(model)
    losses, errors, grads = [], [], []
    for objective in (MeanFlowLoss(), MeanFlowLoss(jvp=func_jvp)):
        noise = _draws(objective, x, 0)
        model.zero_grad()
        with sdpa_kernel(SDPBackend.MATH):
            loss, stats = objective(model, x, y, noise=noise)
        loss.backward()
        losses.append(loss.detach())
        errors.append(stats["l"])
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    torch.testing.assert_close(errors[0], errors[1], rtol=1e-5, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert grads[0].abs().max() > 0


def test_jvp_must_be_a_function():
    with pytest.raises(TypeError, match="jvp"):
        MeanFlowLoss(jvp="torch.func")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(ratio_r_neq_t=1.5), "ratio_r_neq_t"),
        (dict(cfg_k=1.0), "cfg_k"),
        (dict(cfg_t_min=0.9, cfg_t_max=0.1), "cfg_t_min"),
        (dict(adaptive_c=0.0), "adaptive_c"),
        (dict(time_std=0.0), "time_std"),
        (dict(class_dropout=-0.1), "class_dropout"),
        (dict(tangent_rows="some"), "tangent_rows"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MeanFlowLoss(**kwargs)


@pytest.mark.parametrize("objective", [MeanFlowLoss(), FlowMatchingLoss()], ids=["meanflow", "fm"])
def test_batch_mismatch_names_the_argument(tiny, objective):
    model = tiny()
    x, y = _batch(model)
    with pytest.raises(ValueError, match=r"y must hold one label per row of x, shape \(6,\), got \(5,\)"):
        objective(model, x, y[:5])
    with pytest.raises(ValueError, match=r"noise\['e'\] must have x's shape"):
        objective(model, x, y, noise=_draws(objective, x[:4], 0))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        objective(model, y, y)


def test_bf16_autocast_close_to_fp32(tiny):
    """The trainer's GPU path runs the step under bf16 autocast; the CPU has bf16 autocast too."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0)
    noise = _draws(objective, x, 0)
    ref, _ = objective(model, x, y, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) <= 5e-2 * ref.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tangent_rows", ["r_neq_t", "all"])
def test_16_bit_model_trains_close_to_fp32(tiny, dtype, tangent_rows):
    """A model cast to 16 bits on 16-bit data, its times drawn in float32 (docs/design.md
    section 1): the dual pass takes times of another dtype than its input."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0, tangent_rows=tangent_rows)
    noise = _draws(objective, x.to(dtype), 0)
    assert noise["t"].dtype == torch.float32 and noise["e"].dtype == dtype
    ref, _ = objective(model, x, y, noise={**noise, "e": noise["e"].float()})
    low = model.to(dtype)
    loss, _ = objective(low, x.to(dtype), y, noise=noise)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) <= 5e-2 * ref.item()
    assert all(torch.isfinite(p.grad).all() for p in low.parameters())


@pytest.mark.parametrize("objective", [MeanFlowLoss(), FlowMatchingLoss()], ids=["meanflow", "fm"])
def test_labels_out_of_range_even_where_dropped(tiny, objective):
    """A bad label is an error even on a row that class dropout gives the null label."""
    model = tiny()
    x, y = _batch(model, b=4)
    y[-1] = model.config.num_classes + 4
    noise = _draws(objective, x, 0)
    noise["drop"] = torch.ones_like(noise["drop"])
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 4\]"):
        objective(model, x, y, noise=noise)
    y[-1] = model.null_class  # the null label is a label
    objective(model, x, y, noise=noise)


def test_guidance_pass_gives_the_mode_back_after_an_error(tiny):
    class EvalFails(torch.nn.Module):
        null_class = 5

        def forward(self, z, r, t, y):
            raise RuntimeError("eval forward failed")

    model = EvalFails()
    x, y = _batch(tiny())
    with pytest.raises(RuntimeError, match="eval forward failed"):
        MeanFlowLoss(cfg_w=1.5, cfg_k=0.5)(model, x, y)
    assert model.training
