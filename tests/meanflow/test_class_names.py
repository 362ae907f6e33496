"""Class names carried from a run's data to its pipeline export."""

import json
import warnings

import pytest
import torch

from meanflow import export
from meanflow.class_names import checkpoint_id2label, data_classes, id2label_for, recorded_run

SYNSETS = ["n01440764", "n01443537", "n01484850"]


def imagenet_1k():
    """1000 sorted synsets with the standard list's first and last ones."""
    middle = [f"n0{2000000 + i:07d}" for i in range(998)]
    return ["n01440764", *middle, "n15075141"]


def test_standard_imagenet_synsets_gain_readable_names():
    pytest.importorskip("torchvision")
    names = id2label_for(imagenet_1k())
    assert len(names) == 1000
    assert names[0] == "tench, n01440764" and names[999] == "toilet tissue, n15075141"


def test_other_classes_keep_their_names():
    assert id2label_for(SYNSETS) == dict(enumerate(SYNSETS))
    assert id2label_for(["cat", "dog"]) == {0: "cat", 1: "dog"}
    pytest.importorskip("torchvision")  # else no list has readable names
    other = [*imagenet_1k()[:-1], "n15075142"]  # 1000 sorted synsets from tench: not ImageNet-1k's
    assert id2label_for(other) == dict(enumerate(other))


def test_a_checkpoint_whose_classes_do_not_fit_the_model_names_none(tmp_path):
    """An export names no id the model lacks, nor leaves one of its ids unnamed."""
    path = tmp_path / "last.pt"
    torch.save({"config": {"data": {"name": "mnist", "path": None}}, "classes": SYNSETS}, path)
    assert checkpoint_id2label(str(path), 3) == dict(enumerate(SYNSETS))  # the recorded names
    for num_classes in (2, 4):
        with pytest.warns(UserWarning, match=f"the run's data has 3 classes, the model {num_classes}"):
            assert checkpoint_id2label(str(path), num_classes) == {}
    assert checkpoint_id2label(str(path), 0) == {}  # an unconditional model


def latent_manifest(classes):
    """A latent folder's manifest as prepare_latents writes it, holding no shards."""
    shape = {"latent_shape": [4, 4, 4], "scale_factor": 0.18215}
    return {"format": "meanflow-latents", "classes": classes, "shards": [], "flips": 1, **shape}


def test_data_classes(tmp_path):
    assert data_classes("mnist", None) == [str(d) for d in range(10)]
    for name in ("dog", "cat", ".hidden"):
        (tmp_path / "images" / name).mkdir(parents=True)
    assert data_classes("imagefolder", str(tmp_path / "images")) == ["cat", "dog"]
    (tmp_path / "latents").mkdir()
    manifest = latent_manifest(SYNSETS)
    (tmp_path / "latents" / "manifest.json").write_text(json.dumps(manifest))
    assert data_classes("latents", str(tmp_path / "latents")) == SYNSETS
    with pytest.raises(FileNotFoundError, match="no-such"):
        data_classes("imagefolder", str(tmp_path / "no-such"))


def trainer_checkpoint(path, model, data):
    """A checkpoint shaped like meanflow.train's, with the run config's data section."""
    import dataclasses

    state = {"model": model.state_dict(), "ema": [model.state_dict()], "ema_decays": [0.9]}
    config = {"data": data}
    torch.save({**state, "config": config, "model_config": dataclasses.asdict(model.config)}, path)


def exported_index(tmp_path, model, data):
    trainer_checkpoint(tmp_path / "last.pt", model, data)
    out = tmp_path / "pipe"
    export.main(["--ckpt", str(tmp_path / "last.pt"), "--out", str(out), "--pipeline"])
    return json.loads((out / "model_index.json").read_text())


def test_export_names_the_classes_of_the_latent_manifest(tmp_path, tiny):
    pytest.importorskip("diffusers")
    (tmp_path / "latents").mkdir()
    manifest = latent_manifest(SYNSETS)
    (tmp_path / "latents" / "manifest.json").write_text(json.dumps(manifest))
    model = tiny(num_classes=3, in_channels=3)
    index = exported_index(tmp_path, model, {"name": "latents", "path": str(tmp_path / "latents")})
    assert index["id2label"] == {"0": "n01440764", "1": "n01443537", "2": "n01484850"}

    from meanflow import MeanFlowPipeline

    pipe = MeanFlowPipeline.from_pretrained(str(tmp_path / "pipe"))
    assert pipe.get_label_ids("n01484850") == [2]
    images = pipe("n01440764", generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (1, 3, 8, 8)


def test_export_names_mnist_digits_and_warns_without_the_data(tmp_path, tiny):
    pytest.importorskip("diffusers")
    index = exported_index(tmp_path, tiny(num_classes=10, in_channels=1), {"name": "mnist", "path": None})
    assert index["id2label"]["3"] == "3"
    gone = tmp_path / "gone"
    gone.mkdir()
    with pytest.warns(UserWarning, match="class names left out: the run's data is not readable"):
        index = exported_index(
            gone, tiny(num_classes=3, in_channels=1), {"name": "latents", "path": "/nowhere"}
        )
    assert index["id2label"] == {}


def test_imagenet_synsets_in_another_order_keep_their_own_names():
    """1000 synsets from tench to toilet tissue, two of them swapped: ImageNet-1k's readable
    names would name ids 1 and 2 after each other's class."""
    pytest.importorskip("torchvision")
    swapped = imagenet_1k()
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert id2label_for(swapped) == dict(enumerate(swapped))


class _RunsWhenUnpickled:
    """A pickled object that creates ``marker`` when loaded: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_reading_a_checkpoints_class_names_unpickles_nothing(tmp_path):
    """An export reads the class names of a downloaded checkpoint: code pickled in it is not
    run, and a checkpoint holding such code names no classes."""
    marker = tmp_path / "ran"
    path = tmp_path / "last.pt"
    payload = {
        "config": {"data": {"name": "mnist"}},
        "classes": SYNSETS,
        "x": _RunsWhenUnpickled(str(marker)),
    }
    torch.save(payload, path)
    assert not marker.exists()
    assert recorded_run(str(path)) == (None, None) and not marker.exists()
    torch.save({"config": {"data": {"name": "mnist"}}, "classes": SYNSETS}, path)
    assert recorded_run(str(path)) == ({"data": {"name": "mnist"}}, SYNSETS)


def test_only_the_whole_imagenet_1k_list_gains_its_readable_names():
    """Three synsets from tench to toilet tissue, or 1000 sorted ones ending at toilet tissue
    but not starting at tench, are other data: ImageNet-1k's names would misname their ids."""
    pytest.importorskip("torchvision")
    three = ["n01440764", "n04000000", "n15075141"]
    assert id2label_for(three) == dict(enumerate(three))
    shifted = ["n01440765", *imagenet_1k()[1:]]
    assert id2label_for(shifted) == dict(enumerate(shifted))


def test_recorded_class_names_need_no_run_config(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"classes": SYNSETS}, path)
    assert checkpoint_id2label(str(path), 3) == dict(enumerate(SYNSETS))


def test_an_unconditional_model_or_a_foreign_file_names_no_class_without_a_word(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"config": {"data": {"name": "mnist", "path": None}}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoint_id2label(str(path), 0) == {}
    torch.save(torch.zeros(3), path)  # not a trainer checkpoint: no run config to read
    assert recorded_run(str(path)) == (None, None)
    assert checkpoint_id2label(str(path), 3) == {}


def test_an_older_checkpoints_damaged_manifest_is_a_warning(tmp_path):
    """An older checkpoint names its classes from its data, read at export: a latent folder's
    manifest damaged since leaves them out, with a warning, and the export goes on."""
    (tmp_path / "latents").mkdir()
    (tmp_path / "latents" / "manifest.json").write_text('{"format": "meanflow-lat')
    path = tmp_path / "last.pt"
    torch.save({"config": {"data": {"name": "latents", "path": str(tmp_path / "latents")}}}, path)
    with pytest.warns(UserWarning, match="class names left out: the run's data is not readable"):
        assert checkpoint_id2label(str(path), 3) == {}
