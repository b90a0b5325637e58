"""A dataset folder described by ``dataset.json``.

``dataset.json`` holds ``{"cases": [{"id", "patient_id", "image", "labels", "height_m"}, ...]}``
with paths relative to the folder; ``kerasmuscle synth`` writes it, and a user can write one for
their own scans. Extra keys (``seg``, ``sex``, ...) are kept in :attr:`Case.meta`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kerasmuscle.errors import ReadError

REQUIRED = ("id", "patient_id", "image")


@dataclass(frozen=True)
class Case:
    """One labelled scan of a dataset.

    Args:
        id: unique case id.
        patient_id: the patient; cross-validation keeps a patient's cases in one fold.
        image: the scan (DICOM series folder, DICOM file, NIfTI or NPZ).
        labels: its label map (NIfTI, NPZ or DICOM SEG), or None.
        seg: the same labels as DICOM SEG, when the dataset has both.
        height_m: patient height in metres, when known.
        meta: every other key of the case's record.
    """

    id: str
    patient_id: str
    image: Path
    labels: Path | None = None
    seg: Path | None = None
    height_m: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_dataset(folder: str | os.PathLike) -> list[Case]:
    """Read ``folder/dataset.json`` and check that every case names existing files.

    Args:
        folder: the dataset folder (or the ``dataset.json`` file itself).

    Returns:
        The cases, in file order.

    Raises:
        ReadError: missing or malformed ``dataset.json``, duplicate ids, or a case whose files are missing.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / "dataset.json"
    root = path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReadError(path, "no such file (a dataset folder needs a dataset.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(path, f"not a readable dataset.json ({exc})") from None
    records = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise ReadError(path, 'expected {"cases": [...]} at the top level')
    cases: list[Case] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ReadError(path, f"case {i} is not an object")
        missing = [k for k in REQUIRED if not rec.get(k)]
        if missing:
            raise ReadError(path, f"case {i} lacks {', '.join(missing)}")
        cid = str(rec["id"])
        if cid in seen:
            raise ReadError(path, f"case id {cid!r} appears twice")
        seen.add(cid)

        def resolve(key: str) -> Path | None:
            if not rec.get(key):
                return None
            p = Path(rec[key])
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise ReadError(path, f"case {cid!r}: {key} {rec[key]!r} does not exist")
            return p

        height = rec.get("height_m")
        cases.append(Case(
            id=cid,
            patient_id=str(rec["patient_id"]),
            image=resolve("image"),  # type: ignore[arg-type]
            labels=resolve("labels"),
            seg=resolve("seg"),
            height_m=float(height) if isinstance(height, (int, float)) and height > 0 else None,
            meta={k: v for k, v in rec.items() if k not in (*REQUIRED, "labels", "seg", "height_m")},
        ))
    return cases
