"""Preprocessing, dataset discovery, patient-grouped splits and the tf.data pipeline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kerasmuscle.config import AugmentConfig, PreprocessConfig
from kerasmuscle.data import discover_cases, load_splits, make_splits, save_splits
from kerasmuscle.data.dataset import Case, read_case
from kerasmuscle.errors import ReadError
from kerasmuscle.core.preprocessing import (normalise, prepare_labels, prepare_slices, probabilities_to_labels,
                                       resize_image, resize_labels, resize_matrix)


def test_normalise_maps_the_window_onto_minus_one_to_one():
    out = normalise(np.array([-1000.0, -250.0, 0.0, 125.0, 250.0, 3000.0]), (-250.0, 250.0))
    np.testing.assert_allclose(out, [-1, -1, 0, 0.5, 1, 1])
    assert out.dtype == np.float32


def test_resize_matrices_keep_constants_and_average_when_shrinking():
    for n_in, n_out in ((512, 128), (64, 64), (100, 256), (7, 3)):
        m = resize_matrix(n_in, n_out)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    # Shrinking 4x: a one-pixel line is spread, not lost or kept at full strength.
    line = np.zeros((16, 16), np.float32)
    line[:, 5] = 1.0
    small = resize_image(line, (4, 4))
    assert 0.05 < small.max() < 0.6 and small.sum() == pytest.approx(line.sum() / 16, rel=0.05)


def test_resize_labels_is_nearest_and_round_trips_on_integer_factors():
    labels = np.random.default_rng(0).integers(0, 6, (2, 8, 8)).astype(np.uint8)
    up = resize_labels(labels, (32, 32))
    assert set(np.unique(up)) <= set(np.unique(labels))
    np.testing.assert_array_equal(resize_labels(up, (8, 8)), labels)


def test_prepare_slices_channels_take_neighbours_and_repeat_the_edges():
    hu = np.stack([np.full((8, 8), v, np.float32) for v in (-100.0, 0.0, 100.0)])
    one = prepare_slices(hu, [1], PreprocessConfig(image_size=16, channels=1, hu_window=(-200.0, 200.0)))
    three = prepare_slices(hu, [0, 2], PreprocessConfig(image_size=16, channels=3, hu_window=(-200.0, 200.0)))
    assert one.shape == (1, 16, 16, 1) and np.allclose(one, 0.0)
    assert three.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(three[0, 0, 0], [-0.5, -0.5, 0.0])  # slice 0: itself twice, then slice 1
    np.testing.assert_allclose(three[1, 0, 0], [0.0, 0.5, 0.5])


def test_probabilities_go_back_to_the_scan_grid():
    labels = np.zeros((1, 64, 64), np.uint8)
    labels[0, 16:48, 16:48] = 3
    small = prepare_labels(labels, [0], PreprocessConfig(image_size=32))
    prob = np.eye(6, dtype=np.float32)[small]
    back = probabilities_to_labels(prob, (64, 64))
    assert back.shape == (1, 64, 64)
    assert (back == labels).mean() > 0.99


def test_discover_synth_layout(cohort):
    cases = discover_cases(cohort)
    assert [c.id for c in cases] == ["case_0000", "case_0001", "case_0002"]
    scan, labels = read_case(cases[0])
    assert labels.array.shape == scan.hu.shape and len(labels.labelled_slices()) == 3


def test_discover_case_folders_with_dicom_and_seg(tmp_path, cohort):
    pytest.importorskip("highdicom")
    for case in discover_cases(cohort):
        shutil.copytree(case.image, tmp_path / case.id / "ct")
        shutil.copy(case.seg, tmp_path / case.id / "seg.dcm")
    (tmp_path / "cases.csv").write_text("id,patient_id,height_m\ncase_0001,P1,1.80\n")
    cases = discover_cases(tmp_path)
    assert [c.labels.name for c in cases] == ["seg.dcm"] * 3
    assert cases[1].patient_id == "P1" and cases[1].height_m == 1.8
    assert cases[0].patient_id.startswith("SYN")  # from the DICOM PatientID
    _, from_seg = read_case(cases[0])
    _, from_nifti = read_case(discover_cases(cohort)[0])
    np.testing.assert_array_equal(from_seg.array, from_nifti.array)  # SEG segments mapped to label ids


def test_discover_nifti_pairs(tmp_path, cohort):
    from kerasmuscle.io import read_scan
    from kerasmuscle.io.nifti import write_nifti

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for case in discover_cases(cohort)[:2]:
        scan = read_scan(case.image)
        write_nifti(tmp_path / "imagesTr" / f"{case.id}_0000.nii.gz", scan.hu, scan.affine)
        shutil.copy(case.labels, tmp_path / "labelsTr" / f"{case.id}.nii.gz")
    cases = discover_cases(tmp_path)
    assert [c.id for c in cases] == ["case_0000", "case_0001"]
    scan, labels = read_case(cases[1])
    assert len(labels.labelled_slices()) == 3


@pytest.mark.parametrize("make, cause", [
    (lambda p: None, "no labelled cases found"),
    (lambda p: (p / "x").mkdir() or (p / "x" / "image.nii.gz").write_text(""), "no labelled cases found"),
])
def test_discover_errors_name_the_folder(tmp_path, make, cause):
    make(tmp_path)
    with pytest.raises(ReadError, match=cause) as info:
        discover_cases(tmp_path)
    assert str(tmp_path) in str(info.value)


def _cases(patients):
    return [Case(id=f"c{i}", patient_id=p, image=None) for i, p in enumerate(patients)]  # type: ignore[arg-type]


def test_splits_group_patients_and_cover_every_case_once():
    patients = ["a", "a", "a", "b", "c", "c", "d", "e", "f", "g", "h", "h", "i", "j", "k", "l"]
    cases = _cases(patients)
    splits = make_splits(cases, folds=5, seed=3, tune_fraction=0.2)
    patient = {c.id: c.patient_id for c in cases}
    vals = [c for f in splits["folds"] for c in f["val"]]
    assert sorted(vals) == sorted(c.id for c in cases)
    for fold in splits["folds"]:
        groups = [{patient[c] for c in fold[part]} for part in ("train", "tune", "val")]
        assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
        assert sorted(fold["train"] + fold["tune"] + fold["val"]) == sorted(c.id for c in cases)
        assert fold["tune"]
    sizes = [len(f["val"]) for f in splits["folds"]]
    assert max(sizes) - min(sizes) <= 3  # at most one patient's cases apart
    assert make_splits(cases, folds=5, seed=3, tune_fraction=0.2) == splits
    assert make_splits(cases, folds=5, seed=4, tune_fraction=0.2) != splits


def test_too_few_patients_for_the_folds():
    with pytest.raises(ValueError, match="at least 4 patients"):
        make_splits(_cases(["a", "a", "b", "c"]), folds=4)


def test_hand_edited_splits_are_checked(tmp_path):
    cases = _cases(["a", "a", "b", "c", "d"])
    path = tmp_path / "splits.json"
    save_splits(make_splits(cases, folds=2, seed=0, tune_fraction=0.0), path)
    assert load_splits(path, cases)["folds"][0]["val"]
    data = json.loads(path.read_text())
    fold = data["folds"][0]
    a_case = "c0" if "c0" in fold["val"] else "c1"
    fold["train"].append("c1" if a_case == "c0" else "c0")  # patient a in train and val
    path.write_text(json.dumps(data))
    with pytest.raises(ReadError, match="patient\\(s\\) a in both train and val"):
        load_splits(path, cases)
    data["folds"][0]["train"].append("nope")
    path.write_text(json.dumps(data))
    with pytest.raises(ReadError, match="unknown case"):
        load_splits(path, cases)


@pytest.fixture(scope="module")
def slices(small_cohort):
    pytest.importorskip("tensorflow")
    from kerasmuscle.data.pipeline import load_slices

    return load_slices(discover_cases(small_cohort), PreprocessConfig(image_size=32))


def test_slice_set_shapes_and_cache(small_cohort, tmp_path, slices):
    from kerasmuscle.data.pipeline import load_slices

    assert slices.images.shape == (24, 32, 32, 1) and slices.labels.shape == (24, 32, 32)
    assert slices.images.dtype == np.float32 and slices.labels.dtype == np.uint8
    assert set(np.unique(slices.labels)) == set(range(6))
    cached = load_slices(discover_cases(small_cohort), PreprocessConfig(image_size=32), cache_dir=tmp_path)
    again = load_slices(discover_cases(small_cohort), PreprocessConfig(image_size=32), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 8
    assert cached.sha256() == again.sha256() == slices.sha256()
    sub = slices.subset(["case_0003", "case_0001"])
    assert sub.case_ids[:3] == ["case_0003"] * 3 and len(sub) == 6


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_pipeline_shapes_determinism_and_resume(slices):
    from kerasmuscle.data.pipeline import make_dataset

    aug = AugmentConfig()
    full = _batches(make_dataset(slices, 5, seed=7, augment=aug, epochs=(0, 3)))
    assert len(full) == 3 * 5  # 24 slices: 4 batches of 5 and one of 4 per epoch, never across epochs
    assert full[0][0].shape == (5, 32, 32, 1) and full[4][0].shape == (4, 32, 32, 1)
    assert full[0][1].dtype == np.uint8
    again = _batches(make_dataset(slices, 5, seed=7, augment=aug, epochs=(0, 3)))
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(full, again))
    resumed = _batches(make_dataset(slices, 5, seed=7, augment=aug, epochs=(2, 3)))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(full[10:], resumed))
    other = _batches(make_dataset(slices, 5, seed=8, augment=aug, epochs=(0, 1)))
    assert not np.array_equal(other[0][0], full[0][0])
    # Epochs differ from each other (new order, new augmentation).
    assert not np.array_equal(full[0][0], full[5][0])


def test_validation_pipeline_is_unaugmented_and_in_order(slices):
    from kerasmuscle.data.pipeline import make_dataset

    batches = _batches(make_dataset(slices, 8, shuffle=False, augment=None, epochs=(0, 1)))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), slices.images)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), slices.labels)


def test_augmentation_moves_image_and_labels_together(slices):
    from kerasmuscle.data.pipeline import make_dataset

    still = AugmentConfig(intensity_scale=(1.0, 1.0), intensity_shift_hu=0.0, noise_hu=(0.0, 0.0))
    x, y = _batches(make_dataset(slices, 24, seed=1, augment=still, epochs=(0, 1)))[0]
    assert set(np.unique(y)) <= set(range(6))
    assert not np.array_equal(np.sort(y.ravel()), np.sort(slices.labels.ravel()))  # geometry changed
    # Labels still sit on the same intensities after the shared transform; labels left in place would not.
    before = slices.images[..., 0][slices.labels > 0].mean()
    assert abs(x[..., 0][y > 0].mean() - before) < 0.05
    assert abs(x[..., 0][slices.labels > 0].mean() - before) > 0.1
    off = AugmentConfig(enabled=False)
    x0, _ = _batches(make_dataset(slices, 24, seed=1, augment=off, shuffle=False, epochs=(0, 1)))[0]
    np.testing.assert_array_equal(x0, slices.images)
