"""The catalog's second set of mutants of the trainer's core (``tools/mutant_catalog.py`` holds
the first): the eager step and its EMA updates, the CUDA-graphed step's CPU-testable parts,
the learning-rate schedule, the ranks' rows, what a run samples from, the DiT's initialisation
and conditioning, its config's checks, and the restore of a checkpoint. Each is a bug that
trains on without an error and costs a user a run: a warm-up off by one, an EMA updated before
the weights it follows, a state left out of a resume, a weight left at torch's default init."""

from mutant import Mutant
from mutant_catalog_trainer_entry import TRAINER_ENTRY_MUTANTS

__all__ = ["TRAINER_MUTANTS"]

T = "tests/meanflow/"
SCHEDULE = (f"{T}test_train_schedule.py",)
EMA = (f"{T}test_train.py::test_ema_follows_the_weights_after_the_step",)
STEP = (f"{T}test_train_step.py",)
GRAPHED = (f"{T}test_train_step.py::test_the_graphed_steps_body_is_the_eager_step",)
RESUME = (f"{T}test_train.py::test_resume_is_exact",)
TRAIN = (f"{T}test_train_schedule.py", f"{T}test_train.py", f"{T}test_train_step.py")
RUN_START = (f"{T}test_train_weights.py",)
MODELS = (f"{T}test_models_definitions.py", f"{T}test_models.py", f"{T}test_official_peers.py")
DIT_INIT = (f"{T}test_models_init.py", *MODELS)

_STEP_PY = "meanflow/train_step.py"
_TRAIN_PY = "meanflow/train.py"
_MODELS_PY = "meanflow/models.py"
_CONFIG_PY = "meanflow/dit_config.py"
_STATE_PY = "meanflow/train_state.py"
_CHECKPOINT_PY = "meanflow/checkpoint.py"
_EMA_LOOP = "    for ema, weight in zip(emas, ema_weights):\n        update_ema(ema, model, weight)\n"

TRAINER_MUTANTS = [
    # ------------------------------------------------------------- meanflow/train_step.py
    Mutant(
        "step-ema-warmup-a-step-late",
        _STEP_PY,
        "return min(decay, (1 + step) / (10 + step))",
        "return min(decay, step / (10 + step))",
        EMA,
        "the EMA's warm-up a step late: the first update copies the weights (decay 0)",
    ),
    Mutant(
        "step-ema-before-the-optimizer",
        _STEP_PY,
        "    opt.step()\n" + _EMA_LOOP,
        _EMA_LOOP + "    opt.step()\n",
        EMA,
        "the EMAs follow the weights of the step before: one step behind",
    ),
    Mutant(
        "step-ema-first-decay-for-all",
        _STEP_PY,
        "        update_ema(ema, model, weight)\n",
        "        update_ema(ema, model, ema_weights[0])\n",
        EMA,
        "every EMA moves with the first ema_decay",
    ),
    Mutant(
        "step-ema-lerps-the-weights",
        _STEP_PY,
        "torch._foreach_lerp_(ema_params, params, weight)",
        "torch._foreach_lerp_(params, ema_params, weight)",
        (f"{T}test_train_step.py::test_ema_with_a_tensor_weight_is_the_float_one", *EMA),
        "the weights are pulled towards the EMA, which never moves",
    ),
    Mutant(
        "step-gradients-accumulate",
        _STEP_PY,
        "    opt.zero_grad(set_to_none=True)\n    for group in opt.param_groups:",
        "    for group in opt.param_groups:",
        (*RESUME, *GRAPHED),
        "the eager step never clears the gradients: each step applies the sum of all before",
    ),
    Mutant(
        "graphed-step-ema-decay-a-step-ahead",
        _STEP_PY,
        "weight.fill_(1.0 - ema_decay(decay, step))",
        "weight.fill_(1.0 - ema_decay(decay, step + 1))",
        GRAPHED,
        "the graphed step's EMA weights are the next step's",
    ),
    Mutant(
        "graphed-step-warmup-gradients-accumulate",
        _STEP_PY,
        "                self.opt.zero_grad(set_to_none=True)\n                stats = self._body",
        "                stats = self._body",
        GRAPHED,
        "the graphed step's eager warm-up steps add to the gradients of the step before",
    ),
    # ------------------------------------------------------------------ meanflow/train.py
    Mutant(
        "train-lr-warmup-one-step-long",
        _TRAIN_PY,
        "    if step < warmup:\n",
        "    if step <= warmup:\n",
        SCHEDULE,
        "the step after the warm-up runs at lr * (warmup + 1) / warmup",
    ),
    Mutant(
        "train-lr-decay-over-the-whole-run",
        _TRAIN_PY,
        "max(1, config.steps - warmup)",
        "max(1, config.steps)",
        SCHEDULE,
        "the decay spread over every step, warm-up included: the last steps never get near 0",
    ),
    Mutant(
        "train-lr-cosine-quarter-period",
        _TRAIN_PY,
        "math.cos(math.pi * done)",
        "math.cos(0.5 * math.pi * done)",
        SCHEDULE,
        "a quarter cosine: the decay ends at lr / 2",
    ),
    Mutant(
        "train-ranks-keep-rank-0-rows",
        _TRAIN_PY,
        "rows = slice(rank * (config.batch_size // world), (rank + 1) * (config.batch_size // world))",
        "rows = slice(0, config.batch_size // world)",
        (f"{T}test_train.py::test_two_ranks_equal_one",),
        "every rank keeps rank 0's times and noise: the global batch repeats one rank's draws",
    ),
    Mutant(
        "train-emas-one-shared-copy",
        _TRAIN_PY,
        "emas = [copy.deepcopy(model).requires_grad_(False).eval() for _ in config.ema_decays]",
        "emas = [copy.deepcopy(model).requires_grad_(False).eval()] * len(config.ema_decays)",
        EMA,
        "every ema_decay updates one shared EMA, twice a step",
    ),
    Mutant(
        "train-samples-from-the-raw-weights",
        _TRAIN_PY,
        "sampler_model = emas[0] if emas else model",
        "sampler_model = model",
        RUN_START,
        "the sample grids and evaluations of a run with EMAs use its raw weights",
    ),
    Mutant(
        "train-seed-not-in-the-initial-weights",
        _TRAIN_PY,
        "    torch.manual_seed(config.seed)  # the same initial weights on every rank\n",
        "",
        RUN_START,
        "the initial weights ignore --seed: whatever state the global generator was in",
    ),
    Mutant(
        "train-divergence-grad-norm-unchecked",
        _TRAIN_PY,
        ' and math.isfinite(record["grad_norm"])',
        "",
        (f"{T}test_train.py::test_an_infinite_gradient_norm_stops_the_run",),
        "an inf gradient norm with a finite loss trains on, to NaN weights",
    ),
    Mutant(
        "train-finished-run-trains-again",
        _TRAIN_PY,
        "        if step >= config.steps:  # a finished run",
        "        if step > config.steps:  # a finished run",
        ("tests/faults/test_fault_resume.py::test_finished_run_is_left_alone",),
        "a run resumed at its last step rewrites its checkpoint and evaluates again",
    ),
    Mutant(
        "train-graph-rows-counted-globally",
        _TRAIN_PY,
        "    rows = config.batch_size // world\n",
        "    rows = config.batch_size\n",
        (f"{T}test_train_step.py::test_a_dual_row_count_that_varies_keeps_the_graphs_off",),
        "the dual-pass rows counted over the global batch: a rank's varying count is captured in a graph",
    ),
    Mutant(
        "train-ranks-share-global-rngs",
        _TRAIN_PY,
        "    seed_global_rngs(config.seed, 0, rank)\n",
        "    seed_global_rngs(config.seed, 0, 0)\n",
        (f"{T}test_train.py::test_two_ranks_equal_one",),
        "every rank of a fresh run starts rank 0's global generators: the same dropout masks on each",
    ),
    # ----------------------------------------------------------------- meanflow/models.py
    Mutant(
        "models-label-table-default-init",
        _MODELS_PY,
        "            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)\n",
        "            pass\n",
        DIT_INIT,
        "the label table starts at N(0, 1), fifty times DiT's 0.02: labels swamp the times",
    ),
    Mutant(
        "models-second-time-embedder-default-init",
        _MODELS_PY,
        "for embedder in (self.t_embedder, self.second_embedder):",
        "for embedder in (self.t_embedder,):",
        DIT_INIT,
        "the second time embedder (h or r) keeps Xavier weights, not DiT's N(0, 0.02)",
    ),
    Mutant(
        "models-patch-embed-default-init",
        _MODELS_PY,
        "        nn.init.xavier_uniform_(w.view(w.shape[0], -1))\n",
        "",
        DIT_INIT,
        "the patch embedding keeps the convolution's default init, not DiT's Xavier over patches",
    ),
    Mutant(
        "models-forward-without-labels",
        _MODELS_PY,
        "            c = c + self.y_embedder(y)\n",
        "            c = c\n",
        MODELS,
        "the plain forward (the sampler's) ignores the class labels; the dual pass keeps them",
    ),
    Mutant(
        "models-jvp-second-time-tangent-is-t",
        _MODELS_PY,
        "self._second_time(r_dot, t_dot)",
        "t_dot",
        MODELS,
        "the second embedder's tangent is t's: right for h with r_dot = 0, wrong for r and any r_dot",
    ),
    Mutant(
        "models-mlp-exact-gelu",
        _MODELS_PY,
        'F.gelu(self.fc1(x), approximate="tanh")',
        "F.gelu(self.fc1(x))",
        MODELS,
        "the forward's MLP uses exact GELU, the dual pass and DiT's weights the tanh one",
    ),
    Mutant(
        "models-mlp-aten-path-drops-bias",
        _MODELS_PY,
        'F.gelu(self.fc1(x), approximate="tanh")',
        'F.gelu(F.linear(x, self.fc1.weight), approximate="tanh")',
        MODELS,
        "a GPU's plain forward leaves out fc1's bias, which the CPU's fused kernel and the dual pass add",
    ),
    Mutant(
        "models-null-label-refused",
        _MODELS_PY,
        "int(y.max()) > num_classes",
        "int(y.max()) >= num_classes",
        (f"{T}test_models.py", f"{T}test_loss.py"),
        "the null label of classifier-free guidance refused as out of range",
    ),
    # ------------------------------------------------------------ meanflow/dit_config.py
    Mutant(
        "dit-config-hidden-multiple-of-2",
        _CONFIG_PY,
        "        if self.hidden_size % 4:",
        "        if self.hidden_size % 2:",
        (f"{T}test_models.py",),
        "a hidden size of 4k + 2 taken: its 2-D sin-cos positions come out 2 channels short",
    ),
    Mutant(
        "checks-bool-as-int",
        "meanflow/checks.py",
        "    return isinstance(value, int) and not isinstance(value, bool)",
        "    return isinstance(value, int)",
        (f"{T}test_models.py",),
        "depth=True taken as a one-block DiT (and every count checked with is_int takes a bool)",
    ),
    # ------------------------------------------------------------- meanflow/checkpoint.py
    Mutant(
        "checkpoint-made-folders-removed-parent-first",
        _CHECKPOINT_PY,
        "        for created in made:  # the deepest first, while empty",
        "        for created in reversed(made):  # the deepest first, while empty",
        (f"{T}test_checkpoint_locks.py", "tests/faults/test_fault_trainer_options.py"),
        "a refused run on a new nested out_dir leaves the folders it made",
    ),
    Mutant(
        "checkpoint-published-folder-private",
        _CHECKPOINT_PY,
        "    apply_umask_modes(tmp)\n    fsync_tree(tmp)",
        "    fsync_tree(tmp)",
        ("tests/faults/test_fault_writes.py",),
        "an export or sample set stays mkdtemp's 0700: private to its writer",
    ),
    Mutant(
        "checkpoint-full-disk-context-unread",
        _CHECKPOINT_PY,
        "error = error.__cause__ or error.__context__",
        "error = error.__cause__",
        ("tests/faults/test_fault_writes.py", "tests/faults/test_fault_full_disk_clis.py"),
        "torch.save's full disk (its RuntimeError raised while handling ENOSPC) is not a NoSpaceError",
    ),
    # ------------------------------------------------------ meanflow/train_state.py restore
    Mutant(
        "resume-emas-not-restored",
        _STATE_PY,
        "            ema.load_state_dict(state)\n",
        "            pass\n",
        RESUME,
        "a resumed run's EMAs start again from the initial weights",
    ),
    Mutant(
        "resume-optimizer-not-restored",
        _STATE_PY,
        '        load_optimizer_state(opt, ckpt["opt"])\n',
        "",
        RESUME,
        "a resumed run's AdamW moments start again from zero",
    ),
    *TRAINER_ENTRY_MUTANTS,  # the command line, config files, run identity, lr and signals
]
