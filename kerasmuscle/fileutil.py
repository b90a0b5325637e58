"""Files and the process around them: atomic writes, JSON, installed versions, lazy heavy imports.

Outputs are written to a temporary name beside the target, then renamed into place: a crash or a kill
leaves either the old file or the new one, never half of one, and a batch that is run again can tell
finished outputs from unfinished ones. Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


#: Causes of a failed write, in words, by errno (others use the system's own words).
_WRITE_CAUSES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted", errno.ENOTDIR: "a file stands where a folder should be",
                 errno.EEXIST: "a file stands where a folder should be", errno.EISDIR: "a folder stands there",
                 errno.ENAMETOOLONG: "the name is too long"}
#: Errors after which no later output on the same file system can be written either (a batch stops).
FATAL_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def write_error(path: str | os.PathLike, exc: OSError):
    """``exc``, raised while writing ``path``, as a :class:`~kerasmuscle.errors.WriteError` that names the path
    (the part of it that is in the way, when a file stands where a folder should be) and the cause."""
    from kerasmuscle.errors import WriteError

    if isinstance(exc, WriteError):
        return exc
    cause = _WRITE_CAUSES.get(exc.errno) or (exc.strerror or str(exc)).lower()
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _blocking_file(Path(path))
        if blocker is not None:
            cause = f"{blocker} is a file, where a folder should be"
    return WriteError(path, cause, exc.errno)


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder among ``path``'s parents (or ``path`` itself), if any."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


def _owner_tag() -> str:
    """The part of a temporary name that says which process made it: host and process id."""
    host = re.sub(r"[^A-Za-z0-9]+", "", platform.node()) or "host"
    return f"{host}_{os.getpid()}"


#: A temporary name made by :func:`atomic_path`: ``.tmp-<host>_<pid>-<random>-<final name>``.
_TEMPORARY = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9]+)_(?P<pid>\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed processes left in ``folder``: temporary files and folders of :func:`atomic_path` whose
    process (on this host) is gone. Those of live processes, and of other hosts sharing the folder, stay.

    Returns:
        The paths removed.
    """
    host = _owner_tag().split("_")[0]
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if not m or m.group("host") != host or _alive(int(m.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    Works for files and folders. On an exception the temporary path is removed and ``path`` is
    left as it was. A folder that is replaced is first renamed aside (``.<name>.old``), then the new one
    renamed into place; if a kill came between the two, the next write of ``path`` puts the old one back first.

    Args:
        path: the final file or folder.
        overwrite: replace an existing ``path``; if False and it exists, raise FileExistsError.

    Yields:
        The temporary path to write (it does not exist yet).

    Raises:
        WriteError: the folder cannot be made or written (no space, read-only, a file in the way): the message
            names ``path`` and the cause. Errors of the body that concern other files pass unchanged.
    """
    final = Path(path)
    recover_replaced(final)
    if not overwrite and final.exists():
        raise FileExistsError(f"{final}: exists; refusing to overwrite it")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name ends with the final name, so writers that choose a format by suffix
        # (nibabel's .nii.gz) behave; it starts with ".tmp-" and its maker, so leftovers are easy to recognise
        # and remove_stale_temporaries can tell those of killed processes.
        fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{_owner_tag()}-", suffix=f"-{final.name}", dir=final.parent)
        os.close(fd)
        os.unlink(tmp_name)
    except OSError as exc:
        raise write_error(final, exc) from None
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
            if final.is_dir() and not final.is_symlink():
                old = _aside(final)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except OSError as exc:
            # Our own temporary path or the final one: an output problem. Anything else (an input that a
            # writer reads) passes as it is.
            names = {os.fspath(tmp), os.fspath(final)}
            if exc.errno is not None and (exc.filename is None
                                          or any(os.fspath(exc.filename).startswith(n) for n in names)):
                raise write_error(final, exc) from None
            raise
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def _aside(final: Path) -> Path:
    """Where :func:`atomic_path` puts a folder it replaces, for the moment between its two renames."""
    return final.with_name(f".{final.name}.old")


def recover_replaced(final: str | os.PathLike) -> None:
    """Put back a folder that a killed :func:`atomic_path` renamed aside without renaming its replacement in;
    remove one whose replacement is in place. :func:`atomic_path` does this itself; call it before asking
    whether ``final`` exists. (Two processes replacing the same folder at once are not supported: shards
    never share a case.)"""
    final = Path(final)
    old = _aside(final)
    if not old.is_dir() or old.is_symlink():
        return
    if not final.exists():
        old.rename(final)
    else:
        shutil.rmtree(old, ignore_errors=True)


def check_creatable(path: str | os.PathLike) -> None:
    """Fail early, creating nothing that stays, when ``path`` (a file or folder to be made or replaced) could not
    be written: a file stands where one of its folders should be, or its nearest existing folder takes no new
    file (read-only, no permission, full): a probe file is made there and removed at once.

    Raises:
        WriteError: naming ``path`` and the cause.
    """
    full = Path(os.path.abspath(path))
    blocker = _blocking_file(full.parent)
    if blocker is not None:
        raise write_error(path, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fspath(blocker)))
    existing = next((p for p in [full.parent, *full.parent.parents] if p.is_dir()), None)
    if existing is not None:
        _probe(existing, path)


def _probe(folder: Path, path: str | os.PathLike) -> None:
    """Create and remove a file in ``folder``; a failure is a WriteError naming ``path``."""
    try:
        fd, probe = tempfile.mkstemp(prefix=f".tmp-{_owner_tag()}-", suffix="-probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise write_error(path, exc) from None


def writable_folder(folder: str | os.PathLike) -> Path:
    """Make ``folder`` (and its parents) if needed and prove that a file can be created in it, before long work
    whose results would go there.

    Returns:
        The folder as a Path.

    Raises:
        WriteError: it cannot be made or written (read-only, no permission, a file in the way, no space).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from None
    _probe(folder, folder)
    return folder


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) while the block runs; other processes
    that ask for the same lock wait. ``flock`` on POSIX (NFS too, on Linux), ``msvcrt.locking`` on Windows.
    The lock ends with the process, so a killed holder never blocks the others.

    Raises:
        WriteError: the lock file cannot be created.
    """
    try:
        fh = open(path, "a+b")
    except OSError as exc:
        raise write_error(path, exc) from None
    with fh:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ten seconds; keep waiting
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


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
