"""The export's checks: float32 artifacts against Keras (probabilities), reduced precision against float32
(label maps), and the time per slice. numpy and :mod:`kerasmuscle.core` only; the models are callables.

Agreement is measured on what the predictor returns: each held-out slice goes through
:func:`kerasmuscle.core.inference.segment_slices` (the one slice loop: preprocessing, the network, the
probabilities resized back to the scan's grid, the argmax), once with float32 and once with the variant,
and the two label maps are compared by :func:`kerasmuscle.core.metrics.overlap_metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kerasmuscle.bundle import Parity
from kerasmuscle.config import PreprocessConfig
from kerasmuscle.core.inference import Network, segment_slices
from kerasmuscle.core.metrics import overlap_metrics
from kerasmuscle.core.preprocessing import channel_indices, prepare_slices
from kerasmuscle.export.common import ExportError, Log, keras_tf
from kerasmuscle.labels import MUSCLE_LABELS

#: Largest max-abs probability difference a float32 artifact may have from Keras.
TOLERANCE = 1e-4


@dataclass(eq=False)
class SliceStack:
    """Some slices of one case in HU: ``hu`` ``[k, rows, cols]`` holds the slices at ``index`` and the
    neighbours their channels need, so :func:`segment_slices` prepares them exactly as on the whole scan."""

    hu: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, hu: np.ndarray, index: Sequence[int], channels: int) -> "SliceStack":
        index = [int(z) for z in index]
        needed = sorted({src for z in index for src in channel_indices(len(hu), z, channels)})
        where = {z: i for i, z in enumerate(needed)}
        return cls(np.asarray(hu[needed], np.float32), np.asarray([where[z] for z in index], np.int64))

    def images(self, preprocess: PreprocessConfig, n: int | None = None) -> np.ndarray:
        """Network input for the first ``n`` slices (all by default)."""
        return prepare_slices(self.hu, self.index[:n], preprocess)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two arrays of the same shape."""
    if a.shape != b.shape:
        raise ExportError(f"output shape {a.shape} differs from Keras' {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def label_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float | None]:
    """Dice between two label maps for each muscle group, pooled over all slices.

    Returns:
        muscle key -> Dice (None where neither map has that muscle), plus ``"min"``: the smallest Dice
        (None when no muscle occurs at all).
    """
    out: dict[str, float | None] = {}
    for lab in MUSCLE_LABELS:
        dice = overlap_metrics(reference == lab.id, other == lab.id)["dice"]
        out[lab.key] = None if np.isnan(dice) else round(float(dice), 6)
    values = [v for v in out.values() if v is not None]
    out["min"] = min(values) if values else None
    return out


def scan_labels(network: Network, stacks: Sequence[SliceStack], preprocess: PreprocessConfig) -> np.ndarray:
    """The network's labels on the scans' grids for every slice of ``stacks`` (no HU post-processing),
    flattened to one row ``[1, pixels]`` so that cases of different sizes pool into one Dice."""
    flat = [segment_slices(network, s.hu, s.index, preprocess).raw.reshape(-1) for s in stacks]
    return np.concatenate(flat)[None] if flat else np.zeros((1, 0), np.uint8)


def seconds_per_call(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int = 3) -> float:
    """Median wall time of ``run(x)`` over ``repeats`` calls, after one warm-up call."""
    run(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def check_parity(runners: dict[str, Network], model, inputs: dict[int, np.ndarray], tolerance: float, what: str,
                 log: Log) -> dict[str, Parity]:
    """Run every float32 artifact on the same inputs as Keras (batch sizes 1 and 3).

    Raises:
        ExportError: an artifact differs from Keras by more than ``tolerance`` in probability; the message
            says whether float32 rounding of an untrained model explains it (:func:`float32_noise`).
    """
    reference = {b: np.asarray(model.predict_on_batch(v)) for b, v in inputs.items()}
    out: dict[str, Parity] = {}
    for key, run in runners.items():
        diffs = {b: max_abs_diff(run(v), reference[b]) for b, v in inputs.items()}
        worst = max(diffs.values())
        out[key] = Parity(batch_1_max_abs=diffs[1], batch_3_max_abs=diffs[3], tolerance=tolerance,
                          passed=worst <= tolerance)
        log(f"  parity {key}: max abs difference {worst:.2e} (batch 1 and 3; tolerance {tolerance:g})")
        if not worst <= tolerance:
            raise ExportError(f"{what}: the {key} export differs from Keras by {worst:.3g} in probability "
                              f"(tolerance {tolerance:g}); nothing was written. {float32_noise(model, inputs)}")
    return out


def float32_noise(model, inputs: dict[int, np.ndarray]) -> str:
    """Say whether a parity failure is float32 rounding of the model itself rather than a broken export:
    Keras' own disagreement between batch 1 and batch 3 on the same slice, and the size of its logits."""
    keras, _ = keras_tf()
    own = max_abs_diff(np.asarray(model.predict_on_batch(inputs[1])), np.asarray(model.predict_on_batch(inputs[3]))[:1])
    try:
        logits = float(np.abs(np.asarray(keras.Model(model.input, model.get_layer("logits").output)
                                         .predict_on_batch(inputs[3]))).max())
    except ValueError:
        logits = float("nan")
    if own > 0.5 * TOLERANCE or logits > 1000:
        return (f"Keras differs from itself by {own:.3g} between batch 1 and batch 3 and its logits reach "
                f"{logits:.3g}: at that size float32 rounding alone differs between runtimes, the sign of a model "
                "far from trained (a trained one has logits of tens to a hundred), not of a broken export. Train "
                "longer, or accept it explicitly with --tolerance")
    return (f"Keras agrees with itself to {own:.3g} between batch sizes and its logits stay within {logits:.3g}, "
            "so the export is at fault")


def agreement(fp32: Network, reduced: Network, stacks: Sequence[SliceStack], preprocess: PreprocessConfig,
              min_agreement: float) -> dict:
    """A reduced-precision variant against float32 on held-out slices: per-muscle Dice of the label maps
    on the scans' grids, the time per slice of each, and whether it ships (every muscle >= ``min_agreement``).

    Returns:
        The :class:`~kerasmuscle.bundle.Variant` fields (``shipped``, ``reason`` when not, the figures).
    """
    dice = label_agreement(scan_labels(fp32, stacks, preprocess), scan_labels(reduced, stacks, preprocess))
    one = stacks[0].images(preprocess, 1)
    fp32_s, low_s = seconds_per_call(fp32, one), seconds_per_call(reduced, one)
    low = dice["min"]
    shipped = low is not None and low >= min_agreement
    record = {"shipped": shipped, "dice_vs_float32": dice, "min_agreement": min_agreement,
              "heldout_slices": int(sum(len(s.index) for s in stacks)), "seconds_per_slice_float32": round(fp32_s, 4),
              "seconds_per_slice": round(low_s, 4), "speedup": round(fp32_s / low_s, 3)}
    if not shipped:
        record["reason"] = ("no muscle predicted on the held-out slices, so agreement cannot be measured"
                            if low is None else f"Dice agreement with float32 {low:.4f} < {min_agreement}")
    return record


__all__ = ["TOLERANCE", "SliceStack", "agreement", "check_parity", "float32_noise", "label_agreement",
           "max_abs_diff", "scan_labels", "seconds_per_call"]
