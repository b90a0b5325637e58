"""``kerasmuscle measure SCAN --labels MASK``: a mask the user has (predict's output, corrected) measured with
the same outputs as predict; a mask on another grid or with unknown values refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import dicom_case
from kerasmuscle.cli import cli
from kerasmuscle.errors import ReadError
from kerasmuscle.predict.masks import muscle_labels


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def predicted(tiny_bundle, small_cohort, tmp_path_factory) -> tuple[Path, Path]:
    """A DICOM case and predict's outputs for it (slices 0-2)."""
    scan = dicom_case(small_cohort, 0)
    out = tmp_path_factory.mktemp("pred") / "out"
    result = run("predict", scan, "--model", tiny_bundle, "--out", out, "--slices", "0-2", "--height", "1.7",
                 "--format", "nifti,npz,json,csv")
    assert result.exit_code == 0, result.output
    return scan, out / "case_0000"


def test_measuring_predicts_own_mask_gives_the_same_measurements(predicted, tmp_path):
    scan, case = predicted
    before = json.loads((case / "measurements.json").read_text())
    for mask in (case / "labels.nii.gz", case / "labels.npz"):
        out = tmp_path / mask.name.replace(".", "_")
        result = run("measure", scan, "--labels", mask, "--out", out, "--height", "1.7", "--format", "json,csv,png")
        assert result.exit_code == 0, result.output
        after = json.loads((out / "case_0000" / "measurements.json").read_text())
        assert after["model"]["backend"] == "labels" and after["model"]["bundle_path"] == str(mask.resolve())
        assert after["slice_indices"] == before["slice_indices"] == [0, 1, 2]
        for key in ("sma_cm2", "psoas_area_cm2", "erector_spinae_mean_hu", "smi_cm2_m2"):
            assert after["measurements"][key] == pytest.approx(before["measurements"][key], rel=1e-6, abs=1e-9), key
        assert (out / "case_0000" / "overlay.png").is_file() and (out / "measurements.csv").is_file()


def test_a_corrected_mask_changes_the_areas(predicted, tmp_path):
    scan, case = predicted
    image = nib.load(case / "labels.nii.gz")
    labels = np.asarray(image.dataobj).astype(np.uint8)
    labels[labels == 3] = 0          # a reader removes every psoas pixel
    fixed = tmp_path / "fixed.nii.gz"
    nib.save(nib.Nifti1Image(labels, image.affine), fixed)
    result = run("measure", scan, "--labels", fixed, "--out", tmp_path / "out", "--format", "json")
    assert result.exit_code == 0, result.output
    after = json.loads((tmp_path / "out" / "case_0000" / "measurements.json").read_text())
    assert after["measurements"]["psoas_area_cm2"] == 0


def test_bad_masks_get_one_line_and_nothing_written(predicted, tmp_path):
    scan, case = predicted
    image = nib.load(case / "labels.nii.gz")
    labels = np.asarray(image.dataobj).astype(np.uint8)
    odd = labels.copy()
    odd[odd == 5] = 7
    nib.save(nib.Nifti1Image(odd, image.affine), tmp_path / "values.nii.gz")
    nib.save(nib.Nifti1Image(labels[:, :-3], image.affine), tmp_path / "grid.nii.gz")
    for name, cause in (("values.nii.gz", "label value(s) 7 are not kerasmuscle labels"),
                        ("grid.nii.gz", "pixels per slice"), ("missing.nii.gz", "no such file")):
        out = tmp_path / f"out_{name}"
        result = run("measure", scan, "--labels", tmp_path / name, "--out", out)
        assert result.exit_code == 1, result.output
        assert str(tmp_path / name) in result.output and cause in result.output, result.output
        assert "Traceback" not in result.output
        assert not (out / "case_0000").exists()


def test_seg_segments_are_matched_by_name():
    array = np.array([[[0, 1, 2]]], np.uint8)
    mapped = muscle_labels("x.dcm", array, {1: "psoas major", 2: "Erector spinae"})
    assert mapped.tolist() == [[[0, 3, 5]]]
    with pytest.raises(ReadError, match="name no muscle group"):
        muscle_labels("x.dcm", array, {1: "liver", 2: "psoas"})
