"""The catalog's mutants of the data side, listed in ``tools/mutant_catalog_models.py``: the
loaders' order and resume (``meanflow/data/sharding.py``), image folders and their decoding
(``image_folder``, ``dali_images``), latent folders (``latents``), MNIST, and the latents
``prepare_latents`` writes. Each is a bug that trains on other data than the data set's without an
error: a sample read twice or never, a label shifted, an image decoded otherwise, a check left out."""

from mutant import Mutant

__all__ = ["DATA_MUTANTS"]

T = "tests/meanflow/"
LATENTS = (f"{T}test_data_latents.py",)
IMAGES = (f"{T}test_data_images.py",)
SHARDS = (f"{T}test_data.py", f"{T}test_data_latents.py")
INTEGRITY = (f"{T}test_data_integrity.py",)
PREPARE = "tests/faults/test_fault_prepare_latents.py"
DECODE_RULES = (f"{PREPARE}::test_a_folder_begun_under_other_decoding_rules_is_not_finished",)
MNIST_READS = (f"{T}test_eval_mnist.py::test_a_trainer_reads_and_hashes_its_data_once_for_all_evaluations",)

DATA_MUTANTS = [
    # --------------------------------------------------------------------- meanflow/data/
    Mutant(
        "image-loader-read-failures-not-resumed",
        "meanflow/data/image_folder.py",
        '    channels = 3\n    resumable_parts = ("read_failures",)\n',
        "    channels = 3\n",
        (f"{T}test_data_images.py::test_an_epochs_read_failures_are_counted_across_a_resume[torch]",),
        "a resumed epoch counts its read failures from zero: more than max_read_failures go on silently",
    ),
    Mutant(
        "dali-loader-read-failures-not-resumed",
        "meanflow/data/dali_images.py",
        '    channels = 3\n    resumable_parts = ("read_failures",)\n',
        "    channels = 3\n",
        (f"{T}test_data_images.py::test_an_epochs_read_failures_are_counted_across_a_resume[dali]",),
        "the DALI loader's resumed epoch counts its read failures from zero",
    ),
    Mutant(
        "read-failures-resumed-without-the-failed",
        "meanflow/data/image_folder.py",
        'self.failed, self.reads[:], self.class_failures[:] = failed, state["reads"], state["failures"]',
        'self.reads[:], self.class_failures[:] = state["reads"], state["failures"]',
        (f"{T}test_data_images.py::test_an_epochs_read_failures_are_counted_across_a_resume[torch]",),
        "a resumed epoch keeps its reads per class but not its failures: the limit restarts at zero",
    ),
    Mutant(
        "sharding-ranks-interleaved",
        "meanflow/data/sharding.py",
        "shape = (self.batches_per_epoch, self.world_size, self.batch_size)",
        "shape = (self.batches_per_epoch, self.batch_size, self.world_size)",
        SHARDS,
        "rank k takes every world-th sample: the data depend on the rank count",
    ),
    Mutant(
        "sharding-same-order-every-epoch",
        "meanflow/data/sharding.py",
        "g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)",
        "g = torch.Generator().manual_seed(self.seed)",
        SHARDS,
        "every epoch the same permutation and flips",
    ),
    Mutant(
        "sharding-advance-off-by-one",
        "meanflow/data/sharding.py",
        "        return self.epoch, self.position - 1\n",
        "        return self.epoch, self.position\n",
        LATENTS,
        "the torch latent loader draws each batch's noise for the next batch's position",
    ),
    Mutant(
        "latents-noise-same-every-rank",
        "meanflow/data/latents.py",
        "noise = noise[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]",
        "noise = noise[: self.batch_size]",
        LATENTS,
        "every rank draws the first rank's posterior noise",
    ),
    Mutant(
        "latents-flip-height",
        "meanflow/data/latents.py",
        "moments[:, 0].flip(-1)",
        "moments[:, 0].flip(-2)",
        LATENTS,
        "latent flips mirror top to bottom",
    ),
    Mutant(
        "latents-shift-after-scale",
        "meanflow/data/latents.py",
        "return (z - shift) * scale",
        "return z * scale - shift",
        LATENTS,
        "a shifted VAE's latents shifted after scaling",
    ),
    Mutant(
        "latents-shard-labels-count-unchecked",
        "meanflow/data/latents.py",
        'if labels.shape != (shard["count"],):',
        "if labels.ndim != 1:",
        INTEGRITY,
        "a shard's labels.npy with a label too many, another's with one too few: every label between shifted",
    ),
    Mutant(
        "latents-shard-labels-null-class-accepted",
        "meanflow/data/latents.py",
        "labels.max() < num_classes)",
        "labels.max() <= num_classes)",
        INTEGRITY,
        "a latent labelled with the class count trains as classifier-free guidance's null class",
    ),
    Mutant(
        "latents-manifest-keys-unchecked",
        "meanflow/data/latents.py",
        "    _check_keys(path, manifest)\n",
        "",
        (f"{T}test_data_integrity.py::test_a_manifest_lacking_a_key_is_named",),
        "a manifest lacking a key fails with a bare KeyError naming neither the file nor the folder",
    ),
    Mutant(
        "latents-not-square-folder-unnamed",
        "meanflow/data/latents.py",
        'f"latent folder {self.index.root!r} holds {self.index.height}x{self.index.width} latents "',
        'f"latents must be square, got {self.index.height}x{self.index.width} "',
        (f"{T}test_data_integrity.py::test_latents_that_are_not_square_name_their_folder",),
        "latents that are not square refused without naming the folder or its manifest's key",
    ),
    Mutant(
        "data-ranks-compare-sample-counts-only",
        "meanflow/data/__init__.py",
        "lists = gather(world_size, (count, digest))",
        'lists = gather(world_size, (count, ""))',
        INTEGRITY,
        "ranks whose copies hold as many samples, other ones or other labels, draw other permutations",
    ),
    Mutant(
        "data-ranks-image-lists-unchecked",
        "meanflow/data/__init__.py",
        "    check_same_samples(world_size, root, index.files, index.labels)\n",
        "",
        INTEGRITY,
        "a node whose image folder lacks a file gives its ranks another permutation: overlapping batches",
    ),
    Mutant(
        "data-ranks-mnist-unchecked",
        "meanflow/data/__init__.py",
        '    check_same_data(world_size, source, len(loader.images), digest, "images")\n',
        "",
        (f"{T}test_data_integrity.py::test_ranks_whose_mnist_differs_are_refused",),
        "a node whose MNIST files hold other images trains its ranks on other data than rank 0 records",
    ),
    Mutant(
        "sharding-left-out-per-rank-batch",
        "meanflow/data/sharding.py",
        "self.left_out = num_samples - self.batches_per_epoch * self.global_batch",
        "self.left_out = num_samples % batch_size",
        INTEGRITY,
        "the samples an epoch leaves out counted against the per-rank batch: under-reported",
    ),
    Mutant(
        "sharding-too-large-batch-per-rank-named",
        "meanflow/data/sharding.py",
        'f"batch_size {self.global_batch}{ranks} exceeds',
        'f"batch_size {batch_size}{ranks} exceeds',
        INTEGRITY,
        "a batch larger than the data set named by its per-rank size, not the trainer's batch_size",
    ),
    Mutant(
        "data-left-out-warned-for-any-count",
        "meanflow/data/__init__.py",
        "plan.left_out >= LEFT_OUT_WARNING * plan.num_samples",
        "plan.left_out >= LEFT_OUT_WARNING",
        INTEGRITY,
        "every run whose batch does not divide the data set warned, a few samples of ImageNet too",
    ),
    Mutant(
        "latents-manifest-json-error-unnamed",
        "meanflow/data/latents.py",
        "    except ValueError as e:  # cut short by an interrupted copy, or not JSON at all",
        "    except OSError as e:  # cut short by an interrupted copy, or not JSON at all",
        INTEGRITY,
        "a manifest.json cut short fails with json's message alone, naming no file",
    ),
    Mutant(
        "images-flip-height",
        "meanflow/data/image_folder.py",
        "arr = arr[:, ::-1].copy() if flip else arr.copy()",
        "arr = arr[::-1].copy() if flip else arr.copy()",
        IMAGES,
        "the random flip mirrors top to bottom",
    ),
    Mutant(
        "images-adm-halving-strict",
        "meanflow/data/image_folder.py",
        "while min(*pil_image.size) >= 2 * image_size:",
        "while min(*pil_image.size) > 2 * image_size:",
        IMAGES,
        "an image of short side exactly 2 * size is not BOX-halved first (ADM halves it)",
    ),
    Mutant(
        "images-16-bit-png-clipped",
        "meanflow/data/image_folder.py",
        'if im.mode == "I" or im.mode.startswith("I;16"):',
        'if im.mode == "I":',
        IMAGES,
        "a 16-bit grayscale PNG or TIFF read by PIL's conversion, which clips it to white",
    ),
    Mutant(
        "images-dali-exif-orientation",
        "meanflow/data/dali_images.py",
        "decode = dict(output_type=types.RGB, adjust_orientation=False)",
        "decode = dict(output_type=types.RGB)",
        IMAGES,
        "DALI turns photos by their EXIF orientation tag, PIL does not: the loaders train on other images",
    ),
    Mutant(
        "images-dali-side-rounded-half-up",
        "meanflow/data/dali_images.py",
        "up = (value - low > 0.5) | ((value - low == 0.5) & odd)",
        "up = value - low >= 0.5",
        IMAGES,
        "DALI resizes 70 x 64 to 48 x 53 where ADM's round(52.5) gives 52: a whole image resampled otherwise",
    ),
    Mutant(
        "mnist-digits-off-centre",
        "meanflow/data/mnist.py",
        "x = F.pad(images, (2, 2, 2, 2))",
        "x = F.pad(images, (0, 4, 0, 4))",
        (f"{T}test_data.py",),
        "MNIST digits padded into the top-left corner, not centred",
    ),
    Mutant(
        "mnist-count-mismatch-names-no-file",
        "meanflow/data/mnist.py",
        'f"MNIST files {files[0]} and {files[1]} hold {len(images)} images but {len(labels)} labels"',
        'f"MNIST {split}: {len(images)} images but {len(labels)} labels"',
        (f"{T}test_data.py",),
        "images and labels of other counts refused without naming the files",
    ),
    Mutant(
        "mnist-hash-kept-by-path-and-size",
        "meanflow/data/mnist.py",
        "return path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino",
        "return path, st.st_size",
        MNIST_READS,
        "MNIST files rewritten at their size keep their old hash and classifier: not read again",
    ),
    Mutant(
        "mnist-classifier-key-rereads-train",
        "meanflow/data/mnist.py",
        "if loaded is None and files in _DIGESTS:",
        "if loaded is None and files in _DIGESTS and n > 0:",
        MNIST_READS,
        "the classifier's key hashes the training split again instead of continuing the loader's hash",
    ),
    Mutant(
        "mnist-classifier-reloaded-each-evaluation",
        "meanflow/eval_mnist.py",
        "    state = _LOADED.get(file_signature(path)) if os.path.isfile(path) else None\n",
        "    state = None\n",
        MNIST_READS,
        "every evaluation of a run reads the classifier's cache file again",
    ),
    # ---------------------------------------------------------------- meanflow/prepare_latents.py
    Mutant(
        "prepare-latents-decode-version-unchecked",
        "meanflow/prepare_latents.py",
        "            _check_decode_version(old, dst)\n",
        "",
        DECODE_RULES,
        "a folder begun before the image decoding changed is finished with the new decodes, in silence",
    ),
    Mutant(
        "prepare-latents-unversioned-folder-taken-as-current",
        "meanflow/prepare_latents.py",
        'version = old.get("decode_version", 1)',
        'version = old.get("decode_version", DECODE_VERSION)',
        DECODE_RULES,
        "a manifest from before the version was recorded passes for one of today's decoding rules",
    ),
]
