"""The training step the step benchmarks time (docs/design.md section 6): its variants, the
model they run, the loss of each and one step (loss, backward, AdamW).

Shared by ``jvp_throughput.py`` (through ``step_runner``), ``step_phases.py`` and the one-off
scripts under ``benchmarks/scripts/``, so that every one of them times the same step.
"""

import argparse
import contextlib

import torch

from meanflow import DiT, FlowMatchingLoss, MeanFlowLoss
from meanflow.loss import dual_jvp, func_jvp
from meanflow.models import unfused_attention

FUSED_BACKENDS = {"fused_triton": "triton", "fused_cuda": "cuda", "fused_cpu": "cpu"}
BACKEND_OF = {"dual_ref": "reference", **FUSED_BACKENDS}
# Eager first (cheap), then the compiled variants in the order they matter for the targets;
# compiled torch.func is last: the slowest to compile and the likeliest to fail.
ORDER = (
    "fm",
    "func_jvp",
    "dual_ref",
    "fused_triton",
    "fused_cuda",
    "fused_cpu",
    "fm+compile",
    "fused_triton+compile",
    "fused_cuda+compile",
    "fused_cpu+compile",
    "func_jvp+compile",
    "dual_ref+compile",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The step the sweep runs unless told otherwise: every row's du/dt (as public MeanFlow code), no
# guidance (the targets are judged on unguided steps, either tangent_rows), blocks compiled one by one.
LOSS_DEFAULTS = {"tangent_rows": "all", "cfg_w": 1.0, "cfg_k": 0.0, "compile_mode": "regional"}


def family(variant: str) -> str:
    return variant.split("+")[0]


def is_compiled(variant: str) -> bool:
    return variant.endswith("+compile")


def loss_settings(**overrides) -> argparse.Namespace:
    """What :func:`make_loss` reads (``LOSS_DEFAULTS``, some overridden), for callers that have
    no ``jvp_throughput`` command line."""
    unknown = set(overrides) - set(LOSS_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown loss settings: {', '.join(sorted(unknown))}")
    return argparse.Namespace(**{**LOSS_DEFAULTS, **overrides})


def preset_inputs(preset: str, input_size: int | None):
    """(in_channels, input_size, num_classes): MNIST-like for the tiny preset, else
    ImageNet-256 latents (4 x 32 x 32, 1000 classes)."""
    if preset.startswith("DiT-T/"):
        return 1, input_size or 32, 10
    return 4, input_size or 32, 1000


def build_model(preset: str, input_size: int | None, device):
    """The preset's DiT, seeded, with every block live: adaLN-Zero starts each as the identity,
    so the weights are perturbed to put all the math to work."""
    in_ch, size, classes = preset_inputs(preset, input_size)
    torch.manual_seed(0)
    with torch.device(device):
        model = DiT.from_config(preset, num_classes=classes, in_channels=in_ch, input_size=size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def foreign_families(device) -> tuple:
    """Fused variants whose kernels are for the other device kind (the Triton interpreter is no
    benchmark)."""
    return ("fused_cpu",) if device.type == "cuda" else ("fused_triton", "fused_cuda")


# ------------------------------------------------------------------ the loss
# One training step with the project's own objectives (docs/design.md section 1), without class
# dropout and by default without CFG (w = 1, k = 0), so that variants differ only in how
# (u, du/dt) is computed. cfg_w/cfg_k fold guidance into the MeanFlow target, as training
# does: its no-grad pass is then part of every MeanFlow step (FM has none).


def jvp_of(fam: str):
    """How a MeanFlow variant computes ``(u, du/dt)``."""
    return func_jvp if fam == "func_jvp" else dual_jvp


def objective(fam: str, args):
    if fam == "fm":
        return FlowMatchingLoss(class_dropout=0.0)
    return MeanFlowLoss(
        cfg_w=args.cfg_w, cfg_k=args.cfg_k, class_dropout=0.0, jvp=jvp_of(fam), tangent_rows=args.tangent_rows
    )


def guided(args) -> bool:
    return args.cfg_w != 1.0 or args.cfg_k != 0.0


def make_loss(variant, model, args):
    """The loss function of a variant, and an undo for anything it changed on the model."""
    fam = family(variant)
    model.backend = BACKEND_OF.get(fam)
    loss_and_stats = objective(fam, args)

    def loss_of(x, y, noise):
        return loss_and_stats(model, x, y, noise=noise)[0]

    cuda_graphs = is_compiled(variant) and args.compile_mode == "cudagraphs"

    def loss(x, y):  # the draws outside any compiled region, as in the trainer
        if cuda_graphs:  # a new step: the graphs may overwrite the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        return loss_of(x, y, loss_and_stats.sample_noise(x))

    undo = []
    if is_compiled(variant):
        mode = "reduce-overhead" if cuda_graphs else None
        if fam == "func_jvp" or args.compile_mode == "full":
            loss_of = torch.compile(loss_of, mode=mode)
        else:
            # Both of a block's paths: a MeanFlow step also runs plain forwards (the rows with
            # r = t, the guidance pass), and FM runs nothing else.
            for block in model.blocks:
                block.compile(mode=mode)
                undo.append(lambda b=block: setattr(b, "_compiled_call_impl", None))
                if fam != "fm":
                    block.jvp = torch.compile(block.jvp, mode=mode)
                    undo.append(lambda b=block: b.__dict__.pop("jvp", None))
    # Flash attention has no forward-mode AD: torch.func goes through attention in plain ops.
    context = (lambda: unfused_attention(model)) if fam == "func_jvp" else contextlib.nullcontext
    return loss, context, lambda: [f() for f in undo]


# ------------------------------------------------------------------ one step


def training_step(model, opt, backend, loss_fn, context, x, y, device, dtype, mark=None):
    """One timed step: the loss (network pass and target), its backward and the AdamW step.
    ``mark()``, where given, is called before and after each of the three phases."""
    mark = mark or (lambda: None)
    model.backend = backend
    opt.zero_grad(set_to_none=True)
    mark()
    with autocast(device, dtype), context():
        loss = loss_fn(x, y)
    mark()
    loss.backward()
    mark()
    opt.step()
    mark()


def autocast(device, dtype):
    """bf16/fp16: autocast (fp32 master weights, as in training); fp32: nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])
