"""Files and the process around them: atomic writes, JSON, installed versions, lazy heavy imports.

Outputs are written to a temporary name beside the target, then renamed into place: a crash or a kill
leaves either the old file or the new one, never half of one, and a batch that is run again can tell
finished outputs from unfinished ones. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Works for files and folders. On an exception the temporary path is removed and ``path`` is
    left as it was.

    Args:
        path: the final file or folder.
        overwrite: replace an existing ``path``; if False and it exists, raise FileExistsError.

    Yields:
        The temporary path to write (it does not exist yet).
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise FileExistsError(f"{final}: exists; refusing to overwrite it")
    final.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name ends with the final name, so writers that choose a format by suffix
    # (nibabel's .nii.gz) behave, and starts with ".tmp-", so leftovers are easy to recognise.
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{final.name}", dir=final.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when the file does not exist.

    Raises:
        KerasMuscleError: the file exists but cannot be read or parsed (the message names it).
    """
    from kerasmuscle.errors import KerasMuscleError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KerasMuscleError(f"{path}: unreadable ({exc})") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (numpy scalars as floats) through a temporary file."""
    atomic_write_text(path, json.dumps(data, indent=1, default=float) + "\n")


#: Installed distributions that provide an importable name, in the order they are tried.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"tensorflow": ("tensorflow-cpu", "tensorflow", "tensorflow-gpu")}


def package_version(name: str) -> str | None:
    """The installed version of a distribution (``tensorflow`` also finds ``tensorflow-cpu``), or None.
    Reads the installation's metadata; nothing is imported."""
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(*packages: str) -> dict[str, str | None]:
    """Provenance recorded with every result: kerasmuscle, Python, numpy and the named distributions."""
    from kerasmuscle import __version__

    return {"kerasmuscle": __version__, "python": platform.python_version(), "numpy": package_version("numpy"),
            **{name: package_version(name) for name in packages}}


def import_keras(what: str = "training", extra: str = "train"):
    """Import Keras and TensorFlow on first use, with TensorFlow's C++ start-up notices kept off stderr.

    Returns:
        ``(keras, tensorflow)``.

    Raises:
        MissingExtraError: they are not installed (the message names ``what`` needs them and the extra).
    """
    from kerasmuscle.errors import MissingExtraError

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow's C++ start-up prints absl and oneDNN notices straight to file descriptor 2, whatever
    # TF_CPP_MIN_LOG_LEVEL says; keep them out of the one-line messages users read.
    quiet = stderr_silenced() if "tensorflow" not in sys.modules else contextlib.nullcontext()
    with quiet:
        try:
            import keras
            import tensorflow as tf
        except ImportError as exc:
            raise MissingExtraError(what, extra, exc.name or "tensorflow") from None
    return keras, tf


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a moment.

    C++ runtimes (TensorFlow's start-up, LiteRT's delegate, the TFLite converter) write notices straight to
    it, past ``sys.stderr``; this keeps them out of the one-line messages users read. Failures still arrive
    as Python exceptions.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (some embedding hosts): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
