"""Write outputs safely: to a temporary name beside the target, then rename into place.

A crash or a kill leaves either the old file or the new one, never half of one, and a batch that
is run again can tell finished outputs from unfinished ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
