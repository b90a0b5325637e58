"""What a prediction is written as: one registry entry per output format.

Each :class:`OutputFormat` names its file, says whether it applies to DICOM inputs only and which optional
dependency (extra) it needs, describes itself in one line (the ``--format`` help is made from these lines),
and holds its writer. :func:`kerasmuscle.predict.batch.predict_batch` writes the chosen formats in
registry order. A new output (DICOM SR, say) is one more entry in :data:`FORMATS`.

Importing this module is cheap (standard library only); every writer imports what it needs when it runs.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasmuscle.errors import MissingExtraError

#: The per-case record: provenance, settings, measurements. Always written, as it marks a finished case.
CASE_FILE = "measurements.json"


@dataclass(frozen=True)
class CaseOutputs:
    """Everything a writer may use for one case.

    Args:
        name: the case name (its folder's name).
        prediction: the :class:`~kerasmuscle.predict.Prediction`.
        slice_rows: the measurements of every measured slice (:func:`~kerasmuscle.core.measure.measure_case`).
        case_row: the case's measurements.
        record: the JSON record of the case (see :func:`json_safe`).
    """

    name: str
    prediction: Any
    slice_rows: list[dict[str, Any]]
    case_row: dict[str, Any]
    record: dict[str, Any]


@dataclass(frozen=True)
class OutputFormat:
    """One output of ``kerasmuscle predict``.

    Args:
        name: the name used in ``--format``.
        filename: the file it writes in the case folder.
        description: one line for the ``--format`` help.
        write: ``write(path, case)`` writes the file.
        dicom_only: written for DICOM inputs only (others are left without it, silently).
        level_only: written only when the level finder chose the slices (``--slices auto`` on a volume).
        extra: the kerasmuscle extra (``pip install 'kerasmuscle[EXTRA]'``) that provides ``module``.
        module: the optional module the writer needs.
        default: part of the default set.
        always: written whatever the chosen formats (the case record).
    """

    name: str
    filename: str
    description: str
    write: Callable[[Path, CaseOutputs], None]
    dicom_only: bool = False
    level_only: bool = False
    extra: str | None = None
    module: str | None = None
    default: bool = True
    always: bool = False

    def installed(self) -> bool:
        """Whether the optional module is installed (without importing it)."""
        return self.module is None or importlib.util.find_spec(self.module) is not None

    def require(self) -> None:
        """Raises:
            MissingExtraError: the optional module is not installed (the message names the extra)."""
        if not self.installed():
            raise MissingExtraError(f"Writing {self.description}", self.extra or self.module, self.module)

    def applies_to(self, case: CaseOutputs) -> bool:
        """Whether this output is written for ``case``."""
        p = case.prediction
        if self.dicom_only and p.scan.dicom is None:
            return False
        level = getattr(p, "level", None)
        return not self.level_only or (level is not None and "user_choice" not in level.l3.flags)


# --------------------------------------------------------------------------------------------------
# writers


def _write_nifti(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.io.nifti import write_nifti

    write_nifti(path, case.prediction.labels, case.prediction.scan.affine)


def _write_npz(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.io.npz import write_npz

    scan = case.prediction.scan
    write_npz(path, spacing=scan.spacing, positions=scan.positions, orientation=scan.orientation,
              labels=case.prediction.labels)


def _write_seg(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.io.seg import write_seg

    p = case.prediction
    write_seg(path, p.labels, p.scan, series_description=f"kerasmuscle muscle {p.model.get('bundle', '')}"[:64],
              algorithm_name="kerasmuscle U-Net", omit_empty_frames=bool(p.labels.any()))


def _write_sr(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.io.sr import write_sr

    p = case.prediction
    level = (case.record.get("level") or {}).get("method")
    write_sr(path, p.scan, case.case_row, [int(i) for i in p.slices], seg_path=path.parent / OUTPUTS["seg"].filename,
             level_method=level, model_name=str(p.model.get("bundle", "kerasmuscle")))


def _write_png(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.report.overlay import qc_picture
    from kerasmuscle.report import save_png

    save_png(path, qc_picture(case.prediction, case.slice_rows), fast=True)


def _write_level_png(path: Path, case: CaseOutputs) -> None:
    import numpy as np

    from kerasmuscle.report import save_png
    from kerasmuscle.report.levels import level_picture
    from kerasmuscle.report.overlay import body_tiles

    p = case.prediction
    middle = p.level.l3.middle
    z = middle if middle in set(int(i) for i in p.slices) else int(p.slices[len(p.slices) // 2])
    _, coloured, _ = body_tiles(p.scan.hu[z], np.asarray(p.labels[z]), alpha=0.45)
    save_png(path, level_picture(p.scan, p.level, [int(i) for i in p.slices], coloured), fast=True)


def slice_lines(case: str, rows: Iterable[dict[str, Any]], *extra: object) -> Iterator[list[object]]:
    """Lines of a slices table: the case, every measurement column of a slice row, then ``extra``."""
    from kerasmuscle.core.measure import columns

    cols = columns(per_slice=True)
    for r in rows:
        yield [case, *(r.get(c) for c in cols), *extra]


def slices_header(*extra: str) -> list[str]:
    """The header of a slices table (see :func:`slice_lines`)."""
    from kerasmuscle.core.measure import columns

    return ["case", *columns(per_slice=True), *extra]


def _write_csv(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.fileutil import atomic_write_text
    from kerasmuscle.report.tables import csv_text

    atomic_write_text(path, csv_text(slices_header(), slice_lines(case.name, case.slice_rows)))


def _write_json(path: Path, case: CaseOutputs) -> None:
    from kerasmuscle.fileutil import write_json

    write_json(path, case.record)


#: The registry, in writing order (the record last).
FORMATS: tuple[OutputFormat, ...] = (
    OutputFormat("nifti", "labels.nii.gz", "the label map as NIfTI, on the input's grid", _write_nifti),
    OutputFormat("npz", "labels.npz", "the label map as NPZ with its geometry", _write_npz, default=False),
    OutputFormat("seg", "seg.dcm", "a DICOM SEG that references the source images (DICOM inputs)", _write_seg,
                 dicom_only=True, extra="dicom", module="highdicom"),
    OutputFormat("sr", "sr.dcm", "a DICOM SR (TID 1500 Measurement Report) of the measurements, referencing the "
                 "images and the SEG (DICOM inputs)", _write_sr, dicom_only=True, extra="dicom", module="highdicom"),
    OutputFormat("png", "overlay.png", "an overlay of the slices with most muscle, for quality control",
                 _write_png),
    OutputFormat("level", "level.png", "the level picture: sagittal and coronal reformats with every vertebra "
                 "named and the measured slices marked, beside the axial overlay (--slices auto)", _write_level_png,
                 level_only=True),
    OutputFormat("csv", "slices.csv", "the measurements of every measured slice", _write_csv),
    OutputFormat("json", CASE_FILE, "provenance, settings and measurements (always written)", _write_json,
                 always=True),
)
OUTPUTS: dict[str, OutputFormat] = {f.name: f for f in FORMATS}
#: Every output name, and those written when none are chosen.
OUTPUT_FORMATS: tuple[str, ...] = tuple(OUTPUTS)
DEFAULT_FORMATS: tuple[str, ...] = tuple(f.name for f in FORMATS if f.default)


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Read ``--format`` text (comma-separated names) or a list of names; None stays None (the defaults).

    Raises:
        ValueError: an unknown name, or none.
    """
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(i).strip().lower() for i in items if str(i).strip()]
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise ValueError(f"format {bad[0] if bad else text!r}: formats are {', '.join(OUTPUT_FORMATS)}")
    return tuple(dict.fromkeys(names))


def choose_formats(names: Sequence[str] | None) -> tuple[str, ...]:
    """The formats a batch writes, in registry order: those named (their extras must be installed), or the
    defaults whose extras are installed; the ``always`` formats in either case.

    Raises:
        ValueError: an unknown name.
        MissingExtraError: a named format needs an extra that is not installed.
    """
    if names is None:
        chosen = {f.name for f in FORMATS if f.default and f.installed()}
    else:
        chosen = set(parse_formats(names) or ())
        for name in chosen:
            OUTPUTS[name].require()  # asked for explicitly: fail now rather than on every case
    return tuple(f.name for f in FORMATS if f.name in chosen or f.always)


def format_help() -> str:
    """The ``--format`` help, made from the registry."""
    entries = "; ".join(f"{f.name} ({f.filename}): {f.description}" for f in FORMATS)
    return f"Comma-separated outputs [default: {','.join(DEFAULT_FORMATS)}]. {entries}."


def write_outputs(folder: Path, case: CaseOutputs, formats: Sequence[str]) -> list[str]:
    """Write ``case``'s chosen outputs into ``folder`` in registry order; returns the names written."""
    written = []
    for fmt in FORMATS:
        if (fmt.name in formats or fmt.always) and fmt.applies_to(case):
            fmt.write(folder / fmt.filename, case)
            written.append(fmt.name)
    return written


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON values: tuples as lists, numpy numbers as Python ones, floats rounded to six
    decimal places (the CSV tables' precision), NaN as None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


__all__ = ["CASE_FILE", "DEFAULT_FORMATS", "FORMATS", "OUTPUTS", "OUTPUT_FORMATS", "CaseOutputs", "OutputFormat",
           "choose_formats", "format_help", "json_safe", "parse_formats", "slice_lines", "slices_header",
           "write_outputs"]
