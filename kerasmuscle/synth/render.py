"""Render a tissue map as a CT image in Hounsfield units.

Per case, :func:`tissue_hu` draws the mean attenuation of every tissue for the patient, tube
voltage and contrast phase. Per slice, :meth:`Renderer.render` builds the clean image (means plus
per-tissue texture), smooths the body's skin-air edge to sub-pixel accuracy, applies the scanner's
point spread function (Gaussian partial-volume blur) and adds correlated noise with a filtered
back-projection noise power spectrum (a ramp times an apodisation window). All Fourier work uses the
real FFT of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasmuscle.synth.anatomy import TISSUES, Body, T
from kerasmuscle.synth.shapes import fourier_filter_grid, half_plane_power

HU_MIN, HU_MAX = -1024.0, 3071.0

# Reconstruction kernels: (name as a scanner would write it, apodisation cut-off in cycles/mm).
KERNELS: tuple[tuple[str, float], ...] = (
    ("B30f", 0.60),
    ("Br36", 0.66),
    ("STANDARD", 0.70),
    ("SOFT", 0.50),
    ("FC08", 0.55),
    ("B", 0.60),
    ("I30f", 0.58),
)


@dataclass(frozen=True)
class TissueTables:
    """Per-case lookup tables indexed by tissue id (256 entries each).

    Args:
        mean: mean attenuation (HU).
        fine: amplitude (HU) of fine texture (correlation ~0.45 mm).
        coarse: amplitude (HU) of coarse texture (correlation ~1.6 mm).
    """

    mean: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray


_IODINE = {80: 1.7, 100: 1.3, 120: 1.0, 140: 0.85}
_FAT_SHIFT = {80: -20.0, 100: -8.0, 120: 0.0, 140: 5.0}
_BONE = {80: 1.3, 100: 1.12, 120: 1.0, 140: 0.92}


def tissue_hu(rng: np.random.Generator, body: Body, phase: str, kvp: int) -> TissueTables:
    """Draw the attenuation and texture of every tissue for one scan.

    Args:
        rng: the random generator.
        body: the patient (muscle attenuation, bone density, age).
        phase: ``native``, ``arterial`` or ``portal_venous``.
        kvp: tube voltage (80, 100, 120 or 140).

    Returns:
        The :class:`TissueTables` of the scan.
    """
    k_i = _IODINE.get(kvp, 1.0)
    fat_shift = _FAT_SHIFT.get(kvp, 0.0)
    k_b = _BONE.get(kvp, 1.0)
    u = rng.uniform
    mean = np.full(256, -1000.0)
    fine = np.zeros(256)
    coarse = np.zeros(256)

    def enh(native: float, arterial: tuple[float, float], venous: tuple[float, float]) -> float:
        """Enhanced attenuation for the phase: the drawn target range, scaled for the tube voltage."""
        if phase == "arterial":
            return native + (u(*arterial) - native) * k_i
        if phase == "portal_venous":
            return native + (u(*venous) - native) * k_i
        return native

    age = body.age_years
    mean[T.AIR] = -1000.0
    mean[T.TABLE_SHELL] = u(400, 1000)
    mean[T.TABLE_CORE] = u(-980, -900)
    mean[T.PAD] = u(-940, -860)
    mean[T.SKIN] = u(25, 55)
    sub = u(-120, -98) + fat_shift
    mean[T.SUBCUTANEOUS_FAT] = sub
    mean[T.VISCERAL_FAT] = min(sub + u(3, 14), -78.0)
    mean[T.INTERMUSCULAR_FAT] = min(sub + u(4, 16), -75.0)
    mean[T.FASCIA] = u(25, 65)
    m_enh = {"native": 0.0, "arterial": u(2, 6), "portal_venous": u(5, 11)}[phase] * k_i
    muscle = body.muscle_hu + m_enh
    offsets = {
        T.RECTUS_ABDOMINIS: u(-2, 2),
        T.EXTERNAL_OBLIQUE: u(-2, 2),
        T.INTERNAL_OBLIQUE: u(-2, 2),
        T.TRANSVERSUS_ABDOMINIS: u(-2, 2),
        T.PSOAS_MAJOR: u(0, 4),
        T.QUADRATUS_LUMBORUM: u(-2, 2),
        T.ERECTOR_SPINAE: u(-3, 1) - 0.04 * max(age - 50, 0),
        T.MULTIFIDUS: u(-5, 0) - 0.08 * max(age - 50, 0),
    }
    for tid, off in offsets.items():
        mean[tid] = muscle + off
        fine[tid] = u(2.0, 3.5)
        coarse[tid] = u(1.5, 3.5)
    mean[T.CORTICAL_BONE] = float(np.clip(u(850, 1150) - 4.0 * max(age - 30, 0), 500, 1200)) * k_b
    mean[T.CANCELLOUS_BONE] = body.cancellous_hu * k_b
    mean[T.INTERVERTEBRAL_DISC] = u(65, 100)
    mean[T.CSF] = u(3, 25)
    if phase == "arterial":
        mean[T.KIDNEY_CORTEX] = 30 + (u(150, 200) - 30) * k_i
        mean[T.KIDNEY_MEDULLA] = 30 + (u(60, 100) - 30) * k_i
    elif phase == "portal_venous":
        kv = u(130, 180)
        mean[T.KIDNEY_CORTEX] = 30 + (kv + u(0, 10) - 30) * k_i
        mean[T.KIDNEY_MEDULLA] = 30 + (kv - u(0, 10) - 30) * k_i
    else:
        mean[T.KIDNEY_CORTEX] = u(28, 38)
        mean[T.KIDNEY_MEDULLA] = mean[T.KIDNEY_CORTEX] - u(0, 5)
    blood = u(35, 50) + (5 if body.sex == "M" else 0)
    mean[T.ARTERY] = enh(blood, (250, 400), (130, 180))
    mean[T.IVC] = enh(blood - u(0, 5), (60, 100), (120, 160))
    mean[T.MESENTERIC_VEIN] = enh(blood, (90, 140), (150, 190))
    mean[T.CALCIFICATION] = u(350, 900) * k_b
    wall = u(30, 55)
    mean[T.BOWEL_WALL] = wall + (u(20, 40) * k_i if phase != "native" else 0.0)
    mean[T.BOWEL_FLUID] = u(0, 20)
    mean[T.BOWEL_GAS] = u(-1005, -985)
    mean[T.ORAL_CONTRAST] = u(150, 400) * (0.5 + 0.5 * k_i)
    mean[T.STOOL] = u(-10, 40)
    mean[T.CHYME] = u(15, 45)
    mean[T.LIVER] = enh(u(50, 65), (65, 85), (100, 130))
    mean[T.URINE] = u(0, 15)
    fine[[T.SUBCUTANEOUS_FAT, T.VISCERAL_FAT, T.INTERMUSCULAR_FAT]] = u(3, 6)
    coarse[[T.SUBCUTANEOUS_FAT, T.VISCERAL_FAT, T.INTERMUSCULAR_FAT]] = u(2, 5)
    fine[T.CANCELLOUS_BONE] = u(10, 22) * k_b
    coarse[T.CANCELLOUS_BONE] = u(15, 35) * k_b
    coarse[T.CORTICAL_BONE] = u(30, 80)
    fine[T.STOOL] = u(25, 45)
    coarse[T.STOOL] = u(40, 70)
    coarse[T.LIVER] = u(2, 5)
    fine[[T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA]] = u(3, 6)
    coarse[T.ORAL_CONTRAST] = u(5, 20)
    coarse[T.BOWEL_FLUID] = u(1, 4)
    fine[T.CHYME] = u(4, 10)
    coarse[T.CHYME] = u(6, 15)
    # Tissues only synthetic data v2 paints (arms, crura, spleen): copies of their look-alikes, with no
    # draw of their own, so that every other value, and v1, stays what it was.
    for tid, like, shift in ((T.ARM_MUSCLE, T.RECTUS_ABDOMINIS, 0.0), (T.DIAPHRAGM_CRUS, T.PSOAS_MAJOR, 2.0),
                             (T.SPLEEN, T.LIVER, -6.0)):
        mean[tid], fine[tid], coarse[tid] = mean[like] + shift, fine[like], coarse[like]
    f32 = np.float32
    return TissueTables(mean.astype(f32), fine.astype(f32), coarse.astype(f32))


def nps_filter(shape: tuple[int, int], spacing_mm: float, cutoff: float) -> np.ndarray:
    """Amplitude filter whose square is a filtered back-projection noise power spectrum.

    The spectrum is a ramp ``|f|`` times a squared Hann apodisation window reaching zero at
    ``cutoff``; it vanishes at zero frequency and peaks near ``0.29 * cutoff``.

    Args:
        shape: image shape.
        spacing_mm: pixel spacing.
        cutoff: window cut-off (cycles/mm).

    Returns:
        float32 filter on the ``rfft2`` half plane.
    """
    f = fourier_filter_grid(shape, spacing_mm)
    win = np.where(f < cutoff, 0.5 * (1.0 + np.cos(np.pi * np.minimum(f / np.float32(cutoff), 1.0))), 0.0)
    return np.sqrt(f * win * win).astype(np.float32)


def gaussian_mtf(shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Fourier transform of a unit-sum Gaussian kernel on the ``rfft2`` half plane.

    Args:
        shape: image shape.
        sigma_px: kernel standard deviation (pixels).

    Returns:
        float32 transfer function (1 at zero frequency).
    """
    f = fourier_filter_grid(shape)
    return np.exp(np.float32(-2.0 * np.pi**2 * sigma_px**2) * f * f).astype(np.float32)


class Renderer:
    """Renders slices of one scan: fixed tables, blur, noise spectrum and noise map.

    Args:
        tables: per-tissue attenuation and texture.
        shape: image shape.
        spacing_mm: pixel spacing.
        blur_mm: standard deviation of the Gaussian point spread function.
        noise_hu: noise standard deviation in soft tissue (mean over muscle).
        cutoff: apodisation cut-off of the noise spectrum (cycles/mm).
        noise_map: relative local noise amplitude (smooth, >0), or None for uniform noise.
        edge_alpha: optional ``(flat indices, alpha)`` of the pixels on the skin-air edge and the
            share of each covered by the body; they are set to that mix of skin and air, which
            removes the staircase of a pixel-exact outline.
    """

    def __init__(
        self,
        tables: TissueTables,
        shape: tuple[int, int],
        spacing_mm: float,
        blur_mm: float,
        noise_hu: float,
        cutoff: float,
        noise_map: np.ndarray | None = None,
        edge_alpha: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.t = tables
        self.shape = shape
        self.spacing = spacing_mm
        f = fourier_filter_grid(shape)
        s_f = 0.45 / spacing_mm
        s_c = 1.6 / spacing_mm
        self.tex_f = np.exp(np.float32(-2 * np.pi**2 * s_f**2) * f * f)
        self.tex_c = np.exp(np.float32(-2 * np.pi**2 * s_c**2) * f * f)
        self.gain_f = np.float32(1.0 / np.sqrt(half_plane_power(self.tex_f, shape) / 12.0))
        self.gain_c = np.float32(1.0 / np.sqrt(half_plane_power(self.tex_c, shape) / 12.0))
        self.mtf = gaussian_mtf(shape, blur_mm / spacing_mm)
        nps = nps_filter(shape, spacing_mm, cutoff)
        unit = np.sqrt(half_plane_power(nps, shape) / 12.0)
        self.noise_filter = (nps * np.float32(noise_hu / unit)).astype(np.float32)
        self.noise_map = noise_map
        self.edge_alpha = edge_alpha

    def clean(self, tissues: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The noiseless, unblurred image of a tissue map (means plus texture).

        Args:
            tissues: uint8 tissue map.
            rng: random generator (texture).

        Returns:
            float32 HU image.
        """
        # Both texture scales come from one white field: half the transforms, and a tissue's fine
        # grain then sits on its coarse mottle as in real parenchyma.
        w = rng.random(self.shape, dtype=np.float32)
        w -= np.float32(0.5)
        spec = np.fft.rfft2(w, norm="ortho")
        tf = np.fft.irfft2(spec * self.tex_f, s=self.shape, norm="ortho")
        tc = np.fft.irfft2(spec * self.tex_c, s=self.shape, norm="ortho")
        img = self.t.mean[tissues]
        img += self.t.fine[tissues] * (tf * self.gain_f)
        img += self.t.coarse[tissues] * (tc * self.gain_c)
        if self.edge_alpha is not None:
            idx, alpha = self.edge_alpha
            air = self.t.mean[T.AIR]
            img.ravel()[idx] = air + alpha * (self.t.mean[T.SKIN] - air)
        return img

    def render(self, tissues: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Render one slice: clean image, partial-volume blur, correlated noise, rounding, clipping.

        Args:
            tissues: uint8 tissue map.
            rng: random generator (texture and noise).

        Returns:
            float32 HU image with integer values in [-1024, 3071].
        """
        return self.finish(self.clean(tissues, rng), rng)

    def finish(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Blur, add correlated noise, round and clip a clean image (the second half of :meth:`render`;
        synthetic data v2 averages several clean sub-slices first, for partial volume).

        Args:
            img: float32 clean HU image (consumed).
            rng: random generator (noise).

        Returns:
            float32 HU image with integer values in [-1024, 3071].
        """
        spec = np.fft.rfft2(img, norm="ortho")
        spec *= self.mtf
        w = rng.random(self.shape, dtype=np.float32)
        w -= np.float32(0.5)
        if self.noise_map is not None:
            w *= self.noise_map
        nspec = np.fft.rfft2(w, norm="ortho")
        nspec *= self.noise_filter
        spec += nspec
        out = np.fft.irfft2(spec, s=self.shape, norm="ortho").astype(np.float32, copy=False)
        np.rint(out, out=out)
        np.clip(out, HU_MIN, HU_MAX, out=out)
        return out


__all__ = ["HU_MAX", "HU_MIN", "KERNELS", "TISSUES", "Renderer", "TissueTables", "gaussian_mtf", "nps_filter", "tissue_hu"]
