"""Pictures for quality control: CT in a window, label overlays in the paper's colours, contact sheets.

numpy and Pillow only, so the light predictor install can draw them too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from kerasmuscle.fileutil import atomic_path
from kerasmuscle.labels import colour_table

#: Soft-tissue window (level, width) in HU, the usual abdominal setting.
SOFT_TISSUE = (40.0, 400.0)


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
