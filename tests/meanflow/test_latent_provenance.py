"""Where latents come from: the DALI reader's ADM crop against PIL's, the VAE and the reader
recorded in the manifest and checked, and the loader's one-line summary."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from meanflow.data.dali_images import dali_available
from meanflow.data.image_folder import load_image
from meanflow.data.synthetic import synthetic_image

_ci = bool(os.environ.get("CI"))
needs_dali = pytest.mark.skipif(
    not dali_available() and not _ci, reason="nvidia-dali-cuda130 is not installed"
)

SIZE = 32


def write_pngs(folder, sides, noise=20.0):
    """Lossless noisy images, so only the resize and crop can differ between the readers."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for h, w in sides:
        path = os.path.join(folder, f"{h}x{w}.png")
        Image.fromarray(synthetic_image(h, w, rng, noise)).save(path)
        paths.append(path)
    return paths


def dali_vs_pil_levels(paths, size, exact=True):
    """Per image ``(max, mean)`` absolute difference of the DALI and the PIL crops, in uint8 levels."""
    from meanflow.data.dali_images import iterate_files

    got = torch.cat([x for x, ok in iterate_files(paths, size, 4, num_threads=1, exact=exact)])
    want = torch.stack([load_image(p, size) for p in paths])
    diff = (got - want).abs() * 127.5
    return diff.amax(dim=(1, 2, 3)), diff.mean(dim=(1, 2, 3))


@needs_dali
@pytest.mark.parametrize("exact, most, mean_most", [(True, 3, 0.1), (False, 6, 0.35)])
def test_dali_crop_is_adms_where_the_halvings_are_even(tmp_path, exact, most, mean_most):
    """Upscaled, plain cubic, and one or two BOX halvings at even sides: PIL's steps and
    rounding (exact: in the cubic step too), so the crops agree up to coefficient rounding (a
    single antialiased cubic resize was 3-9 levels off at most and 0.6-1.7 on average)."""
    paths = write_pngs(str(tmp_path), [(24, 40), (50, 70), (130, 100), (200, 300)])
    worst, mean = dali_vs_pil_levels(paths, SIZE, exact)
    assert worst.max() <= most and mean.max() < mean_most, (worst, mean)


@needs_dali
def test_dali_crop_near_adms_at_odd_halvings(tmp_path):
    """An odd side's BOX halving is approximated (dali_images' docstring): a few levels."""
    paths = write_pngs(str(tmp_path), [(97, 150), (389, 517)])
    worst, mean = dali_vs_pil_levels(paths, SIZE)
    assert worst.max() <= 8 and mean.max() < 1.5, (worst, mean)


# ----------------------------------------------------------------------------- the manifest's VAE and reader

try:
    import diffusers  # noqa: F401

    _diffusers = True
except ImportError:
    _diffusers = False
needs_diffusers = pytest.mark.skipif(not _diffusers and not _ci, reason="diffusers is not installed")

LATENT_SIZE = 16


def random_vae(config, perturb=0.0):
    """The tiny random-weight VAE (``perturb``: another VAE of the same architecture)."""
    from meanflow.vae import load_vae

    with pytest.warns(UserWarning, match="RANDOM"):
        vae = load_vae("random", config)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(perturb)
    return vae


@pytest.fixture(scope="module")
def vae_folder(tiny_vae, tmp_path_factory):
    """The tiny VAE saved as a diffusers folder, as a real VAE is given to prepare_latents."""
    folder = str(tmp_path_factory.mktemp("vae") / "tiny-vae")
    random_vae(tiny_vae[0]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def made(vae_folder, tmp_path_factory):
    """``(source tree, latent folder)``: 4 images encoded by the PIL reader."""
    from meanflow.data.synthetic import make_image_tree
    from meanflow.prepare_latents import prepare_latents

    root = tmp_path_factory.mktemp("made")
    make_image_tree(str(root / "train"), classes=2, per_class=2, sides=(16, 40), extras=False)
    dst = str(root / "latents")
    prepare(str(root / "train"), dst, vae_folder, prepare_latents)
    return str(root / "train"), dst


def prepare(src, dst, vae, prepare_latents, **kw):
    args = dict(image_size=LATENT_SIZE, batch_size=4, shard_size=2, num_workers=0, scan_workers=0)
    args.update(progress=False, device="cpu", reader="torch", preview=0)
    return prepare_latents(src, dst, vae, **{**args, **kw})


def manifest_of(dst):
    with open(os.path.join(dst, "manifest.json")) as f:
        return json.load(f)


@needs_diffusers
def test_manifest_records_the_reader_and_the_vae_weights_hash(made, vae_folder, tiny_vae, tmp_path):
    from safetensors.torch import save_file

    from meanflow.vae import load_vae, weights_sha256

    m = manifest_of(made[1])
    assert m["reader"] == "torch" and m["vae"]["weights"] == os.path.abspath(vae_folder)
    assert m["vae"]["sha256"] == weights_sha256(load_vae(vae_folder))
    # the hash is the weights', not the file's: the same weights as .safetensors hash the same
    state = {k: v.contiguous() for k, v in load_vae(vae_folder).state_dict().items()}
    save_file(state, str(tmp_path / "vae.safetensors"))
    assert weights_sha256(load_vae(str(tmp_path / "vae.safetensors"), tiny_vae[0])) == m["vae"]["sha256"]
    assert weights_sha256(random_vae(tiny_vae[0], perturb=1e-3)) != m["vae"]["sha256"]


@needs_diffusers
def test_resume_with_another_reader_is_refused_naming_both(made, vae_folder, tmp_path):
    from meanflow.prepare_latents import prepare_latents

    src, dst = made
    with pytest.raises(ValueError, match="reader: 'torch' there, 'dali' now"):
        prepare(src, dst, vae_folder, prepare_latents, reader="dali")
    assert prepare(src, dst, vae_folder, prepare_latents, reader="auto")["reader"] == "torch"  # auto resumes
    older = str(tmp_path / "older")  # a folder from before readers were recorded
    shutil.copytree(dst, older)
    m = manifest_of(older)
    del m["reader"]
    with open(os.path.join(older, "manifest.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(ValueError, match="reader: not recorded"):
        prepare(src, older, vae_folder, prepare_latents)


@needs_diffusers
def test_resume_with_another_vae_is_refused_naming_both(made, tiny_vae, tmp_path):
    from meanflow.prepare_latents import prepare_latents

    other = str(tmp_path / "other-vae")
    random_vae(tiny_vae[0], perturb=1e-3).save_pretrained(other)
    with pytest.raises(ValueError, match=r"vae: '.*tiny-vae' \(sha256 [0-9a-f]{12}\) there, '.*other-vae'"):
        prepare(made[0], made[1], other, prepare_latents)


@needs_diffusers
def test_grids_decode_with_data_vae_where_the_recorded_vae_is_not_here(made, vae_folder, tmp_path):
    """Latents made on another machine: the manifest's VAE path is missing here; the error
    names data.vae, and data.vae pointing at a copy decodes exactly as the original."""
    from meanflow.data.latents import TorchLatentLoader

    moved = str(tmp_path / "latents")
    shutil.copytree(made[1], moved)
    m = manifest_of(moved)
    m["vae"]["weights"] = "/elsewhere/sd-vae-ft-ema"
    with open(os.path.join(moved, "manifest.json"), "w") as f:
        json.dump(m, f)
    x, _ = next(iter(TorchLatentLoader(moved, 2, num_workers=0, latent_mode="mean")))
    with pytest.raises(FileNotFoundError, match="set data.vae"):
        TorchLatentLoader(moved, 2, num_workers=0).decode(x)
    copy = str(tmp_path / "copy-of-vae")
    shutil.copytree(vae_folder, copy)
    images = TorchLatentLoader(moved, 2, num_workers=0, vae_path=copy).decode(x)
    want = TorchLatentLoader(made[1], 2, num_workers=0).decode(x)
    assert images.shape == (2, 3, LATENT_SIZE, LATENT_SIZE) and torch.equal(images, want)


@needs_diffusers
def test_another_vae_is_refused_or_warned_naming_both(made, tiny_vae, tmp_path):
    from meanflow.data.latents import TorchLatentLoader, check_vae_against_latents

    other = str(tmp_path / "other-vae")
    random_vae(tiny_vae[0], perturb=1e-3).save_pretrained(other)
    loader = TorchLatentLoader(made[1], 2, num_workers=0, vae_path=other)
    x, _ = next(iter(loader))
    both = r"VAE '.*other-vae' is not the VAE the latents were made with, '.*tiny-vae' \(sha256"
    with pytest.raises(ValueError, match=both + ".*weights differ"):
        loader.decode(x)
    vae = random_vae(tiny_vae[0], perturb=1e-3)
    with pytest.raises(ValueError, match="weights differ"):
        check_vae_against_latents(vae, made[1], "other-vae")
    with pytest.warns(UserWarning, match="is not the VAE the latents were made with"):
        check_vae_against_latents(vae, made[1], "other-vae", strict=False)
    wider = random_vae({**tiny_vae[0], "block_out_channels": [8, 16]})
    with pytest.raises(ValueError, match="configs differ in block_out_channels"):
        check_vae_against_latents(wider, made[1], "wider")
    with pytest.warns(UserWarning, match="cannot check VAE 'x' against the training latents"):
        check_vae_against_latents(vae, str(tmp_path / "gone"), "x")


@needs_diffusers
def test_latent_folder_of_a_checkpoint(made, tmp_path):
    from meanflow.data.latents import latent_folder_of_checkpoint

    path = str(tmp_path / "last.pt")
    torch.save({"config": {"data": {"name": "latents", "path": made[1]}}, "model": {}}, path)
    assert latent_folder_of_checkpoint(path) == made[1]
    torch.save({"config": {"data": {"name": "mnist", "path": None}}}, path)
    assert latent_folder_of_checkpoint(path) is None
    assert latent_folder_of_checkpoint(str(tmp_path / "pipeline-folder")) is None


@needs_diffusers
def test_a_checkpoints_latents_check_the_vae_of_sample_and_export(made, vae_folder, tiny_vae, tmp_path):
    from meanflow.data.latents import check_vae_for_checkpoint
    from meanflow.vae import load_vae

    path = str(tmp_path / "last.pt")
    torch.save({"config": {"data": {"name": "latents", "path": made[1]}}, "model": {}}, path)
    check_vae_for_checkpoint(load_vae(vae_folder), path, vae_folder)  # the latents' own VAE
    with pytest.raises(ValueError, match="VAE 'other' is not the VAE the latents were made with"):
        check_vae_for_checkpoint(random_vae(tiny_vae[0], perturb=1e-3), path, "other")
    check_vae_for_checkpoint(random_vae(tiny_vae[0], perturb=1e-3), str(tmp_path / "pipe"), "other")


@needs_diffusers
def test_the_latent_loader_describes_its_data(made, capsys):
    from meanflow.config import TrainConfig
    from meanflow.data import build_loader

    config = TrainConfig.from_name("imagenet256-b2")
    config.data.path, config.data.num_workers, config.data.backend = made[1], 0, "torch"
    config.batch_size = 2
    loader = build_loader(config, 0, 1, "cpu")
    line = capsys.readouterr().out.strip()
    assert line == f"data: {loader.describe()}" and "\n" not in line
    expected = ["4 latents 4x8x8", "float32 posteriors", "of 2 classes", "adm-center crops of 16 px"]
    expected += ["the torch reader", "sha256", "read with torch (np.load)", "latent_mode sample"]
    for part in expected:
        assert part in line, (part, line)


def test_run_config_dict_keeps_only_the_data_keys_the_loader_reads():
    from meanflow.config import DataConfig, TrainConfig, apply
    from meanflow.data import run_config_dict

    latents = run_config_dict(TrainConfig.from_name("imagenet256-b2"))["data"]
    assert "image_size" not in latents and "max_read_failures" not in latents
    assert {"name", "path", "backend", "num_workers", "latent_mode", "vae"} <= set(latents)
    folders = TrainConfig(data=DataConfig(name="imagefolder", image_size=512))
    assert (
        run_config_dict(folders)["data"]["image_size"] == 512
        and "latent_mode" not in run_config_dict(folders)["data"]
    )
    custom = TrainConfig()
    custom.data.name = "my_loader"  # a registered loader: nothing is known to be unused
    assert run_config_dict(custom) == custom.to_dict()
    again = TrainConfig()
    apply(again, run_config_dict(TrainConfig.from_name("imagenet256-b2")), "config.json")
    assert again == TrainConfig.from_name("imagenet256-b2")  # the file still rebuilds the run's config


@needs_diffusers
def test_trainer_grids_with_another_vae_warn_naming_both(made, tiny_vae, tmp_path):
    """The trainer's grid never decodes with a VAE the latents were not made with: it warns,
    naming both, and shows latent channels instead (meanflow.train.grid_images)."""
    from meanflow.data.latents import TorchLatentLoader
    from meanflow.train import grid_images

    other = str(tmp_path / "other-vae")
    random_vae(tiny_vae[0], perturb=1e-3).save_pretrained(other)
    samples = torch.randn(3, 4, LATENT_SIZE // 2, LATENT_SIZE // 2)
    loader = TorchLatentLoader(made[1], 2, num_workers=0, vae_path=other)
    with pytest.warns(UserWarning, match="latent channels 0-2.*other-vae.*is not the VAE.*tiny-vae"):
        shown = grid_images(loader, samples)
    assert torch.equal(shown, samples[:, :3])


@needs_diffusers
def test_generate_and_export_refuse_another_vae_than_the_latents(made, vae_folder, tiny_vae, tmp_path):
    """The calls in meanflow.generate and meanflow.export: a model trained on latents decodes
    only with the VAE its latents were made with; its own VAE passes."""
    from meanflow.config import TrainConfig
    from meanflow.export import export
    from meanflow.generate import run
    from meanflow.train import main

    config = TrainConfig.from_name("imagenet256-b2")
    config.model, config.model_kwargs = "DiT-T/4", {"depth": 1, "time_scale": 1.0}
    config.data.path, config.data.num_workers, config.data.backend = made[1], 0, "torch"
    config.out_dir, config.steps, config.batch_size, config.progress = str(tmp_path / "run"), 1, 2, False
    config.sample_every, config.eval_every, config.ckpt_every, config.threads = 0, 0, 0, 1
    main(config)
    ckpt = os.path.join(config.out_dir, "last.pt")
    other = str(tmp_path / "other-vae")
    random_vae(tiny_vae[0], perturb=1e-3).save_pretrained(other)
    refused = "VAE .*other-vae.* is not the VAE the latents were made with"
    with pytest.raises(ValueError, match=refused):
        run(ckpt, str(tmp_path / "samples"), num=2, batch_size=2, vae=other, device="cpu", progress=False)
    with pytest.raises(ValueError, match=refused):
        export(ckpt, str(tmp_path / "pipe"), pipeline=True, vae=other)
    assert not os.path.exists(tmp_path / "pipe")
    export(ckpt, str(tmp_path / "pipe"), pipeline=True, vae=vae_folder)


@needs_diffusers
def test_latents_whose_manifest_records_no_vae(made, vae_folder, tmp_path):
    """A latent folder another tool made, its manifest without ``vae``: decoding names
    data.vae, decodes with it (a warning: nothing to check it against), and the checks of
    sample, export and a checkpoint trained on it warn instead of a bare KeyError."""
    from meanflow.data.latents import TorchLatentLoader, check_vae_against_latents, check_vae_for_checkpoint
    from meanflow.vae import load_vae

    bare = str(tmp_path / "latents")
    shutil.copytree(made[1], bare)
    m = manifest_of(bare)
    del m["vae"]
    with open(os.path.join(bare, "manifest.json"), "w") as f:
        json.dump(m, f)
    x, _ = next(iter(TorchLatentLoader(bare, 2, num_workers=0, latent_mode="mean")))
    with pytest.raises(ValueError, match="records no VAE: set data.vae"):
        TorchLatentLoader(bare, 2, num_workers=0).decode(x)
    with pytest.warns(UserWarning, match="manifest.json records no VAE"):
        images = TorchLatentLoader(bare, 2, num_workers=0, vae_path=vae_folder).decode(x)
    assert torch.equal(images, TorchLatentLoader(made[1], 2, num_workers=0).decode(x))
    vae = load_vae(vae_folder)
    with pytest.warns(UserWarning, match="cannot check VAE 'v': the latents' manifest.json records no VAE"):
        check_vae_against_latents(vae, bare, "v")
    ckpt = str(tmp_path / "last.pt")
    identity = TorchLatentLoader(bare, 2, num_workers=0).index.identity()
    torch.save({"config": {"data": {"name": "latents", "path": bare}}, "data_identity": identity}, ckpt)
    with pytest.warns(UserWarning, match="records no VAE"):
        check_vae_for_checkpoint(vae, ckpt, "v")


@needs_diffusers
def test_a_vae_record_without_a_path_still_checks_data_vae(made, vae_folder, tiny_vae, tmp_path):
    """A manifest whose VAE record has no weights path (another tool's, or the path left out)
    but a config and a hash: data.vae is checked against them, as against a whole record (it
    was taken unchecked, with a warning that nothing could be compared), and a weights file
    takes the recorded config. Only a record with nothing to compare warns."""
    import warnings

    from safetensors.torch import save_file

    from meanflow.data.latents import TorchLatentLoader
    from meanflow.vae import load_vae

    def pathless(name, drop):
        folder = str(tmp_path / name)
        shutil.copytree(made[1], folder)
        m = manifest_of(folder)
        for key in drop:
            del m["vae"][key]
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump(m, f)
        return folder

    unnamed = pathless("unnamed", ["weights"])
    x, _ = next(iter(TorchLatentLoader(unnamed, 2, num_workers=0, latent_mode="mean")))
    with pytest.raises(ValueError, match="records no VAE weights path: set data.vae"):
        TorchLatentLoader(unnamed, 2, num_workers=0).decode(x)
    other = str(tmp_path / "other-vae")
    random_vae(tiny_vae[0], perturb=1e-3).save_pretrained(other)
    both = (
        r"VAE '.*other-vae' is not the VAE the latents were made with, an unnamed VAE \(sha256 [0-9a-f]{12}\)"
    )
    with pytest.raises(ValueError, match=both + ": their weights differ"):
        TorchLatentLoader(unnamed, 2, num_workers=0, vae_path=other).decode(x)
    want = TorchLatentLoader(made[1], 2, num_workers=0).decode(x)
    weights = str(tmp_path / "vae.safetensors")  # tiny-vae's weights, not in sd-vae-ft-ema's shapes
    save_file({k: v.contiguous() for k, v in load_vae(vae_folder).state_dict().items()}, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked: no warning that it could not be
        for own in (vae_folder, weights):
            got = TorchLatentLoader(unnamed, 2, num_workers=0, vae_path=own).decode(x)
            assert torch.equal(got, want), own

    config_only = pathless("config-only", ["weights", "sha256"])
    wider = str(tmp_path / "wider-vae")
    random_vae({**tiny_vae[0], "block_out_channels": [8, 16]}).save_pretrained(wider)
    with pytest.raises(
        ValueError, match=r"'.*wider-vae' is not .*, an unnamed VAE \(no weights hash.*configs differ"
    ):
        TorchLatentLoader(config_only, 2, num_workers=0, vae_path=wider).decode(x)
    with pytest.warns(UserWarning, match="cannot verify the weights of VAE '.*tiny-vae'"):
        TorchLatentLoader(config_only, 2, num_workers=0, vae_path=vae_folder).decode(x)

    nothing = pathless("nothing", ["weights", "sha256", "config"])
    with pytest.raises(ValueError, match=r"records no VAE: set data.vae"):
        TorchLatentLoader(nothing, 2, num_workers=0).decode(x)
    with pytest.warns(
        UserWarning, match="cannot check VAE '.*other-vae': the latents' manifest.json records no VAE"
    ):
        TorchLatentLoader(nothing, 2, num_workers=0, vae_path=other).decode(x)


@needs_diffusers
def test_a_checkpoints_pathless_vae_record_is_the_one_checked(made, vae_folder, tiny_vae, tmp_path):
    """A checkpoint trained on latents whose VAE record holds a hash but no weights path: a
    ``--vae`` is checked against that record, not against the folder's manifest as it is now
    (prepared again since, by a tool that records no VAE: the other VAE passed with a warning)."""
    from meanflow.data.latents import TorchLatentLoader, check_vae_for_checkpoint
    from meanflow.vae import load_vae

    folder = str(tmp_path / "latents")
    shutil.copytree(made[1], folder)
    identity = TorchLatentLoader(folder, 2, num_workers=0).index.identity()
    identity["vae"] = {k: v for k, v in identity["vae"].items() if k != "weights"}
    ckpt = str(tmp_path / "last.pt")
    torch.save({"config": {"data": {"name": "latents", "path": folder}}, "data_identity": identity}, ckpt)
    m = manifest_of(folder)
    del m["vae"]
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(m, f)
    other = random_vae(tiny_vae[0], perturb=1e-3)
    with pytest.raises(ValueError, match=r"'other' is not the VAE .*an unnamed VAE \(sha256"):
        check_vae_for_checkpoint(other, ckpt, "other")
    check_vae_for_checkpoint(load_vae(vae_folder), ckpt, "own")  # the recorded one passes
