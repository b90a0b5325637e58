"""Big series: time and peak memory of read + level + L3 measurement against the slice count, in one run.

Writes one synthetic spine (:mod:`kerasmuscle.synth.spine`, seed ``--seed``, normal anatomy, the whole
column from T9/T10 to the femoral heads, whole-abdomen field of view, 512x512) as DICOM series of each
``--sizes`` slice count: the same anatomy, sampled with the slice spacing that gives that many slices
(about 0.43 mm for 1,000 slices). Then, per size, a fresh Python process runs

1. ``read_scan`` of the series folder (the files are in the page cache: they were just written),
2. ``find_levels`` (the column, the discs, the names, the L3 slices),
3. the L3 slices segmented with the shipped model (``Predictor.predict`` on those slices only, int8 by
   default) and measured (``measure_case``),

and prints each stage's wall time (the median of ``--rounds`` processes), the process's peak RSS (VmHWM)
after each stage, time per slice, and the growth of time against the growth of the slice count
(``(t / t_smallest) / (n / n_smallest)``: 1.0 is linear; above 1, time grows faster than the slice count),
in wall time and in the process's CPU time (steadier when other work shares the cores).
Goal (issue 14, part 5): peak RSS <= 1.5 GB at 1,000 slices and time growing at most linearly (a CPU-time
growth of at most 1.1 from the smallest to the largest size, for timing noise).

Usage:
    python bench/big_series.py                          # the README figures (125, 250, 500, 1000 slices)
    python bench/big_series.py --sizes 125,250 --json
    python bench/big_series.py --keep /tmp/big          # keep (and reuse) the written series
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 1536.0  # 1.5 GB

# The measured process: one stage after another, VmHWM read after each (it only grows).
CHILD = r"""
import json, sys, time
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
t = time.perf_counter()
from kerasmuscle.core.level import find_levels
from kerasmuscle.core.measure import measure_case
from kerasmuscle.io import read_scan
from kerasmuscle.predict import Predictor
predictor = Predictor.from_bundle(None, precision=sys.argv[2], threads=int(sys.argv[3]))
out = {"start_s": time.perf_counter() - t, "start_mb": hwm()}
t, c = time.perf_counter(), time.process_time()
scan = read_scan(sys.argv[1])
out.update(read_s=time.perf_counter() - t, read_cpu_s=time.process_time() - c, read_mb=hwm(), slices=scan.shape[0],
           spacing=list(scan.spacing))
t, c = time.perf_counter(), time.process_time()
level = find_levels(scan)
out.update(level_s=time.perf_counter() - t, level_cpu_s=time.process_time() - c, level_mb=hwm(),
           l3=level.l3.to_dict())
t, c = time.perf_counter(), time.process_time()
if level.l3.found:
    prediction = predictor.predict(scan, level.l3.indices)
    rows, case = measure_case(scan, prediction.labels, [int(i) for i in prediction.slices], height_m=1.72)
    out.update(measured=len(rows), sma_cm2=case["sma_cm2"])
out.update(measure_s=time.perf_counter() - t, measure_cpu_s=time.process_time() - c, measure_mb=hwm())
print(json.dumps(out))
"""


def spacing_for(seed: int, slices: int, config) -> float:
    """The slice spacing (mm) at which ``make_spine(seed)`` covers its column in ``slices`` slices.

    The column's extent does not depend on the spacing or the image size (both are drawn or used after it),
    so it is probed cheaply at 64x64 and 0.1 mm; ``extent / (slices - 0.5)`` then gives exactly ``slices``.
    """
    import dataclasses

    from kerasmuscle.synth.spine import make_spine

    step = 0.1
    probe, _ = make_spine(seed, dataclasses.replace(config, image_size=64, slice_spacing_mm=(step,)))
    extent = (probe.shape[0] - 1) * step
    return extent / (slices - 0.5)


def write_series(folder: Path, seed: int, slices: int) -> Path:
    """Write the ``slices``-slice series of the spine into ``folder`` (kept when it is already there)."""
    import dataclasses

    from kerasmuscle.synth.spine import SpineConfig, write_spine_series

    case = folder / f"spine_{seed}_{slices}"
    if (case / "levels.json").exists():
        return case / "dicom"
    config = SpineConfig(image_size=512, variant="normal", coverage="full", narrow_fraction=0.0)
    config = dataclasses.replace(config, slice_spacing_mm=(spacing_for(seed, slices, config),))
    write_spine_series(case, seed, config, overwrite=True)
    return case / "dicom"


def measure(series: Path, precision: str, threads: int, rounds: int) -> dict:
    """Run the stages in ``rounds`` fresh interpreters: median times, highest peaks."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    runs = []
    for _ in range(rounds):
        res = subprocess.run([sys.executable, "-c", CHILD, str(series), precision, str(threads)], capture_output=True,
                             text=True, cwd=ROOT, env=env)
        if res.returncode:
            raise SystemExit(f"{series}: the measured process failed:\n{res.stderr[-2000:]}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    out = dict(runs[0])
    for key in out:
        if key.endswith("_s"):
            out[key] = statistics.median(r[key] for r in runs)
        elif key.endswith("_mb"):
            out[key] = max(r[key] for r in runs)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="125,250,500,1000", help="slice counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic spine's seed")
    parser.add_argument("--precision", default="int8", choices=("int8", "float32"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per size (median times)")
    parser.add_argument("--keep", type=Path, help="write the series here and keep them (reused when present)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    folder = args.keep or Path(tempfile.mkdtemp(prefix="kerasmuscle-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in sizes:
            t = time.perf_counter()
            series = write_series(folder, args.seed, n)
            written = time.perf_counter() - t
            row = {"size": n, "write_s": written, **measure(series, args.precision, args.threads, args.rounds)}
            row["total_s"] = row["read_s"] + row["level_s"] + row["measure_s"]
            row["total_cpu_s"] = row["read_cpu_s"] + row["level_cpu_s"] + row["measure_cpu_s"]
            row["peak_mb"] = row["measure_mb"]
            rows.append(row)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    base = rows[0]
    for row in rows:
        grow = row["slices"] / base["slices"]
        row["ms_per_slice"] = 1000 * row["total_s"] / row["slices"]
        row["growth"] = {k: (row[f"{k}_s"] / base[f"{k}_s"]) / grow for k in ("read", "level", "measure", "total")}
        row["cpu_growth"] = {k: (row[f"{k}_cpu_s"] / base[f"{k}_cpu_s"]) / grow
                             for k in ("read", "level", "measure", "total")}
    big = rows[-1]
    report = {"seed": args.seed, "rounds": args.rounds, "precision": args.precision, "threads": args.threads,
              "cores": os.cpu_count(), "rows": rows, "limit_mb": LIMIT_MB, "peak_ok": big["peak_mb"] <= LIMIT_MB,
              "linear_ok": big["cpu_growth"]["total"] <= 1.0 + 0.1}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"synthetic spine seed {args.seed}, 512x512, L3 slices segmented in {args.precision}, {args.threads} "
          f"threads; {args.rounds} fresh processes per size (median times; start: imports + model load)")
    print(f"{'slices':>6} {'mm':>5} {'read s':>7} {'level s':>8} {'L3 s':>6} {'total s':>8} {'ms/slice':>8} "
          f"{'growth':>6} | peak RSS MB: {'start':>5} {'read':>6} {'level':>6} {'L3':>6} | L3 slices")
    for r in rows:
        l3 = r["l3"]["slices"] if r["l3"]["found"] else "not found"
        print(f"{r['slices']:>6} {r['spacing'][0]:>5.2f} {r['read_s']:>7.2f} {r['level_s']:>8.2f} "
              f"{r['measure_s']:>6.2f} {r['total_s']:>8.2f} {r['ms_per_slice']:>8.2f} {r['growth']['total']:>6.2f} "
              f"|              {r['start_mb']:>5.0f} {r['read_mb']:>6.0f} {r['level_mb']:>6.0f} "
              f"{r['measure_mb']:>6.0f} | {l3}")
    g = big["growth"]
    print(f"growth of time against slices, {base['slices']} -> {big['slices']} (1.0 = linear): read {g['read']:.2f}, "
          f"level {g['level']:.2f}, L3 {g['measure']:.2f}, total {g['total']:.2f}")
    g = big["cpu_growth"]
    print(f"the same in CPU time (steadier when the cores are shared): read {g['read']:.2f}, level {g['level']:.2f}, "
          f"L3 {g['measure']:.2f}, total {g['total']:.2f}")
    print(f"peak RSS at {big['slices']} slices: {big['peak_mb']:.0f} MB (goal <= {LIMIT_MB:.0f} MB): "
          f"{'met' if report['peak_ok'] else 'MISSED'}; CPU time at most linear: {'yes' if report['linear_ok'] else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
