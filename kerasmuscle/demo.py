"""The main job in one call: synthetic cohort -> cross-validated U-Net -> Table I and violin plot -> bundle ->
predictions with the light predictor, on held-out synthetic cases and optionally on a real DICOM series.

Every step writes into one folder and is resumable: running the demo again reuses the cohort, resumes
training where it stopped, and skips finished predictions. Synthetic data proves the machinery, not clinical
accuracy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasmuscle.errors import KerasMuscleError

Log = Callable[[str], None]

#: Defaults sized to finish within 15 minutes on 2 CPU cores (see the README for the measured time).
DEMO_DEFAULTS = {"cases": 36, "image_size": 96, "folds": 3, "epochs": 28, "preset": "paper", "seed": 0}


def run_demo(out: str | os.PathLike = "demo", *, dicom: str | os.PathLike | None = None, cases: int = 36,
             image_size: int = 96, folds: int = 3, epochs: int = 28, preset: str = "paper", seed: int = 0,
             log: Log = print) -> dict[str, Any]:
    """Run the whole pipeline on a synthetic cohort and report where everything is.

    Args:
        out: the demo folder (created or resumed): ``cohort/``, ``run/``, ``bundle/``, ``predictions/``.
        dicom: also segment and measure this real series (a DICOM folder or file, NIfTI or NPZ).
        cases, image_size, folds, epochs, preset, seed: the cohort and the training (the defaults fit in
            15 minutes on 2 CPU cores).
        log: where progress lines go.

    Returns:
        A summary: paths, timings, the combined Dice per fold and the prediction counts.

    Raises:
        KerasMuscleError: a step failed (the message names it); ``--dicom`` failing is reported in the summary
            instead, since everything before it is done.
    """
    from kerasmuscle.predict.batch import predict_batch
    from kerasmuscle.config import PreprocessConfig, SynthConfig, TrainConfig, UNetConfig
    from kerasmuscle.data.dataset import load_dataset
    from kerasmuscle.export import export_bundle
    from kerasmuscle.synth.cohort import write_cohort
    from kerasmuscle.training import evaluate_run, train_run

    out = Path(out)
    if dicom is not None and not Path(dicom).exists():
        raise KerasMuscleError(f"{dicom}: no such file or folder (--dicom)")
    times: dict[str, float] = {}
    started = time.perf_counter()

    cohort = out / "cohort"
    t = time.perf_counter()
    if (cohort / "dataset.json").is_file():
        log(f"[1/5] cohort: reusing {cohort}")
    else:
        # The CT is made at 128x128 (or the network size, if larger) and resized to the network's input, as
        # real 512x512 scans are.
        size = max(image_size, 128)
        log(f"[1/5] cohort: {cases} synthetic cases of 3 slices at {size}x{size} -> {cohort}")
        write_cohort(cohort, cases=cases, seed=seed, config=SynthConfig(image_size=size), overwrite=True)
    times["cohort"] = time.perf_counter() - t

    run = out / "run"
    config = TrainConfig(model=UNetConfig.preset(preset), preprocess=PreprocessConfig(image_size=image_size),
                         folds=folds, epochs=epochs, seed=seed)
    t = time.perf_counter()
    log(f"[2/5] training: {preset} U-Net, {folds}-fold cross-validation, up to {epochs} epochs per fold -> {run}")
    manifest = train_run(cohort, run, config, verbose=0,
                         log=lambda line: log(f"      {line}"))
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[3/5] evaluation: Table I and the violin plot -> {run}")
    rows = evaluate_run(run, log=lambda line: log(f"      {line}"))
    times["evaluate"] = time.perf_counter() - t

    bundle = out / "bundle"
    t = time.perf_counter()
    log(f"[4/5] export: SavedModel, ONNX, LiteRT -> {bundle}")
    (meta,) = export_bundle(run, bundle, fold="best", overwrite=True, log=lambda line: log(f"      {line}"))
    times["export"] = time.perf_counter() - t

    t = time.perf_counter()
    fold = meta["source"]["fold"]
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    held = splits["folds"][fold]["val"]
    by_id = {c.id: c for c in load_dataset(cohort)}
    inputs = [str(by_id[c].image) for c in held if c in by_id]
    log(f"[5/5] prediction with ONNX Runtime: {len(inputs)} held-out synthetic cases of fold {fold}"
        + (f" and {dicom}" if dicom else ""))
    synthetic = predict_batch(inputs, bundle, out / "predictions" / "synthetic")
    real = None
    if dicom is not None:
        real = predict_batch([os.fspath(dicom)], bundle, out / "predictions" / "dicom")
    times["predict"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - started

    combined = {}
    for r in rows:
        if r["class"] == "combined" and r["postprocess"] == "hu":
            combined.setdefault(int(r["fold"]), []).append(float(r["dice"]))
    summary = {
        "out": str(out), "cohort": str(cohort), "run": str(run), "table": str(run / "table.md"),
        "violin": str(run / "violin.png"), "bundle": str(bundle), "exported_fold": fold,
        "predictions": str(out / "predictions"), "seconds": {k: round(v, 1) for k, v in times.items()},
        "combined_dice_by_fold": {k: round(sum(v) / len(v), 4) for k, v in sorted(combined.items())},
        "synthetic_predicted": len(synthetic.done) + len(synthetic.skipped), "failed": synthetic.failed,
        "folds_trained": sorted(int(k) for k in manifest.get("fold_results", {})),
    }
    if real is not None:
        summary["dicom_predicted"] = len(real.done) + len(real.skipped)
        summary["failed"] = summary["failed"] + real.failed
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The demo's closing message: where everything is, in the order a newcomer would look."""
    lines = [
        f"done in {summary['seconds']['total'] / 60:.1f} min "
        f"(training {summary['seconds']['train'] / 60:.1f} min); everything is under {summary['out']}/",
        f"  synthetic cohort      {summary['cohort']}/",
        f"  Table I               {summary['table']} (and table.csv, metrics.csv)",
        f"  violin plot           {summary['violin']}",
        "  combined Dice         " + ", ".join(f"fold {k}: {v:.3f}" for k, v in summary["combined_dice_by_fold"].items()),
        f"  model bundle          {summary['bundle']}/ (fold {summary['exported_fold']}; ONNX, LiteRT, SavedModel)",
        f"  predictions           {summary['predictions']}/synthetic/ ({summary['synthetic_predicted']} held-out cases:"
        " overlay.png, labels, measurements.csv)",
    ]
    if "dicom_predicted" in summary:
        lines.append(f"  your DICOM series     {summary['predictions']}/dicom/")
    for source, message in summary["failed"]:
        lines.append(f"  FAILED                {message}")
    lines.append("Synthetic data proves the machinery, not clinical accuracy: train on labelled scans before "
                 "measuring patients.")
    return "\n".join(lines)


__all__ = ["DEMO_DEFAULTS", "describe", "run_demo"]
