"""Read CT from DICOM: a series folder, a list of files, one slice, or a multi-frame (Enhanced) CT.

What it guarantees:
- files are grouped by SeriesInstanceUID; a folder with several series gives the largest axial CT series
  (and says which), or the one named by ``series_uid``;
- slices are sorted along the slice normal by ImagePositionPatient, never by file name or
  InstanceNumber; duplicates are dropped and irregular gaps reported, with a warning each;
- Hounsfield units come from pydicom's modality LUT (Rescale Slope and Intercept, or a Modality LUT
  Sequence), per slice or per frame; pixel padding becomes air (-1000 HU);
- every failure is a :class:`~kerasmuscle.errors.ReadError` naming the file and the cause.

Uncompressed pixel data is read straight from the file at the offset pydicom stops at, so each file
is parsed once; compressed data goes through pydicom's decoders (the ``dicom`` extra installs them).
"""

from __future__ import annotations

import io
import os
import struct
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasmuscle.errors import ReadError
from kerasmuscle.io.formats import describe_non_dicom, sniff
from kerasmuscle.io.scan import (DicomInfo, Scan, check_axial, check_finite, check_voxels, note, regular_spacing,
                                  slice_normal)

try:  # pydicom is a required dependency; import it once here rather than in every call
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut
    from pydicom.uid import UID
except ImportError as exc:  # pragma: no cover - the package requires pydicom
    raise ImportError("kerasmuscle needs pydicom>=3: pip install pydicom") from exc

AIR_HU = -1000.0

CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: DICOM Segmentation SOP classes: the label maps read by :func:`kerasmuscle.io.seg.read_seg`, never images.
SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}
_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired, still found in archives)
}
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_PIXEL_TAG = (0x7FE0, 0x0010)


class NotDicomError(ReadError):
    """The file is plainly something else (text, an image, an archive) or cannot be opened at all;
    a series folder skips such files, while a damaged DICOM file stops the read."""


@dataclass
class _File:
    """One parsed DICOM file: its header without pixel data, and where the pixel data starts."""

    path: str
    ds: Dataset
    pixel_offset: int | None  # file offset of the Pixel Data element (-1: present, not addressable), None: absent
    size: int = 0  # bytes in the file


@dataclass
class _Frame:
    """One image plane of the series (a single-frame file, or one frame of a multi-frame file)."""

    file: _File
    index: int  # 0-based frame index in its file
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    thickness: float | None
    rescale: Dataset | None  # dataset to give apply_modality_lut; None -> the file's own dataset
    instance: int


# --------------------------------------------------------------------------------------------------
# Header reading (what a file is, by its first bytes: kerasmuscle.io.formats.sniff)


def _element_header(fh, offset: int, little: bool, implicit: bool) -> tuple[tuple[int, int], int, int]:
    """Parse the element header at ``offset``: returns (tag, value length, header length)."""
    fh.seek(offset)
    raw = fh.read(12)
    if len(raw) < 8:
        raise EOFError
    e = "<" if little else ">"
    group, elem = struct.unpack(e + "HH", raw[:4])
    if implicit:
        return (group, elem), struct.unpack(e + "L", raw[4:8])[0], 8
    vr = raw[4:6]
    if vr in _LONG_VRS:
        if len(raw) < 12:
            raise EOFError
        return (group, elem), struct.unpack(e + "L", raw[8:12])[0], 12
    return (group, elem), struct.unpack(e + "H", raw[6:8])[0], 8


class _Bounded:
    """A binary file whose ``read(n)`` never asks for more than the bytes left in it, so an element length
    that claims gigabytes makes pydicom read what is there (and notice the file ends), not allocate the claim."""

    def __init__(self, fh, size: int):
        self._fh, self._size = fh, size
        # bound once: pydicom calls these thousands of times per series, __getattr__ would cost each call
        self.tell, self.seek = fh.tell, fh.seek

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return self._fh.read()
        if n > 1 << 20:  # only a long read can allocate much: clamp it (tell() costs a system call)
            n = max(0, min(n, self._size - self._fh.tell()))
        return self._fh.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


#: Files up to this size are parsed from memory (a read past the end returns what is there; and pydicom's
#: many small reads cost less than through :class:`_Bounded`); larger ones through :class:`_Bounded`.
_IN_MEMORY_BYTES = 8 << 20


def _bounded(fh, size: int):
    """A file-like view of ``fh`` whose reads never allocate more than the file holds."""
    return io.BytesIO(fh.read()) if size <= _IN_MEMORY_BYTES else _Bounded(fh, size)


def read_dataset(path: str, **options: Any) -> Dataset:
    """``pydicom.dcmread(path, **options)`` through :func:`_bounded` (a damaged length cannot allocate more
    than the file holds); pydicom's own exceptions pass through."""
    with open(path, "rb") as fh:
        return pydicom.dcmread(_bounded(fh, os.fstat(fh.fileno()).st_size), **options)


def read_header(path: str) -> _File:
    """Parse one DICOM file up to its pixel data.

    Raises:
        ReadError: the file is empty, not DICOM, or its header is truncated or corrupt.
    """
    try:
        kind = sniff(path)
    except OSError as exc:
        raise NotDicomError(path, f"cannot read file ({exc.strerror})") from None
    if kind not in ("dicom", "unknown"):
        raise NotDicomError(path, describe_non_dicom(path, kind))
    try:
        with open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            fh = _bounded(raw, size)
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=kind == "unknown")
            offset = fh.tell()
            if kind == "unknown" and not _looks_like_dicom(ds):
                raise NotDicomError(path, describe_non_dicom(path, kind))
            _check_value_lengths(path, ds)
            ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
            little, implicit = _encoding(ds, ts)
            pixel_offset = None
            if ts is not None and str(ts) == DEFLATED:
                # The body is deflated, so file offsets mean nothing: ask pydicom whether pixels exist.
                fh.seek(0)
                if "PixelData" in pydicom.dcmread(fh):
                    pixel_offset = -1
            elif offset < size:
                try:
                    tag, _, _ = _element_header(fh, offset, little, implicit)
                    if tag == _PIXEL_TAG:
                        pixel_offset = offset
                except EOFError:
                    pass
            if isinstance(fh, io.BytesIO):
                fh.close()  # the dataset keeps a reference to its buffer: free the file's bytes (pixels too)
    except ReadError:
        raise
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, struct.error, TypeError) as exc:
        raise ReadError(path, f"truncated or corrupt DICOM header ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # pydicom raises many types on damaged files
        raise ReadError(path, f"unreadable DICOM ({type(exc).__name__}: {exc})") from None
    return _File(path, ds, pixel_offset, size)


#: Bytes per value of the binary VRs: pydicom refuses, when the value is first used, a length that is not a
#: multiple (it converts values lazily, so the check is made here, where the file is known).
_VALUE_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8}


def _check_value_lengths(path: str, ds: Dataset) -> None:
    """Refuse a top-level element whose length does not fit its VR (a damaged length or VR), checked on the raw
    elements without converting them."""
    from pydicom.datadict import dictionary_VR
    from pydicom.valuerep import AMBIGUOUS_VR, STANDARD_VR

    for tag, elem in ds._dict.items():
        length = getattr(elem, "length", None)
        if length is None or not hasattr(elem, "value_tell") or length == 0xFFFFFFFF:
            continue  # converted already, or of undefined length
        vr = elem.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        elif vr not in STANDARD_VR and vr not in AMBIGUOUS_VR:
            raise ReadError(path, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has an unknown VR {vr!r}: "
                                  "a damaged header")
        size = _VALUE_SIZES.get(vr)
        if size and length % size:
            raise ReadError(path, f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) holds {length} bytes, not a "
                                  f"multiple of {size} as its VR {vr} needs: a damaged length or VR")


def _looks_like_dicom(ds: Dataset) -> bool:
    """A preamble-less file parsed with force=True is DICOM only if it holds real identifying tags."""
    try:
        return any(tag in ds for tag in (0x00080016, 0x00080018, 0x0020000D, 0x0020000E)) and bool(
            ds.get("SOPClassUID") or ds.get("SeriesInstanceUID")
        )
    except Exception:
        return False


def _encoding(ds: Dataset, ts: Any) -> tuple[bool, bool]:
    """(little endian, implicit VR) of the dataset body."""
    if ts:
        uid = UID(str(ts))
        if uid.is_transfer_syntax:
            return bool(uid.is_little_endian), bool(uid.is_implicit_VR)
    return (ds.is_little_endian if ds.is_little_endian is not None else True,
            ds.is_implicit_VR if ds.is_implicit_VR is not None else True)


def whole(path: str, ds: Dataset, key: str, default: int, least: int | None = None) -> int:
    """An integer attribute (``IS``/``US``) of ``ds``, ``default`` when absent or empty.

    Raises:
        ReadError: the value is not a whole number (``'1A'``) or is below ``least``.
    """
    value = ds.get(key, None)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ReadError(path, f"invalid {key} {value!r} (expected a whole number)") from None
    if least is not None and number < least:
        raise ReadError(path, f"invalid {key} {number} (expected at least {least})")
    return number


def _n_frames(f: _File) -> int:
    return whole(f.path, f.ds, "NumberOfFrames", 1, least=1)


def list_files(folder: str) -> list[str]:
    """All regular files below ``folder`` (recursively), skipping hidden files and DICOMDIR, sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            out.append(os.path.join(root, name))
    return out


# --------------------------------------------------------------------------------------------------
# Public entry points


def read_dicom(path: str | os.PathLike | list, *, series_uid: str | None = None, force: bool = False) -> Scan:
    """Read a DICOM series folder, a list of DICOM files, one slice, or a multi-frame CT.

    Args:
        path: a folder (searched recursively), one file, or a list of files.
        series_uid: read this SeriesInstanceUID when the files hold several series.
        force: read modalities other than CT (MR, CR, ...) anyway; their values are not HU.

    Returns:
        The :class:`Scan`, with ``scan.dicom`` holding UIDs, tags and headers.

    Raises:
        ReadError: naming the file and the cause.
    """
    messages: list[str] = []
    if isinstance(path, (list, tuple)):
        paths = [os.fspath(p) for p in path]
        if not paths:
            raise ReadError(None, "no files given")
        source = paths[0] if len(paths) == 1 else f"{len(paths)} files"
        for p in paths:
            if not os.path.isfile(p):
                raise ReadError(p, "no such file" if not os.path.exists(p) else "is a folder, not a file")
        files = [read_header(p) for p in paths]
    elif os.path.isdir(path):
        source = os.fspath(path)
        names = list_files(source)
        if not names:
            raise ReadError(source, "empty folder (no files)")
        files, skipped = [], []
        for p in names:
            try:
                files.append(read_header(p))
            except NotDicomError as exc:
                skipped.append((p, exc.cause))
        if not files:
            listed = ", ".join(os.path.relpath(p, source) for p, _ in skipped[:3])
            raise ReadError(source, f"no DICOM files in folder ({len(skipped)} other file(s): {listed})")
        if skipped:
            listed = "; ".join(f"{os.path.relpath(p, source)} ({cause})" for p, cause in skipped[:3])
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            note(messages, f"{source}: skipped {len(skipped)} file(s) that are not DICOM: {listed}{more}")
    else:
        source = os.fspath(path)
        if not os.path.exists(source):
            raise ReadError(source, "no such file or folder")
        files = [read_header(source)]

    chosen = _choose_series(source, files, series_uid, force, messages)
    return _build_scan(source, chosen, messages)


def _modality(f: _File) -> str:
    return str(f.ds.get("Modality", "") or "").upper()


def _is_ct(f: _File) -> bool:
    return str(f.ds.get("SOPClassUID", "")) in CT_SOP_CLASSES or _modality(f) == "CT"


def _what(f: _File) -> str:
    uid = f.ds.get("SOPClassUID")
    name = UID(str(uid)).name if uid else "unknown SOP class"
    return f"{_modality(f) or '?'} ({name})"


def _axial(f: _File) -> bool:
    """Whether a file's slices look axial (reformatted sagittal or coronal series rank lower)."""
    ori = f.ds.get("ImageOrientationPatient")
    if ori is None:
        item = functional_group(f.ds, 0, "PlaneOrientationSequence")
        ori = item.get("ImageOrientationPatient") if item is not None else None
    try:
        n = slice_normal([float(v) for v in ori])
    except (TypeError, ValueError):
        return False
    return bool(abs(n[2]) >= max(abs(n[0]), abs(n[1])))


def _choose_series(source: str, files: list[_File], series_uid: str | None, force: bool,
                   messages: list[str]) -> list[_File]:
    series: dict[str, list[_File]] = defaultdict(list)
    for f in files:
        series[str(f.ds.get("SeriesInstanceUID", "") or "")].append(f)

    def frames(group: list[_File]) -> int:
        return sum(_n_frames(f) for f in group)

    def label(uid: str, group: list[_File]) -> str:
        desc = str(group[0].ds.get("SeriesDescription", "") or "").strip()
        return f"{uid or '(no SeriesInstanceUID)'} ({_modality(group[0]) or '?'}, {frames(group)} image(s)" + (
            f", '{desc}')" if desc else ")")

    if series_uid is not None:
        if series_uid not in series:
            listed = "; ".join(label(u, g) for u, g in series.items())
            raise ReadError(source, f"no series {series_uid}; found {listed}")
        group = series[series_uid]
        _check_images(group, force)
        return group

    usable = {u: g for u, g in series.items() if any(f.pixel_offset is not None for f in g)
              and all(str(f.ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES for f in g)}
    ct = {u: g for u, g in usable.items() if all(_is_ct(f) for f in g)}
    pool = ct or (usable if force else {})
    if not pool:
        if len(files) == 1 or len(series) == 1:
            _check_images(files, force)
        kinds = sorted({_what(f) for f in files})
        raise ReadError(source, f"no CT series among {len(series)} series ({', '.join(kinds)}); "
                                "pass force=True (--force) to read a non-CT series anyway")
    uid = max(pool, key=lambda u: (_axial(pool[u][0]), frames(pool[u])))
    group = pool[uid]
    if len(series) > 1:
        others = "; ".join(label(u, g) for u, g in series.items() if u != uid)
        note(messages, f"{source}: holds {len(series)} series; read the largest axial CT series {label(uid, group)}. "
                       f"Others: {others}. Pass series_uid= (--series) to choose another")
    _check_images(group, force)
    return group


def _check_images(group: list[_File], force: bool) -> None:
    for f in group:
        sop = str(f.ds.get("SOPClassUID", ""))
        if sop in SEG_SOP_CLASSES:
            raise ReadError(f.path, "is a DICOM Segmentation (SEG), not an image; read it with "
                                    "read_labels(path, like=scan)")
        if f.pixel_offset is None:
            # pydicom stops quietly where a file is cut, so an image without pixel data is suspect.
            if not sop or "Image" in UID(sop).name:
                raise ReadError(f.path, f"has no pixel data ({_what(f)}): the file ends after {f.size} bytes, "
                                        "so it is probably truncated")
            raise ReadError(f.path, f"has no pixel data: it is {_what(f)}, not an image")
        if not force and not _is_ct(f):
            raise ReadError(f.path, f"modality {_what(f)} is not CT, so its values are not Hounsfield units; "
                                    "pass force=True (--force) to read it anyway")


# --------------------------------------------------------------------------------------------------
# Geometry


def _floats(value: Any, n: int, path: str, name: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], float)
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ReadError(path, f"invalid {name} {value!r} (expected {n} numbers)")
    if name == "PixelSpacing" and not np.all(arr > 0):
        raise ReadError(path, f"invalid PixelSpacing {value!r} (expected 2 positive numbers)")
    return arr


def functional_group(ds: Dataset, frame: int, seq: str) -> Dataset | None:
    """The item of functional group ``seq`` for ``frame`` of a multi-frame dataset: per-frame first,
    then shared; None when neither has it."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for item in ((per[frame] if per is not None and frame < len(per) else None),
                 (shared[0] if shared else None)):
        if item is not None and seq in item and len(item[seq].value):
            return item[seq].value[0]
    return None


def _frames_of(f: _File, messages: list[str], missing_rescale: list[str]) -> list[_Frame]:
    ds = f.ds
    try:
        instance = int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError, OverflowError):
        instance = 0  # only breaks ties between slices at one position
    n_frames = _n_frames(f)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        out = []
        for i in range(n_frames):
            pos = functional_group(ds, i, "PlanePositionSequence")
            ori = functional_group(ds, i, "PlaneOrientationSequence")
            meas = functional_group(ds, i, "PixelMeasuresSequence")
            if pos is None or ori is None or meas is None:
                raise ReadError(f.path, f"frame {i + 1} lacks plane position, orientation or pixel measures")
            trans = functional_group(ds, i, "PixelValueTransformationSequence")
            rescale = _rescale_dataset(f.path, trans if trans is not None else ds, missing_rescale,
                                       has_lut="ModalityLUTSequence" in ds and trans is None)
            if rescale is None:
                rescale = ds
            out.append(_Frame(
                f, i,
                _floats(pos.get("ImagePositionPatient"), 3, f.path, "ImagePositionPatient"),
                _floats(ori.get("ImageOrientationPatient"), 6, f.path, "ImageOrientationPatient"),
                tuple(_floats(meas.get("PixelSpacing"), 2, f.path, "PixelSpacing")),  # type: ignore[arg-type]
                _positive(meas.get("SliceThickness")),
                rescale, instance * 100000 + i,
            ))
        return out
    if n_frames > 1:
        raise ReadError(f.path, f"multi-frame image ({n_frames} frames) without functional groups: "
                                "frame positions are unknown")
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise ReadError(f.path, "no ImagePositionPatient/ImageOrientationPatient: the slice cannot be placed")
    if "PixelSpacing" not in ds:
        raise ReadError(f.path, "no PixelSpacing: the pixel size is unknown, so areas cannot be measured")
    rescale = _rescale_dataset(f.path, ds, missing_rescale, has_lut="ModalityLUTSequence" in ds)
    return [_Frame(
        f, 0,
        _floats(ds.ImagePositionPatient, 3, f.path, "ImagePositionPatient"),
        _floats(ds.ImageOrientationPatient, 6, f.path, "ImageOrientationPatient"),
        tuple(_floats(ds.PixelSpacing, 2, f.path, "PixelSpacing")),  # type: ignore[arg-type]
        _positive(ds.get("SliceThickness")),
        rescale, instance,
    )]


def _rescale_dataset(path: str, holder: Dataset, missing: list[str], has_lut: bool) -> Dataset | None:
    """None when ``holder`` has what apply_modality_lut needs; else a stand-in with assumed values."""
    if has_lut:
        return None
    slope, intercept = holder.get("RescaleSlope"), holder.get("RescaleIntercept")
    numbers = {}
    for name, value in (("RescaleSlope", slope), ("RescaleIntercept", intercept)):
        if value not in (None, ""):
            try:
                numbers[name] = float(value)
            except (TypeError, ValueError):
                numbers[name] = float("nan")
            if not np.isfinite(numbers[name]) or (name == "RescaleSlope" and numbers[name] == 0):
                raise ReadError(path, f"invalid {name} {value!r} (expected a finite number"
                                      f"{', not 0' if name == 'RescaleSlope' else ''})")
    if len(numbers) == 2:
        if isinstance(slope, (int, float)) and isinstance(intercept, (int, float)):
            return holder
        stand_in = Dataset()  # numbers stored as text under a wrong VR: give the LUT the numbers
        stand_in.RescaleSlope, stand_in.RescaleIntercept = numbers["RescaleSlope"], numbers["RescaleIntercept"]
        return stand_in
    stand_in = Dataset()
    stand_in.RescaleSlope = slope if slope not in (None, "") else 1
    stand_in.RescaleIntercept = intercept if intercept not in (None, "") else 0
    missing.append(path)
    return stand_in


# --------------------------------------------------------------------------------------------------
# Assembling the volume


def _build_scan(source: str, files: list[_File], messages: list[str]) -> Scan:
    missing_rescale: list[str] = []
    frames = [fr for f in files for fr in _frames_of(f, messages, missing_rescale)]

    sizes = defaultdict(list)
    for fr in frames:
        ds = fr.file.ds
        sizes[(whole(fr.file.path, ds, "Rows", 0), whole(fr.file.path, ds, "Columns", 0))].append(fr)
    if len(sizes) > 1:
        parts = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        listed = "; ".join(f"{r}x{c} in {len(g)} image(s), e.g. {os.path.basename(g[0].file.path)}"
                           for (r, c), g in parts)
        raise ReadError(source, f"slices of different sizes in one series: {listed}")
    rows, cols = next(iter(sizes))
    if rows == 0 or cols == 0:
        raise ReadError(frames[0].file.path, "no Rows/Columns")
    for fr in frames:
        ds = fr.file.ds
        if whole(fr.file.path, ds, "SamplesPerPixel", 1) != 1:
            raise ReadError(fr.file.path, f"colour image ({ds.SamplesPerPixel} samples per pixel) is not CT")

    ref = frames[0]
    for fr in frames[1:]:
        if np.abs(fr.orientation - ref.orientation).max() > 1e-3:
            raise ReadError(source, f"slices have different orientations: {np.round(ref.orientation, 4).tolist()} "
                                    f"in {os.path.basename(ref.file.path)} but {np.round(fr.orientation, 4).tolist()} "
                                    f"in {os.path.basename(fr.file.path)}")
        if np.abs(np.subtract(fr.pixel_spacing, ref.pixel_spacing)).max() > 1e-4 * max(ref.pixel_spacing):
            raise ReadError(source, f"slices have different pixel spacings: {ref.pixel_spacing} in "
                                    f"{os.path.basename(ref.file.path)} but {fr.pixel_spacing} in "
                                    f"{os.path.basename(fr.file.path)}")
    check_axial(source, ref.orientation, messages)
    normal = slice_normal(ref.orientation)

    locations = np.array([fr.position @ normal for fr in frames])
    order = sorted(range(len(frames)), key=lambda i: (locations[i], frames[i].instance))
    frames = [frames[i] for i in order]
    locations = locations[order]

    keep = [0]
    dropped: list[tuple[float, str, str]] = []
    for i in range(1, len(frames)):
        if locations[i] - locations[keep[-1]] < 0.01:
            dropped.append((locations[i], os.path.basename(frames[keep[-1]].file.path),
                            os.path.basename(frames[i].file.path)))
        else:
            keep.append(i)
    if dropped:
        shown = "; ".join(f"{z:.2f} mm ({a} and {b})" for z, a, b in dropped[:3])
        more = f" and {len(dropped) - 3} more" if len(dropped) > 3 else ""
        note(messages, f"{source}: duplicate slice positions at {shown}{more}; kept the first of each "
                       "(lowest InstanceNumber)")
        frames = [frames[i] for i in keep]
        locations = locations[keep]

    if len(frames) > 1:
        spacing_z = regular_spacing(source, locations, messages)
        step = frames[-1].position - frames[0].position
        cos = abs(step @ normal) / max(np.linalg.norm(step), 1e-9)
        shear = float(np.degrees(np.arccos(min(1.0, cos))))
        if shear > 0.5:
            note(messages, f"{source}: slice positions advance {shear:.1f} degrees off the slice normal "
                           "(gantry tilt); each slice is still exact, the volume is sheared")
    else:
        ds = frames[0].file.ds
        spacing_z = _positive(ds.get("SpacingBetweenSlices")) or frames[0].thickness or 0.0
        if not spacing_z:
            spacing_z = 1.0
            note(messages, f"{source}: single slice without SliceThickness; slice spacing set to 1 mm")

    if missing_rescale:
        first = frames[0].rescale if frames[0].rescale is not None else frames[0].file.ds
        note(messages, f"{source}: no RescaleSlope/RescaleIntercept in {len(set(missing_rescale))} file(s), "
                       f"e.g. {os.path.basename(missing_rescale[0])}; assumed slope {float(first.RescaleSlope):g} "
                       f"and intercept {float(first.RescaleIntercept):g}")

    image_files = list({id(fr.file): fr.file for fr in frames}.values())
    check_voxels(source, (len(frames), rows, cols), "the series" if len(image_files) > 1 else "the header")
    for f in image_files:
        _check_pixel_length(f, rows, cols)
    hu = _decode_hu(frames, rows, cols)
    if missing_rescale and float(np.percentile(hu, 1)) >= 0:
        note(messages, f"{source}: without a rescale intercept the lowest values are {hu.min():.0f}, not about "
                       "-1000 for air; the intercept is probably -1024")

    ds0 = frames[0].file.ds
    uniq_files = list({id(fr.file): fr.file for fr in frames}.values())  # in slice order
    info = DicomInfo(
        study_uid=str(ds0.get("StudyInstanceUID", "")),
        series_uid=str(ds0.get("SeriesInstanceUID", "")),
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID")) if ds0.get("FrameOfReferenceUID") else None,
        sop_class_uid=str(ds0.get("SOPClassUID", "")),
        sop_instance_uids=tuple(str(fr.file.ds.get("SOPInstanceUID", "")) for fr in frames),
        frame_numbers=tuple(fr.index + 1 for fr in frames),
        files=tuple(fr.file.path for fr in frames),
        headers=tuple(f.ds for f in uniq_files),
        patient_size_m=_patient_size(source, ds0, messages),
        patient_weight_kg=_positive(ds0.get("PatientWeight")),
        tags=_tags(ds0),
    )
    return Scan(
        hu=hu,
        spacing=(float(spacing_z), float(ref.pixel_spacing[0]), float(ref.pixel_spacing[1])),
        positions=np.stack([fr.position for fr in frames]),
        orientation=tuple(float(v) for v in ref.orientation),
        source=source,
        format="dicom",
        warnings=messages,
        dicom=info,
    )


def _positive(value: Any) -> float | None:
    """``value`` as a finite positive number, else None (absent, text, NaN, zero, negative)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if v > 0 and np.isfinite(v) else None


def _patient_size(source: str, ds: Dataset, messages: list[str]) -> float | None:
    size = _positive(ds.get("PatientSize"))
    if size is None:
        return None
    if 50 <= size <= 250:
        note(messages, f"{source}: PatientSize {size:g} looks like centimetres, not metres; read it as {size / 100:g} m")
        return size / 100
    if not 0.5 <= size <= 2.5:
        note(messages, f"{source}: PatientSize {size:g} m is implausible; height left unknown")
        return None
    return size


def _multi_text(value: Any) -> str | None:
    """A multi-valued string element as DICOM writes it (``ORIGINAL\\PRIMARY\\AXIAL``); None when empty."""
    if value in (None, ""):
        return None
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return "\\".join(str(v) for v in values) or None


def _tags(ds: Dataset) -> dict[str, Any]:
    def text(key: str) -> str | None:
        v = ds.get(key)
        return None if v in (None, "") else str(v)

    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return {
        "patient_id": text("PatientID"),
        "patient_sex": text("PatientSex"),
        "patient_age": text("PatientAge"),
        "study_date": text("StudyDate"),
        "series_description": text("SeriesDescription"),
        "series_number": text("SeriesNumber"),
        "manufacturer": text("Manufacturer"),
        "model": text("ManufacturerModelName"),
        "kvp": _positive(ds.get("KVP")),
        "convolution_kernel": text("ConvolutionKernel"),
        "slice_thickness": _positive(ds.get("SliceThickness")),
        "modality": text("Modality"),
        "image_type": _multi_text(ds.get("ImageType")),
        "transfer_syntax": UID(str(ts)).name if ts else None,
    }


def _decode_hu(frames: list[_Frame], rows: int, cols: int) -> np.ndarray:
    """Decode the stored values of every frame and apply the modality LUT, into one float32 array."""
    hu = np.empty((len(frames), rows, cols), np.float32)
    by_file: dict[int, list[int]] = defaultdict(list)
    for k, fr in enumerate(frames):
        by_file[id(fr.file)].append(k)
    for ks in by_file.values():
        f = frames[ks[0]].file
        raw = _stored_values(f, rows, cols)
        padding = _padding_mask_fn(f.path, f.ds)
        for k in ks:
            fr = frames[k]
            stored = raw[fr.index]
            hu[k] = apply_modality_lut(stored, fr.rescale if fr.rescale is not None else f.ds)
            check_finite(f.path, hu[k])
            if padding is not None:
                mask = padding(stored)
                if mask.any():
                    hu[k][mask] = AIR_HU
    return hu


def _padding_mask_fn(path: str, ds: Dataset):
    value = whole(path, ds, "PixelPaddingValue", None)  # a number even when a damaged VR made it text
    if value is None:
        return None
    limit = whole(path, ds, "PixelPaddingRangeLimit", None)
    lo, hi = (value, value) if limit is None else (min(value, limit), max(value, limit))
    return lambda arr: (arr >= lo) & (arr <= hi)


def _native_dtype(f: _File) -> np.dtype | None:
    """The stored values' dtype when the pixel data are uncompressed at a known offset, else None."""
    ds = f.ds
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    bits = whole(f.path, ds, "BitsAllocated", 16)
    signed = whole(f.path, ds, "PixelRepresentation", 0) == 1
    if ts in _NATIVE_SYNTAXES and f.pixel_offset is not None and f.pixel_offset >= 0 and bits in (8, 16, 32):
        return np.dtype(f"{_NATIVE_SYNTAXES[ts]}{'i' if signed else 'u'}{bits // 8}")
    return None


def _check_pixel_length(f: _File, rows: int, cols: int) -> None:
    """Refuse, before the volume is allocated, a file whose uncompressed pixel data cannot hold what
    Rows, Columns, NumberOfFrames and BitsAllocated claim."""
    dtype = _native_dtype(f)
    n_frames = _n_frames(f)
    check_voxels(f.path, (n_frames, rows, cols))
    if dtype is None:
        return
    need = rows * cols * n_frames * dtype.itemsize
    have = f.size - f.pixel_offset - 8  # at most: an element header takes 8 or 12 bytes
    if have < need:
        raise ReadError(f.path, f"truncated: pixel data holds at most {max(have, 0)} bytes, {rows}x{cols}x{n_frames} "
                                f"pixels of {dtype.itemsize} byte(s) need {need}")


def _stored_values(f: _File, rows: int, cols: int) -> np.ndarray:
    """Stored pixel values ``[frames, rows, cols]`` of one file (native read, else pydicom decode)."""
    ds = f.ds
    n_frames = _n_frames(f)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    bits = whole(f.path, ds, "BitsAllocated", 16)
    signed = whole(f.path, ds, "PixelRepresentation", 0) == 1
    dtype = _native_dtype(f)
    if dtype is not None:
        little, implicit = _encoding(ds, ts)
        need = rows * cols * n_frames * dtype.itemsize
        with open(f.path, "rb") as fh:
            _, length, head = _element_header(fh, f.pixel_offset, little, implicit)
            if length == 0xFFFFFFFF:
                raise ReadError(f.path, "pixel data is encapsulated but the transfer syntax says uncompressed")
            fh.seek(f.pixel_offset + head)
            data = fh.read(min(length, need))
        if len(data) < need:
            raise ReadError(f.path, f"truncated: pixel data holds {len(data)} bytes, {rows}x{cols}x{n_frames} "
                                    f"pixels need {need}")
        arr = np.frombuffer(data, dtype).reshape(n_frames, rows, cols)
        stored_bits = whole(f.path, ds, "BitsStored", bits)
        if signed and stored_bits < bits:
            shift = bits - stored_bits  # sign-extend the stored bits, as pydicom does
            arr = (arr.astype(dtype.newbyteorder("=")) << shift) >> shift
        return arr.astype(dtype.newbyteorder("="), copy=False)
    return _decode_with_pydicom(f, n_frames)


def _decode_with_pydicom(f: _File, n_frames: int) -> np.ndarray:
    ts = UID(str(f.ds.file_meta.get("TransferSyntaxUID", ""))) if hasattr(f.ds, "file_meta") else None
    name = ts.name if ts else "unknown transfer syntax"
    try:
        full = read_dataset(f.path)
        arr = full.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        text = str(exc)
        if "missing" in text or "plugin" in text or "decoder" in text.lower() or isinstance(exc, ImportError):
            raise ReadError(f.path, f"pixel data is compressed ({name}) and no installed decoder reads it: "
                                    "pip install 'kerasmuscle[dicom]'") from None
        raise ReadError(f.path, f"cannot decode pixel data ({name}): {text.splitlines()[0] if text else exc!r}") from None
    except Exception as exc:
        raise ReadError(f.path, f"cannot decode pixel data ({name}; truncated or corrupt?): "
                                f"{type(exc).__name__}: {exc}") from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != n_frames:
        raise ReadError(f.path, f"decoded pixel data has shape {arr.shape}, expected {n_frames} frame(s) of one sample")
    return arr
