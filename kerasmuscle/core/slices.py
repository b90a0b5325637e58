"""Which slices are segmented and measured: the one place that decides.

A :class:`SliceSelection` is what a user asked for (every slice, explicit indices, a z range in mm, or the
labelled slices of a label map, or ``auto``: the slices at mid-L3 that :func:`kerasmuscle.core.level.find_levels`
chooses); :meth:`SliceSelection.choose` turns it into slice indices of one scan, with the level result that
chose them, and says plainly when it cannot (:class:`NoL3Error` when L3 is not in the scan).
``SliceSelection.parse`` reads the text of ``--slices``. The predictor, the batch and the measurements ask
this module alone. numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kerasmuscle.config import Config
from kerasmuscle.errors import KerasMuscleError

if TYPE_CHECKING:
    from kerasmuscle.core.level import LevelResult

#: The kinds of selection.
KINDS = ("all", "index", "z", "labelled", "auto")


class SliceError(KerasMuscleError, ValueError):
    """A slice selection that is malformed or does not fit the scan (the message says which slice)."""


class NoL3Error(SliceError):
    """``auto`` found no L3 in the scan; ``level`` is the :class:`~kerasmuscle.core.level.LevelResult` that says why."""

    def __init__(self, message: str, level: "LevelResult"):
        super().__init__(message)
        self.level = level


@dataclass(frozen=True)
class SliceChoice:
    """The slices chosen in one scan, and how.

    Args:
        indices: slice indices, ascending and unique.
        method: ``"auto"`` (the level finder chose them), ``"user"`` (the user's own L3 choice: indices, a z
            range, or a stack of at most three slices that ``auto`` takes as it is), ``"all"`` or ``"labelled"``.
        level: the level finder's result, for ``auto``; else None.
    """

    indices: np.ndarray
    method: str
    level: "LevelResult | None" = None

    def to_dict(self) -> dict:
        """The record's ``level`` member: the method, the L3 choice and the named vertebrae (JSON-safe)."""
        if self.level is None:
            return {"method": self.method, "l3": None, "levels": []}
        found = self.level.to_dict()
        return {"method": self.method, "l3": found["l3"], "levels": found["levels"], "evidence": found["evidence"]}


def explicit_indices(slices: Iterable[int], count: int, *, source: str = "") -> list[int]:
    """Check explicit slice indices against a scan of ``count`` slices; their order is kept.

    Raises:
        SliceError: an index that is not an integer, lies outside ``0..count-1`` or is listed twice, or none.
    """
    where = f"{source}: " if source else ""
    out: list[int] = []
    for z in slices:
        if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
            raise SliceError(f"{where}slice index {z!r} is not an integer")
        z = int(z)
        if not 0 <= z < count:
            raise SliceError(f"{where}slice {z} does not exist: slice index {z} is out of range for a scan of "
                             f"{count} slices (0..{count - 1})")
        if z in out:
            raise SliceError(f"{where}slice index {z} is listed twice")
        out.append(z)
    if not out:
        raise SliceError(f"{where}no slices to measure")
    return out


def labelled_indices(labels: np.ndarray) -> list[int]:
    """The slices of a label volume ``[slices, rows, cols]`` that hold any label (every slice when none does)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    found = np.flatnonzero(labels.reshape(n, -1).max(axis=1, initial=0) > 0) if n else np.array([], int)
    return [int(z) for z in (found if found.size else range(n))]


def z_indices(locations: np.ndarray, z_range: tuple[float, float], *, source: str = "") -> np.ndarray:
    """The slices whose location along the slice normal lies in ``z_range`` (mm, either order).

    Raises:
        SliceError: no slice lies within the range.
    """
    lo, hi = sorted(float(v) for v in z_range)
    locations = np.asarray(locations, float)
    index = np.flatnonzero((locations >= lo - 1e-3) & (locations <= hi + 1e-3))
    if not len(index):
        where = f"{source}: " if source else ""
        span = f"its slices run from {locations[0]:.2f} to {locations[-1]:.2f} mm" if len(locations) else "it has no slices"
        raise SliceError(f"{where}no slice lies within z {lo:g}..{hi:g} mm ({span})")
    return index


@dataclass(frozen=True)
class SliceSelection(Config):
    """Which slices of a scan to use (a config: it round-trips through JSON).

    Args:
        kind: ``"all"``, ``"index"`` (``indices``), ``"z"`` (``z_range`` in mm along the slice normal),
            ``"labelled"`` (the slices a label map covers) or ``"auto"`` (the L3 slices the level finder
            chooses; a stack of at most three slices is taken as the user's own choice).
        indices: 0-based slice indices, for ``"index"``.
        z_range: ``(low, high)`` in mm, for ``"z"``.
    """

    kind: str = "all"
    indices: tuple[int, ...] = ()
    z_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SliceError(f"slice selection {self.kind!r}: kinds are {', '.join(KINDS)}")
        if self.kind == "index" and not self.indices:
            raise SliceError("an index selection needs at least one slice index")
        if self.kind == "z" and (self.z_range is None or len(self.z_range) != 2):
            raise SliceError("a z selection needs (low, high) in mm")
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
        if self.z_range is not None:
            object.__setattr__(self, "z_range", (float(self.z_range[0]), float(self.z_range[1])))

    @classmethod
    def of(cls, slices: Sequence[int] | None = None, z_range: tuple[float, float] | None = None) -> "SliceSelection":
        """From the keyword arguments of the Python API: indices, a z range, or neither (every slice)."""
        if slices is not None and z_range is not None:
            raise SliceError("give slice indices or a z range, not both")
        if z_range is not None:
            return cls("z", z_range=(float(z_range[0]), float(z_range[1])))
        if slices is None:
            return cls("all")
        values = list(slices)
        bad = [z for z in values if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer))]
        if bad:
            raise SliceError(f"slice index {bad[0]!r} is not an integer")
        return cls("index", indices=tuple(int(z) for z in values))

    @classmethod
    def parse(cls, text: str | None) -> "SliceSelection":
        """Read ``auto``, ``all``, ``12``, ``10-14``, ``10,12,20-22`` (0-based indices) or ``z:-120:-90`` (mm).

        Raises:
            SliceError: the text is none of these forms.
        """
        if text is None or text.strip().lower() in ("", "all"):
            return cls("all")
        if text.strip().lower() == "auto":
            return cls("auto")
        if text.strip().lower() == "labelled":
            return cls("labelled")
        text = text.strip()
        if text.lower().startswith("z:"):
            parts = text[2:].split(":")
            try:
                lo, hi = (float(p) for p in parts)
            except ValueError:
                raise SliceError(f"slice range {text!r}: write z:LOW:HIGH in mm, for example z:-120:-90") from None
            return cls("z", z_range=(lo, hi))
        index: list[int] = []
        for part in text.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise SliceError(f"slices {text!r}: write auto, all, 12, 10-14, 10,12,20-22 or z:LOW:HIGH")
            a, b = int(m.group(1)), int(m.group(2) or m.group(1))
            if b < a:
                raise SliceError(f"slices {part.strip()!r}: the range runs backwards")
            index += range(a, b + 1)
        return cls("index", indices=tuple(dict.fromkeys(index)))

    def text(self) -> str:
        """The selection as ``--slices`` writes it (parsing it back gives the same selection)."""
        if self.kind == "z":
            return f"z:{self.z_range[0]:g}:{self.z_range[1]:g}"
        if self.kind == "index":
            return ",".join(str(i) for i in self.indices)
        return self.kind

    def resolve(self, scan, labels: np.ndarray | None = None) -> np.ndarray:
        """The slice indices of ``scan`` this selection names, ascending and unique (see :meth:`choose`)."""
        return self.choose(scan, labels).indices

    def choose(self, scan, labels: np.ndarray | None = None, *, level: "LevelResult | None" = None) -> SliceChoice:
        """The slices of ``scan`` this selection names, with how they were chosen.

        Args:
            scan: the :class:`~kerasmuscle.io.Scan`.
            labels: the label volume, for ``"labelled"``.
            level: for ``"auto"``, a level result found earlier for this scan (else the finder runs).

        Raises:
            SliceError: an index outside the scan, or a z range that holds no slice.
            NoL3Error: ``"auto"`` and L3 is not in the scan (the message says what was found and why).
        """
        n = scan.shape[0]
        if self.kind == "z":
            return SliceChoice(z_indices(scan.slice_locations, self.z_range, source=scan.source), "user")
        if self.kind == "index":
            index = np.array(sorted(explicit_indices(dict.fromkeys(self.indices), n, source=scan.source)), np.int64)
            return SliceChoice(index, "user")
        if self.kind == "labelled":
            if labels is None:
                raise SliceError("the labelled slices need a label map")
            return SliceChoice(np.array(labelled_indices(labels), np.int64), "labelled")
        if self.kind == "auto":
            if level is None:
                from kerasmuscle.core.level import find_levels

                level = find_levels(scan)
            if not level.l3.found:
                where = f"{scan.source}: " if scan.source else ""
                raise NoL3Error(f"{where}not measured: {level.l3.reason}", level)
            method = "user" if "user_choice" in level.l3.flags else "auto"
            return SliceChoice(np.array(level.l3.indices, np.int64), method, level)
        return SliceChoice(np.arange(n), "all")


__all__ = ["KINDS", "NoL3Error", "SliceChoice", "SliceError", "SliceSelection", "explicit_indices", "labelled_indices",
           "z_indices"]
