"""The light predictor: run an exported bundle on CT with numpy and ONNX Runtime (or LiteRT) only.

Importing or running this module never imports TensorFlow or Keras, so it installs with the base
package (``pip install kerasmuscle``) and embeds in other applications::

    from kerasmuscle.predict import Predictor

    predictor = Predictor.from_bundle("exports/l3", threads=2)
    result = predictor.predict("scans/patient-001")        # a DICOM folder, DICOM file, NIfTI or NPZ
    result.labels                                           # uint8 [slices, rows, cols], on the scan's grid

The preprocessing (HU window, channels, resizing) is :mod:`kerasmuscle.preprocessing`, the same code that
prepared the training slices, configured from the bundle's metadata.
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
from kerasmuscle.errors import KerasMuscleError, MissingExtraError
from kerasmuscle.fileutil import stderr_silenced
from kerasmuscle.postprocess import threshold_hu
from kerasmuscle.preprocessing import prepare_slices, restore_probabilities

#: Backends and, per backend, precision -> bundle artifact.
BACKENDS: dict[str, dict[str, str]] = {
    "onnx": {"float32": "onnx", "int8": "onnx_int8"},
    "tflite": {"float32": "tflite", "int8": "tflite_int8", "float16": "tflite_fp16"},
}


class OnnxModel:
    """An ONNX model in an ONNX Runtime session on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
        lean_memory: turn off ONNX Runtime's memory-pattern planner, which preallocates every activation
            of a run at once.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, lean_memory: bool = True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if lean_memory:
            # Measured on the paper network at 512x512 (bench/predict.py): without the memory-pattern
            # planner peak memory drops and speed is unchanged; turning the arena off as well costs ~30 %.
            options.enable_mem_pattern = False
        self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, size, size, classes]`` for input ``[n, size, size, channels]``."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


class LiteModel:
    """A LiteRT (TensorFlow Lite) model through ``ai_edge_litert``; resized when the batch changes.

    Args:
        path: the ``.tflite`` file.
        threads: interpreter threads (None: LiteRT's default).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingExtraError("the tflite backend", "litert", "ai-edge-litert") from None
        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=threads)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = -1

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, size, size, classes]`` for input ``[n, size, size, channels]``."""
        x = np.ascontiguousarray(x, np.float32)
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input, list(x.shape), strict=False)
            with stderr_silenced():  # LiteRT prints an INFO line about its XNNPACK delegate here
                self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def _check_looks_like_ct(scan) -> None:
    """Refuse a volume that is plainly a label map or mask rather than CT in HU (a common mix-up when a
    folder holds both): only small non-negative integers. CT always holds air or fat below 0 HU."""
    from kerasmuscle.errors import ReadError

    hu = scan.hu
    if not hu.size or hu.min() < 0 or hu.max() > 255:
        return
    sample = hu.reshape(-1)[:: max(1, hu.size // 200_000)]
    values = np.unique(sample)
    if len(values) <= 32 and np.all(values == np.round(values)):
        raise ReadError(scan.source, f"holds only {len(values)} distinct values in {values.min():g}..{values.max():g}: "
                                     "a label map or mask, not CT in Hounsfield units")


def load_model(path: str | os.PathLike, backend: str, *, threads: int | None = None, lean_memory: bool = True):
    """An :class:`OnnxModel` or :class:`LiteModel` for ``path``."""
    if backend == "onnx":
        return OnnxModel(path, threads=threads, lean_memory=lean_memory)
    if backend == "tflite":
        return LiteModel(path, threads=threads)
    raise KerasMuscleError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")


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
        seconds: time spent reading the scan, preprocessing, in the model, and resizing back plus
            post-processing.
    """

    scan: Any
    labels: np.ndarray
    slices: np.ndarray
    raw_labels: np.ndarray
    probabilities: np.ndarray | None = None
    hu_range: tuple[float, float] | None = None
    model: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class Predictor:
    """Segment the five muscle groups on CT slices with an exported bundle.

    Build it with :meth:`from_bundle`. One predictor can be used for many scans; it is not thread-safe
    (use one per thread, each with its own ``threads``).
    """

    def __init__(self, model, metadata: dict[str, Any], *, path: str = "", backend: str = "onnx",
                 precision: str = "float32", model_sha256: str = "", hu_range: tuple[float, float] | None = None):
        self.model = model
        self.metadata = metadata
        self.path = path
        self.backend = backend
        self.precision = precision
        self.model_sha256 = model_sha256
        pre = metadata["preprocessing"]
        self.preprocess = PreprocessConfig(image_size=int(pre["image_size"]), channels=int(pre["channels"]),
                                           hu_window=tuple(float(v) for v in pre["hu_window"]))
        self.hu_range = tuple(float(v) for v in (hu_range or metadata["postprocess"]["hu_range"]))
        self.num_classes = len(metadata["labels"])

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, backend: str = "onnx", *, precision: str = "float32",
                    threads: int | None = None, lean_memory: bool = True, verify: bool = True,
                    hu_range: tuple[float, float] | None = None) -> "Predictor":
        """Load a bundle written by ``kerasmuscle export``.

        Args:
            path: the bundle folder.
            backend: ``"onnx"`` (ONNX Runtime) or ``"tflite"`` (LiteRT: ``pip install 'kerasmuscle[litert]'``).
            precision: ``"float32"``; ``"int8"`` (onnx, tflite) or ``"float16"`` (tflite) when the bundle
                ships that variant; ``"fastest"`` picks int8 when shipped, then float16, else float32.
            threads: CPU threads for the model (None: the runtime's default).
            lean_memory: ONNX Runtime without the memory-pattern planner (less memory, same speed).
            verify: check every file against ``SHA256SUMS`` first (refuses altered bundles).
            hu_range: post-processing range in HU instead of the bundle's (the paper's -20..200).

        Returns:
            The predictor.

        Raises:
            BundleError: not a bundle, altered files, or the asked-for artifact is not in it.
        """
        root = Path(path)
        meta = _bundle.read_metadata(root)
        if backend not in BACKENDS:
            raise KerasMuscleError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")
        shipped = meta.get("files", {})
        if precision == "fastest":
            reduced = [p for p, key in BACKENDS[backend].items() if p != "float32" and key in shipped]
            precision = reduced[0] if reduced else "float32"
        if precision not in BACKENDS[backend]:
            raise KerasMuscleError(f"backend {backend} has precisions {', '.join(BACKENDS[backend])}, not {precision!r}")
        key = BACKENDS[backend][precision]
        if key not in shipped:
            why = meta.get("reduced_precision", {}).get(key, {}).get("reason")
            raise _bundle.BundleError(root, f"has no {backend} {precision} model"
                                            + (f" ({why})" if why else " (export it with that format)"))
        sums = _bundle.verify(root) if verify else _bundle.read_checksums(root)
        rel = shipped[key]
        model = load_model(root / rel, backend, threads=threads, lean_memory=lean_memory)
        return cls(model, meta, path=os.fspath(root), backend=backend, precision=precision,
                   model_sha256=sums.get(rel, ""), hu_range=hu_range)

    @property
    def info(self) -> dict[str, Any]:
        """Provenance recorded with every result: bundle name and path, backend, precision, model checksum."""
        return {"bundle": self.metadata.get("name", ""), "bundle_path": self.path, "backend": self.backend,
                "precision": self.precision, "model_sha256": self.model_sha256}

    def select_slices(self, scan, slices: Sequence[int] | None = None,
                      z_range: tuple[float, float] | None = None) -> np.ndarray:
        """Indices to predict: all, the given ones, or those whose location lies in ``z_range`` (mm).

        Raises:
            KerasMuscleError: an index outside the scan, or a z range that holds no slice.
        """
        n = scan.shape[0]
        if slices is not None and z_range is not None:
            raise KerasMuscleError("give slice indices or a z range, not both")
        if z_range is not None:
            lo, hi = sorted(float(v) for v in z_range)
            locs = scan.slice_locations
            index = np.flatnonzero((locs >= lo - 1e-3) & (locs <= hi + 1e-3))
            if not len(index):
                raise KerasMuscleError(f"{scan.source}: no slice lies within z {lo:g}..{hi:g} mm "
                                       f"(its slices run from {locs[0]:.2f} to {locs[-1]:.2f} mm)")
            return index
        if slices is None:
            return np.arange(n)
        index = np.unique(np.asarray(list(slices), np.int64))
        bad = index[(index < 0) | (index >= n)]
        if len(bad):
            raise KerasMuscleError(f"{scan.source}: slice {int(bad[0])} does not exist; the scan has slices 0..{n - 1}")
        return index

    def predict(self, scan_or_path, slices: Sequence[int] | None = None, *, z_range: tuple[float, float] | None = None,
                probabilities: bool = False, postprocess: bool = True, hu_range: tuple[float, float] | None = None,
                batch_size: int = 4) -> Prediction:
        """Segment a scan.

        Args:
            scan_or_path: a :class:`~kerasmuscle.io.Scan`, or anything :func:`~kerasmuscle.io.read_scan` reads.
            slices: indices to segment (default: every slice).
            z_range: segment the slices whose location along the slice normal lies in ``(low, high)`` mm.
            probabilities: also return the class probabilities on the scan's grid.
            postprocess: remove predicted muscle outside the HU range (the paper's step).
            hu_range: the HU range for this call instead of the predictor's.
            batch_size: slices per model call.

        Returns:
            The :class:`Prediction`.

        Raises:
            ReadError: the path cannot be read as CT.
            KerasMuscleError: bad slice selection.
        """
        started = time.perf_counter()
        if isinstance(scan_or_path, (str, os.PathLike, list, tuple)):
            from kerasmuscle.io import read_scan

            scan = read_scan(scan_or_path)
        else:
            scan = scan_or_path
        _check_looks_like_ct(scan)
        index = self.select_slices(scan, slices, z_range)
        rows_cols = scan.shape[1:]
        hu_range = tuple(hu_range) if hu_range is not None else self.hu_range
        labels = np.zeros(scan.shape, np.uint8)
        raw = np.zeros((len(index), *rows_cols), np.uint8)
        probs = np.zeros((len(index), *rows_cols, self.num_classes), np.float32) if probabilities else None
        seconds = {"read": time.perf_counter() - started, "preprocess": 0.0, "model": 0.0, "restore": 0.0}
        for start in range(0, len(index), batch_size):
            part = index[start:start + batch_size]
            t0 = time.perf_counter()
            x = prepare_slices(scan.hu, part, self.preprocess)
            t1 = time.perf_counter()
            p = self.model.run(x)
            t2 = time.perf_counter()
            restored = restore_probabilities(p, rows_cols)
            lab = np.argmax(restored, axis=-1).astype(np.uint8)
            raw[start:start + len(part)] = lab
            if probs is not None:
                probs[start:start + len(part)] = restored
            labels[part] = threshold_hu(lab, scan.hu[part], hu_range) if postprocess else lab
            seconds["preprocess"] += t1 - t0
            seconds["model"] += t2 - t1
            seconds["restore"] += time.perf_counter() - t2
        return Prediction(scan=scan, labels=labels, slices=index, raw_labels=raw, probabilities=probs,
                          hu_range=hu_range if postprocess else None, model=self.info, seconds=seconds)


__all__ = ["BACKENDS", "LiteModel", "OnnxModel", "Prediction", "Predictor", "load_model"]
