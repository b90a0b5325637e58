"""The bundle writer (the TensorFlow side; ``export`` extra): a trained Keras model as SavedModel, ONNX and
LiteRT, each checked against Keras, with reduced-precision variants shipped only where they agree.
TensorFlow, tf2onnx and onnx are imported when a function is called, not at import.

- ``writer.py``: what to export (:func:`resolve_source`), the slices to check on, :func:`export_bundle`.
- ``onnx.py``: ONNX float32 and int8, and :func:`split_transposed_convs`.
- ``tflite.py``: SavedModel and LiteRT (float32, float16, int8).
- ``parity.py``: the checks (probabilities against Keras, label agreement, time per slice).
- ``common.py``: :class:`ExportError` and what the others share.
"""

from __future__ import annotations

from kerasmuscle.export.common import ExportError
from kerasmuscle.export.onnx import split_transposed_convs, write_onnx, write_onnx_int8
from kerasmuscle.export.parity import TOLERANCE, label_agreement, max_abs_diff
from kerasmuscle.export.tflite import write_savedmodel, write_tflite
from kerasmuscle.export.writer import FORMATS, MIN_AGREEMENT, base_metadata, export_bundle, resolve_source

__all__ = ["FORMATS", "MIN_AGREEMENT", "TOLERANCE", "ExportError", "base_metadata", "export_bundle",
           "label_agreement", "max_abs_diff", "resolve_source", "split_transposed_convs", "write_onnx",
           "write_onnx_int8", "write_savedmodel", "write_tflite"]
