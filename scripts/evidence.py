"""A bundle on every real CT series in ``../shared/data/``: the model card's real-scan evidence.

For each series it runs the batch predictor (``kerasmuscle predict``'s code, float32 and int8 ONNX) on the
L3 slices, writes the overlays, measurements and review flags, and where a reference exists scores it:

- ``totalsegmentator-s0009`` (1.5 mm, narrow spine-centred field): its reviewed ``iliopsoas`` (psoas major
  at L3) and ``autochthon`` (erector spinae) masks are the reference; Dice per group on the three slices
  at mid-L3 (the middle of the ``vertebrae_L3`` mask, the paper's three adjacent slices) and over every
  slice of the L3 vertebra. Rectus abdominis, abdominal wall and quadratus lumborum are not labelled
  there or lie outside the field: not scored.
- ``tcia-pancreas-ct-cb-001`` (whole abdomen, 3 mm slices, no muscle reference): the three slices at
  mid-L3 (indices 43-45 as ``read_scan`` orders them, index 0 the most caudal). Counted by eye on a
  mid-sagittal reformat: the L5/S1 disc at slice 16, then discs at 27, 38, 50, 62 and 73, the lowest ribs
  on the vertebra at 73-84 (T12), so L3 is slices 39-50. Overlay and review flags only.
- ``dcmqi-ct-3slice-liver-seg`` (three upper-abdominal slices, above L3): review flags only.

Usage:
    python scripts/evidence.py                           # the shipped model, ../shared, into evidence/
    python scripts/evidence.py --model exports/l3-synth-v1 --shared ../shared --out evidence --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

#: (case, path under shared/data, slices as --slices reads them or "L3" for the reference vertebra's middle).
SERIES = (
    ("tcia", "tcia-pancreas-ct-cb-001/dicom", "43-45"),
    ("totalsegmentator", "totalsegmentator-s0009/ct.nii.gz", "L3"),
    ("dcmqi", "dcmqi-ct-3slice-liver-seg", "all"),
)
TS_REFERENCE = {"psoas": ("iliopsoas", 3), "erector_spinae": ("autochthon", 5)}


def ts_reference(ts: Path, scan):
    """The TotalSegmentator label map (3 psoas, 5 erector spinae) and the slices of its L3 vertebra."""
    from kerasmuscle.io import read_labels

    seg = ts.parent / "segmentations"
    ref = np.zeros(scan.shape, np.uint8)
    for name, value in TS_REFERENCE.values():
        for side in ("left", "right"):
            ref[read_labels(seg / f"{name}_{side}.nii.gz", like=scan).array > 0] = value
    l3 = read_labels(seg / "vertebrae_L3.nii.gz", like=scan).array > 0
    return ref, np.flatnonzero(l3.reshape(len(l3), -1).any(1))


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = truth.sum(), pred.sum()
    return float(2 * np.logical_and(truth, pred).sum() / (t + p)) if t + p else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="bundle folder [default: the shipped model]")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("KERASMUSCLE_SHARED", "../shared")))
    parser.add_argument("--out", type=Path, default=Path("evidence"))
    parser.add_argument("--precisions", default="float32,int8")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from kerasmuscle.core.slices import SliceSelection
    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.predict import PredictConfig, predict_batch

    data = args.shared / "data"
    if not data.is_dir():
        print(f"{data}: not here (pass --shared)", file=sys.stderr)
        return 2
    result: dict = {"model": None, "series": {}}
    for precision in args.precisions.split(","):
        for case, rel, slices in SERIES:
            source = data / rel
            if not source.exists():
                continue
            ref = None
            if slices == "L3":
                scan = read_scan(source)
                ref, l3 = ts_reference(source, scan)
                mid = int(round(l3.mean()))
                runs = {"mid_l3": [mid - 1, mid, mid + 1], "all_l3": [int(i) for i in l3]}
            else:
                runs = {"l3" if slices != "all" else "all": SliceSelection.parse(slices)}
            for run_name, selection in runs.items():
                if not isinstance(selection, SliceSelection):
                    selection = SliceSelection("index", indices=tuple(selection))
                out = args.out / precision / f"{case}-{run_name}"
                batch = predict_batch([source], args.model, out,
                                      PredictConfig(slices=selection, precision=precision, overwrite=True))
                if batch.failed:
                    print(f"{source}: {batch.failed[0]}", file=sys.stderr)
                    return 1
                folder = next(p for p in out.iterdir() if (p / "measurements.json").is_file())
                record = json.loads((folder / "measurements.json").read_text())
                result["model"] = record["model"].get("bundle_path")
                entry = {"slices": record["slice_indices"], "needs_review": record["review"]["needs_review"],
                         "flags": [f["message"] for f in record["review"]["flags"]],
                         "overlay": str(folder / "overlay.png")}
                if ref is not None:
                    pred = read_labels(folder / "labels.nii.gz", like=scan).array
                    index = list(record["slice_indices"])
                    entry["dice"] = {group: round(dice(ref[index] == value, pred[index] == value), 4)
                                     for group, (_, value) in TS_REFERENCE.items()}
                result["series"].setdefault(f"{case}/{run_name}", {})[precision] = entry
    (args.out / "evidence.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"model: {result['model']}")
    for name, by_precision in result["series"].items():
        for precision, e in by_precision.items():
            scores = "  ".join(f"{g} Dice {d:.3f}" for g, d in e.get("dice", {}).items())
            review = "needs review: " + "; ".join(e["flags"]) if e["needs_review"] else "no review flag"
            print(f"{name:28s} {precision:8s} slices {e['slices'][0]}-{e['slices'][-1]}  {scores}  {review}")
    print(f"wrote {args.out / 'evidence.json'} and the overlays under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
