// Kernel parameter blocks shared by the CPU kernels (cpu/kernels.cpp), the CUDA kernels
// (cuda/kernels.cu) and the bindings (mfkernels_api.cpp). No torch here: tensors arrive as raw
// pointers with a dtype code; every check happens in mfkernels_api.cpp before a kernel runs.
//
// Shapes (docs/design.md section 2): x, x_dot, f, f_dot and the outputs are (batch, tokens, dim),
// contiguous. Per-sample modulation vectors (shift, scale, gate and their tangents) are
// (batch, dim) with unit column stride and any row stride (they are chunks of one
// (batch, 6 * dim) adaLN output); a bias is (dim,).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mfk {

// The codes the Python wrapper sends (mfkernels/csrc_ops.py keeps the same table).
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };

inline int dtype_size(DType t) { return t == DType::f64 ? 8 : t == DType::f32 ? 4 : 2; }

// A (batch, dim) or (dim,) vector read with its own dtype and row stride (elements).
struct RowVec {
  const void* ptr = nullptr;
  int64_t stride = 0;
  DType dtype = DType::f32;
};

struct LnModFwdParams {
  const void* x;
  const void* x_dot;
  RowVec shift, scale, shift_dot, scale_dot;
  void* m;
  void* m_dot;
  int64_t batch, tokens, dim;
  double eps;
  DType dtype;  // of x, x_dot, m, m_dot
};

// The token reduction of dshift/dscale runs in fixed chunks of rows, each writing one partial
// row, then a second pass adds the partials: the sums do not depend on the thread count.
constexpr int64_t kLnBwdRowsPerChunk = 32;

struct LnModBwdParams {
  const void* grad_m;
  const void* x;
  RowVec scale;
  void* dx;
  void* dshift;  // (batch, dim) in the accumulation dtype (float32; float64 for float64 x)
  void* dscale;
  float* workspace;  // CUDA only: 2 * batch * chunks * dim floats (cuda_ln_bwd_workspace)
  int64_t batch, tokens, dim;
  double eps;
  DType dtype;  // of grad_m, x, dx
};

struct GeluJvpParams {
  const void* x;
  const void* x_dot;  // nullptr: y alone (CPU), y_dot is not written
  RowVec bias;        // ptr == nullptr: no bias
  void* y;
  void* y_dot;
  int64_t rows, dim;
  DType dtype;
};

// dx = gelu_tanh'(x + bias) dy, and the bias gradient: the sum of the unrounded dx over rows.
struct GeluBwdParams {
  const void* x;
  const void* grad_y;
  RowVec bias;  // ptr == nullptr: no bias, and dbias is not written
  void* dx;
  void* dbias;  // (dim,) in the accumulation dtype (float32; float64 for float64 x)
  int64_t rows, dim;
  DType dtype;  // of x, grad_y, dx
};

struct SiluJvpParams {
  const void* x;
  const void* x_dot;
  void* y;
  void* y_dot;
  int64_t n;
  DType dtype;
};

struct GatedResidualParams {
  const void* x;
  const void* x_dot;
  RowVec gate, gate_dot;
  const void* f;
  const void* f_dot;
  void* y;
  void* y_dot;
  int64_t batch, tokens, dim;
  DType dtype;    // of x, x_dot, y, y_dot
  DType f_dtype;  // of f, f_dot
};

namespace cpu {
// ISA variants of cpu/kernels.cpp, picked at run time (cpu/dispatch.cpp). Widest first: "auto"
// (and the first op of a process) takes the first one this CPU supports.
std::vector<std::string> isa_names();
const char* isa();
// "auto", "avx512", "avx2" or "base"; false if this CPU or build lacks it, std::invalid_argument
// for any other name.
bool set_isa(const char* name);
// The CPU features the ISA build runs on ("avx2", "fma", ...: empty for "base").
std::vector<std::string> isa_features(const char* name);
void ln_modulate_jvp(const LnModFwdParams& p, int threads);
void ln_modulate_backward(const LnModBwdParams& p, int threads);
void gelu_tanh_jvp(const GeluJvpParams& p, int threads);
void gelu_tanh_backward(const GeluBwdParams& p, int threads);
void silu_jvp(const SiluJvpParams& p, int threads);
void gated_residual_jvp(const GatedResidualParams& p, int threads);
}  // namespace cpu

#ifdef MFK_WITH_CUDA
namespace cuda {
// Largest dim the register-resident LayerNorm kernels take (dtype-dependent); larger rows are
// refused by the bindings and fall back to another backend in Python.
int64_t ln_max_dim(DType dtype, int64_t dim);
int64_t ln_bwd_workspace_numel(int64_t batch, int64_t tokens, int64_t dim, DType dtype);
void set_device(int device);
void ln_modulate_jvp(const LnModFwdParams& p, void* stream);
void ln_modulate_backward(const LnModBwdParams& p, void* stream);
void gelu_tanh_jvp(const GeluJvpParams& p, void* stream);
void silu_jvp(const SiluJvpParams& p, void* stream);
void gated_residual_jvp(const GatedResidualParams& p, void* stream);
}  // namespace cuda
#endif

}  // namespace mfk
