"""Synthetic 3-D spines (kerasmuscle.synth.spine) and the level finder on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasmuscle.config import ConfigError
from kerasmuscle.core.level import find_levels
from kerasmuscle.synth.spine import SpineConfig, make_spine, write_spine_series

SMALL = SpineConfig(image_size=128, slice_spacing_mm=(5.0,), variant="normal", coverage="full")


def test_deterministic_per_seed():
    a, ta = make_spine(3, SMALL)
    b, tb = make_spine(3, SMALL)
    c, _ = make_spine(4, SMALL)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.positions, b.positions)
    assert ta == tb
    assert a.shape != c.shape or not np.array_equal(a.hu, c.hu)
    json.dumps(ta)


def test_truth_matches_the_volume():
    scan, truth = make_spine(5, SMALL)
    z = scan.slice_locations
    assert len(truth["levels"]) == scan.shape[0]
    assert np.allclose(np.diff(z), scan.spacing[0])
    for k, name in enumerate(truth["levels"]):
        if name in truth["vertebrae"]:
            lo, hi = truth["vertebrae"][name]
            assert lo - 1e-6 <= z[k] <= hi + 1e-6
    names = [n for n in truth["vertebrae"] if not n.startswith("S")]
    lows = [truth["vertebrae"][n][0] for n in names]
    assert lows == sorted(lows)                         # caudal first: L5 lowest ... T9 highest
    assert truth["l3_in_scan"] and truth["variant"] == "normal" and not truth["counts_disagree"]
    # bone at the middle of L3 on the spine's axis, soft tissue in the disc below it
    rows, cols = scan.shape[1:]
    mid = int(np.argmin(np.abs(z - np.mean(truth["l3_z_mm"]))))
    assert scan.hu[mid].max() > 300
    assert -1024 <= scan.hu.min() and np.array_equal(scan.hu, np.rint(scan.hu))


@pytest.mark.parametrize("variant, rib_pairs, lumbar", [("ribs11", 11, 5), ("ribs13", 13, 5), ("lumbar4", 12, 4),
                                                         ("lumbar6", 12, 6)])
def test_variants_in_the_truth(variant, rib_pairs, lumbar):
    _, truth = make_spine(1, SMALL.replace(variant=variant))
    assert truth["rib_pairs"] == rib_pairs and truth["lumbar_count"] == lumbar
    assert truth["counts_disagree"]
    assert (f"L{lumbar}" in truth["vertebrae"]) and (f"L{lumbar + 1}" not in truth["vertebrae"])


def test_config_checks_and_round_trip():
    assert SpineConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(ConfigError):
        SpineConfig.from_dict({"variant": "ribs14"})


def test_dicom_round_trip_gives_the_same_levels(tmp_path):
    from kerasmuscle.io import read_scan

    truth = write_spine_series(tmp_path / "case", 7, SMALL)
    scan = read_scan(tmp_path / "case" / "dicom")
    again, _ = make_spine(7, SMALL)
    assert np.array_equal(scan.hu, again.hu)
    assert np.allclose(scan.slice_locations, truth["slice_locations_mm"], atol=1e-3)
    assert json.loads((tmp_path / "case" / "levels.json").read_text())["vertebrae"] == truth["vertebrae"]
    a, b = find_levels(scan), find_levels(again)
    assert [lv.to_dict() for lv in a.levels] == [lv.to_dict() for lv in b.levels]
    assert a.l3.to_dict() == b.l3.to_dict()


def test_series_ending_above_l3_is_not_found():
    scan, truth = make_spine(2, SMALL.replace(image_size=256, coverage="ends_above_l3"))
    assert not truth["l3_in_scan"]
    result = find_levels(scan)
    assert not result.l3.found and result.l3.reason


def _outcome(seed: int, config: SpineConfig) -> str:
    """``exact``, ``not_found``, ``flagged`` (found, not exact, but a flag or a low confidence says so) or
    ``wrong`` (another vertebra named with the counts agreeing)."""
    scan, truth = make_spine(seed, config)
    l3 = find_levels(scan).l3
    lo, hi = truth["l3_z_mm"]
    if not l3.found:
        return "not_found"
    if lo <= l3.z_mm <= hi:
        return "exact"
    return "flagged" if (l3.confidence or 0) < 0.6 or "counts_disagree" in l3.flags else "wrong"


@pytest.mark.parametrize("spacing", [1.0, 3.0, 5.0])
def test_finder_on_normal_anatomy_is_exact_or_says_it_cannot(spacing):
    """On normal synthetic spines the finder either finds the right vertebra or reports L3 as not found; it
    never names another vertebra without a flag. The exact share is a floor against regressions (4 of 6
    at each spacing when written; the bench's target of 98 % is not reached, see bench/levels.py)."""
    config = SpineConfig(slice_spacing_mm=(spacing,), variant="normal", coverage="full", narrow_fraction=0.0,
                         noise_hu=(5.0, 15.0), tilt_deg=(-3.0, 3.0))
    outcomes = [_outcome(seed, config) for seed in range(11, 17)]
    assert "wrong" not in outcomes, outcomes
    assert outcomes.count("exact") >= 4, outcomes


@pytest.mark.xfail(strict=True, reason="known gap: the rib count (down from T12) is too unreliable to catch a "
                                       "6th lumbar vertebra, so the sacrum count names L4 as L3 unflagged; "
                                       "see bench/levels.py and the README")
def test_six_lumbar_vertebrae_are_flagged():
    flagged = []
    for seed in (21, 22, 23):
        scan, _ = make_spine(seed, SpineConfig(variant="lumbar6", coverage="full", slice_spacing_mm=(2.5,),
                                               narrow_fraction=0.0))
        flags = set(find_levels(scan).l3.flags)
        flagged.append(bool({"counts_disagree", "transitional_vertebra"} & flags))
    assert all(flagged), flagged


def test_one_sided_sacralisation_is_flagged():
    scan, _ = make_spine(22, SpineConfig(variant="sacralised_l5_left", coverage="full", slice_spacing_mm=(2.5,),
                                         narrow_fraction=0.0))
    flags = find_levels(scan).l3.flags
    assert {"counts_disagree", "transitional_vertebra"} & set(flags), flags


def test_rib_and_sacrum_counts_agree_on_a_normal_spine():
    """Where the rib count fires on a normal spine (T12 the lowest rib-bearing vertebra), it names the same
    L3 as the sacrum count: L1, L2, L3 below T12 (an off-by-one here once flagged normal spines as variants)."""
    scan, truth = make_spine(10007, SpineConfig(variant="normal", coverage="full"))
    result = find_levels(scan)
    assert set(result.evidence["counts"]) == {"sacrum", "ribs"}, result.evidence["counts"]
    assert "counts_disagree" not in result.l3.flags and result.l3.confidence == pytest.approx(0.9)
    lo, hi = truth["l3_z_mm"]
    assert lo <= result.l3.z_mm <= hi


def test_every_level_is_named_once():
    """A disc found inside the sacrum makes S1 one of the chain's vertebrae; it must not be named twice."""
    for seed in (10010, 10007, 10011):
        result = find_levels(make_spine(seed, SpineConfig(variant="normal", coverage="full"))[0])
        names = [lv.name for lv in result.levels]
        assert len(names) == len(set(names)), names


def test_a_contrast_filled_aorta_against_the_body_does_not_take_the_column():
    """Seed 10015 (1.25 mm, venous contrast): the aorta (about 220 HU) and the enhancing liver touch the
    front of L2 and L1, so the run of bone-like rows at the column is organ and body together. The body's
    front is taken at the run's first row with cortex, the column is the one about which bone is mirrored
    (not the aorta), and L3 is found, named by both counts. (Before, the centre lay in the aorta, the disc
    chain broke at L2/L3 and L3 was reported as not found.)"""
    scan, truth = make_spine(10015, SpineConfig(variant="normal", coverage="full"))
    assert truth["acquisition"]["contrast"] == "venous"
    result = find_levels(scan)
    lo, hi = truth["l3_z_mm"]
    assert result.l3.found and lo <= result.l3.z_mm <= hi, (result.l3, truth["l3_z_mm"])
    assert set(result.evidence["counts"]) == {"sacrum", "ribs"}, result.evidence["counts"]
