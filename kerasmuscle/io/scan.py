"""The one contract every reader returns: a :class:`Scan` in Hounsfield units with its geometry.

Axis order everywhere is ``[slice, row, col]``. Slices are sorted along the slice normal (for the usual
axial series, index 0 is the most inferior slice). Rows and columns keep the stored DICOM pixel layout,
so results can be written back onto the source images; NIfTI and NPZ inputs are brought to the
standard DICOM axial layout (columns towards the patient's left, rows towards posterior). Positions
and orientation are in DICOM patient coordinates (LPS, millimetres).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kerasmuscle.errors import ReadError, ScanWarning

if TYPE_CHECKING:
    from pydicom import Dataset

#: The most voxels a reader allocates for one volume unless ``KERASMUSCLE_MAX_VOXELS`` says otherwise: 2**29
#: (536,870,912 voxels, 2 GiB as float32 HU; 2,048 slices of 512x512). A header that claims more is refused
#: before any pixel array is made.
MAX_VOXELS = 2 ** 29

#: Row and column direction cosines of a standard axial slice (patient supine, head first).
AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(eq=False)
class DicomInfo:
    """What a DICOM source says about itself, kept so that results can be written back as DICOM.

    Args:
        study_uid, series_uid, frame_of_reference_uid, sop_class_uid: the source's UIDs.
        sop_instance_uids: per slice, the SOP Instance UID of the image it came from.
        frame_numbers: per slice, its 1-based frame number in a multi-frame image (1 for single-frame).
        files: per slice, the file it came from.
        headers: the source datasets without pixel data, one per file, in slice order.
        patient_size_m: PatientSize in metres when present and plausible (0.5..2.5 m).
        patient_weight_kg: PatientWeight when present.
        tags: a few descriptive tags (patient id, sex, age, study date, series description and
            number, manufacturer, model, kVp, convolution kernel, slice thickness, modality,
            transfer syntax) as strings, floats or None.
    """

    study_uid: str
    series_uid: str
    frame_of_reference_uid: str | None
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_numbers: tuple[int, ...]
    files: tuple[str, ...]
    headers: tuple[Dataset, ...] = field(repr=False)
    patient_size_m: float | None = None
    patient_weight_kg: float | None = None
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Scan:
    """A CT volume in Hounsfield units with the geometry needed to measure and to write results back.

    Args:
        hu: float32 array ``[slices, rows, cols]`` in Hounsfield units.
        spacing: voxel size in mm as ``(slice, row, col)``; the slice value is the median distance
            between slice centres (the slice thickness for a single slice).
        positions: ``[slices, 3]`` patient coordinates (LPS, mm) of the centre of each slice's first
            pixel (DICOM ImagePositionPatient).
        orientation: six direction cosines, row direction (along increasing column index) then
            column direction (along increasing row index), as DICOM ImageOrientationPatient.
        source: the path that was read.
        format: ``"dicom"``, ``"nifti"`` or ``"npz"``.
        warnings: everything unusual the reader noticed (irregular spacing, assumed rescale, ...).
        dicom: UIDs, headers and tags for DICOM sources, else None.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    orientation: tuple[float, ...] = AXIAL_ORIENTATION
    source: str = ""
    format: str = ""
    warnings: list[str] = field(default_factory=list)
    dicom: DicomInfo | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row cosines x column cosines); slices are sorted along it."""
        return slice_normal(self.orientation)

    @property
    def slice_locations(self) -> np.ndarray:
        """Position of each slice along the normal, in mm (ascending)."""
        return self.positions @ self.normal

    @property
    def pixel_area_mm2(self) -> float:
        """Area of one pixel in mm^2."""
        return float(self.spacing[1] * self.spacing[2])

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix from voxel index ``(slice, row, col, 1)`` to patient LPS mm (regular spacing)."""
        return make_affine(self.positions[0], self.orientation, self.spacing)

    @property
    def height_m(self) -> float | None:
        """Patient height in metres from DICOM PatientSize, when the source recorded it."""
        return self.dicom.patient_size_m if self.dicom is not None else None

    def summary(self) -> dict[str, Any]:
        """A JSON-safe description: shape, spacing, HU range, positions, UIDs, warnings."""
        hu = self.hu
        out: dict[str, Any] = {
            "source": self.source,
            "format": self.format,
            "shape": list(self.shape),
            "spacing_mm": [round(float(s), 4) for s in self.spacing],
            "slice_locations_mm": [round(float(z), 3) for z in (self.slice_locations[[0, -1]] if len(hu) else [])],
            "hu_min": float(hu.min()) if hu.size else None,
            "hu_max": float(hu.max()) if hu.size else None,
            "orientation": [round(float(v), 5) for v in self.orientation],
            "warnings": list(self.warnings),
        }
        if self.dicom is not None:
            out["series_uid"] = self.dicom.series_uid
            out["study_uid"] = self.dicom.study_uid
            out["patient_size_m"] = self.dicom.patient_size_m
            out.update({k: v for k, v in self.dicom.tags.items() if v not in (None, "")})
        return out


@dataclass(eq=False)
class LabelMap:
    """A label map aligned to a scan's grid (or to its own grid when read without ``like``).

    Args:
        array: uint8 ``[slices, rows, cols]``; 0 is background.
        spacing, positions, orientation: geometry, as in :class:`Scan`.
        source: the path that was read.
        names: label value -> name as the file recorded it (DICOM SEG segment labels), else empty.
        present: per slice, whether the source held labels for it (a DICOM SEG or a partial volume
            may cover only some slices of the scan).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray
    orientation: tuple[float, ...] = AXIAL_ORIENTATION
    source: str = ""
    names: dict[int, str] = field(default_factory=dict)
    present: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    def labelled_slices(self) -> np.ndarray:
        """Indices of slices that hold any non-zero label."""
        return np.flatnonzero(self.array.reshape(len(self.array), -1).max(axis=1) > 0)


#: ``(spacing, positions, orientation)`` of a volume, as in :class:`Scan`.
Geometry = tuple[tuple[float, float, float], np.ndarray, tuple[float, ...]]


@dataclass(eq=False)
class LabelVolume:
    """What every label reader returns: a label volume on its own grid, before it is placed on a scan.

    Args:
        array: uint8 ``[slices, rows, cols]``; 0 is background.
        geometry: ``(spacing, positions, orientation)``, or None when the file has none (an ``.npz``
            without ``spacing``: it must then match a scan by shape).
        source: the path that was read.
        names: label value -> name as the file recorded it (DICOM SEG segment labels), else empty.
        warnings: what the reader noticed.
        frame_of_reference_uid: the DICOM frame of reference it was made on (DICOM SEG), else None.
        referenced_series_uids: the series it says it segments (DICOM SEG).
        referenced_sop_uids: per slice, the source images its frames cite (DICOM SEG).
    """

    array: np.ndarray
    geometry: Geometry | None
    source: str = ""
    names: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    frame_of_reference_uid: str | None = None
    referenced_series_uids: list[str] = field(default_factory=list)
    referenced_sop_uids: list[tuple[str, ...]] = field(default_factory=list)


def slice_normal(orientation: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """Unit normal of slices with the given six direction cosines (NaN when they are parallel or zero)."""
    o = np.asarray(orientation, float)
    n = np.cross(o[:3], o[3:])
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / np.linalg.norm(n)


def make_affine(origin: np.ndarray, orientation: tuple[float, ...], spacing: tuple[float, float, float]) -> np.ndarray:
    """4x4 matrix mapping ``(slice, row, col, 1)`` to LPS mm.

    Args:
        origin: LPS position of voxel (0, 0, 0).
        orientation: six DICOM direction cosines (row direction, column direction).
        spacing: ``(slice, row, col)`` in mm.
    """
    o = np.asarray(orientation, float)
    aff = np.eye(4)
    aff[:3, 0] = slice_normal(o) * spacing[0]
    aff[:3, 1] = o[3:] * spacing[1]
    aff[:3, 2] = o[:3] * spacing[2]
    aff[:3, 3] = np.asarray(origin, float)
    return aff


def max_voxels() -> int:
    """The voxel limit of :func:`check_voxels`: ``KERASMUSCLE_MAX_VOXELS`` when set, else :data:`MAX_VOXELS`."""
    value = os.environ.get("KERASMUSCLE_MAX_VOXELS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else MAX_VOXELS


def check_voxels(path: str, shape: tuple[int, ...], what: str = "the header") -> None:
    """Refuse, before allocating, a volume whose claimed shape is empty, negative or over :func:`max_voxels`.

    Raises:
        ReadError: naming the file, the shape and the limit.
    """
    shape = tuple(int(s) for s in shape)
    if any(s <= 0 for s in shape):
        raise ReadError(path, f"{what} claims an empty or negative shape {shape}")
    n = math.prod(shape)
    if n > max_voxels():
        raise ReadError(path, f"{what} claims {' x '.join(map(str, shape))} = {n:,} voxels, more than the "
                              f"{max_voxels():,} kerasmuscle reads (set KERASMUSCLE_MAX_VOXELS to allow more)")


def check_finite(path: str, hu: np.ndarray) -> None:
    """Refuse an image with NaN or infinite values (a damaged file, or a rescale that overflows).

    Raises:
        ReadError: naming the file and how many values are bad.
    """
    if not np.isfinite(hu).all():
        bad = int(np.count_nonzero(~np.isfinite(hu)))
        raise ReadError(path, f"{bad:,} of {hu.size:,} values are NaN or infinite (damaged data or an "
                              "overflowing rescale)")


def note(messages: list[str], text: str) -> None:
    """Record a reader warning: keep it on the scan and raise it as a :class:`ScanWarning`."""
    messages.append(text)
    warnings.warn(text, ScanWarning, stacklevel=3)


def check_axial(path: str, orientation: np.ndarray, messages: list[str]) -> None:
    """Refuse sagittal or coronal slices, and direction cosines that are not two perpendicular unit vectors;
    warn when axial slices are tilted by more than 5 degrees."""
    o = np.asarray(orientation, float)
    row, col = o[:3], o[3:]
    if o.shape != (6,) or not np.isfinite(o).all() or abs(np.linalg.norm(row) - 1) > 0.01 or \
            abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
        raise ReadError(path, f"invalid orientation {np.round(o, 4).tolist()}: the row and column directions "
                              "must be two perpendicular unit vectors")
    n = slice_normal(orientation)
    axis = int(np.argmax(np.abs(n)))
    if axis != 2:
        plane = "sagittal" if axis == 0 else "coronal"
        raise ReadError(
            path,
            f"slices are {plane} (slice normal {np.round(n, 3).tolist()}); kerasmuscle needs axial slices",
        )
    tilt = float(np.degrees(np.arccos(min(1.0, abs(n[2])))))
    if tilt > 5.0:
        note(messages, f"{path}: axial slices are tilted {tilt:.1f} degrees from the patient's z axis")


def regular_spacing(path: str, locations: np.ndarray, messages: list[str]) -> float:
    """Median distance between sorted slice locations; warn about gaps that differ from it.

    Args:
        path: named in the warning.
        locations: ascending slice positions along the normal (mm), duplicates already removed.
        messages: the scan's warning list.

    Returns:
        The median gap in mm (NaN for fewer than two slices).
    """
    if len(locations) < 2:
        return float("nan")
    gaps = np.diff(locations)
    median = float(np.median(gaps))
    off = np.flatnonzero(np.abs(gaps - median) > max(0.01, 0.01 * median))
    if off.size:
        shown = ", ".join(
            f"{gaps[i]:.2f} mm between {locations[i]:.2f} and {locations[i + 1]:.2f}" for i in off[:5]
        )
        more = f" and {off.size - 5} more" if off.size > 5 else ""
        note(messages, f"{path}: irregular slice spacing: median {median:.2f} mm, but gaps of {shown}{more}")
    return median
