"""The label table: one source of truth for ids, names, colours and DICOM codes of the muscle groups.

Ids follow the paper (Kreher et al. 2022, Figure 1): background 0 and five muscle groups. Left and
right are not separate classes; measurements split each group at the body's midline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Code:
    """A coded concept for DICOM (SNOMED CT where the code is verified, else a general SNOMED term).

    Args:
        value: the code value, for example ``"44947003"``.
        scheme: the coding scheme designator, for example ``"SCT"``.
        meaning: the code meaning, for example ``"Erector spinae muscle"``.
    """

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Label:
    """One class of the segmentation.

    Args:
        id: the value in label maps and the index of the network's output channel.
        key: a short identifier for files and columns (``"psoas"``).
        name: the anatomical name (``"psoas major"``).
        short: the row name in the paper's Table I (``"Psoas"``).
        colour: RGB in 0..255, the paper's colour for this group.
        colour_name: the paper's word for that colour.
        includes: the muscles this group comprises.
        code: the DICOM SEG segmented property type.
    """

    id: int
    key: str
    name: str
    short: str
    colour: tuple[int, int, int]
    colour_name: str
    includes: str
    code: Code


# Anatomical Structure (SCT 91723000) is the segmented property category of every muscle segment.
CATEGORY = Code("91723000", "SCT", "Anatomical Structure")
_SKELETAL_MUSCLE = Code("127954009", "SCT", "Skeletal muscle")

LABELS: tuple[Label, ...] = (
    Label(0, "background", "background", "Background", (0, 0, 0), "none", "everything else",
          Code("85756007", "SCT", "Tissue")),
    Label(1, "rectus", "rectus abdominis", "Rectus", (30, 90, 255), "blue",
          "rectus abdominis, left and right", _SKELETAL_MUSCLE),
    Label(2, "abdominal_wall", "abdominal wall", "Abdominal wall", (0, 200, 60), "green",
          "external oblique, internal oblique, transversus abdominis",
          Code("1142228004", "SCT", "Abdominal wall muscle")),
    Label(3, "psoas", "psoas major", "Psoas", (255, 220, 0), "yellow",
          "psoas major", _SKELETAL_MUSCLE),
    Label(4, "quadratus", "quadratus lumborum", "Quadratus", (235, 30, 30), "red",
          "quadratus lumborum", _SKELETAL_MUSCLE),
    Label(5, "erector_spinae", "erector spinae", "Erector spinae", (240, 0, 240), "magenta",
          "erector spinae (iliocostalis, longissimus) and multifidus",
          Code("44947003", "SCT", "Erector spinae muscle")),
)

NUM_CLASSES = len(LABELS)
MUSCLE_IDS: tuple[int, ...] = tuple(label.id for label in LABELS if label.id != 0)
MUSCLE_LABELS: tuple[Label, ...] = tuple(label for label in LABELS if label.id != 0)


def label(key_or_id: str | int) -> Label:
    """Look up a label by id, key, name or Table I name (case-insensitive).

    Args:
        key_or_id: ``3``, ``"psoas"``, ``"psoas major"`` or ``"Psoas"``.

    Returns:
        The matching :class:`Label`.

    Raises:
        KeyError: nothing matches; the message lists the valid keys.
    """
    if isinstance(key_or_id, (int, np.integer)):
        for lab in LABELS:
            if lab.id == int(key_or_id):
                return lab
    else:
        wanted = str(key_or_id).strip().lower().replace("_", " ")
        for lab in LABELS:
            if wanted in (lab.key.replace("_", " "), lab.name.lower(), lab.short.lower()):
                return lab
    raise KeyError(f"no label {key_or_id!r}; labels are {', '.join(lab.key for lab in LABELS)}")


def colour_table() -> np.ndarray:
    """Return a (256, 3) uint8 lookup table from label id to RGB colour (unused ids are black)."""
    table = np.zeros((256, 3), np.uint8)
    for lab in LABELS:
        table[lab.id] = lab.colour
    return table
