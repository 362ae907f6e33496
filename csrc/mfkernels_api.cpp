// Python bindings of the csrc kernels (module mfkernels._C) and all their input checks.
//
// No libtorch: the Python wrapper (mfkernels/csrc_ops.py) validates the tensors, allocates the
// outputs and passes each tensor as a TensorArg (data pointer, dtype code, shape, strides,
// device index; -1 for the CPU), plus the thread count for CPU calls and the current CUDA
// stream for CUDA calls. Every check is repeated here, so a bad call from anywhere raises a
// Python ValueError/TypeError naming the argument instead of crashing.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels.h"

namespace py = pybind11;

namespace mfk {
namespace {

struct TensorArg {
  uintptr_t ptr;
  int dtype;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
  int device;  // -1: CPU, else the CUDA device index

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  const void* data() const { return reinterpret_cast<const void*>(ptr); }
  void* mutable_data() const { return reinterpret_cast<void*>(ptr); }
  DType type() const { return static_cast<DType>(dtype); }
};

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

const char* dtype_str(int code) {
  switch (code) {
    case 0: return "float32";
    case 1: return "float16";
    case 2: return "bfloat16";
    case 3: return "float64";
    default: return "an unknown dtype";
  }
}

std::string device_str(int device) { return device < 0 ? "cpu" : cat("cuda:", device); }

bool is_contiguous(const TensorArg& t) {
  int64_t expected = 1;
  for (int64_t i = int64_t(t.shape.size()) - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.stride[i] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

#define MFK_CHECK(cond, ...) \
  do {                       \
    if (!(cond)) throw py::value_error(cat(__VA_ARGS__)); \
  } while (0)
#define MFK_CHECK_TYPE(cond, ...) \
  do {                            \
    if (!(cond)) throw py::type_error(cat(__VA_ARGS__)); \
  } while (0)

#define CHECK_TENSOR(t)                                                                              \
  MFK_CHECK((t).shape.size() == (t).stride.size(), #t ": shape and stride lengths differ");          \
  MFK_CHECK_TYPE((t).dtype >= 0 && (t).dtype <= 3, #t " must be float32, float16, bfloat16 or float64"); \
  MFK_CHECK((t).ptr != 0 || (t).numel() == 0, #t " has no data pointer")
#define CHECK_DTYPE(t, code) \
  MFK_CHECK_TYPE((t).dtype == (code), #t " must have dtype ", dtype_str(code), ", got ", dtype_str((t).dtype))
#define CHECK_DEVICE(t, ref)                                                                \
  MFK_CHECK((t).device == (ref).device, #t " is on ", device_str((t).device), " but " #ref \
            " is on ", device_str((ref).device))
#define CHECK_SHAPE(t, ...)                                                                        \
  MFK_CHECK((t).shape == std::vector<int64_t>({__VA_ARGS__}), #t " must have shape ",             \
            shape_str(std::vector<int64_t>({__VA_ARGS__})), ", got ", shape_str((t).shape))
#define CHECK_CONTIGUOUS(t) MFK_CHECK(is_contiguous(t), #t " must be contiguous")
#define CHECK_UNIT_COL_STRIDE(t) \
  MFK_CHECK((t).shape.back() <= 1 || (t).stride.back() == 1, #t " must have unit stride in its last dim")

// A (batch, dim) per-sample vector (any float dtype, any non-negative row stride).
#define CHECK_ROWVEC(t, ref, batch, dim) \
  CHECK_TENSOR(t);                       \
  CHECK_DEVICE(t, ref);                  \
  CHECK_SHAPE(t, batch, dim);            \
  CHECK_UNIT_COL_STRIDE(t);              \
  MFK_CHECK((t).stride[0] >= 0, #t " must have a non-negative row stride")

// A contiguous tensor like `ref` (same device, dtype and shape).
#define CHECK_LIKE(t, ref)    \
  CHECK_TENSOR(t);            \
  CHECK_DEVICE(t, ref);       \
  CHECK_DTYPE(t, (ref).dtype); \
  MFK_CHECK((t).shape == (ref).shape, #t " must have the shape of " #ref " ", shape_str((ref).shape), ", got ", shape_str((t).shape)); \
  CHECK_CONTIGUOUS(t)

#define CHECK_BTD(t)                                                                            \
  CHECK_TENSOR(t);                                                                              \
  MFK_CHECK((t).shape.size() == 3, #t " must be (batch, tokens, dim), got shape ", shape_str((t).shape)); \
  CHECK_CONTIGUOUS(t)

RowVec rowvec(const TensorArg& t) {
  return RowVec{t.data(), t.shape.size() == 2 ? t.stride[0] : 0, t.type()};
}

// The CUDA kernels read float32, float16 and bfloat16 only.
void check_cuda_dtype(const TensorArg& t, const char* name) {
  MFK_CHECK_TYPE(t.dtype != int(DType::f64), name,
                 " is float64: the cuda backend takes float32, float16 or bfloat16 (use 'reference')");
}

bool on_cuda(const TensorArg& x) {
  if (x.device < 0) return false;
#ifdef MFK_WITH_CUDA
  cuda::set_device(x.device);
  return true;
#else
  throw py::value_error("x is on " + device_str(x.device) +
                        " but mfkernels._C was built without CUDA (no nvcc at build time)");
#endif
}

void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

// ------------------------------------------------------------------------- the ops

void ln_modulate_jvp(const TensorArg& x, const TensorArg& x_dot, const TensorArg& shift, const TensorArg& scale,
                     const TensorArg& shift_dot, const TensorArg& scale_dot, const TensorArg& m,
                     const TensorArg& m_dot, double eps, int threads, uintptr_t stream) {
  CHECK_BTD(x);
  CHECK_LIKE(x_dot, x);
  CHECK_LIKE(m, x);
  CHECK_LIKE(m_dot, x);
  const int64_t B = x.shape[0], T = x.shape[1], D = x.shape[2];
  CHECK_ROWVEC(shift, x, B, D);
  CHECK_ROWVEC(scale, x, B, D);
  CHECK_ROWVEC(shift_dot, x, B, D);
  CHECK_ROWVEC(scale_dot, x, B, D);
  MFK_CHECK(eps >= 0, "eps must be non-negative, got ", eps);
  LnModFwdParams p{x.data(), x_dot.data(), rowvec(shift), rowvec(scale), rowvec(shift_dot), rowvec(scale_dot),
                   m.mutable_data(), m_dot.mutable_data(), B, T, D, eps, x.type()};
  if (x.numel() == 0) return;
  if (on_cuda(x)) {
#ifdef MFK_WITH_CUDA
    check_cuda_dtype(x, "x");
    check_cuda_dtype(shift, "shift");
    check_cuda_dtype(scale, "scale");
    check_cuda_dtype(shift_dot, "shift_dot");
    check_cuda_dtype(scale_dot, "scale_dot");
    MFK_CHECK(D <= cuda::ln_max_dim(x.type(), D), "x: dim ", D, " is above the cuda kernel's limit ",
              cuda::ln_max_dim(x.type(), D));
    py::gil_scoped_release nogil;
    cuda::ln_modulate_jvp(p, as_stream(stream));
#endif
  } else {
    py::gil_scoped_release nogil;
    cpu::ln_modulate_jvp(p, threads);
  }
}

void ln_modulate_backward(const TensorArg& grad_m, const TensorArg& x, const TensorArg& scale, const TensorArg& dx,
                          const TensorArg& dshift, const TensorArg& dscale, double eps,
                          const std::optional<TensorArg>& workspace, int threads, uintptr_t stream) {
  CHECK_BTD(x);
  CHECK_LIKE(grad_m, x);
  CHECK_LIKE(dx, x);
  const int64_t B = x.shape[0], T = x.shape[1], D = x.shape[2];
  CHECK_ROWVEC(scale, x, B, D);
  const int acc = x.dtype == int(DType::f64) ? int(DType::f64) : int(DType::f32);
  for (const TensorArg* t : {&dshift, &dscale}) {
    const char* name = t == &dshift ? "dshift" : "dscale";
    CHECK_TENSOR(*t);
    MFK_CHECK(t->device == x.device, name, " must be on the device of x");
    MFK_CHECK_TYPE(t->dtype == acc, name, " must have dtype ", dtype_str(acc), ", got ", dtype_str(t->dtype));
    MFK_CHECK(t->shape == std::vector<int64_t>({B, D}) && is_contiguous(*t), name,
              " must be a contiguous (batch, dim) tensor ", shape_str({B, D}));
  }
  MFK_CHECK(eps >= 0, "eps must be non-negative, got ", eps);
  LnModBwdParams p{grad_m.data(), x.data(), rowvec(scale), dx.mutable_data(), dshift.mutable_data(),
                   dscale.mutable_data(), nullptr, B, T, D, eps, x.type()};
  if (on_cuda(x)) {
#ifdef MFK_WITH_CUDA
    check_cuda_dtype(x, "x");
    check_cuda_dtype(scale, "scale");
    MFK_CHECK(D <= cuda::ln_max_dim(x.type(), D), "x: dim ", D, " is above the cuda kernel's limit ",
              cuda::ln_max_dim(x.type(), D));
    const int64_t need = cuda::ln_bwd_workspace_numel(B, T, D, x.type());
    MFK_CHECK(workspace.has_value(), "workspace is required on CUDA (", need, " float32 elements)");
    const TensorArg& ws = *workspace;
    CHECK_TENSOR(ws);
    CHECK_DEVICE(ws, x);
    CHECK_DTYPE(ws, int(DType::f32));
    CHECK_CONTIGUOUS(ws);
    MFK_CHECK(ws.numel() >= need, "workspace must hold ", need, " float32 elements, got ", ws.numel());
    p.workspace = static_cast<float*>(ws.mutable_data());
    py::gil_scoped_release nogil;
    cuda::ln_modulate_backward(p, as_stream(stream));
#endif
  } else {
    py::gil_scoped_release nogil;
    cpu::ln_modulate_backward(p, threads);
  }
}

// A (dim,) bias of x's last dim as the kernels read it; ptr == nullptr when there is none.
RowVec bias_rowvec(const std::optional<TensorArg>& maybe_bias, const TensorArg& x, int64_t D) {
  if (!maybe_bias.has_value()) return RowVec{};
  const TensorArg& bias = *maybe_bias;  // named as the argument: the checks' messages say its name
  CHECK_TENSOR(bias);
  MFK_CHECK(bias.device == x.device, "bias is on ", device_str(bias.device), " but x is on ", device_str(x.device));
  MFK_CHECK(bias.shape == std::vector<int64_t>({D}), "bias must have shape ", shape_str({D}), ", got ",
            shape_str(bias.shape));
  CHECK_UNIT_COL_STRIDE(bias);
  return RowVec{bias.data(), 0, bias.type()};
}

void gelu_tanh_jvp(const TensorArg& x, const TensorArg& x_dot, const std::optional<TensorArg>& bias,
                   const TensorArg& y, const TensorArg& y_dot, int threads, uintptr_t stream) {
  CHECK_TENSOR(x);
  CHECK_CONTIGUOUS(x);
  MFK_CHECK(!x.shape.empty(), "x must have at least one dimension");
  CHECK_LIKE(x_dot, x);
  CHECK_LIKE(y, x);
  CHECK_LIKE(y_dot, x);
  const int64_t D = x.shape.back(), rows = D == 0 ? 0 : x.numel() / D;
  const RowVec b = bias_rowvec(bias, x, D);
  GeluJvpParams p{x.data(), x_dot.data(), b, y.mutable_data(), y_dot.mutable_data(), rows, D, x.type()};
  if (x.numel() == 0) return;
  if (on_cuda(x)) {
#ifdef MFK_WITH_CUDA
    check_cuda_dtype(x, "x");
    if (bias.has_value()) check_cuda_dtype(*bias, "bias");
    py::gil_scoped_release nogil;
    cuda::gelu_tanh_jvp(p, as_stream(stream));
#endif
  } else {
    py::gil_scoped_release nogil;
    cpu::gelu_tanh_jvp(p, threads);
  }
}

void gelu_tanh(const TensorArg& x, const std::optional<TensorArg>& bias, const TensorArg& y, int threads) {
  CHECK_TENSOR(x);
  CHECK_CONTIGUOUS(x);
  MFK_CHECK(!on_cuda(x), "gelu_tanh runs CPU tensors (on CUDA torch's GELU serves)");
  MFK_CHECK(!x.shape.empty(), "x must have at least one dimension");
  CHECK_LIKE(y, x);
  const int64_t D = x.shape.back(), rows = D == 0 ? 0 : x.numel() / D;
  const RowVec b = bias_rowvec(bias, x, D);
  GeluJvpParams p{x.data(), nullptr, b, y.mutable_data(), nullptr, rows, D, x.type()};
  if (x.numel() == 0) return;
  py::gil_scoped_release nogil;
  cpu::gelu_tanh_jvp(p, threads);
}

void gelu_tanh_backward(const TensorArg& x, const TensorArg& grad_y, const std::optional<TensorArg>& bias,
                        const TensorArg& dx, const std::optional<TensorArg>& maybe_dbias, int threads) {
  CHECK_TENSOR(x);
  CHECK_CONTIGUOUS(x);
  MFK_CHECK(!on_cuda(x), "gelu_tanh_backward runs CPU tensors (on CUDA the JVP kernel serves)");
  MFK_CHECK(!x.shape.empty(), "x must have at least one dimension");
  CHECK_LIKE(grad_y, x);
  CHECK_LIKE(dx, x);
  const int64_t D = x.shape.back(), rows = D == 0 ? 0 : x.numel() / D;
  MFK_CHECK(bias.has_value() == maybe_dbias.has_value(), "bias and dbias must be given together");
  const RowVec b = bias_rowvec(bias, x, D);
  void* dbias_ptr = nullptr;
  if (maybe_dbias.has_value()) {
    const TensorArg& dbias = *maybe_dbias;
    const int acc = x.dtype == int(DType::f64) ? int(DType::f64) : int(DType::f32);
    CHECK_TENSOR(dbias);
    MFK_CHECK(dbias.device == x.device, "dbias must be on the device of x");
    MFK_CHECK_TYPE(dbias.dtype == acc, "dbias must have dtype ", dtype_str(acc), ", got ", dtype_str(dbias.dtype));
    MFK_CHECK(dbias.shape == std::vector<int64_t>({D}) && is_contiguous(dbias), "dbias must be a contiguous ",
              shape_str({D}), " tensor");
    dbias_ptr = dbias.mutable_data();
  }
  GeluBwdParams p{x.data(), grad_y.data(), b, dx.mutable_data(), dbias_ptr, rows, D, x.type()};
  py::gil_scoped_release nogil;
  cpu::gelu_tanh_backward(p, threads);
}

void silu_jvp(const TensorArg& x, const TensorArg& x_dot, const TensorArg& y, const TensorArg& y_dot, int threads,
              uintptr_t stream) {
  CHECK_TENSOR(x);
  CHECK_CONTIGUOUS(x);
  CHECK_LIKE(x_dot, x);
  CHECK_LIKE(y, x);
  CHECK_LIKE(y_dot, x);
  SiluJvpParams p{x.data(), x_dot.data(), y.mutable_data(), y_dot.mutable_data(), x.numel(), x.type()};
  if (x.numel() == 0) return;
  if (on_cuda(x)) {
#ifdef MFK_WITH_CUDA
    check_cuda_dtype(x, "x");
    py::gil_scoped_release nogil;
    cuda::silu_jvp(p, as_stream(stream));
#endif
  } else {
    py::gil_scoped_release nogil;
    cpu::silu_jvp(p, threads);
  }
}

void gated_residual_jvp(const TensorArg& x, const TensorArg& x_dot, const TensorArg& gate,
                        const TensorArg& gate_dot, const TensorArg& f, const TensorArg& f_dot, const TensorArg& y,
                        const TensorArg& y_dot, int threads, uintptr_t stream) {
  CHECK_BTD(x);
  CHECK_LIKE(x_dot, x);
  CHECK_LIKE(y, x);
  CHECK_LIKE(y_dot, x);
  CHECK_BTD(f);
  CHECK_DEVICE(f, x);
  MFK_CHECK(f.shape == x.shape, "f must have the shape of x ", shape_str(x.shape), ", got ", shape_str(f.shape));
  CHECK_LIKE(f_dot, f);
  const int64_t B = x.shape[0], T = x.shape[1], D = x.shape[2];
  CHECK_ROWVEC(gate, x, B, D);
  CHECK_ROWVEC(gate_dot, x, B, D);
  GatedResidualParams p{x.data(), x_dot.data(), rowvec(gate), rowvec(gate_dot), f.data(), f_dot.data(),
                        y.mutable_data(), y_dot.mutable_data(), B, T, D, x.type(), f.type()};
  if (x.numel() == 0) return;
  if (on_cuda(x)) {
#ifdef MFK_WITH_CUDA
    check_cuda_dtype(x, "x");
    check_cuda_dtype(f, "f");
    check_cuda_dtype(gate, "gate");
    check_cuda_dtype(gate_dot, "gate_dot");
    py::gil_scoped_release nogil;
    cuda::gated_residual_jvp(p, as_stream(stream));
#endif
  } else {
    py::gil_scoped_release nogil;
    cpu::gated_residual_jvp(p, threads);
  }
}

}  // namespace
}  // namespace mfk

#ifndef MFK_CUDA_ARCHS
#define MFK_CUDA_ARCHS ""
#endif

// The Python wrapper (mfkernels/backends/csrc.py, API_VERSION) refuses a module whose number
// differs from its own: a build left over from older sources would otherwise miss bindings or
// read arguments with another meaning. Bump both whenever a binding, TensorArg or a dtype code
// changes.
constexpr int kApiVersion = 4;

PYBIND11_MODULE(_C, m) {
  using namespace mfk;
  using py::arg;
  m.doc() = "mfkernels C++/CUDA kernels (CPU always; CUDA where nvcc was found at build time)";

  py::class_<TensorArg>(m, "TensorArg", "A tensor as the kernels see it: pointer, dtype code, shape, strides, device")
      .def(py::init<uintptr_t, int, std::vector<int64_t>, std::vector<int64_t>, int>(), arg("ptr"), arg("dtype"),
           arg("shape"), arg("stride"), arg("device"))
      .def_readonly("ptr", &TensorArg::ptr)
      .def_readonly("dtype", &TensorArg::dtype)
      .def_readonly("shape", &TensorArg::shape)
      .def_readonly("stride", &TensorArg::stride)
      .def_readonly("device", &TensorArg::device);

#ifdef MFK_WITH_CUDA
  m.attr("WITH_CUDA") = true;
  m.def("cuda_ln_max_dim", [](int dtype, int64_t dim) { return cuda::ln_max_dim(static_cast<DType>(dtype), dim); },
        arg("dtype"), arg("dim"));
  m.def("cuda_ln_bwd_workspace_numel",
        [](int64_t batch, int64_t tokens, int64_t dim, int dtype) {
          return cuda::ln_bwd_workspace_numel(batch, tokens, dim, static_cast<DType>(dtype));
        },
        arg("batch"), arg("tokens"), arg("dim"), arg("dtype"));
#else
  m.attr("WITH_CUDA") = false;
#endif
  m.attr("API_VERSION") = kApiVersion;
  m.attr("CUDA_ARCHS") = MFK_CUDA_ARCHS;
  m.attr("LN_BWD_ROWS_PER_CHUNK") = kLnBwdRowsPerChunk;

  m.attr("CPU_ISAS") = py::tuple(py::cast(cpu::isa_names()));
  m.def("cpu_isa", &cpu::isa, "The instruction set of the CPU kernels in use (avx512, avx2 or base)");
  m.def("set_cpu_isa", [](const std::string& name) { return cpu::set_isa(name.c_str()); }, arg("name"),
        "Use another ISA build of the CPU kernels ('auto' for the best); False if this CPU lacks it, "
        "ValueError for an unknown name");
  m.def("cpu_isa_features", [](const std::string& name) { return cpu::isa_features(name.c_str()); },
        arg("name"), "The CPU features an ISA build needs (as /proc/cpuinfo names them); [] for base");

  m.def("ln_modulate_jvp", &ln_modulate_jvp, arg("x"), arg("x_dot"), arg("shift"), arg("scale"), arg("shift_dot"),
        arg("scale_dot"), arg("m"), arg("m_dot"), arg("eps"), arg("threads") = 1, arg("stream") = 0,
        "LayerNorm (no affine) + adaLN modulate, value and tangent, into m and m_dot");
  m.def("ln_modulate_backward", &ln_modulate_backward, arg("grad_m"), arg("x"), arg("scale"), arg("dx"),
        arg("dshift"), arg("dscale"), arg("eps"), arg("workspace") = py::none(), arg("threads") = 1,
        arg("stream") = 0, "Primal backward of LayerNorm + modulate into dx, dshift, dscale");
  m.def("gelu_tanh_jvp", &gelu_tanh_jvp, arg("x"), arg("x_dot"), arg("bias"), arg("y"), arg("y_dot"),
        arg("threads") = 1, arg("stream") = 0, "gelu_tanh(x + bias) and its tangent into y and y_dot");
  m.def("gelu_tanh", &gelu_tanh, arg("x"), arg("bias"), arg("y"), arg("threads") = 1,
        "gelu_tanh(x + bias) into y, the value alone (CPU)");
  m.def("gelu_tanh_backward", &gelu_tanh_backward, arg("x"), arg("grad_y"), arg("bias"), arg("dx"), arg("dbias"),
        arg("threads") = 1, "dx = gelu_tanh'(x + bias) grad_y and dbias, its sum over rows (CPU)");
  m.def("silu_jvp", &silu_jvp, arg("x"), arg("x_dot"), arg("y"), arg("y_dot"), arg("threads") = 1,
        arg("stream") = 0, "silu(x) and its tangent into y and y_dot");
  m.def("gated_residual_jvp", &gated_residual_jvp, arg("x"), arg("x_dot"), arg("gate"), arg("gate_dot"), arg("f"),
        arg("f_dot"), arg("y"), arg("y_dot"), arg("threads") = 1, arg("stream") = 0,
        "x + gate f and its tangent into y and y_dot");
}
