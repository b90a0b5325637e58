"""Every input format gives the same Scan: compressed DICOM, multi-frame CT, NIfTI, NPZ; and label maps
are placed on the scan's grid or refused with a reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, files_of, phantom_hu, write_series
from kerasmuscle import ReadError, read_labels, read_scan
from kerasmuscle.io.nifti import write_nifti
from kerasmuscle.io.npz import write_npz


def _compress(folder: Path, out: Path, syntax) -> Path:
    import pydicom

    out.mkdir()
    for f in files_of(folder):
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(out / f.name, enforce_file_format=True)
    return out


@pytest.mark.parametrize("syntax_name", ["RLELossless", "JPEGLSLossless", "JPEG2000Lossless"])
@pytest.mark.parametrize("representation", ["int16-1024", "uint16-1024"])
def test_compressed_series_read_exactly(tmp_path, syntax_name, representation):
    import pydicom.uid

    hu = phantom_hu(3)
    plain = write_series(tmp_path / "plain", hu, representation=representation)
    packed = _compress(plain, tmp_path / "packed", getattr(pydicom.uid, syntax_name))
    scan = read_scan(packed)
    assert scan.dicom.tags["transfer_syntax"] == getattr(pydicom.uid, syntax_name).name
    assert np.array_equal(scan.hu, hu)


def test_compressed_without_decoder_names_the_extra(tmp_path):
    import pydicom.uid

    packed = _compress(write_series(tmp_path / "plain", phantom_hu(2)), tmp_path / "jls", pydicom.uid.JPEGLSLossless)
    # Hide every JPEG-LS decoder, as on a machine without the `dicom` extra.
    code = (
        "import sys\n"
        "for m in ('jpeg_ls', 'libjpeg', 'pylibjpeg', 'gdcm'): sys.modules[m] = None\n"
        "from kerasmuscle import read_scan, ReadError\n"
        f"try:\n    read_scan({str(packed)!r})\n"
        "except ReadError as e:\n    print(e)\n    sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 3, result.stderr
    assert "pip install 'kerasmuscle[dicom]'" in result.stdout
    assert "JPEG-LS Lossless" in result.stdout and "IM000" in result.stdout


def test_multiframe_enhanced_ct_reads_like_the_series(tmp_path):
    hd = pytest.importorskip("highdicom")
    import pydicom
    from pydicom.uid import generate_uid

    folder = write_series(tmp_path / "s", phantom_hu(4))
    frames = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(f) for f in files_of(folder)], series_instance_uid=generate_uid(), series_number=5,
        sop_instance_uid=generate_uid(), instance_number=1)
    frames.save_as(tmp_path / "multiframe.dcm")
    series, multi = read_scan(folder), read_scan(tmp_path / "multiframe.dcm")
    assert multi.shape == series.shape
    assert np.array_equal(multi.hu, series.hu)
    assert np.allclose(multi.positions, series.positions)
    assert multi.spacing == pytest.approx(series.spacing)
    assert sorted(multi.dicom.frame_numbers) == [1, 2, 3, 4]


def test_single_slice_uses_slice_thickness(series):
    scan = read_scan(files_of(series)[0])
    assert scan.shape == (1, 64, 64)
    assert scan.spacing[0] == pytest.approx(2.5)


def test_nifti_round_trip_and_any_orientation(tmp_path, series):
    import nibabel as nib

    scan = read_scan(series)
    write_nifti(tmp_path / "scan.nii.gz", scan.hu, scan.affine)
    back = read_scan(tmp_path / "scan.nii.gz")
    assert back.format == "nifti"
    assert np.array_equal(back.hu, scan.hu)
    assert np.allclose(back.positions, scan.positions, atol=1e-4)
    assert back.spacing == pytest.approx(scan.spacing)
    assert np.allclose(back.orientation, scan.orientation)
    # The same volume stored the RAS+ way round (as many tools write it) reads back identically.
    img = nib.load(tmp_path / "scan.nii.gz")
    nib.save(nib.as_closest_canonical(img), tmp_path / "ras.nii")
    assert nib.aff2axcodes(nib.load(tmp_path / "ras.nii").affine) == ("R", "A", "S")
    ras = read_scan(tmp_path / "ras.nii")
    assert np.array_equal(ras.hu, scan.hu)
    assert np.allclose(ras.positions, scan.positions, atol=1e-4)


def test_nifti_4d_and_corrupt_are_errors(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.int16), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ReadError, match="4d.nii: NIfTI with shape .* is not a 3-D volume"):
        read_scan(tmp_path / "4d.nii")
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(ReadError, match="bad.nii.gz: not a readable NIfTI"):
        read_scan(tmp_path / "bad.nii.gz")


def test_npz_scan_and_labels(tmp_path, series):
    scan = read_scan(series)
    labels = (scan.hu > 0).astype(np.uint8) * 3
    write_npz(tmp_path / "case.npz", hu=scan.hu, labels=labels, spacing=scan.spacing, positions=scan.positions,
              orientation=scan.orientation)
    back = read_scan(tmp_path / "case.npz")
    assert back.format == "npz" and np.array_equal(back.hu, scan.hu)
    lab = read_labels(tmp_path / "case.npz", like=scan)
    assert np.array_equal(lab.array, labels) and lab.present.all()


def test_npz_errors_name_what_is_missing(tmp_path):
    np.savez(tmp_path / "nospacing.npz", hu=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ReadError, match="nospacing.npz: no 'spacing' array"):
        read_scan(tmp_path / "nospacing.npz")
    np.savez(tmp_path / "wrongkey.npz", volume=np.zeros((2, 8, 8)))
    with pytest.raises(ReadError, match="wrongkey.npz: no image array: expected one of 'hu', 'image'"):
        read_scan(tmp_path / "wrongkey.npz")


# ------------------------------------------------------------------------------------------------
# Labels on the scan's grid


@pytest.fixture
def scan_and_labels(series):
    scan = read_scan(series)
    labels = np.zeros(scan.shape, np.uint8)
    labels[:, 20:30, 10:25] = 1
    labels[:, 35:45, 30:50] = 5
    return scan, labels


def test_nifti_labels_align_exactly(tmp_path, scan_and_labels):
    scan, labels = scan_and_labels
    write_nifti(tmp_path / "label.nii.gz", labels, scan.affine)
    lab = read_labels(tmp_path / "label.nii.gz", like=scan)
    assert np.array_equal(lab.array, labels) and lab.present.all()


def test_labels_covering_some_slices_are_placed_by_position(tmp_path, scan_and_labels):
    scan, labels = scan_and_labels
    from kerasmuscle.io.scan import make_affine

    write_nifti(tmp_path / "part.nii.gz", labels[1:3], make_affine(scan.positions[1], scan.orientation, scan.spacing))
    lab = read_labels(tmp_path / "part.nii.gz", like=scan)
    assert lab.present.tolist() == [False, True, True, False, False]
    assert np.array_equal(lab.array[1:3], labels[1:3]) and not lab.array[[0, 3, 4]].any()


@pytest.mark.parametrize("change,message", [
    ("shift", "origin differs from the scan's by 4.00 mm in-plane"),
    ("spacing", "pixel spacing (0.9, 0.9) mm differs"),
    ("slice", "is not a slice of the scan"),
    ("size", "label map has 32x64 pixels per slice"),
])
def test_label_geometry_mismatch_is_an_error_that_says_what(tmp_path, scan_and_labels, change, message):
    scan, labels = scan_and_labels
    affine = scan.affine.copy()
    if change == "shift":
        affine[:3, 3] += np.array([4.0, 0.0, 0.0])
    elif change == "spacing":
        affine[:3, 1] *= 0.9 / 0.8
        affine[:3, 2] *= 0.9 / 0.8
    elif change == "slice":
        affine[:3, 3] += np.array([0.0, 0.0, 1.0])
    elif change == "size":
        labels = labels[:, :32]
    write_nifti(tmp_path / "bad.nii.gz", labels, affine)
    with pytest.raises(ReadError) as info:
        read_labels(tmp_path / "bad.nii.gz", like=scan)
    assert message in str(info.value) and "bad.nii.gz" in str(info.value)


def test_label_values_must_be_whole_numbers(tmp_path, scan_and_labels):
    import nibabel as nib

    scan, _ = scan_and_labels
    from kerasmuscle.io.nifti import nifti_affine

    nib.save(nib.Nifti1Image(np.full((64, 64, 5), 0.5, np.float32), nifti_affine(scan.affine)), tmp_path / "soft.nii")
    with pytest.raises(ReadError, match="soft.nii: label values are not whole numbers"):
        read_labels(tmp_path / "soft.nii", like=scan)


def test_npz_labels_without_geometry_must_match_by_shape(tmp_path, scan_and_labels):
    scan, labels = scan_and_labels
    np.savez(tmp_path / "bare.npz", labels=labels)
    assert np.array_equal(read_labels(tmp_path / "bare.npz", like=scan).array, labels)
    np.savez(tmp_path / "bare2.npz", labels=labels[:2])
    with pytest.raises(ReadError, match=r"label map shape \(2, 64, 64\) does not match the scan's \(5, 64, 64\)"):
        read_labels(tmp_path / "bare2.npz", like=scan)


def test_seg_round_trip_and_foreign_seg(tmp_path, scan_and_labels, dcmqi_dir):
    pytest.importorskip("highdicom")
    from kerasmuscle.io.seg import write_seg

    scan, labels = scan_and_labels
    write_seg(tmp_path / "seg.dcm", labels, scan)
    lab = read_labels(tmp_path / "seg.dcm", like=scan)
    assert np.array_equal(lab.array, labels)
    assert lab.names[1] == "rectus abdominis" and lab.names[5] == "erector spinae"
    with pytest.raises(ReadError, match="liver_seg.dcm: SEG is in frame of reference .* it belongs to another scan"):
        read_labels(dcmqi_dir / "liver_seg.dcm", like=scan)


def test_read_labels_rejects_images_and_missing_files(tmp_path, series):
    with pytest.raises(ReadError, match="not a DICOM Segmentation"):
        read_labels(files_of(series)[0])
    with pytest.raises(ReadError, match="nothing.nii: no such file"):
        read_labels(tmp_path / "nothing.nii")


def test_deflated_series_reads_exactly(tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    hu = phantom_hu(3)
    plain = write_series(tmp_path / "plain", hu)
    (tmp_path / "deflated").mkdir()
    for f in files_of(plain):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(tmp_path / "deflated" / f.name, enforce_file_format=True)
    scan = read_scan(tmp_path / "deflated")
    assert scan.dicom.tags["transfer_syntax"] == DeflatedExplicitVRLittleEndian.name
    assert np.array_equal(scan.hu, hu)


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_expb.dcm"])
def test_big_endian_matches_pydicom(name):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut

    path = get_testdata_file(name)
    scan = read_scan(path, force=True)
    ds = pydicom.dcmread(path)
    assert scan.dicom.tags["transfer_syntax"] == "Explicit VR Big Endian"
    assert np.array_equal(scan.hu[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# The format table and the one label-reader type


def test_every_label_reader_returns_a_label_volume(tmp_path, scan_and_labels):
    pytest.importorskip("highdicom")
    from kerasmuscle.io import LabelVolume, formats
    from kerasmuscle.io.seg import write_seg

    scan, labels = scan_and_labels
    write_nifti(tmp_path / "l.nii.gz", labels, scan.affine)
    write_npz(tmp_path / "l.npz", spacing=scan.spacing, positions=scan.positions, orientation=scan.orientation,
              labels=labels)
    np.savez(tmp_path / "bare.npz", labels=labels)
    write_seg(tmp_path / "l.dcm", labels, scan)
    for name, kind in (("l.nii.gz", "nifti"), ("l.npz", "npz"), ("bare.npz", "npz"), ("l.dcm", "dicom")):
        path = str(tmp_path / name)
        assert formats.sniff(path) == kind
        volume = formats.get(kind).read_labels(path)
        assert isinstance(volume, LabelVolume) and volume.source == path
        assert np.array_equal(volume.array, labels) and isinstance(volume.warnings, list)
        if name == "bare.npz":
            assert volume.geometry is None
        else:
            spacing, positions, orientation = volume.geometry
            assert np.allclose(spacing, scan.spacing) and np.allclose(positions, scan.positions)
            assert np.allclose(orientation, scan.orientation)
    seg = formats.get("dicom").read_labels(str(tmp_path / "l.dcm"))
    assert seg.names[1] == "rectus abdominis"
    assert seg.frame_of_reference_uid == scan.dicom.frame_of_reference_uid
    assert seg.referenced_series_uids == [scan.dicom.series_uid] and len(seg.referenced_sop_uids) == len(labels)


def test_format_table_drives_readers_names_and_suffixes():
    from kerasmuscle.data.dataset import IMAGE_NAMES, LABEL_NAMES
    from kerasmuscle.io import formats

    for fmt in formats.FORMATS:  # every reader and writer named in the table exists
        for ref in (fmt.scan_reader, fmt.label_reader, fmt.writer):
            assert ref is None or callable(formats._load(ref)), ref
    assert formats.names("scan") == "DICOM, NIfTI or NPZ"
    assert formats.names("labels") == "NIfTI, NPZ or DICOM SEG"
    assert IMAGE_NAMES == ("image.nii.gz", "image.nii", "image.npz")
    assert LABEL_NAMES == ("label.nii.gz", "label.nii", "label.npz", "labels.nii.gz", "labels.nii", "labels.npz",
                           "seg.dcm")
    assert [formats.strip_suffix(n) for n in ("a.nii.gz", "B.NII", "c.npz", "d.dcm", "e.mha", "f.gz")] == \
        ["a", "B", "c", "d", "e.mha", "f.gz"]
    assert formats.is_volume_file("x/ct.nii.gz") and formats.is_volume_file("ct.NPZ")
    assert not formats.is_volume_file("IM0001.dcm") and not formats.is_volume_file("IM0001")
    assert formats.for_kind("unknown") is formats.get("dicom") and formats.for_kind("png") is None
    with pytest.raises(KeyError, match="formats are dicom, nifti, npz"):
        formats.get("mha")


def test_batch_names_and_output_guard_follow_the_table(tmp_path):
    from kerasmuscle.errors import KerasMuscleError
    from kerasmuscle.predict.batch import case_name, check_output_folder

    assert [case_name(n) for n in ("p1.nii.gz", "p2.NII", "p3.npz", "p4.dcm", "case_7/dicom")] == \
        ["p1", "p2", "p3", "p4", "case_7"]
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    (tmp_path / "IM0001").write_bytes(b"")
    check_output_folder(tmp_path / "out", [tmp_path / "ct.nii.gz"])  # a NIfTI's folder may hold the results
    with pytest.raises(KerasMuscleError, match="lies inside the input folder"):
        check_output_folder(tmp_path / "out", [tmp_path / "IM0001"])  # a DICOM file's folder is its series


def test_one_set_of_seg_sop_classes(tmp_path, series):
    """A Label Map Segmentation (the newer SEG SOP class) is a label map to the series reader too."""
    import pydicom

    from kerasmuscle.io import dicom, seg

    assert seg.SEG_SOP_CLASSES is dicom.SEG_SOP_CLASSES and len(dicom.SEG_SOP_CLASSES) == 2
    ds = pydicom.dcmread(files_of(series)[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.7"
    ds.Modality = "SEG"
    ds.save_as(tmp_path / "labelmap.dcm")
    with pytest.raises(ReadError, match="labelmap.dcm: is a DICOM Segmentation"):
        read_scan(tmp_path / "labelmap.dcm", force=True)
