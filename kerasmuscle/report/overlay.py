"""Pictures for quality control: CT in a window, label overlays in the paper's colours, contact sheets,
and the per-case QC picture of a prediction (:func:`qc_picture`: tiles cropped to the body, a colour
legend and the patient's right and left marked).

numpy and Pillow only, so the light predictor install can draw them too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasmuscle.core.measure import BODY_COLUMN_FRACTION, BODY_HU, patient_left_is_higher_column
from kerasmuscle.fileutil import atomic_path
from kerasmuscle.labels import MUSCLE_LABELS, Label, colour_table

#: Soft-tissue window (level, width) in HU, the usual abdominal setting.
SOFT_TISSUE = (40.0, 400.0)
#: HU outside the image when a crop reaches past its border (air: black in any window).
AIR_HU = -1000.0
#: Crop margin around the body, as a share of the body's larger extent.
BODY_MARGIN = 0.04


def window(hu: np.ndarray, level: float = SOFT_TISSUE[0], width: float = SOFT_TISSUE[1]) -> np.ndarray:
    """Map HU to grey levels 0..255 through a display window.

    Args:
        hu: HU values (any shape).
        level, width: window centre and width in HU.

    Returns:
        uint8 array of the same shape.
    """
    lo = level - width / 2
    scaled = (np.asarray(hu, np.float32) - lo) * (255.0 / width)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def overlay(grey: np.ndarray, labels: np.ndarray | None = None, alpha: float = 0.5,
            outline: bool = False) -> np.ndarray:
    """Colour labelled pixels of a grey image with the label table's colours.

    Args:
        grey: uint8 ``[rows, cols]``.
        labels: label ids ``[rows, cols]`` (0 stays grey); None gives the plain grey image as RGB.
        alpha: opacity of the colours.
        outline: draw only the borders of each label (keeps the CT visible underneath).

    Returns:
        uint8 RGB ``[rows, cols, 3]``.
    """
    rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=2)
    if labels is None:
        return rgb
    labels = np.asarray(labels)
    mask = labels > 0
    if outline:
        pad = np.pad(labels, 1, mode="edge")
        border = ((pad[1:-1, 1:-1] != pad[:-2, 1:-1]) | (pad[1:-1, 1:-1] != pad[2:, 1:-1])
                  | (pad[1:-1, 1:-1] != pad[1:-1, :-2]) | (pad[1:-1, 1:-1] != pad[1:-1, 2:]))
        mask &= border
        alpha = 1.0
    colours = colour_table()[np.clip(labels, 0, 255).astype(np.uint8)]
    blended = rgb.astype(np.float32)
    blended[mask] = (1 - alpha) * blended[mask] + alpha * colours[mask]
    return blended.round().astype(np.uint8)


def contact_sheet(tiles: Sequence[np.ndarray], columns: int, *, titles: Sequence[str] | None = None,
                  tile_size: int | None = None, pad: int = 4) -> np.ndarray:
    """Arrange RGB tiles in a grid with optional captions.

    Args:
        tiles: uint8 RGB images (resized to ``tile_size`` square when given).
        columns: tiles per row.
        titles: a caption per tile, drawn in its top-left corner.
        tile_size: edge length in pixels of each tile.
        pad: pixels between tiles.

    Returns:
        uint8 RGB image of the sheet.
    """
    from PIL import Image, ImageDraw

    images = [Image.fromarray(np.asarray(t, np.uint8)) for t in tiles]
    if tile_size is not None:
        images = [im.resize((tile_size, tile_size), Image.LANCZOS) for im in images]
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w + (columns + 1) * pad, rows * h + (rows + 1) * pad), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x = pad + (i % columns) * (w + pad)
        y = pad + (i // columns) * (h + pad)
        sheet.paste(im, (x, y))
        if titles is not None and titles[i]:
            draw.rectangle((x, y, x + 7 * len(titles[i]) + 6, y + 14), fill=(0, 0, 0))
            draw.text((x + 3, y + 2), titles[i], fill=(255, 255, 255))
    return np.asarray(sheet)


def save_png(path: str | os.PathLike, rgb: np.ndarray, *, fast: bool = False) -> None:
    """Write an RGB or grey uint8 array as PNG (through a temporary file).

    Args:
        path: the file.
        rgb: the picture.
        fast: light compression (zlib level 1) instead of the smallest file; the per-case QC picture of
            a batch uses it (0.14 s -> 0.03 s for its 6-slice contact sheet here).
    """
    from PIL import Image

    options = {"compress_level": 1} if fast else {"optimize": True}
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, np.uint8)).save(tmp, format="PNG", **options)


# --------------------------------------------------------------------------------------------------
# Cropping to the body


def _run_around_peak(counts: np.ndarray) -> tuple[int, int] | None:
    """``[first, last)`` of the consecutive entries around the largest holding at least
    :data:`~kerasmuscle.core.measure.BODY_COLUMN_FRACTION` of it (the midline rule), None when all are 0."""
    if counts.size == 0 or counts.max() == 0:
        return None
    peak = int(np.argmax(counts))
    low = np.flatnonzero(counts < BODY_COLUMN_FRACTION * counts[peak])
    first = int(low[low < peak].max()) + 1 if np.any(low < peak) else 0
    last = int(low[low > peak].min()) if np.any(low > peak) else len(counts)
    return first, last


def body_box(hu_slice: np.ndarray, labels_slice: np.ndarray | None = None, *,
             margin: float = BODY_MARGIN) -> tuple[int, int, int, int]:
    """A square box around the body on one slice, without the CT couch.

    The body's columns are found as the midline does (:func:`~kerasmuscle.core.measure.midline_column`:
    the run of columns holding at least 10 % of the fullest column's pixels above -500 HU, so the thin
    couch and stray noise drop out), then its rows the same way within those columns. Labelled pixels are
    always inside. The box gets a margin and is widened to a square around its centre; it may reach past
    the image border (:func:`crop` fills that with air).

    Args:
        hu_slice: ``[rows, cols]`` in HU.
        labels_slice: the slice's labels, kept inside the box; or None.
        margin: extra space on each side, as a share of the body's larger extent.

    Returns:
        ``(row0, row1, col0, col1)``, half-open; the whole image when no pixel is body.
    """
    hu_slice = np.asarray(hu_slice)
    n_rows, n_cols = hu_slice.shape
    body = hu_slice > BODY_HU
    cols = _run_around_peak(np.count_nonzero(body, axis=0))
    rows = _run_around_peak(np.count_nonzero(body[:, cols[0]:cols[1]], axis=1)) if cols else None
    if cols is None or rows is None:
        r0, r1, c0, c1 = 0, n_rows, 0, n_cols
    else:
        (r0, r1), (c0, c1) = rows, cols
    if labels_slice is not None and np.any(labels_slice):
        rr, cc = np.nonzero(labels_slice)
        r0, r1, c0, c1 = min(r0, rr.min()), max(r1, rr.max() + 1), min(c0, cc.min()), max(c1, cc.max() + 1)
    side = max(r1 - r0, c1 - c0)
    side += 2 * max(2, int(round(margin * side)))
    rc, cc_ = (r0 + r1) / 2, (c0 + c1) / 2
    top, left = int(round(rc - side / 2)), int(round(cc_ - side / 2))
    return top, top + side, left, left + side


def crop(array: np.ndarray, box: tuple[int, int, int, int], fill: float = 0) -> np.ndarray:
    """``array[row0:row1, col0:col1]``, with ``fill`` where the box reaches past the array's border."""
    r0, r1, c0, c1 = box
    array = np.asarray(array)
    out = np.full((r1 - r0, c1 - c0, *array.shape[2:]), fill, array.dtype)
    sr0, sr1 = max(r0, 0), min(r1, array.shape[0])
    sc0, sc1 = max(c0, 0), min(c1, array.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 - r0:sr1 - r0, sc0 - c0:sc1 - c0] = array[sr0:sr1, sc0:sc1]
    return out


def body_tiles(hu_slice: np.ndarray, labels_slice: np.ndarray | None = None, *, alpha: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int, int]]:
    """The plain and the coloured tile of one slice, both cropped to the same :func:`body_box`.

    Returns:
        ``(plain RGB, coloured RGB or None without labels, box)``.
    """
    box = body_box(hu_slice, labels_slice)
    grey = window(crop(hu_slice, box, fill=AIR_HU))
    coloured = None if labels_slice is None else overlay(grey, crop(labels_slice, box), alpha=alpha)
    return overlay(grey), coloured, box


# --------------------------------------------------------------------------------------------------
# Legend, side markers and the QC picture


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType: the small bitmap font
        return ImageFont.load_default()


def side_markers(orientation: Sequence[float]) -> tuple[str, str] | None:
    """The patient's sides at the image's left and right edges: ``("R", "L")`` for the usual radiological
    display (columns towards the patient's left), ``("L", "R")`` when columns run the other way, None
    when columns do not run left-right."""
    try:
        left_high = patient_left_is_higher_column(orientation)
    except ValueError:
        return None
    return ("R", "L") if left_high else ("L", "R")


def draw_side_markers(tile: np.ndarray, sides: tuple[str, str] | None) -> np.ndarray:
    """``tile`` with ``sides[0]`` in its bottom-left and ``sides[1]`` in its bottom-right corner, in white
    outlined in black (each letter centred in a square of the same size, so the two corners mirror)."""
    from PIL import Image, ImageDraw

    if sides is None:
        return tile
    im = Image.fromarray(np.asarray(tile, np.uint8))
    size = max(12, im.height // 14)
    box, gap = size + 6, max(3, im.height // 80)
    font = _font(size)
    for letter, x in ((sides[0], gap), (sides[1], im.width - gap - box)):
        mark = Image.new("RGB", (box, box), (0, 0, 0))
        ImageDraw.Draw(mark).text((box / 2, box / 2), letter, fill=(255, 255, 255), font=font, anchor="mm",
                                  stroke_width=1 if size >= 16 else 0, stroke_fill=(0, 0, 0))
        im.paste(mark, (x, im.height - gap - box))
    return np.asarray(im)


def legend(width: int, labels: Sequence[Label] = MUSCLE_LABELS, *, size: int = 13) -> np.ndarray:
    """A strip naming each label next to a swatch of its colour, wrapped to ``width`` pixels.

    Returns:
        uint8 RGB ``[height, width, 3]`` on black.
    """
    from PIL import Image, ImageDraw

    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, swatch = 6, size
    items, x, line = [], pad, 0
    for lab in labels:
        need = swatch + 4 + int(np.ceil(probe.textlength(lab.name, font=font))) + 2 * pad
        if x + need > width and x > pad:
            x, line = pad, line + 1
        items.append((lab, x, line))
        x += need
    row_h = size + 2 * pad
    strip = Image.new("RGB", (width, (line + 1) * row_h), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for lab, x, ln in items:
        y = ln * row_h + pad
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=tuple(lab.colour))
        draw.text((x + swatch + 4, y + swatch / 2), lab.name, fill=(255, 255, 255), font=font, anchor="lm")
    return np.asarray(strip)


def qc_picture(prediction: Any, slice_rows: Sequence[dict[str, Any]], max_tiles: int = 6, *,
               tile_size: int = 384) -> np.ndarray:
    """The QC contact sheet of one prediction.

    For up to ``max_tiles`` measured slices (those with most muscle), in slice order: the CT in a
    soft-tissue window, and the same slice with the labels in the paper's colours and the left-right
    midline as a white dashed line; both cropped to the body (:func:`body_box`, the couch left out) and
    marked with the patient's right and left (from the scan orientation; no marker when columns do not
    run left-right). A legend below names each muscle group's colour.

    Args:
        prediction: has ``scan`` (``hu``, ``orientation``) and ``labels`` ``[slices, rows, cols]``.
        slice_rows: measurement rows with ``slice_index``, ``sma_cm2`` and ``midline_col``.
        max_tiles: slices to show at most.
        tile_size: edge of each square tile in pixels.

    Returns:
        uint8 RGB picture.
    """
    from PIL import Image

    scan = prediction.scan
    rows = sorted(slice_rows, key=lambda r: -(r.get("sma_cm2") or 0.0))[:max_tiles]
    rows = sorted(rows, key=lambda r: r["slice_index"])
    sides = side_markers(scan.orientation)
    tiles, titles = [], []
    for r in rows:
        z = int(r["slice_index"])
        plain, coloured, box = body_tiles(scan.hu[z], np.asarray(prediction.labels[z]), alpha=0.45)
        col = int(round(r["midline_col"])) - box[2]
        if 0 <= col < coloured.shape[1]:
            coloured[::3, col] = 255
        for tile in (plain, coloured):
            resized = Image.fromarray(tile).resize((tile_size, tile_size), Image.LANCZOS)
            tiles.append(draw_side_markers(np.asarray(resized), sides))
        titles += [f"slice {z}", f"SMA {r['sma_cm2']:.1f} cm2"]
    sheet = contact_sheet(tiles, columns=2, titles=titles)
    return np.concatenate([sheet, legend(sheet.shape[1])], axis=0)
