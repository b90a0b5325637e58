"""What people read: QC pictures (``overlay.py``), tables in one number format (``tables.py``: the metrics
CSV and the paper's Table I) and figures (``figures.py``: the paper's Figure 2; matplotlib, imported when
drawing). numpy and Pillow at import."""

from __future__ import annotations

from kerasmuscle.report.overlay import (SOFT_TISSUE, body_box, body_tiles, contact_sheet, crop, legend, overlay,
                                       qc_picture, save_png, side_markers, window)

__all__ = ["SOFT_TISSUE", "body_box", "body_tiles", "contact_sheet", "crop", "legend", "overlay", "qc_picture",
           "save_png", "side_markers", "window"]
