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
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from kerasmuscle.errors import ReadError

#: Bundle format version written to and required in metadata.json.
FORMAT_VERSION = 1
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


def read_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``metadata.json`` (no checksum verification; see :func:`verify`).

    Raises:
        BundleError: missing, not JSON, or a format version this kerasmuscle does not read.
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
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version") if isinstance(meta, dict) else None
        raise BundleError(path, f"bundle format version {got!r}; this kerasmuscle reads version {FORMAT_VERSION}")
    return meta


def write_metadata(folder: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``metadata.json`` (indented, keys in the given order)."""
    (Path(folder) / METADATA).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
