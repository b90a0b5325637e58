"""From a DICOM series to the L3 measurements: the level finder's time and its share of the whole, in one run.

1. ``find_levels`` on the real 134-slice TCIA series (3 mm, 512x512, chest to sacrum), against reading it
   (``read_scan``); goal: the finder <= 1 s on 2 cores.
2. The whole case with the shipped model in int8: ``predict_batch`` on that series with ``--slices auto``
   (read, find the level, segment the three L3 slices, measure, review, write the default outputs: NIfTI,
   DICOM SEG, overlay and level pictures, CSV, JSON), in this process, and the ``kerasmuscle predict``
   command in a fresh process (its Python start and imports included); goal: <= 3 s. The parts come from
   the prediction's own timings (read, level, preprocess, model, restore), the rest is measuring and writing.

Medians over ``--rounds`` (a fresh output folder each round).

Usage:
    python bench/l3_pipeline.py                 # the README figures
    python bench/l3_pipeline.py --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERASMUSCLE_SHARED", ROOT.parent / "shared"))
TCIA = SHARED / "data" / "tcia-pancreas-ct-cb-001" / "dicom"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=Path, default=TCIA, help="the DICOM series [default: the TCIA series]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="int8", choices=("int8", "float32"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.series.exists():
        raise SystemExit(f"{args.series}: not found (set KERASMUSCLE_SHARED to the folder holding data/)")

    from kerasmuscle.core.level import find_levels
    from kerasmuscle.io import read_scan
    from kerasmuscle.predict import PredictConfig, predict_batch

    read_s, find_s = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        scan = read_scan(args.series)
        t1 = time.perf_counter()
        result = find_levels(scan)
        t2 = time.perf_counter()
        read_s.append(t1 - t0)
        find_s.append(t2 - t1)

    config = PredictConfig(precision=args.precision, height=1.72, threads=os.cpu_count())
    totals, parts = [], []
    with tempfile.TemporaryDirectory() as tmp:
        predict_batch([args.series], None, Path(tmp) / "warm", config)  # loads the model once (page cache)
        for k in range(args.rounds):
            t0 = time.perf_counter()
            batch = predict_batch([args.series], None, Path(tmp) / f"r{k}", config)
            totals.append(time.perf_counter() - t0)
            parts.append(batch.timings[0])
        cli = []
        for k in range(args.rounds):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "kerasmuscle", "predict", os.fspath(args.series), "--out",
                            os.path.join(tmp, f"c{k}"), "--precision", args.precision, "--height", "1.72"],
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t0)

    med = statistics.median
    part = {key: med(p[key] for p in parts) for key in parts[0]}
    whole = med(totals)
    out = {
        "series": os.fspath(args.series), "slices": int(scan.shape[0]), "cores": os.cpu_count(),
        "l3": result.l3.to_dict(),
        "read_s": round(med(read_s), 3), "find_levels_s": round(med(find_s), 3),
        "find_over_read": round(med(find_s) / med(read_s), 2),
        "case_in_process_s": round(whole, 3),
        "parts_s": {k: round(v, 3) for k, v in part.items()},
        "finder_share_of_case": round(part.get("level", 0.0) / whole, 3),
        "model_share_of_case": round(part.get("model", 0.0) / whole, 3),
        "case_cli_s": round(med(cli), 3), "precision": args.precision,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"series: {out['series']} ({out['slices']} slices), {out['cores']} cores, {args.rounds} rounds (medians)")
    print(f"L3: slices {out['l3']['slices']}, confidence {out['l3']['confidence']}")
    print(f"read_scan            {out['read_s']:.3f} s")
    print(f"find_levels          {out['find_levels_s']:.3f} s   ({out['find_over_read']:.2f}x the read; goal <= 1 s)")
    print(f"whole case, {args.precision:<7}  {whole:.3f} s   (read, level, segment 3 slices, measure, write; goal <= 3 s)")
    print("  parts: " + ", ".join(f"{k} {v:.3f}" for k, v in out["parts_s"].items() if k != "total"))
    print(f"  the finder's share  {out['finder_share_of_case']:.1%}; the model's {out['model_share_of_case']:.1%}")
    print(f"kerasmuscle predict  {out['case_cli_s']:.3f} s   (a fresh process: Python start and imports included)")


if __name__ == "__main__":
    main()
