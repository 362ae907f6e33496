"""The programs' command lines: a bad number is refused while the line is parsed, naming the
option as the user typed it; no prefix of an option is taken for it."""

import pytest


def _refusal(main, argv, capsys) -> str:
    """The stderr of ``main(argv)``, which must exit with status 2."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--workers", "-1", "must be an integer >= 0, got -1"),
        ("--scan-workers", "-1", "must be an integer >= 0, got -1"),
        ("--image-size", "0", "must be an integer >= 1, got 0"),
        ("--batch-size", "0", "must be an integer >= 1, got 0"),
        ("--shard-size", "0", "must be an integer >= 1, got 0"),
        ("--preview", "-1", "must be an integer >= 0, got -1"),
    ],
)
def test_prepare_latents_refuses_a_bad_number_at_parse_time_naming_its_flag(
    tmp_path, capsys, flag, value, said
):
    """--workers -1 ran the scan and wrote a manifest before DataLoader refused its
    ``num_workers``; --scan-workers -1 scanned in one process, in silence."""
    from meanflow.prepare_latents import main

    src, dst = tmp_path / "images", tmp_path / "latents"
    src.mkdir()
    err = _refusal(main, [str(src), str(dst), "--vae", "random", flag, value], capsys)
    assert f"error: argument {flag}: {said}\n" in err, err
    assert not dst.exists()


@pytest.mark.parametrize("keyword", ["num_workers", "scan_workers"])
def test_prepare_latents_function_refuses_negative_workers_before_anything_is_made(tmp_path, keyword):
    from meanflow.prepare_latents import prepare_latents

    src, dst = tmp_path / "images", tmp_path / "latents"
    src.mkdir()
    with pytest.raises(ValueError, match=f"^{keyword} must be an int >= 0, got -1$"):
        prepare_latents(str(src), str(dst), "random", **{keyword: -1}, device="cpu", progress=False)
    assert not dst.exists()


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--num-samples", "0", "argument --num-samples/--num: must be an integer >= 1, got 0"),
        ("--num", "0", "argument --num-samples/--num: must be an integer >= 1, got 0"),
        ("--steps", "0", "argument --steps: must be an integer >= 1, got 0"),
        ("--batch-size", "-1", "argument --batch-size: must be an integer >= 1, got -1"),
        ("--seed", "-1", "argument --seed: must be an integer >= 0, got -1"),
        ("--seed", "x", "argument --seed: must be an integer >= 0, got 'x'"),
    ],
)
def test_generate_names_the_flag_of_a_bad_number(tmp_path, capsys, flag, value, said):
    """Refused as ``num``/``batch_size`` (run()'s keywords), the user could not tell which of
    their options was meant."""
    from meanflow.generate import main

    out = tmp_path / "samples"
    err = _refusal(main, ["--ckpt", str(tmp_path / "last.pt"), "--out", str(out), flag, value], capsys)
    assert f"error: {said}\n" in err, err
    assert not out.exists()


def test_generate_names_out_when_it_is_a_file(tmp_path, capsys):
    from meanflow.generate import main

    out = tmp_path / "samples"
    out.write_text("a user's file")
    err = _refusal(main, ["--ckpt", str(tmp_path / "last.pt"), "--out", str(out)], capsys)
    assert err == f"error: --out {out} must be a directory, but it is a file: give a folder path\n", err
    assert out.read_text() == "a user's file"


def _latent_generate(tmp_path, tiny, tiny_vae, shift, out):
    """A latent model sampled into ``out`` through a random VAE of scale 1.5305 and ``shift``
    (its config at ``tmp_path/vae.json``); returns the model."""
    import json

    import torch

    from meanflow.generate import run

    vae_json = tmp_path / "vae.json"
    vae_json.write_text(json.dumps({**tiny_vae[0], "scaling_factor": 1.5305, "shift_factor": shift}))
    torch.manual_seed(0)
    model = tiny(in_channels=4)
    ckpt = tmp_path / "last.pt"
    state = model.state_dict()
    torch.save({"model": state, "ema": [state], "model_config": vars(model.config)}, ckpt)
    with pytest.warns(UserWarning, match="RANDOM"):
        run(str(ckpt), str(out), num=2, vae_config=str(vae_json), device="cpu", progress=False)
    return model


@pytest.mark.parametrize("shift", [None, 0.0609])
def test_generate_manifest_records_the_vae_shift_it_decoded_with(tmp_path, tiny, tiny_vae, shift):
    """Decoding is ``z / scaling_factor + shift_factor``: from the manifest alone a reader
    decodes the model's latents into the very images of the set (SD3's VAE shifts by 0.0609)."""
    pytest.importorskip("diffusers")
    import json

    import numpy as np
    import torch

    from meanflow.generate import noise_for
    from meanflow.sampler import sample, to_uint8
    from meanflow.vae import decode_latents, load_vae

    out = tmp_path / "samples"
    model = _latent_generate(tmp_path, tiny, tiny_vae, shift, out)
    vae_json = tmp_path / "vae.json"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shift_factor"] == shift and manifest["scaling_factor"] == 1.5305
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", str(vae_json))
    with torch.no_grad():
        latents = sample(model, torch.arange(2), steps=1, noise=noise_for(range(2), (4, 8, 8), 0))
        images = decode_latents(vae, latents, manifest["scaling_factor"], manifest["shift_factor"] or 0.0)
    with np.load(out / "samples.npz") as npz:
        assert np.array_equal(npz["arr_0"], to_uint8(images))


def test_generate_refuses_to_resume_with_another_vae_shift(tmp_path, tiny, tiny_vae):
    """The same weights and config path, another shift in the config: the images would mix two
    decodings of the latents."""
    pytest.importorskip("diffusers")

    out = tmp_path / "samples"
    _latent_generate(tmp_path, tiny, tiny_vae, None, out)
    (out / "samples.npz").unlink()  # an unfinished set, to be resumed
    said = r"other settings \(the VAE config's shift_factor: None there, 0.0609 now\)"
    with pytest.raises(ValueError, match=said):
        _latent_generate(tmp_path, tiny, tiny_vae, 0.0609, out)


def test_random_vae_is_refused_where_a_folder_named_random_exists(tmp_path, tiny_vae, monkeypatch):
    """A user's ./random holding their VAE was passed over for random weights, in silence:
    now the word is refused naming both, and ./random loads the folder."""
    pytest.importorskip("diffusers")
    import torch

    from meanflow.vae import load_vae, weights_sha256

    with pytest.warns(UserWarning, match="RANDOM"):
        theirs = load_vae("random", tiny_vae[1])
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(1.0)  # the user's VAE: not the random one
    monkeypatch.chdir(tmp_path)
    theirs.save_pretrained("random")
    with pytest.raises(ValueError, match=r"^VAE 'random' names both random weights .*'\./random' to load it"):
        load_vae("random", tiny_vae[1])
    assert weights_sha256(load_vae("./random")) == weights_sha256(theirs)


# Each program with its required arguments, then a prefix of one of its options and a value
# the option would refuse: a prefix taken for the option is refused otherwise, and nothing runs.
PREFIXED = [
    ("meanflow.generate", ["--ckpt", "last.pt", "--out", "samples", "--num-sam", "x"]),
    ("meanflow.prepare_latents", ["images", "latents", "--vae", "random", "--work", "x"]),
    ("meanflow.export", ["--ckpt", "last.pt", "--out", "exported", "--num-h", "x"]),
    ("meanflow.eval_mnist", ["last.pt", "--samp", "x"]),
    ("meanflow.demo", ["--input", "x"]),
    ("meanflow.sampler", ["last.pt", "--per", "x"]),
    ("meanflow.evaluate", ["samples.npz", "--batch", "x"]),
]


@pytest.mark.parametrize("module, argv", PREFIXED, ids=[m for m, _ in PREFIXED])
def test_a_prefix_of_an_option_is_not_taken_for_it(module, argv, capsys, tmp_path, monkeypatch):
    """``--num-sam`` was ``--num-samples``: a later option of the same prefix would change what
    an old command means, in silence."""
    import importlib

    monkeypatch.chdir(tmp_path)
    err = _refusal(importlib.import_module(module).main, argv, capsys)
    assert f"error: unrecognized arguments: {argv[-2]} x\n" in err, err


# Each program with its required arguments (files that do not exist: a number refused while
# parsing is refused before any is read), an option and a value it must refuse, and argparse's
# words for it.
BAD_NUMBERS = [
    ("sampler", ["last.pt"], "--steps", "0", "must be an integer >= 1, got 0"),
    ("sampler", ["last.pt"], "--per-class", "0", "must be an integer >= 1, got 0"),
    ("sampler", ["last.pt"], "--batch-size", "0", "must be an integer >= 1, got 0"),
    ("sampler", ["last.pt"], "--seed", "-1", "must be an integer >= 0, got -1"),
    ("evaluate", ["samples.npz"], "--batch-size", "0", "must be an integer >= 1, got 0"),
    ("evaluate", ["samples.npz"], "--ref-size", "0", "must be an integer >= 1, got 0"),
    ("evaluate", ["samples.npz"], "--ref-size", "x", "must be an integer >= 1, got 'x'"),
    (
        "export",
        ["--ckpt", "DiT.pt", "--out", "x", "--official-dit"],
        "--num-heads",
        "0",
        "must be an integer >= 1, got 0",
    ),
    ("eval_mnist", ["last.pt"], "--samples", "1", "must be an integer >= 2, got 1"),
    ("eval_mnist", ["last.pt"], "--steps", "0", "must be an integer >= 1, got 0"),
    ("eval_mnist", ["last.pt"], "--seed", "-1", "must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(
    "program, argv, flag, value, said", BAD_NUMBERS, ids=[f"{p}{f}{v}" for p, _, f, v, _ in BAD_NUMBERS]
)
def test_a_bad_number_is_refused_while_parsing_naming_its_flag(
    program, argv, flag, value, said, capsys, tmp_path, monkeypatch
):
    """sampler's and eval_mnist's --seed -1 ran as seed 2**64 - 1 in silence (generate refuses
    it); evaluate's --batch-size 0 was refused as batch_size, its function's keyword; export's
    --num-heads 0 was refused as num_heads, the config's field, after the checkpoint was read."""
    import importlib

    monkeypatch.chdir(tmp_path)
    err = _refusal(importlib.import_module(f"meanflow.{program}").main, [*argv, flag, value], capsys)
    assert f"error: argument {flag}: {said}\n" in err, err
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "first, then, said",
    [
        (["--num-samples", "2"], ["--num", "3"], "--num-samples: 2 there, 3 now"),
        (["--batch-size", "2"], ["--batch-size", "1"], "--batch-size: 2 there, 1 now"),
        (["--dtype", "fp32"], ["--dtype", "bf16"], "--dtype: 'fp32' there, 'bf16' now"),
        (["--ema", "0"], ["--raw"], "--ema/--raw: 0 there, None now"),
    ],
)
def test_generate_names_the_flag_of_a_setting_a_resume_changed(tmp_path, tiny, capsys, first, then, said):
    """The refusal named the manifest's keys (``num: 2 there, 3 now``), which the user never
    typed: they could not tell which of their options to change back."""
    import torch

    from meanflow.generate import main

    ckpt, out = tmp_path / "last.pt", tmp_path / "samples"
    state = tiny(in_channels=3).state_dict()
    torch.save({"model": state, "ema": [state], "model_config": vars(tiny(in_channels=3).config)}, ckpt)
    common = ["--ckpt", str(ckpt), "--out", str(out), "--quiet", "--no-png"]
    main([*common, "--num-samples", "2", "--batch-size", "2", *first])
    err = _refusal(main, [*common, "--num-samples", "2", "--batch-size", "2", *then], capsys)
    assert f"other settings ({said}): use another --out\n" in err, err


def test_generate_names_a_flag_for_every_setting_a_resume_compares():
    from meanflow.generate_out import FLAG_OF_SETTING, RESULT_KEYS

    assert set(FLAG_OF_SETTING) == set(RESULT_KEYS)


@pytest.mark.parametrize(
    "vae, size, factor",
    [("random", "12", 8), ("random --vae-config TINY", "15", 2), ("FOLDER", "15", 2)],
    ids=["sd-vae-ft-ema", "config-file", "folder"],
)
def test_prepare_latents_names_image_size_not_a_multiple_of_the_vae_factor_before_loading_it(
    tmp_path, tiny_vae, capsys, monkeypatch, vae, size, factor
):
    """Refused as image_size (the function's keyword) after the VAE was loaded: the factor is
    in the VAE's config, read without its weights."""
    import json

    import meanflow.prepare_latents as prep

    def no_load(*args, **kwargs):
        raise AssertionError("the VAE was loaded")

    monkeypatch.setattr(prep, "load_vae", no_load)
    src, dst, folder = tmp_path / "images", tmp_path / "latents", tmp_path / "vae"
    src.mkdir()
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **tiny_vae[0]}))
    words = vae.replace("TINY", tiny_vae[1]).replace("FOLDER", str(folder)).split()
    err = _refusal(prep.main, [str(src), str(dst), "--vae", *words, "--image-size", size], capsys)
    said = f"argument --image-size: {size} is not a multiple of the VAE's downsampling factor {factor}"
    assert err.endswith(f"error: {said}\n"), err
    assert not dst.exists()
