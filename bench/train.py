"""Training speed against this machine's FLOP bound, and the input pipeline against what training needs.

All figures come from one run:

1. The matmul peak: the best of several 4096x4096 float32 matrix products in TensorFlow, on the
   threads training uses (GFLOP/s); numpy's is printed beside it (on this project's machine oneDNN
   reaches about twice OpenBLAS's rate, so the TensorFlow figure is the stricter bound).
2. Training throughput: ``model.fit`` steps of the U-Net with the soft Dice loss and AdamW, fed by the
   real tf.data pipeline (augmentation on), in slices per second after warm-up steps. The FLOP bound is
   ``peak / (3 * forward FLOPs per slice)`` (forward, and a backward pass counted as twice the forward);
   goal: training >= 65 % of it.
3. The tf.data pipeline alone (generator, augmentation, batching, prefetch), in slices per second;
   goal: >= 10x what training consumes.

Usage:
    python bench/train.py                                   # the README figures (paper preset, 256x256)
    python bench/train.py --preset classic --image-size 512 --batch-size 2 --steps 4 --json
    python bench/train.py --recipe exports/l3-synth-v1          # the shipped model's training recipe
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def matmul_peak(n: int = 4096, rounds: int = 6) -> float:
    """Best float32 matmul rate in GFLOP/s over ``rounds`` products of two ``n x n`` matrices."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def numpy_peak(n: int = 4096, rounds: int = 4) -> float:
    """The same for numpy's BLAS, for comparison (TensorFlow's oneDNN is faster on some CPUs)."""
    import numpy as np

    a = np.ones((n, n), np.float32)
    a @ a
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def make_slices(image_size: int, cases: int, workdir: Path):
    from kerasmuscle.config import PreprocessConfig, SynthConfig
    from kerasmuscle.data import discover_cases
    from kerasmuscle.data.pipeline import load_slices
    from kerasmuscle.synth.cohort import write_cohort

    size = max(64, image_size)
    write_cohort(workdir / "cohort", cases=cases, seed=1, config=SynthConfig(image_size=size), seg=False)
    return load_slices(discover_cases(workdir / "cohort"), PreprocessConfig(image_size=image_size))


def bench_training(slices, preset, image_size: int, batch_size: int, steps: int, warmup: int,
                   mixed_precision: bool = False) -> dict:
    """``preset``: a preset name or a :class:`~kerasmuscle.config.UNetConfig` (a recipe's network)."""
    import keras

    from kerasmuscle.config import AugmentConfig, TrainConfig, UNetConfig
    from kerasmuscle.data.pipeline import make_dataset
    from kerasmuscle.model import build_unet, forward_flops
    from kerasmuscle.training.train import compile_model, precision_policy

    network = UNetConfig.preset(preset) if isinstance(preset, str) else preset
    preset = preset if isinstance(preset, str) else "recipe"
    config = TrainConfig(model=network, batch_size=batch_size, mixed_precision=mixed_precision)
    keras.utils.set_random_seed(0)
    policy = precision_policy(mixed_precision)
    mixed_precision = policy != "float32"
    keras.mixed_precision.set_global_policy(policy)
    model = build_unet(config.model)
    compile_model(model, config)
    epochs = (0, 1 + (warmup + steps) * batch_size // max(len(slices), 1))
    ds = make_dataset(slices, batch_size, seed=0, augment=AugmentConfig(), epochs=epochs).repeat()
    it = iter(ds)
    for _ in range(warmup):
        x, y = next(it)
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        x, y = next(it)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    times.sort()
    per_step = times[len(times) // 2]
    flops = forward_flops(config.model, image_size)
    keras.mixed_precision.set_global_policy("float32")
    return {"preset": preset, "image_size": image_size, "batch_size": batch_size, "steps": steps,
            "mixed_precision": mixed_precision,
            "seconds_per_step": per_step, "slices_per_s": batch_size / per_step,
            "gflop_per_slice_forward": flops / 1e9, "gflop_per_s": 3 * flops * batch_size / per_step / 1e9}


def bench_pipeline(slices, batch_size: int, seconds: float = 5.0) -> dict:
    from kerasmuscle.config import AugmentConfig
    from kerasmuscle.data.pipeline import make_dataset

    ds = make_dataset(slices, batch_size, seed=0, augment=AugmentConfig(), epochs=(0, 10 ** 6))
    it = iter(ds)
    for _ in range(3):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x, _ = next(it)
        count += int(x.shape[0])
    return {"slices_per_s": count / (time.perf_counter() - start)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from kerasmuscle.config import PRESETS

    parser.add_argument("--preset", default="paper", choices=list(PRESETS))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cases", type=int, default=8, help="synthetic cases (3 slices each) to feed")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="bfloat16 compute (the float32 FLOP bound stays the yardstick)")
    parser.add_argument("--recipe", help="a recipe.json or bundle folder: its network, input size, batch size and "
                                         "precision replace the options above")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    network = args.preset
    if args.recipe:
        from kerasmuscle.recipe import load_recipe

        train = load_recipe(args.recipe).train
        network, args.image_size, args.batch_size = train.model, train.preprocess.image_size, train.batch_size
        args.mixed_precision = train.mixed_precision

    import tensorflow as tf

    threads = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        slices = make_slices(args.image_size, args.cases, Path(tmp))
        peak = matmul_peak()
        np_peak = numpy_peak()
        train = bench_training(slices, network, args.image_size, args.batch_size, args.steps, args.warmup,
                               args.mixed_precision)
        pipe = bench_pipeline(slices, args.batch_size)
    bound = peak * 1e9 / (3 * train["gflop_per_slice_forward"] * 1e9)
    result = {
        "device": "cpu" if not tf.config.list_physical_devices("GPU") else "gpu",
        "cpu_threads": threads,
        "matmul_peak_gflop_per_s": round(peak, 1),
        "numpy_matmul_gflop_per_s": round(np_peak, 1),
        "training": {k: round(v, 4) if isinstance(v, float) else v for k, v in train.items()},
        "flop_bound_slices_per_s": round(bound, 3),
        "training_vs_bound": round(train["slices_per_s"] / bound, 3),
        "pipeline_slices_per_s": round(pipe["slices_per_s"], 1),
        "pipeline_vs_training": round(pipe["slices_per_s"] / train["slices_per_s"], 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    t = result["training"]
    print(f"matmul peak            {result['matmul_peak_gflop_per_s']:8.1f} GFLOP/s ({threads} threads, TensorFlow; "
          f"numpy: {result['numpy_matmul_gflop_per_s']:.1f})")
    print(f"training ({t['preset']}, {t['image_size']}px, batch {t['batch_size']}"
          f"{', bfloat16' if t['mixed_precision'] else ''})  "
          f"{t['slices_per_s']:.3f} slices/s, {t['seconds_per_step']:.2f} s/step, {t['gflop_per_s']:.1f} GFLOP/s")
    print(f"FLOP bound             {bound:8.3f} slices/s (3 x {t['gflop_per_slice_forward']:.2f} GFLOP per slice)")
    print(f"training / bound       {result['training_vs_bound']:8.3f}   (goal >= 0.65)")
    print(f"pipeline alone         {result['pipeline_slices_per_s']:8.1f} slices/s")
    print(f"pipeline / training    {result['pipeline_vs_training']:8.1f}x  (goal >= 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
