"""Slice choice (core.slices): the one place that decides which slices are segmented and measured."""

from __future__ import annotations

import numpy as np
import pytest

from kerasmuscle.core.slices import SliceError, SliceSelection, explicit_indices, labelled_indices
from kerasmuscle.errors import KerasMuscleError


class FakeScan:
    source = "scan.nii.gz"
    shape = (5, 4, 4)
    slice_locations = np.array([-10.0, -7.5, -5.0, -2.5, 0.0])


def test_parse_forms_and_text_round_trip() -> None:
    assert SliceSelection.parse("10-12,15") == SliceSelection("index", indices=(10, 11, 12, 15))
    assert SliceSelection.parse("z:-120:-90") == SliceSelection("z", z_range=(-120.0, -90.0))
    assert SliceSelection.parse("all") == SliceSelection.parse(None) == SliceSelection("all")
    assert SliceSelection.parse("3,3,2").indices == (3, 2)  # listed twice: taken once
    for text in ("10-12,15", "z:-120:-90", "all", "4"):
        assert SliceSelection.parse(SliceSelection.parse(text).text()) == SliceSelection.parse(text)
    for bad in ("12-10", "a", "z:1"):
        with pytest.raises(ValueError):
            SliceSelection.parse(bad)


def test_resolve_against_a_scan() -> None:
    scan = FakeScan()
    assert SliceSelection.parse("all").resolve(scan).tolist() == [0, 1, 2, 3, 4]
    assert SliceSelection.parse("3,1").resolve(scan).tolist() == [1, 3]
    assert SliceSelection.parse("z:-8:-4").resolve(scan).tolist() == [1, 2]
    with pytest.raises(SliceError, match="slice 9 does not exist"):
        SliceSelection.parse("9").resolve(scan)
    with pytest.raises(KerasMuscleError, match="no slice lies within z 5..9 mm"):
        SliceSelection.parse("z:5:9").resolve(scan)
    labels = np.zeros(scan.shape, np.uint8)
    labels[2, 1, 1] = 3
    assert SliceSelection("labelled").resolve(scan, labels).tolist() == [2]
    with pytest.raises(SliceError, match="need a label map"):
        SliceSelection("labelled").resolve(scan)


def test_of_keyword_arguments() -> None:
    assert SliceSelection.of([2, 0]) == SliceSelection("index", indices=(2, 0))
    assert SliceSelection.of(z_range=(1, 2)).z_range == (1.0, 2.0)
    with pytest.raises(SliceError, match="not both"):
        SliceSelection.of([1], (1, 2))
    with pytest.raises(SliceError, match="not an integer"):
        SliceSelection.of([1.5])


def test_explicit_and_labelled_indices() -> None:
    assert explicit_indices([3, 1], 5) == [3, 1]
    for bad, why in (([5], "out of range"), ([1, 1], "listed twice"), ([], "no slices"), ([True], "not an integer")):
        with pytest.raises(ValueError, match=why):
            explicit_indices(bad, 5)
    empty = np.zeros((3, 2, 2), np.uint8)
    assert labelled_indices(empty) == [0, 1, 2]
