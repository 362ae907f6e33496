"""The graphed step's plumbing on the CPU, with a stand-in for the CUDA graph: which call
captures, what each replay reads (this step's batch and draws, copied into the graph's own
buffers) and returns (its own stats), and the eager step's learning rate and clipping.
The stand-in runs the captured body again at each replay, as the real graph's kernels do."""

import contextlib
import copy

import pytest
import torch
from conftest import make_tiny
from test_train_step import GRAD_CLIP, assert_same, lr_at

from meanflow import MeanFlowLoss
from meanflow.loss import LossModule
from meanflow.train_step import GraphedStep, graphs_unavailable, train_step

DECAYS = [0.25, 0.9]  # told apart from step 3 on; before, the warmup (1 + step) / (10 + step) caps both
CPU = torch.device("cpu")


class StandInGraph:
    """``torch.cuda.CUDAGraph`` on the CPU. The capture itself runs the body once (a real capture
    only records it; its first replay runs it), so the first replay does nothing; every later
    one runs the body on the graph's input buffers and writes its stats into the graph's
    outputs. Gradients are written, not added to, as in a graph that allocated them."""

    made, owner = [], None  # the graphs made; the GraphedStep that replays them

    def __init__(self):
        self.replays = 0
        StandInGraph.made.append(self)

    def replay(self):
        self.replays += 1
        if self.replays == 1:
            return
        step = StandInGraph.owner
        step.opt.zero_grad(set_to_none=True)
        for static, value in zip(step.outputs.values(), step._body(*step.inputs).values()):
            static.copy_(value)


@pytest.fixture
def stand_in_graph(monkeypatch):
    monkeypatch.setattr(StandInGraph, "made", [])
    monkeypatch.setattr(StandInGraph, "owner", None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", StandInGraph)
    monkeypatch.setattr(torch.cuda, "graph", lambda graph: contextlib.nullcontext())
    return StandInGraph.made


def setup(num_classes):
    model = make_tiny(num_classes=num_classes)
    emas = [copy.deepcopy(model).requires_grad_(False) for _ in DECAYS]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    objective = MeanFlowLoss(cfg_w=2.0, cfg_k=0.25) if num_classes else MeanFlowLoss()
    return model, emas, opt, LossModule(model, objective)


def draws(steps, num_classes, batch=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, 1, 8, 8, generator=g)
    y = torch.randint(0, num_classes, (steps, batch), generator=g) if num_classes else [None] * steps
    objective, gen = MeanFlowLoss(), torch.Generator()
    return [((x[i], y[i]), objective.sample_noise(x[i], gen.manual_seed(i))) for i in range(steps)]


@pytest.mark.parametrize("num_classes", [5, 0])
def test_a_captured_and_replayed_step_is_the_eager_step(stand_in_graph, num_classes):
    """Warmup 2: steps 0-1 eager, 2 captured, 3-4 replayed: the weights, EMAs, optimizer
    moments and every step's stats of five eager steps; the caller's batches left as given."""
    steps, warmup = 5, 2
    model, emas, opt, step_module = setup(num_classes)
    eager = []
    for step, (batch, noise) in enumerate(draws(steps, num_classes)):
        args = step_module, model, emas, opt, step, batch, noise, lr_at(step)
        eager.append(train_step(*args, autocast=contextlib.nullcontext(), grad_clip=GRAD_CLIP, decays=DECAYS))

    g_model, g_emas, g_opt, g_module = setup(num_classes)
    step_fn = GraphedStep(
        g_module, g_model, g_emas, g_opt, contextlib.nullcontext(), GRAD_CLIP, DECAYS, CPU, warmup
    )
    StandInGraph.owner = step_fn
    given = draws(steps, num_classes)
    graphed = []
    for step, (batch, noise) in enumerate(given):
        graphed.append(step_fn(step, batch, noise, lr_at(step)))
        assert len(stand_in_graph) == (step >= warmup), f"captured at step {step}"
    assert stand_in_graph[0].replays == steps - warmup
    assert_same((model, emas, opt, eager), (g_model, g_emas, g_opt, graphed))
    for ((x, y), noise), ((x0, y0), noise0) in zip(given, draws(steps, num_classes)):
        assert torch.equal(x, x0) and (y is y0 is None or torch.equal(y, y0))
        assert all(torch.equal(noise[k], noise0[k]) for k in noise0)


def test_a_replay_of_another_shape_is_refused(stand_in_graph):
    model, emas, opt, step_module = setup(5)
    step_fn = GraphedStep(step_module, model, emas, opt, contextlib.nullcontext(), GRAD_CLIP, DECAYS, CPU, 0)
    ((batch, noise),) = draws(1, 5, batch=4)
    step_fn(0, batch, noise, 1e-3)
    ((smaller, small_noise),) = draws(1, 5, batch=2)
    with pytest.raises(
        ValueError, match=r"same shapes at every step: got \(2, 1, 8, 8\), captured \(4, 1, 8, 8\)"
    ):
        step_fn(1, smaller, small_noise, 1e-3)


def _linear_step(opt_groups, grad_clip, lr=0.25):
    """One eager step of a 2-in linear model under SGD on ``sum(model(x))``: the gradient is
    ``x`` summed over rows (weight) and the row count (bias)."""
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.bias.fill_(0.5)
    opt = torch.optim.SGD(opt_groups(model), lr=1.0)
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])

    def step_module(x, y, noise):
        return model(x).sum(), {}

    stats = train_step(step_module, model, [], opt, 0, (x, None), {}, lr,
                       autocast=contextlib.nullcontext(), grad_clip=grad_clip, decays=[])  # fmt: skip
    return model, opt, stats


def test_every_param_group_takes_the_steps_learning_rate():
    model, opt, _ = _linear_step(lambda m: [{"params": [m.weight]}, {"params": [m.bias], "lr": 5.0}], 0.0)
    assert [group["lr"] for group in opt.param_groups] == [0.25, 0.25]
    torch.testing.assert_close(model.bias.detach(), torch.tensor([0.5 - 0.25 * 2]))


def test_a_grad_clip_of_zero_clips_nothing():
    model, _, stats = _linear_step(lambda m: m.parameters(), grad_clip=0.0)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0 - 0.75, -1.0 - 1.0]]))
    torch.testing.assert_close(stats["grad_norm"], torch.tensor(29.0).sqrt())


def test_a_step_is_a_graph_only_on_a_gpu_with_every_group_capturable():
    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    mixed = torch.optim.AdamW([{"params": [w], "capturable": True}, {"params": [b]}])
    assert graphs_unavailable(torch.device("cuda"), mixed) == "the optimizer (AdamW) is not capturable"
    everywhere = torch.optim.AdamW([w, b], capturable=True)
    assert graphs_unavailable(torch.device("cuda"), everywhere) is None
    assert graphs_unavailable(torch.device("meta"), everywhere) == "the device is meta, not a GPU"
