"""DICOM Segmentation (SEG): read with pydicom alone, write with highdicom (the ``dicom`` extra).

Reading handles BINARY, FRACTIONAL (member where the value is at least half the maximum) and
LABELMAP segmentations, single- or multi-frame, with frames placed by their plane positions; the
label value of a pixel is its segment number. Writing references the source CT images so that
viewers and PACS attach the result to the right series.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict

import numpy as np

from kerasmuscle.errors import MissingExtraError, ReadError
from kerasmuscle.io.dicom import SEG_SOP_CLASSES, _floats, _positive, functional_group, read_dataset, whole
from kerasmuscle.io.scan import LabelVolume, Scan, check_axial, check_voxels, regular_spacing, slice_normal
from kerasmuscle.labels import CATEGORY, MUSCLE_LABELS, Label

def read_seg(path: str | os.PathLike) -> LabelVolume:
    """Read a DICOM SEG into a label map on its own grid.

    Args:
        path: the SEG file.

    Returns:
        The :class:`~kerasmuscle.io.scan.LabelVolume`: ``array`` uint8 ``[slice,row,col]`` (value = segment
        number), its geometry, ``names`` (segment number -> label), ``frame_of_reference_uid``,
        ``referenced_series_uids``, ``referenced_sop_uids`` (per slice, the source images its frames
        cite) and ``warnings``.

    Raises:
        ReadError: not a SEG, undecodable, frames without positions, overlapping segments.
    """
    import pydicom

    path = os.fspath(path)
    try:
        ds = read_dataset(path)
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    except Exception as exc:
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    try:
        return _read_seg(path, ds)
    except (ReadError, MemoryError):
        raise
    except Exception as exc:  # pydicom converts values lazily, and raises many types on damaged ones
        raise ReadError(path, f"damaged SEG ({type(exc).__name__}: {exc})") from None


def _read_seg(path: str, ds) -> LabelVolume:
    import pydicom

    sop = str(ds.get("SOPClassUID", ""))
    if sop not in SEG_SOP_CLASSES:
        raise ReadError(path, f"not a DICOM Segmentation (it is {pydicom.uid.UID(sop).name or 'unknown'})")
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise ReadError(path, f"unknown SegmentationType {seg_type!r} (expected BINARY, FRACTIONAL or LABELMAP)")
    n_frames = whole(path, ds, "NumberOfFrames", 1, least=1)
    rows, cols = whole(path, ds, "Rows", 0, least=1), whole(path, ds, "Columns", 0, least=1)
    check_voxels(path, (n_frames, rows, cols))
    try:
        frames = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise ReadError(path, f"cannot decode SEG pixel data ({type(exc).__name__}: {exc})") from None
    if frames.size != n_frames * rows * cols:
        raise ReadError(path, f"pixel data hold {frames.size} values, but NumberOfFrames x Rows x Columns = "
                              f"{n_frames} x {rows} x {cols} = {n_frames * rows * cols}")
    frames = frames.reshape(n_frames, rows, cols)
    if "SegmentSequence" not in ds or not len(ds.SegmentSequence):
        raise ReadError(path, "no SegmentSequence: the SEG does not say what its segments are")
    names = {whole(path, s, "SegmentNumber", 0, least=1): str(s.get("SegmentLabel", "")) for s in ds.SegmentSequence}
    if any(n > 255 for n in names):
        raise ReadError(path, f"segment numbers up to {max(names)} do not fit a uint8 label map")
    if seg_type == "LABELMAP" and frames.size and int(frames.max()) > 255:
        raise ReadError(path, f"label values up to {int(frames.max())} do not fit a uint8 label map")

    positions, orientations, segments, refs, spacings = [], [], [], [], []
    for i in range(n_frames):
        pos, ori, meas = (functional_group(ds, i, s) for s in
                          ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        if pos is None or ori is None or meas is None:
            raise ReadError(path, f"frame {i + 1} lacks plane position, orientation or pixel measures")
        where = f"frame {i + 1}'s"
        positions.append(_floats(pos.get("ImagePositionPatient"), 3, path, f"{where} ImagePositionPatient"))
        orientations.append(_floats(ori.get("ImageOrientationPatient"), 6, path, f"{where} ImageOrientationPatient"))
        spacing = _floats(meas.get("PixelSpacing"), 2, path, f"{where} PixelSpacing")
        if not np.all(spacing > 0):
            raise ReadError(path, f"invalid {where} PixelSpacing {spacing.tolist()} (expected 2 positive numbers)")
        spacings.append(tuple(float(v) for v in spacing))
        ident = functional_group(ds, i, "SegmentIdentificationSequence")
        segments.append(whole(path, ident, "ReferencedSegmentNumber", 0) if ident is not None else 0)
        der = functional_group(ds, i, "DerivationImageSequence")
        srcs = der.get("SourceImageSequence", []) if der is not None else []
        refs.append(tuple(str(s.ReferencedSOPInstanceUID) for s in srcs if s.get("ReferencedSOPInstanceUID")))
    if seg_type != "LABELMAP" and any(s == 0 for s in segments):
        raise ReadError(path, "a frame does not say which segment it belongs to")
    nowhere = sorted({s for s in segments if s and s not in names})
    if seg_type != "LABELMAP" and nowhere:
        raise ReadError(path, f"frames refer to segment(s) {', '.join(map(str, nowhere))}, which the SEG does not "
                              f"describe (its segments are {', '.join(map(str, sorted(names)))})")
    orientation = orientations[0]
    if any(np.abs(o - orientation).max() > 1e-3 for o in orientations):
        raise ReadError(path, "SEG frames have different orientations")
    messages: list[str] = []
    check_axial(path, orientation, messages)
    normal = slice_normal(orientation)

    locations = np.array([p @ normal for p in positions])
    order = np.argsort(locations, kind="stable")
    slice_of = np.empty(n_frames, int)
    slice_locs: list[float] = []
    slice_pos: list[np.ndarray] = []
    for i in order:
        if not slice_locs or locations[i] - slice_locs[-1] > 0.01:
            slice_locs.append(float(locations[i]))
            slice_pos.append(positions[i])
        slice_of[i] = len(slice_locs) - 1

    array = np.zeros((len(slice_locs), frames.shape[1], frames.shape[2]), np.uint8)
    max_frac = _positive(ds.get("MaximumFractionalValue", 255))
    if max_frac is None:
        raise ReadError(path, f"invalid MaximumFractionalValue {ds.get('MaximumFractionalValue')!r} (expected a "
                              "positive number)")
    overlaps: dict[tuple[int, int], int] = defaultdict(int)
    slice_refs: list[set[str]] = [set() for _ in slice_locs]
    for i in range(n_frames):
        s = slice_of[i]
        slice_refs[s].update(refs[i])
        frame = frames[i]
        if seg_type == "LABELMAP":
            mask = frame > 0
            array[s][mask] = frame[mask]
            continue
        mask = frame >= 0.5 * max_frac if seg_type == "FRACTIONAL" else frame > 0
        clash = mask & (array[s] != 0) & (array[s] != segments[i])
        if clash.any():
            for other in np.unique(array[s][clash]):
                overlaps[(int(other), segments[i])] += int(np.count_nonzero(clash & (array[s] == other)))
        array[s][mask] = segments[i]
    if overlaps:
        shown = ", ".join(f"segments {a} and {b} in {n} pixels" for (a, b), n in list(overlaps.items())[:3])
        raise ReadError(path, f"segments overlap ({shown}); a label map holds one label per pixel")

    meas = functional_group(ds, 0, "PixelMeasuresSequence")
    if len(slice_locs) > 1:
        spacing_z = regular_spacing(path, np.array(slice_locs), messages)
    else:
        spacing_z = _positive(meas.get("SpacingBetweenSlices")) or _positive(meas.get("SliceThickness")) or 1.0
    ref_series = [str(r.SeriesInstanceUID) for r in ds.get("ReferencedSeriesSequence", None) or []
                  if "SeriesInstanceUID" in r]
    return LabelVolume(
        array=array,
        geometry=((spacing_z, spacings[0][0], spacings[0][1]), np.stack(slice_pos),
                  tuple(float(v) for v in orientation)),
        source=path,
        names=names,
        warnings=messages,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")) or None,
        referenced_series_uids=ref_series,
        referenced_sop_uids=[tuple(sorted(r)) for r in slice_refs],
    )


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise MissingExtraError("Writing DICOM SEG", "dicom", "highdicom") from None
    return highdicom


def _without_empty_charset(ds):
    """``ds``, or a shallow copy without an empty Specific Character Set (0008,0005): an empty value means
    the default repertoire (PS3.3 C.12.1.1.2), but highdicom refuses it when it copies the attribute."""
    value = ds.get("SpecificCharacterSet", None)
    if value is None or (value if isinstance(value, str) else "".join(value)).strip():
        return ds
    import pydicom

    copy = pydicom.Dataset()  # a new dataset of the same elements (pixel data shared, not copied)
    for elem in ds:
        if elem.tag != 0x00080005:
            copy.add(elem)
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    return copy


def write_seg(
    path: str | os.PathLike,
    labels: np.ndarray,
    scan: Scan,
    *,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_number: int = 9901,
    series_description: str = "kerasmuscle L3 muscle segmentation",
    algorithm_name: str = "kerasmuscle",
    algorithm_version: str | None = None,
    content_date_time: tuple[str, str] | None = None,
    segments: tuple[Label, ...] = MUSCLE_LABELS,
    omit_empty_frames: bool = False,
) -> None:
    """Write a label map as a DICOM SEG that references the scan's source images.

    Args:
        path: the output file (written through a temporary file).
        labels: uint8 ``[slice,row,col]`` aligned with ``scan`` (values = label ids).
        scan: a scan read from DICOM (its headers are the source images).
        series_uid, sop_uid: UIDs for the SEG (new random ones when None).
        series_number, series_description: shown by viewers.
        algorithm_name, algorithm_version: recorded as the segmentation algorithm.
        content_date_time: ``(YYYYMMDD, HHMMSS)`` to stamp instead of now; with ``series_uid`` and
            ``sop_uid`` given too, the same inputs give byte-identical files.
        segments: the labels to describe; segment number = label id.
        omit_empty_frames: leave out frames where a segment is empty (smaller files for long series).

    Raises:
        MissingExtraError: highdicom is not installed.
        ValueError: the scan is not DICOM or the label map does not match it.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from kerasmuscle import __version__
    from kerasmuscle.fileutil import atomic_path

    if scan.dicom is None:
        raise ValueError("a DICOM SEG needs a scan read from DICOM (its source images)")
    labels = np.asarray(labels, np.uint8)
    if labels.shape != scan.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the scan {scan.shape}")
    version = algorithm_version or __version__
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=lab.id,
            segment_label=lab.name,
            segmented_property_category=hd.sr.CodedConcept(CATEGORY.value, CATEGORY.scheme, CATEGORY.meaning),
            segmented_property_type=hd.sr.CodedConcept(lab.code.value, lab.code.scheme, lab.code.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*lab.colour),
        )
        for lab in segments
    ]
    info = scan.dicom
    if len(info.headers) == len(labels):
        sources = list(info.headers)
    elif len(info.headers) == 1:
        sources = list(info.headers)
    else:
        raise ValueError("the scan's slices do not map one-to-one onto its source images")
    sources = [_without_empty_charset(ds) for ds in sources]
    keep = np.isin(labels, [lab.id for lab in segments])
    pixel_array = np.where(keep, labels, 0).astype(np.uint8)
    with warnings.catch_warnings():
        # highdicom warns about oddities of the source images (a one-component PatientName, ...) that the
        # SEG copies faithfully and the user cannot act on here.
        warnings.simplefilter("ignore", UserWarning)
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=series_uid or generate_uid(),
            series_number=series_number,
            sop_instance_uid=sop_uid or generate_uid(),
            instance_number=1,
            manufacturer="kerasmuscle",
            manufacturer_model_name=algorithm_name,
            software_versions=version,
            device_serial_number="0",
            content_label="MUSCLE",
            content_description=series_description[:64],
            omit_empty_frames=omit_empty_frames,
        )
    seg.SeriesDescription = series_description[:64]
    if content_date_time is not None:
        # Reproducible files: replace the clock and the random UIDs highdicom adds with derived ones.
        seg.ContentDate, seg.ContentTime = content_date_time
        seg.SeriesDate, seg.SeriesTime = content_date_time
        seg.InstanceCreationDate, seg.InstanceCreationTime = content_date_time
        dimension_uid = generate_uid(entropy_srcs=[str(seg.SOPInstanceUID), "dimension organization"])
        for key in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
            for item in seg.get(key, []):
                item.DimensionOrganizationUID = dimension_uid
        for item in seg.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = "".join(content_date_time)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
