"""Synthetic data v2: deterministic per seed and index, varied where v1 is constant, read by training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasmuscle.config import SynthV2Config
from kerasmuscle.labels import MUSCLE_IDS
from kerasmuscle.synth.v2 import deformation, sample, write_dataset

SMALL = SynthV2Config(image_size=64)


def test_a_sample_is_its_seed_and_index_only():
    a, b = sample(3, 5, SMALL), sample(3, 5, SMALL)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.labels, b.labels) and a.record == b.record
    assert not np.array_equal(a.hu, sample(3, 6, SMALL).hu)
    assert not np.array_equal(a.hu, sample(4, 5, SMALL).hu)
    assert a.hu.shape == a.labels.shape == (3, 64, 64) and a.hu.dtype == np.float32 and a.labels.dtype == np.uint8
    assert np.array_equal(a.hu, np.rint(a.hu)) and -1024 <= a.hu.min() and a.hu.max() <= 3071


def test_deformation_is_a_pure_flip_when_nothing_else_varies():
    config = SynthV2Config(image_size=64, scale=0.0, rotation_deg=0.0, elastic_mm=(0.0, 0.0), flip=1.0)
    index, record = deformation(np.random.default_rng(0), 64, 1.0, config)
    rows, cols = np.mgrid[0:64, 0:64]
    assert record["flip"] and np.array_equal(index[0], rows) and np.array_equal(index[1], cols[:, ::-1])
    # With the defaults the field moves pixels by a few millimetres, smoothly.
    index, record = deformation(np.random.default_rng(1), 64, 1.0, SynthV2Config(image_size=64, flip=0.0))
    shift = np.hypot(index[0] - rows, index[1] - cols)
    assert 0.5 < np.median(shift) < 20 and 8 <= record["elastic_points"] <= 16


def test_samples_vary_where_v1_is_constant():
    records = [sample(0, i, SMALL).record for i in range(40)]
    share = lambda key: np.mean([bool(r[key]) for r in records])  # noqa: E731
    assert 0.1 <= share("random_intensity") <= 0.55
    assert 0.25 <= np.mean([r["rims_mm"][0] == 0.0 for r in records]) <= 0.75  # rims absent in about half
    assert all(-25 <= r["level_mm"] <= 25 and 1.0 <= r["thickness_mm"] <= 7.5 for r in records)
    assert max(r["level_mm"] for r in records) > 15 and min(r["level_mm"] for r in records) < -15  # endplates
    assert all(r["sub_slices"] % 2 == 1 for r in records) and max(r["sub_slices"] for r in records) >= 3
    assert 0.3 <= min(r["anatomy"]["ql_scale"] for r in records) < 0.6
    assert max(r["anatomy"]["ql_scale"] for r in records) > 1.2
    assert any(r["narrow_field"] for r in records) and min(r["fov_mm"] for r in records) < 250
    realistic = [r["cancellous_hu"] for r in records if not r["random_intensity"]]
    assert min(realistic) < 120 and max(realistic) > 200 and all(40 <= v <= 300 for v in realistic)
    assert 0.2 <= np.mean([r["deformation"]["flip"] for r in records]) <= 0.8


def test_labels_sit_on_muscle_in_realistic_samples():
    for i in range(12):
        s = sample(2, i, SynthV2Config(image_size=128, random_intensity=0.0, metal=0.0))
        mid = s.labels[1]
        present = [m for m in MUSCLE_IDS if (mid == m).sum() > 20]
        assert {3, 5} <= set(present), (i, present)  # psoas and erector spinae in every field
        muscle = s.hu[1][mid > 0]
        assert -40 < np.median(muscle) < 110, (i, np.median(muscle))


def test_the_dataset_is_the_same_with_any_worker_count_and_trains(tmp_path):
    one = write_dataset(tmp_path / "a", samples=4, seed=9, config=SMALL, workers=1)
    two = write_dataset(tmp_path / "b", samples=4, seed=9, config=SMALL, workers=2)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["cases"] == b["cases"] and a["generator"] == "kerasmuscle.synth.v2"
    for case in a["cases"]:
        with np.load(one.parent / case["image"]) as x, np.load(two.parent / case["image"]) as y:
            assert x["hu"].dtype == np.int16 and all(np.array_equal(x[k], y[k]) for k in x.files)
    from kerasmuscle import read_labels, read_scan

    scan = read_scan(one.parent / a["cases"][0]["image"])
    expected = sample(9, 0, SMALL)
    assert np.array_equal(scan.hu, expected.hu) and np.array_equal(read_labels(one.parent / "v2_00000.npz",
                                                                              like=scan).array, expected.labels)
    with pytest.raises(Exception, match="not an empty folder"):
        write_dataset(tmp_path / "a", samples=1, config=SMALL)


def test_cli_synth_v2_then_train(tmp_path):
    pytest.importorskip("tensorflow")
    from click.testing import CliRunner

    from kerasmuscle.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["synth", str(tmp_path / "v2"), "--v2", "--cases", "6", "--image-size", "64",
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(cli, ["synth", str(tmp_path / "x"), "--v2", "--seg"])
    assert bad.exit_code == 2 and "--seg" in bad.output
    result = runner.invoke(cli, ["train", str(tmp_path / "v2"), "--out", str(tmp_path / "run"), "--folds", "2",
                                 "--epochs", "1", "--image-size", "32", "--preset", "classic", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "fold_1" / "model.keras").is_file()
