"""Synthetic cohorts on disk: exact round trips through DICOM, NIfTI and DICOM SEG, determinism, validity."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from conftest import dciodvfy_or_skip
from kerasmuscle import read_labels, read_scan
from kerasmuscle.config import SynthConfig
from kerasmuscle.data import load_dataset
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.synth.cohort import make_planned_case, plan_cohort, write_cohort


def test_dataset_json_describes_every_case(cohort):
    data = json.loads((cohort / "dataset.json").read_text())
    assert data["synthetic"] is True and len(data["cases"]) == 3
    for rec in data["cases"]:
        assert {"id", "patient_id", "image", "labels", "height_m"} <= set(rec)
        for key in ("image", "labels", "seg"):
            assert not rec[key].startswith("/"), "paths are relative to the dataset folder"
            assert (cohort / rec[key]).exists()
        assert 1.4 < rec["height_m"] < 2.1
    cases = load_dataset(cohort)
    assert [c.id for c in cases] == [r["id"] for r in data["cases"]]


def test_round_trip_reproduces_hu_and_labels_exactly(cohort):
    config = SynthConfig()
    for case, plan in zip(load_dataset(cohort), plan_cohort(3, 11, config)):
        truth = make_planned_case(plan, 11, config)
        scan = read_scan(case.image)
        assert scan.warnings == []
        assert np.array_equal(scan.hu, truth.hu), case.id
        assert scan.spacing == pytest.approx((config.slice_spacing_mm, truth.pixel_spacing_mm,
                                              truth.pixel_spacing_mm))
        assert np.diff(scan.slice_locations) == pytest.approx([5.0, 5.0], abs=1e-6)
        assert scan.height_m == pytest.approx(case.height_m, abs=0.005)
        nifti = read_labels(case.labels, like=scan)
        seg = read_labels(case.seg, like=scan)
        assert np.array_equal(nifti.array, truth.labels)
        assert np.array_equal(seg.array, truth.labels)
        assert seg.names[3] == "psoas major"


def test_ct_attributes_of_a_real_series(cohort):
    scan = read_scan(load_dataset(cohort)[0].image)
    info = scan.dicom
    assert info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert len(set(info.sop_instance_uids)) == 3
    assert info.tags["modality"] == "CT" and "SYNTHETIC" in info.tags["series_description"]
    assert float(info.headers[0].SliceThickness) == 5.0
    fov = float(info.headers[0].PixelSpacing[0]) * 512
    assert 320 - 1e-6 <= fov <= 500 + 1e-6
    assert "not patient data" in info.headers[0].ImageComments


def test_uids_are_unique_across_cases(cohort):
    uids = []
    for case in load_dataset(cohort):
        info = read_scan(case.image).dicom
        uids += [info.study_uid, info.series_uid, info.frame_of_reference_uid, *info.sop_instance_uids]
    assert len(uids) == len(set(uids))


def test_dciodvfy_accepts_the_ct_and_the_seg(cohort):
    tool = dciodvfy_or_skip()
    case = load_dataset(cohort)[0]
    for path in [*sorted(case.image.iterdir())[:1], case.seg]:
        result = subprocess.run([tool, str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_same_seed_same_cohort_any_worker_count(tmp_path):
    config = SynthConfig(image_size=128)
    write_cohort(tmp_path / "a", cases=3, seed=5, config=config, workers=1)
    write_cohort(tmp_path / "b", cases=3, seed=5, config=config, workers=2)
    write_cohort(tmp_path / "c", cases=2, seed=5, config=config, workers=1)
    write_cohort(tmp_path / "d", cases=2, seed=6, config=config, workers=1)
    a, b = (json.loads((tmp_path / x / "dataset.json").read_text()) for x in "ab")
    assert a == b
    for rel in ("case_0000/dicom/IM0001.dcm", "case_0002/dicom/IM0003.dcm", "case_0001/seg.dcm"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    # Fewer cases with the same seed are a prefix; another seed differs.
    c = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert c["cases"] == a["cases"][:2]
    d = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert d["cases"][0]["patient_id"] != a["cases"][0]["patient_id"]
    ha, hd_ = (read_scan(tmp_path / x / "case_0000" / "dicom").hu for x in "ad")
    assert not np.array_equal(ha, hd_)


def test_follow_up_scans_share_the_patient():
    plans = plan_cohort(40, 3, SynthConfig(follow_up_fraction=0.5))
    patients = [p.patient for p in plans]
    assert len(set(patients)) < 35, "about half the cases should re-scan an earlier patient"
    assert all(p.visit == patients[: p.index].count(p.patient) for p in plans)
    none = plan_cohort(20, 3, SynthConfig(follow_up_fraction=0.0))
    assert [p.patient for p in none] == list(range(20))


def test_existing_output_is_never_lost(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(KerasMuscleError, match="folder exists and is not empty"):
        write_cohort(out, cases=1, config=SynthConfig(image_size=64), workers=1)
    assert (out / "precious.txt").read_text() == "keep me"


def test_a_failed_run_leaves_nothing_half_written(tmp_path, monkeypatch):
    import kerasmuscle.synth.cohort as cohort_module

    real = cohort_module.make_planned_case

    def fail_on_second(plan, seed, config):
        if plan.index == 1:
            raise RuntimeError("disk full")
        return real(plan, seed, config)

    monkeypatch.setattr(cohort_module, "make_planned_case", fail_on_second)
    with pytest.raises(RuntimeError, match="disk full"):
        write_cohort(tmp_path / "out", cases=3, config=SynthConfig(image_size=64), workers=1)
    assert list(tmp_path.iterdir()) == []
