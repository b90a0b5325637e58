"""`predict_batch` and `kerasmuscle predict`: typed settings, the output registry, reruns that name what
changed, heights that match no case, batches where everything fails, Ctrl-C, inputs given twice, and the
one CSV number format."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import dicom_case
from kerasmuscle.cli import cli
from kerasmuscle.config import ConfigError
from kerasmuscle.predict import PredictConfig
from kerasmuscle.core.slices import SliceSelection
from kerasmuscle.predict import predict_batch
from kerasmuscle.predict.batch import case_names, settings_change
from kerasmuscle.predict.outputs import (DEFAULT_FORMATS, FORMATS, OUTPUT_FORMATS, OUTPUTS, choose_formats,
                                         format_help, parse_formats)


def predict(*args: object):
    return CliRunner().invoke(cli, ["predict", *(str(a) for a in args)])


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def npz_without_height(source: Path, target: Path) -> Path:
    """The scan of ``source`` as an NPZ file, which carries no patient height."""
    from kerasmuscle.io import read_scan
    from kerasmuscle.io.npz import write_npz

    scan = read_scan(source)
    write_npz(target, spacing=scan.spacing, positions=scan.positions, orientation=scan.orientation, hu=scan.hu)
    return target


# --------------------------------------------------------------------------------------------------
# typed settings and the registry (no bundle needed)


def test_predict_config_holds_typed_values_and_round_trips():
    config = PredictConfig(slices=SliceSelection.parse("43-45"), height=1.8, heights=Path("h.csv"),
                           formats=["csv", "json"], shard=(2, 4), hu_range=(-29, 150))
    assert config.heights == "h.csv" and config.formats == ("csv", "json") and config.hu_range == (-29.0, 150.0)
    back = PredictConfig.from_json(config.to_json())
    assert back.shard == (2, 4) and back.formats == ("csv", "json") and back == config and back.slices == SliceSelection.parse("43-45")
    for bad in ({"shard": (3, 2)}, {"threads": 0}, {"hu_range": (200, -20)}, {"formats": "csv,json"}):
        with pytest.raises(ValueError):
            PredictConfig(**bad)
    with pytest.raises(ConfigError, match="unknown field"):
        PredictConfig.from_dict({"slice": "1"})


def test_the_output_registry_drives_formats_and_help():
    assert OUTPUT_FORMATS == ("nifti", "npz", "seg", "sr", "png", "level", "csv", "json")
    assert DEFAULT_FORMATS == ("nifti", "seg", "sr", "png", "level", "csv", "json")
    for name in ("seg", "sr"):
        assert OUTPUTS[name].dicom_only and OUTPUTS[name].extra == "dicom" and OUTPUTS[name].module == "highdicom"
    assert not any(f.dicom_only for f in FORMATS if f.name not in ("seg", "sr"))
    assert [f.name for f in FORMATS if f.level_only] == ["level"]
    help_text = format_help()
    for fmt in FORMATS:
        assert fmt.name in help_text and fmt.filename in help_text and fmt.description in help_text
    assert parse_formats(" CSV, png,csv ") == ("csv", "png") and parse_formats(None) is None
    with pytest.raises(ValueError, match="formats are nifti, npz, seg, sr"):
        parse_formats("nifti,dicomsr")
    assert choose_formats(("png",)) == ("png", "json")  # the record always comes with a case
    result = CliRunner().invoke(cli, ["predict", "--help"])
    assert "overlay.png" in result.output and "labels.npz" in result.output


def test_a_registered_extra_that_is_missing_is_refused_by_name(monkeypatch):
    from kerasmuscle.errors import MissingExtraError

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert "seg" not in choose_formats(None)  # the default set drops it quietly
    with pytest.raises(MissingExtraError, match=r"kerasmuscle\[dicom\]"):
        choose_formats(("seg", "csv"))


def test_settings_change_names_what_differs():
    old = {"slices": "43,44,45", "precision": "float32", "height_m": None, "backend": "onnx"}
    new = {"slices": "50,51,52", "precision": "float16", "height_m": 1.8, "backend": "onnx"}
    assert settings_change(old, dict(old)) is None
    assert settings_change(old, new) == ("finished earlier with slices 43-45, precision float32, no height; "
                                         "now slices 50-52, precision float16, height 1.8 m")
    assert "without a record of its settings" in settings_change(None, new)


# --------------------------------------------------------------------------------------------------
# defects


def test_rerun_with_other_settings_is_refused_then_redone_with_overwrite(tiny_bundle, small_cohort, tmp_path):
    inputs = [dicom_case(small_cohort, 0), dicom_case(small_cohort, 1)]
    out = tmp_path / "real"
    first = predict(*inputs, "--model", tiny_bundle, "--out", out, "--slices", "0-1")
    assert first.exit_code == 0, first.output
    record = json.loads((out / "case_0000" / "measurements.json").read_text())
    assert record["settings"]["slices"] == "0,1" and record["settings"]["model_sha256"]
    same = predict(*inputs, "--model", tiny_bundle, "--out", out, "--slices", "0-1")
    assert same.exit_code == 0 and same.output.count("finished earlier, skipped") == 2

    other = ["--slices", "2", "--height", "1.80", "--precision", "fastest"]
    result = predict(*inputs, "--model", tiny_bundle, "--out", out, *other)
    assert result.exit_code == 1, result.output
    assert "finished earlier, skipped" not in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("[1/2] case_0000: "))
    assert "finished earlier with" in line and "slices 0-1" in line and "precision float32" in line
    assert "now" in line and "slices 2" in line and "precision int8" in line and "height 1.8 m" in line
    assert line.endswith("pass --overwrite to redo it")
    assert "0 done, 0 finished earlier, 2 finished earlier with other settings" in result.output
    assert {r["slice_indices"] for r in rows(out / "measurements.csv")} == {"0 1"}  # the old results stay

    redo = predict(*inputs, "--model", tiny_bundle, "--out", out, *other, "--overwrite")
    assert redo.exit_code == 0 and "2 done" in redo.output
    table = rows(out / "measurements.csv")
    assert {r["slice_indices"] for r in table} == {"2"} and {r["precision"] for r in table} == {"int8"}
    assert {r["height_m"] for r in table} == {"1.8"}


def test_heights_table_that_matches_no_case_says_so(tiny_bundle, small_cohort, tmp_path):
    scan = npz_without_height(dicom_case(small_cohort, 0), tmp_path / "scan_a.npz")
    heights = tmp_path / "heights.csv"
    heights.write_text("case_id,height_m\nsomeone_else,1.70\n")
    result = predict(scan, "--model", tiny_bundle, "--out", tmp_path / "out", "--heights", heights,
                     "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "[1/1] scan_a: done (no row of heights.csv matches scan_a: SMI left empty)" in result.output
    assert "1 case(s) without a height in" in result.output and "so no SMI: scan_a" in result.output
    assert rows(tmp_path / "out" / "measurements.csv")[0]["smi_cm2_m2"] == ""

    batch = predict_batch([scan], tiny_bundle, tmp_path / "api", PredictConfig(heights=heights, formats=("csv",)))
    assert batch.no_height == ["scan_a"] and "SMI left empty" in batch.notes[0][1]
    record = json.loads((tmp_path / "api" / "scan_a" / "measurements.json").read_text())
    assert record["height_source"] == "unknown" and "SMI left empty" in record["notes"][0]


def test_a_batch_where_every_input_fails_writes_and_claims_no_tables(tiny_bundle, small_cohort, tmp_path):
    bad = tmp_path / "in" / "notes.txt"
    bad.parent.mkdir()
    bad.write_text("not a scan")
    out = tmp_path / "out"
    result = predict(bad, "--model", tiny_bundle, "--out", out)
    assert result.exit_code == 1
    assert "measurements in" not in result.output and "no case is finished, so no measurement tables" in result.output
    assert not (out / "measurements.csv").exists() and not (out / "slices.csv").exists()
    # With a case finished before, the tables hold it and are named.
    assert predict(dicom_case(small_cohort), "--model", tiny_bundle, "--out", out, "--format", "csv").exit_code == 0
    result = predict(bad, "--model", tiny_bundle, "--out", out, "--format", "csv")
    assert result.exit_code == 1 and f"measurements in {out / 'measurements.csv'}" in result.output
    assert [r["case"] for r in rows(out / "measurements.csv")] == ["case_0000"]


def test_ctrl_c_exits_130_and_leaves_no_half_written_case(tiny_bundle, small_cohort, tmp_path, monkeypatch):
    import kerasmuscle.predict.batch as batch

    real, calls = batch.write_outputs, []

    def interrupted(folder, case, formats):
        calls.append(case.name)
        written = real(folder, case, formats)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after writing some files of the second case
        return written

    monkeypatch.setattr(batch, "write_outputs", interrupted)
    inputs = [dicom_case(small_cohort, n) for n in range(3)]
    out = tmp_path / "out"
    result = predict(*inputs, "--model", tiny_bundle, "--out", out, "--format", "nifti,csv")
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "run the same command again to resume" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["case_0000"]  # no .tmp- folder, no case_0001
    monkeypatch.setattr(batch, "write_outputs", real)
    resumed = predict(*inputs, "--model", tiny_bundle, "--out", out, "--format", "nifti,csv")
    assert resumed.exit_code == 0 and "2 done, 1 finished earlier" in resumed.output


def test_the_same_input_given_twice_runs_once(tiny_bundle, small_cohort, tmp_path):
    source = dicom_case(small_cohort, 0)
    link = tmp_path / "link"
    link.symlink_to(source, target_is_directory=True)
    out = tmp_path / "out"
    result = predict(source, f"{source}{os.sep}", link, "--model", tiny_bundle, "--out", out, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output and f"note: {source} was given more than once; predicted once" in result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["case_0000"]
    batch = predict_batch([source, source], tiny_bundle, tmp_path / "api", PredictConfig(formats=("csv",)))
    assert batch.done == ["case_0000"] and batch.repeated == [os.fspath(source)]
    assert case_names([source]) == ["case_0000"]


def test_csv_tables_use_the_one_number_format(tiny_bundle, small_cohort, tmp_path):
    from kerasmuscle.core.measure import columns
    from kerasmuscle.report.tables import CSV_PLACES, csv_cell

    out = tmp_path / "out"
    batch = predict_batch([dicom_case(small_cohort, 0)], tiny_bundle, out,
                          PredictConfig(slices=SliceSelection.parse("0-1"), height=1.75, formats=("csv",)))
    assert batch.tables == [out / "measurements.csv", out / "slices.csv"]
    record = json.loads((out / "case_0000" / "measurements.json").read_text())
    case_row = rows(out / "measurements.csv")[0]
    for column in columns(per_slice=False):
        assert case_row[column] == csv_cell(record["measurements"][column]), column
    assert any(len(v.split(".")[-1]) > 4 for v in case_row.values() if v.replace(".", "").isdigit())
    for table in (out / "slices.csv", out / "case_0000" / "slices.csv"):
        lines = rows(table)
        assert [r["slice_index"] for r in lines] == ["0", "1"]
        for line, expected in zip(lines, record["slices"]):
            assert line["sma_cm2"] == csv_cell(expected["sma_cm2"])
            assert len(line["sma_cm2"].split(".")[-1]) <= CSV_PLACES


def test_a_series_with_an_empty_character_set_gets_its_seg(dcmqi_dir, tiny_bundle, tmp_path):
    """The dcmqi slices carry Specific Character Set with an empty value (the default repertoire), which
    highdicom refuses when it copies it: the SEG is written without it, and the source stays as it was."""
    import pydicom

    from kerasmuscle.io.seg import _without_empty_charset
    from kerasmuscle.predict import PredictConfig, predict_batch

    source = pydicom.dcmread(dcmqi_dir / "01.dcm")
    assert source.SpecificCharacterSet == ""
    clean = _without_empty_charset(source)
    assert "SpecificCharacterSet" in source and "SpecificCharacterSet" not in clean and clean.Rows == source.Rows
    result = predict_batch([dcmqi_dir], tiny_bundle, tmp_path / "out", PredictConfig(formats=("seg",)))
    assert not result.failed, result.failed
    seg = pydicom.dcmread(next((tmp_path / "out").glob("*/seg.dcm")))
    assert seg.Modality == "SEG"


def test_low_memory_gives_the_same_measurements(tiny_bundle, small_cohort, tmp_path):
    """``--low-memory`` (ONNX Runtime without its arena) changes memory and time, not results: the tables
    equal a default run's, and a default rerun into the same folder skips the case as finished."""
    source = dicom_case(small_cohort, 0)
    lean, low = tmp_path / "lean", tmp_path / "low"
    for out, extra in ((lean, []), (low, ["--low-memory"])):
        result = predict(source, "--model", tiny_bundle, "--out", out, "--format", "csv", *extra)
        assert result.exit_code == 0, result.output
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("input", "seconds")} for r in rs]  # noqa: E731
    assert strip(rows(low / "measurements.csv")) == strip(rows(lean / "measurements.csv"))
    again = predict(source, "--model", tiny_bundle, "--out", low, "--format", "csv")
    assert again.exit_code == 0 and "finished earlier, skipped" in again.output, again.output
