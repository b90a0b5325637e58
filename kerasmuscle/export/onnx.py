"""ONNX: the float32 model (opset 17, input ``image``, output ``probabilities``), its int8 variant, and the
graph rewrite that lets ONNX Runtime run the transposed convolutions in int8. Needs tf2onnx and onnx
(the ``export`` extra), imported when a function is called."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerasmuscle import __version__
from kerasmuscle import bundle as _bundle
from kerasmuscle.config import TrainConfig
from kerasmuscle.errors import MissingExtraError
from kerasmuscle.export.common import input_spec, quiet


def write_onnx(model, config: TrainConfig, path: Path, meta: _bundle.BundleMetadata) -> None:
    """ONNX at opset 17 with a dynamic batch axis, input ``image`` and output ``probabilities``; the labels,
    preprocessing and post-processing of ``meta`` ride along in the model's ``kerasmuscle`` metadata entry."""
    try:
        import onnx
    except ImportError:
        raise MissingExtraError("ONNX export", "export", "onnx") from None
    with quiet():
        try:
            model.export(os.fspath(path), format="onnx", input_signature=[input_spec(config)], opset_version=17,
                         verbose=False)
        except ImportError as exc:
            raise MissingExtraError("ONNX export", "export", exc.name or "tf2onnx") from None
    proto = onnx.load(os.fspath(path))
    _rename_io(proto, {proto.graph.input[0].name: _bundle.INPUT_NAME, proto.graph.output[0].name: _bundle.OUTPUT_NAME})
    proto.producer_name = "kerasmuscle"
    proto.producer_version = __version__
    proto.doc_string = "kerasmuscle L3 muscle U-Net (Kreher et al. 2022); see metadata.json in the bundle"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "kerasmuscle", json.dumps({k: v for k, v in meta.to_dict().items()
                                                 if k in ("labels", "preprocessing", "postprocess")})
    onnx.checker.check_model(proto)
    onnx.save(proto, os.fspath(path))


def _rename_io(proto, names: dict[str, str]) -> None:
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = names.get(value.name, value.name)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = names.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = names.get(name, name)


def _phase_taps(kernel: int, pad_begin: int, phase: int) -> tuple[int, list[int]]:
    """For output phase ``phase`` of a stride-2 transposed convolution along one axis: the ordinary
    convolution's leading pad and, per its kernel position, the transposed kernel's tap."""
    ks = [k for k in range(kernel) if (phase + pad_begin - k) % 2 == 0]
    offsets = [(phase + pad_begin - k) // 2 for k in ks]
    lead = -min(offsets)
    taps = [0] * (max(offsets) - min(offsets) + 1)
    for k, d in zip(ks, offsets):
        taps[d + lead] = k
    return lead, taps


def split_transposed_convs(proto) -> int:
    """Rewrite stride-2 ``ConvTranspose`` nodes as four ordinary convolutions, one per output phase, then
    ``DepthToSpace``; the result is the same function (exact up to float rounding) in the same FLOPs.

    ONNX Runtime has int8 kernels for ``Conv`` but not for ``ConvTranspose``, so without this the four
    upsampling layers of the U-Net (19 % of its FLOPs) stay float32 in the int8 model. Output pixel
    ``2m + p`` of a stride-2 transposed convolution only sees the kernel taps ``k`` with ``p + pad - k``
    even, each applied to input ``m + (p + pad - k) / 2``: an ordinary convolution per phase ``p``.

    Args:
        proto: an ``onnx.ModelProto``, changed in place.

    Returns:
        How many nodes were rewritten (those with stride 2 in both axes, no groups or dilation, no
        output padding, constant weights, and an output exactly twice the input size).
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, done = [], 0
    for node in graph.node:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        kernel, pads = list(a.get("kernel_shape", [])), list(a.get("pads", [0, 0, 0, 0]))
        if not (node.op_type == "ConvTranspose" and list(a.get("strides", [])) == [2, 2] and len(kernel) == 2
                and a.get("group", 1) == 1 and list(a.get("dilations", [1, 1])) == [1, 1]
                and not any(a.get("output_padding", [])) and "output_shape" not in a
                and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and node.input[1] in inits
                and all(kernel[i] - pads[i] - pads[i + 2] == 2 for i in (0, 1))):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).transpose(1, 0, 2, 3)  # -> [out, in, kh, kw]
        phases = []
        for py in (0, 1):
            lead_y, taps_y = _phase_taps(kernel[0], pads[0], py)
            for px in (0, 1):
                lead_x, taps_x = _phase_taps(kernel[1], pads[1], px)
                weights = np.ascontiguousarray(w[:, :, taps_y][:, :, :, taps_x])
                name = f"{node.name}_phase{py}{px}"
                graph.initializer.append(numpy_helper.from_array(weights, name + "_W"))
                bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
                end_y, end_x = len(taps_y) - 1 - lead_y, len(taps_x) - 1 - lead_x
                nodes.append(helper.make_node("Conv", [node.input[0], name + "_W", *bias], [name + "_out"], name=name,
                                              kernel_shape=list(weights.shape[2:]),
                                              pads=[lead_y, lead_x, max(end_y, 0), max(end_x, 0)]))
                phases.append(name + "_out")
        nodes.append(helper.make_node("Concat", phases, [node.name + "_phases"], name=node.name + "_phases", axis=1))
        nodes.append(helper.make_node("DepthToSpace", [node.name + "_phases"], list(node.output),
                                      name=node.name + "_interleave", blocksize=2, mode="DCR"))
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return done


def write_onnx_int8(fp32_path: Path, path: Path, calibration: np.ndarray, scratch: Path) -> None:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) calibrated on slices.

    The transposed convolutions are first rewritten as ordinary ones (:func:`split_transposed_convs`) so
    that they run in int8 too; the softmax stays float32 so the output is still a probability.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{_bundle.INPUT_NAME: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    split = scratch / "split.onnx"
    proto = onnx.load(os.fspath(fp32_path))
    split_transposed_convs(proto)
    onnx.save(proto, os.fspath(split))
    pre = scratch / "preprocessed.onnx"
    with quiet():
        quant_pre_process(os.fspath(split), os.fspath(pre), skip_symbolic_shape=True)
        softmax = [n.name for n in onnx.load(os.fspath(pre)).graph.node if n.op_type == "Softmax"]
        quantize_static(os.fspath(pre), os.fspath(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=softmax)


__all__ = ["split_transposed_convs", "write_onnx", "write_onnx_int8"]
