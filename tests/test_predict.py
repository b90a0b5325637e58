"""The light predictor and `kerasmuscle predict`: no TensorFlow, aligned labels, outputs, batches, resume."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from click.testing import CliRunner

from kerasmuscle.predict.batch import case_names, parse_shard
from kerasmuscle.bundle import BundleError
from kerasmuscle.cli import cli
from kerasmuscle.io import read_labels, read_scan
from kerasmuscle.predict import Predictor
from conftest import dciodvfy_or_skip, dicom_case

ROOT = Path(__file__).resolve().parents[1]


#: Run before anything else in a subprocess: importing any of these raises ImportError.
BLOCK_HEAVY = textwrap.dedent("""
    import sys
    BLOCKED = {"tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "matplotlib"}
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test: the predictor side must not import it")
            return None
    sys.meta_path.insert(0, Blocker())
""")


def run_blocked(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python where TensorFlow, Keras, tf2onnx, onnx and matplotlib cannot be imported."""
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY + textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_predict_runs_end_to_end_with_the_heavy_stack_blocked(tiny_bundle, small_cohort, tmp_path):
    from kerasmuscle.predict.outputs import FORMATS

    formats = ",".join(f.name for f in FORMATS if f.installed())  # every writer (seg when highdicom is there)
    inputs = [str(dicom_case(small_cohort, 0)), str(dicom_case(small_cohort, 1))]
    argv = ["kerasmuscle", "predict", *inputs, "--model", str(tiny_bundle), "--out", str(tmp_path / "cli"),
            "--format", formats, "--slices", "0-1", "--height", "1.75"]
    cli_run = run_blocked(f"""
        import runpy
        sys.argv = {argv!r}
        runpy.run_module("kerasmuscle", run_name="__main__")
    """)
    assert cli_run.returncode == 0, cli_run.stdout + cli_run.stderr
    assert "2 done, 0 finished earlier, 0 failed" in cli_run.stdout
    for name in ("labels.nii.gz", "labels.npz", "overlay.png", "slices.csv", "measurements.json"):
        assert (tmp_path / "cli" / "case_0000" / name).is_file(), name
    api_run = run_blocked(f"""
        from kerasmuscle import predict_batch
        from kerasmuscle.predict import PredictConfig
        from kerasmuscle.core.slices import SliceSelection
        from kerasmuscle.predict import Predictor
        config = PredictConfig(slices=SliceSelection.parse("0-1"), formats=tuple({formats!r}.split(",")), threads=1)
        result = predict_batch({inputs!r}, {str(tiny_bundle)!r}, {str(tmp_path / "api")!r}, config)
        assert result.done == ["case_0000", "case_0001"] and not result.failed, result
        assert Predictor.from_bundle({str(tiny_bundle)!r}).predict({inputs[0]!r}).labels.dtype.name == "uint8"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("HEAVY", heavy)
    """)
    assert api_run.returncode == 0, api_run.stdout + api_run.stderr
    assert "HEAVY []" in api_run.stdout
    assert (tmp_path / "api" / "measurements.csv").read_text().count("\n") == 3


def test_labels_are_aligned_uint8_and_postprocessed(tiny_bundle, small_cohort):
    scan = read_scan(dicom_case(small_cohort))
    predictor = Predictor.from_bundle(tiny_bundle)
    result = predictor.predict(scan, probabilities=True)
    assert result.labels.shape == scan.shape and result.labels.dtype == np.uint8
    assert list(result.slices) == list(range(scan.shape[0]))
    assert result.probabilities.shape == (*scan.shape, 6)
    np.testing.assert_allclose(result.probabilities.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(result.raw_labels, np.argmax(result.probabilities, -1))
    muscle = result.labels > 0
    assert ((scan.hu[muscle] >= -20) & (scan.hu[muscle] <= 200)).all()
    # Post-processing only removes labels: where it kept one, it is the network's.
    kept = result.labels > 0
    np.testing.assert_array_equal(result.labels[kept], result.raw_labels[kept])
    raw = predictor.predict(scan, postprocess=False)
    np.testing.assert_array_equal(raw.labels, result.raw_labels)
    assert raw.hu_range is None and result.hu_range == (-20.0, 200.0)
    wide = predictor.predict(scan, hu_range=(-5000, 5000))
    np.testing.assert_array_equal(wide.labels, result.raw_labels)
    assert result.model["model_sha256"] and result.model["backend"] == "onnx"


def test_slice_selection(tiny_bundle, small_cohort):
    scan = read_scan(dicom_case(small_cohort))
    predictor = Predictor.from_bundle(tiny_bundle)
    one = predictor.predict(scan, [1])
    assert list(one.slices) == [1] and not one.labels[[0, 2]].any()
    full = predictor.predict(scan)
    np.testing.assert_array_equal(one.labels[1], full.labels[1])  # batching does not change a slice
    z = scan.slice_locations
    by_z = predictor.predict(scan, z_range=(z[1] - 0.1, z[2] + 0.1))
    assert list(by_z.slices) == [1, 2]
    with pytest.raises(Exception, match="slice 9 does not exist"):
        predictor.predict(scan, [9])
    with pytest.raises(Exception, match="no slice lies within"):
        predictor.predict(scan, z_range=(1e4, 2e4))


def test_tflite_backend_and_reduced_precision(tiny_bundle, small_cohort):
    pytest.importorskip("ai_edge_litert")
    scan = read_scan(dicom_case(small_cohort))
    onnx = Predictor.from_bundle(tiny_bundle).predict(scan, probabilities=True)
    lite = Predictor.from_bundle(tiny_bundle, "tflite", threads=1).predict(scan, probabilities=True)
    assert np.abs(onnx.probabilities - lite.probabilities).max() <= 1e-4
    int8 = Predictor.from_bundle(tiny_bundle, precision="fastest")
    assert int8.precision == "int8" and int8.model_sha256 != Predictor.from_bundle(tiny_bundle).model_sha256
    assert int8.predict(scan).labels.shape == scan.shape
    with pytest.raises(Exception, match="precisions"):
        Predictor.from_bundle(tiny_bundle, "onnx", precision="float16")


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path, small_cohort):
    for change in ("model", "metadata", "extra"):
        copy = shutil.copytree(tiny_bundle, tmp_path / change)
        if change == "model":
            data = bytearray((copy / "model.onnx").read_bytes())
            data[-10] ^= 0xFF
            (copy / "model.onnx").write_bytes(bytes(data))
        elif change == "metadata":
            meta = json.loads((copy / "metadata.json").read_text())
            meta["postprocess"]["hu_range"] = [-200, 200]
            (copy / "metadata.json").write_text(json.dumps(meta))
        else:
            (copy / "other.onnx").write_bytes(b"x")
        with pytest.raises(BundleError, match="changed after export"):
            Predictor.from_bundle(copy)
    result = CliRunner().invoke(cli, ["predict", str(dicom_case(small_cohort)), "--model", str(tmp_path / "model"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "model.onnx: does not match its checksum" in result.output and not (tmp_path / "out").exists()
    with pytest.raises(BundleError, match="no metadata.json"):
        Predictor.from_bundle(tmp_path)


def test_cli_batch_skips_a_bad_input_and_resumes(tiny_bundle, small_cohort, tmp_path):
    bad = tmp_path / "in" / "notes.txt"
    bad.parent.mkdir()
    bad.write_text("not a scan")
    inputs = [str(dicom_case(small_cohort, 0)), str(bad), str(dicom_case(small_cohort, 1))]
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["predict", *inputs, "--model", str(tiny_bundle), "--out", str(out), "--height", "1.75"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert f"{bad}: " in result.output and "2 done, 0 finished earlier, 1 failed" in result.output
    names = case_names(inputs)
    assert (out / names[0]).is_dir() and (out / names[2]).is_dir() and not (out / names[1]).exists()
    rows = list(csv.DictReader(open(out / "measurements.csv")))
    assert [r["case"] for r in rows] == sorted([names[0], names[2]])
    assert all(r["model_sha256"] and r["hu_range"] == "-20.0 200.0" and r["height_m"] == "1.75" for r in rows)
    assert float(rows[0]["smi_cm2_m2"]) == pytest.approx(float(rows[0]["sma_cm2"]) / 1.75 ** 2, rel=1e-3)
    slices = list(csv.DictReader(open(out / "slices.csv")))
    assert len(slices) == 6 and "psoas_left_area_cm2" in slices[0]

    # A kill left one case half-written (a temporary folder) and another never started.
    shutil.rmtree(out / names[2])
    (out / f".tmp-x-{names[2]}").mkdir()
    stamp = (out / names[0] / "measurements.json").stat().st_mtime_ns
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "1 done, 1 finished earlier, 1 failed" in result.output
    assert (out / names[0] / "measurements.json").stat().st_mtime_ns == stamp  # finished: not touched
    assert (out / names[2] / "measurements.json").is_file()
    result = runner.invoke(cli, [*args, "--overwrite"])
    assert "2 done" in result.output and (out / names[0] / "measurements.json").stat().st_mtime_ns != stamp

    # Without the bad input every case is finished (with the same settings) and the exit code is 0.
    result = runner.invoke(cli, ["predict", inputs[0], inputs[2], "--model", str(tiny_bundle), "--out", str(out),
                                 "--height", "1.75"])
    assert result.exit_code == 0, result.output


def test_shards_split_the_inputs(tiny_bundle, small_cohort, tmp_path):
    inputs = [str(dicom_case(small_cohort, n)) for n in range(4)]
    names = case_names(inputs)
    runner = CliRunner()
    for shard in ("1/2", "2/2"):
        result = runner.invoke(cli, ["predict", *inputs, "--model", str(tiny_bundle), "--out", str(tmp_path / shard[0]),
                                     "--shard", shard, "--format", "json"])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "1").iterdir() if p.is_dir()) == [names[0], names[2]]
    assert sorted(p.name for p in (tmp_path / "2").iterdir() if p.is_dir()) == [names[1], names[3]]
    assert parse_shard("3/4") == (3, 4)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    result = runner.invoke(cli, ["predict", inputs[0], "--model", str(tiny_bundle), "--out", str(tmp_path / "z"),
                                 "--shard", "5/2"])
    assert result.exit_code == 2 and "shard" in result.output


def test_never_writes_into_an_input_folder(tiny_bundle, small_cohort, tmp_path):
    series = shutil.copytree(dicom_case(small_cohort), tmp_path / "series")
    before = sorted(p.name for p in series.iterdir())
    result = CliRunner().invoke(cli, ["predict", str(series), "--model", str(tiny_bundle), "--out",
                                      str(series / "results")])
    assert result.exit_code == 1 and "inside the input folder" in result.output
    assert sorted(p.name for p in series.iterdir()) == before


def test_outputs_read_back_aligned_and_seg_validates(tiny_bundle, small_cohort, tmp_path):
    pytest.importorskip("highdicom")
    source = dicom_case(small_cohort, 2)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(source), "--model", str(tiny_bundle), "--out", str(out),
                                      "--format", "nifti,npz,seg,png,csv,json"])
    assert result.exit_code == 0, result.output
    (case,) = [p for p in out.iterdir() if p.is_dir()]
    scan = read_scan(source)
    expected = Predictor.from_bundle(tiny_bundle).predict(scan).labels
    for name in ("labels.nii.gz", "labels.npz", "seg.dcm"):
        back = read_labels(case / name, like=scan)
        np.testing.assert_array_equal(back.array, expected, err_msg=name)
    record = json.loads((case / "measurements.json").read_text())
    assert record["model"]["model_sha256"] and record["hu_window"] == [-250.0, 250.0]
    assert len(record["slice_locations_mm"]) == scan.shape[0] and record["versions"]["onnxruntime"]
    assert record["height_source"] in ("dicom", "unknown")
    from PIL import Image

    assert Image.open(case / "overlay.png").size[0] > 384
    tool = dciodvfy_or_skip()
    check = subprocess.run([tool, str(case / "seg.dcm")], capture_output=True, text=True)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_readme_embedding_example_runs(tiny_bundle, small_cohort, tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- embed-example -->\s*```python\n(.+?)\n```", text, re.S)
    assert match, "README.md has no embedding example after <!-- embed-example -->"
    (tmp_path / "exports").mkdir()
    shutil.copytree(tiny_bundle, tmp_path / "exports" / "l3")
    (tmp_path / "scans").mkdir()
    shutil.copytree(dicom_case(small_cohort), tmp_path / "scans" / "patient-001")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    assert namespace["rows"] and "sma_cm2" in namespace["rows"][0]


def test_case_names_are_unique_and_readable():
    assert case_names(["/a/case_1/dicom", "/a/case_2/dicom", "/x/s.nii.gz", "/y/s.nii.gz", "/q/scan 7.npz"]) == \
        ["case_1", "case_2", "x_s", "y_s", "scan_7"]
    assert case_names(["/a/p.nii", "/a/p.nii.gz"]) == ["a_p", "a_p_2"]


def test_a_label_map_given_as_ct_is_refused(tiny_bundle, small_cohort):
    from kerasmuscle.errors import ReadError

    label = dicom_case(small_cohort).parent / "label.nii.gz"
    with pytest.raises(ReadError, match="label map or mask, not CT"):
        Predictor.from_bundle(tiny_bundle).predict(label)
