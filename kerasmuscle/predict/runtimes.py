"""The runtimes a bundle's model runs in: ONNX Runtime (the default) and LiteRT. No TensorFlow.

Each model object has ``run(x) -> probabilities`` for a float32 batch ``[n, size, size, channels]``, the
network that :func:`kerasmuscle.core.inference.segment_slices` drives.
"""

from __future__ import annotations

import os

import numpy as np

from kerasmuscle.errors import KerasMuscleError, MissingExtraError
from kerasmuscle.fileutil import stderr_silenced

#: Backends and, per backend, precision -> bundle artifact.
BACKENDS: dict[str, dict[str, str]] = {
    "onnx": {"float32": "onnx", "int8": "onnx_int8"},
    "tflite": {"float32": "tflite", "int8": "tflite_int8", "float16": "tflite_fp16"},
}


#: glibc's ``mallopt`` parameter for the size from which an allocation gets its own mapping.
_M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(size: int = 1 << 20) -> bool:
    """Make every allocation of at least ``size`` bytes its own memory mapping, returned to the system when
    freed, for the whole process (glibc's ``mallopt(M_MMAP_THRESHOLD)``; elsewhere nothing is done).

    glibc raises that threshold (up to 32 MB) each time a mapped block is freed, so without this the
    activations that ONNX Runtime frees without its arena stay in the heap and later runs add to them.

    Returns:
        Whether the threshold was set.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(size)))


class OnnxModel:
    """An ONNX model in an ONNX Runtime session on the CPU.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
        lean_memory: turn off ONNX Runtime's memory-pattern planner, which preallocates every activation
            of a run at once.
        low_memory: also turn off ONNX Runtime's memory arena, so that each activation is freed when it is
            no longer needed, and fix glibc's mmap threshold for the process (:func:`fix_mmap_threshold`).
            The same results; lower peak memory, at the cost of fresh pages on every run (slower).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, lean_memory: bool = True,
                 low_memory: bool = False):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if lean_memory or low_memory:
            # Measured on the paper network at 512x512 (bench/predict.py): without the memory-pattern
            # planner peak memory drops and speed is unchanged; turning the arena off as well costs ~30 %.
            options.enable_mem_pattern = False
        if low_memory:
            # The arena keeps all it ever held: ~55 MB of scratch from building the session and, at 512x512,
            # ~90 MB above the live activations (fragments); without it the peak is ~125 MB lower, results
            # identical (bench/predict.py --memory).
            options.enable_cpu_mem_arena = False
            fix_mmap_threshold()
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


def load_model(path: str | os.PathLike, backend: str, *, threads: int | None = None, lean_memory: bool = True,
               low_memory: bool = False):
    """An :class:`OnnxModel` or :class:`LiteModel` for ``path`` (``lean_memory`` and ``low_memory``: ONNX only)."""
    if backend == "onnx":
        return OnnxModel(path, threads=threads, lean_memory=lean_memory, low_memory=low_memory)
    if backend == "tflite":
        return LiteModel(path, threads=threads)
    raise KerasMuscleError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "LiteModel", "OnnxModel", "fix_mmap_threshold", "load_model"]
