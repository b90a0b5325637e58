"""Clinical measurements at L3 from a label map: muscle areas, attenuation, sides and the SMI.

Each muscle group (:data:`kerasmuscle.labels.MUSCLE_LABELS`) is measured on every chosen slice as a
cross-sectional area in cm², split into the patient's left and right at the body's midline, with
the mean and standard deviation of its attenuation in Hounsfield units. The totals over the five
groups give the skeletal muscle area (SMA) and, with the patient's height, the skeletal muscle index
SMI = SMA / height² (cm²/m²). :func:`measure_case` adds one row per case: areas averaged over the
measured slices and attenuation pooled over all their pixels.

Only numpy is used, so measuring needs neither TensorFlow nor a DICOM library. Nothing is rounded
here; writers round.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kerasmuscle.core.slices import explicit_indices, labelled_indices
from kerasmuscle.errors import ReadError
from kerasmuscle.labels import MUSCLE_LABELS

if TYPE_CHECKING:
    from kerasmuscle.io.scan import Scan

#: Pixels above this attenuation (HU) belong to the body when finding the midline.
BODY_HU = -500.0
#: A column is a body column when it holds at least this share of the fullest column's body pixels.
BODY_COLUMN_FRACTION = 0.10
#: Plausible adult and paediatric heights in metres; values outside are refused.
HEIGHT_RANGE_M = (0.5, 2.5)

_SIDES = ("left", "right")
_ID_COLUMNS = ("case_id", "patient_id", "name")
_HEIGHT_COLUMNS = (("height_m", 1.0), ("height_cm", 0.01))


def _muscle_columns() -> list[str]:
    out: list[str] = []
    for lab in MUSCLE_LABELS:
        k = lab.key
        out += [f"{k}_area_cm2", f"{k}_left_area_cm2", f"{k}_right_area_cm2", f"{k}_mean_hu", f"{k}_sd_hu",
                f"{k}_left_mean_hu", f"{k}_left_sd_hu", f"{k}_right_mean_hu", f"{k}_right_sd_hu"]
    return out + ["sma_cm2", "sma_left_cm2", "sma_right_cm2", "muscle_mean_hu", "muscle_sd_hu", "height_m", "smi_cm2_m2"]


#: Keys of a slice row from :func:`measure_slices`, in order.
MEASUREMENT_COLUMNS: tuple[str, ...] = ("slice_index", "slice_location_mm", "midline_col", *_muscle_columns())
#: Keys of a case row from :func:`summarise_case`, in order.
CASE_COLUMNS: tuple[str, ...] = ("slices", "slice_indices", *_muscle_columns())


def columns(per_slice: bool) -> list[str]:
    """The row keys in order, for CSV writers.

    Args:
        per_slice: True for slice rows (:data:`MEASUREMENT_COLUMNS`), False for case rows
            (:data:`CASE_COLUMNS`).

    Returns:
        A new list of column names.
    """
    return list(MEASUREMENT_COLUMNS if per_slice else CASE_COLUMNS)


def midline_column(hu_slice: np.ndarray) -> float:
    """The body's left-right centre on one axial slice, as a fractional column index.

    Body pixels have HU > -500. Counting them per column, a column holding at least 10 % of the
    fullest column's count is a body column; this drops the thin CT couch and stray air noise. The
    midline is ``(first + last) / 2`` of the run of consecutive body columns around the fullest
    column, so that a couch edge curving up at the image border, or an arm lying apart from the
    trunk, cannot move it.

    This is the centre of the body's width, not the spine: it needs no bone threshold (which
    contrast, osteoporosis and metal would upset), and a patient lying off-centre or slightly
    rotated still splits into halves that agree with the spine to within a few millimetres.

    Args:
        hu_slice: one slice ``[rows, cols]`` in HU.

    Returns:
        The midline column; the image centre ``(cols - 1) / 2`` when no pixel is body.

    Raises:
        ValueError: ``hu_slice`` is not two-dimensional.
    """
    hu_slice = np.asarray(hu_slice)
    if hu_slice.ndim != 2:
        raise ValueError(f"midline_column needs one slice [rows, cols], got shape {hu_slice.shape}")
    counts = np.count_nonzero(hu_slice > BODY_HU, axis=0)
    peak = int(np.argmax(counts)) if counts.size else 0
    if counts.size == 0 or counts[peak] == 0:
        return (hu_slice.shape[1] - 1) / 2.0
    outside = np.flatnonzero(counts < BODY_COLUMN_FRACTION * counts[peak])
    first = int(outside[outside < peak].max()) + 1 if np.any(outside < peak) else 0
    last = int(outside[outside > peak].min()) - 1 if np.any(outside > peak) else len(counts) - 1
    return (first + last) / 2.0


def patient_left_is_higher_column(orientation: Sequence[float]) -> bool:
    """Whether increasing column index moves towards the patient's left.

    Args:
        orientation: the six DICOM direction cosines (LPS); the first three are the direction of
            increasing column index, and LPS +x is the patient's left.

    Returns:
        True when ``orientation[0] > 0``.

    Raises:
        ValueError: ``|orientation[0]| < 0.5``: columns do not run left-right (not an axial-like
            layout), so no side can be named.
    """
    x = float(orientation[0])
    if not abs(x) >= 0.5:
        raise ValueError(
            f"columns do not run left-right (row direction cosines {[float(v) for v in orientation[:3]]}); "
            "left and right need axial-like slices"
        )
    return x > 0


def check_height(height_m: float) -> float:
    """Return a height in metres as a float after checking that it is plausible.

    Args:
        height_m: the height in metres.

    Returns:
        ``float(height_m)``.

    Raises:
        ValueError: outside 0.5..2.5 m; the message says when the value looks like centimetres.
    """
    value = float(height_m)
    lo, hi = HEIGHT_RANGE_M
    if not lo <= value <= hi:
        hint = f" (it looks like centimetres; give {value / 100:g} m)" if 50 <= value <= 250 else ""
        raise ValueError(f"height {value:g} m is outside {lo:g}..{hi:g} m{hint}")
    return value


def _stats(values: np.ndarray) -> tuple[float, float]:
    """Mean and population SD (ddof=0) in float64; NaN for no values."""
    if values.size == 0:
        return math.nan, math.nan
    v = values.astype(np.float64, copy=False)
    mean = float(v.mean())
    return mean, float(np.sqrt(np.mean((v - mean) ** 2)))


def _regions(hu: np.ndarray, lab: np.ndarray, midline: float, left_high: bool) -> dict[tuple[str, str], np.ndarray]:
    """HU values of every (group, side) region of one slice; group ``"muscle"`` is all five groups."""
    high = np.arange(hu.shape[1]) > midline
    left_cols = high if left_high else ~high
    out: dict[tuple[str, str], np.ndarray] = {}
    any_muscle = np.zeros(lab.shape, bool)
    for lab_def in MUSCLE_LABELS:
        mask = lab == lab_def.id
        any_muscle |= mask
        out[lab_def.key, "all"] = hu[mask]
        out[lab_def.key, "left"] = hu[mask & left_cols[None, :]]
        out[lab_def.key, "right"] = hu[mask & ~left_cols[None, :]]
    out["muscle", "all"] = hu[any_muscle]
    out["muscle", "left"] = hu[any_muscle & left_cols[None, :]]
    out["muscle", "right"] = hu[any_muscle & ~left_cols[None, :]]
    return out


def _area_column(group: str, side: str) -> str:
    """The area column of a region of :func:`_regions`."""
    if group == "muscle":
        return "sma_cm2" if side == "all" else f"sma_{side}_cm2"
    return f"{group}_area_cm2" if side == "all" else f"{group}_{side}_area_cm2"


def _fill(row: dict[str, Any], regions: Mapping[tuple[str, str], np.ndarray], areas: Mapping[tuple[str, str], float],
          height_m: float | None) -> dict[str, Any]:
    """Add the measurement columns to ``row`` in :func:`columns` order."""
    for lab in MUSCLE_LABELS:
        k = lab.key
        for side in ("all", *_SIDES):
            row[_area_column(k, side)] = areas[k, side]
        row[f"{k}_mean_hu"], row[f"{k}_sd_hu"] = _stats(regions[k, "all"])
        for side in _SIDES:
            row[f"{k}_{side}_mean_hu"], row[f"{k}_{side}_sd_hu"] = _stats(regions[k, side])
    for side in ("all", *_SIDES):
        row[_area_column("muscle", side)] = areas["muscle", side]
    row["muscle_mean_hu"], row["muscle_sd_hu"] = _stats(regions["muscle", "all"])
    row["height_m"] = height_m
    row["smi_cm2_m2"] = None if height_m is None else row["sma_cm2"] / height_m**2
    return row


def _label_array(scan: Scan, labels: Any) -> np.ndarray:
    """The label array (a :class:`~kerasmuscle.io.scan.LabelMap` or an array) checked against the scan."""
    array = np.asarray(getattr(labels, "array", labels))
    if array.shape != scan.hu.shape:
        raise ValueError(f"labels shape {array.shape} does not match scan shape {scan.hu.shape}")
    return array


def _midline_for(i: int, z: int, midlines: Mapping[int, float] | Sequence[float] | np.ndarray | None,
                 hu: np.ndarray, count: int) -> float:
    """The override for slice ``z`` (the ``i``-th measured slice) when given, else the automatic midline."""
    if midlines is None:
        return midline_column(hu)
    if isinstance(midlines, Mapping):
        if z not in midlines:
            return midline_column(hu)
        value = float(midlines[z])
    else:
        if len(midlines) != count:
            raise ValueError(f"midlines has {len(midlines)} values for {count} slices")
        value = float(midlines[i])
    if not math.isfinite(value):
        raise ValueError(f"midline for slice {z} is {value}")
    return value


def measure_slices(
    scan: Scan,
    labels: np.ndarray,
    slices: Iterable[int] | None = None,
    *,
    height_m: float | None = None,
    midlines: Mapping[int, float] | Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Measure every muscle group on each chosen slice: areas, sides, attenuation, SMA and SMI.

    Pixels whose column index is greater than the slice's midline lie on one side, the others on the
    other side; the scan's orientation says which side is the patient's left. Area is
    ``pixels × scan.pixel_area_mm2 / 100`` (cm²); mean and population SD (ddof=0) of HU are over the
    same pixels, NaN where a region is empty.

    Args:
        scan: the CT in HU (its ``orientation`` must be axial-like).
        labels: label ids ``[slices, rows, cols]`` aligned with ``scan.hu`` (or a
            :class:`~kerasmuscle.io.scan.LabelMap`); ids other than 1..5 count as background.
        slices: indices of the slices to measure; default every slice holding a label, or every
            slice when none does.
        height_m: the patient's height in metres for the SMI (None: SMI unknown).
        midlines: midline columns that replace the automatic ones: a dict keyed by slice index
            (slices it lacks use the automatic midline), or a sequence parallel to ``slices``.

    Returns:
        One dict per slice, keys in :data:`MEASUREMENT_COLUMNS` order.

    Raises:
        ValueError: the shapes differ, a slice index is out of range or repeated, the height is
            implausible, ``midlines`` has the wrong length, or columns do not run left-right.
    """
    array = _label_array(scan, labels)
    chosen = labelled_indices(array) if slices is None else explicit_indices(slices, array.shape[0])
    height = None if height_m is None else check_height(height_m)
    left_high = patient_left_is_higher_column(scan.orientation)
    locations = scan.slice_locations
    pixel_cm2 = scan.pixel_area_mm2 / 100.0
    rows = []
    for i, z in enumerate(chosen):
        hu = scan.hu[z]
        midline = _midline_for(i, z, midlines, hu, len(chosen))
        regions = _regions(hu, array[z], midline, left_high)
        areas = {key: values.size * pixel_cm2 for key, values in regions.items()}
        row: dict[str, Any] = {"slice_index": z, "slice_location_mm": float(locations[z]), "midline_col": float(midline)}
        rows.append(_fill(row, regions, areas, height))
    return rows


def summarise_case(rows: Sequence[Mapping[str, Any]], scan: Scan, labels: np.ndarray) -> dict[str, Any]:
    """One row for a case from its slice rows.

    Areas (each group, each side, SMA) are the mean over the measured slices; HU mean and SD are
    pooled over every pixel of every measured slice (not the mean of slice means), using the
    midline each row recorded. SMI = mean SMA / height².

    Args:
        rows: slice rows from :func:`measure_slices` for this scan and label map.
        scan: the CT they were measured on.
        labels: the label map they were measured from.

    Returns:
        A dict with the keys of :data:`CASE_COLUMNS` in order.

    Raises:
        ValueError: no rows, shapes differ, or the rows disagree about the height.
    """
    if not rows:
        raise ValueError("no slice rows to summarise")
    array = _label_array(scan, labels)
    heights = {r["height_m"] for r in rows}
    if len(heights) > 1:
        raise ValueError(f"slice rows disagree about the height: {sorted(heights, key=str)}")
    height = heights.pop()
    left_high = patient_left_is_higher_column(scan.orientation)
    pooled: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in rows:
        z = int(r["slice_index"])
        for key, values in _regions(scan.hu[z], array[z], float(r["midline_col"]), left_high).items():
            pooled.setdefault(key, []).append(values)
    regions = {key: np.concatenate(parts) for key, parts in pooled.items()}
    areas = {key: float(np.mean([r[_area_column(*key)] for r in rows])) for key in regions}
    case: dict[str, Any] = {"slices": len(rows), "slice_indices": [int(r["slice_index"]) for r in rows]}
    return _fill(case, regions, areas, height)


def measure_case(
    scan: Scan,
    labels: np.ndarray,
    slices: Iterable[int] | None = None,
    *,
    height_m: float | None = None,
    midlines: Mapping[int, float] | Sequence[float] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure a case: :func:`measure_slices` then :func:`summarise_case`.

    Args:
        scan, labels, slices, height_m, midlines: as for :func:`measure_slices`.

    Returns:
        ``(slice_rows, case_row)``.

    Raises:
        ValueError: as for :func:`measure_slices`.
    """
    rows = measure_slices(scan, labels, slices, height_m=height_m, midlines=midlines)
    return rows, summarise_case(rows, scan, labels)


def read_heights(path: str | os.PathLike) -> dict[str, float]:
    """Read patient heights from a CSV file.

    The row's id is the first present of the columns ``case_id``, ``patient_id``, ``name``; its
    height is ``height_m`` (metres) or else ``height_cm`` (converted to metres). Column names are
    matched ignoring case and surrounding spaces. A row with an empty height cell is skipped (height
    unknown).

    Args:
        path: the CSV file (UTF-8, with a header line).

    Returns:
        id -> height in metres.

    Raises:
        ReadError: the file cannot be read, lacks an id or height column, or a row has an empty id,
            an unparsable or implausible height, or an id seen before with another height; the
            cause names the line and the column.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = list(_numbered_rows(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReadError(path, f"cannot read the height table: {exc}") from exc
    if not lines:
        raise ReadError(path, "the height table is empty (expected a header line)")
    header = [h.strip().lower() for h in lines[0][1]]
    id_col = next((c for c in _ID_COLUMNS if c in header), None)
    if id_col is None:
        raise ReadError(path, f"no id column: expected one of {', '.join(_ID_COLUMNS)}, found {', '.join(header)}")
    h_col, scale = next(((c, s) for c, s in _HEIGHT_COLUMNS if c in header), (None, 1.0))
    if h_col is None:
        raise ReadError(path, f"no height column: expected height_m or height_cm, found {', '.join(header)}")
    i_id, i_h = header.index(id_col), header.index(h_col)
    unit = "m" if scale == 1.0 else "cm"
    lo, hi = (v / scale for v in HEIGHT_RANGE_M)
    heights: dict[str, float] = {}
    for number, cells in lines[1:]:
        if not any(c.strip() for c in cells):
            continue
        key = cells[i_id].strip() if i_id < len(cells) else ""
        text = cells[i_h].strip() if i_h < len(cells) else ""
        if not key:
            raise ReadError(path, f"line {number}: column {id_col} is empty")
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            raise ReadError(path, f"line {number}: column {h_col}: {text!r} is not a number") from None
        if not lo <= value <= hi:
            hint = "; it looks like centimetres, name the column height_cm" if unit == "m" and 50 <= value <= 250 else ""
            raise ReadError(path, f"line {number}: column {h_col}: {text} {unit} is outside {lo:g}..{hi:g} {unit}{hint}")
        metres = value * scale
        if key in heights and not math.isclose(heights[key], metres, abs_tol=1e-9):
            raise ReadError(path, f"line {number}: column {h_col}: {key} already has height {heights[key]:g} m")
        heights[key] = metres
    return heights


def _numbered_rows(fh: Iterable[str]) -> Iterable[tuple[int, list[str]]]:
    """CSV rows with the file line number each starts on (1-based)."""
    reader = csv.reader(fh)
    start = 1
    for cells in reader:
        yield start, cells
        start = reader.line_num + 1


def resolve_height(
    explicit: float | None = None,
    table: Mapping[str, float] | None = None,
    keys: Iterable[str | None] | str = (),
    scan: Scan | None = None,
) -> tuple[float | None, str]:
    """Choose the patient's height: an explicit value, else a height table, else DICOM PatientSize.

    Args:
        explicit: a height in metres given by the user (checked with :func:`check_height`).
        table: id -> metres, as from :func:`read_heights`.
        keys: ids to look up in ``table`` in order (case id, patient id, ...); the first found wins.
        scan: its ``height_m`` (DICOM PatientSize) is the last resort.

    Returns:
        ``(height_m, source)`` with source ``"option"``, ``"csv"``, ``"dicom"`` or ``"unknown"``
        (height None).

    Raises:
        ValueError: ``explicit`` is implausible.
    """
    if explicit is not None:
        return check_height(explicit), "option"
    if table:
        for key in [keys] if isinstance(keys, str) else keys:
            if key is not None and key in table:
                return float(table[key]), "csv"
    if scan is not None and scan.height_m is not None:
        return float(scan.height_m), "dicom"
    return None, "unknown"


def label_areas(labels: Any, scan: Scan, slices: Iterable[int] | None = None) -> dict[int, float]:
    """The area of each label value in cm², per slice on average: what a label map holds, before any
    left/right split or HU statistics (:func:`measure_slices` gives those).

    Args:
        labels: a :class:`~kerasmuscle.io.scan.LabelMap` or an array ``[slices, rows, cols]`` on the
            scan's grid.
        scan: the scan (its pixel area).
        slices: the slice indices to average over; default: the slices that hold any label.

    Returns:
        ``{label value: cm² per slice}`` for every non-zero value present, in ascending order (over at
        least one slice, so an empty map gives ``{}``).

    Raises:
        ValueError: the labels' shape differs from the scan's.
    """
    array = _label_array(scan, labels)
    if slices is None:
        picked = np.flatnonzero(array.reshape(len(array), -1).max(axis=1, initial=0) > 0)
    else:
        picked = np.asarray([int(z) for z in slices], int)
    values, counts = np.unique(array[picked], return_counts=True)
    area = scan.pixel_area_mm2 / 100.0
    per = max(len(picked), 1)
    return {int(v): float(c) * area / per for v, c in zip(values, counts) if v != 0}


__all__ = [
    "CASE_COLUMNS",
    "MEASUREMENT_COLUMNS",
    "check_height",
    "columns",
    "label_areas",
    "measure_case",
    "measure_slices",
    "midline_column",
    "patient_left_is_higher_column",
    "read_heights",
    "resolve_height",
    "summarise_case",
]
