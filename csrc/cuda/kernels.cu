// CUDA kernels for the memory-bound dual (value, tangent) ops, docs/design.md section 2.
//
// Every kernel reads its large operands once with 16-byte vector loads (a scalar variant
// takes rows whose length or address does not allow them), computes in float32 and writes
// each output once. The LayerNorm kernels keep a whole row in registers: a group of G
// threads (G = 32..1024, a power of two) owns one row, each thread up to kIters vectors of
// it, and the row statistics are reduced with warp shuffles (plus shared memory when
// G > 32). Per-sample vectors (shift, scale, gate, bias) are read with their own dtype and
// row stride from L1/L2 -- the DiT hands them as strided chunks of one adaLN output.
//
// Launch parameters are derived from the shapes only, so results are deterministic: the
// dshift/dscale token reduction writes per-chunk partial rows to a workspace and a second
// kernel adds them in a fixed order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "../kernels.h"

namespace mfk::cuda {
namespace {

#define MFK_CUDA_CHECK(expr)                                                                      \
  do {                                                                                           \
    const cudaError_t err_ = (expr);                                                             \
    if (err_ != cudaSuccess)                                                                     \
      throw std::runtime_error(std::string("mfkernels CUDA error: ") + cudaGetErrorString(err_) + \
                               " (" #expr ")");                                                  \
  } while (0)

using bf16 = __nv_bfloat16;
using f16 = __half;

constexpr int kFwdIters = 4;  // vectors per thread in the LayerNorm forward
constexpr int kBwdIters = 2;  // ... and backward (which also holds the dshift/dscale sums)
constexpr int kMaxGroup = 512;  // threads per row at most: 512 keeps 128 registers per thread
constexpr int kThreads = 256;  // elementwise kernels

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<bf16>(bf16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f<f16>(f16 v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ f16 from_f<f16>(float v) { return __float2half_rn(v); }

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ void load(const T* p, float (&out)[N]) {
  const Pack<T, N> pack = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_f(pack.v[i]);
}

template <typename T, int N>
__device__ __forceinline__ void store(T* p, const float (&in)[N]) {
  Pack<T, N> pack;
#pragma unroll
  for (int i = 0; i < N; ++i) pack.v[i] = from_f<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pack;
}

// Element j of row b of a per-sample vector; the dtype is uniform over the grid, so the
// switch costs no divergence.
__device__ __forceinline__ float load_vec(const RowVec& v, int64_t b, int64_t j) {
  const int64_t i = b * v.stride + j;
  switch (v.dtype) {
    case DType::bf16: return __bfloat162float(static_cast<const bf16*>(v.ptr)[i]);
    case DType::f16: return __half2float(static_cast<const f16*>(v.ptr)[i]);
    default: return __ldg(static_cast<const float*>(v.ptr) + i);
  }
}

// Sums each of N values over the G threads (threadIdx.x) sharing a row. G is a power of two
// >= 32 and uniform over the block; G > 32 implies G * blockDim.y <= 1024 (<= 32 warps).
template <int N>
__device__ __forceinline__ void group_sum(float (&v)[N], int G) {
#pragma unroll
  for (int k = 0; k < N; ++k)
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], off);
  if (G > 32) {
    __shared__ float partial[N][32];
    const int warps = G / 32, first = threadIdx.y * warps;
    __syncthreads();  // the previous call's reads are done
    if (threadIdx.x % 32 == 0)
#pragma unroll
      for (int k = 0; k < N; ++k) partial[k][first + threadIdx.x / 32] = v[k];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < N; ++k) {
      float s = 0.f;
      for (int w = 0; w < warps; ++w) s += partial[k][first + w];
      v[k] = s;
    }
  }
}

__device__ __forceinline__ float fast_tanh(float u) { return 1.f - 2.f / (1.f + __expf(2.f * u)); }

// ------------------------------------------------------ LayerNorm + adaLN modulate

// m = a (1 + scale) + shift, m' = a' (1 + scale) + a scale' + shift',
// a = (x - mean) rstd, a' = (x' - mean(x') - a mean(a x')) rstd.  Block (G, R): R rows.
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxGroup, 1) ln_modulate_jvp_kernel(const LnModFwdParams p) {
  const int G = blockDim.x;
  const int64_t D = p.dim, row = int64_t(blockIdx.x) * blockDim.y + threadIdx.y;
  const bool active = row < p.batch * p.tokens;
  const int nvec = int(D / VEC);
  const T* x = static_cast<const T*>(p.x) + row * D;
  const T* x_dot = static_cast<const T*>(p.x_dot) + row * D;
  float xs[kFwdIters][VEC], xd[kFwdIters][VEC];
  float sum[1] = {0.f};
#pragma unroll
  for (int i = 0; i < kFwdIters; ++i) {
    const int v = threadIdx.x + i * G;
    if (active && v < nvec) {
      load<T, VEC>(x + v * VEC, xs[i]);
      load<T, VEC>(x_dot + v * VEC, xd[i]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) xs[i][e] = xd[i][e] = 0.f;
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) sum[0] += xs[i][e];
  }
  group_sum(sum, G);
  const float inv_d = 1.f / float(D), mean = sum[0] * inv_d;
  float sums[3] = {0.f, 0.f, 0.f};  // sum (x - mean)^2, sum x', sum (x - mean) x'
#pragma unroll
  for (int i = 0; i < kFwdIters; ++i) {
    if (threadIdx.x + i * G < nvec) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float c = xs[i][e] - mean;
        sums[0] += c * c;
        sums[1] += xd[i][e];
        sums[2] += c * xd[i][e];
      }
    }
  }
  group_sum(sums, G);
  if (!active) return;
  const float rstd = 1.f / sqrtf(sums[0] * inv_d + float(p.eps));
  const float mean_xd = sums[1] * inv_d, mean_axd = sums[2] * inv_d * rstd;
  const int64_t b = row / p.tokens;
  T* m = static_cast<T*>(p.m) + row * D;
  T* m_dot = static_cast<T*>(p.m_dot) + row * D;
#pragma unroll
  for (int i = 0; i < kFwdIters; ++i) {
    const int v = threadIdx.x + i * G;
    if (v < nvec) {
      float out[VEC], out_dot[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int64_t j = int64_t(v) * VEC + e;
        const float sc1 = 1.f + load_vec(p.scale, b, j);
        const float a = (xs[i][e] - mean) * rstd;
        const float a_dot = (xd[i][e] - mean_xd - a * mean_axd) * rstd;
        out[e] = a * sc1 + load_vec(p.shift, b, j);
        out_dot[e] = a_dot * sc1 + a * load_vec(p.scale_dot, b, j) + load_vec(p.shift_dot, b, j);
      }
      store<T, VEC>(m + v * VEC, out);
      store<T, VEC>(m_dot + v * VEC, out_dot);
    }
  }
}

// dx = (da - mean(da) - a mean(da a)) rstd with da = dm (1 + scale); per block (batch item b,
// chunk c of its tokens) the partial sums of dm and dm a over the chunk's rows go to the
// workspace: ws[0 or 1][b][c][:].
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxGroup, 1) ln_modulate_backward_kernel(const LnModBwdParams p, int chunks,
                                                                      int64_t rows_per_chunk) {
  const int G = blockDim.x, R = blockDim.y;
  const int64_t D = p.dim, T_ = p.tokens;
  const int64_t b = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const int64_t t0 = c * rows_per_chunk, t1 = min(T_, t0 + rows_per_chunk);
  const int nvec = int(D / VEC);
  const float inv_d = 1.f / float(D), eps = float(p.eps);
  float acc_sh[kBwdIters][VEC], acc_sc[kBwdIters][VEC];
#pragma unroll
  for (int i = 0; i < kBwdIters; ++i)
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc_sh[i][e] = acc_sc[i][e] = 0.f;

  // Every row group runs the same number of iterations: group_sum may synchronise the block.
  for (int64_t t_base = t0; t_base < t1; t_base += R) {
    const int64_t t = t_base + threadIdx.y;
    const bool active = t < t1;
    const int64_t row = b * T_ + t;
    const T* x = static_cast<const T*>(p.x) + row * D;
    const T* g = static_cast<const T*>(p.grad_m) + row * D;
    float xs[kBwdIters][VEC], gs[kBwdIters][VEC];
    float sum[1] = {0.f};
#pragma unroll
    for (int i = 0; i < kBwdIters; ++i) {
      const int v = threadIdx.x + i * G;
      if (active && v < nvec) {
        load<T, VEC>(x + v * VEC, xs[i]);
        load<T, VEC>(g + v * VEC, gs[i]);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) xs[i][e] = gs[i][e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) sum[0] += xs[i][e];
    }
    group_sum(sum, G);
    const float mean = sum[0] * inv_d;
    float var[1] = {0.f};
#pragma unroll
    for (int i = 0; i < kBwdIters; ++i)
      if (threadIdx.x + i * G < nvec)
#pragma unroll
        for (int e = 0; e < VEC; ++e) var[0] += (xs[i][e] - mean) * (xs[i][e] - mean);
    group_sum(var, G);
    const float rstd = 1.f / sqrtf(var[0] * inv_d + eps);
    float sums[2] = {0.f, 0.f};  // sum da, sum da a
#pragma unroll
    for (int i = 0; i < kBwdIters; ++i) {
      const int v = threadIdx.x + i * G;
      if (v < nvec) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float a = (xs[i][e] - mean) * rstd, gv = gs[i][e];
          const float da = gv * (1.f + load_vec(p.scale, b, int64_t(v) * VEC + e));
          acc_sh[i][e] += gv;  // inactive rows hold zeros
          acc_sc[i][e] += gv * a;
          sums[0] += da;
          sums[1] += da * a;
          xs[i][e] = a;
          gs[i][e] = da;
        }
      }
    }
    group_sum(sums, G);
    if (active) {
      const float mean_da = sums[0] * inv_d, mean_daa = sums[1] * inv_d;
      T* dx = static_cast<T*>(p.dx) + row * D;
#pragma unroll
      for (int i = 0; i < kBwdIters; ++i) {
        const int v = threadIdx.x + i * G;
        if (v < nvec) {
          float out[VEC];
#pragma unroll
          for (int e = 0; e < VEC; ++e) out[e] = (gs[i][e] - mean_da - xs[i][e] * mean_daa) * rstd;
          store<T, VEC>(dx + v * VEC, out);
        }
      }
    }
  }

  // Add the R row groups' sums in a fixed order (R > 1 only when G <= 64).
  __shared__ float red[2][64 * kBwdIters * 8];
  for (int y = 1; y < R; ++y) {
    __syncthreads();
    if (threadIdx.y == y)
#pragma unroll
      for (int i = 0; i < kBwdIters; ++i)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const int slot = (i * VEC + e) * G + threadIdx.x;
          red[0][slot] = acc_sh[i][e];
          red[1][slot] = acc_sc[i][e];
        }
    __syncthreads();
    if (threadIdx.y == 0)
#pragma unroll
      for (int i = 0; i < kBwdIters; ++i)
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const int slot = (i * VEC + e) * G + threadIdx.x;
          acc_sh[i][e] += red[0][slot];
          acc_sc[i][e] += red[1][slot];
        }
  }
  if (threadIdx.y != 0) return;
  float* ws_sh = p.workspace + (b * chunks + c) * D;
  float* ws_sc = p.workspace + (p.batch * chunks + b * chunks + c) * D;
#pragma unroll
  for (int i = 0; i < kBwdIters; ++i) {
    const int v = threadIdx.x + i * G;
    if (v < nvec)
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        ws_sh[v * VEC + e] = acc_sh[i][e];
        ws_sc[v * VEC + e] = acc_sc[i][e];
      }
  }
}

// dshift[b, j] = sum_c ws[0][b][c][j], dscale likewise (fixed order over c).
__global__ void ln_modulate_backward_reduce_kernel(const float* ws, float* dshift, float* dscale, int64_t batch,
                                                   int chunks, int64_t dim) {
  const int64_t n = batch * dim;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / dim, j = i - b * dim;
    float sh = 0.f, sc = 0.f;
    for (int c = 0; c < chunks; ++c) {
      sh += ws[(b * chunks + c) * dim + j];
      sc += ws[(batch * chunks + b * chunks + c) * dim + j];
    }
    dshift[i] = sh;
    dscale[i] = sc;
  }
}

// -------------------------------------------------------------------- pointwise

// y = gelu_tanh(u), y' = gelu_tanh'(u) x' with u = x + bias.
template <typename T, int VEC>
__global__ void gelu_tanh_jvp_kernel(const GeluJvpParams p) {
  constexpr float k = 0.7978845608028654f, c = 0.044715f;
  const int64_t nvec_row = p.dim / VEC, total = p.rows * nvec_row;
  const bool has_bias = p.bias.ptr != nullptr;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / nvec_row, col = (i - row * nvec_row) * VEC, off = row * p.dim + col;
    float x[VEC], xd[VEC];
    load<T, VEC>(static_cast<const T*>(p.x) + off, x);
    load<T, VEC>(static_cast<const T*>(p.x_dot) + off, xd);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float u = x[e] + (has_bias ? load_vec(p.bias, 0, col + e) : 0.f), u2 = u * u;
      const float th = fast_tanh(k * (u + c * u * u2));
      x[e] = 0.5f * u * (1.f + th);
      xd[e] *= 0.5f * (1.f + th) + 0.5f * u * (1.f - th * th) * k * (1.f + 3.f * c * u2);
    }
    store<T, VEC>(static_cast<T*>(p.y) + off, x);
    store<T, VEC>(static_cast<T*>(p.y_dot) + off, xd);
  }
}

// y = x sigmoid(x), y' = sigmoid(x) (1 + x (1 - sigmoid(x))) x'
template <typename T, int VEC>
__global__ void silu_jvp_kernel(const SiluJvpParams p) {
  const int64_t total = p.n / VEC;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float x[VEC], xd[VEC];
    load<T, VEC>(static_cast<const T*>(p.x) + i * VEC, x);
    load<T, VEC>(static_cast<const T*>(p.x_dot) + i * VEC, xd);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float s = 1.f / (1.f + __expf(-x[e]));
      xd[e] *= s * (1.f + x[e] * (1.f - s));
      x[e] *= s;
    }
    store<T, VEC>(static_cast<T*>(p.y) + i * VEC, x);
    store<T, VEC>(static_cast<T*>(p.y_dot) + i * VEC, xd);
  }
}

// y = x + g f, y' = x' + g' f + g f'; x in T, f in F (autocast: fp32 stream, bf16 branch).
template <typename T, typename F, int VEC>
__global__ void gated_residual_jvp_kernel(const GatedResidualParams p) {
  const int64_t nvec_row = p.dim / VEC, total = p.batch * p.tokens * nvec_row;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / nvec_row, col = (i - row * nvec_row) * VEC, off = row * p.dim + col;
    const int64_t b = row / p.tokens;
    float x[VEC], xd[VEC], f[VEC], fd[VEC];
    load<T, VEC>(static_cast<const T*>(p.x) + off, x);
    load<T, VEC>(static_cast<const T*>(p.x_dot) + off, xd);
    load<F, VEC>(static_cast<const F*>(p.f) + off, f);
    load<F, VEC>(static_cast<const F*>(p.f_dot) + off, fd);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float g = load_vec(p.gate, b, col + e), gd = load_vec(p.gate_dot, b, col + e);
      x[e] += g * f[e];
      xd[e] += gd * f[e] + g * fd[e];
    }
    store<T, VEC>(static_cast<T*>(p.y) + off, x);
    store<T, VEC>(static_cast<T*>(p.y_dot) + off, xd);
  }
}

// ------------------------------------------------------------------------ launchers

template <typename T>
constexpr int vec_width() {
  return 16 / int(sizeof(T));
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

int sm_count() {
  int device = 0, count = 0;
  MFK_CUDA_CHECK(cudaGetDevice(&device));
  MFK_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

unsigned elementwise_blocks(int64_t work) {
  static thread_local int sms = 0;
  if (sms == 0) sms = sm_count();
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sms) * 16)));
}

void check_launch() { MFK_CUDA_CHECK(cudaGetLastError()); }

template <typename T>
int ln_vec(int64_t dim) {
  return dim % vec_width<T>() == 0 ? vec_width<T>() : 1;
}

// Threads per row: the smallest power of two >= 32 with G * iters * vec >= dim.
int group_size(int64_t dim, int vec, int iters) {
  const int64_t nvec = (dim + vec - 1) / vec;
  int g = 32;
  while (int64_t(g) * iters < nvec) g *= 2;
  return g;
}

int64_t bwd_chunks(int64_t batch, int64_t tokens, int rows_per_block) {
  // Enough blocks to fill the GPU, few enough that the partial rows stay small.
  const int64_t by_tokens = (tokens + rows_per_block - 1) / rows_per_block;
  return std::max<int64_t>(std::min<int64_t>(by_tokens, (1024 + batch - 1) / std::max<int64_t>(batch, 1)), tokens > 0);
}

struct BwdShape {
  int G, R;
  int64_t chunks, rows_per_chunk;
};

BwdShape bwd_shape(int64_t batch, int64_t tokens, int64_t dim, int vec) {
  BwdShape s;
  s.G = group_size(dim, vec, kBwdIters);
  s.R = std::max(1, 128 / s.G);
  s.chunks = bwd_chunks(batch, tokens, s.R);
  s.rows_per_chunk = s.chunks ? (tokens + s.chunks - 1) / s.chunks : 0;
  return s;
}

template <typename T>
void ln_fwd(const LnModFwdParams& p, cudaStream_t stream) {
  const bool vec = ln_vec<T>(p.dim) > 1 && aligned(p.x, 16) && aligned(p.x_dot, 16) && aligned(p.m, 16) &&
                   aligned(p.m_dot, 16);
  const int V = vec ? vec_width<T>() : 1;
  const int G = group_size(p.dim, V, kFwdIters), R = std::max(1, 128 / G);
  if (G > kMaxGroup) throw std::invalid_argument("x: rows too long for the cuda LayerNorm kernel");
  const int64_t rows = p.batch * p.tokens;
  const dim3 block(G, R), grid(unsigned((rows + R - 1) / R));
  if (vec)
    ln_modulate_jvp_kernel<T, vec_width<T>()><<<grid, block, 0, stream>>>(p);
  else
    ln_modulate_jvp_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  check_launch();
}

template <typename T>
void ln_bwd(const LnModBwdParams& p, cudaStream_t stream) {
  // The workspace size (ln_bwd_workspace_numel) assumed the vector width of dim alone.
  const int V = ln_vec<T>(p.dim);
  const bool vec = V > 1 && aligned(p.x, 16) && aligned(p.grad_m, 16) && aligned(p.dx, 16);
  const BwdShape s = bwd_shape(p.batch, p.tokens, p.dim, V);
  if (s.chunks > 0 && p.batch > 0) {
    const int G = vec ? s.G : group_size(p.dim, 1, kBwdIters), R = std::max(1, 128 / G);
    if (G > kMaxGroup) throw std::invalid_argument("x: rows too long for the cuda LayerNorm kernel");
    const dim3 block(G, R), grid(unsigned(p.batch * s.chunks));
    if (vec)
      ln_modulate_backward_kernel<T, vec_width<T>()><<<grid, block, 0, stream>>>(p, int(s.chunks), s.rows_per_chunk);
    else
      ln_modulate_backward_kernel<T, 1><<<grid, block, 0, stream>>>(p, int(s.chunks), s.rows_per_chunk);
    check_launch();
  }
  const int64_t n = p.batch * p.dim;
  if (n > 0) {
    ln_modulate_backward_reduce_kernel<<<elementwise_blocks(n), kThreads, 0, stream>>>(
        p.workspace, static_cast<float*>(p.dshift), static_cast<float*>(p.dscale), p.batch, int(s.chunks), p.dim);
    check_launch();
  }
}

template <typename T>
void gelu(const GeluJvpParams& p, cudaStream_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec = p.dim % V == 0 && aligned(p.x, 16) && aligned(p.x_dot, 16) && aligned(p.y, 16) &&
                   aligned(p.y_dot, 16);
  const int64_t work = p.rows * (vec ? p.dim / V : p.dim);
  if (vec)
    gelu_tanh_jvp_kernel<T, V><<<elementwise_blocks(work), kThreads, 0, stream>>>(p);
  else
    gelu_tanh_jvp_kernel<T, 1><<<elementwise_blocks(work), kThreads, 0, stream>>>(p);
  check_launch();
}

template <typename T>
void silu(const SiluJvpParams& p, cudaStream_t stream) {
  constexpr int V = vec_width<T>();
  const bool vec =
      p.n % V == 0 && aligned(p.x, 16) && aligned(p.x_dot, 16) && aligned(p.y, 16) && aligned(p.y_dot, 16);
  if (vec)
    silu_jvp_kernel<T, V><<<elementwise_blocks(p.n / V), kThreads, 0, stream>>>(p);
  else
    silu_jvp_kernel<T, 1><<<elementwise_blocks(p.n), kThreads, 0, stream>>>(p);
  check_launch();
}

template <typename T, typename F>
void gated_residual(const GatedResidualParams& p, cudaStream_t stream) {
  constexpr int V = vec_width<T>();
  constexpr int FB = int(sizeof(Pack<F, V>));
  const bool vec = p.dim % V == 0 && aligned(p.x, 16) && aligned(p.x_dot, 16) && aligned(p.y, 16) &&
                   aligned(p.y_dot, 16) && aligned(p.f, FB) && aligned(p.f_dot, FB);
  const int64_t rows = p.batch * p.tokens, work = rows * (vec ? p.dim / V : p.dim);
  if (vec)
    gated_residual_jvp_kernel<T, F, V><<<elementwise_blocks(work), kThreads, 0, stream>>>(p);
  else
    gated_residual_jvp_kernel<T, F, 1><<<elementwise_blocks(work), kThreads, 0, stream>>>(p);
  check_launch();
}

template <typename Fn>
void by_dtype(DType dtype, const Fn& fn) {
  switch (dtype) {
    case DType::f32: fn(float{}); break;
    case DType::bf16: fn(bf16{}); break;
    case DType::f16: fn(f16{}); break;
    default: throw std::invalid_argument("the cuda kernels take float32, float16 or bfloat16");
  }
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

int64_t ln_max_dim(DType dtype, int64_t dim) {
  const int vec = dtype == DType::f32 ? (dim % 4 == 0 ? 4 : 1) : (dim % 8 == 0 ? 8 : 1);
  return int64_t(kMaxGroup) * kBwdIters * vec;  // the backward holds fewer vectors per thread
}

int64_t ln_bwd_workspace_numel(int64_t batch, int64_t tokens, int64_t dim, DType dtype) {
  const int vec = dtype == DType::f32 ? (dim % 4 == 0 ? 4 : 1) : (dim % 8 == 0 ? 8 : 1);
  return 2 * batch * bwd_shape(batch, tokens, dim, vec).chunks * dim;
}

void set_device(int device) {
  int current = -1;
  MFK_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) MFK_CUDA_CHECK(cudaSetDevice(device));
}

void ln_modulate_jvp(const LnModFwdParams& p, void* stream) {
  by_dtype(p.dtype, [&](auto t) { ln_fwd<decltype(t)>(p, as_stream(stream)); });
}

void ln_modulate_backward(const LnModBwdParams& p, void* stream) {
  by_dtype(p.dtype, [&](auto t) { ln_bwd<decltype(t)>(p, as_stream(stream)); });
}

void gelu_tanh_jvp(const GeluJvpParams& p, void* stream) {
  by_dtype(p.dtype, [&](auto t) { gelu<decltype(t)>(p, as_stream(stream)); });
}

void silu_jvp(const SiluJvpParams& p, void* stream) {
  by_dtype(p.dtype, [&](auto t) { silu<decltype(t)>(p, as_stream(stream)); });
}

void gated_residual_jvp(const GatedResidualParams& p, void* stream) {
  by_dtype(p.dtype, [&](auto t) {
    by_dtype(p.f_dtype, [&](auto f) { gated_residual<decltype(t), decltype(f)>(p, as_stream(stream)); });
  });
}

}  // namespace mfk::cuda
