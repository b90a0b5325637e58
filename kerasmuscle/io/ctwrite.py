"""Write a CT volume as a DICOM series (CT Image Storage, Explicit VR Little Endian).

Used by the synthetic cohort generator and by tests; the files pass dicom3tools' ``dciodvfy``. The
series is written to a temporary folder and renamed into place, so a reader never sees half of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.fileutil import atomic_path
from kerasmuscle.io.scan import AXIAL_ORIENTATION

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Ways scanners store HU: (numpy dtype, rescale slope, rescale intercept).
REPRESENTATIONS: dict[str, tuple[str, float, float]] = {
    "uint16-1024": ("uint16", 1.0, -1024.0),  # Philips and many others: unsigned, air stored near 24
    "int16-1024": ("int16", 1.0, -1024.0),
    "int16": ("int16", 1.0, 0.0),  # signed, stored value is HU
}


@dataclass(frozen=True)
class SeriesInfo:
    """Identity and description of the series to write (UIDs are generated when left empty).

    Args:
        patient_id, patient_name, patient_sex, patient_age: Patient module (age as ``"063Y"``).
        patient_size_m, patient_weight_kg: Patient Study module (height and weight).
        study_uid, series_uid, frame_of_reference_uid: UIDs; new ones when None.
        sop_uids: one SOP Instance UID per slice; new ones when None.
        study_date, study_time: ``YYYYMMDD`` and ``HHMMSS``.
        study_description, series_description, series_number, accession_number: descriptive tags.
        manufacturer, model, kvp, kernel: equipment and acquisition.
        comments: Image Comments (synthetic cohorts say so here and in the names, since the newer
            Synthetic Data attribute is unknown to widespread validators such as dciodvfy).
        extra: further top-level attributes by keyword.
    """

    patient_id: str = "ANON"
    patient_name: str = "Anonymous^"
    patient_sex: str = ""
    patient_age: str = ""
    patient_size_m: float | None = None
    patient_weight_kg: float | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    sop_uids: tuple[str, ...] | None = None
    study_date: str = "20000101"
    study_time: str = "120000"
    study_description: str = ""
    series_description: str = ""
    series_number: int = 1
    accession_number: str = ""
    manufacturer: str = "kerasmuscle"
    model: str = ""
    kvp: float = 120.0
    kernel: str = "STANDARD"
    comments: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def write_ct_series(
    folder: str | os.PathLike,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float],
    positions: np.ndarray,
    orientation: Sequence[float] = AXIAL_ORIENTATION,
    slice_thickness: float | None = None,
    info: SeriesInfo = SeriesInfo(),
    representation: str = "int16-1024",
    instance_order: str = "descending",
    overwrite: bool = False,
) -> list[Path]:
    """Write ``hu`` as one DICOM file per slice into ``folder``.

    Args:
        folder: the series folder to create (written as a temporary folder, then renamed).
        hu: ``[slices, rows, cols]`` integer-valued HU (they are stored exactly).
        pixel_spacing: ``(row, col)`` spacing in mm.
        positions: ``[slices, 3]`` ImagePositionPatient of each slice (LPS mm).
        orientation: ImageOrientationPatient.
        slice_thickness: SliceThickness (default: distance between the first two slices).
        info: identity and descriptive tags.
        representation: a key of :data:`REPRESENTATIONS` (how HU are stored).
        instance_order: ``"descending"`` numbers slices from the highest z down, as a head-first
            scanner does, so that InstanceNumber runs against position; ``"ascending"`` the reverse.
        overwrite: replace an existing folder.

    Returns:
        The written files, in slice order.

    Raises:
        ValueError: HU that are not whole numbers or do not fit the representation.
        FileExistsError: ``folder`` exists and ``overwrite`` is False.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
    from pydicom.valuerep import DSfloat

    def ds_(value: float) -> DSfloat:
        return DSfloat(float(value), auto_format=True)  # as many digits as DS's 16 characters hold

    from kerasmuscle import __version__

    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be [slices, rows, cols], got shape {hu.shape}")
    positions = np.asarray(positions, float)
    if positions.shape != (len(hu), 3):
        raise ValueError(f"positions must be ({len(hu)}, 3), got {positions.shape}")
    dtype, slope, intercept = REPRESENTATIONS[representation]
    stored = (hu.astype(np.float64) - intercept) / slope
    if not np.array_equal(stored, np.rint(stored)):
        raise ValueError("HU values must be whole multiples of the rescale slope to be stored exactly")
    info_dtype = np.iinfo(dtype)
    if stored.min() < info_dtype.min or stored.max() > info_dtype.max:
        raise ValueError(f"HU {hu.min():g}..{hu.max():g} do not fit {representation}")
    stored = stored.astype(dtype)
    signed = dtype.startswith("int")
    bits_stored = 16 if signed or stored.max() > 4095 else 12
    normal = np.cross(orientation[:3], orientation[3:])
    locations = positions @ normal
    thickness = slice_thickness if slice_thickness is not None else (
        float(abs(locations[1] - locations[0])) if len(hu) > 1 else 1.0)

    study_uid = info.study_uid or generate_uid()
    series_uid = info.series_uid or generate_uid()
    for_uid = info.frame_of_reference_uid or generate_uid()
    sop_uids = info.sop_uids or tuple(generate_uid() for _ in range(len(hu)))
    order = np.argsort(-locations if instance_order == "descending" else locations, kind="stable")
    instance_of = np.empty(len(hu), int)
    instance_of[order] = np.arange(1, len(hu) + 1)
    width = max(4, len(str(len(hu))))

    written: list[Path] = []
    with atomic_path(folder, overwrite=overwrite) as tmp:
        tmp.mkdir()
        for k in range(len(hu)):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uids[k]
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = f"KERASMUSCLE{__version__}"[:16]
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uids[k]
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = info.study_date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = info.study_time
            ds.AccessionNumber = info.accession_number
            ds.Modality = "CT"
            ds.Manufacturer = info.manufacturer
            ds.ManufacturerModelName = info.model
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = info.study_description
            ds.SeriesDescription = info.series_description
            ds.PatientName = info.patient_name
            ds.PatientID = info.patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = info.patient_sex
            if info.patient_age:
                ds.PatientAge = info.patient_age
            if info.patient_size_m:
                ds.PatientSize = f"{info.patient_size_m:.2f}"
            if info.patient_weight_kg:
                ds.PatientWeight = f"{info.patient_weight_kg:.1f}"
            ds.BodyPartExamined = "ABDOMEN"
            ds.SliceThickness = ds_(thickness)
            ds.KVP = f"{info.kvp:g}"
            ds.ReconstructionDiameter = ds_(pixel_spacing[1] * hu.shape[2])
            ds.ConvolutionKernel = info.kernel
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = info.series_number
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = int(instance_of[k])
            ds.ImagePositionPatient = [ds_(v) for v in positions[k]]
            ds.ImageOrientationPatient = [ds_(v) for v in orientation]
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = ds_(locations[k])
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
            ds.PixelSpacing = [ds_(pixel_spacing[0]), ds_(pixel_spacing[1])]
            ds.BitsAllocated = 16
            ds.BitsStored = bits_stored
            ds.HighBit = bits_stored - 1
            ds.PixelRepresentation = 1 if signed else 0
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.RescaleSlope = f"{slope:g}"
            ds.RescaleType = "HU"
            ds.BurnedInAnnotation = "NO"
            if info.comments:
                ds.ImageComments = info.comments
            for key, value in info.extra.items():
                setattr(ds, key, value)
            ds.PixelData = np.ascontiguousarray(stored[k]).astype(stored.dtype.newbyteorder("<")).tobytes()
            name = f"IM{int(instance_of[k]):0{width}d}.dcm"
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
            written.append(Path(folder) / name)
    return written
