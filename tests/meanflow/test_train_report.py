"""What a run reports (meanflow/train_report.py): the means a log line holds, the progress bar's
final line, the sample grid's classes and noise, and a grid whose decoder fails."""

import io
import json
import os
import re
import socket
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from meanflow.train_report import (
    ABANDONED,
    MetricsLog,
    ProgressBar,
    StepMeans,
    _samples_and_eval,
    evaluates,
    grid_images,
    prepare_evaluation,
    sample_grid_inputs,
    set_aside_records_after,
)


def _stats(loss: float) -> dict:
    return {"mse": torch.tensor(2 * loss), "loss": torch.tensor(loss)}


def test_a_log_line_holds_the_means_of_its_steps_then_starts_afresh():
    means = StepMeans()
    for loss in (1.0, 2.0, 6.0):
        means.add(_stats(loss))
    stats, steps = means.pop(world=1)
    assert list(stats) == ["loss", "mse"] and stats == {"loss": 3.0, "mse": 6.0} and steps == 3
    means.add(_stats(5.0))
    assert means.pop(world=1) == ({"loss": 5.0, "mse": 10.0}, 1)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pop_on_rank(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        means = StepMeans()
        for loss in (1.0, 3.0):  # rank 0's mean is 2, rank 1's 4
            means.add(_stats(loss + 2 * rank))
        with open(os.path.join(out, f"{rank}.json"), "w") as f:
            json.dump(means.pop(world=2), f)
    finally:
        dist.destroy_process_group()


def test_a_log_line_holds_the_means_over_the_ranks(tmp_path):
    mp.start_processes(_pop_on_rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == [{"loss": 3.0, "mse": 6.0}, 2]


def test_the_bar_draws_its_final_stats_once(capsys):
    """Drawn at every update (as a step slower than the bar's interval is), the last step is
    still drawn by close() alone: in a log file every draw is a line of its own."""
    bar = ProgressBar(total=3, initial=0)
    bar.bar.mininterval = 0
    for step in range(3):
        bar.step({"mse": 0.25, "img_per_s": 40.0} if step == 2 else None)
    bar.close()
    draws = [d for d in re.split(r"[\r\n]", capsys.readouterr().err) if d.strip()]
    assert sum("mse 0.25 40 img/s" in d for d in draws) == 1 and "3/3" in draws[-1], draws


def test_an_evaluation_during_the_run_is_not_drawn_onto_the_bar(tiny, tmp_path, monkeypatch):
    """The evaluation's lines, printed while the bar is on the terminal (stdout and stderr both),
    stand on lines of their own; its result is logged under eval/."""
    from meanflow import eval_mnist

    def evaluate(model, num_samples, steps, data_path, log):
        log("classifier: test accuracy 0.9890")
        return {"acc": 0.95, "fd": 30.0, "nfe": steps, "samples": num_samples}

    monkeypatch.setattr(eval_mnist, "evaluate", evaluate)
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    config = SimpleNamespace(
        sample_steps=1, out_dir=str(tmp_path), eval_samples=20, data=SimpleNamespace(name="mnist", path=None)
    )
    model, records = tiny(num_classes=10), []
    grid = sample_grid_inputs(model.config, 0, torch.device("cpu"))
    bar = ProgressBar(total=4, initial=0)
    bar.bar.mininterval = 0
    bar.step(None)
    bar.step(None)
    _samples_and_eval(config, 2, model, object(), grid, records.append, do_eval=True)
    bar.step(None)
    bar.close()
    lines = re.split(r"[\r\n]", terminal.getvalue())
    assert "classifier: test accuracy 0.9890" in lines, terminal.getvalue()
    assert "step 2: 1-NFE class accuracy 0.9500, Frechet distance 30.000 (20 samples)" in lines
    assert records == [{"step": 2, "eval/acc": 0.95, "eval/fd": 30.0, "eval/nfe": 1, "eval/samples": 20}]
    assert os.listdir(tmp_path / "samples") == ["step_0000002.png"]


def test_the_grid_shows_a_class_per_column_from_the_seeds_noise():
    cpu = torch.device("cpu")
    model = SimpleNamespace(num_classes=3, in_channels=1, input_size=8)
    labels, noise, cols = sample_grid_inputs(model, 5, cpu)
    assert cols == 3 and labels.view(10, 3).tolist() == [[0, 1, 2]] * 10  # nrow=cols: row-major
    assert noise.shape == (30, 1, 8, 8)
    torch.manual_seed(123)  # the global generator plays no part: every grid of a run is alike
    assert torch.equal(sample_grid_inputs(model, 5, cpu)[1], noise)
    assert not torch.equal(sample_grid_inputs(model, 6, cpu)[1], noise)
    labels, _, cols = sample_grid_inputs(SimpleNamespace(num_classes=12, in_channels=1, input_size=8), 5, cpu)
    assert cols == 10 and labels.view(10, 10).tolist() == [list(range(10))] * 10  # the first ten
    labels, noise, cols = sample_grid_inputs(
        SimpleNamespace(num_classes=0, in_channels=1, input_size=8), 5, cpu
    )
    assert labels is None and cols == 10 and len(noise) == 100


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"),
        PermissionError(13, "Permission denied", "/models/sd-vae-ft-ema/diffusion_pytorch_model.safetensors"),
        FileNotFoundError("the latents' VAE '/models/vae' is not on this machine"),
    ],
)
def test_a_grid_decoder_that_fails_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, error):
    """A VAE that does not load (damaged, unreadable, missing) is tried once: every grid shows
    latent channels 0-2 after one warning naming the error."""
    from meanflow.data import latents
    from meanflow.data.synthetic import make_latent_folder

    loader = latents.TorchLatentLoader(
        make_latent_folder(str(tmp_path), num=4, shape=(4, 4, 4)), 2, num_workers=0
    )
    loads = []

    def fail(*args, **kwargs):
        loads.append(args)
        raise error

    monkeypatch.setattr(latents, "load_latents_vae", fail)
    samples = torch.randn(3, 4, 4, 4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # the count is grid_images' own, not the filter's
        for _ in range(3):
            assert torch.equal(grid_images(loader, samples), samples[:, :3])
    assert len(loads) == 1
    assert [str(w.message) for w in seen] == [
        f"sample grids show latent channels 0-2: cannot decode with the latent folder's VAE "
        f"({type(error).__name__}: {error})"
    ]


def test_a_log_lines_means_of_bf16_stats_are_summed_in_float32():
    """Under bf16 autocast the stats may be bf16: a bf16 sum stalls at 256 (its spacing is 2
    there), and 300 steps of 1.0 would log a mean of 0.85."""
    means = StepMeans()
    for _ in range(300):
        means.add({"mse": torch.tensor(1.0, dtype=torch.bfloat16)})
    assert means.pop(world=1) == ({"mse": 1.0}, 300)


class _Writer:
    """A stand-in for TensorBoard's SummaryWriter that keeps what it is given."""

    opened = []

    def __init__(self, log_dir, purge_step=None):
        self.scalars = []
        _Writer.opened.append(self)

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))

    def close(self):
        pass


@pytest.fixture
def tensorboard(monkeypatch):
    monkeypatch.setattr(_Writer, "opened", [])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", SimpleNamespace(SummaryWriter=_Writer))
    return _Writer.opened


def test_each_record_is_in_the_file_once_logged_and_only_rank_0_writes(tmp_path, tensorboard):
    """``tail -f`` (and a kill) sees a line as soon as it is logged; the other ranks write no
    line and no TensorBoard event."""
    log = MetricsLog(str(tmp_path), master=True, tensorboard=False)
    log({"step": 1, "loss": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 0.5}
    log.close()
    other = tmp_path / "rank1"
    other.mkdir()
    log = MetricsLog(str(other), master=False, tensorboard=True)
    log({"step": 1, "loss": 0.5})
    log.close()
    assert os.listdir(other) == [] and tensorboard == []


def test_tensorboard_gets_every_number_of_a_record_at_its_step(tmp_path, tensorboard):
    log = MetricsLog(str(tmp_path), master=True, tensorboard=True, step=0)
    log({"step": 2, "eval/acc": 0.95, "eval/nfe": 1, "eval/samples": 20, "note": "text"})
    log({"summary": {"step": 2, "steps_run": 2}})  # no step of its own: not a series
    log.close()
    assert tensorboard[0].scalars == [("eval/acc", 0.95, 2), ("eval/nfe", 1, 2), ("eval/samples", 20, 2)]


def test_a_resumed_runs_bar_counts_on_from_its_step(capsys):
    bar = ProgressBar(total=4, initial=2)
    bar.step(None)
    bar.step({"mse": 0.5, "img_per_s": 10.0})
    bar.close()
    last = [d for d in re.split(r"[\r\n]", capsys.readouterr().err) if d.strip()][-1]
    assert "4/4" in last, last


def test_lines_set_aside_by_two_resumes_stay_apart_and_are_counted(tmp_path, capsys):
    """Each resume appends what it sets aside as whole lines, a torn one ended, and says how
    many lines it moved."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    assert set_aside_records_after(str(tmp_path), 1) == 3
    assert "moved the last 3 lines of" in capsys.readouterr().out
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')
    assert set_aside_records_after(str(tmp_path), 1) == 1
    assert path.read_text() == '{"step": 1}\n'
    assert (tmp_path / ABANDONED).read_text().splitlines() == [
        '{"step": 2}',
        '{"step": 3}',
        '{"step": 4, "lo',
        '{"step": 2, "lo',
    ]


def _run_config(tmp_path, **kwargs):
    data = SimpleNamespace(name=kwargs.pop("data_name", "mnist"), path=kwargs.pop("data_path", None))
    values = dict(sample_steps=1, out_dir=str(tmp_path), eval_samples=20, data=data)
    return SimpleNamespace(**{**values, **kwargs})


def test_a_grid_of_several_steps_evaluates_one_step_against_the_runs_data(tiny, tmp_path, monkeypatch):
    """The grid draws ``sample_steps`` network calls an image; the evaluation stays the 1-NFE
    class accuracy the README names, scored against the run's own ``data.path``."""
    from meanflow import eval_mnist
    from meanflow.sampler import sample, save_grid

    calls = []

    def evaluate(model, num_samples, steps, data_path, log):
        calls.append((steps, data_path))
        return {"acc": 0.5, "fd": 1.0, "nfe": steps, "samples": num_samples}

    monkeypatch.setattr(eval_mnist, "evaluate", evaluate)
    config = _run_config(tmp_path / "run", sample_steps=2, data_path=str(tmp_path / "digits"))
    model, records = tiny(num_classes=10), []
    grid = sample_grid_inputs(model.config, 0, torch.device("cpu"))
    _samples_and_eval(config, 3, model, object(), grid, records.append, do_eval=True)
    assert calls == [(1, str(tmp_path / "digits"))] and records[0]["eval/nfe"] == 1
    labels, noise, cols = grid
    save_grid(sample(model, labels, steps=2, noise=noise), str(tmp_path / "two.png"), nrow=cols)
    png = tmp_path / "run" / "samples" / "step_0000003.png"
    assert png.read_bytes() == (tmp_path / "two.png").read_bytes()


def test_only_an_mnist_run_with_samples_to_score_is_evaluated_on_its_own_data(tmp_path, monkeypatch):
    from meanflow import eval_mnist

    assert evaluates(_run_config(tmp_path))
    assert not evaluates(_run_config(tmp_path, eval_samples=0))
    for name in ("imagefolder", "latents"):
        assert not evaluates(_run_config(tmp_path, data_name=name))
    loaded = []
    monkeypatch.setattr(eval_mnist, "load_classifier", loaded.append)
    prepare_evaluation(_run_config(tmp_path, data_path="/data/my-mnist"))
    prepare_evaluation(_run_config(tmp_path, data_name="imagefolder"))
    assert loaded == ["/data/my-mnist"]
