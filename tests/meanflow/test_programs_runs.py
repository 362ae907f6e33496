"""The options of the programs users run after training do what they say: generate's --raw,
--ema, --dtype, --no-png and --quiet; a bad value is refused before anything is loaded or
written; export's options that go with others are refused naming them."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import meanflow.generate as generate_cli
from meanflow.pipeline import to_uint8
from meanflow.sampler import sample as sample_fn

RUN = dict(num=4, batch_size=2, device="cpu", progress=False)


def save_ckpt(path, model, emas=()):
    """A trainer checkpoint whose raw weights are ``model``'s and EMAs ``emas`` (default: the raw)."""
    state = model.state_dict()
    emas = [m.state_dict() for m in emas] or [state]
    config = dataclasses.asdict(model.config)
    torch.save(
        {"model": state, "ema": emas, "ema_decays": [0.99, 0.999][: len(emas)], "model_config": config},
        path,
    )
    return str(path)


def samples(out) -> np.ndarray:
    with np.load(os.path.join(out, "samples.npz")) as data:
        return data["arr_0"]


def expected(model, num, autocast=None) -> np.ndarray:
    """The sampler's images of indices ``0..num-1`` in one batch (as a run of that batch size)."""
    cfg = model.config
    noise = generate_cli.noise_for(range(num), (cfg.in_channels, cfg.input_size, cfg.input_size), 0)
    y = generate_cli.labels_for(range(num), cfg.num_classes, "balanced", 0)
    with torch.no_grad(), autocast or torch.autocast("cpu", enabled=False):
        x = sample_fn(model, y, steps=1, noise=noise)
    return to_uint8(x.float())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(seed=-1), "seed must be an int >= 0, got -1"),
        (dict(num=2.5), "num must be an int >= 1, got 2.5"),
        (dict(batch_size=True), "batch_size must be an int >= 1, got True"),
        (dict(scaling_factor=0.2), "scaling_factor goes with vae or vae_config"),
        (dict(vae="random", scaling_factor=0.0), "scaling_factor must be a finite number > 0, got 0.0"),
        (dict(vae_config="vae.json", scaling_factor=-1.0), "scaling_factor must be a finite number > 0"),
        (dict(vae="random", scaling_factor=float("nan")), "scaling_factor must be a finite number > 0"),
    ],
)
def test_generate_refuses_each_bad_value_before_writing(tmp_path, tiny, monkeypatch, kwargs, message):
    """Refused by name before the checkpoint is read (a 10 GB load and hash) or --out made."""
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))

    def not_now(*args, **kw):
        raise AssertionError("the checkpoint was loaded before the arguments were checked")

    monkeypatch.setattr(generate_cli, "load_model", not_now)
    out = tmp_path / "s"
    with pytest.raises(ValueError, match=f"^{message}".replace("(", r"\(").replace(")", r"\)")):
        generate_cli.run(ckpt, str(out), **{**RUN, **kwargs})
    assert not out.exists()


def test_dtype_bf16_samples_under_autocast(tmp_path, tiny):
    """--dtype bf16 is the model under bf16 autocast: not the fp32 images, not fp16's."""
    model = tiny(in_channels=3)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    generate_cli.run(ckpt, str(tmp_path / "bf16"), dtype="bf16", **{**RUN, "batch_size": 4})
    got = samples(tmp_path / "bf16")
    want = expected(model, 4, torch.autocast("cpu", dtype=torch.bfloat16))
    assert np.array_equal(got, want)
    assert not np.array_equal(got, expected(model, 4))
    assert not np.array_equal(got, expected(model, 4, torch.autocast("cpu", dtype=torch.float16)))


def test_raw_and_ema_pick_the_weights_sampled(tmp_path, tiny):
    """--raw samples the raw weights and --ema 1 the second EMA, not EMA 0."""
    raw, ema0, ema1 = (tiny(in_channels=3, seed=s) for s in (1, 2, 3))
    ckpt = save_ckpt(tmp_path / "last.pt", raw, emas=(ema0, ema1))
    base = ["--ckpt", ckpt, "--num-samples", "4", "--batch-size", "4", "--device", "cpu", "--quiet"]
    for option, model in ((["--raw"], raw), (["--ema", "1"], ema1), ([], ema0)):
        out = str(tmp_path / ("_".join(option) or "default"))
        generate_cli.main([*base, "--out", out, *option])
        assert np.array_equal(samples(out), expected(model, 4)), option
    assert not np.array_equal(expected(ema0, 4), expected(ema1, 4))


def test_quiet_prints_no_bar_and_the_default_does(tmp_path, tiny, capsys):
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    base = ["--ckpt", ckpt, "--num-samples", "3", "--batch-size", "2", "--device", "cpu"]
    generate_cli.main([*base, "--out", str(tmp_path / "q"), "--quiet"])
    said = capsys.readouterr()
    assert said.err == "" and said.out == f"wrote {tmp_path / 'q' / 'samples.npz'}\n"
    generate_cli.main([*base, "--out", str(tmp_path / "bar")])
    assert "3/3" in capsys.readouterr().err  # the bar's last state: every image made


def test_a_resume_with_no_png_writes_no_png(tmp_path, tiny, monkeypatch):
    """--no-png writes no PNG: neither in a run nor when a resume meets finished batches (a
    resume rewrites the PNGs a finished batch lost only when PNGs are asked for)."""
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    whole = tmp_path / "whole"
    generate_cli.main(["--ckpt", ckpt, "--out", str(whole), "--num-samples", "3", "--no-png", "--quiet"])
    assert os.listdir(whole / "images") == [] and samples(whole).shape == (3, 8, 8, 3)

    real, made = generate_cli._generate_batch, []

    def killed_in_the_second_batch(*args):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt
        return real(*args)

    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        patch.setattr(generate_cli, "_generate_batch", killed_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            generate_cli.run(ckpt, str(cut), png=False, **RUN)
    assert os.listdir(cut / "shards") == ["000000.npz"]
    generate_cli.run(ckpt, str(cut), png=False, **RUN)
    assert os.listdir(cut / "images") == []
    assert samples(cut).shape == (4, 8, 8, 3)


def export_error(capsys, argv) -> str:
    from meanflow.export import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err, err
    return err


def test_export_refuses_num_heads_without_official_naming_it(tmp_path, tiny, capsys):
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), tmp_path / "exported"
    err = export_error(capsys, ["--ckpt", ckpt, "--out", str(out), "--num-heads", "4"])
    assert "argument --num-heads: only with --official-dit or --official-sit" in err
    assert not out.exists()


def test_export_of_a_latent_pipeline_without_vae_names_the_option(tmp_path, tiny, capsys):
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=4)), tmp_path / "pipe"
    err = export_error(capsys, ["--ckpt", ckpt, "--out", str(out), "--pipeline"])
    assert err.startswith("error: --pipeline: the model makes 4-channel latents, not images: pass --vae")
    assert err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    "more, said",
    [
        (["--vae", "vae.safetensors"], "error: --vae goes with --pipeline\n"),
        (["--official-dit", "--raw"], "error: --raw: --official-dit converts the one weight set"),
        (["--official-sit", "--ema", "1"], "error: --ema 1: --official-sit converts the one weight set"),
    ],
)
def test_export_refuses_an_option_it_would_drop_before_reading_the_checkpoint(
    tmp_path, tiny, capsys, monkeypatch, more, said
):
    """--vae without --pipeline, or --raw/--ema N of an official checkpoint (one weight set),
    would be dropped without a word: refused before the checkpoint is read or converted."""
    import meanflow.export as export

    def not_now(*args, **kw):
        raise AssertionError("the checkpoint was read before the options were checked")

    monkeypatch.setattr(export, "load_model", not_now)
    monkeypatch.setattr(export, "from_official_dit", not_now)
    out = tmp_path / "exported"
    err = export_error(capsys, ["--ckpt", save_ckpt(tmp_path / "last.pt", tiny()), "--out", str(out), *more])
    assert err.startswith(said) and err.count("\n") == 1, err
    assert not out.exists()


def test_keep_shards_of_the_program_keeps_them(tmp_path, tiny):
    ckpt, out = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), tmp_path / "s"
    argv = ["--ckpt", ckpt, "--out", str(out), "--num-samples", "3", "--batch-size", "2", "--quiet"]
    generate_cli.main([*argv, "--keep-shards"])
    assert sorted(os.listdir(out / "shards")) == ["000000.npz", "000001.npz"]


@pytest.mark.parametrize("name", ["samples.npz", "shards/000000.npz", "images/000000.png"])
def test_an_out_holding_a_file_of_one_of_our_names_without_a_manifest_is_refused(tmp_path, tiny, name):
    """A user's samples.npz (another model's set), shard or PNG in --out, without our manifest:
    refused, the file untouched, not overwritten or mixed into the set."""
    out = tmp_path / "s"
    (out / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(b"theirs")
    with pytest.raises(ValueError, match=f"holds {out / name} but no manifest.json"):
        generate_cli.run(save_ckpt(tmp_path / "last.pt", tiny(in_channels=3)), str(out), **RUN)
    assert (out / name).read_bytes() == b"theirs" and not (out / "manifest.json").exists()


def test_an_official_pipeline_of_1000_classes_is_exported_with_imagenets_names(tmp_path, tiny, monkeypatch):
    """export --official-dit --pipeline names an ImageNet DiT's classes ImageNet's (the
    checkpoint itself records none)."""
    import meanflow.export as export
    from meanflow import class_names
    from meanflow.pipeline import MeanFlowPipeline

    names = [f"class {i}" for i in range(1000)]
    monkeypatch.setattr(class_names, "imagenet_readable_names", lambda: names)
    model = tiny(in_channels=3, num_classes=1000)
    monkeypatch.setattr(export, "from_official_dit", lambda *args, **kw: model)
    torch.save(model.state_dict(), tmp_path / "DiT.pt")
    export.main(
        ["--ckpt", str(tmp_path / "DiT.pt"), "--official-dit", "--pipeline", "--out", str(tmp_path / "p")]
    )
    assert MeanFlowPipeline.from_pretrained(str(tmp_path / "p")).id2label == dict(enumerate(names))
