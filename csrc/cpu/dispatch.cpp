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

namespace {

// A build's kernels under the name of the namespace they come from: cpu_isa() reports what runs.
struct Table {
  const char* name;
  void (*ln_modulate_jvp)(const LnModFwdParams&, int);
  void (*ln_modulate_backward)(const LnModBwdParams&, int);
  void (*gelu_tanh_jvp)(const GeluJvpParams&, int);
  void (*gelu_tanh_backward)(const GeluBwdParams&, int);
  void (*silu_jvp)(const SiluJvpParams&, int);
  void (*gated_residual_jvp)(const GatedResidualParams&, int);
};

#define MFK_TABLE(ns)                                                                              \
  Table {                                                                                          \
    #ns, ns::ln_modulate_jvp, ns::ln_modulate_backward, ns::gelu_tanh_jvp, ns::gelu_tanh_backward, \
        ns::silu_jvp, ns::gated_residual_jvp                                                       \
  }

// One table per build for the life of the process; the active ISA is swapped by pointer, so an
// op running in another thread while set_isa switches reads one whole table, never a mix.
const Table kBaseTable = MFK_TABLE(base);
#ifdef MFK_CPU_AVX2
const Table kAvx2Table = MFK_TABLE(avx2);
const Table* const kAvx2 = &kAvx2Table;
#else
const Table* const kAvx2 = nullptr;
#endif
#ifdef MFK_CPU_AVX512
const Table kAvx512Table = MFK_TABLE(avx512);
const Table* const kAvx512 = &kAvx512Table;
#else
const Table* const kAvx512 = nullptr;
#endif

struct Isa {
  const char* name;
  // The CPU features the build is compiled for (CMakeLists.txt's MFK_CPU_FLAGS_<isa>, one per
  // -m flag): it runs only where the CPU has every one, or its first instruction the CPU lacks
  // ends the process (SIGILL).
  std::vector<const char*> features;
  const Table* table;  // nullptr where this extension was built without it
};

// Widest first: "auto" (and the first op of a process) takes the first one this CPU supports.
const std::vector<Isa>& isas() {
  static const std::vector<Isa> rows{
      {"avx512", {"avx512f", "avx512bw", "avx512vl", "avx2", "fma", "f16c"}, kAvx512},
      {"avx2", {"avx2", "fma", "f16c"}, kAvx2},
      {"base", {}, &kBaseTable},
  };
  return rows;
}

const Isa* find(const char* name) {
  for (const Isa& row : isas())
    if (std::strcmp(name, row.name) == 0) return &row;
  return nullptr;
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

bool supported(const Isa& isa) {
  if (isa.table == nullptr) return false;
  for (const char* feature : isa.features)
    if (!cpu_has(feature)) return false;
  return true;
}

const Isa& widest_supported() {
  for (const Isa& row : isas())
    if (supported(row)) return row;
  return isas().back();
}

const Isa& first_choice() {
  const char* env = std::getenv("MFK_CPU_ISA");
  const Isa* named = env == nullptr ? nullptr : find(env);
  if (named != nullptr && supported(*named)) return *named;
  return widest_supported();
}

std::atomic<const Isa*>& active_slot() {
  static std::atomic<const Isa*> slot{&first_choice()};
  return slot;
}

const Table& active() { return *active_slot().load(std::memory_order_acquire)->table; }

std::string names(bool with_auto) {
  std::string list = with_auto ? "'auto'" : "";
  for (const Isa& row : isas()) {
    if (!list.empty()) list += &row == &isas().back() ? " or " : ", ";
    list += std::string("'") + row.name + "'";
  }
  return list;
}

}  // namespace

std::vector<std::string> isa_names() {
  std::vector<std::string> list;
  for (const Isa& row : isas()) list.push_back(row.name);
  return list;
}

const char* isa() { return active().name; }

std::vector<std::string> isa_features(const char* name) {
  const Isa* row = find(name);
  if (row == nullptr) throw std::invalid_argument("name must be " + names(false) + ", got '" + name + "'");
  return {row->features.begin(), row->features.end()};
}

bool set_isa(const char* name) {
  // A misspelt name must not read as "this CPU lacks it" (false) and leave the old choice.
  const Isa* row = std::strcmp(name, "auto") == 0 ? &widest_supported() : find(name);
  if (row == nullptr) throw std::invalid_argument("name must be " + names(true) + ", got '" + name + "'");
  if (!supported(*row)) return false;
  active_slot().store(row, std::memory_order_release);
  return true;
}

void ln_modulate_jvp(const LnModFwdParams& p, int threads) { active().ln_modulate_jvp(p, threads); }
void ln_modulate_backward(const LnModBwdParams& p, int threads) { active().ln_modulate_backward(p, threads); }
void gelu_tanh_jvp(const GeluJvpParams& p, int threads) { active().gelu_tanh_jvp(p, threads); }
void gelu_tanh_backward(const GeluBwdParams& p, int threads) { active().gelu_tanh_backward(p, threads); }
void silu_jvp(const SiluJvpParams& p, int threads) { active().silu_jvp(p, threads); }
void gated_residual_jvp(const GatedResidualParams& p, int threads) { active().gated_residual_jvp(p, threads); }

}  // namespace mfk::cpu
