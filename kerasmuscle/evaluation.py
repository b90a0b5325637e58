"""Segmentation accuracy as in the paper's Table I and Figure 2: Dice, Hamming and Jaccard per muscle.

A case is scored on its labelled slices only. For a class, A is the set of reference pixels and B the
set of predicted pixels over those slices:

- Dice score D = 2|A∩B| / (|A| + |B|), pooled over all labelled slices of the case.
- Jaccard index J = |A∩B| / |A∪B|, pooled the same way.
- Hamming: the paper reports a "Hamming distance" whose values sit close to its Dice, which suggests a
  similarity normalised to the structure rather than a raw pixel count. We report the normalised
  Hamming similarity H = 1 − |A△B| / (|A| + |B|), computed on each labelled slice separately and
  averaged over the slices where A∪B is non-empty (NaN if none). On a single slice it equals the Dice
  score algebraically (|A△B| = |A| + |B| − 2|A∩B|); averaged per slice it weights small slices
  equally, which is why it differs from the case-level Dice, giving a similar mean with a larger
  spread, the pattern of the paper's Table I. The raw Hamming distance |A△B| in pixels is also kept,
  as ``hamming_px`` in metrics.csv.

A class absent from both reference and prediction scores NaN (neither perfect nor zero) and is left
out of means; a class present in only one of them scores 0. "Combined" treats every muscle label as
one class. Tables give mean ± SD over cases (sample SD, ddof = 1).

numpy only; matplotlib is imported by :func:`violin_plot` alone.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from kerasmuscle.errors import MissingExtraError
from kerasmuscle.fileutil import atomic_path, atomic_write_text
from kerasmuscle.labels import MUSCLE_LABELS

#: Classes in the row order of the paper's Table I: all muscle combined, then each group.
CLASSES: tuple[str, ...] = ("combined",) + tuple(lab.key for lab in MUSCLE_LABELS)
#: Display names of :data:`CLASSES`, as the rows of Table I.
CLASS_NAMES: dict[str, str] = {"combined": "Combined", **{lab.key: lab.short for lab in MUSCLE_LABELS}}
#: Label id of each muscle class ("combined" is every id > 0).
_CLASS_IDS: dict[str, int] = {lab.key: lab.id for lab in MUSCLE_LABELS}

METRICS: tuple[str, ...] = ("dice", "hamming", "jaccard")
#: Column headings of Table I for :data:`METRICS`.
METRIC_NAMES: dict[str, str] = {"dice": "Dice score", "hamming": "Hamming distance", "jaccard": "Jaccard Index"}

#: Post-processing variants and the caption of their table: "hu" is the paper's -20..200 HU thresholding.
POSTPROCESS: dict[str, str] = {"hu": "with the paper's −20..200 HU post-processing",
                               "none": "raw network output"}

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


def overlap_metrics(truth: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """Compare two masks of one class: Dice, Jaccard, normalised Hamming and the pixel counts.

    With A = ``truth`` and B = ``pred``: dice = 2|A∩B| / (|A| + |B|) and jaccard = |A∩B| / |A∪B|
    over all slices; hamming = mean over slices with A∪B non-empty of 1 − |A△B| / (|A| + |B|);
    hamming_px = |A△B|. Both empty gives NaN scores; one empty gives 0.

    Args:
        truth: reference mask, ``[Z, H, W]`` (the labelled slices of a case) or one slice ``[H, W]``.
        pred: predicted mask of the same shape (any dtype; non-zero is inside).

    Returns:
        ``dice``, ``hamming``, ``jaccard`` (floats) and ``hamming_px``, ``tp``, ``fp``, ``fn``,
        ``truth_px``, ``pred_px`` (ints).

    Raises:
        ValueError: the shapes differ or are neither 2-D nor 3-D.
    """
    truth = np.asarray(truth).astype(bool, copy=False)
    pred = np.asarray(pred).astype(bool, copy=False)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} does not match prediction shape {pred.shape}")
    if truth.ndim not in (2, 3):
        raise ValueError(f"masks must be [H, W] or [Z, H, W], not shape {truth.shape}")
    if truth.ndim == 2:
        truth, pred = truth[None], pred[None]
    tp = int(np.count_nonzero(truth & pred))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(truth & ~pred))
    union = tp + fp + fn
    # Per slice: |A| + |B| and |A△B|, for the slice-averaged Hamming similarity.
    sizes = (np.count_nonzero(truth, axis=(1, 2)) + np.count_nonzero(pred, axis=(1, 2))).astype(np.int64)
    differ = np.count_nonzero(truth ^ pred, axis=(1, 2))
    present = sizes > 0
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if union else math.nan,
        "hamming": float(np.mean(1 - differ[present] / sizes[present])) if present.any() else math.nan,
        "jaccard": tp / union if union else math.nan,
        "hamming_px": fp + fn,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "truth_px": tp + fn,
        "pred_px": tp + fp,
    }


def case_metrics(truth: np.ndarray, pred: np.ndarray) -> list[dict[str, float | int | str]]:
    """Score one case for every class of :data:`CLASSES`.

    "combined" compares ``truth > 0`` with ``pred > 0``; a muscle compares ``truth == id`` with
    ``pred == id``. The formulas are those of :func:`overlap_metrics`.

    Args:
        truth: reference label map (uint8 ids), ``[Z, H, W]``, the case's labelled slices only.
        pred: predicted label map of the same shape.

    Returns:
        One dict per class, in :data:`CLASSES` order: ``class`` and the keys of :func:`overlap_metrics`.

    Raises:
        ValueError: the shapes differ.
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} does not match prediction shape {pred.shape}")
    rows = [{"class": "combined", **overlap_metrics(truth > 0, pred > 0)}]
    for key in CLASSES[1:]:
        rows.append({"class": key, **overlap_metrics(truth == _CLASS_IDS[key], pred == _CLASS_IDS[key])})
    return rows


def _cell(value: object) -> str:
    """One CSV cell: NaN and None as empty, floats at full precision so they read back exactly."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def _write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """Write ``rows`` under ``columns`` atomically; a row missing a column is an error, extra keys are ignored."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i, row in enumerate(rows):
            missing = [c for c in columns if c not in row]
            if missing:
                raise ValueError(f"row {i} has no {', '.join(missing)}")
            writer.writerow([_cell(row[c]) for c in columns])


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


def violin_plot(rows: Iterable[dict], path: str | os.PathLike, postprocess: str = "hu",
                title: str | None = None) -> None:
    """Draw the per-case scores as violin plots, in the form of the paper's Figure 2.

    Three panels (Dice, Hamming, Jaccard) with one violin per class: Combined in grey, the muscles
    in their label colours. Every case is a dot (deterministic jitter); the black marker and bar
    are mean ± SD (sample SD). A class with fewer than two distinct finite scores gets dots only.

    Args:
        rows: per-case metric rows.
        path: the PNG file, written atomically.
        postprocess: which variant to plot, a key of :data:`POSTPROCESS`.
        title: figure title; by default the variant and the number of cases.

    Returns:
        None.

    Raises:
        ValueError: no rows for ``postprocess``.
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401 - fail here, naming the extra, not halfway through drawing
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("the violin plot", "train", "matplotlib") from exc

    rows = [r for r in rows if r["postprocess"] == postprocess]
    if not rows:
        raise ValueError(f"no metric rows with postprocess {postprocess!r} to plot")
    colours = [(0.6, 0.6, 0.6)] + [tuple(c / 255 for c in lab.colour) for lab in MUSCLE_LABELS]
    positions = np.arange(1, len(CLASSES) + 1)
    fig = Figure(figsize=(12, 4.5), dpi=120)
    axes = fig.subplots(1, len(METRICS))
    for ax, metric in zip(axes, METRICS):
        lowest = 1.0
        for k, (key, pos, colour) in enumerate(zip(CLASSES, positions, colours)):
            values = np.array([r[metric] for r in rows if r["class"] == key], float)
            values = values[~np.isnan(values)]
            if not len(values):
                continue
            lowest = min(lowest, values.min())
            # A kernel density needs spread: one score, or identical ones, would make it singular.
            if np.ptp(values) > 0:
                body = ax.violinplot(values, positions=[pos], widths=0.8, showextrema=False)["bodies"][0]
                body.set_facecolor(colour)
                body.set_edgecolor("black")
                body.set_alpha(0.5)
            # Seeded by class, so the same rows always give the same picture.
            jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(values))
            ax.scatter(pos + jitter, values, s=8, color=colour, edgecolors="black", linewidths=0.3, zorder=3)
            sd = values.std(ddof=1) if len(values) > 1 else None
            ax.errorbar(pos, values.mean(), yerr=sd, fmt="D", color="black", markersize=4, capsize=4, zorder=4)
        ax.set_ylim(max(0.0, lowest - 0.05), 1.01)
        ax.set_xlim(0.4, len(CLASSES) + 0.6)
        ax.set_xticks(positions, [CLASS_NAMES[key] for key in CLASSES], rotation=30, ha="right")
        ax.set_title(METRIC_NAMES[metric])
        ax.grid(axis="y", alpha=0.3)
    n_cases = sum(r["class"] == "combined" for r in rows)
    fig.suptitle(title or f"Per-case scores, {POSTPROCESS[postprocess]} ({n_cases} cases)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
