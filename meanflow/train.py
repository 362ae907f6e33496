"""Train a MeanFlow DiT (docs/design.md section 5).

    python -m meanflow.train                                  # MNIST, tiny DiT, CPU, minutes
    torchrun --nproc_per_node=8 meanflow/train.py --preset mnist-long --compile
    python -m meanflow.train --config run.yaml --steps 5000 --loss.cfg_w 2

``--model_class`` (default ``meanflow.DiT``) may name a library model instead
(``diffusers.DiTTransformer2DModel``, ``timm.VisionTransformer``): it is built through its
adapter (``meanflow/adapters.py``) with ``--model_kwargs`` as the library's constructor
keywords, patched by ``mfkernels.patch_sdpa``, and trained with ``torch.func.jvp``.

The whole loss (guidance passes and the ``model.jvp`` dual pass) is one module,
``LossModule``, and that is what DDP wraps and ``torch.compile`` compiles: DDP only sees
calls to the module it wraps, and ``model.jvp`` is not ``model.forward``. The random draws of
a step (times, noise, class dropout) are drawn for the GLOBAL batch from a generator seeded by
``(seed, step)`` and each rank keeps its slice, so a run is the same function of its seed (up to
float rounding) for any number of ranks and resumes exactly. Outputs in ``out_dir``: ``last.pt``
(atomic; plus ``ckpt_<step>.pt`` every ``keep_every``), ``metrics.jsonl``,
``samples/step_<step>.png``. Ctrl-C (SIGINT) or SIGTERM finishes the step, writes the
checkpoint and exits 0.
"""

import contextlib
import copy
import functools
import inspect
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext

if __package__ in (None, ""):  # torchrun meanflow/train.py: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import mfkernels  # noqa: E402
from meanflow.adapters import AdapterConfig  # noqa: E402
from meanflow.config import DIT_CLASS, TrainConfig, parse_args  # noqa: E402
from meanflow.data import build_loader  # noqa: E402
from meanflow.distributed import gather, on_rank0, setup_distributed, together  # noqa: E402
from meanflow.loss import LossModule, func_jvp  # noqa: E402
from meanflow.models import DiT  # noqa: E402
from meanflow.train_report import (  # noqa: E402, F401 (grid_images: the trainer's API)
    MetricsLog,
    ProgressBar,
    StepMeans,
    grid_images,
    prepare_evaluation,
    require_tensorboard,
    sample_grid_inputs,
    samples_and_eval,
)
from meanflow.train_state import (  # noqa: E402
    exclusive_out_dir,
    kept_message,
    prepare_out_dir,
    resume,
    save_checkpoint,
    seed_global_rngs,
)
from meanflow.train_step import GraphedStep, graphs_unavailable, train_step  # noqa: E402


def build_model(config: TrainConfig, loader) -> torch.nn.Module:
    """``config.model_class`` with ``model_kwargs``; input_size, in_channels and num_classes
    are the data's (``model_kwargs`` may repeat them, not change them). An adapter comes back
    patched by ``mfkernels.patch_sdpa``: the EMA copies made of it then are too."""
    shape = dict(num_classes=loader.num_classes, in_channels=loader.channels, input_size=loader.image_size)
    for key, value in shape.items():
        if config.model_kwargs.get(key, value) != value:
            raise ValueError(
                f"model_kwargs.{key} {config.model_kwargs[key]!r} does not match the data "
                f"({config.data.name}: {value!r}); leave it out, the data sets it"
            )
    kwargs = {**shape, **config.model_kwargs}
    if config.model_class == DIT_CLASS:
        return DiT.from_config(config.model, backend=config.backend, **kwargs)
    shape = {key: kwargs.pop(key) for key in shape}
    model = AdapterConfig(config.model_class, **shape, kwargs=kwargs).build()
    return mfkernels.patch_sdpa(model, config.backend)


def adapter_line(config: TrainConfig, model) -> str:
    """What an adapter run says at its start: the class and every keyword it was built with
    (the data's shape, then ``model_kwargs``), and that ``model`` is not used (the presets set
    it, for meanflow.DiT)."""
    c = model.config
    kwargs = dict(input_size=c.input_size, in_channels=c.in_channels, num_classes=c.num_classes, **c.kwargs)
    built = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"model: {c.model_class}({built}); model {config.model!r} is not used (a meanflow.DiT preset)"


def build_objective(config: TrainConfig):
    """The loss; a model without a dual pass (an adapter) gets ``(u, du/dt)`` by ``torch.func.jvp``."""
    return config.loss.build(jvp=None if config.model_class == DIT_CLASS else func_jvp)


def build_optimizer(model, config: TrainConfig, device):
    kwargs = dict(lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if device.type == "cuda" and config.cuda_graphs != "off":
        # capturable: the step count and the learning rate live on the GPU, for CUDA graphs
        return torch.optim.AdamW(model.parameters(), fused=True, capturable=True, **kwargs)
    if device.type == "cuda":
        try:
            from apex.optimizers import FusedAdam

            return FusedAdam(model.parameters(), adam_w_mode=True, **kwargs)
        except ImportError:
            pass
    # torch's fused AdamW runs on CPU tensors too: a third of the for-loop version's time.
    return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)


def build_step_module(model, objective, config: TrainConfig, world: int, device, stream=None):
    """The loss as one module call; DDP-wrapped on several ranks (on ``stream``, the CUDA
    graphs' side stream, when the step is captured: :func:`wrap_ddp`), then compiled if asked."""
    step_module = LossModule(model, objective)
    if world > 1:
        step_module = wrap_ddp(step_module, device, stream)
    return torch.compile(step_module) if config.compile else step_module


def wrap_ddp(module, device, stream=None):
    """``DDP(module)``, made while ``stream`` is the current stream when one is given. DDP keeps
    each parameter's gradient accumulator, and the backward runs an accumulator on the stream it
    was made on: made on the default stream, it would run there in the middle of a CUDA graph
    capture, which the default stream does not allow (torch's CUDA graphs notes, "Usage with
    DistributedDataParallel": DDP built on the capture's side stream)."""
    # The only buffer (positions) never changes: no per-step broadcast. Newer torch renamed it.
    no_sync = (
        "forward_sync_buffers"
        if "forward_sync_buffers" in inspect.signature(DDP).parameters
        else "broadcast_buffers"
    )
    with torch.cuda.stream(stream) if stream is not None else nullcontext():
        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False})


def learning_rate(config: TrainConfig, step: int) -> float:
    """The lr of 0-based ``step``: a linear warmup over ``warmup_steps`` (no step at 0), then
    ``lr_schedule``: constant, or a cosine or linear decay from ``lr`` at the first step after
    the warmup towards 0 at ``steps`` (the last step's lr is small, not 0)."""
    warmup = config.warmup_steps
    if step < warmup:
        return config.lr * (step + 1) / warmup
    done = (step - warmup) / max(1, config.steps - warmup)  # in [0, 1) over the decay
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * done))
    if config.lr_schedule == "linear":
        return config.lr * (1.0 - done)
    return config.lr


def graphs_off(config: TrainConfig, objective, world: int, device, opt) -> str | None:
    """Why the step is not a CUDA graph (``cuda_graphs`` off, or the step cannot be one), or
    None when it is."""
    if config.cuda_graphs == "off":
        return "cuda_graphs is off"
    if config.model_class != DIT_CLASS:  # torch.func.jvp under capture: untested
        return f"{config.model_class} trains through torch.func.jvp, not captured"
    return graphs_unavailable(device, opt) or _row_counts_vary(config, objective, world)


def build_step(
    step_module, model, emas, opt, config: TrainConfig, objective, world: int, device, master, stream=None
):
    """``step(step, batch, noise, lr) -> stats``: a CUDA-graphed step where ``cuda_graphs`` asks
    for one and it can run (``auto``: on a GPU; why not is said once), else the eager step.
    ``stream``: the graphs' side stream, the one DDP was made on (:func:`wrap_ddp`)."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    why_not = graphs_off(config, objective, world, device, opt)
    graphs = why_not is None
    if config.cuda_graphs == "on" and why_not:
        raise ValueError(f"cuda_graphs is 'on' but the step cannot be a CUDA graph: {why_not}")
    if config.cuda_graphs == "auto" and master:
        print(f"CUDA graphs: {'on' if graphs else f'off ({why_not})'}", flush=True)
    # A CUDA graph replays the casts autocast made at capture: its cast cache must stay off.
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graphs) if bf16 else nullcontext()
    )
    if graphs:
        # DDP needs eleven eager steps before its hooks may be captured (torch.cuda.graphs docs).
        warmup = 11 if world > 1 else 3
        return GraphedStep(
            step_module,
            model,
            emas,
            opt,
            autocast,
            config.grad_clip,
            config.ema_decays,
            device,
            warmup,
            stream,
        )

    return functools.partial(
        train_step, step_module, model, emas, opt, autocast=autocast, grad_clip=config.grad_clip,
        decays=config.ema_decays,
    )  # fmt: skip


def _row_counts_vary(config: TrainConfig, objective, world: int) -> str | None:
    """A graph replays fixed shapes: the dual pass's row count per rank must not change."""
    ratio = getattr(objective, "ratio_r_neq_t", None)
    rows = config.batch_size // world
    if (
        ratio is None
        or getattr(objective, "tangent_rows", "all") == "all"
        or float(rows * ratio).is_integer()
    ):
        return None
    return f"{rows} rows per rank x ratio_r_neq_t {ratio} is not a whole number of dual-pass rows"


class StopOnSignal:
    """While installed, SIGINT or SIGTERM asks the run to stop after the step (a second one
    stops at once); the handlers before are restored on :meth:`restore`, however the run ends,
    so in-process callers keep their Ctrl-C."""

    def __init__(self, master: bool):
        self.master, self.reason = master, None
        self.previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, frame):
        if self.reason is not None:
            raise KeyboardInterrupt
        self.reason = signum
        if self.master:
            print(f"\nsignal {signum}: finishing the step, then checkpoint and exit", flush=True)

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def agree(self, group):
        """Every rank stops when any one was asked to."""
        flag = torch.tensor([int(self.requested)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        if flag.item() and not self.requested:
            self.reason = "peer"

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def main(argv=None) -> dict:
    config = parse_args(argv) if not isinstance(argv, TrainConfig) else argv.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world, device = setup_distributed(config.device)
    check_batch_split(config.batch_size, world)
    master = rank == 0
    loader = build_loader(config, rank, world, device)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config, loader).to(device)
    if master and config.model_class != DIT_CLASS:
        print(adapter_line(config, model), flush=True)
    emas = [copy.deepcopy(model).requires_grad_(False).eval() for _ in config.ema_decays]
    # No draw of the step uses the global generators (it has its own (seed, step) generator);
    # they are seeded per rank, and saved and restored with each checkpoint, so that anything
    # that does (an adapter's dropout, a registered loader) is reproducible, differs between
    # ranks and resumes exactly.
    seed_global_rngs(config.seed, 0, rank)
    opt = build_optimizer(model, config, device)
    objective = build_objective(config)
    with contextlib.ExitStack() as held:
        # Every rank waits for rank 0 to hold out_dir: its refusal is every rank's, and no rank
        # reads a checkpoint there before it is held (another run could still be writing it).
        on_rank0(rank, world, _hold_out_dir, held, config)
        return train(config, rank, world, device, loader, model, emas, opt, objective)


def check_batch_split(batch_size: int, world: int) -> None:
    """``batch_size`` is the global batch, each rank takes ``batch_size // world`` rows: a
    remainder would silently train on a smaller batch than asked (and none at all per rank
    when ``batch_size < world``). Every rank raises alike, before any collective."""
    if batch_size % world:
        below = batch_size - batch_size % world
        near = " or ".join(str(n) for n in (below, below + world) if n)
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must be a multiple of the {world} ranks, e.g. {near}"
        )


def _hold_out_dir(held: contextlib.ExitStack, config: TrainConfig) -> None:
    if config.tensorboard:
        require_tensorboard()
    held.enter_context(exclusive_out_dir(config.out_dir))


def open_outputs(config: TrainConfig, master: bool, step: int) -> MetricsLog:
    """The metrics log of a run going on from ``step``; on rank 0 first the MNIST classifier
    ready (a data set it cannot learn from is refused before any step or write) and the out_dir
    prepared."""
    if master:
        prepare_evaluation(config)
        prepare_out_dir(config)
    return MetricsLog(config.out_dir, master, config.tensorboard, step)


def train(config: TrainConfig, rank: int, world: int, device, loader, model, emas, opt, objective) -> dict:
    """Resume or start the run in ``config.out_dir`` and train it to ``config.steps``; returns
    the summary it logs last."""
    master = rank == 0
    # Resume: everything is checked before the first write, so a bad checkpoint changes nothing.
    step, resumed_from = together(world, resume, config, model, emas, opt, loader, rank, world, device)
    steps = gather(world, step)
    if len(set(steps)) > 1:  # e.g. an out_dir on a disk of its own on each node
        raise ValueError(
            f"the ranks resumed from different steps ({steps}): every rank must read the same "
            f"{config.out_dir!r}; put it on a file system that every node shares"
        )
    good = None if resumed_from is None else (resumed_from, step)  # the last good checkpoint
    if resumed_from is not None:
        run = config.out_dir if resumed_from == os.path.join(config.out_dir, "last.pt") else resumed_from
        if step >= config.steps:  # a finished run: every file stays as it is
            if master:
                print(f"{run} is already at step {step} >= {config.steps}: nothing to do", flush=True)
            return {"step": step, "steps_run": 0, "interrupted": False}
        if master:
            print(f"resuming {run} from step {step}", flush=True)
    if master and config.warmup_steps >= config.steps:  # allowed: a short trial of a long recipe
        print(
            f"note: warmup_steps {config.warmup_steps} >= steps {config.steps}: the lr rises for "
            f"the whole run and never reaches lr {config.lr:g}",
            flush=True,
        )

    graphed = graphs_off(config, objective, world, device, opt) is None
    stream = torch.cuda.Stream(device) if graphed else None
    step_module = build_step_module(model, objective, config, world, device, stream)
    run_step = build_step(step_module, model, emas, opt, config, objective, world, device, master, stream)
    flag_group = dist.new_group(backend="gloo") if world > 1 else None
    log = together(world, open_outputs, config, master, step)
    sampler_model = emas[0] if emas else model
    grid = sample_grid_inputs(model.config, config.seed, device)
    means = StepMeans()
    progress = ProgressBar(config.steps, step) if master and config.progress else None
    data = iter(loader)
    generator = torch.Generator(device=device)
    rows = slice(rank * (config.batch_size // world), (rank + 1) * (config.batch_size // world))
    start_step, t_start, t_log, eval_time = step, time.perf_counter(), time.perf_counter(), 0.0
    stop = StopOnSignal(master)
    try:
        while step < config.steps and not stop.requested:
            batch = next(data)
            # The step's draws are the global batch's, from (seed, step); this rank keeps its rows.
            generator.manual_seed(config.seed * 1_000_003 + step)
            shape = (config.batch_size, *batch[0].shape[1:])
            noise = objective.sample_noise(batch[0].new_empty(shape), generator, rows=rows)
            lr = learning_rate(config, step)
            stats = run_step(step, batch, noise, lr)
            step += 1
            means.add(stats)
            if world > 1:
                stop.agree(flag_group)

            record = None
            if config.log_every and (step % config.log_every == 0 or step == config.steps or stop.requested):
                now = time.perf_counter()
                stat_means, steps_averaged = means.pop(world)
                record = {"step": step, **stat_means, "lr": lr}
                record["img_per_s"] = config.batch_size * steps_averaged / (now - t_log)
                record["elapsed_s"] = now - t_start
                together(world, log, record)  # a full disk on rank 0 stops every rank
                t_log = now
                if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                    raise FloatingPointError(
                        f"training diverged by step {step} (loss {record['loss']}, grad_norm "
                        f"{record['grad_norm']}): {kept_message(good)}"
                    )
            if progress:
                progress.step(record)
            if stop.requested:
                break

            # img_per_s is the training steps' throughput: the log window leaves out the time
            # of checkpoints, sample grids and evaluations made between its steps.
            paused = time.perf_counter()
            if any(every and step % every == 0 for every in (config.ckpt_every, config.keep_every)):
                good = save_checkpoint(config, step, model, emas, opt, loader, rank, world, device, good)
            do_sample = config.sample_every and step % config.sample_every == 0
            do_eval = config.eval_every and step % config.eval_every == 0
            if (do_sample or do_eval) and step < config.steps:
                _, seconds = samples_and_eval(
                    config, step, sampler_model, loader, grid, log, rank, world, do_eval
                )
                eval_time += seconds
            t_log += time.perf_counter() - paused

        if progress:
            progress.close()
        if good != (os.path.join(config.out_dir, "last.pt"), step):  # not written at this step yet
            save_checkpoint(config, step, model, emas, opt, loader, rank, world, device, good)
        train_time = time.perf_counter() - t_start - eval_time
        result = None
        if not stop.requested:
            result, seconds = samples_and_eval(
                config, step, sampler_model, loader, grid, log, rank, world, True
            )
            eval_time += seconds
        summary = {"step": step, "steps_run": step - start_step, "interrupted": stop.requested}
        summary.update(
            train_time_s=train_time, eval_time_s=eval_time, total_time_s=time.perf_counter() - t_start
        )
        if result:
            summary.update({f"eval/{k}": v for k, v in result.items()})
        together(world, log, {"summary": summary})
        if master:
            print(json.dumps(summary), flush=True)
        return summary
    finally:
        stop.restore()
        if progress:
            progress.close()
        log.close()


def cli(argv=None) -> None:
    """The command line: a mistake in the options, a config file, the data or a checkpoint is
    one line on stderr and exit status 1, no traceback. Not the other programs' status 2 for bad
    input (meanflow/cli.py): torchrun, which starts every multi-GPU run, exits 1 whatever its
    workers' status, and a ValueError here may come hours into a run, from its data or the
    checkpoints it finds, not only from its arguments."""
    try:
        main(argv)
    except (ValueError, TypeError, OSError, FloatingPointError) as e:  # say what, no traceback
        sys.exit(f"meanflow.train: error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli()
