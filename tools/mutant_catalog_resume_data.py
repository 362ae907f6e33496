"""The catalog's mutants of what a checkpoint records of an image folder and how a resume
compares it. Each is a bug that resumes a run onto other images without a word."""

from mutant import Mutant

__all__ = ["RESUME_DATA_MUTANTS"]

T = "tests/meanflow/test_image_folder_identity.py"
END_TO_END = f"{T}::test_resume_onto_an_image_replaced_by_another_size_is_refused_naming_it"
RENAMED = f"{T}::test_a_renamed_image_is_refused_naming_its_new_name"
COPY = f"{T}::test_a_copy_elsewhere_and_new_modification_times_are_the_same_data"
NO_DIGESTS = f"{T}::test_a_record_without_its_per_image_digests_still_refuses"
OTHER_KINDS = f"{T}::test_records_of_other_kinds_or_none_are_not_compared"
DALI = f"{T}::test_dali_records_what_torch_records_and_refuses_alike"

_IDENTITY = "meanflow/data/folder_identity.py"

RESUME_DATA_MUTANTS = [
    Mutant(
        "resume-data-folder-size-unhashed",
        _IDENTITY,
        "\\0{size}\\0{label}\\n",
        "\\0{label}\\n",
        (NO_DIGESTS, END_TO_END),
        "an image replaced by another of the same name (a re-download) resumes onto it",
    ),
    Mutant(
        "resume-data-folder-mtime-for-size",
        "meanflow/data/image_folder.py",
        "    for rel, label, size, _ in candidates:\n",
        "    for rel, label, _, size in candidates:\n",
        (COPY,),
        "a copy of the folder, or a touched file, is refused as other data: modification times counted",
    ),
    Mutant(
        "resume-data-folder-root-hashed",
        _IDENTITY,
        "entry = _entry(path, size, label)",
        "entry = _entry(os.path.join(index.root, path), size, label)",
        (COPY,),
        "the same images copied to another disk are refused as other data",
    ),
    Mutant(
        "resume-data-folder-changes-unchecked",
        _IDENTITY,
        "return folder_changes(recorded, self.data_identity, self.index.files)",
        "return []",
        (RENAMED, END_TO_END),
        "a resume onto renamed or replaced images goes on, its loader position now on other samples",
    ),
    Mutant(
        "resume-data-folder-other-kinds-compared",
        _IDENTITY,
        'if not isinstance(recorded, dict) or recorded.get("kind") != KIND:',
        "if not isinstance(recorded, dict):",
        (OTHER_KINDS,),
        "a checkpoint recording another kind of data is compared as an image folder and refused",
    ),
    Mutant(
        "resume-data-folder-names-the-kept-images",
        _IDENTITY,
        "if d not in then_set]",
        "if d in then_set]",
        (RENAMED,),
        "a refusal names images that did not change, not the one renamed",
    ),
    Mutant(
        "resume-data-folder-unnamed-difference-passes",
        _IDENTITY,
        "    if not changes:  # a listing in another order",
        "    if False:  # a listing in another order",
        (NO_DIGESTS,),
        "a record without per-image digests (or a listing reordered) resumes onto other images",
    ),
    Mutant(
        "resume-data-folder-torch-records-nothing",
        "meanflow/data/image_folder.py",
        "class TorchImageLoader(FolderIdentity, ShardedLoader):",
        "class TorchImageLoader(ShardedLoader):",
        (END_TO_END,),
        "the torch backend's checkpoints record no images: a resume onto others goes on",
    ),
    Mutant(
        "resume-data-folder-dali-records-nothing",
        "meanflow/data/dali_images.py",
        "class DALIImageLoader(FolderIdentity, ShardedLoader):",
        "class DALIImageLoader(ShardedLoader):",
        (DALI,),
        "the DALI backend's checkpoints record no images: a resume onto others goes on",
    ),
]
