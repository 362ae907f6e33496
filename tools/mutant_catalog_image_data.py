"""The catalog's mutants of the image readers: the image-folder scan, decode and ADM crop
(``meanflow/data/image_folder.py``) and the DALI pipeline (``meanflow/data/dali_images.py``).
Each is a bug that trains on other pixels, labels or samples than the folder holds, without a
word."""

from mutant import Mutant

__all__ = ["IMAGE_DATA_MUTANTS"]

_FOLDER = "meanflow/data/image_folder.py"
_DALI = "meanflow/data/dali_images.py"
T = "tests/meanflow/"
IMAGES = f"{T}test_data_images.py::"
SCAN = f"{T}test_data_scan_order.py::"
FAIL = f"{T}test_data_read_failures.py::"
DECODE = f"{T}test_data_decode_rules.py::"
PROVENANCE = f"{T}test_latent_provenance.py::"
FAULTS = "tests/faults/test_fault_image_folders.py::"
SCAN_COUNTS = f"{IMAGES}test_scan_skips_corrupt_and_counts"
ADM_REFERENCE = f"{IMAGES}test_adm_center_crop_reference"
ADM_EDGES = f"{DECODE}test_adm_crop_rounds_the_long_side_and_floors_the_margin"
GRAY16 = f"{IMAGES}test_16_bit_grayscale_is_scaled_to_8_bits"
DALI_EDGES = f"{DECODE}test_dali_follows_the_adm_crop_at_its_edges"
DALI_EVEN = f"{PROVENANCE}test_dali_crop_is_adms_where_the_halvings_are_even"
DALI_ODD = f"{PROVENANCE}test_dali_crop_near_adms_at_odd_halvings"
AGREE = f"{IMAGES}test_dali_and_torch_agree_sample_by_sample"
FALLBACK = f"{IMAGES}test_dali_decode_error_falls_back_to_pil"
RESUMED_FAILURES = f"{IMAGES}test_an_epochs_read_failures_are_counted_across_a_resume"

IMAGE_DATA_MUTANTS = [
    # ------------------------------------------------------------ meanflow/data/image_folder.py
    Mutant(
        "imgdata-check-image-never-decodes",
        _FOLDER,
        "            im.load()\n",
        "",
        (SCAN_COUNTS,),
        "the scan reads headers only: truncated JPEGs pass as images and fail at training time",
    ),
    Mutant(
        "imgdata-loose-images-extension-case",
        _FOLDER,
        "elif entry.name.lower().endswith(IMAGE_EXTENSIONS):\n            loose.append",
        "elif entry.name.endswith(IMAGE_EXTENSIONS):\n            loose.append",
        (f"{IMAGES}test_images_outside_class_folders_are_warned",),
        "ImageNet-style .JPEG files left in ROOT itself are dropped without the warning",
    ),
    Mutant(
        "imgdata-class-folder-owned-by-the-last-class",
        _FOLDER,
        "owners.setdefault(_folder_key(os.stat(os.path.join(root, name))), name)",
        "owners[_folder_key(os.stat(os.path.join(root, name)))] = name",
        (f"{FAULTS}test_a_folder_linked_from_two_classes_goes_to_the_first",),
        "a class folder another class links to is read under the linking class: its images relabelled",
    ),
    Mutant(
        "imgdata-class-folders-not-seen",
        _FOLDER,
        "seen = {_folder_key(os.stat(root)), *owners}",
        "seen = {_folder_key(os.stat(root))}",
        (f"{FAULTS}test_a_folder_linked_from_two_classes_goes_to_the_first",),
        "a class folder linked from inside another class is read twice, once under the wrong label",
    ),
    Mutant(
        "imgdata-broken-link-not-counted",
        _FOLDER,
        "                found.broken_link.append(rel)\n",
        "",
        (f"{FAULTS}test_dangling_symlinks_are_skipped_counted_and_named",),
        "a dangling symlink below a class vanishes from the scan's summary without a word",
    ),
    Mutant(
        "imgdata-walked-folders-not-remembered",
        _FOLDER,
        "                    seen.add(_folder_key(st))\n",
        "",
        (
            f"{FAULTS}test_a_symlink_loop_lists_each_image_once",
            f"{FAULTS}test_a_link_back_to_a_subfolder_lists_its_images_once",
        ),
        "a link back up the tree repeats its images (until the path grows too long)",
    ),
    Mutant(
        "imgdata-scan-chunks-of-255",
        _FOLDER,
        "chunks = [paths[i : i + 256] for i in range(0, len(paths), 256)]",
        "chunks = [paths[i : i + 255] for i in range(0, len(paths), 256)]",
        (f"{SCAN}test_a_parallel_scan_gives_each_file_its_own_verdict",),
        "a parallel scan of over 256 files drops a verdict per chunk: the later files take their "
        "neighbours' verdicts, a corrupt file kept and a good one skipped",
    ),
    Mutant(
        "imgdata-empty-last-class-unnoticed",
        _FOLDER,
        "counts = np.bincount(labels, minlength=len(classes))",
        "counts = np.bincount(labels)",
        (f"{IMAGES}test_empty_class_is_kept_as_a_label_and_warned",),
        "an empty class folder sorted last is not warned about",
    ),
    Mutant(
        "imgdata-adm-halving-bilinear",
        _FOLDER,
        "resample=Image.BOX)",
        "resample=Image.BILINEAR)",
        (ADM_REFERENCE,),
        "ADM's BOX halvings taken with a bilinear filter: other pixels than the reference crops",
    ),
    Mutant(
        "imgdata-adm-cubic-is-lanczos",
        _FOLDER,
        "resample=Image.BICUBIC)",
        "resample=Image.LANCZOS)",
        (ADM_REFERENCE,),
        "the final resize with Lanczos, not ADM's bicubic",
    ),
    Mutant(
        "imgdata-adm-crop-axes-swapped",
        _FOLDER,
        "return arr[top : top + image_size, left : left + image_size]",
        "return arr[left : left + image_size, top : top + image_size]",
        (ADM_EDGES,),
        "the crop's row offset taken along the columns: a portrait image cropped off-centre",
    ),
    Mutant(
        "imgdata-gray16-truncated",
        _FOLDER,
        "* (255 / 65535) + 0.5)",
        "* (255 / 65535))",
        (GRAY16,),
        "16-bit grayscale floored to 8 bits where DALI rounds: most pixels a level darker",
    ),
    Mutant(
        "imgdata-pixels-scaled-by-128",
        _FOLDER,
        "permute(2, 0, 1).float() / 127.5 - 1.0",
        "permute(2, 0, 1).float() / 128 - 1.0",
        (GRAY16,),
        "pixels mapped to [-1, 0.99]: white is no longer 1, unlike DALI's normalisation",
    ),
    Mutant(
        "imgdata-image-transposed",
        _FOLDER,
        "permute(2, 0, 1).float()",
        "permute(2, 1, 0).float()",
        (f"{IMAGES}test_flip_mirrors_left_to_right",),
        "HWC read as CWH: every square crop transposed",
    ),
    Mutant(
        "imgdata-label-of-the-previous-image",
        _FOLDER,
        "int(index.labels[i]), i",
        "int(index.labels[i - 1]), i",
        (f"{IMAGES}test_batches_shapes_range_labels[torch]",),
        "each image read with the label of the image before it in the index",
    ),
    Mutant(
        "imgdata-failure-counted-against-the-image-not-its-class",
        _FOLDER,
        "self.class_failures[labels[f.index]] += 1",
        "self.class_failures[labels[f.index]] = 1",
        (f"{FAIL}test_a_class_counts_as_lost_after_enough_reads_of_it_failed",),
        "a class's failed reads flagged, not counted: a class whose every read failed goes on silently",
    ),
    Mutant(
        "imgdata-failure-warned-every-batch",
        _FOLDER,
        "if failed and len(self.failed) == len(failed):",
        "if failed:",
        (f"{FAIL}test_an_epochs_first_failure_is_warned_at_once_and_the_rest_at_its_end",),
        "every batch with a failed read warns: a long epoch floods the log the epoch's end sums up",
    ),
    Mutant(
        "imgdata-total-is-the-epochs",
        _FOLDER,
        "self.total += len(failed)",
        "self.total = len(self.failed)",
        (f"{T}test_data_read_failures.py", RESUMED_FAILURES),
        "the loader's failures count restarts each epoch: the run's total is the last epoch's",
    ),
    Mutant(
        "imgdata-torch-limit-of-the-whole-set",
        _FOLDER,
        "self.read_failures = ReadFailureLog(self.index, len(self) * batch_size, max_read_failures)\n\n"
        "    @property\n    def failures(self) -> int:\n"
        '        """Images of this run that failed to read (each replaced within its batch)."""\n'
        "        return self.read_failures.total\n\n    def __iter__",
        "self.read_failures = ReadFailureLog(self.index, len(self.index), max_read_failures)\n\n"
        "    @property\n    def failures(self) -> int:\n"
        '        """Images of this run that failed to read (each replaced within its batch)."""\n'
        "        return self.read_failures.total\n\n    def __iter__",
        (f"{RESUMED_FAILURES}[torch]",),
        "the torch loader's limit is a fraction of the whole folder, not of what this rank reads",
    ),
    Mutant(
        "imgdata-torch-loader-never-flips",
        _FOLDER,
        "return read_sample(self.index, item[0], self.image_size, item[1])",
        "return read_sample(self.index, item[0], self.image_size)",
        (f"{DECODE}test_dalis_pil_batch_is_the_torch_loaders_batch_flips_included",),
        "the torch loader never flips: the DALI backend's runs train on other images",
    ),
    # ------------------------------------------------------------ meanflow/data/dali_images.py
    Mutant(
        "imgdata-dali-pass-truncated",
        _DALI,
        "dmath.clamp(dmath.floor(x + 0.5), 0, 255)",
        "dmath.clamp(dmath.floor(x), 0, 255)",
        (DALI_EDGES,),
        "DALI's halvings floored to uint8 where PIL rounds: halved images half a level darker",
    ),
    Mutant(
        "imgdata-dali-odd-halving-unantialiased",
        _DALI,
        "images = _resize_pass(images, height, width, types.INTERP_LINEAR, True)",
        "images = _resize_pass(images, height, width, types.INTERP_LINEAR, False)",
        (DALI_ODD,),
        "an odd side halved by 2-tap linear: DALI's crops further from PIL's 3-pixel box",
    ),
    Mutant(
        "imgdata-dali-halving-height-oddness-of-width",
        _DALI,
        "return _halve_axis(images, h // 2, w // 2, h % 2 == 1)",
        "return _halve_axis(images, h // 2, w // 2, w % 2 == 1)",
        (DALI_ODD,),
        "the height's halving takes the width's parity: an odd height halved as if even",
    ),
    Mutant(
        "imgdata-dali-sides-swapped",
        _DALI,
        "height, width = _adm_side(h, short, image_size), _adm_side(w, short, image_size)",
        "height, width = _adm_side(w, short, image_size), _adm_side(h, short, image_size)",
        (DALI_EDGES,),
        "DALI resizes to the transposed size: a non-square image squashed",
    ),
    Mutant(
        "imgdata-dali-ties-to-odd",
        _DALI,
        "odd = (low - 2 * dmath.floor(low / 2)) == 1",
        "odd = (low - 2 * dmath.floor(low / 2)) == 0",
        (f"{IMAGES}test_dali_rounds_the_resized_side_as_adm",),
        "a resized side of x.5 rounded to odd where Python rounds to even",
    ),
    Mutant(
        "imgdata-dali-exact-height-first",
        _DALI,
        "images = fn.resize(images, size=fn.cast(fn.stack(h, width), dtype=types.FLOAT), **cubic)",
        "images = fn.resize(images, size=fn.cast(fn.stack(height, w), dtype=types.FLOAT), **cubic)",
        (DALI_EDGES, DALI_EVEN),
        "exact mode resizes the height before the width: PIL's rounding between passes differs",
    ),
    Mutant(
        "imgdata-dali-cubic-unantialiased",
        _DALI,
        "cubic = dict(interp_type=types.INTERP_CUBIC, antialias=True)",
        "cubic = dict(interp_type=types.INTERP_CUBIC, antialias=False)",
        (DALI_EVEN,),
        "DALI's downscaling cubic without PIL's antialiasing: aliased crops",
    ),
    Mutant(
        "imgdata-dali-linear-final-resize",
        _DALI,
        "cubic = dict(interp_type=types.INTERP_CUBIC, antialias=True)",
        "cubic = dict(interp_type=types.INTERP_LINEAR, antialias=True)",
        (DALI_EVEN,),
        "DALI's final resize is linear, not ADM's bicubic",
    ),
    Mutant(
        "imgdata-dali-bgr",
        _DALI,
        "decode = dict(output_type=types.RGB, adjust_orientation=False)",
        "decode = dict(output_type=types.BGR, adjust_orientation=False)",
        (AGREE,),
        "DALI decodes BGR: red and blue swapped against the torch loader",
    ),
    Mutant(
        "imgdata-dali-std-128",
        _DALI,
        "std=[127.5] * 3",
        "std=[128.0] * 3",
        (GRAY16,),
        "DALI scales by 1/128: white is 0.996, not the torch reader's 1",
    ),
    Mutant(
        "imgdata-dali-slice-axes-swapped",
        _DALI,
        "images = fn.slice(images, anchor, crop, axes=[0, 1])",
        "images = fn.slice(images, anchor, crop, axes=[1, 0])",
        (f"{DECODE}test_the_dali_loader_crops_odd_margins_itself",),
        "DALI's crop anchor (top, left) applied as (left, top): portrait images cropped off-centre",
    ),
    Mutant(
        "imgdata-dali-flip-from-the-class",
        _DALI,
        "flip = fn.reshape(label_codes & 1, shape=[])",
        "flip = fn.reshape((label_codes >> 1) & 1, shape=[])",
        (AGREE,),
        "DALI mirrors the images of odd classes, not those the seed flips",
    ),
    Mutant(
        "imgdata-dali-codes-without-the-class-factor",
        _DALI,
        "codes = 2 * self.index.labels[indices] + flips",
        "codes = self.index.labels[indices] + flips",
        (f"{IMAGES}test_batches_shapes_range_labels[dali]",),
        "the flip bit added onto the label: DALI's labels halved and mixed with flips",
    ),
    Mutant(
        "imgdata-dali-reader-shuffles",
        _DALI,
        "random_shuffle=False,",
        "random_shuffle=True,",
        (AGREE,),
        "DALI's reader reshuffles the seeded order: the two backends read other samples",
    ),
    Mutant(
        "imgdata-dali-rebuilt-with-the-failed-batchs-codes",
        _DALI,
        "return self._pipeline(files[first:stop], codes[first:stop])",
        "return self._pipeline(files[first:stop], codes[:stop])",
        (FALLBACK, f"{FAULTS}test_an_image_removed_after_the_scan_is_replaced_counted_and_named"),
        "after a PIL batch, DALI's labels and flips lag one batch behind its images",
    ),
    Mutant(
        "imgdata-dali-limit-of-the-whole-set",
        _DALI,
        "self.read_failures = ReadFailureLog(self.index, len(self) * batch_size, max_read_failures)\n"
        "        self.fallback_batches",
        "self.read_failures = ReadFailureLog(self.index, len(self.index), max_read_failures)\n"
        "        self.fallback_batches",
        (f"{RESUMED_FAILURES}[dali]",),
        "the DALI loader's limit is a fraction of the whole folder, not of what this rank reads",
    ),
    Mutant(
        "imgdata-dali-iterate-keeps-padding",
        _DALI,
        "yield x[:n].to(device), ok",
        "yield x.to(device), ok",
        (f"{IMAGES}test_dali_matches_the_adm_crop",),
        "the last chunk keeps DALI's padded rows: prepare_latents encodes images twice",
    ),
    Mutant(
        "imgdata-dali-iterate-not-exact-by-default",
        _DALI,
        'def iterate_files(paths, image_size, batch_size, device="cpu", num_threads=4, exact=True):',
        'def iterate_files(paths, image_size, batch_size, device="cpu", num_threads=4, exact=False):',
        (f"{DECODE}test_dali_iterate_files_is_exact_by_default",),
        "prepare_latents' DALI reader takes the loader's one-pass cubic: latents further from PIL's",
    ),
    Mutant(
        "imgdata-dali-names-root-unchecked",
        _DALI,
        'path.encode("utf-8")',
        'rel.encode("utf-8")',
        (f"{DECODE}test_the_dali_loader_refuses_a_name_that_is_not_utf8_before_it_runs",),
        "a root folder of latin-1 bytes passes the check, then DALI fails building its reader",
    ),
    Mutant(
        "imgdata-dali-error-line-is-the-marker",
        _DALI,
        'after = lines.index("encountered:") + 1 if',
        'after = lines.index("encountered:") if',
        (f"{FAULTS}test_an_image_removed_after_the_scan_is_replaced_counted_and_named",),
        "DALI's fallback warning says 'encountered:' instead of which file failed",
    ),
    Mutant(
        "imgdata-loader-fallback-unsaid",
        _DALI,
        "                warn_pil_fallback(error)\n                pairs",
        "                pairs",
        (f"{FAULTS}test_an_image_removed_after_the_scan_is_replaced_counted_and_named",),
        "the DALI loader decodes a failed batch with PIL without a word: a DALI run runs on PIL",
    ),
    Mutant(
        "imgdata-iterate-fallback-unsaid",
        _DALI,
        "            warn_pil_fallback(error)\n            x, ok = _read_with_pil",
        "            x, ok = _read_with_pil",
        (f"{DECODE}test_iterate_files_marks_the_files_it_could_not_read",),
        "prepare_latents decodes with PIL wherever DALI fails, under a manifest that says DALI, unsaid",
    ),
]
