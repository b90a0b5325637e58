"""Synthetic data v2: a fresh, deformed anatomy in every sample, so a network learns shape and context.

After SynthSeg (Billot et al., Medical Image Analysis 2023; BBillot/SynthSeg): every sample is drawn
from its own patient (:func:`~kerasmuscle.synth.anatomy.sample_body`) with the anatomy varied where v1 is
constant (fat rims around psoas and quadratus lumborum absent in about half the samples, thin and broken
otherwise; quadratus lumborum 0.3-1.5x and moved against the transverse process; psoas round to flat and
touching the vertebral body or not; cancellous bone 40-300 HU, cortex 0.5-2 mm), then deformed at
tissue-map level (scale, rotation, a smooth elastic field, a left-right flip; the labels are the same
map, so image and labels move together), then rendered with realistic attenuation or, in about 30 %,
with every tissue's mean and SD drawn at random, a smooth bias field and two or three intensity
sub-classes inside the muscles. Each slice averages sub-slices over a 1-7.5 mm thickness (partial
volume); fields of view run from spine-centred 150 mm to 500 mm; levels from about mid-L2 to mid-L4
(±40 mm), the anatomy following the level (:func:`~kerasmuscle.synth.anatomy.level_geometry`: the
vertebra or disc cut, psoas small at L2 and large at L4, kidneys, liver, spleen, crura and rib tips
towards L2, the aortic bifurcation and iliac crests towards L4); kidneys often against psoas and
quadratus lumborum; in a quarter of the samples one or both arms beside the body (background).

Deterministic: sample ``i`` of seed ``s`` comes from its own random stream ``[s, 7, i]``, whatever else
is drawn; what the levels, kidney contact and arms draw comes from a second stream ``[s, 7, i, 1]``, so
with them switched off (``level_anatomy=False, kidney_contact=0, arms=0``, as the shipped recipe
``exports/l3-synth-v1`` pins them) every sample is the one it was before they existed. Only numpy is used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.config import SynthConfig, SynthV2Config
from kerasmuscle.synth.anatomy import (
    TISSUES,
    SliceDrawer,
    T,
    arms_extent,
    derive,
    kidney_contact,
    level_geometry,
    sample_arms,
    sample_body,
)
from kerasmuscle.synth.case import _LABEL_LUT, _MUSCLE_LUT, _sample_acquisition
from kerasmuscle.synth.render import HU_MAX, HU_MIN, KERNELS, Renderer, TissueTables, tissue_hu
from kerasmuscle.synth.shapes import Canvas, gaussian_field

_STREAM_V2 = 7
_KEEP_REAL = np.array([t.kind in ("air", "device", "gas") for t in TISSUES] + [False] * (256 - len(TISSUES)))
#: Tissues that existed before levels and arms: their random intensities come from the main stream, the
#: later ones' from the second, so that old samples stay as they were.
_FIRST_TISSUES = 35


@dataclass(frozen=True)
class Sample:
    """One v2 training sample.

    Args:
        hu: float32 ``[slices, size, size]`` in HU.
        labels: uint8 ``[slices, size, size]`` (kerasmuscle label ids).
        spacing_mm: pixel spacing.
        record: every random choice, for inspection (JSON-safe).
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing_mm: float
    record: dict[str, Any]


def _smooth_field(rng: np.random.Generator, n: int, points: int) -> np.ndarray:
    """A smooth random field ``[n, n]`` with unit SD: Gaussian values on a ``points`` x ``points`` grid,
    interpolated bilinearly."""
    grid = rng.standard_normal((points, points)).astype(np.float32)
    t = np.linspace(0.0, points - 1.0, n, dtype=np.float32)
    i0 = np.clip(np.floor(t).astype(int), 0, points - 2)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def deformation(rng: np.random.Generator, n: int, spacing: float, config: SynthV2Config) -> tuple[np.ndarray, dict]:
    """Source pixel indices ``[2, n, n]`` (row, col) for every output pixel: scale, rotation, elastic
    field and flip, about the image centre; and the record of what was drawn."""
    sx, sy = (1.0 + rng.uniform(-config.scale, config.scale) for _ in range(2))
    rot = math.radians(rng.uniform(-config.rotation_deg, config.rotation_deg))
    points = int(rng.integers(config.elastic_points[0], config.elastic_points[1] + 1))
    disp = float(rng.uniform(*config.elastic_mm)) / spacing
    flip = bool(rng.random() < config.flip)
    c = (n - 1) / 2.0
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    dx, dy = xx - c, yy - c
    if flip:
        dx = -dx
    cos, sin = math.cos(rot), math.sin(rot)
    src_x = (cos * dx + sin * dy) / sx + c
    src_y = (-sin * dx + cos * dy) / sy + c
    src_x += disp * _smooth_field(rng, n, points)
    src_y += disp * _smooth_field(rng, n, points)
    index = np.stack([np.clip(np.rint(src_y), 0, n - 1), np.clip(np.rint(src_x), 0, n - 1)]).astype(np.intp)
    record = {"scale": [round(sx, 3), round(sy, 3)], "rotation_deg": round(math.degrees(rot), 2),
              "elastic_points": points, "elastic_mm": round(disp * spacing, 2), "flip": flip}
    return index, record


def _vary_anatomy(rng: np.random.Generator, geo: Any, config: SynthV2Config) -> dict[str, Any]:
    """Change the derived geometry where v1 is constant; returns what was drawn."""
    geo.ql_scale = float(rng.uniform(*config.quadratus_scale))
    geo.ql_shift_mm = float(rng.uniform(-10.0, 6.0))  # medial (over the transverse process) .. lateral
    geo.ql_depth_mm = float(rng.uniform(-4.0, 6.0))
    geo.ps_flat = float(np.exp(rng.uniform(math.log(0.75), math.log(2.2))))  # round .. flat teardrop
    geo.ps_egg = float(rng.uniform(0.0, 0.4))
    geo.ps_gap_mm = float(rng.uniform(-4.0, 5.0))  # < 0: pressed against the vertebral body
    geo.cortex = float(rng.uniform(*config.cortex_mm))
    return {k: round(getattr(geo, k), 3) for k in ("ql_scale", "ql_shift_mm", "ql_depth_mm", "ps_flat", "ps_egg",
                                                    "ps_gap_mm", "cortex")}


def _random_tables(rng: np.random.Generator, extra: np.random.Generator, real: TissueTables,
                   config: SynthV2Config) -> TissueTables:
    """Every tissue's mean and texture at random; air, devices and gas keep their real values."""
    mean = real.mean.copy()
    fine = real.fine.copy()
    coarse = real.coarse.copy()
    for gen, lo, hi in ((rng, 0, _FIRST_TISSUES), (extra, _FIRST_TISSUES, len(TISSUES))):
        draw = ~_KEEP_REAL[lo:hi]
        m = int(draw.sum())
        mean[lo:hi][draw] = gen.uniform(*config.random_mean_hu, size=m).astype(np.float32)
        fine[lo:hi][draw] = gen.uniform(0.0, config.random_sd_hu, size=m).astype(np.float32)
        coarse[lo:hi][draw] = gen.uniform(0.0, config.random_sd_hu, size=m).astype(np.float32)
    return TissueTables(mean, fine, coarse)


def _metal(rng: np.random.Generator, img: np.ndarray, body: np.ndarray) -> None:
    """A small metal object inside the body with bright and dark streaks through it (in place)."""
    rows, cols = np.nonzero(body)
    if rows.size == 0:
        return
    i = int(rng.integers(rows.size))
    r0, c0 = float(rows[i]), float(cols[i])
    n = img.shape[0]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    rad = float(rng.uniform(1.5, 4.0))
    img[(yy - r0) ** 2 + (xx - c0) ** 2 < rad**2] = 3000.0
    ang = np.arctan2(yy - r0, xx - c0)
    dist = np.hypot(yy - r0, xx - c0) + 1.0
    streak = np.cos(ang * float(rng.integers(4, 10)) + float(rng.uniform(0, np.pi)))
    img += (float(rng.uniform(100.0, 400.0)) * streak * np.exp(-dist / (0.3 * n))).astype(np.float32)


def sample(seed: int, index: int, config: SynthV2Config = SynthV2Config()) -> Sample:
    """Draw sample ``index`` of seed ``seed``.

    Args:
        seed: the stream's seed.
        index: the sample number (samples are independent; any order, any worker).
        config: how samples vary.

    Returns:
        The :class:`Sample`.
    """
    rng = np.random.default_rng([seed, _STREAM_V2, index])
    # Levels, kidney contact and arms draw only from this one: switched off, the main stream is untouched.
    extra = np.random.default_rng([seed, _STREAM_V2, index, 1])
    n = config.image_size
    base = SynthConfig(image_size=n, fov_mm=(320.0, 500.0), noise_hu=config.noise_hu)
    body = sample_body(rng, base)
    geo = derive(body)
    record: dict[str, Any] = {"anatomy": _vary_anatomy(rng, geo, config)}
    levels = level_geometry(extra, body, geo) if config.level_anatomy else None
    if config.kidney_contact > 0:
        record["kidney_contact_mm"] = [None if v is None else round(v, 2)
                                       for v in kidney_contact(extra, geo, config.kidney_contact)]
    scan = _sample_acquisition(rng, body, geo, base)
    acq = dict(scan.record)
    lo, hi = (n * s for s in config.spacing_mm)
    narrow = bool(rng.random() < config.narrow_fraction)
    if narrow:
        # Spine-centred: the field holds the spine and the back muscles, the flanks are cut off.
        fov = float(rng.uniform(config.fov_mm[0], min(config.fov_mm[0] + 120.0, config.fov_mm[1])))
        origin = (float(rng.normal(0.0, 8.0)), float(-25.0 + rng.normal(0.0, 8.0)))
    else:
        fov = float(np.clip(rng.uniform(0.9, 1.1) * acq["fov_mm"], *config.fov_mm))
        origin = scan.origin
    arms = sample_arms(extra, body, geo, scan.couch, scan.angle, origin) if extra.random() < config.arms else []
    if arms and not narrow and extra.random() < 0.5:
        # The technologist widened the field to hold the arms (up to its largest).
        fov = max(fov, 2.0 * arms_extent(arms, scan.angle, origin) + float(extra.uniform(4.0, 20.0)))
        fov = min(fov, config.fov_mm[1])
    fov = float(np.clip(fov, lo, hi))
    spacing = fov / n
    canvas = Canvas(n, spacing, scan.angle, origin)
    drawer = SliceDrawer(body, geo, canvas, scan.couch, rng, acq["oral_contrast"])
    if arms:
        drawer.add_arms(arms)
    record["arms"] = [a.record for a in arms]
    if rng.random() < config.rim_absent:
        drawer.ql_rim_mm = drawer.psoas_rim_mm = 0.0
    else:
        drawer.ql_rim_mm = float(rng.uniform(0.3, 1.2))
        drawer.psoas_rim_mm = float(rng.uniform(0.3, 1.0))
        drawer.rim_gaps = float(rng.uniform(0.2, 0.7))
    record["rims_mm"] = [round(drawer.ql_rim_mm, 2), round(drawer.psoas_rim_mm, 2), round(drawer.rim_gaps, 2)]

    thickness = float(rng.uniform(*config.thickness_mm))
    centre = float(rng.uniform(-config.level_mm, config.level_mm))
    subs = max(1, int(round(thickness / 1.5)) | 1)  # odd: the middle sub-slice is at the slice centre
    warp, record["deformation"] = deformation(rng, n, spacing, config)

    tables = tissue_hu(rng, body, acq["contrast_phase"], acq["kvp"])
    tables.mean[T.CANCELLOUS_BONE] = np.float32(rng.uniform(*config.cancellous_hu))
    randomised = bool(rng.random() < config.random_intensity)
    if randomised:
        tables = _random_tables(rng, extra, tables, config)
    noise = float(rng.uniform(*config.noise_hu))
    blur = float(rng.uniform(0.4, 1.2))
    kernel, cutoff = KERNELS[int(rng.integers(len(KERNELS)))]
    renderer = Renderer(tables, (n, n), spacing, blur, noise, cutoff)

    k = config.slices
    hu = np.empty((k, n, n), np.float32)
    labels = np.empty((k, n, n), np.uint8)
    metal = bool(rng.random() < config.metal)
    for i in range(k):
        z = centre + thickness * (i - (k - 1) / 2.0)
        acc = np.zeros((n, n), np.float32)
        for j in range(subs):
            tis = drawer.draw(z + thickness * ((j + 0.5) / subs - 0.5))[warp[0], warp[1]]
            acc += renderer.clean(tis, rng)
            if j == subs // 2:
                labels[i] = _LABEL_LUT[tis]
                muscle, inside = _MUSCLE_LUT[tis], tis != T.AIR
        img = acc / np.float32(subs)
        if randomised:
            # Two or three intensity sub-classes inside the muscles (marbling, fatty infiltration), and a
            # smooth additive bias field.
            for _ in range(int(rng.integers(1, 3))):
                part = muscle & (gaussian_field(rng, (n, n), max(2.0 / spacing, 1.0)) > rng.uniform(0.3, 1.2))
                img[part] += np.float32(rng.uniform(-80.0, 40.0))
            img += np.float32(rng.uniform(0.0, config.bias_hu)) * _smooth_field(rng, n, 4)
        if metal:
            _metal(rng, img, inside)
        hu[i] = renderer.finish(img, rng)
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    record.update({
        "fov_mm": round(fov, 1), "pixel_spacing_mm": round(spacing, 4), "narrow_field": narrow,
        "level_mm": round(centre, 2),
        "level": levels.name(centre, geo.vb_hh) if levels is not None else "L3", "thickness_mm": round(thickness, 2), "sub_slices": subs,
        "random_intensity": randomised, "noise_hu": round(noise, 2), "blur_mm": round(blur, 3), "kernel": kernel,
        "cancellous_hu": round(float(tables.mean[T.CANCELLOUS_BONE]), 1), "metal": metal,
        "contrast_phase": acq["contrast_phase"], "kvp": acq["kvp"], "sex": body.sex,
        "height_m": float(body.height_m),
    })
    return Sample(hu, labels, spacing, record)


def _write_sample(job: tuple[int, int, SynthV2Config, str, int]) -> dict[str, Any]:
    """Make sample ``index`` and write it as ``root/<id>.npz``; return its dataset.json record."""
    from kerasmuscle.io.npz import write_npz
    from kerasmuscle.io.scan import AXIAL_ORIENTATION

    seed, index, config, root, width = job
    s = sample(seed, index, config)
    name = f"v2_{index:0{width}d}"
    k, n = s.hu.shape[0], s.hu.shape[1]
    thick = float(s.record["thickness_mm"])
    # Image position of the first pixel per slice: centred on the image, slices `thick` apart.
    corner = -(n / 2.0 - 0.5) * s.spacing_mm
    positions = [[corner, corner, float(s.record["level_mm"]) + thick * (i - (k - 1) / 2.0)] for i in range(k)]
    write_npz(Path(root) / f"{name}.npz", spacing=(thick, s.spacing_mm, s.spacing_mm), positions=positions,
              orientation=AXIAL_ORIENTATION, hu=s.hu, labels=s.labels, integer_hu=True)
    return {"id": name, "patient_id": name, "image": f"{name}.npz", "labels": f"{name}.npz",
            "height_m": s.record["height_m"], "sex": s.record["sex"], "synth_v2": s.record}


def write_dataset(out: str | os.PathLike, *, samples: int, seed: int = 0, config: SynthV2Config = SynthV2Config(),
                  workers: int | None = None, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Pre-generate ``samples`` v2 samples as a dataset folder that ``kerasmuscle train`` reads: one NPZ per
    sample (HU as int16, labels, geometry) and ``dataset.json`` (each sample its own patient, with every
    random choice under ``synth_v2``).

    Args:
        out: the folder to create (built under a temporary name and renamed when complete).
        samples: number of samples (each ``config.slices`` slices).
        seed: the seed; sample ``i`` is the same whatever ``samples``, ``workers`` or order.
        config: how samples vary.
        workers: processes to use (default: all CPU cores; 1 runs in this process).
        overwrite: replace an existing non-empty ``out``.
        progress: called as ``progress(done, total)`` after each sample.

    Returns:
        The path of ``dataset.json``.

    Raises:
        KerasMuscleError: ``out`` exists and is not empty (without ``overwrite``), or ``samples < 1``.
    """
    from kerasmuscle.errors import KerasMuscleError
    from kerasmuscle.fileutil import atomic_path
    from kerasmuscle.synth.cohort import run_jobs, write_dataset_json

    out = Path(out)
    if samples < 1:
        raise KerasMuscleError(f"samples must be at least 1, got {samples}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise KerasMuscleError(f"{out}: exists and is not an empty folder; choose another or pass --overwrite")
    workers = max(1, min(workers or os.cpu_count() or 1, samples))
    width = max(5, len(str(samples - 1)))
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        records = run_jobs(_write_sample, [(seed, i, config, str(tmp), width) for i in range(samples)], workers,
                           progress)
        write_dataset_json(tmp, name=f"kerasmuscle synthetic data v2 (seed {seed})", generator="kerasmuscle.synth.v2",
                           note="Synthetic CT made by kerasmuscle.synth.v2: deformed anatomy with random intensities.",
                           seed=seed, config=config, records=records)
    return out / "dataset.json"


__all__ = ["Sample", "deformation", "sample", "write_dataset"]
