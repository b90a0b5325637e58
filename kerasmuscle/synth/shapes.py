"""Geometry primitives for the synthetic L3 generator, in numpy only.

Shapes live in a body frame measured in millimetres (x towards the patient's left, y towards
posterior). A :class:`Canvas` holds the body-frame coordinates of every pixel of one image, so a
shape is evaluated only inside the pixel box that can contain it. Shapes return approximate signed
distances (negative inside) so that rims, shells and halos are offsets of one function.

Angles follow one convention everywhere: 0 points anterior (-y), +pi/2 points to the patient's left
(+x), so ``x = r sin(phi)`` and ``y = -r cos(phi)`` around a shape's centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TWO_PI = 2.0 * np.pi
TABLE_SIZE = 720


def angles(n: int = TABLE_SIZE) -> np.ndarray:
    """Return the ``n`` sample angles of a periodic table, ``2 pi k / n``.

    Args:
        n: number of samples over one turn.

    Returns:
        float64 array of shape ``(n,)``.
    """
    return np.arange(n) * (TWO_PI / n)


def smooth_periodic(
    rng: np.random.Generator,
    amplitude: float,
    kmin: int = 2,
    kmax: int = 7,
    decay: float = 1.5,
    n: int = TABLE_SIZE,
) -> np.ndarray:
    """Sample a smooth random periodic function (a truncated Fourier series).

    Args:
        rng: the random generator.
        amplitude: root-mean-square of the result.
        kmin: lowest harmonic.
        kmax: highest harmonic.
        decay: harmonic ``k`` has standard deviation ``k**-decay`` before scaling.
        n: samples over one turn.

    Returns:
        float64 array of shape ``(n,)`` with zero mean.
    """
    k = np.arange(kmin, kmax + 1, dtype=np.float64)
    coef = rng.standard_normal((2, k.size)) * k**-decay
    phi = angles(n)
    kp = k[:, None] * phi[None, :]
    f = coef[0] @ np.cos(kp) + coef[1] @ np.sin(kp)
    rms = float(np.sqrt(np.mean(f * f)))
    return f * (amplitude / rms) if rms > 0 else f


def superellipse_table(
    half_width: float,
    depth_ant: float,
    depth_post: float,
    p_ant: float = 2.0,
    p_post: float = 2.0,
    n: int = TABLE_SIZE,
) -> np.ndarray:
    """Radius of a two-halved superellipse as a function of angle.

    The anterior half (``cos(phi) > 0``) and the posterior half may have different depths and
    exponents; both share the lateral half-width, so the halves join smoothly at the flanks.

    Args:
        half_width: lateral semi-axis (mm).
        depth_ant: anterior semi-axis (mm).
        depth_post: posterior semi-axis (mm).
        p_ant: exponent of the anterior half (2 is an ellipse, larger is boxier).
        p_post: exponent of the posterior half.
        n: samples over one turn.

    Returns:
        float64 radius table of shape ``(n,)``.
    """
    phi = angles(n)
    s = np.abs(np.sin(phi))
    c = np.cos(phi)
    ant = c >= 0
    b = np.where(ant, depth_ant, depth_post)
    p = np.where(ant, p_ant, p_post)
    with np.errstate(divide="ignore"):
        r = ((s / half_width) ** p + (np.abs(c) / b) ** p) ** (-1.0 / p)
    return r


def quadrant_table(
    left: float,
    right: float,
    ant: float,
    post: float,
    p: tuple[float, float, float, float] = (2.0, 2.0, 2.0, 2.0),
    n: int = TABLE_SIZE,
) -> np.ndarray:
    """Radius of a superellipse with its own semi-axis per side and exponent per quadrant.

    The radius is continuous across quadrants because each axis point depends on one semi-axis
    only; the exponents order the quadrants anterior-right, anterior-left, posterior-left,
    posterior-right (right is -x).

    Args:
        left: semi-axis towards +x (mm).
        right: semi-axis towards -x (mm).
        ant: semi-axis towards -y (mm).
        post: semi-axis towards +y (mm).
        p: exponents of the four quadrants.
        n: samples over one turn.

    Returns:
        float64 radius table.
    """
    phi = angles(n)
    s = np.sin(phi)
    c = np.cos(phi)
    a = np.where(s >= 0, left, right)
    b = np.where(c >= 0, ant, post)
    q = np.where(c >= 0, np.where(s < 0, p[0], p[1]), np.where(s >= 0, p[2], p[3]))
    with np.errstate(divide="ignore"):
        return ((np.abs(s) / a) ** q + (np.abs(c) / b) ** q) ** (-1.0 / q)


def arc_angles(table: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Angles at which the contour of a radius table has run a given arc length from angle 0.

    Arc length is measured along the contour towards positive angles for positive lengths and
    towards negative angles for negative ones.

    Args:
        table: radius at ``angles(len(table))``.
        lengths: signed arc lengths (mm).

    Returns:
        float64 angles (radians, within -pi..pi).
    """
    n = table.shape[0]
    phi = angles(n + 1)
    r = np.append(table, table[0])
    x, y = r * np.sin(phi), -r * np.cos(phi)
    seg = np.hypot(np.diff(x), np.diff(y))
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    lengths = np.asarray(lengths, np.float64)
    pos = np.interp(np.mod(lengths, total), cum, phi)
    return np.angle(np.exp(1j * pos))


def bump(phi: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A smooth periodic bump: a Gaussian of the wrapped angular distance to ``centre``.

    Args:
        phi: angles (radians).
        centre: angle of the peak.
        width: standard deviation (radians).

    Returns:
        Array like ``phi`` with values in (0, 1].
    """
    d = np.angle(np.exp(1j * (phi - centre)))
    return np.exp(-0.5 * (d / width) ** 2)


def lookup(table: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Linearly interpolate a periodic table at arbitrary angles.

    Args:
        table: values at ``angles(len(table))``; float32 for speed.
        phi: angles in radians (any range).

    Returns:
        float32 array like ``phi``.
    """
    n = table.shape[0]
    ext = np.empty(n + 1, np.float32)
    ext[:n] = table
    ext[n] = table[0]
    t = np.asarray(phi, np.float32) * np.float32(n / TWO_PI)
    i0 = np.floor(t)
    frac = t - i0
    idx = i0.astype(np.intp) % n
    lo = ext[idx]
    return lo + (ext[idx + 1] - lo) * frac


def polar(x: np.ndarray, y: np.ndarray, cx: float = 0.0, cy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Distance and angle of points around a centre, in the module's angle convention.

    Args:
        x: body-frame x (mm).
        y: body-frame y (mm).
        cx: centre x.
        cy: centre y.

    Returns:
        ``(rho, phi)`` float32 arrays.
    """
    dx = x - np.float32(cx)
    dy = np.float32(cy) - y
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dx, dy)


@dataclass(frozen=True, eq=False)
class Star:
    """A star-shaped region: a radius table around a centre, optionally rotated.

    Args:
        cx: centre x (mm).
        cy: centre y (mm).
        table: radius (mm) at ``angles(len(table))`` in the shape's own frame.
        angle: rotation of the shape's frame (radians, positive turns anterior towards left).
    """

    cx: float
    cy: float
    table: np.ndarray
    angle: float = 0.0
    _t32: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_t32", np.asarray(self.table, np.float32))

    @property
    def rmax(self) -> float:
        """Largest radius of the contour.

        Returns:
            The radius in mm.
        """
        return float(self._t32.max())

    def bounds(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned body-frame box that contains the shape.

        Args:
            margin: extra room on every side (mm).

        Returns:
            ``(xmin, xmax, ymin, ymax)`` in mm.
        """
        r = self.rmax + margin
        return self.cx - r, self.cx + r, self.cy - r, self.cy + r

    def sdf(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm, negative inside): radial distance to the contour.

        Args:
            x: body-frame x of the points.
            y: body-frame y of the points.

        Returns:
            float32 array like ``x``.
        """
        rho, phi = polar(x, y, self.cx, self.cy)
        if self.angle:
            phi = phi - np.float32(self.angle)
        return rho - lookup(self._t32, phi)


def ellipse_table(
    rx: float,
    ry: float,
    egg: float = 0.0,
    egg_angle: float = 0.0,
    p: float = 2.0,
    wobble: np.ndarray | None = None,
    n: int = TABLE_SIZE,
) -> np.ndarray:
    """Radius table of a (super)ellipse, optionally egg-shaped and smoothly perturbed.

    Args:
        rx: lateral semi-axis (mm).
        ry: antero-posterior semi-axis (mm).
        egg: first-harmonic deformation; the shape widens towards ``egg_angle`` by this fraction.
        egg_angle: direction of the blunt end.
        p: superellipse exponent.
        wobble: relative perturbation table (for example from :func:`smooth_periodic`).
        n: samples over one turn.

    Returns:
        float64 radius table.
    """
    r = superellipse_table(rx, ry, ry, p, p, n)
    if egg:
        r = r * (1.0 + egg * np.cos(angles(n) - egg_angle))
    if wobble is not None:
        r = r * (1.0 + wobble)
    return r


class Canvas:
    """Body-frame coordinates of the pixel centres of one square image.

    The image frame has ``u`` along columns (towards the patient's left) and ``v`` along rows
    (towards posterior), both in mm with 0 at the image centre. A body point ``(x, y)`` lies at
    ``(u, v) = R(angle) (x, y) + origin``.

    Args:
        size: rows and columns.
        spacing: pixel spacing (mm).
        angle: in-plane rotation of the body (radians).
        origin: image position ``(u, v)`` (mm) of the body-frame origin.
    """

    def __init__(self, size: int, spacing: float, angle: float, origin: tuple[float, float]) -> None:
        self.size = size
        self.spacing = float(spacing)
        self.angle = float(angle)
        self.origin = (float(origin[0]), float(origin[1]))
        self.cos = float(np.cos(angle))
        self.sin = float(np.sin(angle))
        grid = ((np.arange(size) + 0.5 - size / 2) * self.spacing).astype(np.float32)
        self.u = grid
        self.v = grid
        du = grid - np.float32(self.origin[0])
        dv = grid - np.float32(self.origin[1])
        c, s = np.float32(self.cos), np.float32(self.sin)
        self.x = (c * du)[None, :] + (s * dv)[:, None]
        self.y = (-s * du)[None, :] + (c * dv)[:, None]

    def to_image(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map body-frame points to image millimetres.

        Args:
            x: body-frame x (mm).
            y: body-frame y (mm).

        Returns:
            ``(u, v)``: mm along columns and rows from the image centre.
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        return (self.cos * x - self.sin * y + self.origin[0], self.sin * x + self.cos * y + self.origin[1])

    def to_pixel(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Map body-frame points to fractional pixel indices.

        Args:
            x: body-frame x (mm).
            y: body-frame y (mm).

        Returns:
            ``(row, col)`` as float arrays (pixel centres at integers).
        """
        u, v = self.to_image(x, y)
        half = self.size / 2 - 0.5
        return v / self.spacing + half, u / self.spacing + half

    def box(self, xmin: float, xmax: float, ymin: float, ymax: float) -> tuple[slice, slice] | None:
        """Pixel slices covering a body-frame box, or None when it misses the image.

        Args:
            xmin: box limits in body-frame mm.
            xmax: box limits in body-frame mm.
            ymin: box limits in body-frame mm.
            ymax: box limits in body-frame mm.

        Returns:
            ``(rows, cols)`` slices, or None.
        """
        r, c = self.to_pixel(np.array([xmin, xmin, xmax, xmax]), np.array([ymin, ymax, ymin, ymax]))
        r0 = max(int(np.floor(r.min())), 0)
        r1 = min(int(np.ceil(r.max())) + 1, self.size)
        c0 = max(int(np.floor(c.min())), 0)
        c1 = min(int(np.ceil(c.max())) + 1, self.size)
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def star_box(self, star: Star, margin: float = 0.0) -> tuple[slice, slice] | None:
        """Pixel slices covering a :class:`Star`.

        Args:
            star: the shape.
            margin: extra room around it (mm).

        Returns:
            ``(rows, cols)`` slices, or None when the shape misses the image.
        """
        return self.box(*star.bounds(margin))


def fourier_filter_grid(shape: tuple[int, int], spacing: float = 1.0) -> np.ndarray:
    """Radial spatial frequency of every coefficient of ``np.fft.rfft2`` for an image.

    Args:
        shape: image shape ``(rows, cols)``.
        spacing: pixel spacing; frequencies are in cycles per unit of it.

    Returns:
        float32 array of shape ``(rows, cols // 2 + 1)``.
    """
    fy = np.fft.fftfreq(shape[0], spacing).astype(np.float32)
    fx = np.fft.rfftfreq(shape[1], spacing).astype(np.float32)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def half_plane_power(filt: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean of ``|filt|**2`` over the full frequency plane, from its ``rfft2`` half.

    By Parseval this is the variance gain of filtering unit white noise with ``filt``.

    Args:
        filt: filter on the rfft2 half plane.
        shape: the image shape it belongs to.

    Returns:
        The mean power.
    """
    p = np.abs(filt.astype(np.float64)) ** 2
    ncols = shape[1]
    total = p.sum() * 2.0 - p[:, 0].sum()
    if ncols % 2 == 0:
        total -= p[:, -1].sum()
    return float(total / (shape[0] * ncols))


def filtered_noise(rng: np.random.Generator, shape: tuple[int, int], filt: np.ndarray) -> np.ndarray:
    """White noise shaped by a Fourier filter, scaled to unit standard deviation.

    Args:
        rng: the random generator.
        shape: image shape.
        filt: real filter on the ``rfft2`` half plane of ``shape``.

    Returns:
        float32 noise of shape ``shape`` with (expected) unit variance.
    """
    # Uniform white noise is cheaper to draw than normal; after filtering it is Gaussian anyway.
    w = rng.random(shape, dtype=np.float32)
    w -= np.float32(0.5)
    spec = np.fft.rfft2(w, norm="ortho")
    spec *= filt
    out = np.fft.irfft2(spec, s=shape, norm="ortho")
    gain = np.sqrt(half_plane_power(filt, shape) / 12.0)
    out *= np.float32(1.0 / gain) if gain > 0 else np.float32(0)
    return out.astype(np.float32, copy=False)


def gaussian_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """A stationary Gaussian random field with Gaussian correlation, unit standard deviation.

    Args:
        rng: the random generator.
        shape: image shape.
        sigma_px: correlation length (standard deviation of the smoothing kernel, pixels).

    Returns:
        float32 field.
    """
    f = fourier_filter_grid(shape)
    filt = np.exp(np.float32(-2.0 * np.pi**2 * sigma_px**2) * f * f)
    return filtered_noise(rng, shape, filt)


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Blur an image with a Gaussian kernel through the FFT (periodic boundary).

    Args:
        image: 2-D float array.
        sigma_px: kernel standard deviation in pixels.

    Returns:
        float32 blurred image.
    """
    f = fourier_filter_grid(image.shape)
    filt = np.exp(np.float32(-2.0 * np.pi**2 * sigma_px**2) * f * f)
    spec = np.fft.rfft2(image.astype(np.float32, copy=False), norm="ortho")
    spec *= filt
    return np.fft.irfft2(spec, s=image.shape, norm="ortho").astype(np.float32, copy=False)


__all__ = [
    "TABLE_SIZE",
    "TWO_PI",
    "Canvas",
    "Star",
    "angles",
    "arc_angles",
    "bump",
    "ellipse_table",
    "filtered_noise",
    "fourier_filter_grid",
    "gaussian_blur",
    "gaussian_field",
    "half_plane_power",
    "lookup",
    "polar",
    "quadrant_table",
    "smooth_periodic",
    "superellipse_table",
]
