"""Tests of the synthetic L3 generator core: anatomy, rendering and the case entry point."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from kerasmuscle.config import CONTRAST_PHASES, SynthConfig
from kerasmuscle.synth.anatomy import T, tissue_label_lut
from kerasmuscle.synth.case import TISSUES, SynthCase, follow_up_body, make_case, sample_body
from kerasmuscle.synth.render import Renderer, TissueTables, nps_filter
from kerasmuscle.synth.shapes import Canvas, Star, ellipse_table, gaussian_blur

SMALL = SynthConfig(image_size=256)
MUSCLE_TISSUES = [t.id for t in TISSUES if t.kind == "muscle"]
FAT_TISSUES = [t.id for t in TISSUES if t.kind == "fat"]


@pytest.fixture(scope="module")
def cases() -> list[SynthCase]:
    return [make_case(np.random.default_rng(seed)) for seed in (11, 12, 13)]


@pytest.fixture(scope="module")
def cohort() -> list[SynthCase]:
    return [make_case(np.random.default_rng(1000 + seed), SMALL) for seed in range(40)]


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dr in range(-r, r + 1):
        for dc in range(-r, r + 1):
            out &= np.roll(np.roll(mask, dr, 0), dc, 1)
    return out


def _body_xy(case: SynthCase, sl: int) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame coordinates (mm; x to the patient's left, y posterior) from the vertebral body."""
    tis = case.tissues[sl]
    vb = np.argwhere(np.isin(tis, [T.CORTICAL_BONE, T.CANCELLOUS_BONE, T.INTERVERTEBRAL_DISC]))
    # The vertebral body is the largest bony blob; the posterior elements lie behind it.
    r0, c0 = np.median(vb, 0)
    rows, cols = np.indices(tis.shape)
    a = math.radians(case.acquisition["rotation_deg"])
    du = (cols - c0) * case.pixel_spacing_mm
    dv = (rows - r0) * case.pixel_spacing_mm
    return math.cos(a) * du + math.sin(a) * dv, -math.sin(a) * du + math.cos(a) * dv


def _centroids(case: SynthCase, sl: int) -> dict[tuple[int, int], tuple[float, float]]:
    x, y = _body_xy(case, sl)
    lab = case.labels[sl]
    out = {}
    for k in range(1, 6):
        for side in (-1, 1):
            m = (lab == k) & (np.sign(x) == side)
            if m.any():
                out[(k, side)] = (float(x[m].mean()), float(y[m].mean()))
    return out


def test_deterministic() -> None:
    a = make_case(np.random.default_rng(7), SMALL)
    b = make_case(np.random.default_rng(7), SMALL)
    c = make_case(np.random.default_rng(8), SMALL)
    assert np.array_equal(a.hu, b.hu)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.tissues, b.tissues)
    assert a.acquisition == b.acquisition and a.body == b.body
    assert not np.array_equal(a.hu, c.hu)
    assert not np.array_equal(a.labels, c.labels)


def test_no_global_random_state() -> None:
    np.random.seed(0)
    a = make_case(np.random.default_rng(3), SMALL)
    np.random.seed(12345)
    np.random.random(1000)
    b = make_case(np.random.default_rng(3), SMALL)
    assert np.array_equal(a.hu, b.hu)


def test_shapes_dtypes_ranges(cases: list[SynthCase]) -> None:
    cfg = SynthConfig()
    lut = tissue_label_lut()
    for case in cases:
        shape = (cfg.slices, cfg.image_size, cfg.image_size)
        assert case.hu.shape == case.labels.shape == case.tissues.shape == shape
        assert case.hu.dtype == np.float32 and case.labels.dtype == np.uint8 and case.tissues.dtype == np.uint8
        assert np.array_equal(case.hu, np.rint(case.hu))
        assert case.hu.min() >= -1024 and case.hu.max() <= 3071
        assert case.labels.max() <= 5 and case.tissues.max() < len(TISSUES)
        assert np.array_equal(case.labels, lut[case.tissues])
        assert case.pixel_spacing_mm == pytest.approx(case.acquisition["fov_mm"] / cfg.image_size)
        offs = np.asarray(case.slice_offsets_mm)
        assert np.all(np.diff(offs) == pytest.approx(cfg.slice_spacing_mm))
        assert abs(offs.mean()) < 8.0
        json.dumps(case.patient)
        json.dumps(case.acquisition)
        json.dumps(case.body.to_dict())
        assert case.patient["sex"] in ("M", "F") and 20 <= case.patient["age_years"] <= 92
        bmi = case.patient["weight_kg"] / case.patient["height_m"] ** 2
        assert 16 <= bmi <= 45


def test_tissue_table_consistent() -> None:
    ids = [t.id for t in TISSUES]
    assert ids == list(range(len(TISSUES)))
    assert len({t.name for t in TISSUES}) == len(TISSUES)
    assert {t.label for t in TISSUES if t.kind == "muscle"} == {1, 2, 3, 4, 5}
    assert all(t.label == 0 for t in TISSUES if t.kind != "muscle")


def test_config_fields_honoured() -> None:
    cfg = SynthConfig(image_size=128, slices=5, slice_spacing_mm=3.0, fov_mm=(350.0, 350.0), noise_hu=(12.0, 12.0), contrast_phases=("arterial",))
    case = make_case(np.random.default_rng(5), cfg)
    assert case.hu.shape == (5, 128, 128)
    assert case.acquisition["fov_mm"] == 350.0
    assert case.acquisition["noise_hu"] == pytest.approx(12.0)
    assert case.acquisition["contrast_phase"] == "arterial"
    assert np.allclose(np.diff(case.slice_offsets_mm), 3.0)
    lo = SynthConfig(image_size=128, muscle_scale=(0.6, 0.65), fat_scale=(2.8, 3.0), low_attenuation_fraction=1.0)
    body = sample_body(np.random.default_rng(1), lo)
    assert 0.6 <= body.muscle_scale <= 0.65 and 2.8 <= body.fat_scale <= 3.0
    assert body.low_attenuation and body.muscle_hu < 30


def test_all_labels_on_both_sides(cases: list[SynthCase]) -> None:
    for case in cases:
        cen = _centroids(case, len(case.slice_offsets_mm) // 2)
        for k in range(1, 6):
            for side in (-1, 1):
                assert (k, side) in cen, f"label {k} missing on side {side}"


def test_anatomical_relations(cases: list[SynthCase]) -> None:
    for case in cases:
        sl = len(case.slice_offsets_mm) // 2
        cen = _centroids(case, sl)
        for s in (-1, 1):
            rect, wall, psoas, ql, es = (cen[(k, s)] for k in range(1, 6))
            assert rect[1] < psoas[1] - 40, "rectus anterior to psoas"
            assert es[1] > 25, "erector spinae posterior to the vertebral body"
            assert 20 < abs(psoas[0]) < 70 and abs(psoas[1]) < 25, "psoas beside the vertebral body"
            assert abs(ql[0]) > abs(psoas[0]) + 10, "quadratus lateral to psoas"
            assert ql[1] > psoas[1], "quadratus posterior to the psoas centroid"
            assert abs(wall[0]) > abs(rect[0]) + 40, "abdominal wall lateral to rectus"
            assert wall[1] > rect[1], "abdominal wall behind the rectus line"
            assert abs(rect[0]) < 80 and abs(es[0]) < 60


def test_psoas_grows_caudally(cases: list[SynthCase]) -> None:
    grew = 0
    for case in cases:
        areas = [(case.labels[i] == 3).sum() for i in range(case.labels.shape[0])]
        grew += areas[0] > areas[-1]
    assert grew == len(cases)


def test_areas_physiological(cases: list[SynthCase]) -> None:
    for case in cases:
        pa = case.pixel_spacing_mm**2 / 100.0
        lab = case.labels[1]
        x, _ = _body_xy(case, 1)
        total = (lab > 0).sum() * pa
        assert 50 < total < 260
        for s in (-1, 1):
            ps = ((lab == 3) & (np.sign(x) == s)).sum() * pa
            es = ((lab == 5) & (np.sign(x) == s)).sum() * pa
            assert 3 < ps < 18 and 8 < es < 40


def test_tissue_hu(cases: list[SynthCase]) -> None:
    for case in cases:
        sl = 1
        tis, hu = case.tissues[sl], case.hu[sl]
        muscle = _erode(np.isin(tis, MUSCLE_TISSUES), 2)
        fat = _erode(tis == T.SUBCUTANEOUS_FAT, 2)
        air = _erode(tis == T.AIR, 3)
        mhu = case.acquisition["muscle_hu"]
        assert abs(np.median(hu[muscle]) - mhu) < 10
        assert -20 < np.median(hu[muscle]) < 80
        assert -140 < np.median(hu[fat]) < -60
        assert np.median(hu[air]) < -980
        bone = _erode(tis == T.CORTICAL_BONE, 1)
        if bone.any():
            assert np.median(hu[bone]) > 250


def test_low_attenuation_muscle() -> None:
    cfg = SynthConfig(image_size=128, low_attenuation_fraction=1.0, contrast_phases=("native",))
    case = make_case(np.random.default_rng(2), cfg)
    muscle = _erode(np.isin(case.tissues[1], MUSCLE_TISSUES), 1)
    assert np.median(case.hu[1][muscle]) < 35
    assert case.acquisition["muscle_hu"] <= 32


def test_noise_level_and_correlation() -> None:
    for seed, noise in ((1, 10.0), (2, 20.0)):
        cfg = SynthConfig(noise_hu=(noise, noise))
        case = make_case(np.random.default_rng(seed), cfg)
        sl = 1
        tis, hu = case.tissues[sl], case.hu[sl]
        core = _erode(np.isin(tis, [T.ERECTOR_SPINAE, T.PSOAS_MAJOR]), 3)
        sd = float(hu[core].std())
        assert 0.7 * noise < sd < 1.3 * noise, (sd, noise)
        # Correlated (not white) noise: neighbouring residuals are positively correlated.
        res = hu - np.roll(hu, 4, 1)
        both = core & np.roll(core, 4, 1) & np.roll(core, 1, 1) & np.roll(np.roll(core, 4, 1), 1, 1)
        r1 = np.roll(res, 1, 1)
        rho = np.corrcoef(res[both], r1[both])[0, 1]
        assert rho > 0.15, rho


def test_renderer_noise_calibrated() -> None:
    shape = (256, 256)
    zero = np.zeros(256, np.float32)
    mean = zero.copy()
    mean[1] = 40.0
    r = Renderer(TissueTables(mean, zero, zero), shape, 0.8, 0.6, 15.0, 0.65)
    img = r.render(np.ones(shape, np.uint8), np.random.default_rng(0))
    assert img.mean() == pytest.approx(40.0, abs=1.0)
    assert img.std() == pytest.approx(15.0, rel=0.08)
    res = img - img.mean()
    lag1 = float((res[:, 1:] * res[:, :-1]).mean() / res.var())
    lag3 = float((res[:, 3:] * res[:, :-3]).mean() / res.var())
    assert lag1 > 0.3 and lag3 < lag1
    # The spectrum is zero at DC and peaks at mid frequencies (ramp times window).
    f = nps_filter(shape, 0.8, 0.65)[0]
    assert f[0] == 0 and 0 < int(np.argmax(f)) < len(f) // 2


def test_blur_spreads_edges() -> None:
    img = np.zeros((64, 64), np.float32)
    img[:, 32:] = 100.0
    out = gaussian_blur(img, 1.0)
    assert 10 < out[10, 31] < 50 and 50 < out[10, 32] < 90
    assert out.sum() == pytest.approx(img.sum(), rel=1e-4)


def test_star_shape_and_canvas() -> None:
    cv = Canvas(128, 1.0, math.radians(90), (0.0, 0.0))
    star = Star(20.0, 0.0, ellipse_table(10.0, 5.0, n=360))
    box = cv.star_box(star, 1.0)
    assert box is not None
    inside = star.sdf(cv.x[box], cv.y[box]) < 0
    area = float(inside.sum())
    assert area == pytest.approx(math.pi * 50.0, rel=0.08)
    # Rotated by 90 degrees, body +x (patient left) points down the image (posterior).
    rows, cols = np.nonzero(inside)
    assert rows.mean() + box[0].start > 64 + 15 and abs(cols.mean() + box[1].start - 63.5) < 2


def test_cohort_variation(cohort: list[SynthCase]) -> None:
    cfg = SMALL
    area = np.array([(c.labels[1] > 0).sum() * c.pixel_spacing_mm**2 for c in cohort])
    assert area.std() / area.mean() > 0.15
    fov = np.array([c.acquisition["fov_mm"] for c in cohort])
    lo, hi = cfg.fov_mm
    assert fov.min() >= lo and fov.max() <= hi
    assert fov.max() - fov.min() > 0.6 * (hi - lo)
    assert any(c.body.low_attenuation for c in cohort)
    assert any(c.acquisition["truncated"] or c.body.fat_scale > 2.0 for c in cohort)
    assert {c.acquisition["contrast_phase"] for c in cohort} == set(CONTRAST_PHASES)
    assert {c.body.sex for c in cohort} == {"M", "F"}
    noise = np.array([c.acquisition["noise_hu"] for c in cohort])
    assert noise.min() >= 5 and noise.max() <= 25 and noise.std() > 2
    rot = np.array([c.acquisition["rotation_deg"] for c in cohort])
    assert np.all(np.abs(rot) <= 10) and rot.std() > 1
    width = []
    for c in cohort:
        body = np.isin(c.tissues[1], [t.id for t in TISSUES if t.kind not in ("air", "device")])
        cols = np.nonzero(body.any(0))[0]
        width.append((cols.max() - cols.min()) * c.pixel_spacing_mm)
    assert max(width) - min(width) > 100


def test_truncated_flag_matches_image() -> None:
    cfg = SynthConfig(image_size=128, fov_mm=(320.0, 320.0), fat_scale=(2.5, 3.0))
    case = make_case(np.random.default_rng(4), cfg)
    body = np.isin(case.tissues[1], [t.id for t in TISSUES if t.kind not in ("air", "device")])
    assert case.acquisition["truncated"]
    assert body[:, 0].any() or body[:, -1].any()
    lean = make_case(np.random.default_rng(4), SynthConfig(image_size=128, fov_mm=(500.0, 500.0), fat_scale=(0.3, 0.4)))
    assert not lean.acquisition["truncated"]


def test_follow_up_keeps_skeleton() -> None:
    rng = np.random.default_rng(9)
    body = sample_body(rng, SynthConfig())
    later = follow_up_body(body, rng, SynthConfig())
    skeleton = [f.name for f in dataclasses.fields(body) if f.name.startswith(("vb_", "canal_", "tp_", "spinous", "cortex", "kidney", "aorta", "ivc"))]
    for name in skeleton + ["sex", "height_m", "frame", "shape_seed", "group_size", "asymmetry"]:
        assert getattr(later, name) == getattr(body, name), name
    assert 0.85 - 1e-6 <= later.muscle_scale / body.muscle_scale <= 1.05 + 1e-6
    assert 0.8 - 1e-6 <= later.fat_scale / body.fat_scale <= 1.2 + 1e-6
    assert 0 <= later.age_years - body.age_years <= 2
    assert later.bowel_seed != body.bowel_seed
    cfg = SynthConfig(image_size=128)
    a = make_case(np.random.default_rng(1), cfg, body)
    b = make_case(np.random.default_rng(2), cfg, later)
    assert a.body is body and b.body is later
    assert a.acquisition != b.acquisition


def test_intramuscular_fat_is_unlabelled(cases: list[SynthCase]) -> None:
    for case in cases:
        tis, lab = case.tissues, case.labels
        assert np.all(lab[np.isin(tis, FAT_TISSUES)] == 0)
        # Fat streaks inside the erector spinae exist and are unlabelled holes in the mask.
        x, _ = _body_xy(case, 1)
        es = _erode(lab[1] == 5, 0)
        holes = (tis[1] == T.INTERMUSCULAR_FAT) & _erode(np.isin(lab[1], [5]) | (tis[1] == T.INTERMUSCULAR_FAT), 2)
        assert holes.sum() > 0 and es.sum() > 0


@pytest.fixture(scope="module")
def cohort_full() -> list[SynthCase]:
    """Thirty cases at the default (512) resolution, for fine structures."""
    return [make_case(np.random.default_rng(3000 + seed)) for seed in range(30)]


def _tp_thickness(case: SynthCase, sl: int, frac: float) -> float:
    """Mean antero-posterior bone extent (mm) of both transverse processes at ``frac`` of their length."""
    x, y = _body_xy(case, sl)
    bone = np.isin(case.tissues[sl], [T.CORTICAL_BONE, T.CANCELLOUS_BONE])
    xi = frac * case.body.tp_tip_mm
    out = []
    for s in (-1, 1):
        m = bone & (np.abs(x - s * xi) < 2.0) & (y > 0) & (y < 60)
        out.append(m.sum() * case.pixel_spacing_mm**2 / 4.0)
    return float(np.mean(out))


def test_transverse_processes_taper(cohort_full: list[SynthCase]) -> None:
    seen = 0
    for case in cohort_full:
        for sl in range(len(case.slice_offsets_mm)):
            z = case.slice_offsets_mm[sl]
            hh = case.body.vb_half_height_mm
            if abs(z - case.body.tp_level_mm) > 2.0 or not -hh + 9.0 < z < hh - 8.0:
                continue  # only slices through the processes' mid-height, clear of the facet joints
            seen += 1
            root, mid, tip = (_tp_thickness(case, sl, f) for f in (0.5, 0.7, 0.92))
            # Thick at the root (10-14 mm), 5-7 mm at the tip; a pixel of slack for the staircase.
            sp = case.pixel_spacing_mm
            assert root + sp > mid > tip - sp and root > 1.25 * tip, (root, mid, tip)
            assert 7.0 < root < 16.0 and 3.5 < tip < 9.5, (root, tip)
    assert seen >= 5


def test_spinous_process_tapers(cohort_full: list[SynthCase]) -> None:
    ratios = []
    for case in cohort_full:
        hh = case.body.vb_half_height_mm
        for sl, z in enumerate(case.slice_offsets_mm):
            if not -hh + 9.0 < z < 0.4 * hh - 5.0:
                continue  # slices with the whole process, clear of the facet joints
            x, y = _body_xy(case, sl)
            bone = np.isin(case.tissues[sl], [T.CORTICAL_BONE, T.CANCELLOUS_BONE]) & (np.abs(x) < 10)
            end = y[bone & (np.abs(x) < 5)].max()
            length = case.body.spinous_length_mm

            def width(yy: float) -> float:
                return float((bone & (np.abs(y - yy) < 1.0)).sum() * case.pixel_spacing_mm**2 / 2.0)

            base, shaft = width(end - 0.85 * length), width(end - 0.45 * length)
            assert 2.5 < shaft < 9.0 and base < 16.0, (base, shaft)
            ratios.append(base / shaft)
    # Broad where it leaves the laminae, narrower along the shaft.
    assert len(ratios) >= 10 and np.median(ratios) > 1.2, ratios


def test_posterior_elements_have_marrow(cohort_full: list[SynthCase]) -> None:
    checked = grey = 0
    for case in cohort_full:
        x, y = _body_xy(case, 1)
        tis, hu = case.tissues[1], case.hu[1]
        arch = (np.abs(x) > case.body.canal_width_mm / 2 + 8) & (y > -5) & (y < 50)
        can = _erode(tis == T.CANCELLOUS_BONE, 1) & arch  # away from the rim's partial volume
        cor = (tis == T.CORTICAL_BONE) & arch
        if can.sum() < 20:
            continue
        checked += 1
        # A cortical rim round a cancellous core, as in the vertebral body.
        assert np.median(hu[can]) < np.median(hu[cor]) - 100
        if case.body.cancellous_hu < 130:
            grey += np.median(hu[can]) < 240  # below white in a 40/400 soft-tissue window
    assert checked >= 15 and grey >= 2


def _couch_gap_and_profile(case: SynthCase) -> tuple[float, np.ndarray, np.ndarray]:
    """Smallest gap (mm) between the body and the couch's top surface, and the top surface row per column."""
    tis = case.tissues[1]
    body = np.isin(tis, [t.id for t in TISSUES if t.kind not in ("air", "device")])
    shell = tis == T.TABLE_SHELL
    cols = np.nonzero(shell.any(0))[0]
    top = np.array([np.argmax(shell[:, c]) for c in cols])
    gaps = []
    for c, r in zip(cols, top):
        above = np.nonzero(body[:r, c])[0]
        if above.size:
            gaps.append((r - above.max() - 1) * case.pixel_spacing_mm)
    return (min(gaps) if gaps else float("inf")), cols, top


def test_back_rests_on_couch(cohort_full: list[SynthCase]) -> None:
    close = 0
    for case in cohort_full:
        gap, cols, top = _couch_gap_and_profile(case)
        close += gap <= 10.0
        sp = case.pixel_spacing_mm
        assert (cols.max() - cols.min() + 1) * sp <= 500.0
        # One smooth shallow arc: over the middle of the couch the top surface is a parabola to
        # within a pixel (a kink would leave a V-shaped residual), rising at most a few cm.
        n = cols.size
        mid = slice(n // 5, n - n // 5)
        u = (cols[mid] - cols[mid].mean()) * sp
        v = top[mid] * sp
        fit = np.polyval(np.polyfit(u, v, 2), u)
        assert np.abs(v - fit).max() <= 1.5 * sp
        assert v.max() - v.min() < 25.0
    assert close >= 0.8 * len(cohort_full), close


def _paraspinal_fat(case: SynthCase, sl: int = 1) -> float:
    """Share of fat inside the erector spinae compartments (muscle, septa and infiltration)."""
    tis = case.tissues[sl]
    region = _erode(np.isin(tis, [T.ERECTOR_SPINAE, T.MULTIFIDUS, T.INTERMUSCULAR_FAT]), 2)
    return float((tis[region] == T.INTERMUSCULAR_FAT).mean())


def _count_blobs(mask: np.ndarray) -> int:
    """Number of 8-connected components of a sparse mask."""
    todo = set(zip(*np.nonzero(mask)))
    n = 0
    while todo:
        n += 1
        stack = [todo.pop()]
        while stack:
            r, c = stack.pop()
            for q in ((r + dr, c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)):
                if q in todo:
                    todo.remove(q)
                    stack.append(q)
    return n


def test_paraspinal_fat_grows_with_age_and_myosteatosis(cohort_full: list[SynthCase]) -> None:
    fat = np.array([_paraspinal_fat(c) for c in cohort_full])
    age = np.array([c.body.age_years for c in cohort_full], float)
    low = np.array([c.body.low_attenuation for c in cohort_full])
    assert np.corrcoef(age + 25.0 * low, fat)[0, 1] > 0.4
    young = (age < 55) & ~low
    old = (age >= 70) | low
    assert young.sum() >= 3 and old.sum() >= 3
    # Young normal muscle shows only a few thin fascial planes; infiltration comes with age.
    assert fat[young].max() < 0.07 and fat[old].mean() > 1.5 * fat[young].mean()
    # The planes are present in everybody.
    assert fat.min() > 0.01
    # Planes are few, long and continuous; infiltration adds many small speckles and streaks.
    blobs = []
    for case in cohort_full:
        tis = case.tissues[1]
        region = _erode(np.isin(tis, [T.ERECTOR_SPINAE, T.MULTIFIDUS, T.INTERMUSCULAR_FAT]), 2)
        blobs.append(_count_blobs(region & (tis == T.INTERMUSCULAR_FAT)))
    blobs = np.array(blobs)
    assert np.median(blobs[young]) <= 25 and blobs[old].mean() > 2 * np.median(blobs[young]), (blobs[young], blobs[old])
