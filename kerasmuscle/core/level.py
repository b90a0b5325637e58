"""Automatic vertebral level finding: which slices of a CT show the middle of L3.

:func:`find_levels` follows the vertebral column from slice to slice, finds the intervertebral discs along
it, names the vertebrae and chooses the L3 slices. numpy only; about 0.6 s on a 134-slice 512x512 series.

The method, step by step:

1. **Column.** The volume is block-averaged to about 3 mm pixels. Per slice, the spine's column is the
   column within 30 mm of the body's midline about which most bone (``> bone_hu``) is mirrored left to
   right (body, pedicles, laminae, transverse processes, ribs and pelvis are; a contrast-filled aorta beside
   the body, which may hold more bone by HU in its own column, is not), smoothed along z.
2. **Vertebral body.** Bone-like pixels (``cancellous_hu .. 800`` HU) are taken, with the low-HU inside
   of a cortical ring filled in (osteoporotic bodies can be ~30 HU inside): where the ring lies within
   ``RING_MM`` on all four sides, and wherever a hole enclosed by pixels above ``cancellous_hu`` crosses
   the column, is no larger than ``HOLE_CM2[1]``, averages above ``HOLE_HU[0]`` (not fat) and is larger
   than the spinal canal (``HOLE_CM2[0]``) or denser than it (``HOLE_HU[1]``) (:func:`_fill_holes`; a
   wide body's inside lies too far from its lateral cortex for the four-sided test). At the spine's column every
   row of the slice is given the width of the run of such pixels that crosses the column, averaged
   over 30 mm along z so that discs are bridged. The body (and disc) column is the chain of rows, one
   per slice, lying in the deepest (front-to-back) run of rows at least ``WIDE_MM`` wide that holds
   cortex (``> bone_hu``) at the column (an enhancing liver or kidney is bone-like by HU but holds none;
   runs deeper than ``DEEP_MM`` lose score), followed with a Viterbi path that moves at most about one
   pixel per slice. Where an enhancing organ or the aorta touches the body's front and joins its run, the
   body begins at the run's first row with cortex (when ``FRONT_MIN_DEPTH_MM`` of the run lies behind it).
   The body centre is taken 16 mm (or half the run when shallower) behind that front edge, so that a
   contrast-filled spinal canal merging with the body (CT myelography) does not pull it backwards. This is
   done twice: after each pass the column moves towards the middle of the body's run at the centre row,
   by at most 6, then 3 mm (``MOVES_MM``; larger moves followed a contrast-filled aorta touching the body).
3. **Discs.** A profile, per slice, of the 40th percentile of the row means in a small box (14 x 16 mm)
   at the body centre (a low percentile of rows keeps a tilted disc visible in a thick slice whose other
   rows hold an endplate), plus ``SHELL_WEIGHT_HU`` times the share of bone (``> bone_hu``) in a box
   holding the whole body (:func:`_shell_profile`: the cortical shell and the endplates are bone whatever
   the cancellous density, a disc has none, so discs show even in osteoporotic spines whose cancellous
   bone is as dense as the disc), resampled to 1 mm along z: vertebral bodies and their bright endplates
   are high, discs (soft tissue, sometimes gas) low. Every local dip lying more than ``min_disc_contrast`` HU
   below the brightest value ``DISC_NEAR_MM`` above *and* below it is a candidate (the window is short so
   that the broad low inside of an osteoporotic body between its two endplates does not count); a
   dynamic programme keeps the most regular chain of candidates, neighbouring discs ``vertebra_mm``
   apart with similar spacing, or twice that with one disc missed in between (inferred halfway at a cost
   of ``MISSED_DISC_COST``, so that one vertebra where the column was lost does not break the chain).
   The intervals between chosen discs are vertebrae.
4. **Naming from the sacrum.** Slices where bone runs, with gaps of at most 5 mm, from the spine to at
   least ``sacrum_mm`` on both sides (the sacral alae fused with the iliac bones) are sacral; the lowest
   such region (short gaps bridged), beginning within ``SACRUM_START_MM`` of the bottom of the column and
   running on for at least ``SACRUM_MIN_MM``, is the sacrum (shorter runs below it, such as a few slices
   of the iliac bones beside the lower sacrum, are passed over); the disc nearest its top is L5/S1, and
   vertebrae are counted upwards from it. When no disc lies within 20 mm of the sacrum's top but the
   lowest disc lies one vertebra above it (a height like the next one's), the L5/S1 disc is taken to lie
   3 mm above the sacrum's top. When the vertebra so counted as L5 is joined to the pelvis on one side only (the
   other side reaching less than ``TRANSITIONAL_OTHER`` of ``sacrum_mm``), or on both sides (the sacral
   region's top lying inside it, more than 3 mm above the L5/S1 disc), in at least
   ``TRANSITIONAL_SHARE`` of its slices (of its height), it is a transitional vertebra (flag ``transitional_vertebra``, confidence x 0.6).
5. **Naming from the ribs.** Along each row of the back half of the vertebral body (from 2 mm in front
   of its centre to 10 mm behind), outwards from the body's middle, the body's own run of bone-like
   pixels is skipped; bone ``> bone_hu`` beyond a gap of soft tissue, within ``rib_lateral_mm`` of the
   run's end, or the run going on more than 6 mm beyond the body's edge, is a rib head at its
   costovertebral joint (the lumbar transverse processes lie further back, kidneys and descending rib
   shafts further out). A slice has a rib head on a side when at least ``RIB_MM2`` of such bone lies
   there; a vertebra bears ribs when ``RIB_SHARE`` of the slices of its upper part (from 30 % of its
   height to 2 mm above it) have one. The lowest rib-bearing vertebra with a rib-bearing vertebra
   directly above it (T11), rib-bearing vertebrae further up (one miss allowed) and two rib-free ones
   below is T12, and vertebrae are counted downwards from
   it. When both counts exist and disagree the result says so (flag ``counts_disagree``), keeps both
   candidates in the evidence, follows the sacrum count and lowers the confidence. The rib count is
   still the weak part: on the real scans checked so far it does not fire (the sacrum count alone names
   the levels), and on synthetic spines it fires on too few series (see ``bench/levels.py``).

A scan of at most ``user_max_slices`` slices is taken as the user's own choice of L3 slices, unless its
DICOM ImageType says it is a localizer (scout), which has no L3 to measure. When no spine
is found, or the named levels stop above L3 (a chest scan, a series ending above L3), L3 is reported as
not found with the reason, rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kerasmuscle.io.scan import Scan

#: Bone threshold (HU): cortical and dense bone lie above it.
BONE_HU = 200.0
#: Lower bound (HU) of bone-like tissue when following the vertebral body (osteoporotic cancellous bone).
CANCELLOUS_HU = 90.0
#: A dip of the body profile must lie this far (HU) below both neighbouring bodies to be a disc candidate.
MIN_DISC_CONTRAST = 25.0
#: A disc is compared with the brightest profile value (vertebral body or endplate) this far (mm) above and below.
DISC_NEAR_MM = (2.0, 6.5)
#: Allowed distance between neighbouring discs, in mm (lower thoracic to large lumbar vertebrae).
VERTEBRA_MM = (17.0, 55.0)
#: Bone must run at least this far (mm) to each side of the spine for a slice to count as sacrum + ilia.
SACRUM_MM = 60.0
#: The sacral region must begin within this distance (mm) of the bottom of the column (below the alae the
#: column may go on through S3-S5 and the coccyx, some 50-90 mm).
SACRUM_START_MM = 100.0
#: ... and run on for at least this long (mm): the alae of S1 and S2 (a rib cage's reach is patchier).
SACRUM_MIN_MM = 12.0
#: Bone beside the back half of the vertebral body, this far (mm) beyond its lateral edge, is a rib head.
RIB_LATERAL_MM = (1.5, 15.0)
#: Rib heads are looked for in the rows from 2 mm in front of the body's centre to this far (mm) behind it
#: (a lumbar transverse process, behind the body's back wall, is not a rib head).
RIB_BEHIND_MM = 10.0
#: A slice has a rib head on a side when at least this much bone (mm^2) lies there.
RIB_MM2 = 20.0
#: A vertebra bears ribs when a rib head lies beside this share of the slices of its upper part.
RIB_SHARE = 0.25
#: L5 is transitional when joined to the pelvis (``sacrum_mm``) on one side, the other side reaching less
#: than this fraction of ``sacrum_mm``, in at least ``TRANSITIONAL_SHARE`` of its slices.
TRANSITIONAL_OTHER = 0.6
TRANSITIONAL_SHARE = 0.2
#: Half-height (mm) of the thin-slice L3 slab around mid-L3.
SLAB_MM = 5.0
#: Slice spacing (mm) from which on three adjacent slices are chosen instead of a slab.
THICK_SLICE_MM = 3.0
#: A scan with at most this many slices is the user's own L3 choice.
USER_MAX_SLICES = 3

#: Level names from the top of the thorax to the sacrum, in craniocaudal order.
LEVEL_NAMES = tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6)) + ("S1",)

#: Following the body: a row belongs to the body's run when the run across the column is this wide (mm);
WIDE_MM = 20.0
#: ... the body begins at the run's first row with cortex (this share of bone along z) at the column,
FRONT_SHELL = 0.3
#: ... when at least this much (mm) of the run lies behind that row (else the whole run is the body);
FRONT_MIN_DEPTH_MM = 24.0
#: ... runs deeper than this (mm) (organs) lose score, up to ``DEEP_COST`` 30 mm deeper;
DEEP_MM = 60.0
DEEP_COST = 0.5
#: ... and after each pass the column moves to the middle of the body's run by at most these (mm).
MOVES_MM = (6.0, 3.0)
#: ... the low-HU inside of a cortical ring is filled when the ring lies within this (mm) on all four sides.
RING_MM = 20.0
#: ... and so are holes in the bone-like pixels within this (mm) of the column (see :func:`_fill_holes`):
#: of at most the larger area (cm^2), at least the lower mean HU, and at least the smaller area or the
#: higher mean HU (a vertebral body's inside; not the spinal canal, the pelvis or the rib cage).
HOLE_STRIP_MM = 45.0
HOLE_CM2 = (4.0, 30.0)
HOLE_HU = (25.0, 60.0)
_GRID_MM = 3.0      # in-plane pixel size used for following the column
_PROFILE_MM = 1.0   # z step of the resampled disc profile


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class Level:
    """One named vertebra.

    Args:
        name: ``"T12"``, ``"L3"``, ``"S1"`` ...
        first, last: first and last slice index (inclusive) between its two discs.
        centre: slice index nearest its middle.
        z_mm: location of its middle along the slice normal, in mm.
    """

    name: str
    first: int
    last: int
    centre: int
    z_mm: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "first": self.first, "last": self.last, "centre": self.centre,
                "z_mm": round(self.z_mm, 2)}


@dataclass
class L3Choice:
    """The slices chosen at L3, or why there are none.

    Args:
        found: whether L3 slices were chosen.
        slices: ``[first, last]`` slice indices (inclusive) of the chosen slices, else None.
        middle: slice index at mid-L3, else None.
        z_mm: location of mid-L3 in mm, else None.
        confidence: 0..1 (None for the user's own choice).
        flags: short words on anything unusual (``"user_choice"``, ``"counts_disagree"``, ...).
        reason: why L3 was not found (empty when found).
    """

    found: bool
    slices: list[int] | None = None
    middle: int | None = None
    z_mm: float | None = None
    confidence: float | None = None
    flags: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def indices(self) -> list[int]:
        """All chosen slice indices (empty when not found)."""
        return list(range(self.slices[0], self.slices[1] + 1)) if self.slices else []

    def to_dict(self) -> dict[str, Any]:
        return {"found": self.found, "slices": self.slices, "middle": self.middle,
                "z_mm": None if self.z_mm is None else round(self.z_mm, 2),
                "confidence": None if self.confidence is None else round(self.confidence, 3),
                "flags": list(self.flags), "reason": self.reason}


@dataclass
class LevelResult:
    """What :func:`find_levels` found.

    Args:
        levels: named vertebrae, caudal first (by slice index).
        l3: the L3 choice.
        evidence: how the names were reached: ``vertebrae`` (how many found), ``discs_mm``, ``sacrum_top_mm``,
            ``lowest_rib_mm``, ``counts`` (``{"sacrum": "L3 at ...", "ribs": ...}``), ``candidates``
            (mid-L3 per count when the counts disagree), ``spine_slices``.
        spine: per slice the (row, column) pixel of the vertebral body's centre, ``[slices, 2]`` float, NaN
            where no column was followed; None when no column was looked for. For pictures (a sagittal
            reformat through the spine); not part of :meth:`to_dict`.
    """

    levels: list[Level]
    l3: L3Choice
    evidence: dict[str, Any] = field(default_factory=dict)
    spine: np.ndarray | None = field(default=None, repr=False)

    def level(self, name: str) -> Level | None:
        """The named vertebra, or None."""
        return next((lv for lv in self.levels if lv.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy."""
        return {"levels": [lv.to_dict() for lv in self.levels], "l3": self.l3.to_dict(),
                "evidence": _json_safe(self.evidence)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (float, np.floating)):
        return round(float(value), 2)
    return value


# --------------------------------------------------------------------------------------------------
# Small numpy helpers


def _moving_mean(a: np.ndarray, window: float, axis: int = 0) -> np.ndarray:
    """Mean over a centred window of ``window`` samples (made odd, at least 1) along ``axis``;
    shorter windows at the edges."""
    k = max(1, int(round(window)) | 1)
    if k == 1:
        return np.asarray(a, float)
    a = np.moveaxis(np.asarray(a, float), axis, 0)
    n = a.shape[0]
    cs = np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, 0)], 0)
    lo = np.clip(np.arange(n) - k // 2, 0, n)
    hi = np.clip(np.arange(n) + k // 2 + 1, 0, n)
    out = (cs[hi] - cs[lo]) / (hi - lo).reshape((-1,) + (1,) * (a.ndim - 1))
    return np.moveaxis(out, 0, axis)


def _nearest(z: np.ndarray, value: float) -> int:
    """Index of the slice location nearest ``value``; ties (to 1 micrometre, as DICOM's decimal positions
    round) go to the lower index, so a scan and its DICOM round trip give the same slice."""
    return int(np.argmin(np.round(np.abs(np.asarray(z, float) - value), 3)))


def _block_mean(hu: np.ndarray, f: int) -> np.ndarray:
    """``[z, rows, cols]`` averaged over ``f x f`` in-plane blocks (edges that do not fill a block dropped)."""
    n, r, c = hu.shape
    r2, c2 = max(f, r // f * f), max(f, c // f * f)
    if r < f or c < f:
        return hu.astype(np.float32)
    return hu[:, :r2, :c2].reshape(n, r2 // f, f, c2 // f, f).mean((2, 4), dtype=np.float32)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``[z, R]`` bool, the first and last row of the run of True each element lies in (-1 where False)."""
    n, size = mask.shape
    idx = np.arange(size)
    before = np.concatenate([np.zeros((n, 1), bool), mask[:, :-1]], 1)
    after = np.concatenate([mask[:, 1:], np.zeros((n, 1), bool)], 1)
    start = np.maximum.accumulate(np.where(mask & ~before, idx, -1), 1)
    end = np.minimum.accumulate(np.where(mask & ~after, idx, size)[:, ::-1], 1)[:, ::-1]
    return np.where(mask, start, -1), np.where(mask, end, -1)


def _viterbi(score: np.ndarray, step: int, move_cost: float = 0.02) -> np.ndarray:
    """Per row of ``score [z, R]`` the index of a path maximising the summed score, moving at most ``step``."""
    n, size = score.shape
    acc = score[0].copy()
    back = np.zeros((n, size), np.int32)
    ar = np.arange(size)
    for k in range(1, n):
        best = np.full(size, -np.inf)
        arg = np.zeros(size, np.int32)
        for s in range(-step, step + 1):
            shifted = np.full(size, -np.inf)
            if s >= 0:
                shifted[s:] = acc[:size - s]
            else:
                shifted[:s] = acc[-s:]
            shifted -= move_cost * abs(s)
            better = shifted > best
            best[better] = shifted[better]
            arg[better] = (ar - s)[better]
        acc = best + score[k]
        back[k] = arg
    path = np.zeros(n, int)
    path[-1] = int(np.argmax(acc))
    for k in range(n - 1, 0, -1):
        path[k - 1] = back[k, path[k]]
    return path


def _within(mask: np.ndarray, reach: int, axis: int, reverse: bool) -> np.ndarray:
    """Whether a True lies at most ``reach`` pixels before each element along ``axis`` (after it when reversed)."""
    m = np.moveaxis(mask, axis, -1)
    if reverse:
        m = m[..., ::-1]
    idx = np.arange(m.shape[-1])
    last = np.maximum.accumulate(np.where(m, idx, -10 * m.shape[-1]), axis=-1)
    out = idx - last <= reach
    if reverse:
        out = out[..., ::-1]
    return np.moveaxis(out, -1, axis)


def _fill_rings(mask: np.ndarray, reach: int) -> np.ndarray:
    """``[z, R, C]`` mask with holes filled that have mask within ``reach`` pixels on all four sides in-plane
    (the low-HU inside of an osteoporotic vertebral body's cortical ring)."""
    out = np.empty_like(mask)
    for k in range(0, len(mask), 64):  # slab by slab: _within's int64 temporaries are 8x the mask's size
        m = mask[k:k + 64]
        out[k:k + 64] = m | (_within(m, reach, 1, False) & _within(m, reach, 1, True)
                             & _within(m, reach, 2, False) & _within(m, reach, 2, True))
    return out


def _fill_holes(mask: np.ndarray, values: np.ndarray, col: np.ndarray, half: int, area_px: tuple[int, int],
                mean_hu: tuple[float, float]) -> np.ndarray:
    """``[z, R, C]`` mask with the holes filled that lie in a strip of ``2 * half + 1`` columns about ``col``
    (per slice), are enclosed by the mask in-plane and cross the column: the low-HU inside of an osteoporotic
    vertebral body's cortical shell, however wide the body. A hole is filled when it covers at most ``area_px[1]`` pixels
    (not the pelvis or the rib cage), its ``values`` average at least ``mean_hu[0]`` (not fat), and it
    covers at least ``area_px[0]`` pixels (a body's inside, larger than the spinal canal, which holds fluid,
    fat and the cord at 0-40 HU) or averages at least ``mean_hu[1]`` (one of the many small holes that
    noise breaks the inside of a body just below the bone-like bound into). numpy only: the outside is
    flooded from the strip's border, the rest labelled by flooding labels."""
    n, size_r, size_c = mask.shape
    if n == 0 or size_r < 3:
        return mask
    idx = np.clip(np.asarray(col, int)[:, None] + np.arange(-half, half + 1)[None], 0, size_c - 1)
    idx3 = np.broadcast_to(idx[:, None, :], (n, size_r, idx.shape[1]))
    free = ~np.take_along_axis(mask, idx3, 2)

    def grow(a: np.ndarray) -> np.ndarray:
        b = a.copy()
        b[:, 1:] |= a[:, :-1]
        b[:, :-1] |= a[:, 1:]
        b[:, :, 1:] |= a[:, :, :-1]
        b[:, :, :-1] |= a[:, :, 1:]
        return b

    outside = np.zeros_like(free)
    outside[:, [0, -1], :] = free[:, [0, -1], :]
    outside[:, :, [0, -1]] = free[:, :, [0, -1]]
    for _ in range(4 * (size_r + idx.shape[1])):
        grown = grow(outside) & free
        if np.array_equal(grown, outside):
            break
        outside = grown
    holes = free & ~outside
    if not holes.any():
        return mask
    label = np.where(holes, np.arange(holes.size, dtype=np.int32).reshape(holes.shape), np.int32(-1))
    for _ in range(size_r * idx.shape[1]):
        m = label.copy()
        m[:, 1:] = np.maximum(m[:, 1:], label[:, :-1])
        m[:, :-1] = np.maximum(m[:, :-1], label[:, 1:])
        m[:, :, 1:] = np.maximum(m[:, :, 1:], label[:, :, :-1])
        m[:, :, :-1] = np.maximum(m[:, :, :-1], label[:, :, 1:])
        m = np.where(holes, m, -1)
        if np.array_equal(m, label):
            break
        label = m
    ids, inverse = np.unique(label[holes], return_inverse=True)
    area = np.bincount(inverse, minlength=len(ids))
    mean = np.bincount(inverse, np.take_along_axis(values, idx3, 2)[holes], minlength=len(ids)) / area
    # a body's inside lies on the column (the middle of the strip)
    on_column = np.isin(ids, label[:, :, half][holes[:, :, half]])
    fill = on_column & (area <= area_px[1]) & (mean >= mean_hu[0]) & ((area >= area_px[0]) | (mean >= mean_hu[1]))
    keep = np.zeros_like(holes)
    keep[holes] = fill[inverse.ravel()]
    out = mask.copy()
    filled = np.take_along_axis(out, idx3, 2) | keep
    np.put_along_axis(out, idx3, filled, 2)
    return out


def _mirrored_bone(bone: np.ndarray, reach: int) -> np.ndarray:
    """``[z, C]``: per slice and column, the bone pixels that have bone at the mirrored place about that
    column, up to ``reach`` pixels to each side (the column's own bone counts once)."""
    n, _, size_c = bone.shape
    out = bone.sum(1).astype(np.int32)
    for k in range(1, reach + 1):
        if k >= size_c:
            break
        both = bone[:, :, :-2 * k] & bone[:, :, 2 * k:] if 2 * k < size_c else None
        if both is None:
            break
        out[:, k:size_c - k] += 2 * both.sum(1)
    return out


def _extent(row_bone: np.ndarray, centre: int, step: int, max_gap: int, limit: int) -> int:
    """How many pixels bone runs from ``centre`` in direction ``step`` (+1/-1) with gaps of at most ``max_gap``."""
    reach, gap = 0, 0
    for j in range(1, limit):
        c = centre + step * j
        if c < 0 or c >= row_bone.size:
            break
        if row_bone[c]:
            reach, gap = j, 0
        else:
            gap += 1
            if gap > max_gap:
                break
    return reach


# --------------------------------------------------------------------------------------------------
# Following the column


@dataclass
class _Column:
    col: np.ndarray        # full-resolution column of the spine per slice
    row: np.ndarray        # full-resolution row of the body centre per slice
    front: np.ndarray      # full-resolution row of the body's front edge per slice
    half_width: np.ndarray  # half the body's width (mm) per slice
    valid: np.ndarray      # slices where a vertebral body (or disc) column was found


def _follow_column(hu: np.ndarray, spacing: tuple[float, float, float], *, bone_hu: float,
                   cancellous_hu: float) -> _Column:
    n = hu.shape[0]
    f = max(1, int(round(_GRID_MM / spacing[1])))
    px, dz = spacing[1] * f, max(float(spacing[0]), 0.1)
    d = _block_mean(hu, f)
    _, size_r, size_c = d.shape
    cols = np.arange(size_c)

    body = d > -300
    body_cols = body.sum(1)
    midline = (body_cols * cols).sum(1) / np.maximum(body_cols.sum(1), 1)
    midline = _moving_mean(midline, 40 / dz)
    bone = d > bone_hu
    bone_count = _moving_mean(_moving_mean(bone.sum(1), 30 / dz, 0), 10 / px, 1)
    near = np.abs(cols[None] - midline[:, None]) < 30 / px
    # the spine is the bone that is mirrored about its midline (body, pedicles, laminae, transverse
    # processes, ribs, pelvis); a contrast-filled aorta beside the body is not
    mirrored = _moving_mean(_mirrored_bone(bone, int(round(24 / px))).astype(float), 30 / dz, 0)
    col = np.argmax(np.where(near, mirrored, -1), 1)
    col = np.rint(_moving_mean(col.astype(float), 30 / dz)).astype(int)

    bonelike = _fill_rings((d > cancellous_hu) & (d < 800), int(round(RING_MM / px)))
    # the shell encloses the inside whatever its density; dense cortex (a block all cortex may lie above
    # 800 HU) is bone-like too
    bonelike |= _fill_holes(d > cancellous_hu, d, col, int(round(HOLE_STRIP_MM / px)),
                           (int(np.ceil(HOLE_CM2[0] * 100 / px ** 2)), int(HOLE_CM2[1] * 100 / px ** 2)), HOLE_HU)
    k = np.arange(n)
    # Twice: the column with most bone may lie off the body's centre (a contrast-filled aorta, a pedicle,
    # the lateral cortex), so after the first pass the column moves to the middle of the body's run
    for reach_mm in MOVES_MM:
        width = np.zeros((n, size_r))
        shift = np.zeros((n, size_r))    # centre of the run crossing the column, relative to it (pixels)
        pad = np.zeros((size_r, 1), bool)
        for j in range(n):
            m = bonelike[j]
            c = int(col[j])
            right = np.argmax(~np.concatenate([m[:, c:], pad], 1), 1)
            left = np.argmax(~np.concatenate([m[:, c::-1], pad], 1), 1)
            width[j] = np.where(m[:, c], (right + left - 1) * px, 0.0)
            shift[j] = np.where(m[:, c], (right - left) / 2, 0.0)
        wide = _moving_mean(width, 30 / dz, 0) >= WIDE_MM
        start, end = _runs(wide)
        depth = np.where(wide, (end - start + 1) * px, 0.0)
        # a vertebral body's run holds cortex (> bone_hu) at the column, its front and back shell and the
        # endplates; an enhancing liver, spleen or kidney, bone-like by HU, holds none
        bone_at = _moving_mean(bone[k, :, col].astype(float), 30 / dz, 0)
        cum = np.concatenate([np.zeros((n, 1)), np.cumsum(bone_at, 1)], 1)
        run_bone = np.where(wide, np.take_along_axis(cum, np.maximum(end, 0) + 1, 1)
                            - np.take_along_axis(cum, np.maximum(start, 0), 1), 0.0)
        score = (np.minimum(depth, 45) / 45 - DEEP_COST * np.clip((depth - DEEP_MM) / 30, 0, 1)) * np.clip(run_bone / 1.5, 0, 1)
        path = _viterbi(score, step=max(1, int(round(dz / px)) + 1))
        on = depth[k, path] >= 12
        front = np.where(on, start[k, path], path).astype(float)
        run_depth = np.where(on, depth[k, path], 0.0)
        # an enhancing organ (liver, 100-200 HU) touching the body's front joins its run: the body begins
        # at the first row of the run with cortex (> bone_hu) at the column
        for j in np.flatnonzero(on):
            a, b = int(start[j, path[j]]), int(end[j, path[j]])
            shell = np.flatnonzero(bone_at[j, a:b + 1] >= FRONT_SHELL)
            if len(shell) and shell[0] > 0 and (b - a - shell[0] + 1) * px >= FRONT_MIN_DEPTH_MM:
                front[j] = a + shell[0]
                run_depth[j] = (b - front[j] + 1) * px
        centre = np.where(on, front + np.minimum(run_depth, 32) / 2 / px, path)
        centre = _moving_mean(centre, 15 / dz)
        at = np.clip(np.rint(centre).astype(int), 0, size_r - 1)
        half = np.where(on, width[k, at] / 2, 0.0)
        off = np.where((half > 0) & (np.abs(shift[k, at]) * px <= reach_mm), shift[k, at], np.nan)
        ok = np.isfinite(off)
        if not ok.any():
            break
        moved = np.clip(np.rint(col + _moving_mean(np.interp(k, k[ok], off[ok]), 15 / dz)), 0, size_c - 1).astype(int)
        if reach_mm == MOVES_MM[-1]:
            # keep the first pass's widths: the last move only centres the column
            col = moved
            break
        col = moved
    valid = on & (bone_count[k, col] > 0)
    valid = _moving_mean(valid.astype(float), 20 / dz) > 0.5
    return _Column(col=((col + 0.5) * f).astype(int), row=((centre + 0.5) * f).astype(int),
                   front=((front + 0.5) * f).astype(int), half_width=half, valid=valid)


def _body_profile(hu: np.ndarray, spacing: tuple[float, float, float], column: _Column) -> np.ndarray:
    """Per slice, the 40th percentile of the row means in a 14 x 16 mm box at the body centre.

    A low percentile of rows rather than the box mean keeps a disc visible when the column is tilted, so
    that the disc fills only some rows of a thick slice and a bright endplate the others."""
    hr = max(1, int(round(7 / spacing[1])))
    hc = max(1, int(round(8 / spacing[2])))
    out = np.full(len(hu), np.nan)
    for k in range(len(hu)):
        r, c = column.row[k], column.col[k]
        box = hu[k, max(0, r - hr):r + hr + 1, max(0, c - hc):c + hc + 1]
        if box.size:
            out[k] = float(np.percentile(box.mean(1), 40))
    return out


def _shell_profile(hu: np.ndarray, spacing: tuple[float, float, float], column: _Column,
                   bone_hu: float) -> np.ndarray:
    """Per slice, the share of bone (``> bone_hu``) in a box holding the whole vertebral body (from 3 mm in
    front of its front edge to 6 mm behind its centre, 22 mm to each side of the column).

    A vertebral body's cortical shell and endplates are bone whatever its cancellous density; a disc has
    none. So this dips at every disc even where osteoporotic cancellous bone (~80 HU) is as dense as the
    disc itself and the mean HU of the body's inside shows nothing."""
    out = np.full(len(hu), np.nan)
    cw = max(1, int(round(22 / spacing[2])))
    for k in range(len(hu)):
        r1 = int(column.row[k] + round(6 / spacing[1])) + 1
        r0 = max(0, min(int(column.front[k] - round(3 / spacing[1])), r1 - int(round(20 / spacing[1]))))
        c = column.col[k]
        box = hu[k, r0:r1, max(0, c - cw):c + cw + 1]
        if box.size:
            out[k] = float(np.mean(box > bone_hu))
    return out


#: What a missed disc costs the chain of discs (HU of contrast), see :func:`_regular_chain`.
MISSED_DISC_COST = 60.0

#: HU per unit of :func:`_shell_profile` added to the body profile for finding discs.
SHELL_WEIGHT_HU = 300.0


# --------------------------------------------------------------------------------------------------
# Discs


def _find_discs(z: np.ndarray, profile: np.ndarray, *, min_contrast: float,
                vertebra_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Disc positions (mm) and their contrast (HU) along a body profile sampled at slice locations ``z``."""
    if len(z) < 3:
        return np.array([]), np.array([])
    grid = np.arange(z[0], z[-1] + 1e-6, _PROFILE_MM)
    ok = np.isfinite(profile)
    if ok.sum() < 3:
        return np.array([]), np.array([])
    p = np.interp(grid, z[ok], profile[ok])   # a slice without a value (an empty box) is bridged
    p = _moving_mean(p, 3)
    m = len(p)
    near, far = int(round(DISC_NEAR_MM[0] / _PROFILE_MM)), int(round(DISC_NEAR_MM[1] / _PROFILE_MM))
    contrast = np.full(m, -np.inf)
    for i in range(m):
        below = p[max(0, i - far):max(0, i - near + 1)]
        above = p[min(m, i + near):min(m, i + far + 1)]
        if below.size and above.size:
            contrast[i] = min(below.max(), above.max()) - p[i]
    dip = (contrast > min_contrast) & (contrast >= np.roll(contrast, 1)) & (contrast >= np.roll(contrast, -1))
    cand = np.flatnonzero(dip)
    # merge plateaus: keep one per 4 mm
    keep: list[int] = []
    for i in cand:
        if keep and grid[i] - grid[keep[-1]] < 4:
            if contrast[i] > contrast[keep[-1]]:
                keep[-1] = i
        else:
            keep.append(i)
    cand = np.array(keep, int)
    if not len(cand):
        return np.array([]), np.array([])
    zc, cc = grid[cand], contrast[cand]
    chain, inferred = _regular_chain(zc, cc, vertebra_mm)
    z_all = np.concatenate([zc[chain], inferred])
    c_all = np.concatenate([cc[chain], np.zeros(len(inferred))])
    order = np.argsort(z_all)
    return z_all[order], c_all[order]


def _regular_chain(zc: np.ndarray, cc: np.ndarray, vertebra_mm: tuple[float, float],
                   irregularity_cost: float = 80.0, missed_cost: float = MISSED_DISC_COST
                   ) -> tuple[list[int], list[float]]:
    """The candidate discs forming the best chain: summed contrast minus a cost for unequal neighbouring
    gaps, every gap within ``vertebra_mm``, or twice that with one disc missed in between (a disc the
    profile does not show, where the column was lost for a vertebra: it costs ``missed_cost`` and lies
    halfway; its gap counts half for the regularity).

    Returns:
        the chosen candidates' indices, and the locations (mm) of the missed discs inferred between them.
    """
    lo, hi = vertebra_mm
    k = len(zc)
    # best[(h, i, j, m)]: best score of a chain whose last two candidates are i < j (h unused: i = -1 means
    # j starts the chain), m whether a disc is missed between i and j
    best: dict[tuple[int, int, bool], float] = {}
    prev: dict[tuple[int, int, bool], tuple[int, int, bool] | None] = {}
    unit: dict[tuple[int, int, bool], float] = {}

    for j in range(k):
        best[(-1, j, False)] = cc[j]
        prev[(-1, j, False)] = None
        for i in range(j):
            gap = zc[j] - zc[i]
            for missed in (False, True):
                step = gap / 2 if missed else gap
                if not lo <= step <= hi:
                    continue
                options = [(best[st] - (irregularity_cost * abs(np.log(step / unit[st])) if st[0] >= 0 else 0.0), st)
                           for st in ((h, i, m) for h in range(-1, i) for m in (False, True)) if st in best]
                if not options:
                    continue
                score, origin = max(options)
                key = (i, j, missed)
                best[key] = score + cc[j] - (missed_cost if missed else 0.0)
                prev[key] = origin
                unit[key] = step
    end = max(best, key=best.get)
    chain: list[int] = []
    inferred: list[float] = []
    state: tuple[int, int, bool] | None = end
    while state is not None:
        chain.append(state[1])
        if state[2]:
            inferred.append(float((zc[state[0]] + zc[state[1]]) / 2))
        state = prev[state]
    return chain[::-1], sorted(inferred)


# --------------------------------------------------------------------------------------------------
# Sacrum and ribs


@dataclass
class _Lateral:
    reach: np.ndarray     # [slices, 2] how far (mm) bone runs from the spine to the left and right
    rib: np.ndarray       # [slices, 2] detached bone (mm^2) beside the back half of the body, left and right


def _lateral_bone(hu: np.ndarray, spacing: tuple[float, float, float], column: _Column, bone_hu: float,
                  rib_lateral_mm: tuple[float, float], cancellous_hu: float = CANCELLOUS_HU) -> _Lateral:
    """Per slice and side: how far (mm) bone runs from the spine (gaps <= 5 mm) in the rows of the body and
    canal; and how much bone lies just beside the back half of the vertebral body, ``rib_lateral_mm``
    beyond its lateral edge (a rib head at its costovertebral joint)."""
    n = len(hu)
    reach = np.zeros((n, 2))
    rib = np.zeros((n, 2))
    sr, sc = spacing[1], spacing[2]
    gap = max(1, int(round(5 / sc)))
    limit = int(round(120 / sc))
    dz = max(float(spacing[0]), 0.1)
    hw = column.half_width
    on_hw = hw > 5
    # the body's half width: the median over 30 mm along z (a rib head touching the body, or an organ,
    # widens the run across the column in a few slices; a mean would follow them outwards)
    w = max(1, int(round(15 / dz)))
    half = np.array([float(np.median(hw[max(0, j - w):j + w + 1][on_hw[max(0, j - w):j + w + 1]]))
                     if on_hw[max(0, j - w):j + w + 1].any() else 0.0 for j in range(n)])
    near, far = rib_lateral_mm
    for k in np.flatnonzero(column.valid):
        r, c = column.row[k], column.col[k]
        bone = hu[k] > bone_hu
        band = bone[max(0, r - int(10 / sr)):r + int(25 / sr)]
        if not band.size:
            continue
        on = band.any(0)
        reach[k] = [_extent(on, c, s, gap, limit) * sc for s in (1, -1)]
        if half[k] <= 5:
            continue
        # rows of the back half of the body; along each, outwards from the body's centre: the body's own
        # run of bone-like pixels, then bone beyond a gap (a rib head), or the run going on far beyond
        # the body's edge (a rib head touching it)
        rows = hu[k, max(0, r - int(round(2 / sr))):r + int(round(RIB_BEHIND_MM / sr)) + 1]
        inner = int(round(0.5 * half[k] / sc))
        edge = int(round((half[k] + 6.0) / sc))
        span = int(round((half[k] + far) / sc))
        for j, s in enumerate((1, -1)):
            idx = c + s * np.arange(inner, span + 1)
            idx = idx[(idx >= 0) & (idx < rows.shape[1])]
            if len(idx) < 3:
                continue
            seg = rows[:, idx]
            hard = seg > bone_hu
            has = hard[:, :max(1, edge - inner)].any(1)
            first = np.argmax(hard, 1)
            soft = seg <= cancellous_hu
            pos = np.arange(seg.shape[1])[None]
            after = soft & (pos > first[:, None])
            end = np.where(after.any(1), np.argmax(after, 1), seg.shape[1])
            beyond = hard & (pos > end[:, None]) & (pos * sc <= end[:, None] * sc + far)
            long = hard & (pos < end[:, None]) & (pos >= edge - inner)
            rib[k, j] = float(((beyond | long) & has[:, None]).sum()) * sr * sc
    return _Lateral(reach=reach, rib=rib)


# --------------------------------------------------------------------------------------------------
# The finder


def _user_choice(scan: Scan) -> LevelResult:
    n = scan.shape[0]
    z = scan.slice_locations
    mid = (n - 1) // 2
    l3 = L3Choice(found=True, slices=[0, n - 1], middle=mid, z_mm=float(z[mid]), confidence=None,
                  flags=["user_choice"])
    return LevelResult(levels=[], l3=l3, evidence={"method": "user_choice", "slices": n,
                                                   "note": "a stack of at most three slices is taken as the user's own L3 choice"})


def _not_found(reason: str, levels: list[Level], evidence: dict[str, Any], flags: list[str] | None = None) -> LevelResult:
    return LevelResult(levels=levels, l3=L3Choice(found=False, flags=flags or [], reason=reason), evidence=evidence)


def find_levels(scan: Scan, *, bone_hu: float = BONE_HU, cancellous_hu: float = CANCELLOUS_HU,
                min_disc_contrast: float = MIN_DISC_CONTRAST, vertebra_mm: tuple[float, float] = VERTEBRA_MM,
                sacrum_mm: float = SACRUM_MM, rib_lateral_mm: tuple[float, float] = RIB_LATERAL_MM,
                slab_mm: float = SLAB_MM, thick_slice_mm: float = THICK_SLICE_MM,
                user_max_slices: int = USER_MAX_SLICES) -> LevelResult:
    """Find the vertebrae in a CT scan and choose the slices at mid-L3.

    Args:
        scan: a :class:`~kerasmuscle.io.scan.Scan` (axial slices, index 0 most caudal).
        bone_hu: bone threshold in HU.
        cancellous_hu: lowest HU of bone-like tissue when following the vertebral body.
        min_disc_contrast: how far (HU) a disc must lie below its neighbouring bodies.
        vertebra_mm: allowed distance (mm) between neighbouring discs.
        sacrum_mm: how far bone must run to each side for a slice to be sacral (sacrum fused with the ilia).
        rib_lateral_mm: lateral range (mm from the spine's centre) in which detached bone is a rib.
        slab_mm: for thin slices, the slices within this distance of mid-L3 are chosen.
        thick_slice_mm: from this slice spacing on, three adjacent slices at mid-L3 are chosen.
        user_max_slices: a scan with at most this many slices is the user's own L3 choice.

    Returns:
        A :class:`LevelResult`; ``result.l3.found`` is False, with a reason, when L3 is not in the scan.
    """
    result = _find_levels(scan, bone_hu=bone_hu, cancellous_hu=cancellous_hu, min_disc_contrast=min_disc_contrast,
                          vertebra_mm=vertebra_mm, sacrum_mm=sacrum_mm, rib_lateral_mm=rib_lateral_mm,
                          slab_mm=slab_mm, thick_slice_mm=thick_slice_mm, user_max_slices=user_max_slices)
    result.spine = result.evidence.pop("_spine", None)
    return result


def _find_levels(scan: Scan, *, bone_hu: float, cancellous_hu: float, min_disc_contrast: float,
                 vertebra_mm: tuple[float, float], sacrum_mm: float, rib_lateral_mm: tuple[float, float],
                 slab_mm: float, thick_slice_mm: float, user_max_slices: int) -> LevelResult:
    n = scan.shape[0]
    image_type = str((scan.dicom.tags.get("image_type") if scan.dicom is not None else None) or "")
    if "LOCALIZER" in image_type.upper():
        return _not_found(f"a localizer (scout) image, not axial CT slices (ImageType {image_type}): there are "
                          "no vertebrae to count and no L3 slice to measure", [],
                          {"method": "none", "slices": n, "image_type": image_type}, ["localizer"])
    if 0 < n <= user_max_slices:
        return _user_choice(scan)
    evidence: dict[str, Any] = {"method": "bone column", "slices": n}
    if n == 0:
        return _not_found("the scan has no slices", [], evidence, ["no_spine"])
    hu = scan.hu
    spacing = tuple(float(s) for s in scan.spacing)
    z = np.asarray(scan.slice_locations, float)
    # slab by slab: one bool copy of a 1,000-slice 512x512 volume would add 262 MB to the peak
    if not any((hu[k:k + 64] > bone_hu).any() for k in range(0, n, 64)):
        return _not_found(f"no spine found: no bone (> {bone_hu:g} HU) in the scan", [], evidence, ["no_spine"])

    column = _follow_column(hu, spacing, bone_hu=bone_hu, cancellous_hu=cancellous_hu)
    on = np.flatnonzero(column.valid)
    if len(on) == 0 or (z[on[-1]] - z[on[0]]) < vertebra_mm[1]:
        return _not_found("no spine found: no vertebral column runs along the scan", [], evidence, ["no_spine"])
    lo, hi = on[0], on[-1]
    evidence["spine_slices"] = [int(lo), int(hi)]
    evidence["_spine"] = np.where(column.valid[:, None], np.stack([column.row, column.col], 1).astype(float), np.nan)
    profile = _body_profile(hu, spacing, column) + SHELL_WEIGHT_HU * _shell_profile(hu, spacing, column, bone_hu)
    disc_z, disc_c = _find_discs(z[lo:hi + 1], profile[lo:hi + 1], min_contrast=min_disc_contrast,
                                 vertebra_mm=vertebra_mm)
    evidence["discs_mm"] = [float(v) for v in disc_z]
    evidence["disc_contrast_hu"] = [float(v) for v in disc_c]
    if len(disc_z) < 2:
        return _not_found("no spine found: fewer than two intervertebral discs along the column", [], evidence,
                          ["no_spine"])
    # vertebrae between discs, caudal first; plus the open segment below the lowest disc (S1 when sacral)
    bounds = list(zip(disc_z[:-1], disc_z[1:]))
    evidence["vertebrae"] = len(bounds)

    lateral = _lateral_bone(hu, spacing, column, bone_hu, rib_lateral_mm, cancellous_hu)
    reach = lateral.reach.min(1)
    sacral = reach >= sacrum_mm
    counts: dict[str, int] = {}  # count -> index into bounds of L3 (may be out of range)
    text: dict[str, str] = {}
    flags: list[str] = []
    dz = max(spacing[0], 0.1)

    # from the sacrum: the top of the lowest sacral region, which must begin near the bottom of the column
    sacrum_top = None
    step = max(2, int(round(12 / dz)))  # bridge gaps of up to 12 mm (one slice at least)
    k = lo
    while k <= hi:
        ahead = np.flatnonzero(sacral[k:hi + 1])
        if not len(ahead) or z[k + int(ahead[0])] - z[lo] > SACRUM_START_MM:
            break
        start = k = k + int(ahead[0])
        while True:
            more = np.flatnonzero(sacral[k + 1:min(hi, k + step) + 1])
            if not len(more):
                break
            k += 1 + int(more[0])
        if z[k] - z[start] >= SACRUM_MIN_MM:
            sacrum_top = float(z[k])
            break
        k += 1
    evidence["sacrum_top_mm"] = sacrum_top
    l5s1 = None
    if sacrum_top is not None and len(disc_z) >= 2 and disc_z.min() - sacrum_top > 20:
        # no disc was found at the sacrum's top, but the column's lowest disc lies one vertebra above it
        # (a height like its neighbour's): the L5/S1 disc is taken to lie just above the sacrum's top
        gap, unit = disc_z[0] - (sacrum_top + 3.0), disc_z[1] - disc_z[0]
        if vertebra_mm[0] <= gap <= vertebra_mm[1] and 0.7 <= gap / unit <= 1.4:
            disc_z = np.concatenate([[sacrum_top + 3.0], disc_z])
            disc_c = np.concatenate([[0.0], disc_c])
            bounds = list(zip(disc_z[:-1], disc_z[1:]))
            evidence["discs_mm"] = [float(v) for v in disc_z]
            evidence["disc_contrast_hu"] = [float(v) for v in disc_c]
            evidence["vertebrae"] = len(bounds)
            evidence["l5s1_at_sacrum_top"] = True
    if sacrum_top is not None:
        near = int(np.argmin(np.abs(disc_z - sacrum_top)))
        if abs(disc_z[near] - sacrum_top) <= 20:
            # disc `near` is L5/S1: bounds[near] is L5, L3 two above
            l5s1 = near
            counts["sacrum"] = near + 2
            text["sacrum"] = f"L5/S1 disc at {disc_z[near]:.1f} mm (top of sacrum at {sacrum_top:.1f} mm)"
    if l5s1 is not None:
        # a transitional lumbosacral vertebra: the vertebra counted as L5 is joined to the pelvis on one
        # side, or a disc lies inside the sacral region, under a fused vertebra
        lumbar5 = (z >= disc_z[l5s1]) & (z <= (disc_z[l5s1 + 1] if l5s1 + 1 < len(disc_z) else disc_z[l5s1] + 30))
        one_sided = (lateral.reach.max(1) >= sacrum_mm) & (reach < TRANSITIONAL_OTHER * sacrum_mm)
        share = float(one_sided[lumbar5].mean()) if lumbar5.any() else 0.0
        # joined on both sides: the sacrum's top (its run of sacral slices) lies inside the vertebra, more
        # than 3 mm above the disc
        height = float(disc_z[l5s1 + 1] - disc_z[l5s1]) if l5s1 + 1 < len(disc_z) else 30.0
        both = float(np.clip((sacrum_top - disc_z[l5s1] - 3.0) / height, 0.0, 1.0))
        evidence["l5_one_sided_share"] = round(share, 2)
        evidence["l5_two_sided_share"] = round(both, 2)
        if share >= TRANSITIONAL_SHARE or both >= TRANSITIONAL_SHARE:
            flags.append("transitional_vertebra")
            side = "one side" if share >= TRANSITIONAL_SHARE else "both sides"
            text["transitional"] = (f"the vertebra above the L5/S1 disc is joined to the pelvis on {side} in "
                                    f"{100 * max(share, both):.0f} % of its " + ("slices" if share >= TRANSITIONAL_SHARE else "height"))

    # from the ribs: the lowest vertebra with a rib head beside its upper part, with a rib-bearing
    # vertebra above it and rib-free vertebrae below
    rib_on = lateral.rib >= RIB_MM2
    bearing: list[bool] = []
    sides: list[list[float]] = []
    for a, b in bounds:
        upper = (z >= a + 0.3 * (b - a)) & (z <= b + 2.0) & column.valid
        share = rib_on[upper].mean(0) if upper.any() else np.zeros(2)
        sides.append([round(float(v), 2) for v in share])
        bearing.append(bool(share.max() >= RIB_SHARE))
    evidence["rib_bearing"] = bearing
    evidence["rib_share"] = sides
    rib_low = None
    for i in range(1, len(bounds) - 1):
        above = bearing[i + 1:]
        # T11 above it bears ribs too (further up one miss is allowed); the two below bear none
        if (bearing[i] and bearing[i + 1] and sum(above) >= max(1, len(above) - 1)
                and not any(bearing[max(0, i - 2):i])):
            rib_low = i
            break
    if rib_low is not None:
        rib_z = z[rib_on.any(1) & (z >= bounds[rib_low][0])]
        evidence["lowest_rib_mm"] = float(rib_z.min()) if len(rib_z) else None
        counts["ribs"] = rib_low - 3   # T12 = bounds[rib_low]; L1, L2, L3 below it
        text["ribs"] = (f"T12 (lowest rib-bearing vertebra) between {bounds[rib_low][0]:.1f} and "
                        f"{bounds[rib_low][1]:.1f} mm")
    evidence["counts"] = text

    confidence = 0.0
    if "sacrum" in counts and "ribs" in counts:
        if counts["sacrum"] == counts["ribs"]:
            chosen, confidence = counts["sacrum"], 0.9
        else:
            chosen, confidence = counts["sacrum"], 0.4
            flags.append("counts_disagree")
            evidence["candidates"] = {
                key: (float(sum(bounds[i]) / 2) if 0 <= i < len(bounds) else None) for key, i in counts.items()}
    elif "sacrum" in counts:
        chosen, confidence = counts["sacrum"], 0.7
        flags.append("sacrum_count_only")
    elif "ribs" in counts:
        chosen, confidence = counts["ribs"], 0.35   # the rib count alone is the weaker evidence
        flags.append("rib_count_only")
    else:
        return _not_found(f"L3 not found: {len(bounds)} vertebrae were found but cannot be named, since neither "
                          "the sacrum nor the lowest rib-bearing vertebra was recognised (a series that ends "
                          "above the sacrum, or a chest scan)", [], evidence, ["unnamed"])

    levels: list[Level] = []
    names_index = LEVEL_NAMES.index("L3")
    for i, (a, b) in enumerate(bounds):
        j = names_index - (i - chosen)
        if not 0 <= j < len(LEVEL_NAMES):
            continue
        # compared to the micrometre, as DICOM's decimal positions round: a disc found at a slice's own
        # location must bound the same slices after a round trip
        zr, ar, br = np.round(z, 3), round(float(a), 3), round(float(b), 3)
        idx = np.flatnonzero((zr >= ar) & (zr <= br))
        if not len(idx):
            continue
        zc = (a + b) / 2
        levels.append(Level(LEVEL_NAMES[j], int(idx[0]), int(idx[-1]), _nearest(z, zc), float(zc)))
    if "sacrum" in counts and not any(lv.name == "S1" for lv in levels):   # S1 below the chain's lowest disc
        a = disc_z[counts["sacrum"] - 2]
        zr, ar = np.round(z, 3), round(float(a), 3)
        idx = np.flatnonzero((zr < ar) & (zr >= ar - 30))
        if len(idx):
            levels.insert(0, Level("S1", int(idx[0]), int(idx[-1]), int(idx[len(idx) // 2]),
                                   float(z[idx[len(idx) // 2]])))

    if not 0 <= chosen < len(bounds):
        named = [lv.name for lv in levels]
        where = "above" if chosen < 0 else "below"
        span = f" (vertebrae seen: {named[0]}..{named[-1]})" if named else ""
        return _not_found(f"L3 is not in the scan: the series ends {where} L3{span}", levels, evidence,
                          flags + ["l3_not_in_scan"])
    a, b = bounds[chosen]
    zmid = (a + b) / 2
    middle = _nearest(z, zmid)
    if abs(z[middle] - zmid) > max(spacing[0], 1.0):
        below, above = z[z <= zmid], z[z > zmid]
        skip = (f"; the series skips from {below.max():.1f} to {above.min():.1f} mm"
                if len(below) and len(above) else "")
        return _not_found(f"L3 lies in a gap between slices: L3 was found between {a:.1f} and {b:.1f} mm, but no "
                          f"slice lies within {max(spacing[0], 1.0):g} mm of its middle ({zmid:.1f} mm){skip}",
                          levels, evidence, flags + ["gap"])
    if spacing[0] >= thick_slice_mm:
        first, last = max(0, middle - 1), min(n - 1, middle + 1)
    else:
        idx = np.flatnonzero(np.abs(z - z[middle]) <= slab_mm + 1e-6)
        first, last = int(idx[0]), int(idx[-1])
    if "transitional_vertebra" in flags:
        confidence *= 0.6
    if chosen in (0, len(bounds) - 1):
        flags.append("l3_at_scan_end")
        confidence *= 0.8
    l3 = L3Choice(found=True, slices=[first, last], middle=middle, z_mm=float(z[middle]),
                  confidence=confidence, flags=flags)
    return LevelResult(levels=levels, l3=l3, evidence=evidence)
