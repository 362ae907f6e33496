"""The verdicts of an image-folder scan kept between runs: one JSON file per tree, each image's
``[size, mtime_ns, status, info, format]`` by its path below ROOT, so that a re-scan only
opens new or changed files (:func:`~meanflow.data.image_folder.scan_image_folder`)."""

import hashlib
import json
import os
import warnings

from ..checkpoint import cache_dir, write_json_atomic

SCAN_VERSION = 1


def default_cache_path(root: str) -> str:
    """``ROOT/.meanflow_scan.json`` where ROOT is writable, else one in :func:`cache_dir`."""
    root = os.path.abspath(root)
    if os.access(root, os.W_OK):
        return os.path.join(root, ".meanflow_scan.json")
    digest = hashlib.sha1(root.encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), f"scan-{digest}.json")


def read_scan_cache(path, root) -> dict:
    """The cached entries of ``root``; none for a cache of another tree or format, and none,
    with a warning, for one that cannot be read (it lies in the user's folder: anything may
    have written it), which the scan then rewrites."""
    if not path or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            cache = json.load(f)
        if cache.get("version") != SCAN_VERSION or cache.get("root") != root:
            return {}  # an older format, or the tree was moved: scan again
        entries = cache["entries"]
        if not all(isinstance(v, list) and len(v) == 5 for v in entries.values()):
            raise ValueError("an entry is not [size, mtime_ns, status, info, format]")
        return entries
    except (OSError, ValueError, KeyError, AttributeError):
        warnings.warn(f"ignoring unreadable scan cache {path!r}", stacklevel=3)
        return {}


def write_scan_cache(path, root, entries: dict) -> None:
    write_json_atomic(path, {"version": SCAN_VERSION, "root": root, "entries": entries})
