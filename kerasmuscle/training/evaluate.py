"""Evaluation of a run folder: every held-out case scored against its labels, the paper's Table I and
Figure 2 (the TensorFlow side; ``train`` extra).

The slices run through :func:`kerasmuscle.core.inference.segment_slices`, the loop the light predictor
uses, so an evaluated score is the score the exported model gets on the same slices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from kerasmuscle.config import TrainConfig
from kerasmuscle.core.inference import segment_slices
from kerasmuscle.core.metrics import case_metrics
from kerasmuscle.core.postprocess import MUSCLE_HU
from kerasmuscle.data.dataset import discover_cases, read_case
from kerasmuscle.data.splits import load_splits
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.fileutil import atomic_path, import_keras, read_json
from kerasmuscle.report import tables
from kerasmuscle.report.figures import violin_plot

Log = Callable[[str], None]


def evaluate_run(run: str | os.PathLike, *, dataset: str | os.PathLike | None = None, fold: int | None = None,
                 batch_size: int = 4, log: Log = print) -> list[dict]:
    """Score every held-out case of a run against its labels, and write the paper's Table I and Figure 2.

    For each fold with a ``model.keras``: predict the labelled slices of its ``val`` cases, resize the
    probabilities back to the scan grid, and compute Dice, Hamming and Jaccard per class and for the
    combined muscle, both on the raw output and after removing muscle outside -20..200 HU. Writes
    ``fold_K/metrics.csv`` and ``fold_K/predictions/<case>.npz``, then merges every fold's metrics
    (including folds evaluated by other processes) into ``metrics.csv``, ``table.md``, ``table.csv``
    and ``violin.png``.

    Args:
        run: the run folder.
        dataset: the dataset folder, if it moved since training.
        fold: evaluate only this fold, then merge.
        batch_size: slices per prediction batch.
        log: where progress lines go.

    Returns:
        The merged metric rows.
    """
    run = Path(run)
    if not (run / "config.json").is_file():
        raise KerasMuscleError(f"{run}: not a run folder (no config.json); train one with kerasmuscle train")
    keras, _ = import_keras()
    from kerasmuscle.model import CUSTOM_OBJECTS, float32_model

    config = TrainConfig.load(run / "config.json")
    manifest = read_json(run / "manifest.json") or {}
    dataset = dataset or manifest.get("dataset")
    if not dataset:
        raise KerasMuscleError(f"{run}: no dataset recorded; pass --dataset")
    cases = {c.id: c for c in discover_cases(dataset)}
    splits = load_splits(run / "splits.json", list(cases.values()))
    folds = [fold] if fold is not None else range(len(splits["folds"]))
    for k in folds:
        fold_dir = run / f"fold_{k}"
        if not (fold_dir / "model.keras").is_file():
            if fold is not None:
                raise KerasMuscleError(f"{fold_dir}: no model.keras; train this fold first")
            continue
        # In float32, as the exported bundle runs it (a mixed-precision model is rebuilt in float32).
        model = float32_model(keras.models.load_model(fold_dir / "model.keras", custom_objects=CUSTOM_OBJECTS,
                                                      compile=False), config.model)
        rows = []
        for cid in splits["folds"][k]["val"]:
            scan, labels = read_case(cases[cid])
            index = labels.labelled_slices()
            out = segment_slices(model.predict_on_batch, scan.hu, index, config.preprocess, hu_range=MUSCLE_HU,
                                 batch_size=batch_size)
            pred, post, truth = out.raw, out.labels, labels.array[index]
            pred_dir = fold_dir / "predictions"
            pred_dir.mkdir(exist_ok=True)
            with atomic_path(pred_dir / f"{cid}.npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, labels=pred, postprocessed=post, slice_index=index)
            for name, p in (("none", pred), ("hu", post)):
                for row in case_metrics(truth, p):
                    rows.append({"fold": k, "case_id": cid, "patient_id": cases[cid].patient_id,
                                 "postprocess": name, "slices": len(index), **row})
        tables.write_metrics_csv(rows, fold_dir / "metrics.csv")
        combined = [r["dice"] for r in rows if r["class"] == "combined" and r["postprocess"] == "hu"]
        log(f"fold {k}: {len(combined)} held-out cases, combined Dice {np.nanmean(combined):.4f}")
    merged = []
    for k in range(len(splits["folds"])):
        path = run / f"fold_{k}" / "metrics.csv"
        if path.is_file():
            merged += tables.read_metrics_csv(path)
    if not merged:
        raise KerasMuscleError(f"{run}: no fold has a model to evaluate; train first")
    tables.write_metrics_csv(merged, run / "metrics.csv")
    tables.write_tables(merged, run)
    n_folds = len({r["fold"] for r in merged})
    violin_plot(merged, run / "violin.png",
                           title=f"{len({r['case_id'] for r in merged})} held-out cases, {n_folds} fold{'s' * (n_folds != 1)}, "
                                 "with the -20..200 HU post-processing")
    return merged


__all__ = ["evaluate_run"]
