"""The model bundle on disk: file names, metadata and checksums (standard library only).

A bundle is a folder written by ``kerasmuscle export``::

    model.keras          the Keras model (training side)
    saved_model/         TensorFlow SavedModel, endpoint ``serve``
    model.onnx           ONNX opset 17, input ``image`` [batch, size, size, channels], output ``probabilities``
    model_int8.onnx      int8 ONNX (static quantisation), present only when it agrees with float32
    model.tflite         LiteRT float32
    model_fp16.tflite    LiteRT with float16 weights, present only when it agrees with float32
    model_int8.tflite    LiteRT full-integer int8 (float input and output), present only when it agrees
    metadata.json        labels, preprocessing, post-processing, provenance, parity and speed figures
    SHA256SUMS           ``<sha256>  <relative path>`` for every other file, as ``sha256sum -c`` reads it

The predictor refuses a bundle whose files do not match ``SHA256SUMS``, so a model that was changed,
truncated or swapped after export is never run under the old metadata.

``metadata.json`` is :class:`BundleMetadata`: frozen dataclasses with a ``schema_version``, written by the
export (:meth:`BundleMetadata.to_dict`) and checked field by field when read (:func:`read_metadata`), so a
damaged or foreign file fails in one line that names the file and the field. Schema 1 (the first
releases, which called the field ``format_version``) is upgraded on read; a newer schema is refused with
its number and what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kerasmuscle.errors import ReadError

#: Schema version of metadata.json written by this kerasmuscle (``schema_version``).
SCHEMA_VERSION = 2
#: The same number under its first name (schema 1 stored it as ``format_version``).
FORMAT_VERSION = SCHEMA_VERSION
#: Schema versions :func:`read_metadata` reads; older ones are upgraded to :data:`SCHEMA_VERSION`.
READABLE_VERSIONS = (1, 2)
METADATA = "metadata.json"
SUMS = "SHA256SUMS"

#: Artifact key -> path inside the bundle.
ARTIFACTS: dict[str, str] = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "onnx": "model.onnx",
    "onnx_int8": "model_int8.onnx",
    "tflite": "model.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "tflite_int8": "model_int8.tflite",
}

#: Names of the model's input and output in ONNX and LiteRT signatures.
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class BundleError(ReadError):
    """A bundle is missing, incomplete, altered after export, or of an unknown format."""


#: The model ``kerasmuscle predict`` and :meth:`~kerasmuscle.predict.Predictor.from_bundle` use when none is
#: named: trained on synthetic anatomy alone (see ``exports/l3-synth-v2/README.md``; it was fine-tuned from
#: ``exports/l3-synth-v1``, which stays as its parent).
SHIPPED_MODEL = "l3-synth-v2"
#: An environment variable naming another default bundle folder.
MODEL_ENV = "KERASMUSCLE_MODEL"


def shipped_model_places() -> list[Path]:
    """Where the shipped model is looked for, in order: ``$KERASMUSCLE_MODEL``; ``exports/<name>`` beside the
    package (a clone or an editable install); ``<prefix>/share/kerasmuscle/<name>`` (a wheel install)."""
    places = [Path(os.environ[MODEL_ENV])] if os.environ.get(MODEL_ENV) else []
    places.append(Path(__file__).resolve().parent.parent / "exports" / SHIPPED_MODEL)
    places.append(Path(sys.prefix) / "share" / "kerasmuscle" / SHIPPED_MODEL)
    return places


def default_bundle() -> Path:
    """The bundle to use when no model is named: the first of :func:`shipped_model_places` that holds one.

    Raises:
        BundleError: ``$KERASMUSCLE_MODEL`` names no bundle, or the shipped model is not installed.
    """
    places = shipped_model_places()
    if os.environ.get(MODEL_ENV):
        if not (places[0] / METADATA).is_file():
            raise BundleError(places[0], f"named by ${MODEL_ENV} but holds no {METADATA}")
        return places[0]
    for place in places:
        if (place / METADATA).is_file():
            return place
    raise BundleError(places[0], f"the shipped model {SHIPPED_MODEL} is not installed here; name a bundle "
                                 f"(--model) or set ${MODEL_ENV}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_files(folder: str | os.PathLike) -> list[str]:
    """Every file in the bundle except ``SHA256SUMS``, as sorted POSIX paths relative to the folder."""
    root = Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != SUMS)


def write_checksums(folder: str | os.PathLike) -> str:
    """Write ``SHA256SUMS`` for every file of the bundle and return its text."""
    root = Path(folder)
    text = "".join(f"{sha256_file(root / rel)}  {rel}\n" for rel in bundle_files(root))
    (root / SUMS).write_text(text, encoding="utf-8")
    return text


def read_checksums(folder: str | os.PathLike) -> dict[str, str]:
    """Parse ``SHA256SUMS``: relative path -> hex digest.

    Raises:
        BundleError: the file is missing or a line is malformed.
    """
    path = Path(folder) / SUMS
    if not path.is_file():
        raise BundleError(folder, f"no {SUMS}; not a bundle written by kerasmuscle export")
    sums: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or rel.startswith("/") or ".." in Path(rel).parts:
            raise BundleError(path, f"line {n} is not '<sha256>  <relative path>'")
        sums[rel.lstrip("*")] = digest.lower()
    return sums


def verify(folder: str | os.PathLike, only: list[str] | None = None) -> dict[str, str]:
    """Check the bundle's files against ``SHA256SUMS``.

    Args:
        folder: the bundle.
        only: check just these relative paths (and metadata.json); None checks every listed file and
            refuses files that are not listed.

    Returns:
        The checksums.

    Raises:
        BundleError: naming the first file that is missing, altered or unlisted.
    """
    root = Path(folder)
    sums = read_checksums(root)
    if METADATA not in sums:
        raise BundleError(root / SUMS, f"does not list {METADATA}")
    wanted = sorted(sums) if only is None else sorted({METADATA, *only})
    for rel in wanted:
        if rel not in sums:
            raise BundleError(root / rel, f"not listed in {SUMS}; the bundle was changed after export")
        path = root / rel
        if not path.is_file():
            raise BundleError(path, f"missing (listed in {SUMS})")
        if sha256_file(path) != sums[rel]:
            raise BundleError(path, f"does not match its checksum in {SUMS}; the file was changed after export "
                                    "(export the model again, or restore the file)")
    if only is None:
        extra = [rel for rel in bundle_files(root) if rel not in sums]
        if extra:
            raise BundleError(root / extra[0], f"not listed in {SUMS}; the bundle was changed after export")
    return sums



# --------------------------------------------------------------------------------------------------
# metadata.json: the schema


class _Fields:
    """Read typed values out of one JSON object; every problem is a one-line BundleError naming the file
    and the field (``preprocessing.image_size``)."""

    def __init__(self, data: Any, where: str, path: str | os.PathLike | None):
        self.where, self.path = where, path
        if not isinstance(data, dict):
            self.fail(f"is {_kind(data)}, not an object")
        self.data = data

    def fail(self, problem: str, key: str | None = None):
        name = ".".join(p for p in (self.where, key) if p) or METADATA
        raise BundleError(self.path, f"{METADATA}: {name} {problem}")

    def _get(self, key: str, default: Any, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail("is missing" if key not in self.data else "is null", key)
            return default
        return self.data[key]

    def str(self, key: str, default: str | None = None, *, required: bool = True) -> str | None:
        v = self._get(key, default, required)
        if v is not default and not isinstance(v, str):
            self.fail(f"is {_kind(v)}, not text", key)
        return v

    def int(self, key: str, default: int | None = None, *, required: bool = True, low: int | None = None) -> int | None:
        v = self._get(key, default, required)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(f"is {_kind(v)}, not an integer", key)
        if low is not None and v < low:
            self.fail(f"is {v}, less than {low}", key)
        return v

    def float(self, key: str, default: float | None = None, *, required: bool = True) -> float | None:
        v = self._get(key, default, required)
        if v is default:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(f"is {_kind(v)}, not a finite number", key)
        return float(v)

    def bool(self, key: str, default: bool | None = None, *, required: bool = True) -> bool | None:
        v = self._get(key, default, required)
        if v is not default and not isinstance(v, bool):
            self.fail(f"is {_kind(v)}, not true or false", key)
        return v

    def range(self, key: str, *, strict: bool) -> tuple[float, float]:
        v = self._get(key, None, True)
        if (not isinstance(v, list) or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) for x in v)):
            self.fail(f"is {v!r}, not [low, high] in HU", key)
        low, high = float(v[0]), float(v[1])
        if low > high or (strict and low == high):
            self.fail(f"is {v!r}: low must be {'below' if strict else 'at most'} high", key)
        return low, high

    def obj(self, key: str, *, required: bool = True) -> "_Fields":
        return _Fields(self._get(key, {}, required), ".".join(p for p in (self.where, key) if p), self.path)

    def mapping(self, key: str, *, required: bool = True) -> dict[str, Any]:
        v = self._get(key, {}, required)
        if not isinstance(v, dict):
            self.fail(f"is {_kind(v)}, not an object", key)
        return v

    def items(self, key: str) -> list[Any]:
        v = self._get(key, None, True)
        if not isinstance(v, list) or not v:
            self.fail(f"is {_kind(v)}, not a non-empty list", key)
        return v


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:40])
    return {dict: "an object", list: "a list", type(None): "null", bool: f"{str(value).lower()}"}.get(type(value),
                                                                                                   repr(value))


def _plain(value: Any) -> Any:
    """A dataclass as JSON-ready dicts and lists; optional fields (default None) that are None are left out."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.default is None:
                continue
            out[f.name] = _plain(v)
        return out
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Label:
    """One class of the label map: id, key, name and the paper's colour."""

    id: int
    key: str
    name: str
    colour: tuple[int, int, int]
    colour_name: str = ""

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Label":
        f = _Fields(data, where, path)
        colour = f.data.get("colour")
        if not isinstance(colour, list) or len(colour) != 3 or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour):
            f.fail(f"is {colour!r}, not [r, g, b] in 0..255", "colour")
        return cls(id=f.int("id", low=0), key=f.str("key"), name=f.str("name"), colour=tuple(colour),
                   colour_name=f.str("colour_name", "", required=False))


@dataclass(frozen=True)
class TensorSpec:
    """The model's input or output: name, shape (None for the dynamic batch axis), dtype and a description."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    layout: str | None = None
    meaning: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "TensorSpec":
        f = _Fields(data, where, path)
        shape = f.data.get("shape")
        if not isinstance(shape, list) or not all(s is None or (isinstance(s, int) and not isinstance(s, bool))
                                                  for s in shape):
            f.fail(f"is {shape!r}, not a list of sizes (null for the batch axis)", "shape")
        return cls(name=f.str("name"), shape=tuple(shape), dtype=f.str("dtype", "float32", required=False),
                   layout=f.str("layout", required=False), meaning=f.str("meaning", required=False))


@dataclass(frozen=True)
class Preprocessing:
    """How a CT slice becomes network input: size, channels (1, or 3 neighbouring slices) and HU window."""

    image_size: int
    channels: int
    hu_window: tuple[float, float]
    normalisation: str = "HU clipped to hu_window, then mapped linearly onto -1..1"
    channel_layout: str = ""
    resize: str = ""

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Preprocessing":
        f = _Fields(data, where, path)
        channels = f.int("channels")
        if channels not in (1, 3):
            f.fail(f"is {channels}, not 1 or 3", "channels")
        return cls(image_size=f.int("image_size", low=1), channels=channels, hu_window=f.range("hu_window", strict=True),
                   normalisation=f.str("normalisation", cls.normalisation, required=False),
                   channel_layout=f.str("channel_layout", "", required=False), resize=f.str("resize", "", required=False))


@dataclass(frozen=True)
class Postprocess:
    """The paper's post-processing: predicted muscle whose HU lies outside ``hu_range`` becomes background."""

    hu_range: tuple[float, float]
    rule: str = "predicted muscle whose HU lies outside hu_range (inclusive) becomes background"

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Postprocess":
        f = _Fields(data, where, path)
        return cls(hu_range=f.range("hu_range", strict=False), rule=f.str("rule", cls.rule, required=False))


@dataclass(frozen=True)
class ModelInfo:
    """The network: its architecture settings (``UNetConfig.to_dict()``) and parameter count."""

    architecture: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "ModelInfo":
        f = _Fields(data, where, path)
        return cls(architecture=f.mapping("architecture", required=False), parameters=f.int("parameters", required=False))


@dataclass(frozen=True)
class Source:
    """Where the model came from: run folder, fold, the score that chose it, and the training data's hash."""

    run: str | None = None
    fold: int | None = None
    folds: int | None = None
    model_file: str | None = None
    tuning_score: float | None = None
    monitor: str | None = None
    best_epoch: int | None = None
    dataset: str | None = None
    training_data_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Source":
        f = _Fields(data, where, path)
        return cls(run=f.str("run", required=False), fold=f.int("fold", required=False, low=0),
                   folds=f.int("folds", required=False), model_file=f.str("model_file", required=False),
                   tuning_score=f.float("tuning_score", required=False), monitor=f.str("monitor", required=False),
                   best_epoch=f.int("best_epoch", required=False), dataset=f.str("dataset", required=False),
                   training_data_sha256=f.str("training_data_sha256", required=False))


@dataclass(frozen=True)
class Parity:
    """A float32 artifact against Keras on the same slices: the largest probability difference per batch size."""

    batch_1_max_abs: float
    batch_3_max_abs: float
    tolerance: float
    passed: bool

    @property
    def worst(self) -> float:
        return max(self.batch_1_max_abs, self.batch_3_max_abs)

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Parity":
        f = _Fields(data, where, path)
        return cls(batch_1_max_abs=f.float("batch_1_max_abs"), batch_3_max_abs=f.float("batch_3_max_abs"),
                   tolerance=f.float("tolerance"), passed=f.bool("passed"))


@dataclass(frozen=True)
class Variant:
    """A reduced-precision variant (int8 ONNX, int8 or float16 LiteRT): shipped, or left out and why.

    ``failed`` is the step that raised (``"build"``, ``"load"`` or ``"run"``) when the variant could not be
    made or run at all; then ``reason`` holds the error and the agreement figures are absent.
    """

    shipped: bool
    reason: str | None = None
    failed: str | None = None
    dice_vs_float32: dict[str, float | None] | None = None
    min_agreement: float | None = None
    heldout_slices: int | None = None
    calibration_slices: int | None = None
    seconds_per_slice_float32: float | None = None
    seconds_per_slice: float | None = None
    speedup: float | None = None
    size_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str, path=None) -> "Variant":
        f = _Fields(data, where, path)
        dice = f.mapping("dice_vs_float32", required=False) or None
        return cls(shipped=f.bool("shipped"), reason=f.str("reason", required=False),
                   failed=f.str("failed", required=False), dice_vs_float32=dice,
                   min_agreement=f.float("min_agreement", required=False),
                   heldout_slices=f.int("heldout_slices", required=False),
                   calibration_slices=f.int("calibration_slices", required=False),
                   seconds_per_slice_float32=f.float("seconds_per_slice_float32", required=False),
                   seconds_per_slice=f.float("seconds_per_slice", required=False),
                   speedup=f.float("speedup", required=False), size_bytes=f.int("size_bytes", required=False))


@dataclass(frozen=True)
class BundleMetadata:
    """``metadata.json``: what the predictor needs to run the model and what is known about where it came from.

    Attributes:
        schema_version: :data:`SCHEMA_VERSION` for metadata this kerasmuscle writes.
        name: the bundle's name (its folder name at export).
        created: export time, ISO 8601 with the UTC offset.
        labels: the label table, in id order (id 0 is background).
        input, output: the model's tensors.
        preprocessing: image size, channels, HU window.
        postprocess: the HU range of the post-processing.
        files: artifact key (see :data:`ARTIFACTS`) -> path inside the bundle, for the artifacts it holds.
        parity: float32 artifact key -> :class:`Parity` against Keras.
        reduced_precision: variant key -> :class:`Variant` (shipped or why not).
        left_out: float32 artifact key -> why a format that was asked for is not in the bundle (LiteRT
            could not convert or run the model).
        source: run, fold and training data.
        model: architecture and parameter count.
        versions: package versions at export.
        checked_on: which slices the parity and agreement checks ran on.
        method, orientation: descriptions in words.
    """

    name: str
    created: str
    labels: tuple[Label, ...]
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    postprocess: Postprocess
    files: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Parity] = field(default_factory=dict)
    reduced_precision: dict[str, Variant] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    source: Source = field(default_factory=Source)
    model: ModelInfo = field(default_factory=ModelInfo)
    versions: dict[str, str | None] = field(default_factory=dict)
    checked_on: str = ""
    method: str = ""
    orientation: str = ""
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written as metadata.json (``schema_version`` first)."""
        out = _plain(self)
        return {"schema_version": out.pop("schema_version"), **out}

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike | None = None) -> "BundleMetadata":
        """Check and read metadata; schema 1 is upgraded first (:func:`upgrade`).

        Raises:
            BundleError: one line naming ``path`` and the field at fault, or the schema version when this
                kerasmuscle does not read it.
        """
        data = upgrade(data, path)
        f = _Fields(data, "", path)
        labels = tuple(Label.from_dict(v, f"labels[{i}]", path) for i, v in enumerate(f.items("labels")))
        if [lab.id for lab in labels] != list(range(len(labels))):
            f.fail(f"ids are {[lab.id for lab in labels]}, not 0..{len(labels) - 1} in order", "labels")
        pre = Preprocessing.from_dict(f.data.get("preprocessing"), "preprocessing", path)
        inp = TensorSpec.from_dict(f.data.get("input"), "input", path)
        out = TensorSpec.from_dict(f.data.get("output"), "output", path)
        if list(inp.shape[1:]) != [pre.image_size, pre.image_size, pre.channels]:
            f.fail(f"is {list(inp.shape)}, which does not match preprocessing "
                   f"({pre.image_size}x{pre.image_size}, {pre.channels} channel(s))", "input.shape")
        if not out.shape or out.shape[-1] != len(labels):
            f.fail(f"is {list(out.shape)}: its last axis must be the {len(labels)} labels", "output.shape")
        files = f.mapping("files")
        for key, rel in files.items():
            if key not in ARTIFACTS:
                f.fail(f"names {key!r}, not one of {', '.join(ARTIFACTS)}", "files")
            if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
                f.fail(f"is {rel!r}, not a path inside the bundle", f"files.{key}")
        versions = f.mapping("versions", required=False)
        return cls(
            schema_version=SCHEMA_VERSION, name=f.str("name"), created=f.str("created", "", required=False),
            labels=labels, input=inp, output=out, preprocessing=pre,
            postprocess=Postprocess.from_dict(f.data.get("postprocess"), "postprocess", path),
            files=dict(files),
            parity={k: Parity.from_dict(v, f"parity.{k}", path) for k, v in f.mapping("parity", required=False).items()},
            reduced_precision={k: Variant.from_dict(v, f"reduced_precision.{k}", path)
                               for k, v in f.mapping("reduced_precision", required=False).items()},
            left_out={str(k): str(v) for k, v in f.mapping("left_out", required=False).items()},
            source=Source.from_dict(f.data.get("source") or {}, "source", path),
            model=ModelInfo.from_dict(f.data.get("model") or {}, "model", path),
            versions={str(k): None if v is None else str(v) for k, v in versions.items()},
            checked_on=f.str("checked_on", "", required=False), method=f.str("method", "", required=False),
            orientation=f.str("orientation", "", required=False))

    def reason_missing(self, key: str) -> str | None:
        """Why the artifact ``key`` is not in the bundle, when the export recorded a reason."""
        if key in self.left_out:
            return self.left_out[key]
        variant = self.reduced_precision.get(key)
        return variant.reason if variant is not None and not variant.shipped else None


def upgrade(data: Any, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Metadata of an older schema in the layout of :data:`SCHEMA_VERSION` (a new dict; ``data`` is kept).

    Schema 1 differs only in two places: the version was called ``format_version`` and the training
    data's hash sat at the top level (now ``source.training_data_sha256``).

    Raises:
        BundleError: not a JSON object, no version, or a version this kerasmuscle does not read.
    """
    if not isinstance(data, dict):
        raise BundleError(path, f"{METADATA}: is {_kind(data)}, not a JSON object; not written by kerasmuscle export")
    version = data.get("schema_version", data.get("format_version"))
    if version is None:
        raise BundleError(path, f"{METADATA}: has no schema_version; not a bundle written by kerasmuscle export")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        raise BundleError(path, f"{METADATA}: bundle schema version {version!r}; this kerasmuscle reads versions "
                                f"{', '.join(map(str, READABLE_VERSIONS))}: "
                                + ("upgrade kerasmuscle (pip install -U kerasmuscle), or re-export the model with "
                                   "this one (kerasmuscle export RUN --out BUNDLE)" if newer else
                                   "re-export the model (kerasmuscle export RUN --out BUNDLE)"))
    data = dict(data)
    if version == 1:
        data.pop("format_version", None)
        source = dict(data.get("source") or {})
        if "training_data_sha256" in data:
            source.setdefault("training_data_sha256", data.pop("training_data_sha256"))
        data["source"] = source
    data["schema_version"] = SCHEMA_VERSION
    return data


def read_metadata(folder: str | os.PathLike) -> BundleMetadata:
    """Read and check ``metadata.json`` (no checksum verification; see :func:`verify`).

    Returns:
        The :class:`BundleMetadata`; metadata of schema 1 is upgraded on read.

    Raises:
        BundleError: missing, not JSON, a field missing or of the wrong type, or a schema version this
            kerasmuscle does not read (the message says which and what to do).
    """
    root = Path(folder)
    if not root.exists():
        raise BundleError(root, "no such bundle folder")
    if not root.is_dir():
        raise BundleError(root, "is a file; a bundle is the folder that kerasmuscle export wrote")
    path = root / METADATA
    if not path.is_file():
        raise BundleError(root, f"no {METADATA}; not a bundle written by kerasmuscle export")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(path, f"not valid JSON ({exc})") from None
    return BundleMetadata.from_dict(data, root)


def write_metadata(folder: str | os.PathLike, meta: BundleMetadata | dict[str, Any]) -> BundleMetadata:
    """Write ``metadata.json`` (indented); a dict is checked through :meth:`BundleMetadata.from_dict` first.

    Returns:
        What was written.
    """
    if not isinstance(meta, BundleMetadata):
        meta = BundleMetadata.from_dict(meta, folder)
    (Path(folder) / METADATA).write_text(json.dumps(meta.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return meta


__all__ = ["ARTIFACTS", "FORMAT_VERSION", "INPUT_NAME", "METADATA", "OUTPUT_NAME", "READABLE_VERSIONS",
           "SCHEMA_VERSION", "SUMS", "BundleError", "BundleMetadata", "Label", "ModelInfo", "Parity", "Postprocess",
           "Preprocessing", "Source", "TensorSpec", "Variant", "bundle_files", "read_checksums", "read_metadata",
           "sha256_file", "upgrade", "verify", "write_checksums", "write_metadata"]
