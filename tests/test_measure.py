"""Tests of clinical measurements: areas, sides, attenuation, SMI, midline and height sources."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from kerasmuscle.errors import ReadError
from kerasmuscle.io.scan import Scan
from kerasmuscle.labels import MUSCLE_LABELS
from kerasmuscle.core.measure import (
    CASE_COLUMNS,
    MEASUREMENT_COLUMNS,
    columns,
    measure_case,
    measure_slices,
    midline_column,
    patient_left_is_higher_column,
    read_heights,
    resolve_height,
)

PX_CM2 = 0.8 * 0.8 / 100  # one 0.8 x 0.8 mm pixel in cm²
PSOAS, RECTUS = 3, 1


def make_scan(hu: np.ndarray, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)) -> Scan:
    hu = np.asarray(hu, np.float32)
    positions = np.array([[0.0, 0.0, 3.0 * z] for z in range(len(hu))])
    return Scan(hu=hu, spacing=(3.0, 0.8, 0.8), positions=positions, orientation=orientation)


def two_psoas(slices: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A 40x60 body (cols 5..54, midline 29.5) with a 10x20 psoas block on each side.

    Block at cols 10..29 alternates 20/40 HU (mean 30, SD 10); block at cols 30..49 alternates
    40/60 HU (mean 50, SD 10).
    """
    hu = np.full((slices, 40, 60), -1000.0, np.float32)
    hu[:, 5:35, 5:55] = 0.0
    labels = np.zeros(hu.shape, np.uint8)
    labels[:, 10:20, 10:30] = PSOAS
    labels[:, 10:20, 30:50] = PSOAS
    alternate = (np.indices((10, 20)).sum(0) % 2).astype(np.float32)
    hu[:, 10:20, 10:30] = 20 + 20 * alternate
    hu[:, 10:20, 30:50] = 40 + 20 * alternate
    return hu, labels


def test_areas_sides_hu_and_smi():
    hu, labels = two_psoas()
    (row,) = measure_slices(make_scan(hu), labels, height_m=1.75)
    assert list(row) == columns(per_slice=True)
    assert row["slice_index"] == 0 and row["slice_location_mm"] == 0.0 and row["midline_col"] == 29.5
    assert row["psoas_left_area_cm2"] == pytest.approx(200 * PX_CM2)
    assert row["psoas_right_area_cm2"] == pytest.approx(200 * PX_CM2)
    assert row["psoas_area_cm2"] == pytest.approx(2.56)
    # Standard axial layout: higher columns are the patient's left.
    assert row["psoas_left_mean_hu"] == pytest.approx(50.0) and row["psoas_left_sd_hu"] == pytest.approx(10.0)
    assert row["psoas_right_mean_hu"] == pytest.approx(30.0) and row["psoas_right_sd_hu"] == pytest.approx(10.0)
    assert row["psoas_mean_hu"] == pytest.approx(40.0)
    assert row["psoas_sd_hu"] == pytest.approx(math.sqrt(200.0))  # values 20, 40, 40, 60 in equal shares
    assert row["sma_cm2"] == pytest.approx(2.56)
    assert row["sma_left_cm2"] == pytest.approx(1.28) and row["sma_right_cm2"] == pytest.approx(1.28)
    assert row["muscle_mean_hu"] == pytest.approx(40.0) and row["muscle_sd_hu"] == pytest.approx(math.sqrt(200.0))
    assert row["height_m"] == 1.75
    assert row["smi_cm2_m2"] == pytest.approx(2.56 / 1.75**2)
    assert row["rectus_area_cm2"] == 0.0 and math.isnan(row["rectus_mean_hu"]) and math.isnan(row["rectus_sd_hu"])


def test_flipped_orientation_swaps_sides():
    hu, labels = two_psoas()
    (row,) = measure_slices(make_scan(hu, (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)), labels)
    assert row["psoas_left_mean_hu"] == pytest.approx(30.0)
    assert row["psoas_right_mean_hu"] == pytest.approx(50.0)
    assert row["height_m"] is None and row["smi_cm2_m2"] is None


def test_empty_region_is_nan_with_zero_area():
    hu, labels = two_psoas()
    labels[0, 25:30, 40:45] = RECTUS  # the patient's left only
    (row,) = measure_slices(make_scan(hu), labels)
    assert row["rectus_left_area_cm2"] == pytest.approx(25 * PX_CM2)
    assert row["rectus_left_mean_hu"] == 0.0 and row["rectus_left_sd_hu"] == 0.0
    assert row["rectus_right_area_cm2"] == 0.0
    assert math.isnan(row["rectus_right_mean_hu"]) and math.isnan(row["rectus_right_sd_hu"])
    assert row["sma_cm2"] == pytest.approx(2.56 + 25 * PX_CM2)


def test_case_pools_hu_over_pixels():
    hu = np.full((2, 40, 60), -1000.0, np.float32)
    hu[:, 5:35, 5:55] = 0.0
    labels = np.zeros(hu.shape, np.uint8)
    labels[0, 10:20, 10:30] = PSOAS  # 200 px at 0 HU
    labels[1, 10:20, 30:40] = PSOAS  # 100 px at 90 HU
    hu[1, 10:20, 30:40] = 90.0
    rows, case = measure_case(make_scan(hu), labels, height_m=1.6)
    assert [r["psoas_mean_hu"] for r in rows] == [0.0, 90.0]  # mean of slice means would be 45
    assert list(case) == columns(per_slice=False)
    assert case["slices"] == 2 and case["slice_indices"] == [0, 1]
    assert case["psoas_mean_hu"] == pytest.approx(30.0)
    assert case["psoas_sd_hu"] == pytest.approx(math.sqrt(1800.0))
    assert case["muscle_mean_hu"] == pytest.approx(30.0)
    assert case["psoas_area_cm2"] == pytest.approx(150 * PX_CM2)
    assert case["psoas_right_area_cm2"] == pytest.approx(100 * PX_CM2)  # 200 then 0
    assert case["psoas_left_area_cm2"] == pytest.approx(50 * PX_CM2)  # 0 then 100
    assert case["psoas_left_mean_hu"] == pytest.approx(90.0) and case["psoas_right_mean_hu"] == pytest.approx(0.0)
    assert case["sma_cm2"] == pytest.approx(150 * PX_CM2)
    assert case["smi_cm2_m2"] == pytest.approx(150 * PX_CM2 / 1.6**2)
    assert math.isnan(case["erector_spinae_mean_hu"]) and case["erector_spinae_area_cm2"] == 0.0


def test_default_and_explicit_slices_and_midline_overrides():
    hu, labels = two_psoas(slices=3)
    labels[2] = 0
    scan = make_scan(hu)
    assert [r["slice_index"] for r in measure_slices(scan, labels)] == [0, 1]
    rows = measure_slices(scan, np.zeros_like(labels))
    assert [r["slice_index"] for r in rows] == [0, 1, 2] and rows[2]["slice_location_mm"] == 6.0
    rows = measure_slices(scan, labels, [1], midlines=[9.0])  # every psoas pixel lies above column 9
    assert rows[0]["midline_col"] == 9.0 and rows[0]["psoas_left_area_cm2"] == pytest.approx(400 * PX_CM2)
    rows = measure_slices(scan, labels, [0, 1], midlines={1: 100.0})
    assert [r["midline_col"] for r in rows] == [29.5, 100.0]
    assert rows[1]["psoas_right_area_cm2"] == pytest.approx(400 * PX_CM2)


def test_midline_of_offset_ellipse_ignores_table_and_arm():
    rows, cols = np.indices((128, 160))
    hu = np.full((128, 160), -1000.0, np.float32)
    hu[((cols - 70) / 40.0) ** 2 + ((rows - 60) / 30.0) ** 2 <= 1] = 30.0
    assert midline_column(hu) == 70.0  # image centre is 79.5
    hu[118:120, :] = 300.0  # a thin couch across the whole width
    assert midline_column(hu) == 70.0
    hu[50:70, 150:156] = 40.0  # an arm apart from the trunk
    hu[100:118, 0] = 300.0  # the couch edge curving up at the border
    assert midline_column(hu) == 70.0
    assert midline_column(np.full((10, 32), -1000.0)) == 15.5
    with pytest.raises(ValueError, match="one slice"):
        midline_column(np.zeros((2, 3, 4)))


def test_orientation_sides():
    assert patient_left_is_higher_column((1, 0, 0, 0, 1, 0)) is True
    assert patient_left_is_higher_column((-0.9, 0.1, 0, 0, 1, 0)) is False
    with pytest.raises(ValueError, match="left-right"):
        patient_left_is_higher_column((0, 1, 0, 0, 0, -1))


def test_bad_arguments():
    hu, labels = two_psoas(slices=2)
    scan = make_scan(hu)
    with pytest.raises(ValueError, match=r"\(2, 40, 59\).*\(2, 40, 60\)"):
        measure_slices(scan, labels[:, :, :59])
    with pytest.raises(ValueError, match="out of range"):
        measure_slices(scan, labels, [2])
    with pytest.raises(ValueError, match="out of range"):
        measure_slices(scan, labels, [-1])
    with pytest.raises(ValueError, match="twice"):
        measure_slices(scan, labels, [0, 0])
    with pytest.raises(ValueError, match="centimetres"):
        measure_slices(scan, labels, height_m=175)
    with pytest.raises(ValueError, match="outside"):
        measure_slices(scan, labels, height_m=3.5)
    with pytest.raises(ValueError, match="2 slices"):
        measure_slices(scan, labels, midlines=[1.0])


def test_columns():
    assert columns(True) == list(MEASUREMENT_COLUMNS) and columns(False) == list(CASE_COLUMNS)
    assert columns(True)[:3] == ["slice_index", "slice_location_mm", "midline_col"]
    assert columns(False)[:2] == ["slices", "slice_indices"]
    assert columns(True)[3:] == columns(False)[2:]
    assert columns(True)[-7:] == ["sma_cm2", "sma_left_cm2", "sma_right_cm2", "muscle_mean_hu", "muscle_sd_hu",
                                  "height_m", "smi_cm2_m2"]
    assert len(columns(True)) == 3 + 9 * len(MUSCLE_LABELS) + 7


def test_read_heights(tmp_path):
    cm = tmp_path / "cm.csv"
    cm.write_text("patient_id,name,height_cm\nP1,a,175\nP2,b,\nP3,c,160.5\n", encoding="utf-8")
    assert read_heights(cm) == pytest.approx({"P1": 1.75, "P3": 1.605})
    m = tmp_path / "m.csv"
    m.write_text("\ufeffName, Height_m ,case_id\nx,1.8,case_0\ny,1.62,case_1\n", encoding="utf-8")
    assert read_heights(m) == {"case_0": 1.8, "case_1": 1.62}  # case_id wins over name


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("case_id,height_m\nc0,1.7\nc1,tall\n", "line 3: column height_m: 'tall' is not a number"),
        ("case_id,height_m\nc0,175\n", "line 2: column height_m: .*centimetres"),
        ("case_id,height_cm\nc0,170\nc1,1.7\n", "line 3: column height_cm: .*outside"),
        ("case_id,height_m\n,1.7\n", "line 2: column case_id is empty"),
        ("case_id,height_m\nc0,1.7\nc0,1.8\n", "line 3: .*already"),
        ("id,height_m\nc0,1.7\n", "no id column"),
        ("case_id,weight_kg\nc0,70\n", "no height column"),
        ("", "empty"),
    ],
)
def test_read_heights_errors(tmp_path, text, match):
    path = tmp_path / "heights.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReadError, match=match) as info:
        read_heights(path)
    assert info.value.path == str(path)


def test_read_heights_missing_file(tmp_path):
    with pytest.raises(ReadError, match="cannot read"):
        read_heights(tmp_path / "none.csv")


def test_resolve_height_priority():
    scan = SimpleNamespace(height_m=1.6)
    table = {"case_0": 1.7, "P1": 1.72}
    assert resolve_height(1.8, table, ["case_0"], scan) == (1.8, "option")
    assert resolve_height(None, table, ["case_9", "P1", "case_0"], scan) == (1.72, "csv")
    assert resolve_height(None, table, "case_0", scan) == (1.7, "csv")
    assert resolve_height(None, table, ["nobody"], scan) == (1.6, "dicom")
    assert resolve_height(None, None, (), SimpleNamespace(height_m=None)) == (None, "unknown")
    assert resolve_height() == (None, "unknown")
    with pytest.raises(ValueError, match="centimetres"):
        resolve_height(180)


def test_synthetic_case_midline_and_psoas_sides():
    from kerasmuscle.config import SynthConfig
    from kerasmuscle.synth.case import make_case

    # Seed 4 puts the patient 20.6 mm off centre, and the couch edge rises at the image border.
    case = make_case(np.random.default_rng(4), SynthConfig(image_size=128))
    n, spacing = case.hu.shape[1], case.pixel_spacing_mm
    centre = (n - 1) / 2 + case.acquisition["offset_mm"][0] / spacing
    assert abs(centre - (n - 1) / 2) > 5
    positions = np.array([[0.0, 0.0, z] for z in case.slice_offsets_mm])
    scan = Scan(hu=case.hu, spacing=(5.0, spacing, spacing), positions=positions)
    rows, summary = measure_case(scan, case.labels, height_m=case.patient["height_m"])
    assert len(rows) == 3
    for row in rows:
        assert abs(row["midline_col"] - centre) <= 3
        assert row["psoas_left_area_cm2"] > 0 and row["psoas_right_area_cm2"] > 0
        assert 0.5 < row["psoas_left_area_cm2"] / row["psoas_right_area_cm2"] < 2
    assert summary["smi_cm2_m2"] == pytest.approx(summary["sma_cm2"] / case.patient["height_m"] ** 2)


def test_import_is_numpy_only():
    code = ("import sys, kerasmuscle.core.measure; "
            "print(sorted(m for m in ('scipy', 'tensorflow', 'keras', 'pydicom', 'nibabel') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
