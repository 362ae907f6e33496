// Run-time choice among the ISA builds of cpu/kernels.cpp: the widest one this CPU (and its
// OS) supports, or the one named by set_isa / the MFK_CPU_ISA environment variable (tests
// use it to cover every variant on one machine).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "../kernels.h"

#define MFK_DECLARE_ISA(ns)                                          \
  namespace mfk::cpu::ns {                                           \
  void ln_modulate_jvp(const LnModFwdParams& p, int threads);       \
  void ln_modulate_backward(const LnModBwdParams& p, int threads);  \
  void gelu_tanh_jvp(const GeluJvpParams& p, int threads);          \
  void gelu_tanh_backward(const GeluBwdParams& p, int threads);     \
  void silu_jvp(const SiluJvpParams& p, int threads);               \
  void gated_residual_jvp(const GatedResidualParams& p, int threads); \
  }

MFK_DECLARE_ISA(base)
#ifdef MFK_CPU_AVX2
MFK_DECLARE_ISA(avx2)
#endif
#ifdef MFK_CPU_AVX512
MFK_DECLARE_ISA(avx512)
#endif

namespace mfk::cpu {
namespace {

struct Table {
  const char* name;
  void (*ln_modulate_jvp)(const LnModFwdParams&, int);
  void (*ln_modulate_backward)(const LnModBwdParams&, int);
  void (*gelu_tanh_jvp)(const GeluJvpParams&, int);
  void (*gelu_tanh_backward)(const GeluBwdParams&, int);
  void (*silu_jvp)(const SiluJvpParams&, int);
  void (*gated_residual_jvp)(const GatedResidualParams&, int);
};

#define MFK_TABLE(ns) \
  Table {                                                                                                  \
    #ns, ns::ln_modulate_jvp, ns::ln_modulate_backward, ns::gelu_tanh_jvp, ns::gelu_tanh_backward, ns::silu_jvp, \
        ns::gated_residual_jvp                                                                               \
  }

bool known(const char* name) {
  for (const char* n : {"auto", "avx512", "avx2", "base"})
    if (std::strcmp(name, n) == 0) return true;
  return false;
}

bool supported(const char* name) {
  if (std::strcmp(name, "base") == 0) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#ifdef MFK_CPU_AVX2
  if (std::strcmp(name, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#ifdef MFK_CPU_AVX512
  if (std::strcmp(name, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
#endif
#endif
  return false;
}

// One table per ISA for the life of the process; the active one is swapped by pointer, so an
// op running in another thread while set_isa switches reads one whole table, never a mix.
const Table* table_for(const char* name) {
#ifdef MFK_CPU_AVX512
  static const Table avx512_table = MFK_TABLE(avx512);
  if (std::strcmp(name, "avx512") == 0) return &avx512_table;
#endif
#ifdef MFK_CPU_AVX2
  static const Table avx2_table = MFK_TABLE(avx2);
  if (std::strcmp(name, "avx2") == 0) return &avx2_table;
#endif
  static const Table base_table = MFK_TABLE(base);
  return &base_table;
}

const Table* best() {
  const char* env = std::getenv("MFK_CPU_ISA");
  if (env != nullptr && *env != '\0' && std::strcmp(env, "auto") != 0 && supported(env)) return table_for(env);
  for (const char* name : {"avx512", "avx2"})
    if (supported(name)) return table_for(name);
  return table_for("base");
}

std::atomic<const Table*>& active_slot() {
  static std::atomic<const Table*> slot{best()};
  return slot;
}

const Table& active() { return *active_slot().load(std::memory_order_acquire); }

}  // namespace

const char* isa() { return active().name; }

bool set_isa(const char* name) {
  // A misspelt name must not read as "this CPU lacks it" (false) and leave the old choice.
  if (!known(name))
    throw std::invalid_argument(std::string("name must be 'auto', 'avx512', 'avx2' or 'base', got '") + name + "'");
  if (std::strcmp(name, "auto") == 0) {
    for (const char* n : {"avx512", "avx2", "base"})
      if (supported(n)) return set_isa(n);
  }
  if (!supported(name)) return false;
  active_slot().store(table_for(name), std::memory_order_release);
  return true;
}

void ln_modulate_jvp(const LnModFwdParams& p, int threads) { active().ln_modulate_jvp(p, threads); }
void ln_modulate_backward(const LnModBwdParams& p, int threads) { active().ln_modulate_backward(p, threads); }
void gelu_tanh_jvp(const GeluJvpParams& p, int threads) { active().gelu_tanh_jvp(p, threads); }
void gelu_tanh_backward(const GeluBwdParams& p, int threads) { active().gelu_tanh_backward(p, threads); }
void silu_jvp(const SiluJvpParams& p, int threads) { active().silu_jvp(p, threads); }
void gated_residual_jvp(const GatedResidualParams& p, int threads) { active().gated_residual_jvp(p, threads); }

}  // namespace mfk::cpu
