"""The main job in one call: synthetic cohort -> cross-validated U-Net -> Table I and violin plot -> bundle ->
predictions with the light predictor, on held-out synthetic cases and optionally on a real DICOM series.

Every step writes into one folder and is resumable: running the demo again reuses the cohort, resumes
training where it stopped, reuses the bundle while it holds the model the run would export now, and skips
finished predictions (redone when the bundle was exported again, so results always name the model that
made them). Synthetic data proves the machinery, not clinical accuracy.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasmuscle.config import PRESETS, Config
from kerasmuscle.errors import KerasMuscleError

Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig(Config):
    """The demo's cohort and training; the defaults finish within 15 minutes on 2 CPU cores (see the README).

    Args:
        cases: synthetic cases (3 slices each).
        image_size: the network's input rows and columns (a multiple of 16; the CT is made at 128x128 or
            this size, if larger).
        folds: cross-validation folds.
        epochs: maximum epochs per fold.
        preset: a key of :data:`~kerasmuscle.config.PRESETS`.
        seed: the cohort, the folds and the training.
        threads: TensorFlow's intra-op threads: 2, so the demo gives the README's Dice on any number of
            cores (on the same kind of CPU and package versions); None uses every core (faster, other weights).
    """

    cases: int = 36
    image_size: int = 96
    folds: int = 3
    epochs: int = 28
    preset: str = "paper"
    seed: int = 0
    threads: int | None = 2

    def __post_init__(self) -> None:
        if self.cases < 6:
            raise ValueError(f"cases must be at least 6, got {self.cases}")
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 32, got {self.image_size}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")

    def train_config(self):
        """The :class:`~kerasmuscle.config.TrainConfig` of the demo's run."""
        from kerasmuscle.config import PreprocessConfig, TrainConfig, UNetConfig

        return TrainConfig(model=UNetConfig.preset(self.preset), preprocess=PreprocessConfig(image_size=self.image_size),
                           folds=self.folds, epochs=self.epochs, seed=self.seed, threads=self.threads)


#: The defaults, for ``kerasmuscle demo``'s options and :func:`run_demo`.
DEMO = DemoConfig()


def _attr(obj: Any, *names: str) -> Any:
    """``obj.a.b`` or ``obj["a"]["b"]`` (bundle metadata as a typed object or a plain dict)."""
    for name in names:
        obj = obj[name] if isinstance(obj, dict) else getattr(obj, name)
    return obj


def bundle_is_current(bundle: Path, model: Path) -> bool:
    """True when ``bundle`` is intact and holds exactly ``model`` (its ``model.keras`` is a byte copy)."""
    from kerasmuscle.bundle import ARTIFACTS, BundleError, sha256_file, verify

    if not (bundle / "metadata.json").is_file():
        return False
    try:
        sums = verify(bundle)
    except BundleError:
        return False
    return sums.get(ARTIFACTS["keras"]) == sha256_file(model)


#: A fold whose Dice for a group stays below this on every held-out case has failed on that group.
FAILED_DICE = 0.1


def failed_groups(rows: list[dict]) -> list[dict[str, Any]]:
    """Folds that learned (almost) nothing of a muscle group: Dice below :data:`FAILED_DICE` (or
    undefined) on every held-out case.

    Args:
        rows: :func:`~kerasmuscle.training.evaluate_run`'s metric rows.

    Returns:
        One ``{"fold", "group", "cases", "best"}`` per fold and group, in fold order (post-processed
        scores; ``best`` is the highest case Dice, 0.0 when the fold predicts none of the group).
    """
    from kerasmuscle.labels import MUSCLE_LABELS

    scores: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        if r["postprocess"] == "hu" and r["class"] != "combined":
            scores.setdefault((int(r["fold"]), r["class"]), []).append(float(r["dice"]))
    names = {lab.key: lab.short for lab in MUSCLE_LABELS}
    out = []
    for (fold, key), values in sorted(scores.items()):
        known = [v for v in values if not math.isnan(v)]
        if all(v < FAILED_DICE for v in known):
            out.append({"fold": fold, "group": names.get(key, key), "cases": len(values),
                        "best": max(known, default=0.0)})
    return out


def run_demo(out: str | os.PathLike = "demo", config: DemoConfig | None = None, *,
             dicom: str | os.PathLike | None = None, log: Log = print, **changes: Any) -> dict[str, Any]:
    """Run the whole pipeline on a synthetic cohort and report where everything is.

    Args:
        out: the demo folder (created or resumed): ``cohort/``, ``run/``, ``bundle/``, ``predictions/``.
        config: the cohort and the training (default :data:`DEMO`).
        dicom: also segment and measure this real series (a DICOM folder or file, NIfTI or NPZ).
        log: where progress lines go.
        changes: :class:`DemoConfig` fields to change, for example ``epochs=3``.

    Returns:
        A summary: paths, timings, the combined Dice per fold, folds that found nothing of a group, whether
        the bundle was reused, and the prediction counts.

    Raises:
        KerasMuscleError: a step failed (the message names it); ``--dicom`` failing is reported in the summary
            instead, since everything before it is done.
    """
    from kerasmuscle.config import SynthConfig
    from kerasmuscle.predict import PredictConfig
    from kerasmuscle.data.dataset import load_dataset
    from kerasmuscle.export import export_bundle, resolve_source
    from kerasmuscle.fileutil import read_json
    from kerasmuscle.predict.batch import predict_batch
    from kerasmuscle.synth.cohort import write_cohort
    from kerasmuscle.training import evaluate_run, train_run

    config = (config or DEMO).replace(**changes) if changes else (config or DEMO)
    out = Path(out)
    if dicom is not None and not Path(dicom).exists():
        raise KerasMuscleError(f"{dicom}: no such file or folder (--dicom)")
    indent = lambda line: log(f"      {line}")  # noqa: E731
    times: dict[str, float] = {}
    started = time.perf_counter()

    cohort = out / "cohort"
    t = time.perf_counter()
    if (cohort / "dataset.json").is_file():
        log(f"[1/5] cohort: reusing {cohort}")
    else:
        # The CT is made at 128x128 (or the network size, if larger) and resized to the network's input, as
        # real 512x512 scans are.
        size = max(config.image_size, 128)
        log(f"[1/5] cohort: {config.cases} synthetic cases of 3 slices at {size}x{size} -> {cohort}")
        write_cohort(cohort, cases=config.cases, seed=config.seed, config=SynthConfig(image_size=size), overwrite=True)
    times["cohort"] = time.perf_counter() - t

    run = out / "run"
    t = time.perf_counter()
    log(f"[2/5] training: {config.preset} U-Net, {config.folds}-fold cross-validation, up to {config.epochs} epochs "
        f"per fold -> {run}")
    manifest = train_run(cohort, run, config.train_config(), verbose=0, log=indent)
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    log(f"[3/5] evaluation: Table I and the violin plot -> {run}")
    rows = evaluate_run(run, log=indent)
    times["evaluate"] = time.perf_counter() - t

    bundle = out / "bundle"
    t = time.perf_counter()
    (entry,) = resolve_source(run, "best")
    fold = entry["fold"]
    reused = bundle_is_current(bundle, entry["model"])
    if reused:
        log(f"[4/5] export: reusing {bundle} (it holds fold {fold}'s model.keras)")
    else:
        log(f"[4/5] export: SavedModel, ONNX, LiteRT of fold {fold} -> {bundle}")
        (meta,) = export_bundle(run, bundle, fold=fold, overwrite=True, log=indent)
        fold = _attr(meta, "source", "fold")
    times["export"] = time.perf_counter() - t

    t = time.perf_counter()
    held = read_json(run / "splits.json")["folds"][fold]["val"]
    by_id = {c.id: c for c in load_dataset(cohort)}
    inputs = [str(by_id[c].image) for c in held if c in by_id]
    log(f"[5/5] prediction with ONNX Runtime: {len(inputs)} held-out synthetic cases of fold {fold}"
        + (f" and {dicom}" if dicom else "")
        + (" (earlier predictions redone)" if not reused and (out / "predictions").exists() else ""))
    # A new bundle means a new model: predictions made with the old one are redone, never kept.
    predict = PredictConfig(overwrite=not reused)
    results = {"synthetic": predict_batch(inputs, bundle, out / "predictions" / "synthetic", predict)}
    if dicom is not None:
        results["dicom"] = predict_batch([os.fspath(dicom)], bundle, out / "predictions" / "dicom", predict)
    times["predict"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - started

    combined: dict[int, list[float]] = {}
    for r in rows:
        if r["class"] == "combined" and r["postprocess"] == "hu":
            combined.setdefault(int(r["fold"]), []).append(float(r["dice"]))
    summary = {
        "out": str(out), "cohort": str(cohort), "run": str(run), "table": str(run / "table.md"),
        "violin": str(run / "violin.png"), "bundle": str(bundle), "exported_fold": fold, "bundle_reused": reused,
        "predictions": str(out / "predictions"), "seconds": {k: round(v, 1) for k, v in times.items()},
        "combined_dice_by_fold": {k: round(sum(v) / len(v), 4) for k, v in sorted(combined.items())},
        "failed_groups": failed_groups(rows),
        "folds_trained": sorted(int(k) for k in manifest.get("fold_results", {})),
        "failed": [],
    }
    for name, result in results.items():
        summary[f"{name}_predicted"] = len(result.done) + len(result.skipped)
        summary["failed"] += list(result.failed) + list(result.refused) + list(result.no_l3)
    if "dicom" in results and summary["dicom_predicted"]:
        summary["dicom_level"] = _level_line(out / "predictions" / "dicom")
    return summary


def _level_line(folder: Path) -> str:
    """How the slices of the one case in ``folder`` were chosen, in a few words."""
    from kerasmuscle.fileutil import read_json

    records = sorted(folder.glob("*/measurements.json"))
    record = read_json(records[0]) if records else {}
    level = (record or {}).get("level") or {}
    l3 = level.get("l3") or {}
    index = (record or {}).get("slice_indices") or []
    if level.get("method") == "auto" and index:
        return (f"L3 found from the spine: slices {index[0]}-{index[-1]}, confidence {l3.get('confidence')}"
                f"{' (' + ', '.join(l3.get('flags')) + ')' if l3.get('flags') else ''}; see level.png")
    return f"slices {index[0]}-{index[-1]} ({level.get('method', 'as given')})" if index else ""


def describe(summary: dict[str, Any]) -> str:
    """The demo's closing message: where everything is, in the order a newcomer would look."""
    predictions = summary["predictions"]
    lines = [
        f"done in {summary['seconds']['total'] / 60:.1f} min "
        f"(training {summary['seconds']['train'] / 60:.1f} min); everything is under {summary['out']}/",
        f"  synthetic cohort      {summary['cohort']}/",
        f"  Table I               {summary['table']} (and table.csv, metrics.csv)",
        f"  violin plot           {summary['violin']}",
        "  combined Dice         " + ", ".join(f"fold {k}: {v:.3f}" for k, v in summary["combined_dice_by_fold"].items()),
    ]
    for f in summary.get("failed_groups", []):
        best = f.get("best", 0.0)
        what = ("Dice 0 on all {n} of its held-out cases (it predicts none of it)" if best == 0.0 else
                "Dice below {bar} on all {n} of its held-out cases (at best {best:.2f}: it learned almost none of it)")
        lines.append(f"  FOLD {f['fold']} FAILED ON    {f['group']}: "
                     + what.format(n=f["cases"], bar=FAILED_DICE, best=best)
                     + "; Table I's means include these scores")
    lines += [
        f"  model bundle          {summary['bundle']}/ (fold {summary['exported_fold']}; ONNX, LiteRT, SavedModel"
        + ("; reused" if summary.get("bundle_reused") else "") + ")",
        f"  predictions           {predictions}/synthetic/measurements.csv and slices.csv "
        f"({summary['synthetic_predicted']} held-out cases; per case {predictions}/synthetic/<case>/: "
        "overlay.png, labels.nii.gz, seg.dcm, sr.dcm, slices.csv, measurements.json)",
    ]
    if "dicom_predicted" in summary:
        lines.append(f"  your DICOM series     {predictions}/dicom/measurements.csv (and {predictions}/dicom/<case>/)")
        if summary.get("dicom_level"):
            lines.append(f"    measured at         {summary['dicom_level']}")
    for source, message in summary["failed"]:
        lines.append(f"  FAILED                {message}")
    lines.append("Synthetic data proves the machinery, not clinical accuracy: train on labelled scans before "
                 "measuring patients.")
    return "\n".join(lines)


__all__ = ["DEMO", "DemoConfig", "bundle_is_current", "describe", "failed_groups", "run_demo"]
