"""kerasmuscle: skeletal muscle at the third lumbar vertebra (L3) on routine abdominal CT.

The package reproduces the method of Kreher et al. 2022 (a 2-D U-Net that segments rectus abdominis,
abdominal wall, psoas major, quadratus lumborum and erector spinae) and surrounds it with what a
radiology researcher needs: reading real CT exactly (DICOM series, single slices, multi-frame CT,
NIfTI, NPZ), label maps from NIfTI, NPZ and DICOM SEG, and synthetic L3 cohorts for testing.

Importing the package is cheap: heavy modules load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

from kerasmuscle.errors import KerasMuscleError, MissingExtraError, ReadError, ScanWarning
from kerasmuscle.labels import LABELS, MUSCLE_IDS, NUM_CLASSES

_LAZY = {
    "Scan": "kerasmuscle.io",
    "LabelMap": "kerasmuscle.io",
    "read_scan": "kerasmuscle.io",
    "read_labels": "kerasmuscle.io",
}


def __getattr__(name: str):
    # Reading pulls in pydicom and nibabel; load them when first used, not on `import kerasmuscle`.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasmuscle' has no attribute {name!r}")


__all__ = [
    "LABELS",
    "MUSCLE_IDS",
    "NUM_CLASSES",
    "KerasMuscleError",
    "LabelMap",
    "MissingExtraError",
    "ReadError",
    "Scan",
    "ScanWarning",
    "__version__",
    "read_labels",
    "read_scan",
]
