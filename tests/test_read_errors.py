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


# Found by bench/fuzz.py: each must be refused, and refused before a pixel array is allocated.


def _huge_claim(tmp, series):
    p = edit(files_of(series)[0], tmp / "huge.dcm", Rows=65535, Columns=65535)
    return p, "huge.dcm", "65535 = 4,294,836,225 voxels, more than the"


def _frames_not_a_number(tmp, series):
    import pydicom
    from pydicom.dataelem import DataElement

    ds = pydicom.dcmread(files_of(series)[0])
    ds[0x00280008] = DataElement(0x00280008, "LO", "1A")  # the value of pydicom's badVR.dcm (pydicom refuses IS '1A')
    ds.save_as(tmp / "frames.dcm", enforce_file_format=True)
    return tmp / "frames.dcm", "frames.dcm", "invalid NumberOfFrames '1A'"


def _slope(value):
    def build(tmp, series):
        return edit(files_of(series)[0], tmp / "slope.dcm", RescaleSlope=value), "slope.dcm", "invalid RescaleSlope"
    return build


def _zero_pixel_spacing(tmp, series):
    return edit(files_of(series)[0], tmp / "ps.dcm", PixelSpacing=[0, 0]), "ps.dcm", "invalid PixelSpacing"


def _parallel_cosines(tmp, series):
    p = edit(files_of(series)[0], tmp / "par.dcm", ImageOrientationPatient=[1, 0, 0, 1, 0, 0])
    return p, "par.dcm", "must be two perpendicular unit vectors"


def _raw_element(path: Path, keyword: str):
    import pydicom
    from pydicom.datadict import tag_for_keyword

    return pydicom.dcmread(path)._dict[tag_for_keyword(keyword)]  # still raw: where its value starts


def _vr_that_does_not_fit(tmp, series):
    src = files_of(series)[0]
    tell = _raw_element(src, "Rows").value_tell
    data = bytearray(src.read_bytes())
    data[tell - 4:tell - 2] = b"UL"  # 2 bytes of value cannot be an UL
    (tmp / "vr.dcm").write_bytes(bytes(data))
    return tmp / "vr.dcm", "vr.dcm", "not a multiple of 4 as its VR UL needs"


def _length_of_gigabytes(tmp, series):
    import struct

    src = files_of(series)[0]
    tell = _raw_element(src, "PatientName").value_tell
    data = bytearray(src.read_bytes())
    data[tell - 2:tell] = struct.pack("<H", 0xFFFF)  # longer than the file: pydicom reads what is there
    (tmp / "len.dcm").write_bytes(bytes(data))
    return tmp / "len.dcm", "len.dcm", "probably truncated"


def _nifti_file(tmp, name, hu=None, affine=None):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((8, 8, 4), np.int16) - 1000 if hu is None else hu,
                          np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None else affine)
    nib.save(img, tmp / name)
    return tmp / name


def _nifti_cut_in_gzip(tmp, series):
    import gzip

    p = _nifti_file(tmp, "cut.nii.gz")
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:500]))
    return p, "cut.nii.gz", "cannot read NIfTI voxel data"


def _nifti_huge_dims(tmp, series):
    import struct

    p = _nifti_file(tmp, "dims.nii")
    data = bytearray(p.read_bytes())
    data[40:56] = struct.pack("<8h", 3, 30000, 30000, 512, 1, 1, 1, 1)
    p.write_bytes(bytes(data))
    return p, "dims.nii", "voxels, more than the"


def _nifti_claims_more_than_it_holds(tmp, series):
    import struct

    p = _nifti_file(tmp, "short.nii")
    data = bytearray(p.read_bytes())
    data[40:56] = struct.pack("<8h", 3, 512, 512, 100, 1, 1, 1, 1)
    p.write_bytes(bytes(data))
    return p, "short.nii", "truncated: the header claims"


def _nifti_singular_affine(tmp, series):
    import struct

    p = _nifti_file(tmp, "sing.nii")
    data = bytearray(p.read_bytes())
    data[252:256] = struct.pack("<hh", 0, 1)  # no qform; the sform's second row is all zero
    data[296:312] = struct.pack("<4f", 0, 0, 0, 0)
    p.write_bytes(bytes(data))
    return p, "sing.nii", "degenerate NIfTI affine"


def _nifti_nan_voxels(tmp, series):
    hu = np.zeros((8, 8, 4), np.float32)
    hu[1, 2, 3] = np.nan
    return _nifti_file(tmp, "nan.nii.gz", hu=hu), "nan.nii.gz", "1 of 256 values are NaN or infinite"


def _npz(tmp, name, **arrays):
    base = {"hu": np.zeros((2, 8, 8), np.float32), "spacing": np.array([2.5, 0.8, 0.8])}
    base.update(arrays)
    np.savez(tmp / name, **base)
    return tmp / name


def _npz_huge_header(tmp, series):
    import zipfile

    p = _npz(tmp, "huge.npz")
    with zipfile.ZipFile(p) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members["hu.npy"]
    members["hu.npy"] = raw.replace(b"(2, 8, 8)", b"(100000, 65535, 65535)".ljust(9)).ljust(len(raw))
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return p, "huge.npz", "voxels, more than the"


def _npz_inf_spacing(tmp, series):
    p = _npz(tmp, "sp.npz", spacing=np.array([np.inf, 0.8, 0.8]))
    return p, "sp.npz", "'spacing' must be 3 positive numbers"


def _npz_damaged_deflate(tmp, series):
    p = tmp / "flip.npz"
    np.savez_compressed(p, hu=np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64), spacing=[1.0, 1, 1])
    data = bytearray(p.read_bytes())
    data[200] ^= 0xFF
    p.write_bytes(bytes(data))
    return p, "flip.npz", "not a readable .npz archive"


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
    ("header claims 4 GB of pixels", _huge_claim, {}),
    ("NumberOfFrames not a number", _frames_not_a_number, {}),
    ("NaN rescale slope", _slope("NaN"), {}),
    ("zero rescale slope", _slope("0"), {}),
    ("zero pixel spacing", _zero_pixel_spacing, {}),
    ("parallel direction cosines", _parallel_cosines, {}),
    ("element length that does not fit its VR", _vr_that_does_not_fit, {}),
    ("element length of 64 kB in a small file", _length_of_gigabytes, {}),
    ("NIfTI cut inside its gzip stream", _nifti_cut_in_gzip, {}),
    ("NIfTI header claims a huge volume", _nifti_huge_dims, {}),
    ("NIfTI header claims more than the file holds", _nifti_claims_more_than_it_holds, {}),
    ("NIfTI singular affine", _nifti_singular_affine, {}),
    ("NIfTI NaN voxels", _nifti_nan_voxels, {}),
    ("npz header claims a huge array", _npz_huge_header, {}),
    ("npz infinite spacing", _npz_inf_spacing, {}),
    ("npz damaged deflate stream", _npz_damaged_deflate, {}),
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


def test_the_voxel_limit_can_be_set(series, monkeypatch):
    monkeypatch.setenv("KERASMUSCLE_MAX_VOXELS", "1000")
    with pytest.raises(ReadError, match=r"claims 5 x 64 x 64 = 20,480 voxels, more than the 1,000"):
        read_scan(series)
    monkeypatch.setenv("KERASMUSCLE_MAX_VOXELS", "20480")
    assert read_scan(series).shape == (5, 64, 64)


def _seg_with(tmp, dcmqi_dir, name, change):
    import pydicom

    ds = pydicom.dcmread(dcmqi_dir / "liver_seg.dcm")
    change(ds)
    ds.save_as(tmp / name)
    return tmp / name


SEG_BAD = [
    ("frame of a segment that is not described",
     lambda ds: setattr(ds.PerFrameFunctionalGroupsSequence[1].SegmentIdentificationSequence[0],
                        "ReferencedSegmentNumber", 99), "refer to segment(s) 99, which the SEG does not describe"),
    ("more frames claimed than stored", lambda ds: setattr(ds, "NumberOfFrames", 5), "pixel data"),
    ("zero frames", lambda ds: setattr(ds, "NumberOfFrames", 0), "invalid NumberOfFrames 0"),
    ("no segment sequence", lambda ds: delattr(ds, "SegmentSequence"), "no SegmentSequence"),
    ("NaN frame position",
     lambda ds: setattr(ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0], "ImagePositionPatient",
                        ["NaN", 0, 0]), "invalid frame 1's ImagePositionPatient"),
]


@pytest.mark.parametrize("name,change,cause", SEG_BAD, ids=[b[0] for b in SEG_BAD])
def test_bad_seg_is_one_clear_error(tmp_path, dcmqi_dir, name, change, cause):
    from kerasmuscle import read_labels

    path = _seg_with(tmp_path, dcmqi_dir, "bad_seg.dcm", change)
    with pytest.raises(ReadError) as info:
        read_labels(path)
    message = str(info.value)
    assert cause in message and message.startswith(str(path)) and "\n" not in message, message


def test_a_rescale_slope_stored_as_text_under_another_vr_reads_the_same(tmp_path, series):
    """bench/fuzz.py found pydicom's LUT multiplying by the string '1' when RescaleSlope's VR DS became SH."""
    src = files_of(series)[0]
    tell = _raw_element(src, "RescaleSlope").value_tell
    data = bytearray(src.read_bytes())
    assert data[tell - 4:tell - 2] == b"DS"
    data[tell - 4:tell - 2] = b"SH"
    (tmp_path / "sh.dcm").write_bytes(bytes(data))
    assert np.array_equal(read_scan(tmp_path / "sh.dcm").hu, read_scan(src).hu)


def test_pixel_padding_stored_as_text_under_another_vr_still_pads(tmp_path, series):
    """bench/fuzz.py found numpy comparing pixels with the string '30' when PixelPaddingValue's VR became CS."""
    import pydicom
    from pydicom.dataelem import DataElement

    files = []
    for vr, value, name in (("SS", 30, "ss.dcm"), ("CS", "30", "cs.dcm")):  # stored 30 is -994 HU: noisy air
        ds = pydicom.dcmread(files_of(series)[0])
        ds[0x00280120] = DataElement(0x00280120, vr, value)
        ds.save_as(tmp_path / name, enforce_file_format=True)
        files.append(tmp_path / name)
    padded, plain = read_scan(files[0]).hu, read_scan(files_of(series)[0]).hu
    assert ((plain == -994) & (padded == -1000)).any()
    assert np.array_equal(read_scan(files[1]).hu, padded)
