"""Vertebral level finding (kerasmuscle.core.level) on the real scans beside the project and on edge cases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import SHARED, TCIA

from kerasmuscle.core.level import LevelResult, find_levels
from kerasmuscle.io import read_labels, read_scan

S0009 = SHARED / "data" / "totalsegmentator-s0009"


@pytest.fixture(scope="module")
def tcia():
    if not TCIA.is_dir():
        pytest.fail(f"real test data missing: {TCIA}")
    return read_scan(TCIA)


@pytest.fixture(scope="module")
def tcia_levels(tcia) -> LevelResult:
    return find_levels(tcia)


def _crop(scan, first: int, last: int, step: int = 1):
    """A copy of ``scan`` holding slices ``first..last`` (every ``step``-th)."""
    sel = slice(first, last + 1, step)
    return dataclasses.replace(scan, hu=scan.hu[sel], positions=scan.positions[sel],
                               spacing=(scan.spacing[0] * step, *scan.spacing[1:]), dicom=None)


def _mask_range(path, scan) -> tuple[int, int]:
    a = read_labels(path, like=scan).array
    z = np.flatnonzero(a.reshape(len(a), -1).max(axis=1))
    return int(z[0]), int(z[-1])


def test_tcia_l3_in_counted_vertebra(tcia, tcia_levels):
    # Counted by eye on a midline sagittal reformat (index 0 caudal): discs at about slices 16 (L5/S1), 27, 38,
    # 50, 62, 73 (T12/L1); the lowest ribs attach to the vertebra at 73..84, so L3 spans about 38..50.
    l3 = tcia_levels.l3
    assert l3.found and l3.confidence is not None and l3.confidence >= 0.5
    assert 41 <= l3.middle <= 47
    assert l3.slices == [l3.middle - 1, l3.middle + 1]          # 3 mm slices: three adjacent slices
    names = [lv.name for lv in tcia_levels.levels]
    assert {"S1", "L5", "L4", "L3", "L2", "L1", "T12"} <= set(names)
    lv = tcia_levels.level("L3")
    assert 37 <= lv.first <= 40 and 49 <= lv.last <= 51
    assert tcia_levels.evidence["vertebrae"] >= 6
    json.dumps(tcia_levels.to_dict())


def test_tcia_thick_slices(tcia):
    # every other slice: 6 mm spacing, same anatomy
    result = find_levels(_crop(tcia, 0, len(tcia.hu) - 1, 2))
    assert result.l3.found
    assert 41 <= 2 * result.l3.middle <= 48


def test_totalsegmentator_levels_in_reference_masks():
    if not S0009.is_dir():
        pytest.skip(f"{S0009} is absent")
    scan = read_scan(S0009 / "ct.nii.gz")
    result = find_levels(scan)
    assert result.l3.found
    first, last = _mask_range(S0009 / "segmentations" / "vertebrae_L3.nii.gz", scan)
    assert first <= result.l3.middle <= last
    # thin slices: the slab within 5 mm of mid-L3
    assert result.l3.slices[1] - result.l3.slices[0] + 1 == 7
    lumbar = [lv for lv in result.levels if lv.name.startswith("L")]
    assert [lv.name for lv in lumbar] == ["L5", "L4", "L3", "L2", "L1"]
    for lv in lumbar:
        first, last = _mask_range(S0009 / "segmentations" / f"vertebrae_{lv.name}.nii.gz", scan)
        assert first <= lv.centre <= last, (lv, first, last)


def test_series_ending_above_l3(tcia):
    result = find_levels(_crop(tcia, 66, len(tcia.hu) - 1))      # from the middle of L1 upwards
    assert not result.l3.found
    assert result.l3.reason
    assert result.l3.slices is None


@pytest.mark.parametrize("count", [1, 3])
def test_short_stack_is_the_users_choice(tcia, count):
    result = find_levels(_crop(tcia, 44, 44 + count - 1))
    assert result.l3.found and "user_choice" in result.l3.flags
    assert result.l3.slices == [0, count - 1]
    json.dumps(result.to_dict())


@pytest.mark.parametrize("value", [-1000.0, 0.0])
def test_no_bone_no_spine(value):
    from kerasmuscle.io.scan import Scan

    hu = np.full((20, 64, 64), -1000.0, np.float32)
    hu[:, 8:56, 8:56] = value                                  # air, or a water phantom
    scan = Scan(hu=hu, spacing=(5.0, 1.0, 1.0), positions=np.array([[0.0, 0.0, 5.0 * k] for k in range(20)]))
    result = find_levels(scan)
    assert not result.l3.found
    assert "no spine" in result.l3.reason
    json.dumps(result.to_dict())


def test_mirrored_bone_finds_the_spines_midline_not_a_bright_vessel():
    """The column about which bone is mirrored is the spine's midline; an aorta-like blob beside it,
    brighter than the bone threshold, has more bone in its own column but no mirror image."""
    from kerasmuscle.core.level import _mirrored_bone

    bone = np.zeros((1, 40, 60), bool)
    bone[0, 20:30, 24:37] = True          # a body, centred on column 30
    bone[0, 20:23, 16:19] = bone[0, 20:23, 41:44] = True   # pedicles, mirrored about 30
    bone[0, 5:20, 34:38] = True           # a bright vessel in front, off the midline (column 35-36)
    score = _mirrored_bone(bone, 14)[0]
    assert bone[0].sum(0).argmax() in (34, 35, 36, 37)   # most bone: the vessel's column
    assert abs(int(score.argmax()) - 30) <= 1, score


def test_disc_profile_with_a_missing_value_keeps_the_chain():
    """A slice with no profile value (an empty box at the edge of the field) is bridged, not allowed to
    blank out the discs around it."""
    from kerasmuscle.core.level import VERTEBRA_MM, _find_discs

    z = np.arange(0, 200, 2.0)
    profile = 250.0 - 150.0 * (np.abs((z + 15) % 30 - 15) < 3)   # a disc every 30 mm
    profile[40] = np.nan
    discs, _ = _find_discs(z, profile, min_contrast=25, vertebra_mm=VERTEBRA_MM)
    assert len(discs) >= 6, discs
    assert np.all(np.abs(np.diff(discs) - 30) < 3), discs


def test_disc_chain_bridges_one_missed_disc():
    """A disc the profile does not show (the column lost for a vertebra) is inferred halfway when the gap is
    twice its neighbours'; without that the chain breaks there and keeps only the longer half."""
    from kerasmuscle.core.level import VERTEBRA_MM, _find_discs

    z = np.arange(0, 330, 2.0)
    profile = 250.0 - 150.0 * (np.abs((z + 15) % 30 - 15) < 3)   # a disc every 30 mm: 0, 30, ..., 330
    profile[(z > 140) & (z < 160)] = 250.0                        # the disc at 150 mm does not show
    discs, contrast = _find_discs(z, profile, min_contrast=25, vertebra_mm=VERTEBRA_MM)
    assert np.all(np.abs(np.diff(discs) - 30) < 3), discs
    assert any(abs(d - 150) < 3 for d in discs), discs
    inferred = [d for d, c in zip(discs, contrast) if c == 0]
    assert len(inferred) == 1 and abs(inferred[0] - 150) < 3


def test_hole_fill_fills_an_osteoporotic_body_not_the_canal():
    """The inside of a cortical ring crossing the column is filled however wide the body, when it is denser
    than fat and larger than the spinal canal (or dense); the canal, fat and what does not cross the
    column stay as they are."""
    from kerasmuscle.core.level import _fill_holes

    values = np.full((1, 40, 60), -100.0)
    mask = np.zeros((1, 40, 60), bool)
    yy, xx = np.mgrid[:40, :60]
    body = ((xx - 30) / 16.0) ** 2 + ((yy - 14) / 10.0) ** 2
    mask[0] = (body <= 1) & (body > 0.7)                 # a 32 x 20 pixel cortical ring on column 30
    values[0][body <= 0.7] = 50.0                        # osteoporotic inside: 50 HU
    canal = ((xx - 30) / 4.0) ** 2 + ((yy - 30) / 3.0) ** 2
    mask[0] |= (canal <= 1.6) & (canal > 1)              # the canal's bony ring behind it
    values[0][canal <= 1] = 10.0
    side = ((xx - 52) / 3.0) ** 2 + ((yy - 14) / 3.0) ** 2
    mask[0] |= (side <= 1.8) & (side > 1)                # a ring off the column
    values[0][side <= 1] = 70.0
    out = _fill_holes(mask, values, np.array([30]), 28, (40, 2000), (25.0, 60.0))
    assert out[0][body <= 0.7].all()
    assert not out[0][canal <= 1].any()
    assert not out[0][side <= 1].any()
    fat = values.copy()
    fat[0][body <= 0.7] = -80.0                          # a ring around fat is not a vertebral body
    assert not _fill_holes(mask, fat, np.array([30]), 28, (40, 2000), (25.0, 60.0))[0][body <= 0.7].any()
