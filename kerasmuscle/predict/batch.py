"""Predict many scans in one run: outputs per case, summary tables, resume, shards, bad inputs skipped.

Every input gets a folder ``OUT/<case>/`` that is built under a temporary name and renamed into place when
all of its files are written, so a finished case is exactly a folder without the ``.tmp-`` prefix. Running
the same command again skips finished cases (unless ``overwrite``), so a killed batch resumes where it
stopped. After the batch, ``OUT/measurements.csv`` (one row per case) and ``OUT/slices.csv`` (one row per
measured slice) are rebuilt from every finished case in ``OUT``. numpy + ONNX Runtime only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.errors import KerasMuscleError, MissingExtraError, ReadError
from kerasmuscle.core.slices import SliceSelection
from kerasmuscle.fileutil import atomic_path, atomic_write_text, versions

#: Output formats: label map as NIfTI or NPZ, DICOM SEG, PNG overlay, CSV and JSON measurements.
OUTPUT_FORMATS = ("nifti", "npz", "seg", "png", "csv", "json")
DEFAULT_FORMATS = ("nifti", "seg", "png", "csv", "json")
CASE_FILE = "measurements.json"

Progress = Callable[[str, str], None]


@dataclass
class BatchResult:
    """What a batch did: finished, skipped (finished earlier) and failed inputs with their errors, and for
    each finished case its seconds: ``total`` (read, predict, measure, write) and the parts of it."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# options


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``i/n`` (1 <= i <= n): this process takes every n-th input starting at the i-th."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"shard {text!r}: write i/n with 1 <= i <= n, for example 2/4")
    return int(m.group(1)), int(m.group(2))


def parse_formats(text: str | Sequence[str] | None) -> list[str]:
    """Parse a comma-separated format list (default: :data:`DEFAULT_FORMATS`)."""
    if text is None:
        return list(DEFAULT_FORMATS)
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [i.strip().lower() for i in items if i.strip()]
    bad = [f for f in out if f not in OUTPUT_FORMATS]
    if bad or not out:
        raise ValueError(f"format {bad[0] if bad else text!r}: formats are {', '.join(OUTPUT_FORMATS)}")
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# naming and safety


#: Folder names that say what a folder holds rather than whose it is; such an input is named after its parent.
GENERIC_NAMES = {"dicom", "dcm", "series", "ct", "image", "images", "scan", "scans", "data"}


def case_name(path: str | os.PathLike) -> str:
    """A folder name for an input: its file or folder name without .nii.gz/.nii/.npz/.dcm; a folder called
    ``dicom``, ``series``, ``ct``, ... is named after its parent (``case_0005/dicom`` -> ``case_0005``)."""
    full = Path(os.path.abspath(path))
    name = full.name
    if name.lower() in GENERIC_NAMES and full.parent.name:
        name = full.parent.name
    for suffix in (".nii.gz", ".nii", ".npz", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"
    return name


def case_names(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Unique folder names for the inputs: the name, then the parent folder's name prefixed where two clash,
    then a number."""
    names = [case_name(p) for p in inputs]
    clashes = {n for n in names if names.count(n) > 1}
    names = [f"{Path(os.path.abspath(p)).parent.name}_{n}" if n in clashes else n for p, n in zip(inputs, names)]
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", n).strip("._") or "case" for n in names]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def check_output_folder(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output folder inside an input folder (or the folder of a DICOM file input), where a
    DICOM SEG or label file would end up mixed with the source images.

    Raises:
        KerasMuscleError: naming the input folder.
    """
    target = Path(os.path.realpath(out))
    for p in inputs:
        p = Path(os.path.realpath(p))
        if p.is_dir():
            guard = p
        elif p.is_file() and not p.name.lower().endswith((".nii", ".nii.gz", ".npz")):
            guard = p.parent  # a DICOM file: its folder holds the rest of the series
        else:
            continue
        if guard is not None and (target == guard or guard in target.parents):
            raise KerasMuscleError(f"{out}: lies inside the input folder {guard}; choose an output folder outside "
                                   "the inputs (kerasmuscle never writes into input folders)")


# --------------------------------------------------------------------------------------------------
# one case


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if np.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        return " ".join(str(_fmt(v)) for v in value)
    return "" if value is None else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), 6)
    return value


def case_record(name: str, source: str, prediction, case_row: dict[str, Any], slice_rows: list[dict[str, Any]],
                height: tuple[float | None, str], predictor) -> dict[str, Any]:
    """The JSON record of one case: provenance, settings, the case measurements and every slice's."""
    scan = prediction.scan
    info = scan.dicom
    return _json_safe({
        "case": name,
        "input": os.path.abspath(source),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": prediction.model,
        "hu_window": list(predictor.preprocess.hu_window),
        "hu_range": list(prediction.hu_range) if prediction.hu_range else None,
        "height_m": height[0],
        "height_source": height[1],
        "scan": {"shape": list(scan.shape), "spacing_mm": list(scan.spacing), "format": scan.format,
                 "series_uid": info.series_uid if info else None, "study_uid": info.study_uid if info else None,
                 "patient_id": info.tags.get("patient_id") if info else None, "warnings": list(scan.warnings)},
        "slice_indices": [int(i) for i in prediction.slices],
        "slice_locations_mm": scan.slice_locations[prediction.slices].tolist(),
        "measurements": case_row,
        "slices": slice_rows,
        "versions": versions("onnxruntime"),
    })


def qc_picture(prediction, slice_rows: list[dict[str, Any]], max_tiles: int = 6) -> np.ndarray:
    """Contact sheet: for up to ``max_tiles`` measured slices (those with most muscle), the CT in a soft-tissue
    window and the same slice with the labels in the paper's colours and the left-right midline in white."""
    from kerasmuscle.report import contact_sheet, overlay, window

    rows = sorted(slice_rows, key=lambda r: -(r.get("sma_cm2") or 0.0))[:max_tiles]
    rows = sorted(rows, key=lambda r: r["slice_index"])
    tiles, titles = [], []
    for r in rows:
        z = int(r["slice_index"])
        grey = window(prediction.scan.hu[z])
        coloured = overlay(grey, prediction.labels[z], alpha=0.45)
        col = int(round(r["midline_col"]))
        if 0 <= col < coloured.shape[1]:
            coloured[::3, col] = 255
        tiles += [overlay(grey), coloured]
        titles += [f"slice {z}", f"SMA {r['sma_cm2']:.1f} cm2"]
    return contact_sheet(tiles, columns=2, titles=titles, tile_size=384)


def write_case(folder: Path, name: str, source: str, prediction, predictor, formats: Sequence[str],
               height: tuple[float | None, str]) -> dict[str, Any]:
    """Measure one prediction and write its outputs into ``folder`` (which must be new and empty)."""
    from kerasmuscle.core.measure import columns, measure_case

    scan = prediction.scan
    slice_rows, case_row = measure_case(scan, prediction.labels, [int(i) for i in prediction.slices],
                                        height_m=height[0])
    record = case_record(name, source, prediction, case_row, slice_rows, height, predictor)
    folder.mkdir(parents=True)
    if "nifti" in formats:
        from kerasmuscle.io.nifti import write_nifti

        write_nifti(folder / "labels.nii.gz", prediction.labels, scan.affine)
    if "npz" in formats:
        from kerasmuscle.io.npz import write_npz

        write_npz(folder / "labels.npz", spacing=scan.spacing, positions=scan.positions,
                  orientation=scan.orientation, labels=prediction.labels)
    if "seg" in formats and scan.dicom is not None:
        from kerasmuscle.io.seg import write_seg

        model = prediction.model
        write_seg(folder / "seg.dcm", prediction.labels, scan,
                  series_description=f"kerasmuscle muscle {model.get('bundle', '')}"[:64],
                  algorithm_name="kerasmuscle U-Net", omit_empty_frames=bool(prediction.labels.any()))
    if "png" in formats:
        from kerasmuscle.report import save_png

        save_png(folder / "overlay.png", qc_picture(prediction, slice_rows), fast=True)
    if "csv" in formats:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = columns(per_slice=True)
        writer.writerow(["case", *cols])
        for r in slice_rows:
            writer.writerow([name, *(_fmt(r[c]) for c in cols)])
        (folder / "slices.csv").write_text(buf.getvalue(), encoding="utf-8")
    # Always written: it marks what the case was made with, and the summary tables are built from it.
    (folder / CASE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


# --------------------------------------------------------------------------------------------------
# the batch


SUMMARY_EXTRA = ("case", "input", "bundle", "model_sha256", "backend", "precision", "hu_window", "hu_range",
                 "height_source", "slice_locations_mm", "series_uid", "kerasmuscle", "onnxruntime")


def write_summaries(out: Path) -> int:
    """Rebuild ``measurements.csv`` and ``slices.csv`` in ``out`` from every finished case; returns the count."""
    from kerasmuscle.core.measure import columns

    records = []
    for path in sorted(out.glob(f"*/{CASE_FILE}")):
        if path.parent.name.startswith(".tmp-"):
            continue
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    case_cols = columns(per_slice=False)
    slice_cols = columns(per_slice=True)
    cases = io.StringIO()
    w = csv.writer(cases, lineterminator="\n")
    w.writerow(["case", *case_cols, *SUMMARY_EXTRA[1:]])
    slices = io.StringIO()
    ws = csv.writer(slices, lineterminator="\n")
    ws.writerow(["case", *slice_cols, "model_sha256"])
    for rec in records:
        m, model = rec["measurements"], rec["model"]
        extra = {"input": rec["input"], "bundle": model.get("bundle"), "model_sha256": model.get("model_sha256"),
                 "backend": model.get("backend"), "precision": model.get("precision"),
                 "hu_window": rec.get("hu_window"), "hu_range": rec.get("hu_range"),
                 "height_source": rec.get("height_source"), "slice_locations_mm": rec.get("slice_locations_mm"),
                 "series_uid": rec["scan"].get("series_uid"), "kerasmuscle": rec["versions"].get("kerasmuscle"),
                 "onnxruntime": rec["versions"].get("onnxruntime")}
        w.writerow([rec["case"], *(_fmt(m.get(c)) for c in case_cols), *(_fmt(extra[c]) for c in SUMMARY_EXTRA[1:])])
        for r in rec["slices"]:
            ws.writerow([rec["case"], *(_fmt(r.get(c)) for c in slice_cols), model.get("model_sha256")])
    atomic_write_text(out / "measurements.csv", cases.getvalue())
    atomic_write_text(out / "slices.csv", slices.getvalue())
    return len(records)


def predict_batch(inputs: Sequence[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike, *,
                  slices: str | None = None, height: float | None = None, heights: str | os.PathLike | None = None,
                  formats: str | Sequence[str] | None = None, shard: str | None = None, overwrite: bool = False,
                  backend: str = "onnx", precision: str = "float32", threads: int | None = None,
                  hu_range: tuple[float, float] | None = None, postprocess: bool = True,
                  progress: Progress | None = None) -> BatchResult:
    """Segment and measure many scans with one bundle.

    Args:
        inputs: scans: DICOM series folders, DICOM files, NIfTI or NPZ files.
        model: the bundle folder.
        out: the output folder (never inside an input folder).
        slices: which slices: a :class:`~kerasmuscle.core.slices.SliceSelection` or its text (default: all).
        height: the patient height in metres for every input (for the skeletal muscle index).
        heights: a CSV of heights per case (see :func:`kerasmuscle.core.measure.read_heights`); looked up by case
            name, input name and DICOM PatientID. DICOM PatientSize is used when neither gives one.
        formats: outputs, from :data:`OUTPUT_FORMATS` (default :data:`DEFAULT_FORMATS`; ``seg`` applies to
            DICOM inputs only).
        shard: ``i/n``: process only every n-th input starting at the i-th (for parallel processes).
        overwrite: redo cases that are finished already.
        backend, precision, threads: for :meth:`~kerasmuscle.predict.Predictor.from_bundle`.
        hu_range: the post-processing HU range instead of the bundle's; ``postprocess=False`` turns it off.
        progress: called with ``(case, status)`` after every input (status ``done``, ``skipped`` or the error).

    Returns:
        The :class:`BatchResult`. Errors in single inputs are collected there, not raised.

    Raises:
        BundleError: the bundle cannot be used (missing, altered).
        KerasMuscleError / ValueError: bad options, or ``out`` inside an input folder.
    """
    from kerasmuscle.core.measure import check_height, read_heights, resolve_height
    from kerasmuscle.predict.predictor import Predictor

    selection = slices if isinstance(slices, SliceSelection) else SliceSelection.parse(slices)
    chosen_formats = parse_formats(formats)
    part = parse_shard(shard)
    if height is not None:
        check_height(height)
    table = read_heights(heights) if heights else None
    out = Path(out)
    check_output_folder(out, inputs)
    if "seg" in chosen_formats and formats is not None:
        from kerasmuscle.io.seg import _highdicom

        _highdicom()  # asked for explicitly: fail now rather than on every case
    elif "seg" in chosen_formats:
        try:
            import highdicom  # noqa: F401
        except ImportError:
            chosen_formats.remove("seg")
    predictor = Predictor.from_bundle(model, backend, precision=precision, threads=threads, hu_range=hu_range)
    names = case_names(inputs)
    items = list(zip(inputs, names))
    if part is not None:
        i, n = part
        items = items[i - 1::n]
    out.mkdir(parents=True, exist_ok=True)
    result = BatchResult()
    for source, name in items:
        folder = out / name
        if folder.exists() and not overwrite:
            result.skipped.append(name)
            if progress:
                progress(name, "skipped")
            continue
        started = time.perf_counter()
        try:
            prediction = predictor.predict(source, selection, postprocess=postprocess)
            keys = [name, case_name(source)]
            if prediction.scan.dicom is not None and prediction.scan.dicom.tags.get("patient_id"):
                keys.append(prediction.scan.dicom.tags["patient_id"])
            resolved = resolve_height(height, table, keys, prediction.scan)
            with atomic_path(folder, overwrite=True) as tmp:
                write_case(tmp, name, os.fspath(source), prediction, predictor, chosen_formats, resolved)
        except (KerasMuscleError, ValueError, MissingExtraError, OSError) as exc:
            message = str(exc)
            if not (isinstance(exc, ReadError) or message.startswith(os.fspath(source))):
                message = f"{source}: {message}"
            result.failed.append((os.fspath(source), message))
            if progress:
                progress(name, message)
            continue
        result.done.append(name)
        result.timings.append({"total": time.perf_counter() - started, **prediction.seconds})
        if progress:
            progress(name, "done")
    write_summaries(out)
    return result


__all__ = ["BatchResult", "OUTPUT_FORMATS", "case_names", "parse_formats", "parse_shard",
           "predict_batch", "write_case", "write_summaries"]
