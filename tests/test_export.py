"""Export: every format agrees with Keras, the bundle is complete and checksummed, failures write nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("ai_edge_litert")

from click.testing import CliRunner  # noqa: E402

from kerasmuscle import bundle  # noqa: E402
from kerasmuscle.cli import cli  # noqa: E402
from kerasmuscle.export import ExportError, export_bundle, label_agreement, resolve_source  # noqa: E402
from kerasmuscle.predict import load_model  # noqa: E402


def _keras_model(path):
    from kerasmuscle.model import CUSTOM_OBJECTS
    from kerasmuscle.fileutil import import_keras

    keras, _ = import_keras()
    return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)


def test_bundle_holds_every_format_and_metadata(tiny_bundle, tiny_run):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert set(meta["files"]) == {"keras", "savedmodel", "onnx", "tflite", "onnx_int8", "tflite_int8", "tflite_fp16"}
    for rel in meta["files"].values():
        assert (tiny_bundle / rel).exists(), rel
    assert [lab["key"] for lab in meta["labels"]][1:] == ["rectus", "abdominal_wall", "psoas", "quadratus",
                                                          "erector_spinae"]
    assert meta["labels"][3]["colour"] == [255, 220, 0]
    assert meta["preprocessing"]["hu_window"] == [-250.0, 250.0] and meta["preprocessing"]["image_size"] == 32
    assert meta["postprocess"]["hu_range"] == [-20.0, 200.0]
    assert meta["input"]["shape"] == [None, 32, 32, 1]
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    fold = meta["source"]["fold"]
    assert meta["training_data_sha256"] == manifest["fold_results"][str(fold)]["data_sha256"]
    # "best" is the fold with the best tuning score.
    scores = {int(k): v["best"] for k, v in manifest["fold_results"].items()}
    assert fold == max(scores, key=scores.get)
    assert meta["versions"]["onnxruntime"] and meta["versions"]["tensorflow"]
    assert "fold" in meta["checked_on"]
    bundle.verify(tiny_bundle)  # SHA256SUMS lists every file and matches


def test_float32_artifacts_agree_with_keras_at_batch_1_and_3(tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    assert set(meta["parity"]) == {"savedmodel", "onnx", "tflite"}
    for key, p in meta["parity"].items():
        assert p["passed"] and p["batch_1_max_abs"] <= 1e-4 and p["batch_3_max_abs"] <= 1e-4, key
    # Independently of the recorded figures: run the files here on new inputs, batch 1 and 3.
    model = _keras_model(tiny_bundle / "model.keras")
    x = np.random.default_rng(3).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    ref = np.asarray(model.predict_on_batch(x))
    for key, backend in (("onnx", "onnx"), ("tflite", "tflite")):
        runner = load_model(tiny_bundle / meta["files"][key], backend)
        assert np.abs(runner.run(x[:1]) - ref[:1]).max() <= 1e-4
        assert np.abs(runner.run(x) - ref).max() <= 1e-4


def test_onnx_is_opset_17_with_a_dynamic_batch_axis(tiny_bundle):
    import onnx

    proto = onnx.load(tiny_bundle / "model.onnx")
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("image", "probabilities")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 1]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["kerasmuscle"])["postprocess"]["hu_range"]


def test_reduced_precision_records_speed_and_agreement(tiny_bundle):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    for key in ("onnx_int8", "tflite_int8", "tflite_fp16"):
        r = meta["reduced_precision"][key]
        assert r["shipped"] and r["heldout_slices"] > 0 and r["speedup"] > 0
        assert set(r["dice_vs_float32"]) >= {"psoas", "min"}
    assert meta["reduced_precision"]["onnx_int8"]["calibration_slices"] > 0


def test_reduced_precision_is_not_shipped_below_the_agreement_bar(tiny_run, tmp_path):
    (meta,) = export_bundle(tiny_run, tmp_path / "b", formats=["onnx"], min_agreement=1.01, log=lambda s: None)
    r = meta["reduced_precision"]["onnx_int8"]
    assert not r["shipped"] and "< 1.01" in r["reason"]
    assert "onnx_int8" not in meta["files"] and not (tmp_path / "b" / "model_int8.onnx").exists()
    assert sorted(meta["files"]) == ["keras", "onnx"] and not (tmp_path / "b" / "saved_model").exists()


def test_parity_failure_writes_nothing(tiny_run, tmp_path):
    with pytest.raises(ExportError, match="differs from Keras.*Keras agrees with itself"):
        export_bundle(tiny_run, tmp_path / "b", formats=["onnx"], reduced=False, tolerance=-1.0, log=lambda s: None)
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())


def test_label_agreement():
    a = np.zeros((1, 4, 4), np.uint8)
    a[0, :2] = 3
    b = a.copy()
    b[0, 0, 0] = 0
    agree = label_agreement(a, b)
    assert agree["psoas"] == pytest.approx(2 * 7 / 15) and agree["rectus"] is None and agree["min"] == agree["psoas"]
    assert label_agreement(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))["min"] is None


def test_resolve_source_forms_and_errors(tiny_run, tmp_path):
    assert [e["fold"] for e in resolve_source(tiny_run, "all")] == [0, 1]
    assert resolve_source(tiny_run / "fold_1")[0]["fold"] == 1
    assert resolve_source(tiny_run / "fold_0" / "model.keras")[0]["fold"] == 0
    with pytest.raises(ExportError, match="fold 7 has no model"):
        resolve_source(tiny_run, 7)
    with pytest.raises(ExportError, match="not a run folder"):
        resolve_source(tmp_path)
    lone = tmp_path / "lone.keras"
    lone.write_bytes((tiny_run / "fold_0" / "model.keras").read_bytes())
    with pytest.raises(ExportError, match="no config.json"):
        resolve_source(lone)


def test_cli_export_all_folds_and_one_line_errors(tiny_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "exports" / "cv"
    result = runner.invoke(cli, ["export", str(tiny_run), "--out", str(out), "--onnx", "--fold", "all", "--no-reduced"])
    assert result.exit_code == 0, result.output
    for k in (0, 1):
        meta = json.loads((out / f"fold_{k}" / "metadata.json").read_text())
        assert meta["source"]["fold"] == k and sorted(meta["files"]) == ["keras", "onnx"]
    # An existing bundle is not replaced without --overwrite.
    result = runner.invoke(cli, ["export", str(tiny_run), "--out", str(out), "--onnx", "--fold", "all"])
    assert result.exit_code == 1 and "exists; pass --overwrite" in result.output
    result = runner.invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "x"), "--fold", "9"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "fold 9" in result.output
    result = runner.invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "x"), "--fold", "first"])
    assert result.exit_code == 2 and "best or all" in result.output


@pytest.mark.parametrize("kernel,pads", [(3, [0, 0, 1, 1]), (2, [0, 0, 0, 0]), (4, [1, 1, 1, 1]), (3, [1, 1, 0, 0])])
def test_transposed_convolutions_become_phase_convolutions_exactly(kernel, pads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from kerasmuscle.export import split_transposed_convs

    rng = np.random.default_rng(kernel)
    w = rng.standard_normal((5, 3, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["up"], strides=[2, 2], kernel_shape=[kernel, kernel],
                          pads=pads),
         helper.make_node("ConvTranspose", ["up", "w1"], ["y"], strides=[1, 1], kernel_shape=[1, 1])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 5, 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2, None, None])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32), "w1")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # ORT 1.23 reads <= 11
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    before = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    assert split_transposed_convs(proto) == 1  # the stride-1 node is left alone
    onnx.checker.check_model(proto)
    assert [n.op_type for n in proto.graph.node].count("ConvTranspose") == 1
    after = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    assert before.shape == after.shape == (2, 2, 14, 12)
    np.testing.assert_allclose(after, before, atol=1e-5)
