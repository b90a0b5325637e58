"""Real CT that nobody on this project made: the TCIA abdominal series and a dcmqi DICOM SEG."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kerasmuscle import ReadError, read_labels, read_scan


@pytest.fixture(scope="module")
def tcia(tcia_dir):
    return read_scan(tcia_dir)


def test_tcia_series_geometry(tcia, tcia_dir):
    assert tcia.shape == (134, 512, 512)
    assert tcia.spacing == pytest.approx((3.0, 1.07421875, 1.07421875))
    z = tcia.slice_locations
    assert np.all(np.diff(z) > 0), "slices must ascend along the slice normal"
    assert z[0] == pytest.approx(85.91) and z[-1] == pytest.approx(484.91)
    # The file names are not in anatomical order, so sorting by name would have been wrong.
    names = [os.path.basename(f) for f in tcia.dicom.files]
    assert names != sorted(names)
    assert tcia.warnings == []
    assert tcia.dicom.tags["modality"] == "CT" and tcia.dicom.frame_of_reference_uid


def test_tcia_hounsfield_units(tcia):
    hu = tcia.hu
    assert hu.dtype == np.float32
    corners = np.concatenate([hu[:, :20, :20].ravel(), hu[:, :20, -20:].ravel()])
    assert abs(float(np.median(corners)) + 1000) < 30, "air outside the body must be near -1000 HU"
    assert hu.min() >= -1024 and hu.max() > 1000  # bone and contrast


def test_tcia_matches_simpleitk(tcia, tcia_dir):
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tcia_dir)))
    image = reader.Execute()
    ref = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetDirection()[8] < 0:  # make SimpleITK's slice order ascend along z as ours does
        ref = ref[::-1]
    assert np.array_equal(ref, tcia.hu)


def test_dcmqi_seg_aligns_with_its_ct(dcmqi_dir):
    pytest.importorskip("highdicom")
    import highdicom as hd

    scan = read_scan(dcmqi_dir)
    assert scan.shape == (3, 512, 512)
    assert any("LICENSE_dcmqi.txt" in w for w in scan.warnings)  # skipped, and said so
    assert any("holds 2 series" in w for w in scan.warnings)  # the SEG is a second series
    assert scan.hu.min() >= -1024, "PixelPaddingValue -2000 must become air"
    labels = read_labels(dcmqi_dir / "liver_seg.dcm", like=scan)
    assert labels.names == {1: "Liver"}
    assert labels.present.all()
    # An independent reader agrees pixel for pixel.
    seg = hd.seg.segread(dcmqi_dir / "liver_seg.dcm")
    ref = seg.get_pixels_by_source_instance(list(scan.dicom.sop_instance_uids), combine_segments=True,
                                            ignore_spatial_locations=True)
    assert np.array_equal(labels.array, ref)
    assert 30000 < int((labels.array == 1).sum() / 3) < 40000
    # Liver is soft tissue: its median is in the liver range.
    assert 30 < float(np.median(scan.hu[labels.array == 1])) < 90


def test_foreign_seg_on_the_wrong_scan(tcia, dcmqi_dir):
    with pytest.raises(ReadError, match="belongs to another scan"):
        read_labels(dcmqi_dir / "liver_seg.dcm", like=tcia)
