"""What the export modules share: the error, the log type, quiet converters and the lazy Keras import."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager, redirect_stdout
from io import StringIO

from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.fileutil import import_keras, stderr_silenced

Log = Callable[[str], None]


class ExportError(KerasMuscleError):
    """An export could not be made or failed its checks; nothing was written."""


@contextmanager
def quiet():
    """Keep converters' progress chatter (Python and C++) and deprecation warnings out of the user's terminal;
    failures still arrive as exceptions."""
    with warnings.catch_warnings(), redirect_stdout(StringIO()), stderr_silenced():
        warnings.simplefilter("ignore")
        yield


def keras_tf():
    """``(keras, tensorflow)``, imported on first use (the ``export`` extra's error when missing)."""
    return import_keras("export", "export")


def input_spec(config):
    """The model's input signature: float32 ``[batch, size, size, channels]`` with a dynamic batch axis."""
    keras, _ = keras_tf()
    size, channels = config.preprocess.image_size, config.preprocess.channels
    return keras.InputSpec(shape=(None, size, size, channels), dtype="float32")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as ``Type: first line of its message``, for metadata.json and log lines."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__
