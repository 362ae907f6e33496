// Run-time choice among the ISA builds of cpu/kernels.cpp: the widest one this CPU (and its
// OS) supports, or the one named by set_isa / the MFK_CPU_ISA environment variable (tests
// use it to cover every variant on one machine).
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

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

const char* const kIsas[3] = {"avx512", "avx2", "base"};

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
  if (std::strcmp(name, "auto") == 0) return true;
  for (const char* n : kIsas)
    if (std::strcmp(name, n) == 0) return true;
  return false;
}

// The CPU features each ISA build is compiled for (CMakeLists.txt's MFK_CPU_FLAGS_<isa>, one
// feature per -m flag): a build runs only where the CPU has every one of them, or its first
// instruction the CPU lacks ends the process (SIGILL).
const std::vector<const char*>& features(const char* name) {
  static const std::vector<const char*> none, avx2{"avx2", "fma", "f16c"},
      avx512{"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"};
  if (std::strcmp(name, "avx512") == 0) return avx512;
  if (std::strcmp(name, "avx2") == 0) return avx2;
  return none;
}

// MFK_CPU_HIDE_FEATURES="avx512bw,f16c" makes the dispatcher see a CPU without those features,
// so that tests can take every path of the choice on any machine.
bool hidden(const char* feature) {
  const char* env = std::getenv("MFK_CPU_HIDE_FEATURES");
  if (env == nullptr) return false;
  const std::string list = std::string(",") + env + ",";
  return list.find(std::string(",") + feature + ",") != std::string::npos;
}

// __builtin_cpu_supports takes a string literal only, hence one line per feature.
bool cpu_has(const char* feature) {
  if (hidden(feature)) return false;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "fma") == 0) return __builtin_cpu_supports("fma");
  if (std::strcmp(feature, "f16c") == 0) return __builtin_cpu_supports("f16c");
  if (std::strcmp(feature, "avx512f") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(feature, "avx512bw") == 0) return __builtin_cpu_supports("avx512bw");
  if (std::strcmp(feature, "avx512vl") == 0) return __builtin_cpu_supports("avx512vl");
#endif
  return false;
}

bool built(const char* name) {
  if (std::strcmp(name, "base") == 0) return true;
#ifdef MFK_CPU_AVX2
  if (std::strcmp(name, "avx2") == 0) return true;
#endif
#ifdef MFK_CPU_AVX512
  if (std::strcmp(name, "avx512") == 0) return true;
#endif
  return false;
}

bool supported(const char* name) {
  if (!built(name)) return false;
  for (const char* feature : features(name))
    if (!cpu_has(feature)) return false;
  return true;
}

const char* widest_supported() {
  for (const char* name : kIsas)
    if (supported(name)) return name;
  return "base";
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
  return table_for(widest_supported());
}

std::atomic<const Table*>& active_slot() {
  static std::atomic<const Table*> slot{best()};
  return slot;
}

const Table& active() { return *active_slot().load(std::memory_order_acquire); }

}  // namespace

const char* isa() { return active().name; }

std::vector<std::string> isa_features(const char* name) {
  if (!known(name) || std::strcmp(name, "auto") == 0)
    throw std::invalid_argument(std::string("name must be 'avx512', 'avx2' or 'base', got '") + name + "'");
  return {features(name).begin(), features(name).end()};
}

bool set_isa(const char* name) {
  // A misspelt name must not read as "this CPU lacks it" (false) and leave the old choice.
  if (!known(name))
    throw std::invalid_argument(std::string("name must be 'auto', 'avx512', 'avx2' or 'base', got '") + name + "'");
  if (std::strcmp(name, "auto") == 0) return set_isa(widest_supported());
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
