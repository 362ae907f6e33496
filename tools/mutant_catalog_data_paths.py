"""The catalog's mutants of the image-folder path and the distributed helpers: what a scan
lists and in which order (``meanflow/data/image_folder.py``, its cache ``scan_cache``), the
ADM crop in PIL and in DALI (``dali_images``), the read-failure limits, the data factory's
choices (``meanflow/data/__init__.py``) and a rank's place and errors
(``meanflow/distributed.py``). Each is a bug that trains on other images than the folder's, in
another order on each rank, or lets a run go on (or stop) where it should not; listed in
``tools/mutant_catalog_data.py``."""

from mutant import Mutant

__all__ = ["DATA_PATH_MUTANTS"]

_FOLDER = "meanflow/data/image_folder.py"
_DALI = "meanflow/data/dali_images.py"
_DATA = "meanflow/data/__init__.py"
_DIST = "meanflow/distributed.py"
_CACHE = "meanflow/data/scan_cache.py"
T = "tests/meanflow/"
SCAN = f"{T}test_data_scan_order.py::"
FAIL = f"{T}test_data_read_failures.py::"
DECODE = f"{T}test_data_decode_rules.py::"
BUILD = f"{T}test_data_builder.py::"
SETUP = f"{T}test_distributed_setup.py::"
FOLDER_FAULTS = "tests/faults/test_fault_image_folders.py::"
ORDER = f"{SCAN}test_classes_and_files_are_listed_in_sorted_order_whatever_the_directory_order"
DALI_EDGES = f"{DECODE}test_dali_follows_the_adm_crop_at_its_edges"

DATA_PATH_MUTANTS = [
    # ------------------------------------------------------------ meanflow/data/image_folder.py
    Mutant(
        "scan-classes-in-directory-order",
        _FOLDER,
        "return sorted(classes), sorted(broken), sorted(loose)",
        "return classes, sorted(broken), sorted(loose)",
        (ORDER,),
        "labels follow the file system's listing order: another node (or a copy) maps them to other classes",
    ),
    Mutant(
        "scan-files-in-directory-order",
        _FOLDER,
        "for entry in sorted(os.scandir(pending.pop()), key=lambda e: e.name):",
        "for entry in os.scandir(pending.pop()):",
        (ORDER,),
        "each rank lists a class's files in its disk's order: the same permutation picks other images",
    ),
    Mutant(
        "scan-subfolders-in-reverse",
        _FOLDER,
        "pending.extend(reversed(subfolders))",
        "pending.extend(subfolders)",
        (ORDER,),
        "nested folders visited last-name-first: not os.walk's order, the index of every later file moves",
    ),
    Mutant(
        "scan-hidden-class-folders-kept",
        _FOLDER,
        '        if entry.name.startswith("."):\n            continue\n        if entry.is_dir():',
        "        if entry.is_dir():",
        (f"{SCAN}test_hidden_folders_and_files_are_not_samples",),
        "ROOT/.trash (or .git) becomes class 0: every real label shifts by one",
    ),
    Mutant(
        "scan-hidden-files-listed",
        _FOLDER,
        '            if entry.name.startswith("."):\n                continue\n            rel',
        "            rel",
        (f"{SCAN}test_hidden_folders_and_files_are_not_samples",),
        "Jupyter's .ipynb_checkpoints copies trained as extra samples; macOS ._ files counted corrupt",
    ),
    Mutant(
        "scan-extension-case-sensitive",
        _FOLDER,
        "elif not entry.name.lower().endswith(IMAGE_EXTENSIONS):",
        "elif not entry.name.endswith(IMAGE_EXTENSIONS):",
        (f"{SCAN}test_image_extensions_are_matched_whatever_their_case",),
        "ImageNet's .JPEG files skipped as 'other files': the whole train set found empty",
    ),
    Mutant(
        "scan-jpeg-extension-dropped",
        _FOLDER,
        '(".jpg", ".jpeg", ".png",',
        '(".jpg", ".png",',
        (f"{SCAN}test_image_extensions_are_matched_whatever_their_case",),
        "every .jpeg/.JPEG image skipped as not an image",
    ),
    Mutant(
        "scan-cache-keyed-by-size-only",
        _FOLDER,
        "cached.get(c[0], [None, None])[:2] != [c[2], c[3]]",
        "cached.get(c[0], [None, None])[:1] != [c[2]]",
        (f"{SCAN}test_a_file_rewritten_at_the_same_size_is_scanned_again",),
        "a file damaged in place keeps the cache's old 'ok': training hits it as a read failure",
    ),
    Mutant(
        "scan-cache-entries-unchecked",
        _CACHE,
        "        if not all(isinstance(v, list) and len(v) == 5 for v in entries.values()):\n"
        '            raise ValueError("an entry is not [size, mtime_ns, status, info, format]")\n',
        "",
        (f"{SCAN}test_a_malformed_scan_cache_is_ignored_and_rewritten",),
        "a scan cache in the data folder with malformed entries crashes every run on that folder",
    ),
    Mutant(
        "adm-crop-margin-rounded-up",
        _FOLDER,
        "top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2",
        "top, left = (arr.shape[0] - image_size + 1) // 2, (arr.shape[1] - image_size + 1) // 2",
        (f"{DECODE}test_adm_crop_rounds_the_long_side_and_floors_the_margin",),
        "the crop window one pixel right/down of ADM's wherever the margin is odd: other reference crops",
    ),
    Mutant(
        "adm-resized-side-truncated",
        _FOLDER,
        "pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)",
        "pil_image.resize(tuple(int(x * scale) for x in pil_image.size), resample=Image.BICUBIC)",
        (f"{DECODE}test_adm_crop_rounds_the_long_side_and_floors_the_margin",),
        "the long side resized to floor, not round, of ADM's: the whole image resampled otherwise",
    ),
    Mutant(
        "read-failure-limit-inclusive",
        _FOLDER,
        "if len(self.failed) > self.max_fraction * self.images_per_epoch:",
        "if len(self.failed) >= self.max_fraction * self.images_per_epoch:",
        (f"{FAIL}test_max_read_failures_zero_reads_a_clean_folder", f"{T}test_data_read_failures.py"),
        "max_read_failures=0 stops a clean run at its first batch; the limit is one failure short",
    ),
    Mutant(
        "read-failure-class-loss-ignores-the-minimum",
        _FOLDER,
        "(self.reads > 0) & (self.reads >= minimum) & (self.class_failures == self.reads)",
        "(self.reads > 0) & (self.class_failures == self.reads)",
        (f"{FAIL}test_a_class_counts_as_lost_after_enough_reads_of_it_failed",),
        "one failed read of a large class stops the run as if the whole class were lost",
    ),
    Mutant(
        "read-failure-class-loss-needs-every-image",
        _FOLDER,
        "minimum = np.minimum(self.class_sizes, CLASS_UNREADABLE_READS)",
        "minimum = self.class_sizes",
        (f"{FAIL}test_a_class_counts_as_lost_after_enough_reads_of_it_failed",),
        "a class whose every read failed goes on silently when an epoch left one of its images out",
    ),
    Mutant(
        "read-failure-limit-one-still-stops",
        _FOLDER,
        "if len(lost) and self.max_fraction < 1:",
        "if len(lost):",
        (f"{FAIL}test_max_read_failures_one_never_stops",),
        "max_read_failures=1 (never stop) still stops a run at an epoch that lost a class",
    ),
    Mutant(
        "read-failure-state-of-another-rank-taken",
        _FOLDER,
        'if state.get("epoch") is None or (state["rank"], state["world_size"]) != (rank, world_size):',
        'if state.get("epoch") is None:',
        (f"{FAIL}test_a_resumed_rank_does_not_take_over_another_ranks_failures",),
        "every rank resumes with rank 0's failures of the epoch: a rank stops on failures it never had",
    ),
    Mutant(
        "torch-loader-epoch-end-never-seen",
        _FOLDER,
        "self.read_failures.record(epoch, indices, failed, position == len(self) - 1)",
        "self.read_failures.record(epoch, indices, failed, position == len(self))",
        (f"{FOLDER_FAULTS}test_a_class_unreadable_after_the_scan_stops_at_the_epoch_end",),
        "an epoch's failures are never summed up and a lost class never stops the torch loader",
    ),
    Mutant(
        "torch-loader-unreadable-batch-unchecked",
        _FOLDER,
        "            if x is None:\n"
        "                raise ImageReadError(unreadable_batch(self.index, failed))\n"
        "            yield x.to(self.device, non_blocking=True)",
        "            yield x.to(self.device, non_blocking=True)",
        (f"{FAIL}test_a_batch_of_which_nothing_reads_stops_with_a_clear_error",),
        "a batch of which nothing reads ends in AttributeError on None, naming no file",
    ),
    Mutant(
        "iterate-files-failure-marked-ok",
        _FOLDER,
        "return torch.zeros(3, self.image_size, self.image_size), False",
        "return torch.zeros(3, self.image_size, self.image_size), True",
        (f"{DECODE}test_iterate_files_marks_the_files_it_could_not_read",),
        "prepare_latents (torch reader) encodes a black image for each file it could not read",
    ),
    # ------------------------------------------------------------- meanflow/data/dali_images.py
    Mutant(
        "dali-crop-margin-rounded-up",
        _DALI,
        "anchor = fn.cast((images.shape()[0:2] - image_size) // 2, dtype=types.INT32)",
        "anchor = fn.cast((images.shape()[0:2] - image_size + 1) // 2, dtype=types.INT32)",
        (DALI_EDGES,),
        "DALI's crop window a pixel off ADM's where the margin is odd: the loaders train on other crops",
    ),
    Mutant(
        "dali-one-halving-only",
        _DALI,
        "MAX_HALVINGS = 8",
        "MAX_HALVINGS = 1",
        (DALI_EDGES,),
        "a photo over 4x the size gets one BOX halving, then one blurrier cubic step, not ADM's halvings",
    ),
    Mutant(
        "dali-halving-strict",
        _DALI,
        "if dmath.min(images.shape()[0], images.shape()[1]) >= 2 * image_size:",
        "if dmath.min(images.shape()[0], images.shape()[1]) > 2 * image_size:",
        (DALI_EDGES,),
        "DALI does not halve a short side of exactly 2 * size (512 px at 256): ADM does",
    ),
    Mutant(
        "dali-pil-batch-unflipped",
        _DALI,
        "[read_sample(self.index, i, self.image_size, f) for i, f in pairs]",
        "[read_sample(self.index, i, self.image_size) for i, f in pairs]",
        (f"{DECODE}test_dalis_pil_batch_is_the_torch_loaders_batch_flips_included",),
        "a batch DALI hands to PIL after an error is never flipped: the run depends on the backend",
    ),
    Mutant(
        "dali-pil-batch-reads-counted-for-the-epoch",
        _DALI,
        "self.read_failures.record(epoch, indices[part], failed, b == count - 1)",
        "self.read_failures.record(epoch, indices, failed, b == count - 1)",
        (f"{FOLDER_FAULTS}test_a_class_unreadable_after_the_scan_stops_at_the_epoch_end",),
        "each batch counts the whole epoch's reads: a class whose every image fails is never called lost",
    ),
    Mutant(
        "dali-unreadable-batch-unchecked",
        _DALI,
        "            if x is None:\n"
        "                raise ImageReadError(unreadable_batch(self.index, failed))\n"
        "            yield x.to(self.device), y.to(self.device)",
        "            yield x.to(self.device), y.to(self.device)",
        (f"{FAIL}test_a_batch_of_which_nothing_reads_stops_with_a_clear_error",),
        "the DALI loader's batch of which nothing reads ends in AttributeError on None, naming no file",
    ),
    Mutant(
        "dali-iterate-files-failure-marked-ok",
        _DALI,
        "            rows.append(torch.zeros(3, image_size, image_size))\n            ok.append(False)",
        "            rows.append(torch.zeros(3, image_size, image_size))\n            ok.append(True)",
        (f"{DECODE}test_iterate_files_marks_the_files_it_could_not_read",),
        "prepare_latents (DALI reader) encodes a black image for each file it could not read",
    ),
    Mutant(
        "dali-names-unchecked",
        _DALI,
        '        check_dali_names(self.index, "train with data.backend torch")\n',
        "",
        (f"{DECODE}test_the_dali_loader_refuses_a_name_that_is_not_utf8_before_it_runs",),
        "a latin-1 file name fails deep inside the DALI pipeline mid-run, not with a named refusal",
    ),
    Mutant(
        "dali-device-unchecked",
        _DALI,
        '    if device.type != "cpu":\n'
        '        raise ValueError(f"device must be cpu or cuda, got {device}")\n',
        "",
        (f"{DECODE}test_dali_device_is_cpu_or_cuda",),
        "a device DALI cannot use (mps, meta) decodes on the CPU silently, then fails at the copy",
    ),
    # --------------------------------------------------------------- meanflow/data/__init__.py
    Mutant(
        "data-auto-never-dali",
        _DATA,
        'return "dali" if dali_available() else "torch"',
        'return "torch"',
        (f"{BUILD}test_auto_means_dali_where_it_is_installed",),
        "data.backend auto never uses an installed DALI: PIL decodes every batch, several times slower",
    ),
    Mutant(
        "data-batch-not-divisible-by-ranks",
        _DATA,
        "    if config.batch_size % world_size:\n",
        "    if False:\n",
        (f"{BUILD}test_a_batch_the_ranks_cannot_share_evenly_is_refused",),
        "batch_size 6 on 4 ranks trains on 4 samples per step, silently",
    ),
    # --------------------------------------------------------------- meanflow/distributed.py
    Mutant(
        "distributed-rank-from-local-rank",
        _DIST,
        'int(os.environ.get("RANK", 0))',
        'int(os.environ.get("LOCAL_RANK", 0))',
        (f"{SETUP}test_the_rank_is_the_global_rank_not_the_local_one",),
        "on a second node each rank takes a first node's rank: two ranks read each shard, half go unread",
    ),
    Mutant(
        "distributed-cpu-group-nccl",
        _DIST,
        'dist.init_process_group("nccl" if device.type == "cuda" else "gloo")',
        'dist.init_process_group("nccl")',
        (f"{SETUP}test_the_rank_is_the_global_rank_not_the_local_one",),
        "a CPU run of several ranks asks for NCCL and fails to start",
    ),
    Mutant(
        "distributed-group-set-up-twice",
        _DIST,
        "if world > 1 and not dist.is_initialized():",
        "if world > 1:",
        (f"{SETUP}test_the_rank_is_the_global_rank_not_the_local_one",),
        "a second setup in one process (train then evaluate) fails: the group is already set up",
    ),
    Mutant(
        "distributed-error-kind-lost",
        _DIST,
        "raise {k.__name__: k for k in _KINDS}.get(kind, RuntimeError)(message)",
        "raise RuntimeError(message)",
        (f"{SETUP}test_a_failure_on_one_rank_is_raised_on_every_rank",),
        "another rank's missing file or bad input is a RuntimeError here: a traceback, not one line",
    ),
    Mutant(
        "distributed-oserror-before-file-not-found",
        _DIST,
        "_KINDS = (FileNotFoundError, FloatingPointError, ValueError, TypeError, OSError, KeyboardInterrupt)",
        "_KINDS = (OSError, FileNotFoundError, FloatingPointError, ValueError, TypeError, KeyboardInterrupt)",
        (f"{SETUP}test_an_error_keeps_its_kind_across_ranks",),
        "a file missing on one rank is a plain OSError on the others: the CLIs report another exit status",
    ),
    Mutant(
        "distributed-interrupt-not-shared",
        _DIST,
        "    except BaseException as e:  # KeyboardInterrupt too",
        "    except Exception as e:  # KeyboardInterrupt too",
        (f"{SETUP}test_a_failure_on_one_rank_is_raised_on_every_rank",),
        "Ctrl-C on one rank leaves the others waiting at their next collective",
    ),
]
