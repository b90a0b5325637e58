"""The one loop that runs a segmentation network over slices of a scan.

Training's evaluation (a Keras model), the export checks and the light predictor (ONNX Runtime or LiteRT)
all call :func:`segment_slices`, so the same slices always get the same preprocessing, the same resizing
back to the scan's grid and the same HU post-processing. The network is any callable from a float32 batch
``[n, size, size, channels]`` to probabilities ``[n, size, size, classes]``. numpy only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from kerasmuscle.config import PreprocessConfig
from kerasmuscle.core.postprocess import threshold_hu
from kerasmuscle.core.preprocessing import prepare_slices, restore_probabilities

#: A network: a float32 batch ``[n, size, size, channels]`` in, probabilities ``[n, size, size, classes]`` out.
Network = Callable[[np.ndarray], np.ndarray]


@dataclass(eq=False)
class SliceLabels:
    """What :func:`segment_slices` returns.

    Args:
        index: the slice indices that were segmented, in the order given.
        raw: uint8 ``[len(index), rows, cols]``, the network's labels on the scan's grid.
        labels: ``raw`` after the HU post-processing, or ``raw`` itself when it was off.
        probabilities: float32 ``[len(index), rows, cols, classes]`` on the scan's grid, when asked for.
        seconds: time spent preprocessing, in the network, and resizing back plus post-processing.
    """

    index: np.ndarray
    raw: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def segment_slices(network: Network, hu: np.ndarray, index: Sequence[int], preprocess: PreprocessConfig, *,
                   hu_range: tuple[float, float] | None = None, probabilities: bool = False,
                   num_classes: int | None = None, batch_size: int = 4) -> SliceLabels:
    """Segment some slices of a volume.

    Args:
        network: the model (see :data:`Network`).
        hu: the scan in HU, ``[slices, rows, cols]``.
        index: which slices.
        preprocess: HU window, channels and network input size.
        hu_range: remove labels outside this HU range (the paper's post-processing); None keeps them.
        probabilities: also return the class probabilities on the scan's grid (needs ``num_classes``
            only when ``index`` is empty).
        num_classes: classes the network outputs, to shape empty results.
        batch_size: slices per network call.

    Returns:
        The :class:`SliceLabels`.
    """
    index = np.asarray(list(index), np.int64)
    rows_cols = tuple(hu.shape[1:])
    raw = np.zeros((len(index), *rows_cols), np.uint8)
    probs = None
    seconds = {"preprocess": 0.0, "model": 0.0, "restore": 0.0}
    for start in range(0, len(index), batch_size):
        part = index[start:start + batch_size]
        t0 = time.perf_counter()
        x = prepare_slices(hu, part, preprocess)
        t1 = time.perf_counter()
        p = np.asarray(network(x))
        t2 = time.perf_counter()
        restored = restore_probabilities(p, rows_cols)
        raw[start:start + len(part)] = np.argmax(restored, axis=-1)
        if probabilities:
            if probs is None:
                probs = np.zeros((len(index), *rows_cols, restored.shape[-1]), np.float32)
            probs[start:start + len(part)] = restored
        seconds["preprocess"] += t1 - t0
        seconds["model"] += t2 - t1
        seconds["restore"] += time.perf_counter() - t2
    if probabilities and probs is None:
        probs = np.zeros((0, *rows_cols, int(num_classes or 0)), np.float32)
    t3 = time.perf_counter()
    labels = threshold_hu(raw, hu[index], hu_range) if hu_range is not None else raw
    seconds["restore"] += time.perf_counter() - t3
    return SliceLabels(index=index, raw=raw, labels=labels, probabilities=probs, seconds=seconds)


__all__ = ["Network", "SliceLabels", "segment_slices"]
