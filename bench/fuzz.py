"""A seeded fuzzer of the readers: every damaged input must end in a result or a ReadError naming the file.

Inputs are mutated from real files: the TCIA series and the dcmqi slices and SEG in ``../shared/data``, a
crop of the TotalSegmentator NIfTI (and an ``.npz`` made from it), a synthetic cohort case (DICOM series,
NIfTI labels, DICOM SEG) and pydicom's own test files that are on disk. Each input is read in a worker
process (``--jobs``, at most 2) with a per-input watchdog and an address-space cap, so a hang or a blow-up
is counted, not suffered. Every outcome is one of:

- ``ok``: a Scan / LabelMap that keeps the contract (float32 HU or uint8 labels, 3-D, finite values,
  finite positive spacing, finite positions);
- ``read_error``: a ReadError whose one-line message starts with the damaged file or its folder;
- bugs: ``exception`` (anything else; the traceback summary and the mutation are printed),
  ``bad_message`` (a ReadError naming no file, or several lines), ``bad_result`` (a contract broken),
  ``hang`` (a read over ``--timeout`` s), ``over_memory`` (a MemoryError, or a peak resident size over
  ``--memory-mb``), ``crash`` (the worker died).

Case ``i`` of seed ``s`` is the same input on every run; ``--case i`` rebuilds one case in this process,
keeps it under ``--keep`` and shows the full traceback.

Usage:
    python bench/fuzz.py --seed 1 --count 10000 --jobs 2      # the README figures
    python bench/fuzz.py --seed 1 --case 4711 --keep /tmp/c    # reproduce one case
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERASMUSCLE_SHARED", ROOT.parent / "shared")) / "data"
BUGS = ("exception", "bad_message", "bad_result", "hang", "over_memory", "crash")

#: pydicom test files used as seeds when they are on disk (nothing is downloaded).
PYDICOM_FILES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "ExplVR_BigEnd.dcm", "image_dfl.dcm",
    "JPEG2000.dcm", "JPGExtended.dcm", "rtdose_1frame.dcm", "liver_1frame.dcm", "SC_rgb_small_odd.dcm",
    "badVR.dcm", "no_meta.dcm", "MR_truncated.dcm", "emri_small.dcm",
)


# ------------------------------------------------------------------------------------------------------
# The seed corpus


@dataclass(frozen=True)
class Source:
    """One seed input: ``role`` is ``scan`` (read_scan) or ``labels`` (read_labels onto ``like``)."""

    name: str
    kind: str  # dicom (one file), enhanced (multi-frame CT), series (folder), nifti, npz, seg, nifti_labels, npz_labels
    path: str
    role: str = "scan"
    like: str | None = None
    force: bool = False


def prepare_corpus(work: Path) -> list[Source]:
    """Copy or make the seed inputs under ``work`` (deterministic) and list them."""
    import nibabel as nib
    import numpy as np

    from kerasmuscle.io import read_scan
    from kerasmuscle.io.dicom import list_files
    from kerasmuscle.io.npz import write_npz

    out: list[Source] = []
    tcia = SHARED / "tcia-pancreas-ct-cb-001" / "dicom"
    (work / "tcia").mkdir(parents=True)
    for name in sorted(os.listdir(tcia))[60:63]:  # three slices of the real series
        shutil.copy(tcia / name, work / "tcia" / name)
    first = sorted((work / "tcia").iterdir())[0]
    out += [Source("tcia-slice", "dicom", str(first)), Source("tcia-series", "series", str(work / "tcia"))]

    dcmqi = SHARED / "dcmqi-ct-3slice-liver-seg"
    (work / "dcmqi" / "ct").mkdir(parents=True)
    for name in ("01.dcm", "02.dcm", "03.dcm"):
        shutil.copy(dcmqi / name, work / "dcmqi" / "ct" / name)
    shutil.copy(dcmqi / "liver_seg.dcm", work / "dcmqi" / "liver_seg.dcm")
    ct = str(work / "dcmqi" / "ct")
    out += [Source("dcmqi-slice", "dicom", str(work / "dcmqi" / "ct" / "01.dcm")),
            Source("dcmqi-series", "series", ct),
            Source("dcmqi-seg", "seg", str(work / "dcmqi" / "liver_seg.dcm"), "labels", ct)]

    from kerasmuscle.config import SynthConfig
    from kerasmuscle.synth.cohort import write_cohort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_cohort(work / "synth", cases=1, seed=3, workers=1, config=SynthConfig(image_size=64))
    case = next(p for p in sorted((work / "synth").iterdir()) if p.is_dir())
    series = str(case / "dicom")
    out += [Source("synth-series", "series", series),
            Source("synth-slice", "dicom", list_files(series)[0]),
            Source("synth-labels", "nifti_labels", str(case / "label.nii.gz"), "labels", series)]
    if (case / "seg.dcm").exists():
        out.append(Source("synth-seg", "seg", str(case / "seg.dcm"), "labels", series))

    import pydicom
    import pydicom.uid

    (work / "derived").mkdir()
    for syntax in ("RLELossless", "JPEGLSLossless", "JPEG2000Lossless"):  # the real slice, compressed
        ds = pydicom.dcmread(first)
        ds.compress(getattr(pydicom.uid, syntax))
        ds.save_as(work / "derived" / f"tcia-{syntax}.dcm", enforce_file_format=True)
        out.append(Source(f"tcia-{syntax}", "dicom", str(work / "derived" / f"tcia-{syntax}.dcm")))
    try:
        import highdicom as hd

        enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
            [pydicom.dcmread(f) for f in list_files(series)], series_instance_uid=pydicom.uid.generate_uid(
                entropy_srcs=["fuzz series"]), series_number=5, sop_instance_uid=pydicom.uid.generate_uid(
                entropy_srcs=["fuzz instance"]), instance_number=1)
        enhanced.save_as(work / "derived" / "synth-enhanced.dcm")
        out.append(Source("synth-enhanced", "enhanced", str(work / "derived" / "synth-enhanced.dcm")))
    except ImportError:
        pass

    ts = SHARED / "totalsegmentator-s0009"
    (work / "ts").mkdir()
    crop = (slice(30, 78), slice(30, 78), slice(60, 76))
    img = nib.load(ts / "ct.nii.gz").slicer[crop]
    img = nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)
    nib.save(img, work / "ts" / "ct.nii")
    nib.save(img, work / "ts" / "ct.nii.gz")
    lab = nib.load(ts / "segmentations" / "vertebrae_L3.nii.gz").slicer[crop]
    nib.save(nib.Nifti1Image(np.asanyarray(lab.dataobj).astype(np.uint8), lab.affine), work / "ts" / "label.nii.gz")
    like = str(work / "ts" / "ct.nii")
    out += [Source("ts-nii", "nifti", like), Source("ts-niigz", "nifti", str(work / "ts" / "ct.nii.gz")),
            Source("ts-labels", "nifti_labels", str(work / "ts" / "label.nii.gz"), "labels", like)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = read_scan(like)
        labels = read_scan(like).hu > 200
    write_npz(work / "ts" / "scan.npz", spacing=scan.spacing, positions=scan.positions,
              orientation=scan.orientation, hu=scan.hu, labels=labels.astype(np.uint8), integer_hu=True)
    out += [Source("ts-npz", "npz", str(work / "ts" / "scan.npz")),
            Source("ts-npz-labels", "npz_labels", str(work / "ts" / "scan.npz"), "labels", like)]

    import pydicom.data

    (work / "pydicom").mkdir()
    for name in PYDICOM_FILES:
        found = [p for p in pydicom.data.get_testdata_files(name) if os.path.basename(p) == name]
        if found:
            shutil.copy(found[0], work / "pydicom" / name)
            out.append(Source(f"pydicom-{name}", "dicom", str(work / "pydicom" / name), force=True))
    return out


# ------------------------------------------------------------------------------------------------------
# Mutations: each takes (rng, source, out folder) and returns (the input to read, what was done)


def _copy(src: Source, out: Path) -> Path:
    """A private copy of the source's file or folder under ``out``."""
    target = out / os.path.basename(src.path)
    if os.path.isdir(src.path):
        shutil.copytree(src.path, target)
    else:
        shutil.copy(src.path, target)
    return target


def _victim(rng: random.Random, target: Path) -> Path:
    """The file to damage: the target itself, or one file of a series folder."""
    if target.is_dir():
        return rng.choice(sorted(p for p in target.rglob("*") if p.is_file()))
    return target


def _is_dicom(src: Source) -> bool:
    return src.kind in ("dicom", "enhanced", "series", "seg")


def _explicit_dicom(src: Source) -> bool:
    return _is_dicom(src) and "implicit" not in src.name and "dfl" not in src.name and "no_meta" not in src.name


def bitflip(rng, src, out):
    target = _copy(src, out)
    victim = _victim(rng, target)
    data = bytearray(victim.read_bytes())
    inner = victim.name.endswith(".gz") and rng.random() < 0.7
    if inner:  # damage the NIfTI inside the gzip stream, not only the stream itself
        data = bytearray(gzip.decompress(bytes(data)))
    n = rng.choice((1, 1, 2, 3, 8, 32))
    # Headers are where readers decide things: aim half the flips at the first 2 kB.
    offsets = sorted(rng.randrange(min(len(data), 2048) if rng.random() < 0.5 else len(data)) for _ in range(n))
    for off in offsets:
        data[off] ^= 1 << rng.randrange(8)
    victim.write_bytes(gzip.compress(bytes(data), mtime=0) if inner else bytes(data))
    return target, f"{victim.name}: flipped {n} bit(s) at {offsets}{' (inside gzip)' if inner else ''}"


def truncate(rng, src, out):
    target = _copy(src, out)
    victim = _victim(rng, target)
    data = victim.read_bytes()
    inner = victim.name.endswith(".gz") and rng.random() < 0.5
    if inner:
        data = gzip.decompress(data)
    cut = rng.randrange(len(data)) if rng.random() < 0.7 else rng.randrange(min(len(data), 1024))
    victim.write_bytes(gzip.compress(data[:cut], mtime=0) if inner else data[:cut])
    return target, f"{victim.name}: cut at byte {cut} of {len(data)}{' (inside gzip)' if inner else ''}"


_LONG = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UC", "UN", "UR", "UT"}


def _raw_elements(path: Path) -> list[tuple[int, str | None, int, int, bool, bool]]:
    """Top-level elements that pydicom left raw: (tag, VR, length, value offset, implicit, little)."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    out = []
    for tag, elem in ds._dict.items():
        if hasattr(elem, "value_tell") and elem.value_tell:
            out.append((int(tag), elem.VR, elem.length, elem.value_tell, elem.is_implicit_VR, elem.is_little_endian))
    return out


def _length_field(elem) -> tuple[int, int, str]:
    """(offset, size, struct format) of an element's length field."""
    tag, vr, length, tell, implicit, little = elem
    e = "<" if little else ">"
    if implicit or vr in _LONG:
        return tell - 4, 4, e + "L"
    return tell - 2, 2, e + "H"


def _pick_element(rng, victim: Path):
    elems = _raw_elements(victim)
    if not elems:
        return None
    pixel = [e for e in elems if e[0] == 0x7FE00010]
    return pixel[0] if pixel and rng.random() < 0.3 else rng.choice(elems)


def _set_length(rng, src, out, huge: bool):
    target = _copy(src, out)
    victim = _victim(rng, target)
    elem = _pick_element(rng, victim)
    if elem is None:
        return truncate(rng, src, _fresh(out))
    off, size, fmt = _length_field(elem)
    top = 2 ** (8 * size) - 1
    if huge:
        new = rng.choice((top, top - 1, top // 2, top - 7, min(top, victim.stat().st_size * 1000)))
    else:
        length = elem[2] if elem[2] != 0xFFFFFFFF else 0
        new = rng.choice((length + 1, max(0, length - 1), length + 2, max(0, length - 2), length * 2, length // 2, 0,
                          length + rng.randrange(1, 4096), rng.randrange(min(top, victim.stat().st_size + 64))))
        new = min(new, top)
    data = bytearray(victim.read_bytes())
    data[off:off + size] = struct.pack(fmt, new)
    victim.write_bytes(bytes(data))
    return target, f"{victim.name}: element {elem[0]:08X} ({elem[1]}) length {elem[2]} -> {new}"


def wrong_length(rng, src, out):
    return _set_length(rng, src, out, huge=False)


def huge_length(rng, src, out):
    return _set_length(rng, src, out, huge=True)


_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV", b"ZZ", b"\x00\x00", b"  ", b"ob")


def wrong_vr(rng, src, out):
    target = _copy(src, out)
    victim = _victim(rng, target)
    elems = [e for e in _raw_elements(victim) if not e[4]]
    if not elems:
        return truncate(rng, src, _fresh(out))
    pixel = [e for e in elems if e[0] == 0x7FE00010]
    elem = pixel[0] if pixel and rng.random() < 0.2 else rng.choice(elems)
    off = elem[3] - (8 if elem[1] in _LONG else 4)
    vr = rng.choice(_VRS)
    data = bytearray(victim.read_bytes())
    data[off:off + 2] = vr
    victim.write_bytes(bytes(data))
    return target, f"{victim.name}: element {elem[0]:08X} VR {elem[1]} -> {vr!r}"


def _fresh(out: Path) -> Path:
    n = 0
    while (out / f"alt{n}").exists():
        n += 1
    (out / f"alt{n}").mkdir()
    return out / f"alt{n}"


@contextmanager
def _lenient():
    """pydicom without value validation while a damaged file is made (restored before it is read)."""
    from pydicom import config

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved


def _edit(victim: Path, changes: dict) -> None:
    """Rewrite a DICOM file with attributes changed (None deletes), keeping its encoding."""
    with _lenient():
        _edit_now(victim, changes)


def _edit_now(victim: Path, changes: dict) -> None:
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    for as_text in (False, True):
        ds = pydicom.dcmread(victim, force=True)
        for key, value in changes.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
                continue
            try:
                if as_text:
                    raise ValueError
                setattr(ds, key, value)
            except (ValueError, TypeError, OverflowError):
                # pydicom will not hold the bad value in its own VR: store the text as LO instead (in an
                # implicit-VR file that is exactly the damaged value; in an explicit one the VR is wrong too)
                text = "\\".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
                ds[tag_for_keyword(key)] = DataElement(tag_for_keyword(key), "LO", text)
        try:
            ds.save_as(victim, enforce_file_format=False)
            return
        except (ValueError, TypeError, OverflowError):
            if as_text:
                raise


def pixel_geometry(rng, src, out):
    import pydicom

    target = _copy(src, out)
    victim = _victim(rng, target)
    ds = pydicom.dcmread(victim, stop_before_pixels=True, force=True)
    rows, cols = int(ds.get("Rows", 64) or 64), int(ds.get("Columns", 64) or 64)
    choices = {
        "Rows": (rows + 1, rows - 1, rows * 2, rows // 2, 0, 1, 65535),
        "Columns": (cols + 1, cols - 1, cols * 2, 0, 1, 65535),
        "BitsAllocated": (0, 1, 7, 8, 12, 24, 32, 64, 65535),
        "BitsStored": (0, 1, 8, 17, 33, 65535),
        "HighBit": (0, 7, 16, 65535),
        "PixelRepresentation": (0, 1, 2, 65535),
        "SamplesPerPixel": (0, 2, 3, 4, 65535),
        "NumberOfFrames": ("0", "2", "3", "100000", "-1", "abc", "2147483647"),
        "PhotometricInterpretation": ("RGB", "PALETTE COLOR", "YBR_FULL", "BOGUS", ""),
        "PlanarConfiguration": (0, 1, 2),
    }
    if rng.random() < 0.25:  # a header that claims about 4 GB or more of pixels
        changes = {"Rows": 65535, "Columns": 65535, "NumberOfFrames": rng.choice(("1", "2", "1000"))}
    else:
        keys = rng.sample(sorted(choices), rng.choice((1, 1, 2, 3)))
        changes = {k: (None if rng.random() < 0.1 else rng.choice(choices[k])) for k in keys}
    _edit(victim, changes)
    return target, f"{victim.name}: {changes}"


_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
             "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
             "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.3.4.5.6", "",
             "garbage", "1.2.840.10008.5.1.4.1.1.2")


def transfer_syntax(rng, src, out):
    """Rewrite the file meta with a transfer syntax that lies about the body (the body bytes are kept)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info

    target = _copy(src, out)
    victim = _victim(rng, target)
    raw = victim.read_bytes()
    fh = io.BytesIO(raw)
    try:
        read_preamble(fh, False)
        meta = _read_file_meta_info(fh)
    except Exception:
        return bitflip(rng, src, _fresh(out))
    body = raw[fh.tell():]
    ts = rng.choice(_SYNTAXES)
    meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    try:
        write_file_meta_info(buf, meta, enforce_standard=False)
    except Exception:
        return bitflip(rng, src, _fresh(out))
    victim.write_bytes(buf.getvalue() + body)
    return target, f"{victim.name}: TransferSyntaxUID -> {ts!r}"


_BAD_DS = ("NaN", "nan", "inf", "-inf", "0", "-0", "1e309", "1e38", "-1e38", "abc", "", "1\\2", "1e-320")


def rescale(rng, src, out):
    target = _copy(src, out)
    victim = _victim(rng, target)
    changes = {rng.choice(("RescaleSlope", "RescaleIntercept")): rng.choice(_BAD_DS)}
    if rng.random() < 0.3:
        changes[rng.choice(("RescaleSlope", "RescaleIntercept"))] = rng.choice(_BAD_DS)
    _edit(victim, changes)
    return target, f"{victim.name}: {changes}"


def spacing(rng, src, out):
    target = _copy(src, out)
    victim = _victim(rng, target)
    key = rng.choice(("PixelSpacing", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices"))
    if key == "PixelSpacing":
        value = rng.choice(("NaN\\NaN", "0\\0", "0\\1", "-1\\-1", "inf\\1", "1", "1\\2\\3", "abc\\1",
                            "1e-30\\1e-30", "1e30\\1e30", "", "nan\\0.8"))
    else:
        value = rng.choice(("NaN", "0", "-3", "inf", "1e30", "abc", ""))
    _edit(victim, {key: value})
    return target, f"{victim.name}: {key} -> {value!r}"


def positions(rng, src, out):
    """Damage the placement of slices: negative, repeated, NaN or missing positions, broken orientations."""
    import pydicom

    target = _copy(src, out)
    files = sorted(p for p in target.rglob("*") if p.is_file()) if target.is_dir() else [target]
    how = rng.choice(("negative", "repeated", "all-same", "nan", "inf", "huge", "missing", "short",
                      "orientation-zero", "orientation-parallel", "orientation-scaled", "orientation-nan",
                      "orientation-short", "reversed"))
    done = []
    for k, f in enumerate(files):
        if how in ("repeated", "nan", "missing", "short", "orientation-nan") and k and rng.random() < 0.5:
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        try:
            pos = [float(v) for v in ds.ImagePositionPatient]
        except Exception:
            pos = [0.0, 0.0, float(k)]
        change: dict = {}
        if how == "negative":
            change["ImagePositionPatient"] = [-abs(v) - 1000 for v in pos]
        elif how == "reversed":
            change["ImagePositionPatient"] = [pos[0], pos[1], -pos[2]]
        elif how in ("repeated", "all-same"):
            change["ImagePositionPatient"] = [0.0, 0.0, 12.5]
        elif how == "nan":
            change["ImagePositionPatient"] = [pos[0], "NaN", pos[2]]
        elif how == "inf":
            change["ImagePositionPatient"] = [pos[0], pos[1], "inf"]
        elif how == "huge":
            change["ImagePositionPatient"] = [pos[0], pos[1], pos[2] * 1e300 + 1e300]
        elif how == "missing":
            change["ImagePositionPatient"] = None
        elif how == "short":
            change["ImagePositionPatient"] = pos[:2]
        elif how == "orientation-zero":
            change["ImageOrientationPatient"] = [0, 0, 0, 0, 0, 0]
        elif how == "orientation-parallel":
            change["ImageOrientationPatient"] = [1, 0, 0, 1, 0, 0]
        elif how == "orientation-scaled":
            change["ImageOrientationPatient"] = [2, 0, 0, 0, 3, 0]
        elif how == "orientation-nan":
            change["ImageOrientationPatient"] = ["NaN", 0, 0, 0, 1, 0]
        else:
            change["ImageOrientationPatient"] = [1, 0, 0]
        _edit(f, change)
        done.append(f.name)
    return target, f"{how} in {done}"


def mixed_series(rng, src, out, corpus: list[Source]):
    """A folder of files from several sources: foreign series, one series UID over different sizes, a SEG, junk."""
    import pydicom

    folder = out / "mixed"
    shutil.copytree(src.path, folder)
    others = [s for s in corpus if s.kind in ("series", "dicom", "seg") and s.path != src.path]
    added = []
    for s in rng.sample(others, rng.choice((1, 2, 3))):
        if os.path.isdir(s.path):
            shutil.copytree(s.path, folder / f"from-{s.name}")
        else:
            shutil.copy(s.path, folder / f"from-{s.name}.dcm")
        added.append(s.name)
    how = rng.choice(("as-is", "one-uid", "one-uid", "junk"))
    if how == "one-uid":  # every file claims the source's series and frame of reference
        first = sorted(p for p in Path(src.path).rglob("*") if p.is_file())[0]
        ref = pydicom.dcmread(first, stop_before_pixels=True, force=True)
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            try:
                _edit(f, {"SeriesInstanceUID": ref.get("SeriesInstanceUID", "1.2.3"),
                          "FrameOfReferenceUID": ref.get("FrameOfReferenceUID", "1.2.3.4")})
            except Exception:
                pass
    elif how == "junk":
        (folder / "notes.txt").write_text("not an image\n")
        (folder / "zero.dcm").write_bytes(b"")
        (folder / "noise.bin").write_bytes(bytes(rng.randrange(256) for _ in range(600)))
    return folder, f"{src.name} mixed with {added} ({how})"


# NIfTI-1 header fields: name -> (offset, struct format, count)
_NIFTI_FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim": (40, "h", 8), "datatype": (70, "h", 1), "bitpix": (72, "h", 1),
    "pixdim": (76, "f", 8), "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1), "quatern": (256, "f", 3), "qoffset": (268, "f", 3),
    "srow": (280, "f", 12), "magic": (344, "4s", 1),
}


def _bad_number(rng, fmt: str):
    if fmt == "f":
        return rng.choice((float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e30, -1e30, 1e-30, 3.5,
                           rng.uniform(-1e4, 1e4)))
    if fmt == "h":
        return rng.choice((0, -1, 1, 2, 3, 4, 7, 8, 16, 64, 256, 512, 1024, 2304, 32767, -32768, rng.randrange(-99, 99)))
    return rng.choice((0, -1, 348, 540, 2 ** 31 - 1))


def nifti_header(rng, src, out):
    """Overwrite fields of the NIfTI-1 header (dims, datatype, pixdim, offsets, scaling, qform/sform, magic)."""
    data = bytearray(gzip.decompress(Path(src.path).read_bytes()) if src.path.endswith(".gz")
                     else Path(src.path).read_bytes())
    name = rng.choice(sorted(_NIFTI_FIELDS))
    off, fmt, count = _NIFTI_FIELDS[name]
    if name == "magic":
        value: object = rng.choice((b"n+2\x00", b"ni1\x00", b"\x00\x00\x00\x00", b"XXXX"))
        data[off:off + 4] = value
    elif name == "dim" and rng.random() < 0.4:  # a header that claims a huge volume
        value = [3, rng.choice((2048, 30000, 32767)), rng.choice((2048, 30000, 32767)), rng.choice((1, 512, 32767)),
                 1, 1, 1, 1]
        data[off:off + 16] = struct.pack("<8h", *value)
    else:
        index = rng.randrange(count)
        value = (index, _bad_number(rng, fmt))
        data[off + index * struct.calcsize(fmt):off + (index + 1) * struct.calcsize(fmt)] = \
            struct.pack("<" + fmt, value[1])
    gz = rng.random() < 0.5
    target = out / (Path(src.path).name.removesuffix(".gz") + (".gz" if gz else ""))
    target.write_bytes(gzip.compress(bytes(data), mtime=0) if gz else bytes(data))
    return target, f"{target.name}: {name} -> {value}"


def nifti_affine(rng, src, out):
    """Save the NIfTI again with a broken affine (NaN, singular, zero, huge, sheared, not axial)."""
    import nibabel as nib
    import numpy as np

    img = nib.load(src.path)
    data = np.asanyarray(img.dataobj)
    aff = img.affine.copy()
    how = rng.choice(("nan", "inf", "zero", "singular", "huge", "tiny", "shear", "sagittal", "negative", "random"))
    if how == "nan":
        aff[rng.randrange(3), rng.randrange(4)] = np.nan
    elif how == "inf":
        aff[rng.randrange(3), rng.randrange(4)] = np.inf
    elif how == "zero":
        aff[:3, :3] = 0
    elif how == "singular":
        aff[:3, rng.randrange(3)] = 0
    elif how == "huge":
        aff[:3, :3] *= 1e30
    elif how == "tiny":
        aff[:3, :3] *= 1e-30
    elif how == "shear":
        aff[0, 2] = aff[2, 2] * 3
    elif how == "sagittal":
        aff[:3, :3] = aff[:3, [2, 1, 0]]
    elif how == "negative":
        aff[:3, :3] *= -1
    else:
        aff[:3, :] = np.random.default_rng(rng.getrandbits(32)).normal(0, 2, (3, 4))
    new = nib.Nifti1Image(data, None)
    hdr = new.header
    codes = (rng.choice((0, 1, 2, 4, 99)), rng.choice((0, 1, 2, 4, 99)))
    for setter, code in ((hdr.set_sform, codes[0]), (hdr.set_qform, codes[1])):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                setter(aff, code=int(code) if code in (0, 1, 2, 4) else 1)
        except Exception:
            pass
    target = out / Path(src.path).name
    nib.save(new, target)
    raw = bytearray(gzip.decompress(target.read_bytes()) if target.name.endswith(".gz") else target.read_bytes())
    raw[252:256] = struct.pack("<hh", codes[1], codes[0])  # qform_code, sform_code, even invalid ones
    target.write_bytes(gzip.compress(bytes(raw), mtime=0) if target.name.endswith(".gz") else bytes(raw))
    return target, f"{target.name}: affine {how}, sform/qform codes {codes}"


def npz_arrays(rng, src, out):
    """Rewrite the .npz with damaged or missing arrays (spacing, positions, orientation, hu, labels)."""
    import numpy as np

    with np.load(src.path) as z:
        arrays = {k: z[k] for k in z.files}
    key = rng.choice(("spacing", "positions", "orientation", "hu", "labels", "drop"))
    if key == "drop":
        gone = rng.choice(sorted(arrays))
        del arrays[gone]
        what = f"dropped {gone!r}"
    else:
        options = {
            "spacing": (np.array([np.nan, 1, 1]), np.array([0.0, 1, 1]), np.array([1.0, -1, 1]), np.array([1.0, 1]),
                        np.array([np.inf, 1, 1]), np.array(["a", "b", "c"]), np.zeros((3, 3))),
            "positions": (np.full((2, 3), np.nan), np.zeros((1, 2)), np.full(arrays["positions"].shape, np.nan),
                          np.zeros(arrays["positions"].shape), np.array([[1e308, 1e308, 1e308]] *
                                                                         len(arrays["positions"])) * 10),
            "orientation": (np.zeros(6), np.array([1.0, 0, 0, 1, 0, 0]), np.full(6, np.nan), np.ones(5),
                            np.array([0, 1.0, 0, 0, 0, -1])),
            "hu": (np.zeros(5, np.float32), np.zeros((1, 2, 3, 4), np.float32), np.zeros((0, 48, 48), np.float32),
                   np.full((2, 48, 48), np.nan, np.float32), arrays["hu"].astype(np.complex64),
                   arrays["hu"].astype(bool), np.array([["a"]])),
            "labels": (arrays["labels"] * 0.5 + 0.3, arrays["labels"].astype(np.int16) - 1, arrays["labels"].astype(np.uint16) * 300,
                       np.zeros((3,), np.uint8), np.full(arrays["labels"].shape, np.nan), arrays["labels"][:, :5]),
        }
        value = rng.choice(options[key])
        arrays[key] = value
        what = f"{key} -> {value.dtype}{value.shape}"
    target = out / Path(src.path).name
    with zipfile.ZipFile(target, "w") as archive:  # np.savez, with fixed member dates (the same bytes every run)
        for name, value in arrays.items():
            with archive.open(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return target, what


def npz_header(rng, src, out):
    """An .npy member whose header claims another shape (up to terabytes) or a bogus dtype."""
    import numpy as np

    target = out / Path(src.path).name
    member = rng.choice(("hu.npy", "labels.npy", "spacing.npy"))
    claims = rng.choice(("huge", "huge", "bigger", "dtype", "fortran", "negative"))
    with zipfile.ZipFile(src.path) as zin, zipfile.ZipFile(target, "w", rng.choice((zipfile.ZIP_STORED,
                                                                                     zipfile.ZIP_DEFLATED))) as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            if info.filename == member:
                fh = io.BytesIO(raw)
                version = np.lib.format.read_magic(fh)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0)(fh)
                body = raw[fh.tell():]
                if claims == "huge":
                    shape = (rng.choice((4096, 100000)), 65535, 65535)
                elif claims == "bigger":
                    shape = tuple(s * 2 for s in shape) or (10,)
                elif claims == "dtype":
                    dtype = np.dtype(rng.choice(("<f8", "<c16", "|S7", "<m8", "<i8")))
                elif claims == "fortran":
                    fortran = not fortran
                else:
                    shape = (-1,) + tuple(shape[1:])
                head = io.BytesIO()
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": shape}
                (np.lib.format.write_array_header_1_0 if version == (1, 0)
                 else np.lib.format.write_array_header_2_0)(head, header)
                raw = head.getvalue() + body
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), raw,
                          compress_type=zout.compression)
    return target, f"{member}: header claims {claims} ({shape}, {dtype}, fortran={fortran})"


def seg_frames(rng, src, out):
    """A SEG (or an Enhanced CT) whose frames point nowhere (segment numbers, sources, positions, frame counts,
    pixel sizes, functional groups)."""
    with _lenient():
        return _seg_frames(rng, src, out)


def _seg_frames(rng, src, out):
    import pydicom
    from pydicom.uid import generate_uid

    target = _copy(src, out)
    ds = pydicom.dcmread(target)
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    n = len(per)
    how = rng.choice(("segment-missing", "segment-number", "source-uid", "frames-fewer", "frames-more",
                      "frames-huge", "frames-zero", "rows", "segment-sequence", "segment-255", "seg-type",
                      "max-fractional", "position-nan", "position-missing", "pixel-spacing", "orientation",
                      "shared-gone", "frame-of-reference", "referenced-series", "bits", "pixel-transform"))
    i = rng.randrange(n) if n else 0
    try:
        if how == "segment-missing" and n:
            del per[i].SegmentIdentificationSequence
        elif how == "segment-number" and n:
            per[i].SegmentIdentificationSequence[0].ReferencedSegmentNumber = rng.choice((0, 99, 256, 65535))
        elif how == "source-uid" and n:
            for item in per[i].DerivationImageSequence[0].SourceImageSequence:
                item.ReferencedSOPInstanceUID = generate_uid(entropy_srcs=[str(rng.random())])
        elif how == "frames-fewer" and n:
            del per[rng.randrange(n)]
        elif how == "frames-more":
            ds.NumberOfFrames = str(n + rng.choice((1, 5)))
        elif how == "frames-huge":
            ds.NumberOfFrames = rng.choice(("100000", "2147483647", "-3"))
        elif how == "frames-zero":
            ds.NumberOfFrames = "0"
        elif how == "rows":
            ds.Rows = rng.choice((ds.Rows + 1, ds.Rows * 2, 1, 0, 65535))
        elif how == "segment-sequence":
            del ds.SegmentSequence
        elif how == "segment-255":
            ds.SegmentSequence[0].SegmentNumber = rng.choice((0, 256, 65535))
        elif how == "seg-type":
            ds.SegmentationType = rng.choice(("FRACTIONAL", "LABELMAP", "BOGUS", ""))
        elif how == "max-fractional":
            ds.SegmentationType = "FRACTIONAL"
            ds.MaximumFractionalValue = rng.choice((0, 1, 255))
        elif how == "position-nan" and n:
            per[i].PlanePositionSequence[0].ImagePositionPatient = ["NaN", 0, 0]
        elif how == "position-missing" and n:
            del per[i].PlanePositionSequence
        elif how == "pixel-spacing":
            seq = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            seq.PixelSpacing = rng.choice((["NaN", "NaN"], [0, 0], [1], ["abc", 1]))
        elif how == "orientation":
            seq = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
            seq.ImageOrientationPatient = rng.choice(([0] * 6, [1, 0, 0, 1, 0, 0], [1, 0, 0]))
        elif how == "shared-gone":
            del ds.SharedFunctionalGroupsSequence
        elif how == "frame-of-reference":
            ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(rng.random())])
        elif how == "pixel-transform":
            groups = [ds.SharedFunctionalGroupsSequence[0]] + ([per[i]] if n else [])
            item = next(g for g in groups if "PixelValueTransformationSequence" in g).PixelValueTransformationSequence[0]
            item.RescaleSlope = rng.choice(("NaN", "0", "inf", "1e38"))
        elif how == "referenced-series":
            del ds.ReferencedSeriesSequence
        else:
            ds.BitsAllocated = rng.choice((8, 16, 0))
    except (AttributeError, IndexError, KeyError, ValueError, TypeError, StopIteration):
        how += " (not applicable: file unchanged)"
    ds.save_as(target, enforce_file_format=False)
    return target, f"{target.name}: {how} (frame {i + 1} of {n})"


#: mutation kind -> (applies to the source?, function)
MUTATIONS = {
    "bitflip": (lambda s: True, bitflip),
    "truncate": (lambda s: True, truncate),
    "wrong_length": (lambda s: _is_dicom(s) and "dfl" not in s.name, wrong_length),
    "huge_length": (lambda s: _is_dicom(s) and "dfl" not in s.name, huge_length),
    "wrong_vr": (_explicit_dicom, wrong_vr),
    "pixel_geometry": (_is_dicom, pixel_geometry),
    "transfer_syntax": (lambda s: _is_dicom(s) and "no_meta" not in s.name, transfer_syntax),
    "rescale": (lambda s: s.kind in ("dicom", "series", "enhanced"), rescale),
    "spacing": (lambda s: s.kind in ("dicom", "series"), spacing),
    "positions": (lambda s: s.kind in ("dicom", "series") and not s.force, positions),
    "mixed_series": (lambda s: s.kind == "series", None),
    "nifti_header": (lambda s: s.kind in ("nifti", "nifti_labels"), nifti_header),
    "nifti_affine": (lambda s: s.kind in ("nifti", "nifti_labels"), nifti_affine),
    "npz_arrays": (lambda s: s.kind in ("npz", "npz_labels"), npz_arrays),
    "npz_header": (lambda s: s.kind in ("npz", "npz_labels"), npz_header),
    "seg_frames": (lambda s: s.kind == "seg", seg_frames),
    "enhanced_frames": (lambda s: s.kind == "enhanced", seg_frames),
}


@dataclass
class Case:
    index: int
    kind: str
    source: Source
    target: str
    description: str
    with_like: bool


def available(corpus: list[Source]) -> list[str]:
    """The mutation kinds that apply to some seed (Enhanced CT needs highdicom to be made)."""
    return [k for k in sorted(MUTATIONS) if any(MUTATIONS[k][0](s) for s in corpus)]


def make_case(corpus: list[Source], seed: int, index: int, out: Path) -> Case:
    """Build case ``index`` of ``seed`` under ``out`` (the same input every time)."""
    rng = random.Random(f"kerasmuscle-fuzz:{seed}:{index}")
    kind = rng.choice(available(corpus))
    applies, fn = MUTATIONS[kind]
    source = rng.choice([s for s in corpus if applies(s)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "mixed_series":
            target, description = mixed_series(rng, source, out, corpus)
        else:
            target, description = fn(rng, source, out)
    return Case(index, kind, source, str(target), description, with_like=rng.random() < 0.8)


# ------------------------------------------------------------------------------------------------------
# Reading one case and judging the outcome


def _names_file(exc, target: str) -> bool:
    """Whether a ReadError's message starts with the damaged input (the file, its folder, or a file in it)."""
    if exc.path is None or not str(exc).startswith(exc.path):
        return False
    path, target = os.path.abspath(exc.path), os.path.abspath(target)
    return path == target or path.startswith(target + os.sep)


def _contract(obj, like=None) -> str | None:
    """What is wrong with a returned Scan or LabelMap, or None."""
    import numpy as np

    arr = obj.hu if hasattr(obj, "hu") else obj.array
    want = np.float32 if hasattr(obj, "hu") else np.uint8
    if not isinstance(arr, np.ndarray) or arr.dtype != want or arr.ndim != 3 or min(arr.shape) < 1:
        return f"array {type(arr).__name__} {getattr(arr, 'dtype', '?')} {getattr(arr, 'shape', '?')}"
    if want is np.float32 and not np.isfinite(arr).all():
        return f"{int((~np.isfinite(arr)).sum())} non-finite HU values"
    spacing = np.asarray(obj.spacing, float)
    if spacing.shape != (3,) or not (np.isfinite(spacing).all() and (spacing > 0).all()):
        return f"spacing {obj.spacing}"
    pos = np.asarray(obj.positions, float)
    if pos.shape != (arr.shape[0], 3) or not np.isfinite(pos).all():
        return f"positions {pos.shape} finite={bool(np.isfinite(pos).all())}"
    ori = np.asarray(obj.orientation, float)
    if ori.shape != (6,) or not np.isfinite(ori).all():
        return f"orientation {obj.orientation}"
    if like is not None and arr.shape != like.shape:
        return f"label map {arr.shape} on a scan {like.shape}"
    return None


_LIKE: dict[str, object] = {}


def _where(exc: BaseException) -> str:
    """The innermost four frames of a traceback, innermost first (``file:line``)."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return " <- ".join(f"{os.path.relpath(f.filename, ROOT) if f.filename.startswith(str(ROOT)) else os.path.basename(f.filename)}"
                       f":{f.lineno}" for f in reversed(frames))


def read_case(case: Case) -> tuple[str, str]:
    """Read one case as the package would: (outcome, detail)."""
    from kerasmuscle.errors import ReadError
    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.predict.masks import muscle_labels

    src = case.source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if src.role == "scan":
                result = read_scan(case.target, force=src.force)
                like = None
            else:
                like = None
                if case.with_like:
                    if src.like not in _LIKE:
                        _LIKE[src.like] = read_scan(src.like)
                    like = _LIKE[src.like]
                result = read_labels(case.target, like=like)
                try:
                    muscle_labels(case.target, result.array, result.names)  # what `measure --labels` does next
                except ReadError as exc:
                    if not _names_file(exc, case.target) or "\n" in str(exc):
                        return "bad_message", str(exc)
    except ReadError as exc:
        text = str(exc)
        if "MemoryError" in text:
            return "over_memory", text[:300]
        if not _names_file(exc, case.target) or "\n" in text:
            return "bad_message", text[:500]
        return "read_error", text[:300]
    except MemoryError as exc:
        return "over_memory", f"MemoryError {exc}"
    except Exception as exc:
        return "exception", f"{type(exc).__name__}: {str(exc)[:300]} at {_where(exc)}"
    problem = _contract(result, like)
    return ("bad_result", problem) if problem else ("ok", "")


# ------------------------------------------------------------------------------------------------------
# Worker processes


def _vm(key: str) -> int:
    """A /proc/self/status figure in bytes (VmHWM, VmSize)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def worker_main(corpus_file: str, seed: int, work: str, memory_mb: int) -> None:
    """Serve cases: read ``{"index": i}`` lines on stdin, answer with a ``start`` and a ``done`` line."""
    corpus = [Source(**s) for s in json.loads(Path(corpus_file).read_text())]
    import kerasmuscle.io  # noqa: F401  (everything a read imports, before the cap)
    import kerasmuscle.io.dicom  # noqa: F401
    import kerasmuscle.io.nifti  # noqa: F401
    import kerasmuscle.io.npz  # noqa: F401
    import kerasmuscle.io.seg  # noqa: F401
    import kerasmuscle.predict.masks  # noqa: F401
    import nibabel  # noqa: F401

    cap = _vm("VmSize") + memory_mb * 2 ** 20  # any single allocation over the limit fails
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    out = sys.stdout
    for line in sys.stdin:
        index = json.loads(line)["index"]
        folder = Path(tempfile.mkdtemp(prefix=f"case{index}-", dir=work))
        try:
            try:
                case = make_case(corpus, seed, index, folder)
            except Exception as exc:
                out.write(json.dumps({"index": index, "event": "done", "outcome": "generator_error", "kind": "?",
                                      "source": "?", "detail": f"{type(exc).__name__}: {exc} at {_where(exc)}",
                                      "description": f"rerun with --case {index}",
                                      "peak": 0, "seconds": 0}) + "\n")
                out.flush()
                continue
            out.write(json.dumps({"index": index, "event": "start", "kind": case.kind, "source": case.source.name,
                                  "description": case.description}) + "\n")
            out.flush()
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM so the peak is this read's
            except OSError:
                pass
            start = time.perf_counter()
            outcome, detail = read_case(case)
            seconds = time.perf_counter() - start
            peak = _vm("VmHWM")
            if outcome in ("ok", "read_error") and peak > memory_mb * 2 ** 20:
                outcome, detail = "over_memory", f"peak resident {peak / 2 ** 20:.0f} MiB ({outcome})"
            out.write(json.dumps({"index": index, "event": "done", "outcome": outcome, "kind": case.kind,
                                  "source": case.source.name, "detail": detail, "description": case.description,
                                  "peak": peak, "seconds": round(seconds, 4)}) + "\n")
            out.flush()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class _Worker:
    def __init__(self, args: list[str]):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, start_new_session=True)
        self.kind = self.source = self.description = "?"
        self.index: int | None = None
        self.deadline = 0.0
        self.buffer = ""

    def send(self, index: int, generate_s: float) -> None:
        self.index, self.deadline = index, time.monotonic() + generate_s
        self.kind = self.source = "?"
        self.description = f"rerun with --case {index}"
        self.proc.stdin.write(json.dumps({"index": index}) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()


@dataclass
class Summary:
    """What a run found: counts per outcome and per mutation kind, the bugs, time and peak memory."""

    seed: int
    count: int
    jobs: int
    outcomes: Counter
    by_kind: dict
    bugs: list
    seconds: float
    peak_bytes: int
    slowest_s: float

    @property
    def bug_count(self) -> int:
        return sum(self.outcomes[b] for b in BUGS)


def fuzz(seed: int = 1, count: int = 300, jobs: int = 1, *, start: int = 0, timeout: float = 10.0,
         memory_mb: int = 2048, log=print) -> Summary:
    """Run cases ``start .. start+count-1`` of ``seed`` in ``jobs`` workers and count the outcomes."""
    jobs = max(1, min(2, jobs))
    started = time.perf_counter()
    outcomes: Counter = Counter()
    by_kind: dict = defaultdict(Counter)
    bugs: list = []
    peak, slowest = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="kerasmuscle-fuzz-") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corpus = prepare_corpus(Path(tmp) / "corpus")
        corpus_file = Path(tmp) / "corpus.json"
        corpus_file.write_text(json.dumps([s.__dict__ for s in corpus]))
        (Path(tmp) / "cases").mkdir()
        args = [str(corpus_file), str(seed), str(Path(tmp) / "cases"), str(memory_mb)]
        pending = list(range(start, start + count))[::-1]
        workers = [_Worker(args) for _ in range(jobs)]
        done = 0

        def record(msg: dict) -> None:
            nonlocal done, peak, slowest
            outcomes[msg["outcome"]] += 1
            by_kind[msg["kind"]][msg["outcome"]] += 1
            peak, slowest, done = max(peak, msg.get("peak", 0)), max(slowest, msg.get("seconds", 0)), done + 1
            if msg["outcome"] in BUGS or msg["outcome"] == "generator_error":
                bugs.append(msg)
                log(f"BUG {msg['outcome']} case {msg['index']} ({msg['kind']} of {msg['source']}): "
                    f"{msg['description']}\n    {msg['detail']}")
            if done % 1000 == 0:
                log(f"  {done}/{count} cases, {time.perf_counter() - started:.0f} s")

        try:
            for w in workers:
                if pending:
                    w.send(pending.pop(), 120.0)
            while any(w.index is not None for w in workers):
                busy = [w for w in workers if w.index is not None]
                wait = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                ready, _, _ = select.select([w.proc.stdout for w in busy], [], [], wait)
                now = time.monotonic()
                for k, w in enumerate(workers):
                    if w.index is None:
                        continue
                    if w.proc.stdout in ready:
                        chunk = os.read(w.proc.stdout.fileno(), 1 << 16).decode()
                        if not chunk:  # the worker died (a crash in a C extension, the OOM killer)
                            record({"index": w.index, "outcome": "crash", "kind": w.kind, "source": w.source,
                                    "description": w.description or f"rerun with --case {w.index}",
                                    "detail": f"worker exit code {w.proc.wait()}"})
                            w.kill()
                            workers[k] = w = _Worker(args)
                        w.buffer += chunk
                        while "\n" in w.buffer:
                            line, w.buffer = w.buffer.split("\n", 1)
                            msg = json.loads(line)
                            if msg["event"] == "start":
                                w.deadline = now + timeout
                                w.kind, w.source, w.description = msg["kind"], msg["source"], msg["description"]
                            else:
                                record(msg)
                                w.index = None
                    elif now >= w.deadline:
                        record({"index": w.index, "outcome": "hang", "kind": w.kind, "source": w.source,
                                "description": w.description, "detail": f"no answer in {timeout} s"})
                        w.kill()
                        workers[k] = w = _Worker(args)
                        w.index = None
                    if w.index is None and pending:
                        w.send(pending.pop(), 120.0)
        finally:
            for w in workers:
                w.kill()
    return Summary(seed, count, jobs, outcomes, dict(by_kind), bugs, time.perf_counter() - started, peak, slowest)


def report(summary: Summary) -> str:
    """The counts per mutation kind and in total, as a text table."""
    cols = ["ok", "read_error", *BUGS] + (["generator_error"] if summary.outcomes["generator_error"] else [])
    lines = [f"{'kind':<16}" + "".join(f"{c:>12}" for c in cols)]
    for kind in sorted(summary.by_kind):
        lines.append(f"{kind:<16}" + "".join(f"{summary.by_kind[kind][c]:>12}" for c in cols))
    lines.append(f"{'total':<16}" + "".join(f"{summary.outcomes[c]:>12}" for c in cols))
    lines.append(f"{summary.count} inputs (seed {summary.seed}, {summary.jobs} job(s)) in {summary.seconds:.0f} s; "
                 f"{summary.bug_count} bug(s); slowest read {summary.slowest_s:.2f} s; peak resident memory of a "
                 f"worker during a read {summary.peak_bytes / 2 ** 20:.0f} MiB")
    return "\n".join(lines)


def reproduce(seed: int, index: int, keep: str | None) -> int:
    """Rebuild one case in this process, print what was done, and read it with a full traceback."""
    work = Path(keep or tempfile.mkdtemp(prefix="kerasmuscle-fuzz-case-"))
    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus = prepare_corpus(work / "corpus")
    (work / "case").mkdir()
    case = make_case(corpus, seed, index, work / "case")
    print(f"case {index} of seed {seed}: {case.kind} of {case.source.name}: {case.description}\ninput: {case.target}")
    outcome, detail = read_case(case)
    print(f"outcome: {outcome} {detail}")
    if outcome == "exception":
        from kerasmuscle.io import read_labels, read_scan

        if case.source.role == "scan":
            read_scan(case.target, force=case.source.force)
        else:
            read_labels(case.target, like=read_scan(case.source.like) if case.with_like else None)
    return 0 if outcome in ("ok", "read_error") else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker_main(argv[1], int(argv[2]), argv[3], int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (at most 2)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a read may take before it is a hang")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory a read may use")
    parser.add_argument("--case", type=int, help="rebuild and read this one case here, with its traceback")
    parser.add_argument("--keep", help="with --case: the folder to build it in (kept)")
    parser.add_argument("--json", help="also write the summary to this JSON file")
    a = parser.parse_args(argv)
    if a.case is not None:
        return reproduce(a.seed, a.case, a.keep)
    summary = fuzz(a.seed, a.count, a.jobs, start=a.start, timeout=a.timeout, memory_mb=a.memory_mb)
    print(report(summary))
    if a.json:
        from kerasmuscle.fileutil import write_json

        write_json(a.json, {"seed": a.seed, "count": a.count, "jobs": summary.jobs, "outcomes": dict(summary.outcomes),
                            "by_kind": {k: dict(v) for k, v in summary.by_kind.items()}, "bugs": summary.bugs,
                            "seconds": round(summary.seconds, 1), "peak_mib": round(summary.peak_bytes / 2 ** 20),
                            "slowest_read_s": summary.slowest_s})
    return 1 if summary.bug_count or summary.outcomes["generator_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
