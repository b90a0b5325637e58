"""`kerasmuscle demo` end to end on tiny settings: every artifact it promises, and a real series with --dicom."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from click.testing import CliRunner  # noqa: E402

from conftest import phantom_hu, write_series  # noqa: E402
from kerasmuscle.cli import cli  # noqa: E402


def test_demo_runs_every_step_and_resumes(tmp_path, monkeypatch):
    import functools

    import kerasmuscle.export

    # Three epochs on two cases leave the batch-norm statistics far from the data: the logits reach thousands,
    # where float32 runtimes differ by up to ~3e-4 (test_export checks the 1e-4 bar on a settled model).
    # The reduced-precision variants are test_export's; here they would only cost time.
    monkeypatch.setattr(kerasmuscle.export, "export_bundle",
                        functools.partial(kerasmuscle.export.export_bundle, tolerance=1e-2, reduced=False))
    # three slices: the user's own L3 choice, measured as they are (a longer series without a spine would be
    # reported as holding no L3 and not measured; test_level_wiring checks that)
    series = write_series(tmp_path / "real", phantom_hu(slices=3))
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
    assert "earlier predictions redone" not in result.output  # there were none
    # Again: the cohort is reused, training is finished, the bundle holds the run's model (not exported
    # again), predictions are skipped.
    bundle_time = (out / "bundle" / "metadata.json").stat().st_mtime_ns
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "cohort: reusing" in again.output and "finished earlier" in again.output
    assert "export: reusing" in again.output and (out / "bundle" / "metadata.json").stat().st_mtime_ns == bundle_time
    assert _model_shas(out) == {_bundle_onnx_sha(out)}

    # The run's model changes (as when a fold is trained further): the bundle is exported again and the
    # predictions are redone, so they name the model that made them.
    import keras

    from kerasmuscle.bundle import read_metadata
    from kerasmuscle.model import CUSTOM_OBJECTS

    fold = read_metadata(out / "bundle").source.fold
    path = out / "run" / f"fold_{fold}" / "model.keras"
    model = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS)
    model.set_weights([w * 0.9 for w in model.get_weights()])
    model.save(path)
    old = _bundle_onnx_sha(out)
    third = CliRunner().invoke(cli, args)
    assert third.exit_code == 0, third.output
    assert "export: SavedModel" in third.output and "earlier predictions redone" in third.output
    assert _bundle_onnx_sha(out) != old and _model_shas(out) == {_bundle_onnx_sha(out)}


def _bundle_onnx_sha(out):
    sums = dict(line.split()[::-1] for line in (out / "bundle" / "SHA256SUMS").read_text().splitlines())
    return sums["model.onnx"]


def _model_shas(out):
    """The model_sha256 of every prediction (synthetic and --dicom)."""
    return {row["model_sha256"] for kind in ("synthetic", "dicom")
            for row in csv.DictReader(open(out / "predictions" / kind / "measurements.csv"))}


def test_demo_refuses_a_missing_dicom(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--dicom", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_demo_defaults_have_one_source():
    import dataclasses
    import inspect

    import kerasmuscle.demo as demo
    from kerasmuscle.demo import DEMO, DemoConfig, run_demo

    assert not hasattr(demo, "DEMO_DEFAULTS") and DEMO == DemoConfig()
    params = inspect.signature(run_demo).parameters
    assert not {f.name for f in dataclasses.fields(DemoConfig)} & set(params)  # no second copy of the defaults
    demo_command = cli.commands["demo"]
    defaults = {p.name: p.default for p in demo_command.params if p.name in DEMO.to_dict()}
    assert defaults == {k: v for k, v in DEMO.to_dict().items() if k != "seed"}
    with pytest.raises(ValueError, match="image_size must be a multiple of 16"):
        DemoConfig(image_size=40)
    assert DEMO.train_config().threads == DEMO.threads and DEMO.train_config().model.decoder_filters[0] == 512


def test_demo_names_folds_that_found_nothing_of_a_group():
    from kerasmuscle.demo import describe, failed_groups

    def row(fold, case, group, dice, post="hu"):
        return {"fold": str(fold), "case_id": case, "class": group, "dice": dice, "postprocess": post}

    rows = [row(0, "a", "erector_spinae", 0.8), row(0, "b", "erector_spinae", 0.0),
            row(1, "c", "erector_spinae", 0.0), row(1, "d", "erector_spinae", float("nan")),
            row(1, "c", "psoas", 0.7), row(1, "c", "combined", 0.0), row(0, "a", "psoas", 0.0, post="none"),
            row(2, "e", "psoas", 0.01), row(2, "f", "psoas", 0.05), row(2, "e", "quadratus", 0.12)]
    assert failed_groups(rows) == [{"fold": 1, "group": "Erector spinae", "cases": 2, "best": 0.0},
                                   {"fold": 2, "group": "Psoas", "cases": 2, "best": 0.05}]
    summary = {"out": "demo", "cohort": "demo/cohort", "table": "t", "violin": "v", "bundle": "demo/bundle",
               "exported_fold": 0, "predictions": "demo/predictions", "seconds": {"total": 60, "train": 30},
               "combined_dice_by_fold": {0: 0.8, 1: 0.4}, "failed_groups": failed_groups(rows),
               "synthetic_predicted": 2, "failed": []}
    text = describe(summary)
    assert "FOLD 1 FAILED ON    Erector spinae: Dice 0 on all 2 of its held-out cases" in text
    assert "FOLD 2 FAILED ON    Psoas: Dice below 0.1 on all 2 of its held-out cases (at best 0.05" in text
    assert "demo/predictions/synthetic/measurements.csv" in text
