"""Reference statistics files, as ``python -m meanflow.evaluate --save-ref-stats`` writes them:
the ``mu`` and ``sigma`` of a reference's FID features, and what made those features.

FID between statistics of two different feature spaces (another extractor, the same extractor
with other weights, another of its layers) is a number that means nothing, and nothing shows it
whenever the two dimensions agree. So a file written here also records the extractor's name,
the layer its FID features come from and the sha256 of the weights file the run used (``""``:
it was given none), as plain string members that ``np.load`` reads with
``allow_pickle=False``. A run that takes such a file as its reference and whose own record
differs is refused. Weights given as a path that is not a file (a folder, a name a registered
extractor resolves itself) cannot be hashed: the record says ``unhashed: PATH is not a file``,
so such statistics match only a run given the same path, which is told that the weights
themselves went unchecked. The torch-fidelity version that ran the extractor is recorded too
(``torch_fidelity``), for the reader: it is not compared. Files without the record (ADM's
published reference batches, statistics written before it existed) are used as they are:
nothing can be checked about them.

Statistics of a reference read through the ADM center crop (``--ref-size N``) also record
``crop_size`` (``"N"``): they describe ``N x N`` images, and FID between them and samples of
another size means nothing even though the extractor resizes both, so such a file is refused
as the reference of samples that are not ``N x N`` (:func:`check_crop_size`). The member is
optional: a record without it (statistics of images taken as they were) reads as before.
Statistics of images taken as they were record their size instead, as ``image_size``
(``"WxH"``, width first as every message prints a size), and are refused the same way for
samples of another size (:func:`check_image_size`); a record without it (written before it
was kept) reads as before.

A file written here also records how many images its statistics come from, as ``num_images``
(``"N"``), which ``meanflow.evaluate`` reports beside an FID taken from the file
(``reference_stats_images``); files without it (ADM's reference batches, whose statistics
come from a larger set than the images they hold; files written before it was kept) report
None.
"""

import os
import re
import sys
import zipfile

import numpy as np

from .checkpoint import atomic_write, file_sha256

STATS = ("mu", "sigma")
RECORD = ("feature_extractor", "feature_layer", "weights_sha256")
CROP = "crop_size"  # present only in the record of statistics of center crops
SIZE = "image_size"  # "WxH" of images read uncropped; absent from files written before it was kept
VERSION = "torch_fidelity"  # absent from files written before it was recorded
COUNT = "num_images"  # the images behind the statistics; absent from files written before it was kept
OPTIONAL = (CROP, SIZE, VERSION, COUNT)
UNHASHED = "unhashed: "


def record(
    feature_extractor: str,
    feature_layer: str,
    provenance: dict,
    weights_path=None,
    crop_size=None,
    fidelity_version=None,
    image_size=None,
    num_images=None,
) -> dict:
    """What identifies a run's FID features. ``provenance["weights_sha256"]`` is the hash
    ``meanflow.evaluate`` verified for a built-in extractor; an extractor registered by the user
    reads its own ``weights_path``, and that file's hash stands for it (``unhashed: ...`` when
    it is not a file). ``crop_size``: the reference's images were center-cropped to it;
    ``image_size``: ``(H, W)`` of its images read uncropped; ``fidelity_version``:
    torch-fidelity's; ``num_images``: how many images the statistics are of (module
    docstring)."""
    weights_sha256 = provenance.get("weights_sha256")
    if weights_sha256 is None and weights_path:
        weights_sha256 = (
            file_sha256(weights_path) if os.path.isfile(weights_path) else _unhashed(weights_path)
        )
    found = {
        "feature_extractor": str(feature_extractor),
        "feature_layer": str(feature_layer),
        "weights_sha256": weights_sha256 or "",
    }
    if crop_size is not None:
        found[CROP] = str(int(crop_size))
    elif image_size is not None:
        h, w = image_size
        found[SIZE] = f"{int(w)}x{int(h)}"
    if fidelity_version is not None:
        found[VERSION] = str(fidelity_version)
    if num_images is not None:
        found[COUNT] = str(int(num_images))
    return found


def _unhashed(weights_path: str) -> str:
    shown = os.path.abspath(weights_path) if os.path.exists(weights_path) else weights_path
    return f"{UNHASHED}{shown} is not a file"


def read(data, path: str, role: str):
    """``(stats, record)`` of an open ``.npz`` (``np.load``'s): ``stats`` None without both
    ``mu`` and ``sigma``, ``record`` None for a file without one. A record with a member
    missing or not a string is refused: it cannot vouch for the statistics, and using them
    unchecked would hide that."""
    names = set(data.files)
    if not set(STATS) <= names:
        return None, None
    stats = _read_stats(data, path, role)
    if names.isdisjoint((*RECORD, *OPTIONAL)):
        return stats, None
    found = {}
    for key in (*RECORD, *OPTIONAL):
        value = data[key] if key in names else None
        if key in OPTIONAL and value is None:
            continue
        if value is None or value.dtype.kind != "U" or value.ndim != 0:
            raise ValueError(
                f"{role} {path} has a damaged feature record ({key} missing or not a string): "
                "recompute the statistics with --save-ref-stats"
            )
        found[key] = str(value[()])
    for key, what in ((CROP, "a size"), (COUNT, "a count")):
        if key in found and not (found[key].isascii() and found[key].isdigit() and int(found[key]) >= 1):
            raise ValueError(
                f"{role} {path} has a damaged feature record ({key} {found[key]!r} is not {what}): "
                "recompute the statistics with --save-ref-stats"
            )
    if SIZE in found and re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", found[SIZE], re.ASCII) is None:
        raise ValueError(
            f"{role} {path} has a damaged feature record ({SIZE} {found[SIZE]!r} is not WxH): "
            "recompute the statistics with --save-ref-stats"
        )
    return stats, found


def _read_stats(data, path: str, role: str) -> dict:
    """``mu`` ``(D,)`` and ``sigma`` ``(D, D)`` as float64, refused unless real and finite: a
    NaN or infinite member makes FID NaN or infinite, a complex one would lose its imaginary
    part in the cast, and either would be a number reported without an error."""
    try:
        mu, sigma = (data[k] for k in STATS)
    except ValueError as e:  # an object array, which np.load never unpickles here
        raise ValueError(f"{role} {path}: mu and sigma must be numeric arrays: {e}") from e
    d = mu.shape[0] if mu.ndim == 1 else None
    if mu.dtype.kind not in "fiu" or sigma.dtype.kind not in "fiu" or d is None or sigma.shape != (d, d):
        raise ValueError(
            f"{role} {path}: mu and sigma must be real arrays of shapes (D,) and (D, D), got "
            f"{mu.dtype} {mu.shape} and {sigma.dtype} {sigma.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{role} {path}: mu or sigma holds NaN or infinite values: recompute the statistics")
    return {"mu": mu.astype(np.float64), "sigma": sigma.astype(np.float64)}


def crop_size(found) -> int | None:
    """The center-crop size a ``read`` record holds, or None (no record, or images uncropped)."""
    return int(found[CROP]) if found and CROP in found else None


def num_images(found) -> int | None:
    """How many images a ``read`` record says made the statistics, or None (not recorded)."""
    return int(found[COUNT]) if found and COUNT in found else None


def image_size(found) -> tuple[int, int] | None:
    """``(H, W)`` of the uncropped images a ``read`` record says made the statistics, or None."""
    if not found or SIZE not in found:
        return None
    w, h = found[SIZE].split("x")
    return int(h), int(w)


def check_image_size(path: str, recorded, samples_size) -> None:
    """Refuse statistics at ``path`` of ``recorded`` ``(H, W)`` images (None: no size recorded,
    nothing to check) for samples of another ``samples_size``: as for center crops, the
    extractor resizes both, so nothing else would show that they describe other images."""
    if recorded is None or tuple(recorded) == tuple(samples_size):
        return
    (rh, rw), (h, w) = recorded, samples_size
    folder = f", or from an image folder with --ref-size {w}" if h == w else ""
    raise ValueError(
        f"--ref {path} holds statistics of {rw}x{rh} images and the samples are {w}x{h}: FID "
        f"between images of two sizes means nothing, though the extractor resizes both; recompute "
        f"them with --save-ref-stats from a reference of {w}x{h} images{folder}"
    )


def check_crop_size(reference: str, crop: int, samples_size, recorded: bool = False) -> None:
    """Refuse samples of ``samples_size`` ``(H, W)`` against a reference of ``crop x crop``
    center crops (given by ``--ref-size``, or ``recorded`` by its statistics): the extractor
    resizes both to its input, so nothing else would show that they describe other images."""
    if tuple(samples_size) == (crop, crop):
        return
    h, w = samples_size
    source = f"statistics {reference} were computed from" if recorded else f"{reference} is read as"
    if h != w:
        fix = "the center crop is square: score square samples"
    elif recorded:
        fix = f"recompute them from the reference images with --ref-size {w} --save-ref-stats"
    else:
        fix = f"give --ref-size {w}"
    raise ValueError(
        f"the samples are {w}x{h} images and the reference {source} {crop}x{crop} center crops "
        f"(--ref-size {crop}): FID between images of two sizes means nothing, though the extractor "
        f"resizes both; {fix}"
    )


def check(path: str, recorded, current: dict, verbose: bool = True) -> None:
    """Refuse statistics at ``path`` whose ``recorded`` features are not this run's
    ``current`` ones; without a record, say (when ``verbose``) that they go unchecked."""
    if recorded is None:
        if verbose:
            print(
                f"reference statistics {path} record no feature extractor (another tool's or an older "
                f"file): cannot check that they are {current['feature_extractor']} features",
                file=sys.stderr,
            )
        return
    differ = [k for k in RECORD if recorded[k] != current[k]]
    if differ:
        shown = "; ".join(f"{k} {_show(recorded[k])} there, {_show(current[k])} in this run" for k in differ)
        raise ValueError(
            f"reference statistics {path} come from other features than this run's ({shown}): FID "
            "between them means nothing. Recompute them from the reference images with this extractor "
            "and weights (--save-ref-stats), or run with the extractor and weights file that made them"
        )
    if verbose and recorded["weights_sha256"].startswith(UNHASHED):
        print(
            f"reference statistics {path} record {recorded['weights_sha256']!r} for their weights, as "
            "this run does: nothing checks that they are the same weights",
            file=sys.stderr,
        )


def check_shape(ref_stats: dict, stats: dict, feature_extractor: str) -> None:
    """Refuse reference statistics of another dimension than this run's features (the one
    mismatch that files without a record still show)."""
    if ref_stats["mu"].shape != stats["mu"].shape or ref_stats["sigma"].shape != stats["sigma"].shape:
        raise ValueError(
            f"reference statistics have dimension {ref_stats['mu'].shape}, the {feature_extractor} "
            f"features {stats['mu'].shape}: they come from another feature extractor"
        )


def _show(value: str) -> str:
    return repr(value) if value else "(no weights file)"


def write(path: str, stats: dict, found=None) -> None:
    """``mu``, ``sigma`` and, unless ``found`` is None, the record, atomically at ``path``."""
    members = {k: stats[k] for k in STATS}
    if found is not None:
        members.update({k: np.str_(found[k]) for k in (*RECORD, *OPTIONAL) if k in found})
    atomic_write(path, lambda f: np.savez(f, **members))


def is_stats(path: str) -> bool:
    """An ``.npz`` of exactly what ``write`` puts there (with or without the record): the only
    ``.npz`` that ``--save-ref-stats`` may replace."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    members = {f"{k}.npy" for k in STATS}
    recorded = members | {f"{k}.npy" for k in RECORD}
    return names == members or recorded <= names <= recorded | {f"{k}.npy" for k in OPTIONAL}
