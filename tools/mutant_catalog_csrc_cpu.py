"""Mutants of the csrc extension's C++ side: the CPU kernels (``csrc/cpu/kernels.cpp``), their
run-time ISA dispatch (``csrc/cpu/dispatch.cpp``) and the bindings' argument checks
(``csrc/mfkernels_api.cpp``). ``tools/mutants.py`` compiles each into the copy's extension
before its tests run."""

from mutant import Mutant

CPU = "csrc/cpu/kernels.cpp"
OPS = ("tests/mfkernels/test_csrc_ops.py",)

CSRC_CPU_MUTANTS = [
    Mutant(
        "cpp-ln-tangent-rstd",
        CPU,
        "const A a_dot = (xd[j] - mean_xd - a * mean_axd) * rstd;",
        "const A a_dot = (xd[j] - mean_xd - a * mean_axd);",
        OPS,
        "the LayerNorm tangent misses its 1/std factor",
    ),
    Mutant(
        "cpp-bf16-ties-up",
        CPU,
        "const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;",
        "const uint32_t rounded = (u + 0x8000u) >> 16;",
        OPS,
        "bf16 outputs round halfway cases up, not to even",
    ),
]
