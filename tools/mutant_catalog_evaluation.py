"""The catalog's mutants of what an evaluation scores and reports (``meanflow.evaluate``, its
inputs and saved statistics, ``meanflow.eval_mnist``): a number from other images than the ones
named, images handed to the extractor in another layout, a report key holding another value,
statistics whose record is lost or read back turned, a classifier that saw the digits it is
tested on. Each gives a number in a paper without an error."""

from mutant import Mutant

__all__ = ["EVALUATION_MUTANTS"]

T = "tests/meanflow/"
EVAL = f"{T}test_evaluate.py::"
REFS = f"{T}test_evaluate_references.py::"
REPORT = f"{T}test_evaluate_report.py::"
INPUTS = f"{T}test_evaluate_inputs.py::"
MNIST = f"{T}test_eval_mnist.py::"
PRC_ISC = (f"{EVAL}test_precision_recall_and_inception_score_values",)
KID = (
    f"{REPORT}test_kid_subsets_are_the_smaller_sets_size_below_1000",
    f"{REPORT}test_kid_of_sets_larger_than_the_subset_size_keeps_it",
)
COPIES = (f"{REPORT}test_a_copy_of_statistics_keeps_their_count",)
MNIST_SCORES = (f"{MNIST}test_samples_that_are_the_test_digits_score_the_test_accuracy_and_distance_zero",)

_EVALUATE_PY = "meanflow/evaluate.py"
_INPUTS_PY = "meanflow/evaluate_inputs.py"
_STATS_PY = "meanflow/reference_stats.py"
_MNIST_PY = "meanflow/eval_mnist.py"

EVALUATION_MUTANTS = [
    # ---------------------------------------------------------------- meanflow/evaluate.py
    Mutant(
        "evaluate-kid-subset-of-the-samples",
        _EVALUATE_PY,
        "size = kid_subset_size_for(min(len(sample_set), len(ref_set)))",
        "size = kid_subset_size_for(len(sample_set))",
        KID[:1],
        "KID of 48 samples against 30 reference images asks for subsets larger than the reference",
    ),
    Mutant(
        "evaluate-prc-sets-swapped",
        _EVALUATE_PY,
        'a, b = (f[layer["prc"]].float().to(dev) for f in (sample_feats, ref_feats))',
        'a, b = (f[layer["prc"]].float().to(dev) for f in (ref_feats, sample_feats))',
        PRC_ISC,
        "precision reported as recall and the reverse: a collapsed model scores full recall",
    ),
    Mutant(
        "evaluate-report-reference-is-the-samples",
        _EVALUATE_PY,
        '"reference": os.path.abspath(reference) if reference else None,',
        '"reference": os.path.abspath(samples) if reference else None,',
        (f"{INPUTS}test_the_report_names_the_files_it_scored",),
        "the report names the samples as the reference: nothing says what FID was measured against",
    ),
    Mutant(
        "evaluate-recorded-crop-unreported",
        _EVALUATE_PY,
        '"ref_size": crop,',
        '"ref_size": ref_size,',
        (f"{EVAL}test_ref_size_reads_a_class_folder_tree_as_the_adm_crops",),
        "FID against saved statistics of center crops reported as of images taken as they were",
    ),
    Mutant(
        "evaluate-recorded-crop-unchecked",
        _EVALUATE_PY,
        "        crop = reference_stats.crop_size(ref_set.stats_record)\n",
        "        crop = None\n",
        (f"{EVAL}test_crop_size_and_samples_size_must_match",),
        "statistics of 16x16 crops scored against 32x32 samples in silence",
    ),
    Mutant(
        "evaluate-copy-of-statistics-claims-this-run",
        _EVALUATE_PY,
        "ref_set.stats_record if ref_set.stats else features)",
        "features)",
        (*COPIES, f"{EVAL}test_reference_statistics_without_a_record_are_used_as_before"),
        "a copy of ADM's statistics (or a file's) saved with this run's record and count, vouching for them",
    ),
    Mutant(
        "evaluate-images-beside-crop-statistics-unchecked",
        _EVALUATE_PY,
        "    if paired and ref_set.has_images:  # also an .npz's images beside statistics of crops\n",
        "    if paired and ref_set.has_images and crop is None:\n",
        (f"{REFS}test_images_beside_statistics_of_center_crops_must_be_of_the_samples_size",),
        "PRC and KID of 16x16 samples against an .npz's 32x32 images beside statistics of 16x16 crops",
    ),
    # ---------------------------------------------------------- meanflow/evaluate_inputs.py
    Mutant(
        "evaluate-batches-drop-the-remainder",
        _INPUTS_PY,
        "        for start in range(0, n, size):\n",
        "        for start in range(0, n - n % size, size):\n",
        (f"{INPUTS}test_every_image_is_extracted_as_saved_whatever_the_batch_size", *KID),
        "the last partial batch never scored: 50,000 samples reported, 49,984 scored",
    ),
    Mutant(
        "evaluate-images-transposed",
        _INPUTS_PY,
        "x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2)",
        "x = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 2, 1)",
        (*PRC_ISC, f"{INPUTS}test_every_image_is_extracted_as_saved_whatever_the_batch_size"),
        "every image reaches the extractor transposed: features of other images than those saved",
    ),
    Mutant(
        "evaluate-npz-fortran-order-ignored",
        _INPUTS_PY,
        'order="F" if fortran else "C")',
        'order="C")',
        (f"{INPUTS}test_an_npz_saved_in_fortran_order_holds_its_images",),
        "an .npz of images saved in Fortran order (np.savez of a transposed array) read scrambled",
    ),
    Mutant(
        "evaluate-hidden-folders-scored",
        _INPUTS_PY,
        'dirs[:] = sorted(d for d in dirs if not d.startswith("."))',
        "dirs[:] = sorted(dirs)",
        (f"{INPUTS}test_hidden_folders_and_files_beside_the_images_are_not_scored",),
        "a folder's .ipynb_checkpoints copies (or .Trash) scored as samples beside the images",
    ),
    Mutant(
        "evaluate-folder-size-width-first",
        _INPUTS_PY,
        "            return image.height, image.width\n",
        "            return image.width, image.height\n",
        (f"{INPUTS}test_a_folder_of_wide_images_is_measured_height_first",),
        "a folder of wide images measured as tall: refused against its own size, statistics turned",
    ),
    # ------------------------------------------------------------ meanflow/reference_stats.py
    Mutant(
        "ref-stats-size-read-as-hxw",
        _STATS_PY,
        '    w, h = found[SIZE].split("x")\n',
        '    h, w = found[SIZE].split("x")\n',
        (f"{REFS}test_saved_statistics_of_images_read_as_they_are_keep_their_size",),
        "statistics of wide images read back as of tall ones: refused for their own samples",
    ),
    Mutant(
        "ref-stats-optional-record-unwritten",
        _STATS_PY,
        "members.update({k: np.str_(found[k]) for k in (*RECORD, *OPTIONAL) if k in found})",
        "members.update({k: np.str_(found[k]) for k in RECORD if k in found})",
        (f"{EVAL}test_precomputed_reference_statistics",),
        "saved statistics lose their crop, size and count: reused for samples of any size",
    ),
    Mutant(
        "ref-stats-weights-unchecked",
        _STATS_PY,
        "    differ = [k for k in RECORD if recorded[k] != current[k]]\n",
        "    differ = [k for k in RECORD[:2] if recorded[k] != current[k]]\n",
        (f"{EVAL}test_reference_statistics_from_other_features_are_refused",),
        "statistics of random Inception weights taken as the reference of a run with the published ones",
    ),
    Mutant(
        "ref-stats-any-npz-with-mu-replaced",
        _STATS_PY,
        '    return names == members or recorded <= names <= recorded | {f"{k}.npy" for k in OPTIONAL}\n',
        "    return members <= names\n",
        (f"{EVAL}test_outputs_never_replace_inputs_or_foreign_files_and_are_checked_first",),
        "--save-ref-stats writes over an ADM reference batch (its 10k images lost): it holds mu and sigma",
    ),
    # -------------------------------------------------------------- meanflow/eval_mnist.py
    Mutant(
        "mnist-steps-true-taken-as-one",
        _MNIST_PY,
        'check_int_at_least("steps", steps)',
        'check_int_at_least("steps", int(steps))',
        (f"{MNIST}test_evaluate_checks_before_loading_the_classifier",),
        "evaluate(model, steps=True) scores one-step samples: a flag mistaken for a count",
    ),
    Mutant(
        "mnist-classifier-trained-on-the-test-split",
        _MNIST_PY,
        "(images, labels), (test_x, test_y) = splits or",
        "(test_x, test_y), (images, labels) = splits or",
        (f"{MNIST}test_the_classifier_learns_the_training_split_and_is_tested_on_the_test_split",),
        "the classifier learns the test digits and reports its accuracy on the training split",
    ),
    Mutant(
        "mnist-reference-features-of-the-train-split",
        _MNIST_PY,
        "feats, _ = _features_and_logits(model, to_pixels(splits[1][0]))",
        "feats, _ = _features_and_logits(model, to_pixels(splits[0][0]))",
        MNIST_SCORES,
        "the Frechet distance measured against the training digits the classifier learnt, not the test set",
    ),
    Mutant(
        "mnist-sample-covariance-biased",
        _MNIST_PY,
        'fd = frechet_distance(feats.mean(0), feats.T.cov(), state["mu"], state["sigma"])',
        'fd = frechet_distance(feats.mean(0), feats.T.cov(correction=0), state["mu"], state["sigma"])',
        MNIST_SCORES,
        "the samples' covariance divided by n, the test set's by n - 1: a distance of the count",
    ),
    Mutant(
        "mnist-pixels-in-0-1",
        _MNIST_PY,
        ".permute(0, 3, 1, 2).float() / 127.5 - 1.0",
        ".permute(0, 3, 1, 2).float() / 255.0",
        (f"{MNIST}test_the_classifier_scores_the_8_bit_images_a_user_saves", *MNIST_SCORES),
        "samples scored in [0, 1] by a classifier that learnt digits in [-1, 1]",
    ),
    Mutant(
        "mnist-seed-ignored",
        _MNIST_PY,
        "g = torch.Generator(device=device).manual_seed(seed)",
        "g = torch.Generator(device=device).manual_seed(0)",
        (f"{MNIST}test_the_seed_draws_the_samples_scored",),
        "--seed 1 scores the samples of seed 0: every seed reports one number",
    ),
]
