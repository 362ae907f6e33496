"""MeanFlowPipeline's argument bounds, at their edges: the null class is a class label (the
model's unconditional samples) and one past it is not; zero steps are refused; id2label names
only the model's classes, each once."""

import pytest
import torch

from meanflow import MeanFlowPipeline, sample


def test_the_null_class_is_a_label_and_one_past_it_is_refused(tiny):
    model = tiny(in_channels=3)
    pipe = MeanFlowPipeline(model)
    null = model.config.num_classes
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    got = pipe([null, 0], latents=noise, output_type="pt").images
    want = (sample(model, torch.tensor([null, 0]), noise=noise) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=rf"class_labels must lie in \[0, {null - 1}\] \(or {null}, the"):
        pipe([null + 1])


@pytest.mark.parametrize("steps", [0, -1, True, 1.0])
def test_steps_must_be_a_positive_int(tiny, steps):
    pipe = MeanFlowPipeline(tiny(in_channels=3))
    with pytest.raises(ValueError, match=rf"num_inference_steps must be an int >= 1, got {steps!r}"):
        pipe([0], num_inference_steps=steps)


def test_id2label_names_only_the_models_classes(tiny):
    model = tiny(in_channels=3)
    last = model.config.num_classes - 1
    assert MeanFlowPipeline(model, id2label={last: "last"}).get_label_ids("last") == [last]
    for key in (last + 1, -1, "x"):  # last + 1 is the null class: no name samples it
        with pytest.raises(ValueError, match=rf"id2label must map class ids in \[0, {last}\] to names"):
            MeanFlowPipeline(model, id2label={key: "one"})
    for twice in ({3: "three", "03": "other"}, {3: "three", "3": "other"}):  # one of them was dropped
        with pytest.raises(ValueError, match=r"id2label names class 3 twice \(keys '3' and '0?3'\)"):
            MeanFlowPipeline(model, id2label=twice)


@pytest.mark.parametrize(
    "labels, error, message",
    [
        ([-1, 0], ValueError, r"class_labels must lie in \[0, 4\] \(or 5, the null class\), got -1\.\.0"),
        (torch.tensor([], dtype=torch.long), TypeError, "class_labels must be a non-empty int"),
    ],
)
def test_labels_of_no_class_are_refused_naming_class_labels(tiny, labels, error, message):
    with pytest.raises(error, match=message):
        MeanFlowPipeline(tiny(in_channels=3))(labels)


def test_an_unconditional_call_of_no_image_is_refused(tiny):
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 for an unconditional model, got 0"):
        MeanFlowPipeline(tiny(in_channels=3, num_classes=0))(batch_size=0)


def test_integer_latents_are_refused_naming_latents(tiny):
    with pytest.raises(TypeError, match=r"latents must be a float tensor of shape \(1, 3, 8, 8\)"):
        MeanFlowPipeline(tiny(in_channels=3))([0], latents=torch.zeros(1, 3, 8, 8, dtype=torch.long))


def test_id2label_must_map_ids_to_names(tiny):
    model = tiny(in_channels=3)
    with pytest.raises(ValueError, match=r"id2label must map class ids in \[0, 4\] to names, got 0: 5"):
        MeanFlowPipeline(model, id2label={0: 5})
    with pytest.raises(TypeError, match="id2label must be a dict {class id: names}, got list"):
        MeanFlowPipeline(model, id2label=["tench", "goldfish"])
    # ImageNet's entries read "tench, Tinca tinca": the whole entry names its class too
    pipe = MeanFlowPipeline(model, id2label={0: "tench, Tinca tinca", 1: "goldfish"})
    assert pipe.get_label_ids(["tench, Tinca tinca", "Tinca tinca", "tench", "goldfish"]) == [0, 0, 0, 1]
