// CPU kernels for the memory-bound dual (value, tangent) ops, docs/design.md section 2.
//
// This file is compiled once per instruction set (CMakeLists.txt: -DMFK_ISA=avx512 / avx2 /
// base, each with its own -m flags) and cpu/dispatch.cpp picks one at run time, so one build
// runs fast on any x86-64 CPU. The loops are plain C++ written for the auto-vectoriser
// (`omp simd`); threads come from OpenMP over rows, as many as torch.get_num_threads().
//
// Every kernel works row by row: the row is converted from its storage dtype (float32,
// float16, bfloat16; float64 stays float64) into a float buffer, all statistics and outputs
// are computed in float32 in one sweep over that L1-resident buffer, and the result is
// rounded back once. Per-sample vectors (shift/scale/gate, bias) are converted once per
// thread and batch item, with their own dtype and row stride.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include "../kernels.h"

#ifndef MFK_ISA
#error "compile with -DMFK_ISA=<name> (see CMakeLists.txt)"
#endif

namespace mfk::cpu::MFK_ISA {
namespace {

// ------------------------------------------------------------------ storage conversions

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN instead of rounding up into infinity.
inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// IEEE half <-> float without branches (so loops over them vectorise where F16C is absent).
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t inf_nan = (em << 13) | 0x7f800000u;
  const uint32_t subnormal = float_to_bits(float(em) * 5.9604644775390625e-08f);  // em * 2^-24
  const uint32_t u = em >= 0x7c00u ? inf_nan : (em < 0x0400u ? subnormal : normal);
  return bits_to_float(u | sign);
}

inline uint16_t float_to_f16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal halves: rebias the exponent, round the mantissa from 23 to 10 bits (to even).
  const uint32_t normal = (a - ((127u - 15u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // Subnormal halves: adding 0.5 makes the FPU round |f| to a multiple of 2^-24 (to even),
  // and the low mantissa bits of the sum are then the half's bits.
  const uint32_t subnormal = float_to_bits(bits_to_float(a) + 0.5f) - 0x3f000000u;
  const uint32_t r = a > 0x7f800000u   ? 0x7e00u     // NaN
                     : a >= 0x477ff000u ? 0x7c00u    // rounds to infinity (>= 65520)
                     : a < 0x38800000u  ? subnormal  // below 2^-14
                                        : normal;
  return uint16_t(r | sign);
}

// Load n elements starting at element `offset` of `src` (stored as `dtype`) into dst.
template <typename A>
void load_row(const void* src, DType dtype, int64_t offset, A* dst, int64_t n) {
  switch (dtype) {
    case DType::f32: {
      const float* s = static_cast<const float*>(src) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = A(s[i]);
      break;
    }
    case DType::f64: {
      const double* s = static_cast<const double*>(src) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = A(s[i]);
      break;
    }
    case DType::bf16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = A(bf16_to_float(s[i]));
      break;
    }
    case DType::f16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
      if constexpr (std::is_same_v<A, float>) {
        for (; i + 8 <= n; i += 8) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
          _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
        }
      }
#endif
      for (; i < n; ++i) dst[i] = A(f16_to_float(s[i]));
      break;
    }
  }
}

template <typename A>
void store_row(const A* src, DType dtype, void* dst, int64_t offset, int64_t n) {
  switch (dtype) {
    case DType::f32: {
      float* d = static_cast<float*>(dst) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) d[i] = float(src[i]);
      break;
    }
    case DType::f64: {
      double* d = static_cast<double*>(dst) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) d[i] = double(src[i]);
      break;
    }
    case DType::bf16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(float(src[i]));
      break;
    }
    case DType::f16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
      if constexpr (std::is_same_v<A, float>) {
        for (; i + 8 <= n; i += 8) {
          const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
        }
      }
#endif
      for (; i < n; ++i) d[i] = float_to_f16(float(src[i]));
      break;
    }
  }
}

// Row b of a per-sample (batch, dim) vector, or the (dim,) bias for b = 0.
template <typename A>
void load_vec(const RowVec& v, int64_t b, A* dst, int64_t n) {
  load_row(v.ptr, v.dtype, b * v.stride, dst, n);
}

template <typename A>
constexpr DType native() {
  return std::is_same_v<A, double> ? DType::f64 : DType::f32;
}

// n elements of src from `offset` as A values: the storage itself where it already holds A
// (no copy), else converted into buf.
template <typename A>
const A* in_row(const void* src, DType dtype, int64_t offset, A* buf, int64_t n) {
  if (dtype == native<A>()) return static_cast<const A*>(src) + offset;
  load_row(src, dtype, offset, buf, n);
  return buf;
}

// Where an output row is computed: the destination itself where it holds A, else buf, which
// out_done then rounds into the destination.
template <typename A>
A* out_row(void* dst, DType dtype, int64_t offset, A* buf) {
  return dtype == native<A>() ? static_cast<A*>(dst) + offset : buf;
}

template <typename A>
void out_done(const A* row, DType dtype, void* dst, int64_t offset, int64_t n) {
  if (dtype != native<A>()) store_row(row, dtype, dst, offset, n);
}

template <typename A>
A row_sum(const A* v, int64_t n) {
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += v[i];
  return s;
}

// ------------------------------------------------------------------------ threading

// Below this many element-operations a call runs on the calling thread: waking the pool
// costs more than the work.
constexpr int64_t kGrain = 32768;

// f(begin, end) over contiguous ranges of [0, n), one per thread.
template <typename F>
void parallel_for(int64_t n, int64_t cost_per_item, int threads, const F& f) {
  int64_t nt = std::min<int64_t>({int64_t(std::max(threads, 1)), n, std::max<int64_t>(1, n * cost_per_item / kGrain)});
  if (nt <= 1) {
    if (n > 0) f(int64_t(0), n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(int(nt))
  {
    const int64_t t = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t begin = n * t / k, end = n * (t + 1) / k;
    if (begin < end) f(begin, end);
  }
#else
  f(int64_t(0), n);
#endif
}

// ------------------------------------------------------------------ math helpers

// exp for float32 written for the vectoriser: 2^n e^r with |r| <= ln2/2 and a degree-7
// Taylor polynomial (relative error ~1e-7, i.e. a few ulp). Inputs are clamped to the range
// where 2^n is a normal float, so large |x| gives a huge/tiny finite value, never inf.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // Cody-Waite split of ln 2
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * bits_to_float(uint32_t(int32_t(n) + 127) << 23);
}

// tanh(u) = 1 - 2 / (1 + e^{2u}): absolute error ~1e-7 (relative error is larger only where
// |tanh| < 1e-3, i.e. where GELU is dominated by its linear part anyway).
inline float tanh_fn(float u) { return 1.0f - 2.0f / (1.0f + exp_approx(2.0f * u)); }
inline double tanh_fn(double u) { return std::tanh(u); }
inline float sigmoid_fn(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline double sigmoid_fn(double x) { return 1.0 / (1.0 + std::exp(-x)); }

template <typename A>
struct Gelu {
  static constexpr A k = A(0.7978845608028654);  // sqrt(2 / pi)
  static constexpr A c = A(0.044715);
};

// -------------------------------------------------------- LayerNorm + adaLN modulate

// m = a (1 + scale) + shift,  a = (x - mean) * rstd
// m' = a' (1 + scale) + a scale' + shift',  a' = (x' - mean(x') - a mean(a x')) * rstd
template <typename A>
void ln_modulate_jvp_impl(const LnModFwdParams& p, int threads) {
  const int64_t D = p.dim, T = p.tokens;
  const A inv_d = A(1) / A(D), eps = A(p.eps);
  parallel_for(p.batch * T, 8 * D, threads, [&](int64_t r0, int64_t r1) {
    std::vector<A> buf(8 * D);
    A *xb = buf.data(), *xdb = xb + D, *mb = xdb + D, *mdb = mb + D;
    A *sc1 = mdb + D, *sh = sc1 + D, *scd = sh + D, *shd = scd + D;
    int64_t cur_b = -1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / T, off = r * D;
      if (b != cur_b) {
        load_vec(p.shift, b, sh, D);
        load_vec(p.scale, b, sc1, D);
        load_vec(p.shift_dot, b, shd, D);
        load_vec(p.scale_dot, b, scd, D);
        for (int64_t j = 0; j < D; ++j) sc1[j] += A(1);
        cur_b = b;
      }
      const A* xs = in_row(p.x, p.dtype, off, xb, D);
      const A* xd = in_row(p.x_dot, p.dtype, off, xdb, D);
      A* m = out_row(p.m, p.dtype, off, mb);
      A* m_dot = out_row(p.m_dot, p.dtype, off, mdb);
      const A mean = row_sum(xs, D) * inv_d;
      A ss = 0, sxd = 0, scxd = 0;
#pragma omp simd reduction(+ : ss, sxd, scxd)
      for (int64_t j = 0; j < D; ++j) {
        const A c = xs[j] - mean;
        ss += c * c;
        sxd += xd[j];
        scxd += c * xd[j];
      }
      const A rstd = A(1) / std::sqrt(ss * inv_d + eps);
      const A mean_xd = sxd * inv_d, mean_axd = scxd * inv_d * rstd;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) {
        const A a = (xs[j] - mean) * rstd;
        const A a_dot = (xd[j] - mean_xd - a * mean_axd) * rstd;
        m[j] = a * sc1[j] + sh[j];
        m_dot[j] = a_dot * sc1[j] + a * scd[j] + shd[j];
      }
      out_done(m, p.dtype, p.m, off, D);
      out_done(m_dot, p.dtype, p.m_dot, off, D);
    }
  });
}

// Primal backward with da = dm (1 + scale):
// dx = (da - mean(da) - a mean(da a)) * rstd,  dshift = sum_t dm,  dscale = sum_t dm a.
template <typename A>
void ln_modulate_backward_impl(const LnModBwdParams& p, int threads) {
  const int64_t D = p.dim, T = p.tokens, B = p.batch;
  const int64_t chunks = (T + kLnBwdRowsPerChunk - 1) / kLnBwdRowsPerChunk;
  const A inv_d = A(1) / A(D), eps = A(p.eps);
  std::vector<A> partial(2 * B * chunks * D);
  parallel_for(B * chunks, 8 * kLnBwdRowsPerChunk * D, threads, [&](int64_t k0, int64_t k1) {
    std::vector<A> buf(4 * D);
    A *xb = buf.data(), *gb = xb + D, *dxb = gb + D, *sc1 = dxb + D;
    int64_t cur_b = -1;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t b = k / chunks, t0 = (k % chunks) * kLnBwdRowsPerChunk;
      const int64_t t1 = std::min(T, t0 + kLnBwdRowsPerChunk);
      if (b != cur_b) {
        load_vec(p.scale, b, sc1, D);
        for (int64_t j = 0; j < D; ++j) sc1[j] += A(1);
        cur_b = b;
      }
      A* dsh = partial.data() + 2 * k * D;
      A* dsc = dsh + D;
      std::fill(dsh, dsh + 2 * D, A(0));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t off = (b * T + t) * D;
        const A* xs = in_row(p.x, p.dtype, off, xb, D);
        const A* gs = in_row(p.grad_m, p.dtype, off, gb, D);
        A* dx = out_row(p.dx, p.dtype, off, dxb);
        const A mean = row_sum(xs, D) * inv_d;
        A ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < D; ++j) ss += (xs[j] - mean) * (xs[j] - mean);
        const A rstd = A(1) / std::sqrt(ss * inv_d + eps);
        A sda = 0, sdaa = 0;
#pragma omp simd reduction(+ : sda, sdaa)
        for (int64_t j = 0; j < D; ++j) {
          const A a = (xs[j] - mean) * rstd, g = gs[j], da = g * sc1[j];
          dsh[j] += g;
          dsc[j] += g * a;
          sda += da;
          sdaa += da * a;
        }
        const A mean_da = sda * inv_d, mean_daa = sdaa * inv_d;
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) dx[j] = (gs[j] * sc1[j] - mean_da - (xs[j] - mean) * rstd * mean_daa) * rstd;
        out_done(dx, p.dtype, p.dx, off, D);
      }
    }
  });
  // Partials in a fixed order: the result does not depend on the thread count.
  A* dshift = static_cast<A*>(p.dshift);
  A* dscale = static_cast<A*>(p.dscale);
  for (int64_t b = 0; b < B; ++b) {
    A* out_sh = dshift + b * D;
    A* out_sc = dscale + b * D;
    std::fill(out_sh, out_sh + D, A(0));
    std::fill(out_sc, out_sc + D, A(0));
    for (int64_t c = 0; c < chunks; ++c) {
      const A* part = partial.data() + 2 * (b * chunks + c) * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) {
        out_sh[j] += part[j];
        out_sc[j] += part[D + j];
      }
    }
  }
}

// --------------------------------------------------------------------- activations

// y = gelu(u), y' = gelu'(u) x' with u = x + bias and the tanh approximation; y alone where
// x_dot is null (a plain forward: ATen's tanh GELU is 3-4x slower on the CPU).
template <typename A, bool kTangent>
void gelu_tanh_impl(const GeluJvpParams& p, int threads) {
  const int64_t D = p.dim;
  constexpr A k = Gelu<A>::k, c = Gelu<A>::c;
  parallel_for(p.rows, (kTangent ? 24 : 16) * D, threads, [&](int64_t r0, int64_t r1) {
    std::vector<A> buf(5 * D, A(0));
    A *xb = buf.data(), *xdb = xb + D, *yb = xdb + D, *ydb = yb + D, *bias = ydb + D;
    if (p.bias.ptr != nullptr) load_vec(p.bias, 0, bias, D);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = r * D;
      const A* xs = in_row(p.x, p.dtype, off, xb, D);
      A* y = out_row(p.y, p.dtype, off, yb);
      if constexpr (kTangent) {
        const A* xd = in_row(p.x_dot, p.dtype, off, xdb, D);
        A* y_dot = out_row(p.y_dot, p.dtype, off, ydb);
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          const A u = xs[j] + bias[j], u2 = u * u;
          const A th = tanh_fn(k * (u + c * u * u2));
          const A half_u_sech2 = A(0.5) * u * (A(1) - th * th);
          y[j] = A(0.5) * u * (A(1) + th);
          y_dot[j] = (A(0.5) * (A(1) + th) + half_u_sech2 * k * (A(1) + A(3) * c * u2)) * xd[j];
        }
        out_done(y_dot, p.dtype, p.y_dot, off, D);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          const A u = xs[j] + bias[j];
          y[j] = A(0.5) * u * (A(1) + tanh_fn(k * (u + c * u * u * u)));
        }
      }
      out_done(y, p.dtype, p.y, off, D);
    }
  });
}

// dx = gelu'(u) dy with u = x + bias. The bias gradient sums the unrounded dx over rows in
// fixed chunks of rows, then the chunks in order: the same bits for any thread count.
constexpr int64_t kGeluBwdRowsPerChunk = 64;

template <typename A>
void gelu_tanh_backward_impl(const GeluBwdParams& p, int threads) {
  const int64_t D = p.dim, chunks = (p.rows + kGeluBwdRowsPerChunk - 1) / kGeluBwdRowsPerChunk;
  constexpr A k = Gelu<A>::k, c = Gelu<A>::c;
  const bool has_bias = p.bias.ptr != nullptr;
  std::vector<A> partial(has_bias ? chunks * D : 0, A(0));
  parallel_for(chunks, kGeluBwdRowsPerChunk * 20 * D, threads, [&](int64_t k0, int64_t k1) {
    std::vector<A> buf(4 * D, A(0));
    A *xb = buf.data(), *gb = xb + D, *dxb = gb + D, *bias = dxb + D;
    if (has_bias) load_vec(p.bias, 0, bias, D);
    for (int64_t chunk = k0; chunk < k1; ++chunk) {
      A* sum = has_bias ? partial.data() + chunk * D : nullptr;
      const int64_t r_end = std::min(p.rows, (chunk + 1) * kGeluBwdRowsPerChunk);
      for (int64_t r = chunk * kGeluBwdRowsPerChunk; r < r_end; ++r) {
        const int64_t off = r * D;
        const A* xs = in_row(p.x, p.dtype, off, xb, D);
        const A* gs = in_row(p.grad_y, p.dtype, off, gb, D);
        A* dx = out_row(p.dx, p.dtype, off, dxb);
#pragma omp simd
        for (int64_t j = 0; j < D; ++j) {
          const A u = xs[j] + bias[j], u2 = u * u;
          const A th = tanh_fn(k * (u + c * u * u2));
          const A slope = A(0.5) * (A(1) + th) + A(0.5) * u * (A(1) - th * th) * k * (A(1) + A(3) * c * u2);
          dx[j] = slope * gs[j];
        }
        if (has_bias) {
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) sum[j] += dx[j];
        }
        out_done(dx, p.dtype, p.dx, off, D);
      }
    }
  });
  if (!has_bias) return;
  A* dbias = static_cast<A*>(p.dbias);
  std::fill(dbias, dbias + D, A(0));
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const A* sum = partial.data() + chunk * D;
#pragma omp simd
    for (int64_t j = 0; j < D; ++j) dbias[j] += sum[j];
  }
}

// y = x sigmoid(x), y' = sigmoid(x) (1 + x (1 - sigmoid(x))) x'
template <typename A>
void silu_jvp_impl(const SiluJvpParams& p, int threads) {
  constexpr int64_t kBlock = 2048;
  const int64_t blocks = (p.n + kBlock - 1) / kBlock;
  parallel_for(blocks, 16 * kBlock, threads, [&](int64_t k0, int64_t k1) {
    std::vector<A> buf(4 * kBlock);
    A *xb = buf.data(), *xdb = xb + kBlock, *yb = xdb + kBlock, *ydb = yb + kBlock;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t off = k * kBlock, n = std::min(kBlock, p.n - off);
      const A* xs = in_row(p.x, p.dtype, off, xb, n);
      const A* xd = in_row(p.x_dot, p.dtype, off, xdb, n);
      A* y = out_row(p.y, p.dtype, off, yb);
      A* y_dot = out_row(p.y_dot, p.dtype, off, ydb);
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const A x = xs[j], s = sigmoid_fn(x);
        y[j] = x * s;
        y_dot[j] = s * (A(1) + x * (A(1) - s)) * xd[j];
      }
      out_done(y, p.dtype, p.y, off, n);
      out_done(y_dot, p.dtype, p.y_dot, off, n);
    }
  });
}

// ------------------------------------------------------------------- gated residual

// y = x + g f,  y' = x' + g' f + g f'
template <typename A>
void gated_residual_jvp_impl(const GatedResidualParams& p, int threads) {
  const int64_t D = p.dim, T = p.tokens;
  parallel_for(p.batch * T, 6 * D, threads, [&](int64_t r0, int64_t r1) {
    std::vector<A> buf(8 * D);
    A *xb = buf.data(), *xdb = xb + D, *fb = xdb + D, *fdb = fb + D, *yb = fdb + D, *ydb = yb + D;
    A *g = ydb + D, *gd = g + D;
    int64_t cur_b = -1;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / T, off = r * D;
      if (b != cur_b) {
        load_vec(p.gate, b, g, D);
        load_vec(p.gate_dot, b, gd, D);
        cur_b = b;
      }
      const A* xs = in_row(p.x, p.dtype, off, xb, D);
      const A* xd = in_row(p.x_dot, p.dtype, off, xdb, D);
      const A* fs = in_row(p.f, p.f_dtype, off, fb, D);
      const A* fd = in_row(p.f_dot, p.f_dtype, off, fdb, D);
      A* y = out_row(p.y, p.dtype, off, yb);
      A* y_dot = out_row(p.y_dot, p.dtype, off, ydb);
#pragma omp simd
      for (int64_t j = 0; j < D; ++j) {
        y[j] = xs[j] + g[j] * fs[j];
        y_dot[j] = xd[j] + gd[j] * fs[j] + g[j] * fd[j];
      }
      out_done(y, p.dtype, p.y, off, D);
      out_done(y_dot, p.dtype, p.y_dot, off, D);
    }
  });
}

}  // namespace

// Float64 inputs compute in float64; everything else in float32 (reference.compute_dtype).
void ln_modulate_jvp(const LnModFwdParams& p, int threads) {
  p.dtype == DType::f64 ? ln_modulate_jvp_impl<double>(p, threads) : ln_modulate_jvp_impl<float>(p, threads);
}

void ln_modulate_backward(const LnModBwdParams& p, int threads) {
  p.dtype == DType::f64 ? ln_modulate_backward_impl<double>(p, threads)
                        : ln_modulate_backward_impl<float>(p, threads);
}

void gelu_tanh_jvp(const GeluJvpParams& p, int threads) {
  if (p.x_dot == nullptr) {
    p.dtype == DType::f64 ? gelu_tanh_impl<double, false>(p, threads) : gelu_tanh_impl<float, false>(p, threads);
  } else {
    p.dtype == DType::f64 ? gelu_tanh_impl<double, true>(p, threads) : gelu_tanh_impl<float, true>(p, threads);
  }
}

void gelu_tanh_backward(const GeluBwdParams& p, int threads) {
  p.dtype == DType::f64 ? gelu_tanh_backward_impl<double>(p, threads) : gelu_tanh_backward_impl<float>(p, threads);
}

void silu_jvp(const SiluJvpParams& p, int threads) {
  p.dtype == DType::f64 ? silu_jvp_impl<double>(p, threads) : silu_jvp_impl<float>(p, threads);
}

void gated_residual_jvp(const GatedResidualParams& p, int threads) {
  p.dtype == DType::f64 ? gated_residual_jvp_impl<double>(p, threads)
                        : gated_residual_jvp_impl<float>(p, threads);
}

}  // namespace mfk::cpu::MFK_ISA
