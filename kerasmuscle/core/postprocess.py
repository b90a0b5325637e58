"""Post-processing of predicted label maps: the paper's Hounsfield-unit thresholding.

Kreher et al. 2022 remove predicted muscle voxels whose CT value lies outside the range that
muscle can take, -20..200 HU, after the network has run. numpy only.
"""

from __future__ import annotations

import numpy as np

#: The HU range of skeletal muscle (low, high), both bounds inclusive, as in the paper.
MUSCLE_HU: tuple[float, float] = (-20.0, 200.0)


def threshold_hu(labels: np.ndarray, hu: np.ndarray,
                 hu_range: tuple[float, float] = MUSCLE_HU) -> np.ndarray:
    """Set labelled voxels whose HU lies outside a range to background (0).

    A voxel keeps its label when ``low <= hu <= high``; any other voxel, NaN HU included, becomes 0.

    Args:
        labels: label map (uint8 ids), any shape: a slice ``[H, W]`` or a volume ``[Z, H, W]``.
        hu: HU values of the same shape.
        hu_range: ``(low, high)`` in HU; the default is the paper's muscle range.

    Returns:
        A new label map of the same shape and dtype as ``labels``; the input is not modified.

    Raises:
        ValueError: the shapes differ, or ``low > high``.
    """
    labels = np.asarray(labels)
    hu = np.asarray(hu)
    if labels.shape != hu.shape:
        raise ValueError(f"label map shape {labels.shape} does not match HU shape {hu.shape}")
    low, high = hu_range
    if low > high:
        raise ValueError(f"HU range ({low}, {high}) is empty: low must not exceed high")
    out = labels.copy()
    # Written as "not inside" rather than "below or above" so that NaN HU is cleared as well.
    out[~((hu >= low) & (hu <= high))] = 0
    return out
