"""Predict many scans in one run: outputs per case, summary tables, resume, shards, bad inputs skipped.

Every input gets a folder ``OUT/<case>/`` that is built under a temporary name and renamed into place when
all of its files are written, so a finished case is exactly a folder without the ``.tmp-`` prefix. Its
``measurements.json`` records the settings that made it (:func:`case_settings`: input, model checksum,
backend, precision, slices, heights, HU range, formats). Running the same command again skips a finished
case only when those settings are the same; a case finished with other settings is refused, in one line
that says what differs, unless ``overwrite`` redoes it. So a killed batch resumes where it stopped and a
result always names the model and settings that made it. After the batch, ``OUT/measurements.csv`` (one row
per case) and ``OUT/slices.csv`` (one row per measured slice) are rebuilt from every finished case in ``OUT``,
under a lock (``OUT/.kerasmuscle.lock``), so ``--shard`` processes that share ``OUT`` never interleave their
tables: each one leaves the tables of every case finished when it ends, and the last to end leaves them
complete. An output that cannot be written (no space, read-only, a file where a folder should be) is a
:class:`~kerasmuscle.errors.WriteError` naming the path; a full or read-only file system stops the batch, as
no later case could be written either; what was finished before stays.
The outputs themselves are the registry of :mod:`kerasmuscle.predict.outputs`. numpy + ONNX Runtime only.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasmuscle.config import Config
from kerasmuscle.core.slices import NoL3Error, SliceError, SliceSelection
from kerasmuscle.errors import KerasMuscleError, MissingExtraError, ReadError, WriteError
from kerasmuscle.fileutil import (FATAL_WRITE_ERRNOS, atomic_path, atomic_write_text, check_creatable, exclusive_lock,
                                 read_json, remove_stale_temporaries, versions, writable_folder)
from kerasmuscle.predict.outputs import (CASE_FILE, DEFAULT_FORMATS, OUTPUT_FORMATS, CaseOutputs, choose_formats,
                                         json_safe, parse_formats, slice_lines, slices_header, write_outputs)


@dataclass(frozen=True)
class CaseEvent:
    """What :func:`predict_batch` tells its ``progress`` callback after each input.

    Args:
        case: the case name.
        status: ``"done"``, ``"skipped"`` (finished earlier with the same settings), ``"refused"`` (finished
            earlier with other settings), ``"no_l3"`` (``--slices auto`` and L3 is not in the scan: not
            measured) or ``"failed"``.
        message: for ``refused``, ``no_l3`` and ``failed`` the reason; for ``done`` a note (a height not found), or "".
        number, total: this input's place in the batch (1-based) and the batch's size.
    """

    case: str
    status: str
    message: str
    number: int
    total: int


Progress = Callable[[CaseEvent], None]


@dataclass
class BatchResult:
    """What a batch did.

    Args:
        done, skipped: cases finished now, and finished earlier with the same settings.
        refused: ``(input, message)`` of cases finished earlier with other settings (not redone).
        failed: ``(input, message)`` of inputs that could not be predicted.
        no_l3: ``(input, message)`` of volumes not measured because L3 is not in them (``auto`` slices); the
            message says what the level finder found and why L3 was not.
        timings: for each case done, its seconds: ``total`` (read, predict, measure, write) and the parts.
        notes: ``(case, note)``, such as a case that no row of the heights table matches.
        no_height: cases done without a height although a heights table was given (SMI empty).
        review: ``(case, reasons)`` of the cases done in this call that the anatomy review marks "needs review".
        repeated: inputs given more than once (each is predicted once).
        tables: the summary tables written (none when no case is finished).
    """

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_l3: list[tuple[str, str]] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    no_height: list[str] = field(default_factory=list)
    review: list[tuple[str, str]] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


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


@dataclass(frozen=True)
class PredictConfig(Config):
    """How :func:`kerasmuscle.predict.predict_batch` segments and measures (``kerasmuscle predict``'s options,
    as typed values).

    Args:
        slices: a :class:`~kerasmuscle.core.slices.SliceSelection` (None: ``auto``, the slices at mid-L3 that
            the level finder chooses; a stack of at most three slices is taken as it is).
        height: the patient height in metres for every input (for the skeletal muscle index).
        heights: a CSV of heights per case (see :func:`kerasmuscle.core.measure.read_heights`).
        formats: output names from :data:`kerasmuscle.predict.outputs.OUTPUT_FORMATS` (None: the defaults).
        shard: ``(i, n)``: only every n-th input starting at the i-th (1-based), for parallel processes.
        overwrite: redo cases that are finished already.
        backend, precision, threads, low_memory: for :meth:`~kerasmuscle.predict.Predictor.from_bundle`
            (``low_memory``: less memory in float32, about 50 % more time; the results are the same).
        hu_range: the post-processing HU range instead of the bundle's.
        postprocess: False keeps predicted muscle outside the HU range.
        cutoffs: a definition of :mod:`kerasmuscle.core.cutoffs` (``prado2008``, ``martin2013``) to classify
            sarcopenia and myosteatosis with; None: no classes.
    """

    slices: SliceSelection | None = None
    height: float | None = None
    heights: str | None = None
    formats: tuple[str, ...] | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    backend: str = "onnx"
    precision: str = "float32"
    threads: int | None = None
    low_memory: bool = False
    hu_range: tuple[float, float] | None = None
    postprocess: bool = True
    cutoffs: str | None = None

    def __post_init__(self) -> None:
        if self.cutoffs is not None:
            from kerasmuscle.core.cutoffs import definitions

            if self.cutoffs not in definitions():
                raise ValueError(f"unknown cut-off definition {self.cutoffs!r}: known are {', '.join(definitions())}")
        if self.heights is not None:
            object.__setattr__(self, "heights", os.fspath(self.heights))
        if isinstance(self.formats, str):
            raise ValueError("formats must be a tuple of names, such as ('nifti', 'csv')")
        if self.formats is not None:
            object.__setattr__(self, "formats", tuple(self.formats))
        if self.shard is not None:
            i, n = self.shard
            if not 1 <= i <= n:
                raise ValueError(f"shard {i}/{n}: write i/n with 1 <= i <= n, for example 2/4")
            object.__setattr__(self, "shard", (int(i), int(n)))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.hu_range is not None:
            if len(self.hu_range) != 2 or self.hu_range[0] >= self.hu_range[1]:
                raise ValueError(f"hu_range must be (low, high) with low < high, got {self.hu_range}")
            object.__setattr__(self, "hu_range", (float(self.hu_range[0]), float(self.hu_range[1])))


def _selection(value: SliceSelection | None) -> SliceSelection:
    """``PredictConfig.slices`` as a SliceSelection (None: ``auto``)."""
    if value is None:
        return SliceSelection("auto")
    if isinstance(value, SliceSelection):
        return value
    raise SliceError(f"slices {value!r}: give a SliceSelection, for example SliceSelection.parse('43-45')")


# --------------------------------------------------------------------------------------------------
# naming and safety


#: Folder names that say what a folder holds rather than whose it is; such an input is named after its parent.
GENERIC_NAMES = {"dicom", "dcm", "series", "ct", "image", "images", "scan", "scans", "data"}


def case_name(path: str | os.PathLike) -> str:
    """A folder name for an input: its file or folder name without its format's suffix (.nii.gz, .nii, .npz,
    .dcm: :func:`kerasmuscle.io.formats.strip_suffix`); a folder called
    ``dicom``, ``series``, ``ct``, ... is named after its parent (``case_0005/dicom`` -> ``case_0005``)."""
    from kerasmuscle.io import formats

    full = Path(os.path.abspath(path))
    name = full.name
    if name.lower() in GENERIC_NAMES and full.parent.name:
        name = full.parent.name
    name = formats.strip_suffix(name)
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


def select_inputs(inputs: Sequence[str | os.PathLike], shard: tuple[int, int] | None = None
                  ) -> tuple[list[tuple[str, str]], list[str]]:
    """The inputs a batch predicts, each once, with their case names, and those given more than once.

    An input given twice (the same file or folder by its real path) is predicted once; names are made after
    that (:func:`case_names`), then ``shard`` ``(i, n)`` keeps every n-th input starting at the i-th.

    Returns:
        ``([(input, case name), ...], [input given more than once, ...])``.
    """
    first: dict[str, str] = {}
    repeated: list[str] = []
    for p in inputs:
        key = os.path.realpath(p)
        if key in first:
            if first[key] not in repeated:
                repeated.append(first[key])
            continue
        first[key] = os.fspath(p)
    unique = list(first.values())
    items = list(zip(unique, case_names(unique)))
    if shard is not None:
        i, n = shard
        items = items[i - 1::n]
    return items, repeated


def check_output_folder(out: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an output folder inside an input folder (or the folder of a DICOM file input), where a
    DICOM SEG or label file would end up mixed with the source images.

    Raises:
        KerasMuscleError: naming the input folder.
    """
    from kerasmuscle.io import formats

    target = Path(os.path.realpath(out))
    for p in inputs:
        p = Path(os.path.realpath(p))
        if p.is_dir():
            guard = p
        elif p.is_file() and not formats.is_volume_file(p):
            guard = p.parent  # a DICOM file: its folder holds the rest of the series
        else:
            continue
        if guard is not None and (target == guard or guard in target.parents):
            raise KerasMuscleError(f"{out}: lies inside the input folder {guard}; choose an output folder outside "
                                   "the inputs (kerasmuscle never writes into input folders)")


# --------------------------------------------------------------------------------------------------
# one case


def case_settings(source: str, predictor, config: PredictConfig, formats: Sequence[str],
                  heights_sha256: str | None) -> dict[str, Any]:
    """What makes a finished case the same result: the input (real path), the model's checksum, backend and
    precision, the slice selection, the height option and heights table (by checksum), the post-processing
    HU range (None when off) and the outputs. Recorded in ``measurements.json``; a rerun skips a case only
    when they are equal."""
    return json_safe({
        "input": os.path.realpath(source), "model_sha256": predictor.model_sha256, "backend": predictor.backend,
        "precision": predictor.precision, "slices": _selection(config.slices).text(), "height_m": config.height,
        "heights_sha256": heights_sha256,
        "hu_range": list(predictor.hu_range) if config.postprocess and predictor.hu_range is not None else None,
        "formats": list(formats), "cutoffs": config.cutoffs,
    })


def _runs(text: str) -> str:
    """``43,44,45,50`` as ``43-45,50``; any other selection text as it is."""
    if not re.fullmatch(r"\d+(,\d+)*", text):
        return text
    values, parts = [int(v) for v in text.split(",")], []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ",".join(parts)


#: How each setting reads in a refusal.
_SHOW: dict[str, Callable[[Any], str]] = {
    "input": lambda v: f"input {v}",
    "model_sha256": lambda v: f"model {str(v)[:12]}",
    "backend": lambda v: f"backend {v}",
    "precision": lambda v: f"precision {v}",
    "slices": lambda v: f"slices {_runs(str(v))}",
    "height_m": lambda v: "no height" if v is None else f"height {v:g} m",
    "heights_sha256": lambda v: "no heights table" if v is None else f"heights table {str(v)[:8]}",
    "hu_range": lambda v: "no post-processing" if v is None else f"HU range {v[0]:g}..{v[1]:g}",
    "formats": lambda v: "formats " + ",".join(v),
    "cutoffs": lambda v: "no cut-offs" if v is None else f"cut-offs {v}",
}


def settings_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str | None:
    """None when a case finished with settings ``old`` is the result ``new`` asks for; else one line saying
    what differs (``finished earlier with slices 43-45, precision float32; now slices 50-52, ...``)."""
    if not isinstance(old, dict):
        return "finished earlier without a record of its settings (an older kerasmuscle, or not a case folder)"
    keys = [k for k in new if old.get(k) != new[k]]
    if not keys:
        return None
    show = lambda d: ", ".join(_SHOW.get(k, lambda v, k=k: f"{k} {v}")(d.get(k)) for k in keys)  # noqa: E731
    return f"finished earlier with {show(old)}; now {show(new)}"


def case_record(name: str, source: str, prediction, case_row: dict[str, Any], slice_rows: list[dict[str, Any]],
                height: tuple[float | None, str], predictor, settings: dict[str, Any],
                notes: Sequence[str] = (), review=None, cutoffs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON record of one case: provenance, settings, the case measurements and every slice's, and the
    anatomy review (:func:`kerasmuscle.core.review.review_case`)."""
    scan = prediction.scan
    info = scan.dicom
    return json_safe({
        "case": name,
        "input": os.path.abspath(source),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": prediction.model,
        "settings": settings,
        "hu_window": list(predictor.preprocess.hu_window) if predictor.preprocess is not None else None,
        "hu_range": list(prediction.hu_range) if prediction.hu_range else None,
        "height_m": height[0],
        "height_source": height[1],
        "notes": list(notes),
        "scan": {"shape": list(scan.shape), "spacing_mm": list(scan.spacing), "format": scan.format,
                 "series_uid": info.series_uid if info else None, "study_uid": info.study_uid if info else None,
                 "patient_id": info.tags.get("patient_id") if info else None, "warnings": list(scan.warnings)},
        "level": prediction.choice.to_dict() if prediction.choice is not None else None,
        "slice_indices": [int(i) for i in prediction.slices],
        "slice_locations_mm": scan.slice_locations[prediction.slices].tolist(),
        "measurements": case_row,
        "cutoffs": cutoffs,
        "review": review.to_dict() if review is not None else None,
        "slices": slice_rows,
        "versions": versions("onnxruntime"),
    })


def write_case(folder: Path, case: CaseOutputs, formats: Sequence[str]) -> list[str]:
    """Write one measured case's outputs into ``folder`` (which must be new); returns the formats written."""
    folder.mkdir(parents=True)
    return write_outputs(folder, case, formats)


# --------------------------------------------------------------------------------------------------
# the batch


#: The first columns of ``measurements.csv`` (before the measurements) and the ones after them.
SUMMARY_LEAD = ("case", "needs_review", "review_reasons", "level_method", "level_z_mm", "level_confidence",
                "level_flags")
#: The cut-off columns, after the lead (empty when no ``--cutoffs`` was given).
SUMMARY_CUTOFFS = ("cutoffs", "sex", "bmi", "sarcopenia", "sarcopenia_rule", "myosteatosis", "myosteatosis_rule")
SUMMARY_EXTRA = ("input", "bundle", "model_sha256", "backend", "precision", "hu_window", "hu_range",
                 "height_source", "slice_locations_mm", "series_uid", "kerasmuscle", "onnxruntime")


def finished_records(out: Path) -> list[dict[str, Any]]:
    """The records of every finished case in ``out``, by case name (unreadable ones left out)."""
    records = []
    for path in sorted(out.glob(f"*/{CASE_FILE}")):
        if path.parent.name.startswith(".tmp-"):
            continue
        try:
            record = read_json(path)
        except KerasMuscleError:
            continue
        if isinstance(record, dict) and "measurements" in record:
            records.append(record)
    return records


def level_columns(record: dict[str, Any]) -> dict[str, Any]:
    """A case record's level in ``measurements.csv`` (the measured slices are the ``slice_indices`` column): how
    the slices were chosen (``auto``, ``user``, ``all``), mid-L3 in mm, the finder's confidence and flags
    (``;``-separated)."""
    level = record.get("level") or {}
    l3 = level.get("l3") or {}
    return {"level_method": level.get("method"), "level_z_mm": l3.get("z_mm"),
            "level_confidence": l3.get("confidence"), "level_flags": ";".join(l3.get("flags") or [])}


#: The lock file in an output folder that the processes sharing it take to rebuild its tables.
LOCK_FILE = ".kerasmuscle.lock"


def write_summaries(out: Path) -> list[Path]:
    """Rebuild ``measurements.csv`` and ``slices.csv`` in ``out`` from every finished case; returns the tables
    written (none, and nothing written, when no case is finished).

    The cases are read and the tables written while holding ``out``'s lock (:data:`LOCK_FILE`): processes that
    share ``out`` (``--shard``) rebuild one after the other, each from every case finished by then, so the
    tables left by the last one hold every case."""
    with exclusive_lock(Path(out) / LOCK_FILE):
        return _write_summaries(Path(out))


def _write_summaries(out: Path) -> list[Path]:
    from kerasmuscle.core.measure import columns
    from kerasmuscle.report.tables import csv_text

    records = finished_records(out)
    if not records:
        return []
    case_cols = columns(per_slice=False)
    cases, slices = [], []
    for rec in records:
        m, model = rec["measurements"], rec["model"]
        review = rec.get("review") or {}
        extra = {**level_columns(rec),
                 "needs_review": review.get("needs_review"),
                 "review_reasons": "; ".join(f["message"] for f in review.get("flags", [])),
                 "input": rec["input"], "bundle": model.get("bundle"), "model_sha256": model.get("model_sha256"),
                 "backend": model.get("backend"), "precision": model.get("precision"),
                 "hu_window": rec.get("hu_window"), "hu_range": rec.get("hu_range"),
                 "height_source": rec.get("height_source"), "slice_locations_mm": rec.get("slice_locations_mm"),
                 "series_uid": rec["scan"].get("series_uid"), "kerasmuscle": rec["versions"].get("kerasmuscle"),
                 "onnxruntime": rec["versions"].get("onnxruntime")}
        cut = rec.get("cutoffs") or {}
        cases.append([rec["case"], *(extra[c] for c in SUMMARY_LEAD[1:]), *(cut.get(c) for c in SUMMARY_CUTOFFS),
                      *(m.get(c) for c in case_cols),
                      *(extra[c] for c in SUMMARY_EXTRA)])
        slices += slice_lines(rec["case"], rec["slices"], model.get("model_sha256"))
    tables = [out / "measurements.csv", out / "slices.csv"]
    atomic_write_text(tables[0], csv_text([*SUMMARY_LEAD, *SUMMARY_CUTOFFS, *case_cols, *SUMMARY_EXTRA], cases))
    atomic_write_text(tables[1], csv_text(slices_header("model_sha256"), slices))
    return tables


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class _Batch:
    """The parts of a batch every case uses."""

    predictor: Any
    config: PredictConfig
    formats: tuple[str, ...]
    table: dict[str, float] | None
    heights_sha256: str | None
    facts: dict[str, dict[str, Any]] | None = None    # sex and weight_kg by id, from the heights table

    def run(self, source: str, name: str, folder: Path, result: BatchResult) -> tuple[str, str]:
        """Predict, measure and write one case into ``folder``; returns its (status, message)."""
        from kerasmuscle.core.measure import measure_case, resolve_height
        from kerasmuscle.core.review import review_case

        settings = case_settings(source, self.predictor, self.config, self.formats, self.heights_sha256)
        if folder.exists() and not self.config.overwrite:
            change = settings_change(_record_settings(folder), settings)
            if change is None:
                result.skipped.append(name)
                return "skipped", ""
            result.refused.append((source, f"{name}: {change}: pass --overwrite to redo it"))
            return "refused", f"{change}: pass --overwrite to redo it"
        started = time.perf_counter()
        try:
            prediction = self.predictor.predict(source, _selection(self.config.slices),
                                                postprocess=self.config.postprocess)
            keys = [name, case_name(source)]
            if prediction.scan.dicom is not None and prediction.scan.dicom.tags.get("patient_id"):
                keys.append(prediction.scan.dicom.tags["patient_id"])
            height = resolve_height(self.config.height, self.table, keys, prediction.scan)
            notes = [self._height_note(keys, height)] if self.table is not None and height[1] != "csv" else []
            slice_rows, case_row = measure_case(prediction.scan, prediction.labels,
                                                [int(i) for i in prediction.slices], height_m=height[0])
            cutoffs, unclassified = self._cutoffs(keys, prediction.scan, height[0], case_row)
            notes += unclassified
            review = review_case(prediction.scan, prediction.labels, prediction.slices, case_row,
                                 raw_labels=prediction.raw_labels, midlines=[r["midline_col"] for r in slice_rows],
                                 level=prediction.level)
            record = case_record(name, source, prediction, case_row, slice_rows, height, self.predictor,
                                 settings, notes, review, cutoffs)
            with atomic_path(folder, overwrite=True) as tmp:
                write_case(tmp, CaseOutputs(name, prediction, slice_rows, case_row, record), self.formats)
        except NoL3Error as exc:
            result.no_l3.append((source, str(exc)))
            return "no_l3", str(exc)
        except WriteError as exc:
            if exc.errno in FATAL_WRITE_ERRNOS:  # no later case could be written either: stop
                raise WriteError(exc.path, f"{exc.cause}; the batch stopped, the cases finished before are kept: "
                                 "run the same command again to resume", exc.errno) from None
            result.failed.append((source, str(exc)))
            return "failed", str(exc)
        except (KerasMuscleError, ValueError, MissingExtraError, OSError) as exc:
            message = str(exc)
            if not (isinstance(exc, ReadError) or message.startswith(source)):
                message = f"{source}: {message}"
            result.failed.append((source, message))
            return "failed", message
        result.done.append(name)
        if review.needs_review:
            result.review.append((name, review.reasons))
        result.timings.append({"total": time.perf_counter() - started, **prediction.seconds})
        result.notes += [(name, n) for n in notes]
        if height[0] is None and self.table is not None:
            result.no_height.append(name)
        return "done", "; ".join(notes)

    def _cutoffs(self, keys: Sequence[str], scan, height_m: float | None, case_row: dict[str, Any]
                 ) -> tuple[dict[str, Any] | None, list[str]]:
        """The cut-off classes of a case (None without ``--cutoffs``), and a note per class an input was missing for."""
        if self.config.cutoffs is None:
            return None, []
        from kerasmuscle.core.cutoffs import CLASSES, classify, patient_facts

        sex, bmi, sources = patient_facts(list(keys), self.facts, scan, height_m)
        out = classify(self.config.cutoffs, case_row, sex=sex, bmi=bmi, sources=sources)
        notes = [f"{klass} not classified ({out['cutoffs']}): {out[klass + '_rule']}" for klass in CLASSES
                 if out[klass] is None and " defines no " not in out[klass + "_rule"]]
        return out, notes

    def _height_note(self, keys: Sequence[str], height: tuple[float | None, str]) -> str:
        table = Path(self.config.heights or "").name
        what = "used DICOM PatientSize" if height[1] == "dicom" else "SMI left empty"
        return f"no row of {table} matches {', '.join(dict.fromkeys(keys))}: {what}"


def _record_settings(folder: Path) -> dict[str, Any] | None:
    try:
        record = read_json(folder / CASE_FILE)
    except KerasMuscleError:
        return None
    return record.get("settings") if isinstance(record, dict) else None


def predict_batch(inputs: Sequence[str | os.PathLike], model: str | os.PathLike | None, out: str | os.PathLike,
                  config: PredictConfig | None = None, *, progress: Progress | None = None,
                  predictor=None) -> BatchResult:
    """Segment and measure many scans with one bundle.

    Args:
        inputs: scans: DICOM series folders, DICOM files, NIfTI or NPZ files. One given twice is predicted once.
        model: the bundle folder; None: the shipped model (:func:`kerasmuscle.bundle.default_bundle`).
        out: the output folder (never inside an input folder).
        config: slices, heights, outputs, shard, overwrite, runtime and post-processing
            (:class:`PredictConfig`; default: every slice, the default outputs).
        progress: called with a :class:`CaseEvent` after every input.
        predictor: what segments each input instead of the bundle's model: anything with the
            :class:`~kerasmuscle.predict.Predictor` interface, such as
            :class:`~kerasmuscle.predict.masks.MaskPredictor` (the user's own label file; ``kerasmuscle
            measure``). ``model`` is then not used.

    A case folder that exists already is skipped when its recorded settings (:func:`case_settings`) are
    those asked for now, refused (in ``BatchResult.refused``) when they differ, and redone when
    ``config.overwrite``.

    Returns:
        The :class:`BatchResult`. Errors in single inputs are collected there, not raised.

    Raises:
        BundleError: the bundle cannot be used (missing, altered).
        WriteError: ``out`` cannot be made or written, or the file system is full or read-only (the cases
            finished before stay; running again resumes).
        KerasMuscleError / ValueError: bad options, or ``out`` inside an input folder.
        MissingExtraError: an output asked for needs an extra that is not installed.
    """
    from kerasmuscle.core.measure import check_height, read_heights
    from kerasmuscle.predict.predictor import Predictor

    config = config if config is not None else PredictConfig()
    _selection(config.slices)
    formats = choose_formats(config.formats)
    if config.height is not None:
        check_height(config.height)
    table = read_heights(config.heights) if config.heights else None
    facts = None
    if config.heights and config.cutoffs:
        from kerasmuscle.core.cutoffs import read_sex_weight

        facts = read_sex_weight(config.heights)
    out = Path(out)
    check_output_folder(out, inputs)
    check_creatable(out)  # before the model is loaded, creating nothing (a refused bundle leaves no --out)
    if predictor is None:
        predictor = Predictor.from_bundle(model, config.backend, precision=config.precision,
                                          threads=config.threads, low_memory=config.low_memory,
                                          hu_range=config.hu_range)
    batch = _Batch(predictor, config, formats, table, _sha256(config.heights) if config.heights else None, facts)
    items, repeated = select_inputs(inputs, config.shard)
    writable_folder(out)
    remove_stale_temporaries(out)
    result = BatchResult(repeated=repeated)
    for number, (source, name) in enumerate(items, start=1):
        status, message = batch.run(source, name, out / name, result)
        if progress:
            progress(CaseEvent(name, status, message, number, len(items)))
    result.tables = write_summaries(out)
    return result


__all__ = ["BatchResult", "CaseEvent", "DEFAULT_FORMATS", "LOCK_FILE", "OUTPUT_FORMATS", "case_names",
           "case_settings", "parse_formats", "parse_shard", "predict_batch", "select_inputs", "settings_change",
           "write_case", "write_summaries"]
