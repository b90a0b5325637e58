"""Write a synthetic L3 cohort: per case a CT DICOM series, labels as NIfTI and DICOM SEG, and
``dataset.json`` describing them.

Determinism: case ``i`` of seed ``s`` is made from its own random streams (``[s, stream, i]``), so a
cohort is identical however many worker processes make it, and ``--cases 10`` is a prefix of
``--cases 20`` for the same seed. UIDs are derived from the same numbers, so they are unique across
cases and seeds and stable across runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasmuscle.config import SynthConfig
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.fileutil import atomic_path

_STREAM_PLAN, _STREAM_BODY, _STREAM_FOLLOW, _STREAM_CASE, _STREAM_SCAN = 0, 1, 2, 3, 4
_REPRESENTATIONS = ("uint16-1024", "int16-1024", "int16")


@dataclass(frozen=True)
class CasePlan:
    """Who case ``index`` is: its patient, and whether it is a later scan of that patient."""

    index: int
    case_id: str
    patient: int
    visit: int  # 0 for the first scan of a patient, 1.. for follow-ups


def plan_cohort(cases: int, seed: int, config: SynthConfig) -> list[CasePlan]:
    """Decide which cases are follow-up scans of earlier patients (deterministic for the seed).

    Args:
        cases: number of cases.
        seed: the cohort seed.
        config: its ``follow_up_fraction`` is the chance that a case re-scans an earlier patient.

    Returns:
        One :class:`CasePlan` per case, in order.
    """
    rng = np.random.default_rng([seed, _STREAM_PLAN])
    width = max(4, len(str(cases - 1)))
    plans: list[CasePlan] = []
    visits: list[int] = []
    for i in range(cases):
        u, pick = rng.random(), rng.random()  # always draw both, so the plan of case i never depends on cases
        if plans and u < config.follow_up_fraction:
            patient = plans[int(pick * len(plans))].patient
            visits[patient] += 1
        else:
            patient = len(visits)
            visits.append(0)
        plans.append(CasePlan(i, f"case_{i:0{width}d}", patient, visits[patient]))
    return plans


_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/kerasmuscle/kerasmuscle/synth")


def _uid(seed: int, *parts: Any) -> str:
    """A 2.25 UID from a name-based UUID: unique per (seed, case, role), the same in every run."""
    name = "/".join(map(str, (seed, *parts)))
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def make_planned_case(plan: CasePlan, seed: int, config: SynthConfig):
    """Make the arrays of one planned case (the same patient body for all visits of a patient)."""
    from kerasmuscle.synth.case import follow_up_body, make_case, sample_body

    body = sample_body(np.random.default_rng([seed, _STREAM_BODY, plan.patient]), config)
    for visit in range(1, plan.visit + 1):
        body = follow_up_body(body, np.random.default_rng([seed, _STREAM_FOLLOW, plan.patient, visit]), config)
    return make_case(np.random.default_rng([seed, _STREAM_CASE, plan.index]), config, body=body)


def _write_case(args: tuple[CasePlan, int, SynthConfig, str, bool]) -> dict[str, Any]:
    """Make one case and write its files below ``root``; return its dataset.json record."""
    from kerasmuscle import __version__
    from kerasmuscle.io.ctwrite import SeriesInfo, write_ct_series
    from kerasmuscle.io.nifti import write_nifti
    from kerasmuscle.io.scan import AXIAL_ORIENTATION, make_affine

    plan, seed, config, root, with_seg = args
    case = make_planned_case(plan, seed, config)
    rng = np.random.default_rng([seed, _STREAM_SCAN, plan.index])
    size = case.hu.shape[1]
    ps = float(case.pixel_spacing_mm)
    # Where the scanner put the slices: a table position for L3 and a reconstruction centre.
    z_l3 = float(rng.uniform(-320.0, -120.0))
    centre = np.array([rng.uniform(-15, 15), rng.uniform(-30, 30)])
    origin_xy = centre - (size / 2 - 0.5) * ps
    z0 = z_l3 + case.slice_offsets_mm[0]  # slices exactly slice_spacing_mm apart, as the scanner wrote them
    positions = np.array([[origin_xy[0], origin_xy[1], z0 + k * config.slice_spacing_mm] for k in range(len(case.hu))])
    date = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 2000)) + 200 * plan.visit)
    patient = case.patient
    pid = f"SYN{seed % 10000:04d}-{plan.patient:05d}"
    info = SeriesInfo(
        patient_id=pid,
        patient_name=f"Synthetic^{pid}",
        patient_sex=patient["sex"],
        patient_age=f"{int(patient['age_years']):03d}Y",
        patient_size_m=float(patient["height_m"]),
        patient_weight_kg=float(patient["weight_kg"]),
        study_uid=_uid(seed, plan.index, "study"),
        series_uid=_uid(seed, plan.index, "series"),
        frame_of_reference_uid=_uid(seed, plan.index, "for"),
        sop_uids=tuple(_uid(seed, plan.index, "sop", k) for k in range(len(case.hu))),
        study_date=date.strftime("%Y%m%d"),
        study_time=f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}00",
        study_description="SYNTHETIC CT ABDOMEN",
        series_description=f"SYNTHETIC L3 {case.acquisition.get('contrast_phase', '')}".strip(),
        series_number=2,
        accession_number=f"S{seed % 10000:04d}{plan.index:06d}",
        manufacturer="kerasmuscle synthetic",
        model="kerasmuscle.synth",
        kvp=float(case.acquisition.get("kvp", 120)),
        kernel=str(case.acquisition.get("kernel", "STANDARD")),
        comments=f"SYNTHETIC image made by kerasmuscle {__version__} (seed {seed}, case {plan.index}); "
                 "not patient data",
    )
    folder = Path(root) / plan.case_id
    folder.mkdir(parents=True, exist_ok=True)
    representation = _REPRESENTATIONS[int(rng.integers(len(_REPRESENTATIONS)))]
    write_ct_series(folder / "dicom", case.hu, pixel_spacing=(ps, ps), positions=positions,
                    slice_thickness=config.slice_spacing_mm, info=info, representation=representation)
    affine = make_affine(positions[0], AXIAL_ORIENTATION, (config.slice_spacing_mm, ps, ps))
    write_nifti(folder / "label.nii.gz", case.labels, affine)
    record: dict[str, Any] = {
        "id": plan.case_id,
        "patient_id": pid,
        "image": f"{plan.case_id}/dicom",
        "labels": f"{plan.case_id}/label.nii.gz",
        "height_m": round(float(patient["height_m"]), 3),
    }
    if with_seg:
        from kerasmuscle.io import read_scan
        from kerasmuscle.io.seg import write_seg

        # The SEG references the images as written, so it is made from the series read back.
        write_seg(folder / "seg.dcm", case.labels, read_scan(folder / "dicom"), series_uid=_uid(seed, plan.index, "seg-series"),
                  sop_uid=_uid(seed, plan.index, "seg"), series_number=99,
                  series_description="SYNTHETIC L3 muscle ground truth", algorithm_name="kerasmuscle.synth",
                  content_date_time=(info.study_date, info.study_time))
        record["seg"] = f"{plan.case_id}/seg.dcm"
    record.update({
        "visit": plan.visit,
        "sex": patient["sex"],
        "age_years": int(patient["age_years"]),
        "weight_kg": round(float(patient["weight_kg"]), 1),
        "storage": representation,
        **{k: v for k, v in case.acquisition.items() if isinstance(v, (str, int, float, bool))},
    })
    return record


def _has_highdicom() -> bool:
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def run_jobs(fn: Callable[[Any], dict[str, Any]], jobs: list[Any], workers: int,
             progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """``[fn(job) for job in jobs]``, in this process (``workers == 1``) or in a process pool, in order,
    calling ``progress(done, total)`` after each."""
    records: list[dict[str, Any]] = []
    if workers == 1:
        results = map(fn, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(fn, jobs, chunksize=1)
    try:
        for record in results:
            records.append(record)
            if progress:
                progress(len(records), len(jobs))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return records


def write_cohort(
    out: str | os.PathLike,
    *,
    cases: int,
    seed: int = 0,
    config: SynthConfig = SynthConfig(),
    workers: int | None = None,
    seg: bool | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Make a synthetic cohort folder.

    Args:
        out: the folder to create (built under a temporary name and renamed when complete).
        cases: number of cases (each ``config.slices`` adjacent slices at L3).
        seed: the cohort's seed; the same seed gives the same cohort.
        config: how cases vary.
        workers: processes to use (default: all CPU cores; 1 runs in this process).
        seg: also write each case's labels as DICOM SEG; default: when highdicom is installed.
        overwrite: replace an existing non-empty ``out``.
        progress: called as ``progress(done, total)`` after each case.

    Returns:
        The path of ``dataset.json``.

    Raises:
        KerasMuscleError: ``out`` exists and is not empty (without ``overwrite``), or ``seg=True``
            without highdicom.
    """
    out = Path(out)
    if cases < 1:
        raise KerasMuscleError(f"cases must be at least 1, got {cases}")
    if out.exists() and not out.is_dir():
        raise KerasMuscleError(f"{out}: exists and is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise KerasMuscleError(f"{out}: folder exists and is not empty; choose another or pass --overwrite")
    if seg is None:
        seg = _has_highdicom()
    elif seg and not _has_highdicom():
        from kerasmuscle.errors import MissingExtraError

        raise MissingExtraError("Writing DICOM SEG", "dicom", "highdicom")
    plans = plan_cohort(cases, seed, config)
    workers = max(1, min(workers or os.cpu_count() or 1, cases))
    with atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        jobs = [(p, seed, config, str(tmp), seg) for p in plans]
        records = run_jobs(_write_case, jobs, workers, progress)
        write_dataset_json(tmp, name=f"kerasmuscle synthetic L3 cohort (seed {seed})",
                           note="Synthetic CT made by kerasmuscle.synth: it proves the machinery, not clinical "
                                "accuracy.", seed=seed, config=config, records=records)
    return out / "dataset.json"


def write_dataset_json(folder: Path, *, name: str, note: str, seed: int, config: Any, records: list[dict[str, Any]],
                       **extra: Any) -> None:
    """Write ``folder/dataset.json`` for a synthetic dataset: its name, note, seed, config, label names,
    any ``extra`` keys, and the case records."""
    from kerasmuscle import __version__
    from kerasmuscle.labels import LABELS

    dataset = {"name": name, "synthetic": True, **extra, "note": note, "kerasmuscle_version": __version__,
               "seed": seed, "config": config.to_dict(), "labels": {str(lab.id): lab.name for lab in LABELS},
               "cases": records}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1) + "\n", encoding="utf-8")

