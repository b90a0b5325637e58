"""Bad input, table-driven: every case must fail with one ReadError naming the file and the cause,
or (for readable oddities) succeed with a warning that says what was noticed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_series, edit, files_of, phantom_hu, write_series
from kerasmuscle import ReadError, read_scan
from kerasmuscle.errors import ScanWarning


def _missing(tmp, series):
    return tmp / "does-not-exist", "does-not-exist", "no such file or folder"


def _empty_folder(tmp, series):
    (tmp / "empty").mkdir()
    return tmp / "empty", "empty", "empty folder"


def _text_file(tmp, series):
    p = tmp / "notes.txt"
    p.write_text("hello, this is not a scan\n")
    return p, "notes.txt", "it is text"


def _png_file(tmp, series):
    from PIL import Image

    p = tmp / "picture.png"
    Image.new("L", (8, 8)).save(p)
    return p, "picture.png", "it is a PNG image"


def _zero_bytes(tmp, series):
    p = tmp / "zero.dcm"
    p.write_bytes(b"")
    return p, "zero.dcm", "empty file (0 bytes)"


def _binary_junk(tmp, series):
    p = tmp / "junk.bin"
    p.write_bytes(bytes(range(256)) * 8)
    return p, "junk.bin", "not a DICOM"


def _truncated_header(tmp, series):
    src = files_of(series)[0]
    p = tmp / "cut-header.dcm"
    p.write_bytes(src.read_bytes()[:400])
    return p, "cut-header.dcm", "truncated"


def _truncated_pixels(tmp, series):
    src = files_of(series)[0]
    p = tmp / "cut-pixels.dcm"
    p.write_bytes(src.read_bytes()[:-1000])
    return p, "cut-pixels.dcm", "truncated: pixel data holds"


def _truncated_in_series(tmp, series):
    folder = copy_series(series, tmp / "s")
    victim = files_of(folder)[2]
    victim.write_bytes(victim.read_bytes()[:-777])
    return folder, victim.name, "truncated"


def _no_pixel_data(tmp, series):
    p = edit(files_of(series)[0], tmp / "nopixels.dcm", PixelData=None)
    return p, "nopixels.dcm", "has no pixel data"


def _mr(tmp, series):
    p = edit(files_of(series)[0], tmp / "mr.dcm", Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    return p, "mr.dcm", "modality MR"


def _cr(tmp, series):
    p = edit(files_of(series)[0], tmp / "cr.dcm", Modality="CR", SOPClassUID="1.2.840.10008.5.1.4.1.1.1")
    return p, "cr.dcm", "is not CT"


def _seg_as_image(tmp, series):
    from conftest import DCMQI

    return DCMQI / "liver_seg.dcm", "liver_seg.dcm", "is a DICOM Segmentation (SEG), not an image"


def _sagittal(tmp, series):
    folder = copy_series(series, tmp / "sag")
    for f in files_of(folder):
        edit(f, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    return folder, "sag", "slices are sagittal"


def _coronal(tmp, series):
    p = edit(files_of(series)[0], tmp / "cor.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    return p, "cor.dcm", "slices are coronal"


def _different_sizes(tmp, series):
    folder = copy_series(series, tmp / "sizes")
    small = write_series(tmp / "small", phantom_hu(1, 32), z0=200.0)
    src = files_of(small)[0]
    import pydicom

    a = pydicom.dcmread(files_of(folder)[0])
    edit(src, folder / "odd.dcm", SeriesInstanceUID=a.SeriesInstanceUID, StudyInstanceUID=a.StudyInstanceUID)
    return folder, "different sizes", "32x32"


def _different_orientations(tmp, series):
    folder = copy_series(series, tmp / "ori")
    edit(files_of(folder)[1], ImageOrientationPatient=[0.9, 0.1, 0, -0.1, 0.9, 0])
    return folder, "different orientations", "different orientations"


def _only_other_files(tmp, series):
    folder = tmp / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "b.txt").write_text("y")
    return folder, "docs", "no DICOM files in folder"


def _unknown_series(tmp, series):
    return series, "1.2.3.4.5", "no series 1.2.3.4.5"


def _colour(tmp, series):
    p = edit(files_of(series)[0], tmp / "rgb.dcm", SamplesPerPixel=3, PhotometricInterpretation="RGB",
             PlanarConfiguration=0, Rows=8, Columns=8, PixelData=bytes(8 * 8 * 3 * 2))
    return p, "rgb.dcm", "colour image"


def _no_pixel_spacing(tmp, series):
    p = edit(files_of(series)[0], tmp / "nospacing.dcm", PixelSpacing=None)
    return p, "nospacing.dcm", "no PixelSpacing"


BAD = [
    ("missing path", _missing, {}),
    ("empty folder", _empty_folder, {}),
    ("text file", _text_file, {}),
    ("PNG file", _png_file, {}),
    ("zero bytes", _zero_bytes, {}),
    ("binary junk without DICM", _binary_junk, {}),
    ("truncated header", _truncated_header, {}),
    ("truncated pixel data", _truncated_pixels, {}),
    ("truncated file inside a series", _truncated_in_series, {}),
    ("no pixel data", _no_pixel_data, {}),
    ("MR modality", _mr, {}),
    ("CR modality", _cr, {}),
    ("SEG given as image", _seg_as_image, {}),
    ("sagittal slices", _sagittal, {}),
    ("coronal slice", _coronal, {}),
    ("slices of different sizes", _different_sizes, {}),
    ("slices of different orientations", _different_orientations, {}),
    ("folder without DICOM", _only_other_files, {}),
    ("unknown series uid", _unknown_series, {"series_uid": "1.2.3.4.5"}),
    ("colour image", _colour, {}),
    ("no pixel spacing", _no_pixel_spacing, {}),
]


@pytest.mark.parametrize("name,build,kwargs", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_clear_error(tmp_path, series, dcmqi_dir, name, build, kwargs):
    path, named, cause = build(tmp_path, series)
    with pytest.raises(ReadError) as info:
        read_scan(path, **kwargs)
    message = str(info.value)
    assert cause in message, message
    assert named in message, message
    assert "\n" not in message
    assert "Traceback" not in message


def test_force_reads_a_non_ct_modality(tmp_path, series):
    p = edit(files_of(series)[0], tmp_path / "mr.dcm", Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    scan = read_scan(p, force=True)
    assert scan.shape == (1, 64, 64)


# ------------------------------------------------------------------------------------------------
# Readable oddities: a warning that says what was noticed, and a correct result.


def test_missing_rescale_tags_are_assumed_and_said(tmp_path):
    hu = phantom_hu(3)
    folder = write_series(tmp_path / "s", hu, representation="int16")
    for f in files_of(folder):
        edit(f, RescaleSlope=None, RescaleIntercept=None, RescaleType=None)
    with pytest.warns(ScanWarning, match="assumed slope 1 and intercept 0"):
        scan = read_scan(folder)
    assert np.array_equal(scan.hu, hu)
    assert any("no RescaleSlope/RescaleIntercept in 3 file(s)" in w for w in scan.warnings)


def test_missing_intercept_on_unsigned_data_hints_at_minus_1024(tmp_path):
    folder = write_series(tmp_path / "s", phantom_hu(2), representation="uint16-1024")
    for f in files_of(folder):
        edit(f, RescaleIntercept=None)
    scan = read_scan(folder)
    assert scan.hu.min() >= 0
    assert any("probably -1024" in w for w in scan.warnings)


def test_duplicate_positions_warn_and_keep_one(tmp_path, series):
    folder = copy_series(series, tmp_path / "dup")
    first = files_of(folder)[0]
    shutil.copy(first, folder / "copy-of-first.dcm")
    with pytest.warns(ScanWarning, match="duplicate slice positions"):
        scan = read_scan(folder)
    assert scan.shape[0] == 5
    assert np.all(np.diff(scan.slice_locations) > 0)


def test_irregular_positions_warn_with_the_gaps(tmp_path):
    folder = write_series(tmp_path / "s", phantom_hu(5))
    files = files_of(folder)
    import pydicom

    # Move the highest slice up by 5 mm: the gaps become 2.5, 2.5, 2.5, 7.5.
    top = max(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    ds = pydicom.dcmread(top)
    pos = [float(v) for v in ds.ImagePositionPatient]
    edit(top, ImagePositionPatient=[pos[0], pos[1], pos[2] + 5.0])
    with pytest.warns(ScanWarning, match="irregular slice spacing"):
        scan = read_scan(folder)
    message = next(w for w in scan.warnings if "irregular" in w)
    assert "median 2.50 mm" in message and "7.50 mm between" in message
    assert scan.spacing[0] == pytest.approx(2.5)


def test_non_dicom_files_in_a_series_folder_are_skipped_and_named(tmp_path, series):
    folder = copy_series(series, tmp_path / "s")
    (folder / "README.txt").write_text("acquired on a Tuesday")
    scan = read_scan(folder)
    assert scan.shape[0] == 5
    assert any("skipped 1 file(s)" in w and "README.txt" in w for w in scan.warnings)


def test_patient_size_in_centimetres_is_read_as_metres(tmp_path, series):
    folder = copy_series(series, tmp_path / "s")
    for f in files_of(folder):
        edit(f, PatientSize="172")
    scan = read_scan(folder)
    assert scan.height_m == pytest.approx(1.72)
    assert any("looks like centimetres" in w for w in scan.warnings)


def test_sorted_by_position_not_by_name_or_instance_number(tmp_path):
    hu = phantom_hu(6)
    folder = write_series(tmp_path / "s", hu)
    rng = np.random.default_rng(3)
    files = files_of(folder)
    names = [f"x{n:03d}.dcm" for n in rng.permutation(len(files))]
    for f, name, inst in zip(files, names, rng.permutation(len(files)) + 1):
        edit(f, folder / name, InstanceNumber=int(inst))
        f.unlink()
    scan = read_scan(folder)
    assert np.all(np.diff(scan.slice_locations) > 0)
    assert np.array_equal(scan.hu, hu)


def test_several_series_take_the_largest_ct_and_say_which(tmp_path, series):
    folder = copy_series(series, tmp_path / "study")
    write_series(folder / "scout", phantom_hu(2, seed=9), z0=400.0)
    with pytest.warns(ScanWarning, match="holds 2 series; read the largest axial CT series"):
        scan = read_scan(folder)
    assert scan.shape[0] == 5
    import pydicom

    small_uid = pydicom.dcmread(files_of(folder / "scout")[0]).SeriesInstanceUID
    other = read_scan(folder, series_uid=small_uid)
    assert other.shape[0] == 2 and other.dicom.series_uid == small_uid


def test_list_of_files_reads_only_those(series):
    files = files_of(series)[1:4]
    scan = read_scan(files)
    assert scan.shape[0] == 3
    assert set(scan.dicom.files) == {str(f) for f in files}


def test_an_axial_series_wins_over_a_larger_reformat(tmp_path, series):
    folder = copy_series(series, tmp_path / "study")
    coronal = write_series(folder / "coronal", phantom_hu(8, seed=4), z0=300.0)
    for f in files_of(coronal):
        edit(f, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    scan = read_scan(folder)
    assert scan.shape[0] == 5 and scan.normal[2] == pytest.approx(1.0)


def test_an_empty_list_of_files_is_an_error():
    with pytest.raises(ReadError, match="no files given"):
        read_scan([])
