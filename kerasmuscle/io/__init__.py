"""Reading and writing CT and label maps: one contract for every format.

``read_scan(path)`` takes a DICOM series folder, a list of DICOM files, a single DICOM slice, a
multi-frame (Enhanced) CT, a NIfTI file or a kerasmuscle ``.npz`` and returns a :class:`Scan` in
Hounsfield units. ``read_labels(path, like=scan)`` reads a label map from NIfTI, NPZ or DICOM SEG and
places it on the scan's grid; a label map that does not fit the scan is an error that says how.
Both dispatch through :data:`kerasmuscle.io.formats.FORMATS`, the one table of input formats.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from kerasmuscle.errors import ReadError
from kerasmuscle.io import formats
from kerasmuscle.io.scan import (AXIAL_ORIENTATION, DicomInfo, LabelMap, LabelVolume, Scan, make_affine, note,
                                  slice_normal)

__all__ = [
    "AXIAL_ORIENTATION",
    "DicomInfo",
    "LabelMap",
    "LabelVolume",
    "Scan",
    "align_labels",
    "formats",
    "make_affine",
    "read_labels",
    "read_scan",
]

PathLike = str | os.PathLike


def read_scan(path: PathLike | Sequence[PathLike], *, series_uid: str | None = None, force: bool = False) -> Scan:
    """Read a CT scan in Hounsfield units from any supported source.

    Args:
        path: a DICOM series folder (searched recursively), a list of DICOM files, one DICOM file
            (single slice or multi-frame CT), a NIfTI file (``.nii``/``.nii.gz``) or an ``.npz``.
        series_uid: for DICOM with several series, the SeriesInstanceUID to read (default: the
            largest axial CT series, named in ``scan.warnings``).
        force: read a non-CT DICOM modality anyway (its values are not HU).

    Returns:
        The :class:`Scan`: ``hu`` float32 ``[slices, rows, cols]``, ``spacing`` (mm, same axis
        order), ``positions``, ``orientation``, ``warnings`` and, for DICOM, ``dicom`` (UIDs, tags,
        headers, patient height).

    Raises:
        ReadError: the message names the file and the cause.

    Example:
        >>> scan = read_scan("../shared/data/tcia-pancreas-ct-cb-001/dicom")  # doctest: +SKIP
        >>> scan.shape, scan.spacing  # doctest: +SKIP
        ((134, 512, 512), (3.0, 1.07421875, 1.07421875))
    """
    options = {"series_uid": series_uid, "force": force}
    folder_format = formats.get(formats.UNKNOWN_READS_AS)  # a folder or a list of files is a DICOM series
    if isinstance(path, (list, tuple)):
        return folder_format.read_scan(list(path), **options)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ReadError(path, "no such file or folder")
    if os.path.isdir(path):
        return folder_format.read_scan(path, **options)
    try:
        kind = formats.sniff(path)
    except OSError as exc:
        raise ReadError(path, f"cannot read file ({exc.strerror})") from None
    fmt = formats.for_kind(kind)
    if fmt is not None and fmt.scan_reader:
        return fmt.read_scan(path, **options)
    raise ReadError(path, _not_readable(path, kind, formats.names("scan")))


def _not_readable(path: str, kind: str, readable: str) -> str:
    """``describe_non_dicom``'s words with the formats that could have been read."""
    cause = formats.describe_non_dicom(path, kind)
    if cause.startswith("not a DICOM file"):
        cause = f"not a {readable} file" + cause[len("not a DICOM file"):]
    return cause


def read_labels(path: PathLike, *, like: Scan | None = None) -> LabelMap:
    """Read a label map from NIfTI, NPZ or DICOM SEG, aligned to ``like``'s grid when given.

    Args:
        path: ``.nii``/``.nii.gz``, ``.npz`` (key ``labels``) or a DICOM SEG file.
        like: the scan the labels belong to. The label map must share its rows, columns, pixel
            spacing and orientation, and each of its slices must lie on a slice of the scan; it may
            cover only some slices (``LabelMap.present`` says which).

    Returns:
        The :class:`LabelMap` (uint8; for DICOM SEG the values are segment numbers and ``names``
        holds the segment labels).

    Raises:
        ReadError: unreadable file, or a shape or geometry that does not match ``like`` (the
            message says what differs).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ReadError(path, "no such file" if not os.path.exists(path) else "is a folder; name the label file")
    kind = formats.sniff(path)
    fmt = formats.for_kind(kind)
    if fmt is None or not fmt.label_reader:
        raise ReadError(path, _not_readable(path, kind, formats.names("labels")))
    volume: LabelVolume = fmt.read_labels(path)
    array, geometry, names, messages = volume.array, volume.geometry, volume.names, volume.warnings

    if like is None:
        if geometry is None:
            spacing, positions, orientation = (1.0, 1.0, 1.0), np.zeros((len(array), 3)), AXIAL_ORIENTATION
            note(messages, f"{path}: no geometry in the file; spacing assumed 1 mm")
        else:
            spacing, positions, orientation = geometry
        return LabelMap(array=array, spacing=spacing, positions=np.asarray(positions), orientation=orientation,
                        source=path, names=names, present=np.ones(len(array), bool))
    _check_references(path, volume, like)
    if geometry is None:
        if array.shape != like.shape:
            raise ReadError(path, f"label map shape {array.shape} does not match the scan's {like.shape} "
                                  "(and the .npz has no geometry to place it)")
        return LabelMap(array=array, spacing=like.spacing, positions=like.positions.copy(),
                        orientation=like.orientation, source=path, names=names, present=np.ones(len(array), bool))
    return align_labels(path, array, geometry, like, names=names)


def _check_references(path: str, volume: LabelVolume, scan: Scan) -> None:
    """Labels made on another frame of reference (a DICOM SEG's) cannot belong to the scan, whatever their
    positions; nor can a SEG that cites none of the scan's images."""
    info = scan.dicom
    if info is None:
        return
    if volume.frame_of_reference_uid and info.frame_of_reference_uid and \
            volume.frame_of_reference_uid != info.frame_of_reference_uid:
        raise ReadError(path, f"SEG is in frame of reference {volume.frame_of_reference_uid}, the scan in "
                              f"{info.frame_of_reference_uid}: it belongs to another scan")
    cited = {u for refs in volume.referenced_sop_uids for u in refs}
    if cited and not cited & set(info.sop_instance_uids):
        refs = volume.referenced_series_uids
        raise ReadError(path, f"SEG references images of series {', '.join(refs) or '(unknown)'}, none of "
                              f"which is in the scan (series {info.series_uid})")


def align_labels(path: str, array: np.ndarray, geometry: tuple, like: Scan, *,
                 names: dict[int, str] | None = None) -> LabelMap:
    """Place a label volume with its own geometry onto a scan's grid.

    Args:
        path: named in errors.
        array: uint8 ``[slices, rows, cols]``.
        geometry: ``(spacing, positions, orientation)`` of ``array``.
        like: the scan.
        names: label names to carry along.

    Returns:
        A :class:`LabelMap` with the scan's shape; slices the source did not cover are zero and
        ``present`` is False for them.

    Raises:
        ReadError: rows/columns, pixel spacing, orientation or in-plane origin differ, or a label
            slice lies between or outside the scan's slices.
    """
    spacing, positions, orientation = geometry
    positions = np.asarray(positions, float)
    if array.shape[1:] != like.shape[1:]:
        raise ReadError(path, f"label map has {array.shape[1]}x{array.shape[2]} pixels per slice, the scan "
                              f"{like.shape[1]}x{like.shape[2]} (shape {array.shape} vs {like.shape})")
    if not np.allclose(spacing[1:], like.spacing[1:], rtol=1e-3, atol=1e-4):
        raise ReadError(path, f"pixel spacing {tuple(round(s, 4) for s in spacing[1:])} mm differs from the "
                              f"scan's {tuple(round(s, 4) for s in like.spacing[1:])} mm")
    if np.abs(np.subtract(orientation, like.orientation)).max() > 1e-3:
        raise ReadError(path, f"orientation {np.round(orientation, 4).tolist()} differs from the scan's "
                              f"{np.round(like.orientation, 4).tolist()}")
    normal = slice_normal(like.orientation)
    scan_locs = like.slice_locations
    tol_z = max(0.01, 0.05 * like.spacing[0]) if len(like.hu) > 1 else 0.05
    row_dir, col_dir = np.asarray(like.orientation[:3]), np.asarray(like.orientation[3:])
    out = np.zeros(like.shape, np.uint8)
    present = np.zeros(len(like.hu), bool)
    for s in range(len(array)):
        loc = positions[s] @ normal
        k = int(np.argmin(np.abs(scan_locs - loc)))
        if abs(scan_locs[k] - loc) > tol_z:
            if not array[s].any():
                continue
            raise ReadError(path, f"label slice at {loc:.2f} mm along the slice normal is not a slice of the scan "
                                  f"(its slices run from {scan_locs[0]:.2f} to {scan_locs[-1]:.2f} mm, "
                                  f"spacing {like.spacing[0]:.2f} mm)")
        shift = positions[s] - like.positions[k]
        in_plane = np.hypot(shift @ row_dir, shift @ col_dir)
        if in_plane > 0.05 * min(like.spacing[1:]) + 1e-3:
            raise ReadError(path, f"label slice origin differs from the scan's by {in_plane:.2f} mm in-plane")
        out[k] = array[s]
        present[k] = True
    return LabelMap(array=out, spacing=like.spacing, positions=like.positions.copy(), orientation=like.orientation,
                    source=path, names=dict(names or {}), present=present)
