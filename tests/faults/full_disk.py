"""A full disk, simulated: files that take a few bytes more, then fail with ENOSPC."""

import errno
import os


class FullDiskFile:
    """A file object that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room):
        self._f, self._room = f, room

    def write(self, data):
        if len(data) > self._room:
            self._f.write(bytes(data[: self._room]))
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_the_disk(monkeypatch, room=4096, after=0):
    """Every file ``os.fdopen`` opens (``atomic_write``'s temporaries) after the first ``after``
    takes ``room`` bytes, then fails with ENOSPC."""
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        opened.append(fd)
        f = real_fdopen(fd, *args, **kwargs)
        return f if len(opened) <= after else FullDiskFile(f, room)

    monkeypatch.setattr(os, "fdopen", fdopen)
