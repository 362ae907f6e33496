"""The trainer: exact resume, DDP (2 gloo ranks == 1 rank), Ctrl-C, bad input, compile."""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from meanflow import train
from meanflow.config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(out_dir, data_path, **overrides):
    config = TrainConfig.from_name(
        "mnist",
        model="DiT-T/8",
        model_kwargs={"depth": 1, "hidden_size": 32, "num_heads": 2},
        steps=4,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        ema_decays=[0.9, 0.99],
        out_dir=str(out_dir),
        log_every=1,
        sample_every=0,
        eval_every=0,
        eval_samples=0,
        ckpt_every=2,
        progress=False,
    )
    config.data.path = data_path
    for key, value in overrides.items():
        setattr(config, key, value)
    return config.validate()


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a, b, atol=0.0):
    for key in ("model",):
        for name, value in a[key].items():
            assert torch.allclose(value, b[key][name], rtol=0, atol=atol), name
    for ema_a, ema_b in zip(a["ema"], b["ema"]):
        for name, value in ema_a.items():
            assert torch.allclose(value, ema_b[name], rtol=0, atol=atol), name
    for sa, sb in zip(a["opt"]["state"].values(), b["opt"]["state"].values()):
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), rtol=0, atol=atol)


def test_run_leaves_checkpoint_samples_metrics(tmp_path, fake_mnist):
    summary = train.main(tiny_config(tmp_path / "run", fake_mnist, sample_every=2))
    assert summary["step"] == 4 and not summary["interrupted"]
    files = set(os.listdir(tmp_path / "run"))
    assert {"last.pt", "metrics.jsonl", "config.json", "samples"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    assert sorted(os.listdir(tmp_path / "run" / "samples")) == ["step_0000002.png", "step_0000004.png"]
    from PIL import Image

    assert Image.open(tmp_path / "run" / "samples" / "step_0000004.png").size == (10 * 34 + 2, 10 * 34 + 2)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5 and '"img_per_s"' in lines[0] and '"summary"' in lines[-1]
    from meanflow import sampler

    sampler.main(
        [
            str(tmp_path / "run" / "last.pt"),
            "--steps",
            "2",
            "--per-class",
            "1",
            "--out",
            str(tmp_path / "s.png"),
        ]
    )
    assert Image.open(tmp_path / "s.png").size == (10 * 34 + 2, 34 + 2)


def test_resume_is_exact(tmp_path, fake_mnist):
    train.main(tiny_config(tmp_path / "full", fake_mnist))
    train.main(tiny_config(tmp_path / "half", fake_mnist, steps=2))
    summary = train.main(tiny_config(tmp_path / "half", fake_mnist))  # resumes from last.pt
    assert summary["steps_run"] == 2
    full, half = _load(tmp_path / "full" / "last.pt"), _load(tmp_path / "half" / "last.pt")
    assert full["step"] == half["step"] == 4 and full["data"] == half["data"]
    _assert_same_state(full, half)  # bitwise


def test_ema_follows_the_weights_after_the_step(tmp_path, fake_mnist):
    """After each step every EMA is lerp(EMA before, weights after the optimizer step,
    1 - decay) with decay min(ema_decay, (1 + step) / (10 + step)) at 0-based step: checked
    from step 1 to step 2 (kept full checkpoints), where decay 0.1 applies as is and 0.99 is still
    in its warmup (2/11)."""
    config = tiny_config(tmp_path, fake_mnist, steps=2, ckpt_every=1, keep_every=1, ema_decays=[0.1, 0.99])
    config.keep_full = True  # the raw weights of step 2 too
    train.main(config)
    one, two = (_load(tmp_path / f"ckpt_{step:07d}.pt") for step in (1, 2))
    for ema_one, ema_two, decay in zip(one["ema"], two["ema"], (0.1, 2 / 11)):
        for name, value in ema_two.items():
            expected = torch.lerp(ema_one[name], two["model"][name], 1 - decay)
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=name)
        assert any(not torch.equal(ema_one[n], v) for n, v in ema_two.items())  # the EMA moved


def test_data_too_small_for_the_evaluation_is_refused_before_any_step(tmp_path, fake_mnist, monkeypatch):
    """The MNIST classifier that scores the evaluations learns from batches of 256 images: the
    fake MNIST's 96 are refused when the run starts, not at its first evaluation (after steps
    were spent and a checkpoint written)."""
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    config = tiny_config(tmp_path / "run", fake_mnist, eval_every=2, eval_samples=10)
    with pytest.raises(ValueError, match="has 96 training images"):
        train.main(config)
    assert not (tmp_path / "run").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, *configs):
    """One rank of a ``world``-rank gloo group that trains ``configs`` one after the other."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    try:
        for config in configs:  # one group for all: a spawned rank takes seconds to import
            train.main(config)
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_equal_one(tmp_path, fake_mnist):
    """DDP really synchronises the JVP step: 2 gloo ranks with half the batch each end where one
    process with the whole batch ends (data and noise are global draws split by rank)."""
    torch.set_num_threads(1)
    train.main(tiny_config(tmp_path / "one", fake_mnist, steps=3))
    config = tiny_config(tmp_path / "two", fake_mnist, steps=3)
    mp.start_processes(_rank_main, args=(2, _free_port(), config), nprocs=2, start_method="spawn")
    one, two = _load(tmp_path / "one" / "last.pt"), _load(tmp_path / "two" / "last.pt")
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    # each rank's global generators its own stream (an adapter's dropout masks differ by rank)
    assert not torch.equal(two["rng"][0]["torch"], two["rng"][1]["torch"])
    _assert_same_state(one, two, atol=1e-6)
    # and the ranks did not train alone: one rank on half the batch ends elsewhere
    alone = tiny_config(tmp_path / "alone", fake_mnist, steps=3, batch_size=4)
    train.main(alone)
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(one["model"].values(), _load(alone.out_dir + "/last.pt")["model"].values())
    )
    assert diff > 1e-4


def test_sigint_checkpoints_and_exits_zero(tmp_path, fake_mnist):
    out = tmp_path / "run"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from meanflow import train;"
        "train.main(['--model', 'DiT-T/8', '--model_kwargs', '{depth: 1, hidden_size: 32, num_heads: 2}',"
        f"'--steps', '100000', '--batch_size', '8', '--data.path', {fake_mnist!r}, '--out_dir', {str(out)!r},"
        "'--log_every', '1', '--sample_every', '0', '--eval_samples', '0', '--progress', 'false'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, ROOT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    metrics = out / "metrics.jsonl"
    for _ in range(600):
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            break
        if proc.poll() is not None:
            break
        import time

        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, output
    ckpt = _load(out / "last.pt")
    assert 3 <= ckpt["step"] < 100000
    assert '"interrupted": true' in output


def test_bad_inputs_change_nothing(tmp_path, fake_mnist):
    with pytest.raises(ValueError, match="unknown config key 'stepz'"):
        train.main(["--stepz", "3"])
    with pytest.raises(FileNotFoundError, match="data.path"):
        train.main(tiny_config(tmp_path / "run", str(tmp_path / "nowhere")))
    assert not (tmp_path / "run").exists()
    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=2))
    before = {f: (tmp_path / "run" / f).read_bytes() for f in ("last.pt", "metrics.jsonl", "config.json")}
    bigger = tiny_config(
        tmp_path / "run", fake_mnist, model_kwargs={"depth": 2, "hidden_size": 32, "num_heads": 2}
    )
    with pytest.raises(ValueError, match="another model.*depth: checkpoint 1 vs this run 2"):
        train.main(bigger)
    assert before == {f: (tmp_path / "run" / f).read_bytes() for f in before}
    with pytest.raises(FileNotFoundError, match="resume checkpoint"):
        train.main(tiny_config(tmp_path / "other", fake_mnist, resume=str(tmp_path / "none.pt")))
    # A truncated last.pt is refused in one line and left as it is (it may still be recoverable).
    (tmp_path / "run" / "last.pt").write_bytes(before["last.pt"][:4096])
    with pytest.raises(
        ValueError, match=r"cannot read checkpoint .*last.pt' \(corrupt, or not a torch file\): \S"
    ) as e:
        train.main(tiny_config(tmp_path / "run", fake_mnist, steps=4))
    assert "\n" not in str(e.value)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before["last.pt"][:4096]


@pytest.mark.parametrize("log_every", [1, 0], ids=["caught_at_the_log", "caught_at_the_checkpoint"])
def test_diverged_run_keeps_the_last_good_checkpoint(tmp_path, fake_mnist, monkeypatch, log_every):
    """From step 3 the loss is NaN (so are the weights after that step): the run stops with a
    FloatingPointError naming the kept checkpoint, and last.pt stays the step-2 one."""
    from meanflow.loss import MeanFlowLoss

    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=2))
    good = (tmp_path / "run" / "last.pt").read_bytes()
    calls, original = [], MeanFlowLoss.__call__

    def nan_loss(self, *args, **kwargs):
        loss, stats = original(self, *args, **kwargs)
        calls.append(1)
        return loss * float("nan"), stats

    monkeypatch.setattr(MeanFlowLoss, "__call__", nan_loss)
    handler = signal.getsignal(signal.SIGINT)
    config = tiny_config(tmp_path / "run", fake_mnist, steps=6, ckpt_every=1, log_every=log_every)
    with pytest.raises(FloatingPointError, match=r"diverged.*last.pt \(step 2\) is kept; resume from it"):
        train.main(config)
    assert len(calls) == 1  # stopped at step 3, before writing it
    assert (tmp_path / "run" / "last.pt").read_bytes() == good
    assert signal.getsignal(signal.SIGINT) is handler  # the run's Ctrl-C handler is gone again


def test_an_infinite_gradient_norm_stops_the_run(tmp_path, fake_mnist, monkeypatch):
    """A finite loss whose gradients overflowed (grad_norm inf, as a step reports it before
    clipping) is a diverged run too, caught at the log before the step's checkpoint."""
    train_step = train.train_step

    def overflowing(*args, **kwargs):
        stats = train_step(*args, **kwargs)
        return {**stats, "grad_norm": torch.tensor(float("inf"))} if args[4] == 2 else stats

    monkeypatch.setattr(train, "train_step", overflowing)
    with pytest.raises(FloatingPointError, match=r"diverged by step 3 \(loss [^,]+, grad_norm inf\)"):
        train.main(tiny_config(tmp_path / "run", fake_mnist, steps=4))
    assert _load(tmp_path / "run" / "last.pt")["step"] == 2


def test_tensorboard_needs_its_package(tmp_path, fake_mnist):
    try:
        import torch.utils.tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="pip install tensorboard"):
        train.main(tiny_config(tmp_path / "run", fake_mnist, tensorboard=True))
    assert not (tmp_path / "run").exists()


def test_sample_grid_with_fewer_than_ten_classes(tmp_path):
    """The grid's labels are the model's classes (one column each), never 0..9 regardless."""
    from PIL import Image

    from meanflow.data.synthetic import make_image_tree

    make_image_tree(str(tmp_path / "images"), classes=3, per_class=2, sides=(16, 20), extras=False)
    config = tiny_config(tmp_path / "run", str(tmp_path / "images"), steps=2, batch_size=4)
    config.data.name, config.data.backend, config.data.image_size, config.data.num_workers = (
        "imagefolder", "torch", 16, 0,
    )  # fmt: skip
    assert train.main(config)["step"] == 2
    grid = Image.open(tmp_path / "run" / "samples" / "step_0000002.png")
    assert grid.mode == "RGB" and grid.size == (3 * 18 + 2, 10 * 18 + 2)  # 3 columns (classes), 10 rows


def test_grid_of_latents_without_their_vae_warns_and_goes_on(tmp_path):
    from meanflow.data.latents import TorchLatentLoader
    from meanflow.data.synthetic import make_latent_folder

    loader = TorchLatentLoader(make_latent_folder(str(tmp_path), num=4, shape=(4, 4, 4)), 2, num_workers=0)
    samples = torch.randn(3, 4, 4, 4)
    with pytest.warns(UserWarning, match="latent channels 0-2"):
        assert torch.equal(train.grid_images(loader, samples), samples[:, :3])
    assert train.grid_images(object(), samples) is samples  # pixel loaders have no decode


def test_atomic_write_survives_a_crash(tmp_path):
    from meanflow.checkpoint import atomic_save, atomic_write

    path = str(tmp_path / "last.pt")
    atomic_save({"step": 1}, path)

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert _load(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.pt"]


def test_setup_distributed_picks_the_device(monkeypatch):
    """train and sample share one setup: "cuda" means LOCAL_RANK's GPU, "cuda:N" is honoured."""
    from meanflow.distributed import setup_distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup_distributed("cuda") == (3, 1, torch.device("cuda", 3))
    assert setup_distributed("cuda:1") == (3, 1, torch.device("cuda", 1))
    assert setup_distributed("cpu") == (3, 1, torch.device("cpu"))
    assert chosen == [torch.device("cuda", 3), torch.device("cuda", 1)]


@pytest.mark.parametrize(
    "name, gpus, message",
    [
        ("cuda", 0, "'cuda': torch sees no CUDA GPU"),
        ("cuda:1", 0, "'cuda:1': torch sees no CUDA GPU"),
        ("cuda:2", 2, "'cuda:2': GPU 2 asked for, this machine has 2"),
        ("cuda", 2, "'cuda (LOCAL_RANK 3)': GPU 3 asked for, this machine has 2"),
        ("gpu", 2, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        ("meta", 2, "got 'meta'"),
    ],
)
def test_setup_distributed_names_a_device_it_cannot_use(monkeypatch, name, gpus, message):
    """A bad --device is a ValueError naming it (the programs print it), not torch's driver
    error from the first CUDA call; nothing is set up."""
    from meanflow.distributed import setup_distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=re.escape(message)):
        setup_distributed(name)
    assert chosen == []


@pytest.mark.parametrize("w, k", [(1.5, 0.3), (2.0, 0.0)])  # both guidance values; the null one only
def test_compiled_step_has_no_graph_break(tiny, w, k):
    """model.jvp + loss + backward trace as ONE graph (the mfkernels ops are custom ops)."""
    from meanflow.loss import LossModule, MeanFlowLoss

    model = tiny()
    objective = MeanFlowLoss(cfg_w=w, cfg_k=k)
    step = LossModule(model, objective)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 5, (4,))
    noise = objective.sample_noise(x, torch.Generator().manual_seed(0))
    eager, _ = step(x, y, noise)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, stats = compiled(x, y, noise)
    loss.backward()
    assert torch.allclose(loss, eager, rtol=1e-6) and model.training
    assert all(p.grad is not None for p in model.parameters())
    explain = torch._dynamo.explain(step)(x, y, noise)
    assert explain.graph_break_count == 0 and explain.graph_count == 1


def test_compiled_step_takes_either_row_count(tiny):
    """A batch whose size times ratio_r_neq_t is not an integer has 1 or 2 rows with r != t
    from step to step: the compiled step recompiles once and stays equal to the eager one."""
    from meanflow.loss import LossModule, MeanFlowLoss

    model = tiny()
    objective = MeanFlowLoss()
    step = LossModule(model, objective)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 5, (6,))
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    sizes = set()
    for seed in range(6):
        noise = objective.sample_noise(x, torch.Generator().manual_seed(seed))
        sizes.add(noise["tangent_rows"].numel())
        torch.testing.assert_close(compiled(x, y, noise)[0], step(x, y, noise)[0], rtol=1e-5, atol=1e-6)
    assert sizes == {1, 2}


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_gpu_bf16_step(tmp_path, fake_mnist, compile):
    """On CUDA: bf16 autocast (precision auto), triton backend, fused AdamW, optional compile."""
    config = tiny_config(
        tmp_path / "gpu", fake_mnist, device="cuda", compile=compile, steps=3, sample_every=3
    )
    summary = train.main(config)
    assert summary["step"] == 3
    lines = [json.loads(line) for line in (tmp_path / "gpu" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in lines if "loss" in r)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    from meanflow.checkpoint import cache_dir
    from meanflow.data import image_folder

    monkeypatch.delenv("MEANFLOW_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == str(tmp_path / "xdg" / "meanflow")
    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "mf"))
    assert cache_dir() == str(tmp_path / "mf")
    # A read-only image tree keeps its scan summary in the same cache.
    monkeypatch.setattr(image_folder.os, "access", lambda path, mode: False)
    assert os.path.dirname(image_folder.default_cache_path(str(tmp_path / "ro"))) == str(tmp_path / "mf")


def test_cpu_optimizer_is_torchs_fused_adamw(tmp_path):
    config = tiny_config(tmp_path, None, betas=[0.8, 0.95], weight_decay=0.01)
    opt = train.build_optimizer(torch.nn.Linear(3, 2), config, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert opt.defaults["betas"] == (0.8, 0.95) and opt.defaults["weight_decay"] == 0.01


def test_progress_bar_shows_the_error_and_draws_the_end_once(tmp_path, fake_mnist, capsys):
    """The bar shows the unweighted error (the weighted loss is ~1 by design), and its final
    stats are drawn once: in a log file every draw is a line of its own."""
    train.main(tiny_config(tmp_path / "run", fake_mnist, progress=True))
    draws = [d for d in re.split(r"[\r\n]", capsys.readouterr().err) if "it/s" in d or "s/it" in d]
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-2])
    final = f"mse {last['mse']:.4g}"
    assert "loss 1.0000" not in "".join(draws) and final in draws[-1] and "4/4" in draws[-1]
    assert sum(final in d for d in draws) == 1, draws


def test_images_per_second_leave_out_checkpoints_grids_and_evaluations(tmp_path, fake_mnist, monkeypatch):
    """img_per_s is the steps' throughput: a log window holding a slow checkpoint and sample grid
    (3 s each here, made at step 2 between the logs of steps 2 and 4) does not count them."""
    import time

    pause = 3.0

    def slow(function):
        def wrapped(*args, **kwargs):
            time.sleep(pause)
            return function(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(train, "save_checkpoint", slow(train.save_checkpoint))
    monkeypatch.setattr(train, "samples_and_eval", slow(train.samples_and_eval))
    train.main(tiny_config(tmp_path / "run", fake_mnist, log_every=2, ckpt_every=2, sample_every=2))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logs = [json.loads(line) for line in lines if '"img_per_s"' in line]
    assert [r["step"] for r in logs] == [2, 4]
    window_seconds = 8 * 2 / logs[1]["img_per_s"]
    assert window_seconds < pause, window_seconds


def test_readme_names_every_metrics_key(tmp_path, fake_mnist):
    from pathlib import Path

    readme = (Path(ROOT) / "README.md").read_text()
    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=2))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = {k for r in records[:-1] for k in r} | set(records[-1]["summary"]) | {"summary"}
    keys |= {f"eval/{k}" for k in ("acc", "fd", "nfe", "samples")}  # eval_mnist.evaluate's result
    assert not [k for k in sorted(keys) if f"`{k}`" not in readme]


@pytest.mark.parametrize("ckpt_every", [2, 0])
def test_checkpoints_are_kept_at_their_own_cadence(tmp_path, fake_mnist, ckpt_every):
    """keep_every keeps ckpt_<step>.pt every that many steps, whatever ckpt_every is."""
    train.main(tiny_config(tmp_path, fake_mnist, steps=7, ckpt_every=ckpt_every, keep_every=3))
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_0000003.pt", "ckpt_0000006.pt"]
    assert _load(tmp_path / "ckpt_0000003.pt")["step"] == 3


def test_kept_checkpoints_hold_what_sampling_needs(tmp_path, fake_mnist):
    """A kept ckpt_<step>.pt holds the EMA weights and configs only (a quarter of last.pt with one
    EMA): sampling and export load it, a resume from it is refused naming keep_full; with
    keep_full it is a copy of last.pt."""
    from meanflow.export import export
    from meanflow.pretrained import load_model
    from meanflow.train_state import SAMPLING_KEYS

    train.main(tiny_config(tmp_path / "run", fake_mnist, steps=2, ckpt_every=1, keep_every=1))
    kept, last = tmp_path / "run" / "ckpt_0000002.pt", tmp_path / "run" / "last.pt"
    assert sorted(_load(kept)) == sorted(SAMPLING_KEYS)
    assert os.path.getsize(kept) < 0.6 * os.path.getsize(last)  # two EMAs of the four tensors sets
    for ema in (0, 1):
        from_kept, from_last = load_model(str(kept), ema=ema), load_model(str(last), ema=ema)
        for (name, a), b in zip(from_kept.state_dict().items(), from_last.state_dict().values()):
            assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="EMA weights only"):
        load_model(str(kept), ema=None)
    export(str(kept), str(tmp_path / "exported"))
    with pytest.raises(ValueError, match="cannot resume a run .*keep_full"):
        train.main(tiny_config(tmp_path / "again", fake_mnist, steps=3, resume=str(kept)))

    full = tiny_config(tmp_path / "full", fake_mnist, steps=1, ckpt_every=1, keep_every=1)
    full.keep_full = True
    train.main(full)
    assert sorted(_load(tmp_path / "full" / "ckpt_0000001.pt")) == sorted(
        _load(tmp_path / "full" / "last.pt")
    )
