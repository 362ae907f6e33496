"""FID, Inception Score, precision/recall (and KID) of generated images, through torch-fidelity.

    python -m meanflow.evaluate samples/samples.npz --ref VIRTUAL_imagenet256_labeled.npz \\
        --inception-weights /models/weights-inception-2015-12-05-6726825d.pth --out fid.json

Samples and reference are each a directory of images (searched recursively), an ``.npz``
with uint8 NHWC images in ``arr_0`` (ADM's format, ``meanflow.generate``'s output), or a
``meanflow.generate`` output directory (``meanflow.evaluate_inputs``). A folder's images must
be of one size, except in a reference folder read with ``--ref-size N``: each image then goes
through the ADM center crop to ``N x N`` that the trainer applies to its data (as ADM builds
its reference batches), so the class-folder tree a model was trained on, of any image sizes,
is a reference; images already ``N x N`` are read unchanged. A tree of class folders read so
is the images the trainer's scan keeps (other files and corrupt images skipped, as the trainer
skips them); any other folder holding other files than images is refused naming them. ``N``
must be the samples' size, and statistics saved from such a reference record it and are
refused for samples of another size: the extractor resizes every image to its input, so
nothing else would show the mismatch; for the same reason reference images read as they are
(an ``.npz``'s, a folder's) must be of the samples' size, as ADM's reference batches are
(``evaluate_inputs.check_same_size``), and statistics saved from them record that size and are
refused for samples of another one. The reference may instead (or also) carry precomputed
statistics: an ``.npz`` with ``mu`` and ``sigma`` (ADM's reference batches have both, from
the same TF-Inception pool features that torch-fidelity's ``inception-v3-compat``
reproduces); ``--save-ref-stats`` writes one that also records the extractor, its FID layer,
its weights' sha256 (``unhashed`` for a path that is not a file) and the torch-fidelity
version, and statistics so recorded are refused as the reference of a run with other
features (``meanflow.reference_stats``; files without the record are used unchecked).

Features come from a feature extractor registered with torch-fidelity (default its
TF-compatible Inception-v3); the metric formulas are torch-fidelity's, and a set with fewer
images than a metric can score (``FEWEST``) is refused before any extraction, where
torch-fidelity would give NaN or a constant; the Inception Score takes its 10 splits from 20
samples on, ``n // 2`` below (a split of one image scores 1 whatever it shows). Nothing is ever
downloaded: the Inception weights are a local file (``--inception-weights`` or
``$MEANFLOW_INCEPTION_WEIGHTS``, else torch hub's checkpoint folder, where torch-fidelity
itself would have cached them); ``vgg16`` takes its local file the same way, and the
built-in extractors that can only download (CLIP, DINOv2) are refused. A weights file must
have the published sha256 (else ``--allow-unverified-weights``) and is read with
``weights_only=True``: it carries tensors, never code. Results go to a JSON file, written
atomically, with the weights' sha256. ``--out`` and ``--save-ref-stats`` are checked before
any feature is extracted: neither may be a directory, an input, or an existing file other
than an earlier report (or statistics ``.npz``).

The report (``evaluate``'s dict, ``--out``'s JSON): the metrics asked for, the sizes they used
(``isc_splits``; ``kid_subset_size`` and ``kid_subsets``), ``num_reference`` (the reference
images a metric read: None for FID from an ADM batch's statistics alone), ``reference_stats``
and ``reference_stats_images`` (the count the statistics record), and what made the numbers.
The README lists every key.
"""

import argparse
import io
import json
import os
import sys
import warnings
from typing import NamedTuple

import numpy as np
import torch

from . import reference_stats
from .checkpoint import file_sha256, load_torch_file, write_json_atomic
from .checks import check_int_at_least
from .cli import errors_as_one_line, int_at_least
from .distributed import resolve_device
from .evaluate_inputs import ImageSet, check_same_size

INCEPTION = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
WEIGHTS_ENV = "MEANFLOW_INCEPTION_WEIGHTS"
METRICS = ("fid", "isc", "prc", "kid")
ALLOW_FLAG = "--allow-unverified-weights"
# A JSON object with one of these is a metrics report, which --out may replace.
REPORT_KEYS = frozenset(("feature_extractor", "fid", "inception_score_mean", "precision", "kid_mean"))


class PublishedWeights(NamedTuple):
    file: str
    url: str
    sha256: str  # the full digest, or the prefix a torch hub file name carries
    env: str | None = None  # an environment variable that may name the local file


# The built-in extractors meanflow.evaluate can run from a local file: torch-fidelity would
# download these, and unpickles them with weights_only=False. Tests replace this table.
PUBLISHED_WEIGHTS = {
    INCEPTION: PublishedWeights(
        INCEPTION_FILE,
        INCEPTION_URL,
        "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        WEIGHTS_ENV,
    ),
    "vgg16": PublishedWeights(
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"
    ),
}


def _fidelity():
    try:
        import torch_fidelity
    except ImportError as e:
        raise ImportError("evaluation needs torch-fidelity: pip install 'meanflow-engine[eval]'") from e
    return torch_fidelity


def hub_weights_path(file: str = INCEPTION_FILE) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", file)


def resolve_weights(extractor: str, path: str | None = None) -> str:
    """The local weights file of a built-in extractor: ``path``, else its environment variable
    (the Inception's ``$MEANFLOW_INCEPTION_WEIGHTS``), else torch hub's cache. Raises
    ``FileNotFoundError`` saying which file to put where."""
    published = PUBLISHED_WEIGHTS[extractor]
    candidates = [(_weights_flag(extractor), path)]
    if published.env:
        candidates.append((f"${published.env}", os.environ.get(published.env)))
    for source, candidate in candidates:
        if candidate:
            if not os.path.isfile(candidate):
                raise FileNotFoundError(
                    f"weights given by {source} not found: {candidate}. {_weights_help(extractor)}"
                )
            return candidate
    if os.path.isfile(hub_weights_path(published.file)):
        return hub_weights_path(published.file)
    raise FileNotFoundError(f"{extractor} weights not found. {_weights_help(extractor)}")


def _weights_flag(extractor: str) -> str:
    return "--inception-weights" if extractor == INCEPTION else "--extractor-weights"


def _weights_help(extractor: str = INCEPTION) -> str:
    published = PUBLISHED_WEIGHTS[extractor]
    env = f", or set {published.env}=PATH" if published.env else ""
    return (
        f"Needed: the file {published.file} (the {extractor} weights, from {published.url}). "
        f"meanflow.evaluate never downloads (offline machines): fetch it elsewhere, then pass "
        f"{_weights_flag(extractor)} PATH{env}, or place it at {hub_weights_path(published.file)}."
    )


def verify_weights(extractor: str, path: str, allow_unverified: bool = False) -> tuple[str, bool]:
    """``(sha256, verified)`` of ``path``. Another file than the published one (random or
    retrained weights of the right shape) gives metrics that look valid and mean nothing, so a
    mismatch is refused unless ``allow_unverified``; then it only warns."""
    published = PUBLISHED_WEIGHTS[extractor]
    digest = file_sha256(path)
    if digest.startswith(published.sha256):
        return digest, True
    message = (
        f"{extractor} weights {path} have sha256 {digest}, not the published {published.sha256} of "
        f"{published.file}: metrics from other weights are not comparable to published ones"
    )
    if not allow_unverified:
        raise ValueError(f"{message}. Pass {ALLOW_FLAG} to use this file anyway.")
    warnings.warn(f"{message} ({ALLOW_FLAG} given).", stacklevel=2)
    return digest, False


def safe_weights(extractor: str, path: str) -> io.BytesIO:
    """The tensors of ``path``, read with ``weights_only=True`` and saved again into memory:
    torch-fidelity ``torch.load``s a weights path with ``weights_only=False``, which would run
    any code a crafted pickle carries; re-saved tensors carry none."""
    state = load_torch_file(path, what=f"{extractor} weights")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def _downloads(extractor: str) -> bool:
    """A torch-fidelity extractor with no published local file (CLIP, DINOv2): it would fetch its
    weights (DINOv2 also code, through ``torch.hub.load``) and cannot read them safely."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    module = FEATURE_EXTRACTORS_REGISTRY[extractor].__module__
    return module.startswith("torch_fidelity.") and extractor not in PUBLISHED_WEIGHTS


# ---------------------------------------------------------------- destinations


def check_destinations(out, save_ref_stats, inputs) -> None:
    """``--out`` and ``--save-ref-stats`` (either may be None) refused before any work: one
    path for both, or either one refused by :func:`check_destination`; ``inputs``:
    ``(role, path or None)`` pairs."""
    inputs = [(role, path) for role, path in inputs if path is not None]
    destinations = [
        ("--out", out, _is_report),
        ("--save-ref-stats", save_ref_stats, reference_stats.is_stats),
    ]
    destinations = [(flag, path, ours) for flag, path, ours in destinations if path]
    if len(destinations) == 2 and _same_path(out, save_ref_stats):
        raise ValueError(f"--out and --save-ref-stats are both {out}: give two different files")
    for flag, path, ours in destinations:
        check_destination(flag, path, inputs, ours)


def check_destination(flag: str, path: str, inputs, ours) -> None:
    """Refuse ``path`` (where option ``flag`` writes a file at the very end) before any work:
    a directory, a folder above it that is a file or not writable, one of the ``inputs``
    (``(role, path)`` pairs), or an existing file that ``ours(path)`` does not recognise as
    one this program writes there (an empty file holds nothing to lose)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a directory; give a file path")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {path} cannot be written: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path} cannot be written: no permission to write in {folder}")
    if not os.path.exists(path):
        return
    for role, source in inputs:
        if os.path.samefile(path, source):
            raise ValueError(f"{flag} {path} is the {role} {source}: give another path, never an input")
    if os.path.getsize(path) and not ours(path):
        raise ValueError(
            f"{flag} {path} exists and is not a file meanflow.evaluate writes there: move it away "
            "or give another path"
        )


def _same_path(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _is_report(path: str) -> bool:
    """A JSON results file: an object with ``feature_extractor`` (every report of ``evaluate``
    has it) or one of its metrics (a report trimmed by hand, or another tool's)."""
    if os.path.getsize(path) > 1 << 20:  # reports are a few hundred bytes; never read a big file
        return False
    try:
        with open(path, "rb") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and not report.keys().isdisjoint(REPORT_KEYS)


# ------------------------------------------------------------------- features


def make_extractor(
    name: str, layers, device: torch.device, weights_path: str | None, verbose: bool, allow_unverified=False
):
    """``(extractor, provenance)``: the extractor, and the sha256 of the weights file it runs
    (None for an extractor registered by the user, which reads its own ``weights_path``)."""
    weights, provenance = extractor_weights(name, weights_path, allow_unverified)
    return build_extractor(name, layers, device, weights, verbose), provenance


def extractor_weights(name: str, weights_path: str | None, allow_unverified=False):
    """``(weights, provenance)`` of extractor ``name``, refused as ``make_extractor`` would
    refuse them (not registered, weights missing, not the published file, or only downloadable):
    ``evaluate`` asks before it reads a reference, whose scan can take minutes."""
    fidelity = _fidelity()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ValueError(
            f"feature extractor {name!r} is not registered with torch-fidelity {fidelity.__version__}"
        )
    if name in PUBLISHED_WEIGHTS:
        path = resolve_weights(name, weights_path)
        digest, verified = verify_weights(name, path, allow_unverified)
        return safe_weights(name, path), {"weights_sha256": digest, "weights_verified": verified}
    if _downloads(name):
        raise ValueError(
            f"feature extractor {name!r} downloads its weights (and cannot read a local file "
            f"safely); meanflow.evaluate never downloads: use {' or '.join(PUBLISHED_WEIGHTS)} "
            f"with a local weights file"
        )
    return weights_path, {"weights_sha256": None, "weights_verified": None}


def build_extractor(name: str, layers, device: torch.device, weights, verbose: bool):
    """The torch-fidelity extractor ``name`` for ``layers``, on ``device``, from ``weights``
    (``extractor_weights``'s)."""
    from torch_fidelity.utils import create_feature_extractor

    kwargs = {"verbose": verbose, "feature_extractor_weights_path": weights}
    # Moved to the device itself: torch-fidelity's cuda=True is .cuda(), the current GPU, not
    # cuda:N (whose images then met weights on another GPU at the first batch).
    return create_feature_extractor(name, sorted(set(layers)), cuda=False, **kwargs).to(device)


def extract(images: ImageSet, extractor, device, batch_size: int, verbose: bool) -> dict:
    """``{layer: (N, D) float64 CPU features}`` of every image."""
    from tqdm import tqdm

    out = {}
    with torch.no_grad(), tqdm(total=len(images), disable=not verbose, unit="img", desc=images.role) as bar:
        for x in images.batches(batch_size):
            feats = extractor.convert_features_tuple_to_dict(extractor(x.to(device)))
            for k, v in feats.items():
                out.setdefault(k, []).append(v.double().cpu())
            bar.update(len(x))
    return {k: torch.cat(v) for k, v in out.items()}


def fid_stats(features: torch.Tensor) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    stats = fid_features_to_statistics(features)
    return {"mu": np.asarray(stats["mu"], np.float64), "sigma": np.asarray(stats["sigma"], np.float64)}


# --------------------------------------------------------------------- metrics

PRC_NEIGHBORHOOD = 3  # torch-fidelity's k of precision/recall (Kynkaanniemi et al.)
# The fewest images of a set each metric can score, and why: below it torch-fidelity returns
# NaN (a covariance and KID's unbiased MMD divide by n - 1), a constant (the Inception Score
# of one image is 1 whatever it shows) or fails once every feature is extracted (no k-th
# neighbour).
FEWEST = {
    "fid": (2, "a covariance"),
    "kid": (2, "its unbiased MMD divides by n - 1"),
    "isc": (2, "the score of one image is 1 whatever it shows"),
    "prc": (PRC_NEIGHBORHOOD + 1, f"each image's ball reaches its {PRC_NEIGHBORHOOD} nearest neighbours"),
}


def check_counts(metrics, sample_set: ImageSet, ref_set, fid_stats_from_images: bool) -> None:
    """Refuse, before any feature is extracted, a set with fewer images than a metric scores
    (``FEWEST``): the samples for every metric, the reference's images for prc and kid, and
    for FID statistics computed from them (``fid_stats_from_images``, also when saved)."""
    need = [("samples", sample_set, m) for m in metrics]
    need += [("reference", ref_set, m) for m in metrics if m in ("prc", "kid")]
    if fid_stats_from_images:
        need.append(("reference", ref_set, "fid"))
    for role, images, metric in need:
        fewest, why = FEWEST[metric]
        if len(images) < fewest:
            raise ValueError(
                f"{metric} needs at least {fewest} images in the {role} ({why}): {images.path} "
                f"holds {len(images)}"
            )


# torch-fidelity's KID: the MMD of this many pairs of random subsets of this many images (the
# published KIDs' size); smaller sets take smaller subsets, recorded: not comparable to 1000.
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def kid_subset_size_for(n: int) -> int:
    """The KID subset size for sets of ``n`` images or more (no larger than a set)."""
    return min(KID_SUBSET_SIZE, n)


def isc_splits_for(n: int, isc_splits: int) -> int:
    """torch-fidelity's ``isc_splits`` where each split holds two images or more; fewer splits
    below ``2 * isc_splits`` images: a split of one image scores 1 whatever it shows."""
    return max(1, min(isc_splits, n // 2))


def evaluate(
    samples: str,
    reference: str | None = None,
    metrics=None,
    feature_extractor: str = INCEPTION,
    weights_path: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
    out: str | None = None,
    save_ref_stats: str | None = None,
    isc_splits: int = 10,
    verbose: bool = True,
    allow_unverified_weights: bool = False,
    ref_size: int | None = None,
) -> dict:
    """The metrics of ``samples`` (against ``reference`` for FID/PRC/KID), as a dict; also
    written to ``out`` (JSON, atomic) when given. ``metrics``: a subset of
    fid, isc, prc, kid; default fid + isc, and prc when the reference has images. The weights
    of a built-in extractor must be the published file (sha256) unless
    ``allow_unverified_weights``. ``out`` and ``save_ref_stats`` are refused up front when
    they are an input or an existing file of another kind (see ``check_destination``).
    ``ref_size``: read a reference folder through the ADM center crop to ``ref_size`` square
    (``meanflow.evaluate_inputs``), the samples' size; saved statistics record it."""
    fidelity = _fidelity()
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    for name, value in (("batch_size", batch_size), ("isc_splits", isc_splits)):
        check_int_at_least(name, value)
    if ref_size is not None:
        check_int_at_least("ref_size (--ref-size)", ref_size, why=" (the samples' side in pixels)")
        if not reference:
            raise ValueError(
                "ref_size (--ref-size) center-crops the reference's images: pass a reference folder (--ref)"
            )
    # The samples are never cropped: a generated set has one size, and cropping a samples folder
    # of mixed sizes would score other images than the model made (ImageSet refuses that folder).
    sample_set = ImageSet(samples, "samples")
    if not sample_set.has_images:
        raise ValueError(f"samples {samples} hold statistics only; metrics need the sample images")
    # before the reference is read (a class tree's scan takes minutes), with the inputs known so
    # far; again below with the reference's own .npz, which a folder may hold
    inputs = [
        ("samples", sample_set.npz),
        ("reference", reference if os.path.isfile(reference or "") else None),
    ]
    check_destinations(out, save_ref_stats, inputs)
    # the device and the extractor's weights too: a typo or a missing weights file is refused
    # before the reference is read, not minutes later
    dev = resolve_device(device)
    weights, provenance = extractor_weights(feature_extractor, weights_path, allow_unverified_weights)
    ref_set = ImageSet(reference, "reference", crop=ref_size) if reference else None
    if verbose and ref_set is not None and ref_set.index is not None:
        print(f"reference: {ref_set.index.describe()}", file=sys.stderr)  # as the trainer says it
    # the crop asked for, or the one saved statistics record
    crop = ref_size
    if crop is None and ref_set is not None:
        crop = reference_stats.crop_size(ref_set.stats_record)
    if metrics is None:
        metrics = ["fid", "isc"] if ref_set is not None else ["isc"]
        if ref_set is not None and ref_set.has_images:
            metrics.append("prc")
    metrics = list(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}, got {metrics}")
    paired = [m for m in metrics if m != "isc"]
    if paired and ref_set is None:
        raise ValueError(f"metrics {paired} compare against a reference: pass reference (--ref)")
    if paired and crop is not None:
        source = ref_set.npz if ref_size is None else reference
        reference_stats.check_crop_size(source, crop, sample_set.image_size(), recorded=ref_size is None)
    if paired and ref_set.has_images:  # also an .npz's images beside statistics of crops
        check_same_size(sample_set, ref_set)
    if paired and crop is None:
        recorded = reference_stats.image_size(ref_set.stats_record)
        reference_stats.check_image_size(ref_set.npz, recorded, sample_set.image_size())
    if ref_set is not None and not ref_set.has_images and any(m in ("prc", "kid") for m in metrics):
        raise ValueError(f"reference {reference} has statistics only: prc and kid need reference images")
    if save_ref_stats and ref_set is None:
        raise ValueError("save_ref_stats (--save-ref-stats) needs a reference (--ref)")
    cls = FEATURE_EXTRACTORS_REGISTRY[feature_extractor]
    layer = {m: cls.get_default_feature_layer_for_metric(m) for m in (*metrics, "fid")}
    if "fid" not in metrics and not save_ref_stats:
        del layer["fid"]
    check_counts(metrics, sample_set, ref_set, "fid" in layer and ref_set.stats is None)
    check_destinations(
        out, save_ref_stats, [("samples", sample_set.npz), ("reference", ref_set and ref_set.npz)]
    )

    extractor = build_extractor(feature_extractor, layer.values(), dev, weights, verbose)
    features = None
    if "fid" in layer:  # checked before any extraction: a refusal costs nothing
        # the size of images read as they are: ref_size records the crop's
        size = ref_set.image_size() if ref_size is None and ref_set.has_images else None
        count = len(ref_set) if ref_set.has_images else None
        record = (feature_extractor, layer["fid"], provenance, weights_path, ref_size, fidelity.__version__)
        features = reference_stats.record(*record, size, num_images=count)
        if ref_set.stats is not None:
            reference_stats.check(ref_set.npz, ref_set.stats_record, features, verbose)
    sample_feats = extract(sample_set, extractor, dev, batch_size, verbose)
    result = {}
    ref_feats, ref_stats = None, None
    if ref_set is not None:
        need_ref_images = any(m in ("prc", "kid") for m in metrics) or (
            "fid" in layer and ref_set.stats is None
        )
        if need_ref_images:
            ref_feats = extract(ref_set, extractor, dev, batch_size, verbose)
        if "fid" in layer:
            ref_stats = ref_set.stats if ref_set.stats is not None else fid_stats(ref_feats[layer["fid"]])
    if "fid" in metrics:
        from torch_fidelity.metric_fid import fid_statistics_to_metric

        stats = fid_stats(sample_feats[layer["fid"]])
        reference_stats.check_shape(ref_stats, stats, feature_extractor)
        result["fid"] = fid_statistics_to_metric(stats, ref_stats, verbose)["frechet_inception_distance"]
    if "isc" in metrics:
        splits = isc_splits_for(len(sample_set), isc_splits)
        isc = isc_features_to_metric(sample_feats[layer["isc"]], splits=splits)
        result["inception_score_mean"] = isc["inception_score_mean"]
        result["inception_score_std"] = isc["inception_score_std"]
        result["isc_splits"] = splits
    if "prc" in metrics:
        a, b = (f[layer["prc"]].float().to(dev) for f in (sample_feats, ref_feats))
        prc = prc_features_to_metric(
            a, b, prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=10000, save_cpu_ram=True, verbose=verbose
        )
        result.update({k: prc[k] for k in ("precision", "recall", "f_score")})
    if "kid" in metrics:
        size = kid_subset_size_for(min(len(sample_set), len(ref_set)))
        a, b = (f[layer["kid"]].float() for f in (sample_feats, ref_feats))
        kid = kid_features_to_metric(a, b, kid_subsets=KID_SUBSETS, kid_subset_size=size, verbose=verbose)
        result["kid_mean"] = kid["kernel_inception_distance_mean"]
        result["kid_std"] = kid["kernel_inception_distance_std"]
        result["kid_subset_size"], result["kid_subsets"] = size, KID_SUBSETS

    precomputed = "fid" in metrics and ref_set.stats is not None
    report = {
        **result,
        "num_samples": len(sample_set),
        # none when FID took a file's statistics and no metric read the images beside them
        "num_reference": len(ref_set) if ref_feats is not None else None,
        "samples": os.path.abspath(samples),
        "reference": os.path.abspath(reference) if reference else None,
        "reference_stats": "precomputed" if precomputed else None,
        "reference_stats_images": reference_stats.num_images(ref_set.stats_record) if precomputed else None,
        "ref_size": crop,
        "feature_extractor": feature_extractor,
        **provenance,
        "torch_fidelity": fidelity.__version__,
    }
    if save_ref_stats:
        # a copy of statistics read from a file keeps its record, or its lack of one: this run
        # never saw the features behind them
        reference_stats.write(save_ref_stats, ref_stats, ref_set.stats_record if ref_set.stats else features)
    if out is not None:
        write_json_atomic(out, report, indent=2)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m meanflow.evaluate",
        allow_abbrev=False,
        description="FID / IS / precision-recall of generated images (torch-fidelity).",
    )
    p.add_argument("samples", help="image folder, .npz (arr_0 uint8 NHWC) or meanflow.generate output folder")
    p.add_argument(
        "--ref", help="reference: image folder, .npz with arr_0 and/or mu+sigma (default: none: isc only)"
    )
    p.add_argument(
        "--ref-size",
        metavar="N",
        type=int_at_least(1),
        help="read a reference folder of any image sizes (a class-folder tree of photos) through the "
        "ADM center crop to NxN that training uses; N is the samples' size (default: its images as they are)",
    )
    p.add_argument(
        "--metrics", help=f"comma-separated subset of {','.join(METRICS)} (default: fid,isc[,prc])"
    )
    p.add_argument("--out", help="results JSON, written atomically (default: none, printed only)")
    p.add_argument(
        "--inception-weights",
        "--extractor-weights",
        dest="weights",
        help=f"local {INCEPTION_FILE} (default: ${WEIGHTS_ENV}); for vgg16, its local weights file",
    )
    p.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="use a weights file whose sha256 is not the published one (results not comparable)",
    )
    p.add_argument(
        "--feature-extractor",
        default=INCEPTION,
        help="a torch-fidelity registered extractor (default: %(default)s)",
    )
    p.add_argument(
        "--save-ref-stats", help="write the reference's mu/sigma and extractor to .npz (default: none)"
    )
    p.add_argument(
        "--batch-size", type=int_at_least(1), default=64, help="images per extractor batch (default: 64)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (the default: cuda when available, else cpu), cpu, cuda or cuda:N",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each rank would repeat the whole job
        p.error("evaluate runs in one process: start it with python -m meanflow.evaluate, not torchrun")
    with errors_as_one_line(p):
        report = evaluate(
            args.samples,
            args.ref,
            metrics=args.metrics.split(",") if args.metrics else None,
            feature_extractor=args.feature_extractor,
            weights_path=args.weights,
            device=args.device,
            batch_size=args.batch_size,
            out=args.out,
            save_ref_stats=args.save_ref_stats,
            verbose=not args.quiet,
            allow_unverified_weights=args.allow_unverified_weights,
            ref_size=args.ref_size,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
