"""Atomic files and folders (checkpoints, manifests, exports, sample shards): a crash mid-write
never corrupts the last good file.

A file is written to a temporary file in the destination's directory (same filesystem),
flushed and fsynced, and only then renamed over the destination with ``os.replace`` (atomic
on POSIX); the directory is fsynced so the rename itself survives a power cut. A folder is
filled under a temporary sibling name, every file and folder in it is fsynced, and it is
renamed into place the same way. This module is the only place that does either, and it
knows where meanflow caches what it derives (``cache_dir``).

Everything written here gets the modes a plain ``open``/``mkdir`` would give under the
process umask (files ``0o666 & ~umask``, folders ``0o777 & ~umask``), not the private ones of
``mkstemp``/``mkdtemp``. A symbolic link where a file of ours belongs is replaced by the new
file (never written through); a directory there is an error.
"""

import argparse
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from contextlib import ExitStack, contextmanager

import torch


def cache_dir() -> str:
    """``$MEANFLOW_CACHE``, else ``$XDG_CACHE_HOME/meanflow`` (``~/.cache/meanflow``)."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "meanflow")
    return os.environ.get("MEANFLOW_CACHE") or default


def hash_file(digest, path: str):
    """Feed the bytes of ``path`` to ``digest`` (a hashlib object) in 4 MiB blocks; returns it."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest


def file_sha256(path: str) -> str:
    return hash_file(hashlib.sha256(), path).hexdigest()


def fsync_dir(path: str) -> None:
    """fsync a directory (its entries: a rename into it survives a power cut); no-op where the OS
    cannot open directories."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every file and folder below ``root`` (and ``root``)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def current_umask() -> int:
    """The process umask, read from ``/proc`` where Linux shows it: elsewhere it is set to read
    it back, and a file another thread creates in that moment gets umask 0 (writable by all)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_umask_modes(root: str) -> None:
    """Give ``root`` and everything below it (links excepted) the modes ``open``/``mkdir``
    would have under the umask: ``mkdtemp`` folders are 0700, and some writers (safetensors)
    create 0600 files, which would make an export private to its writer."""
    umask = current_umask()
    os.chmod(root, 0o777 & ~umask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            entry = os.path.join(dirpath, name)
            if not os.path.islink(entry):
                os.chmod(entry, (0o777 if os.path.isdir(entry) else 0o666) & ~umask)


class NoSpaceError(OSError):
    """The disk (or quota) filled up while writing ``path``; ``path`` was left as it was."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, f"no space left writing {path} (left as it was)", path)

    def __str__(self):
        return self.strerror


def _out_of_space(error: BaseException) -> bool:
    """Whether ``error`` or an exception it was raised from is ENOSPC / EDQUOT: torch.save
    reports a full disk as its own ``enforce fail ... unexpected pos`` RuntimeError, raised
    while handling the OSError of the failed write."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


TEMPORARY_SUFFIX = ".tmp"
PREVIOUS_SUFFIX = ".old"  # publish_directory's holder of the folder it replaces


def _temporary_pattern(name_pattern: str, suffixes=(TEMPORARY_SUFFIX,)) -> re.Pattern:
    """The names ``atomic_write`` (and ``publish_directory``) give their temporaries for
    destinations whose names match the regular expression ``name_pattern``: ``.NAME.`` +
    mkstemp's 8 random characters + one of ``suffixes`` (group 1)."""
    ends = "|".join(map(re.escape, suffixes))
    return re.compile(rf"\.(?:{name_pattern})\.[a-z0-9_]{{8}}({ends})")


def remove_stale_temporaries(directory: str, name_pattern: str) -> list[str]:
    """Remove the temporaries a killed ``atomic_write`` left in ``directory`` for destinations
    matching ``name_pattern`` (only regular files named exactly as ``atomic_write`` names them;
    a half-written checkpoint may be as large as a whole one). Returns the removed paths.
    Only call it where no other process writes those files."""
    if not os.path.isdir(directory):
        return []
    pattern = _temporary_pattern(name_pattern)
    removed = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            removed.append(entry.path)
    return removed


@contextmanager
def exclusive_folder(path: str, program: str, argument: str):
    """Hold the folder ``path`` (``program``'s ``argument``; made when missing) for this run:
    another run started on it meanwhile is refused, naming both (two runs on one folder would
    each rewrite the other's files and remove its temporaries). The lock is the kernel's
    (``flock`` on the folder), so a killed run leaves none behind; where the file system has
    none (some network mounts) the run goes on without it. The folders this call made are
    removed again if the run leaves them empty: a refused run leaves no trace."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{argument} {path!r} is not a directory")
    made, missing = [], os.path.abspath(path)
    while not os.path.exists(missing):
        made.append(missing)
        missing = os.path.dirname(missing)
    folder = _lock_folder(path, program, argument)
    try:
        yield
    finally:
        # Removed while still held: released first, another run could lock the folder in
        # between and then hold one that no longer exists, beside a third on a new one.
        for created in made:  # the deepest first, while empty
            try:
                os.rmdir(created)
            except OSError:
                break
        os.close(folder)  # releases the lock


def _lock_folder(path: str, program: str, argument: str) -> int:
    """An open descriptor of the folder ``path`` holding its ``flock``; retried while the
    folder is removed under us (a run ending removes the folder it made) until the lock is on
    the folder that ``path`` names."""
    while True:
        os.makedirs(path, exist_ok=True)
        try:
            folder = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        held = _lock(folder)
        if held is False:
            os.close(folder)
            raise ValueError(
                f"{argument} {path!r} is in use by another {program} run; wait for it to end or "
                f"use another {argument}"
            )
        try:
            if os.path.samestat(os.fstat(folder), os.stat(path)):
                if held is None:  # a shared disk mounted without flock (some Lustre and NFS mounts)
                    warnings.warn(
                        f"{argument} {path!r} is on a file system without flock: another {program} "
                        f"run started on it would not be refused; start only one",
                        stacklevel=4,
                    )
                return folder
        except FileNotFoundError:
            pass
        os.close(folder)


def refuse_directory(path: str) -> None:
    """A ``ValueError`` when ``path`` (where we write a file) is a directory."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise ValueError(f"{path} is a directory, where meanflow writes a file: move it away")


def _symlink_error(path: str) -> ValueError:
    return ValueError(
        f"{path} is a symbolic link: meanflow writes its own file there and never writes through "
        f"a link; remove the link"
    )


def refuse_symlink(path: str) -> None:
    """A ``ValueError`` when ``path`` (where we write a file of our own) is a symbolic link."""
    if os.path.islink(path):
        raise _symlink_error(path)


def open_for_append(path: str):
    """``open(path, "a")`` that never follows a symbolic link at ``path`` (a ``ValueError``)."""
    refuse_directory(path)
    try:
        return open(path, "a", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW, 0o666))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _symlink_error(path) from e
        raise


def atomic_write(path: str, write, durable: bool = True) -> None:
    """``write(f)`` fills a binary file object that becomes ``path`` only once complete.
    ``durable=False`` skips the fsyncs: still never a half-written ``path`` after a crash of
    the process, but the data may be lost in a power cut (for many small derived files).
    A full disk is a ``NoSpaceError`` naming ``path``; the temporary is removed either way."""
    refuse_directory(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TEMPORARY_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here: closed whatever fails below
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600: private checkpoints
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a symbolic link at path, never writes through it
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _out_of_space(e):
            raise NoSpaceError(path) from e
        raise
    if durable:
        fsync_dir(directory)


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch_file(path: str, map_location="cpu", what: str = "checkpoint", mmap: bool = False):
    """``torch.load(path, weights_only=True)`` (``mmap``: tensors read only when used); a file
    torch cannot read is a one-line ``ValueError`` naming it and saying why: torch's first line
    that is not its advice to load with ``weights_only=False``, which would run any code the
    file holds."""
    try:
        # DiT's and SiT's train.py save their command line as "args", an argparse.Namespace:
        # plain data, which the weights-only unpickler refuses unless named
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        lines = [line.split(UNPICKLER_ERROR)[-1].strip() for line in str(e).splitlines()]
        reasons = [line for line in lines if line and not any(a in line for a in UNSAFE_LOAD_ADVICE)]
        reason = reasons[0].split(" Please use")[0] if reasons else type(e).__name__  # not: allow it
        raise ValueError(f"cannot read {what} {str(path)!r} (corrupt, or not a torch file): {reason}") from e


UNPICKLER_ERROR = "WeightsUnpickler error:"
UNSAFE_LOAD_ADVICE = ("Weights only load failed", "weights_only", "torch.load")


def load_safetensors(path: str, what: str = "weights") -> dict:
    """``safetensors.torch.load_file(path)``; a file it cannot read (cut short by an interrupted
    copy, or not safetensors) is a one-line ``ValueError`` naming it, as ``load_torch_file`` does
    for torch files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except SafetensorError as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"cannot read {what} {str(path)!r} (corrupt, truncated or not safetensors): {reason}"
        ) from e


def atomic_copy(src: str, path: str) -> None:
    def write(f):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)

    atomic_write(path, write)


def write_json_atomic(path: str, obj, indent=None) -> None:
    """``obj`` as JSON (and a final newline) to ``path``, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=indent) + "\n").encode()))


def publish_directory(tmp: str, path: str) -> None:
    """Make the filled folder ``tmp`` durable, with the umask's modes, and rename it to ``path``
    (a sibling), replacing an existing ``path`` only once ``tmp`` is complete. Where the system
    can, the two folders swap in one step, so that no moment has neither; elsewhere a kill
    between the two renames leaves the previous folder in ``.NAME.*.old/d``, which
    ``recover_interrupted_publish`` puts back."""
    parent = os.path.dirname(os.path.abspath(path))
    apply_umask_modes(tmp)
    fsync_tree(tmp)
    if not os.path.exists(path):
        os.rename(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # the previous folder, now under the temporary name
    else:
        # held: another process's recovery would put the previous folder back between the renames
        with _held_temporary(os.path.abspath(path), PREVIOUS_SUFFIX) as old:
            os.rename(path, os.path.join(old, "d"))
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(parent)


@contextmanager
def _held_temporary(path: str, suffix: str, tries: int = 5):
    """A new temporary sibling of ``path`` (``.NAME.`` + mkdtemp's 8 characters + ``suffix``),
    marked in use while this lasts with the kernel's ``flock`` on it: ``recover_interrupted_publish``
    in another process then refuses instead of removing it, and the kernel drops the mark when
    this process dies, so what a killed export left is still cleaned up. Between ``mkdtemp`` and
    the lock such a recovery may take the new folder for a leftover and remove it: then another
    is made."""
    parent, name = os.path.split(path)
    for _ in range(tries):
        tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=suffix, dir=parent)
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_at(fd, tmp):
                yield tmp
                return
        finally:
            os.close(fd)
    raise OSError(
        f"{path}: other processes removed {tries} temporaries beside it before this one could hold them"
    )


def _still_at(fd: int, path: str) -> bool:
    """Whether the folder open as ``fd`` is still the one at ``path``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _lock(fd: int) -> bool | None:
    """Take the kernel's ``flock`` on the folder open as ``fd``: True when this process holds it
    now, False when another process does (``_held_temporary``, ``exclusive_folder``), None where
    the file system has no ``flock`` (the caller goes on without the lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return False if e.errno in (errno.EAGAIN, errno.EACCES) else None
    return True


def _held_elsewhere(fd: int) -> bool:
    """Whether another process holds the folder open as ``fd``; otherwise this one holds it now
    (or the file system has no ``flock``)."""
    return _lock(fd) is False


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


@functools.cache
def _renameat2():
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def _exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False
    where the C library, kernel or file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


def recover_interrupted_publish(path: str) -> list[str]:
    """Undo what a killed ``atomic_directory`` left beside ``path``: the previous folder put back
    when ``path`` is missing (killed between the two renames), and its temporaries removed
    (``.NAME.`` + mkdtemp's 8 characters + ``.tmp`` or ``.old``: names only we give). Each step
    is a warning naming the paths; returns them. A temporary that a live export holds
    (``_held_temporary``: it is filling it now) is no leftover: that is a one-line ``ValueError`` naming
    ``path``, and nothing is removed."""
    parent, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(parent):
        return []
    leftovers = _temporary_pattern(re.escape(name), (TEMPORARY_SUFFIX, PREVIOUS_SUFFIX))
    notes = []
    with ExitStack() as held:
        found = []
        for entry in sorted(os.scandir(parent), key=lambda e: e.name):
            match = leftovers.fullmatch(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except FileNotFoundError:  # its export has just finished with it
                continue
            held.callback(os.close, fd)
            if _held_elsewhere(fd):
                raise ValueError(
                    f"{path} is being written by another process right now ({entry.path} is its "
                    "temporary): wait for it to end, or write another folder"
                )
            found.append((entry, match))
        for entry, match in found:
            previous = os.path.join(entry.path, "d")
            if match.group(1) == PREVIOUS_SUFFIX and not os.path.lexists(path) and os.path.isdir(previous):
                os.rename(previous, path)
                notes.append(f"put back {path} from {previous}, where an interrupted export left it")
            try:
                shutil.rmtree(entry.path)
            except FileNotFoundError:  # the previous folder an export is removing right after its swap
                pass
            notes.append(f"removed {entry.path}, left by an interrupted export")
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return notes


# Written into every folder atomic_directory publishes: the list of what it wrote. Only such a
# folder is ever replaced, and only while it holds nothing else (config.json cannot tell: every
# training run and every diffusers/transformers model folder holds one too).
EXPORT_MARKER = ".meanflow_export.json"


def _tree_entries(root: str) -> list[str]:
    """Every file, folder and link below ``root``, as sorted relative paths (links not followed)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        entries += [os.path.normpath(os.path.join(rel, name)) for name in dirnames + filenames]
    return sorted(entries)


def _exported_entries(path: str) -> set | None:
    """What the export at ``path`` wrote, from its marker; None when ``path`` has no valid one."""
    marker = os.path.join(path, EXPORT_MARKER)
    if os.path.islink(marker) or not os.path.isfile(marker):
        return None
    try:
        with open(marker) as f:
            files = json.load(f).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return set(files) if isinstance(files, list) else None


def check_replaceable(path: str) -> None:
    """A ``ValueError`` naming ``path`` unless it is absent, an empty folder, or a previous
    export of ours that holds only what that export wrote."""
    if os.path.islink(path):
        raise ValueError(f"{path} is a symbolic link: refusing to replace it")
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f"{path} exists and is not a directory: refusing to overwrite it")
    entries = _tree_entries(path)
    if not entries:
        return
    written = _exported_entries(path)
    if written is None:
        raise ValueError(
            f"{path} is a non-empty folder that meanflow did not export (no {EXPORT_MARKER}): "
            f"refusing to overwrite it; choose a new or empty folder"
        )
    foreign = [e for e in entries if e not in written and e != EXPORT_MARKER]
    if foreign:
        listing = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"{path} holds files its export did not write ({listing}): refusing to overwrite it; "
            f"move them out or choose another folder"
        )


@contextmanager
def atomic_directory(path: str):
    """Yields a temporary sibling directory to fill; on success it becomes ``path``, with an
    ``EXPORT_MARKER`` listing what it holds.

    An existing ``path`` is replaced only when it is empty or a previous export (its marker
    lists everything in it); anything else there is the user's and is refused, never deleted."""
    path = os.path.abspath(path)
    recover_interrupted_publish(path)
    check_replaceable(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = None
    try:
        # held: not a killed export's leftover to another export started meanwhile
        with _held_temporary(path, TEMPORARY_SUFFIX) as tmp:
            yield tmp
            written = _tree_entries(tmp)  # before the marker exists: it does not list itself
            with open(os.path.join(tmp, EXPORT_MARKER), "w") as f:
                json.dump({"written_by": "meanflow", "files": written}, f, indent=1)
                f.write("\n")
            check_replaceable(path)  # again: the user may have put a file there meanwhile
            publish_directory(tmp, path)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if _out_of_space(e):
            raise NoSpaceError(path) from e
        raise
