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

from meanflow.train_report import ProgressBar, StepMeans, _samples_and_eval, grid_images, sample_grid_inputs


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
