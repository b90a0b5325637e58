"""Export a trained model as a bundle: Keras, SavedModel, ONNX and LiteRT, checked against Keras.

``export_bundle(run_or_model, out)`` writes the folder described in :mod:`kerasmuscle.bundle`. Every
artifact is run on the same slices as the Keras model, at batch sizes 1 and 3: float32 artifacts must agree
to a maximum absolute difference of 1e-4 in probability, or the export fails and nothing is written.
Reduced-precision variants (int8 ONNX and int8 LiteRT, both calibrated on training slices, and LiteRT
with float16 weights) are compared with float32 on held-out slices by the Dice of their label maps, and shipped
only when every muscle group agrees to at least 0.99. A variant that fails to build, load or run is left
out with the error in ``metadata.json``; so is float32 LiteRT when LiteRT cannot convert or run it (the
ONNX model does not depend on it).

This module chooses what to export and orchestrates; the writers are :mod:`.onnx` and :mod:`.tflite`, the
checks :mod:`.parity`. Needs TensorFlow and the ``export`` extra (tf2onnx, onnx, ai-edge-litert).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle import bundle as _bundle
from kerasmuscle.bundle import (BundleMetadata, Label, ModelInfo, Postprocess, Preprocessing, Source, TensorSpec,
                                Variant)
from kerasmuscle.config import ConfigError, PreprocessConfig, TrainConfig, UNetConfig
from kerasmuscle.core.postprocess import MUSCLE_HU
from kerasmuscle.errors import MissingExtraError
from kerasmuscle.export.common import ExportError, Log, keras_tf, one_line
from kerasmuscle.export.onnx import write_onnx, write_onnx_int8
from kerasmuscle.export.parity import TOLERANCE, SliceStack, agreement, check_parity
from kerasmuscle.export.tflite import write_savedmodel, write_tflite
from kerasmuscle.fileutil import (atomic_path, check_creatable, read_json, recover_replaced, remove_stale_temporaries,
                                 versions)
from kerasmuscle.labels import LABELS
from kerasmuscle.predict.runtimes import load_model

FORMATS = ("savedmodel", "onnx", "tflite")
#: Smallest per-muscle Dice between float32 and reduced-precision labels for a variant to ship.
MIN_AGREEMENT = 0.99
CALIBRATION_SLICES = 32
HELDOUT_SLICES = 48
#: The post-processing range recorded in every bundle: the paper's muscle range, the one training's
#: evaluation scores with (:mod:`kerasmuscle.training.evaluate`), so the predictor repeats it.
POSTPROCESS_HU: tuple[float, float] = MUSCLE_HU


# --------------------------------------------------------------------------------------------------
# what to export


def resolve_source(source: str | os.PathLike, fold: str | int = "best") -> list[dict[str, Any]]:
    """The model files to export and what is known about each.

    Args:
        source: a run folder from ``kerasmuscle train``, a fold folder, a ``model.keras`` inside a run, or a
            bundle folder (``metadata.json`` and ``model.keras``: its network and preprocessing are reused, for
            example to write the SavedModel and LiteRT copies the shipped model leaves out).
        fold: for a run folder: a fold number, ``"best"`` (the fold with the best tuning score, the score
            that chose its checkpoint; held-out scores never choose) or ``"all"``.

    Returns:
        One dict per model: ``model`` (path), ``run`` (folder or None), ``fold`` (int or None),
        ``config`` (:class:`TrainConfig`), ``manifest``.

    Raises:
        ExportError: not a run or model, a fold without a model, or no config.json to say how the
            model's input was prepared.
    """
    source = Path(source)
    if not source.exists():
        raise ExportError(f"{source}: no such run folder or model file")
    if source.is_file():
        if source.suffix != ".keras":
            raise ExportError(f"{source}: not a .keras model or a run folder")
        model_path = source
        run = next((p for p in (source.parent, source.parent.parent) if (p / "config.json").is_file()), None)
        if run is None:
            raise ExportError(f"{source}: no config.json beside the model or in its run folder, so its input "
                              "size and HU window are unknown; export the run folder instead")
        k = _fold_number(source.parent.name) if run != source.parent else None
        return [_entry(model_path, run, k)]
    if (source / _bundle.METADATA).is_file() and (source / "model.keras").is_file():
        return [_bundle_entry(source)]
    if (source / "model.keras").is_file() and (source.parent / "config.json").is_file():
        return [_entry(source / "model.keras", source.parent, _fold_number(source.name))]
    if not (source / "config.json").is_file():
        raise ExportError(f"{source}: not a run folder (no config.json) and no model.keras in it")
    run = source
    manifest = read_json(run / "manifest.json") or {}
    trained = sorted(int(k) for k in manifest.get("fold_results", {}) if (run / f"fold_{k}" / "model.keras").is_file())
    if not trained:
        trained = sorted(int(p.name[5:]) for p in run.glob("fold_*") if p.name[5:].isdigit()
                         and (p / "model.keras").is_file())
    if not trained:
        raise ExportError(f"{run}: no fold has a model.keras; train first")
    if fold == "all":
        chosen = trained
    elif fold == "best":
        results = manifest.get("fold_results", {})
        scored = [(results.get(str(k), {}).get("best"), k) for k in trained]
        scored = [(s, k) for s, k in scored if isinstance(s, (int, float))]
        chosen = [max(scored)[1]] if scored else [trained[0]]
    else:
        k = int(fold)
        if k not in trained:
            raise ExportError(f"{run}: fold {k} has no model.keras; trained folds are {', '.join(map(str, trained))}")
        chosen = [k]
    return [_entry(run / f"fold_{k}" / "model.keras", run, k) for k in chosen]


def _fold_number(name: str) -> int | None:
    return int(name[5:]) if name.startswith("fold_") and name[5:].isdigit() else None


def _entry(model: Path, run: Path, fold: int | None) -> dict[str, Any]:
    try:
        config = TrainConfig.load(run / "config.json")
    except Exception as exc:
        raise ExportError(f"{run / 'config.json'}: cannot read the run's settings ({exc})") from None
    return {"model": model, "run": run, "fold": fold, "config": config, "manifest": read_json(run / "manifest.json") or {}}


def _bundle_entry(folder: Path) -> dict[str, Any]:
    """A bundle as the source (for example the shipped model, to write its SavedModel and LiteRT copies): the
    network and preprocessing come from its metadata; it has no run, so no fold's slices are known."""
    meta = _bundle.read_metadata(folder)
    if not meta.model.architecture:
        raise ExportError(f"{folder}: its metadata.json records no network architecture; export its run instead")
    pre = meta.preprocessing
    try:
        network = UNetConfig.from_dict(dict(meta.model.architecture))
        config = TrainConfig(model=network, preprocess=PreprocessConfig(
            image_size=pre.image_size, channels=pre.channels, hu_window=tuple(pre.hu_window)))
    except (ConfigError, ValueError) as exc:
        raise ExportError(f"{folder / _bundle.METADATA}: cannot rebuild the training settings ({exc})") from None
    return {"model": folder / "model.keras", "run": folder, "fold": None, "config": config, "manifest": {}}


# --------------------------------------------------------------------------------------------------
# slices to check and calibrate on


@dataclass(eq=False)
class Samples:
    """What the checks run on: preprocessed calibration slices ``[n, size, size, channels]`` (training
    cases), held-out slices in HU (:class:`~kerasmuscle.export.parity.SliceStack` per case), and where
    they came from, in words."""

    calibration: np.ndarray | None = None
    heldout: list[SliceStack] | None = None
    source: str = "none"


def sample_slices(entry: dict[str, Any], dataset: str | os.PathLike | None, log: Log) -> Samples:
    """Calibration slices (from the fold's training cases) and held-out slices (its validation cases).

    When the run's dataset cannot be found, the parity check uses smooth random images in the model's input
    range and reduced precision is skipped (its agreement cannot be measured without real slices).
    """
    from kerasmuscle.data.dataset import discover_cases
    from kerasmuscle.data.pipeline import load_slices
    from kerasmuscle.data.splits import load_splits

    config: TrainConfig = entry["config"]
    pre = config.preprocess
    run, k = entry["run"], entry["fold"]
    dataset = dataset or entry["manifest"].get("dataset")
    if dataset and Path(dataset).is_dir() and (run / "splits.json").is_file() and k is not None:
        cases = {c.id: c for c in discover_cases(dataset)}
        splits = load_splits(run / "splits.json", list(cases.values()))
        fold = splits["folds"][k]
        log(f"reading {len(fold['train'])} training and {len(fold['val'])} held-out cases of fold {k} from {dataset}")
        train = load_slices([cases[c] for c in fold["train"]], pre, cache_dir=run / "cache")
        return Samples(_spread(train.images, CALIBRATION_SLICES), heldout_stacks([cases[c] for c in fold["val"]], pre),
                       f"fold {k}: {len(fold['train'])} training cases (calibration), "
                       f"{len(fold['val'])} held-out cases (agreement)")
    if dataset and Path(dataset).is_dir():
        cases = discover_cases(dataset)
        every = load_slices(cases, pre)
        return Samples(_spread(every.images, CALIBRATION_SLICES), heldout_stacks(cases, pre),
                       f"{len(cases)} cases of {dataset} (not held out: no fold is known)")
    log("the run's dataset is not available: parity is checked on smooth random images, and reduced "
        "precision is skipped (pass --dataset to measure it)")
    return Samples()


def heldout_stacks(cases: Sequence, pre, n: int = HELDOUT_SLICES) -> list[SliceStack]:
    """The labelled slices of up to ``n`` cases spread over ``cases``, about ``n`` slices in all, each case's
    kept in HU with the neighbours its channels need."""
    from kerasmuscle.data.dataset import read_case

    chosen = [cases[i] for i in _spread_index(len(cases), n)]
    quota = max(1, n // max(1, len(chosen)))
    stacks = []
    for case in chosen:
        scan, labels = read_case(case)
        index = np.asarray(labels.labelled_slices())
        if len(index):
            stacks.append(SliceStack.of(scan.hu, index[_spread_index(len(index), quota)], pre.channels))
    return stacks


def _spread_index(length: int, n: int) -> np.ndarray:
    """``n`` indices evenly spread over ``range(length)`` (all of them when there are no more than ``n``)."""
    if length <= n:
        return np.arange(length)
    return np.linspace(0, length - 1, n).round().astype(int)


def _spread(images: np.ndarray, n: int) -> np.ndarray:
    return images[_spread_index(len(images), n)]


def random_inputs(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random images in -1..1 (blobs of low-frequency noise), for parity when no slices are at hand."""
    from kerasmuscle.core.preprocessing import resize_image

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, channels, max(2, size // 8), max(2, size // 8))).astype(np.float32)
    return np.moveaxis(resize_image(coarse, (size, size)), 1, -1).clip(-1, 1).astype(np.float32)


def _parity_inputs(samples: Samples, pre) -> tuple[np.ndarray, bool]:
    """Three network inputs for the parity check: held-out slices when there are three, else random images."""
    images = [s.images(pre, 3) for s in samples.heldout or []]
    x = np.concatenate(images)[:3] if images else np.zeros((0,))
    if len(x) >= 3:
        return x, True
    return random_inputs(3, pre.image_size, pre.channels), False


# --------------------------------------------------------------------------------------------------
# the bundle


def base_metadata(entry: dict[str, Any], name: str, params: int | None) -> BundleMetadata:
    """metadata.json without the files, parity and reduced-precision parts."""
    config: TrainConfig = entry["config"]
    pre = config.preprocess
    manifest = entry["manifest"]
    k = entry["fold"]
    result = manifest.get("fold_results", {}).get(str(k), {}) if k is not None else {}
    return BundleMetadata(
        name=name,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        method="Kreher et al. 2022: 2-D U-Net, five muscle groups at L3",
        labels=tuple(Label(id=lab.id, key=lab.key, name=lab.name, colour=tuple(lab.colour), colour_name=lab.colour_name)
                     for lab in LABELS),
        input=TensorSpec(name=_bundle.INPUT_NAME, shape=(None, pre.image_size, pre.image_size, pre.channels),
                         layout="NHWC"),
        output=TensorSpec(name=_bundle.OUTPUT_NAME, shape=(None, pre.image_size, pre.image_size, len(LABELS)),
                          meaning="softmax probability per class, classes in label id order"),
        preprocessing=Preprocessing(
            image_size=pre.image_size, channels=pre.channels, hu_window=tuple(float(v) for v in pre.hu_window),
            channel_layout="the slice itself" if pre.channels == 1 else
                           "the slice below, the slice, the slice above (edge slices repeated)",
            resize="each slice resized to image_size square with separable linear filters (antialiased when "
                   "shrinking); probabilities resized back the same way before the argmax"),
        orientation="axial slices as kerasmuscle.read_scan returns them: DICOM stored pixel layout, which for "
                    "the usual supine head-first series puts the patient's left at higher column indices "
                    "and posterior at higher row indices",
        postprocess=Postprocess(hu_range=tuple(float(v) for v in POSTPROCESS_HU)),
        model=ModelInfo(architecture=config.model.to_dict(), parameters=params),
        source=Source(run=str(entry["run"].resolve()) if entry["run"] else None, fold=k, folds=manifest.get("folds"),
                      model_file=str(entry["model"].resolve()), tuning_score=result.get("best"),
                      monitor=result.get("monitor"), best_epoch=result.get("best_epoch"),
                      dataset=manifest.get("dataset"), training_data_sha256=result.get("data_sha256")),
        versions=versions("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"),
    )


def export_bundle(source: str | os.PathLike, out: str | os.PathLike, *, formats: Sequence[str] = FORMATS,
                  fold: str | int = "best", dataset: str | os.PathLike | None = None, reduced: bool = True,
                  tolerance: float = TOLERANCE, min_agreement: float = MIN_AGREEMENT, overwrite: bool = False,
                  log: Log = print) -> list[BundleMetadata]:
    """Export one model, or every fold of a run, as bundles.

    Args:
        source: a run folder, a fold folder or a ``model.keras`` (see :func:`resolve_source`).
        out: the bundle folder; with ``fold="all"`` one bundle per fold is written to ``out/fold_K``.
        formats: any of ``"savedmodel"``, ``"onnx"``, ``"tflite"``; ``model.keras`` is always included.
        fold: a fold number, ``"best"`` or ``"all"`` (for a run folder).
        dataset: the dataset folder, if it moved since training (for calibration and agreement slices).
        reduced: also make the int8 ONNX (with ``"onnx"``) and int8 and float16 LiteRT (with ``"tflite"``)
            variants, each shipped only when it agrees with float32.
        tolerance: largest allowed max-abs probability difference between a float32 artifact and Keras.
        min_agreement: smallest per-muscle Dice between float32 and reduced labels for a variant to ship.
        overwrite: replace an existing bundle folder.
        log: where progress lines go.

    Returns:
        The :class:`~kerasmuscle.bundle.BundleMetadata` of each bundle written.

    Raises:
        ExportError: a float32 artifact disagrees with Keras beyond ``tolerance`` (nothing is written),
            the source is not exportable, or ``out`` exists without ``overwrite``.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format {unknown[0]!r}; formats are {', '.join(FORMATS)}")
    out = Path(out)
    entries = resolve_source(source, fold)
    targets = [out / f"fold_{e['fold']}" for e in entries] if fold == "all" else [out]
    for target in targets:
        check_creatable(target)  # before the model is loaded and converted
        recover_replaced(target)  # a bundle that a killed --overwrite export had renamed aside
        remove_stale_temporaries(target.parent)  # what killed exports left
        if target.exists() and not overwrite:
            raise ExportError(f"{target}: exists; pass --overwrite to replace it")
    keras, _ = keras_tf()
    from kerasmuscle.model import CUSTOM_OBJECTS, count_params, float32_model

    written = []
    for entry, target in zip(entries, targets):
        log(f"exporting {entry['model']} to {target}")
        loaded = keras.models.load_model(entry["model"], custom_objects=CUSTOM_OBJECTS, compile=False)
        model = float32_model(loaded, entry["config"].model)
        entry = {**entry, "rebuilt_float32": model is not loaded}
        samples = sample_slices(entry, dataset, log)
        meta = base_metadata(entry, target.name, count_params(model))
        with atomic_path(target, overwrite=True) as tmp, tempfile.TemporaryDirectory() as scratch:
            tmp.mkdir(parents=True)
            meta = dataclasses.replace(meta, **_build(model, entry, tmp, Path(scratch), formats, samples, meta,
                                                      reduced, tolerance, min_agreement, log))
            _bundle.write_metadata(tmp, meta)
            _bundle.write_checksums(tmp)
        log(f"wrote {target}: {', '.join(meta.files)}")
        written.append(meta)
    return written


def _build(model, entry, folder: Path, scratch: Path, formats, samples: Samples, meta: BundleMetadata, reduced: bool,
           tolerance: float, min_agreement: float, log: Log) -> dict[str, Any]:
    """Write every artifact into ``folder`` and check it; returns the metadata fields that describe them."""
    _, tf = keras_tf()
    config: TrainConfig = entry["config"]
    x, real = _parity_inputs(samples, config.preprocess)
    inputs = {1: x[:1], 3: x[:3]}

    files: dict[str, str] = {}
    left_out: dict[str, str] = {}
    if entry.get("rebuilt_float32"):
        model.save(folder / _bundle.ARTIFACTS["keras"])  # the float32 network the other artifacts came from
    else:
        shutil.copy2(entry["model"], folder / _bundle.ARTIFACTS["keras"])
    files["keras"] = _bundle.ARTIFACTS["keras"]
    runners = {}

    saved_model = folder / _bundle.ARTIFACTS["savedmodel"] if "savedmodel" in formats else scratch / "saved_model"
    if "savedmodel" in formats or "tflite" in formats:
        log("  SavedModel")
        write_savedmodel(model, config, saved_model)
    if "savedmodel" in formats:
        loaded = tf.saved_model.load(os.fspath(saved_model))
        runners["savedmodel"] = lambda v, f=loaded.serve: np.asarray(f(tf.constant(v)))
        files["savedmodel"] = _bundle.ARTIFACTS["savedmodel"]
    if "onnx" in formats:
        log("  ONNX (opset 17)")
        path = folder / _bundle.ARTIFACTS["onnx"]
        write_onnx(model, config, path, meta)
        runners["onnx"] = load_model(path, "onnx").run
        files["onnx"] = _bundle.ARTIFACTS["onnx"]
    if "tflite" in formats:
        log("  LiteRT float32")
        run = _float32_tflite(saved_model, folder / _bundle.ARTIFACTS["tflite"], inputs, left_out, log)
        if run is not None:
            runners["tflite"] = run
            files["tflite"] = _bundle.ARTIFACTS["tflite"]
    parity = check_parity(runners, model, inputs, tolerance, str(entry["model"]), log)

    variants: dict[str, Variant] = {}
    if reduced:
        keys = (["onnx_int8"] if "onnx" in formats else []) + (["tflite_int8", "tflite_fp16"] if "tflite" in formats else [])
        for key in keys:
            fp32 = runners.get(_VARIANTS[key][0])
            if fp32 is None:
                variants[key] = Variant(shipped=False, reason=f"no float32 model to compare with ({left_out['tflite']})")
            else:
                variants[key] = _reduced(key, fp32, saved_model, folder, scratch, samples, config.preprocess,
                                         min_agreement, log)
            if variants[key].shipped:
                files[key] = _bundle.ARTIFACTS[key]
    return {"files": files, "left_out": left_out, "parity": parity, "reduced_precision": variants,
            "checked_on": samples.source if real else "smooth random images (no dataset)"}


def _float32_tflite(saved_model: Path, path: Path, inputs: dict[int, np.ndarray], left_out: dict[str, str], log: Log):
    """Convert and try float32 LiteRT; when LiteRT cannot convert, load or run it, leave it out of the bundle
    with the reason (``left_out``) rather than fail the export: the ONNX model does not depend on it.
    A missing extra still fails, since the format was asked for."""
    step = "convert"
    try:
        write_tflite(saved_model, path)
        step = "load"
        model = load_model(path, "tflite")
        step = "run"
        for v in inputs.values():
            model.run(v)
    except MissingExtraError:
        raise
    except Exception as exc:  # a converter or runtime failure: the format is left out, the export goes on
        path.unlink(missing_ok=True)
        left_out["tflite"] = f"LiteRT float32 failed to {step}: {one_line(exc)}"
        log(f"  tflite: left out, {left_out['tflite']}")
        return None
    return model.run


#: Reduced-precision variant -> (backend, what it is, whether it is calibrated).
_VARIANTS: dict[str, tuple[str, str, bool]] = {
    "onnx_int8": ("onnx", "int8 ONNX: static quantisation", True),
    "tflite_int8": ("tflite", "int8 LiteRT: full-integer quantisation", True),
    "tflite_fp16": ("tflite", "LiteRT float16 weights", False),
}


def _write_variant(key: str, saved_model: Path, folder: Path, scratch: Path, path: Path, calib: np.ndarray) -> None:
    if key == "onnx_int8":
        write_onnx_int8(folder / _bundle.ARTIFACTS["onnx"], path, calib, scratch)
    elif key == "tflite_int8":
        write_tflite(saved_model, path, int8_calibration=calib)
    else:
        write_tflite(saved_model, path, float16=True)


def _reduced(key: str, fp32, saved_model: Path, folder: Path, scratch: Path, samples: Samples, pre,
             min_agreement: float, log: Log) -> Variant:
    """Make one reduced-precision variant, measure it against float32, and move it into the bundle if it agrees.

    A variant that fails to build, load or run (LiteRT's XNNPACK delegate refuses some int8 graphs of
    barely trained models, for one) is left out with the error as its reason; it never fails the export.
    """
    backend, what, calibrated = _VARIANTS[key]
    rel = _bundle.ARTIFACTS[key]
    held, calib = samples.heldout, samples.calibration
    if not held or calib is None or not len(calib):
        return Variant(shipped=False, reason="no slices to measure agreement on (the dataset was not available)")
    path = scratch / rel
    log(f"  {what}" + (f" calibrated on {len(calib)} training slices" if calibrated else ""))
    step = "build"
    try:
        _write_variant(key, saved_model, folder, scratch, path, calib)
        step = "load"
        low = load_model(path, backend).run
        step = "run"
        record = agreement(fp32, low, held, pre, min_agreement)
    except Exception as exc:  # any failure of the variant: left out with the reason, the export goes on
        reason = f"failed to {step}: {one_line(exc)}"
        log(f"  {key}: not shipped, {reason}")
        return Variant(shipped=False, failed=step, reason=reason)
    variant = Variant(**record, size_bytes=path.stat().st_size,
                      calibration_slices=int(len(calib)) if calibrated else None)
    if variant.shipped:
        shutil.move(os.fspath(path), os.fspath(folder / rel))
    d = variant.dice_vs_float32["min"]
    log(f"  {key}: Dice vs float32 {'n/a' if d is None else f'{d:.4f}'} (min over muscles), "
        f"{variant.speedup:.2f}x float32 speed: {'shipped' if variant.shipped else 'not shipped, ' + variant.reason}")
    return variant


__all__ = ["CALIBRATION_SLICES", "FORMATS", "HELDOUT_SLICES", "MIN_AGREEMENT", "POSTPROCESS_HU", "TOLERANCE",
           "ExportError", "Samples", "base_metadata", "export_bundle", "heldout_stacks", "random_inputs",
           "resolve_source", "sample_slices"]
