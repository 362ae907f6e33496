"""Shared by the benchmark scripts: environment record, timing, result files, tables.

Every result file carries the device, versions, git commit and date, so
a number can always be traced back to where it was measured.
"""

import contextlib
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


# ------------------------------------------------------------------ environment


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def use_device(name: str) -> torch.device:
    """The device ``name`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), made the current CUDA
    device: CUDA events, streams and ``do_bench`` use the current device, so ``cuda:1`` timed
    from ``cuda:0`` would time an idle stream."""
    from meanflow.distributed import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name()} ({os.cpu_count()} cores)"


def slug(text: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``, safe in a file name."""
    text = re.sub(r"\((r|tm)\)", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60] or "unknown"


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "name": device_name(device), "slug": slug(device_name(device))}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
    else:
        # Other processes on the machine skew CPU timings: keep the load next to the numbers.
        info.update(threads=torch.get_num_threads(), cores=os.cpu_count(), loadavg=list(os.getloadavg()))
    return info


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for module in ("triton", "flash_attn"):
        try:
            out[module] = __import__(module).__version__
        except Exception:  # not installed, or broken: either way not used
            out[module] = None
    return out


def git_info() -> dict:
    """Commit of the tree being measured; ``MFK_GIT_COMMIT`` when the tree has no ``.git``."""

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except Exception:
        return {"commit": os.environ.get("MFK_GIT_COMMIT", "unknown"), "dirty": None}


# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets, the most specific
# name first: a PCIe or NVL card is clocked lower than the SXM part whose name it contains a
# prefix of ("NVIDIA H100 PCIe" against "NVIDIA H100 80GB HBM3"), and MFU against the SXM
# peak would understate it by a quarter.
DATASHEET_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM ("80GB HBM3")
    ("H200", 989.0),  # SXM, and GH200
    ("A100", 312.0),
)


def datasheet_peak_tflops(name: str) -> float | None:
    """The datasheet's dense bf16 peak of the GPU named ``name``; None for any other device."""
    return next((tflops for key, tflops in DATASHEET_BF16_TFLOPS if key in name), None)


def header(benchmark: str, device: torch.device, argv, settings: dict) -> dict:
    return {
        "benchmark": benchmark,
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "versions": versions(),
        "git": git_info(),
        "argv": list(argv),
        "settings": settings,
    }


# ---------------------------------------------------------------------- results


def result_path(out_dir, benchmark: str, device: torch.device, quick: bool, ext: str, settings=None) -> Path:
    """Where a run writes its result. With ``settings`` (the run's, as its header records them):
    a file there from a run with other settings (another preset or batch into the same folder)
    is kept and this run takes the next free ``_2``, ``_3``, ... name; a rerun with the same
    settings replaces its own earlier file."""
    stem = f"{benchmark}_{slug(device_name(device))}{'_quick' if quick else ''}"
    path = Path(out_dir) / f"{stem}.{ext}"
    number = 1
    while settings is not None and path.exists() and recorded_settings(path) != _as_json(settings):
        number += 1
        path = Path(out_dir) / f"{stem}_{number}.{ext}"
    return path


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def recorded_settings(path: Path):
    """The ``settings`` a result file records, or None where it holds none (or is not JSON)."""
    try:
        return json.loads(path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None


def write_json(path: Path, payload: dict) -> None:
    """Write atomically, so a run killed mid-way leaves the last complete file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def pyplot():
    """matplotlib's pyplot with a file-only backend, or None (then the plot is skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return None
    return plt


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%x"))
    except ValueError:
        return False
    return True


def format_table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_number(r[i]) for r in cells[1:] if r[i]) for i in range(len(headers))]
    lines = [
        "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------- timing


def set_cpu_threads(device: torch.device, threads: int | None) -> None:
    """CPU runs default to one thread: on a machine shared with other jobs, torch's OpenMP
    threads wait on each other at every op and a 1 ms op takes 10+ ms (measured on the 2-core
    CI kind). ``threads=0`` keeps torch's own choice."""
    if device.type == "cpu" and threads != 0:
        torch.set_num_threads(threads or 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_ms: list[float]) -> dict:
    q = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return {
        "ms": statistics.median(times_ms),
        "ms_min": min(times_ms),
        "ms_max": max(times_ms),
        "ms_iqr": q[2] - q[0],
        "repeats": len(times_ms),
    }


def time_calls(fn, device, repeats: int, max_seconds: float, min_repeats: int = 2) -> list[float]:
    """Milliseconds per call of ``fn`` (already warmed up): CUDA events on the GPU, the wall
    clock on the CPU. Stops after ``repeats`` calls, or earlier once ``max_seconds`` have
    passed and ``min_repeats`` calls are done."""
    times = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < min_repeats or time.perf_counter() - start < max_seconds):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def kernel_ms(fn, device, *, cuda_events=False, warmup_ms=10, rep_ms=40, repeats=5, max_seconds=5.0):
    """(median, 20th, 80th percentile) ms of one call of ``fn``: ``triton.testing.do_bench`` on
    the GPU (its cache flush between calls) unless ``cuda_events``, else :func:`time_calls`
    after one warm-up call (median, fastest, slowest)."""
    if device.type == "cuda" and not cuda_events:
        import triton.testing

        q = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return tuple(float(v) for v in q)
    fn()
    sync(device)
    s = summarize(time_calls(fn, device, repeats, max_seconds))
    return s["ms"], s["ms_min"], s["ms_max"]


def peak_extra_mib(fn, device) -> float | None:
    """The peak memory one call of ``fn`` allocates beyond what was allocated before it
    (outputs and workspace), MiB; None off the GPU (no peak counter there)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def environment(**variables: str):
    """``os.environ`` with ``variables`` set inside the block, as it was after (a kernel
    variant that mfkernels' launchers choose by environment at each call)."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`CaseTimeout` in the main thread after ``seconds`` (POSIX only; a no-op
    elsewhere). Used around compilation, which is Python and can be interrupted."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise CaseTimeout(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def short_error(exc: BaseException, limit: int = 160) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "OOM"
    text = " ".join(str(exc).split()) or type(exc).__name__
    # Dynamo wraps the real error; its first line is what matters.
    return f"{type(exc).__name__}: {text}"[:limit]


# ----------------------------------------------------------------------- memory


def saved_for_backward_bytes(fn, keep=()) -> int:
    """The memory autograd holds for the backward of what ``fn()`` builds (then dropped), on
    any device (the CPU has no peak-memory counter).

    Every tensor an op saves for its backward is counted once per storage, except those in
    ``keep`` (the parameters: they stay in memory anyway) and forward-AD zero tangents (no
    storage). Transients freed during the forward (a layer's tangent once the next layer has
    it) are not counted: this is the activation memory that lives until the backward.
    """
    kept = {t.untyped_storage().data_ptr() for t in keep}
    saved = {}  # data_ptr -> storage, held so that no address is freed and reused meanwhile

    def pack(tensor):
        base = tensor
        while torch._C._functorch.is_functorch_wrapped_tensor(base):  # torch.func's duals
            base = torch._C._functorch.get_unwrapped(base)
        if not base._is_zerotensor():
            storage = base.untyped_storage()
            if storage.data_ptr() not in kept:
                saved[storage.data_ptr()] = storage
        # Not the tensor itself: an op that saves its own output would then hold itself
        # through its grad_fn, a cycle gc cannot see, and the whole graph would never be freed.
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storage.nbytes() for storage in saved.values())


# ----------------------------------------------------------------------- backends


def record_backends():
    """Which backend each dispatched op really ran on (after any fallback to another backend):
    ``{op: {backend, ...}}``, filled while inside (:func:`mfkernels.dispatch.record_backends`)."""
    from mfkernels import dispatch

    return dispatch.record_backends()
