"""python -m meanflow.generate: images equal the sampler's, resumable, ranks split the indices,
VAE decoding, bad inputs refused before anything is written."""

import dataclasses
import json
import os
import re
import shlex
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import meanflow.generate as generate_cli
from meanflow.pipeline import to_uint8
from meanflow.sampler import sample as sample_fn


def save_ckpt(path, model):
    state = model.state_dict()
    torch.save(
        {
            "model": state,
            "ema": [state],
            "ema_decays": [0.99],
            "model_config": dataclasses.asdict(model.config),
        },
        path,
    )
    return str(path)


def expected(model, num, steps=1, seed=0, classes="balanced"):
    """What the CLI must produce, built from the public pieces one image at a time."""
    cfg = model.config
    shape = (cfg.in_channels, cfg.input_size, cfg.input_size)
    rows = []
    for i in range(num):
        noise = generate_cli.noise_for([i], shape, seed)
        y = generate_cli.labels_for([i], cfg.num_classes, classes, seed)
        rows.append(to_uint8(sample_fn(model, y, steps=steps, noise=noise)))
    return np.concatenate(rows)


def load(out):
    with np.load(os.path.join(out, "samples.npz")) as data:
        return {k: data[k] for k in data.files}


def test_cli_writes_pngs_and_adm_npz(tmp_path, tiny):
    model = tiny(in_channels=3)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    out = str(tmp_path / "s")
    generate_cli.main(
        ["--ckpt", ckpt, "--out", out, "--num", "7", "--batch-size", "3", "--steps", "2", "--quiet"]
    )
    data = load(out)
    assert set(data) == {"arr_0", "arr_1"}
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (7, 8, 8, 3)
    assert data["arr_1"].tolist() == [0, 1, 2, 3, 4, 0, 1]  # class-balanced
    with torch.no_grad():
        assert np.array_equal(data["arr_0"], expected(model, 7, steps=2))
    pngs = sorted(os.listdir(os.path.join(out, "images")))
    assert pngs == [f"{i:06d}.png" for i in range(7)]
    assert np.array_equal(np.asarray(Image.open(os.path.join(out, "images", pngs[5]))), data["arr_0"][5])
    assert os.listdir(os.path.join(out, "shards")) == []  # merged, then removed
    manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert manifest["complete"] and manifest["num"] == 7 and manifest["steps"] == 2


def test_resume_skips_finished_batches_and_ends_identical(tmp_path, tiny, monkeypatch):
    model = tiny(in_channels=3)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    run = dict(num=10, batch_size=3, classes="random", device="cpu", progress=False)
    generate_cli.run(ckpt, str(tmp_path / "whole"), **run)

    real, calls = generate_cli._generate_batch, []

    def crash_on_third(*args):
        calls.append(list(args[3]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(generate_cli, "_generate_batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_cli.run(ckpt, str(tmp_path / "cut"), **run)
    assert not os.path.exists(tmp_path / "cut" / "samples.npz")
    assert sorted(os.listdir(tmp_path / "cut" / "shards")) == ["000000.npz", "000001.npz"]
    os.unlink(tmp_path / "cut" / "images" / "000001.png")  # a lost PNG of a finished batch
    calls.clear()
    generate_cli.run(ckpt, str(tmp_path / "cut"), **run)
    assert calls == [[6, 7, 8], [9]]  # only the unfinished batches ran
    whole, cut = load(tmp_path / "whole"), load(tmp_path / "cut")
    assert np.array_equal(whole["arr_0"], cut["arr_0"]) and np.array_equal(whole["arr_1"], cut["arr_1"])
    assert os.path.exists(tmp_path / "cut" / "images" / "000001.png")
    calls.clear()
    generate_cli.run(ckpt, str(tmp_path / "cut"), **run)  # complete: nothing to do
    assert calls == []


def test_per_index_seeds_and_the_rank_split():
    a = generate_cli.noise_for([3, 4], (1, 2, 2), seed=0)
    assert torch.equal(a[1], generate_cli.noise_for([4], (1, 2, 2), seed=0)[0])
    assert not torch.equal(a[0], generate_cli.noise_for([3], (1, 2, 2), seed=1)[0])
    labels = generate_cli.labels_for(range(200), 7, "random", seed=0)
    assert labels.min() >= 0 and labels.max() <= 6 and len(set(labels.tolist())) == 7
    # Each index's label is its own draw: the same in any batch, another under another seed.
    alone = [int(generate_cli.labels_for([i], 7, "random", seed=0)) for i in (5, 199)]
    assert alone == labels[[5, 199]].tolist()
    assert not torch.equal(labels, generate_cli.labels_for(range(200), 7, "random", seed=1))
    assert generate_cli.labels_for(range(9, 12), 4, "balanced", seed=0).tolist() == [1, 2, 3]
    assert generate_cli.labels_for(range(3), 0, "random", 0) is None
    for world in (1, 2, 3):
        parts = [generate_cli.rank_batches(11, 2, r, world) for r in range(world)]
        covered = sorted(i for part in parts for _, s, e in part for i in range(s, e))
        assert covered == list(range(11))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank, world, port, ckpt, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    try:
        generate_cli.run(ckpt, out, num=9, batch_size=2, device="cpu", progress=False)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path, tiny):
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: the same kernels, bitwise the same images
    try:
        generate_cli.run(ckpt, str(tmp_path / "one"), num=9, batch_size=2, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    args = (2, _free_port(), ckpt, str(tmp_path / "two"))
    mp.start_processes(_rank_main, args=args, nprocs=2, start_method="spawn")
    one, two = load(tmp_path / "one"), load(tmp_path / "two")
    assert np.array_equal(one["arr_0"], two["arr_0"]) and np.array_equal(one["arr_1"], two["arr_1"])
    assert len(os.listdir(tmp_path / "two" / "images")) == 9


def test_latent_model_decodes_through_the_vae(tmp_path, tiny, tiny_vae):
    pytest.importorskip("diffusers")
    from meanflow.vae import decode_latents, load_vae

    vae_json = tiny_vae[1]
    model = tiny(in_channels=4)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    with pytest.raises(ValueError, match="4-channel latents, not images: pass --vae"):
        generate_cli.run(ckpt, str(tmp_path / "novae"), num=2, device="cpu", progress=False)
    assert not os.path.exists(tmp_path / "novae")
    with pytest.warns(UserWarning, match="RANDOM"):  # the architecture alone, random weights
        generate_cli.run(ckpt, str(tmp_path / "c"), num=3, vae_config=vae_json, progress=False)
    assert load(tmp_path / "c")["arr_0"].shape == (3, 16, 16, 3)
    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", vae_json)
    vae.save_pretrained(str(tmp_path / "vae"))  # a local weights folder, like sd-vae-ft-ema
    generate_cli.run(
        ckpt, str(tmp_path / "s"), num=3, batch_size=2, vae=str(tmp_path / "vae"), progress=False
    )
    with torch.no_grad():
        noise = generate_cli.noise_for(range(3), (4, 8, 8), 0)
        latents = sample_fn(model, torch.arange(3), steps=1, noise=noise)
        want = to_uint8(decode_latents(vae, latents, 0.18215))
    assert np.array_equal(load(tmp_path / "s")["arr_0"], want)


def test_a_vae_config_alone_is_refused_by_its_own_name(tmp_path, tiny, tiny_vae):
    """``--vae-config`` without ``--vae`` (that architecture with random weights) that does not
    fit the model is refused naming ``--vae-config``, the option given, not ``--vae``."""
    pytest.importorskip("diffusers")
    pixel = save_ckpt(tmp_path / "pixel.pt", tiny(in_channels=3))
    with pytest.raises(ValueError, match=r"^--vae-config: the model makes 3-channel images, no latents"):
        generate_cli.run(pixel, str(tmp_path / "a"), num=2, vae_config=tiny_vae[1], progress=False)
    wide = save_ckpt(tmp_path / "wide.pt", tiny(in_channels=8))
    with pytest.raises(ValueError, match=r"^--vae-config has 4 latent channels, the model 8$"):
        with pytest.warns(UserWarning, match="RANDOM"):
            generate_cli.run(wide, str(tmp_path / "b"), num=2, vae_config=tiny_vae[1], progress=False)
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_unconditional_gray_model(tmp_path, tiny):
    model = tiny(num_classes=0)
    out = str(tmp_path / "s")
    generate_cli.main(["--ckpt", save_ckpt(tmp_path / "u.pt", model), "--out", out, "--num", "3", "--quiet"])
    data = load(out)
    assert set(data) == {"arr_0"} and data["arr_0"].shape == (3, 8, 8, 3)  # gray -> RGB for the evaluator
    assert np.array_equal(data["arr_0"][..., 0], data["arr_0"][..., 2])
    assert Image.open(os.path.join(out, "images", "000000.png")).mode == "L"


def test_pretrained_directory_as_checkpoint(tmp_path, tiny):
    model = tiny(in_channels=3)
    model.save_pretrained(str(tmp_path / "m"))
    generate_cli.run(str(tmp_path / "m"), str(tmp_path / "s"), num=2, progress=False)
    with torch.no_grad():
        assert np.array_equal(load(tmp_path / "s")["arr_0"], expected(model, 2))


def test_bad_inputs_write_nothing(tmp_path, tiny):
    model = tiny(in_channels=3)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    out = tmp_path / "s"
    for kwargs, message in (
        (dict(num=0), "num must be an int >= 1"),
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(batch_size=-1), "batch_size must be"),
        (dict(classes="uniform"), "classes must be"),
        (dict(dtype="fp8"), "dtype must be"),
        (dict(ema=3), "1 EMA weight sets"),
    ):
        with pytest.raises(ValueError, match=message):
            generate_cli.run(ckpt, str(out), progress=False, **kwargs)
    with pytest.raises(FileNotFoundError):
        generate_cli.run(str(tmp_path / "missing.pt"), str(out), progress=False)
    torch.save({"weights": model.state_dict()}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="not a meanflow.train checkpoint"):
        generate_cli.run(str(tmp_path / "odd.pt"), str(out), progress=False)
    with pytest.raises(SystemExit):
        generate_cli.main(["--ckpt", ckpt, "--out", str(out), "--num", "0"])
    assert not out.exists()
    # a finished run is not mixed with another configuration
    generate_cli.run(ckpt, str(out), num=2, progress=False)
    before = load(out)["arr_0"]
    with pytest.raises(ValueError, match=r"other settings \(--seed: 0 there, 1 now\)"):
        generate_cli.run(ckpt, str(out), num=2, seed=1, progress=False)
    assert np.array_equal(load(out)["arr_0"], before)


def test_package_sample_is_the_sampling_function_after_the_cli_is_imported(tiny):
    """The program is ``meanflow.generate``: importing it leaves ``meanflow.sample`` the
    function (no module of the same name shadows it)."""
    import meanflow
    from meanflow import sample

    model = tiny()
    noise = torch.randn(2, 1, 8, 8)
    assert meanflow.sample is sample_fn and sample is sample_fn
    assert torch.equal(
        sample(model, torch.arange(2), steps=1, noise=noise), sample_fn(model, torch.arange(2), noise=noise)
    )


def test_old_module_name_runs_the_program():
    """``python -m meanflow.sample`` (the older name) runs ``meanflow.generate``, without runpy's
    warning; importing the old module warns that it is deprecated."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-W", "error", "-m", "meanflow.sample", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: python -m meanflow.generate")
    import importlib

    import meanflow

    try:
        with pytest.warns(DeprecationWarning, match="meanflow.generate"):
            importlib.import_module("meanflow.sample")
    finally:  # the import rebinds meanflow.sample: later tests get the function back
        sys.modules.pop("meanflow.sample", None)
        meanflow.__dict__.pop("sample", None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gpu_matches_cpu(tmp_path, tiny, dtype):
    """The CUDA run gives the CPU's images up to rounding (fp32) or bf16 noise."""
    model = tiny(in_channels=3)
    ckpt = save_ckpt(tmp_path / "last.pt", model)
    generate_cli.run(ckpt, str(tmp_path / "cpu"), num=6, batch_size=4, device="cpu", progress=False)
    generate_cli.run(
        ckpt, str(tmp_path / "gpu"), num=6, batch_size=4, device="cuda", dtype=dtype, progress=False
    )
    cpu, gpu = load(tmp_path / "cpu")["arr_0"].astype(int), load(tmp_path / "gpu")["arr_0"].astype(int)
    assert np.abs(cpu - gpu).max() <= (1 if dtype == "fp32" else 16)


def test_programs_name_a_missing_checkpoint_or_unusable_device(tmp_path, capsys, monkeypatch):
    """The grid sampler, the MNIST scorer and the latent encoder exit with the error in one
    line (status 2), no traceback; the scorer checks its checkpoint before training a classifier."""
    from meanflow import eval_mnist, prepare_latents, sampler

    monkeypatch.setattr(eval_mnist, "load_classifier", lambda *a, **k: pytest.fail("trained a classifier"))
    missing = str(tmp_path / "missing.pt")
    for main, argv, message in (
        (sampler.main, [missing], f"error: checkpoint {missing} not found"),
        (sampler.main, [missing, "--device", "gpu"], "error: device must be 'auto', 'cpu', 'cuda'"),
        (eval_mnist.main, [missing], f"error: checkpoint {missing} not found"),
        (prepare_latents.main, [missing, str(tmp_path / "out"), "--vae", "random"], "does not exist"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []  # nothing written, not even an empty output folder


def test_grid_sampler_runs_as_a_module_without_runpy_warning():
    """The package loads ``sampler`` lazily: ``python -m meanflow.sampler`` is not a module
    imported before it runs (runpy warns of "unpredictable behaviour" then)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "meanflow.sampler", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "RuntimeWarning" not in run.stderr, run.stderr
    assert "Sample a grid" in run.stdout


def test_unreadable_files_are_named_in_one_line(tmp_path):
    """A checkpoint, an official DiT file or VAE weights torch cannot read: a one-line
    ValueError naming the file, for every loader (the programs print it)."""
    from meanflow import DiT
    from meanflow.pretrained import load_trainer_checkpoint
    from meanflow.vae import load_vae

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip archive")
    for load, what in (
        (load_trainer_checkpoint, "checkpoint"),
        (DiT.from_official_dit, "DiT checkpoint"),
        (load_vae, "VAE weights"),
    ):
        with pytest.raises(
            ValueError, match=rf"cannot read {what} '{bad}' \(corrupt, or not a torch file\)"
        ) as e:
            load(str(bad))
        assert "\n" not in str(e.value)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_torchrun_sample_commands() -> list:
    """The argument lists after ``torchrun`` of the README's ``torchrun ... meanflow.generate``
    commands (continuation lines joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["torchrun"] and "meanflow.generate" in words:
                commands.append(words[1:])
    return commands


def torchrun_script_args(argv) -> list:
    """What torchrun's own parser hands the script; its usage errors become test failures."""
    from torch.distributed.run import get_args_parser

    try:
        launcher = get_args_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"torchrun's parser rejects {argv}")
    assert launcher.module and launcher.training_script == "meanflow.generate"
    return launcher.training_script_args


def test_readme_torchrun_sampling_parses_under_torchrun_and_ours():
    """torchrun abbreviates its options and checks every word, even the script's: an option
    of ours that is a prefix of two of torchrun's (``--num``: ``--numa-binding``,
    ``--numa_binding``) stops the launch."""
    commands = readme_torchrun_sample_commands()
    assert commands, "the README shows sampling under torchrun"
    for argv in commands:
        args = generate_cli.build_parser().parse_args(torchrun_script_args(argv))
        assert args.num == 50000 and args.ckpt and args.out
    launch = ["--nproc_per_node=2", "-m", "meanflow.generate"]
    for option in (s for a in generate_cli.build_parser()._actions for s in a.option_strings):
        if option != "--num":  # the short spelling, for runs without torchrun
            assert torchrun_script_args([*launch, option, "1"]) == [option, "1"]


def test_num_keeps_working_without_torchrun():
    parser = generate_cli.build_parser()
    for option in ("--num", "--num-samples"):
        assert parser.parse_args(["--ckpt", "c", "--out", "o", option, "12"]).num == 12


def test_a_complete_set_whose_samples_npz_was_removed_is_made_again(tmp_path, tiny):
    """A complete manifest is not a sample set: with samples.npz moved away (and the shards
    gone), a re-run makes the same images again instead of naming a file that is not there."""
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    out = str(tmp_path / "s")
    first = generate_cli.run(ckpt, out, num=5, batch_size=2, progress=False)
    before = load(out)
    os.rename(first, str(tmp_path / "moved.npz"))
    again = generate_cli.run(ckpt, out, num=5, batch_size=2, progress=False)
    assert again == first and os.path.isfile(again)
    after = load(out)
    assert np.array_equal(after["arr_0"], before["arr_0"]) and np.array_equal(after["arr_1"], before["arr_1"])


def test_random_labels_come_from_their_own_stream_not_the_noise():
    """With --classes random, index i's label is drawn from the stream (seed, i, 1), its noise
    from (seed, i, 0): a label drawn from the noise's generator is a function of the noise."""
    indices = range(64)
    labels = generate_cli.labels_for(indices, 7, "random", seed=3).tolist()

    def drawn(stream):
        g = torch.Generator()
        return [
            int(torch.randint(7, (), generator=g.manual_seed(generate_cli.index_seed(3, i, stream))))
            for i in indices
        ]

    assert labels == drawn(1)
    assert labels != drawn(0)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_each_rank_gets_its_share_of_the_batches(world):
    """Batch k is rank k % world's: every rank gets as many batches as any other, give or
    take one, whatever the batch size (an even one included), and none is dealt twice."""
    for num, batch_size in ((11, 2), (24, 4), (9, 3)):
        batches = generate_cli.batch_ranges(num, batch_size)
        parts = [generate_cli.rank_batches(num, batch_size, r, world) for r in range(world)]
        counts = [len(part) for part in parts]
        assert max(counts) - min(counts) <= 1, (num, batch_size, counts)
        assert sorted(b for part in parts for b in part) == batches


def test_keep_shards_keeps_each_batch_beside_samples_npz(tmp_path, tiny):
    ckpt = save_ckpt(tmp_path / "last.pt", tiny(in_channels=3))
    out = str(tmp_path / "s")
    generate_cli.run(ckpt, out, num=5, batch_size=2, keep_shards=True, progress=False)
    assert sorted(os.listdir(os.path.join(out, "shards"))) == ["000000.npz", "000001.npz", "000002.npz"]
    images, indices = generate_cli.read_shard(os.path.join(out, "shards", "000002.npz"), "images", "indices")
    assert indices.tolist() == [4] and np.array_equal(images, load(out)["arr_0"][4:])
