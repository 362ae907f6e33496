"""The catalog's mutants of the 32-bit index limits (``tools/mutant_catalog.py`` says how the
catalog works): offsets into tensors of more than 2**31 - 1 elements, computed in int64 where
an int32 product would wrap (tests/mfkernels/test_index_width.py says where)."""

from mutant import Mutant

__all__ = ["INDEX_WIDTH_MUTANTS"]

WIDTH = "tests/mfkernels/test_index_width.py::"
_TRITON = "mfkernels/backends/triton/"

INDEX_WIDTH_MUTANTS = [
    Mutant(
        "triton-wide-mul-in-int32",
        _TRITON + "triton_compat.py",
        "index = tl.cast(index, tl.int64)",
        "index = index",
        (WIDTH + "test_wide_mul_passes_2_to_the_31",),
        "every kernel's int64 offset wraps at 2**31 again",
    ),
    Mutant(
        "triton-attention-wide-rows-never",
        _TRITON + "attention.py",
        "for dim in (2, 3)",
        "for dim in ()",
        (WIDTH + "test_wide_rows_where_one_head_passes_2_to_the_31",),
        "past 2**31 elements in one head the loops step by wrapped int32 offsets",
    ),
    Mutant(
        "triton-attention-row-offset-int32",
        _TRITON + "attention_kernels.py",
        "wide_mul(first, stride_n) + rows",
        "first * stride_n + rows",
        (WIDTH + "test_offset_products_are_int64",),
        "a dense bias past 46340 x 46340 keys reads the wrong rows",
    ),
    Mutant(
        "triton-attention-key-step-int32",
        _TRITON + "attention_kernels.py",
        "src + wide_mul(start_n, stride_n, WIDE)",
        "src + start_n * stride_n",
        (WIDTH + "test_offset_products_are_int64",),
        "the K/V loop wraps past 2**31 elements of one head",
    ),
    Mutant(
        "triton-gelu-backward-columns-int32",
        _TRITON + "pointwise.py",
        "cols = wide_mul(tl.program_id(1), BLOCK_D)",
        "cols = tl.program_id(1) * BLOCK_D",
        (WIDTH + "test_program_ids_are_widened",),
        "a flat input of 2**31 elements writes dx over the wrong columns",
    ),
    Mutant(
        "triton-gated-residual-columns-int32",
        _TRITON + "gated_residual.py",
        "cols = wide_mul(tl.program_id(1), BLOCK_D)",
        "cols = tl.program_id(1) * BLOCK_D",
        (WIDTH + "test_program_ids_are_widened",),
        "rows of 2**31 elements wrap in the column ids",
    ),
    Mutant(
        "csrc-silu-count-in-int",
        "csrc/cuda/kernels.cu",
        "const int64_t total = p.n / VEC;",
        "const int total = p.n / VEC;",
        (WIDTH + "test_csrc_loop_indices_are_int64",),
        "the CUDA SiLU stops at 2**31 vectors",
    ),
]
