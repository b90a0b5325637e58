"""`kerasmuscle demo` end to end on tiny settings: every artifact it promises, and a real series with --dicom."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from click.testing import CliRunner  # noqa: E402

from conftest import write_series  # noqa: E402
from kerasmuscle.cli import cli  # noqa: E402


def test_demo_runs_every_step_and_resumes(tmp_path, monkeypatch):
    import functools

    import kerasmuscle.export

    # Three epochs on two cases leave the batch-norm statistics far from the data: the logits reach thousands,
    # where float32 runtimes differ by up to ~3e-4 (test_export checks the 1e-4 bar on a settled model).
    monkeypatch.setattr(kerasmuscle.export, "export_bundle",
                        functools.partial(kerasmuscle.export.export_bundle, tolerance=1e-2))
    series = write_series(tmp_path / "real")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--dicom", str(series), "--cases", "6", "--image-size", "32", "--folds", "2",
            "--epochs", "3", "--preset", "classic"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for path in ("cohort/dataset.json", "run/table.md", "run/violin.png", "run/metrics.csv", "bundle/model.onnx",
                 "bundle/model.tflite", "bundle/saved_model/saved_model.pb", "bundle/SHA256SUMS",
                 "predictions/synthetic/measurements.csv", "predictions/dicom/measurements.csv"):
        assert (out / path).exists(), path
    rows = list(csv.DictReader(open(out / "predictions" / "synthetic" / "measurements.csv")))
    assert len(rows) == 3  # the held-out cases of the exported fold
    assert "Table I" in result.output and "violin plot" in result.output and "not clinical accuracy" in result.output
    # Again: the cohort is reused, training is finished, predictions are skipped.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output and "finished earlier" in again.output


def test_demo_refuses_a_missing_dicom(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--dicom", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output
