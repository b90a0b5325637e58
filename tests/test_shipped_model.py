"""The shipped model, exports/l3-synth-v1: complete, small, found when no model is named, and it
segments the five groups in their anatomical places."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, TCIA
from kerasmuscle import bundle as _bundle
from kerasmuscle.bundle import SHIPPED_MODEL, SUMS, BundleError, default_bundle, read_metadata, verify
from kerasmuscle.recipe import load_recipe

SHIPPED = ROOT / "exports" / SHIPPED_MODEL


def test_the_bundle_is_complete_small_and_holds_nothing_regenerable():
    sums = verify(SHIPPED)
    meta = read_metadata(SHIPPED)
    assert {"keras", "onnx", "onnx_int8"} <= set(meta.files)
    assert not {"savedmodel", "tflite", "tflite_fp16", "tflite_int8"} & set(meta.files)
    names = {p.name for p in SHIPPED.iterdir()}
    assert names == set(sums) | {SUMS}, "every file is under the checksums"
    assert {"README.md", "recipe.json", "metadata.json", "model.keras", "model.onnx", "model_int8.onnx"} <= names
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) <= 60 * 2 ** 20


def test_the_recipe_is_what_the_model_was_trained_with():
    recipe = load_recipe(SHIPPED)
    meta = read_metadata(SHIPPED)
    assert meta.preprocessing.image_size == recipe.train.preprocess.image_size >= 256
    assert meta.preprocessing.channels == recipe.train.preprocess.channels
    assert meta.model.architecture == recipe.train.model.to_dict()
    assert recipe.name == SHIPPED_MODEL and recipe.synth.image_size >= 256


def test_the_model_card_lists_the_checksums_it_ships_with():
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    for name, digest in verify(SHIPPED).items():
        if name != "README.md":  # the card cannot hold its own hash
            assert f"{digest}  {name}" in card, f"model card lacks the checksum of {name}"
    for needed in ("Intended use", "Training data", "Evidence", "Limits", "not measured"):
        assert needed in card


def test_the_shipped_model_is_the_default(monkeypatch, tmp_path):
    monkeypatch.delenv(_bundle.MODEL_ENV, raising=False)
    assert default_bundle() == SHIPPED.resolve()
    monkeypatch.setenv(_bundle.MODEL_ENV, str(tmp_path))
    with pytest.raises(BundleError, match=f"{tmp_path}: named by \\$KERASMUSCLE_MODEL"):
        default_bundle()


def test_predict_without_a_model_uses_the_shipped_one_and_places_the_groups(tmp_path, monkeypatch):
    """On the real TCIA series at mid-L3: every group found on both sides, rectus in front of the spine,
    the abdominal wall lateral, psoas beside the vertebral body, quadratus lumborum behind the psoas and
    lateral to the erector spinae, erector spinae behind the spine."""
    monkeypatch.delenv(_bundle.MODEL_ENV, raising=False)
    from kerasmuscle.cli import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(TCIA), "--out", str(out), "--slices", "43-45"])
    assert result.exit_code == 0, result.output
    record = json.loads(next(out.glob("*/measurements.json")).read_text())
    assert record["model"]["bundle"] == SHIPPED_MODEL
    from kerasmuscle.io import read_labels, read_scan

    scan = read_scan(TCIA)
    lab = read_labels(next(out.glob("*/labels.nii.gz")), like=scan).array[44]
    centre = {}
    for value, name in enumerate(("rectus", "wall", "psoas", "ql", "es"), start=1):
        rows, cols = np.nonzero(lab == value)
        assert len(rows) > 50, f"{name} is missing"
        centre[name] = (rows.mean(), cols.mean(), np.abs(cols - lab.shape[1] / 2).mean())
    # Row grows towards the patient's back in this series (anterior at the top of the image).
    assert centre["rectus"][0] < centre["psoas"][0] < centre["es"][0]
    assert centre["wall"][2] > centre["ql"][2] > centre["es"][2] and centre["wall"][2] > centre["psoas"][2]
    assert centre["psoas"][0] < centre["ql"][0]
    assert re.search(r"\d+ done", result.output)
