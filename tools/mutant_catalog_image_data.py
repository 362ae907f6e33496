"""The catalog's mutants of the image readers: the image-folder scan, decode and ADM crop
(``meanflow/data/image_folder.py``) and the DALI pipeline (``meanflow/data/dali_images.py``).
Each is a bug that trains on other pixels, labels or samples than the folder holds, without a
word."""

from mutant import Mutant

__all__ = ["IMAGE_DATA_MUTANTS"]

IMAGE_DATA_MUTANTS: list[Mutant] = []
