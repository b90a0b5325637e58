"""The light side: segment and measure CT with an exported bundle, numpy and ONNX Runtime (or LiteRT) only.

- ``predictor.py``: :class:`Predictor` (load a bundle, segment a scan) and :class:`Prediction`.
- ``runtimes.py``: the ONNX Runtime and LiteRT model wrappers.
- ``batch.py``: :func:`predict_batch`, many scans into one output folder, resumable and sharded, configured
  by a :class:`~kerasmuscle.predict.PredictConfig`.
- ``outputs.py``: the output formats (label maps, DICOM SEG, overlay, tables), one registry entry each.

Importing this package never imports TensorFlow, Keras, tf2onnx, onnx or matplotlib; its names load on
first use, so ``kerasmuscle.predict.outputs`` (the CLI's ``--format`` help) is cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

#: name -> the module of this package that defines it.
_LAZY = {
    "BACKENDS": "runtimes", "LiteModel": "runtimes", "OnnxModel": "runtimes", "load_model": "runtimes",
    "Prediction": "predictor", "Predictor": "predictor",
    "BatchResult": "batch", "CaseEvent": "batch", "PredictConfig": "batch", "predict_batch": "batch",
}

if TYPE_CHECKING:
    from kerasmuscle.predict.batch import BatchResult, CaseEvent, PredictConfig, predict_batch
    from kerasmuscle.predict.predictor import Prediction, Predictor
    from kerasmuscle.predict.runtimes import BACKENDS, LiteModel, OnnxModel, load_model


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
