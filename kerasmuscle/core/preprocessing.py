"""CT slices to network input and network output back to the scan grid, in numpy only.

Training, evaluation and the predictor all call these functions, so the two sides can never disagree
about the HU window, the channel layout or the resizing.

- Intensities: HU are clipped to ``hu_window`` and mapped linearly onto -1..1.
- Channels: one slice, or three (the slice between its neighbours, the edge slice repeated at the ends).
- Size: each slice is resized to ``image_size`` square with separable linear filters (a triangle filter
  widened when shrinking, so small structures are averaged rather than aliased); labels use the nearest
  pixel. Probabilities are resized back with the same linear filters and only then turned into labels.
  A non-square slice is stretched to the square and back.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from kerasmuscle.config import PreprocessConfig


def normalise(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``hu_window`` and map it linearly onto -1..1 (float32)."""
    low, high = hu_window
    out = np.clip(np.asarray(hu, np.float32), low, high)
    out -= (low + high) / 2.0
    out *= 2.0 / (high - low)
    return out


def hu_to_normalised(delta_hu: float, hu_window: tuple[float, float]) -> float:
    """The size of a HU difference in normalised units (for augmentation given in HU)."""
    return 2.0 * delta_hu / (hu_window[1] - hu_window[0])


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear resampling matrix ``[n_out, n_in]`` that maps a signal of ``n_in`` samples onto ``n_out``.

    Pixel centres are aligned (``x_in = (i + 0.5) * n_in / n_out - 0.5``); the triangle filter's support
    grows with the shrink factor, and weights are renormalised at the edges.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale - 0.5
    src = np.arange(n_in)
    weights = np.maximum(0.0, 1.0 - np.abs(src[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights.astype(np.float32)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` samples for nearest-neighbour resizing."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of ``image`` to ``size`` (rows, cols) with :func:`resize_matrix` filters."""
    rows, cols = image.shape[-2:]
    if (rows, cols) == tuple(size):
        return np.asarray(image, np.float32)
    ry = resize_matrix(rows, size[0])
    rx = resize_matrix(cols, size[1])
    return np.matmul(np.matmul(ry, np.asarray(image, np.float32)), rx.T)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of a label map to ``size`` by nearest neighbour."""
    rows, cols = labels.shape[-2:]
    if (rows, cols) == tuple(size):
        return labels
    return labels[..., nearest_index(rows, size[0])[:, None], nearest_index(cols, size[1])[None, :]]


def channel_indices(num_slices: int, index: int, channels: int) -> list[int]:
    """The slices that make up the channels of slice ``index``: itself, or its neighbours and itself."""
    if channels == 1:
        return [index]
    return [max(index - 1, 0), index, min(index + 1, num_slices - 1)]


def prepare_slices(hu: np.ndarray, indices, config: PreprocessConfig) -> np.ndarray:
    """Network input for some slices of a volume.

    Args:
        hu: the scan in HU, ``[slices, rows, cols]``.
        indices: which slices (in the scan's order).
        config: window, channels and size.

    Returns:
        float32 ``[len(indices), image_size, image_size, channels]``.
    """
    size = (config.image_size, config.image_size)
    out = np.empty((len(indices), *size, config.channels), np.float32)
    for n, z in enumerate(indices):
        for c, src in enumerate(channel_indices(len(hu), int(z), config.channels)):
            out[n, ..., c] = resize_image(normalise(hu[src], config.hu_window), size)
    return out


def prepare_labels(labels: np.ndarray, indices, config: PreprocessConfig) -> np.ndarray:
    """Training targets for some slices: uint8 ``[len(indices), image_size, image_size]``."""
    return resize_labels(np.asarray(labels)[list(indices)], (config.image_size, config.image_size)).astype(np.uint8)


def restore_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize network probabilities ``[n, size, size, classes]`` back to the scan's ``(rows, cols)``.

    Returns:
        float32 ``[n, rows, cols, classes]``.
    """
    p = np.moveaxis(np.asarray(probabilities, np.float32), -1, 1)
    return np.moveaxis(resize_image(p, shape), 1, -1)


def probabilities_to_labels(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Labels on the scan grid: probabilities resized back with :func:`restore_probabilities`, then argmax."""
    return np.argmax(restore_probabilities(probabilities, shape), axis=-1).astype(np.uint8)
