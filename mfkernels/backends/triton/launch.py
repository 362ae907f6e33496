"""Launch settings and support checks shared by the row-wise and pointwise Triton kernels
(LayerNorm + modulate, RMSNorm, gated residual, activations).

A row kernel holds a ``(ROWS, BLOCK_D)`` tile in registers: ``BLOCK_D`` covers a whole row
(the next power of two of ``dim``) and ``ROWS`` rows share a program so that narrow rows
still give every thread a few vector loads. Under ``TRITON_INTERPRET=1`` each program is a
slow Python step, so tiles are made much larger there; the kernels are the same, and the
``gpu_launch_settings`` test fixture runs the GPU's tiles in the interpreter.
"""

import threading

import torch

from .triton_compat import INTERPRET, autotune_enabled, triton, triton_unsupported

# The interpreter itself, which tests do not patch (INTERPRET above picks the tiles, and the
# gpu_launch_settings fixture sets it False to run the GPU's tiles in the interpreter).
_INTERPRET = INTERPRET

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Rows per program the GPU's row tuner tries (chunked backwards step by a multiple of each).
TUNER_ROWS = (1, 2, 4, 8)

# Parts the GPU's row tuner may cut a chunked backward's token chunks into (a kernel with a
# ``SPLIT`` meta-parameter): more, shorter programs against more partial sums to add up.
CHUNK_SPLITS = (1, 2, 4, 8)

# Held from a tuned launch until the launcher has read the tile it took (chosen_split): the
# tuner keeps its last choice in one attribute, which another thread's launch would overwrite.
TUNED_LAUNCH = threading.Lock()

# Widest row a one-row-per-tile kernel keeps in registers (fp32 row + tangent + temporaries).
MAX_ROW_DIM = 16384


def unsupported(*named_tensors: tuple[str, torch.Tensor | None], row_dim: int | None = None) -> str | None:
    """Why the triton backend cannot take these ``(name, tensor)`` pairs, or None.

    Every tensor must be fp32/fp16/bf16 (they may differ, e.g. bf16 modulation under
    autocast with an fp32 residual stream); ``row_dim`` is the reduced dim of a row kernel.
    """
    tensors = [t for _, t in named_tensors if t is not None]
    reason = triton_unsupported(*tensors)
    if reason is not None:
        return reason
    for name, t in named_tensors:
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            return f"does not support {t.dtype} for {name}"
    if row_dim is not None and row_dim > MAX_ROW_DIM:
        return f"supports rows of at most {MAX_ROW_DIM} elements, got dim {row_dim}"
    return None


def next_power_of_2(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def row_settings(dim: int, n_rows: int, tile: int = 2048) -> tuple[int, int, int]:
    """``(ROWS, BLOCK_D, num_warps)`` for a kernel that reduces over whole rows of ``dim``."""
    block_d = next_power_of_2(max(dim, 1))
    if INTERPRET:
        tile = 16384
    rows = max(1, min(tile // block_d, next_power_of_2(max(n_rows, 1)), 64))
    elems = rows * block_d
    # About 8 fp32 elements per thread and live tensor (Liger-Kernel's calculate_settings).
    num_warps = 4 if elems < 2048 else 8 if elems < 8192 else 16 if elems < 32768 else 32
    return rows, block_d, num_warps


def autotune_rows(kernel, n_arg: str, tile: int = 2048):
    """``kernel`` (meta-parameters ``ROWS`` and ``BLOCK_D``, a ``dim`` argument and its row
    count ``n_arg``) with its tile chosen per call: on a GPU by :func:`row_tuner`, in the
    interpreter (which cannot time) :func:`row_settings`' at every call. Launch it without
    ``ROWS`` and ``num_warps``, with a grid that may read ``meta["ROWS"]``."""
    return _RowSettingsLauncher(kernel, n_arg, tile) if _INTERPRET else row_tuner(kernel, n_arg, tile)


def row_tuner(kernel, n_arg: str, tile: int = 2048):
    """``kernel`` tuned over the ``(ROWS, num_warps)`` tiles that give each thread 4-32
    elements of a row, per ``(n_arg, dim)``: :func:`row_settings`' tile first, and alone under
    ``MFK_AUTOTUNE=0``. A chunked backward with a ``SPLIT`` meta-parameter (its
    ``tokens_per_chunk`` cut into that many programs) also gets that first tile at each
    :data:`CHUNK_SPLITS` that leaves a part at least a tile long."""
    splits = "SPLIT" in kernel.arg_names

    def config(rows, warps, split=1):
        return triton.Config({"ROWS": rows, **({"SPLIT": split} if splits else {})}, num_warps=warps)

    candidates = [config(rows, warps) for rows in TUNER_ROWS for warps in (2, 4, 8, 16)]

    def prune(configs, named_args, **kwargs):
        dim, n = named_args["dim"], named_args[n_arg]
        rows, block_d, warps = row_settings(dim, n, tile)
        chosen = config(rows, warps)
        if not autotune_enabled():
            return [chosen]

        def fits(c):
            per_thread = c.kwargs["ROWS"] * block_d // (32 * c.num_warps)
            return 4 <= per_thread <= 32 and c.kwargs["ROWS"] <= next_power_of_2(n)

        others = [c for c in configs if fits(c) and (c.kwargs["ROWS"], c.num_warps) != (rows, warps)]
        # Each part of a cut chunk at least a tile long.
        cuts = [
            s for s in CHUNK_SPLITS[1:] if splits and triton.cdiv(named_args["tokens_per_chunk"], s) >= rows
        ]
        return [chosen, *others, *(config(rows, warps, s) for s in cuts)]

    # Two candidates at least, or the autotuner never calls the pruner. A chunked backward's
    # best SPLIT depends on its chunks, which depend on the batch: a key of its own.
    key = [n_arg, "dim", *(["tokens_per_chunk"] if splits else [])]
    tuner = triton.autotune(candidates, key=key, prune_configs_by={"early_config_prune": prune})
    return tuner(kernel)


class _RowSettingsLauncher:
    """``kernel[grid](...)`` with :func:`row_settings`' tile, looked up at every call (tests
    patch it, and the gpu_launch_settings fixture makes it the GPU's)."""

    def __init__(self, kernel, n_arg: str, tile: int):
        self.kernel, self.n_arg, self.tile = kernel, n_arg, tile

    split = 1  # a chunked backward's SPLIT (tests set others)

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            named = dict(zip(self.kernel.arg_names, args))
            rows, _, warps = row_settings(named["dim"], named[self.n_arg], self.tile)
            meta = {"ROWS": rows, **({"SPLIT": self.split} if "SPLIT" in self.kernel.arg_names else {})}
            self.best_config = triton.Config(meta, num_warps=warps)  # as triton's autotuner keeps it
            launch_grid = grid(meta) if callable(grid) else grid
            return self.kernel[launch_grid](*args, num_warps=warps, **meta, **kwargs)

        return run


def chosen_split(launcher) -> int:
    """The ``SPLIT`` of the tile ``launcher`` (:func:`autotune_rows`) took at its last launch."""
    return launcher.best_config.kwargs.get("SPLIT", 1)


def col_settings(dim: int, n_rows: int) -> tuple[int, int, int]:
    """``(ROWS, BLOCK_D, num_warps)`` for an elementwise kernel tiled over rows and columns."""
    block_d = min(next_power_of_2(max(dim, 1)), 16384 if INTERPRET else 1024)
    tile = 16384 if INTERPRET else 2048
    rows = max(1, min(tile // block_d, next_power_of_2(max(n_rows, 1))))
    return rows, block_d, 4


def chunk_settings(dim: int, n_rows: int) -> tuple[int, int, int]:
    """``(ROWS, BLOCK_D, CHUNK)`` for a kernel that walks ``CHUNK`` rows of a ``BLOCK_D``-wide
    column strip in ``(ROWS, BLOCK_D)`` tiles and reduces over them (a bias gradient): 256-row
    chunks keep its per-chunk partial sums small (1/256 of the input) and the grid wide."""
    if INTERPRET:  # one tile per program, as large as the pointwise kernels' blocks
        block_d = next_power_of_2(max(dim, 1))
        rows = max(1, 65536 // block_d)
        return rows, block_d, rows
    block_d = min(next_power_of_2(max(dim, 1)), 256)
    rows = 4096 // block_d
    return rows, block_d, max(rows, min(256, next_power_of_2(max(n_rows, 1))))


def pointwise_block(n: int) -> int:
    """Elements per program of a pointwise kernel over ``n``: 8 per thread of 4 warps."""
    return min(65536 if INTERPRET else 1024, next_power_of_2(n))


def sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def tokens_per_chunk(tokens: int, batch: int, dim: int, device: torch.device) -> int:
    """Tokens one program of a ``(batch, chunks)`` backward of ``dim``-wide rows (tile
    :func:`autotune_rows` with ``tile=4096``) reduces over: a whole number of loop steps (of
    every tile the GPU's tuner may pick, 1-8 rows; of the interpreter's tile), enough programs
    to fill the GPU, few enough that the fp32 per-chunk partial sums stay small; in the CPU
    interpreter two chunks, so that the second stage (the sum over chunks) runs wherever the
    tokens span more than one tile."""
    rows = max(TUNER_ROWS) if device.type == "cuda" else row_settings(dim, tokens, tile=4096)[0]
    target = (2 * sm_count(device) + batch - 1) // batch if device.type == "cuda" else 2
    chunks = max(1, min(target, (tokens + rows - 1) // rows))
    return ((tokens + chunks - 1) // chunks + rows - 1) // rows * rows


def unit_cols(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when its last dim is unit-stride (the kernels take any other strides)."""
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()
