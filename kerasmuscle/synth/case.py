"""One synthetic case: a patient's anatomy drawn at L3 and rendered as adjacent CT slices.

:func:`make_case` is the public entry point. It samples (or takes) a :class:`Body`, samples a fresh
acquisition (field of view, positioning on the table, tube voltage, contrast phase, kernel, blur
and noise), draws the tissue map of every slice and renders it to Hounsfield units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from kerasmuscle.config import SynthConfig
from kerasmuscle.synth.anatomy import (
    TISSUES,
    Body,
    Couch,
    SliceDrawer,
    T,
    derive,
    follow_up_body,
    sample_body,
    tissue_label_lut,
)
from kerasmuscle.synth.render import KERNELS, Renderer, tissue_hu
from kerasmuscle.synth.shapes import Canvas, angles, lookup

_LABEL_LUT = tissue_label_lut()
_BODY_LUT = np.zeros(256, bool)
_BODY_LUT[[t.id for t in TISSUES if t.kind not in ("air", "device")]] = True
_MUSCLE_LUT = np.zeros(256, bool)
_MUSCLE_LUT[[t.id for t in TISSUES if t.kind == "muscle"]] = True


@dataclass(frozen=True)
class SynthCase:
    """A synthetic case: adjacent axial CT slices at L3 with their muscle labels.

    Args:
        hu: float32 ``[slices, size, size]`` integer-valued HU clipped to [-1024, 3071].
        labels: uint8 ``[slices, size, size]`` muscle label ids 0..5.
        tissues: uint8 ``[slices, size, size]`` tissue ids of :data:`TISSUES`.
        pixel_spacing_mm: ``fov_mm / size`` (square pixels).
        slice_offsets_mm: z of each slice relative to the L3 mid-level, ascending (index 0 is the
            most inferior).
        patient: sex, age_years, height_m, weight_kg (JSON-safe).
        acquisition: scan parameters (JSON-safe): fov_mm, kvp, contrast_phase, noise_hu, blur_mm,
            rotation_deg, offset_mm, kernel, noise_cutoff_lpmm, muscle_hu, truncated,
            oral_contrast, pad_mm, slice_shift_mm.
        body: the anatomy parameters, for follow-up scans of the same patient.
    """

    hu: np.ndarray
    labels: np.ndarray
    tissues: np.ndarray
    pixel_spacing_mm: float
    slice_offsets_mm: tuple[float, ...]
    patient: dict
    acquisition: dict
    body: Body


def _outline(geo: SimpleNamespace) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame points of the skin outline (before the couch flattens the back)."""
    phi = angles()
    r = geo.skin_table
    return r * np.sin(phi), geo.yc - r * np.cos(phi)


@dataclass(frozen=True)
class _Scan:
    """The sampled acquisition: the public record plus what drawing and rendering need."""

    record: dict
    origin: tuple[float, float]
    angle: float
    couch: Couch
    width_mm: float


def _sample_acquisition(rng: np.random.Generator, body: Body, geo: SimpleNamespace, config: SynthConfig) -> _Scan:
    """FOV, placement on the couch, tube voltage, phase, kernel, blur and noise of one scan."""
    x, y = _outline(geo)
    rot = float(np.clip(rng.normal(0.0, 3.5), -10.0, 10.0))
    a = math.radians(rot)
    ru = math.cos(a) * x - math.sin(a) * y
    rv = math.sin(a) * x + math.cos(a) * y
    width = float(ru.max() - ru.min())
    depth = float(rv.max() - rv.min())
    lo, hi = config.fov_mm
    need = max(width, depth + 20.0)
    obese = body.fat_scale > 1.7 or width > 400.0
    truncate = obese and rng.random() < 0.12
    if truncate:
        fov = width * rng.uniform(0.86, 0.97)
    elif rng.random() < 0.5:
        # Fitted to the patient, as a technologist does.
        fov = need * rng.uniform(1.04, 1.22) + rng.uniform(0.0, 25.0)
    else:
        # A fixed protocol FOV, enlarged when the patient does not fit.
        fov = max(rng.uniform(lo, hi), need * 1.03)
    fov = float(round(float(np.clip(fov, lo, hi))))
    slack_u = max((fov - width) / 2.0 - 3.0, 0.0)
    slack_v = max((fov - depth) / 2.0 - 3.0, 0.0)
    off_u = float(np.clip(rng.normal(0.0, 10.0), -30.0, 30.0))
    off_v = float(np.clip(rng.normal(8.0, 10.0), -30.0, 30.0))
    if not truncate:
        off_u = float(np.clip(off_u, -slack_u, slack_u))
        off_v = float(np.clip(off_v, -slack_v, slack_v))
    origin = (off_u - 0.5 * (ru.max() + ru.min()), off_v - 0.5 * (rv.max() + rv.min()))
    heavy = min(max((width - 300.0) / 200.0, 0.0), 1.0)
    nlo, nhi = config.noise_hu
    noise = nlo + (nhi - nlo) * float(rng.beta(2.0 + 2.0 * heavy, 3.0 - 1.5 * heavy))
    kvp = int(rng.choice([100, 120, 140], p=[0.2, 0.7, 0.1] if heavy < 0.5 else [0.05, 0.7, 0.25]))
    kernel, cutoff = KERNELS[int(rng.integers(len(KERNELS)))]
    phases = config.contrast_phases
    phase = phases[int(rng.integers(len(phases)))]
    # Most patients lie on the couch or on a thin foam pad; a thick mattress is the exception.
    r_pad = rng.random()
    if r_pad < 0.5:
        pad = 0.0
    elif r_pad < 0.93:
        pad = float(rng.uniform(2.0, 8.0))
    else:
        pad = float(rng.uniform(8.0, 16.0))
    # The back rests on the couch: the lowest point of the outline sinks a little into it.
    lowest = int(np.argmax(rv))
    u_low = float(ru[lowest] + origin[0])
    v_low = float(rv[lowest] + origin[1])
    sink = float(rng.uniform(1.0, 4.0) + 0.12 * float(geo.fat_table[len(geo.fat_table) // 2]))
    # Couches are 400-490 mm wide and gently curved: the edges rise 3-20 mm above the centre line.
    half_w = float(rng.uniform(200.0, 245.0))
    rise = float(rng.uniform(3.0, 20.0))
    radius = half_w**2 / (2.0 * rise) + 0.5 * rise
    uu = min(abs(u_low), half_w)
    couch = Couch(
        top_v=v_low - sink + pad + (radius - math.sqrt(radius**2 - uu**2)),
        radius=radius,
        half_width=half_w,
        shell_mm=float(rng.uniform(1.5, 2.5)),
        core_mm=float(rng.uniform(18.0, 45.0)),
        pad_mm=pad,
    )
    # Mostly centred on mid-L3; sometimes the outer slices reach an endplate or the disc.
    shift = float(np.clip(rng.normal(0.0, 2.5), -8.0, 8.0))
    record = {
        "fov_mm": fov,
        "kvp": kvp,
        "contrast_phase": phase,
        "noise_hu": round(float(noise), 2),
        "blur_mm": round(float(rng.uniform(0.4, 0.9)), 3),
        "rotation_deg": round(rot, 2),
        "offset_mm": [round(off_u, 1), round(off_v, 1)],
        "kernel": kernel,
        "noise_cutoff_lpmm": cutoff,
        "oral_contrast": bool(rng.random() < 0.3),
        "pad_mm": round(pad, 1),
        "slice_shift_mm": round(shift, 2),
    }
    return _Scan(record, origin, a, couch, width)


def make_case(rng: np.random.Generator, config: SynthConfig = SynthConfig(), body: Body | None = None) -> SynthCase:
    """One case: `config.slices` adjacent axial slices at L3, `config.slice_spacing_mm` apart. Samples a body if none is given; always samples a fresh acquisition (FOV, positioning, noise, contrast phase).

    Args:
        rng: the random generator (the only source of randomness; same seed, same case).
        config: the cohort configuration.
        body: the patient; a new one is sampled when None.

    Returns:
        The :class:`SynthCase`.
    """
    if body is None:
        body = sample_body(rng, config)
    geo = derive(body)
    scan = _sample_acquisition(rng, body, geo, config)
    acq = scan.record
    n = config.image_size
    spacing = acq["fov_mm"] / n
    canvas = Canvas(n, spacing, scan.angle, scan.origin)
    drawer = SliceDrawer(body, geo, canvas, scan.couch, rng, acq["oral_contrast"])
    k = config.slices
    offsets = tuple(round(acq["slice_shift_mm"] + config.slice_spacing_mm * (i - (k - 1) / 2.0), 3) for i in range(k))
    tissues = np.empty((k, n, n), np.uint8)
    for i, z in enumerate(offsets):
        tissues[i] = drawer.draw(z)
    tables = tissue_hu(rng, body, acq["contrast_phase"], acq["kvp"])

    # Noise is higher in the centre of large patients; normalised to the mean over muscle.
    mid = tissues[k // 2]
    rs = lookup(np.asarray(geo.skin_table, np.float32), drawer.phi)
    q = drawer.rho / rs
    central = np.clip(1.0 - q * q, 0.0, 1.0)
    amp = float(np.clip((scan.width_mm - 300.0) / 400.0, 0.0, 0.45))
    noise_map = np.float32(1.0) + np.float32(amp) * central
    muscle = _MUSCLE_LUT[mid]
    norm = float(noise_map[muscle].mean()) if muscle.any() else 1.0
    noise_map *= np.float32(1.0 / norm)

    # Sub-pixel skin-air edge: the share of each edge pixel inside the outline.
    alpha = np.clip(0.5 + drawer.d_out / np.float32(spacing), 0.0, 1.0)
    edge = (alpha > 0) & (alpha < 1) & ((mid == T.AIR) | (mid == T.SKIN))
    idx = np.flatnonzero(edge)
    renderer = Renderer(
        tables, (n, n), spacing, acq["blur_mm"], acq["noise_hu"], acq["noise_cutoff_lpmm"], noise_map, (idx, alpha.ravel()[idx].astype(np.float32))
    )
    hu = np.empty((k, n, n), np.float32)
    for i in range(k):
        hu[i] = renderer.render(tissues[i], rng)
    labels = _LABEL_LUT[tissues]

    border = np.concatenate([mid[0], mid[-1], mid[:, 0], mid[:, -1]])
    truncated = bool(_BODY_LUT[border].any())
    acquisition = dict(acq)
    counts = np.bincount(mid.ravel(), minlength=256)[:256] * _MUSCLE_LUT
    acquisition["muscle_hu"] = round(float((counts * tables.mean).sum() / max(counts.sum(), 1)), 1)
    acquisition["truncated"] = truncated
    acquisition["pixel_spacing_mm"] = spacing
    patient = {"sex": body.sex, "age_years": int(body.age_years), "height_m": float(body.height_m), "weight_kg": float(body.weight_kg)}
    return SynthCase(
        hu=hu,
        labels=labels,
        tissues=tissues,
        pixel_spacing_mm=spacing,
        slice_offsets_mm=offsets,
        patient=patient,
        acquisition=acquisition,
        body=body,
    )


__all__ = ["TISSUES", "Body", "SynthCase", "follow_up_body", "make_case", "sample_body"]
