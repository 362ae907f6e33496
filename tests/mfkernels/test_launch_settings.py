"""The row and pointwise kernels' launch settings (``mfkernels/backends/triton/launch.py``), on
the GPU's tiles and the interpreter's: what each kernel's loop relies on for any width and
row count, where a wrong tile would still give plausible numbers on the tests' shapes."""

import pytest
import torch

from mfkernels.backends.triton import launch

DIMS = (1, 5, 72, 256, 384, 1152, 4097, 16384)
ROW_COUNTS = (1, 3, 5, 17, 51, 255, 256, 257, 4096)


@pytest.fixture(params=[True, False], ids=["interpreter_tiles", "device_tiles"])
def interpret(request, monkeypatch):
    monkeypatch.setattr(launch, "INTERPRET", request.param)
    return request.param


def test_next_power_of_2_covers_n():
    for n in range(1, 5000):
        p = launch.next_power_of_2(n)
        assert p & (p - 1) == 0 and n <= p < 2 * n, n
    assert launch.next_power_of_2(0) == 1


def test_a_row_tile_holds_a_whole_row(interpret):
    for dim in DIMS:
        for n_rows in ROW_COUNTS:
            rows, block_d, _ = launch.row_settings(dim, n_rows)
            assert block_d >= dim and rows >= 1, (dim, n_rows)


def test_a_bias_gradient_chunk_is_whole_tiles(interpret):
    """The GELU backward's program walks ``CHUNK`` rows in steps of ``ROWS`` from ``i * CHUNK``:
    a chunk that is not a whole number of tiles reads into the next chunk's rows, whose ``dx``
    its partial bias gradient then counts a second time."""
    for dim in DIMS:
        for n_rows in ROW_COUNTS:
            rows, block_d, chunk = launch.chunk_settings(dim, n_rows)
            assert chunk >= rows and chunk % rows == 0, (dim, n_rows, rows, chunk)
            assert block_d >= 1


def test_the_widest_supported_row_is_taken():
    x = torch.zeros(2, 8)
    assert launch.unsupported(("x", x), row_dim=launch.MAX_ROW_DIM) is None
    reason = launch.unsupported(("x", x), row_dim=launch.MAX_ROW_DIM + 1)
    assert reason is not None and str(launch.MAX_ROW_DIM) in reason


def test_unit_cols_copies_only_strided_columns():
    t = torch.randn(4, 6)
    assert launch.unit_cols(t) is t
    assert launch.unit_cols(t[:, ::2]).stride(-1) == 1
    assert launch.unit_cols(t.t()).stride(-1) == 1
    assert torch.equal(launch.unit_cols(t.t()), t.t())


def test_the_interpreter_sums_tokens_beyond_a_tile_over_two_chunks():
    """In the CPU interpreter a backward whose tokens span more than one tile runs two chunks,
    so that its second stage (the sum over chunks) runs in the tests; each a whole number of
    tiles, together every token."""
    cpu = torch.device("cpu")
    for tokens in (65, 1000, 4096):
        rows = launch.row_settings(72, tokens, tile=4096)[0]
        per_chunk = launch.tokens_per_chunk(tokens, 2, 72, cpu)
        assert per_chunk % rows == 0 and -(-tokens // per_chunk) == 2, (tokens, rows, per_chunk)
    assert launch.tokens_per_chunk(1, 2, 72, cpu) == 1


def test_a_chunked_backwards_tuned_tile_is_kept_per_chunk_length():
    """The tuner's best SPLIT depends on the chunk length (a batch's), which its cached
    choice must be keyed by; a kernel without chunks by its rows and width alone."""
    pytest.importorskip("triton")
    from mfkernels.backends.triton import layernorm_modulate as ln

    backward = launch.row_tuner(ln._ln_modulate_bwd_kernel, "tokens", 4096)
    assert sorted(backward.keys) == ["dim", "tokens", "tokens_per_chunk"]
    assert sorted(launch.row_tuner(ln._ln_modulate_jvp_fwd_kernel, "n_rows").keys) == ["dim", "n_rows"]


def test_a_row_kernel_takes_cpu_tensors_only_in_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    from mfkernels.backends.triton import triton_compat

    x = torch.zeros(2, 8)
    assert launch.unsupported(("x", x), row_dim=8) is None  # TRITON_INTERPRET=1 here
    monkeypatch.setattr(triton_compat, "INTERPRET", False)
    assert "needs CUDA tensors" in launch.unsupported(("x", x), row_dim=8)
