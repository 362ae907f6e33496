"""The trainer with ``--model_class`` naming a library model (meanflow/adapters.py): it learns,
checkpoints, resumes exactly and samples; 2 DDP ranks equal 1; bf16 autocast reaches its
attention on the CPU too; its EMA is patched like the model; the options and checkpoints it
cannot use are refused in one line naming the class."""

import json
import math
import os
import re

import pytest
import torch
import torch.multiprocessing as mp
from numerics import TOL, assert_close, rel_err
from test_train import _free_port, _load, _rank_main, tiny_config

from meanflow import train
from meanflow.adapters import ADAPTERS, AdapterConfig
from meanflow.config import TrainConfig, parse_args
from mfkernels import dispatch

# One block, 16 tokens of 8 x 8 pixels (MNIST is 32 x 32), head dim 16: a step takes milliseconds.
TINY = {
    "diffusers.DiTTransformer2DModel": dict(
        patch_size=8, num_attention_heads=2, attention_head_dim=16, num_layers=1
    ),
    "timm.VisionTransformer": dict(patch_size=8, embed_dim=32, depth=1, num_heads=2),
}
DIT = {"depth": 1, "hidden_size": 32, "num_heads": 2}


def adapter_config(out_dir, data_path, model_class, **overrides) -> TrainConfig:
    if model_class in ADAPTERS:
        pytest.importorskip(ADAPTERS[model_class].library)
    settings = dict(model_class=model_class, steps=30, warmup_steps=0, ema_decays=[0.9], ckpt_every=15)
    settings["threads"] = 1  # a shared 2-core machine: far faster than two threads waiting on each other
    settings["model_kwargs"] = {"time_scale": 1.0, **TINY.get(model_class, DIT)}  # the preset's time scale
    return tiny_config(out_dir, data_path, **{**settings, **overrides})


def _mse(out_dir) -> list:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records if "loss" in r)
    return [r["mse"] for r in records if "mse" in r]


@pytest.mark.parametrize("model_class", sorted(TINY))
def test_adapter_learns_checkpoints_resumes_and_samples(tmp_path, fake_mnist, model_class):
    run = tmp_path / "run"
    assert train.main(adapter_config(run, fake_mnist, model_class))["step"] == 30
    mse = _mse(run)
    assert len(mse) == 30 and sum(mse[-5:]) < 0.85 * sum(mse[:5]), mse  # it learns
    assert (run / "samples" / "step_0000030.png").is_file()  # the EMA sampled through (z, r, t, y)
    ckpt = _load(run / "last.pt")
    assert ckpt["config"]["model_class"] == model_class
    assert ckpt["model_config"] == dict(
        model_class=model_class, input_size=32, in_channels=1, num_classes=10,
        kwargs={"time_scale": 1.0, **TINY[model_class]},
    )  # fmt: skip

    # a resume continues where the run stopped, exactly
    summary = train.main(adapter_config(run, fake_mnist, model_class, steps=32))
    assert summary["steps_run"] == 2 and summary["step"] == 32
    train.main(adapter_config(tmp_path / "straight", fake_mnist, model_class, steps=32))
    resumed, straight = _load(run / "last.pt"), _load(tmp_path / "straight" / "last.pt")
    for key in ("model", "ema"):
        for a, b in zip(*(torch.utils._pytree.tree_leaves(c[key]) for c in (resumed, straight))):
            assert torch.equal(a, b), key

    # the checkpoint's model_config rebuilds the model
    model = AdapterConfig(**resumed["model_config"]).build()
    model.load_state_dict(resumed["ema"][0])
    from meanflow.sampler import sample

    images = sample(model, torch.arange(3), noise=torch.randn(3, 1, 32, 32))
    assert images.shape == (3, 1, 32, 32) and torch.isfinite(images).all()


def _logged(out_dir, keys=("loss", "mse", "grad_norm")) -> torch.Tensor:
    """The per-step ``keys`` of a run's metrics.jsonl: (steps, len(keys))."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return torch.tensor([[r[k] for k in keys] for r in records if "loss" in r], dtype=torch.float64)


def _assert_same_run(one, two, lr, name):
    """Checkpoints ``one`` and ``two`` of one run on different rank counts agree.

    The AdamW moments (the averaged gradients) to float rounding, relative to the largest
    moment of each kind: the floor lets a gradient that is zero in exact arithmetic (the key
    bias's: softmax ignores a shift of all scores) be rounding noise. The weights and EMAs to
    a twentieth of lr: Adam divides each gradient by its own root mean square, so rounding
    noise in a gradient that is zero, or crosses zero, moves its weight by a fraction of lr
    that differs between runs (6.4e-3 lr measured, on the diffusers DiT's key bias), while a
    rank that trains alone is off by whole steps."""
    states = [list(c["opt"]["state"].values()) for c in (one, two)]
    for key in ("exp_avg", "exp_avg_sq"):
        floor = max(s[key].abs().max().item() for s in states[0])
        for param, a, b in zip(one["model"], *states):
            assert_close(f"{name} {param} {key}", b[key], a[key], 1e-5, floor)
    pairs = [("model", one["model"], two["model"])]
    pairs += [(f"ema {i}", a, b) for i, (a, b) in enumerate(zip(one["ema"], two["ema"]))]
    for label, a, b in pairs:
        for param, value in a.items():
            err = (b[param] - value).abs().max().item()
            assert err <= lr / 20, f"{name} {label} {param}: off by {err:.2e} > lr / 20"


def test_two_ranks_equal_one(tmp_path, fake_mnist):
    """DDP synchronises an adapter's torch.func.jvp step: 2 gloo ranks with half the batch
    each end where one process with the whole batch ends, for both adapters (trained one
    after the other in one process group: a spawned rank takes seconds to import them)."""
    settings = dict(steps=3, ckpt_every=0, ema_decays=[0.9, 0.99])
    runs = {
        model_class: {
            n: adapter_config(tmp_path / f"{model_class}-{n}", fake_mnist, model_class, **settings)
            for n in (1, 2)
        }
        for model_class in sorted(TINY)
    }
    for configs in runs.values():
        train.main(configs[1])
    two_ranks = [configs[2] for configs in runs.values()]
    mp.start_processes(_rank_main, args=(2, _free_port(), *two_ranks), nprocs=2, start_method="spawn")
    for model_class, configs in runs.items():
        one, two = (_load(os.path.join(configs[n].out_dir, "last.pt")) for n in (1, 2))
        assert two["world_size"] == 2
        _assert_same_run(one, two, configs[1].lr, model_class)
        logged = [_logged(tmp_path / f"{model_class}-{n}") for n in (1, 2)]  # means over the ranks
        err = rel_err(logged[1], logged[0])
        assert err <= 1e-5, f"{model_class}: the logged loss, mse and grad_norm are off by {err:.1e}"


def _train_seeing_attention(config) -> set:
    """Train ``config`` (its backend: reference); the dtypes the fused attention JVP got."""
    dtypes = set()

    def recorded(*args):
        dtypes.add(args[0].dtype)
        return fused.fn(*args)

    with dispatch.substitute("attention_jvp", "reference", recorded) as fused:
        train.main(config)
    return dtypes


@pytest.mark.parametrize("model_class", sorted(TINY))
def test_cpu_bf16_autocast_trains_close_to_fp32(tmp_path, fake_mnist, model_class):
    """``--precision bf16`` on the CPU (autocast is the CPU's too): it reaches the adapter's
    attention inside torch.func.jvp (the fused attention JVP gets bf16 q, k, v) and a few
    steps' logged mse and gradient norm stay within bf16's tolerance of the fp32 run's."""
    seen = {}
    for precision in ("fp32", "bf16"):
        config = adapter_config(
            tmp_path / precision, fake_mnist, model_class, steps=4, ckpt_every=0, precision=precision,
            backend="reference",
        )  # fmt: skip
        seen[precision] = _train_seeing_attention(config)
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    fp32, bf16 = (_logged(tmp_path / precision, ("mse", "grad_norm")) for precision in seen)
    assert torch.isfinite(bf16).all() and rel_err(bf16, fp32) <= TOL[torch.bfloat16], (fp32, bf16)


def test_emas_are_patched_like_the_model_and_evaluated(tmp_path, fake_mnist, monkeypatch):
    """The EMA the trainer samples and evaluates is a copy of the patched model: torch.func.jvp
    through it runs the fused attention JVP (PyTorch's fused SDPA kernels have no forward-mode AD)."""
    from meanflow import eval_mnist

    monkeypatch.setenv("MEANFLOW_CACHE", str(tmp_path / "cache"))
    fit = eval_mnist.train_classifier  # a classifier of the fake digits, in a second
    monkeypatch.setattr(
        eval_mnist,
        "train_classifier",
        lambda path, log, **loaded: fit(path, epochs=2, log=log, batch=16, **loaded),
    )
    sampled = []
    original = train.samples_and_eval

    def record(config, step, model, *args):
        sampled.append(model)
        return original(config, step, model, *args)

    monkeypatch.setattr(train, "samples_and_eval", record)
    config = adapter_config(tmp_path, fake_mnist, "timm.VisionTransformer", steps=1, backend="reference")
    config.eval_samples = 20
    summary = train.main(config)
    assert 0 <= summary["eval/acc"] <= 1 and math.isfinite(summary["eval/fd"])
    (ema,) = sampled
    calls = []

    def counted(*args):
        calls.append(1)
        return fused.fn(*args)

    z, t, y = torch.randn(2, 1, 32, 32), torch.tensor([0.7, 0.4]), torch.tensor([3, 10])
    with dispatch.substitute("attention_jvp", "reference", counted) as fused:
        _, du = torch.func.jvp(
            lambda z, t: ema(z, t / 2, t, y), (z, t), (torch.randn_like(z), torch.ones_like(t))
        )
    assert calls and torch.isfinite(du).all()


def _cli_error(argv) -> str:
    with pytest.raises(SystemExit) as e:
        train.cli(argv)
    message = e.value.code
    assert isinstance(message, str) and message.startswith("meanflow.train: error: ") and "\n" not in message
    return message


def test_bad_model_class_is_named_before_any_work(tmp_path, fake_mnist):
    out = tmp_path / "run"
    message = _cli_error(["--model_class", "timm.ViT", "--data.path", fake_mnist, "--out_dir", str(out)])
    assert message.endswith(
        "model_class must be one of meanflow.DiT, diffusers.DiTTransformer2DModel, timm.VisionTransformer, "
        "got 'timm.ViT'"
    )
    assert not out.exists()
    with pytest.raises(ValueError, match="model_class must be one of"):
        TrainConfig.from_name("mnist", model_class="DiT").validate()


def test_compile_needs_our_dit(tmp_path, fake_mnist):
    """torch.func.jvp through a whole transformer does not trace as one graph: refused up front."""
    with pytest.raises(ValueError, match="compile=true needs model_class meanflow.DiT"):
        adapter_config(tmp_path, fake_mnist, "timm.VisionTransformer", compile=True)
    assert not tmp_path.joinpath("last.pt").exists()


def test_a_model_preset_other_than_the_presets_is_refused(tmp_path, fake_mnist):
    """An adapter is built from model_kwargs: a ``--model`` (a meanflow.DiT preset) other than
    the preset's would do nothing, so it is refused; the preset's own stays (the default
    mnist preset sets DiT-T/8), and meanflow.DiT takes any."""
    pytest.importorskip("timm")
    pytest.importorskip("diffusers")
    vit = ["--model_class", "timm.VisionTransformer"]
    assert parse_args(vit).model == "DiT-T/8"
    assert parse_args(["--preset", "imagenet256-b2", *vit]).model == "DiT-B/2"
    assert parse_args(["--model", "DiT-B/2"]).model == "DiT-B/2"
    message = (
        "model 'DiT-B/2' names a meanflow.DiT preset; model_class timm.VisionTransformer does not use it: "
        "give that model's size in model_kwargs (the library's own keywords) and leave model at the "
        "preset's 'DiT-T/8'"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_args([*vit, "--model", "DiT-B/2"])
    with pytest.raises(ValueError, match="model_class diffusers.DiTTransformer2DModel does not use it"):
        TrainConfig.from_name("mnist", model_class="diffusers.DiTTransformer2DModel", model="DiT-S/2")
    out = tmp_path / "run"
    argv = [*vit, "--model", "DiT-B/2", "--data.path", fake_mnist, "--out_dir", str(out)]
    assert _cli_error(argv).endswith(message) and not out.exists()


def test_run_says_what_it_built_and_that_model_is_unused(tmp_path, fake_mnist, capsys):
    train.main(adapter_config(tmp_path, fake_mnist, "timm.VisionTransformer", steps=1))
    assert (
        "model: timm.VisionTransformer(input_size=32, in_channels=1, num_classes=10, time_scale=1.0, "
        "patch_size=8, embed_dim=32, depth=1, num_heads=2); model 'DiT-T/8' is not used "
        "(a meanflow.DiT preset)\n"
    ) in capsys.readouterr().out


def test_missing_library_is_named(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else find_spec(name, *a)
    )
    with pytest.raises(
        ValueError, match=r"model_class timm.VisionTransformer needs the timm package \(pip install timm\)"
    ):
        TrainConfig.from_name("mnist", model_class="timm.VisionTransformer").validate()


def test_resume_with_another_class_is_refused(tmp_path, fake_mnist):
    run = tmp_path / "run"
    train.main(adapter_config(run, fake_mnist, "timm.VisionTransformer", steps=1))
    before = {f: (run / f).read_bytes() for f in ("last.pt", "metrics.jsonl", "config.json")}
    for other in ("meanflow.DiT", "diffusers.DiTTransformer2DModel"):
        if other in ADAPTERS and not _installed(ADAPTERS[other].library):
            continue
        with pytest.raises(
            ValueError,
            match=f"another run \\(model_class: checkpoint 'timm.VisionTransformer' vs this run '{other}'\\)",
        ):
            train.main(adapter_config(run, fake_mnist, other, steps=2))
    assert before == {f: (run / f).read_bytes() for f in before}
    # and the other way: a DiT checkpoint, an adapter run
    train.main(adapter_config(tmp_path / "dit", fake_mnist, "meanflow.DiT", steps=1))
    with pytest.raises(
        ValueError, match="model_class: checkpoint 'meanflow.DiT' vs this run 'timm.VisionTransformer'"
    ):
        train.main(adapter_config(tmp_path / "dit", fake_mnist, "timm.VisionTransformer", steps=2))


def _installed(library) -> bool:
    import importlib.util

    return importlib.util.find_spec(library) is not None


def test_dit_loaders_name_the_class_of_an_adapter_checkpoint(tmp_path, fake_mnist, capsys):
    """Sampling, export, generate and eval_mnist build our DiT: an adapter's checkpoint is one
    line naming its class and how to rebuild it, not a KeyError."""
    from meanflow import sampler
    from meanflow.pretrained import load_model, load_trainer_checkpoint

    config = adapter_config(tmp_path, fake_mnist, "timm.VisionTransformer", steps=1, keep_every=1)
    train.main(config)
    message = (
        "holds a timm.VisionTransformer model .*AdapterConfig\\(\\*\\*ckpt\\['model_config'\\]\\).build\\(\\)"
    )
    for path in ("last.pt", "ckpt_0000001.pt"):  # a kept checkpoint too
        with pytest.raises(ValueError, match=message):
            load_trainer_checkpoint(os.path.join(config.out_dir, path))
    with pytest.raises(ValueError, match=message):
        load_model(os.path.join(config.out_dir, "last.pt"), ema=None)
    with pytest.raises(SystemExit):
        sampler.main([os.path.join(config.out_dir, "last.pt"), "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err.strip()
    assert "holds a timm.VisionTransformer model" in err and "\n" not in err
