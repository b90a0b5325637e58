"""The QC picture of a prediction (report.overlay.qc_picture): tiles cropped to the body without the CT couch,
a colour legend of the muscle groups, and the patient's right and left marked on the correct side."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kerasmuscle.labels import MUSCLE_LABELS
from kerasmuscle.report.overlay import (body_box, draw_side_markers, legend, qc_picture, side_markers,
                                        window)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # columns run towards the patient's right


def _slice_with_couch(size: int = 512) -> np.ndarray:
    """Air, a body 200 columns wide in the middle, and a thin couch spanning the whole width below it."""
    hu = np.full((size, size), -1000.0, np.float32)
    r, c = np.mgrid[:size, :size]
    hu[((r - 250) / 80.0) ** 2 + ((c - 256) / 100.0) ** 2 <= 1] = 40.0
    hu[360:366, :] = 200.0  # the couch: 6 rows, full width, below the body with air between
    hu[366:400:8, 20:492] = -100.0  # its padding lines
    return hu


def _prediction(orientation=AXIAL, slices: int = 2):
    hu = np.stack([_slice_with_couch()] * slices)
    labels = np.zeros(hu.shape, np.uint8)
    for i, lab in enumerate(MUSCLE_LABELS):  # a block of each muscle group inside the body
        labels[:, 230:250, 180 + 30 * i:200 + 30 * i] = lab.id
    scan = SimpleNamespace(hu=hu, orientation=orientation, spacing=(3.0, 0.8, 0.8))
    rows = [{"slice_index": z, "sma_cm2": 10.0 + z, "midline_col": 256.0} for z in range(slices)]
    return SimpleNamespace(scan=scan, labels=labels), rows


def test_body_box_leaves_out_the_couch() -> None:
    r0, r1, c0, c1 = body_box(_slice_with_couch())
    assert c1 - c0 == r1 - r0  # square tiles keep the aspect ratio
    assert 200 / (c1 - c0) > 0.85
    assert c0 < 156 and c1 > 356  # the whole body, with a margin


def test_qc_picture_body_fills_most_of_the_tile_width() -> None:
    prediction, rows = _prediction()
    picture = qc_picture(prediction, rows)
    tile = picture[4:4 + 384, 4:4 + 384]  # the first (plain) tile of the contact sheet
    middle = tile[192, :, 0]
    body = np.flatnonzero(middle > window(np.float32(-100)))
    assert (body.max() - body.min() + 1) / 384 > 0.7  # was about 0.39: the couch's width was kept


def test_qc_picture_has_a_legend_in_the_paper_colours() -> None:
    prediction, rows = _prediction()
    picture = qc_picture(prediction, rows)
    below = picture[2 * 384 + 3 * 4:]  # two slices: a row of two tiles each, then the legend
    assert picture.shape[1] == 2 * 384 + 3 * 4
    assert below.shape[0] > 10
    for lab in MUSCLE_LABELS:  # pure colours appear only in the legend swatches (the tiles blend them)
        assert np.all(below == lab.colour, axis=-1).sum() >= 100, lab.name
    assert (below > 200).all(axis=-1).sum() > 50  # the names, in white
    strip = legend(300)
    assert strip.shape[1] == 300 and strip.shape[0] > legend(2000).shape[0]  # wraps when narrow


def test_side_markers_follow_the_orientation() -> None:
    assert side_markers(AXIAL) == ("R", "L")
    assert side_markers(FLIPPED) == ("L", "R")
    assert side_markers((0.0, 1.0, 0.0, 1.0, 0.0, 0.0)) is None  # columns run front-back: no marker
    blank = np.zeros((384, 384, 3), np.uint8)
    assert np.array_equal(draw_side_markers(blank, None), blank)


def _letter(region: np.ndarray) -> np.ndarray:
    """The white pixels of a corner, cropped to their bounding box (the marker letter's shape)."""
    white = (region > 200).all(axis=-1)
    rr, cc = np.nonzero(white)
    assert rr.size, "no marker pixels"
    return white[rr.min():rr.max() + 1, cc.min():cc.max() + 1]


@pytest.mark.parametrize("orientation", [AXIAL, FLIPPED])
def test_qc_picture_marks_right_and_left_on_the_correct_side(orientation) -> None:
    prediction, rows = _prediction(orientation)
    picture = qc_picture(prediction, rows)
    blank = draw_side_markers(np.zeros((384, 384, 3), np.uint8), ("R", "L"))
    r_shape, l_shape = _letter(blank[-40:, :40]), _letter(blank[-40:, -40:])
    assert r_shape.shape != l_shape.shape or not np.array_equal(r_shape, l_shape)
    for x in (4, 4 + 384 + 4):  # the plain and the coloured tile
        tile = picture[4:4 + 384, x:x + 384]
        left, right = _letter(tile[-40:, :40]), _letter(tile[-40:, -40:])
        want_left, want_right = (r_shape, l_shape) if orientation == AXIAL else (l_shape, r_shape)
        assert np.array_equal(left, want_left) and np.array_equal(right, want_right)


def test_qc_picture_without_left_right_columns_has_no_marker() -> None:
    prediction, rows = _prediction((0.0, 1.0, 0.0, 1.0, 0.0, 0.0))
    tile = qc_picture(prediction, rows)[4:4 + 384, 4:4 + 384]
    assert not (tile[-40:, :40] > 200).all(axis=-1).any()
