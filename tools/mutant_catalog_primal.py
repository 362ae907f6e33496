"""Mutants of the value-only bias + tanh-GELU a plain forward runs (``mfkernels/primal.py``):
its CPU kernel and binding (compiled into the copy's extension), the rule that hands
forward-mode AD, torch.func and second derivatives to plain torch, and the DiT's MLP that
calls it on the CPU."""

from mutant import Mutant

__all__ = ["PRIMAL_MUTANTS"]

_CPU = "csrc/cpu/kernels.cpp"
_API = "csrc/mfkernels_api.cpp"
_PRIMAL = "mfkernels/primal.py"
_TESTS = "tests/mfkernels/test_gelu_tanh_value.py::"
VALUE = (_TESTS + "test_value_on_the_cpu_kernel",)
GRADIENTS = (_TESTS + "test_gradients_on_the_cpu_kernel",)
BINDING = (_TESTS + "test_binding_checks_its_arguments",)
TRANSFORMS = (_TESTS + "test_forward_mode_ad_and_transforms_see_plain_torch",)
SECOND = (_TESTS + "test_second_derivative_is_torch_s",)
DIT = (_TESTS + "test_dit_plain_forward_runs_it_and_equals_torch_gelu",)

PRIMAL_MUTANTS = [
    Mutant(
        "cpp-gelu-value-bias-dropped",
        _CPU,
        "const A u = xs[j] + bias[j];",
        "const A u = xs[j];",
        VALUE,
        "the value-only GELU leaves out the bias of the Linear before it",
    ),
    Mutant(
        "cpp-gelu-value-square-not-cube",
        _CPU,
        "tanh_fn(k * (u + c * u * u * u))",
        "tanh_fn(k * (u + c * u * u))",
        VALUE,
        "the value-only GELU's tanh argument takes c u^2 for c u^3",
    ),
    Mutant(
        "cpp-gelu-value-f64-in-float",
        _CPU,
        "p.dtype == DType::f64 ? gelu_tanh_impl<double, false>",
        "p.dtype == DType::f32 ? gelu_tanh_impl<double, false>",
        VALUE,
        "float64 inputs run the value-only float32 kernel",
    ),
    Mutant(
        "cpp-api-gelu-value-y-unchecked",
        _API,
        'MFK_CHECK(!on_cuda(x), "gelu_tanh runs CPU tensors (on CUDA torch\'s GELU serves)");\n'
        '  MFK_CHECK(!x.shape.empty(), "x must have at least one dimension");\n'
        "  CHECK_LIKE(y, x);",
        'MFK_CHECK(!on_cuda(x), "gelu_tanh runs CPU tensors (on CUDA torch\'s GELU serves)");\n'
        '  MFK_CHECK(!x.shape.empty(), "x must have at least one dimension");',
        BINDING,
        "the binding writes y without checking its shape and dtype against x",
    ),
    Mutant(
        "primal-forward-ad-on-the-kernel",
        _PRIMAL,
        "if not plain_eager(args) or fwAD._current_level >= 0 or torch.jit.is_tracing():",
        "if not plain_eager(args) or torch.jit.is_tracing():",
        TRANSFORMS,
        "under forward_ad the kernel runs, and the tangent of every MLP is dropped without a word",
    ),
    Mutant(
        "primal-compiled-on-the-kernel",
        _PRIMAL,
        "if not plain_eager(args) or fwAD._current_level >= 0 or torch.jit.is_tracing():",
        "if fwAD._current_level >= 0 or torch.jit.is_tracing():",
        (_TESTS + "test_compiles_whole_as_torch_s_gelu",),
        "torch.compile meets the extension's call: a graph break, an error under fullgraph=True",
    ),
    Mutant(
        "primal-traced-on-the-kernel",
        _PRIMAL,
        "if not plain_eager(args) or fwAD._current_level >= 0 or torch.jit.is_tracing():",
        "if not plain_eager(args) or fwAD._current_level >= 0:",
        (_TESTS + "test_a_jit_trace_records_torch_s_gelu",),
        "torch.jit.trace records the kernel's output as a constant: the traced model ignores its input",
    ),
    Mutant(
        "primal-second-derivative-on-the-kernel",
        _PRIMAL,
        "if torch.is_grad_enabled():  # create_graph=True",
        "if False:  # create_graph=True",
        SECOND,
        "a backward with create_graph=True runs the kernel, which autograd sees as a constant",
    ),
    Mutant(
        "primal-grad-path-skipped",
        _PRIMAL,
        "if torch.is_grad_enabled() and any(a.requires_grad for a in args):",
        "if False:",
        GRADIENTS,
        "the output is made outside autograd: no gradient reaches x or the bias",
    ),
    Mutant(
        "primal-fallback-bias-dtype",
        "mfkernels/backends/torch_ops.py",
        'return torch.nn.functional.gelu(x if bias is None else x + bias.to(x.dtype), approximate="tanh")',
        'return torch.nn.functional.gelu(x if bias is None else x + bias, approximate="tanh")',
        (_TESTS + "test_fp32_bias_on_bf16_input_and_extremes",),
        "plain torch's GELU promotes bf16 activations to an fp32 bias's dtype, unlike the kernel",
    ),
    Mutant(
        "models-mlp-bias-twice",
        "meanflow/models.py",
        "mfkernels.gelu_tanh(F.linear(x, self.fc1.weight), self.fc1.bias)",
        "mfkernels.gelu_tanh(self.fc1(x), self.fc1.bias)",
        DIT,
        "the MLP adds fc1's bias twice on the CPU",
    ),
]
