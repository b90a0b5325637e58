"""The TensorFlow formats: SavedModel, and LiteRT (float32, float16 weights, full-integer int8) converted
from it. TensorFlow is imported when a function is called."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerasmuscle.config import TrainConfig
from kerasmuscle.export.common import input_spec, keras_tf, quiet


def write_savedmodel(model, config: TrainConfig, path: Path) -> None:
    """A TensorFlow SavedModel with a ``serve`` endpoint of dynamic batch size."""
    with quiet():
        model.export(os.fspath(path), format="tf_saved_model", input_signature=[input_spec(config)], verbose=False)


def write_tflite(saved_model: Path, path: Path, *, float16: bool = False,
                 int8_calibration: np.ndarray | None = None) -> None:
    """LiteRT flatbuffer converted from a SavedModel (dynamic batch axis).

    Args:
        saved_model: the SavedModel folder.
        path: the ``.tflite`` to write.
        float16: store the weights as float16 (computation stays float32).
        int8_calibration: full-integer int8 quantisation (int8 weights and activations, float32 input and
            output), calibrated on these preprocessed slices ``[n, size, size, channels]``.

    Converting from the SavedModel rather than from a traced Keras call matters: a concrete function that
    captures the Keras 3 variables converted to a model that outputs NaN in LiteRT 2.3.
    """
    _, tf = keras_tf()
    with quiet():
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if int8_calibration is not None:
            def representative():
                for i in range(len(int8_calibration)):
                    yield [int8_calibration[i:i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        path.write_bytes(converter.convert())


__all__ = ["write_savedmodel", "write_tflite"]
