import dataclasses
import os

import pytest
import torch

from meanflow import sample


def test_one_step_is_e_minus_u(tiny):
    model = tiny()
    y = torch.tensor([0, 3, 4])
    e = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = e - model(e, torch.zeros(3), torch.ones(3), y)
    assert torch.allclose(sample(model, y, steps=1, noise=e), want, atol=1e-6)


def test_k_steps_on_the_uniform_grid(tiny):
    model = tiny(time_cond="r,t")
    y = torch.tensor([1, 2])
    z = e = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        for t, r in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)):
            z = z - (t - r) * model(z, torch.full((2,), r), torch.full((2,), t), y)
    assert torch.allclose(sample(model, y, steps=3, noise=e), z, atol=1e-5)


def test_deterministic_and_batched(tiny):
    model = tiny()
    y = torch.arange(5)
    a = sample(model, y, steps=2, generator=torch.Generator().manual_seed(7))
    b = sample(model, y, steps=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    noise = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    singles = torch.cat([sample(model, y[i : i + 1], steps=2, noise=noise[i : i + 1]) for i in range(5)])
    assert torch.allclose(a, singles, atol=1e-5)


def test_no_second_pass_and_mode_restored(tiny):
    model = tiny()
    calls = []
    forward = model.forward
    model.forward = lambda *a: (calls.append(model.training), forward(*a))[1]
    model.train()
    sample(model, torch.arange(4), steps=2)
    assert calls == [False, False] and model.training


def test_float64_model_samples_in_float64(tiny):
    """Float64 times for a float64 model: k steps equal the float64 loop to rounding."""
    model = tiny().double()
    y = torch.tensor([0, 2, 5])
    z = e = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        for t, r in ((1.0, 0.5), (0.5, 0.0)):
            z = z - (t - r) * model(
                z, torch.full((3,), r, dtype=torch.float64), torch.full((3,), t, dtype=torch.float64), y
            )
    got = sample(model, y, steps=2, noise=e)
    assert ((got - z).norm() / z.norm()).item() <= 1e-12


def test_mode_restored_after_an_error(tiny):
    model = tiny()
    model.train()
    with pytest.raises(TypeError, match="y must be an integer tensor"):
        sample(model, None, noise=torch.randn(2, 1, 8, 8))
    assert model.training


def test_noise_of_another_dtype_than_the_model(tiny):
    model = tiny().double()
    with pytest.raises(
        TypeError, match="noise has dtype torch.float32 but the model's parameters have torch.float64"
    ):
        sample(model, torch.arange(2), noise=torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="noise must be a tensor"):
        sample(model, torch.arange(2), noise=[0.0])


def test_bad_arguments(tiny):
    model = tiny()
    with pytest.raises(ValueError, match="steps"):
        sample(model, torch.arange(2), steps=0)
    with pytest.raises(ValueError, match="noise"):
        sample(model, torch.arange(2), noise=torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="labels y or noise"):
        sample(model, None)
    with pytest.raises(ValueError, match="y must hold class labels"):
        sample(model, torch.tensor([0, model.config.num_classes + 1]))


def _checkpoint(path, model):
    state = model.state_dict()
    config = dataclasses.asdict(model.config)
    torch.save({"model": state, "ema": [state], "ema_decays": [0.99], "model_config": config}, path)
    return str(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--per-class", "-2"], "argument --per-class: must be an integer >= 1, got -2"),
        (["--per-class", "0"], "argument --per-class: must be an integer >= 1, got 0"),
        (["--out", "folder"], "argument --out: folder is a directory"),
        (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    ],
)
def test_grid_program_names_a_bad_option(argv, message, tiny, tmp_path, monkeypatch, capsys):
    """A bad option is argparse's error naming it (status 2), before the model is loaded; an
    empty grid is no success."""
    from meanflow import sampler

    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    ckpt = _checkpoint(tmp_path / "last.pt", tiny())
    with pytest.raises(SystemExit) as exit_:
        sampler.main([ckpt, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err.splitlines()[-1]
    assert "Traceback" not in err and sorted(os.listdir(tmp_path)) == ["folder", "last.pt"]


def test_grid_program_cannot_write_in_one_line(tiny, tmp_path, capsys):
    """An --out it cannot write (here, below a file) is one line, status 1, no traceback."""
    from meanflow import sampler

    ckpt = _checkpoint(tmp_path / "last.pt", tiny())
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        sampler.main([ckpt, "--out", str(tmp_path / "file" / "grid.png"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_grid_program_writes_a_row_per_class(tiny, tmp_path, capsys):
    from PIL import Image

    from meanflow import sampler

    ckpt = _checkpoint(tmp_path / "last.pt", tiny(num_classes=3))
    out = tmp_path / "grid.png"
    sampler.main([ckpt, "--out", str(out), "--per-class", "2", "--device", "cpu"])
    assert capsys.readouterr().out == f"wrote {out}: 6 samples, 1 NFE\n"
    assert Image.open(out).size == (3 * 10 + 2, 2 * 10 + 2)  # 8x8 images, 2-pixel gaps


@pytest.mark.parametrize("num_classes", [3, 0])
def test_grid_program_samples_in_batches_the_grid_of_one_batch(num_classes, tiny, tmp_path, monkeypatch):
    """An ImageNet grid (10 per class: 10,000 images) was sampled and decoded as one batch, out
    of GPU memory; in batches of --batch-size, the grid is the same, from the seed's CPU noise
    whatever the device."""
    import numpy as np
    from PIL import Image

    from meanflow import sampler

    model = tiny(num_classes=num_classes)
    ckpt = _checkpoint(tmp_path / "last.pt", model)
    batches = []
    real_sample = sampler.sample
    monkeypatch.setattr(
        sampler, "sample", lambda *a, **k: batches.append(k["noise"].shape[0]) or real_sample(*a, **k)
    )
    grids = []
    for batch in ("4", "64"):
        out = tmp_path / f"grid{batch}.png"
        sampler.main([ckpt, "--out", str(out), "--per-class", "2", "--batch-size", batch, "--device", "cpu"])
        grids.append(np.asarray(Image.open(out)))
    n = 2 * (num_classes or 10)
    assert batches == [4] * (n // 4) + [n % 4] * (n % 4 > 0) + [n]
    assert np.array_equal(grids[0], grids[1])
    noise = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % num_classes if num_classes else None
    want = sampler.to_uint8(sample(model, y, noise=noise))
    assert np.array_equal(grids[1][2:10, 2:10], want[0, ..., 0])
    assert np.array_equal(grids[1][12:20, 2:10], want[num_classes or 10, ..., 0])  # second row


@pytest.mark.parametrize("steps", [True, False, 0, -1, 2.0])
def test_steps_must_be_a_positive_int_not_a_bool(tiny, steps):
    """True is an int to Python: it ran one step, a flag mistaken for a count."""
    with pytest.raises(ValueError, match=f"steps must be an int >= 1, got {steps!r}"):
        sample(tiny(), torch.arange(2), steps=steps)


def test_grid_program_decodes_a_latent_model_with_its_vae(tiny, tiny_vae, tmp_path, capsys):
    """A 4-channel latent model's grid was its scaled latents saved as an RGBA PNG, no error.
    Now it needs --vae and saves the decoded images (the VAE config's scale and shift, once)."""
    pytest.importorskip("diffusers")
    import numpy as np
    from PIL import Image

    from meanflow import sampler
    from meanflow.vae import load_vae

    model = tiny(num_classes=2, in_channels=4)
    ckpt = _checkpoint(tmp_path / "last.pt", model)
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exit_:
        sampler.main([ckpt, "--out", str(out), "--device", "cpu"])
    assert exit_.value.code == 2 and "4-channel latents, not images: pass --vae" in capsys.readouterr().err
    assert not out.exists()

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", {**tiny_vae[0], "scaling_factor": 0.5, "shift_factor": 0.25})
    vae.save_pretrained(tmp_path / "vae")
    sampler.main(
        [ckpt, "--out", str(out), "--per-class", "1", "--vae", str(tmp_path / "vae"), "--device", "cpu"]
    )
    grid = np.asarray(Image.open(out))
    assert Image.open(out).mode == "RGB" and grid.shape == (16 + 4, 2 * (16 + 2) + 2, 3)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = vae.decode(sample(model, torch.arange(2), noise=noise) / 0.5 + 0.25).sample
    first = sampler.to_uint8(want.clamp(-1, 1))[0]
    # Two float paths to one pixel may round to neighbouring levels.
    assert np.abs(grid[2:18, 2:18].astype(int) - first.astype(int)).max() <= 1

    with pytest.raises(SystemExit) as exit_:
        sampler.main([_checkpoint(tmp_path / "pixel.pt", tiny()), "--vae", str(tmp_path / "vae")])
    assert exit_.value.code == 2 and "--vae: the model makes 1-channel images" in capsys.readouterr().err


def _grid_program(ckpt, out, *vae):
    from meanflow import sampler

    sampler.main([ckpt, "--out", out, "--per-class", "1", "--device", "cpu", *vae])


def _generate_program(ckpt, out, *vae):
    from meanflow import generate

    generate.main(["--ckpt", ckpt, "--out", out, "--num", "2", "--device", "cpu", "--quiet", *vae])


def _latent_checkpoint(path, model, vae=None, weights=None):
    """A trainer checkpoint of a model trained on latents; ``vae``: the VAE they recorded."""
    from meanflow.vae import vae_identity

    _checkpoint(path, model)
    saved = torch.load(path)
    saved["config"] = {"data": {"name": "latents", "path": str(path) + "-latents-elsewhere"}}
    if vae is not None:
        saved["data_identity"] = {"vae": vae_identity(vae, weights)}
    torch.save(saved, path)
    return str(path)


@pytest.mark.parametrize("program", [_grid_program, _generate_program], ids=["sampler", "generate"])
def test_both_programs_load_and_refuse_a_vae_alike(program, tiny, tiny_vae, tmp_path, capsys):
    """python -m meanflow.sampler and python -m meanflow.generate load --vae through one
    function: the same refusals in the same words, the most useful first. generate decoded a
    3-channel pixel model's images with a VAE of 3 latent channels, named a pixel model's
    --vae only as a VAE of other latent channels, and a checkpoint's own VAE record came after
    the latent channels in the sampler (the error then named no VAE to take)."""
    pytest.importorskip("diffusers")
    from meanflow.vae import load_vae

    def refusal(ckpt, *vae):
        out = str(tmp_path / f"out-{len(os.listdir(tmp_path))}")
        with pytest.raises(SystemExit) as exit_:
            program(ckpt, out, *vae)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert not os.path.exists(out) and not os.path.exists(out + ".png")
        return err

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", tiny_vae[0])
        wide = load_vae("random", {**tiny_vae[0], "latent_channels": 8})
        three = load_vae("random", {**tiny_vae[0], "latent_channels": 3})
    for name, v in (("vae", vae), ("wide", wide), ("three", three)):
        v.save_pretrained(tmp_path / name)
    latent = tiny(num_classes=2, in_channels=4)
    unrecorded = _checkpoint(tmp_path / "unrecorded.pt", latent)  # no latents' VAE to compare with
    recorded = _latent_checkpoint(tmp_path / "recorded.pt", latent, vae, str(tmp_path / "vae"))

    err = refusal(unrecorded)
    assert "the model makes 4-channel latents, not images: pass --vae, the VAE that decodes them" in err
    for pixel, name in ((tiny(), "vae"), (tiny(in_channels=3), "three")):
        ckpt = _checkpoint(tmp_path / f"pixel{pixel.config.in_channels}.pt", pixel)
        err = refusal(ckpt, "--vae", str(tmp_path / name))
        assert (
            f"--vae: the model makes {pixel.config.in_channels}-channel images, no latents to decode" in err
        )
    assert "--vae has 8 latent channels, the model 4" in refusal(unrecorded, "--vae", str(tmp_path / "wide"))
    err = refusal(recorded, "--vae", str(tmp_path / "wide"))
    assert "wide' is not the VAE the latents were made with" in err and "differ in latent_channels" in err
    # random weights (tests, smoke runs) match no record: taken with a warning, unchecked
    with pytest.warns(UserWarning, match="RANDOM"):
        program(recorded, str(tmp_path / "random"), "--vae", "random")
    program(recorded, str(tmp_path / "own"), "--vae", str(tmp_path / "vae"))


def test_grid_program_samples_the_weights_asked_for(tiny, tmp_path, capsys):
    """--ema N picks the N-th EMA (ema_decays order), --raw the raw weights, the default the
    first EMA: each grid is the one its own weight set draws."""
    import numpy as np
    from PIL import Image

    from meanflow import sampler

    raw, first, second = (tiny(num_classes=2, seed=s) for s in (0, 1, 2))
    path = tmp_path / "last.pt"
    torch.save(
        {
            "model": raw.state_dict(),
            "ema": [first.state_dict(), second.state_dict()],
            "ema_decays": [0.999, 0.9999],
            "model_config": dataclasses.asdict(raw.config),
        },
        path,
    )
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for argv, model in (([], first), (["--ema", "1"], second), (["--raw"], raw)):
        out = tmp_path / f"grid{len(argv)}{argv[-1] if argv else ''}.png"
        sampler.main([str(path), "--out", str(out), "--per-class", "1", "--device", "cpu", *argv])
        want = sampler.to_uint8(sample(model, torch.arange(2), noise=noise))
        got = np.asarray(Image.open(out))
        assert np.array_equal(got[2:10, 2:10], want[0, ..., 0]), argv
        assert np.array_equal(got[2:10, 12:20], want[1, ..., 0]), argv
    with pytest.raises(SystemExit) as exit_:
        sampler.main([str(path), "--ema", "2", "--out", str(tmp_path / "none.png")])
    assert exit_.value.code == 2 and "has 2 EMA weight sets" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_one_seed_gives_one_noise_in_every_dtype(tiny, dtype):
    """The generator's noise is the float32 draw cast to the model's dtype, as the pipeline
    draws it: randn in float64 or bf16 draws other numbers, so a float64 check of a float32
    run with the same seed sampled other images."""
    model, y = tiny(), torch.arange(3)
    want = sample(model, y, steps=2, generator=torch.Generator().manual_seed(4))
    got = sample(model.to(dtype), y, steps=2, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4)).to(dtype)
    assert got.dtype == dtype and torch.equal(got, sample(model, y, steps=2, noise=noise))
    tol = 1e-5 if dtype == torch.float64 else 0.1  # bf16 rounds each value to 2^-8 relative
    assert (got.float() - want).abs().max() <= tol * (1 + want.abs().max())
