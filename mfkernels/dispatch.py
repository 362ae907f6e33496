"""Backend choice for every op: explicit argument, then ``MFK_BACKEND``, then auto.

Backends (docs/design.md section 2): ``reference`` (plain torch, any device, float64; the oracle),
``triton`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``), ``cuda`` and
``cpu`` (the csrc extension, where built). Auto picks ``triton`` for CUDA tensors, ``cpu``
for CPU tensors when the extension is built, else ``reference``. When the chosen backend
cannot run a call (not built, no such kernel, dtype or shape outside its support) the call
falls back, with a one-time warning, to the device's automatic backend if that one can run
it (``cuda`` has no attention kernel: attention then runs on ``triton``), else to
``reference``: never a crash.

Each backend is a module with an ``OPS`` table (``mfkernels/backends``), read here, in one
place, the first time the backend is asked for. The custom ops (``ops.py``) call :func:`call`
inside their eager bodies, so the environment variable is read at run time and never inside
a ``torch.compile`` trace.
"""

import contextlib
import importlib
import os
from collections.abc import Callable

import torch

from ._warnings import warn_at_caller
from .backends import Implementation, always_supported

BACKENDS = ("reference", "triton", "cuda", "cpu")
ENV_VAR = "MFK_BACKEND"

# Where each backend's table lives: (module under mfkernels.backends, its attribute).
_TABLE_SOURCES = {
    "reference": ("torch_ops", "OPS"),
    "triton": ("triton", "OPS"),
    "cpu": ("csrc", "CPU_OPS"),
    "cuda": ("csrc", "CUDA_OPS"),
}

_tables: dict[str, dict[str, Implementation]] = {}
_warned: set[tuple[str, str, str]] = set()
_recorders: list[dict[str, set[str]]] = []


def _table(backend: str) -> dict[str, Implementation]:
    """Backend ``backend``'s ``{op: Implementation}`` (a copy: :func:`substitute` edits it)."""
    table = _tables.get(backend)
    if table is None:
        module, attribute = _TABLE_SOURCES[backend]
        table = dict(getattr(importlib.import_module(f"mfkernels.backends.{module}"), attribute))
        _tables[backend] = table
    return table


def _missing(op: str, backend: str) -> str:
    """Why ``backend`` has no ``op``: a backend whose whole table is empty says why, if it can."""
    why = None
    if not _table(backend):
        module, attribute = _TABLE_SOURCES[backend]
        empty_because = getattr(importlib.import_module(f"mfkernels.backends.{module}"), "EMPTY_BECAUSE", {})
        why = empty_because.get(attribute)
    return f"is not available for {op}" + (f" ({why})" if why else "")


def lookup(op: str, backend: str) -> Implementation | None:
    """What ``backend`` runs for ``op``, or None where it has no implementation."""
    return _table(backend).get(op)


@contextlib.contextmanager
def substitute(op: str, backend: str, fn: Callable, unsupported: Callable[..., str | None] | None = None):
    """Inside the block, ``op`` on ``backend`` runs ``fn`` (with ``unsupported`` as its support
    check): a test's stand-in op, or a wrapper around :func:`lookup`'s implementation that
    counts its calls. The previous implementation, if any, comes back afterwards."""
    table = _table(backend)
    previous = table.get(op)
    table[op] = Implementation(fn, unsupported or always_supported)
    try:
        yield previous
    finally:
        if previous is None:
            table.pop(op, None)
        else:
            table[op] = previous


def forget_warnings(*ops: str) -> None:
    """Let the fallback warnings of ``ops`` (all ops when none is named) be given again."""
    for key in [key for key in _warned if not ops or key[0] in ops]:
        _warned.discard(key)


@contextlib.contextmanager
def record_backends():
    """Which backend each op dispatched while inside really ran on (after any fallback):
    ``{op: {backend, ...}}``, filled as calls resolve. Benchmarks use it to mark a timing whose
    ops did not all run on the backend it names."""
    seen: dict[str, set[str]] = {}
    _recorders.append(seen)
    try:
        yield seen
    finally:
        _recorders.remove(seen)


def check_backend(backend: str | None) -> str:
    """Validate a user-given backend name; ``None`` and ``""`` mean "not given"."""
    if backend in (None, ""):
        return ""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}, got {backend!r}")
    return backend


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by argument or ``MFK_BACKEND``; ``"auto"`` when neither."""
    if check_backend(backend):
        return backend
    name = os.environ.get(ENV_VAR, "").strip() or "auto"
    if name not in (*BACKENDS, "auto"):
        raise ValueError(f"{ENV_VAR} must be one of {('auto', *BACKENDS)}, got {name!r}")
    return name


def auto_backend(device: torch.device) -> str:
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu" and _table("cpu"):  # the extension is built
        return "cpu"
    return "reference"


def available_backends(device: torch.device | str | None = None) -> set[str]:
    """The backends this install has: ``reference``, ``triton`` with the triton package, and
    ``cpu`` and ``cuda`` where the csrc extension is built with them.

    With a ``device`` (``"cpu"``, ``"cuda"``, a ``torch.device``): those of them that can run
    tensors on that device on this machine, e.g. ``{"reference", "cpu"}`` for ``"cpu"`` where
    the extension is built, ``triton`` too under ``TRITON_INTERPRET=1``, and only
    ``{"reference"}`` for ``"cuda"`` without a GPU.
    """
    from .backends.triton.triton_compat import HAS_TRITON, INTERPRET

    built = {"reference"} | {name for name in ("cpu", "cuda") if _table(name)}
    if HAS_TRITON:
        built.add("triton")
    if device is None:
        return built
    kind = torch.device(device).type
    gpu = kind == "cuda" and torch.cuda.is_available()
    runs_on = {
        "reference": True,
        "triton": gpu or (kind == "cpu" and INTERPRET),
        "cpu": kind == "cpu",
        "cuda": gpu,
    }
    return {name for name in built if runs_on[name]}


def resolve(op: str, backend: str | None, *args, **kwargs) -> str:
    """The backend that will run ``op`` on these arguments (after any fallback)."""
    name = _resolve(op, backend, *args, **kwargs)
    for seen in _recorders:
        seen.setdefault(op, set()).add(name)
    return name


def _resolve(op: str, backend: str | None, *args, **kwargs) -> str:
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    name = requested_backend(backend)
    automatic = name == "auto"
    if automatic:
        name = auto_backend(device)
    if name == "reference":
        return name
    impl = lookup(op, name)
    if impl is None and automatic:
        return "reference"  # an automatic choice that lacks this op is no news to the user
    reason = _missing(op, name) if impl is None else impl.unsupported(*args, **kwargs)
    if reason is None:
        return name
    fallback = _fallback(op, name, device, *args, **kwargs)
    key = (op, name, reason)
    if key not in _warned:
        _warned.add(key)
        warn_at_caller(f"mfkernels.{op}: backend {name!r} {reason}; using {fallback!r}")
    return fallback


def _fallback(op: str, failed: str, device: torch.device, *args, **kwargs) -> str:
    """Where a call goes that backend ``failed`` cannot run: the device's automatic backend
    when that is another one and can run it, else the reference."""
    name = auto_backend(device)
    impl = lookup(op, name)
    if name not in (failed, "reference") and impl is not None and impl.unsupported(*args, **kwargs) is None:
        return name
    return "reference"


def implementation(op: str, backend: str | None, *args, **kwargs) -> Callable:
    return lookup(op, resolve(op, backend, *args, **kwargs)).fn


def call(op: str, backend: str | None, *args):
    """Run ``op`` on the backend :func:`resolve` picks for these arguments."""
    return implementation(op, backend, *args)(*args)
