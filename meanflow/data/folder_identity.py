"""What a checkpoint records of the image folder a run trained on, and what a resume compares.

Replace some images of a class folder by others (a re-download, a cleaned copy, files
renamed) and the folder still holds as many images of the same classes: every other check
passes, and the loader position a checkpoint saved would point at other samples. The record
(:func:`folder_identity`) is made from what the scan already knows, without reading an
image again: a sha256 over the class names and, in the loader's order, each image's path
below ROOT, size in bytes and label; and a 4-byte digest of the same per image, so that a
resume can name the images that differ.

Counted: a file replaced by one of another size, renamed, moved to another class, added or
removed. Not counted: ROOT itself (a copy of the folder elsewhere, or the same folder
reached through a symlink, is the same data; ``data.path`` is compared on its own, by its
real path, with the rest of the run's options), modification times (a copy changes them),
and an image replaced by another of exactly the same size and name (that would need every
image read again).
"""

import hashlib
import os

import numpy as np
import torch

KIND = "image_folder"
# Images named in a message about the ones that differ.
NAMED = 3


def _entry(path: str, size: int, label: int) -> bytes:
    # "/" whatever os.sep is, and separators no path holds: one listing, one byte string.
    return f"{path.replace(os.sep, '/')}\0{size}\0{label}\n".encode()


def image_sizes(index) -> np.ndarray:
    """The size in bytes of each image of ``index`` (a :class:`FolderIndex`): the scan's, or
    read with ``os.stat`` for an index made without them."""
    if getattr(index, "sizes", None) is not None:
        return np.asarray(index.sizes, dtype=np.int64)
    return np.asarray([os.stat(index.path(i)).st_size for i in range(len(index))], dtype=np.int64)


def folder_identity(index) -> dict:
    """The record of ``index`` (a :class:`FolderIndex`) a checkpoint keeps (module docstring):
    ``{"kind", "sha256", "images", "classes", "image_digests"}``, the last an int32 tensor of one
    digest per image (4 bytes each: 5 MB for ImageNet's 1.28 million)."""
    whole = hashlib.sha256()
    for name in index.classes:
        whole.update(f"{name}\0".encode())
    whole.update(b"\n")
    digests = np.empty(len(index), dtype="<u4")
    sizes, labels = image_sizes(index).tolist(), index.labels.tolist()
    for i, (path, size, label) in enumerate(zip(index.files, sizes, labels)):
        entry = _entry(path, size, label)
        whole.update(entry)
        digests[i] = int.from_bytes(hashlib.blake2b(entry, digest_size=4).digest(), "little")
    return {
        "kind": KIND,
        "sha256": whole.hexdigest(),
        "images": len(index),
        "classes": len(index.classes),
        "image_digests": torch.from_numpy(digests.view(np.int32).copy()),
    }


def folder_changes(recorded: dict, now: dict, files: list) -> list:
    """What differs between the image folder a checkpoint recorded (``recorded``, a
    :func:`folder_identity`) and this one (``now``, whose images are ``files``), each in words
    naming a few images. A record of another kind (a latent folder's, MNIST's) or none is
    not compared: ``[]``."""
    if not isinstance(recorded, dict) or recorded.get("kind") != KIND:
        return []
    if recorded.get("sha256") == now["sha256"]:
        return []
    then_count, now_count = recorded.get("images"), now["images"]
    changes = []
    if then_count != now_count:
        changes.append(f"{then_count} images then, {now_count} now")
    if recorded.get("classes") != now["classes"]:
        changes.append(f"{recorded.get('classes')} classes then, {now['classes']} now")
    then_digests = recorded.get("image_digests")
    if then_digests is not None and len(then_digests) == then_count:
        then_set = set(np.asarray(then_digests).tolist())
        now_digests = np.asarray(now["image_digests"]).tolist()
        differ = [files[i] for i, d in enumerate(now_digests) if d not in then_set]
        gone = len(then_set - set(now_digests))
        if differ:
            more = len(differ) - NAMED
            shown = ", ".join(differ[:NAMED]) + (f" and {more} more" if more > 0 else "")
            changes.append(
                f"{len(differ)} of {now_count} images differ from those it trained on (another name, "
                f"size or class), e.g. {shown}"
            )
        if gone and not differ:
            changes.append(f"missing now: {gone} of the {then_count} images it trained on")
    if not changes:  # a listing in another order, or a record without its per-image digests
        then_sha = str(recorded.get("sha256"))[:12]
        changes.append(f"the images, sizes and labels: sha256 {then_sha} then, {now['sha256'][:12]} now")
    return changes


class FolderIdentity:
    """``data_identity`` and ``data_changes(recorded)`` for a loader over ``self.index`` (a
    :class:`FolderIndex`): what :func:`meanflow.train_state.check_same_data` compares. The
    record is made once, when first asked for (a checkpoint is written, a resume compares)."""

    @property
    def data_identity(self) -> dict:
        if getattr(self, "_data_identity", None) is None:
            self._data_identity = folder_identity(self.index)
        return self._data_identity

    def data_changes(self, recorded: dict) -> list:
        """What differs between the image folder a checkpoint recorded and this one."""
        return folder_changes(recorded, self.data_identity, self.index.files)
