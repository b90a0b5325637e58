"""Review flags from anatomy: true labels pass, each kind of wrong mask is caught, the batch records them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import SHARED
from kerasmuscle import read_labels, read_scan
from kerasmuscle.core.measure import measure_case
from kerasmuscle.core.review import LIMITS, review_case
from kerasmuscle.data.dataset import load_dataset

TOTALSEG = SHARED / "data" / "totalsegmentator-s0009"


def _review(scan, lab, slices=None, height=None, raw=None):
    rows, row = measure_case(scan, lab, slices, height_m=height)
    return review_case(scan, lab, row["slice_indices"], row, midlines=[r["midline_col"] for r in rows],
                       raw_labels=raw)


@pytest.fixture(scope="module")
def true_case(cohort):
    case = load_dataset(cohort)[0]
    scan = read_scan(case.image)
    return scan, read_labels(case.labels, like=scan).array.copy()


def test_true_synthetic_labels_need_no_review(cohort):
    for case in load_dataset(cohort):
        scan = read_scan(case.image)
        review = _review(scan, read_labels(case.labels, like=scan).array, height=1.75)
        assert not review.needs_review, (case.id, review.reasons)
        assert review.to_dict() == {"needs_review": False, "flags": []}


def _codes(review):
    return {(f.code, f.group) for f in review.flags}


def test_a_missing_side_is_flagged(true_case):
    scan, lab = true_case
    lab = lab.copy()
    cols = np.arange(lab.shape[2])[None, None, :]
    lab[(lab == 3) & (cols < lab.shape[2] // 2)] = 0  # psoas gone on one side
    review = _review(scan, lab)
    assert ("missing", "psoas") in _codes(review) and review.needs_review
    assert "Psoas not found on the" in review.reasons


def test_unequal_sides_are_flagged(true_case):
    scan, lab = true_case
    lab = lab.copy()
    half = lab.shape[2] // 2
    es = lab == 5
    cols = np.arange(lab.shape[2])[None, None, :]
    # Keep a third of the erector spinae on one side.
    rows_ = np.arange(lab.shape[1])[None, :, None]
    first = np.where(es & (cols < half), rows_, 10_000).min()
    last = np.where(es & (cols < half), rows_, -1).max()
    cut = first + (last - first) // 3
    lab[es & (cols < half) & (rows_ > cut)] = 0
    assert ("side_ratio", "erector_spinae") in _codes(_review(scan, lab))


def test_muscle_on_bone_and_psoas_on_the_vertebral_body_are_flagged(true_case):
    scan, lab = true_case
    lab = lab.copy()
    z = int(np.flatnonzero(lab.reshape(len(lab), -1).any(1))[len(lab) // 2 if len(lab) > 2 else 0])
    bone = scan.hu[z] > 250
    rows_, cols = np.nonzero(bone)
    # The vertebral body: bone pixels near the midline column, in front of the spinal canal (smallest rows).
    mid = lab.shape[2] / 2
    near = np.abs(cols - mid) < 0.08 * lab.shape[2]
    body_rows = rows_[near]
    top = body_rows.min()
    box = (slice(top, top + max(4, (body_rows.max() - top) // 3)), slice(int(mid) - 6, int(mid) + 6))
    lab[z][lab[z] == 3] = 0
    lab[z][box] = 3
    review = _review(scan, lab, slices=[z])
    assert ("on_bone", "psoas") in _codes(review)


def test_quadratus_behind_or_medial_to_the_erector_spinae_is_flagged(true_case):
    scan, lab = true_case
    lab = lab.copy()
    lab[lab == 4] = 0
    # Draw quadratus as a strip on the back of the erector spinae (as a poorly transferred model does).
    for z in range(lab.shape[0]):
        es = lab[z] == 5
        if not es.any():
            continue
        back = np.zeros_like(es)
        back[1:] = es[1:] & ~es[:-1]  # the front edge of the erector spinae, one pixel thick
        for _ in range(3):
            back[1:] |= back[:-1] & es[1:]
        lab[z][back] = 4
    assert ("quadratus_place", "quadratus") in _codes(_review(scan, lab))


def test_implausible_smi_is_flagged(true_case):
    scan, lab = true_case
    review = _review(scan, lab, height=0.8)  # the same muscle on a very short patient: SMI far above 90
    assert ("smi_range", None) in _codes(review)
    assert f"{LIMITS.smi_range[1]:g}" in review.reasons


def test_reference_labels_of_a_real_narrow_scan_flag_only_what_is_outside_the_field():
    """TotalSegmentator s0009 at mid-L3: its reviewed psoas and erector spinae pass; the groups outside the
    178 mm field are reported missing, with the field named as a cause."""
    if not TOTALSEG.is_dir():
        pytest.skip(f"{TOTALSEG} is not here")
    scan = read_scan(TOTALSEG / "ct.nii.gz")
    seg = TOTALSEG / "segmentations"
    l3 = read_labels(seg / "vertebrae_L3.nii.gz", like=scan).array > 0
    mid = int(np.flatnonzero(l3.reshape(len(l3), -1).any(1)).mean())
    lab = np.zeros(scan.hu.shape, np.uint8)
    for name, value in (("iliopsoas", 3), ("autochthon", 5)):
        for side in ("left", "right"):
            lab[read_labels(seg / f"{name}_{side}.nii.gz", like=scan).array > 0] = value
    review = _review(scan, lab, slices=[mid - 1, mid, mid + 1])
    assert _codes(review) == {("missing", "rectus"), ("missing", "abdominal_wall"), ("missing", "quadratus")}
    assert all("field of view" in f.message for f in review.flags)


def test_the_batch_records_the_review(tiny_bundle, small_cohort, tmp_path):
    from click.testing import CliRunner

    from kerasmuscle.cli import cli

    case = load_dataset(small_cohort)[0]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(case.image), "--model", str(tiny_bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(next(out.glob("*/measurements.json")).read_text())
    assert set(record["review"]) == {"needs_review", "flags"}
    row = next(csv.DictReader(open(out / "measurements.csv")))
    assert list(row)[:3] == ["case", "needs_review", "review_reasons"]
    # A tiny model trained 3 epochs finds little of the anatomy: it must be marked, and the CLI says why.
    assert record["review"]["needs_review"] and row["needs_review"] == "True"
    assert row["review_reasons"] == "; ".join(f["message"] for f in record["review"]["flags"])
    assert "needs review: " in result.output
