"""The trainer's step, eager and CUDA-graphed: both run one body, so N steps of either give the
same weights, EMAs and optimizer state; the graphed step's device scalars (learning rate, EMA
weights) follow the schedule; a checkpoint of either resumes under the other; a step that
cannot be a graph says why, and ``cuda_graphs on`` then refuses to start."""

import copy
import socket

import pytest
import torch
from conftest import make_tiny
from test_train import _assert_same_state, _load, tiny_config

from meanflow import MeanFlowLoss, train
from meanflow.loss import LossModule
from meanflow.train_state import load_optimizer_state
from meanflow.train_step import GraphedStep, train_step, update_ema

# The EMA warmup caps a decay at (1 + step) / (10 + step) (0.1 to 0.36 over five steps): 0.2
# binds from the third step, so the two EMAs differ within the tests' runs.
DECAYS = [0.2, 0.99]
GRAD_CLIP = 0.5


def setup(device, graphed: bool):
    model = make_tiny(num_classes=5).to(device)
    emas = [copy.deepcopy(model).requires_grad_(False) for _ in DECAYS]
    kwargs = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    if graphed and device.type == "cuda":
        kwargs["capturable"] = True
    opt = torch.optim.AdamW(model.parameters(), **kwargs)
    return model, emas, opt, LossModule(model, MeanFlowLoss(cfg_w=2.0, cfg_k=0.25))


def draws(device, steps, batch=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, 1, 8, 8, generator=g).to(device)
    y = torch.randint(0, 5, (steps, batch), generator=g).to(device)
    objective, gen = MeanFlowLoss(), torch.Generator(device=device)
    noises = [objective.sample_noise(x[i], gen.manual_seed(i)) for i in range(steps)]
    return [((x[i], y[i]), noises[i]) for i in range(steps)]


def lr_at(step):
    """A warmup whose rates are exact in float32, as the graphed step's tensor holds them."""
    return 2.0**-10 * min(1.0, (step + 1) / 4)


def run(device, steps, graphed, autocast=None, warmup=3):
    model, emas, opt, step_module = setup(device, graphed)
    autocast = autocast or torch.autocast(device.type, enabled=False)
    stats = []
    if graphed:
        step_fn = GraphedStep(step_module, model, emas, opt, autocast, GRAD_CLIP, DECAYS, device, warmup)
        for step, (batch, noise) in enumerate(draws(device, steps)):
            stats.append(step_fn(step, batch, noise, lr_at(step)))
    else:
        for step, (batch, noise) in enumerate(draws(device, steps)):
            args = step_module, model, emas, opt, step, batch, noise, lr_at(step)
            stats.append(train_step(*args, autocast=autocast, grad_clip=GRAD_CLIP, decays=DECAYS))
    return model, emas, opt, stats


def assert_same(a, b, atol=0.0, rtol=0.0):
    (model_a, emas_a, opt_a, stats_a), (model_b, emas_b, opt_b, stats_b) = a, b
    for ma, mb in zip((model_a, *emas_a), (model_b, *emas_b)):
        for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
            torch.testing.assert_close(pa, pb, atol=atol, rtol=rtol, msg=name)
    for sa, sb in zip(stats_a, stats_b):
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=rtol, msg=key)
    for pa, pb in zip(opt_a.state.values(), opt_b.state.values()):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(pa[key], pb[key], atol=atol, rtol=rtol, msg=key)


def test_the_graphed_steps_body_is_the_eager_step():
    """On the CPU the graphed step never captures (its warmup outlasts the run), so this is its
    eager path with a tensor learning rate and tensor EMA weights: bitwise the eager step."""
    cpu = torch.device("cpu")
    eager, graphed = run(cpu, 5, graphed=False), run(cpu, 5, graphed=True, warmup=10**9)
    assert_same(eager, graphed)
    assert graphed[2].param_groups[0]["lr"].item() == pytest.approx(lr_at(4))


def test_eager_steps_on_the_extension_are_the_reference_steps(monkeypatch):
    """The extension's CPU kernels are a speed-up, not another recipe: five steps give the
    weights, EMAs and stats of torch's own composites (the reference backend) to float32
    rounding."""
    pytest.importorskip("mfkernels._C")
    cpu, steps = torch.device("cpu"), 5
    fast = run(cpu, steps, graphed=False)
    monkeypatch.setenv("MFK_BACKEND", "reference")
    ref = run(cpu, steps, graphed=False)
    # The key bias adds one constant to a row's scores, which the softmax removes: its gradient
    # is rounding noise, which Adam scales up to steps of up to about lr (here 1e-3) each.
    key_bias = {f"blocks.{i}.attn.qkv.bias" for i in range(2)}
    for model_a, model_b in zip((fast[0], *fast[1]), (ref[0], *ref[1])):
        for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
            if name in key_bias:
                d = a.shape[0] // 3
                torch.testing.assert_close(a[d : 2 * d], b[d : 2 * d], atol=steps * 2.0**-10, rtol=0)
                a, b = torch.cat([a[:d], a[2 * d :]]), torch.cat([b[:d], b[2 * d :]])
            torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5, msg=name)
    for sa, sb in zip(fast[3], ref[3]):
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], atol=0, rtol=1e-5, msg=key)


@pytest.mark.parametrize("decay", [0.5, 0.999])
def test_ema_with_a_tensor_weight_is_the_float_one(decay):
    model, ema_float = make_tiny(seed=1), make_tiny(seed=2)
    ema_tensor = copy.deepcopy(ema_float)
    update_ema(ema_float, model, 1 - decay)
    update_ema(ema_tensor, model, torch.tensor(1 - decay))
    before = make_tiny(seed=2)
    for a, b, m, e in zip(
        ema_float.parameters(), ema_tensor.parameters(), model.parameters(), before.parameters()
    ):
        torch.testing.assert_close(a, e + (1 - decay) * (m - e), rtol=1e-6, atol=1e-7)
        assert torch.equal(a, b)


def test_a_capturable_optimizers_state_resumes_in_an_eager_run():
    """A checkpoint written with CUDA graphs on holds capturable param groups and a tensor
    learning rate: resumed on the CPU it keeps this run's flags and float lr, and steps."""
    model, _, opt, _ = setup(torch.device("cpu"), graphed=False)
    model(torch.zeros(2, 1, 8, 8), 0.1, 0.5, torch.zeros(2, dtype=torch.long)).sum().backward()
    opt.step()
    state = opt.state_dict()
    for group in state["param_groups"]:
        group.update(capturable=True, lr=torch.tensor(3e-4))
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    load_optimizer_state(fresh, state)
    group = fresh.param_groups[0]
    assert group["capturable"] is False and group["fused"] is True and group["lr"] == 1e-3
    fresh.step()  # a capturable group would raise here on CPU tensors


def test_cuda_graphs_on_the_cpu(tmp_path, fake_mnist, capsys):
    with pytest.raises(ValueError, match="cuda_graphs is 'on' but .* not a GPU"):
        train.main(tiny_config(tmp_path / "on", fake_mnist, cuda_graphs="on", device="cpu"))
    summary = train.main(
        tiny_config(tmp_path / "auto", fake_mnist, cuda_graphs="auto", device="cpu", steps=1)
    )
    out = capsys.readouterr().out
    assert out.count("CUDA graphs: off (the device is cpu, not a GPU)") == 1 and summary["steps_run"] == 1


def test_a_warmup_as_long_as_the_run_is_noted_once(tmp_path, fake_mnist, capsys):
    """A warmup that outlasts the run never reaches lr: said once, and the run goes on (a
    short trial of a long recipe is a use)."""
    summary = train.main(tiny_config(tmp_path / "short", fake_mnist, steps=2, warmup_steps=2))
    out = capsys.readouterr().out
    assert out.count("note: warmup_steps 2 >= steps 2: the lr rises for the whole run") == 1
    assert summary["steps_run"] == 2
    train.main(tiny_config(tmp_path / "long", fake_mnist, steps=3, warmup_steps=2))
    assert "warmup_steps" not in capsys.readouterr().out


def test_an_adapter_model_is_not_captured(tmp_path, fake_mnist):
    pytest.importorskip("timm")
    vit = {"patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2}
    config = tiny_config(
        tmp_path, fake_mnist, cuda_graphs="on", model_class="timm.VisionTransformer", model_kwargs=vit
    )
    with pytest.raises(ValueError, match="timm.VisionTransformer trains through torch.func.jvp"):
        train.build_step(None, None, [], None, config, MeanFlowLoss(), 1, torch.device("cuda"), master=False)


def test_a_dual_row_count_that_varies_keeps_the_graphs_off():
    objective = MeanFlowLoss(ratio_r_neq_t=0.3)
    config = train.TrainConfig(batch_size=8)
    assert "not a whole number" in train._row_counts_vary(config, objective, world=1)
    assert train._row_counts_vary(train.TrainConfig(batch_size=10), objective, world=1) is None
    assert (
        train._row_counts_vary(config, MeanFlowLoss(ratio_r_neq_t=0.3, tangent_rows="all"), world=1) is None
    )
    # the count is per rank: 10 rows give 3 dual-pass rows, 5 rows on each of 2 ranks 1.5
    assert train._row_counts_vary(train.TrainConfig(batch_size=10), objective, world=2) == (
        "5 rows per rank x ratio_r_neq_t 0.3 is not a whole number of dual-pass rows"
    )


# ------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gpu_graphed_steps_equal_eager_steps(dtype):
    """Steps 0-2 eager (warmup), 3 captured and replayed, 4-7 replays: the weights, EMAs,
    optimizer moments and stats of eight eager steps."""
    cuda = torch.device("cuda")
    bf16 = dtype == "bf16"
    eager = run(cuda, 8, graphed=False, autocast=torch.autocast("cuda", torch.bfloat16, enabled=bf16))
    graphed = run(
        cuda,
        8,
        graphed=True,
        autocast=torch.autocast("cuda", torch.bfloat16, enabled=bf16, cache_enabled=False),
    )
    tol = dict(atol=2e-2, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-5)
    assert_same(eager, graphed, **tol)


@pytest.mark.gpu
def test_gpu_graphed_steps_never_wait_for_the_gpu():
    cuda = torch.device("cuda")
    model, emas, opt, step_module = setup(cuda, graphed=True)
    autocast = torch.autocast("cuda", torch.bfloat16, cache_enabled=False)
    step_fn = GraphedStep(step_module, model, emas, opt, autocast, GRAD_CLIP, DECAYS, cuda, warmup=2)
    steps = draws(cuda, 6)
    for step, (batch, noise) in enumerate(steps[:3]):  # warmup and capture
        step_fn(step, batch, noise, lr_at(step))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, (batch, noise) in enumerate(steps[3:], start=3):
            stats = step_fn(step, batch, noise, lr_at(step))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(stats["loss"])


@pytest.mark.gpu
def test_gpu_trainer_with_graphs_resumes_exactly(tmp_path, fake_mnist):
    run_config = dict(cuda_graphs="on", device="cuda", steps=8, ckpt_every=4, precision="fp32")
    train.main(tiny_config(tmp_path / "full", fake_mnist, **run_config))
    train.main(tiny_config(tmp_path / "half", fake_mnist, **{**run_config, "steps": 4}))
    assert train.main(tiny_config(tmp_path / "half", fake_mnist, **run_config))["steps_run"] == 4
    full, half = _load(tmp_path / "full" / "last.pt"), _load(tmp_path / "half" / "last.pt")
    _assert_same_state(full, half)


@pytest.mark.gpu
def test_gpu_graphed_step_under_a_one_rank_nccl_group():
    """DDP's gradient hooks captured in the graph (DDP made on the side stream, then the eleven
    eager steps DDP needs, as the trainer does): the weights of the same steps without DDP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        cuda = torch.device("cuda")
        eager = run(cuda, 14, graphed=False)
        model, emas, opt, step_module = setup(cuda, graphed=True)
        stream = torch.cuda.Stream(cuda)
        step_fn = GraphedStep(train.wrap_ddp(step_module, cuda, stream), model, emas, opt,
                              torch.autocast("cuda", enabled=False), GRAD_CLIP, DECAYS, cuda, warmup=11,
                              stream=stream)  # fmt: skip
        stats = [step_fn(i, batch, noise, lr_at(i)) for i, (batch, noise) in enumerate(draws(cuda, 14))]
        assert_same(eager, (model, emas, opt, stats), atol=1e-5, rtol=1e-5)
    finally:
        torch.distributed.destroy_process_group()
