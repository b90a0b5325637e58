"""Segmentation accuracy as in the paper's Table I and Figure 2: Dice, Hamming and Jaccard per muscle.

A case is scored on its labelled slices only. For a class, A is the set of reference pixels and B the
set of predicted pixels over those slices:

- Dice score D = 2|A∩B| / (|A| + |B|), pooled over all labelled slices of the case.
- Jaccard index J = |A∩B| / |A∪B|, pooled the same way.
- Hamming: the paper reports a "Hamming distance" whose values sit close to its Dice, which suggests a
  similarity normalised to the structure rather than a raw pixel count. We report the normalised
  Hamming similarity H = 1 − |A△B| / (|A| + |B|), computed on each labelled slice separately and
  averaged over the slices where A∪B is non-empty (NaN if none). On a single slice it equals the Dice
  score algebraically (|A△B| = |A| + |B| − 2|A∩B|); averaged per slice it weights small slices
  equally, which is why it differs from the case-level Dice, giving a similar mean with a larger
  spread, the pattern of the paper's Table I. The raw Hamming distance |A△B| in pixels is also kept,
  as ``hamming_px`` in metrics.csv.

A class absent from both reference and prediction scores NaN (neither perfect nor zero) and is left
out of means; a class present in only one of them scores 0. "Combined" treats every muscle label as
one class. Tables give mean ± SD over cases (sample SD, ddof = 1).

numpy only. Table I and the CSV files are :mod:`kerasmuscle.report.tables`, Figure 2 is
:mod:`kerasmuscle.report.figures`.
"""

from __future__ import annotations

import math

import numpy as np

from kerasmuscle.labels import MUSCLE_LABELS

#: Classes in the row order of the paper's Table I: all muscle combined, then each group.
CLASSES: tuple[str, ...] = ("combined",) + tuple(lab.key for lab in MUSCLE_LABELS)
#: Display names of :data:`CLASSES`, as the rows of Table I.
CLASS_NAMES: dict[str, str] = {"combined": "Combined", **{lab.key: lab.short for lab in MUSCLE_LABELS}}
#: Label id of each muscle class ("combined" is every id > 0).
_CLASS_IDS: dict[str, int] = {lab.key: lab.id for lab in MUSCLE_LABELS}

METRICS: tuple[str, ...] = ("dice", "hamming", "jaccard")
#: Column headings of Table I for :data:`METRICS`.
METRIC_NAMES: dict[str, str] = {"dice": "Dice score", "hamming": "Hamming distance", "jaccard": "Jaccard Index"}

#: Post-processing variants and the caption of their table: "hu" is the paper's -20..200 HU thresholding.
POSTPROCESS: dict[str, str] = {"hu": "with the paper's −20..200 HU post-processing",
                               "none": "raw network output"}

def overlap_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """Compare two masks of one class: Dice, Jaccard, normalised Hamming and the pixel counts.

    With A = ``truth`` and B = ``pred``: dice = 2|A∩B| / (|A| + |B|) and jaccard = |A∩B| / |A∪B|
    over all slices; hamming = mean over slices with A∪B non-empty of 1 − |A△B| / (|A| + |B|);
    hamming_px = |A△B|. Both empty gives NaN scores; one empty gives 0.

    Args:
        truth: reference mask, ``[Z, H, W]`` (the labelled slices of a case) or one slice ``[H, W]``.
        pred: predicted mask of the same shape (any dtype; non-zero is inside).

    Returns:
        ``dice``, ``hamming``, ``jaccard`` (floats) and ``hamming_px``, ``tp``, ``fp``, ``fn``,
        ``truth_px``, ``pred_px`` (ints).

    Raises:
        ValueError: the shapes differ or are neither 2-D nor 3-D.
    """
    truth = np.asarray(truth).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} does not match prediction shape {pred.shape}")
    if truth.ndim not in (2, 3):
        raise ValueError(f"masks must be [H, W] or [Z, H, W], not shape {truth.shape}")
    if truth.ndim == 2:
        truth, pred = truth[None], pred[None]
    tp = int(np.count_nonzero(truth & pred))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(truth & ~pred))
    union = tp + fp + fn
    # Per slice: |A| + |B| and |A△B|, for the slice-averaged Hamming similarity.
    sizes = (np.count_nonzero(truth, axis=(1, 2)) + np.count_nonzero(pred, axis=(1, 2))).astype(np.int64)
    differ = np.count_nonzero(truth ^ pred, axis=(1, 2))
    present = sizes > 0
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if union else math.nan,
        "hamming": float(np.mean(1 - differ[present] / sizes[present])) if present.any() else math.nan,
        "jaccard": tp / union if union else math.nan,
        "hamming_px": fp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "truth_px": tp + fn,
        "pred_px": tp + fp,
    }


def case_metrics(truth: np.ndarray, pred: np.ndarray) -> list[dict[str, float | int | str]]:
    """Score one case for every class of :data:`CLASSES`.

    "combined" compares ``truth > 0`` with ``pred > 0``; a muscle compares ``truth == id`` with
    ``pred == id``. The formulas are those of :func:`overlap_metrics`.

    Args:
        truth: reference label map (uint8 ids), ``[Z, H, W]``, the case's labelled slices only.
        pred: predicted label map of the same shape.

    Returns:
        One dict per class, in :data:`CLASSES` order: ``class`` and the keys of :func:`overlap_metrics`.

    Raises:
        ValueError: the shapes differ.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} does not match prediction shape {pred.shape}")
    rows = [{"class": "combined", **overlap_metrics(truth > 0, pred > 0)}]
    for key in CLASSES[1:]:
        rows.append({"class": key, **overlap_metrics(truth == _CLASS_IDS[key], pred == _CLASS_IDS[key])})
    return rows

