"""Recipes: one file that rebuilds a model (synth v2 data, training, held-out evaluation, export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kerasmuscle.bundle import SUMS, read_metadata, verify
from kerasmuscle.cli import cli
from kerasmuscle.config import ConfigError, PreprocessConfig, SynthV2Config, TrainConfig, UNetConfig
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.recipe import RECIPE, Recipe, load_recipe, run_recipe


def _tiny() -> Recipe:
    train = TrainConfig(model=UNetConfig(filters=(4, 8), bottleneck=8, decoder_filters=(8, 4), up_kernel=2),
                        preprocess=PreprocessConfig(image_size=32), folds=4, epochs=1, batch_size=4, threads=1)
    return Recipe(name="tiny-synth", samples=8, seed=3, synth=SynthV2Config(image_size=64, slices=1), train=train,
                  fold=1, formats=("onnx",))


def test_a_recipe_round_trips_and_names_a_bad_field(tmp_path):
    recipe = _tiny()
    recipe.save(tmp_path / RECIPE)
    assert load_recipe(tmp_path) == recipe  # a bundle folder holding recipe.json reads too
    data = json.loads((tmp_path / RECIPE).read_text())
    data["train"]["epochs"] = "five"
    (tmp_path / RECIPE).write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="epochs"):
        load_recipe(tmp_path / RECIPE)
    with pytest.raises(ConfigError, match="no recipe file"):
        load_recipe(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="fold must be within"):
        recipe.replace(fold=4)


def test_retrain_makes_a_verified_bundle_and_resumes(tmp_path):
    pytest.importorskip("tensorflow")
    recipe = _tiny()
    recipe.save(tmp_path / RECIPE)
    result = CliRunner().invoke(cli, ["retrain", str(tmp_path / RECIPE), "--out", str(tmp_path / "w"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "w" / "tiny-synth"
    assert verify(bundle)["recipe.json"]  # the recipe travels in the bundle, under its checksum
    assert load_recipe(bundle) == recipe
    meta = read_metadata(bundle)
    assert {"keras", "onnx"} <= set(meta.files) and "savedmodel" not in meta.files
    # The held-out synthetic samples of the recipe's fold were scored.
    assert (tmp_path / "w" / "run" / "table.md").is_file()
    assert json.loads((tmp_path / "w" / "run" / "splits.json").read_text())["folds"][1]["val"]
    sums = (bundle / SUMS).read_text()
    # Running it again reuses every step.
    again = CliRunner().invoke(cli, ["retrain", str(bundle), "--out", str(tmp_path / "w")])
    assert again.exit_code == 0, again.output
    assert "made earlier" in again.output and (bundle / SUMS).read_text() == sums


def test_other_data_in_the_working_folder_is_refused(tmp_path):
    from kerasmuscle.synth.v2 import write_dataset

    recipe = _tiny()
    write_dataset(tmp_path / "data", samples=8, seed=4, config=recipe.synth, workers=1)
    with pytest.raises(KerasMuscleError, match="other synthetic data"):
        run_recipe(recipe, tmp_path, log=lambda line: None)


def test_the_recipe_default_agreement_bar_is_the_exports():
    from kerasmuscle.export.writer import MIN_AGREEMENT

    assert Recipe().min_agreement == MIN_AGREEMENT


def test_a_parent_bundle_is_found_from_the_recipes_own_folder(tmp_path, monkeypatch):
    """A fine-tuning recipe names its parent bundle relative to itself (``../l3-synth-v1``), so that
    ``kerasmuscle retrain exports/<name>`` works from any working directory; the file keeps the relative path."""
    from kerasmuscle.recipe import _resolve_parent

    (tmp_path / "exports" / "parent").mkdir(parents=True)
    child = tmp_path / "exports" / "child"
    child.mkdir()
    recipe = _tiny().replace(train=_tiny().train.replace(init_weights="../parent"))
    recipe.save(child / RECIPE)
    monkeypatch.chdir(tmp_path / "exports" / "parent")   # anywhere but the recipe's folder
    resolved = _resolve_parent(load_recipe(child), child).init_weights
    assert resolved == str((tmp_path / "exports" / "parent").resolve())
    assert load_recipe(child).train.init_weights == "../parent"
    # a path that is not there next to the recipe is left for training to report (naming it)
    assert _resolve_parent(recipe.replace(train=recipe.train.replace(init_weights="../nowhere")),
                           child).init_weights == "../nowhere"
    assert _resolve_parent(recipe, None).init_weights == "../parent"


def test_every_recipe_in_the_repository_names_a_parent_that_ships():
    """The shipped bundles' recipes and the ones in recipes/ (models not yet trained and shipped) load, and a
    fine-tuning recipe's parent is named relative to it and is a verified bundle in the repository."""
    from conftest import ROOT
    from kerasmuscle.recipe import _resolve_parent

    files = sorted((ROOT / "exports").glob(f"*/{RECIPE}")) + sorted((ROOT / "recipes").glob("*.json"))
    assert len(files) >= 2
    parents = 0
    for path in files:
        recipe = load_recipe(path)
        parent = recipe.train.init_weights
        if parent:
            parents += 1
            assert not parent.startswith("/"), f"{path}: its parent must be named relative to it"
            assert verify(_resolve_parent(recipe, path.parent).init_weights)["model.keras"]
    assert parents


def test_recipe_export_tolerance_defaults_to_the_exports():
    from kerasmuscle.export.parity import TOLERANCE
    from kerasmuscle.recipe import Recipe, load_recipe

    assert Recipe().tolerance == TOLERANCE
    v2 = load_recipe(Path(__file__).resolve().parents[1] / "exports" / "l3-synth-v2")
    assert v2.tolerance == 2e-4
    with pytest.raises(ConfigError, match="tolerance must be positive"):
        Recipe(tolerance=0.0)
