"""Measure a label map the user already has (``kerasmuscle measure SCAN --labels MASK``).

:class:`MaskPredictor` has the :class:`~kerasmuscle.predict.Predictor` interface, but its "prediction" of a
scan is a label file read onto the scan's grid (NIfTI, NPZ or DICOM SEG, for example one corrected in 3D
Slicer), so the batch writes exactly what ``predict`` writes (measurements, cut-offs, overlay, level
picture, SEG, review flags) for it: predict, correct the mask, measure again.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import numpy as np

from kerasmuscle.core.slices import SliceSelection
from kerasmuscle.errors import ReadError
from kerasmuscle.labels import LABELS, label


def _label_values(names: dict[int, str]) -> dict[int, int]:
    """DICOM SEG segment number -> kerasmuscle label value by the segment's label (:func:`kerasmuscle.labels.label`:
    key, name or Table I name); -1 for a label that names no muscle group."""
    out = {}
    for number, name in names.items():
        try:
            out[number] = label(str(name)).id or -1
        except KeyError:
            out[number] = -1
    return out


def muscle_labels(path: str, array: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """``array`` as kerasmuscle label values (0 background, 1-5 the muscle groups).

    A DICOM SEG's segments are matched by their labels (``psoas major``, ``psoas``, ``Psoas``); other files
    must hold the values 0-5 already.

    Raises:
        ReadError: a segment whose label names no muscle group, or values outside 0-5; naming the file.
    """
    valid = ", ".join(f"{lab.id} {lab.key}" for lab in LABELS)
    if names:
        mapping = _label_values(names)
        unknown = [f"{n} {names[n]!r}" for n, v in mapping.items() if v < 0 and (array == n).any()]
        if unknown:
            raise ReadError(path, f"segment(s) {', '.join(unknown)} name no muscle group of kerasmuscle "
                                  f"({', '.join(lab.name for lab in LABELS[1:])})")
        lut = np.zeros(256, np.uint8)
        for number, value in mapping.items():
            if 0 <= number < 256 and value > 0:
                lut[number] = value
        return lut[array.astype(np.uint8)]
    values = np.unique(array)
    bad = [int(v) for v in values if not 0 <= int(v) < len(LABELS)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise ReadError(path, f"label value(s) {shown} are not kerasmuscle labels (expected {valid})")
    return array.astype(np.uint8)


class MaskPredictor:
    """A predictor whose prediction of a scan is the label file ``mask`` (on the scan's grid).

    Args:
        mask: the label file (NIfTI, NPZ or DICOM SEG).
    """

    backend = "labels"
    precision = "reference"
    hu_range = None
    preprocess = None

    def __init__(self, mask: str | os.PathLike):
        self.mask = os.fspath(mask)
        if not os.path.isfile(self.mask):
            raise ReadError(self.mask, "no such file" if not os.path.exists(self.mask) else "is a folder; name the label file")
        with open(self.mask, "rb") as fh:
            self.model_sha256 = hashlib.sha256(fh.read()).hexdigest()
        self.info: dict[str, Any] = {"bundle": "labels", "bundle_path": os.path.abspath(self.mask), "backend": self.backend,
                                     "precision": self.precision, "model_sha256": self.model_sha256}

    def predict(self, scan_or_path, slices: SliceSelection | str | None = None, *, postprocess: bool = True, **_):
        """The mask as a :class:`~kerasmuscle.predict.predictor.Prediction` of ``scan_or_path``: by default the
        slices the mask labels are measured (``postprocess`` is ignored: the mask is taken as it is)."""
        from kerasmuscle.io import read_labels, read_scan
        from kerasmuscle.predict.predictor import Prediction

        started = time.perf_counter()
        scan = read_scan(scan_or_path) if isinstance(scan_or_path, (str, os.PathLike, list, tuple)) else scan_or_path
        read = time.perf_counter() - started
        labelmap = read_labels(self.mask, like=scan)
        labels = muscle_labels(self.mask, np.asarray(labelmap.array), labelmap.names)
        if labels.shape != scan.shape:
            raise ReadError(self.mask, f"label map shape {labels.shape} does not match the scan {scan.shape}")
        if isinstance(slices, str):
            slices = SliceSelection.parse(slices)
        selection = slices if slices is not None else SliceSelection("labelled")
        choice = selection.choose(scan, labels)
        index = choice.indices
        return Prediction(scan=scan, labels=labels, slices=index, raw_labels=labels[index], hu_range=None,
                          model=dict(self.info), seconds={"read": read, "labels": time.perf_counter() - started - read},
                          choice=choice)


__all__ = ["MaskPredictor", "muscle_labels"]
