"""The command line: help with examples, one-line errors with non-zero exits, batches that go on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import files_of
from kerasmuscle.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and f"kerasmuscle {command}" in result.output


def test_inspect_a_real_series(tcia_dir):
    result = run("inspect", tcia_dir)
    assert result.exit_code == 0
    assert "134 of 512 x 512 pixels" in result.output
    assert "3.000 mm between slices" in result.output and "warnings:  none" in result.output


def test_inspect_json_and_png(tmp_path, dcmqi_dir):
    result = run("inspect", dcmqi_dir, "--labels", dcmqi_dir / "liver_seg.dcm", "--json", "--png", tmp_path / "p.png")
    assert result.exit_code == 0
    data = json.loads(result.output[: result.output.rindex("}") + 1])
    assert data["shape"] == [3, 512, 512] and data["labels"]["labelled_slices"] == [0, 1, 2]
    assert (tmp_path / "p.png").stat().st_size > 10_000


@pytest.mark.parametrize("make,cause", [
    (lambda t: t / "missing", "no such file or folder"),
    (lambda t: (t / "n.txt").write_text("hi") and t / "n.txt", "not a DICOM, NIfTI or NPZ file"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "empty folder"),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, make, cause):
    path = make(tmp_path)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and cause in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.output


def test_unexpected_errors_have_no_traceback_unless_debug(monkeypatch, series):
    import kerasmuscle.io as kio

    def broken(*args, **kwargs):
        raise RuntimeError("something odd")

    monkeypatch.setattr(kio, "read_scan", broken)
    result = CliRunner().invoke(cli, ["inspect", str(series)])
    assert result.exit_code == 1
    assert "unexpected RuntimeError: something odd" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["--debug", "inspect", str(series)])
    assert isinstance(result.exception, RuntimeError)


def test_synth_then_inspect_the_cohort(tmp_path):
    out = tmp_path / "c"
    result = run("synth", out, "--cases", "2", "--seed", "4", "--workers", "1", "--image-size", "128",
                 "--preview", tmp_path / "grid.png")
    assert result.exit_code == 0, result.output
    assert "wrote 2 synthetic case(s)" in result.output
    assert (tmp_path / "grid.png").is_file()
    again = CliRunner().invoke(cli, ["synth", str(out), "--cases", "1"])
    assert again.exit_code != 0 and "folder exists and is not empty" in again.output
    listing = run("inspect", out)
    assert listing.exit_code == 0 and "case_0000" in listing.output and "True" in listing.output


def test_inspect_dataset_goes_on_past_a_bad_case(tmp_path, cohort):
    copy = tmp_path / "cohort"
    shutil.copytree(cohort, copy)
    victim = files_of(copy / "case_0001" / "dicom")[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    result = CliRunner().invoke(cli, ["inspect", str(copy)])
    assert result.exit_code == 1
    assert "case_0000" in result.output and "case_0002" in result.output
    assert "failed: case_0001" in result.output and "1 of 3 case(s) could not be read" in result.output


def test_synth_rejects_a_bad_config(tmp_path):
    (tmp_path / "c.json").write_text('{"image_size": 100}')
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "o"), "--config", str(tmp_path / "c.json")])
    assert result.exit_code != 0 and "image_size must be a multiple of 16" in result.output
    assert not (tmp_path / "o").exists()


def test_pictures_never_replace_a_users_file(tmp_path, series):
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"my holiday photo")
    result = CliRunner().invoke(cli, ["inspect", str(series), "--png", str(mine)])
    assert result.exit_code != 0 and "exists; choose another name or pass --overwrite" in result.output
    assert mine.read_bytes() == b"my holiday photo"
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "c"), "--preview", str(mine)])
    assert result.exit_code != 0 and not (tmp_path / "c").exists()
    result = CliRunner().invoke(cli, ["inspect", str(series), "--png", str(mine), "--overwrite"])
    assert result.exit_code == 0 and mine.read_bytes().startswith(b"\x89PNG")


def test_inspect_areas_are_the_apis_label_areas(cohort):
    """The areas inspect prints come from core.measure.label_areas, and are what counting pixels gives."""
    from kerasmuscle.core.measure import label_areas
    from kerasmuscle.data import load_dataset
    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.labels import MUSCLE_LABELS

    case = load_dataset(cohort)[0]
    scan = read_scan(case.image)
    labels = read_labels(case.labels, like=scan)
    area = scan.pixel_area_mm2 / 100
    labelled = labels.labelled_slices()
    values, counts = np.unique(labels.array, return_counts=True)
    expected = {int(v): c * area / len(labelled) for v, c in zip(values, counts) if v}
    assert label_areas(labels, scan) == pytest.approx(expected)
    assert label_areas(labels.array, scan, []) == {}

    result = run("inspect", case.image, "--labels", case.labels, "--json")
    shown = json.loads(result.output)["labels"]["mean_area_cm2_per_labelled_slice"]
    assert shown == {f"{lab.id} {lab.name}": round(expected[lab.id], 2) for lab in MUSCLE_LABELS if lab.id in expected}

    listing = json.loads(run("inspect", cohort, "--json").output)["cases"][0]
    k = len(scan.hu) // 2
    assert listing["muscle_cm2_middle_slice"] == round(np.count_nonzero(labels.array[k]) * area, 1)
    for lab in MUSCLE_LABELS:
        assert listing[lab.key] == round(np.count_nonzero(labels.array[k] == lab.id) * area, 1)


def test_inspect_png_is_cropped_to_the_body(tmp_path, tcia_dir):
    from PIL import Image

    result = run("inspect", tcia_dir, "--png", tmp_path / "p.png")
    assert result.exit_code == 0
    picture = np.asarray(Image.open(tmp_path / "p.png").convert("L"))
    middle = picture[picture.shape[0] // 2]
    body = np.flatnonzero(middle > 30)
    assert (body.max() - body.min() + 1) / len(middle) > 0.7
