"""The bundle writer (the TensorFlow side; ``export`` extra): a trained Keras model as SavedModel, ONNX and
LiteRT, each checked against Keras, with reduced-precision variants shipped only where they agree.
TensorFlow, tf2onnx and onnx are imported when a function is called, not at import."""

from __future__ import annotations

from kerasmuscle.export.writer import FORMATS, ExportError, export_bundle, label_agreement, resolve_source

__all__ = ["FORMATS", "ExportError", "export_bundle", "label_agreement", "resolve_source"]
