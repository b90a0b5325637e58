"""Patient-grouped, seeded cross-validation folds, saved once as ``splits.json``.

The file is data, not a cache: every fold, every resumed run and every evaluation reads it, and a user
may edit it (for example to keep a site or a scanner together). Its form::

    {"seed": 0, "folds": [{"fold": 0, "train": [...], "tune": [...], "val": [...]}, ...]}

``val`` holds the fold's held-out cases, scored by ``kerasmuscle evaluate``; ``train`` the cases it
learns from; ``tune`` a few training patients held back to drive the learning-rate schedule, early
stopping and the best checkpoint, so the held-out cases never influence the model.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kerasmuscle.data.dataset import Case
from kerasmuscle.errors import ReadError
from kerasmuscle.fileutil import atomic_write_text


def make_splits(cases: Sequence[Case], folds: int = 10, seed: int = 0, tune_fraction: float = 0.1) -> dict[str, Any]:
    """Assign patients to ``folds`` folds so that a patient's cases all land in one fold.

    Patients are shuffled with ``seed``, then placed largest first into the fold with the fewest cases,
    so folds differ in size by at most one patient's cases.

    Args:
        cases: the dataset.
        folds: number of folds (at least 2, at most the number of patients).
        seed: fixes the assignment.
        tune_fraction: share of each fold's training patients moved to ``tune`` (at least one patient
            when positive and the fold has three or more training patients).

    Returns:
        The splits as saved in ``splits.json``.

    Raises:
        ValueError: fewer patients than folds.
    """
    by_patient: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        by_patient[case.patient_id].append(case.id)
    patients = sorted(by_patient)
    if len(patients) < folds:
        raise ValueError(f"{folds} folds need at least {folds} patients; the dataset has {len(patients)}")
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    order.sort(key=lambda p: -len(by_patient[p]))  # stable: equal sizes keep the shuffled order
    members: list[list[str]] = [[] for _ in range(folds)]
    sizes = [0] * folds
    for patient in order:
        k = int(np.argmin(sizes))
        members[k].append(patient)
        sizes[k] += len(by_patient[patient])
    out = []
    for k in range(folds):
        train_patients = sorted(p for j in range(folds) if j != k for p in members[j])
        n_tune = int(round(tune_fraction * len(train_patients)))
        if tune_fraction > 0 and len(train_patients) >= 3:
            n_tune = max(n_tune, 1)
        tune_rng = np.random.default_rng([seed, k])
        tune = set(train_patients[i] for i in tune_rng.permutation(len(train_patients))[:n_tune])
        ids = lambda ps: sorted(c for p in ps for c in by_patient[p])  # noqa: E731
        out.append({"fold": k, "train": ids(p for p in train_patients if p not in tune),
                    "tune": ids(tune), "val": ids(members[k])})
    return {"seed": seed, "folds": out}


def check_splits(splits: Any, cases: Sequence[Case], path: str | os.PathLike = "splits.json") -> dict[str, Any]:
    """Check hand-edited or loaded splits against the dataset.

    Every id must name a case; a fold's ``train``, ``tune`` and ``val`` must not share a case or a
    patient; ``train`` must not be empty.

    Raises:
        ReadError: naming the file, the fold and the offending ids.
    """
    if not isinstance(splits, dict) or not isinstance(splits.get("folds"), list) or not splits["folds"]:
        raise ReadError(path, 'expected {"folds": [{"train": [...], "tune": [...], "val": [...]}, ...]}')
    patient_of = {c.id: c.patient_id for c in cases}
    for k, fold in enumerate(splits["folds"]):
        if not isinstance(fold, dict):
            raise ReadError(path, f"fold {k} is not an object")
        fold.setdefault("fold", k)
        fold.setdefault("tune", [])
        parts = {}
        for part in ("train", "tune", "val"):
            ids = fold.get(part)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ReadError(path, f"fold {k}: {part} must be a list of case ids")
            unknown = [i for i in ids if i not in patient_of]
            if unknown:
                raise ReadError(path, f"fold {k}: {part} names unknown case(s) {', '.join(unknown[:5])}")
            parts[part] = ids
        if not parts["train"]:
            raise ReadError(path, f"fold {k}: train is empty")
        for a, b in (("train", "val"), ("train", "tune"), ("tune", "val")):
            shared = sorted({patient_of[i] for i in parts[a]} & {patient_of[i] for i in parts[b]})
            if shared:
                raise ReadError(path, f"fold {k}: patient(s) {', '.join(shared[:5])} in both {a} and {b}")
    return splits


def save_splits(splits: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``splits.json`` (through a temporary file)."""
    atomic_write_text(path, json.dumps(splits, indent=1) + "\n")


def load_splits(path: str | os.PathLike, cases: Sequence[Case]) -> dict[str, Any]:
    """Read and check ``splits.json`` (see :func:`check_splits`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(path, f"not a readable splits file ({exc})") from None
    return check_splits(data, cases, path)
