"""Train a MeanFlow DiT (docs/design.md section 5).

    python -m meanflow.train                                  # MNIST, tiny DiT, CPU, minutes
    torchrun --nproc_per_node=8 meanflow/train.py --preset mnist-long --compile
    python -m meanflow.train --config run.yaml --steps 5000 --loss.cfg_w 2

The whole loss (guidance passes and the ``model.jvp`` dual pass) is one module,
``LossModule``, and that is what DDP wraps and ``torch.compile`` compiles: DDP only sees
calls to the module it wraps, and ``model.jvp`` is not ``model.forward``. The random draws of
a step (times, noise, class dropout) are drawn for the GLOBAL batch from a generator seeded by
``(seed, step)`` and each rank keeps its slice, so a run is the same function of its seed (up to
float rounding) for any number of ranks and resumes exactly. Outputs in ``out_dir``: ``last.pt`` (atomic; plus
``ckpt_<step>.pt`` every ``keep_every``), ``metrics.jsonl``, ``samples/step_<step>.png``.
Ctrl-C (SIGINT) or SIGTERM finishes the step, writes the checkpoint and exits 0.
"""

import copy
import dataclasses
import inspect
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from contextlib import nullcontext

if __package__ in (None, ""):  # torchrun meanflow/train.py: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

from meanflow.checkpoint import (  # noqa: E402
    atomic_copy,
    atomic_save,
    load_torch_file,
    open_for_append,
    refuse_directory,
    refuse_symlink,
    remove_stale_temporaries,
    write_json_atomic,
)
from meanflow.config import TrainConfig, parse_args, run_identity_changes  # noqa: E402
from meanflow.data import build_loader  # noqa: E402
from meanflow.distributed import setup_distributed  # noqa: E402
from meanflow.loss import LossModule  # noqa: E402
from meanflow.models import DiT  # noqa: E402
from meanflow.sampler import sample, save_grid  # noqa: E402


def build_model(config: TrainConfig, loader) -> DiT:
    overrides = dict(
        num_classes=loader.num_classes, in_channels=loader.channels, input_size=loader.image_size
    )
    return DiT.from_config(config.model, backend=config.backend, **{**overrides, **config.model_kwargs})


def grid_images(loader, samples: torch.Tensor) -> torch.Tensor:
    """Samples -> images for the PNG grid: latents go through the loader's ``decode`` (the VAE
    recorded in the latent folder's manifest; ten at a time to bound memory); a loader without
    ``decode`` gives pixels already. A VAE that does not load never stops the run: the grid then
    shows the first three latent channels, with a warning."""
    decode = getattr(loader, "decode", None)
    if decode is None:
        return samples
    try:
        return torch.cat([decode(part) for part in samples.split(10)])
    except (FileNotFoundError, ImportError, ValueError) as e:
        why = f"cannot decode with the latent folder's VAE: {e}"
        warnings.warn(f"sample grids show latent channels 0-2: {why}", stacklevel=2)
        return samples[:, :3]


def build_optimizer(model, config: TrainConfig, device):
    kwargs = dict(lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if device.type == "cuda":
        try:
            from apex.optimizers import FusedAdam

            return FusedAdam(model.parameters(), adam_w_mode=True, **kwargs)
        except ImportError:
            pass
    # torch's fused AdamW runs on CPU tensors too: a third of the for-loop version's time.
    return torch.optim.AdamW(model.parameters(), fused=True, **kwargs)


@torch.no_grad()
def update_ema(ema, model, decay):
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def rng_state(device):
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_global_rngs(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# What main() reads from a checkpoint to resume a run.
CHECKPOINT_KEYS = ("model", "ema", "opt", "data", "rng", "step", "config", "model_config")


def load_checkpoint(path: str, model: DiT, device) -> dict:
    """Read ``path`` and check it holds this architecture; raises before anything is written."""
    ckpt = load_torch_file(path, map_location=device)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path!r} is not a meanflow.train checkpoint")
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path!r} lacks the key(s) {', '.join(missing)}: it cannot resume a run")
    want, got = dataclasses.asdict(model.config), ckpt["model_config"]
    diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    if diff:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"checkpoint {path!r} is for another model ({listing}); use another out_dir or the "
            f"matching --model / --model_kwargs"
        )
    return ckpt


def check_same_run(ckpt: dict, path: str, config: TrainConfig) -> None:
    """Refuse a checkpoint saved with other values of the keys that define a run."""
    changes = run_identity_changes(ckpt["config"], config)
    if changes:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in changes.items())
        raise ValueError(
            f"checkpoint {path!r} is for another run ({listing}); use another out_dir or the checkpoint's "
            f"values (steps, lr, warmup_steps, grad_clip and the *_every cadences may change on resume)"
        )


def restore(ckpt: dict, path: str, model, emas, opt, loader, rank: int, world: int, device) -> int:
    """Load a checkpoint's states into the run; returns its step. A state that does not fit
    (a key missing inside it, other parameters) is a one-line ValueError naming the file."""
    if len(ckpt["ema"]) != len(emas):
        raise ValueError(f"checkpoint {path!r} has {len(ckpt['ema'])} EMAs, this run {len(emas)} ema_decays")
    try:
        model.load_state_dict(ckpt["model"])
        for ema, state in zip(emas, ckpt["ema"]):
            ema.load_state_dict(state)
        opt.load_state_dict(ckpt["opt"])
        loader.load_state_dict(ckpt["data"])
        rngs = ckpt["rng"]
        set_rng_state(rngs[rank] if len(rngs) == world else rngs[0], device)
        return int(ckpt["step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        # load_state_dict's messages span several lines; a KeyError's is only the key.
        reason = f"missing key {e}" if isinstance(e, KeyError) else " ".join(str(e).split())
        raise ValueError(f"checkpoint {path!r} does not fit this run: {reason}") from e


# The files of a run that atomic_write writes: a kill -9 mid-write leaves a temporary of each.
RUN_FILES = r"last\.pt|ckpt_\d{7}\.pt|config\.json"


def prepare_out_dir(config: TrainConfig) -> None:
    """Check the files a run writes can be written (no directory, no symbolic link where one
    belongs), remove what killed checkpoint writes left, then write ``config.json``."""
    out_dir = config.out_dir
    for name in ("last.pt", "config.json", "metrics.jsonl"):
        refuse_directory(os.path.join(out_dir, name))
    refuse_symlink(os.path.join(out_dir, "metrics.jsonl"))  # appended to: a link would be followed
    for stale in remove_stale_temporaries(out_dir, RUN_FILES):
        print(f"removed {stale}: the temporary of a checkpoint write that did not finish", flush=True)
    os.makedirs(os.path.join(out_dir, "samples"), exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "config.json"), config.to_dict(), indent=2)


def main(argv=None) -> dict:
    config = parse_args(argv) if not isinstance(argv, TrainConfig) else argv.validate()
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world, device = setup_distributed(config.device)
    master = rank == 0
    loader = build_loader(config, rank, world, device)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config, loader).to(device)
    emas = [copy.deepcopy(model).requires_grad_(False).eval() for _ in config.ema_decays]
    # No draw of the step uses the global generators (it has its own (seed, step) generator);
    # they are seeded per rank, and saved and restored with each checkpoint, so that anything
    # that does (a registered loader, another objective) is reproducible, differs between
    # ranks and resumes exactly.
    seed_global_rngs(config.seed + rank)
    opt = build_optimizer(model, config, device)
    objective = config.loss.build()

    writer = None
    if config.tensorboard and master:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ValueError(
                "tensorboard=true needs the tensorboard package (pip install tensorboard)"
            ) from e

    # Resume: everything is checked before the first write, so a bad checkpoint changes nothing.
    last = os.path.join(config.out_dir, "last.pt")
    path = last if config.resume == "auto" else config.resume
    step = 0
    if config.resume != "auto" and not os.path.isfile(path):
        raise FileNotFoundError(f"resume checkpoint {path!r} does not exist")
    if os.path.isfile(path):
        ckpt = load_checkpoint(path, model, device)
        check_same_run(ckpt, path, config)
        step = restore(ckpt, path, model, emas, opt, loader, rank, world, device)
        run = config.out_dir if path == last else path
        if step >= config.steps:  # a finished run: every file stays as it is
            if master:
                print(f"{run} is already at step {step} >= {config.steps}: nothing to do", flush=True)
            return {"step": step, "steps_run": 0, "interrupted": False}
        if master:
            print(f"resuming {run} from step {step}", flush=True)
    if master:
        prepare_out_dir(config)

    step_module = LossModule(model, objective)
    if world > 1:
        # The only buffer (positions) never changes: no per-step broadcast. Newer torch renamed it.
        no_sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(DDP).parameters
            else "broadcast_buffers"
        )
        step_module = DDP(
            step_module, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False}
        )
    if config.compile:
        step_module = torch.compile(step_module)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    flag_group = dist.new_group(backend="gloo") if world > 1 else None

    stop = []

    def on_signal(signum, frame):
        if stop:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        stop.append(signum)
        if master:
            print(f"\nsignal {signum}: finishing the step, then checkpoint and exit", flush=True)

    metrics = open_for_append(os.path.join(config.out_dir, "metrics.jsonl")) if master else None

    if config.tensorboard and master:
        writer = SummaryWriter(os.path.join(config.out_dir, "tb"))

    def log(record):
        if master:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
        if writer and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, record["step"])

    good = [(path, step) if os.path.isfile(path) else None]  # the last good checkpoint: read or written

    def kept():
        if good[0] is None:
            return "no checkpoint was written"
        where, at = good[0]
        return f"{where} (step {at}) is kept; resume from it with a lower lr or a tighter grad_clip"

    def checkpoint():
        # NaN or inf weights never replace the last good checkpoint (every rank holds the same
        # weights, so every rank stops here alike).
        weights = [p for m in (model, *emas) for p in m.parameters()]
        if not torch.stack([torch.isfinite(p).all() for p in weights]).all():
            raise FloatingPointError(f"step {step}: the weights hold NaN or inf (diverged): {kept()}")
        rngs = [rng_state(device)]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng_state(device))
        if master:
            state = {
                "model": model.state_dict(),
                "ema": [ema.state_dict() for ema in emas],
                "ema_decays": list(config.ema_decays),
                "opt": opt.state_dict(),
                "config": config.to_dict(),
                "model_config": dataclasses.asdict(model.config),
                "step": step,
                "data": loader.state_dict(),
                "rng": rngs,
                "world_size": world,
            }
            atomic_save(state, last)
            if config.keep_every and step % config.keep_every == 0:
                atomic_copy(last, os.path.join(config.out_dir, f"ckpt_{step:07d}.pt"))
        good[0] = (last, step)

    sampler_model = emas[0] if emas else model
    # Ten rows; with labels, column k shows class k (of the first ten classes).
    cfg = model.config
    grid_cols = min(cfg.num_classes, 10) if cfg.num_classes else 10
    grid_labels = torch.arange(10 * grid_cols, device=device) % grid_cols if cfg.num_classes else None
    grid_noise = torch.randn(10 * grid_cols, cfg.in_channels, cfg.input_size, cfg.input_size,
                             generator=torch.Generator().manual_seed(config.seed)).to(device)  # fmt: skip

    eval_time = [0.0]

    def samples_and_eval(do_eval):
        started = time.perf_counter()
        if master:
            images = sample(sampler_model, grid_labels, steps=config.sample_steps, noise=grid_noise)
            png = os.path.join(config.out_dir, "samples", f"step_{step:07d}.png")
            save_grid(grid_images(loader, images), png, nrow=grid_cols)
        result = None
        if do_eval and config.eval_samples and config.data.name == "mnist" and master:
            from meanflow.eval_mnist import evaluate

            result = evaluate(sampler_model, config.eval_samples, steps=1, data_path=config.data.path)
            log({"step": step, **{f"eval/{k}": v for k, v in result.items()}})
            print(f"step {step}: 1-NFE class accuracy {result['acc']:.4f}, FD {result['fd']:.3f}", flush=True)
        if world > 1:
            dist.barrier()
        eval_time[0] += time.perf_counter() - started
        return result

    global_batch = config.batch_size
    progress = None
    if master and config.progress:
        from tqdm import tqdm

        progress = tqdm(total=config.steps, initial=step, unit="it", dynamic_ncols=True, mininterval=1.0)
    data = iter(loader)
    sums, count, t_log, start_step, t_start = {}, 0, time.perf_counter(), step, time.perf_counter()
    generator = torch.Generator(device=device)
    sl = slice(rank * (global_batch // world), (rank + 1) * (global_batch // world))
    # Restored however the run ends (an error included): in-process callers keep their Ctrl-C.
    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while step < config.steps and not stop:
            x, y = next(data)
            generator.manual_seed(config.seed * 1_000_003 + step)
            shape = (global_batch, *x.shape[1:])
            noise = objective.sample_noise(x.new_empty(shape), generator, rows=sl)
            model.train()
            with autocast:
                loss, stats = step_module(x, y, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            lr = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            for ema, decay in zip(emas, config.ema_decays):
                update_ema(ema, model, min(decay, (1 + step) / (10 + step)))
            step += 1
            stats = {**stats, "grad_norm": grad_norm.detach()}
            sums = {k: sums.get(k, 0.0) + v.float() for k, v in stats.items()}
            count += 1
            if world > 1:
                flag = torch.tensor([len(stop)])
                dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=flag_group)
                if flag.item() and not stop:
                    stop.append("peer")
            if config.log_every and (step % config.log_every == 0 or step == config.steps or stop):
                vec = torch.stack([sums[k] / count for k in sorted(sums)])
                if world > 1:
                    dist.all_reduce(vec)
                    vec /= world
                now = time.perf_counter()
                record = {"step": step, **dict(zip(sorted(sums), vec.tolist())), "lr": lr}
                record["img_per_s"] = global_batch * count / (now - t_log)
                record["elapsed_s"] = now - t_start
                log(record)
                if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                    raise FloatingPointError(
                        f"training diverged by step {step} (loss {record['loss']}, grad_norm "
                        f"{record['grad_norm']}): {kept()}"
                    )
                if progress:
                    progress.set_postfix_str(
                        f"loss {record['loss']:.4f} mse {record['mse']:.4f} {record['img_per_s']:.0f} img/s"
                    )
                sums, count, t_log = {}, 0, now
            if progress:
                progress.update(1)
            if stop:
                break
            if config.ckpt_every and step % config.ckpt_every == 0:
                checkpoint()
            do_sample = config.sample_every and step % config.sample_every == 0
            do_eval = config.eval_every and step % config.eval_every == 0
            if (do_sample or do_eval) and step < config.steps:
                samples_and_eval(do_eval)
        if progress:
            progress.close()
        checkpoint()
        train_time = time.perf_counter() - t_start - eval_time[0]
        result = None if stop else samples_and_eval(True)
        summary = {"step": step, "steps_run": step - start_step, "interrupted": bool(stop)}
        summary.update(
            train_time_s=train_time, eval_time_s=eval_time[0], total_time_s=time.perf_counter() - t_start
        )
        if result:
            summary.update({f"eval/{k}": v for k, v in result.items()})
        log({"summary": summary})
        if master:
            print(json.dumps(summary), flush=True)
        return summary
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        if progress:
            progress.close()
        if master:
            metrics.close()
        if writer:
            writer.close()


def cli(argv=None) -> None:
    """The command line: a mistake in the options, a config file, the data or a checkpoint is
    one line on stderr and exit status 1, no traceback."""
    try:
        main(argv)
    except (ValueError, TypeError, OSError, FloatingPointError) as e:  # say what, no traceback
        sys.exit(f"meanflow.train: error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli()
