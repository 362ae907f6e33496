"""One optimizer step of the trainer, eager or replayed as a CUDA graph (docs/design.md section 5).

``train_step`` runs it eagerly: loss (guidance pass, dual pass, plain forward), backward,
gradient clipping, the optimizer and the EMA updates. ``GraphedStep`` runs the same
``step_body`` captured once as a CUDA graph and replayed at every later step: a step is about
a thousand kernel launches, and at the batch one GPU trains with, launching them one by one
costs the host more time than the GPU spends running them.

What the graph holds, and what stays outside it:
- the step's draws (times, noise, dropped labels, the ``r != t`` rows) are made outside, as in
  an eager step, from the ``(seed, step)`` generator, then copied into the graph's input
  buffers: every replay sees fresh draws, the global batch's for any number of ranks;
- the scalars that change from step to step, the learning rate and the EMA weights, are
  device tensors the graph reads, filled before each replay;
- the optimizer is capturable (torch's fused AdamW keeps its step count on the device); the
  gradients are the graph's own tensors, rewritten by each replay;
- autocast runs without its cast cache (a cached cast would not be redone in a replay);
- evaluation, sampling and checkpoints run between replays.

Why capture by hand rather than torch.compile's CUDA graph trees: those graph the regions
torch.compile compiles (the loss and its backward); gradient clipping, the optimizer and the
EMA updates would stay eager launches, and a graph tree needs compiling first. A hand capture
holds all of it and works with or without ``--compile``. ``benchmarks/jvp_throughput.py``
measures both.
"""

import contextlib

import torch


def ema_decay(decay: float, step: int) -> float:
    """The EMA decay used after 0-based ``step``: warmed up, so early weights fade fast."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema, model, weight):
    """``ema += weight * (model - ema)`` for every parameter; ``weight`` (``1 - decay``) a float,
    or a 0-d device tensor that a CUDA graph reads at replay."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if isinstance(weight, torch.Tensor):
        torch._foreach_lerp_(ema_params, params, [weight] * len(params))
    else:
        torch._foreach_lerp_(ema_params, params, weight)


def step_body(step_module, model, emas, opt, batch, noise, autocast, grad_clip, ema_weights) -> dict:
    """Loss, backward, clipping, optimizer step, EMA updates; the gradients must be None or
    zero before it. Returns the step's stats (0-d tensors, ``grad_norm`` before clipping)."""
    x, y = batch
    model.train()
    with autocast:
        loss, stats = step_module(x, y, noise)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    opt.step()
    for ema, weight in zip(emas, ema_weights):
        update_ema(ema, model, weight)
    return {**stats, "grad_norm": grad_norm.detach()}


def train_step(step_module, model, emas, opt, step, batch, noise, lr, *, autocast, grad_clip, decays) -> dict:
    """One eager optimizer step at 0-based ``step`` with learning rate ``lr``; returns its stats."""
    opt.zero_grad(set_to_none=True)
    for group in opt.param_groups:
        group["lr"] = lr
    weights = [1.0 - ema_decay(d, step) for d in decays]
    return step_body(step_module, model, emas, opt, batch, noise, autocast, grad_clip, weights)


def graphs_unavailable(device: torch.device, opt) -> str | None:
    """Why the step cannot be a CUDA graph here, or None when it can."""
    if device.type != "cuda":
        return f"the device is {device.type}, not a GPU"
    if not all(group.get("capturable") for group in opt.param_groups):
        return f"the optimizer ({type(opt).__name__}) is not capturable"
    return None


class GraphedStep:
    """``step(step, batch, noise, lr) -> stats``: the first ``warmup`` steps eagerly on a side
    stream (they settle autotuning, cuBLAS workspaces and DDP's buckets), then one capture of
    ``step_body``, replayed for every step after. Every step's batch and draws must have the
    shapes of the first one. ``stream``: the side stream of the eager steps (a new one if
    None); under DDP, the one DDP was made on.

    The optimizer's learning rate becomes a device tensor (``opt`` must be capturable: see
    :func:`graphs_unavailable`); ``autocast`` must not cache casts."""

    def __init__(
        self, step_module, model, emas, opt, autocast, grad_clip, decays, device, warmup=3, stream=None
    ):
        self.step_module, self.model, self.emas, self.opt = step_module, model, emas, opt
        self.autocast, self.grad_clip, self.decays = autocast, grad_clip, list(decays)
        self.warmup = warmup
        self.lr = torch.zeros((), device=device)
        for group in opt.param_groups:
            group["lr"] = self.lr
        self.ema_weights = [torch.zeros((), device=device) for _ in self.decays]
        self.stream = stream or (torch.cuda.Stream(device) if device.type == "cuda" else None)
        self.graph, self.inputs, self.outputs = None, None, None

    def __call__(self, step: int, batch, noise: dict, lr: float) -> dict:
        self.lr.fill_(lr)
        for weight, decay in zip(self.ema_weights, self.decays):
            weight.fill_(1.0 - ema_decay(decay, step))
        if self.graph is None and self.warmup > 0:
            self.warmup -= 1
            with self._side_stream():
                self.opt.zero_grad(set_to_none=True)
                stats = self._body(batch, noise)
            return {k: v.clone() for k, v in stats.items()}
        if self.graph is None:
            self._capture(batch, noise)
        self._fill_inputs(batch, noise)
        self.graph.replay()
        return {k: v.clone() for k, v in self.outputs.items()}

    def _body(self, batch, noise):
        return step_body(
            self.step_module, self.model, self.emas, self.opt, batch, noise,
            self.autocast, self.grad_clip, self.ema_weights,
        )  # fmt: skip

    @contextlib.contextmanager
    def _side_stream(self):
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream().wait_stream(self.stream)

    def _capture(self, batch, noise):
        """Record one step on fresh input buffers; the gradients are allocated inside the capture
        (set to None first), so that each replay writes them instead of adding to them."""
        self.inputs = ([_clone(t) for t in batch], {k: v.clone() for k, v in noise.items()})
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._body(*self.inputs)

    def _fill_inputs(self, batch, noise):
        static_batch, static_noise = self.inputs
        for static, value in [
            *zip(static_batch, batch),
            *((static_noise[k], noise[k]) for k in static_noise),
        ]:
            if static is None:  # no labels: an unconditional model
                continue
            if value.shape != static.shape:
                raise ValueError(
                    f"a CUDA-graphed step needs the same shapes at every step: got {tuple(value.shape)}, "
                    f"captured {tuple(static.shape)} (turn the graphs off with --cuda_graphs off)"
                )
            static.copy_(value, non_blocking=True)


def _clone(tensor):
    return None if tensor is None else tensor.clone()
