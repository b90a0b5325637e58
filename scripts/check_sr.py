"""Check every DICOM SR of a results folder: dciodvfy finds no error, and its areas equal measurements.json.

Usage (the README's figures):
    kerasmuscle synth /tmp/democo --cases 6
    kerasmuscle predict /tmp/democo/case_*/dicom ../shared/data/tcia-pancreas-ct-cb-001/dicom \\
        ../shared/data/dcmqi-ct-3slice-liver-seg ../shared/data/totalsegmentator-s0009/ct.nii.gz \\
        --out /tmp/srb --height 1.72 --cutoffs martin2013
    python scripts/check_sr.py /tmp/srb
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    from kerasmuscle.io.sr import read_sr_values
    from kerasmuscle.labels import MUSCLE_LABELS

    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        print("dciodvfy (Debian package dicom3tools) is not installed", file=sys.stderr)
        return 2
    count = bad = 0
    worst = 0.0
    for sr in sorted(args.results.glob("*/sr.dcm")):
        run = subprocess.run([dciodvfy, str(sr)], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        m = json.loads((sr.parent / "measurements.json").read_text())["measurements"]
        got = {(v["group"], v["name"], v["laterality"]): v["value"] for v in read_sr_values(sr)}
        pairs = [(got.get((f"{lab.name} at the measured slices", "Area", None)), m[f"{lab.key}_area_cm2"])
                 for lab in MUSCLE_LABELS]
        pairs.append((got.get(("skeletal muscle, all five groups", "Area", None)), m["sma_cm2"]))
        for a, b in pairs:
            if a is not None and b:
                worst = max(worst, abs(a - b))
        count += 1
        bad += bool(errors)
        print(f"{sr.parent.name}: dciodvfy errors {len(errors)}{': ' + errors[0] if errors else ''}")
    print(f"{count} SR, {bad} with dciodvfy errors; largest |SR - measurements.json| area difference {worst:.1e} cm²")
    return 1 if bad or not count else 0


if __name__ == "__main__":
    sys.exit(main())
