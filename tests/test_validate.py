"""``kerasmuscle validate``: a bundle scored on a labelled dataset (Table I, agreement of areas and HU with
ICC and limits of agreement, Bland-Altman), and the statistics against hand-worked values."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
from click.testing import CliRunner

from kerasmuscle.cli import cli
from kerasmuscle.predict.validate import agreement_row, icc_a1


def test_icc_a1_against_hand_worked_values():
    # rows (1,2), (2,3), (3,4): MSR 2, MSC 1.5, MSE 0 -> ICC(A,1) = 2 / (2 + 2 * 1.5 / 3) = 2/3
    assert icc_a1([(1, 2), (2, 3), (3, 4)]) == pytest.approx(2 / 3)
    assert icc_a1([(1, 1), (2, 2), (5, 5)]) == pytest.approx(1.0)
    assert math.isnan(icc_a1([(1, 2)]))


def test_agreement_row_is_bland_altman():
    row = agreement_row("psoas", "area", "cm²", [(10, 11), (20, 19), (30, 33), (math.nan, 1)])
    assert row["n"] == 3
    assert row["mean_difference"] == pytest.approx(1.0)
    sd = float(__import__("numpy").std([1, -1, 3], ddof=1))
    assert row["sd_difference"] == pytest.approx(sd)
    assert row["loa_low"] == pytest.approx(1 - 1.96 * sd) and row["loa_high"] == pytest.approx(1 + 1.96 * sd)


def test_validate_writes_table_agreement_and_plots(tiny_bundle, small_cohort, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_cohort, data)
    # one case whose labels are gone: reported, the others scored
    listing = json.loads((data / "dataset.json").read_text())
    first = listing["cases"][0] if isinstance(listing, dict) else listing[0]
    broken = data / first["labels"]
    broken.write_bytes(b"not a label file")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["validate", str(data), "--model", str(tiny_bundle), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and str(broken.name) in result.output and "Traceback" not in result.output
    for name in ("metrics.csv", "table.md", "table.csv", "agreement.csv", "agreement.md", "violin.png",
                 "bland_altman.png"):
        assert (out / name).is_file(), name
    with open(out / "agreement.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["group"] for r in rows} == {"rectus", "abdominal_wall", "psoas", "quadratus", "erector_spinae"}
    assert {r["measure"] for r in rows} == {"area", "mean HU"}
    assert all(int(r["n"]) >= 1 for r in rows if r["measure"] == "area")
    assert "| Psoas |" in (out / "table.md").read_text(encoding="utf-8")
