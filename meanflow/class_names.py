"""Class names for an export: what each label id of a run's data means.

The names come from the run's data: a latent folder's manifest (the image folder's class
names, ImageNet synsets such as ``n01440764``), an image folder's class folders, or MNIST's
digits ``"0"`` .. ``"9"``. Where the synsets are the standard ImageNet-1k list, each id also
gets its readable name (``"tench, n01440764"``), from torchvision's ImageNet category list
(BSD-3, shipped inside the package: no weights are downloaded); without torchvision the
synsets alone name the classes.
"""

import os
import warnings

import torch

MNIST_CLASSES = [str(d) for d in range(10)]
# The first and last synsets of the standard 1000-class list, which is in sorted synset order.
IMAGENET_FIRST_SYNSET, IMAGENET_LAST_SYNSET = "n01440764", "n15075141"
IMAGENET_CLASSES = 1000


def imagenet_readable_names() -> list | None:
    """The 1000 readable ImageNet-1k names in label order (``"tench"``, ``"goldfish"``, ...),
    or None without torchvision."""
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError:
        return None
    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def is_imagenet_1k(classes: list) -> bool:
    """Whether ``classes`` are the standard ImageNet-1k synsets, in the standard order."""
    return (
        len(classes) == IMAGENET_CLASSES
        and classes == sorted(classes)
        and classes[0] == IMAGENET_FIRST_SYNSET
        and classes[-1] == IMAGENET_LAST_SYNSET
    )


def id2label_for(classes: list) -> dict:
    """``{id: "name, other name"}`` (diffusers' ``id2label`` form) for the data's class names:
    a standard ImageNet-1k synset gains its readable name in front of it."""
    readable = imagenet_readable_names() if is_imagenet_1k(classes) else None
    if readable is None:
        return dict(enumerate(classes))
    return {i: f"{name}, {synset}" for i, (name, synset) in enumerate(zip(readable, classes))}


def imagenet_id2label() -> dict:
    """Readable names for a model trained on ImageNet-1k labels whose data is not at hand
    (an official DiT checkpoint); empty without torchvision."""
    return dict(enumerate(imagenet_readable_names() or []))


def data_classes(name: str, path: str | None) -> list | None:
    """The class names of a run's data (``data.name``, ``data.path`` of its config); None for
    data without names (the synthetic sets)."""
    if name == "mnist":
        return list(MNIST_CLASSES)
    if name == "latents":
        from .data.latents import read_manifest

        return list(read_manifest(path)["classes"])
    if name == "imagefolder":
        from .data.image_folder import _class_folders

        if not path or not os.path.isdir(path):
            raise FileNotFoundError(f"image folder {path!r} not found")
        return _class_folders(path)[0]
    return None


def recorded_run(checkpoint: str) -> tuple[dict | None, list | None]:
    """The run config and the class names stored in a trainer checkpoint (None for what it does
    not hold). The file is memory-mapped, so its weights are not read a second time."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an old-format or foreign file: it simply has no run config to offer
        return None, None
    if not isinstance(ckpt, dict):
        return None, None
    config, classes = ckpt.get("config"), ckpt.get("classes")
    return (config if isinstance(config, dict) else None), (classes if isinstance(classes, list) else None)


def checkpoint_id2label(checkpoint: str, num_classes: int) -> dict:
    """``id2label`` for a trainer checkpoint's model: the class names it recorded, or (an older
    checkpoint) those of the data its run trained on, read now; empty, with a warning saying
    why, when the data is not readable or does not fit the model."""
    config, classes = recorded_run(checkpoint) if os.path.isfile(checkpoint) else (None, None)
    data = (config or {}).get("data")
    if not num_classes or (classes is None and not isinstance(data, dict)):
        return {}
    if classes is None:
        try:
            classes = data_classes(data.get("name"), data.get("path"))
        except (OSError, ValueError, KeyError) as e:
            warnings.warn(f"class names left out: the run's data is not readable ({e})", stacklevel=2)
            return {}
    if classes is None:
        return {}
    if len(classes) != num_classes:
        warnings.warn(
            f"class names left out: the run's data has {len(classes)} classes, the model {num_classes}",
            stacklevel=2,
        )
        return {}
    return id2label_for(classes)
