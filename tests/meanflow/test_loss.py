"""MeanFlowLoss against an independent implementation on torch.func.jvp (SPEC.md sections 1, 3)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from meanflow.loss import FlowMatchingLoss, LossModule, MeanFlowLoss, func_jvp


def reference_loss(model, x, y, noise, w, k, t_min=0.0, t_max=1.0, p=1.0, c=1e-3):
    """SPEC.md section 1, steps 2-6, written out with torch.func.jvp of model.forward."""
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
    return loss, u_tgt


def _batch(model, b=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 8, 8, generator=g)
    y = torch.randint(0, model.config.num_classes, (b,), generator=g)
    return x, y


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("time_cond", ["t,h", "r,t"])
@pytest.mark.parametrize(
    "w, k, t_min, t_max", [(1.0, 0.0, 0.0, 1.0), (1.5, 0.5, 0.0, 1.0), (2.0, 0.3, 0.2, 0.8)]
)
def test_matches_func_jvp(tiny, time_cond, w, k, t_min, t_max):
    model = tiny(time_cond=time_cond)
    x, y = _batch(model, b=8)
    objective = MeanFlowLoss(cfg_w=w, cfg_k=k, cfg_t_min=t_min, cfg_t_max=t_max, class_dropout=0.25)
    noise = objective.sample_noise(x, torch.Generator().manual_seed(2))
    assert noise["drop"].any() and (noise["r"] < noise["t"]).any()  # all branches are exercised

    loss, stats = objective(model, x, y, noise=noise)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref, _ = reference_loss(model, x, y, noise, w, k, t_min, t_max)
    ref.backward()
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    assert stats["loss"].item() == loss.item()
    for g, p in zip(grads, model.parameters()):
        assert _rel(g, p.grad) <= 1e-5


def test_target_matches_func_jvp(tiny):
    """u_tgt itself (through the plain MSE stat, the same up to the mean) agrees to 1e-6."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0)
    noise = objective.sample_noise(x, torch.Generator().manual_seed(3))
    _, stats = objective(model, x, y, noise=noise)
    ref, _ = reference_loss(model, x, y, noise, 1.0, 0.5, p=0.0)
    mse_ref = ref.item() / x[0].numel()
    assert abs(stats["mse"].item() - mse_ref) <= 1e-6 * mse_ref


def test_unguided_reduction(tiny):
    """w = 1, k = 0 is plain conditional MeanFlow: v_g = v, whatever the window."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(cfg_w=1.0, cfg_k=0.0)
    assert not objective.guided
    noise = objective.sample_noise(x, torch.Generator().manual_seed(4))
    loss, _ = objective(model, x, y, noise=noise)
    # The guided formula with w=1, k=0 and an explicit v_g = v agree with it.
    guided_form, _ = reference_loss(model, x, y, noise, 1.0, 0.0)
    unguided, _ = reference_loss(model, x, y, noise, 1.0, 0.0, t_min=1.0, t_max=1.0)
    assert abs(loss.item() - guided_form.item()) <= 1e-6 * guided_form.item()
    assert abs(loss.item() - unguided.item()) <= 1e-6 * unguided.item()


def test_generator_and_global_rng(tiny):
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss()
    a, _ = objective(model, x, y, generator=torch.Generator().manual_seed(5))
    b, _ = objective(model, x, y, noise=objective.sample_noise(x, torch.Generator().manual_seed(5)))
    assert a.item() == b.item()
    torch.manual_seed(6)
    c, _ = objective(model, x, y)
    torch.manual_seed(6)
    d, _ = objective(model, x, y)
    assert c.item() == d.item()


def test_gradients_reach_every_parameter(tiny):
    model = tiny()
    x, y = _batch(model)
    loss, _ = MeanFlowLoss()(model, x, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_guidance_runs_in_eval_mode(tiny):
    model = tiny()
    seen = []
    forward = model.forward
    model.forward = lambda *a: (seen.append(model.training), forward(*a))[1]
    x, y = _batch(model)
    MeanFlowLoss(cfg_k=0.5)(model, x, y)
    assert seen == [False] and model.training


def test_sample_noise_statistics():
    objective = MeanFlowLoss(ratio_r_neq_t=0.25, class_dropout=0.1)
    x = torch.zeros(20000, 1, 2, 2)
    n = objective.sample_noise(x, torch.Generator().manual_seed(0))
    t, r = n["t"], n["r"]
    assert (t >= r).all() and (t < 1).all() and (r > 0).all()
    assert abs((r != t).float().mean().item() - 0.25) < 0.02
    assert abs(n["drop"].float().mean().item() - 0.1) < 0.01
    # t = max of two logit-normals: its logit has a mean above -0.4; r = t rows dominate.
    assert torch.logit(t).mean().item() > -0.4
    assert n["e"].shape == x.shape


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
    noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
    loss, _ = objective(model, x, y, noise=noise)
    t = noise["t"][:, None, None, None]
    u = model((1 - t) * x + t * noise["e"], noise["t"], noise["t"], y)
    assert torch.allclose(loss, ((u - (noise["e"] - x)) ** 2).mean(), rtol=1e-6)


def test_loss_module_is_the_loss(tiny):
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss()
    noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
    a, _ = LossModule(model, objective)(x, y, noise)
    b, _ = objective(model, x, y, noise=noise)
    assert a.item() == b.item()


def test_func_jvp_option_gives_the_same_loss_and_gradients(tiny):
    """``jvp=func_jvp`` (torch.func through the plain forward) is the same step as the dual pass."""
    model = tiny()
    with torch.no_grad():  # off adaLN-Zero's zeros, so every parameter gets a gradient
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x, y = _batch(model)
    losses, grads = [], []
    for objective in (MeanFlowLoss(), MeanFlowLoss(jvp=func_jvp)):
        noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
        model.zero_grad()
        with sdpa_kernel(SDPBackend.MATH):
            loss, _ = objective(model, x, y, noise=noise)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
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
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MeanFlowLoss(**kwargs)


def test_bf16_autocast_close_to_fp32(tiny):
    """The trainer's GPU path runs the step under bf16 autocast; the CPU has bf16 autocast too."""
    model = tiny()
    x, y = _batch(model)
    objective = MeanFlowLoss(adaptive_p=0.0)
    noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
    ref, _ = objective(model, x, y, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = objective(model, x, y, noise=noise)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - ref.item()) <= 5e-2 * ref.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
