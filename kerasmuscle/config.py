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


__all__ = ["CONTRAST_PHASES", "Config", "ConfigError", "SynthConfig"]
