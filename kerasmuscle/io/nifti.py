"""NIfTI in and out (nibabel). Orientation is fixed here and only here.

A NIfTI volume is brought to the standard DICOM axial layout: array ``[slice, row, col]`` with
columns towards the patient's left, rows towards posterior and slices from inferior to superior.
Writing reverses this exactly, so a label map written next to a scan reads back onto it.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from kerasmuscle.errors import ReadError
from kerasmuscle.fileutil import atomic_path
from kerasmuscle.io.scan import LabelVolume, Scan, check_axial, check_finite, check_voxels, note

# (slice, row, col) <-> NIfTI (i=col, j=row, k=slice), and DICOM LPS <-> NIfTI RAS.
_PERMUTE = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
_LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _load(path: str):
    import nibabel as nib

    try:
        img = nib.load(path)
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors, ValueError, ...
        raise ReadError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) not in (2, 3):
        raise ReadError(path, f"NIfTI with shape {tuple(img.shape)} is not a 3-D volume")
    check_voxels(path, img.shape, "the NIfTI header")
    _check_data_present(path, img)
    return img, shape


#: Compressed voxel data larger than this is counted before nibabel allocates its buffer for it.
_COUNT_ABOVE = 64 * 2 ** 20


def _check_data_present(path: str, img) -> None:
    """Refuse a file that ends before the voxels its header claims, before anything is allocated for them."""
    header = img.header
    try:
        need = int(header.get_data_offset()) + math.prod(img.shape) * header.get_data_dtype().itemsize
        data_file = img.file_map["image"].filename or path
    except Exception as exc:  # a header nibabel loaded but cannot size
        raise ReadError(path, f"invalid NIfTI header ({type(exc).__name__}: {exc})") from None
    if data_file.lower().endswith(".gz"):
        if need <= _COUNT_ABOVE:
            return  # nibabel's own short-read error is cheap at this size
        have = 0
        try:
            with gzip.open(data_file, "rb") as fh:
                while have < need:
                    chunk = fh.read(min(16 * 2 ** 20, need - have))
                    if not chunk:
                        break
                    have += len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise ReadError(path, f"corrupt gzip stream ({type(exc).__name__}: {exc})") from None
    else:
        have = os.path.getsize(data_file) if os.path.isfile(data_file) else 0
    if have < need:
        raise ReadError(path, f"truncated: the header claims {img.shape} voxels of {header.get_data_dtype()} "
                              f"({need:,} bytes with the header), the file holds {have:,}")


def _to_dicom_layout(path: str, data: np.ndarray, affine: np.ndarray, messages: list[str]):
    """Reorient a NIfTI array to (slice, row, col) in DICOM axial layout; return it with its geometry."""
    import nibabel.orientations as no

    if data.ndim == 2:
        data = data[:, :, None]
    elif data.ndim == 4:
        data = data[..., 0]
    affine = np.asarray(affine, float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ReadError(path, f"degenerate NIfTI affine (NaN, infinite or singular): {np.round(affine, 4).tolist()}")
    try:
        current = no.io_orientation(affine)
        transform = no.ornt_transform(current, no.axcodes2ornt(("L", "P", "S")))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise ReadError(path, f"degenerate NIfTI affine ({exc})") from None
    data = no.apply_orientation(data, transform)
    lps = _LPS_RAS @ affine @ no.inv_ornt_aff(transform, data.shape)
    cols, rows, slices = (np.linalg.norm(lps[:3, i]) for i in range(3))
    if not min(cols, rows, slices) > 0 or not np.isfinite(lps).all():
        raise ReadError(path, "degenerate NIfTI affine (a voxel size is zero)")
    orientation = np.concatenate([lps[:3, 0] / cols, lps[:3, 1] / rows])
    check_axial(path, orientation, messages)
    if abs(rows - cols) > 0.01 * max(rows, cols):
        note(messages, f"{path}: in-plane pixels are not square ({rows:.3f} x {cols:.3f} mm)")
    array = np.ascontiguousarray(data.transpose(2, 1, 0))
    positions = lps[:3, 3][None, :] + np.arange(array.shape[0])[:, None] * lps[:3, 2][None, :]
    return array, (float(slices), float(rows), float(cols)), positions, tuple(float(v) for v in orientation)


def read_nifti_scan(path: str | os.PathLike) -> Scan:
    """Read a CT volume in HU from a NIfTI file (``.nii`` or ``.nii.gz``).

    Args:
        path: the file; its scaling (scl_slope/scl_inter) is applied, so values must be HU.

    Returns:
        The :class:`Scan` in DICOM axial layout.
    """
    path = os.fspath(path)
    img, _ = _load(path)
    messages: list[str] = []
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise ReadError(path, f"cannot read NIfTI voxel data ({type(exc).__name__}: {exc}); truncated?") from None
    hu, spacing, positions, orientation = _to_dicom_layout(path, data, img.affine, messages)
    check_finite(path, hu)
    if hu.size and float(np.percentile(hu, 1)) >= -10:
        note(messages, f"{path}: lowest values are about {np.percentile(hu, 1):.0f}; CT in HU has air near -1000")
    return Scan(hu=hu.astype(np.float32, copy=False), spacing=spacing, positions=positions,
                orientation=orientation, source=path, format="nifti", warnings=messages)


def read_nifti_labels(path: str | os.PathLike) -> LabelVolume:
    """Read an integer label map from NIfTI.

    Returns:
        The :class:`~kerasmuscle.io.scan.LabelVolume` (uint8 ``[slice,row,col]`` in DICOM axial layout,
        with its geometry).
    """
    path = os.fspath(path)
    img, _ = _load(path)
    messages: list[str] = []
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ReadError(path, f"cannot read NIfTI voxel data ({type(exc).__name__}: {exc}); truncated?") from None
    labels = as_label_array(path, data)
    array, spacing, positions, orientation = _to_dicom_layout(path, labels, img.affine, messages)
    return LabelVolume(array=array, geometry=(spacing, positions, orientation), source=path, warnings=messages)


def as_label_array(path: str, data: np.ndarray) -> np.ndarray:
    """Check that values are whole numbers in 0..255 and return them as uint8."""
    data = np.asarray(data)
    if data.dtype.kind == "f":
        rounded = np.rint(data)
        if not np.allclose(data, rounded, atol=1e-3):
            raise ReadError(path, "label values are not whole numbers (is this an image, not a label map?)")
        data = rounded
    if data.dtype.kind not in "uifb":
        raise ReadError(path, f"label map of type {data.dtype} is not numeric")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise ReadError(path, f"label values {data.min():g}..{data.max():g} are outside 0..255")
    return data.astype(np.uint8)


def nifti_affine(affine_lps: np.ndarray) -> np.ndarray:
    """The NIfTI (RAS, i=col j=row k=slice) affine of a (slice, row, col) -> LPS affine."""
    return _LPS_RAS @ affine_lps @ _PERMUTE


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine_lps: np.ndarray) -> None:
    """Write ``[slice, row, col]`` data as NIfTI so that it lies exactly on the given grid.

    Args:
        path: ``.nii`` or ``.nii.gz``; written through a temporary file.
        array: the data (uint8 labels or float32 HU).
        affine_lps: 4x4 from (slice, row, col) to LPS mm, e.g. ``scan.affine``.
    """
    import nibabel as nib

    aff = nifti_affine(np.asarray(affine_lps, float))
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)), aff)
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
