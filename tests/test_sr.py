"""DICOM SR (TID 1500) per case: written by default for DICOM inputs, valid by dciodvfy, readable by highdicom,
its values those of measurements.json, referencing the images and the SEG's segments."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner

from conftest import dciodvfy_or_skip, dicom_case
from kerasmuscle.cli import cli
from kerasmuscle.labels import MUSCLE_LABELS

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def case(tiny_bundle, small_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("sr") / "out"
    result = CliRunner().invoke(cli, ["predict", str(dicom_case(small_cohort, 1)), "--model", str(tiny_bundle),
                                      "--out", str(out), "--slices", "0-2", "--height", "1.68"])
    assert result.exit_code == 0, result.output
    return out / "case_0001"


def test_sr_is_written_by_default_and_passes_dciodvfy(case):
    assert (case / "sr.dcm").is_file() and (case / "seg.dcm").is_file()
    run = subprocess.run([dciodvfy_or_skip(), str(case / "sr.dcm")], capture_output=True, text=True)
    report = run.stdout + run.stderr
    assert "Error" not in report, report


def test_sr_values_equal_the_json(case):
    from kerasmuscle.io.sr import read_sr_values

    m = json.loads((case / "measurements.json").read_text())["measurements"]
    values = read_sr_values(case / "sr.dcm")
    got = {(v["group"], v["name"], v["laterality"]): v["value"] for v in values}
    expected = {}
    for lab in MUSCLE_LABELS:
        if not m[f"{lab.key}_area_cm2"]:
            continue
        g = f"{lab.name} at the measured slices"
        expected[(g, "Area", None)] = m[f"{lab.key}_area_cm2"]
        expected[(g, "Mean", None)] = m[f"{lab.key}_mean_hu"]
        expected[(g, "Area", "Left")] = m[f"{lab.key}_left_area_cm2"]
        expected[(g, "Area", "Right")] = m[f"{lab.key}_right_area_cm2"]
    g = "skeletal muscle, all five groups"
    expected[(g, "Area", None)] = m["sma_cm2"]
    expected[(g, "Skeletal muscle index", None)] = m["smi_cm2_m2"]
    expected[(g, "Mean", None)] = m["muscle_mean_hu"]
    assert len(expected) > 6
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_sr_reads_back_with_highdicom_and_references_seg_and_images(case):
    import pydicom

    sr = hd.sr.srread(case / "sr.dcm")
    seg = pydicom.dcmread(case / "seg.dcm")
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert groups, "no group references the SEG"
    refs = {g.referenced_segment.referenced_sop_instance_uid for g in groups}
    assert refs == {seg.SOPInstanceUID}
    numbers = {n for g in groups for n in g.referenced_segment.referenced_segment_numbers}
    assert numbers <= {int(s.SegmentNumber) for s in seg.SegmentSequence}
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence and len(evidence) == 4   # three CT slices and the SEG
    site = groups[0].finding_sites[0]
    assert site.value.CodeMeaning == "L3 vertebra"    # the slices were the user's own L3 choice


def test_sr_of_a_real_series_with_an_empty_character_set(dcmqi_dir, tiny_bundle, tmp_path):
    """dcmqi's three CT slices carry an empty Specific Character Set, which highdicom refuses to copy: the SR
    (like the SEG) is written without it and passes dciodvfy."""
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(dcmqi_dir), "--model", str(tiny_bundle), "--out", str(out),
                                      "--format", "seg,sr"])
    assert result.exit_code == 0, result.output
    (sr,) = out.glob("*/sr.dcm")
    run = subprocess.run([dciodvfy_or_skip(), str(sr)], capture_output=True, text=True)
    assert "Error" not in run.stdout + run.stderr
