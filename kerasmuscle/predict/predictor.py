"""The light predictor: run an exported bundle on CT with numpy and ONNX Runtime (or LiteRT) only.

Importing or running this module never imports TensorFlow or Keras, so it installs with the base
package (``pip install kerasmuscle``) and embeds in other applications::

    from kerasmuscle.predict import Predictor

    predictor = Predictor.from_bundle("exports/l3", threads=2)
    result = predictor.predict("scans/patient-001")        # a DICOM folder, DICOM file, NIfTI or NPZ
    result.labels                                           # uint8 [slices, rows, cols], on the scan's grid

The slice loop is :func:`kerasmuscle.core.inference.segment_slices` and its preprocessing (HU window,
channels, resizing) :mod:`kerasmuscle.core.preprocessing`, the same code that prepared the training slices
and that evaluation runs, configured from the bundle's metadata. Which slices: :mod:`kerasmuscle.core.slices`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle import bundle as _bundle
from kerasmuscle.config import PreprocessConfig
from kerasmuscle.core.inference import segment_slices
from kerasmuscle.core.slices import SliceChoice, SliceSelection
from kerasmuscle.errors import KerasMuscleError, ReadError
from kerasmuscle.predict.runtimes import BACKENDS, load_model


def _check_looks_like_ct(scan) -> None:
    """Refuse a volume that is plainly a label map or mask rather than CT in HU (a common mix-up when a
    folder holds both): only small non-negative integers. CT always holds air or fat below 0 HU."""
    hu = scan.hu
    if not hu.size or hu.min() < 0 or hu.max() > 255:
        return
    sample = hu.reshape(-1)[:: max(1, hu.size // 200_000)]
    values = np.unique(sample)
    if len(values) <= 32 and np.all(values == np.round(values)):
        raise ReadError(scan.source, f"holds only {len(values)} distinct values in {values.min():g}..{values.max():g}: "
                                     "a label map or mask, not CT in Hounsfield units")


@dataclass(eq=False)
class Prediction:
    """What :meth:`Predictor.predict` returns.

    Args:
        scan: the scan that was segmented.
        labels: uint8 ``[slices, rows, cols]`` on the scan's grid, post-processed when asked; slices that
            were not predicted are 0.
        slices: indices of the predicted slices, ascending.
        raw_labels: uint8 ``[len(slices), rows, cols]``, the network's labels before post-processing.
        probabilities: float32 ``[len(slices), rows, cols, classes]`` on the scan's grid, when asked for.
        hu_range: the HU range of the post-processing, or None when it was off.
        model: the bundle's name, path, backend, precision and model checksum.
        seconds: time spent reading the scan, finding the level (``auto``), preprocessing, in the model, and
            resizing back plus post-processing.
        choice: how the slices were chosen (:class:`~kerasmuscle.core.slices.SliceChoice`: ``method``, and
            for ``auto`` the level finder's ``level`` result with every vertebra named).
    """

    scan: Any
    labels: np.ndarray
    slices: np.ndarray
    raw_labels: np.ndarray
    probabilities: np.ndarray | None = None
    hu_range: tuple[float, float] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    choice: SliceChoice | None = None

    @property
    def level(self):
        """The level finder's :class:`~kerasmuscle.core.level.LevelResult` (``auto`` selections), else None."""
        return self.choice.level if self.choice is not None else None


class Predictor:
    """Segment the five muscle groups on CT slices with an exported bundle.

    Build it with :meth:`from_bundle`. One predictor can be used for many scans; it is not thread-safe
    (use one per thread, each with its own ``threads``).
    """

    def __init__(self, model, metadata: _bundle.BundleMetadata | dict[str, Any], *, path: str = "",
                 backend: str = "onnx", precision: str = "float32", model_sha256: str = "",
                 hu_range: tuple[float, float] | None = None):
        self.model = model
        if not isinstance(metadata, _bundle.BundleMetadata):
            metadata = _bundle.BundleMetadata.from_dict(metadata, path or None)
        self.metadata: _bundle.BundleMetadata = metadata
        self.path = path
        self.backend = backend
        self.precision = precision
        self.model_sha256 = model_sha256
        pre = metadata.preprocessing
        self.preprocess = PreprocessConfig(image_size=pre.image_size, channels=pre.channels, hu_window=pre.hu_window)
        self.hu_range = tuple(float(v) for v in (hu_range or metadata.postprocess.hu_range))
        self.num_classes = len(metadata.labels)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, backend: str = "onnx", *, precision: str = "float32",
                    threads: int | None = None, lean_memory: bool = True, low_memory: bool = False,
                    verify: bool = True, hu_range: tuple[float, float] | None = None) -> "Predictor":
        """Load a bundle written by ``kerasmuscle export``.

        Args:
            path: the bundle folder; None: the shipped model (:func:`kerasmuscle.bundle.default_bundle`,
                ``exports/l3-synth-v2``, trained on synthetic anatomy alone).
            backend: ``"onnx"`` (ONNX Runtime) or ``"tflite"`` (LiteRT: ``pip install 'kerasmuscle[litert]'``).
            precision: ``"float32"``; ``"int8"`` (onnx, tflite) or ``"float16"`` (tflite) when the bundle
                ships that variant; ``"fastest"`` picks int8 when shipped, then float16, else float32.
            threads: CPU threads for the model (None: the runtime's default).
            lean_memory: ONNX Runtime without the memory-pattern planner (less memory, same speed).
            low_memory: ONNX Runtime without its memory arena as well, and glibc's mmap threshold fixed for
                the process (:func:`~kerasmuscle.predict.runtimes.fix_mmap_threshold`): the same results with
                the lowest peak memory, slower (see the README's "Speed").
            verify: check every file against ``SHA256SUMS`` first (refuses altered bundles).
            hu_range: post-processing range in HU instead of the bundle's (the paper's -20..200).

        Returns:
            The predictor.

        Raises:
            BundleError: not a bundle, altered files, or the asked-for artifact is not in it.
        """
        root = Path(path) if path is not None else _bundle.default_bundle()
        meta = _bundle.read_metadata(root)
        if backend not in BACKENDS:
            raise KerasMuscleError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")
        shipped = meta.files
        if precision == "fastest":
            reduced = [p for p, key in BACKENDS[backend].items() if p != "float32" and key in shipped]
            precision = reduced[0] if reduced else "float32"
        if precision not in BACKENDS[backend]:
            raise KerasMuscleError(f"backend {backend} has precisions {', '.join(BACKENDS[backend])}, not {precision!r}")
        key = BACKENDS[backend][precision]
        if key not in shipped:
            why = meta.reason_missing(key)
            raise _bundle.BundleError(root, f"has no {backend} {precision} model"
                                            + (f" ({why})" if why else " (export it with that format)"))
        sums = _bundle.verify(root) if verify else _bundle.read_checksums(root)
        rel = shipped[key]
        model = load_model(root / rel, backend, threads=threads, lean_memory=lean_memory, low_memory=low_memory)
        return cls(model, meta, path=os.fspath(root), backend=backend, precision=precision,
                   model_sha256=sums.get(rel, ""), hu_range=hu_range)

    @property
    def info(self) -> dict[str, Any]:
        """Provenance recorded with every result: bundle name and path, backend, precision, model checksum."""
        return {"bundle": self.metadata.name, "bundle_path": self.path, "backend": self.backend,
                "precision": self.precision, "model_sha256": self.model_sha256}

    def select_slices(self, scan, slices: Sequence[int] | None = None,
                      z_range: tuple[float, float] | None = None) -> np.ndarray:
        """Indices to predict: all, the given ones, or those whose location lies in ``z_range`` (mm); see
        :class:`~kerasmuscle.core.slices.SliceSelection`.

        Raises:
            SliceError: an index outside the scan, or a z range that holds no slice.
        """
        return SliceSelection.of(slices, z_range).resolve(scan)

    def predict(self, scan_or_path, slices: Sequence[int] | SliceSelection | str | None = None, *,
                z_range: tuple[float, float] | None = None,
                probabilities: bool = False, postprocess: bool = True, hu_range: tuple[float, float] | None = None,
                batch_size: int = 4) -> Prediction:
        """Segment a scan.

        Args:
            scan_or_path: a :class:`~kerasmuscle.io.Scan`, or anything :func:`~kerasmuscle.io.read_scan` reads.
            slices: indices to segment, a :class:`~kerasmuscle.core.slices.SliceSelection`, or its text
                (``"auto"``: the slices at mid-L3 found by :func:`kerasmuscle.core.level.find_levels`;
                ``"43-45"``); default: every slice.
            z_range: segment the slices whose location along the slice normal lies in ``(low, high)`` mm.
            probabilities: also return the class probabilities on the scan's grid.
            postprocess: remove predicted muscle outside the HU range (the paper's step).
            hu_range: the HU range for this call instead of the predictor's.
            batch_size: slices per model call.

        Returns:
            The :class:`Prediction`.

        Raises:
            ReadError: the path cannot be read as CT.
            NoL3Error: ``"auto"`` and L3 is not in the scan (its ``level`` says what was found).
            KerasMuscleError: bad slice selection.
        """
        started = time.perf_counter()
        if isinstance(scan_or_path, (str, os.PathLike, list, tuple)):
            from kerasmuscle.io import read_scan

            scan = read_scan(scan_or_path)
        else:
            scan = scan_or_path
        _check_looks_like_ct(scan)
        if isinstance(slices, str):
            selection = SliceSelection.parse(slices)
        else:
            selection = slices if isinstance(slices, SliceSelection) else SliceSelection.of(slices, z_range)
        read = time.perf_counter() - started
        choice = selection.choose(scan)
        index = choice.indices
        level = time.perf_counter() - started - read
        hu_range = tuple(hu_range) if hu_range is not None else self.hu_range
        out = segment_slices(self.model.run, scan.hu, index, self.preprocess, hu_range=hu_range if postprocess else None,
                             probabilities=probabilities, num_classes=self.num_classes, batch_size=batch_size)
        labels = np.zeros(scan.shape, np.uint8)
        labels[index] = out.labels
        return Prediction(scan=scan, labels=labels, slices=index, raw_labels=out.raw, probabilities=out.probabilities,
                          hu_range=hu_range if postprocess else None, model=self.info,
                          seconds={"read": read, "level": level, **out.seconds}, choice=choice)


__all__ = ["Prediction", "Predictor"]
