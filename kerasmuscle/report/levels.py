"""The level QC picture (:func:`level_picture`): a sagittal and a coronal reformat through the spine with
every named vertebra labelled and the measured slices marked, beside an axial tile, so that a reader can
trust or correct the L3 choice of :func:`~kerasmuscle.core.level.find_levels` at a glance.

numpy and Pillow only, so the light predictor install can draw it too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.core.measure import BODY_COLUMN_FRACTION, BODY_HU, midline_column
from kerasmuscle.report.overlay import _font, body_tiles, draw_side_markers, save_png, side_markers, window

#: Display window (level, width) in HU of the reformats: bone bright, discs and soft tissue grey.
BONE_WINDOW = (400.0, 1800.0)
#: Colour of the measured slices' band and of L3's tick.
BAND_COLOUR = (255, 190, 0)
#: Colour of the vertebrae's names and ticks (outlined in black).
WHITE = (255, 255, 255)
#: Colour of the edge strips where the scan has no slice (a gap in the series; those rows are black).
GAP_COLOUR = (200, 40, 40)
#: Opacity of the band across the reformats (the solid strips at the panel edges are opaque).
BAND_ALPHA = 0.3
#: Half-thickness (mm) of the slab averaged around the spine in each reformat.
SLAB_MM = 4.0
#: Length (mm) of the running median that steadies the spine's path between slices.
SMOOTH_MM = 21.0
#: A scan with at most this many slices gets the small user's-choice picture instead of reformats.
FEW_SLICES = 3
#: Widest reformat panel, as a multiple of ``height`` (a short scan is drawn smaller, not wider).
MAX_PANEL_ASPECT = 2.0
#: Width in pixels of the opaque band strips at each panel's left and right edge.
STRIP = 6
#: Pixels between panels.
GAP = 4


# --------------------------------------------------------------------------------------------------
# The spine's path and the reformats


def _running_median(values: np.ndarray, half: int) -> np.ndarray:
    if half < 1 or len(values) < 3:
        return values
    padded = np.pad(values, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1), axis=1)


def _path(values: np.ndarray | None, dz: float) -> np.ndarray | None:
    """Per slice ``values`` with NaN filled from the neighbours (held at the ends) and a running median
    of :data:`SMOOTH_MM` against single-slice slips of the follower; None when nothing is finite."""
    if values is None:
        return None
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        return None
    idx = np.arange(len(values))
    filled = np.interp(idx, idx[ok], values[ok])
    return _running_median(filled, int(round(SMOOTH_MM / 2 / max(dz, 1e-3))))


def _body_centre_row(hu: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Per slice, the middle of the body's rows in a band of columns around the midline (for scans
    without a spine)."""
    out = np.empty(len(hu))
    for k, c in enumerate(cols):
        c = int(round(c))
        band = hu[k, :, max(0, c - 8):c + 9]
        rows = np.flatnonzero(np.count_nonzero(band > BODY_HU, axis=1))
        out[k] = (rows[0] + rows[-1]) / 2 if len(rows) else (hu.shape[1] - 1) / 2
    return out


def _slab(hu: np.ndarray, centres: np.ndarray, half: int, axis: int) -> np.ndarray:
    """``[slices, n]``: per slice the mean over ``centres[k] +- half`` pixels along ``axis`` (1 rows, 2 cols)."""
    n = hu.shape[axis]
    out = np.empty((hu.shape[0], hu.shape[3 - axis]), np.float32)
    for k, c in enumerate(np.clip(np.rint(centres).astype(int), 0, n - 1)):
        lo, hi = max(0, c - half), min(n, c + half + 1)
        out[k] = hu[k, lo:hi, :].mean(axis=0) if axis == 1 else hu[k, :, lo:hi].mean(axis=1)
    return out


def _extent(image: np.ndarray) -> tuple[int, int]:
    """``[first, last)`` of the columns of a reformat that hold the body (the run around the fullest column,
    as the midline rule), with a margin; the whole width when nothing is body."""
    counts = np.count_nonzero(image > BODY_HU, axis=0)
    n = len(counts)
    if counts.max(initial=0) == 0:
        return 0, n
    peak = int(np.argmax(counts))
    low = np.flatnonzero(counts < BODY_COLUMN_FRACTION * counts[peak])
    first = int(low[low < peak].max()) + 1 if np.any(low < peak) else 0
    last = int(low[low > peak].min()) if np.any(low > peak) else n
    margin = max(2, int(round(0.04 * (last - first))))
    return max(0, first - margin), min(n, last + margin)


def _resample(image: np.ndarray, rows_fi: np.ndarray, width: int) -> np.ndarray:
    """``image [slices, n]`` at fractional slice indices ``rows_fi`` (linear), then ``width`` columns."""
    from PIL import Image

    lo = np.floor(rows_fi).astype(int)
    hi = np.minimum(lo + 1, len(image) - 1)
    w = (rows_fi - lo)[:, None].astype(np.float32)
    tall = image[lo] * (1 - w) + image[hi] * w
    resized = Image.fromarray(np.ascontiguousarray(tall, np.float32)).resize((width, len(rows_fi)), Image.BILINEAR)
    return np.asarray(resized)


def _direction(orientation: Sequence[float], index: int) -> int:
    """+1 or -1 when that direction cosine clearly runs along its axis, else 0."""
    v = float(orientation[index])
    return 0 if abs(v) < 0.5 else (1 if v > 0 else -1)


# --------------------------------------------------------------------------------------------------
# Text


def _ranges(indices: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    out, run = [], []
    for i in sorted(set(int(v) for v in indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def level_title(scan: Any, result: Any, measured: Sequence[int] | None = None) -> list[str]:
    """The title lines of :func:`level_picture`: what was found at L3 and why, then what is marked.

    Args:
        scan: the scan (its slice count and, without a spine, nothing else).
        result: its :class:`~kerasmuscle.core.level.LevelResult`.
        measured: the marked slice indices; default ``result.l3.indices``.

    Returns:
        Two lines: ``"L3: slices 43-45, middle 44 (z 217.9 mm); confidence 0.70; flags: ..."`` or
        ``"L3 not found: <reason>"``, then the band, the vertebrae named and any caveat. A scan of at most
        :data:`FEW_SLICES` slices gets one line saying it is the user's own choice instead.
    """
    n = int(np.shape(scan.hu)[0])
    l3 = result.l3
    measured = _in_scan(l3.indices if measured is None else measured, n)
    if n <= FEW_SLICES:
        choice = "taken as the user's own L3 choice" if "user_choice" in l3.flags else "not an L3 choice"
        line = (f"{n}-slice scan: {choice} (slices {_ranges(range(n))}); too few slices for a sagittal "
                "or coronal reformat")
        return [line] if l3.found or not l3.reason else [line, l3.reason]
    if l3.found:
        parts = [f"L3: slices {l3.slices[0]}-{l3.slices[1]}, middle {l3.middle}"]
        if l3.z_mm is not None:
            parts[0] += f" (z {l3.z_mm:.1f} mm)"
        parts.append("confidence " + ("-" if l3.confidence is None else f"{l3.confidence:.2f}"))
        if l3.flags:
            parts.append("flags: " + ", ".join(l3.flags))
        first = "; ".join(parts)
    else:
        first = l3.reason or "L3 not found"
        if not first.lower().startswith("l3"):
            first = "L3 not found: " + first
        if l3.flags:
            first += " [" + ", ".join(l3.flags) + "]"
    band = f"band: measured slices {_ranges(measured)}" if measured else "no slices measured"
    names = [lv.name for lv in result.levels]
    seen = f"vertebrae named: {names[0]}..{names[-1]}" if names else "no vertebra named"
    second = [band, seen]
    if _spine_paths(result, 1.0) is None:
        second.append("no spine found: reformats through the middle of the body")
    return [first, "; ".join(second)]


def _in_scan(indices: Sequence[int], n: int) -> list[int]:
    return sorted({int(k) for k in indices if 0 <= int(k) < n})


def _spine_paths(result: Any, dz: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The steadied (rows, cols) of the spine per slice, or None without a spine."""
    spine = getattr(result, "spine", None)
    if spine is None:
        return None
    spine = np.asarray(spine, np.float64)
    if spine.ndim != 2 or spine.shape[1] != 2:
        return None
    rows, cols = _path(spine[:, 0], dz), _path(spine[:, 1], dz)
    return None if rows is None or cols is None else (rows, cols)


def _wrap(lines: Sequence[str], width: int, font: Any) -> list[str]:
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    out = []
    for line in lines:
        words, current = line.split(" "), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if current and probe.textlength(trial, font=font) > width:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return out


def _title_strip(lines: Sequence[str], width: int, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    font = _font(size)
    wrapped = _wrap(lines, width - 12, font)
    line_h = size + 4
    strip = Image.new("RGB", (width, len(wrapped) * line_h + 8), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for i, text in enumerate(wrapped):
        draw.text((6, 4 + i * line_h), text, fill=(255, 255, 255), font=font)
    return np.asarray(strip)


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(rgb, np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3]
    width = max(1, int(round(rgb.shape[1] * height / rgb.shape[0])))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.LANCZOS))


# --------------------------------------------------------------------------------------------------
# The picture


def _few_slices_picture(scan: Any, result: Any, axial: np.ndarray | None, height: int) -> np.ndarray:
    n = scan.hu.shape[0]
    tile_h = max(64, height // 2)
    tile = axial if axial is not None else body_tiles(scan.hu[(n - 1) // 2])[0]
    tile = _fit_height(tile, tile_h)
    width = max(tile.shape[1], 320)
    lines = level_title(scan, result)
    title = _title_strip(lines, width, max(12, height // 36))
    body = np.zeros((tile_h, width, 3), np.uint8)
    body[:, :tile.shape[1]] = tile
    return np.concatenate([title, body], axis=0)


def level_picture(scan: Any, result: Any, measured: Sequence[int] | None = None, axial: np.ndarray | None = None,
                  *, height: int = 512) -> np.ndarray:
    """The level QC picture of one scan: sagittal and coronal reformats with the vertebrae named.

    The sagittal reformat follows the spine's column (``result.spine[:, 1]``, gaps filled and steadied by a
    running median, so an S-curve still cuts through the bodies) and the coronal one its row
    (``result.spine[:, 0]``, so the lumbar lordosis stays in the bodies); each averages a slab of
    +-:data:`SLAB_MM` mm and is resampled to square millimetres, head up (the highest slice index at the
    top), anterior and the patient's right on the left, in the :data:`BONE_WINDOW`. Without a spine
    (``result.spine`` None or all NaN) the sagittal plane is the body's midline and the coronal one the
    middle of the body. Each named vertebra gets its name and a thin tick in front of its body at its
    centre (L3's tick in :data:`BAND_COLOUR`); the measured slices are a translucent band across both reformats
    with opaque strips at each panel's edges; rows in a gap of the series are black with
    :data:`GAP_COLOUR` strips. A title strip on top gives the L3 result (slices,
    confidence, flags) or why L3 was not found. A scan of at most :data:`FEW_SLICES` slices gets a small
    picture instead: its middle slice (or ``axial``) and a line that says it is the user's own choice.

    Layout: the title strip, then ``height`` rows holding the reformats from the left (sagittal at column
    0), ``axial`` last. With the usual scan the reformats fill those rows: slice ``k`` of ``n`` regular
    slices lies ``(k + 0.5) / n * height`` rows above the picture's bottom edge. A scan much wider than
    long is drawn smaller (at most :data:`MAX_PANEL_ASPECT` times ``height`` wide) at the bottom.

    Args:
        scan: a :class:`~kerasmuscle.io.scan.Scan` (``hu``, ``spacing``, ``slice_locations``, ``orientation``).
        result: its :class:`~kerasmuscle.core.level.LevelResult`.
        measured: slice indices to mark; default ``result.l3.indices`` (indices outside the scan are ignored).
        axial: an RGB (or grey) uint8 picture to place beside the reformats, scaled to ``height`` rows,
            e.g. a QC overlay tile or ``body_tiles(scan.hu[k])[0]``.
        height: pixel rows of the reformats (the title strip comes on top).

    Returns:
        uint8 RGB ``[rows, cols, 3]``.

    Raises:
        ValueError: the scan holds no slice, or ``height`` is under 64.
    """
    from PIL import Image, ImageDraw

    hu = np.asarray(scan.hu)
    n, n_rows, n_cols = hu.shape
    if n == 0:
        raise ValueError("level_picture needs a scan with at least one slice, got 0 slices")
    if height < 64:
        raise ValueError(f"level_picture needs height >= 64 pixels, got {height}")
    if n <= FEW_SLICES:
        return _few_slices_picture(scan, result, axial, height)
    title_lines = level_title(scan, result, measured)
    measured = _in_scan(result.l3.indices if measured is None else measured, n)
    dz, dr, dc = (float(v) for v in scan.spacing)

    # Where the slices lie along the scan's axis (irregular gaps kept); a regular grid when unusable.
    zs = np.asarray(scan.slice_locations, np.float64) if hasattr(scan, "slice_locations") else None
    if zs is None or len(zs) != n or not np.all(np.diff(zs) > 0):
        zs = np.arange(n) * dz
    z_bottom, z_top = zs[0] - dz / 2, zs[-1] + dz / 2

    # The plane of each reformat, per slice.
    paths = _spine_paths(result, dz)
    if paths is None:
        cols = _path(np.array([midline_column(hu[k]) for k in range(n)]), dz)
        rows = _path(_body_centre_row(hu, cols), dz)
    else:
        rows, cols = paths
    sag = _slab(hu, cols, max(0, int(round(SLAB_MM / dc))), axis=2)   # [slices, rows]
    cor = _slab(hu, rows, max(0, int(round(SLAB_MM / dr))), axis=1)   # [slices, cols]
    # Anterior and the patient's right on the left, whatever the stored pixel layout.
    sag_letters: tuple[str, str] | None = ("A", "P")
    if _direction(scan.orientation, 4) < 0:
        sag, rows = sag[:, ::-1], n_rows - 1 - rows
    elif _direction(scan.orientation, 4) == 0:
        sag_letters = None
    cor_letters = side_markers(scan.orientation)
    if _direction(scan.orientation, 0) < 0:
        cor, cols = cor[:, ::-1], n_cols - 1 - cols
        cor_letters = ("R", "L")

    # Crop each to the body, then choose one scale (px per mm) for both.
    (s0, s1), (c0, c1) = _extent(sag), _extent(cor)
    widths_mm = ((s1 - s0) * dr, (c1 - c0) * dc)
    scale = height / (z_top - z_bottom)
    scale = min(scale, MAX_PANEL_ASPECT * height / max(widths_mm))
    panel_h = max(1, min(height, int(round((z_top - z_bottom) * scale))))

    # Rows farther than 3/4 of a slice from any slice lie in a gap: drawn black, not interpolated.
    z_rows = z_top - (np.arange(panel_h) + 0.5) / scale
    fi = np.interp(z_rows, zs, np.arange(n, dtype=np.float64))
    near = np.clip(np.searchsorted(zs, z_rows), 1, n - 1)
    dist = np.minimum(np.abs(zs[near] - z_rows), np.abs(zs[near - 1] - z_rows))
    gap_rows = np.zeros(height, bool)
    gap_rows[height - panel_h:] = dist > 0.75 * dz

    def y_of(z: float) -> float:
        return height - panel_h + (z_top - z) * scale

    panels = []
    # The half-depth and half-width (mm) of a lumbar body: where a name's tick ends, in front of it.
    for image, (a, b), path, pix, letters, reach in ((sag, (s0, s1), rows, dr, sag_letters, 16.0),
                                                     (cor, (c0, c1), cols, dc, cor_letters, 20.0)):
        width = max(STRIP * 4, int(round((b - a) * pix * scale)))
        grey = window(_resample(image[:, a:b], fi, width), *BONE_WINDOW)
        panel = np.zeros((height, width, 3), np.uint8)
        panel[height - panel_h:] = grey[..., None]
        panel[gap_rows] = 0
        panel[gap_rows, :STRIP] = GAP_COLOUR
        panel[gap_rows, -STRIP:] = GAP_COLOUR
        panel = np.array(draw_side_markers(panel, letters))
        x_spine = (path - a + 0.5) * pix * scale - 0.5
        panels.append((panel, x_spine, reach))

    # The band: translucent across, opaque strips at the edges (what a reader's eye finds first).
    band_rows = np.zeros(height, bool)
    for k in measured:
        lo = zs[k] - (min(zs[k] - zs[k - 1], dz) / 2 if k > 0 else dz / 2)       # half a slice each way,
        hi = zs[k] + (min(zs[k + 1] - zs[k], dz) / 2 if k < n - 1 else dz / 2)   # never into a gap
        r0, r1 = int(round(y_of(hi))), int(round(y_of(lo)))
        band_rows[max(0, r0):max(0, min(height, max(r1, r0 + 1)))] = True
    colour = np.array(BAND_COLOUR, np.float32)
    label_size = max(11, height // 30)
    font = _font(label_size)
    drawn = []
    for panel, x_spine, reach in panels:
        tinted = panel[band_rows].astype(np.float32)
        panel[band_rows] = ((1 - BAND_ALPHA) * tinted + BAND_ALPHA * colour).round().astype(np.uint8)
        panel[band_rows, :STRIP] = BAND_COLOUR
        panel[band_rows, -STRIP:] = BAND_COLOUR
        im = Image.fromarray(panel)
        draw = ImageDraw.Draw(im)
        for lv in result.levels:
            y = y_of(lv.z_mm)
            if not 0 <= y < height:
                continue
            x = float(x_spine[int(np.clip(lv.centre, 0, n - 1))])
            tick1 = max(STRIP + 2.0, x - reach * scale)
            tick0 = max(STRIP + 2.0, tick1 - max(6.0, 10 * scale))
            l3 = lv.name == "L3"
            draw.line((tick0, y, tick1, y), fill=BAND_COLOUR if l3 else WHITE, width=2 if l3 else 1)
            text_w = draw.textlength(lv.name, font=font)
            tx = max(STRIP + 2 + text_w, tick0 - 3)
            draw.text((tx, y), lv.name, fill=WHITE, font=font, anchor="rm", stroke_width=2, stroke_fill=(0, 0, 0))
        drawn.append(np.array(im))
    for panel, caption in zip(drawn, ("sagittal", "coronal")):
        im = Image.fromarray(panel)
        ImageDraw.Draw(im).text((STRIP + 3, height - panel_h + 3), caption, fill=(170, 170, 170),
                                font=_font(max(10, height // 40)), stroke_width=1, stroke_fill=(0, 0, 0))
        panel[...] = np.asarray(im)

    pieces = [drawn[0], drawn[1]]
    if axial is not None:
        pieces.append(_fit_height(axial, height))
    gap = np.zeros((height, GAP, 3), np.uint8)
    row = np.concatenate([p for piece in pieces for p in (piece, gap)][:-1], axis=1)
    title = _title_strip(title_lines, row.shape[1], max(12, height // 36))
    return np.concatenate([title, row], axis=0)


def write_level_picture(path: str | os.PathLike, scan: Any, result: Any, measured: Sequence[int] | None = None,
                        axial: np.ndarray | None = None, *, height: int = 512) -> Path:
    """Draw :func:`level_picture` and write it as PNG (through a temporary file).

    Args:
        path: the PNG file.
        scan, result, measured, axial, height: as for :func:`level_picture`.

    Returns:
        ``path`` as a Path.
    """
    save_png(path, level_picture(scan, result, measured, axial, height=height))
    return Path(path)


__all__ = ["BAND_COLOUR", "BONE_WINDOW", "level_picture", "level_title", "write_level_picture"]
