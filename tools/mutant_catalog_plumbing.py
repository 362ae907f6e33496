"""The catalog's mutants of the step's plumbing: ``meanflow/train_step.py``,
``meanflow/distributed.py``, ``meanflow/demo.py``, ``meanflow/data/scan_cache.py`` and
``mfkernels/backends/triton/triton_compat.py``, and the suite's own skip of GPU tests
(``tests/conftest.py``). Each is a bug that runs a step, a rank, the demo, a cached scan or a
test otherwise than asked, without a word.

Left unmutated because only a GPU shows them: ``GraphedStep``'s side stream (``_side_stream``)
and ``non_blocking`` copies, the real capture and replay of a CUDA graph (the tests here stand
a recording fake in for ``torch.cuda.graph``), the NCCL backend of a GPU group, ``dot``'s
``input_precision`` (the interpreter ignores it), ``device_guard``'s CUDA branch, and the
demo's ``torch.cuda.synchronize`` around its timings. Also unmutated: the demo's timings
themselves (``_median_ms``), which no test may assert on, and ``write_scan_cache``'s
``makedirs`` (dropped, it is equivalent: ``atomic_write`` makes the folder too)."""

from mutant import Mutant

__all__ = ["PLUMBING_MUTANTS"]

_STEP = "meanflow/train_step.py"
_DIST = "meanflow/distributed.py"
_DEMO = "meanflow/demo.py"
_CACHE = "meanflow/data/scan_cache.py"
_COMPAT = "mfkernels/backends/triton/triton_compat.py"
T = "tests/meanflow/"
STEP = f"{T}test_train_step.py"
BODY = f"{STEP}::test_the_graphed_steps_body_is_the_eager_step"
EMA_TENSOR = f"{STEP}::test_ema_with_a_tensor_weight_is_the_float_one"
CAPTURE = f"{T}test_train_step_capture.py"
EMA_AFTER = f"{T}test_train.py::test_ema_follows_the_weights_after_the_step"
DIST = f"{T}test_distributed_setup.py"
DIST_RANKS = f"{DIST}::test_a_failure_on_one_rank_is_raised_on_every_rank"
DIST_DEVICES = f"{T}test_distributed_devices.py"
DEMO = f"{T}test_demo.py"
CACHE = f"{T}test_scan_cache.py"
SCAN_ORDER = f"{T}test_data_scan_order.py"
PLUMBING = "tests/mfkernels/test_kernel_plumbing.py"
COMPAT = "tests/mfkernels/test_triton_compat.py"
HALF = "tests/mfkernels/test_attention_jvp.py::test_half_precision"

PLUMBING_MUTANTS = [
    # ------------------------------------------------------------------ meanflow/train_step.py
    Mutant(
        "plumb-step-ema-tensor-weight-complement",
        _STEP,
        "[weight] * len(params)",
        "[1 - weight] * len(params)",
        (EMA_TENSOR, BODY),
        "the graphed step's EMA lerps by the decay instead of 1 - decay",
    ),
    Mutant(
        "plumb-step-eager-ema-decay-a-step-ahead",
        _STEP,
        "weights = [1.0 - ema_decay(d, step) for d in decays]",
        "weights = [1.0 - ema_decay(d, step + 1) for d in decays]",
        (EMA_AFTER, BODY),
        "the eager step's EMA warmup runs a step ahead of the graphed one's",
    ),
    Mutant(
        "plumb-step-clip-zero-clips-everything",
        _STEP,
        'grad_clip or float("inf")',
        "grad_clip",
        (CAPTURE,),
        "a grad_clip of 0 (off) clips every gradient to zero: the weights move by weight decay only",
    ),
    Mutant(
        "plumb-step-lr-on-the-first-group-only",
        _STEP,
        '    for group in opt.param_groups:\n        group["lr"] = lr\n',
        '    for group in opt.param_groups[:1]:\n        group["lr"] = lr\n',
        (CAPTURE,),
        "the schedule's rate set on the first param group only: the others keep their first rate",
    ),
    Mutant(
        "plumb-graphs-any-group-capturable",
        _STEP,
        'if not all(group.get("capturable") for group in opt.param_groups):',
        'if not any(group.get("capturable") for group in opt.param_groups):',
        (CAPTURE,),
        "one capturable group of several passes for a capturable optimizer",
    ),
    Mutant(
        "plumb-graphs-only-cpu-refused",
        _STEP,
        'if device.type != "cuda":',
        'if device.type == "cpu":',
        (CAPTURE,),
        "a device that is neither the CPU nor a GPU (mps, meta) is let into a CUDA capture",
    ),
    Mutant(
        "plumb-graphed-ema-weights-shared",
        _STEP,
        "self.ema_weights = [torch.zeros((), device=device) for _ in self.decays]",
        "self.ema_weights = [torch.zeros((), device=device)] * len(self.decays)",
        (CAPTURE, BODY),
        "every EMA of the graphed step lerps by the last decay's weight",
    ),
    Mutant(
        "plumb-graphed-ema-decays-reversed",
        _STEP,
        "for weight, decay in zip(self.ema_weights, self.decays):",
        "for weight, decay in zip(self.ema_weights, self.decays[::-1]):",
        (BODY,),
        "each EMA of the graphed step follows another EMA's decay",
    ),
    Mutant(
        "plumb-graphed-one-warmup-too-many",
        _STEP,
        "if self.graph is None and self.warmup > 0:",
        "if self.graph is None and self.warmup >= 0:",
        (CAPTURE,),
        "one eager step more than the warmup asked before the capture",
    ),
    Mutant(
        "plumb-graphed-never-captures",
        _STEP,
        "            self.warmup -= 1\n",
        "",
        (CAPTURE,),
        "the graphed step stays eager for good: the graphs asked for never run",
    ),
    Mutant(
        "plumb-graphed-inputs-not-refilled",
        _STEP,
        "        self._fill_inputs(batch, noise)\n",
        "",
        (CAPTURE,),
        "every replay trains on the captured step's batch and draws",
    ),
    Mutant(
        "plumb-graphed-noise-not-refilled",
        _STEP,
        "            *((static_noise[k], noise[k]) for k in static_noise),\n",
        "",
        (CAPTURE,),
        "every replay reuses the captured step's times, noise and dropped labels",
    ),
    Mutant(
        "plumb-graphed-shapes-unchecked",
        _STEP,
        "            if value.shape != static.shape:",
        "            if False:",
        (CAPTURE,),
        "a batch of another shape is broadcast into the graph's buffers, or fails deep in copy_",
    ),
    Mutant(
        "plumb-graphed-no-labels-not-skipped",
        _STEP,
        "            if static is None:  # no labels: an unconditional model\n                continue\n",
        "",
        (CAPTURE,),
        "an unconditional model's graphed step fails at its first replay",
    ),
    Mutant(
        "plumb-graphed-inputs-alias-the-first-batch",
        _STEP,
        "self.inputs = ([_clone(t) for t in batch], {k: v.clone() for k, v in noise.items()})",
        "self.inputs = (list(batch), dict(noise))",
        (CAPTURE,),
        "the graph's buffers are the caller's first batch: every later step overwrites it",
    ),
    Mutant(
        "plumb-graphed-capture-adds-to-warmup-gradients",
        _STEP,
        "        self.opt.zero_grad(set_to_none=True)\n        self.graph = torch.cuda.CUDAGraph()\n",
        "        self.graph = torch.cuda.CUDAGraph()\n",
        (CAPTURE,),
        "the captured step adds its gradients to the last warmup step's",
    ),
    Mutant(
        "plumb-graphed-stats-are-the-graphs-own",
        _STEP,
        "        self.graph.replay()\n        return {k: v.clone() for k, v in self.outputs.items()}\n",
        "        self.graph.replay()\n        return self.outputs\n",
        (CAPTURE,),
        "a replayed step's stats are rewritten by the next replay (the logged loss is a later step's)",
    ),
    # ---------------------------------------------------------------- meanflow/distributed.py
    Mutant(
        "plumb-dist-auto-always-cpu",
        _DIST,
        'return torch.device("cuda" if torch.cuda.is_available() else "cpu")',
        'return torch.device("cpu")',
        (DIST_DEVICES,),
        "device auto trains on the CPU of a GPU machine",
    ),
    Mutant(
        "plumb-dist-bad-name-torchs-error",
        _DIST,
        "    except (RuntimeError, TypeError):\n",
        "    except TypeError:\n",
        (DIST_DEVICES,),
        "a misspelt device is torch's RuntimeError, not the one-line usage error",
    ),
    Mutant(
        "plumb-dist-any-device-type",
        _DIST,
        'if device is None or device.type not in ("cpu", "cuda"):',
        "if device is None:",
        (DIST_DEVICES,),
        "a meta or mps device is taken, to fail later deep in a kernel",
    ),
    Mutant(
        "plumb-dist-gpu-index-unchecked",
        _DIST,
        "        _check_cuda_index(name, device.index or 0)\n",
        "        pass\n",
        (DIST_DEVICES,),
        "cuda:N past the machine's GPUs is torch's driver error at the first CUDA call",
    ),
    Mutant(
        "plumb-dist-gpu-index-off-by-one",
        _DIST,
        "if index >= count:",
        "if index > count:",
        (DIST_DEVICES,),
        "cuda:2 on a machine of 2 GPUs is let through",
    ),
    Mutant(
        "plumb-dist-gpu-from-global-rank",
        _DIST,
        'device = torch.device("cuda", local)',
        'device = torch.device("cuda", rank)',
        (DIST_DEVICES,),
        "on a second node, rank 5 asks for GPU 5 of its 4",
    ),
    Mutant(
        "plumb-dist-local-gpu-unchecked",
        _DIST,
        '            _check_cuda_index(f"{device_name} (LOCAL_RANK {local})", local)\n',
        "",
        (DIST_DEVICES,),
        "more ranks than GPUs on a node: torch's driver error instead of one naming LOCAL_RANK",
    ),
    Mutant(
        "plumb-dist-gpu-not-made-current",
        _DIST,
        "        torch.cuda.set_device(device)\n",
        "",
        (DIST_DEVICES,),
        "every rank's NCCL and current-device work lands on GPU 0",
    ),
    Mutant(
        "plumb-dist-own-error-swallowed",
        _DIST,
        "    if error is not None:\n        raise error\n",
        "",
        (DIST_DEVICES, DIST),
        "a rank's own error is lost (an unbound result's NameError instead)",
    ),
    Mutant(
        "plumb-dist-first-rank-only-looked-at",
        _DIST,
        "failed = next((o for o in outcomes if o is not None), None)",
        "failed = outcomes[0]",
        (DIST_RANKS,),
        "a failure on any rank but 0 leaves the others waiting",
    ),
    Mutant(
        "plumb-dist-on-rank0-runs-everywhere",
        _DIST,
        "fn if rank == 0 else _nothing",
        "fn",
        (DIST_DEVICES,),
        "every rank writes the files meant to be written once",
    ),
    Mutant(
        "plumb-dist-floating-point-error-not-kept",
        _DIST,
        "_KINDS = (FileNotFoundError, FloatingPointError, ValueError,",
        "_KINDS = (FileNotFoundError, ValueError,",
        (DIST,),
        "a non-finite loss on one rank is a RuntimeError on the others (another exit status)",
    ),
    Mutant(
        "plumb-dist-other-kind-unnamed",
        _DIST,
        'return "RuntimeError", f"{type(error).__name__}: {error}"',
        'return "RuntimeError", str(error)',
        (DIST,),
        "another rank's KeyError arrives as a bare message, its kind lost",
    ),
    # ----------------------------------------------------------------------- meanflow/demo.py
    Mutant(
        "plumb-demo-tangent-error-of-u",
        _DEMO,
        "err_d = ((dudt - dudt_ref).abs().max()",
        "err_d = ((u - u_ref).abs().max()",
        (DEMO,),
        "the demo's du/dt agreement is u's: a wrong tangent reads as agreeing",
    ),
    Mutant(
        "plumb-demo-params-in-mib",
        _DEMO,
        "params = sum(p.numel() for p in model.parameters()) / 1e6",
        "params = sum(p.numel() for p in model.parameters()) / 2**20",
        (DEMO,),
        "the parameter count printed in units of 2**20, labelled M",
    ),
    Mutant(
        "plumb-demo-classes-ignored",
        _DEMO,
        "args.preset, num_classes=args.num_classes, in_channels",
        "args.preset, in_channels",
        (DEMO,),
        "--num-classes builds the preset's default label table whatever is asked",
    ),
    # ------------------------------------------------------------- meanflow/data/scan_cache.py
    Mutant(
        "plumb-cache-read-only-root-writable",
        _CACHE,
        "if os.access(root, os.W_OK):",
        "if os.access(root, os.R_OK):",
        (CACHE,),
        "a read-only tree's cache is put beside it, where it cannot be written",
    ),
    Mutant(
        "plumb-cache-key-basename-only",
        _CACHE,
        "hashlib.sha1(root.encode())",
        "hashlib.sha1(os.path.basename(root).encode())",
        (CACHE,),
        "two read-only trees of one name share a cache",
    ),
    Mutant(
        "plumb-cache-key-relative-root",
        _CACHE,
        "    root = os.path.abspath(root)\n",
        "",
        (CACHE,),
        "a read-only tree's cache depends on the directory the run starts in",
    ),
    Mutant(
        "plumb-cache-another-trees-verdicts",
        _CACHE,
        ' or cache.get("root") != root:',
        ":",
        (CACHE,),
        "a cache written for another tree (or a moved one) is taken for this one",
    ),
    Mutant(
        "plumb-cache-older-format-read",
        _CACHE,
        'if cache.get("version") != SCAN_VERSION or',
        "if",
        (CACHE,),
        "a cache of an older format is read as the current one",
    ),
    Mutant(
        "plumb-cache-no-entries-crashes",
        _CACHE,
        "except (OSError, ValueError, KeyError, AttributeError):",
        "except (OSError, ValueError, AttributeError):",
        (CACHE, SCAN_ORDER),
        "a cache without its entries crashes every run on the folder",
    ),
    Mutant(
        "plumb-cache-missing-file-warned",
        _CACHE,
        "if not path or not os.path.isfile(path):",
        "if not path:",
        (CACHE,),
        "a first scan warns of an unreadable cache that is merely not written yet",
    ),
    Mutant(
        "plumb-cache-relative-path-folder",
        "meanflow/checkpoint.py",
        "    directory = os.path.dirname(os.path.abspath(path))\n    os.makedirs(directory, exist_ok=True)",
        "    directory = os.path.dirname(path)\n    os.makedirs(directory, exist_ok=True)",
        (CACHE,),
        "a cache path without a folder (scan.json) fails at makedirs('')",
    ),
    # ---------------------------------------------- mfkernels/backends/triton/triton_compat.py
    Mutant(
        "plumb-compat-interpret-by-default",
        _COMPAT,
        'os.environ.get("TRITON_INTERPRET", "0") == "1"',
        'os.environ.get("TRITON_INTERPRET", "1") == "1"',
        (COMPAT,),
        "without TRITON_INTERPRET the kernels take the interpreter's slow fp32 dots",
    ),
    Mutant(
        "plumb-compat-interpreter-dot-in-half",
        _COMPAT,
        "return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=input_precision)",
        "return tl.dot(a, b, acc, input_precision=input_precision)",
        (HALF,),
        "the interpreter's dots of bf16/fp16 operands, which it computes wrongly",
    ),
    Mutant(
        "plumb-compat-no-triton-unchecked",
        _COMPAT,
        '    if not HAS_TRITON:\n        return "needs the triton package"\n',
        "",
        (COMPAT,),
        "a machine without Triton takes the triton backend (its kernels are no-op stand-ins)",
    ),
    Mutant(
        "plumb-compat-bf16-refused",
        _COMPAT,
        "(torch.float32, torch.float16, torch.bfloat16)",
        "(torch.float32, torch.float16)",
        (COMPAT,),
        "bf16 tensors fall back from the triton backend without a word",
    ),
    Mutant(
        "plumb-compat-alignment-first-extent-only",
        _COMPAT,
        "math.gcd(16 // element_size, *extents)",
        "math.gcd(16 // element_size, extents[0])",
        (PLUMBING,),
        "a row stride that is not a multiple of the head dim's alignment is taken as aligned",
    ),
    # ---------------------------------------------------------------------- tests/conftest.py
    Mutant(
        "plumb-conftest-gpu-by-keyword",
        "tests/conftest.py",
        'if item.get_closest_marker("gpu") is not None:',
        'if "gpu" in item.keywords:',
        ("tests/test_gpu_marker.py",),
        "a CPU test parametrised with the id 'gpu' is skipped on every machine without a GPU",
    ),
]
