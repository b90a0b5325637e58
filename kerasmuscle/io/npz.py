"""NumPy ``.npz`` volumes: kerasmuscle's own simple format for arrays with their geometry.

Keys: ``hu`` (float32 ``[slice, row, col]``) and/or ``labels`` (uint8, same shape), ``spacing``
(3 floats: slice, row, col in mm), and optionally ``positions`` (``[slices, 3]`` LPS mm of each
slice's first pixel) and ``orientation`` (6 DICOM direction cosines). ``image`` is accepted for
``hu``, and ``label`` or ``mask`` for ``labels``.
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

from kerasmuscle.errors import ReadError
from kerasmuscle.fileutil import atomic_path
from kerasmuscle.io.nifti import as_label_array
from kerasmuscle.io.scan import (AXIAL_ORIENTATION, LabelVolume, Scan, check_axial, check_finite, check_voxels,
                                  slice_normal)


def _check_members(path: str) -> None:
    """Refuse, before numpy allocates anything, a member whose ``.npy`` header claims more than it holds."""
    fmt = np.lib.format
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as fh:
                version = fmt.read_magic(fh)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(fh)
                start = fh.tell()
            name = info.filename[:-4]
            if dtype.hasobject:
                raise ReadError(path, f"'{name}' holds Python objects, not numbers")
            check_voxels(path, shape or (1,), f"'{name}'")
            need = start + math.prod(shape) * dtype.itemsize
            if info.file_size < need:
                raise ReadError(path, f"truncated: '{name}' claims shape {shape} of {dtype} ({need:,} bytes), "
                                      f"the archive holds {info.file_size:,}")


def _open(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise ReadError(path, "no such file")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ReadError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise many types on a damaged archive
        raise ReadError(path, f"not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def _pick(path: str, arrays: dict[str, np.ndarray], names: tuple[str, ...], what: str) -> np.ndarray:
    for name in names:
        if name in arrays:
            arr = np.asarray(arrays[name])
            if arr.ndim == 2:
                arr = arr[None]
            if arr.ndim != 3 or arr.size == 0:
                raise ReadError(path, f"'{name}' has shape {arr.shape}; expected [slices, rows, cols]")
            if arr.dtype.kind not in "biuf":
                raise ReadError(path, f"'{name}' holds {arr.dtype} values; expected real numbers")
            return arr
    raise ReadError(path, f"no {what} array: expected one of {', '.join(repr(n) for n in names)}, "
                          f"found {', '.join(repr(k) for k in arrays) or 'nothing'}")


def _geometry(path: str, arrays: dict[str, np.ndarray], n: int, messages: list[str], required: bool = True):
    if "spacing" not in arrays:
        if required:
            raise ReadError(path, "no 'spacing' array (slice, row, col in mm)")
        return None
    try:
        spacing = np.asarray(arrays["spacing"], float).ravel()
        orientation = np.asarray(arrays.get("orientation", AXIAL_ORIENTATION), float).ravel()
        positions = np.asarray(arrays["positions"], float) if "positions" in arrays else None
    except (TypeError, ValueError):
        raise ReadError(path, "'spacing', 'orientation' and 'positions' must be numbers") from None
    if spacing.shape != (3,) or not np.all(spacing > 0) or not np.isfinite(spacing).all():
        raise ReadError(path, f"'spacing' must be 3 positive numbers (slice, row, col mm), got {spacing.tolist()}")
    if orientation.shape != (6,):
        raise ReadError(path, f"'orientation' must be 6 direction cosines, got {orientation.tolist()}")
    check_axial(path, orientation, messages)
    if positions is not None:
        if positions.shape != (n, 3):
            raise ReadError(path, f"'positions' has shape {positions.shape}; expected ({n}, 3)")
        if not np.isfinite(positions).all():
            raise ReadError(path, "'positions' holds NaN or infinite values")
    else:
        positions = np.arange(n)[:, None] * spacing[0] * slice_normal(orientation)[None, :]
    return (tuple(float(s) for s in spacing), positions, tuple(float(v) for v in orientation))


def read_npz_scan(path: str | os.PathLike) -> Scan:
    """Read a CT volume in HU from a kerasmuscle ``.npz`` (see the module docstring)."""
    path = os.fspath(path)
    arrays = _open(path)
    hu = _pick(path, arrays, ("hu", "image"), "image").astype(np.float32)
    check_finite(path, hu)
    messages: list[str] = []
    spacing, positions, orientation = _geometry(path, arrays, len(hu), messages)
    return Scan(hu=hu, spacing=spacing, positions=positions, orientation=orientation, source=path,
                format="npz", warnings=messages)


def read_npz_labels(path: str | os.PathLike) -> LabelVolume:
    """Read a label map from ``.npz``.

    Returns:
        The :class:`~kerasmuscle.io.scan.LabelVolume`; its geometry is None when the archive has no
        ``spacing`` (then it must match a scan by shape).
    """
    path = os.fspath(path)
    arrays = _open(path)
    labels = as_label_array(path, _pick(path, arrays, ("labels", "label", "mask"), "label"))
    messages: list[str] = []
    geometry = _geometry(path, arrays, len(labels), messages, required=False)
    return LabelVolume(array=labels, geometry=geometry, source=path, warnings=messages)


def write_npz(path: str | os.PathLike, *, spacing, positions, orientation, hu=None, labels=None,
              integer_hu: bool = False) -> None:
    """Write a compressed ``.npz`` with geometry and ``hu`` and/or ``labels`` (through a temporary file).

    ``integer_hu=True`` stores ``hu`` as int16 (for images whose HU are whole numbers within int16, as
    rendered CT is: a third of the size; :func:`read_npz_scan` returns the same float32 values).
    """
    arrays = {
        "spacing": np.asarray(spacing, float),
        "positions": np.asarray(positions, float),
        "orientation": np.asarray(orientation, float),
    }
    if hu is not None:
        arrays["hu"] = np.asarray(hu, np.float32)
        if integer_hu:
            whole = np.rint(arrays["hu"])
            if not (np.array_equal(whole, arrays["hu"]) and whole.min(initial=0) >= -32768
                    and whole.max(initial=0) <= 32767):
                raise ValueError("integer_hu needs whole HU values within int16")
            arrays["hu"] = whole.astype(np.int16)
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
