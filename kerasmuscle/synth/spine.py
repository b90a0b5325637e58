"""Synthetic 3-D CT of the lower spine, for testing and benchmarking the level finder.

:func:`make_spine` draws a whole axial series from about T9/T10 down to the femoral heads: vertebral
bodies (a cortical shell, cancellous bone of 40-300 HU that varies by case, dense endplates),
intervertebral discs (5-12 mm, taller in the lumbar spine), pedicles, laminae, spinous and transverse
processes and the spinal canal; ribs on T9-T12 whose heads lie beside the upper vertebral body,
1.5-3 mm from it (the costovertebral joint), with shafts curving laterally, forwards and downwards; the
sacrum, its alae joined to the iliac bones across a thin sacroiliac joint, the iliac wings rising to
about L5 and descending to the acetabula; the femoral heads; a body outline with subcutaneous fat,
abdominal wall, psoas, erector spinae and quadratus lumborum muscles, liver, spleen, kidneys (without
contrast, enhancing, or with contrast excreted into the renal pelvis), aorta, vena cava, bowel with gas,
the bladder and a patient table; then partial-volume slices (each slice averages sub-slices at most
1.25 mm apart over its thickness) and Gaussian noise.

Variants (:data:`VARIANTS`): 11 rib pairs (no rib on T12), 13 rib pairs (a rib on L1), 4 or 6 lumbar
vertebrae, L5 sacralised on both sides or one (its transverse process fused with the sacral ala and the
ilium), and a lumbarised S1 (a free S1 with a full disc below it; the ilia join S2). Coverage
(:data:`COVERAGES`): the full series or one that starts or ends part way (ending above L3, starting above
the sacrum, no thorax, pelvis only, mid-lumbar only). Slice spacing 0.5-5 mm, field of view whole abdomen
to narrow spine-centred, noise, and a tilt and curvature of the spine in the sagittal plane.

Ground truth names every slice (the vertebra, disc or sacral segment on the spine's axis) and gives
every vertebra's z range in mm, in the scan's own slice locations. Vertebrae are named by their number
from the skull (the 20th vertebra below C7 is L1 whatever its ribs), so "L3" is the third vertebra
below T12 in every variant; ``counts_disagree`` says whether counting up from the sacrum and down from
the lowest rib-bearing vertebra must give different names.

Deterministic: case ``seed`` is drawn from the random stream ``[seed, 12]`` alone. numpy only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.config import Config

_STREAM_SPINE = 12

#: Anatomical variants: ``normal``; rib counts ``ribs11`` / ``ribs13``; ``lumbar4`` / ``lumbar6``;
#: ``sacralised_l5`` (both sides), ``sacralised_l5_left`` / ``sacralised_l5_right``; ``lumbarised_s1``.
VARIANTS = ("normal", "ribs11", "ribs13", "lumbar4", "lumbar6", "sacralised_l5", "sacralised_l5_left",
            "sacralised_l5_right", "lumbarised_s1")
#: Which part of the column a series covers.
COVERAGES = ("full", "ends_above_l3", "starts_above_sacrum", "no_thorax", "pelvis_only", "mid_lumbar")

_SPINE_HU = 3071.0
_SUB_MM = 1.25  # sub-slice step for partial volume


@dataclass(frozen=True)
class SpineConfig(Config):
    """How synthetic spine series vary.

    Args:
        image_size: rows and columns (256 for the bench; 512 for realism).
        fov_mm: whole-abdomen field of view range (pixel spacing is ``fov / image_size``).
        narrow_fov_mm: field of view range of spine-centred series.
        narrow_fraction: share of spine-centred series.
        slice_spacing_mm: slice spacings to draw from (slice thickness equals the spacing).
        noise_hu: range of the noise standard deviation.
        tilt_deg: range of the sagittal tilt of the spine.
        cancellous_hu: range of the cancellous bone density (varies by case, ±15 HU by vertebra).
        variant: one of :data:`VARIANTS`, or ``"random"`` (a variant with ``variant_fraction``).
        variant_fraction: with ``variant="random"``, the chance of a variant other than ``normal``.
        coverage: one of :data:`COVERAGES`, or ``"random"`` (partial with ``partial_fraction``).
        partial_fraction: with ``coverage="random"``, the chance of a partial series.
    """

    image_size: int = 256
    fov_mm: tuple[float, float] = (300.0, 480.0)
    narrow_fov_mm: tuple[float, float] = (150.0, 240.0)
    narrow_fraction: float = 0.3
    slice_spacing_mm: tuple[float, ...] = (0.5, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
    noise_hu: tuple[float, float] = (4.0, 35.0)
    tilt_deg: tuple[float, float] = (-6.0, 6.0)
    cancellous_hu: tuple[float, float] = (40.0, 300.0)
    variant: str = "random"
    variant_fraction: float = 0.3
    coverage: str = "random"
    partial_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.image_size < 64 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and at least 64, got {self.image_size}")
        if self.variant not in VARIANTS + ("random",):
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)} or random, got {self.variant!r}")
        if self.coverage not in COVERAGES + ("random",):
            raise ValueError(f"coverage must be one of {', '.join(COVERAGES)} or random, got {self.coverage!r}")
        if not self.slice_spacing_mm or min(self.slice_spacing_mm) <= 0:
            raise ValueError(f"slice_spacing_mm must hold positive spacings, got {self.slice_spacing_mm}")


# --------------------------------------------------------------------------------------------------
# Anatomy plan


@dataclass
class _Segment:
    name: str
    kind: str          # "vertebra", "disc", "sacrum"
    bottom: float      # z (mm, anatomical frame: 0 at the top of the first fused sacral segment)
    top: float
    a: float = 0.0     # lateral semi-axis of the body (mm)
    b: float = 0.0     # antero-posterior semi-axis
    bone: float = 0.0  # cancellous HU


_HEIGHT = {"T": 21.0, "L": 26.5}
_WIDTH = {"T9": 16.0, "T10": 17.0, "T11": 18.0, "T12": 19.5, "L1": 20.5, "L2": 21.5, "L3": 22.5, "L4": 23.0,
          "L5": 24.0, "L6": 24.0, "S1": 24.0}
_TP_REACH = {"L1": 34.0, "L2": 41.0, "L3": 47.0, "L4": 45.0, "L5": 42.0, "L6": 42.0, "S1": 40.0}


def _plan(rng: np.random.Generator, variant: str, cancellous: float) -> dict[str, Any]:
    """Segments (caudal first), ribs, sides fused with the pelvis: the case's anatomy in mm."""
    n_lumbar = {"lumbar4": 4, "lumbar6": 6}.get(variant, 5)
    mobile = ["T9", "T10", "T11", "T12"] + [f"L{i}" for i in range(1, n_lumbar + 1)]
    if variant == "lumbarised_s1":
        mobile.append("S1")
    scale = rng.uniform(0.88, 1.12)
    wscale = rng.uniform(0.9, 1.1)
    segs: list[_Segment] = []
    # the fused sacrum, top at z = 0
    first = 2 if variant == "lumbarised_s1" else 1
    z = 0.0
    sac = []
    for i, h in zip(range(first, 6), (28.0, 22.0, 18.0, 15.0, 12.0)):
        h *= scale
        w = (24.0 - 3.0 * (i - first)) * wscale
        sac.append(_Segment(f"S{i}", "sacrum", z - h, z, w, 16.0 - 1.5 * (i - first), cancellous + rng.uniform(-15, 15)))
        z -= h
    segs.extend(sac[::-1])
    z = 0.0
    below = f"S{first}"
    for name in reversed(mobile):
        lumbar = name.startswith("L") or name == "S1"
        if below.startswith("S") and name != "S1":
            disc_h = rng.uniform(9.0, 12.0)
            if variant == "sacralised_l5":
                disc_h = rng.uniform(4.0, 7.0)   # a rudimentary disc
        elif lumbar:
            disc_h = {"L1": 7.5, "L2": 8.5, "L3": 9.5, "L4": 10.5, "L5": 11.0, "L6": 11.0, "S1": 8.0}[below] \
                if below in ("L1", "L2", "L3", "L4", "L5", "L6", "S1") else 8.0
            disc_h += rng.uniform(-1.5, 1.5)
        else:
            disc_h = rng.uniform(5.0, 7.0)
        disc_h *= scale
        segs.append(_Segment(f"{name}/{below}", "disc", z, z + disc_h))
        z += disc_h
        h = (_HEIGHT["L" if lumbar else "T"] + (0.6 if lumbar else 0.8) * (int(name[1:]) - 3 if lumbar else int(name[1:]) - 10)
             + rng.uniform(-1.0, 1.0)) * scale
        a = _WIDTH[name] * wscale
        b = (15.5 if lumbar else 13.5) * wscale * rng.uniform(0.95, 1.05)
        segs.append(_Segment(name, "vertebra", z, z + h, a, b, cancellous + rng.uniform(-15, 15)))
        z += h
        below = name
    ribs = {"T9", "T10", "T11", "T12"}
    if variant == "ribs11":
        ribs.discard("T12")
    if variant == "ribs13":
        ribs.add("L1")
    last_lumbar = f"L{n_lumbar}"
    fused = {"left": [], "right": []}   # mobile vertebrae fused with the pelvis on each side
    if variant in ("sacralised_l5", "sacralised_l5_left"):
        fused["left"].append(last_lumbar)
    if variant in ("sacralised_l5", "sacralised_l5_right"):
        fused["right"].append(last_lumbar)
    return {"segments": segs, "ribs": ribs, "fused": fused, "n_lumbar": n_lumbar, "scale": scale}


# --------------------------------------------------------------------------------------------------
# Drawing helpers (2-D, in mm on a pixel grid)


class _Slice:
    """One slice being drawn: HU image plus its pixel grid in mm (x towards the patient's left = columns,
    y towards posterior = rows), relative to the reconstruction centre."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, fill: float):
        self.xs, self.ys = xs, ys
        self.px = float(xs[1] - xs[0])
        self.img = np.full((len(ys), len(xs)), fill, np.float32)

    def _box(self, cx: float, cy: float, rx: float, ry: float):
        c0 = int(np.searchsorted(self.xs, cx - rx))
        c1 = int(np.searchsorted(self.xs, cx + rx))
        r0 = int(np.searchsorted(self.ys, cy - ry))
        r1 = int(np.searchsorted(self.ys, cy + ry))
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, value: float | np.ndarray,
                where: np.ndarray | None = None) -> np.ndarray | None:
        """Paint an ellipse (``value`` may be an image-sized array); returns its mask within the box."""
        if ax <= 0 or ay <= 0:
            return None
        box = self._box(cx, cy, ax, ay)
        if box is None:
            return None
        dx = (self.xs[box[1]] - cx) / ax
        dy = (self.ys[box[0]] - cy) / ay
        m = dy[:, None] ** 2 + dx[None, :] ** 2 <= 1.0
        if where is not None:
            m &= where[box]
        sub = self.img[box]
        sub[m] = value[box][m] if isinstance(value, np.ndarray) else value
        return m

    def rect(self, x0: float, x1: float, y0: float, y1: float, value: float) -> None:
        box = self._box((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2)
        if box is not None:
            self.img[box] = value

    def bar(self, p: tuple[float, float], q: tuple[float, float], radius: float, value: float) -> None:
        """Paint the points within ``radius`` of segment ``p``-``q``."""
        cx, cy = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
        half = math.hypot(q[0] - p[0], q[1] - p[1]) / 2 + radius
        box = self._box(cx, cy, half, half)
        if box is None:
            return
        X = self.xs[box[1]][None, :]
        Y = self.ys[box[0]][:, None]
        vx, vy = q[0] - p[0], q[1] - p[1]
        ll = vx * vx + vy * vy or 1e-9
        t = np.clip(((X - p[0]) * vx + (Y - p[1]) * vy) / ll, 0, 1)
        d2 = (X - p[0] - t * vx) ** 2 + (Y - p[1] - t * vy) ** 2
        self.img[box][d2 <= radius * radius] = value

    def polyline(self, pts: np.ndarray, radius: float, value: float) -> None:
        for k in range(len(pts) - 1):
            self.bar(tuple(pts[k]), tuple(pts[k + 1]), radius, value)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], size: tuple[int, int]) -> list[np.ndarray]:
    """``shape[0]`` smooth 2-D random fields (unit SD) of ``size``, from coarse grids interpolated bilinearly."""
    out = []
    for _ in range(shape[0]):
        g = rng.standard_normal(shape[1:])
        ri = np.linspace(0, shape[1] - 1, size[0])
        ci = np.linspace(0, shape[2] - 1, size[1])
        tmp = np.array([np.interp(ci, np.arange(shape[2]), row) for row in g])
        out.append(np.array([np.interp(ri, np.arange(shape[1]), col) for col in tmp.T]).T.astype(np.float32))
    return out


# --------------------------------------------------------------------------------------------------
# The case


def _draw_case(rng: np.random.Generator, config: SpineConfig) -> dict[str, Any]:
    """Every random choice of one case."""
    variant = config.variant
    if variant == "random":
        variant = "normal" if rng.random() >= config.variant_fraction else str(rng.choice(VARIANTS[1:]))
    coverage = config.coverage
    if coverage == "random":
        coverage = "full" if rng.random() >= config.partial_fraction else str(rng.choice(COVERAGES[1:]))
    c = {"variant": variant, "coverage": coverage}
    c["cancellous_hu"] = float(rng.uniform(*config.cancellous_hu))
    c["cortex_hu"] = float(rng.uniform(450, 900))
    c["spacing_mm"] = float(rng.choice(np.asarray(config.slice_spacing_mm)))
    c["narrow"] = bool(rng.random() < config.narrow_fraction)
    c["fov_mm"] = float(rng.uniform(*(config.narrow_fov_mm if c["narrow"] else config.fov_mm)))
    c["noise_hu"] = float(rng.uniform(*config.noise_hu))
    c["tilt_deg"] = float(rng.uniform(*config.tilt_deg))
    c["lordosis"] = float(rng.uniform(0.0, 1.2e-3))    # curvature (1/mm) of the lumbar spine, apex forwards
    c["lateral_deg"] = float(rng.uniform(-2.0, 2.0))
    c["sacral_slope"] = float(rng.uniform(0.15, 0.35))
    c["body_ax"] = float(rng.uniform(125, 185))
    c["body_ay"] = float(rng.uniform(95, 140))
    c["back_mm"] = float(rng.uniform(50, 85))           # skin of the back to the vertebral body's centre
    c["fat_mm"] = float(rng.uniform(6, 45))
    c["contrast"] = str(rng.choice(["native", "venous", "excretory"], p=[0.35, 0.45, 0.2]))
    c["rib_gap_mm"] = float(rng.uniform(1.5, 3.0))
    c["rib_slope"] = float(rng.uniform(0.25, 0.55))
    c["rib12_mm"] = float(rng.uniform(70, 150))
    c["rib13_mm"] = float(rng.uniform(30, 70))
    c["sij_gap_mm"] = float(rng.uniform(1.5, 3.0))
    c["ala_mm"] = float(rng.uniform(44, 54))
    c["iliac_crest_mm"] = float(rng.uniform(15, 35))    # crest above the top of the fused sacrum
    c["femur_x_mm"] = float(rng.uniform(82, 96))
    c["femur_r_mm"] = float(rng.uniform(21, 26))
    c["table_offset_mm"] = float(rng.uniform(-700, -300))
    c["centre_jitter"] = [float(v) for v in rng.uniform(-15, 15, 2)]
    c["bowel"] = [[float(v) for v in (rng.uniform(-110, 110), rng.uniform(-110, -30), rng.uniform(-250, 250),
                                      rng.uniform(12, 30), rng.uniform(20, 50), rng.random())] for _ in range(14)]
    c["disc_hu"] = float(rng.uniform(70, 105))
    return c


def _centre(z: np.ndarray | float, c: dict[str, Any], z_l3: float) -> tuple[Any, Any, Any]:
    """Spine axis (x, y) at anatomical ``z`` and its sagittal slope dy/dz."""
    t = math.tan(math.radians(c["tilt_deg"]))
    s = math.tan(math.radians(c["lateral_deg"]))
    dz = np.asarray(z, float) - z_l3
    y = t * dz + c["lordosis"] * dz ** 2 / 2
    slope = t + c["lordosis"] * dz
    below = np.asarray(z, float) < 0
    y = y + np.where(below, -np.asarray(z, float) * c["sacral_slope"], 0.0)
    slope = slope - np.where(below, c["sacral_slope"], 0.0)
    return s * dz, y, slope


def make_spine(seed: int, config: SpineConfig = SpineConfig()):
    """Make one synthetic spine series in memory.

    Args:
        seed: the case's seed; the same seed and config give the same series.
        config: how cases vary.

    Returns:
        ``(scan, truth)``: a :class:`~kerasmuscle.io.scan.Scan` (int-valued float32 HU, index 0 most caudal)
        and the ground truth dict (JSON-safe): ``variant``, ``coverage``, ``levels`` (the name on the spine's
        axis at every slice, ``""`` outside the column), ``vertebrae`` (name -> ``[z_lo, z_hi]`` mm),
        ``discs``, ``l3_in_scan``, ``l3_z_mm``, ``lumbar_count``, ``rib_pairs``, ``lowest_rib``,
        ``fused_with_pelvis``, ``counts_disagree`` (the sacrum and rib counts must disagree),
        ``transitional`` (a transitional lumbosacral vertebra), ``acquisition``.
    """
    from kerasmuscle.io.scan import Scan

    rng = np.random.default_rng([seed, _STREAM_SPINE])
    c = _draw_case(rng, config)
    plan = _plan(rng, c["variant"], c["cancellous_hu"])
    segs: list[_Segment] = plan["segments"]
    by_name = {s.name: s for s in segs}
    z_l3 = (by_name["L3"].bottom + by_name["L3"].top) / 2
    # top of the bone joining the column to the ilia on each side: the top of the sacral alae, or the
    # middle of a sacralised L5's transverse process
    ala_top = float(rng.uniform(0.0, 5.0))
    fused_top = {side: (by_name[v[0]].bottom + 0.6 * (by_name[v[0]].top - by_name[v[0]].bottom) if v else ala_top)
                 for side, v in plan["fused"].items()}
    z_femur = -c["femur_r_mm"] - rng.uniform(95, 115) * plan["scale"]

    # coverage, in the anatomical frame
    top_full = by_name["T9"].bottom + rng.uniform(0.2, 0.9) * (by_name["T9"].top - by_name["T9"].bottom)
    bottom_full = z_femur - c["femur_r_mm"] - rng.uniform(0, 15)
    lo, hi = bottom_full, top_full
    cov = c["coverage"]
    v = by_name
    if cov == "ends_above_l3":
        lo = rng.uniform(v["L3"].top + 2, v["L1"].top)
    elif cov == "starts_above_sacrum":
        lo = rng.uniform(v["L4"].bottom, v["L4"].top - 8)
    elif cov == "no_thorax":
        hi = rng.uniform(v["L1"].bottom, v["T12"].bottom - 3)
    elif cov == "pelvis_only":
        hi = rng.uniform(v["L4"].bottom, v["L3"].bottom - 2)
    elif cov == "mid_lumbar":
        lo = rng.uniform(v["L4"].bottom + 4, v["L3"].bottom - 4)
        hi = rng.uniform(v["L2"].bottom + 4, v["T12"].bottom - 4)
    dz = c["spacing_mm"]
    n = max(4, int((hi - lo) // dz) + 1)
    zs = lo + dz * np.arange(n)

    # in-plane grid: pixel spacing from the field of view, centred on the body or the spine
    size = config.image_size
    px = c["fov_mm"] / size
    body_cy = -(c["body_ay"] - c["back_mm"])        # body centre relative to the spine (y, mm)
    cx0, cy0 = c["centre_jitter"]
    if c["narrow"]:
        cy0 = cy0 / 3 + 10.0
        cx0 = cx0 / 3
    else:
        cy0 += body_cy
    xs = (np.arange(size) - (size - 1) / 2) * px + cx0
    ys = (np.arange(size) - (size - 1) / 2) * px + cy0
    fields = _smooth_noise(rng, (6, 10, 10), (size, size))

    renderer = _Renderer(c, plan, segs, xs, ys, z_l3, fused_top, z_femur, fields)
    hu = np.empty((n, size, size), np.float32)
    sub = max(1, int(math.ceil(dz / _SUB_MM - 1e-6)))
    offsets = (np.arange(sub) + 0.5) / sub * dz - dz / 2
    for k, zc in enumerate(zs):
        acc = np.zeros((size, size), np.float32)
        for o in offsets:
            acc += renderer.render(zc + o)
        hu[k] = acc / sub
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * c["noise_hu"]
    hu = np.clip(np.rint(hu), -1024, _SPINE_HU).astype(np.float32)

    # geometry and truth in patient coordinates (LPS, z = slice location)
    offset = c["table_offset_mm"]
    positions = np.stack([np.full(n, xs[0]), np.full(n, ys[0]), zs + offset], 1)
    scan = Scan(hu=hu, spacing=(float(dz), float(px), float(px)), positions=positions, source=f"synthetic spine {seed}",
                format="synthetic")
    truth = _truth(c, plan, segs, zs, offset, z_femur)
    truth["seed"] = seed
    return scan, truth


def _truth(c: dict[str, Any], plan: dict[str, Any], segs: list[_Segment], zs: np.ndarray, offset: float,
           z_femur: float) -> dict[str, Any]:
    names = []
    for z in zs:
        name = ""
        for s in segs:
            if s.bottom <= z < s.top:
                name = s.name
        names.append(name)
    vertebrae = {s.name: [round(s.bottom + offset, 2), round(s.top + offset, 2)] for s in segs if s.kind != "disc"}
    discs = {s.name: [round(s.bottom + offset, 2), round(s.top + offset, 2)] for s in segs if s.kind == "disc"}
    l3 = vertebrae["L3"]
    zlo, zhi = zs[0] + offset, zs[-1] + offset
    variant = c["variant"]
    ribs = plan["ribs"]
    order = ["T9", "T10", "T11", "T12", "L1"]
    lowest = [r for r in order if r in ribs][-1]
    return {
        "variant": variant,
        "coverage": c["coverage"],
        "levels": names,
        "vertebrae": vertebrae,
        "discs": discs,
        "l3_z_mm": l3,
        "l3_in_scan": bool(zlo <= (l3[0] + l3[1]) / 2 <= zhi),
        "lumbar_count": plan["n_lumbar"],
        "rib_pairs": 12 - (variant == "ribs11") + (variant == "ribs13"),
        "lowest_rib": lowest,
        "fused_with_pelvis": {k: list(v) for k, v in plan["fused"].items()},
        "counts_disagree": variant in ("ribs11", "ribs13", "lumbar4", "lumbar6", "sacralised_l5", "lumbarised_s1"),
        "transitional": variant.startswith(("sacralised", "lumbarised")),
        "femoral_heads_z_mm": round(z_femur + offset, 2),
        "z_range_mm": [round(float(zlo), 2), round(float(zhi), 2)],
        "acquisition": {k: c[k] for k in ("spacing_mm", "fov_mm", "narrow", "noise_hu", "tilt_deg", "lordosis",
                                          "contrast", "cancellous_hu")},
    }


class _Renderer:
    """Draws one sub-slice at anatomical z."""

    def __init__(self, c, plan, segs, xs, ys, z_l3, fused_top, z_femur, fields):
        self.c, self.plan, self.segs = c, plan, segs
        self.xs, self.ys = xs, ys
        self.z_l3, self.fused_top, self.z_femur = z_l3, fused_top, z_femur
        self.fields = fields
        self.bounds = np.array([s.bottom for s in segs] + [segs[-1].top])
        self.sacrum_bottom = segs[0].bottom
        self.mobile = [s for s in segs if s.kind == "vertebra"]
        self.ribs = self._rib_points()

    # ---- ribs: 3-D polylines of spheres
    def _rib_points(self) -> np.ndarray:
        c = self.c
        pts = []
        lengths = {"T9": 230.0, "T10": 220.0, "T11": 170.0, "T12": c["rib12_mm"], "L1": c["rib13_mm"]}
        for s in self.mobile:
            if s.name not in self.plan["ribs"]:
                continue
            h = s.top - s.bottom
            zh = s.top - (0.15 if s.name in ("T9", "T10") else 0.35) * h
            x0, y0, _ = _centre(zh, c, self.z_l3)
            yoff = 0.35 * s.b
            edge = s.a * math.sqrt(1 - 0.35 ** 2)
            rh = 5.0
            slope = c["rib_slope"] * (1.0 if s.name in ("T9", "T10") else 1.3)
            for side in (1, -1):
                x, y, z = x0 + side * (edge + c["rib_gap_mm"] + rh), y0 + yoff, zh
                heading = math.radians(40)                      # behind the lateral direction
                step = 2.0
                length = lengths[s.name] * self.plan["scale"]
                travelled = 0.0
                r = rh
                while travelled < length:
                    pts.append((x, y, z, r))
                    x += side * step * math.cos(heading)
                    y += step * math.sin(heading)
                    z -= step * slope * (0.4 if travelled < 20 else 1.0)
                    heading -= step / 95.0 if travelled > 20 else step / 200.0
                    travelled += step
                    r = max(3.5, r - 0.2)
        return np.array(pts, float).reshape(-1, 4)

    def _seg_at(self, z: float) -> _Segment | None:
        i = int(np.searchsorted(self.bounds, z, side="right")) - 1
        return self.segs[i] if 0 <= i < len(self.segs) else None

    def render(self, z: float) -> np.ndarray:
        c = self.c
        cxs, cys, slope = _centre(z, c, self.z_l3)
        cxs, cys, slope = float(cxs), float(cys), float(slope)
        s = _Slice(self.xs, self.ys, -1000.0)
        f = self.fields
        # body outline: wider at the pelvis and hips
        pelvis = np.clip((-z - 10) / 120, 0, 1)
        chest = np.clip((z - self.z_l3 - 90) / 120, 0, 0.15)
        ax = c["body_ax"] * (1 + 0.12 * pelvis + chest)
        ay = c["body_ay"] * (1 - 0.1 * pelvis + chest)
        by = cys - (c["body_ay"] - c["back_mm"])
        # patient table
        table_y = by + c["body_ay"] + 8
        s.rect(-220, 220, table_y, table_y + 6, 150.0)
        s.ellipse(0, by, ax, ay, -105.0 + 10 * f[0])
        fat = c["fat_mm"]
        wall = s.ellipse(0, by, ax - fat, ay - fat * 0.8, 45.0 + 5 * f[1])   # abdominal wall muscle
        inner_ax, inner_ay = ax - fat - 12, ay - fat * 0.8 - 12
        visceral = np.where(f[2] > 0.3, -90.0 + 8 * f[3], 35.0 + 8 * f[3])
        s.ellipse(0, by - 5, inner_ax, inner_ay, visceral)
        del wall
        seg = self._seg_at(z)
        # organs
        venous = c["contrast"] != "native"
        if z > self.z_l3 + 20:
            s.ellipse(-70 + cxs, cys - 45, 75, 60 * min(1, (z - self.z_l3 - 20) / 60 + 0.3), 110.0 if venous else 58.0)
            s.ellipse(80 + cxs, cys - 5, 35, 45 * min(1, (z - self.z_l3 - 40) / 40 + 0.2), 120.0 if venous else 50.0) \
                if z > self.z_l3 + 40 else None
        for side, zk in ((1, self.z_l3 + 55), (-1, self.z_l3 + 45)):
            dzk = (z - zk) / 60.0
            if abs(dzk) < 1:
                q = math.sqrt(1 - dzk * dzk)
                kx, ky = cxs + side * 62, cys + 15
                s.ellipse(kx, ky, 24 * q, 30 * q, 180.0 if venous else 32.0)
                s.ellipse(kx - side * 6, ky, 12 * q, 16 * q, 90.0 if venous else 25.0)
                if c["contrast"] == "excretory" and q > 0.5:
                    s.ellipse(kx - side * 14, ky - 2, 7 * q, 6 * q, 800.0)
        seg_b = seg.b if seg is not None and seg.b > 0 else 15.0
        if z > self.z_l3 - 60:
            s.ellipse(cxs + 12, cys - seg_b - 14, 11, 11, 220.0 if venous else 42.0)      # aorta
        else:
            sep = min(60.0, (self.z_l3 - 60 - z) * 0.5)
            for side in (1, -1):
                s.ellipse(cxs + side * (10 + sep), cys - seg_b - 12 + sep * 0.3, 7, 7, 220.0 if venous else 42.0)
        s.ellipse(cxs - 20, cys - seg_b - 10, 12, 10, 140.0 if venous else 40.0)               # vena cava
        for bx, byy, bz, br, bh, gas in c["bowel"]:
            if abs(z - self.z_l3 - bz) < bh:
                q = math.sqrt(1 - ((z - self.z_l3 - bz) / bh) ** 2)
                val = -900.0 if gas < 0.45 else (10.0 if gas < 0.7 else 40.0)
                s.ellipse(bx, by + byy * ay / 140, br * q, br * q * 0.8, val)
        if z < -60:
            s.ellipse(0, by - ay * 0.55, 45, 35, 10.0)                                      # bladder
        # muscles around the spine
        if z > -40:
            grow = np.clip((self.z_l3 + 80 - z) / 140, 0.15, 1.0)
            for side in (1, -1):
                s.ellipse(cxs + side * (seg_b + 24), cys + 2, 9 + 13 * grow, 9 + 9 * grow, 50.0 + 3 * f[4])   # psoas
                s.ellipse(cxs + side * 38, cys + 48, 26, 22, 48.0 + 3 * f[5])                               # erector
                if -10 < z < self.z_l3 + 60:
                    s.ellipse(cxs + side * 68, cys + 28, 16, 9, 47.0)                                       # QL
        else:
            for side in (1, -1):
                s.ellipse(cxs + side * 60, cys - 5, 30, 18, 48.0)                                 # iliopsoas
                s.ellipse(cxs + side * 40, cys + 45, 30, 22, 45.0)                                # gluteal
        self._spine(s, z, cxs, cys, slope)
        self._pelvis(s, z, cxs, cys)
        self._draw_ribs(s, z)
        return s.img

    # ---- the vertebral column
    def _spine(self, s: _Slice, z: float, cx: float, cy: float, slope: float) -> None:
        c = self.c
        cortex = c["cortex_hu"]
        # rows of the body region, each with its own local z (the column is tilted by `slope`)
        r0 = int(np.searchsorted(s.ys, cy - 26))
        r1 = int(np.searchsorted(s.ys, cy + 26))
        c0 = int(np.searchsorted(s.xs, cx - 32))
        c1 = int(np.searchsorted(s.xs, cx + 32))
        if r0 < r1 and c0 < c1:
            Y = s.ys[r0:r1]
            X = s.xs[c0:c1]
            zz = z - (Y - cy) * slope / (1 + slope * slope) ** 0.5
            idx = np.searchsorted(self.bounds, zz, side="right") - 1
            sub = s.img[r0:r1, c0:c1]
            for i in np.unique(idx):
                if not 0 <= i < len(self.segs):
                    continue
                seg = self.segs[i]
                rows = idx == i
                if seg.kind == "disc":
                    below, above = self.segs[i - 1], self.segs[i + 1]
                    a, b = (below.a + above.a) / 2 + 1.0, (below.b + above.b) / 2 + 0.5
                    e = ((X[None] - cx) / a) ** 2 + ((Y[:, None] - cy) / b) ** 2 <= 1
                    m = e & rows[:, None]
                    sub[m] = c["disc_hu"]
                    continue
                a, b = seg.a, seg.b
                e2 = ((X[None] - cx) / a) ** 2 + ((Y[:, None] - cy) / b) ** 2
                # posterior concavity of the body
                conc = ((X[None] - cx) / (a * 0.45)) ** 2 + ((Y[:, None] - cy - b * 1.15) / (b * 0.4)) ** 2 <= 1
                inside = (e2 <= 1) & ~conc
                shell = 1.6 / min(a, b)
                near_end = np.minimum(zz - seg.bottom, seg.top - zz) < 0.8   # the thin endplates
                ring = e2 > (1 - shell) ** 2
                m = inside & rows[:, None]
                sub[m] = seg.bone
                sub[m & near_end[:, None]] = 0.6 * cortex + 0.4 * seg.bone
                sub[m & ring] = cortex
        seg = self._seg_at(z)
        # spinal canal: always
        canal_b = 8.0
        body_b = 15.0 if seg is None or seg.b <= 0 else seg.b
        cc = cy + body_b + 1.5 + canal_b
        if z > self.sacrum_bottom + 15:
            s.ellipse(cx, cc, 10.5, canal_b, 15.0 if z < self.z_l3 + 70 else 30.0)
        for v in self.mobile:
            self._posterior(s, z, v, cx, cy, cc, canal_b, cortex)
        if seg is not None and seg.kind == "sacrum" and z > self.sacrum_bottom:
            # the fused posterior wall of the sacral canal
            s.bar((cx - 18, cc + canal_b + 3), (cx + 18, cc + canal_b + 3), 4.0, cortex * 0.8)
            s.bar((cx, cc + canal_b + 3), (cx, cc + canal_b + 10), 3.0, cortex * 0.8)

    def _posterior(self, s: _Slice, z: float, v: _Segment, cx: float, cy: float, cc: float, canal_b: float,
                   cortex: float) -> None:
        h = v.top - v.bottom
        u = (z - v.bottom) / h            # 0 at the lower endplate, 1 at the upper
        if u < -0.7 or u > 1.1:
            return
        lumbar = v.name.startswith("L") or v.name == "S1"
        bone = 0.5 * (cortex + v.bone)
        if 0.4 <= u <= 1.0:   # pedicles
            for side in (1, -1):
                s.ellipse(cx + side * 13, cy + v.b + 5, 5.0, 7.0, bone)
        if -0.25 <= u <= 0.9:  # laminae
            for side in (1, -1):
                s.bar((cx + side * 14, cy + v.b + 8), (cx + side * 4, cc + canal_b + 3), 3.2, bone)
        lo, hi = (-0.35, 0.7) if lumbar else (-0.65, 0.5)
        if lo <= u <= hi:       # spinous process, sloping down in the thorax
            back = 28.0 if lumbar else 32.0
            shift = 0.0 if lumbar else (hi - u) * 6
            s.bar((cx, cc + canal_b + 2 + shift), (cx, cc + canal_b + back), 3.5, bone)
        if lumbar and 0.35 <= u <= 0.75:   # transverse processes
            reach = _TP_REACH.get(v.name, 40.0)
            for side in (1, -1):
                fused_side = v.name in self.plan["fused"]["left" if side > 0 else "right"]
                if fused_side:
                    continue   # drawn as an ala by _pelvis
                s.bar((cx + side * 14, cy + v.b + 7), (cx + side * reach, cy + v.b + 4), 4.5, bone)
        elif not lumbar and 0.45 <= u <= 1.0:
            for side in (1, -1):
                s.bar((cx + side * 14, cy + v.b + 7), (cx + side * 26, cy + v.b + 16), 4.5, bone)

    # ---- sacral alae, ilia, femoral heads
    def _pelvis(self, s: _Slice, z: float, cx: float, cy: float) -> None:
        c = self.c
        cortex = c["cortex_hu"]
        inner = c["cancellous_hu"] * 0.8 + 80
        ala = c["ala_mm"]
        crest = max(self.fused_top.values()) + c["iliac_crest_mm"]
        for key, side in (("left", 1), ("right", -1)):
            top = self.fused_top[key]
            ala_lo = top - 55.0
            if ala_lo <= z <= top:
                w = 1.0 - 0.35 * (top - z) / 55.0
                s.ellipse(cx + side * ala * 0.55, cy + 4, ala * 0.5 * w + 4, 15 * w + 3, cortex)
                s.ellipse(cx + side * ala * 0.55, cy + 4, ala * 0.5 * w + 2.5, 15 * w + 1.5, inner)
            if z > crest or z < self.z_femur - 10:
                continue
            # the ilium: medial end at the sacroiliac joint (beside the ala) or, above or below it, further out
            gap = c["sij_gap_mm"]
            if z > top:
                medial = ala + gap + 18 + (z - top) * 0.6
            elif z < ala_lo:
                medial = ala + gap + (ala_lo - z) * 0.9
            else:
                medial = ala + gap
            lateral = 120 + 15 * np.clip((z + 40) / 60, 0, 1) - 30 * np.clip((-z - 60) / 40, 0, 1)
            if medial + 8 > lateral:
                continue
            p0 = np.array([cx + side * medial, cy + 12])
            p1 = np.array([cx + side * lateral, cy - 35 - 15 * np.clip(-z / 80, 0, 1)])
            ctrl = np.array([cx + side * (medial + lateral) / 2, cy + 22])
            t = np.linspace(0, 1, 12)[:, None]
            pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * ctrl + t ** 2 * p1
            thick = 5.0 + 6 * np.clip((-z - 30) / 60, 0, 1)
            s.polyline(pts, thick, cortex)
            s.polyline(pts, thick - 1.8, inner)
        # femoral heads and acetabula
        fz = self.z_femur
        r = c["femur_r_mm"]
        for side in (1, -1):
            dz = z - fz
            if abs(dz) < r + 6:
                fx, fy = cx + side * c["femur_x_mm"], cy - 40
                if dz > -r:
                    q = math.sqrt(max(0.0, (r + 5) ** 2 - dz * dz))
                    s.ellipse(fx, fy, q, q, cortex)                                         # acetabular roof
                    s.ellipse(fx, fy, max(0.1, q - 3.5), max(0.1, q - 3.5), 40.0)           # joint space
                if abs(dz) < r:
                    q = math.sqrt(r * r - dz * dz)
                    s.ellipse(fx, fy, q, q, cortex)
                    s.ellipse(fx, fy, max(0.1, q - 2), max(0.1, q - 2), inner)

    def _draw_ribs(self, s: _Slice, z: float) -> None:
        p = self.ribs
        if not len(p):
            return
        d = np.abs(p[:, 2] - z)
        sel = np.flatnonzero(d < p[:, 3])
        cortex = self.c["cortex_hu"]
        inner = self.c["cancellous_hu"] * 0.7 + 100
        for k in sel:
            x, y, zp, r = p[k]
            q = math.sqrt(r * r - (zp - z) ** 2)
            s.ellipse(x, y, q, q, cortex)
            if q > 2.5:
                s.ellipse(x, y, q - 1.5, q - 1.5, inner)


# --------------------------------------------------------------------------------------------------
# Writing


def write_spine_series(folder: str | os.PathLike, seed: int, config: SpineConfig = SpineConfig(), *,
                       overwrite: bool = False) -> dict[str, Any]:
    """Write one synthetic spine series as DICOM into ``folder/dicom`` and its truth as ``folder/levels.json``.

    Args:
        folder: the case folder (created).
        seed: the case's seed.
        config: how cases vary.
        overwrite: replace an existing series.

    Returns:
        The truth dict (as written to ``levels.json``), with the slice locations as written.
    """
    from kerasmuscle import __version__
    from kerasmuscle.io.ctwrite import SeriesInfo, write_ct_series

    scan, truth = make_spine(seed, config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = SeriesInfo(patient_id=f"SPINE{seed:05d}", patient_name=f"Synthetic^Spine{seed:05d}",
                      study_description="SYNTHETIC CT SPINE", series_description=f"SYNTHETIC SPINE {truth['variant']}",
                      manufacturer="kerasmuscle synthetic", model="kerasmuscle.synth.spine",
                      comments=f"SYNTHETIC image made by kerasmuscle {__version__} (spine seed {seed}); not patient data")
    write_ct_series(folder / "dicom", scan.hu, pixel_spacing=(scan.spacing[1], scan.spacing[2]),
                    positions=scan.positions, slice_thickness=scan.spacing[0], info=info, overwrite=overwrite)
    truth = {**truth, "slice_locations_mm": [round(float(z), 3) for z in scan.slice_locations],
             "image": "dicom", "config": config.to_dict(), "synthetic": True}
    (folder / "levels.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return truth


def write_spine_cohort(out: str | os.PathLike, cases: int, seed: int = 0, config: SpineConfig = SpineConfig(), *,
                       overwrite: bool = False, progress=None) -> Path:
    """Write ``cases`` synthetic spine series (``out/case_0000/dicom`` + ``levels.json``) and ``out/levels.json``
    listing them.

    Args:
        out: the cohort folder.
        cases: number of series; case ``i`` uses seed ``seed * 100003 + i``.
        seed: the cohort's seed.
        config: how cases vary.
        overwrite: write into an existing non-empty folder.
        progress: called as ``progress(done, total)`` after each case.

    Returns:
        The path of the cohort's ``levels.json``.
    """
    from kerasmuscle.errors import KerasMuscleError

    out = Path(out)
    if cases < 1:
        raise KerasMuscleError(f"cases must be at least 1, got {cases}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise KerasMuscleError(f"{out}: folder exists and is not empty; choose another or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(cases - 1)))
    records = []
    for i in range(cases):
        case_seed = seed * 100003 + i
        name = f"case_{i:0{width}d}"
        truth = write_spine_series(out / name, case_seed, config, overwrite=overwrite)
        records.append({"id": name, "seed": case_seed, "image": f"{name}/dicom", "truth": f"{name}/levels.json",
                        "variant": truth["variant"], "coverage": truth["coverage"], "l3_in_scan": truth["l3_in_scan"],
                        "spacing_mm": truth["acquisition"]["spacing_mm"]})
        if progress:
            progress(i + 1, cases)
    path = out / "levels.json"
    path.write_text(json.dumps({"name": f"kerasmuscle synthetic spines (seed {seed})", "synthetic": True,
                                "config": config.to_dict(), "cases": records}, indent=1) + "\n", encoding="utf-8")
    return path
