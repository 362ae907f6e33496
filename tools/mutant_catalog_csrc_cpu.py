"""Mutants of the csrc extension's C++ side: the CPU kernels (``csrc/cpu/kernels.cpp``), their
run-time ISA dispatch (``csrc/cpu/dispatch.cpp``) and the bindings' argument checks
(``csrc/mfkernels_api.cpp``). ``tools/mutants.py`` compiles each into the copy's extension
before its tests run.

Of the 46 mutants added to the two seeds, 18 survived test_csrc_ops.py, as the seed
cpp-bf16-ties-up did: the seven conversion edges (within every tolerance, or on values no test
fed) and eleven argument checks of the bindings that the Python wrapper never trips; the new
tests in test_csrc_cpu_kernels.py kill them. cpp-isa-set-unchecked crashed it (SIGILL in the
avx512 build): now a failed assertion before any kernel runs.

The ISA choice's tests hide CPU features (``MFK_CPU_HIDE_FEATURES``), so its mutants die on
a CPU with AVX-512 and on one without alike. Left unmutated: the thread count the bindings
pass on, ``parallel_for``'s grain and ``cur_b``'s reload of the vectors (speed only), the
fp16 vector loops' bounds (the scalar tail converts the same bits), and the quiet bit of a
bf16 NaN (every NaN that arithmetic makes is quiet already)."""

from mutant import Mutant

CPU = "csrc/cpu/kernels.cpp"
DISPATCH = "csrc/cpu/dispatch.cpp"
API = "csrc/mfkernels_api.cpp"
HEADER = "csrc/kernels.h"
OPS = ("tests/mfkernels/test_csrc_ops.py",)

_NEW = "tests/mfkernels/test_csrc_cpu_kernels.py::"
_OLD = "tests/mfkernels/test_csrc_ops.py::"
# The bit-exact conversion probes: float32 -> bf16/fp16 outputs, and every 16-bit input.
ROUNDING = (_NEW + "test_outputs_round_to_nearest_even_like_torch",)
WIDENING = (_NEW + "test_every_16_bit_input_widens_exactly",)
THREADS = (_NEW + "test_rows_split_over_any_number_of_threads",)
SUMS = (_NEW + "test_sums_overwrite_what_their_outputs_held",)
CONSTANT_ROWS = (_NEW + "test_layernorm_backward_of_constant_rows",)
# Alone: a build the CPU lacks, once accepted, would die of SIGILL in a later test (an error).
ISA = (_NEW + "test_isa_choice_follows_the_cpu",)
LAYOUTS = (_NEW + "test_layouts_torch_calls_contiguous_are_taken",)
CHECKS = (_NEW + "test_extension_checks_the_arguments_the_wrapper_never_gets_wrong",)
# Every op, every ISA build, fp32/bf16/fp16, a dim no vector width divides.
EVERY_ISA = (_OLD + "test_every_isa_build",)
LN_BACKWARD = (_OLD + "test_layernorm_modulate_backward_op",)  # 70 tokens: three 32-row chunks
GELU_GRADIENTS = (_OLD + "test_gelu_tanh_gradients",)
GELU_JVP = (_OLD + "test_gelu_tanh_jvp",)  # float64 included: the 1e-10 bound
SILU = (_OLD + "test_silu_jvp",)
_GELU_EXTREMES = _OLD + "test_gelu_tanh_jvp_fp32_bias_on_bf16_input_and_extremes"
EXTREMES = (_OLD + "test_silu_jvp_extremes", _GELU_EXTREMES)
MIXED = (_OLD + "test_gated_residual_jvp_mixed_dtypes", _GELU_EXTREMES)


CSRC_CPU_MUTANTS = [
    Mutant(
        "cpp-ln-tangent-rstd",
        CPU,
        "const A a_dot = (xd[j] - mean_xd - a * mean_axd) * rstd;",
        "const A a_dot = (xd[j] - mean_xd - a * mean_axd);",
        OPS,
        "the LayerNorm tangent misses its 1/std factor",
    ),
    # ------------------------------------------------------------ storage conversions
    Mutant(
        "cpp-bf16-ties-up",
        CPU,
        "const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;",
        "const uint32_t rounded = (u + 0x8000u) >> 16;",
        ROUNDING,
        "bf16 outputs round halfway cases up, not to even",
    ),
    Mutant(
        "cpp-bf16-nan-rounds",
        CPU,
        "return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);",
        "return uint16_t(rounded);",
        ROUNDING,
        "a bf16 NaN is rounded like a number: a full payload carries into infinity or zero",
    ),
    Mutant(
        "cpp-f16-inf-is-nan",
        CPU,
        "const uint32_t r = a > 0x7f800000u   ? 0x7e00u",
        "const uint32_t r = a >= 0x7f800000u  ? 0x7e00u",
        ROUNDING,
        "the branchless fp16 conversion turns infinity into NaN",
    ),
    Mutant(
        "cpp-f16-max-overflows",
        CPU,
        ": a >= 0x477ff000u ? 0x7c00u",
        ": a >= 0x477fe000u ? 0x7c00u",
        ROUNDING,
        "fp16 overflows from 65504 (its largest finite value) instead of from 65520",
    ),
    Mutant(
        "cpp-f16-subnormal-threshold",
        CPU,
        ": a < 0x38800000u  ? subnormal",
        ": a < 0x38000000u  ? subnormal",
        ROUNDING,
        "values in [2^-15, 2^-14) take the normal-half path and lose their implicit bit",
    ),
    Mutant(
        "cpp-f16-ties-up",
        CPU,
        "+ 0xfffu + ((a >> 13) & 1u)) >> 13;",
        "+ 0x1000u) >> 13;",
        ROUNDING,
        "normal fp16 outputs round halfway cases up, not to even",
    ),
    Mutant(
        "cpp-f16c-round-toward-zero",
        CPU,
        "_mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT)",
        "_mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_ZERO)",
        ROUNDING,
        "the F16C store truncates (within every tolerance, but not torch's rounding)",
    ),
    Mutant(
        "cpp-f16-widen-inf",
        CPU,
        "em >= 0x7c00u ? inf_nan",
        "em > 0x7c00u ? inf_nan",
        WIDENING,
        "an fp16 infinity is widened as the normal number 65536",
    ),
    Mutant(
        "cpp-bf16-load-offset",
        CPU,
        "case DType::bf16: {\n      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;",
        "case DType::bf16: {\n      const uint16_t* s = static_cast<const uint16_t*>(src);",
        EVERY_ISA,
        "bf16 rows are all read from the start of the tensor",
    ),
    Mutant(
        "cpp-vec-row-stride",
        CPU,
        "load_row(v.ptr, v.dtype, b * v.stride, dst, n);",
        "load_row(v.ptr, v.dtype, b * n, dst, n);",
        EVERY_ISA,
        "per-sample vectors are read as contiguous rows, not with their row stride",
    ),
    Mutant(
        "cpp-out-done-bf16-only",
        CPU,
        "if (dtype != native<A>()) store_row(row, dtype, dst, offset, n);",
        "if (dtype == DType::bf16) store_row(row, dtype, dst, offset, n);",
        EVERY_ISA,
        "fp16 outputs are computed but never written back",
    ),
    # ------------------------------------------------------------------ threading
    Mutant(
        "cpp-parallel-truncated-split",
        CPU,
        "const int64_t begin = n * t / k, end = n * (t + 1) / k;",
        "const int64_t begin = n / k * t, end = n / k * (t + 1);",
        THREADS,
        "the last n % threads rows belong to no thread",
    ),
    Mutant(
        "cpp-parallel-serial-single-item",
        CPU,
        "if (n > 0) f(int64_t(0), n);",
        "if (n > 1) f(int64_t(0), n);",
        SILU,
        "a call with one unit of work (one SiLU block) does nothing",
    ),
    Mutant(
        "cpp-gelu-bwd-sum-per-thread",
        CPU,
        "A* sum = has_bias ? partial.data() + chunk * D : nullptr;",
        "A* sum = has_bias ? partial.data() + k0 * D : nullptr;",
        (_OLD + "test_gelu_tanh_backward_bias_gradient_is_the_same_for_any_thread_count",),
        "the bias gradient is summed per thread: its bits depend on the thread count",
    ),
    # ---------------------------------------------------- LayerNorm + modulate
    Mutant(
        "cpp-ln-fwd-unbiased-variance",
        CPU,
        "const A rstd = A(1) / std::sqrt(ss * inv_d + eps);\n      const A mean_xd",
        "const A rstd = A(1) / std::sqrt(ss / A(D - 1) + eps);\n      const A mean_xd",
        EVERY_ISA,
        "the forward normalises by the unbiased variance (torch's LayerNorm uses the biased one)",
    ),
    Mutant(
        "cpp-ln-bwd-eps-dropped",
        CPU,
        "const A rstd = A(1) / std::sqrt(ss * inv_d + eps);\n        A sda",
        "const A rstd = A(1) / std::sqrt(ss * inv_d);\n        A sda",
        CONSTANT_ROWS,
        "the backward forgets eps: a constant row gives inf/NaN",
    ),
    Mutant(
        "cpp-ln-bwd-partial-stride",
        CPU,
        "A* dsh = partial.data() + 2 * k * D;",
        "A* dsh = partial.data() + k * D;",
        LN_BACKWARD,
        "each chunk's dshift/dscale partial rows overlap the next chunk's",
    ),
    Mutant(
        "cpp-ln-bwd-chunks-floor",
        CPU,
        "const int64_t chunks = (T + kLnBwdRowsPerChunk - 1) / kLnBwdRowsPerChunk;",
        "const int64_t chunks = T / kLnBwdRowsPerChunk;",
        LN_BACKWARD,
        "the tokens after the last whole 32-row chunk get no dx and no share of the sums",
    ),
    Mutant(
        "cpp-ln-bwd-last-chunk-not-summed",
        CPU,
        "for (int64_t c = 0; c < chunks; ++c) {",
        "for (int64_t c = 0; c + 1 < chunks; ++c) {",
        LN_BACKWARD,
        "the final reduction of dshift/dscale skips the last chunk's partials",
    ),
    Mutant(
        "cpp-ln-bwd-sums-not-cleared",
        CPU,
        "    std::fill(out_sh, out_sh + D, A(0));\n",
        "",
        SUMS,
        "dshift is added onto whatever its buffer held",
    ),
    # ---------------------------------------------------------------- activations
    Mutant(
        "cpp-gelu-jvp-slope-3c",
        CPU,
        "half_u_sech2 * k * (A(1) + A(3) * c * u2)",
        "half_u_sech2 * k * (A(1) + c * u2)",
        EVERY_ISA,
        "the GELU tangent differentiates c u^3 as c u^2",
    ),
    Mutant(
        "cpp-gelu-bwd-dbias-not-cleared",
        CPU,
        "std::fill(dbias, dbias + D, A(0));",
        "",
        SUMS,
        "dbias is added onto whatever its buffer held",
    ),
    Mutant(
        "cpp-gelu-bwd-bias-not-loaded",
        CPU,
        "if (has_bias) load_vec(p.bias, 0, bias, D);",
        "",
        GELU_GRADIENTS,
        "the backward evaluates the slope at x, not x + bias",
    ),
    Mutant(
        "cpp-exp-no-lower-clamp",
        CPU,
        "x = std::min(std::max(x, -87.0f), 88.0f);",
        "x = std::min(x, 88.0f);",
        EXTREMES,
        "exp of a very negative input builds 2^n from an exponent below the normal range",
    ),
    Mutant(
        "cpp-exp-cody-waite-low-part",
        CPU,
        "const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;",
        "const float r = x - n * 0.693359375f;",
        EVERY_ISA,
        "the range reduction uses only the high part of ln 2",
    ),
    Mutant(
        "cpp-tanh-double-in-float",
        CPU,
        "inline double tanh_fn(double u) { return std::tanh(u); }",
        "inline double tanh_fn(double u) { return std::tanh(float(u)); }",
        GELU_JVP,
        "float64 GELU computes its tanh in float32",
    ),
    Mutant(
        "cpp-f64-gelu-in-float",
        CPU,
        "p.dtype == DType::f64 ? gelu_tanh_impl<double, true>",
        "p.dtype == DType::f32 ? gelu_tanh_impl<double, true>",
        GELU_JVP,
        "the wrong dtype branch: float64 inputs run the float32 kernel",
    ),
    Mutant(
        "cpp-silu-block-short",
        CPU,
        "n = std::min(kBlock, p.n - off);",
        "n = std::min(kBlock - 1, p.n - off);",
        SILU,
        "each SiLU block leaves its last element unwritten",
    ),
    Mutant(
        "cpp-gated-f-dot-dtype",
        CPU,
        "const A* fd = in_row(p.f_dot, p.f_dtype, off, fdb, D);",
        "const A* fd = in_row(p.f_dot, p.dtype, off, fdb, D);",
        MIXED,
        "f_dot is read with x's dtype (autocast hands a bf16 branch to an fp32 stream)",
    ),
    # --------------------------------------------------------------- ISA dispatch
    Mutant(
        "cpp-isa-env-unchecked",
        DISPATCH,
        "if (named != nullptr && supported(*named)) return *named;",
        "if (named != nullptr) return *named;",
        ("tests/mfkernels/test_csrc_inputs.py::test_mfk_cpu_isa_is_honoured_or_said_ignored_once",),
        "MFK_CPU_ISA is taken unchecked: a misspelt or unsupported name picks some table",
    ),
    Mutant(
        "cpp-isa-order-skips-avx2",
        DISPATCH,
        '{"avx2", {"avx2", "fma", "f16c"}, kAvx2},',
        '{"avx2", {"avx2", "fma", "f16c"}, nullptr},',
        ISA,
        "auto, and a process's first op, on an AVX2 CPU without AVX-512 run the base build",
    ),
    Mutant(
        "cpp-isa-order-avx2-first",
        DISPATCH,
        '{"avx512", {"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"}, kAvx512},\n'
        '      {"avx2", {"avx2", "fma", "f16c"}, kAvx2},',
        '{"avx2", {"avx2", "fma", "f16c"}, kAvx2},\n'
        '      {"avx512", {"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"}, kAvx512},',
        ISA,
        "auto on an AVX-512 CPU runs the avx2 build",
    ),
    Mutant(
        "cpp-isa-f16c-never-found",
        DISPATCH,
        '  if (std::strcmp(feature, "f16c") == 0) return __builtin_cpu_supports("f16c");\n',
        "",
        ISA,
        "F16C is never seen: every CPU runs the base build",
    ),
    Mutant(
        "cpp-isa-avx2-without-f16c",
        DISPATCH,
        '{"avx2", {"avx2", "fma", "f16c"}, kAvx2},',
        '{"avx2", {"avx2", "fma"}, kAvx2},',
        (_NEW + "test_every_isa_build_needs_the_features_it_is_compiled_for",),
        "a CPU with AVX2 and FMA but no F16C gets the avx2 build (-mf16c): SIGILL at its first fp16 row",
    ),
    Mutant(
        "cpp-isa-avx512-without-bw",
        DISPATCH,
        '{"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"}, kAvx512},',
        '{"avx512f", "avx512vl", "avx2", "fma", "f16c"}, kAvx512},',
        (_NEW + "test_every_isa_build_needs_the_features_it_is_compiled_for",),
        "an AVX-512F CPU without BW (Knights Landing) gets the avx512 build, compiled with -mavx512bw",
    ),
    Mutant(
        "cpp-isa-set-unchecked",
        DISPATCH,
        "  if (!supported(*row)) return false;\n",
        "",
        ISA,
        "set_cpu_isa accepts a build the CPU cannot run",
    ),
    Mutant(
        "cpp-isa-table-name-swap",
        DISPATCH,
        "const Table* const kAvx2 = &kAvx2Table;",
        "const Table* const kAvx2 = &kBaseTable;",
        ISA,
        "set_cpu_isa('avx2') runs the base build's kernels",
    ),
    # ------------------------------------------------------------ bindings' checks
    Mutant(
        "cpp-api-dtype-code-negative",
        API,
        "MFK_CHECK_TYPE((t).dtype >= 0 && (t).dtype <= 3,",
        "MFK_CHECK_TYPE((t).dtype <= 3,",
        CHECKS,
        "a negative dtype code passes (the kernels' switch then reads nothing)",
    ),
    Mutant(
        "cpp-api-rowvec-zero-stride-refused",
        API,
        'MFK_CHECK((t).stride[0] >= 0, #t " must have a non-negative row stride")',
        'MFK_CHECK((t).stride[0] > 0, #t " must have a non-negative row stride")',
        LAYOUTS,
        "modulation shared by the batch (expand: row stride 0) is refused",
    ),
    Mutant(
        "cpp-api-rowvec-negative-stride",
        API,
        "  CHECK_UNIT_COL_STRIDE(t);              \\\n  MFK_CHECK((t).stride[0] >= 0,",
        "  CHECK_UNIT_COL_STRIDE(t);              \\\n  MFK_CHECK(true,",
        CHECKS,
        "a negative row stride is taken: the kernels read before the tensor",
    ),
    Mutant(
        "cpp-api-bias-unit-stride",
        API,
        "  CHECK_UNIT_COL_STRIDE(bias);\n",
        "",
        CHECKS,
        "a strided bias is read as if contiguous",
    ),
    Mutant(
        "cpp-api-unit-stride-size-1",
        API,
        "MFK_CHECK((t).shape.back() <= 1 || (t).stride.back() == 1,",
        "MFK_CHECK((t).stride.back() == 1,",
        LAYOUTS,
        "a one-element last dim with a stride (the wrapper passes it as is) is refused",
    ),
    Mutant(
        "cpp-api-contiguous-size-1",
        API,
        "if (t.shape[i] != 1 && t.stride[i] != expected) return false;",
        "if (t.stride[i] != expected) return false;",
        LAYOUTS,
        "size-1 dims with any stride (contiguous to torch, passed as is) are refused",
    ),
    Mutant(
        "cpp-api-empty-needs-pointer",
        API,
        "MFK_CHECK((t).ptr != 0 || (t).numel() == 0,",
        "MFK_CHECK((t).ptr != 0,",
        LAYOUTS,
        "an empty tensor (no storage, pointer 0) is refused",
    ),
    Mutant(
        "cpp-api-dscale-contiguity",
        API,
        "MFK_CHECK(t->shape == std::vector<int64_t>({B, D}) && is_contiguous(*t), name,",
        "MFK_CHECK(t->shape == std::vector<int64_t>({B, D}), name,",
        CHECKS,
        "a transposed dshift/dscale is written as if contiguous",
    ),
    Mutant(
        "cpp-api-dbias-shape",
        API,
        'MFK_CHECK(dbias.shape == std::vector<int64_t>({D}) && is_contiguous(dbias), "dbias',
        'MFK_CHECK(is_contiguous(dbias), "dbias',
        CHECKS,
        "a dbias of the wrong length is written past its end",
    ),
    Mutant(
        "cpp-api-bwd-eps-unchecked",
        API,
        '  MFK_CHECK(eps >= 0, "eps must be non-negative, got ", eps);\n  LnModBwdParams',
        "  LnModBwdParams",
        CHECKS,
        "the backward takes a negative eps (NaN for a constant row)",
    ),
    Mutant(
        "cpp-api-eps-nan",
        API,
        'MFK_CHECK(eps >= 0, "eps must be non-negative, got ", eps);\n  LnModFwdParams',
        'MFK_CHECK(!(eps < 0), "eps must be non-negative, got ", eps);\n  LnModFwdParams',
        CHECKS,
        "a NaN eps passes the check",
    ),
    Mutant(
        "cpp-api-bias-read-as-x-dtype",
        API,
        "return RowVec{bias.data(), 0, bias.type()};",
        "return RowVec{bias.data(), 0, x.type()};",
        MIXED,
        "an fp32 bias on bf16 activations is read as bf16",
    ),
    Mutant(
        "cpp-h-dtype-codes-swapped",
        HEADER,
        "enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };",
        "enum class DType : int { f32 = 0, bf16 = 1, f16 = 2, f64 = 3 };",
        EVERY_ISA,
        "the C++ dtype codes disagree with the wrapper's (fp16 read as bf16)",
    ),
]
