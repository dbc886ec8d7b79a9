"""Train/test splits and known classes drawn as Tyshchuk et al.'s code draws them, so that the paper's
rows are the same rows here: ``torch.manual_seed(seed); perm = torch.randperm(n)``, the first
``round(0.8 n)`` positions of the permutation the training rows and the rest the test rows (COCO val2014:
40,504 images -> 32,403 train / 8,101 test at seed 0; Python's ``round``, as their ``get_train_test_split``:
at n = 2,002 that is 1,602 where ``int`` gives 1,601), and the known classes of the class-disjoint
protocol the first half of ``torch.randperm(n_classes)`` after ``torch.manual_seed(seed)``.

The permutation indexes the rows in the order the authors' loader gave them: for COCO, torchvision's
``CocoDetection``, which orders images by sorted image id; the COCO source's ``image_order: id`` writes
the manifest in that order (``conescope.ingest.coco``).

The permutation is torch's CPU generator (Mersenne Twister), stable across torch releases; the
default protocol split (the manifest's seeded ``split`` column) stays available beside it.
"""

from __future__ import annotations

import numpy as np
import torch

TRAIN_FRACTION = 0.8


def _randperm(n: int, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError(f"a split needs at least one row, got n={n}")
    # a private generator seeded like torch.manual_seed(seed): the same permutation without touching
    # the process-wide RNG state
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def authors_split(n: int, seed: int = 0, train_fraction: float = TRAIN_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), positions 0..n-1 in the dataset's order: the first round(n train_fraction)
    entries of ``torch.randperm(n)`` after ``torch.manual_seed(seed)`` are the training rows, in
    permutation order."""
    perm = _randperm(n, seed)
    cut = round(n * train_fraction)  # Python's round (half to even), as the authors' code
    return perm[:cut], perm[cut:]


def authors_known_classes(classes: np.ndarray, seed: int = 0) -> np.ndarray:
    """The known half of ``classes`` (sorted ids): ``classes[torch.randperm(len(classes))[:len // 2]]``
    after ``torch.manual_seed(seed)``, returned sorted."""
    classes = np.sort(np.asarray(classes))
    if len(classes) < 2:
        raise ValueError(f"the class-disjoint protocol needs at least two classes, got {len(classes)}")
    return np.sort(classes[_randperm(len(classes), seed)[: len(classes) // 2]])
