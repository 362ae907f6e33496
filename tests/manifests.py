"""Editing a folder's manifest.json in place, as a user, an older release or an interrupted run
would have left it: the tests of latent folders, prepare_latents and generate share it."""

import json
import os


def edit_manifest(folder, drop=(), **changes) -> dict:
    """Rewrite ``folder``'s manifest.json without the keys ``drop`` and with ``changes`` set;
    returns the manifest as written."""
    path = os.path.join(folder, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    for key in drop:
        del manifest[key]
    manifest.update(changes)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return manifest
