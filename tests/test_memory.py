"""Memory-only changes give the same results: the level finder's slab-by-slab steps (big series, issue 14
part 5). The figures themselves come from ``bench/big_series.py`` and ``bench/predict.py --memory``."""

from __future__ import annotations

import numpy as np

from kerasmuscle.core import level
from kerasmuscle.io.scan import Scan


def test_fill_rings_slab_by_slab_equals_the_whole_volume_at_once():
    rng = np.random.default_rng(0)
    mask = rng.random((150, 24, 20)) < 0.3            # more than two slabs of 64, the last one partial
    mask[70, 4:16, 4:16] = True
    mask[70, 8:12, 8:12] = False                      # a ring with a hole, across a slab border
    whole = mask | (level._within(mask, 3, 1, False) & level._within(mask, 3, 1, True)
                    & level._within(mask, 3, 2, False) & level._within(mask, 3, 2, True))
    out = level._fill_rings(mask, 3)
    assert out.dtype == bool and np.array_equal(out, whole)
    assert out[70, 10, 10] and not mask[70, 10, 10]


def test_bone_in_the_last_slab_only_is_still_bone():
    """The finder looks for bone slab by slab; bone in the last (partial) slab must not be missed."""
    n = 140
    hu = np.full((n, 64, 64), -1000.0, np.float32)
    hu[:, 8:56, 8:56] = 0.0
    hu[135, 30:34, 30:34] = 500.0
    scan = Scan(hu=hu, spacing=(5.0, 1.0, 1.0), positions=np.array([[0.0, 0.0, 5.0 * k] for k in range(n)]))
    reason = level.find_levels(scan).l3.reason
    assert "no bone" not in reason and "no spine" in reason, reason
    hu[135] = 0.0
    assert "no bone" in level.find_levels(scan).l3.reason
