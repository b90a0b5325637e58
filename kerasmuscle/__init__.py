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

#: The public API, loaded on first use: name -> the module that defines it (its documented home).
_LAZY = {
    "Scan": "kerasmuscle.io",
    "LabelMap": "kerasmuscle.io",
    "read_scan": "kerasmuscle.io",
    "read_labels": "kerasmuscle.io",
    "SliceSelection": "kerasmuscle.core.slices",
    "measure_case": "kerasmuscle.core.measure",
    "Predictor": "kerasmuscle.predict",
    "predict_batch": "kerasmuscle.predict",
    "PredictConfig": "kerasmuscle.predict",
    "write_cohort": "kerasmuscle.synth.cohort",
    "train_run": "kerasmuscle.training",
    "evaluate_run": "kerasmuscle.training",
    "export_bundle": "kerasmuscle.export",
}


def __getattr__(name: str):
    # Reading pulls in pydicom and nibabel, training TensorFlow: load them when first used, not on import.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasmuscle' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "LABELS",
    "MUSCLE_IDS",
    "NUM_CLASSES",
    "KerasMuscleError",
    "MissingExtraError",
    "ReadError",
    "ScanWarning",
    "__version__",
]
