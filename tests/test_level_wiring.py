"""The level finder wired in: ``--slices auto`` (core.slices), the record and tables (predict.batch), review
flags of the level (core.review), ``kerasmuscle level`` and ``kerasmuscle predict`` on real and no-spine scans."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TCIA, phantom_hu, write_series

from kerasmuscle.cli import cli
from kerasmuscle.core.level import L3Choice, LevelResult
from kerasmuscle.core.review import level_flags
from kerasmuscle.core.slices import NoL3Error, SliceSelection
from kerasmuscle.io import read_scan
from kerasmuscle.io.scan import Scan


def _phantom(slices: int = 20) -> Scan:
    """A water cylinder without bone: no spine."""
    hu = np.full((slices, 64, 64), -1000.0, np.float32)
    yy, xx = np.mgrid[:64, :64]
    hu[:, (yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2] = 20.0
    return Scan(hu=hu, spacing=(5.0, 1.0, 1.0), positions=np.array([[0.0, 0.0, 5.0 * k] for k in range(slices)]),
                source="phantom.nii.gz")


@pytest.fixture(scope="module")
def tcia():
    if not TCIA.is_dir():
        pytest.fail(f"real test data missing: {TCIA}")
    return read_scan(TCIA)


def test_auto_parses_and_round_trips():
    assert SliceSelection.parse("auto") == SliceSelection("auto")
    assert SliceSelection.parse(SliceSelection("auto").text()) == SliceSelection("auto")
    assert SliceSelection.from_dict(SliceSelection("auto").to_dict()) == SliceSelection("auto")


def test_auto_on_a_volume_without_spine_says_why():
    with pytest.raises(NoL3Error, match=r"phantom.nii.gz: not measured: no spine found") as info:
        SliceSelection("auto").choose(_phantom())
    assert not info.value.level.l3.found


def test_auto_takes_a_short_stack_as_the_users_choice():
    choice = SliceSelection("auto").choose(_phantom(3))
    assert choice.method == "user" and choice.indices.tolist() == [0, 1, 2]
    assert "user_choice" in choice.level.l3.flags


def test_auto_on_tcia_and_the_record(tcia):
    choice = SliceSelection("auto").choose(tcia)
    assert choice.method == "auto"
    assert choice.indices.tolist() == choice.level.l3.indices and len(choice.indices) == 3
    record = choice.to_dict()
    assert record["l3"]["middle"] == choice.level.l3.middle
    assert {lv["name"] for lv in record["levels"]} >= {"L1", "L2", "L3", "L4", "L5"}
    json.dumps(record)
    # a level result found earlier is reused, not searched again
    again = SliceSelection("auto").choose(tcia, level=choice.level)
    assert again.level is choice.level and again.indices.tolist() == choice.indices.tolist()
    # explicit slices stay the user's
    assert SliceSelection.parse("60-62").choose(tcia).method == "user"


def _level(confidence: float, flags: list[str], candidates=None) -> LevelResult:
    l3 = L3Choice(found=True, slices=[9, 11], middle=10, z_mm=0.0, confidence=confidence, flags=flags)
    return LevelResult(levels=[], l3=l3, evidence={"candidates": candidates} if candidates else {})


def test_level_review_flags():
    assert level_flags(_level(0.9, [])) == []
    assert level_flags(_level(0.7, ["sacrum_count_only"])) == []
    low = level_flags(_level(0.56, ["sacrum_count_only", "l3_at_scan_end"]))
    assert [f.code for f in low] == ["level_confidence"] and "0.56" in low[0].message
    both = level_flags(_level(0.4, ["counts_disagree"], {"sacrum": 210.0, "ribs": 245.0}))
    assert [f.code for f in both] == ["level_counts", "level_confidence"]
    assert "210 mm" in both[0].message and "245 mm" in both[0].message
    user = _level(None, ["user_choice"])
    assert level_flags(user) == []


def test_level_command_text_json_and_picture(tmp_path):
    runner = CliRunner()
    text = runner.invoke(cli, ["level", str(TCIA)])
    assert text.exit_code == 0, text.output
    assert "L3: slices" in text.output and "  L4 " in text.output and "confidence" in text.output
    png = tmp_path / "level.png"
    js = runner.invoke(cli, ["level", str(TCIA), "--json", "--png", str(png)])
    assert js.exit_code == 0, js.output
    obj = json.loads(js.output)
    l3 = obj["l3"]
    assert set(l3) >= {"found", "slices", "middle", "z_mm", "confidence", "flags"}
    assert l3["found"] is True and l3["slices"][1] - l3["slices"][0] == 2 and 41 <= l3["middle"] <= 47
    assert any(lv["name"] == "L3" for lv in obj["levels"])
    assert png.stat().st_size > 10_000
    again = runner.invoke(cli, ["level", str(TCIA), "--png", str(png)])
    assert again.exit_code != 0 and "exists" in again.output        # the picture is not overwritten


def test_level_command_bad_and_no_spine_inputs(tmp_path):
    from kerasmuscle.io.nifti import write_nifti

    scan = _phantom()
    write_nifti(tmp_path / "phantom.nii.gz", scan.hu, scan.affine)
    (tmp_path / "broken.dcm").write_bytes(b"not a dicom file")
    result = CliRunner().invoke(cli, ["level", str(tmp_path / "phantom.nii.gz"), str(tmp_path / "broken.dcm")])
    assert result.exit_code == 1
    assert "L3 not found: no spine found" in result.output
    assert "broken.dcm" in result.output and "Traceback" not in result.output
    js = CliRunner().invoke(cli, ["level", str(tmp_path / "phantom.nii.gz"), "--json"])
    obj = json.loads(js.output)
    assert obj["l3"]["found"] is False and obj["l3"]["reason"].startswith("no spine found")


def test_predict_auto_skips_a_volume_without_l3(tmp_path, tiny_bundle):
    """A volume where no spine is found is reported in one line and not measured; the rest of the batch goes
    on (a three-slice series is the user's own L3 choice and is measured)."""
    from kerasmuscle.io.nifti import write_nifti

    scan = _phantom()
    write_nifti(tmp_path / "phantom.nii.gz", scan.hu, scan.affine)
    stack = write_series(tmp_path / "stack", phantom_hu(slices=3))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "phantom.nii.gz"), str(stack), "--model",
                                      str(tiny_bundle), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "1 done" in result.output and "1 without L3" in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("no L3:")]
    assert len(lines) == 1 and "phantom.nii.gz" in lines[0] and "no spine found" in lines[0]
    assert not (out / "phantom").exists()
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert [r["case"] for r in rows] == ["stack"] and rows[0]["level_method"] == "user"
    record = json.loads((out / "stack" / "measurements.json").read_text())
    assert record["level"]["method"] == "user" and "user_choice" in record["level"]["l3"]["flags"]
    assert not (out / "stack" / "level.png").exists()                 # no level picture for the user's choice


def test_predict_default_is_auto_on_tcia(tmp_path):
    """The shipped model, no --slices: the level finder's three L3 slices are measured and recorded."""
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["predict", str(TCIA), "--out", str(out), "--precision", "int8",
                                      "--format", "png,level,csv", "--height", "1.72"])
    assert result.exit_code == 0, result.output
    case = next(p for p in out.iterdir() if p.is_dir())
    record = json.loads((case / "measurements.json").read_text())
    assert record["level"]["method"] == "auto" and record["settings"]["slices"] == "auto"
    assert record["slice_indices"] == list(range(record["level"]["l3"]["slices"][0],
                                                 record["level"]["l3"]["slices"][1] + 1))
    assert (case / "level.png").stat().st_size > 10_000
    row = next(csv.DictReader(open(out / "measurements.csv")))
    assert row["level_method"] == "auto" and float(row["level_confidence"]) > 0
    assert row["level_z_mm"] and "sacrum_count_only" in row["level_flags"]
    from kerasmuscle.demo import _level_line

    line = _level_line(out)
    assert line.startswith("L3 found from the spine: slices ") and "level.png" in line
    # the same command again: finished with the same settings, skipped
    again = CliRunner().invoke(cli, ["predict", str(TCIA), "--out", str(out), "--precision", "int8",
                                     "--format", "png,level,csv", "--height", "1.72"])
    assert again.exit_code == 0 and "1 finished earlier" in again.output


def test_a_scout_and_a_gap_at_l3_say_why(tcia, tmp_path):
    """A localizer image is refused by the level finder (not taken as the user's one L3 slice); a series with
    a gap at mid-L3 says where L3 is and which positions are missing."""
    import dataclasses

    from kerasmuscle.core.level import find_levels
    from kerasmuscle.io.scan import DicomInfo

    info = dataclasses.replace(tcia.dicom, tags={**tcia.dicom.tags, "image_type": "ORIGINAL\\PRIMARY\\LOCALIZER"})
    scout = dataclasses.replace(tcia, hu=tcia.hu[44:45], positions=tcia.positions[44:45], dicom=info)
    assert isinstance(info, DicomInfo)
    result = find_levels(scout)
    assert not result.l3.found and "localizer" in result.l3.flags and "scout" in result.l3.reason
    keep = np.r_[0:42, 47:len(tcia.hu)]
    gapped = dataclasses.replace(tcia, hu=tcia.hu[keep], positions=tcia.positions[keep], dicom=None)
    result = find_levels(gapped)
    assert not result.l3.found and "gap" in result.l3.flags
    assert "L3 lies in a gap between slices" in result.l3.reason and "skips from" in result.l3.reason
