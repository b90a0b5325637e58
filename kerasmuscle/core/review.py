"""Review flags from anatomy: checks a predicted label map must pass to be trusted without a look.

They need no reference labels, so they run on every prediction of every scan: each muscle group present
on both sides, the left and right areas of a group alike, no muscle on bone, the psoas beside the
vertebral body and not on it, quadratus lumborum lateral to (and in front of) the erector spinae, and
areas within broad population ranges (the SMI when the height is known), and, when the level finder chose
the slices, a level found with low confidence or with counts that disagree. A case that breaks one is
marked "needs review", with every reason.

The bounds are data (:data:`LIMITS`), deliberately broad: a flag means "look at the overlay", not
"wrong". They were set from anatomy and the sarcopenia literature's ranges (SMI of adults at L3 lies
between about 25 and 80 cm²/m²; cut-offs such as Prado 2008's 52.4 / 38.5 sit inside), not fitted to any
scan. Only numpy is used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kerasmuscle.core.measure import BODY_HU
from kerasmuscle.labels import MUSCLE_LABELS
from kerasmuscle.labels import label as label_for

if TYPE_CHECKING:
    from kerasmuscle.io.scan import Scan


@dataclass(frozen=True)
class ReviewLimits:
    """The bounds of :func:`review_case` (see the module text for where they come from).

    Args:
        min_side_cm2: a group counts as present on a side from this area (cm² per slice).
        max_side_ratio: largest allowed ratio of the larger to the smaller side's area, per group.
        ratio_min_cm2: the side ratio is only judged when the larger side has at least this area.
        bone_hu: attenuation above which a pixel is bone.
        max_on_bone: largest share of a group's pixels (before the HU post-processing) on bone.
        smi_range: plausible SMI (cm²/m²) when the height is known.
        sma_range: plausible SMA (cm²) when it is not.
        truncated_border: share of border pixels inside the body above which the body counts as cut by
            the field of view (a missing group is then said to be possibly outside it).
        quadratus_lateral_mm: how much further from the midline than the erector spinae's the quadratus
            lumborum's centre must lie (on synthetic L3 anatomy the gap is 10-20 mm).
        min_level_confidence: a level found automatically with a lower confidence needs review.
    """

    min_side_cm2: float = 0.5
    max_side_ratio: float = 1.8
    ratio_min_cm2: float = 2.0
    bone_hu: float = 150.0
    max_on_bone: float = 0.05
    smi_range: tuple[float, float] = (20.0, 90.0)
    sma_range: tuple[float, float] = (50.0, 350.0)
    truncated_border: float = 0.02
    quadratus_lateral_mm: float = 5.0
    min_level_confidence: float = 0.6


LIMITS = ReviewLimits()

#: The groups checked for side ratio (the paired muscles whose sides are most alike).
RATIO_GROUPS = ("psoas", "quadratus", "erector_spinae", "abdominal_wall")


@dataclass(frozen=True)
class ReviewFlag:
    """One broken check: a short ``code``, the group it concerns (or None) and a sentence for people."""

    code: str
    group: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "group": self.group, "message": self.message}


@dataclass(frozen=True)
class Review:
    """The flags of one case; it needs review when there is any."""

    flags: tuple[ReviewFlag, ...] = ()

    @property
    def needs_review(self) -> bool:
        return bool(self.flags)

    @property
    def reasons(self) -> str:
        """The messages joined with ``"; "`` (empty when nothing needs review)."""
        return "; ".join(f.message for f in self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {"needs_review": self.needs_review, "flags": [f.to_dict() for f in self.flags]}


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _truncated(hu: np.ndarray, fraction: float) -> bool:
    """Whether the body touches the image border on the measured slices (body: HU above ``BODY_HU``)."""
    border = np.concatenate([hu[:, 0, :], hu[:, -1, :], hu[:, :, 0], hu[:, :, -1]], axis=1)
    return bool(np.mean(border > BODY_HU) > fraction)


def _centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """(row, column) centre of a 2-D mask, None when empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return float(rows.mean()), float(cols.mean())


def review_case(scan: Scan, labels: Any, slices: Iterable[int], case_row: Mapping[str, Any], *,
                raw_labels: np.ndarray | None = None, midlines: Sequence[float] | None = None,
                level: Any = None, limits: ReviewLimits = LIMITS) -> Review:
    """Check a measured case against anatomy.

    Args:
        scan: the CT (HU, spacing and orientation are used).
        labels: the label map ``[slices, rows, cols]`` on the scan's grid (as measured).
        slices: the measured slice indices.
        case_row: :func:`kerasmuscle.core.measure.summarise_case`'s row (areas per group and side, SMA,
            SMI).
        raw_labels: the network's labels of the measured slices before the HU post-processing
            (``[len(slices), rows, cols]``), for the muscle-on-bone check; ``labels`` when None.
        midlines: the midline column of each measured slice (the slice rows' ``midline_col``); the
            image centre when None.
        level: the level finder's :class:`~kerasmuscle.core.level.LevelResult` when it chose the slices:
            a low confidence, or counts from the sacrum and from the ribs that disagree, need review.
        limits: the bounds.

    Returns:
        The :class:`Review`.
    """
    array = np.asarray(getattr(labels, "array", labels))
    chosen = [int(z) for z in slices]
    hu = scan.hu[chosen]
    lab = array[chosen]
    raw = lab if raw_labels is None else np.asarray(raw_labels)
    flags: list[ReviewFlag] = []
    cut = _truncated(hu, limits.truncated_border)
    names = {m.key: m.short for m in MUSCLE_LABELS}

    # 1. every group on both sides
    for m in MUSCLE_LABELS:
        sides = {s: _num(case_row.get(f"{m.key}_{s}_area_cm2")) for s in ("left", "right")}
        missing = [s for s, a in sides.items() if not a >= limits.min_side_cm2]
        if missing:
            where = "either side" if len(missing) == 2 else f"the {missing[0]} side"
            hint = " (the field of view cuts the body, so it may lie outside)" if cut else ""
            flags.append(ReviewFlag("missing", m.key, f"{names[m.key]} not found on {where}{hint}"))

    # 2. left and right alike
    for key in RATIO_GROUPS:
        left, right = _num(case_row.get(f"{key}_left_area_cm2")), _num(case_row.get(f"{key}_right_area_cm2"))
        big, small = max(left, right), min(left, right)
        if big >= limits.ratio_min_cm2 and small >= limits.min_side_cm2 and big / small > limits.max_side_ratio:
            larger = "left" if left > right else "right"
            flags.append(ReviewFlag("side_ratio", key, f"{names[key]}: {larger} side {big / small:.1f}x the other "
                                    f"(bound {limits.max_side_ratio:g}x)"))

    # 3. no muscle on bone, psoas not on the vertebral body
    bone = hu > limits.bone_hu
    for m in MUSCLE_LABELS:
        mask = raw == m.id
        n = int(mask.sum())
        if n and (share := float((mask & bone).sum()) / n) > limits.max_on_bone:
            flags.append(ReviewFlag("on_bone", m.key, f"{names[m.key]}: {share:.0%} of its pixels on bone "
                                    f"(> {limits.bone_hu:g} HU)"))
    mid = np.asarray(midlines if midlines is not None else [(lab.shape[2] - 1) / 2.0] * lab.shape[0], float)
    flags += _psoas_on_body(lab, bone, mid)

    # 4. quadratus lumborum lateral to and in front of the erector spinae, on each side
    flags += _quadratus_place(scan, lab, mid, limits)

    # 5. areas within population ranges
    smi, sma = _num(case_row.get("smi_cm2_m2")), _num(case_row.get("sma_cm2"))
    if math.isfinite(smi):
        lo, hi = limits.smi_range
        if not lo <= smi <= hi:
            flags.append(ReviewFlag("smi_range", None, f"SMI {smi:.1f} cm²/m² outside the plausible {lo:g}..{hi:g}"))
    elif math.isfinite(sma) and not cut:
        lo, hi = limits.sma_range
        if not lo <= sma <= hi:
            flags.append(ReviewFlag("sma_range", None, f"SMA {sma:.1f} cm² outside the plausible {lo:g}..{hi:g} "
                                    "(no height known)"))

    # 6. the level, when it was found automatically
    if level is not None:
        flags += level_flags(level, limits)
    return Review(tuple(flags))


def level_flags(level: Any, limits: ReviewLimits = LIMITS) -> list[ReviewFlag]:
    """The review flags of an automatic L3 choice: counts that disagree (transitional anatomy: a 13th or
    11th rib, a sacralised L5 or lumbarised S1), and a confidence below ``limits.min_level_confidence``."""
    l3 = level.l3
    if not l3.found or "user_choice" in l3.flags:
        return []
    out = []
    if "counts_disagree" in l3.flags:
        cands = level.evidence.get("candidates") or {}
        where = ", ".join(f"{k} count {v:.0f} mm" for k, v in cands.items() if v is not None)
        out.append(ReviewFlag("level_counts", None, "level: counting from the sacrum and from the ribs disagree"
                              + (f" (mid-L3 at {where})" if where else "") + "; check the vertebra on the level picture"))
    if l3.confidence is not None and l3.confidence < limits.min_level_confidence:
        why = f" ({', '.join(f for f in l3.flags if f != 'counts_disagree')})" if len(l3.flags) else ""
        out.append(ReviewFlag("level_confidence", None, f"level: L3 found with confidence {l3.confidence:.2f}{why}, "
                              f"below {limits.min_level_confidence:g}"))
    return out


def _psoas_on_body(lab: np.ndarray, bone: np.ndarray, mid: np.ndarray) -> list[ReviewFlag]:
    """Psoas inside the vertebral body: its centre on a pixel enclosed by bone in both directions.

    The vertebral body's interior (cancellous bone may be below the bone threshold in old spines) is
    approximated per slice as the pixels with bone both left and right and both above and below within
    the same row and column span of the bone around the midline; a psoas whose centre falls there lies on
    the body, not beside it.
    """
    psoas = label_for("psoas").id
    for z in range(lab.shape[0]):
        for side_mask in _sides(lab[z] == psoas, mid[z]):
            c = _centroid(side_mask)
            if c is None:
                continue
            r, col = int(round(c[0])), int(round(c[1]))
            row_bone, col_bone = bone[z, r, :], bone[z, :, col]
            enclosed = (row_bone[:col].any() and row_bone[col + 1:].any()
                        and col_bone[:r].any() and col_bone[r + 1:].any() and bone[z, r, col])
            if enclosed:
                return [ReviewFlag("psoas_on_bone", "psoas", "Psoas: its centre lies on bone (the vertebral body), "
                                   "not beside it")]
    return []


def _sides(mask: np.ndarray, midline: float) -> list[np.ndarray]:
    """A 2-D mask split at the midline column into its two sides."""
    high = np.arange(mask.shape[1])[None, :] > midline
    return [mask & ~high, mask & high]


def _quadratus_place(scan: Scan, lab: np.ndarray, mid: np.ndarray, limits: ReviewLimits) -> list[ReviewFlag]:
    """Quadratus lumborum's centre must lie further from the midline than the erector spinae's, and in
    front of it, on each side where both are present (pooled over the measured slices)."""
    ql, es = label_for("quadratus").id, label_for("erector_spinae").id
    # Rows run posterior when the column direction cosine (orientation[3:6]) points to +y (LPS posterior).
    posterior_down = float(scan.orientation[4]) >= 0.0
    cols = np.arange(lab.shape[2])[None, :]
    margin = limits.quadratus_lateral_mm / float(scan.spacing[2])
    problems: list[str] = []
    for sign in (-1, 1):
        pts: dict[int, list[tuple[float, float, int]]] = {ql: [], es: []}
        for z in range(lab.shape[0]):
            side = (cols - mid[z]) * sign > 0
            for lid in (ql, es):
                m = (lab[z] == lid) & side
                c = _centroid(m)
                if c is not None:
                    pts[lid].append((abs(c[1] - mid[z]), c[0], int(m.sum())))
        if not pts[ql] or not pts[es]:
            continue

        def mean(lid: int, k: int) -> float:
            w = np.array([p[2] for p in pts[lid]], float)
            return float(np.average([p[k] for p in pts[lid]], weights=w))

        lateral = mean(ql, 0) > mean(es, 0) + margin
        anterior = mean(ql, 1) < mean(es, 1) if posterior_down else mean(ql, 1) > mean(es, 1)
        if not lateral:
            problems.append("not lateral to")
        elif not anterior:
            problems.append("behind")
    if not problems:
        return []
    what = " and ".join(sorted(set(problems)))
    return [ReviewFlag("quadratus_place", "quadratus", f"Quadratus: its centre lies {what} the erector spinae's "
                       f"(expected at least {limits.quadratus_lateral_mm:g} mm more lateral, and in front)")]


__all__ = ["LIMITS", "RATIO_GROUPS", "Review", "ReviewFlag", "ReviewLimits", "level_flags", "review_case"]
