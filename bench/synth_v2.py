"""Synthetic data v2 throughput, as ratios measured in the same run.

Slices per second of :func:`kerasmuscle.synth.v2.sample` (anatomy, deformation, partial-volume
sub-slices, rendering; nothing written) at 256x256 in this process, against v1's
:func:`kerasmuscle.synth.case.make_case` at the same size (one anatomy, no deformation, one draw per
slice), and against the rate a training step consumes them (``--train-slices-per-s``, from
``bench/train.py``), so the ratio says whether generating on the fly would keep up.

Usage:
    python bench/synth_v2.py                      # the figures in the README
    python bench/synth_v2.py --samples 60 --size 256 --json
    python bench/synth_v2.py --recipe exports/l3-synth-v1 --train-slices-per-s 6.5   # the shipped recipe

The defaults draw levels from L2 to L4 with their anatomy, kidneys against the muscles and arms beside the
body; the shipped recipe switches those off (its samples are the ones it was trained on), so the two
figures say what they cost.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--train-slices-per-s", type=float, default=None,
                        help="slices per second one training step consumes (bench/train.py), for the ratio")
    parser.add_argument("--recipe", help="a recipe.json or bundle folder: measure its generator config")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import numpy as np

    from kerasmuscle.config import SynthConfig, SynthV2Config
    from kerasmuscle.synth.case import make_case
    from kerasmuscle.synth.v2 import sample

    config = SynthV2Config(image_size=args.size)
    if args.recipe:
        from kerasmuscle.recipe import load_recipe

        config = load_recipe(args.recipe).synth
        args.size = config.image_size
    sample(0, 0, config)  # warm caches
    start = time.perf_counter()
    records = [sample(1, i, config).record for i in range(args.samples)]
    v2 = time.perf_counter() - start
    subs = [r["sub_slices"] for r in records]
    v1_config = SynthConfig(image_size=args.size)
    start = time.perf_counter()
    for i in range(args.samples):
        make_case(np.random.default_rng([1, i]), v1_config)
    v1 = time.perf_counter() - start
    slices = args.samples * config.slices
    out = {
        "size": args.size, "samples": args.samples,
        "v2_slices_per_s": round(slices / v2, 1), "v1_slices_per_s": round(slices / v1, 1),
        "v2_over_v1_time": round(v2 / v1, 2), "mean_sub_slices": round(float(np.mean(subs)), 2),
        "level_anatomy": config.level_anatomy, "arms_share": round(float(np.mean([bool(r["arms"]) for r in records])), 2),
    }
    if args.train_slices_per_s:
        out["v2_over_training_rate"] = round(out["v2_slices_per_s"] / args.train_slices_per_s, 2)
    if args.json:
        print(json.dumps(out))
        return
    print(f"synthetic data v2 at {args.size}x{args.size}, {args.samples} samples of {config.slices} slices, one process:")
    print(f"  v2: {out['v2_slices_per_s']} slices/s (mean {out['mean_sub_slices']} sub-slices drawn per slice; "
          f"levels L2-L4 {'on' if out['level_anatomy'] else 'off'}, arms in {out['arms_share']:.0%})")
    print(f"  v1: {out['v1_slices_per_s']} slices/s; v2 takes {out['v2_over_v1_time']}x v1's time per slice")
    if "v2_over_training_rate" in out:
        print(f"  v2 makes {out['v2_over_training_rate']}x the slices a training step consumes")


if __name__ == "__main__":
    main()
