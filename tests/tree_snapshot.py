"""What a folder holds, to compare before and after a refused or failed run: nothing we did
not mean to write may change."""

import os


def tree_snapshot(root, folders: bool = False, times: bool = False) -> dict:
    """``{path relative to root: its bytes}`` of every file below ``root``; ``times``: the
    bytes with the modification time in ns; ``folders``: every folder too, as None."""
    found = {}
    for folder, subfolders, names in os.walk(root):
        if folders:
            found.update({os.path.relpath(os.path.join(folder, name), root): None for name in subfolders})
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            found[os.path.relpath(path, root)] = (data, os.stat(path).st_mtime_ns) if times else data
    return found
