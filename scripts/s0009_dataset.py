"""TotalSegmentator s0009 as a labelled dataset for ``kerasmuscle validate``: its reviewed ``iliopsoas``
(psoas major, 3) and ``autochthon`` (erector spinae, 5) masks on the slices of its L3 vertebra (the
``vertebrae_L3`` mask), every other slice unlabelled. Rectus, abdominal wall and quadratus lumborum are not
labelled there, so only the psoas and erector spinae rows of what ``validate`` writes mean anything.

Usage:
    python scripts/s0009_dataset.py --shared ../shared --out /tmp/s0009-ds
    kerasmuscle validate /tmp/s0009-ds --out /tmp/s0009-validate
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    import nibabel as nib
    import numpy as np

    from evidence import ts_reference
    from kerasmuscle.io import read_scan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("KERASMUSCLE_SHARED", "../shared")))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    ct = args.shared / "data" / "totalsegmentator-s0009" / "ct.nii.gz"
    scan = read_scan(ct)
    ref, l3 = ts_reference(ct, scan)
    labels = np.zeros_like(ref)
    labels[l3] = ref[l3]
    case = args.out / "s0009"
    case.mkdir(parents=True, exist_ok=True)
    image = nib.load(ct)
    # the label map on the CT's own voxel grid (read_scan orders slices; write it back in the file's order)
    from kerasmuscle.io.nifti import write_nifti

    write_nifti(case / "label.nii.gz", labels, scan.affine)
    target = case / "image.nii.gz"
    if not target.exists():
        os.symlink(ct.resolve(), target)
    print(f"{case}: image.nii.gz -> {ct}, label.nii.gz with {len(l3)} labelled slices (the L3 vertebra); "
          f"{image.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
