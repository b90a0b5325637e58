"""Per-patient anatomy at the third lumbar vertebra and the tissue map of one axial slice.

A :class:`Body` holds the patient's primary parameters (sex, age, size, muscle and fat, shape
factors, skeleton, organ layout and seeds for fine contour detail). :func:`derive` turns it into
millimetre geometry, and :class:`SliceDrawer` paints the tissue map of any slice ``z`` (mm relative to
the L3 mid-level, positive towards the head) on a :class:`~kerasmuscle.synth.shapes.Canvas`.

The body frame is centred on the vertebral body: x towards the patient's left, y towards posterior.
Painting follows a fixed order (outline, wall, back muscles, retroperitoneum, bowel, skeleton,
intramuscular fat); later structures carve earlier ones, and organs that yield to their
neighbours paint only over fat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace

import numpy as np

from kerasmuscle.config import SynthConfig
from kerasmuscle.synth.shapes import (
    Canvas,
    Star,
    angles,
    bump,
    ellipse_table,
    filtered_noise,
    gaussian_field,
    lookup,
    polar,
    quadrant_table,
    smooth_periodic,
    superellipse_table,
)


@dataclass(frozen=True)
class Tissue:
    """One entry of the tissue table.

    Args:
        id: value in tissue maps.
        name: identifier, for example ``"psoas_major"``.
        kind: coarse class: air, device, skin, fat, muscle, other_muscle, soft, bone, fluid, blood, gas,
            contrast. ``other_muscle`` is skeletal muscle outside the five trunk groups (arm muscles beside
            the body, the crura of the diaphragm): muscle-dense but background.
        label: muscle label id (:mod:`kerasmuscle.labels`) the tissue belongs to; 0 for non-muscle.
    """

    id: int
    name: str
    kind: str
    label: int = 0


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", "air"),
    Tissue(1, "table_shell", "device"),
    Tissue(2, "table_core", "device"),
    Tissue(3, "pad", "device"),
    Tissue(4, "skin", "skin"),
    Tissue(5, "subcutaneous_fat", "fat"),
    Tissue(6, "fascia", "soft"),
    Tissue(7, "visceral_fat", "fat"),
    Tissue(8, "intermuscular_fat", "fat"),
    Tissue(9, "rectus_abdominis", "muscle", 1),
    Tissue(10, "external_oblique", "muscle", 2),
    Tissue(11, "internal_oblique", "muscle", 2),
    Tissue(12, "transversus_abdominis", "muscle", 2),
    Tissue(13, "psoas_major", "muscle", 3),
    Tissue(14, "quadratus_lumborum", "muscle", 4),
    Tissue(15, "erector_spinae", "muscle", 5),
    Tissue(16, "multifidus", "muscle", 5),
    Tissue(17, "cortical_bone", "bone"),
    Tissue(18, "cancellous_bone", "bone"),
    Tissue(19, "intervertebral_disc", "soft"),
    Tissue(20, "csf", "fluid"),
    Tissue(21, "kidney_cortex", "soft"),
    Tissue(22, "kidney_medulla", "soft"),
    Tissue(23, "artery", "blood"),
    Tissue(24, "calcification", "bone"),
    Tissue(25, "ivc", "blood"),
    Tissue(26, "mesenteric_vein", "blood"),
    Tissue(27, "bowel_wall", "soft"),
    Tissue(28, "bowel_fluid", "fluid"),
    Tissue(29, "bowel_gas", "gas"),
    Tissue(30, "oral_contrast", "contrast"),
    Tissue(31, "stool", "soft"),
    Tissue(32, "liver", "soft"),
    Tissue(33, "urine", "fluid"),
    Tissue(34, "chyme", "soft"),
    # Synthetic data v2 only (levels L2 to L4, arms beside the body); v1 never paints them.
    Tissue(35, "arm_muscle", "other_muscle"),
    Tissue(36, "diaphragm_crus", "other_muscle"),
    Tissue(37, "spleen", "soft"),
)

T = SimpleNamespace(**{t.name.upper(): t.id for t in TISSUES})
NUM_TISSUES = len(TISSUES)


def tissue_label_lut() -> np.ndarray:
    """Lookup table from tissue id to muscle label id.

    Returns:
        uint8 array of shape (256,); ``lut[tissues]`` is the label map.
    """
    lut = np.zeros(256, np.uint8)
    for t in TISSUES:
        lut[t.id] = t.label
    return lut


def _lut(ids: tuple[int, ...] | list[int]) -> np.ndarray:
    out = np.zeros(256, bool)
    out[list(ids)] = True
    return out


FAT_IDS = (T.SUBCUTANEOUS_FAT, T.VISCERAL_FAT, T.INTERMUSCULAR_FAT)
MUSCLE_IDS = tuple(t.id for t in TISSUES if t.kind == "muscle")
_ON_FAT = _lut((T.VISCERAL_FAT, T.INTERMUSCULAR_FAT))
_ON_VISCERAL = _lut((T.VISCERAL_FAT,))
_ON_SOFT = _lut((T.VISCERAL_FAT, T.INTERMUSCULAR_FAT, T.FASCIA) + MUSCLE_IDS)
_ON_ES = _lut((T.ERECTOR_SPINAE, T.MULTIFIDUS))
_ON_QL_ES = _lut((T.QUADRATUS_LUMBORUM, T.ERECTOR_SPINAE, T.MULTIFIDUS))


@dataclass(frozen=True)
class Body:
    """Anatomy parameters of one synthetic patient (lengths in mm, body frame on the L3 body).

    Sizes of muscles and fat are derived from these by :func:`derive`, so that a follow-up scan
    changes ``muscle_scale`` and ``fat_scale`` while the skeleton and organ layout stay.

    Args:
        sex: "M" or "F".
        age_years: age at the scan.
        height_m: body height.
        weight_kg: body weight, consistent with height, muscle and fat.
        muscle_scale: muscle size relative to an average adult of the same sex (area scale).
        fat_scale: fat amount relative to an average adult (thickness scale).
        visceral_share: share of the fat that is visceral (men more, women less).
        low_attenuation: myosteatosis; muscle attenuation 5..30 HU.
        muscle_hu: native mean attenuation of skeletal muscle at 120 kVp.
        imat: intramuscular fat index (grows with age and myosteatosis); above about 0.01 in a
            muscle it shows as fat speckles, above about 0.03 also as streaks.
        frame: skeletal size factor (1 = average adult man).
        core_aspect: antero-posterior depth factor of the abdomen.
        belly: roundness of the anterior abdomen, 0 flat .. 1 round.
        flank_fat: subcutaneous fat at the flanks relative to the anterior wall (gynoid > 1).
        back_fat: subcutaneous fat over the spine relative to the anterior wall.
        skin_mm: skin thickness.
        linea_alba_mm: width of the linea alba between the recti.
        group_size: size factors of rectus, abdominal wall, psoas, quadratus, erector spinae.
        asymmetry: left-to-right size difference of the same five groups (+0.03: left 3 % larger).
        wall_layers: relative thickness of external oblique, internal oblique, transversus.
        vb_half_width_mm: half-width of the L3 vertebral body.
        vb_half_depth_mm: half antero-posterior depth of the vertebral body.
        vb_half_height_mm: half height of the vertebral body (endplate to mid-level).
        cortex_mm: cortical shell thickness.
        cancellous_hu: native attenuation of cancellous bone (lower in the elderly).
        canal_width_mm: spinal canal width.
        canal_depth_mm: spinal canal antero-posterior depth.
        tp_tip_mm: distance of the transverse process tips from the midline.
        tp_level_mm: z of the transverse processes' centre relative to the L3 mid-level.
        spinous_length_mm: length of the spinous process behind the laminae.
        kidney_pole_mm: z of the lower pole tip of the right and left kidney (absent below it).
        kidney_size_mm: transverse semi-axis of the right and left kidney.
        aorta_radius_mm: aortic radius at L3.
        aorta_x_mm: distance of the aorta to the left of the midline.
        aortic_calcification: amount of calcified wall, 0 none .. 1 heavy.
        ivc_radii_mm: lateral and antero-posterior semi-axes of the inferior vena cava.
        liver_tip_mm: size of the inferior tip of the right liver lobe at L3 (0: not reached).
        colon_radii_mm: radius of the ascending and descending colon.
        transverse_colon: a dependent transverse colon loop reaches the L3 level.
        duodenum: the third part of the duodenum crosses at this level.
        bowel_fill: share of the free peritoneal space filled by small bowel.
        bowel_loop_mm: typical small bowel loop radius.
        shape_seed: seed of the fine contour detail (stays with the patient).
        bowel_seed: seed of the bowel arrangement (changes between scans).
    """

    sex: str
    age_years: int
    height_m: float
    weight_kg: float
    muscle_scale: float
    fat_scale: float
    visceral_share: float
    low_attenuation: bool
    muscle_hu: float
    imat: float
    frame: float
    core_aspect: float
    belly: float
    flank_fat: float
    back_fat: float
    skin_mm: float
    linea_alba_mm: float
    group_size: tuple[float, float, float, float, float]
    asymmetry: tuple[float, float, float, float, float]
    wall_layers: tuple[float, float, float]
    vb_half_width_mm: float
    vb_half_depth_mm: float
    vb_half_height_mm: float
    cortex_mm: float
    cancellous_hu: float
    canal_width_mm: float
    canal_depth_mm: float
    tp_tip_mm: float
    tp_level_mm: float
    spinous_length_mm: float
    kidney_pole_mm: tuple[float, float]
    kidney_size_mm: tuple[float, float]
    aorta_radius_mm: float
    aorta_x_mm: float
    aortic_calcification: float
    ivc_radii_mm: tuple[float, float]
    liver_tip_mm: float
    colon_radii_mm: tuple[float, float]
    transverse_colon: bool
    duodenum: bool
    bowel_fill: float
    bowel_loop_mm: float
    shape_seed: int
    bowel_seed: int

    def to_dict(self) -> dict:
        """The parameters as JSON-safe values.

        Returns:
            A dict of numbers, strings, booleans and lists (tuples become lists).
        """
        out = {}
        for k, v in self.__dict__.items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out


def _r(x: float, nd: int = 2) -> float:
    return float(round(float(x), nd))


def _beta_in(rng: np.random.Generator, lo: float, hi: float, mean01: float, conc: float = 5.0) -> float:
    """A value in [lo, hi] with a beta distribution of the given relative mean."""
    m = min(max(mean01, 0.05), 0.95)
    return lo + (hi - lo) * float(rng.beta(m * conc, (1.0 - m) * conc))


def _weight(height_m: float, muscle_scale: float, fat_scale: float, sex: str, noise: float) -> float:
    # BMI model calibrated so that (muscle 1, fat 1) is an average adult (BMI ~26) and the
    # extremes of the default ranges land near BMI 16 and 45.
    bmi = 10.0 + 7.0 * muscle_scale + 9.0 * fat_scale**0.9 + (0.6 if sex == "M" else -0.6) + noise
    bmi = min(max(bmi, 16.0), 45.0)
    return bmi * height_m**2


def _muscle_hu(rng: np.random.Generator, age: int, low: bool) -> float:
    if low:
        return float(rng.uniform(6.0, 29.0))
    return float(np.clip(rng.normal(52.0 - 0.15 * (age - 20), 3.5), 35.0, 55.0))


def sample_body(rng: np.random.Generator, config: SynthConfig) -> Body:
    """Draw the anatomy of one new synthetic patient.

    Args:
        rng: the random generator (the only source of randomness).
        config: the cohort configuration (muscle and fat ranges, low-attenuation share).

    Returns:
        A :class:`Body`.
    """
    sex = "M" if rng.random() < 0.5 else "F"
    male = sex == "M"
    age = int(round(20 + 70 * rng.beta(2.2, 1.5)))
    h_mean = (1.765 if male else 1.635) - 0.0008 * max(age - 50, 0)
    height = float(np.clip(rng.normal(h_mean, 0.068 if male else 0.062), 1.50, 1.95))
    lo, hi = config.muscle_scale
    muscle = _beta_in(rng, lo, hi, 0.5 - 0.006 * (age - 50) + rng.normal(0, 0.05), 4.0)
    flo, fhi = config.fat_scale
    # Log-scale beta: median near an average adult, long tail to obesity.
    lf = _beta_in(rng, math.log(flo), math.log(fhi), 0.52 + 0.002 * (age - 50), 3.2)
    fat = float(math.exp(lf))
    vshare = float(np.clip(rng.normal(0.42 if male else 0.28, 0.08) + 0.002 * (age - 50), 0.12, 0.65))
    low = bool(rng.random() < config.low_attenuation_fraction)
    imat = float(np.clip(0.008 + 0.0007 * max(age - 30, 0) + (0.03 if low else 0.0) + rng.normal(0, 0.008), 0.003, 0.12))
    frame = float((height / 1.76) ** 0.75 * (1.0 if male else 0.95) * rng.normal(1.0, 0.025))
    weight = _weight(height, muscle, fat, sex, float(rng.normal(0, 1.0)))
    gyn = rng.normal(1.25 if not male else 1.0, 0.15)
    vb_w = 24.5 * frame * rng.normal(1.0, 0.04)
    return Body(
        sex=sex,
        age_years=age,
        height_m=_r(height, 3),
        weight_kg=_r(weight, 1),
        muscle_scale=_r(muscle, 4),
        fat_scale=_r(fat, 4),
        visceral_share=_r(vshare, 3),
        low_attenuation=low,
        muscle_hu=_r(_muscle_hu(rng, age, low), 1),
        imat=_r(imat, 4),
        frame=_r(frame, 4),
        core_aspect=_r(rng.normal(1.0, 0.07), 3),
        belly=_r(np.clip(rng.normal(0.35 + 0.15 * fat * vshare / 0.4, 0.2), 0.0, 1.0), 3),
        flank_fat=_r(np.clip(gyn, 0.7, 1.7), 3),
        back_fat=_r(np.clip(rng.normal(0.5, 0.1), 0.3, 0.8), 3),
        skin_mm=_r(np.clip(rng.normal(2.3 if male else 2.0, 0.3) - 0.004 * max(age - 60, 0), 1.5, 3.0), 2),
        linea_alba_mm=_r(np.clip(7.0 + 4.0 * fat + rng.gamma(1.5, 2.5), 5.0, 25.0), 1),
        group_size=tuple(_r(v, 3) for v in rng.normal(1.0, 0.09, 5).clip(0.75, 1.25)),
        asymmetry=tuple(_r(v, 3) for v in rng.normal(0.0, 0.03, 5).clip(-0.08, 0.08)),
        wall_layers=tuple(_r(v, 3) for v in np.abs(rng.normal((0.33, 0.44, 0.23), 0.05))),
        vb_half_width_mm=_r(vb_w),
        vb_half_depth_mm=_r(vb_w * rng.normal(0.71, 0.03)),
        vb_half_height_mm=_r(14.0 * frame * rng.normal(1.0, 0.04)),
        cortex_mm=_r(np.clip(rng.normal(1.7 - 0.008 * max(age - 40, 0), 0.2), 1.0, 2.0)),
        cancellous_hu=_r(np.clip(rng.normal(240 - 1.9 * (age - 20), 25), 80, 260), 1),
        canal_width_mm=_r(rng.normal(22.0, 1.5)),
        canal_depth_mm=_r(rng.normal(15.0, 1.2)),
        tp_tip_mm=_r(45.0 * frame * rng.normal(1.0, 0.05)),
        tp_level_mm=_r(rng.uniform(-1.0, 6.0)),
        spinous_length_mm=_r(27.0 * frame * rng.normal(1.0, 0.08)),
        kidney_pole_mm=(_r(rng.normal(-20, 14)), _r(rng.normal(-8, 14))),
        kidney_size_mm=tuple(_r(v) for v in rng.normal(27.0 * frame, 2.5, 2)),
        aorta_radius_mm=_r(np.clip(rng.normal(8.5 + 0.04 * (age - 20), 1.0), 7.0, 13.0)),
        aorta_x_mm=_r(rng.uniform(5.0, 15.0)),
        aortic_calcification=_r(np.clip((age - 50) / 40 + rng.normal(0, 0.2), 0.0, 1.0), 3),
        ivc_radii_mm=(_r(rng.uniform(10.0, 14.0)), _r(rng.uniform(6.0, 10.0))),
        liver_tip_mm=_r(rng.uniform(18.0, 40.0) if rng.random() < 0.22 else 0.0),
        colon_radii_mm=(_r(rng.uniform(17.0, 30.0)), _r(rng.uniform(11.0, 20.0))),
        transverse_colon=bool(rng.random() < 0.35),
        duodenum=bool(rng.random() < 0.55),
        bowel_fill=_r(rng.uniform(0.5, 0.85), 3),
        bowel_loop_mm=_r(rng.uniform(9.0, 14.0)),
        shape_seed=int(rng.integers(0, 2**31 - 1)),
        bowel_seed=int(rng.integers(0, 2**31 - 1)),
    )


def follow_up_body(body: Body, rng: np.random.Generator, config: SynthConfig) -> Body:
    """The same patient months later: same skeleton and organ layout, muscle -15..+5 %, fat -20..+20 %, age +0..2 y.

    Args:
        body: the earlier anatomy.
        rng: the random generator.
        config: the cohort configuration (for the low-attenuation range).

    Returns:
        A new :class:`Body` with the same skeleton, organ layout and contour seed; the bowel is
        rearranged.
    """
    dm = float(rng.uniform(-0.15, 0.05))
    df = float(rng.uniform(-0.20, 0.20))
    age = body.age_years + int(rng.integers(0, 3))
    muscle = float(np.clip(body.muscle_scale * (1.0 + dm), 0.3, 2.0))
    fat = float(np.clip(body.fat_scale * (1.0 + df), 0.05, 5.0))
    # Losing muscle usually goes with some fatty infiltration: attenuation falls a little.
    mhu = body.muscle_hu + min(dm, 0.0) * 20.0 + float(rng.normal(0, 1.0))
    weight = _weight(body.height_m, muscle, fat, body.sex, 0.0) * (body.weight_kg / _weight(body.height_m, body.muscle_scale, body.fat_scale, body.sex, 0.0))
    return replace(
        body,
        age_years=age,
        muscle_scale=_r(muscle, 4),
        fat_scale=_r(fat, 4),
        weight_kg=_r(weight, 1),
        muscle_hu=_r(float(np.clip(mhu, 5.0, 55.0)), 1),
        imat=_r(float(np.clip(body.imat * (1.0 - dm), 0.003, 0.2)), 4),
        bowel_seed=int(rng.integers(0, 2**31 - 1)),
    )


# ----------------------------------------------------------------------------------------------
# Derived geometry


def derive(body: Body) -> SimpleNamespace:
    """Turn a :class:`Body` into millimetre geometry and contour tables.

    Args:
        body: the patient.

    Returns:
        A namespace of dimensions (mm), radius tables and per-side factors used by the drawer.
    """
    g = SimpleNamespace()
    rng = np.random.default_rng(body.shape_seed)
    male = body.sex == "M"
    fr = body.frame
    ms = 1.17 * math.sqrt(body.muscle_scale) * (1.0 if male else 0.92) * fr**0.9
    visc = body.fat_scale * body.visceral_share / 0.4
    subq = body.fat_scale * (1.0 - body.visceral_share) / 0.6
    g.ms, g.visc, g.subq = ms, visc, subq
    gs = body.group_size

    def side_f(i: int, side: int) -> float:
        """Size factor of muscle group ``i`` (0 rectus .. 4 erector) on ``side`` (-1 right, +1 left)."""
        return 1.0 + side * body.asymmetry[i] / 2.0

    g.side_f = side_f

    # Skeleton.
    g.vb_hw, g.vb_hd, g.vb_hh = body.vb_half_width_mm, body.vb_half_depth_mm, body.vb_half_height_mm
    g.cortex = body.cortex_mm
    g.canal_w, g.canal_d = body.canal_width_mm, body.canal_depth_mm
    g.vb_conc = 0.13 * g.vb_hd
    g.canal_cy = g.vb_hd - g.vb_conc + g.canal_d / 2 + 0.5
    g.y_tp = g.vb_hd + 6.5
    g.y_lam = g.canal_cy + g.canal_d / 2 + 4.0
    g.tp_tip, g.tp_z, g.tp_hh = body.tp_tip_mm, body.tp_level_mm, 5.5 * fr
    g.sp_len = body.spinous_length_mm
    g.vb_wobble = smooth_periodic(rng, 0.012, 2, 6, n=360)
    g.vb_table = superellipse_table(g.vb_hw, g.vb_hd, g.vb_hd, 2.3, 2.9, 360) * (1 + g.vb_wobble)
    g.vb_table = g.vb_table - g.vb_conc * bump(angles(360), np.pi, 0.42)

    # Muscles.
    g.rect_w = 70.0 * fr * (0.8 + 0.2 * ms) * gs[0]
    g.rect_t = 12.0 * ms * gs[0]
    g.wall_t = 15.0 * ms * gs[1]
    wl = np.asarray(body.wall_layers, float)
    wl = wl / wl.sum()
    g.eo_t, g.io_t, g.ta_t = (g.wall_t * wl).tolist()
    g.ps_rx, g.ps_ry = 14.2 * ms * gs[2], 17.2 * ms * gs[2]
    g.ql_rx, g.ql_ry = 18.0 * ms**0.8 * fr**0.2 * gs[3], 9.0 * ms * gs[3]
    g.es_hw = 29.5 * ms**0.7 * fr**0.3 * gs[4]
    g.es_depth = 40.0 * ms * gs[4]

    # Core: the outer fascia of the musculoskeletal wall.
    g.core_post = g.y_lam + g.es_depth
    core_ant = (68.0 * fr + 10.0 * ms + 27.0 * visc) * body.core_aspect
    g.core_w = 94.0 * fr + 24.0 * ms + 19.0 * visc
    g.yc = -(6.0 + 0.12 * core_ant)
    g.d_ant = core_ant + g.yc
    g.d_post = g.core_post - g.yc
    p_ant = 2.55 - 0.6 * body.belly
    p_post = float(rng.uniform(2.9, 3.8))
    phi = angles()
    core = superellipse_table(g.core_w, g.d_ant, g.d_post, p_ant, p_post)
    core *= 1.0 + smooth_periodic(rng, 0.012, 2, 6)
    # Shallow midline furrow between the erector spinae bulges; deeper in muscular backs.
    core -= (2.0 + 3.0 * ms) * bump(phi, np.pi, 0.05 + 0.08 / max(g.d_post / 80.0, 0.5))
    g.core_table = core
    g.subq_ant = 19.0 * subq * fr + 2.0
    a = np.abs(np.angle(np.exp(1j * phi)))
    knots = np.radians([0.0, 55.0, 95.0, 140.0, 180.0])
    vals = [1.0, 1.15, body.flank_fat, 0.5 * (body.flank_fat + body.back_fat), body.back_fat]
    prof = np.interp(a, knots, vals)
    prof = np.convolve(np.concatenate([prof[-20:], prof, prof[:20]]), np.hanning(31) / np.hanning(31).sum(), "same")[20:-20]
    fat = g.subq_ant * prof * (1.0 + smooth_periodic(rng, 0.08, 1, 5))
    g.fat_table = np.maximum(fat, 2.5)
    g.skin = body.skin_mm
    g.skin_table = g.core_table + g.fat_table + g.skin

    # Rectus and lateral wall as depth bands below the fascia (angles of the body-centre polar).
    g.la_half = body.linea_alba_mm / 2.0
    g.scarpa = float(rng.uniform(0.3, 0.55))
    g.scarpa_gate = smooth_periodic(rng, 1.0, 3, 14, decay=0.6)
    g.layers = _wall_layers(g, rng)
    g.wall_depth = np.sum([t for _, t in g.layers], axis=0)

    # ES compartments and septa.
    g.es_wobble = [smooth_periodic(rng, 0.03, 2, 6, n=360) for _ in range(2)]
    g.es_septa = [(float(rng.uniform(0.2, 0.32)), float(rng.uniform(0.58, 0.74))) for _ in range(2)]
    g.psoas_wobble = [smooth_periodic(rng, 0.035, 2, 6, n=360) for _ in range(2)]
    g.ql_wobble = [smooth_periodic(rng, 0.05, 2, 5, n=360) for _ in range(2)]
    g.kidney_wobble = [smooth_periodic(rng, 0.03, 2, 5, n=360) for _ in range(2)]
    g.medulla_wobble = [smooth_periodic(rng, 0.22, 4, 7, decay=0.3, n=360) for _ in range(2)]
    g.kidney_angle = [float(rng.uniform(0.5, 0.9)) for _ in range(2)]
    g.colon_wobble = [smooth_periodic(rng, 0.08, 3, 7, decay=0.7, n=360) for _ in range(3)]
    g.colon_phi = (-np.radians(rng.uniform(98, 112)), np.radians(rng.uniform(104, 118)), np.radians(rng.uniform(-35, 35)))
    g.colon_gas = [float(rng.uniform(0.0, 0.6)) for _ in range(3)]
    g.liver_wobble = smooth_periodic(rng, 0.05, 2, 5, n=360)
    g.ao_calc = rng.uniform(0, 2 * np.pi, 4)
    g.duo_z = float(rng.uniform(-8, 8))
    g.sma_dx = float(rng.uniform(-8, -3))
    g.tc_z = float(rng.uniform(-10, 10))

    # Neural arch (drawn last from the seed so that the rest of the layout keeps its draws).
    g.tp_root_r = 5.6 * fr * float(rng.normal(1.0, 0.07))
    g.tp_end_r = 2.6 * fr * float(rng.normal(1.0, 0.08))
    g.tp_sweep = float(rng.uniform(0.02, 0.11))
    g.sp_base_r = 4.6 * fr * float(rng.normal(1.0, 0.08))
    g.sp_tip_r = 2.7 * fr * float(rng.normal(1.0, 0.1))
    g.sp_tilt = float(np.clip(rng.normal(0.0, 0.04), -0.1, 0.1))
    g.arch_shell = float(np.clip(0.75 * body.cortex_mm + 0.35, 1.0, 1.8))
    return g


def _arc_length_table(table: np.ndarray) -> np.ndarray:
    """Unsigned arc length along a radius-table contour from angle 0 to each table angle (either way round)."""
    n = table.shape[0]
    phi = angles(n + 1)
    r = np.append(table, table[0])
    x, y = r * np.sin(phi), -r * np.cos(phi)
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    fwd = cum[:n]
    back = cum[-1] - cum[:n]
    return np.where(phi[:n] <= np.pi, fwd, back)


def _wall_layers(g: SimpleNamespace, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """Depth layers of the anterior and lateral abdominal wall: (tissue, thickness table) from the fascia inwards.

    Thickness profiles are laid out by arc length along the fascia so that the rectus width and
    the muscle bellies keep their millimetre sizes whatever the body's shape.
    """
    phi = np.angle(np.exp(1j * angles()))
    side = np.where(phi >= 0, 1, -1)
    a = np.abs(phi)
    arc = _arc_length_table(g.core_table)
    zeros = np.zeros_like(a)
    rect = zeros.copy()
    eo, io, ta = zeros.copy(), zeros.copy(), zeros.copy()
    ant_fascia = zeros.copy()
    post_sheath = zeros.copy()
    gap1, gap2 = zeros.copy(), zeros.copy()
    gap_fat = 0.5 + 0.35 * min(g.subq + g.visc, 3.0)
    for s in (-1, 1):
        m = side == s
        sf_r, sf_w = g.side_f(0, s), g.side_f(1, s)
        la = g.la_half
        rw = g.rect_w * sf_r
        u = np.clip((arc - la) / rw, 0.0, 1.0)
        inside = (arc > la) & (arc < la + rw)
        prof = np.where(inside, u**0.4 * (1.0 - u) ** 0.9, 0.0)
        prof = prof / max(prof.max(), 1e-6)
        rect[m] = (g.rect_t * sf_r * prof)[m]
        ant_fascia[m] = np.where(arc <= la, 2.0, np.where(arc < la + rw + 4.0, 1.0, 0.0))[m]
        post_sheath[m] = np.where(inside, 0.8, 0.0)[m]
        a_end = np.radians(rng.uniform(114, 132))
        s_end = float(np.interp(a_end, a[m][np.argsort(a[m])], arc[m][np.argsort(a[m])]))
        ls = la + rw
        wav = smooth_periodic(rng, 0.10, 2, 8, decay=1.0)
        for arr, t, start, end, rise in (
            (eo, g.eo_t, ls + 14.0, s_end + 12.0, 30.0),
            (io, g.io_t, ls + 3.0, s_end, 24.0),
            (ta, g.ta_t, ls - 10.0, s_end - 14.0, 18.0),
        ):
            up = np.clip((arc - start) / rise, 0.0, 1.0)
            down = np.clip((end - arc) / 35.0, 0.0, 1.0)
            pr = np.sin(0.5 * np.pi * up) ** 0.8 * np.sin(0.5 * np.pi * down) ** 0.7
            arr[m] = (t * sf_w * pr * (1.0 + wav))[m]
        # The oblique aponeuroses: a thin fascial line from the muscle bellies to the rectus sheath.
        apo = (arc > ls - 4.0) & (arc < ls + 40.0)
        ant_fascia[m] = np.where(apo & (eo + io + ta < 1.2), np.maximum(ant_fascia, 1.0), ant_fascia)[m]
        gw = gap_fat * np.clip(1.0 + smooth_periodic(rng, 0.6, 2, 9, decay=0.8), 0.0, 2.0)
        g1 = np.where((eo > 0.5) & (io > 0.5), gw * rng.uniform(0.7, 1.2), 0.0)
        g2 = np.where((io > 0.5) & (ta > 0.5), gw[::-1] * rng.uniform(0.6, 1.0), 0.0)
        gap1[m] = g1[m]
        gap2[m] = g2[m]
    return [
        (T.FASCIA, ant_fascia),
        (T.RECTUS_ABDOMINIS, rect),
        (T.FASCIA, post_sheath),
        (T.EXTERNAL_OBLIQUE, eo),
        (T.INTERMUSCULAR_FAT, gap1),
        (T.INTERNAL_OBLIQUE, io),
        (T.INTERMUSCULAR_FAT, gap2),
        (T.TRANSVERSUS_ABDOMINIS, ta),
    ]


# ----------------------------------------------------------------------------------------------
# Distance helpers


def _segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float],
                      p1: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Distance of every point to the segment ``p0``-``p1``, the fraction along it (0..1), and its length."""
    ax, ay = p0
    dx, dy = p1[0] - ax, p1[1] - ay
    ll = max(dx * dx + dy * dy, 1e-6)
    px = x - np.float32(ax)
    py = y - np.float32(ay)
    t = np.clip((px * np.float32(dx) + py * np.float32(dy)) * np.float32(1.0 / ll), 0.0, 1.0)
    qx = px - t * np.float32(dx)
    qy = py - t * np.float32(dy)
    return np.sqrt(qx * qx + qy * qy), t, math.sqrt(ll)


def _segment_sdf(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float) -> np.ndarray:
    """Signed distance to a tapered capsule from ``p0`` (radius r0) to ``p1`` (radius r1)."""
    d, t, _ = _segment_distance(x, y, p0, p1)
    return d - (np.float32(r0) + t * np.float32(r1 - r0))


def _paint(tis: np.ndarray, box: tuple[slice, slice] | None, mask: np.ndarray, tissue: int, allow: np.ndarray | None = None) -> None:
    if box is None:
        return
    sub = tis[box]
    if allow is not None:
        mask = mask & allow[sub]
    sub[mask] = tissue


# ----------------------------------------------------------------------------------------------
# Slice drawing


@dataclass(frozen=True)
class Couch:
    """The CT table in image mm: a shallow curved slab with a dense shell, foam core and optional pad.

    The slab follows one circular arc (its top surface) and keeps its thickness; its ends are
    rounded. A mattress pad, when present, lies on the top surface under the patient.

    Args:
        top_v: image v (mm) of the couch's top surface at the centre line.
        radius: curvature radius of the couch (mm); the edges rise towards the patient.
        half_width: half-width of the couch.
        shell_mm: thickness of the dense shell.
        core_mm: thickness of the foam core between the upper and lower shell.
        pad_mm: thickness of the mattress on top (0: none).
    """

    top_v: float
    radius: float
    half_width: float
    shell_mm: float
    core_mm: float
    pad_mm: float

    def surface(self, u: np.ndarray) -> np.ndarray:
        """Height of the couch's top surface across the image.

        Args:
            u: lateral image positions (mm).

        Returns:
            Image v (mm) of the surface at each ``u``.
        """
        uu = np.minimum(np.abs(u), self.half_width)
        return self.top_v - (self.radius - np.sqrt(self.radius**2 - uu * uu))

    def sdf(self, u: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm, negative inside) to the slab's cross-section.

        Args:
            u: lateral image positions (mm), shape ``(1, n)`` or like ``dv``.
            dv: image v below the top surface at ``u`` (mm).

        Returns:
            float32 distances; a rounded rectangle in ``(u, dv)``, which is close to the true
            distance because the curve is shallow.
        """
        half_t = self.shell_mm + 0.5 * self.core_mm
        rc = min(half_t, 8.0)
        qx = np.abs(u) - np.float32(self.half_width - rc)
        qy = np.abs(dv - np.float32(half_t)) - np.float32(half_t - rc)
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return (outside + np.minimum(np.maximum(qx, qy), 0) - np.float32(rc)).astype(np.float32, copy=False)


class SliceDrawer:
    """Draws tissue maps of one patient on one canvas (one acquisition), slice by slice.

    Args:
        body: the patient.
        geo: geometry from :func:`derive`.
        canvas: pixel grid and body placement.
        couch: the table, or None for none.
        rng: random generator for per-scan detail (intramuscular fat, colon gas bubbles).
        oral_contrast: the patient drank positive oral contrast (bright small bowel content).
    """

    def __init__(
        self,
        body: Body,
        geo: SimpleNamespace,
        canvas: Canvas,
        couch: Couch | None,
        rng: np.random.Generator,
        oral_contrast: bool = False,
    ) -> None:
        self.body, self.g, self.cv, self.couch, self.rng = body, geo, canvas, couch, rng
        self.oral_contrast = oral_contrast
        n = canvas.size
        self.shape = (n, n)
        self._t32 = {k: np.asarray(getattr(geo, k), np.float32) for k in ("core_table", "skin_table", "fat_table", "wall_depth")}
        self.rho, self.phi = polar(canvas.x, canvas.y, 0.0, geo.yc)
        self.d_core = lookup(self._t32["core_table"], self.phi) - self.rho
        self._septa: np.ndarray | None = None
        self._patches: np.ndarray | None = None
        self.bubble_field = np.zeros(self.shape, np.float32)
        self.base = self._draw_base()
        self.bowel = _BowelLayout(body, geo, np.random.default_rng(body.bowel_seed))

    # -- per case ---------------------------------------------------------------------------
    def _draw_base(self) -> np.ndarray:
        g, cv = self.g, self.cv
        tis = np.zeros(self.shape, np.uint8)
        d_skin = lookup(self._t32["skin_table"], self.phi) - self.rho
        if self.couch is not None:
            vclip = self.couch.surface(cv.u) - self.couch.pad_mm
            d_out = np.minimum(d_skin, vclip.astype(np.float32)[None, :] - cv.v[:, None])
        else:
            d_out = d_skin
        self.d_out = d_out
        body = d_out > 0
        tis[body] = T.SUBCUTANEOUS_FAT
        tis[body & (d_out <= g.skin)] = T.SKIN
        # Scarpa's fascia: a thin, interrupted line inside the anterior subcutaneous fat.
        ft = lookup(self._t32["fat_table"], self.phi)
        sc = np.abs(d_out - g.skin - g.scarpa * ft) < 0.45
        sc &= (ft > 12.0) & (lookup(np.asarray(g.scarpa_gate, np.float32), self.phi) > 0.3)
        sc &= np.abs(self.phi) < 1.9
        tis[sc & body] = T.FASCIA
        dc = self.d_core
        core = dc > 0
        tis[core] = T.VISCERAL_FAT
        # Back fascia over the erector spinae and the posterior flank.
        tis[core & (dc < 1.2) & (np.abs(self.phi) > 1.75)] = T.FASCIA
        self._draw_wall(tis)
        self._draw_erector(tis)
        self._draw_couch(tis)
        return tis

    def _draw_wall(self, tis: np.ndarray) -> None:
        g = self.g
        dmax = float(g.wall_depth.max()) + 0.5
        band = (self.d_core > 0) & (self.d_core < dmax) & (np.abs(self.phi) < 2.45)
        idx = np.flatnonzero(band)
        d = self.d_core.ravel()[idx]
        ph = self.phi.ravel()[idx]
        out = np.zeros(idx.size, np.uint8)
        acc = np.zeros(idx.size, np.float32)
        for tissue, table in g.layers:
            t = lookup(np.asarray(table, np.float32), ph)
            hit = (d >= acc) & (d < acc + t) & (out == 0)
            out[hit] = tissue
            acc = acc + t
        keep = out > 0
        tis.ravel()[idx[keep]] = out[keep]

    def _draw_erector(self, tis: np.ndarray) -> None:
        g, cv = self.g, self.cv
        for k, s in enumerate((-1, 1)):
            sf = g.side_f(4, s)
            hw = g.es_hw * sf
            cx = s * (hw * 0.9 + 1.0)
            cy = g.y_tp + 0.5 * g.es_depth
            lat, med = hw * 1.25, hw * 0.9
            # Boxy towards the spinous process and laminae, rounded laterally.
            p = (3.0, 2.2, 2.4, 3.0) if s > 0 else (2.2, 3.0, 3.0, 2.4)
            post = g.core_post - cy + 7.0
            tab = quadrant_table(lat if s > 0 else med, med if s > 0 else lat, 0.5 * g.es_depth + 3.0, post, p, 360)
            tab = tab * (1.0 + g.es_wobble[k])
            star = Star(cx, cy, tab, -s * np.radians(8.0))
            box = cv.star_box(star, 1.0)
            if box is None:
                continue
            x, y = cv.x[box], cv.y[box]
            sd = star.sdf(x, y)
            dc = self.d_core[box]
            ax = x * s
            es = (sd < 0) & (dc > 1.2) & (ax > 0.9)
            # Anterior limit: behind the laminae medially, behind the transverse processes laterally.
            cw, cd = g.canal_w / 2, g.canal_d
            front = np.interp(ax, [0.0, cw + 5.0, g.tp_tip, g.tp_tip + 30.0], [g.canal_cy + cd / 2 + 5.0, g.canal_cy + 6.5, g.y_tp + 2.0, g.y_tp + 6.0])
            es &= y > front
            sub = tis[box]
            sub[es] = T.ERECTOR_SPINAE
            # Multifidus medially, then longissimus and iliocostalis, separated by thin fascial
            # planes that leave the lamina and transverse process region and run posterolaterally.
            f1, f2 = g.es_septa[k]
            rel = (ax - 1.0) / (2.0 * hw)
            depth = np.clip((y - g.y_tp) / max(g.es_depth, 1.0), 0.0, 1.3)
            b1 = f1 + 0.30 * depth - 0.10 * depth * depth + 0.012 * np.sin(6.0 * depth + k)
            b2 = f2 + 0.12 * depth + 0.06 * (depth - 0.5) ** 2 + 0.012 * np.sin(5.0 * depth + 2 * k)
            sub[es & (rel < b1)] = T.MULTIFIDUS
            # A plane is a fraction of a millimetre thick (thicker with fatty degeneration) but at
            # least about a pixel, so that it reads as a continuous line rather than dashes.
            half = max(0.4 + 0.4 * min(self.body.imat * 12, 1.0), 0.55 * cv.spacing) / (2.0 * hw)
            sep = (np.abs(rel - b1) < half) | ((np.abs(rel - b2) < half) & (depth > 0.12))
            sub[es & sep] = T.INTERMUSCULAR_FAT

    def _draw_couch(self, tis: np.ndarray) -> None:
        c = self.couch
        if c is None:
            return
        cv = self.cv
        surf = c.surface(cv.u).astype(np.float32)
        thick = 2.0 * c.shell_mm + c.core_mm
        # Only the rows the couch and pad can reach.
        lo = np.searchsorted(cv.v, float(surf.min()) - c.pad_mm - 1.0)
        hi = np.searchsorted(cv.v, float(surf.max()) + thick + 1.0)
        if lo >= hi:
            return
        dv = cv.v[lo:hi, None] - surf[None, :]
        sd = c.sdf(cv.u[None, :], dv)
        sub = tis[lo:hi]
        free = sub == T.AIR
        sub[free & (sd <= 0)] = T.TABLE_SHELL
        # A shell thinner than two pixels would break into dashes where it crosses pixel rows.
        sub[free & (sd <= -max(c.shell_mm, 1.8 * cv.spacing))] = T.TABLE_CORE
        if c.pad_mm > 0:
            pad = (np.abs(cv.u) < c.half_width - 6.0)[None, :] & (dv < 0) & (dv >= -c.pad_mm)
            sub[free & pad] = T.PAD

    # -- per slice --------------------------------------------------------------------------
    def draw(self, z: float) -> np.ndarray:
        """Paint the tissue map of the slice at ``z`` mm from the L3 mid-level.

        Args:
            z: slice position (positive towards the head).

        Returns:
            uint8 tissue map of the canvas shape.
        """
        tis = self.base.copy()
        # One blob field per slice serves colon gas bubbles and intramuscular fat (disjoint regions).
        self.bubble_field = gaussian_field(self.rng, self.shape, max(1.2 / self.cv.spacing, 0.8))
        levels = getattr(self.g, "levels", None)
        self._draw_quadratus(tis, z)
        self._draw_psoas(tis, z)
        self._draw_vessels(tis, z)
        if levels is not None:
            self._draw_crura(tis, z, levels)
        self._draw_kidneys(tis, z)
        self._draw_liver(tis, z)
        if levels is not None:
            self._draw_spleen(tis, z, levels)
        self.bowel.draw(self, tis, z)
        if levels is not None:
            self._draw_ribs(tis, z, levels)
            self._draw_iliac_crests(tis, z, levels)
        self._draw_spine(tis, z)
        self._draw_imat(tis)
        return tis

    def _star(self, tis: np.ndarray, star: Star, tissue: int, allow: np.ndarray | None = None, halo: float = 0.0, halo_tissue: int = T.INTERMUSCULAR_FAT, halo_allow: np.ndarray | None = None) -> tuple[tuple[slice, slice] | None, np.ndarray | None]:
        box = self.cv.star_box(star, halo + 1.0)
        if box is None:
            return None, None
        sd = star.sdf(self.cv.x[box], self.cv.y[box])
        if halo > 0:
            _paint(tis, box, (sd >= 0) & (sd < halo), halo_tissue, halo_allow)
        _paint(tis, box, sd < 0, tissue, allow)
        return box, sd

    #: Fat rims around quadratus lumborum and psoas (mm; 0: none) and the share of a rim left out in
    #: gaps. Synthetic data v2 (:mod:`kerasmuscle.synth.v2`) varies them per sample; v1 keeps these.
    ql_rim_mm = 1.2
    psoas_rim_mm = 1.0
    rim_gaps = 0.0

    def _rim(self, tis: np.ndarray, star: Star, tissue: int, allow: np.ndarray, rim: float,
             rim_allow: np.ndarray) -> None:
        """Paint a muscle with its fat rim of ``rim`` mm, broken into pieces when :attr:`rim_gaps` > 0."""
        if self.rim_gaps <= 0.0 or rim <= 0.0:
            self._star(tis, star, tissue, allow, halo=rim, halo_allow=rim_allow)
            return
        box = self.cv.star_box(star, rim + 1.0)
        if box is None:
            return
        sd = star.sdf(self.cv.x[box], self.cv.y[box])
        gate = gaussian_field(self.rng, sd.shape, max(3.0 / self.cv.spacing, 1.0))
        keep = gate > np.quantile(gate, self.rim_gaps)
        _paint(tis, box, (sd >= 0) & (sd < rim) & keep, T.INTERMUSCULAR_FAT, rim_allow)
        _paint(tis, box, sd < 0, tissue, allow)

    def _ql_star(self, k: int, s: int, z: float) -> Star:
        g = self.g
        lv = getattr(g, "levels", None)
        if lv is None:
            f = g.side_f(3, s) * (1.0 - 0.01 * z) * getattr(g, "ql_scale", 1.0)
            rx, ry = g.ql_rx * f, g.ql_ry * f
        else:
            # Largest at L3, thinner towards its rib attachment (L2) and its iliac insertion (L4).
            f = g.side_f(3, s) * max(1.0 - lv.ql_lin * z - lv.ql_quad * z * z, 0.35) * getattr(g, "ql_scale", 1.0)
            rx, ry = g.ql_rx * f, g.ql_ry * f * (1.0 if z > 0 else max(1.0 + 0.006 * z, 0.6))
        cx = s * (g.tp_tip + rx * 0.45 + getattr(g, "ql_shift_mm", 0.0))
        cy = g.y_tp - 2.0 + getattr(g, "ql_depth_mm", 0.0)
        tab = ellipse_table(rx, ry, egg=0.12, egg_angle=-s * np.pi / 2, wobble=g.ql_wobble[k], n=360)
        return Star(cx, cy, tab, -s * np.radians(24.0))

    def _draw_quadratus(self, tis: np.ndarray, z: float) -> None:
        for k, s in enumerate((-1, 1)):
            self._rim(tis, self._ql_star(k, s, z), T.QUADRATUS_LUMBORUM, _ON_SOFT, self.ql_rim_mm, _ON_ES)

    def _psoas_star(self, k: int, s: int, z: float) -> Star:
        g = self.g
        lv = getattr(g, "levels", None)
        flat = getattr(g, "ps_flat", 1.0)  # > 1: wider than deep (a flat teardrop)
        if lv is None:
            f = g.side_f(2, s) * (1.0 - 0.011 * z)
            rx, ry = g.ps_rx * f * flat**0.5, g.ps_ry * f / flat**0.5
            cx = s * (g.vb_hw + rx * 0.72 - 0.15 * z + getattr(g, "ps_gap_mm", 0.0))
        else:
            # Small at L2 (about half its L3 area), large at L4 (about 1.3x), beside the body at every level.
            f = g.side_f(2, s) * float(np.clip(1.0 - (lv.ps_up if z > 0 else lv.ps_down) * z, 0.45, 1.4))
            rx, ry = g.ps_rx * f * flat**0.5, g.ps_ry * f / flat**0.5
            cx = s * (g.vb_hw * lv.vb_scale_at(z) + rx * 0.72 - 0.05 * z + getattr(g, "ps_gap_mm", 0.0))
        cy = -0.12 * g.vb_hd + 0.1 * z
        tab = ellipse_table(rx, ry, egg=getattr(g, "ps_egg", 0.13), egg_angle=np.pi + s * np.radians(35),
                            wobble=g.psoas_wobble[k], n=360)
        return Star(cx, cy, tab, s * np.radians(18.0))

    def _draw_psoas(self, tis: np.ndarray, z: float) -> None:
        for k, s in enumerate((-1, 1)):
            self._rim(tis, self._psoas_star(k, s, z), T.PSOAS_MAJOR, _ON_SOFT, self.psoas_rim_mm,
                      _ON_QL_ES)

    def _draw_vessels(self, tis: np.ndarray, z: float) -> None:
        g, b = self.g, self.body
        ra = b.aorta_radius_mm
        ay = -g.vb_hd - ra - 1.5
        ax = b.aorta_x_mm
        lv = getattr(g, "levels", None)
        if lv is not None and z < lv.bif_z:
            # Below the bifurcation: the two common iliac arteries, diverging caudally.
            sep = min((lv.bif_z - z) / 12.0, 1.0)
            for s in (-1, 1):
                r = ra * (1.0 - 0.3 * sep)
                self._star(tis, Star(ax - 0.4 * ra * sep + s * (0.4 + 1.4 * sep) * ra, ay + 0.3 * ra * sep, np.full(90, r)),
                           T.ARTERY, _ON_FAT)
            box = None
        else:
            box, sd = self._star(tis, Star(ax, ay, np.full(90, ra)), T.ARTERY, _ON_FAT)
        if box is not None and b.aortic_calcification > 0.05:
            x, y = self.cv.x[box], self.cv.y[box]
            ang = np.arctan2(x - ax, ay - y)
            n = 1 + int(b.aortic_calcification * 3.5)
            spot = np.zeros(sd.shape, bool)
            for c in g.ao_calc[:n]:
                dd = np.abs(np.angle(np.exp(1j * (ang - c))))
                spot |= dd < 0.25 + 0.35 * b.aortic_calcification
            _paint(tis, box, spot & (sd > -1.6) & (sd < 0.2), T.CALCIFICATION)
        irx, iry = b.ivc_radii_mm
        iy = -g.vb_hd - iry - 2.0
        self._star(tis, Star(-(g.vb_hw * 0.45 + irx * 0.55), iy, ellipse_table(irx, iry, n=180), np.radians(-12)), T.IVC, _ON_FAT)
        # Ureters in front of the psoas.
        for k, s in enumerate((-1, 1)):
            ps = self._psoas_star(k, s, z)
            self._star(tis, Star(ps.cx - s * 2.0, ps.cy - g.ps_ry - 3.5, np.full(60, 2.3)), T.URINE, _ON_FAT)
        # Superior mesenteric artery and vein in the root of the mesentery.
        sma = self.sma(z)
        self._star(tis, Star(sma[0], sma[1], np.full(60, 3.2)), T.ARTERY, _ON_FAT, halo=0.0)
        self._star(tis, Star(sma[0] - 12.0, sma[1] + 0.5, ellipse_table(5.5, 4.5, n=90)), T.MESENTERIC_VEIN, _ON_FAT)

    def sma(self, z: float) -> tuple[float, float]:
        """Body-frame centre of the superior mesenteric artery (in front of aorta and duodenum).

        Args:
            z: slice position (mm).

        Returns:
            ``(x, y)`` in mm.
        """
        g, b = self.g, self.body
        front = -g.vb_hd - 2 * b.aorta_radius_mm - 1.5
        duo = self.bowel.duodenum_at(z)
        front -= duo[3] * 2 + 3.0 if duo is not None else 6.0
        return b.aorta_x_mm + g.sma_dx, front - 4.0

    def _kidney_section(self, k: int, s: int, z: float) -> tuple[float, float, float, float] | None:
        g, b = self.g, self.body
        tip = b.kidney_pole_mm[k]
        if z <= tip:
            return None
        half_len = 55.0
        t = min((z - tip) / half_len, 1.0)
        f = math.sqrt(max(1.0 - (1.0 - t) ** 2, 0.0))
        rx = b.kidney_size_mm[k] * f
        if rx < 3.0:
            return None
        ry = 0.78 * b.kidney_size_mm[k] * f
        contact = getattr(g, "kidney_contact", None)
        if contact is not None and contact[k] is not None:
            # Against psoas (medially) and quadratus lumborum (posteriorly), as in real CT, where the
            # lower pole lies right beside the psoas; ``contact`` is the gap (mm, < 0: pressed into them,
            # which the muscles win, denting the kidney).
            tab = ellipse_table(rx, ry, n=90)
            ps_lat = _extent(self._psoas_star(k, s, z), s, 0.0)
            ql_front = -_extent(self._ql_star(k, s, z), 0.0, -1.0)
            med = _extent(Star(0.0, 0.0, tab, s * g.kidney_angle[k]), -s, 0.0)
            post = _extent(Star(0.0, 0.0, tab, s * g.kidney_angle[k]), 0.0, 1.0)
            cx = s * (ps_lat + contact[k] + med + 3.0 * (1.0 - t))
            cy = ql_front - post - contact[k] - 3.0 * (1.0 - t)
            return cx, cy, rx, ry
        # The lower pole lies lateral and anterior; the section moves medially towards the hilum.
        cx = s * (g.vb_hw + 2.0 * g.ps_rx + 0.8 * rx + 6.0 + 6.0 * (1.0 - t))
        cy = g.y_tp - 0.5 * g.ql_ry - 0.75 * ry - 3.0 - 6.0 * (1.0 - t)
        return cx, cy, rx, ry

    def _draw_kidneys(self, tis: np.ndarray, z: float) -> None:
        g = self.g
        for k, s in enumerate((-1, 1)):
            sec = self._kidney_section(k, s, z)
            if sec is None:
                continue
            cx, cy, rx, ry = sec
            ang = s * g.kidney_angle[k]
            tab = ellipse_table(rx, ry, wobble=g.kidney_wobble[k], n=360)
            star = Star(cx, cy, tab, ang)
            box, sd = self._star(tis, star, T.KIDNEY_CORTEX, _ON_FAT)
            if box is None:
                continue
            cort = 4.5 + 0.06 * rx
            if rx > 12:
                inner = Star(cx, cy, np.maximum(tab - cort, 0.5) * (1.0 + g.medulla_wobble[k]), ang)
                sdm = inner.sdf(self.cv.x[box], self.cv.y[box])
                _paint(tis, box, (sdm < 0) & (sd < -2.5), T.KIDNEY_MEDULLA, _lut((T.KIDNEY_CORTEX,)))

    def _draw_liver(self, tis: np.ndarray, z: float) -> None:
        g, b = self.g, self.body
        size = b.liver_tip_mm
        tip_z = -0.6 * size
        lv = getattr(g, "levels", None)
        if size <= 0 and lv is not None:
            size, tip_z = lv.liver_r, lv.liver_z
        if size <= 0:
            return
        if z <= tip_z:
            return
        f = min(math.sqrt((z - tip_z) / (size * 1.5)), 1.0)
        r = size * f
        ph = -np.radians(95.0)
        rc = float(lookup(self._t32["core_table"], np.array([ph]))[0]) - float(lookup(self._t32["wall_depth"], np.array([ph]))[0])
        rho = rc - 0.55 * r - 3.0
        cx, cy = rho * math.sin(ph), g.yc - rho * math.cos(ph)
        tab = ellipse_table(0.6 * r, 1.5 * r, wobble=g.liver_wobble, n=360)
        self._star(tis, Star(cx, cy, tab, np.radians(-15)), T.LIVER, _ON_VISCERAL)

    def _draw_spine(self, tis: np.ndarray, z: float) -> None:
        g, cv = self.g, self.cv
        hh = g.vb_hh
        lv = getattr(g, "levels", None)
        tp_tip = g.tp_tip
        vb_table = g.vb_table
        if lv is not None:
            # One vertebra per period (body and disc): L2 above, L4 below, each its own size.
            m, z = lv.segment(z)
            vb_table = vb_table * lv.vb_scale(m)
            tp_tip = tp_tip * lv.tp_scale(m)
        # Vertebral body, or disc near the endplates; the body is waisted at mid-height.
        waist = 1.0 + 0.05 * (z / hh) ** 2
        if abs(z) >= hh - 0.8:
            star = Star(0.0, 0.0, vb_table * waist * 1.03)
            self._star(tis, star, T.INTERVERTEBRAL_DISC)
        else:
            star = Star(0.0, 0.0, vb_table * waist)
            box, sd = self._star(tis, star, T.CORTICAL_BONE)
            shell = g.cortex * (2.2 if abs(z) > hh - 3.0 else 1.0)
            if box is not None:
                _paint(tis, box, sd < -shell, T.CANCELLOUS_BONE)
                # Basivertebral venous foramen at the posterior midline.
                x, y = cv.x[box], cv.y[box]
                bv = ((x / 2.2) ** 2 + ((y - (g.vb_hd - g.vb_conc - 3.5)) / 3.5) ** 2) < 1.0
                _paint(tis, box, bv & (sd < 0), T.FASCIA)
        # Canal with the dural sac in epidural fat.
        ccy = g.canal_cy
        canal_tab = ellipse_table(g.canal_w / 2, g.canal_d / 2, n=360) * (1.0 + 0.12 * np.cos(3.0 * (angles(360) - np.pi)))
        canal = Star(0.0, ccy, canal_tab)
        cw = g.canal_w / 2
        pieces = self._arch_pieces(z, tp_tip)
        # Facet joints near the endplates: inferior articular processes medial, superior lateral.
        facet = None
        if z < -hh + 9.0:
            facet = 1.0 - (z + hh) / 9.0
        elif z > hh - 8.0:
            facet = 1.0 - (hh - z) / 8.0
        self._draw_arch(tis, pieces)
        if facet is not None and facet > 0:
            for s in (-1, 1):
                c_med = (s * (cw + 2.5), ccy + 0.45 * g.canal_d)
                c_lat = (s * (cw + 8.5), ccy + 0.15 * g.canal_d)
                for (cx, cy), rx, ry, ang in ((c_lat, 4.5, 8.0, s * 0.6), (c_med, 4.5, 7.5, s * 0.6)):
                    rr = 0.6 + 0.4 * facet
                    star = Star(cx, cy, ellipse_table(rx * rr, ry * rr, n=180), ang)
                    # The joint space (halo) separates the two processes.
                    box, sd = self._star(tis, star, T.CORTICAL_BONE, halo=1.2, halo_tissue=T.FASCIA, halo_allow=_lut((T.CORTICAL_BONE, T.CANCELLOUS_BONE)))
                    if box is not None:
                        _paint(tis, box, sd < -3.2, T.CANCELLOUS_BONE)
        box = cv.star_box(canal, 1.0)
        if box is not None:
            x, y = cv.x[box], cv.y[box]
            sd = canal.sdf(x, y)
            _paint(tis, box, sd < 0, T.INTERMUSCULAR_FAT)
            sac = ((x / (0.36 * g.canal_w)) ** 2 + ((y - ccy + 0.6) / (0.36 * g.canal_d)) ** 2) < 1.0
            _paint(tis, box, sac & (sd < 0), T.CSF)

    def _arch_pieces(self, z: float, tp_tip: float | None = None) -> list[tuple[list[tuple[float, float]], list[float]]]:
        """Centre lines and radius profiles of the parts of the neural arch cut by slice ``z`` (``tp_tip``:
        the transverse processes' reach, default the body's).

        Each piece is a polyline with a radius at every vertex; which pieces appear depends on the
        level (pedicles and transverse processes near mid-height, laminae and the spinous process
        lower down, the tip of the L2 spinous process above).
        """
        g = self.g
        hh = g.vb_hh
        tip = g.tp_tip if tp_tip is None else tp_tip
        cw, cd, ccy, y_lam = g.canal_w / 2, g.canal_d, g.canal_cy, g.y_lam
        pieces: list[tuple[list[tuple[float, float]], list[float]]] = []
        if -0.1 * hh < z < 0.85 * hh:
            # Pedicles: short thick struts from the body's posterolateral corners.
            for s in (-1, 1):
                pieces.append(([(s * (cw + 2.0), g.vb_hd - 5.0), (s * (cw + 4.0), ccy + 1.5)], [4.3, 4.0]))
        tp_dz = abs(z - g.tp_z)
        if tp_dz < g.tp_hh:
            # Transverse processes: thick where pedicle and lamina meet, tapering to a narrower
            # rounded tip and sweeping posterolaterally; thinner towards their upper and lower edges.
            # The taper is mostly on the posterior side, so the anterior border stays nearly straight.
            f = math.sqrt(1.0 - (tp_dz / g.tp_hh) ** 2)
            u = np.array([0.0, 0.15, 0.35, 0.6, 0.82, 1.0])
            x0, y0 = cw + 4.5, ccy + 0.5
            y1 = ccy + 1.0 + g.tp_sweep * (tip - cw)
            r = (g.tp_end_r + (g.tp_root_r - g.tp_end_r) * (1.0 - u) ** 1.3) * f + 0.6
            yc = y0 + (y1 - y0) * u**1.25 + 0.5 * (r - r[-1])
            for s in (-1, 1):
                pts = [(s * (x0 + (tip - x0) * t), yy) for t, yy in zip(u, yc)]
                pieces.append((pts, r.tolist()))
        if -hh - 4.0 < z < 0.7 * hh:
            # Laminae: a thick arch round the back of the canal, with the bulge of the articular
            # processes at each pedicle-lamina junction.
            for s in (-1, 1):
                pieces.append(([(s * (cw + 4.0), ccy + 1.5), (s * (0.55 * cw + 1.0), ccy + cd / 2 + 2.2), (0.0, y_lam - 1.8)], [4.2, 3.6, 3.6]))
                pieces.append(([(s * (cw + 3.0), ccy + 2.0), (s * (cw + 4.5), ccy + cd / 2 + 2.0)], [3.6, 3.0]))
        sp_top = 0.4 * hh
        ux, uy = math.sin(g.sp_tilt), math.cos(g.sp_tilt)
        if -hh - 8.0 < z < sp_top:
            # Spinous process: broad where it leaves the laminae, tapering backwards to a blunt,
            # slightly bulbous tip (shorter where the slice cuts its sloping upper edge).
            ln = g.sp_len * (1.0 if z < sp_top - 4 else 0.6)
            ts = [-3.5, 0.3 * ln, 0.7 * ln, ln - 3.0]
            rs = [g.sp_base_r, 0.72 * g.sp_base_r, 0.5 * g.sp_base_r, g.sp_tip_r]
            pieces.append(([(t * ux, y_lam + t * uy) for t in ts], rs))
        elif z >= sp_top + 2.0:
            # Tip of the L2 spinous process above the interspinous space.
            ts = [0.6 * g.sp_len, 0.8 * g.sp_len]
            pieces.append(([(t * ux, y_lam + t * uy) for t in ts], [0.9 * g.sp_tip_r + 0.8, g.sp_tip_r + 1.2]))
        return pieces

    def _draw_arch(self, tis: np.ndarray, pieces: list[tuple[list[tuple[float, float]], list[float]]]) -> None:
        """Paint the union of the arch pieces as cortical bone around a cancellous core.

        The pieces share one distance field, so the shell runs round their union instead of
        drawing seams where they overlap, and the marrow of the pedicles joins that of the body.
        """
        if not pieces:
            return
        cv = self.cv
        pad = 2.0 + max(max(r) for _, r in pieces)
        xs = [p[0] for pts, _ in pieces for p in pts]
        ys = [p[1] for pts, _ in pieces for p in pts]
        box = cv.box(min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad)
        if box is None:
            return
        sd = np.full((box[0].stop - box[0].start, box[1].stop - box[1].start), np.inf, np.float32)
        for pts, radii in pieces:
            for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
                q = max(r0, r1) + 1.0
                sb = cv.box(min(p0[0], p1[0]) - q, max(p0[0], p1[0]) + q, min(p0[1], p1[1]) - q, max(p0[1], p1[1]) + q)
                if sb is None:
                    continue
                d = _segment_sdf(cv.x[sb], cv.y[sb], p0, p1, r0, r1)
                view = sd[sb[0].start - box[0].start : sb[0].stop - box[0].start, sb[1].start - box[1].start : sb[1].stop - box[1].start]
                np.minimum(view, d, out=view)
        sub = tis[box]
        # The body's marrow stays; the arch's own marrow may cut through the body's posterior
        # cortex where the pedicles join it.
        sub[(sd < 0) & (sub != T.CANCELLOUS_BONE)] = T.CORTICAL_BONE
        sub[sd < -self.g.arch_shell] = T.CANCELLOUS_BONE

    # -- levels L2 to L4 and arms (synthetic data v2; see :func:`level_geometry`, :func:`sample_arms`) --
    def _polyline(self, tis: np.ndarray, pts: list[tuple[float, float]], radii: list[float], tissue: int,
                  allow: np.ndarray | None, core: int | None = None, shell: float = 0.0) -> None:
        """Paint a tapered capsule chain (one distance field), with a ``core`` tissue deeper than ``shell`` mm."""
        cv = self.cv
        pad = 1.0 + max(radii)
        box = cv.box(min(p[0] for p in pts) - pad, max(p[0] for p in pts) + pad,
                     min(p[1] for p in pts) - pad, max(p[1] for p in pts) + pad)
        if box is None:
            return
        x, y = cv.x[box], cv.y[box]
        sd = np.full(x.shape, np.inf, np.float32)
        for p0, p1, r0, r1 in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
            np.minimum(sd, _segment_sdf(x, y, p0, p1, r0, r1), out=sd)
        _paint(tis, box, sd < 0, tissue, allow)
        if core is not None:
            _paint(tis, box, sd < -shell, core, _lut((tissue,)))

    def _on_outline(self, phi: float, depth: float) -> tuple[float, float]:
        """Body-frame point ``depth`` mm inside the core's outline at angle ``phi`` (about the body centre)."""
        g = self.g
        rho = float(lookup(self._t32["core_table"], np.array([phi], np.float32))[0]) - depth
        return rho * math.sin(phi), g.yc - rho * math.cos(phi)

    def _draw_crura(self, tis: np.ndarray, z: float, lv: Levels) -> None:
        """The crura of the diaphragm: muscle bands on the anterolateral vertebral body at L2 (the right
        one longer, sometimes reaching L3); muscle-dense, labelled background."""
        g = self.g
        for k, s in enumerate((-1, 1)):
            t = lv.crus_mm[k] * min((z - lv.crus_z[k]) / 12.0, 1.0)
            if t < 1.0:
                continue
            w = lv.vb_scale_at(z)
            pts = []
            for a in np.radians(lv.crus_deg[k]):
                r = float(lookup(np.asarray(g.vb_table, np.float32), np.array([s * a], np.float32))[0]) * w + 0.5 * t + 0.4
                pts.append((r * math.sin(s * a), -r * math.cos(s * a)))
            self._polyline(tis, pts, [0.5 * t, 0.5 * t, 0.3 * t], T.DIAPHRAGM_CRUS, _ON_FAT)

    def _draw_spleen(self, tis: np.ndarray, z: float, lv: Levels) -> None:
        """The spleen's lower pole, left posterolateral against the wall, from about L2 upwards."""
        if z <= lv.spleen_z:
            return
        r = lv.spleen_r * min(math.sqrt((z - lv.spleen_z) / (1.5 * lv.spleen_r)), 1.0)
        if r < 3.0:
            return
        ph = lv.spleen_deg * math.pi / 180.0
        cx, cy = self._on_outline(ph, float(lookup(self._t32["wall_depth"], np.array([ph], np.float32))[0]) + 0.6 * r + 3.0)
        tab = ellipse_table(0.65 * r, 1.3 * r, wobble=self.g.liver_wobble, n=360)
        self._star(tis, Star(cx, cy, tab, np.radians(30.0)), T.SPLEEN, _ON_VISCERAL)

    def _draw_ribs(self, tis: np.ndarray, z: float, lv: Levels) -> None:
        """The tips of the lowest ribs in the posterolateral wall at L2: small bone ovals, background."""
        for s, z0, deg, depth, r_in, r_along in lv.ribs:
            if z <= z0:
                continue
            f = min((z - z0) / 6.0, 1.0)
            ph = s * deg * math.pi / 180.0
            cx, cy = self._on_outline(ph, depth)
            tab = ellipse_table(r_in * (0.5 + 0.5 * f), r_along * f + 1.0, n=180)
            box, sd = self._star(tis, Star(cx, cy, tab, ph), T.CORTICAL_BONE, _ON_SOFT)
            if box is not None and r_in > 4.0:
                _paint(tis, box, sd < -1.6, T.CANCELLOUS_BONE, _lut((T.CORTICAL_BONE,)))

    def _draw_iliac_crests(self, tis: np.ndarray, z: float, lv: Levels) -> None:
        """The iliac crests at low L4: bone arcs inside the posterolateral outline, where the lateral wall
        meets quadratus lumborum and the erector spinae; longer the lower the slice."""
        for k, s in enumerate((-1, 1)):
            below = lv.crest_z[k] - z
            if below <= 0:
                continue
            span = math.radians(min(5.0 + 1.6 * below, 45.0))
            a0 = s * math.radians(lv.crest_deg[k])
            r = lv.crest_mm[k] * min(0.45 + below / 10.0, 1.0)
            pts = [self._on_outline(a0 + s * span * (u - 0.4), lv.crest_depth[k] + r) for u in (0.0, 0.35, 0.7, 1.0)]
            self._polyline(tis, pts, [r, r, 0.9 * r, 0.7 * r], T.CORTICAL_BONE, _ON_SOFT, T.CANCELLOUS_BONE,
                           lv.crest_cortex)

    def add_arms(self, arms: list[SimpleNamespace]) -> None:
        """Paint arms lying beside the body (from :func:`sample_arms`) into the per-scan tissue map, on air
        only, so that an arm pressed against the flank stays outside the body outline. Skin, subcutaneous
        fat, arm muscle (background: not a trunk muscle), septa, and bone with its cortex and marrow."""
        cv = self.cv
        for arm in arms:
            star = Star(arm.cx, arm.cy, arm.table, arm.angle)
            box = cv.star_box(star, 1.0)
            if box is None:
                continue
            x, y = cv.x[box], cv.y[box]
            sub = self.base[box]
            sd = star.sdf(x, y)
            own = (sd < 0) & (sub == T.AIR)
            sub[own] = T.SKIN
            sub[own & (sd < -arm.skin)] = T.SUBCUTANEOUS_FAT
            inner = Star(arm.cx + arm.muscle_dx, arm.cy + arm.muscle_dy, arm.muscle_table, arm.angle)
            muscle = own & (inner.sdf(x, y) < 0) & (sd < -arm.skin - 1.0)
            sub[muscle] = T.ARM_MUSCLE
            for bx, by, tab, ang, cortex, marrow in arm.bones:
                bone = Star(bx, by, tab, ang)
                sdb = bone.sdf(x, y)
                if arm.septum is not None:
                    # A fat plane between the flexor and extensor compartments, through the bone.
                    nx, ny, half = arm.septum
                    sub[muscle & (np.abs((x - np.float32(bx)) * np.float32(nx) + (y - np.float32(by)) * np.float32(ny)) < half)
                        & (sdb > 0)] = T.INTERMUSCULAR_FAT
                sub[own & (sdb < 0)] = T.CORTICAL_BONE
                sub[own & (sdb < -cortex)] = marrow

    def _draw_imat(self, tis: np.ndarray) -> None:
        """Fatty infiltration of the muscles: speckles and streaks that grow with ``imat``.

        Young, normal muscle stays homogeneous (only the fascial planes of the erector spinae show);
        with age and myosteatosis fat appears first as speckles and then as streaks along the
        fascicles, clustered in patches and strongest in the multifidus and erector spinae.
        """
        imat = self.body.imat
        if imat * max(f for _, f in _IMAT_FACTORS) <= _SPECKLE_ONSET:
            return
        sp = self.cv.spacing
        if self._septa is None:
            # Per scan, so that streaks and patches continue from slice to slice: a field
            # stretched antero-posteriorly (streaks at its zero crossings) and a coarse patch field.
            fy = np.fft.fftfreq(self.shape[0]).astype(np.float32)[:, None]
            fx = np.fft.rfftfreq(self.shape[1]).astype(np.float32)[None, :]
            sx, sy = 5.0 / sp, 9.0 / sp
            filt = np.exp(np.float32(-2 * np.pi**2) * (np.float32(sx * sx) * fx * fx + np.float32(sy * sy) * fy * fy))
            self._septa = filtered_noise(self.rng, self.shape, filt)
            self._patches = gaussian_field(self.rng, self.shape, 6.0 / sp)
        blobs = self.bubble_field
        patches = self._patches
        speck_field = (blobs + np.float32(0.5) * patches) * np.float32(1.0 / math.sqrt(1.25))
        lines = np.abs(self._septa + np.float32(0.1) * blobs)
        t_line = np.zeros(256, np.float32)
        t_speck = np.full(256, 99.0, np.float32)
        for tid, factor in _IMAT_FACTORS:
            m = imat * factor
            speck = min(max(m - _SPECKLE_ONSET, 0.0) * 0.9, 0.3)
            streak = min(max(m - _STREAK_ONSET, 0.0) * 0.8, 0.3)
            if speck > 0:
                t_speck[tid] = _norm_ppf(1.0 - speck)
            if streak > 0:
                # Streaks are drawn only where patches > 0 (half the area), hence twice the share.
                t_line[tid] = _norm_ppf(0.5 + streak)
        fat = ((lines < t_line[tis]) & (patches > 0)) | (speck_field > t_speck[tis])
        tis[fat] = T.INTERMUSCULAR_FAT


# Relative fat infiltration of each muscle (the paraspinal muscles degenerate first and most), and
# the infiltration index above which speckles and streaks begin.
_IMAT_FACTORS = (
    (T.ERECTOR_SPINAE, 1.0),
    (T.MULTIFIDUS, 1.5),
    (T.PSOAS_MAJOR, 0.4),
    (T.QUADRATUS_LUMBORUM, 0.9),
    (T.RECTUS_ABDOMINIS, 0.7),
    (T.EXTERNAL_OBLIQUE, 0.4),
    (T.INTERNAL_OBLIQUE, 0.4),
    (T.TRANSVERSUS_ABDOMINIS, 0.3),
)
_SPECKLE_ONSET = 0.014
_STREAK_ONSET = 0.032


def _norm_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1e-8)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    p = min(max(p, 1e-12), 1 - 1e-12)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_norm_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


# ----------------------------------------------------------------------------------------------
# Bowel


class _BowelLayout:
    """Small bowel loops, colon, duodenum and mesenteric vessels of one scan, in the body frame."""

    def __init__(self, body: Body, g: SimpleNamespace, rng: np.random.Generator) -> None:
        self.body, self.g, self.rng = body, g, rng
        self.loops: dict[str, np.ndarray] | None = None
        self.vessels: np.ndarray | None = None
        self._bubble_thr = float(rng.uniform(0.6, 1.3))
        self._colon_cache: dict[float, list[tuple[float, float, float, int]]] = {}

    def duodenum_at(self, z: float) -> tuple[float, float, float, float] | None:
        """Where the third part of the duodenum crosses in front of the great vessels.

        Args:
            z: slice position (mm).

        Returns:
            Centre and semi-axes ``(cx, cy, rx, ry)`` in mm, or None when it is not in the slice.
        """
        b, g = self.body, self.g
        if not b.duodenum or abs(z - g.duo_z) > 9.0:
            return None
        ry = 8.5
        cy = -g.vb_hd - 2 * b.aorta_radius_mm - 2.5 - ry
        return -8.0, cy, 36.0 * g.ms**0.3, ry

    def _inner(self, phi: np.ndarray) -> np.ndarray:
        g = self.g
        return lookup(np.asarray(g.core_table, np.float32), phi) - lookup(np.asarray(g.wall_depth, np.float32), phi)

    def _colons(self, drawer: SliceDrawer, z: float) -> list[tuple[float, float, float, int]]:
        """Centre, radius and index of the ascending, descending and (if present) transverse colon."""
        g, b = self.g, self.body
        if z in self._colon_cache:
            return self._colon_cache[z]
        out = []
        specs = [(0, b.colon_radii_mm[0]), (1, b.colon_radii_mm[1])]
        if b.transverse_colon and abs(z - g.tc_z) < 14:
            specs.append((2, 16.0 + 6.0 * g.colon_gas[2]))
        for k, r in specs:
            r = r * (1.0 + 0.03 * math.sin(z / 4.0 + k))
            ph = g.colon_phi[k]
            rin = float(self._inner(np.array([ph], np.float32))[0])
            rho = rin - r - 3.0
            cx, cy = rho * math.sin(ph), g.yc - rho * math.cos(ph)
            # The colon lies in the paracolic gutter; where the kidney's lower pole fills it the
            # colon sits in front of the kidney instead (checked against the largest pole section
            # of the scan so that it does not jump between slices).
            kid = drawer._kidney_section(k, 2 * k - 1, 12.0) if k < 2 else None
            if kid is not None and math.hypot(cx - kid[0], cy - kid[1]) < r + max(kid[2], kid[3]) + 4.0:
                cx = kid[0] * 0.92
                cy = kid[1] - kid[3] - r - 4.0
                rho_c, ph_c = math.hypot(cx, cy - g.yc), math.atan2(cx, g.yc - cy)
                lim = float(self._inner(np.array([ph_c], np.float32))[0]) - r - 3.0
                if rho_c > lim:
                    cx, cy = lim * math.sin(ph_c), g.yc - lim * math.cos(ph_c)
            out.append((cx, cy, r, k))
        self._colon_cache[z] = out
        return out

    def _frontier(self, drawer: SliceDrawer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anterior border of the retroperitoneum, y as a function of |x| for each side."""
        g, b = self.g, self.body
        ay = -g.vb_hd - 2 * b.aorta_radius_mm - 1.5
        duo = self.duodenum_at(0.0)
        mid = (duo[1] - duo[3] if duo is not None else ay) - 4.0
        xs = []
        ys = []
        for k, s in enumerate((-1, 1)):
            ps = drawer._psoas_star(k, s, 0.0)
            x1 = abs(ps.cx)
            y1 = ps.cy - g.ps_ry - 3.0
            sec = drawer._kidney_section(k, s, 0.0)
            kx = x1 + 2.5 * g.ps_rx
            ky = y1 + 8.0 if sec is None else sec[1] - sec[3] - 3.0
            if sec is not None:
                kx = abs(sec[0])
            xs.append(np.array([0.0, 20.0, x1, kx, kx + 25.0, 400.0]))
            ys.append(np.array([mid, mid + 2.0, y1, ky, ky + 22.0, ky + 40.0]))
        return xs[0], ys[0], np.stack([xs[1], ys[1]])

    def _pack(self, drawer: SliceDrawer) -> None:
        g, b, rng = self.g, self.body, self.rng
        xr, yr, left = self._frontier(drawer)
        colons = self._colons(drawer, 0.0)
        blockers = [(c[0], c[1], c[2] + 2.5) for c in colons]
        duo = self.duodenum_at(0.0)
        if duo is not None:
            blockers += [(duo[0] + dx, duo[1], duo[3] + 2.0) for dx in np.linspace(-duo[2] + duo[3], duo[2] - duo[3], 6)]
        sma = drawer.sma(0.0)
        blockers.append((sma[0] - 6, sma[1], 9.0))
        if b.liver_tip_mm > 0:
            ph = -np.radians(95.0)
            rin = float(self._inner(np.array([ph], np.float32))[0])
            rho = rin - 0.55 * b.liver_tip_mm
            blockers.append((rho * math.sin(ph), g.yc - rho * math.cos(ph), b.liver_tip_mm * 0.9))
        n = 4000
        W = g.core_w
        ytop = g.yc - g.d_ant
        ybot = g.y_tp + 40.0
        x = rng.uniform(-W, W, n)
        y = rng.uniform(ytop, ybot, n)
        kind_all = rng.random(n)
        tube_all = b.bowel_loop_mm * np.where(kind_all < 0.25, rng.uniform(0.45, 0.7, n), rng.uniform(0.7, 1.5, n))
        span_all = tube_all * rng.uniform(0.0, 1.3, n)
        R = tube_all + 0.7 * span_all
        rho, phi = polar(x.astype(np.float32), y.astype(np.float32), 0.0, g.yc)
        inner = self._inner(phi)
        yf = np.where(x < 0, np.interp(-x, xr, yr), np.interp(x, left[0], left[1]))
        ok_in = (rho < inner - 3.0) & (y < yf)
        cavity = (2 * W) * (ybot - ytop) * ok_in.mean()
        valid = ok_in & (rho + 0.85 * R < inner - 1.5) & (y + 0.85 * R < yf)
        target = b.bowel_fill * cavity / (1.0 + 0.2 * g.visc)
        bx = np.array([q[0] for q in blockers])
        by = np.array([q[1] for q in blockers])
        br = np.array([q[2] for q in blockers])
        drawn = np.pi * tube_all**2 + 4.0 * tube_all * span_all
        acc: list[int] = []
        area = 0.0
        gap = -1.5 + 2.0 * min(g.visc, 2.5)
        ax = np.empty(0)
        ay = np.empty(0)
        ar = np.empty(0)
        for i in np.flatnonzero(valid):
            if area >= target:
                break
            if np.any(np.hypot(bx - x[i], by - y[i]) < br + 0.8 * R[i]):
                continue
            if acc and np.any(np.hypot(ax - x[i], ay - y[i]) < 0.7 * (ar + R[i]) + gap):
                continue
            acc.append(int(i))
            ax, ay, ar = x[acc], y[acc], R[acc]
            area += float(drawn[i])
        sel = np.asarray(acc, np.intp)
        m = sel.size
        kind = kind_all[sel]
        self.loops = {
            "x": x[sel], "y": y[sel], "tube": tube_all[sel], "span": span_all[sel],
            "ang": rng.uniform(0, np.pi, m), "bend": rng.normal(0, 0.9, m), "dx": rng.normal(0, 0.3, m), "dy": rng.normal(0, 0.3, m),
            "dang": rng.normal(0, 0.04, m), "zc": rng.uniform(-12, 12, m), "zh": rng.uniform(10, 45, m),
            "kind": kind, "gas": rng.uniform(0.1, 0.55, m), "folds": rng.random(m) < np.where(x[sel] > 0, 0.45, 0.15),
            "wall": rng.uniform(1.4, 2.8, m), "phase": rng.uniform(0, 6.3, m), "oral": rng.random(m) < 0.7,
            "bubble": rng.random(m) < 0.25,
        }
        # Mesenteric vessels: short segments radiating from the root of the mesentery.
        k = int(rng.integers(15, 36))
        cand = np.flatnonzero(ok_in)[:k]
        root = np.array([sma[0] - 6.0, sma[1]])
        dirs = np.stack([x[cand] - root[0], y[cand] - root[1]], 1)
        dirs /= np.maximum(np.hypot(dirs[:, 0], dirs[:, 1]), 1e-6)[:, None]
        ln = rng.uniform(2.0, 14.0, cand.size)
        self.vessels = np.stack([x[cand], y[cand], dirs[:, 0] * ln, dirs[:, 1] * ln, rng.uniform(0.6, 1.6, cand.size), rng.random(cand.size)], 1)

    def draw(self, drawer: SliceDrawer, tis: np.ndarray, z: float) -> None:
        """Paint colon, duodenum, small bowel and mesenteric vessels of one slice.

        Args:
            drawer: the slice drawer (canvas, other organs' positions).
            tis: the tissue map, painted in place (only over visceral fat).
            z: slice position (mm).
        """
        if self.loops is None:
            self._pack(drawer)
        g = self.g
        oral = drawer.oral_contrast
        for cx, cy, r, k in self._colons(drawer, z):
            tab = np.full(360, r, np.float64) * (1.0 + g.colon_wobble[k])
            box, sd = self._region(drawer, Star(cx, cy, tab), r)
            if box is not None:
                self._fill(drawer, tis, box, sd, None, 2.0, "colon", g.colon_gas[k], False, 0.0)
        duo = self.duodenum_at(z)
        if duo is not None:
            cx, cy, rx, ry = duo
            sag = 0.25 * ry
            pts = [(cx - rx, cy + sag), (cx - 0.3 * rx, cy - sag), (cx + 0.4 * rx, cy - 0.5 * sag), (cx + rx, cy + sag)]
            self._tube(drawer, tis, pts, ry, 2.2, "contrast" if oral else "fluid", 0.15, False, 0.0)
        L = self.loops
        assert L is not None
        for i in range(L["x"].size):
            dz = z - L["zc"][i]
            if abs(dz) > L["zh"][i]:
                continue
            rt = L["tube"][i] * math.sqrt(max(1.0 - (dz / L["zh"][i]) ** 4, 0.3))
            cx = L["x"][i] + L["dx"][i] * z
            cy = L["y"][i] + L["dy"][i] * z
            a = L["ang"][i] + L["dang"][i] * z
            sp = L["span"][i]
            ux, uy = math.cos(a), math.sin(a)
            bend = L["bend"][i]
            pts = [(cx - sp * ux, cy - sp * uy), (cx - bend * 0.5 * sp * uy, cy + bend * 0.5 * sp * ux), (cx + sp * ux, cy + sp * uy)]
            c = L["kind"][i]
            if c < 0.25:
                kind = "collapsed"
            elif c > 0.9:
                kind = "gas"
            elif oral and L["oral"][i]:
                kind = "contrast"
            elif c < 0.55:
                kind = "fluid"
            else:
                kind = "chyme"
            folds = bool(L["folds"][i]) and kind in ("fluid", "contrast")
            gas = L["gas"][i] if kind == "gas" or L["bubble"][i] else 0.0
            self._tube(drawer, tis, pts, rt, L["wall"][i], kind, gas, folds, L["phase"][i])
        assert self.vessels is not None
        for x0, y0, dx, dy, r, c in self.vessels:
            shift = 0.3 * z
            p0 = (x0 + shift * dy / 10, y0 - shift * dx / 10)
            p1 = (p0[0] + dx, p0[1] + dy)
            pad = r + 1.0
            box = drawer.cv.box(min(p0[0], p1[0]) - pad, max(p0[0], p1[0]) + pad, min(p0[1], p1[1]) - pad, max(p0[1], p1[1]) + pad)
            if box is None:
                continue
            sd = _segment_sdf(drawer.cv.x[box], drawer.cv.y[box], p0, p1, r, r * 0.7)
            _paint(tis, box, sd < 0, T.ARTERY if c < 0.35 else T.MESENTERIC_VEIN, _ON_VISCERAL)

    def _tube(self, drawer: SliceDrawer, tis: np.ndarray, pts: list[tuple[float, float]], rt: float, wall: float, kind: str, gas: float, folds: bool, phase: float) -> None:
        """Paint a bowel segment shaped as a tube of radius ``rt`` along a polyline."""
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        pad = rt + 1.5
        box = drawer.cv.box(min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad)
        if box is None:
            return
        x, y = drawer.cv.x[box], drawer.cv.y[box]
        sd = along = None
        offset = 0.0
        for p0, p1 in zip(pts[:-1], pts[1:]):
            d, t = _segment_sdf_t(x, y, p0, p1, rt)
            t = t + np.float32(offset)
            if sd is None:
                sd, along = d, t
            else:
                closer = d < sd
                sd = np.where(closer, d, sd)
                along = np.where(closer, t, along)
            offset += math.hypot(p1[0] - p0[0], p1[1] - p0[1])
        self._fill(drawer, tis, box, sd, along, wall, kind, gas, folds, phase, rt)

    def _region(self, drawer: SliceDrawer, st: Star, r: float) -> tuple[tuple[slice, slice] | None, np.ndarray | None]:
        box = drawer.cv.star_box(st, 1.0)
        if box is None:
            return None, None
        return box, st.sdf(drawer.cv.x[box], drawer.cv.y[box])

    def _fill(self, drawer: SliceDrawer, tis: np.ndarray, box: tuple[slice, slice], sd: np.ndarray, along: np.ndarray | None, wall: float, kind: str, gasfrac: float, folds: bool, phase: float, tube: float = 0.0) -> None:
        """Paint one bowel segment given its signed distance: wall, content, gas level, folds."""
        sub = tis[box]
        m = (sd < 0) & _ON_VISCERAL[sub]
        if not m.any():
            return
        sub[m] = T.BOWEL_WALL
        if kind == "collapsed":
            # A collapsed loop is nearly all wall with a thin, irregular slit of content.
            lumen = m & (sd < -0.72 * tube)
            sub[lumen] = T.BOWEL_GAS if gasfrac > 0.3 else T.BOWEL_FLUID
            return
        lumen = m & (sd < -wall)
        fill = {"colon": T.STOOL, "contrast": T.ORAL_CONTRAST, "fluid": T.BOWEL_FLUID, "gas": T.BOWEL_FLUID, "chyme": T.CHYME}[kind]
        sub[lumen] = fill
        if folds and along is not None:
            # Valvulae conniventes: thin folds across the lumen, the jejunum's feathery pattern.
            fold = np.sin(along * np.float32(2 * np.pi / 3.4) + np.float32(phase)) > 0.6
            sub[lumen & fold & (sd > -0.55 * (tube if tube else 10.0))] = T.BOWEL_WALL
        if kind == "colon":
            sub[lumen & (drawer.bubble_field[box] > self._bubble_thr)] = T.BOWEL_GAS
        if gasfrac <= 0 or not lumen.any():
            return
        rows = np.nonzero(lumen)[0]
        top, bottom = rows.min(), rows.max()
        frac = gasfrac if kind in ("gas", "colon") else gasfrac * 0.2
        level = top + frac * (bottom - top + 1)
        # Gas rises to the non-dependent part (upper rows in a supine patient) with a flat level.
        sub[lumen & (np.arange(sub.shape[0])[:, None] < level)] = T.BOWEL_GAS


def _segment_sdf_t(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], r: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to a capsule of radius ``r`` and the position (mm) along its axis."""
    d, t, length = _segment_distance(x, y, p0, p1)
    return d - np.float32(r), t * np.float32(length)


# ----------------------------------------------------------------------------------------------
# Levels L2 to L4, kidneys against the muscles, arms beside the body (synthetic data v2)


def _extent(star: Star, ux: float, uy: float) -> float:
    """How far a star's contour reaches along the direction ``(ux, uy)`` (body frame, from the origin)."""
    a = angles(star.table.shape[0]) + star.angle
    r = np.asarray(star.table, np.float64)
    return float(np.max((star.cx + r * np.sin(a)) * ux + (star.cy - r * np.cos(a)) * uy))


_LEVEL_NAMES = {3: "T12", 2: "L1", 1: "L2", 0: "L3", -1: "L4", -2: "L5", -3: "S1"}


@dataclass
class Levels:
    """How one patient's anatomy changes from L2 (above, ``z`` > 0) to L4 (below), drawn by
    :func:`level_geometry` and read by :class:`SliceDrawer` as ``geo.levels``.

    Args:
        period: craniocaudal distance of two vertebrae (body and disc, mm).
        vb_up: relative decrease of the vertebral body's size per vertebra upwards.
        vb_down: relative increase per vertebra downwards.
        tp: transverse process reach of L2 and L4 relative to L3's (L3's are the longest).
        ps_up: relative decrease of the psoas' radius per mm upwards (half its area at L2).
        ps_down: relative increase per mm downwards.
        ql_lin: linear coefficient of quadratus lumborum's size change (per mm upwards).
        ql_quad: quadratic coefficient: thinner at both ends.
        bif_z: the aortic bifurcation (mm; the common iliac arteries below).
        liver_z: lower edge of the right liver lobe where the body has none at L3 (mm).
        liver_r: its size (mm).
        spleen_z: lower pole of the spleen (mm).
        spleen_r: its size (mm).
        spleen_deg: its angle about the body centre (degrees from anterior, to the left).
        crus_z: lower end of the right and left crus of the diaphragm (mm).
        crus_mm: their thickness.
        crus_deg: angles on the vertebral body (from anterior) the right and left crus run along.
        crest_z: top of the right and left iliac crest (mm).
        crest_mm: radius of the crests' cross-section.
        crest_deg: angle of the crests about the body centre (degrees from anterior).
        crest_depth: depth of the crests inside the core outline (mm).
        crest_cortex: cortical shell of the crests (mm).
        ribs: the lowest rib tips: ``(side, z of the tip, angle in degrees, depth, half-width, half-length)``.
    """

    period: float
    vb_up: float
    vb_down: float
    tp: tuple[float, float]
    ps_up: float
    ps_down: float
    ql_lin: float
    ql_quad: float
    bif_z: float
    liver_z: float
    liver_r: float
    spleen_z: float
    spleen_r: float
    spleen_deg: float
    crus_z: tuple[float, float]
    crus_mm: tuple[float, float]
    crus_deg: tuple[tuple[float, float, float], tuple[float, float, float]]
    crest_z: tuple[float, float]
    crest_mm: tuple[float, float]
    crest_deg: tuple[float, float]
    crest_depth: tuple[float, float]
    crest_cortex: float
    ribs: list[tuple[int, float, float, float, float, float]]

    def segment(self, z: float) -> tuple[int, float]:
        """The vertebra a slice cuts (0 L3, 1 L2, -1 L4, up to ±3) and ``z`` relative to its mid-level."""
        m = int(np.clip(round(z / self.period), -3, 3))
        return m, z - m * self.period

    def vb_scale(self, m: int) -> float:
        """Size of vertebra ``m`` relative to L3."""
        return 1.0 - self.vb_up * m if m > 0 else 1.0 - self.vb_down * m

    def vb_scale_at(self, z: float) -> float:
        """The vertebral size interpolated at ``z`` (for the muscles beside it)."""
        return self.vb_scale(1) ** (z / self.period) if z > 0 else self.vb_scale(-1) ** (-z / self.period)

    def tp_scale(self, m: int) -> float:
        """Transverse process reach of vertebra ``m`` relative to L3's."""
        return 1.0 if m == 0 else (self.tp[0] if m > 0 else self.tp[1]) * (0.92 if abs(m) > 1 else 1.0)

    def name(self, z: float, half_height: float) -> str:
        """``"L3"``, ``"L2-L3 disc"``, ... for the slice at ``z``."""
        m, zl = self.segment(z)
        if abs(zl) < half_height - 0.8:
            return _LEVEL_NAMES[m]
        upper, lower = (m + 1, m) if zl > 0 else (m, m - 1)
        return f"{_LEVEL_NAMES.get(upper, '?')}-{_LEVEL_NAMES.get(lower, '?')} disc"

    def to_dict(self) -> dict:
        """The drawn values, JSON-safe and rounded (for a sample's record)."""
        out = {}
        for k, v in self.__dict__.items():
            out[k] = np.round(np.asarray(v, float), 4).tolist() if not isinstance(v, (int, float)) else round(float(v), 4)
        return out


def level_geometry(rng: np.random.Generator, body: Body, geo: SimpleNamespace) -> Levels:
    """Draw how the patient's anatomy changes from L2 to L4 and attach it to ``geo`` (``geo.levels``), so
    that :class:`SliceDrawer` draws any level from about mid-L2 to mid-L4 plausibly: the vertebra and disc
    at ``z``, psoas small at L2 and large at L4, quadratus lumborum thinner at both ends, the kidneys
    (present by their lower poles, :attr:`Body.kidney_pole_mm`), liver and spleen lower poles and the
    crura of the diaphragm towards L2 with the lowest rib tips, the aortic bifurcation and the iliac
    crests towards L4.

    Args:
        rng: the random generator (only this; the body's own draws are untouched).
        body: the patient.
        geo: its geometry from :func:`derive` (changed in place).

    Returns:
        The :class:`Levels` attached.
    """
    u = rng.uniform
    fr = body.frame
    crest = u(-50.0, -30.0)
    right_crus = u(-12.0, 18.0)
    ribs = []
    for s in (-1, 1):
        lowest = u(0.0, 45.0)
        for j in range(int(rng.integers(1, 3))):
            ribs.append((s, lowest + 14.0 * j, u(100.0, 132.0) - 9.0 * j, u(-1.0, 5.0), u(3.0, 5.5) * fr, u(5.0, 10.0) * fr))
    lv = Levels(
        period=2.0 * geo.vb_hh + u(7.0, 12.0) * fr,
        vb_up=u(0.02, 0.06), vb_down=u(0.02, 0.06), tp=(u(0.75, 0.95), u(0.72, 0.92)),
        ps_up=u(0.0085, 0.011), ps_down=u(0.003, 0.0055), ql_lin=u(-0.001, 0.003), ql_quad=u(1.2e-4, 2.4e-4),
        bif_z=u(-50.0, -22.0), liver_z=u(0.0, 70.0), liver_r=u(22.0, 45.0),
        spleen_z=u(20.0, 90.0), spleen_r=u(18.0, 35.0), spleen_deg=u(105.0, 128.0),
        crus_z=(right_crus, right_crus + u(5.0, 20.0)), crus_mm=(u(3.0, 7.5), u(3.0, 6.5)),
        crus_deg=tuple((u(5.0, 20.0), u(35.0, 50.0), u(62.0, 80.0)) for _ in range(2)),  # type: ignore[arg-type]
        crest_z=(crest + u(-4.0, 4.0), crest + u(-4.0, 4.0)), crest_mm=(u(4.0, 7.0) * fr, u(4.0, 7.0) * fr),
        crest_deg=(u(112.0, 135.0), u(112.0, 135.0)), crest_depth=(u(2.0, 14.0), u(2.0, 14.0)),
        crest_cortex=u(1.0, 2.2), ribs=ribs,
    )
    geo.levels = lv
    return lv


def kidney_contact(rng: np.random.Generator, geo: SimpleNamespace, share: float) -> tuple[float | None, float | None]:
    """Place each kidney against psoas and quadratus lumborum with chance ``share`` (``geo.kidney_contact``):
    the gap drawn is -5..1.5 mm (below 0 the muscles dent the kidney); None keeps it in the fat lateral to them.

    Returns:
        The right and left gap, or None.
    """
    contact = tuple(float(rng.uniform(-5.0, 1.5)) if rng.random() < share else None for _ in range(2))
    geo.kidney_contact = contact
    return contact  # type: ignore[return-value]


def _outline_points(geo: SimpleNamespace) -> tuple[np.ndarray, np.ndarray]:
    phi = angles(len(geo.skin_table))
    r = np.asarray(geo.skin_table, np.float64)
    return r * np.sin(phi), geo.yc - r * np.cos(phi)


def sample_arms(rng: np.random.Generator, body: Body, geo: SimpleNamespace, couch: Couch | None, angle: float,
                origin: tuple[float, float]) -> list[SimpleNamespace]:
    """Draw one or both arms lying beside the body (arms down): an upper arm (humerus with fatty marrow), an
    elbow (the wide distal humerus) or a forearm (radius and ulna), each in skin and subcutaneous fat, on
    the couch, touching the flank or up to 45 mm from it. Paint them with :meth:`SliceDrawer.add_arms`.

    Args:
        rng: the random generator.
        body: the patient (size, fat).
        geo: its geometry (the outline).
        couch: the table the arms rest on, or None.
        angle: the body's in-plane rotation (:class:`~kerasmuscle.synth.shapes.Canvas`).
        origin: the body's image position.

    Returns:
        One namespace per arm (body-frame centre, radius tables, bones, and ``record``).
    """
    xo, yo = _outline_points(geo)
    xo, yo = xo[::2], yo[::2]
    c, sn = math.cos(angle), math.sin(angle)
    r = rng.random()
    sides = (-1, 1) if r < 0.6 else ((-1,) if r < 0.8 else (1,))
    fr = body.frame
    fat = float(np.clip((2.0 + 7.0 * geo.subq) * rng.uniform(0.6, 1.3), 2.0, 30.0))
    arms = []
    for s in sides:
        kind = ("upper", "elbow", "forearm")[int(rng.choice(3, p=[0.45, 0.2, 0.35]))]
        core = {"upper": 31.0, "elbow": 27.0, "forearm": 25.0}[kind] * fr * (0.8 + 0.2 * math.sqrt(body.muscle_scale))
        skin = float(rng.uniform(1.2, 2.2))
        rx = (core + fat + skin) * float(rng.uniform(0.85, 1.05))
        ry = (core + fat + skin) * float(rng.uniform(0.95, 1.2))
        tab = ellipse_table(rx, ry, egg=float(rng.uniform(0.0, 0.12)), egg_angle=float(rng.uniform(0, 2 * np.pi)),
                            wobble=smooth_periodic(rng, 0.04, 2, 5, n=180), n=180)
        ang = float(rng.uniform(-0.5, 0.5))
        gap = -float(rng.uniform(0.0, 6.0)) if rng.random() < 0.45 else float(rng.uniform(2.0, 45.0))
        lift = float(rng.uniform(0.0, 8.0))  # on the couch, or raised a little on a pad or blanket
        cy = geo.yc + float(rng.uniform(-0.1, 0.45)) * geo.d_post
        cx = 0.0
        shape = Star(0.0, 0.0, tab, ang)

        def approach(cy: float) -> float:
            """The arm's centre x where it first comes within ``gap`` of the skin outline (5 mm, then 0.5 mm steps)."""
            far = 600.0
            for step in (5.0, 0.5):
                xs = s * np.arange(far, max(far - 120.0 * step, 0.0), -step)
                d = shape.sdf((xo[None, :] - xs[:, None]).astype(np.float32), np.broadcast_to(
                    (yo - cy).astype(np.float32), (xs.size, yo.size))).min(axis=1)
                hit = int(np.argmax(d <= gap)) if np.any(d <= gap) else xs.size - 1
                far = abs(float(xs[max(hit - 1, 0)]))
            return s * far

        for _ in range(2):
            # Closest approach to the skin outline, then down onto the couch.
            cx = approach(cy)
            if couch is None:
                break
            a = angles(180) + ang
            px, py = cx + tab * np.sin(a), cy - tab * np.cos(a)
            pu, pv = c * px - sn * py + origin[0], sn * px + c * py + origin[1]
            low = int(np.argmax(pv))
            dv = float(couch.surface(np.array([pu[low]]))[0]) - couch.pad_mm - lift - float(pv[low])
            cy += dv / max(c, 0.5)
        muscle_r = tab - skin - fat * float(rng.uniform(0.7, 1.1))
        muscle_r = np.maximum(muscle_r, 0.3 * tab)
        mdx, mdy = (float(v) for v in rng.uniform(-0.1, 0.1, 2) * rx)
        bones = []
        bc = (cx + float(rng.uniform(-0.15, 0.15)) * rx, cy + float(rng.uniform(-0.1, 0.25)) * ry)
        if kind == "upper":
            rb = float(rng.uniform(9.0, 12.5)) * fr
            bones.append((bc[0], bc[1], ellipse_table(rb, rb * float(rng.uniform(0.85, 1.1)), n=90), 0.0,
                          float(rng.uniform(2.5, 5.0)), T.INTERMUSCULAR_FAT if rng.random() < 0.7 else T.CANCELLOUS_BONE))
        elif kind == "elbow":
            bones.append((bc[0], bc[1], ellipse_table(float(rng.uniform(18.0, 26.0)) * fr, float(rng.uniform(8.0, 12.0)) * fr, n=90),
                          float(rng.uniform(-0.6, 0.6)), float(rng.uniform(1.0, 2.0)), T.CANCELLOUS_BONE))
        else:
            t = float(rng.uniform(0.0, np.pi))
            sep = float(rng.uniform(8.0, 14.0)) * fr
            for sign, rb in ((1, float(rng.uniform(6.0, 8.0))), (-1, float(rng.uniform(5.5, 7.5)))):
                bones.append((bc[0] + sign * sep * math.sin(t), bc[1] - sign * sep * math.cos(t),
                              ellipse_table(rb * fr, rb * fr * float(rng.uniform(0.75, 1.0)), n=90), t,
                              float(rng.uniform(1.5, 3.0)), T.INTERMUSCULAR_FAT if rng.random() < 0.5 else T.CANCELLOUS_BONE))
        septum = None
        if rng.random() < 0.7:
            t = float(rng.uniform(0.0, np.pi))
            septum = (math.cos(t), math.sin(t), float(rng.uniform(0.4, 1.1)))
        arms.append(SimpleNamespace(
            cx=cx, cy=cy, table=tab, angle=ang, skin=skin, muscle_table=muscle_r, muscle_dx=mdx, muscle_dy=mdy,
            bones=bones, septum=septum,
            record={"side": "left" if s > 0 else "right", "kind": kind, "gap_mm": round(gap, 1),
                    "size_mm": [round(2 * rx, 1), round(2 * ry, 1)], "fat_mm": round(fat, 1)}))
    return arms


def arms_extent(arms: list[SimpleNamespace], angle: float, origin: tuple[float, float]) -> float:
    """The largest distance (mm) of any arm's outline from the image centre along either image axis."""
    c, sn = math.cos(angle), math.sin(angle)
    far = 0.0
    for arm in arms:
        a = angles(arm.table.shape[0]) + arm.angle
        px, py = arm.cx + arm.table * np.sin(a), arm.cy - arm.table * np.cos(a)
        pu, pv = c * px - sn * py + origin[0], sn * px + c * py + origin[1]
        far = max(far, float(np.abs(pu).max()), float(np.abs(pv).max()))
    return far


__all__ = [
    "FAT_IDS",
    "MUSCLE_IDS",
    "NUM_TISSUES",
    "TISSUES",
    "Body",
    "Couch",
    "Levels",
    "SliceDrawer",
    "Tissue",
    "arms_extent",
    "derive",
    "follow_up_body",
    "kidney_contact",
    "level_geometry",
    "sample_arms",
    "sample_body",
    "tissue_label_lut",
]
