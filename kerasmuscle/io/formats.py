"""The input formats, in one table: how a file is recognised, which function reads it, which writes it.

Adding a format is one row in :data:`FORMATS`: a :class:`Format` with the test on a file's first bytes
and name, its scan and label readers, its writer and its file name suffixes. ``read_scan``,
``read_labels``, batch case names, the output-folder guard and dataset discovery all follow the table.

Readers are named as ``"module:function"`` and imported when first used, so this module imports
nothing heavy and every format's dependencies stay optional until a file of that format is read.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Bytes :func:`sniff` reads from the start of a file (NIfTI-1's magic ends at byte 348).
HEAD_BYTES = 352
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00")


@dataclass(frozen=True)
class Format:
    """One input format: a row of :data:`FORMATS`.

    Args:
        kind: what :func:`sniff` returns for it (``"nifti"``).
        name: its name in messages (``"NIfTI"``).
        what: the words after "it is" when a file of this format is named where another is wanted.
        suffixes: file name endings, lowercase, longest first; stripped from case names (the first one is
            the one to write).
        matches: ``(first bytes, lowercase file name) -> bool``; the first row that matches wins.
        scan_reader: ``"module:function"`` returning a :class:`~kerasmuscle.io.scan.Scan`, or None.
        label_reader: ``"module:function"`` returning a :class:`~kerasmuscle.io.scan.LabelVolume`, or None.
        writer: ``"module:function"`` that writes labels in this format, or None.
        volume: one file holds the whole volume (False for DICOM, whose series is a folder of files).
        scan_options: the keyword options of ``read_scan`` its scan reader takes.
        label_name: its name as a label file (``"DICOM SEG"``); default ``name``.
        label_stems: file names (without suffix) that hold labels in a one-case-per-folder dataset.
    """

    kind: str
    name: str
    what: str
    suffixes: tuple[str, ...]
    matches: Callable[[bytes, str], bool]
    scan_reader: str | None = None
    label_reader: str | None = None
    writer: str | None = None
    volume: bool = True
    scan_options: tuple[str, ...] = ()
    label_name: str = ""
    label_stems: tuple[str, ...] = ("label", "labels")

    def read_scan(self, path: str, **options: Any):
        """Read a scan with this format's reader, passing only the options it takes."""
        return _load(self.scan_reader)(path, **{k: v for k, v in options.items() if k in self.scan_options})

    def read_labels(self, path: str):
        """Read a label file with this format's reader: a :class:`~kerasmuscle.io.scan.LabelVolume`."""
        return _load(self.label_reader)(path)

    def write(self) -> Callable[..., None]:
        """This format's label writer (its arguments are the writer's own; see :data:`FORMATS`)."""
        return _load(self.writer)


def _load(ref: str | None) -> Callable[..., Any]:
    module, _, function = (ref or "").partition(":")
    return getattr(importlib.import_module(module), function)


#: The readable formats, in the order :func:`sniff` tries them.
FORMATS: tuple[Format, ...] = (
    Format("dicom", "DICOM", "DICOM", (".dcm",),
           lambda head, name: head[128:132] == b"DICM",
           scan_reader="kerasmuscle.io.dicom:read_dicom", label_reader="kerasmuscle.io.seg:read_seg",
           writer="kerasmuscle.io.seg:write_seg", volume=False, scan_options=("series_uid", "force"),
           label_name="DICOM SEG", label_stems=("seg",)),
    Format("nifti", "NIfTI", "NIfTI", (".nii.gz", ".nii"),
           lambda head, name: name.endswith((".nii", ".nii.gz", ".hdr", ".img")) or head[344:348] in _NIFTI_MAGIC,
           scan_reader="kerasmuscle.io.nifti:read_nifti_scan", label_reader="kerasmuscle.io.nifti:read_nifti_labels",
           writer="kerasmuscle.io.nifti:write_nifti"),
    Format("npz", "NPZ", "a NumPy .npz archive", (".npz",),
           lambda head, name: head.startswith(b"PK\x03\x04") and name.endswith(".npz"),
           scan_reader="kerasmuscle.io.npz:read_npz_scan", label_reader="kerasmuscle.io.npz:read_npz_labels",
           writer="kerasmuscle.io.npz:write_npz"),
)

#: A file no row matches and that is none of :data:`OTHER_KINDS` may still be DICOM without its preamble.
UNKNOWN_READS_AS = "dicom"

#: Files recognised only to say what they are: kind -> (first bytes, what it is).
OTHER_KINDS: dict[str, tuple[bytes, str]] = {
    "zip": (b"PK\x03\x04", "a zip archive (unpack it first)"),
    "png": (b"\x89PNG", "a PNG image"),
    "jpeg": (b"\xff\xd8\xff", "a JPEG image"),
    "gif": (b"GIF8", "a GIF image"),
    "pdf": (b"%PDF", "a PDF document"),
    "gzip": (b"\x1f\x8b", "gzip-compressed (unpack it first, or name a NIfTI .nii.gz)"),
}

_BY_KIND = {f.kind: f for f in FORMATS}


def sniff(path: str) -> str:
    """Guess what a file is from its first bytes and name.

    Returns:
        A :data:`FORMATS` kind (``"dicom"``, ``"nifti"``, ``"npz"``), ``"empty"``, an :data:`OTHER_KINDS`
        kind (``"png"``, ``"zip"``, ...), ``"text"`` or ``"unknown"`` (which may still be a DICOM file
        without the 128-byte preamble).

    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    name = os.path.basename(path).lower()
    if not head:
        return "empty"
    for fmt in FORMATS:
        if fmt.matches(head, name):
            return fmt.kind
    for kind, (magic, _) in OTHER_KINDS.items():
        if head.startswith(magic):
            return kind
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head[:256]):
        return "text"
    return "unknown"


def describe_non_dicom(path: str, kind: str) -> str:
    """The cause for a file that is not DICOM, in words (``"not a DICOM file: it is a PNG image"``)."""
    if kind == "empty":
        return "empty file (0 bytes)"
    if kind == "text":
        with open(path, "rb") as fh:
            start = fh.read(40).decode("ascii", "replace").splitlines()[0] if os.path.getsize(path) else ""
        return f"not a DICOM file: it is text (starts {start!r})"
    what = _BY_KIND[kind].what if kind in _BY_KIND and kind != "dicom" else OTHER_KINDS.get(kind, (b"", ""))[1]
    if what:
        return f"not a DICOM file: it is {what}"
    return "not a DICOM file (no DICM marker and no readable DICOM attributes)"


def for_kind(kind: str) -> Format | None:
    """The row for a :func:`sniff` result (``"unknown"`` reads as DICOM), or None for other files."""
    return _BY_KIND.get(UNKNOWN_READS_AS if kind == "unknown" else kind)


def get(kind: str) -> Format:
    """The row of a format by kind (``"dicom"``, ``"nifti"``, ``"npz"``).

    Raises:
        KeyError: no such format; the message lists them.
    """
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise KeyError(f"no input format {kind!r}; formats are {', '.join(_BY_KIND)}") from None


def names(role: str = "scan") -> str:
    """The readable formats in words: ``"DICOM, NIfTI or NPZ"`` for scans, ``"NIfTI, NPZ or DICOM SEG"``
    for labels (single-file formats first)."""
    if role == "labels":
        rows = sorted((f for f in FORMATS if f.label_reader), key=lambda f: not f.volume)
        words = [f.label_name or f.name for f in rows]
    else:
        words = [f.name for f in FORMATS if f.scan_reader]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)


def suffixes(*, volume_only: bool = False) -> tuple[str, ...]:
    """Every format's file name suffixes, longest first (``volume_only``: single-file volume formats)."""
    out = [s for f in FORMATS if f.volume or not volume_only for s in f.suffixes]
    return tuple(sorted(out, key=len, reverse=True))


def strip_suffix(name: str, *, volume_only: bool = False) -> str:
    """``name`` without its format suffix (``"ct.nii.gz"`` -> ``"ct"``; any case), else unchanged."""
    for suffix in suffixes(volume_only=volume_only):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_file(path: str | os.PathLike) -> bool:
    """Whether the file name says it holds a whole volume by itself (NIfTI, NPZ; not a DICOM slice)."""
    return os.fspath(path).lower().endswith(suffixes(volume_only=True))


def image_names(stem: str = "image") -> tuple[str, ...]:
    """File names of a case folder's scan: ``image.nii.gz``, ``image.nii``, ``image.npz`` (a DICOM series
    is a sub-folder instead)."""
    return tuple(stem + s for f in FORMATS if f.volume and f.scan_reader for s in f.suffixes)


def label_names() -> tuple[str, ...]:
    """File names of a case folder's labels, in the order they are looked for: ``label.nii.gz``,
    ``label.nii``, ``label.npz``, ``labels.*``, then ``seg.dcm``."""
    rows = [f for f in FORMATS if f.label_reader]
    stems = list(dict.fromkeys(s for f in sorted(rows, key=lambda f: not f.volume) for s in f.label_stems))
    return tuple(stem + suffix for stem in stems for f in rows if stem in f.label_stems for suffix in f.suffixes)
