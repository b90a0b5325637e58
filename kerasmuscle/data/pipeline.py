"""Labelled slices in memory, and the tf.data pipeline that feeds them to the network.

Slices are read and preprocessed once per case with :mod:`kerasmuscle.core.preprocessing` (the numpy code the
predictor reuses) and cached on disk as ``.npz`` keyed by the source files and the preprocessing, so later
folds and resumed runs skip the DICOM reading. The pipeline then shuffles, augments, batches and prefetches
them. Every random draw is stateless and keyed by ``(seed, epoch, position)``, so one seed gives the same
batches in any run, and a run resumed at epoch *e* sees exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kerasmuscle.config import AugmentConfig, PreprocessConfig
from kerasmuscle.data.dataset import Case, read_case
from kerasmuscle.fileutil import atomic_path
from kerasmuscle.core.preprocessing import hu_to_normalised, prepare_labels, prepare_slices


@dataclass
class SliceSet:
    """Preprocessed labelled slices.

    Args:
        images: float32 ``[n, size, size, channels]``.
        labels: uint8 ``[n, size, size]``.
        case_ids: the case of each slice.
        slice_index: the slice's index in its scan.
    """

    images: np.ndarray
    labels: np.ndarray
    case_ids: list[str]
    slice_index: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, case_ids: Sequence[str]) -> "SliceSet":
        """The slices of some cases, in the given case order."""
        ids = np.asarray(self.case_ids)
        rows = np.concatenate([np.flatnonzero(ids == cid) for cid in case_ids] or [np.zeros(0, np.int64)])
        return SliceSet(self.images[rows], self.labels[rows], [self.case_ids[i] for i in rows], self.slice_index[rows])

    def sha256(self) -> str:
        """A hash of the preprocessed data (ids, pixels and labels): what a model was trained on."""
        h = hashlib.sha256()
        h.update(json.dumps(self.case_ids).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def _source_key(case: Case, config: PreprocessConfig) -> str:
    h = hashlib.sha256(config.to_json().encode())
    for path in (case.image, case.labels):
        files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else [Path(path)]
        for f in files:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_case_slices(case: Case, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one case and preprocess its labelled slices: ``(images, labels, slice_index)``."""
    scan, labels = read_case(case)
    index = labels.labelled_slices()
    return prepare_slices(scan.hu, index, config), prepare_labels(labels.array, index, config), index


def load_slices(cases: Sequence[Case], config: PreprocessConfig,
                cache_dir: str | os.PathLike | None = None) -> SliceSet:
    """Read and preprocess the labelled slices of ``cases``.

    Args:
        cases: the cases.
        config: window, channels and size.
        cache_dir: keep one ``.npz`` per case here, reused while the source files and config are unchanged.

    Returns:
        The :class:`SliceSet`, cases in the given order.
    """
    images, labels, ids, index = [], [], [], []
    for case in cases:
        cached = Path(cache_dir) / f"{case.id}-{_source_key(case, config)}.npz" if cache_dir else None
        if cached is not None and cached.is_file():
            with np.load(cached) as z:
                im, lab, idx = z["images"], z["labels"], z["index"]
        else:
            im, lab, idx = load_case_slices(case, config)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, images=im, labels=lab, index=idx)
        images.append(im)
        labels.append(lab)
        ids += [case.id] * len(im)
        index.append(idx)
    size, channels = config.image_size, config.channels
    return SliceSet(
        np.concatenate(images) if images else np.zeros((0, size, size, channels), np.float32),
        np.concatenate(labels) if labels else np.zeros((0, size, size), np.uint8),
        ids,
        np.concatenate(index) if index else np.zeros(0, np.int64),
    )


def augment_slice(image, label, seed, config: AugmentConfig, hu_window: tuple[float, float]):
    """Augment one slice with stateless random draws from ``seed`` (a ``[2]`` int tensor).

    A random affine map (rotation, isotropic scale, translation, optional left-right flip) moves image
    (bilinear) and labels (nearest) together; then a contrast factor, a brightness shift and Gaussian
    noise change the intensities. Outside the image counts as air.

    Returns:
        ``(image, label)`` of the same shapes and dtypes.
    """
    import tensorflow as tf

    size = tf.cast(tf.shape(image)[0], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 8)
    uniform = lambda i, lo, hi: tf.random.stateless_uniform([], seeds[i], lo, hi)  # noqa: E731
    angle = uniform(0, -config.rotation_deg, config.rotation_deg + 1e-9) * (math.pi / 180.0)
    scale = uniform(1, config.scale[0], config.scale[1] + 1e-9)
    tx = uniform(2, -config.translate, config.translate + 1e-9) * size
    ty = uniform(3, -config.translate, config.translate + 1e-9) * size
    flip = tf.where(uniform(4, 0.0, 1.0) < 0.5, -1.0, 1.0) if config.flip_lr else tf.constant(1.0)
    # Output pixel (x, y) samples input at A @ (x - c, y - c) + c + t, with A = R(angle) / scale * flip_x.
    c = (size - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
    transform = tf.stack([a0, a1, c - a0 * c - a1 * c + tx, b0, b1, c - b0 * c - b1 * c + ty, 0.0, 0.0])
    transform = tf.reshape(transform, [1, 8])
    shape = tf.shape(image)[:2]
    warp = lambda x, mode, fill: tf.raw_ops.ImageProjectiveTransformV3(  # noqa: E731
        images=x[None], transforms=transform, output_shape=shape, fill_value=fill,
        interpolation=mode, fill_mode="CONSTANT")[0]
    image = warp(image, "BILINEAR", -1.0)
    label = tf.cast(warp(tf.cast(label[..., None], tf.float32), "NEAREST", 0.0)[..., 0], tf.uint8)
    contrast = uniform(5, config.intensity_scale[0], config.intensity_scale[1] + 1e-9)
    shift = uniform(6, -1.0, 1.0) * hu_to_normalised(config.intensity_shift_hu, hu_window)
    noise_sd = tf.random.stateless_uniform([], seeds[7], config.noise_hu[0], config.noise_hu[1] + 1e-9)
    noise = tf.random.stateless_normal(tf.shape(image), tf.random.experimental.stateless_fold_in(seeds[7], 1))
    image = image * contrast + shift + noise * hu_to_normalised(1.0, hu_window) * noise_sd
    return image, label


def make_dataset(slices: SliceSet, batch_size: int, *, seed: int = 0, augment: AugmentConfig | None = None,
                 hu_window: tuple[float, float] = (-250.0, 250.0), shuffle: bool = True,
                 epochs: tuple[int, int] = (0, 1)):
    """A ``tf.data.Dataset`` of ``(image, label)`` batches over a range of epochs.

    Args:
        slices: the preprocessed slices.
        batch_size: slices per batch; an epoch's last batch may be smaller.
        seed: shuffling and augmentation of epoch *e* follow from ``(seed, e)``.
        augment: augmentation, or None (validation: no augmentation, no shuffling needed).
        hu_window: the preprocessing window (augmentation amounts are given in HU).
        shuffle: visit slices in a new seeded order every epoch.
        epochs: ``(first, stop)``: yields the batches of epochs ``first .. stop - 1`` back to back, so a
            resumed ``model.fit`` gets exactly the batches it would have had.

    Returns:
        The dataset; ``steps_per_epoch(len(slices), batch_size)`` batches per epoch.
    """
    import tensorflow as tf

    n = len(slices)
    size, channels = slices.images.shape[1], slices.images.shape[3]
    images, labels = slices.images, slices.labels

    def generate(epoch):
        order = np.random.default_rng([seed, int(epoch)]).permutation(n) if shuffle else np.arange(n)
        for pos, i in enumerate(order):
            yield images[i], labels[i], np.asarray([seed, int(epoch) * n + pos], np.int64)

    signature = (tf.TensorSpec((size, size, channels), tf.float32), tf.TensorSpec((size, size), tf.uint8),
                 tf.TensorSpec((2,), tf.int64))

    def one_epoch(epoch):
        ds = tf.data.Dataset.from_generator(generate, output_signature=signature, args=(epoch,))
        if augment is not None and augment.enabled:
            ds = ds.map(lambda x, y, s: augment_slice(x, y, s, augment, hu_window),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            ds = ds.map(lambda x, y, s: (x, y))
        # Batch within the epoch, so batches never straddle two epochs.
        return ds.batch(batch_size)

    ds = tf.data.Dataset.range(*epochs).flat_map(one_epoch)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch for ``n`` slices (the last one may be partial)."""
    return max(1, math.ceil(n / batch_size))
