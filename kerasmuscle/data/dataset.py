"""A dataset folder described by ``dataset.json``.

``dataset.json`` holds ``{"cases": [{"id", "patient_id", "image", "labels", "height_m"}, ...]}``
with paths relative to the folder; ``kerasmuscle synth`` writes it, and a user can write one for
their own scans. Extra keys (``seg``, ``sex``, ...) are kept in :attr:`Case.meta`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasmuscle.errors import ReadError
from kerasmuscle.io import formats

REQUIRED = ("id", "patient_id", "image")


@dataclass(frozen=True)
class Case:
    """One labelled scan of a dataset.

    Args:
        id: unique case id.
        patient_id: the patient; cross-validation keeps a patient's cases in one fold.
        image: the scan (DICOM series folder, DICOM file, NIfTI or NPZ).
        labels: its label map (NIfTI, NPZ or DICOM SEG), or None.
        seg: the same labels as DICOM SEG, when the dataset has both.
        height_m: patient height in metres, when known.
        meta: every other key of the case's record.
    """

    id: str
    patient_id: str
    image: Path
    labels: Path | None = None
    seg: Path | None = None
    height_m: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_dataset(folder: str | os.PathLike) -> list[Case]:
    """Read ``folder/dataset.json`` and check that every case names existing files.

    Args:
        folder: the dataset folder (or the ``dataset.json`` file itself).

    Returns:
        The cases, in file order.

    Raises:
        ReadError: missing or malformed ``dataset.json``, duplicate ids, or a case whose files are missing.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / "dataset.json"
    root = path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReadError(path, "no such file (a dataset folder needs a dataset.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(path, f"not a readable dataset.json ({exc})") from None
    records = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ReadError(path, 'expected {"cases": [...]} at the top level')
    cases: list[Case] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ReadError(path, f"case {i} is not an object")
        missing = [k for k in REQUIRED if not rec.get(k)]
        if missing:
            raise ReadError(path, f"case {i} lacks {', '.join(missing)}")
        cid = str(rec["id"])
        if cid in seen:
            raise ReadError(path, f"case id {cid!r} appears twice")
        seen.add(cid)

        def resolve(key: str) -> Path | None:
            if not rec.get(key):
                return None
            p = Path(rec[key])
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise ReadError(path, f"case {cid!r}: {key} {rec[key]!r} does not exist")
            return p

        height = rec.get("height_m")
        cases.append(Case(
            id=cid,
            patient_id=str(rec["patient_id"]),
            image=resolve("image"),  # type: ignore[arg-type]
            labels=resolve("labels"),
            seg=resolve("seg"),
            height_m=float(height) if isinstance(height, (int, float)) and height > 0 else None,
            meta={k: v for k, v in rec.items() if k not in (*REQUIRED, "labels", "seg", "height_m")},
        ))
    return cases


#: File names of a one-case folder's scan and labels, from the format table (kerasmuscle.io.formats).
IMAGE_NAMES = formats.image_names()
LABEL_NAMES = formats.label_names()


def _read_cases_csv(path: Path) -> dict[str, dict[str, str]]:
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReadError(path, f"not a readable CSV ({exc})") from None
    if rows and "id" not in rows[0]:
        raise ReadError(path, f"needs an 'id' column; it has {', '.join(rows[0])}")
    return {row["id"]: row for row in rows}


def _dicom_patient_id(folder: Path) -> str | None:
    import pydicom

    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["PatientID"])
        except Exception:  # noqa: BLE001 - not DICOM: try the next file
            continue
        return str(ds.get("PatientID", "")) or None
    return None


def _case_folder(folder: Path) -> tuple[Path, Path] | None:
    """The image and labels of a one-case folder, or None when it holds no labelled image."""
    labels = next((folder / n for n in LABEL_NAMES if (folder / n).is_file()), None)
    if labels is None:
        return None
    image = next((folder / n for n in IMAGE_NAMES if (folder / n).is_file()), None)
    if image is None:
        # A DICOM series: the one sub-folder (or the folder itself, without the SEG file).
        subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if len(subs) == 1:
            image = subs[0]
        elif not subs:
            dicoms = [p for p in sorted(folder.iterdir()) if p.is_file() and p != labels and p.suffix != ".csv"]
            image = folder if dicoms else None
    return (image, labels) if image is not None else None


def discover_cases(folder: str | os.PathLike) -> list[Case]:
    """Find the labelled cases of a dataset folder, in any of the supported layouts.

    Layouts, tried in this order:

    1. ``dataset.json`` (what ``kerasmuscle synth`` writes; see :func:`load_dataset`).
    2. One sub-folder per case holding the image (``image.nii.gz``, ``image.npz`` or a DICOM series
       sub-folder) and its labels (``label.nii.gz``, ``label.npz`` or a DICOM SEG ``seg.dcm``).
    3. NIfTI pairs: ``images/`` and ``labels/`` (or nnU-Net's ``imagesTr/`` and ``labelsTr/``) with the
       same file names (an nnU-Net channel suffix ``_0000`` is ignored).

    An optional ``cases.csv`` (columns ``id`` and any of ``patient_id``, ``height_m``) adds patient ids and
    heights; without it a DICOM case takes its PatientID and any other case is its own patient.

    Args:
        folder: the dataset folder.

    Returns:
        The cases, sorted by id (dataset.json order for layout 1).

    Raises:
        ReadError: the folder does not exist or holds no labelled case in any layout.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ReadError(root, "no such folder" if not root.exists() else "expected a dataset folder")
    if (root / "dataset.json").is_file():
        return load_dataset(root)
    extra = _read_cases_csv(root / "cases.csv") if (root / "cases.csv").is_file() else {}
    found: list[tuple[str, Path, Path]] = []
    for images_name, labels_name in (("images", "labels"), ("imagesTr", "labelsTr")):
        images, labels = root / images_name, root / labels_name
        if images.is_dir() and labels.is_dir():
            by_stem = {formats.strip_suffix(p.name): p for p in labels.iterdir() if formats.is_volume_file(p)}
            for img in sorted(images.iterdir()):
                stem = formats.strip_suffix(img.name)
                stem = stem[:-5] if stem.endswith("_0000") and stem[:-5] in by_stem else stem
                if stem in by_stem:
                    found.append((stem, img, by_stem[stem]))
    if not found:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            pair = _case_folder(sub)
            if pair:
                found.append((sub.name, *pair))
    if not found:
        raise ReadError(root, "no labelled cases found: expected dataset.json, one folder per case with "
                              "image and label/seg.dcm, or images/ and labels/ NIfTI pairs")
    cases = []
    for cid, image, labels in found:
        row = extra.get(cid, {})
        patient = row.get("patient_id") or (_dicom_patient_id(image) if image.is_dir() else None) or cid
        try:
            height = float(row["height_m"]) if row.get("height_m") else None
        except ValueError:
            raise ReadError(root / "cases.csv", f"case {cid!r}: height_m {row['height_m']!r} is not a number") from None
        cases.append(Case(id=cid, patient_id=patient, image=image, labels=labels, height_m=height,
                          meta={k: v for k, v in row.items() if k not in ("id", "patient_id", "height_m")}))
    return cases


def read_case(case: Case):
    """Read a case's scan and its label map on the scan's grid, with label values as in
    :mod:`kerasmuscle.labels`.

    DICOM SEG segments are matched to labels by their segment label (``"Psoas"``, ``"psoas major"``, ...);
    a segment that names no known muscle is an error.

    Returns:
        ``(scan, labels)``: a :class:`~kerasmuscle.io.Scan` and a :class:`~kerasmuscle.io.LabelMap`.

    Raises:
        ReadError: unreadable files, labels that do not fit the scan, or no labels at all.
    """
    import numpy as np

    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.labels import NUM_CLASSES, label

    if case.labels is None:
        raise ReadError(case.image, f"case {case.id!r} has no labels")
    scan = read_scan(case.image)
    labels = read_labels(case.labels, like=scan)
    if labels.names:
        lut = np.zeros(256, np.uint8)
        for value, name in labels.names.items():
            try:
                lut[value] = label(name).id
            except KeyError:
                raise ReadError(case.labels, f"segment {value} {name!r} is not one of the muscle labels") from None
        labels.array = lut[labels.array]
    elif labels.array.max(initial=0) >= NUM_CLASSES:
        raise ReadError(case.labels, f"label values go up to {labels.array.max()}; expected 0..{NUM_CLASSES - 1}")
    if not len(labels.labelled_slices()):
        raise ReadError(case.labels, "holds no labelled slice")
    return scan, labels
