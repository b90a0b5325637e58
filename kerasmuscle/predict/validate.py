"""Check a model on your own labelled scans before trusting it (``kerasmuscle validate``).

:func:`validate` runs the light predictor (a bundle, the shipped model by default) on the labelled slices
of every case of a dataset (any layout ``train`` reads, :func:`kerasmuscle.data.discover_cases`) and writes:

- ``metrics.csv``, ``table.md``/``table.csv`` (the paper's Table I: Dice, Hamming and Jaccard per group,
  with and without the -20..200 HU post-processing) and ``violin.png`` (Figure 2), as ``evaluate`` does;
- ``agreement.csv``/``agreement.md``: per group, the agreement of the case's area (cm², averaged over its
  labelled slices) and mean HU between the model and the reference: mean difference (model minus
  reference), its SD, the 95 % limits of agreement (mean ± 1.96 SD) and the intraclass correlation
  ICC(A,1) (two-way, absolute agreement, single measurement; McGraw and Wong 1996);
- ``bland_altman.png``: one Bland-Altman panel per group and measure.

TensorFlow is not needed; the figures need matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.errors import KerasMuscleError, MissingExtraError
from kerasmuscle.labels import MUSCLE_LABELS

#: The measures compared, with their column in the case rows and their unit.
MEASURES = (("area", "area_cm2", "cm²"), ("mean HU", "mean_hu", "HU"))
AGREEMENT_COLUMNS = ("group", "measure", "unit", "n", "reference_mean", "model_mean", "mean_difference",
                     "sd_difference", "loa_low", "loa_high", "icc")


@dataclass
class ValidationResult:
    """What :func:`validate` measured and wrote."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def icc_a1(pairs: Sequence[tuple[float, float]]) -> float:
    """ICC(A,1) of ``(reference, model)`` pairs: two-way, absolute agreement, single measurement
    (McGraw and Wong 1996, case A; Shrout and Fleiss ICC(2,1)). NaN for fewer than two pairs or no spread."""
    y = np.asarray(pairs, float)
    n, k = y.shape if y.ndim == 2 else (0, 2)
    if n < 2:
        return math.nan
    grand = y.mean()
    ssr = k * ((y.mean(1) - grand) ** 2).sum()
    ssc = n * ((y.mean(0) - grand) ** 2).sum()
    sse = ((y - grand) ** 2).sum() - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denominator) if denominator > 0 else math.nan


def agreement_row(group: str, measure: str, unit: str, pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Bland-Altman statistics and ICC(A,1) of ``(reference, model)`` pairs with finite values."""
    good = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    ref = np.array([a for a, _ in good], float)
    mod = np.array([b for _, b in good], float)
    diff = mod - ref
    n = len(good)
    mean_d = float(diff.mean()) if n else math.nan
    sd_d = float(diff.std(ddof=1)) if n > 1 else math.nan
    return {"group": group, "measure": measure, "unit": unit, "n": n,
            "reference_mean": float(ref.mean()) if n else math.nan, "model_mean": float(mod.mean()) if n else math.nan,
            "mean_difference": mean_d, "sd_difference": sd_d, "loa_low": mean_d - 1.96 * sd_d,
            "loa_high": mean_d + 1.96 * sd_d, "icc": icc_a1(good)}


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def agreement_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| group | measure | n | reference | model | mean difference | 95 % limits of agreement | ICC(A,1) |",
             "|:---|:---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['group']} | {r['measure']} ({r['unit']}) | {r['n']} | {_fmt(r['reference_mean'])} | "
                     f"{_fmt(r['model_mean'])} | {_fmt(r['mean_difference'])} | {_fmt(r['loa_low'])} to "
                     f"{_fmt(r['loa_high'])} | {_fmt(r['icc'], 3)} |")
    return "\n".join(lines) + "\n"


def bland_altman_plot(pairs: dict[tuple[str, str], list[tuple[float, float]]], path: str | os.PathLike) -> None:
    """One Bland-Altman panel per group (rows) and measure (columns): the difference (model minus
    reference) against the mean of the two, with the mean difference and the 95 % limits of agreement."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("the Bland-Altman plot", "train", "matplotlib") from exc
    from kerasmuscle.fileutil import atomic_path

    fig = Figure(figsize=(8, 2.2 * len(MUSCLE_LABELS)), dpi=100)
    axes = fig.subplots(len(MUSCLE_LABELS), len(MEASURES), squeeze=False)
    for i, lab in enumerate(MUSCLE_LABELS):
        for j, (measure, _, unit) in enumerate(MEASURES):
            ax = axes[i][j]
            good = [(a, b) for a, b in pairs.get((lab.key, measure), []) if math.isfinite(a) and math.isfinite(b)]
            colour = tuple(c / 255 for c in lab.colour)
            ax.set_title(f"{lab.short}: {measure}", fontsize=9)
            if good:
                ref, mod = np.array(good).T
                mean, diff = (ref + mod) / 2, mod - ref
                ax.scatter(mean, diff, s=14, color=colour, edgecolor="black", linewidth=0.4)
                row = agreement_row(lab.key, measure, unit, good)
                for value, style in ((row["mean_difference"], "-"), (row["loa_low"], "--"), (row["loa_high"], "--")):
                    if math.isfinite(value):
                        ax.axhline(value, color="black", linestyle=style, linewidth=0.8)
            else:
                ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
            ax.axhline(0, color="grey", linewidth=0.5)
            ax.set_xlabel(f"mean of the two ({unit})", fontsize=8)
            ax.set_ylabel(f"model - reference ({unit})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")


def validate(dataset: str | os.PathLike, out: str | os.PathLike, *, model: str | os.PathLike | None = None,
             backend: str = "onnx", precision: str = "float32", threads: int | None = None,
             log: Callable[[str], None] = print) -> ValidationResult:
    """Score a bundle on a labelled dataset and write Table I, the agreement table and the plots to ``out``.

    A case that cannot be read or predicted is reported in ``failed`` and the others go on.

    Raises:
        BundleError: the bundle cannot be used.
        KerasMuscleError: the dataset cannot be read, or no case could be scored.
    """
    from kerasmuscle.core.measure import measure_case
    from kerasmuscle.core.metrics import case_metrics
    from kerasmuscle.core.slices import labelled_indices
    from kerasmuscle.data.dataset import discover_cases, read_case
    from kerasmuscle.fileutil import atomic_write_text
    from kerasmuscle.predict.predictor import Predictor
    from kerasmuscle.report.tables import csv_text, write_metrics_csv, write_tables

    cases = [c for c in discover_cases(dataset) if c.labels is not None]
    if not cases:
        raise KerasMuscleError(f"{dataset}: no labelled case to validate on")
    predictor = Predictor.from_bundle(model, backend, precision=precision, threads=threads)
    result = ValidationResult()
    for number, case in enumerate(cases, start=1):
        try:
            scan, labelmap = read_case(case)
            truth_volume = np.asarray(labelmap.array)
            index = labelled_indices(truth_volume)
            prediction = predictor.predict(scan, index, postprocess=True)
            truth = truth_volume[index]
            for post, labels in (("hu", prediction.labels[index]), ("none", prediction.raw_labels)):
                for row in case_metrics(truth, labels):
                    result.rows.append({"fold": 0, "case_id": case.id, "patient_id": case.patient_id,
                                        "postprocess": post, "slices": len(index), **row})
            _, ref_row = measure_case(scan, truth_volume, index)
            _, mod_row = measure_case(scan, prediction.labels, index)
            for lab in MUSCLE_LABELS:
                for measure, column, _ in MEASURES:
                    a, b = ref_row.get(f"{lab.key}_{column}"), mod_row.get(f"{lab.key}_{column}")
                    if a is not None and b is not None:
                        result.pairs.setdefault((lab.key, measure), []).append((float(a), float(b)))
            log(f"[{number}/{len(cases)}] {case.id}: {len(index)} labelled slice(s) scored")
        except (KerasMuscleError, ValueError, OSError) as exc:
            message = str(exc)
            result.failed.append((str(case.image), message))
            log(f"[{number}/{len(cases)}] {case.id}: FAILED: {message}")
    if not result.rows:
        raise KerasMuscleError(f"{dataset}: no case could be scored ({len(result.failed)} failed)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(result.rows, out / "metrics.csv")
    write_tables(result.rows, out)
    result.written += [out / "metrics.csv", out / "table.md", out / "table.csv"]
    result.agreement = [agreement_row(lab.key, measure, unit, result.pairs.get((lab.key, measure), []))
                        for lab in MUSCLE_LABELS for measure, _, unit in MEASURES]
    atomic_write_text(out / "agreement.csv", csv_text(AGREEMENT_COLUMNS, [[r[c] for c in AGREEMENT_COLUMNS]
                                                                          for r in result.agreement]))
    atomic_write_text(out / "agreement.md", agreement_markdown(result.agreement))
    result.written += [out / "agreement.csv", out / "agreement.md"]
    try:
        from kerasmuscle.report.figures import violin_plot

        violin_plot(result.rows, out / "violin.png")
        bland_altman_plot(result.pairs, out / "bland_altman.png")
        result.written += [out / "violin.png", out / "bland_altman.png"]
    except MissingExtraError as exc:
        log(f"note: no figures: {exc}")
    return result


__all__ = ["AGREEMENT_COLUMNS", "ValidationResult", "agreement_row", "icc_a1", "validate"]
