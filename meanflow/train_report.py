"""What a training run reports (docs/design.md section 5): ``metrics.jsonl`` (and TensorBoard),
the progress bar, the sample grids ``samples/step_<step>.png`` and the MNIST evaluation.

A ``metrics.jsonl`` line is one of: the means since the previous line of a step's stats
(``step``, the loss's stats, ``grad_norm``, ``lr``, ``img_per_s``, ``elapsed_s``); an
evaluation (``step``, ``eval/...``); the run's ``summary`` (the README names every key).
"""

import json
import os
import time
import warnings
import weakref

import torch
import torch.distributed as dist

from .distributed import on_rank0
from .sampler import sample, save_grid


def require_tensorboard():
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ValueError("tensorboard=true needs the tensorboard package (pip install tensorboard)") from e


ABANDONED = "metrics.abandoned.jsonl"


class MetricsLog:
    """Rank 0 appends records to ``out_dir/metrics.jsonl`` (and, with ``tensorboard``, writes
    their numbers to ``out_dir/tb``); the other ranks write nothing. A run that goes on from
    ``step`` first sets aside what was logged after it (:func:`set_aside_records_after`), as
    TensorBoard purges the events past the step it resumes at."""

    def __init__(self, out_dir: str, master: bool, tensorboard: bool, step: int = 0):
        from .checkpoint import open_for_append

        self.file = None
        if master:
            set_aside_records_after(out_dir, step)
            self.file = open_for_append(os.path.join(out_dir, "metrics.jsonl"))
        self.writer = None
        if tensorboard and master:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=step + 1)

    def __call__(self, record: dict):
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self):
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def set_aside_records_after(out_dir: str, step: int) -> int:
    """Move the lines of ``out_dir/metrics.jsonl`` from the first one logged after ``step`` (or
    cut short by a kill) to the end of ``out_dir/metrics.abandoned.jsonl``, as they were; returns
    how many. A run killed after its last checkpoint logged steps that its resume runs again:
    left in place they would stand twice, with the two trajectories' numbers. The lines are
    appended there (durably) before the log is rewritten without them, so a kill between the
    two leaves them in both files, never in neither."""
    from .checkpoint import atomic_write, open_for_append

    path = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        *whole, torn = f.read().split(b"\n")
    lines = [line + b"\n" for line in whole] + ([torn] if torn else [])
    cut = next((i for i, line in enumerate(lines) if not _logged_by(line, step)), len(lines))
    if cut == len(lines):
        return 0
    with open_for_append(os.path.join(out_dir, ABANDONED)) as aside:
        aside.buffer.write(b"".join(lines[cut:]).rstrip(b"\n") + b"\n")
        aside.flush()
        os.fsync(aside.fileno())
    atomic_write(path, lambda f: f.write(b"".join(lines[:cut])))
    say(
        f"moved the last {len(lines) - cut} lines of {path} (logged after step {step}, where this "
        f"run goes on) to {ABANDONED}"
    )
    return len(lines) - cut


def _logged_by(line: bytes, step: int) -> bool:
    """Whether ``line`` is a whole record of the trajectory up to ``step``."""
    if not line.endswith(b"\n"):
        return False  # the write of a killed run, cut short
    if not line.strip():
        return True  # a blank line (an editor's, a tool's) records nothing: no cut there
    try:
        record = json.loads(line)
    except ValueError:
        return False
    if not isinstance(record, dict):
        return False
    summary = record.get("summary")
    at = summary.get("step") if isinstance(summary, dict) else record.get("step")
    return isinstance(at, int) and at <= step


class StepMeans:
    """The means of the steps' stats since the last :meth:`pop`, over every rank."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, stats: dict):
        self.sums = {k: self.sums.get(k, 0.0) + v.float() for k, v in stats.items()}
        self.count += 1

    def pop(self, world: int) -> dict:
        """``({stat: mean} in sorted key order, steps averaged)``, then a fresh start."""
        keys = sorted(self.sums)
        vec = torch.stack([self.sums[k] / self.count for k in keys])
        if world > 1:
            dist.all_reduce(vec)
            vec /= world
        steps = self.count
        self.sums, self.count = {}, 0
        return dict(zip(keys, vec.tolist())), steps


class ProgressBar:
    """A tqdm bar over the run's steps showing the last logged unweighted error (``mse``; the
    adaptively weighted loss is ~1 by design) and throughput. The bar draws at its own pace
    and the final state once, on :meth:`close`: drawing it on the last step too printed the
    final line twice in a log file (where ``\\r`` does not overwrite)."""

    def __init__(self, total: int, initial: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, mininterval=1.0)

    def step(self, record: dict | None):
        if record is not None:
            self.bar.set_postfix_str(
                f"mse {record['mse']:.4g} {record['img_per_s']:.0f} img/s", refresh=False
            )
        if self.bar.n + 1 < self.bar.total:
            self.bar.update(1)
        else:
            self.bar.n += 1  # drawn by close()

    def close(self):
        self.bar.close()


def say(line: str) -> None:
    """Print ``line`` on stdout, on a line of its own: a progress bar on the terminal is cleared
    first and drawn again after (a plain print lands at the end of the bar's line)."""
    from tqdm import tqdm

    with tqdm.external_write_mode():
        print(line, flush=True)


def sample_grid_inputs(model_config, seed: int, device):
    """The fixed labels and noise of every sample grid: ten rows; with labels, column ``k``
    shows class ``k`` (of the first ten classes)."""
    cfg = model_config
    cols = min(cfg.num_classes, 10) if cfg.num_classes else 10
    labels = torch.arange(10 * cols, device=device) % cols if cfg.num_classes else None
    shape = (10 * cols, cfg.in_channels, cfg.input_size, cfg.input_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    return labels, noise, cols


# Loaders whose grid decoder failed: their later grids skip it, so a VAE that does not load is
# neither read again nor warned about at every grid.
_UNDECODABLE = weakref.WeakSet()


def grid_images(loader, samples: torch.Tensor) -> torch.Tensor:
    """Samples -> images for the PNG grid: latents go through the loader's ``decode`` (the VAE
    recorded in the latent folder's manifest; ten at a time to bound memory); a loader without
    ``decode`` gives pixels already. A decoder that fails (a VAE missing, unreadable or damaged,
    no GPU memory left for it) never stops the run: this grid and the later ones show the first
    three latent channels, with one warning."""
    decode = getattr(loader, "decode", None)
    if decode is None:
        return samples
    if not _undecodable(loader):
        try:
            return torch.cat([decode(part) for part in samples.split(10)])
        except Exception as e:  # whatever it is, a picture is not worth the training run
            _undecodable(loader, add=True)
            why = f"cannot decode with the latent folder's VAE ({type(e).__name__}: {e})"
            warnings.warn(f"sample grids show latent channels 0-2: {why}", stacklevel=2)
    return samples[:, :3]


def _undecodable(loader, add: bool = False) -> bool:
    try:
        if add:
            _UNDECODABLE.add(loader)
        return loader in _UNDECODABLE
    except TypeError:  # a registered loader that is unhashable or not weak-referable: no memory
        return False


def evaluates(config) -> bool:
    """Whether the run scores its samples with the MNIST classifier."""
    return bool(config.eval_samples) and config.data.name == "mnist"


def prepare_evaluation(config) -> None:
    """Load (or train, once per data set) the MNIST classifier the evaluations score with: a data
    set it cannot learn from is refused before the run's first step, not at its first evaluation."""
    if evaluates(config):
        from .eval_mnist import load_classifier

        load_classifier(config.data.path)


def samples_and_eval(config, step, model, loader, grid, log, rank, world, do_eval):
    """Rank 0 writes the sample grid of ``step`` and, with ``do_eval`` on MNIST, evaluates
    ``model`` (logged and printed); every rank waits for it, and fails with it. Returns
    ``(evaluation or None, seconds spent)``."""
    started = time.perf_counter()
    result = on_rank0(rank, world, _samples_and_eval, config, step, model, loader, grid, log, do_eval)
    return result, time.perf_counter() - started


def _samples_and_eval(config, step, model, loader, grid, log, do_eval):
    labels, noise, cols = grid
    images = sample(model, labels, steps=config.sample_steps, noise=noise)
    png = os.path.join(config.out_dir, "samples", f"step_{step:07d}.png")
    save_grid(grid_images(loader, images), png, nrow=cols)
    if not (do_eval and evaluates(config)):
        return None
    from .eval_mnist import evaluate, summary_line

    result = evaluate(model, config.eval_samples, steps=1, data_path=config.data.path, log=say)
    log({"step": step, **{f"eval/{k}": v for k, v in result.items()}})
    say(f"step {step}: {summary_line(result)}")
    return result
