"""Memory-only changes give the same results: the level finder's slab-by-slab steps (issue 14 part 5) and
ONNX Runtime's memory options (part 6). The figures come from ``bench/big_series.py`` and ``bench/predict.py --memory``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasmuscle.core import level
from kerasmuscle.io.scan import Scan


def test_fill_rings_slab_by_slab_equals_the_whole_volume_at_once():
    rng = np.random.default_rng(0)
    mask = rng.random((150, 24, 20)) < 0.3            # more than two slabs of 64, the last one partial
    mask[70, 4:16, 4:16] = True
    mask[70, 8:12, 8:12] = False                      # a ring with a hole, across a slab border
    whole = mask | (level._within(mask, 3, 1, False) & level._within(mask, 3, 1, True)
                    & level._within(mask, 3, 2, False) & level._within(mask, 3, 2, True))
    out = level._fill_rings(mask, 3)
    assert out.dtype == bool and np.array_equal(out, whole)
    assert out[70, 10, 10] and not mask[70, 10, 10]


def test_bone_in_the_last_slab_only_is_still_bone():
    """The finder looks for bone slab by slab; bone in the last (partial) slab must not be missed."""
    n = 140
    hu = np.full((n, 64, 64), -1000.0, np.float32)
    hu[:, 8:56, 8:56] = 0.0
    hu[135, 30:34, 30:34] = 500.0
    scan = Scan(hu=hu, spacing=(5.0, 1.0, 1.0), positions=np.array([[0.0, 0.0, 5.0 * k] for k in range(n)]))
    reason = level.find_levels(scan).l3.reason
    assert "no bone" not in reason and "no spine" in reason, reason
    hu[135] = 0.0
    assert "no bone" in level.find_levels(scan).l3.reason


def _tiny_unet_onnx(path) -> None:
    """A small encoder-decoder in ONNX (NHWC in, softmax probabilities NHWC out) with a concatenated skip."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("ConvTranspose", ["r2", "wu"], ["up"], strides=[2, 2]),
        helper.make_node("Concat", ["up", "r1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["sm"], axis=1),
        helper.make_node("Transpose", ["sm"], ["probabilities"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 32, 32, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 32, 32, 3])],
        [weight("w1", 8, 1, 3, 3), weight("w2", 16, 8, 3, 3), weight("wu", 16, 8, 2, 2), weight("w3", 3, 16, 1, 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


LOW_MEMORY_RUN = """
import sys, numpy as np
from kerasmuscle.predict.runtimes import OnnxModel, fix_mmap_threshold
x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
model = OnnxModel(sys.argv[1], threads=1, low_memory=True)
np.save(sys.argv[2], np.stack([model.run(x) for _ in range(3)]))
print(fix_mmap_threshold())
"""


def test_memory_options_give_identical_probabilities(tmp_path):
    """lean_memory and low_memory change where ONNX Runtime keeps activations, never the numbers; low_memory
    runs in its own process because it sets glibc's mmap threshold for the whole process."""
    from kerasmuscle.predict.runtimes import OnnxModel

    path = tmp_path / "tiny.onnx"
    _tiny_unet_onnx(path)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    ref = OnnxModel(path, threads=1, lean_memory=False).run(x)
    assert ref.shape == (2, 32, 32, 3) and np.allclose(ref.sum(-1), 1, atol=1e-5)
    assert np.array_equal(OnnxModel(path, threads=1).run(x), ref)
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", LOW_MEMORY_RUN, str(path), str(tmp_path / "low.npy")],
                         capture_output=True, text=True, cwd=root, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    low = np.load(tmp_path / "low.npy")
    assert all(np.array_equal(run, ref) for run in low)       # every run, not only the first
    if sys.platform.startswith("linux"):
        assert res.stdout.split()[-1] == "True"               # glibc: the threshold was set
