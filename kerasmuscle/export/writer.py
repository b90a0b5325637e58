"""Export a trained model as a bundle: Keras, SavedModel, ONNX and LiteRT, checked against Keras.

``export_bundle(run_or_model, out)`` writes the folder described in :mod:`kerasmuscle.bundle`. Every
artifact is run on the same slices as the Keras model, at batch sizes 1 and 3: float32 artifacts must agree
to a maximum absolute difference of 1e-4 in probability, or the export fails and nothing is written.
Reduced-precision variants (int8 ONNX and int8 LiteRT, both calibrated on training slices, and LiteRT
with float16 weights) are compared with float32 on held-out slices by the Dice of their label maps, and shipped
only when every muscle group agrees to at least 0.99.

Needs TensorFlow and the ``export`` extra (tf2onnx, onnx, ai-edge-litert).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle import __version__
from kerasmuscle import bundle as _bundle
from kerasmuscle.config import TrainConfig
from kerasmuscle.errors import KerasMuscleError, MissingExtraError
from kerasmuscle.core.postprocess import MUSCLE_HU
from kerasmuscle.fileutil import atomic_path, read_json, stderr_silenced, versions
from kerasmuscle.labels import LABELS, MUSCLE_LABELS

Log = Callable[[str], None]

FORMATS = ("savedmodel", "onnx", "tflite")
#: Largest max-abs probability difference a float32 artifact may have from Keras.
TOLERANCE = 1e-4
#: Smallest per-muscle Dice between float32 and reduced-precision labels for a variant to ship.
MIN_AGREEMENT = 0.99
CALIBRATION_SLICES = 32
HELDOUT_SLICES = 48


class ExportError(KerasMuscleError):
    """An export could not be made or failed its checks; nothing was written."""


# --------------------------------------------------------------------------------------------------
# what to export


def resolve_source(source: str | os.PathLike, fold: str | int = "best") -> list[dict[str, Any]]:
    """The model files to export and what is known about each.

    Args:
        source: a run folder from ``kerasmuscle train``, a fold folder, or a ``model.keras`` inside a run.
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


# --------------------------------------------------------------------------------------------------
# slices to check and calibrate on


def sample_slices(entry: dict[str, Any], dataset: str | os.PathLike | None, log: Log) -> dict[str, Any]:
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
    out: dict[str, Any] = {"calibration": None, "heldout": None, "source": "none"}
    if dataset and Path(dataset).is_dir() and (run / "splits.json").is_file() and k is not None:
        cases = {c.id: c for c in discover_cases(dataset)}
        splits = load_splits(run / "splits.json", list(cases.values()))
        fold = splits["folds"][k]
        log(f"reading {len(fold['train'])} training and {len(fold['val'])} held-out cases of fold {k} from {dataset}")
        train = load_slices([cases[c] for c in fold["train"]], pre, cache_dir=run / "cache")
        held = load_slices([cases[c] for c in fold["val"]], pre, cache_dir=run / "cache")
        out.update(calibration=_spread(train.images, CALIBRATION_SLICES), heldout=_spread(held.images, HELDOUT_SLICES),
                   source=f"fold {k}: {len(fold['train'])} training cases (calibration), "
                          f"{len(fold['val'])} held-out cases (agreement)")
    elif dataset and Path(dataset).is_dir():
        cases = discover_cases(dataset)
        every = load_slices(cases, pre)
        out.update(calibration=_spread(every.images, CALIBRATION_SLICES), heldout=_spread(every.images, HELDOUT_SLICES),
                   source=f"{len(cases)} cases of {dataset} (not held out: no fold is known)")
    else:
        log("the run's dataset is not available: parity is checked on smooth random images, and reduced "
            "precision is skipped (pass --dataset to measure it)")
    return out


def _spread(images: np.ndarray, n: int) -> np.ndarray:
    if len(images) <= n:
        return images
    return images[np.linspace(0, len(images) - 1, n).round().astype(int)]


def random_inputs(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth random images in -1..1 (blobs of low-frequency noise), for parity when no slices are at hand."""
    from kerasmuscle.core.preprocessing import resize_image

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (n, channels, max(2, size // 8), max(2, size // 8))).astype(np.float32)
    return np.moveaxis(resize_image(coarse, (size, size)), 1, -1).clip(-1, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# writing each format


@contextmanager
def _quiet():
    """Keep converters' progress chatter (Python and C++) and deprecation warnings out of the user's terminal;
    failures still arrive as exceptions."""
    with warnings.catch_warnings(), redirect_stdout(StringIO()), stderr_silenced():
        warnings.simplefilter("ignore")
        yield


def _input_spec(config: TrainConfig):
    keras, _ = _keras()
    size, channels = config.preprocess.image_size, config.preprocess.channels
    return keras.InputSpec(shape=(None, size, size, channels), dtype="float32")


def _keras():
    from kerasmuscle.fileutil import import_keras

    return import_keras()


def write_savedmodel(model, config: TrainConfig, path: Path) -> None:
    """A TensorFlow SavedModel with a ``serve`` endpoint of dynamic batch size."""
    with _quiet():
        model.export(os.fspath(path), format="tf_saved_model", input_signature=[_input_spec(config)], verbose=False)


def write_onnx(model, config: TrainConfig, path: Path, meta: dict[str, Any]) -> None:
    """ONNX at opset 17 with a dynamic batch axis, input ``image`` and output ``probabilities``."""
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("ONNX export", "export", "onnx") from None
    with _quiet():
        try:
            model.export(os.fspath(path), format="onnx", input_signature=[_input_spec(config)], opset_version=17,
                         verbose=False)
        except ImportError as exc:
            raise MissingExtraError("ONNX export", "export", exc.name or "tf2onnx") from None
    proto = onnx.load(os.fspath(path))
    _rename_io(proto, {proto.graph.input[0].name: _bundle.INPUT_NAME, proto.graph.output[0].name: _bundle.OUTPUT_NAME})
    proto.producer_name = "kerasmuscle"
    proto.producer_version = __version__
    proto.doc_string = "kerasmuscle L3 muscle U-Net (Kreher et al. 2022); see metadata.json in the bundle"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "kerasmuscle", json.dumps({k: meta[k] for k in ("labels", "preprocessing", "postprocess")})
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))


def _rename_io(proto, names: dict[str, str]) -> None:
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = names.get(value.name, value.name)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = names.get(name, name)


def write_tflite(saved_model: Path, path: Path, *, float16: bool = False,
                 int8_calibration: np.ndarray | None = None) -> None:
    """LiteRT flatbuffer converted from a SavedModel (dynamic batch axis).

    Args:
        saved_model: the SavedModel folder.
        path: the ``.tflite`` to write.
        float16: store the weights as float16 (computation stays float32).
        int8_calibration: full-integer int8 quantisation (int8 weights and activations, float32 input and
            output), calibrated on these preprocessed slices ``[n, size, size, channels]``.

    Converting from the SavedModel rather than from a traced Keras call matters: a concrete function that
    captures the Keras 3 variables converted to a model that outputs NaN in LiteRT 2.3.
    """
    _, tf = _keras()
    with _quiet():
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model))
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if int8_calibration is not None:
            def representative():
                for i in range(len(int8_calibration)):
                    yield [int8_calibration[i:i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        path.write_bytes(converter.convert())


def _phase_taps(kernel: int, pad_begin: int, phase: int) -> tuple[int, list[int]]:
    """For output phase ``phase`` of a stride-2 transposed convolution along one axis: the ordinary
    convolution's leading pad and, per its kernel position, the transposed kernel's tap."""
    ks = [k for k in range(kernel) if (phase + pad_begin - k) % 2 == 0]
    offsets = [(phase + pad_begin - k) // 2 for k in ks]
    lead = -min(offsets)
    taps = [0] * (max(offsets) - min(offsets) + 1)
    for k, d in zip(ks, offsets):
        taps[d + lead] = k
    return lead, taps


def split_transposed_convs(proto) -> int:
    """Rewrite stride-2 ``ConvTranspose`` nodes as four ordinary convolutions, one per output phase, then
    ``DepthToSpace``; the result is the same function (exact up to float rounding) in the same FLOPs.

    ONNX Runtime has int8 kernels for ``Conv`` but not for ``ConvTranspose``, so without this the four
    upsampling layers of the U-Net (19 % of its FLOPs) stay float32 in the int8 model. Output pixel
    ``2m + p`` of a stride-2 transposed convolution only sees the kernel taps ``k`` with ``p + pad - k``
    even, each applied to input ``m + (p + pad - k) / 2``: an ordinary convolution per phase ``p``.

    Args:
        proto: an ``onnx.ModelProto``, changed in place.

    Returns:
        How many nodes were rewritten (those with stride 2 in both axes, no groups or dilation, no
        output padding, constant weights, and an output exactly twice the input size).
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        kernel, pads = list(a.get("kernel_shape", [])), list(a.get("pads", [0, 0, 0, 0]))
        if not (node.op_type == "ConvTranspose" and list(a.get("strides", [])) == [2, 2] and len(kernel) == 2
                and a.get("group", 1) == 1 and list(a.get("dilations", [1, 1])) == [1, 1]
                and not any(a.get("output_padding", [])) and "output_shape" not in a
                and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and node.input[1] in inits
                and all(kernel[i] - pads[i] - pads[i + 2] == 2 for i in (0, 1))):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).transpose(1, 0, 2, 3)  # -> [out, in, kh, kw]
        phases = []
        for py in (0, 1):
            lead_y, taps_y = _phase_taps(kernel[0], pads[0], py)
            for px in (0, 1):
                lead_x, taps_x = _phase_taps(kernel[1], pads[1], px)
                weights = np.ascontiguousarray(w[:, :, taps_y][:, :, :, taps_x])
                name = f"{node.name}_phase{py}{px}"
                graph.initializer.append(numpy_helper.from_array(weights, name + "_W"))
                bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
                end_y, end_x = len(taps_y) - 1 - lead_y, len(taps_x) - 1 - lead_x
                nodes.append(helper.make_node("Conv", [node.input[0], name + "_W", *bias], [name + "_out"], name=name,
                                              kernel_shape=list(weights.shape[2:]),
                                              pads=[lead_y, lead_x, max(end_y, 0), max(end_x, 0)]))
                phases.append(name + "_out")
        nodes.append(helper.make_node("Concat", phases, [node.name + "_phases"], name=node.name + "_phases", axis=1))
        nodes.append(helper.make_node("DepthToSpace", [node.name + "_phases"], list(node.output),
                                      name=node.name + "_interleave", blocksize=2, mode="DCR"))
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return done


def write_onnx_int8(fp32_path: Path, path: Path, calibration: np.ndarray, scratch: Path) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) calibrated on slices.

    The transposed convolutions are first rewritten as ordinary ones (:func:`split_transposed_convs`) so
    that they run in int8 too; the softmax stays float32 so the output is still a probability.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{_bundle.INPUT_NAME: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    split = scratch / "split.onnx"
    proto = onnx.load(os.fspath(fp32_path))
    split_transposed_convs(proto)
    onnx.save(proto, os.fspath(split))
    pre = scratch / "preprocessed.onnx"
    with _quiet():
        quant_pre_process(os.fspath(split), os.fspath(pre), skip_symbolic_shape=True)
        softmax = [n.name for n in onnx.load(os.fspath(pre)).graph.node if n.op_type == "Softmax"]
        quantize_static(os.fspath(pre), os.fspath(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=softmax)


# --------------------------------------------------------------------------------------------------
# checks


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two arrays of the same shape."""
    if a.shape != b.shape:
        raise ExportError(f"output shape {a.shape} differs from Keras' {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def label_agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float | None]:
    """Dice between two label maps for each muscle group, pooled over all slices.

    Returns:
        muscle key -> Dice (None where neither map has that muscle), plus ``"min"``: the smallest Dice
        (None when no muscle occurs at all).
    """
    from kerasmuscle.core.metrics import overlap_metrics

    out: dict[str, float | None] = {}
    for lab in MUSCLE_LABELS:
        dice = overlap_metrics(reference == lab.id, other == lab.id)["dice"]
        out[lab.key] = None if np.isnan(dice) else round(float(dice), 6)
    values = [v for v in out.values() if v is not None]
    out["min"] = min(values) if values else None
    return out


def _time(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int = 3) -> float:
    run(x)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------------
# the bundle


def base_metadata(entry: dict[str, Any], name: str, params: int) -> dict[str, Any]:
    """metadata.json without the files, parity and speed parts."""
    config: TrainConfig = entry["config"]
    pre = config.preprocess
    manifest = entry["manifest"]
    k = entry["fold"]
    result = manifest.get("fold_results", {}).get(str(k), {}) if k is not None else {}
    return {
        "format_version": _bundle.FORMAT_VERSION,
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": "Kreher et al. 2022: 2-D U-Net, five muscle groups at L3",
        "labels": [{"id": lab.id, "key": lab.key, "name": lab.name, "colour": list(lab.colour),
                    "colour_name": lab.colour_name} for lab in LABELS],
        "input": {"name": _bundle.INPUT_NAME, "shape": [None, pre.image_size, pre.image_size, pre.channels],
                  "dtype": "float32", "layout": "NHWC"},
        "output": {"name": _bundle.OUTPUT_NAME, "shape": [None, pre.image_size, pre.image_size, len(LABELS)],
                   "dtype": "float32", "meaning": "softmax probability per class, classes in label id order"},
        "preprocessing": {
            "image_size": pre.image_size, "channels": pre.channels, "hu_window": list(pre.hu_window),
            "normalisation": "HU clipped to hu_window, then mapped linearly onto -1..1",
            "channel_layout": "the slice itself" if pre.channels == 1 else
                              "the slice below, the slice, the slice above (edge slices repeated)",
            "resize": "each slice resized to image_size square with separable linear filters (antialiased when "
                      "shrinking); probabilities resized back the same way before the argmax",
        },
        "orientation": "axial slices as kerasmuscle.read_scan returns them: DICOM stored pixel layout, which for "
                       "the usual supine head-first series puts the patient's left at higher column indices "
                       "and posterior at higher row indices",
        "postprocess": {"hu_range": list(MUSCLE_HU),
                        "rule": "predicted muscle whose HU lies outside hu_range (inclusive) becomes background"},
        "model": {"architecture": config.model.to_dict(), "parameters": params},
        "source": {"run": str(entry["run"].resolve()) if entry["run"] else None, "fold": k,
                   "folds": manifest.get("folds"), "model_file": str(entry["model"].resolve()),
                   "tuning_score": result.get("best"), "monitor": result.get("monitor"),
                   "best_epoch": result.get("best_epoch"), "dataset": manifest.get("dataset")},
        "training_data_sha256": result.get("data_sha256"),
        "versions": versions("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"),
    }


def export_bundle(source: str | os.PathLike, out: str | os.PathLike, *, formats: Sequence[str] = FORMATS,
                  fold: str | int = "best", dataset: str | os.PathLike | None = None, reduced: bool = True,
                  tolerance: float = TOLERANCE, min_agreement: float = MIN_AGREEMENT, overwrite: bool = False,
                  log: Log = print) -> list[dict[str, Any]]:
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
        The metadata of each bundle written.

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
        if target.exists() and not overwrite:
            raise ExportError(f"{target}: exists; pass --overwrite to replace it")
    keras, _ = _keras()
    from kerasmuscle.model import CUSTOM_OBJECTS, count_params

    written = []
    for entry, target in zip(entries, targets):
        log(f"exporting {entry['model']} to {target}")
        model = keras.models.load_model(entry["model"], custom_objects=CUSTOM_OBJECTS, compile=False)
        samples = sample_slices(entry, dataset, log)
        meta = base_metadata(entry, target.name, count_params(model))
        with atomic_path(target, overwrite=True) as tmp, tempfile.TemporaryDirectory() as scratch:
            tmp.mkdir(parents=True)
            meta.update(_build(model, entry, tmp, Path(scratch), formats, samples, meta, reduced, tolerance,
                               min_agreement, log))
            _bundle.write_metadata(tmp, meta)
            _bundle.write_checksums(tmp)
        log(f"wrote {target}: {', '.join(meta['files'])}")
        written.append(meta)
    return written


def _build(model, entry, folder: Path, scratch: Path, formats, samples, meta, reduced, tolerance, min_agreement,
           log: Log) -> dict[str, Any]:
    from kerasmuscle.predict.runtimes import load_model

    _, tf = _keras()
    config: TrainConfig = entry["config"]
    pre = config.preprocess
    held = samples["heldout"]
    if held is not None and len(held) >= 3:
        x = held[:3]
    else:
        x = random_inputs(3, pre.image_size, pre.channels)
    inputs = {1: x[:1], 3: x[:3]}
    reference = {b: np.asarray(model.predict_on_batch(v)) for b, v in inputs.items()}

    files: dict[str, str] = {}
    parity: dict[str, dict[str, Any]] = {}
    shutil.copy2(entry["model"], folder / _bundle.ARTIFACTS["keras"])
    files["keras"] = _bundle.ARTIFACTS["keras"]
    runners: dict[str, Callable[[np.ndarray], np.ndarray]] = {}

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
        path = folder / _bundle.ARTIFACTS["tflite"]
        write_tflite(saved_model, path)
        runners["tflite"] = load_model(path, "tflite").run
        files["tflite"] = _bundle.ARTIFACTS["tflite"]

    for key, run in runners.items():
        diffs = {f"batch_{b}_max_abs": max_abs_diff(run(v), reference[b]) for b, v in inputs.items()}
        worst = max(diffs.values())
        parity[key] = {**diffs, "tolerance": tolerance, "passed": worst <= tolerance}
        log(f"  parity {key}: max abs difference {worst:.2e} (batch 1 and 3; tolerance {tolerance:g})")
        if not worst <= tolerance:
            raise ExportError(f"{entry['model']}: the {key} export differs from Keras by {worst:.3g} in probability "
                              f"(tolerance {tolerance:g}); nothing was written. {_float32_noise(model, inputs)}")

    variants: dict[str, dict[str, Any]] = {}
    if reduced:
        candidates = []
        if "onnx" in formats:
            candidates.append(("onnx_int8", "onnx", runners.get("onnx")))
        if "tflite" in formats:
            candidates.append(("tflite_int8", "tflite", runners.get("tflite")))
            candidates.append(("tflite_fp16", "tflite", runners.get("tflite")))
        for key, backend, fp32 in candidates:
            variants[key] = _reduced(key, backend, fp32, saved_model, folder, scratch, samples, min_agreement, log)
            if variants[key]["shipped"]:
                files[key] = _bundle.ARTIFACTS[key]
    return {"files": files, "parity": parity, "reduced_precision": variants,
            "checked_on": samples["source"] if held is not None else "smooth random images (no dataset)"}


def _float32_noise(model, inputs: dict[int, np.ndarray]) -> str:
    """Say whether a parity failure is float32 rounding of the model itself rather than a broken export:
    Keras' own disagreement between batch 1 and batch 3 on the same slice, and the size of its logits."""
    keras, _ = _keras()
    own = max_abs_diff(np.asarray(model.predict_on_batch(inputs[1])), np.asarray(model.predict_on_batch(inputs[3]))[:1])
    try:
        logits = float(np.abs(np.asarray(keras.Model(model.input, model.get_layer("logits").output)
                                         .predict_on_batch(inputs[3]))).max())
    except ValueError:
        logits = float("nan")
    if own > 0.5 * TOLERANCE or logits > 1000:
        return (f"Keras differs from itself by {own:.3g} between batch 1 and batch 3 and its logits reach "
                f"{logits:.3g}: at that size float32 rounding alone differs between runtimes, the sign of a model "
                "far from trained (a trained one has logits of tens to a hundred), not of a broken export. Train "
                "longer, or accept it explicitly with --tolerance")
    return (f"Keras agrees with itself to {own:.3g} between batch sizes and its logits stay within {logits:.3g}, "
            "so the export is at fault")


def _reduced(key: str, backend: str, fp32: Callable[[np.ndarray], np.ndarray], saved_model: Path, folder: Path, scratch: Path, samples: dict[str, Any], min_agreement: float, log: Log) -> dict[str, Any]:
    """Make one reduced-precision variant, measure it against float32, and move it into the bundle if it agrees."""
    from kerasmuscle.predict.runtimes import load_model

    rel = _bundle.ARTIFACTS[key]
    held, calib = samples["heldout"], samples["calibration"]
    if held is None or calib is None or not len(held):
        return {"shipped": False, "reason": "no slices to measure agreement on (the dataset was not available)"}
    path = scratch / rel
    if key == "onnx_int8":
        log(f"  int8 ONNX: static quantisation calibrated on {len(calib)} training slices")
        write_onnx_int8(folder / _bundle.ARTIFACTS["onnx"], path, calib, scratch)
    elif key == "tflite_int8":
        log(f"  int8 LiteRT: full-integer quantisation calibrated on {len(calib)} training slices")
        write_tflite(saved_model, path, int8_calibration=calib)
    else:
        log("  LiteRT float16 weights")
        write_tflite(saved_model, path, float16=True)
    reduced = load_model(path, backend).run
    fp32_labels = np.concatenate([np.argmax(fp32(held[i:i + 4]), -1) for i in range(0, len(held), 4)])
    low_labels = np.concatenate([np.argmax(reduced(held[i:i + 4]), -1) for i in range(0, len(held), 4)])
    agreement = label_agreement(fp32_labels, low_labels)
    one = held[:1]
    fp32_s, low_s = _time(fp32, one), _time(reduced, one)
    low = agreement["min"]
    shipped = low is not None and low >= min_agreement
    record = {"shipped": shipped, "dice_vs_float32": agreement, "min_agreement": min_agreement,
              "heldout_slices": int(len(held)), "seconds_per_slice_float32": round(fp32_s, 4),
              "seconds_per_slice": round(low_s, 4), "speedup": round(fp32_s / low_s, 3),
              "size_bytes": path.stat().st_size}
    if key.endswith("_int8"):
        record["calibration_slices"] = int(len(calib))
    if shipped:
        shutil.move(os.fspath(path), os.fspath(folder / rel))
    else:
        record["reason"] = ("no muscle predicted on the held-out slices, so agreement cannot be measured"
                            if low is None else f"Dice agreement with float32 {low:.4f} < {min_agreement}")
    log(f"  {key}: Dice vs float32 {'n/a' if low is None else f'{low:.4f}'} (min over muscles), "
        f"{record['speedup']:.2f}x float32 speed: {'shipped' if shipped else 'not shipped, ' + record['reason']}")
    return record


__all__ = ["ExportError", "export_bundle", "label_agreement", "resolve_source"]
