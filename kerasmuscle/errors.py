"""Errors and warnings that kerasmuscle raises, each naming its cause in words a user can act on."""

from __future__ import annotations

import os
import re


class KerasMuscleError(Exception):
    """Base class of every error kerasmuscle raises on purpose (the CLI prints these as one line)."""


class ReadError(KerasMuscleError, ValueError):
    """A file or folder could not be read as what was asked for.

    Args:
        path: the file or folder at fault.
        cause: what is wrong with it, in words (no trailing full stop).

    The message is ``"<path>: <cause>"`` on one line (line breaks in a cause quoted from a library become
    spaces), so a batch log names the file on every line.
    """

    def __init__(self, path: str | os.PathLike | None, cause: str):
        self.path = None if path is None else os.fspath(path)
        self.cause = cause = re.sub(r"\s*\n\s*", " ", cause)
        super().__init__(cause if self.path is None else f"{self.path}: {cause}")


class MissingExtraError(KerasMuscleError, ImportError):
    """An optional dependency is needed; the message names the ``pip install`` that provides it.

    Args:
        what: what needs the dependency (for example ``"DICOM SEG"``).
        extra: the kerasmuscle extra that installs it (for example ``"dicom"``).
        module: the module that failed to import.
    """

    def __init__(self, what: str, extra: str, module: str):
        self.extra = extra
        self.module = module
        super().__init__(
            f"{what} needs the '{module}' package, which is not installed: "
            f"pip install 'kerasmuscle[{extra}]'"
        )


class ScanWarning(UserWarning):
    """Something in the input was unusual but readable (irregular slices, assumed rescale, ...)."""


class WriteError(KerasMuscleError, OSError):
    """An output could not be written: no space, a read-only or forbidden folder, a file where a folder
    should be. Nothing that existed before is changed by the failed write.

    Args:
        path: the file or folder that was to be written.
        cause: what stopped it, in words (no trailing full stop).
        errno: the operating system's error number, when there is one.

    The message is ``"<path>: cannot write (<cause>)"``.
    """

    def __init__(self, path: str | os.PathLike, cause: str, errno: int | None = None):
        self.path = os.fspath(path)
        self.cause = cause
        super().__init__(f"{self.path}: cannot write ({cause})")
        self.errno = errno
