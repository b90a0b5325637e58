"""Frozen configuration dataclasses that round-trip through JSON.

Every run folder and export bundle stores the configs it was built from, so a result always says
exactly how it was made. A config loaded from JSON is checked: unknown keys (a typo in a hand-edited
file) and values of the wrong type are errors that name the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from kerasmuscle.errors import KerasMuscleError

C = TypeVar("C", bound="Config")


class ConfigError(KerasMuscleError, ValueError):
    """A configuration value or file is invalid."""


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON value to the annotated type ``tp`` (tuples, nested configs, optionals)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if isinstance(tp, type) and issubclass(tp, Config):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return tp.from_dict(value, _where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_decode(a, v, where) for a, v in zip(args, value))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


class Config:
    """Mixin for frozen dataclass configs: ``to_dict``, ``from_dict``, ``to_json``, ``from_json``,
    ``save``, ``load`` and ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON-compatible values (tuples become lists)."""
        return _encode(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], _where: str | None = None) -> C:
        """Build a config from a dict, rejecting unknown keys and values of the wrong type.

        Args:
            data: field values; missing fields take their defaults.

        Returns:
            The config.

        Raises:
            ConfigError: an unknown key or a value of the wrong type, naming the field.
        """
        where = _where or cls.__name__
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{where}: unknown field(s) {', '.join(unknown)}; known fields are {', '.join(sorted(names))}"
            )
        kwargs = {k: _decode(hints[k], v, f"{where}.{k}") for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_json(self, indent: int | None = 2) -> str:
        """Return the config as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Build a config from JSON text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON to ``path`` (through a temporary file, then renamed)."""
        from kerasmuscle.fileutil import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        """Read a config saved by :meth:`save`."""
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"{os.fspath(path)}: cannot read config ({exc.strerror})") from None
        try:
            return cls.from_json(text)
        except ConfigError as exc:
            raise ConfigError(f"{os.fspath(path)}: {exc}") from None

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if not (low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be an interval within [{low}, {high}], got {value}")


CONTRAST_PHASES = ("native", "arterial", "portal_venous")


@dataclass(frozen=True)
class SynthConfig(Config):
    """How synthetic L3 cohorts vary (see :mod:`kerasmuscle.synth`).

    Args:
        image_size: rows and columns of every slice.
        slices: adjacent axial slices per case (the paper labels three at L3).
        slice_spacing_mm: distance between slice centres (and the slice thickness).
        fov_mm: range of the reconstruction field of view; pixel spacing is ``fov / image_size``.
        noise_hu: range of the image noise standard deviation in soft tissue.
        muscle_scale: range of muscle size relative to an average adult (sarcopenic < 0.8 < athletic).
        fat_scale: range of fat thickness relative to an average adult (lean 0.3 .. obese 3).
        low_attenuation_fraction: share of patients whose muscle is fatty (myosteatosis, mean 10-30 HU).
        follow_up_fraction: share of cases that are a later scan of an earlier patient (same patient_id).
        contrast_phases: phases to draw from; a subset of ``native``, ``arterial``, ``portal_venous``.
    """

    image_size: int = 512
    slices: int = 3
    slice_spacing_mm: float = 5.0
    fov_mm: tuple[float, float] = (320.0, 500.0)
    noise_hu: tuple[float, float] = (5.0, 25.0)
    muscle_scale: tuple[float, float] = (0.6, 1.4)
    fat_scale: tuple[float, float] = (0.3, 3.0)
    low_attenuation_fraction: float = 0.2
    follow_up_fraction: float = 0.15
    contrast_phases: tuple[str, ...] = CONTRAST_PHASES

    def __post_init__(self) -> None:
        if self.image_size < 64 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 64, got {self.image_size}")
        if self.slices < 1:
            raise ValueError(f"slices must be at least 1, got {self.slices}")
        if self.slice_spacing_mm <= 0:
            raise ValueError(f"slice_spacing_mm must be positive, got {self.slice_spacing_mm}")
        _check_range("fov_mm", self.fov_mm, 100.0, 700.0)
        _check_range("noise_hu", self.noise_hu, 0.0, 200.0)
        _check_range("muscle_scale", self.muscle_scale, 0.3, 2.0)
        _check_range("fat_scale", self.fat_scale, 0.05, 5.0)
        for name in ("low_attenuation_fraction", "follow_up_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        bad = [p for p in self.contrast_phases if p not in CONTRAST_PHASES]
        if bad or not self.contrast_phases:
            raise ValueError(f"contrast_phases must be a non-empty subset of {CONTRAST_PHASES}, got {self.contrast_phases}")


@dataclass(frozen=True)
class SynthV2Config(Config):
    """How synthetic data v2 (:mod:`kerasmuscle.synth.v2`) varies: every sample its own anatomy, deformed
    at label level, with random or realistic intensities and a random acquisition.

    Args:
        image_size: rows and columns of every slice.
        slices: adjacent slices per sample (the network's input channels).
        fov_mm: range of the field of view; spine-centred narrow fields are drawn from its low end.
        narrow_fraction: share of samples with a narrow field centred on the spine (bodies cut at its edge).
        spacing_mm: allowed pixel spacing; the field is clipped to ``image_size`` times this range.
        level_mm: the middle slice lies up to this far above or below mid-L3 (uniformly); 40 reaches from
            about mid-L2 to mid-L4. With ``level_anatomy`` off, keep it within 25: beyond that the L3-only
            anatomy does not hold (the psoas sinks into the vertebra).
        level_anatomy: the anatomy follows the level from L2 to L4 (one vertebra and disc per level; psoas
            small at L2 and large at L4; quadratus lumborum thinner at both ends; kidneys, liver and spleen
            lower poles, the crura of the diaphragm and the lowest rib tips towards L2; the aortic
            bifurcation and the iliac crests towards L4). Off: the L3 anatomy at every level (as the
            shipped ``l3-synth-v1`` was trained).
        kidney_contact: share of kidneys placed against psoas and quadratus lumborum (where real lower poles
            lie, and where the shipped model took one for psoas); the others lie in the fat lateral to them.
        arms: share of samples with one or both arms lying beside the body (arms down): separate
            cross-sections outside the body outline, touching it or not, with skin, fat, muscle and bone,
            labelled background; with a chance of one half the field of view is widened to hold them,
            else they may be cut by its edge.
        thickness_mm: range of slice thickness; each slice averages sub-slices over it (partial volume).
        noise_hu: range of the noise standard deviation in soft tissue.
        elastic_points: range of control points per side of the elastic field.
        elastic_mm: range of the elastic displacement (standard deviation, mm).
        scale: largest relative change of size (per axis, ±).
        rotation_deg: largest in-plane rotation (±).
        flip: chance of a left-right flip (labels follow; sides are mirrored anatomy, not a relabelling).
        random_intensity: share of samples whose tissues get independent random means and SDs.
        random_mean_hu: range of a tissue's mean in those samples.
        random_sd_hu: largest tissue SD in those samples.
        bias_hu: largest amplitude of the smooth additive bias field in those samples.
        rim_absent: share of samples without fat rims around psoas and quadratus lumborum (thin and
            broken otherwise).
        quadratus_scale: range of quadratus lumborum's size factor.
        cancellous_hu: range of cancellous bone attenuation (osteoporotic spines near 90 HU).
        cortex_mm: range of cortical shell thickness.
        metal: share of samples with a metal implant and its streaks.
    """

    image_size: int = 256
    slices: int = 3
    fov_mm: tuple[float, float] = (150.0, 500.0)
    narrow_fraction: float = 0.15
    spacing_mm: tuple[float, float] = (0.5, 3.0)
    level_mm: float = 40.0
    level_anatomy: bool = True
    kidney_contact: float = 0.6
    arms: float = 0.25
    thickness_mm: tuple[float, float] = (1.0, 7.5)
    noise_hu: tuple[float, float] = (5.0, 60.0)
    elastic_points: tuple[int, int] = (8, 16)
    elastic_mm: tuple[float, float] = (2.0, 8.0)
    scale: float = 0.2
    rotation_deg: float = 15.0
    flip: float = 0.5
    random_intensity: float = 0.3
    random_mean_hu: tuple[float, float] = (-200.0, 300.0)
    random_sd_hu: float = 40.0
    bias_hu: float = 40.0
    rim_absent: float = 0.5
    quadratus_scale: tuple[float, float] = (0.3, 1.5)
    cancellous_hu: tuple[float, float] = (40.0, 300.0)
    cortex_mm: tuple[float, float] = (0.5, 2.0)
    metal: float = 0.03

    def __post_init__(self) -> None:
        if self.image_size < 64 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 64, got {self.image_size}")
        if self.slices < 1:
            raise ValueError(f"slices must be at least 1, got {self.slices}")
        _check_range("fov_mm", self.fov_mm, 100.0, 700.0)
        _check_range("spacing_mm", self.spacing_mm, 0.1, 5.0)
        _check_range("thickness_mm", self.thickness_mm, 0.5, 10.0)
        _check_range("noise_hu", self.noise_hu, 0.0, 200.0)
        _check_range("elastic_points", self.elastic_points, 2, 64)
        _check_range("elastic_mm", self.elastic_mm, 0.0, 30.0)
        _check_range("random_mean_hu", self.random_mean_hu, -1000.0, 3000.0)
        _check_range("quadratus_scale", self.quadratus_scale, 0.1, 3.0)
        _check_range("cancellous_hu", self.cancellous_hu, 0.0, 1000.0)
        _check_range("cortex_mm", self.cortex_mm, 0.1, 5.0)
        if not 0.0 <= self.level_mm <= 60.0:
            raise ValueError(f"level_mm must be within [0, 60], got {self.level_mm}")
        for name in ("narrow_fraction", "flip", "random_intensity", "rim_absent", "metal", "kidney_contact", "arms"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


#: Named U-Net architectures: name -> the :class:`UNetConfig` fields that differ from its defaults (the
#: ``paper`` reading). :meth:`UNetConfig.preset` and the CLI's ``--preset`` choices read this table; a new
#: preset is one entry here.
PRESETS: dict[str, dict[str, Any]] = {
    # 12,943,494 learnable parameters (three input slices), the paper's 12.9 M.
    "paper": {},
    # The usual mirror decoder: 7,766,150 parameters, half the FLOPs.
    "classic": {"decoder_filters": (256, 128, 64, 32), "up_kernel": 2},
    # The classic shape at half the width: a quarter of its FLOPs, for training at 256x256 and more on a
    # CPU (the shipped synthetic-trained model).
    "lite": {"filters": (16, 32, 64, 128), "bottleneck": 256, "decoder_filters": (128, 64, 32, 16), "up_kernel": 2},
}


@dataclass(frozen=True)
class UNetConfig(Config):
    """The 2-D U-Net of :func:`kerasmuscle.model.build_unet`.

    Args:
        filters: feature maps of the encoder blocks, one per level (the paper's depth 4: 32/64/128/256).
        bottleneck: feature maps of the block below the deepest pooling.
        decoder_filters: feature maps of the decoder blocks' convolutions, deepest first.
        up_kernel: kernel size of the transposed convolutions that upsample to the skip connection's width.
        input_channels: 1 (one slice) or 3 (the slice and its two neighbours as channels).
        num_classes: softmax outputs (background + five muscle groups).
        bn_momentum: batch normalisation's moving-average momentum. 0.9 rather than Keras' 0.99: with a
            few dozen steps per epoch the slower average lags the weights so far that validation scores
            of the first tens of epochs are near zero.

    Use :meth:`preset` for the two readings of the paper (and ``lite``, the shipped model's); see the README
    for why ``paper`` is built so.
    """

    filters: tuple[int, ...] = (32, 64, 128, 256)
    bottleneck: int = 512
    decoder_filters: tuple[int, ...] = (512, 256, 128, 64)
    up_kernel: int = 3
    input_channels: int = 1
    num_classes: int = 6
    bn_momentum: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 < self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be within (0, 1), got {self.bn_momentum}")
        if not self.filters or any(f < 1 for f in self.filters):
            raise ValueError(f"filters must be positive, got {self.filters}")
        if len(self.decoder_filters) != len(self.filters):
            raise ValueError(f"decoder_filters needs one value per level ({len(self.filters)}), got {self.decoder_filters}")
        if self.input_channels not in (1, 3):
            raise ValueError(f"input_channels must be 1 or 3, got {self.input_channels}")
        if self.up_kernel < 2:
            raise ValueError(f"up_kernel must be at least 2, got {self.up_kernel}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")

    @property
    def size_multiple(self) -> int:
        """Input rows and columns must be multiples of this (2 ** depth)."""
        return 2 ** len(self.filters)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> "UNetConfig":
        """Return a named architecture, optionally with some fields changed.

        Args:
            name: a key of :data:`PRESETS`. ``"paper"``: encoder 32/64/128/256, a 512 bottleneck, 3x3 transposed convolutions to the
                skip width and decoder convolutions 512/256/128/64, 12,943,494 learnable parameters, the
                paper's 12.9 M; ``"classic"``: the usual mirror decoder 256/128/64/32 with 2x2 transposed
                convolutions, 7,766,150 parameters; ``"lite"``: ``classic`` at half the width (16/32/64/128,
                a 256 bottleneck), 1,943,846 parameters.
            changes: fields to override (for example ``input_channels=3``).

        Returns:
            The config.
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **changes})


@dataclass(frozen=True)
class PreprocessConfig(Config):
    """How a CT slice becomes network input; training and the predictor share it (see
    :mod:`kerasmuscle.core.preprocessing`).

    Args:
        image_size: rows and columns of the network input; slices are resized to it (a multiple of 16).
        channels: 1 (the slice) or 3 (the slice between its two neighbours).
        hu_window: HU clipped to this range, then mapped linearly onto -1..1.
    """

    image_size: int = 512
    channels: int = 1
    hu_window: tuple[float, float] = (-250.0, 250.0)

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Training-time augmentation, drawn per slice from a seeded stream (validation is never augmented).

    Args:
        enabled: switch all augmentation off with False.
        rotation_deg: rotation drawn uniformly from +-this many degrees.
        scale: zoom factor range.
        translate: shift range as a fraction of the image size (each axis).
        flip_lr: mirror left-right with probability 1/2 (the classes are not sided).
        intensity_scale: contrast factor range, applied around the window centre.
        intensity_shift_hu: brightness shift drawn from +-this many HU.
        noise_hu: standard deviation of added Gaussian noise drawn from this range, in HU.
    """

    enabled: bool = True
    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.06
    flip_lr: bool = True
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift_hu: float = 20.0
    noise_hu: tuple[float, float] = (0.0, 15.0)

    def __post_init__(self) -> None:
        _check_range("scale", self.scale, 0.25, 4.0)
        _check_range("intensity_scale", self.intensity_scale, 0.1, 10.0)
        _check_range("noise_hu", self.noise_hu, 0.0, 500.0)
        for name in ("rotation_deg", "translate", "intensity_shift_hu"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class LossConfig(Config):
    """The soft Dice loss (see :class:`kerasmuscle.model.losses.DiceLoss`).

    Args:
        include_background: count class 0 in the mean over classes.
        smooth: added to numerator and denominator, so empty classes give a finite loss.
        reduction: ``"batch"`` pools pixels of the whole batch per class; ``"image"`` scores each image
            and averages.
    """

    include_background: bool = False
    smooth: float = 1.0
    reduction: str = "batch"

    def __post_init__(self) -> None:
        if self.reduction not in ("batch", "image"):
            raise ValueError(f"reduction must be 'batch' or 'image', got {self.reduction!r}")
        if self.smooth < 0:
            raise ValueError(f"smooth must not be negative, got {self.smooth}")


STRATEGIES = ("default", "mirrored", "multiworker")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a cross-validation run is made from; saved as the run folder's ``config.json``.

    Args:
        model: the network.
        preprocess: slice to network input (``preprocess.channels`` must equal ``model.input_channels``).
        augment: training-time augmentation.
        loss: the soft Dice loss.
        folds: number of patient-grouped cross-validation folds.
        tune_fraction: share of each fold's training patients held back to drive the learning-rate
            schedule, early stopping and the best checkpoint, so the fold's validation cases are only
            ever used for evaluation (0 monitors the training loss instead).
        epochs: maximum epochs per fold.
        batch_size: slices per step (global, over all replicas).
        learning_rate: AdamW's initial learning rate (the paper's 1e-2).
        weight_decay: AdamW's decoupled weight decay.
        plateau_factor, plateau_patience, min_learning_rate: ReduceLROnPlateau on the monitored Dice.
        early_stopping_patience: epochs without improvement before a fold stops (0: never).
        seed: folds, weights, shuffling and augmentation all follow from it.
        mixed_precision: float16 on GPUs, bfloat16 on CPUs; the output layer stays float32.
        strategy: tf.distribute strategy: ``default``, ``mirrored`` or ``multiworker``.
        deterministic: make TensorFlow ops deterministic: the same seed and thread count give the same
            weights, bit for bit (on the same CPU kind and package versions).
        threads: TensorFlow's intra-op threads. The thread count changes how sums are split, so it
            changes the weights; None lets TensorFlow use every core this process may run on (the count
            is recorded in the run's ``manifest.json``). Set it to reproduce a run on another machine;
            a run may be resumed with another value.
        init_weights: a bundle folder (its ``model.keras``, checked against ``SHA256SUMS``) or a ``.keras``
            file whose weights start every fold instead of random ones: fine-tuning. The network must be
            the same (preset, input channels); the image size may differ.
    """

    model: UNetConfig = UNetConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    loss: LossConfig = LossConfig()
    folds: int = 10
    tune_fraction: float = 0.1
    epochs: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 4
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 12
    seed: int = 0
    mixed_precision: bool = False
    strategy: str = "default"
    deterministic: bool = True
    threads: int | None = None
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.preprocess.channels != self.model.input_channels:
            raise ValueError(f"preprocess.channels ({self.preprocess.channels}) must equal "
                             f"model.input_channels ({self.model.input_channels})")
        if self.preprocess.image_size % self.model.size_multiple:
            raise ValueError(f"image_size must be a multiple of {self.model.size_multiple}, got {self.preprocess.image_size}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if not 0.0 <= self.tune_fraction < 1.0:
            raise ValueError(f"tune_fraction must be within [0, 1), got {self.tune_fraction}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor must be within (0, 1), got {self.plateau_factor}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


__all__ = ["CONTRAST_PHASES", "PRESETS", "STRATEGIES", "AugmentConfig", "Config", "ConfigError", "LossConfig",
           "PreprocessConfig", "SynthConfig", "SynthV2Config", "TrainConfig", "UNetConfig"]
