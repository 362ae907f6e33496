"""The catalog's mutants of the kernel API's argument checks (``mfkernels/ops.py``,
``mfkernels/sdpa.py``): each is an argument that a user gets wrong and that is then taken
silently (a wrong result) or refused only later, deep inside."""

from mutant import Mutant

__all__ = ["KERNEL_INPUT_MUTANTS"]

ERRORS = "tests/mfkernels/test_input_errors_attention.py::"

KERNEL_INPUT_MUTANTS = [
    Mutant(
        "attention-bool-scale-taken",
        "mfkernels/ops.py",
        "    if isinstance(scale, bool):  # float(True) is 1.0",
        "    if False:  # float(True) is 1.0",
        (ERRORS + "test_a_causal_flag_passed_as_the_scale_is_refused",),
        "attention_jvp(q, k, v, q_dot, k_dot, v_dot, True) runs non-causal attention at scale 1.0",
    ),
    Mutant(
        "flash-sdpa-backend-checked-at-first-jvp",
        "mfkernels/sdpa.py",
        "    dispatch.check_backend(backend)  # here, not at the first jvp",
        "    pass  # here, not at the first jvp",
        (ERRORS + "test_flash_sdpa_refuses_an_unknown_backend_outside_a_jvp_too",),
        "flash_sdpa(..., backend='trition') passes until the first jvp, maybe hours into a run",
    ),
    Mutant(
        "patch-sdpa-takes-any-object",
        "mfkernels/sdpa.py",
        "    if not isinstance(model, torch.nn.Module):\n",
        "    if model is None:\n",
        (ERRORS + "test_patch_sdpa_refuses_what_is_not_a_module",),
        "patch_sdpa(a function) sets attributes on it; patch_sdpa('x') fails with an AttributeError",
    ),
    Mutant(
        "attention-bias-requires-grad-not-unwrapped",
        "mfkernels/_checks.py",
        "        while torch._C._functorch.is_functorch_wrapped_tensor(t):",
        "        while False:",
        (
            "tests/mfkernels/test_input_checks.py::test_a_bias_computed_from_parameters_inside_a_jvp_is_refused",
            "tests/mfkernels/test_api_sdpa_backend.py::test_a_learned_bias_made_inside_the_jvp_gets_its_gradient",
        ),
        "attention_jvp inside torch.func.jvp takes a learned bias: its parameter gets no gradient, no error",
    ),
]
