"""The light side: segment and measure CT with an exported bundle, numpy and ONNX Runtime (or LiteRT) only.

- ``predictor.py``: :class:`Predictor` (load a bundle, segment a scan) and :class:`Prediction`.
- ``runtimes.py``: the ONNX Runtime and LiteRT model wrappers.
- ``batch.py``: :func:`predict_batch`, many scans into one output folder, resumable and sharded.

Importing this package never imports TensorFlow, Keras, tf2onnx, onnx or matplotlib.
"""

from __future__ import annotations

from kerasmuscle.predict.batch import BatchResult, predict_batch
from kerasmuscle.predict.predictor import Prediction, Predictor
from kerasmuscle.predict.runtimes import BACKENDS, LiteModel, OnnxModel, load_model

__all__ = ["BACKENDS", "BatchResult", "LiteModel", "OnnxModel", "Prediction", "Predictor", "load_model",
           "predict_batch"]
