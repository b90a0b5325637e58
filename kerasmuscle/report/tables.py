"""Tables: the per-case metrics CSV, the paper's Table I (Markdown and CSV), and the one number format
that every CSV file of kerasmuscle uses (:func:`csv_cell`).

numpy only.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kerasmuscle.core.metrics import CLASS_NAMES, CLASSES, METRIC_NAMES, METRICS, POSTPROCESS
from kerasmuscle.fileutil import atomic_write_text

METRICS_COLUMNS: tuple[str, ...] = (
    "fold", "case_id", "patient_id", "postprocess", "class", "dice", "hamming", "jaccard",
    "hamming_px", "tp", "fp", "fn", "truth_px", "pred_px", "slices",
)
_FLOAT_COLUMNS = frozenset(METRICS)
_INT_COLUMNS = frozenset({"fold", "hamming_px", "tp", "fp", "fn", "truth_px", "pred_px", "slices"})

TABLE_COLUMNS: tuple[str, ...] = ("postprocess", "class", "n") + tuple(
    f"{m}_{stat}" for m in METRICS for stat in ("mean", "sd"))

# Kreher et al. 2022, Table I: mean and SD over the test cases of the 10-fold cross-validation
# (130 patients). Reference values reported by the paper, not results of this package; the paper's
# row names "Ouadratus" and "Erector spine" are typos for Quadratus and Erector spinae.
PAPER_TABLE_I: dict[str, dict[str, tuple[float, float]]] = {
    "combined": {"dice": (0.95, 0.03), "hamming": (0.95, 0.04), "jaccard": (0.91, 0.05)},
    "rectus": {"dice": (0.86, 0.12), "hamming": (0.87, 0.14), "jaccard": (0.77, 0.15)},
    "abdominal_wall": {"dice": (0.93, 0.05), "hamming": (0.94, 0.06), "jaccard": (0.88, 0.08)},
    "psoas": {"dice": (0.92, 0.05), "hamming": (0.91, 0.07), "jaccard": (0.85, 0.08)},
    "quadratus": {"dice": (0.86, 0.08), "hamming": (0.86, 0.10), "jaccard": (0.76, 0.10)},
    "erector_spinae": {"dice": (0.95, 0.02), "hamming": (0.95, 0.03), "jaccard": (0.90, 0.04)},
}

_FOOTNOTE = (
    "Dice = 2|A∩B| / (|A| + |B|) and Jaccard = |A∩B| / |A∪B|, with A the reference and B the predicted "
    "pixels of a class, pooled over a case's labelled slices. Hamming is the normalised Hamming "
    "similarity 1 − |A△B| / (|A| + |B|), computed per labelled slice and averaged over the slices where "
    "A∪B is non-empty (the raw distance |A△B| in pixels is hamming_px in metrics.csv). Values are "
    "mean ± SD over cases (sample SD, ddof = 1; SD left out where n < 2); n counts the cases where the "
    "class is present in the reference or the prediction."
)


#: Decimal places of every float in a kerasmuscle CSV (areas in cm², HU, scores): well below what CT can
#: resolve, and few enough to read.
CSV_PLACES = 6


def csv_cell(value: object) -> str:
    """One CSV cell, the same in every table: None and NaN empty, floats rounded to :data:`CSV_PLACES`
    decimal places (shortest form), lists and tuples as their cells joined by spaces."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(round(float(value), CSV_PLACES))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return " ".join(csv_cell(v) for v in value)
    return str(value)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text: the header, then one line per row, every cell through :func:`csv_cell`."""
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


def _write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """Write ``rows`` under ``columns`` atomically; a row missing a column is an error, extra keys are ignored."""
    lines = []
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"row {i} has no {', '.join(missing)}")
        lines.append([row[c] for c in columns])
    atomic_write_text(path, csv_text(columns, lines))

def write_metrics_csv(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write per-case metric rows to a CSV file with the columns :data:`METRICS_COLUMNS`.

    Args:
        rows: dicts holding at least every column (keys beyond them are ignored).
        path: the CSV file, written atomically; NaN scores are written as empty cells.

    Returns:
        None.

    Raises:
        ValueError: a row lacks a column.
    """
    _write_csv(path, METRICS_COLUMNS, rows)


def read_metrics_csv(path: str | os.PathLike) -> list[dict]:
    """Read a file written by :func:`write_metrics_csv`, restoring the types.

    Args:
        path: the CSV file.

    Returns:
        One dict per row: scores as floats (empty cells as NaN), counts and ``fold`` as ints, the
        other columns as strings.

    Raises:
        ValueError: the header is not :data:`METRICS_COLUMNS`.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != METRICS_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(METRICS_COLUMNS)}")
        rows = []
        for row in reader:
            for column in _FLOAT_COLUMNS:
                row[column] = float(row[column]) if row[column] else math.nan
            for column in _INT_COLUMNS:
                row[column] = int(row[column])
            rows.append(row)
    return rows


def summarise(rows: Iterable[dict], postprocess: str = "hu") -> list[dict]:
    """Mean and SD over cases of each metric for each class, the numbers of Table I.

    mean = Σx / n and sd = √(Σ(x − mean)² / (n − 1)) over the cases with a finite score (NaN where
    n < 2 for sd, n = 0 for mean).

    Args:
        rows: per-case metric rows (as from :func:`case_metrics` or :func:`read_metrics_csv`).
        postprocess: which variant to summarise, a key of :data:`POSTPROCESS`.

    Returns:
        One dict per class in :data:`CLASSES` order with the keys of :data:`TABLE_COLUMNS`; ``n``
        counts the cases with a finite Dice score.

    Raises:
        ValueError: ``postprocess`` is unknown.
    """
    if postprocess not in POSTPROCESS:
        raise ValueError(f"postprocess {postprocess!r} is not one of {', '.join(POSTPROCESS)}")
    rows = [r for r in rows if r["postprocess"] == postprocess]
    summary = []
    for key in CLASSES:
        selected = [r for r in rows if r["class"] == key]
        out: dict = {"postprocess": postprocess, "class": key}
        for metric in METRICS:
            values = np.array([r[metric] for r in selected], float)
            values = values[~np.isnan(values)]
            if metric == "dice":  # placed here so the keys come in TABLE_COLUMNS order
                out["n"] = len(values)
            out[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            out[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        summary.append(out)
    return summary


def _mean_sd(mean: float, sd: float) -> str:
    """``"0.95 ± 0.03"``; the mean alone when there is no SD, ``"n/a"`` when there is no mean."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if math.isnan(sd) else f"{mean:.2f} ± {sd:.2f}"


def _markdown_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    """Markdown table lines: the first column left-aligned, the others right-aligned."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def _present(rows: Sequence[dict]) -> list[str]:
    """The post-processing variants that ``rows`` holds, in :data:`POSTPROCESS` order."""
    found = {r["postprocess"] for r in rows}
    unknown = found - set(POSTPROCESS)
    if unknown:
        raise ValueError(f"unknown postprocess {', '.join(sorted(unknown))}; expected {', '.join(POSTPROCESS)}")
    if not found:
        raise ValueError("no metric rows to tabulate")
    return [p for p in POSTPROCESS if p in found]


def table_markdown(rows: Iterable[dict]) -> str:
    """Format per-case metrics as the paper's Table I, in Markdown.

    One table per post-processing variant present ("hu" first, then "none"), cells mean ± SD over
    cases (see :func:`summarise`), then the paper's own values for comparison and the metric
    definitions.

    Args:
        rows: per-case metric rows.

    Returns:
        The Markdown text.

    Raises:
        ValueError: no rows, or an unknown ``postprocess``.
    """
    rows = list(rows)
    header = ["Muscle"] + [METRIC_NAMES[m] for m in METRICS]
    text = ["# Segmentation accuracy (Table I of Kreher et al. 2022)", ""]
    for number, postprocess in enumerate(_present(rows), start=1):
        text += [f"Table {number}. Mean ± SD over held-out cases, {POSTPROCESS[postprocess]}.", ""]
        lines = [[CLASS_NAMES[s["class"]]] + [_mean_sd(s[f"{m}_mean"], s[f"{m}_sd"]) for m in METRICS]
                 + [str(s["n"])] for s in summarise(rows, postprocess)]
        text += _markdown_table(header + ["n"], lines) + [""]
    text += ["For comparison, the values reported by the paper (Kreher et al. 2022, Table I; not results of "
             "this package; the paper does not say whether they include the HU post-processing).", ""]
    lines = [[CLASS_NAMES[key]] + [_mean_sd(*PAPER_TABLE_I[key][m]) for m in METRICS] for key in CLASSES]
    text += _markdown_table(header, lines) + ["", _FOOTNOTE, ""]
    return "\n".join(text)


def write_tables(rows: Iterable[dict], out_dir: str | os.PathLike) -> None:
    """Write ``table.md`` (:func:`table_markdown`) and ``table.csv`` (:func:`summarise`) to a folder.

    table.csv has the columns :data:`TABLE_COLUMNS`, one row per post-processing variant present
    and class, at full precision (NaN as empty).

    Args:
        rows: per-case metric rows.
        out_dir: the folder (created if missing); both files are written atomically.

    Returns:
        None.

    Raises:
        ValueError: no rows, or an unknown ``postprocess``.
    """
    rows = list(rows)
    out_dir = Path(out_dir)
    summary = [s for postprocess in _present(rows) for s in summarise(rows, postprocess)]
    atomic_write_text(out_dir / "table.md", table_markdown(rows))
    _write_csv(out_dir / "table.csv", TABLE_COLUMNS, summary)

