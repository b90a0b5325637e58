"""Figures: the per-case scores as violin plots, the paper's Figure 2. matplotlib is imported when drawing."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from kerasmuscle.core.metrics import CLASS_NAMES, CLASSES, METRIC_NAMES, METRICS, POSTPROCESS
from kerasmuscle.errors import MissingExtraError
from kerasmuscle.fileutil import atomic_path
from kerasmuscle.labels import MUSCLE_LABELS


def violin_plot(rows: Iterable[dict], path: str | os.PathLike, postprocess: str = "hu",
                title: str | None = None) -> None:
    """Draw the per-case scores as violin plots, in the form of the paper's Figure 2.

    Three panels (Dice, Hamming, Jaccard) with one violin per class: Combined in grey, the muscles
    in their label colours. Every case is a dot (deterministic jitter); the black marker and bar
    are mean ± SD (sample SD). A class with fewer than two distinct finite scores gets dots only.

    Args:
        rows: per-case metric rows.
        path: the PNG file, written atomically.
        postprocess: which variant to plot, a key of :data:`POSTPROCESS`.
        title: figure title; by default the variant and the number of cases.

    Returns:
        None.

    Raises:
        ValueError: no rows for ``postprocess``.
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401 - fail here, naming the extra, not halfway through drawing
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("the violin plot", "train", "matplotlib") from exc

    rows = [r for r in rows if r["postprocess"] == postprocess]
    if not rows:
        raise ValueError(f"no metric rows with postprocess {postprocess!r} to plot")
    colours = [(0.6, 0.6, 0.6)] + [tuple(c / 255 for c in lab.colour) for lab in MUSCLE_LABELS]
    positions = np.arange(1, len(CLASSES) + 1)
    fig = Figure(figsize=(12, 4.5), dpi=120)
    axes = fig.subplots(1, len(METRICS))
    for ax, metric in zip(axes, METRICS):
        lowest = 1.0
        for k, (key, pos, colour) in enumerate(zip(CLASSES, positions, colours)):
            values = np.array([r[metric] for r in rows if r["class"] == key], float)
            values = values[~np.isnan(values)]
            if not len(values):
                continue
            lowest = min(lowest, values.min())
            # A kernel density needs spread: one score, or identical ones, would make it singular.
            if np.ptp(values) > 0:
                body = ax.violinplot(values, positions=[pos], widths=0.8, showextrema=False)["bodies"][0]
                body.set_facecolor(colour)
                body.set_edgecolor("black")
                body.set_alpha(0.5)
            # Seeded by class, so the same rows always give the same picture.
            jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(values))
            ax.scatter(pos + jitter, values, s=8, color=colour, edgecolors="black", linewidths=0.3, zorder=3)
            sd = values.std(ddof=1) if len(values) > 1 else None
            ax.errorbar(pos, values.mean(), yerr=sd, fmt="D", color="black", markersize=4, capsize=4, zorder=4)
        ax.set_ylim(max(0.0, lowest - 0.05), 1.01)
        ax.set_xlim(0.4, len(CLASSES) + 0.6)
        ax.set_xticks(positions, [CLASS_NAMES[key] for key in CLASSES], rotation=30, ha="right")
        ax.set_title(METRIC_NAMES[metric])
        ax.grid(axis="y", alpha=0.3)
    n_cases = sum(r["class"] == "combined" for r in rows)
    fig.suptitle(title or f"Per-case scores, {POSTPROCESS[postprocess]} ({n_cases} cases)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
