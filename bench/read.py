"""Reading and synthesis speed, as ratios measured in the same run.

1. ``read_scan`` on the real TCIA series (134 slices of 512x512) against SimpleITK's
   ImageSeriesReader (GetGDCMSeriesFileNames + Execute, GDCM in C++), rounds interleaved so both
   see the same file cache and machine load; goal: ratio <= 1.0. Both return HU; SimpleITK returns
   int16, kerasmuscle float32 (twice the bytes written).
2. Synthetic cohort speed in cases per second, everything included (anatomy, rendering, DICOM series,
   NIfTI labels, DICOM SEG, dataset.json), with all cores and with one; goal: >= 5 cases/s.

Usage:
    python bench/read.py                      # the figures in the README
    python bench/read.py --rounds 5 --cases 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = Path(os.environ.get("KERASMUSCLE_SHARED", ROOT.parent / "shared")) / "data" / \
    "tcia-pancreas-ct-cb-001" / "dicom"


def bench_read(series: Path, rounds: int) -> dict:
    import numpy as np
    import SimpleITK as sitk

    from kerasmuscle import read_scan

    def ours():
        return read_scan(series).hu

    def theirs():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
        return reader.Execute()

    a, image = ours(), theirs()  # warm the file cache and the imports
    b = sitk.GetArrayFromImage(image).astype(np.float32)
    if image.GetDirection()[8] < 0:
        b = b[::-1]
    if a.shape != b.shape:
        raise SystemExit(f"shapes differ: {a.shape} vs {b.shape}")
    t_ours, t_sitk = [], []
    for _ in range(rounds):
        for fn, times in ((ours, t_ours), (theirs, t_sitk)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    med_ours, med_sitk = statistics.median(t_ours), statistics.median(t_sitk)
    return {
        "series": str(series),
        "slices": int(a.shape[0]),
        "rounds": rounds,
        "kerasmuscle_s": round(med_ours, 4),
        "simpleitk_s": round(med_sitk, 4),
        "ratio": round(med_ours / med_sitk, 3),
        "kerasmuscle_mvoxel_per_s": round(a.size / med_ours / 1e6, 1),
        "same_values": bool(np.array_equal(b, a)),
    }


def bench_synth(cases: int, workers: int) -> dict:
    from kerasmuscle.synth.cohort import write_cohort

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_cohort(Path(tmp) / "c", cases=cases, seed=123, workers=workers)
        elapsed = time.perf_counter() - start
    return {"cases": cases, "workers": workers, "seconds": round(elapsed, 2), "cases_per_s": round(cases / elapsed, 2)}


def bench_case_parts(count: int) -> dict:
    """Where one case's time goes, in one process: making the arrays vs writing the files."""
    import numpy as np

    from kerasmuscle.config import SynthConfig
    from kerasmuscle.synth.case import make_case

    config = SynthConfig()
    times = []
    for i in range(count):
        start = time.perf_counter()
        make_case(np.random.default_rng([99, i]), config)
        times.append(time.perf_counter() - start)
    return {"make_case_median_ms": round(1000 * statistics.median(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES, help="a DICOM series folder")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds for reading")
    parser.add_argument("--cases", type=int, default=40, help="synthetic cases per timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    cores = os.cpu_count() or 1
    result = {
        "machine": {"cpu_cores": cores, "python": sys.version.split()[0]},
        "read": bench_read(args.series, args.rounds),
        "case_parts": bench_case_parts(10),
        "synth_all_cores": bench_synth(args.cases, cores),
        "synth_one_core": bench_synth(max(4, args.cases // 4), 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return
    r = result["read"]
    print(f"read_scan vs SimpleITK on {r['slices']} slices ({r['rounds']} interleaved rounds, medians):")
    print(f"  kerasmuscle {r['kerasmuscle_s']:.3f} s, SimpleITK {r['simpleitk_s']:.3f} s, "
          f"ratio {r['ratio']:.2f} (goal <= 1.0); {r['kerasmuscle_mvoxel_per_s']} Mvoxel/s; "
          f"identical HU: {r['same_values']}")
    for key in ("synth_all_cores", "synth_one_core"):
        s = result[key]
        print(f"synth, {s['workers']} worker(s): {s['cases']} cases in {s['seconds']:.1f} s = "
              f"{s['cases_per_s']:.2f} cases/s (goal >= 5 on all cores)")
    print(f"  make_case alone (arrays, no files): {result['case_parts']['make_case_median_ms']} ms median")


if __name__ == "__main__":
    main()
