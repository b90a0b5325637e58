"""DICOM Structured Report (TID 1500 Measurement Report) of one case's L3 muscle measurements.

:func:`build_sr` makes a Comprehensive 3D SR with highdicom (``pip install 'kerasmuscle[dicom]'``) that
references the measured CT images and, when given, the DICOM SEG written for the case:

- one measurement group per muscle group present (TID 1411, volumetric ROI: the SEG's segment): area
  (cm²), mean and SD of HU, and the area and mean HU of the patient's left and right side (the finding
  site with its laterality);
- one case group (TID 1501): the skeletal muscle area (SMA, cm², total and per side), the mean and SD of
  muscle HU and, when the height is known, the skeletal muscle index (SMI, cm²/m²).

The level is the finding site ``L3 vertebra`` of every group when the slices were chosen as L3 (by the
level finder or by the user); the measured slices are the groups' source images. Concept codes are from
SNOMED CT, DCM and UCUM as pydicom's code dictionary (the DICOM standard's) lists them; the SMI has no code
there, so it carries a local code (scheme ``99KMSC``, "Skeletal muscle index"), said in the README. The
values are those of ``measurements.json`` (unrounded).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from kerasmuscle.errors import MissingExtraError
from kerasmuscle.labels import MUSCLE_LABELS

#: The local coding scheme for concepts with no standard code.
LOCAL_SCHEME = "99KMSC"
#: Level methods whose slices are claimed to be L3 (the finder's choice, or the user's own).
L3_METHODS = ("auto", "user")


def _hd():
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError as exc:  # pragma: no cover - the extra is installed in tests
        raise MissingExtraError("DICOM SR", "dicom") from exc
    return hd, codes


def _measure(hd, codes, name, value, unit, site=None, laterality=None):
    if value is None or not math.isfinite(float(value)):
        return None
    sites = [hd.sr.FindingSite(anatomic_location=site, laterality=laterality)] if site is not None else None
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, finding_sites=sites)


def build_sr(scan, case_row: Mapping[str, Any], slices: Sequence[int], *, seg=None, level_method: str | None = None,
             model_name: str = "kerasmuscle", series_number: int = 901):
    """The SR dataset of one case.

    Args:
        scan: the :class:`~kerasmuscle.io.Scan`, read from DICOM (its headers are the evidence).
        case_row: the case measurements (:data:`kerasmuscle.core.measure.CASE_COLUMNS`).
        slices: the measured slice indices.
        seg: the case's DICOM SEG dataset (its segments are referenced), or None.
        level_method: how the slices were chosen (``auto``, ``user``, ``all``, ``labelled``).
        model_name: the observer device's model name (the bundle).

    Raises:
        ValueError: the scan was not read from DICOM.
        MissingExtraError: highdicom is not installed.
    """
    hd, codes = _hd()
    from pydicom.sr.coding import Code

    from kerasmuscle import __version__

    if scan.dicom is None:
        raise ValueError("a DICOM SR needs a scan read from DICOM (its source images)")
    from kerasmuscle.io.seg import _without_empty_charset

    headers = [_without_empty_charset(scan.dicom.headers[int(i)]) for i in slices]
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(h) for h in headers]
    at_l3 = [hd.sr.FindingSite(codes.SCT.L3Vertebra)] if level_method in L3_METHODS else None
    cm2, hu = codes.UCUM.SquareCentimeter, codes.UCUM.HounsfieldUnit
    left, right = codes.SCT.Left, codes.SCT.Right
    segments = {int(s.SegmentNumber) for s in seg.SegmentSequence} if seg is not None else set()

    groups = []
    for lab in MUSCLE_LABELS:
        k = lab.key
        area = case_row.get(f"{k}_area_cm2")
        if area is None or not math.isfinite(area) or area <= 0:
            continue
        site = Code(lab.code.value, lab.code.scheme, lab.code.meaning)
        items = [
            _measure(hd, codes, codes.SCT.Area, area, cm2),
            _measure(hd, codes, codes.SCT.Mean, case_row.get(f"{k}_mean_hu"), hu),
            _measure(hd, codes, codes.SCT.StandardDeviation, case_row.get(f"{k}_sd_hu"), hu),
            _measure(hd, codes, codes.SCT.Area, case_row.get(f"{k}_left_area_cm2"), cm2, site, left),
            _measure(hd, codes, codes.SCT.Area, case_row.get(f"{k}_right_area_cm2"), cm2, site, right),
            _measure(hd, codes, codes.SCT.Mean, case_row.get(f"{k}_left_mean_hu"), hu, site, left),
            _measure(hd, codes, codes.SCT.Mean, case_row.get(f"{k}_right_mean_hu"), hu, site, right),
        ]
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{lab.name} at the measured slices")
        common = dict(tracking_identifier=tracking, finding_type=site, finding_sites=at_l3,
                      measurements=[m for m in items if m is not None])
        if lab.id in segments:
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=lab.id), **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(source_images=sources, **common))

    muscle = codes.SCT.SkeletalMuscle
    smi = Code("SMI", LOCAL_SCHEME, "Skeletal muscle index")
    case_items = [
        _measure(hd, codes, codes.SCT.Area, case_row.get("sma_cm2"), cm2),
        _measure(hd, codes, codes.SCT.Area, case_row.get("sma_left_cm2"), cm2, muscle, left),
        _measure(hd, codes, codes.SCT.Area, case_row.get("sma_right_cm2"), cm2, muscle, right),
        _measure(hd, codes, codes.SCT.Mean, case_row.get("muscle_mean_hu"), hu),
        _measure(hd, codes, codes.SCT.StandardDeviation, case_row.get("muscle_sd_hu"), hu),
        _measure(hd, codes, smi, case_row.get("smi_cm2_m2"), Code("cm2/m2", "UCUM", "square centimeter per square meter")),
    ]
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="skeletal muscle, all five groups"),
        finding_type=muscle, finding_sites=at_l3, source_images=sources,
        measurements=[m for m in case_items if m is not None]))

    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID(), name="kerasmuscle",
                                                       manufacturer_name="kerasmuscle", model_name=model_name[:64])
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ComputedTomography,
                                     imaging_measurements=groups)
    evidence = list(headers) + ([seg] if seg is not None else [])
    return hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="kerasmuscle",
        series_description=f"kerasmuscle L3 muscle {__version__}"[:64], is_complete=True)


def write_sr(path: str | os.PathLike, scan, case_row: Mapping[str, Any], slices: Sequence[int], *,
             seg_path: str | os.PathLike | None = None, level_method: str | None = None,
             model_name: str = "kerasmuscle") -> None:
    """Write :func:`build_sr` to ``path`` (the SEG read from ``seg_path`` when it exists)."""
    import pydicom

    seg = pydicom.dcmread(os.fspath(seg_path)) if seg_path is not None and os.path.isfile(seg_path) else None
    with warnings.catch_warnings():
        # highdicom warns about a one-component PatientName copied from the source images ("Pancreas-CT-CB_001"):
        # it is the archive's value, kept as it is
        warnings.filterwarnings("ignore", message="The string .* is unlikely to represent", category=UserWarning)
        sr = build_sr(scan, case_row, slices, seg=seg, level_method=level_method, model_name=model_name)
    sr.save_as(os.fspath(path))


def read_sr_values(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The numeric values of an SR, flat: per measurement its group's tracking identifier, concept meaning,
    laterality (or None), value and unit. For checking an SR against ``measurements.json``."""
    import pydicom

    ds = pydicom.dcmread(os.fspath(path))
    out: list[dict[str, Any]] = []

    def walk(items, group: str | None) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "CONTAINER" and name == "Measurement Group":
                ident = next((c.TextValue for c in item.ContentSequence
                              if c.ValueType == "TEXT" and c.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"), None)
                walk(item.ContentSequence, ident)
                continue
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                lat = None
                for child in item.get("ContentSequence", []):
                    for grand in child.get("ContentSequence", []):
                        if grand.ConceptNameCodeSequence[0].CodeMeaning == "Laterality":
                            lat = grand.ConceptCodeSequence[0].CodeMeaning
                out.append({"group": group, "name": name, "laterality": lat, "value": float(value.NumericValue),
                            "unit": value.MeasurementUnitsCodeSequence[0].CodeValue})
            if "ContentSequence" in item:
                walk(item.ContentSequence, group)

    walk(ds.ContentSequence, None)
    return out
