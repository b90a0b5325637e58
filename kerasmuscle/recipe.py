"""A shipped model's recipe: the generator, the seed, the network and the schedule, in one file that
retrains the model with one command (``kerasmuscle retrain RECIPE --out DIR``).

A recipe runs three steps into ``DIR``, each resumable, so a killed run goes on where it stopped:

1. ``DIR/data``: ``samples`` synthetic v2 samples (:func:`kerasmuscle.synth.v2.write_dataset`) from
   ``seed`` and ``synth``; an existing folder is reused only when its seed, config and size match.
2. ``DIR/run``: :func:`~kerasmuscle.training.train_run` of fold ``fold`` of ``train`` (a patient-grouped
   split: the fold's held-out samples are never seen in training), then
   :func:`~kerasmuscle.training.evaluate_run` on those held-out samples (Table I in ``DIR/run/table.md``).
3. ``DIR/<name>``: :func:`~kerasmuscle.export.export_bundle` with ``formats``, with
   ``recipe.json`` copied in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kerasmuscle.bundle import write_checksums
from kerasmuscle.config import Config, ConfigError, SynthV2Config, TrainConfig
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.fileutil import read_json

Log = Callable[[str], None]

RECIPE = "recipe.json"


@dataclass(frozen=True)
class Recipe(Config):
    """How a shipped model was made.

    Args:
        name: the bundle's name (for example ``l3-synth-v1``).
        samples: synthetic v2 samples to generate.
        seed: the generator's seed (training's seed is ``train.seed``).
        synth: how the samples vary.
        train: network, preprocessing, augmentation and schedule.
        fold: the one fold of ``train.folds`` that is trained; its held-out samples are the synthetic test set.
        formats: what the export writes besides ``model.keras`` (``onnx`` gives float32 and int8 ONNX).
        min_agreement: the smallest per-muscle Dice between the int8 and float32 labels on held-out
            synthetic slices for int8 to ship (the export's default,
            :data:`kerasmuscle.export.writer.MIN_AGREEMENT`, unless the model card says why not).
        tolerance: the largest max-abs probability difference allowed between the float32 ONNX model and
            Keras (the export's default, 1e-4, unless the model card says why not).
    """

    name: str = "model"
    samples: int = 1000
    seed: int = 0
    synth: SynthV2Config = SynthV2Config()
    train: TrainConfig = TrainConfig()
    fold: int = 0
    formats: tuple[str, ...] = ("onnx",)
    min_agreement: float = 0.99
    tolerance: float = 1e-4   # kerasmuscle.export.parity.TOLERANCE (tests/test_recipe.py checks they agree)

    def __post_init__(self) -> None:
        if self.samples < self.train.folds:
            raise ConfigError(f"samples ({self.samples}) must be at least train.folds ({self.train.folds})")
        if not 0 <= self.fold < self.train.folds:
            raise ConfigError(f"fold must be within 0..{self.train.folds - 1}, got {self.fold}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be positive, got {self.tolerance}")
        if self.synth.slices != 1 and self.synth.slices < self.train.preprocess.channels:
            raise ConfigError(f"synth.slices ({self.synth.slices}) is fewer than the network's input channels "
                              f"({self.train.preprocess.channels})")


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a recipe file, or the ``recipe.json`` of a bundle folder.

    Raises:
        ConfigError: not there, not JSON, or a field of the wrong type (naming it).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECIPE
    if not path.is_file():
        raise ConfigError(f"{path}: no recipe file")
    return Recipe.load(path)


def _data(recipe: Recipe, folder: Path, workers: int | None, log: Log) -> Path:
    from kerasmuscle.synth.v2 import write_dataset

    existing = read_json(folder / "dataset.json")
    if existing is not None:
        same = (existing.get("seed") == recipe.seed and existing.get("config") == recipe.synth.to_dict()
                and len(existing.get("cases", [])) == recipe.samples)
        if not same:
            raise KerasMuscleError(f"{folder}: holds other synthetic data than the recipe asks for (seed, config "
                                   "or size differ); choose another --out")
        log(f"{folder}: {recipe.samples} synthetic samples made earlier")
        return folder
    log(f"{folder}: generating {recipe.samples} synthetic v2 samples (seed {recipe.seed})")
    write_dataset(folder, samples=recipe.samples, seed=recipe.seed, config=recipe.synth, workers=workers,
                  overwrite=True)
    return folder


def _resolve_parent(recipe: Recipe, base: Path | None) -> TrainConfig:
    """The training config with a relative ``init_weights`` (a parent bundle, for example
    ``../l3-synth-v1``) read from the recipe's own folder, so that a bundle's recipe retrains from any
    working directory; the recipe file itself keeps the relative path."""
    parent = recipe.train.init_weights
    if not parent or Path(parent).is_absolute() or base is None or not (base / parent).exists():
        return recipe.train
    return recipe.train.replace(init_weights=str((base / parent).resolve()))


def run_recipe(recipe: Recipe | str | os.PathLike, out: str | os.PathLike, *, workers: int | None = None,
               verbose: int = 0, log: Log = print) -> Path:
    """Generate the data, train, evaluate and export, as the recipe says (each step resumes).

    Args:
        recipe: a :class:`Recipe`, a recipe file, or a bundle folder holding one.
        out: the working folder (``data/``, ``run/`` and the bundle ``<name>/`` inside).
        workers: generator processes (default: every core).
        verbose: Keras progress (see :func:`~kerasmuscle.training.train_run`).
        log: where progress lines go.

    Returns:
        The bundle folder.
    """
    from kerasmuscle.export import export_bundle
    from kerasmuscle.training.evaluate import evaluate_run
    from kerasmuscle.training.train import train_run

    base = None
    if not isinstance(recipe, Recipe):
        base = Path(recipe) if Path(recipe).is_dir() else Path(recipe).parent
        recipe = load_recipe(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe.save(out / RECIPE)
    data = _data(recipe, out / "data", workers, log)
    run = out / "run"
    train_run(data, run, _resolve_parent(recipe, base), fold=recipe.fold, verbose=verbose, log=log)
    if not (run / "table.md").is_file():
        evaluate_run(run, fold=recipe.fold, log=log)
    bundle = out / recipe.name
    # The recipe goes in last, so a bundle without it is one whose export was cut short: it is redone.
    if not (bundle / RECIPE).is_file():
        export_bundle(run, bundle, formats=recipe.formats, fold=recipe.fold, min_agreement=recipe.min_agreement,
                      tolerance=recipe.tolerance, overwrite=True, log=log)
        shutil.copyfile(out / RECIPE, bundle / RECIPE)
        write_checksums(bundle)
    return bundle


__all__ = ["RECIPE", "Recipe", "load_recipe", "run_recipe"]
