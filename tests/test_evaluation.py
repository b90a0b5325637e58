"""Overlap metrics (core.metrics), Table I and the CSV number format (report.tables), the violin plot
(report.figures) and the HU post-processing, on hand-computed cases."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasmuscle.core.metrics import CLASSES, case_metrics, overlap_metrics
from kerasmuscle.errors import MissingExtraError
from kerasmuscle.report.figures import violin_plot
from kerasmuscle.report.tables import (METRICS_COLUMNS, TABLE_COLUMNS, csv_cell, read_metrics_csv, summarise,
                                       table_markdown, write_metrics_csv, write_tables)
from kerasmuscle.core.postprocess import MUSCLE_HU, threshold_hu

NAN = math.nan


def mask(size: int, *pixels: tuple[int, int]) -> np.ndarray:
    """A size x size boolean slice with the given (row, col) pixels set."""
    out = np.zeros((size, size), bool)
    for r, c in pixels:
        out[r, c] = True
    return out


def same(a: float, b: float) -> bool:
    """Equal to rounding, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


BLOCK = [(1, 1), (1, 2), (2, 1), (2, 2)]
SQUARE = [(r, c) for r in range(3) for c in range(3)]

# (truth, pred, dice, jaccard, hamming, hamming_px); a single slice, where hamming equals dice.
OVERLAP_CASES = {
    "pred inside truth": (mask(4, *BLOCK), mask(4, *BLOCK[:2]), 4 / 6, 2 / 4, 1 - 2 / 6, 2),
    "identical": (mask(2, (0, 0), (1, 1)), mask(2, (0, 0), (1, 1)), 1.0, 1.0, 1.0, 0),
    "disjoint": (mask(3, (0, 0), (0, 1)), mask(3, (2, 2), (2, 1)), 0.0, 0.0, 0.0, 4),
    "shifted square": (mask(5, *SQUARE), mask(5, *[(r, c + 1) for r, c in SQUARE]), 12 / 18, 6 / 12, 12 / 18, 6),
    "both empty": (mask(4), mask(4), NAN, NAN, NAN, 0),
    "pred empty": (mask(4, (0, 0), (1, 0), (3, 3)), mask(4), 0.0, 0.0, 0.0, 3),
    "truth empty": (mask(8), mask(8, (7, 7)), 0.0, 0.0, 0.0, 1),
}


@pytest.mark.parametrize("name", OVERLAP_CASES)
@pytest.mark.parametrize("stacked", [False, True], ids=["2d", "3d"])
def test_overlap_metrics_by_hand(name: str, stacked: bool) -> None:
    truth, pred, dice, jaccard, hamming, hamming_px = OVERLAP_CASES[name]
    if stacked:
        truth, pred = truth[None], pred[None]
    m = overlap_metrics(truth, pred)
    assert same(m["dice"], dice) and same(m["jaccard"], jaccard) and same(m["hamming"], hamming)
    assert m["hamming_px"] == hamming_px == m["fp"] + m["fn"]
    assert (m["truth_px"], m["pred_px"]) == (truth.sum(), pred.sum())
    assert m["tp"] == (truth & pred).sum()


def test_hamming_is_averaged_per_slice_and_dice_pooled() -> None:
    # Slice 0: 8 identical pixels (H = 1); slice 1: one pixel each, apart (H = 0); slice 2: empty (skipped).
    eight = [(r, c) for r in range(2) for c in range(4)]
    truth = np.stack([mask(4, *eight), mask(4, (3, 0)), mask(4)])
    pred = np.stack([mask(4, *eight), mask(4, (3, 3)), mask(4)])
    m = overlap_metrics(truth, pred)
    assert m["dice"] == pytest.approx(16 / 18)
    assert m["jaccard"] == pytest.approx(8 / 10)
    assert m["hamming"] == pytest.approx((1 + 0) / 2)
    assert (m["tp"], m["fp"], m["fn"], m["hamming_px"]) == (8, 1, 1, 2)


@pytest.mark.parametrize("truth, pred", [(np.zeros((2, 3)), np.zeros((3, 2))), (np.zeros(4), np.zeros(4)),
                                         (np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2)))])
def test_overlap_metrics_rejects_bad_shapes(truth: np.ndarray, pred: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shape"):
        overlap_metrics(truth, pred)


def test_case_metrics_classes_and_combined() -> None:
    truth = np.array([[[1, 1, 2, 2], [3, 3, 0, 0]]], np.uint8)
    pred = np.array([[[1, 2, 2, 2], [3, 0, 0, 5]]], np.uint8)
    expected = {"combined": 10 / 12, "rectus": 2 / 3, "abdominal_wall": 4 / 5, "psoas": 2 / 3,
                "quadratus": NAN, "erector_spinae": 0.0}
    rows = case_metrics(truth, pred)
    assert [r["class"] for r in rows] == list(CLASSES) == list(expected)
    for row in rows:
        assert same(row["dice"], expected[row["class"]]), row
    assert (rows[0]["tp"], rows[0]["fp"], rows[0]["fn"]) == (5, 1, 1)
    with pytest.raises(ValueError, match=r"\(1, 2, 4\).*\(1, 4, 2\)"):
        case_metrics(truth, pred.reshape(1, 4, 2))


def test_threshold_hu_keeps_bounds_and_clears_outside() -> None:
    assert MUSCLE_HU == (-20.0, 200.0)
    labels = np.array([1, 2, 3, 4, 5, 1, 0], np.uint8)
    hu = np.array([-21, -20, 0, 200, 200.5, NAN, 1000])
    out = threshold_hu(labels, hu)
    np.testing.assert_array_equal(out, [0, 2, 3, 4, 0, 0, 0])
    assert out.dtype == np.uint8 and labels[0] == 1  # a copy; the input is untouched
    volume = threshold_hu(np.ones((2, 3, 3), np.uint8), np.full((2, 3, 3), 250.0), hu_range=(0, 300))
    assert volume.shape == (2, 3, 3) and volume.all()


def test_threshold_hu_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        threshold_hu(np.zeros((2, 3), np.uint8), np.zeros((3, 2)))


def row(case: str, cls: str, dice: float, hamming: float, jaccard: float, postprocess: str = "hu",
        fold: int = 0) -> dict:
    """A metrics.csv row with made-up counts."""
    return {"fold": fold, "case_id": case, "patient_id": f"P-{case}", "postprocess": postprocess,
            "class": cls, "dice": dice, "hamming": hamming, "jaccard": jaccard, "hamming_px": 7,
            "tp": 10, "fp": 3, "fn": 4, "truth_px": 14, "pred_px": 13, "slices": 2}


def test_metrics_csv_round_trip(tmp_path: Path) -> None:
    rows = [row("a", "combined", 2 / 3, 0.5, 0.1 + 0.2), row("b", "quadratus", NAN, NAN, NAN, "none", fold=3)]
    path = tmp_path / "metrics.csv"
    write_metrics_csv(rows, path)
    with open(path, newline="") as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == METRICS_COLUMNS and lines[2][5:8] == ["", "", ""]
    back = read_metrics_csv(path)
    assert len(back) == 2 and list(back[0]) == list(METRICS_COLUMNS)
    for original, restored in zip(rows, back):
        for column in METRICS_COLUMNS:
            value = restored[column]
            assert type(value) is type(original[column])
            assert value == pytest.approx(original[column], abs=5e-7) or math.isnan(value)
    assert not list(tmp_path.glob(".tmp-*"))


def test_csv_cell_is_the_one_number_format() -> None:
    # Every CSV kerasmuscle writes (metrics, Table I, measurements, slices) goes through csv_cell.
    assert csv_cell(2 / 3) == "0.666667" and csv_cell(np.float32(1.5)) == "1.5" and csv_cell(12.0) == "12.0"
    assert csv_cell(NAN) == "" and csv_cell(None) == "" and csv_cell(np.int64(3)) == "3"
    assert csv_cell([1.23456789, 2]) == "1.234568 2" and csv_cell("x") == "x" and csv_cell(True) == "True"


def test_metrics_csv_errors(tmp_path: Path) -> None:
    incomplete = row("a", "combined", 1, 1, 1)
    del incomplete["slices"]
    with pytest.raises(ValueError, match="slices"):
        write_metrics_csv([incomplete], tmp_path / "metrics.csv")
    assert not (tmp_path / "metrics.csv").exists()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_metrics_csv(tmp_path / "other.csv")


def test_summarise_mean_and_sample_sd() -> None:
    rows = [row("a", "combined", 0.9, 0.7, 0.5), row("b", "combined", 0.8, 0.6, 0.4),
            row("c", "combined", NAN, NAN, NAN), row("a", "psoas", 0.75, 0.7, 0.6),
            row("a", "combined", 0.1, 0.1, 0.1, "none")]
    summary = {s["class"]: s for s in summarise(rows)}
    assert list(summary) == list(CLASSES) and all(list(s) == list(TABLE_COLUMNS) for s in summary.values())
    combined = summary["combined"]
    assert combined["n"] == 2
    assert combined["dice_mean"] == pytest.approx(0.85)
    assert combined["dice_sd"] == pytest.approx(math.sqrt((0.05 ** 2 + 0.05 ** 2) / (2 - 1)))
    assert combined["jaccard_sd"] == pytest.approx(np.std([0.5, 0.4], ddof=1))
    assert summary["psoas"]["n"] == 1 and summary["psoas"]["dice_mean"] == 0.75
    assert math.isnan(summary["psoas"]["dice_sd"])
    assert summary["rectus"]["n"] == 0 and math.isnan(summary["rectus"]["hamming_mean"])
    assert summarise(rows, "none")[0]["dice_mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="postprocess"):
        summarise(rows, "both")


def table_rows() -> list[dict]:
    """Two cases with HU post-processing (quadratus missing in one), one case without."""
    rows = []
    for cls in CLASSES:
        rows.append(row("a", cls, 0.93, 0.91, 0.90))
        rows.append(row("b", cls, *((NAN,) * 3 if cls == "quadratus" else (0.97, 0.99, 0.92))))
        rows.append(row("a", cls, 0.5, 0.25, 0.3, "none"))
    return rows


def test_write_tables(tmp_path: Path) -> None:
    write_tables(table_rows(), tmp_path)
    md = (tmp_path / "table.md").read_text(encoding="utf-8")
    hu, raw, paper = (md.index(text) for text in ("−20..200 HU post-processing.", "raw network output.",
                                                   "reported by the paper"))
    assert hu < raw < paper
    assert "| Combined | 0.95 ± 0.03 | 0.95 ± 0.06 | 0.91 ± 0.01 | 2 |" in md
    assert "| Quadratus | 0.93 | 0.91 | 0.90 | 1 |" in md
    assert "| Erector spinae | 0.50 | 0.25 | 0.30 | 1 |" in md
    assert "| Psoas | 0.92 ± 0.05 | 0.91 ± 0.07 | 0.85 ± 0.08 |" in md  # the paper's row
    names = [line.split("|")[1].strip() for line in md[hu:raw].splitlines() if line.startswith("| ")][1:]
    assert names == ["Combined", "Rectus", "Abdominal wall", "Psoas", "Quadratus", "Erector spinae"]
    assert "1 − |A△B| / (|A| + |B|)" in md and "ddof = 1" in md
    with open(tmp_path / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(TABLE_COLUMNS)
    assert [(t["postprocess"], t["class"]) for t in table] == [(p, c) for p in ("hu", "none") for c in CLASSES]
    assert float(table[0]["dice_mean"]) == pytest.approx(0.95) and table[0]["n"] == "2"
    assert table[6]["dice_sd"] == ""


def test_table_markdown_only_present_variants() -> None:
    md = table_markdown([r for r in table_rows() if r["postprocess"] == "hu"])
    assert "HU post-processing." in md and "raw network output" not in md
    with pytest.raises(ValueError, match="no metric rows"):
        table_markdown([])


def test_violin_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        for cls in CLASSES:
            scores = (NAN,) * 3 if cls == "erector_spinae" or (cls == "quadratus" and i) else \
                (0.8,) * 3 if cls == "rectus" else tuple(rng.uniform(0.6, 1.0, 3))
            rows.append(row(str(i), cls, *scores))
    path = tmp_path / "plots" / "violin.png"
    violin_plot(rows, path, title="test")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1440, 540)
    with pytest.raises(ValueError, match="no metric rows"):
        violin_plot(rows, tmp_path / "none.png", postprocess="none")


def test_violin_plot_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match="matplotlib"):
        violin_plot([row("a", "combined", 1, 1, 1)], tmp_path / "v.png")
