"""``kerasmuscle report``: one self-contained report.html (no network, no external scripts), checked in a
real headless browser (Chromium): the page loads, the table sorts, every image loads; a screenshot is saved."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import browser_or_skip, dicom_case
from kerasmuscle.cli import cli


@pytest.fixture(scope="module")
def results(tiny_bundle, small_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "results"
    heights = out.parent / "heights.csv"
    heights.write_text("case_id,height_m,sex,weight_kg\ncase_0000,1.80,M,80\ncase_0001,1.62,F,60\n")
    for n in (0, 1, 2):
        result = CliRunner().invoke(cli, ["predict", str(dicom_case(small_cohort, n)), "--model", str(tiny_bundle),
                                          "--out", str(out), "--slices", "0-2", "--heights", str(heights),
                                          "--cutoffs", "prado2008", "--format", "png,json"])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_report_is_self_contained(results):
    text = (results / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", text), "an external reference"
    assert "<script src" not in text and "http://" not in text.replace("http://www.w3.org", "")
    assert text.count('class="thumb"') == 3 and text.count("data:image/png;base64,") == 3
    cases = re.findall(r'<tr data-case="([^"]+)"', text)
    assert sorted(cases) == ["case_0000", "case_0001", "case_0002"]
    flagged = [c for c in cases if f'<tr data-case="{c}" class="review">' in text]
    assert cases[:len(flagged)] == flagged        # the cases that need review come first
    assert "SMI by sex" in text and "<svg" in text


def test_report_sorts_and_loads_images_in_a_real_browser(results, tmp_path):
    browser = browser_or_skip()
    page = (results / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", page + "#selftest"],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="selftest">([^<]+)</pre>', dom)
    assert found, dom[-2000:]
    state = json.loads(found.group(1))
    assert state["images"] == 3 and state["loaded"] == 3
    record = {p.parent.name: json.loads(p.read_text())["measurements"]["smi_cm2_m2"]
              for p in results.glob("*/measurements.json")}
    assert state["order"] == sorted(record, key=lambda c: record[c])     # sorted by SMI, ascending
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1400,900", f"--screenshot={shot}", page], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
