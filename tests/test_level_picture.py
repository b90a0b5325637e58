"""The level QC picture (report.levels): sagittal and coronal reformats through the spine, head up, with the
vertebrae named and the measured slices marked, on small phantoms, the edge cases and the real series."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED, TCIA
from PIL import Image

from kerasmuscle.core.level import L3Choice, Level, LevelResult, find_levels
from kerasmuscle.io import read_labels, read_scan
from kerasmuscle.io.scan import Scan
from kerasmuscle.report.levels import (BAND_COLOUR, GAP_COLOUR, STRIP, WHITE, level_picture, level_title,
                                       write_level_picture)

S0009 = SHARED / "data" / "totalsegmentator-s0009"
H = 256


def _phantom(n: int = 40, dz: float = 3.0, size: int = 64, pix: float = 4.0, spine: bool = True,
             head_bone: bool = False) -> Scan:
    """A water body in air with a bone rod along the slices (300 HU, 900 HU in the top quarter when
    ``head_bone``), spine at row 40, column 32."""
    r, c = np.mgrid[:size, :size]
    body = ((r - 32) / 22.0) ** 2 + ((c - 32) / 28.0) ** 2 <= 1
    rod = (r - 40) ** 2 + (c - 32) ** 2 <= 16
    hu = np.full((n, size, size), -1000.0, np.float32)
    hu[:, body] = 40.0
    if spine:
        hu[:, rod] = 300.0
        if head_bone:
            hu[3 * n // 4:, rod] = 900.0
    positions = np.array([[0.0, 0.0, 100.0 + dz * k] for k in range(n)])
    return Scan(hu=hu, spacing=(dz, pix, pix), positions=positions)


def _result(scan: Scan, *, found: bool = True, spine: bool = True, middle: int | None = None) -> LevelResult:
    n = len(scan.hu)
    z = scan.slice_locations
    middle = n // 2 if middle is None else middle
    levels = [Level("L3", middle - 3, middle + 3, middle, float(z[middle]))]
    if found:
        l3 = L3Choice(found=True, slices=[middle - 1, middle + 1], middle=middle, z_mm=float(z[middle]),
                      confidence=0.9)
    else:
        l3 = L3Choice(found=False, flags=["l3_not_in_scan"], reason="L3 is not in the scan: the series ends above L3")
        levels = []
    track = np.tile([40.0, 32.0], (n, 1)) if spine else np.full((n, 2), np.nan)
    return LevelResult(levels=levels, l3=l3, spine=track)


def _band_rows(picture: np.ndarray, x: int = 1) -> np.ndarray:
    """Rows where the opaque band strip at column ``x`` (the sagittal panel's left edge) is drawn."""
    return np.flatnonzero(np.all(picture[:, x] == BAND_COLOUR, axis=1))


@pytest.mark.parametrize("k", [0, 7, 20, 39])
def test_band_at_the_rows_of_the_measured_slice(k: int) -> None:
    scan = _phantom()
    picture = level_picture(scan, _result(scan), measured=[k], height=H)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    rows = _band_rows(picture)
    assert len(rows) and np.all(np.diff(rows) == 1)          # one band
    from_bottom = picture.shape[0] - (rows.min() + rows.max() + 1) / 2
    assert from_bottom == pytest.approx((k + 0.5) / len(scan.hu) * H, abs=1.0)
    assert len(rows) == pytest.approx(H / len(scan.hu), abs=1.5)


def test_head_up_and_default_band_at_l3() -> None:
    scan = _phantom(head_bone=True)
    result = _result(scan, middle=12)
    picture = level_picture(scan, result, height=H)
    top = picture.shape[0] - H
    rows = _band_rows(picture)
    low = _band_rows(level_picture(scan, result, measured=[5], height=H))
    high = _band_rows(level_picture(scan, result, measured=[35], height=H))
    assert high.mean() < rows.mean() < low.mean()              # higher slice index higher up
    assert len(rows) == pytest.approx(3 * H / 40, abs=2)       # the three chosen slices
    # the denser bone of the top quarter of the slices shows at the top of the sagittal panel
    sagittal = picture[top:, :, 0].astype(float)
    head = sagittal[5:H // 5]
    col = int(np.argmax(head.mean(axis=0)))
    assert head[:, col].mean() > sagittal[2 * H // 3:H - 40, col].mean() + 40   # 900 HU above, 300 HU below


def test_vertebra_named_at_its_centre() -> None:
    scan = _phantom()
    result = _result(scan, middle=25)
    picture = level_picture(scan, result, measured=[], height=H)
    top = picture.shape[0] - H
    # the names are the only near-white pixels above the side letters (the phantom's bone is 113 grey)
    white = np.flatnonzero((picture[top:top + H - 40].min(axis=2) >= 180).any(axis=1))
    assert len(white)
    centre = H - (25 + 0.5) / 40 * H
    assert abs(white.mean() - centre) < 4 and white.max() - white.min() < H / 10
    assert not _band_rows(picture).size                          # nothing measured, no band


def test_not_found_still_draws_the_reformats_with_the_reason() -> None:
    scan = _phantom()
    result = _result(scan, found=False)
    lines = level_title(scan, result)
    assert lines[0].startswith("L3 is not in the scan") and "l3_not_in_scan" in lines[0]
    assert "no slices measured" in lines[1]
    picture = level_picture(scan, result, height=H)
    assert picture.shape[0] > H and not _band_rows(picture).size
    panel = picture[-H:, :, 0]
    assert np.count_nonzero(panel > 60) > 0.2 * panel.size      # the body is drawn


def test_found_title() -> None:
    scan = _phantom()
    lines = level_title(scan, _result(scan, middle=20))
    assert lines[0].startswith("L3: slices 19-21, middle 20") and "confidence 0.90" in lines[0]
    assert "band: measured slices 19-21" in lines[1] and "L3..L3" in lines[1]
    assert "band: measured slices 3-5, 9" in level_title(scan, _result(scan), measured=[5, 3, 4, 9, 99])[1]


@pytest.mark.parametrize("n", [1, 3])
def test_few_slices_get_a_small_picture_that_says_so(n: int) -> None:
    scan = _phantom(n=n)
    result = find_levels(scan)
    assert "user_choice" in result.l3.flags
    lines = level_title(scan, result)
    assert lines[0].startswith(f"{n}-slice scan: taken as the user's own L3 choice")
    picture = level_picture(scan, result)
    assert picture.dtype == np.uint8 and picture.shape[0] < 512 and picture.shape[1] >= 320


@pytest.mark.parametrize("spine", ["none", "nan"])
def test_scan_without_a_spine(spine: str) -> None:
    scan = _phantom(spine=False)
    result = _result(scan, found=False, spine=False)
    if spine == "none":
        result = dataclasses.replace(result, spine=None)
    assert "no spine found" in level_title(scan, result)[1]
    picture = level_picture(scan, result, height=H)
    sagittal = picture[-H:, :, 0]
    assert np.count_nonzero(sagittal > 60) > 0.2 * sagittal.size


def test_thin_slices_and_a_short_wide_scan() -> None:
    thin = _phantom(n=300, dz=0.625, size=48, pix=0.8)
    picture = level_picture(thin, _result(thin, middle=150), measured=[150], height=H)
    rows = _band_rows(picture)
    assert picture.shape[0] - rows.mean() == pytest.approx(150.5 / 300 * H, abs=1.5)
    short = _phantom(n=6, dz=1.0, size=64, pix=8.0)             # 6 mm long, 512 mm wide
    picture = level_picture(short, _result(short, middle=3), height=H)
    assert picture.shape[1] <= 2 * (2 * H) + 4                  # drawn smaller, not wider
    assert len(_band_rows(picture))                              # still marked, at the bottom
    assert _band_rows(picture).max() < picture.shape[0]


def test_gap_in_the_series_is_black_not_interpolated() -> None:
    full = _phantom()
    keep = np.r_[0:15, 25:40]                                      # slices 15..24 (30 mm) missing
    scan = dataclasses.replace(full, hu=full.hu[keep], positions=full.positions[keep])
    picture = level_picture(scan, _result(scan, middle=20), measured=[14, 15], height=H)
    gap = np.flatnonzero(np.all(picture[:, 1] == GAP_COLOUR, axis=1))
    assert len(gap) == pytest.approx(9 / 40 * H, abs=3)         # the gap less half a slice each side
    assert not picture[gap, STRIP + 2:STRIP + 40].any()
    # slice 14 lies just below the gap and slice 15 (the old 25) just above it
    band = _band_rows(picture)
    assert band.min() < gap.min() and band.max() > gap.max() and not np.isin(gap, band).any()


def test_axial_tile_beside_and_written(tmp_path) -> None:
    scan = _phantom()
    result = _result(scan)
    plain = level_picture(scan, result, height=H)
    axial = np.full((100, 80, 3), 200, np.uint8)
    with_axial = level_picture(scan, result, axial=axial, height=H)
    assert with_axial.shape[1] == plain.shape[1] + 4 + round(80 * H / 100)
    assert np.all(with_axial[-H:, -10:] == 200)
    path = write_level_picture(tmp_path / "level.png", scan, result, axial=axial[..., 0], height=H)
    assert np.array_equal(np.asarray(Image.open(path)), with_axial)


def _panels(picture: np.ndarray, row: int) -> list[tuple[int, int]]:
    """``[first, last)`` columns of each reformat, from the opaque band strips at their edges in ``row``."""
    cols = np.flatnonzero(np.all(picture[row] == BAND_COLOUR, axis=1))
    starts = cols[np.r_[True, np.diff(cols) > 1]]
    ends = cols[np.r_[np.diff(cols) > 1, True]] + 1
    return [(int(a), int(b)) for a, b in zip(starts[::2], ends[1::2])]


def test_columns_running_to_the_patients_right_are_flipped() -> None:
    scan = _phantom()
    scan.hu[:, 20:44, 50:56] = 900.0                                # bone on the high-column side
    result = _result(scan)
    for orientation, left_half in (((1.0, 0, 0, 0, 1.0, 0), False), ((-1.0, 0, 0, 0, 1.0, 0), True)):
        picture = level_picture(dataclasses.replace(scan, orientation=orientation), result, measured=[39], height=H)
        band = _band_rows(picture)
        sagittal, coronal = _panels(picture, int(band.mean()))
        assert sagittal[0] == 0 and coronal[0] == sagittal[1] + 4
        line = picture[picture.shape[0] - H // 4, coronal[0]:coronal[1], 0]   # below the name
        assert (np.argmax(line) < len(line) / 2) == left_half     # the patient's right on the left


def test_light_install_draws_it() -> None:
    code = ("import sys, kerasmuscle.report.levels; "
            "bad = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------------
# The real series


@pytest.fixture(scope="module")
def tcia():
    if not TCIA.is_dir():
        pytest.fail(f"real test data missing: {TCIA}")
    scan = read_scan(TCIA)
    return scan, find_levels(scan)


def test_tcia_band_on_l3(tcia) -> None:
    scan, result = tcia
    n = len(scan.hu)
    assert result.l3.found and 41 <= result.l3.middle <= 47
    picture = level_picture(scan, result, axial=np.zeros((512, 512, 3), np.uint8))
    assert picture.shape[0] > 512 and picture.shape[1] > 3 * 300
    rows = _band_rows(picture)
    mid = picture.shape[0] - (rows.min() + rows.max() + 1) / 2
    assert mid == pytest.approx((result.l3.middle + 0.5) / n * 512, abs=1.5)
    # every vertebra's name: white text in the rows of its centre, none far from any
    top = picture.shape[0] - 512
    white = np.all(picture[top:, :400] == WHITE, axis=2).any(axis=1)
    for lv in result.levels:
        y = 512 - (lv.centre + 0.5) / n * 512
        assert white[int(y) - 4:int(y) + 5].any(), lv.name


def test_tcia_cropped_above_l3(tcia) -> None:
    scan, _ = tcia
    sel = slice(70, len(scan.hu))
    upper = dataclasses.replace(scan, hu=scan.hu[sel], positions=scan.positions[sel], dicom=None)
    result = find_levels(upper)
    assert not result.l3.found
    picture = level_picture(upper, result, height=H)
    assert not _band_rows(picture).size
    assert level_title(upper, result)[0].startswith("L3")


def test_totalsegmentator_band_inside_the_l3_mask() -> None:
    scan = read_scan(S0009 / "ct.nii.gz")
    result = find_levels(scan)
    mask = read_labels(S0009 / "segmentations" / "vertebrae_L3.nii.gz", like=scan).array
    z = np.flatnonzero(mask.reshape(len(mask), -1).max(axis=1))
    n = len(scan.hu)
    picture = level_picture(scan, result, height=H)
    rows = _band_rows(picture)
    assert len(rows)
    lo, hi = H - (z[-1] + 1) / n * H, H - z[0] / n * H               # the mask's rows in the panel
    top = picture.shape[0] - H
    assert lo - 1 <= rows.min() - top and rows.max() - top <= hi + 1
