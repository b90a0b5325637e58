"""Prediction speed and footprint: every runtime against this CPU's FLOP floor, in one run.

1. Peak: the best float32 matmul rate of TensorFlow (oneDNN) and of ONNX Runtime (MLAS) on this machine's
   threads; the FLOP floor per slice is ``forward FLOPs / the higher peak``.
2. Per-slice latency at 512x512, batch 1, of the same network (the ``paper`` preset, 205.7 GFLOP) in Keras
   (a compiled ``tf.function``), ONNX Runtime float32 and int8 (static quantisation), LiteRT float32, int8
   (full-integer) and float16 weights, int8 calibrated on synthetic slices; medians over interleaved rounds. Goals: ONNX float32 <=
   1.15x the floor; reduced precision >= 2.5x faster than ONNX float32.
3. The predictor process: import time of ``kerasmuscle.predict`` (fresh interpreters, median) and peak RSS
   of processes that load the bundle and segment a case of three 512x512 slices at batch 1 (ONNX float32 with
   ``lean_memory`` on and off and with ``low_memory``, ONNX int8, LiteRT float32 and int8). Goals: import
   <= 0.3 s, peak RSS <= 350 MB. ``--memory``: only this, step by step (interpreter, ONNX Runtime import, session, read, preprocess, one
   inference, post-processing, the whole case) for the default, ``lean_memory=False`` and ``low_memory=True``,
   with a check that all three give the same labels and probabilities, and the time ``low_memory`` costs
   (both sessions in one process, runs interleaved).
4. End to end per case: ``predict_batch`` on synthetic 3-slice DICOM cases at 512x512 (read, predict,
   measure, write NIfTI, NPZ, DICOM SEG, PNG, CSV, JSON) against the model's share of that time. Goal:
   everything around the model <= 10 % of the case time.

The weights are random (speed does not depend on them), so int8 agreement with float32 is not measured
here; ``kerasmuscle export`` measures it on held-out slices of a trained model.

Usage:
    python bench/predict.py              # the README figures
    python bench/predict.py --rounds 3 --cases 2 --json
    python bench/predict.py --memory --repeats 3 --rounds 5    # the float32 memory breakdown in the README
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def ort_matmul_peak(threads: int, n: int = 4096, rounds: int = 5) -> float:
    """Best float32 MatMul rate of ONNX Runtime in GFLOP/s."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n, n]) for v in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    session.run(None, {"a": a, "b": a})
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        session.run(None, {"a": a, "b": a})
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def build_bundle(workdir: Path, preset: str, size: int, onnx_only: bool = False) -> tuple[Path, Path, object]:
    """A synthetic 512x512 cohort and a bundle of a randomly initialised network, built with the export code
    (only its ONNX float32 model with ``onnx_only``)."""
    import numpy as np

    from kerasmuscle import bundle
    from kerasmuscle.config import PreprocessConfig, SynthConfig, TrainConfig, UNetConfig
    from kerasmuscle.export import base_metadata, write_onnx, write_onnx_int8, write_savedmodel, write_tflite
    from kerasmuscle.io import read_scan
    from kerasmuscle.model import build_unet, count_params
    from kerasmuscle.core.preprocessing import prepare_slices
    from kerasmuscle.synth.cohort import write_cohort
    from kerasmuscle.fileutil import import_keras

    keras, _ = import_keras()
    cohort = workdir / "cohort"
    write_cohort(cohort, cases=6, seed=3, workers=1, config=SynthConfig(image_size=size))
    config = TrainConfig(model=UNetConfig.preset(preset), preprocess=PreprocessConfig(image_size=size))
    keras.utils.set_random_seed(0)
    model = build_unet(config.model)
    run = workdir / "run"
    (run / "fold_0").mkdir(parents=True)
    config.save(run / "config.json")
    model.save(run / "fold_0" / "model.keras")
    cases = sorted(p / "dicom" for p in cohort.glob("case_*"))
    calib = np.concatenate([prepare_slices(read_scan(c).hu, range(3), config.preprocess) for c in cases[:4]])
    out = workdir / "bundle"
    out.mkdir()
    meta = base_metadata({"model": run / "fold_0" / "model.keras", "run": run, "fold": 0, "config": config,
                          "manifest": {}}, "bench", count_params(model))
    files = {"keras": "model.keras", "onnx": "model.onnx", "onnx_int8": "model_int8.onnx", "tflite": "model.tflite",
             "tflite_int8": "model_int8.tflite", "tflite_fp16": "model_fp16.tflite"}
    (out / "model.keras").write_bytes((run / "fold_0" / "model.keras").read_bytes())
    write_onnx(model, config, out / "model.onnx", meta)
    if onnx_only:
        only = dataclasses.replace(meta, files={"onnx": "model.onnx"}, checked_on="bench: not checked")
        bundle.write_metadata(out, only)
        bundle.write_checksums(out)
        return out, cohort, model
    write_onnx_int8(out / "model.onnx", out / "model_int8.onnx", calib, workdir)
    write_savedmodel(model, config, workdir / "saved_model")
    write_tflite(workdir / "saved_model", out / "model.tflite")
    write_tflite(workdir / "saved_model", out / "model_fp16.tflite", float16=True)
    write_tflite(workdir / "saved_model", out / "model_int8.tflite", int8_calibration=calib)
    bundle.write_metadata(out, dataclasses.replace(meta, files=files, checked_on="bench: not checked"))
    bundle.write_checksums(out)
    return out, cohort, model


def latencies(bundle: Path, model, size: int, rounds: int, threads: int) -> dict[str, float]:
    """Median per-slice seconds at batch 1 for each runtime, rounds interleaved."""
    import numpy as np

    from kerasmuscle.predict import load_model
    from kerasmuscle.fileutil import import_keras

    _, tf = import_keras()
    x = np.random.default_rng(1).uniform(-1, 1, (1, size, size, 1)).astype(np.float32)
    keras_fn = tf.function(lambda v: model(v, training=False), jit_compile=False)
    runners = {
        "keras": lambda: keras_fn(tf.constant(x)).numpy(),
        "onnx_float32": (lambda r: lambda: r.run(x))(load_model(bundle / "model.onnx", "onnx", threads=threads,
                                                                 lean_memory=False)),
        "onnx_int8": (lambda r: lambda: r.run(x))(load_model(bundle / "model_int8.onnx", "onnx", threads=threads,
                                                              lean_memory=False)),
        "litert_float32": (lambda r: lambda: r.run(x))(load_model(bundle / "model.tflite", "tflite", threads=threads)),
        "litert_float16": (lambda r: lambda: r.run(x))(load_model(bundle / "model_fp16.tflite", "tflite",
                                                                   threads=threads)),
        "litert_int8": (lambda r: lambda: r.run(x))(load_model(bundle / "model_int8.tflite", "tflite",
                                                                threads=threads)),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        run()
        run()
    for _ in range(rounds):
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# Peak RSS is the process's own high-water mark (VmHWM): ru_maxrss would report the parent's (this
# bench, with TensorFlow loaded) because Linux carries it across fork and exec.
PROCESS = """
import sys, time
t = time.perf_counter()
from kerasmuscle.predict import Predictor
imported = time.perf_counter() - t
p = Predictor.from_bundle(sys.argv[1], sys.argv[5], lean_memory=sys.argv[3] != "0", low_memory=sys.argv[3] == "low",
                          precision=sys.argv[4])
r = p.predict(sys.argv[2], batch_size=1)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(imported, hwm / 1024, len(heavy))
"""

VARIANTS = {"onnx_float32_lean": ("1", "float32", "onnx"), "onnx_float32_default": ("0", "float32", "onnx"),
            "onnx_float32_low": ("low", "float32", "onnx"),
            "onnx_int8_lean": ("1", "int8", "onnx"), "litert_float32": ("1", "float32", "tflite"),
            "litert_int8": ("1", "int8", "tflite")}


def predictor_process(bundle: Path, case: Path, repeats: int) -> dict[str, float]:
    """Import time (median over fresh interpreters) and peak RSS in MB of predictor processes."""
    out: dict[str, list[float]] = {"import_s": [], **{f"rss_{k}_mb": [] for k in VARIANTS}}
    for _ in range(repeats):
        for key, args in VARIANTS.items():
            res = subprocess.run([sys.executable, "-c", PROCESS, str(bundle), str(case), *args], capture_output=True,
                                 text=True, cwd=ROOT, check=True)
            imported, rss, heavy = res.stdout.split()
            if heavy != "0":
                raise SystemExit("the predictor process imported TensorFlow or Keras")
            out[f"rss_{key}_mb"].append(float(rss))
            if key == "onnx_float32_lean":
                out["import_s"].append(float(imported))
    return {k: statistics.median(v) for k, v in out.items()}


# Where a float32 predictor's memory goes: VmRSS and VmHWM (MB) after each step of one process.
MEMORY = """
import json, sys, time
def mem():
    with open("/proc/self/status") as fh:
        d = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in fh if l.startswith(("VmRSS", "VmHWM"))}
    return [d["VmRSS"], d["VmHWM"]]
import numpy as np
steps = {"interpreter + numpy": mem()}
import onnxruntime
steps["+ import onnxruntime"] = mem()
from kerasmuscle.core.postprocess import threshold_hu
from kerasmuscle.core.preprocessing import prepare_slices, restore_probabilities
from kerasmuscle.io import read_scan
from kerasmuscle.predict import Predictor
steps["+ import kerasmuscle.predict"] = mem()
p = Predictor.from_bundle(sys.argv[1], lean_memory=sys.argv[3] != "0", low_memory=sys.argv[3] == "low")
steps["+ session (52 MB of weights)"] = mem()
scan = read_scan(sys.argv[2])
steps["+ read the 3-slice DICOM case"] = mem()
x = prepare_slices(scan.hu, [0], p.preprocess)
steps["+ preprocess one slice"] = mem()
y = p.model.run(x)
steps["+ one inference"] = mem()
labels = threshold_hu(np.argmax(restore_probabilities(y, scan.shape[1:]), -1).astype(np.uint8), scan.hu[:1], p.hu_range)
steps["+ resize back, labels, HU post-processing"] = mem()
t = time.perf_counter()
r = p.predict(scan, batch_size=1)
seconds = (time.perf_counter() - t) / len(r.slices)
steps["+ the whole case (3 slices, Predictor.predict)"] = mem()
np.savez(sys.argv[4], labels=r.labels, probabilities=y)
print(json.dumps({"steps": steps, "seconds_per_slice": seconds, "model_s": r.seconds["model"] / len(r.slices)}))
"""

# The time low_memory costs: both sessions in one process (glibc's threshold fixed for both), runs interleaved.
ARENA_COST = """
import json, sys, time
import numpy as np
from kerasmuscle.predict.runtimes import OnnxModel
models = {"lean": OnnxModel(sys.argv[1]), "low": OnnxModel(sys.argv[1], low_memory=True)}
x = np.random.default_rng(1).uniform(-1, 1, (1, int(sys.argv[3]), int(sys.argv[3]), 1)).astype(np.float32)
times = {k: [] for k in models}
for k, m in models.items():
    m.run(x)
for _ in range(int(sys.argv[2])):
    for k, m in models.items():
        t, c = time.perf_counter(), time.process_time()
        m.run(x)
        times[k].append((time.perf_counter() - t, time.process_time() - c))
print(json.dumps({k: [float(np.median([v[j] for v in t])) for j in (0, 1)] for k, t in times.items()}))
"""

MEMORY_VARIANTS = {"lean (default)": "1", "lean_memory=False": "0", "low_memory=True": "low"}


def memory_breakdown(bundle: Path, case: Path, repeats: int, workdir: Path) -> dict:
    """Per variant (``MEMORY_VARIANTS``): the medians over ``repeats`` fresh processes (variants interleaved) of
    VmRSS and VmHWM after each step, seconds per slice, and whether the case's labels and one slice's network
    output equal the default's."""
    import numpy as np

    runs: dict[str, list[dict]] = {k: [] for k in MEMORY_VARIANTS}
    for i in range(repeats):
        for key, flag in MEMORY_VARIANTS.items():
            saved = workdir / f"mem_{flag}_{i}.npz"
            res = subprocess.run([sys.executable, "-c", MEMORY, str(bundle), str(case), flag, str(saved)],
                                 capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                raise SystemExit(f"memory process ({key}) failed:\n{res.stderr[-2000:]}")
            runs[key].append({**json.loads(res.stdout.strip().splitlines()[-1]), "saved": saved})
    med = statistics.median
    ref = np.load(runs["lean (default)"][0]["saved"])
    out = {}
    for key, rs in runs.items():
        steps = {s: [med(r["steps"][s][j] for r in rs) for j in (0, 1)] for s in rs[0]["steps"]}
        same = [np.load(r["saved"]) for r in rs]
        out[key] = {"steps": steps, "peak_mb": med(r["steps"][list(steps)[-1]][1] for r in rs),
                    "seconds_per_slice": med(r["seconds_per_slice"] for r in rs),
                    "model_s": med(r["model_s"] for r in rs),
                    "labels_identical": all(np.array_equal(d["labels"], ref["labels"]) for d in same),
                    "max_probability_difference": max(float(np.abs(d["probabilities"] - ref["probabilities"]).max())
                                                      for d in same)}
    return out


def print_memory(report: dict) -> None:
    """The breakdown table (one column per variant: RSS / peak so far, MB) and the variants' cost."""
    keys = list(report)
    print("step".ljust(48) + "".join(f"{k:>24}" for k in keys) + "   (VmRSS / VmHWM so far, MB)")
    for step in report[keys[0]]["steps"]:
        print(step.ljust(48) + "".join(f"{'%.0f / %.0f' % tuple(report[k]['steps'][step]):>24}" for k in keys))
    print("peak".ljust(48) + "".join(f"{report[k]['peak_mb']:>24.0f}" for k in keys))
    print("seconds per slice (model)".ljust(48)
          + "".join(f"{'%.3f (%.3f)' % (report[k]['seconds_per_slice'], report[k]['model_s']):>24}" for k in keys))
    print("labels identical to the default's / max |dp|".ljust(48)
          + "".join(f"{'%s / %.1e' % (report[k]['labels_identical'], report[k]['max_probability_difference']):>24}"
                    for k in keys))


def end_to_end(bundle: Path, cohort: Path, workdir: Path, threads: int) -> dict[str, float]:
    """Case time of predict_batch (all outputs) against its model time, over the cohort's cases."""
    from kerasmuscle.predict.batch import predict_batch

    cases = sorted(str(p / "dicom") for p in cohort.glob("case_*"))
    # One warm-up case, so session start-up is not counted against the first case.
    predict_batch(cases[:1], bundle, workdir / "warm", formats="nifti,npz,seg,png,csv,json", threads=threads)
    result = predict_batch(cases, bundle, workdir / "out", formats="nifti,npz,seg,png,csv,json", threads=threads)
    if result.failed:
        raise SystemExit(f"end-to-end run failed: {result.failed}")
    total = sum(t["total"] for t in result.timings)
    parts = {k: sum(t[k] for t in result.timings) for k in ("read", "preprocess", "model", "restore")}
    n = len(result.timings)
    return {"cases": n, "case_s": total / n, **{f"{k}_s": v / n for k, v in parts.items()},
            "measure_write_s": (total - sum(parts.values())) / n, "around_model": (total - parts["model"]) / total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", choices=["paper", "classic"])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds")
    parser.add_argument("--repeats", type=int, default=5, help="fresh predictor processes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory", action="store_true",
                        help="only the float32 predictor's memory, step by step (an ONNX-only bundle; no timings)")
    args = parser.parse_args(argv)
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            bundle, cohort, _ = build_bundle(Path(tmp), args.preset, args.image_size, onnx_only=True)
            case = sorted(cohort.glob("case_*"))[0] / "dicom"
            report = memory_breakdown(bundle, case, args.repeats, Path(tmp))
            res = subprocess.run([sys.executable, "-c", ARENA_COST, str(bundle / "model.onnx"), str(args.rounds),
                                  str(args.image_size)], capture_output=True, text=True, cwd=ROOT, check=True)
            cost = json.loads(res.stdout.strip().splitlines()[-1])
        if args.json:
            print(json.dumps({"variants": report, "arena_cost": cost}, indent=2))
        else:
            print(f"{args.preset} U-Net float32 at {args.image_size}x{args.image_size}, batch 1, ONNX Runtime's "
                  f"default threads; medians of {args.repeats} fresh processes per variant, interleaved")
            print_memory(report)
            print(f"one process, {args.rounds} interleaved runs, medians: lean {cost['lean'][0]:.3f} s wall, "
                  f"{cost['lean'][1]:.3f} s CPU; low_memory {cost['low'][0]:.3f} s wall, {cost['low'][1]:.3f} s CPU "
                  f"-> low_memory costs {cost['low'][0] / cost['lean'][0] - 1:+.1%} wall, "
                  f"{cost['low'][1] / cost['lean'][1] - 1:+.1%} CPU time per slice")
        return 0

    from kerasmuscle.model import forward_flops
    from kerasmuscle.config import UNetConfig
    from train import matmul_peak  # bench/train.py

    flops = forward_flops(UNetConfig.preset(args.preset), args.image_size)
    peaks = {"tensorflow": matmul_peak(), "onnxruntime": ort_matmul_peak(args.threads)}
    floor = flops / max(peaks.values()) / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bundle, cohort, model = build_bundle(workdir, args.preset, args.image_size)
        lat = latencies(bundle, model, args.image_size, args.rounds, args.threads)
        proc = predictor_process(bundle, sorted(cohort.glob("case_*"))[0] / "dicom", args.repeats)
        e2e = end_to_end(bundle, cohort, workdir, args.threads)
    report = {"preset": args.preset, "image_size": args.image_size, "threads": args.threads,
              "gflop_per_slice": flops / 1e9, "peak_gflops": peaks, "floor_s": floor, "latency_s": lat,
              "latency_vs_floor": {k: v / floor for k, v in lat.items()},
              "reduced_speedup": {k: lat["onnx_float32"] / lat[k] for k in ("onnx_int8", "litert_int8", "litert_float16")},
              "predictor": proc, "end_to_end": e2e}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.preset} U-Net at {args.image_size}x{args.image_size}: {flops / 1e9:.1f} GFLOP per slice; "
          f"{args.threads} threads")
    print(f"matmul peak: TensorFlow {peaks['tensorflow']:.0f} GFLOP/s, ONNX Runtime {peaks['onnxruntime']:.0f} "
          f"GFLOP/s -> FLOP floor {floor:.3f} s per slice")
    for key, seconds in lat.items():
        print(f"  {key:<15} {seconds:.3f} s per slice  {seconds / floor:.2f}x floor  "
              f"{lat['onnx_float32'] / seconds:.2f}x ONNX float32 speed")
    speed = report["reduced_speedup"]
    print(f"ONNX float32 vs floor: {lat['onnx_float32'] / floor:.3f}x (goal <= 1.15); speed-up over ONNX float32: "
          f"int8 ONNX {speed['onnx_int8']:.2f}x, int8 LiteRT {speed['litert_int8']:.2f}x (goal >= 2.5)")
    print(f"predictor import {proc['import_s']:.3f} s (goal <= 0.3); peak RSS of a process segmenting 3 slices "
          "at batch 1 (goal <= 350 MB):")
    for key in VARIANTS:
        print(f"  {key:<22} {proc[f'rss_{key}_mb']:.0f} MB")
    print(f"end to end per case ({e2e['cases']} cases of 3 slices, every output): {e2e['case_s']:.3f} s, model "
          f"{e2e['model_s']:.3f} s, read {e2e['read_s']:.3f} s, preprocess {e2e['preprocess_s']:.3f} s, resize back "
          f"+ post-process {e2e['restore_s']:.3f} s, measure + write {e2e['measure_write_s']:.3f} s -> around the "
          f"model {100 * e2e['around_model']:.1f} % (goal <= 10 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
