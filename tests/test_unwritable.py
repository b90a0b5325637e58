"""Where output cannot be written (no space, a read-only folder, a file where a folder should be): one line
that names the path and the cause, a non-zero exit code, and nothing that existed before lost.

Tests may run as root, where ``chmod`` does not stop a write: a folder that takes no file is then one under
``/sys`` (sysfs refuses new files, even to root: EACCES, EPERM or EROFS), and a full disk is an ``OSError``
with ENOSPC raised from inside a writer, after it wrote part of its file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import dicom_case
from kerasmuscle.cli import cli

SYS = Path("/sys/kerasmuscle-test-out")


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result, path: object, cause: str) -> None:
    """Exit code 1 and one line ``Error: PATH: cannot write (CAUSE...`` (no traceback)."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"Error: {path}: cannot write ({cause}"), errors[0]
    assert "Traceback" not in result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def blocker(tmp_path) -> Path:
    """A user's file, where the output's folder should be."""
    path = tmp_path / "notes.txt"
    path.write_text("the user's notes\n")
    return path


def unwritable_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder path that takes no new file, and the start of the cause reported."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out", "permission denied"
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no folder refuses writes")
    return SYS, ""  # EACCES, EPERM or EROFS, by kernel and container


# --------------------------------------------------------------------------------------------------
# predict


PREDICT = ("--slices", "0-1", "--format", "nifti,csv")


def test_predict_out_under_a_file(tiny_bundle, small_cohort, blocker):
    result = invoke("predict", dicom_case(small_cohort), "--model", tiny_bundle, "--out", blocker / "out", *PREDICT)
    one_error_line(result, blocker / "out", f"{blocker} is a file, where a folder should be")
    assert blocker.read_text() == "the user's notes\n"


def test_predict_out_in_a_folder_that_takes_no_file(tiny_bundle, small_cohort, tmp_path):
    out, cause = unwritable_folder(tmp_path)
    result = invoke("predict", dicom_case(small_cohort), "--model", tiny_bundle, "--out", out, *PREDICT)
    one_error_line(result, out, cause)
    assert not out.exists()


def test_a_file_where_a_case_folder_should_be_fails_that_case_only(tiny_bundle, small_cohort, tmp_path):
    inputs = [dicom_case(small_cohort, n) for n in range(2)]
    out = tmp_path / "out"
    out.mkdir()
    (out / "case_0001").write_text("not a case folder\n")
    result = invoke("predict", *inputs, "--model", tiny_bundle, "--out", out, *PREDICT, "--overwrite")
    assert result.exit_code == 1 and "1 done, 0 finished earlier, 1 failed" in result.output, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert failed == [f"failed: {out / 'case_0001'}: cannot write ({out / 'case_0001'} is a file, where a folder "
                      "should be)"]
    assert (out / "case_0001").read_text() == "not a case folder\n"
    assert (out / "case_0000" / "labels.nii.gz").is_file() and (out / "measurements.csv").is_file()


def _no_space(real):
    """A writer that writes part of its file, then finds the disk full."""
    def write(path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
    return write


def test_no_space_mid_batch_stops_and_keeps_what_was_there(tiny_bundle, small_cohort, tmp_path, monkeypatch):
    inputs = [dicom_case(small_cohort, n) for n in range(3)]
    out = tmp_path / "out"
    assert invoke("predict", inputs[0], "--model", tiny_bundle, "--out", out, *PREDICT).exit_code == 0
    before = snapshot(out)

    import kerasmuscle.io.nifti as nifti

    monkeypatch.setattr(nifti, "write_nifti", _no_space(nifti.write_nifti))
    result = invoke("predict", *inputs, "--model", tiny_bundle, "--out", out, *PREDICT)
    one_error_line(result, out / "case_0001", "no space left on the device; the batch stopped, the cases "
                                              "finished before are kept: run the same command again to resume")
    assert "case_0002" not in result.output  # stopped: no later case could be written either
    assert snapshot(out) == before  # the finished case and the tables as they were, no temporary left

    monkeypatch.undo()
    resumed = invoke("predict", *inputs, "--model", tiny_bundle, "--out", out, *PREDICT)
    assert resumed.exit_code == 0 and "2 done, 1 finished earlier" in resumed.output


def test_no_space_for_the_tables_keeps_the_old_ones(tiny_bundle, small_cohort, tmp_path, monkeypatch):
    inputs = [dicom_case(small_cohort, n) for n in range(2)]
    out = tmp_path / "out"
    assert invoke("predict", inputs[0], "--model", tiny_bundle, "--out", out, *PREDICT).exit_code == 0
    tables = {name: (out / name).read_bytes() for name in ("measurements.csv", "slices.csv")}

    import kerasmuscle.predict.batch as batch

    def full(path, text):
        with batch.atomic_path(path) as tmp:
            _no_space(None)(tmp)

    monkeypatch.setattr(batch, "atomic_write_text", full)
    result = invoke("predict", *inputs, "--model", tiny_bundle, "--out", out, *PREDICT)
    one_error_line(result, out / "measurements.csv", "no space left on the device")
    assert {name: (out / name).read_bytes() for name in tables} == tables
    assert (out / "case_0001" / "measurements.json").is_file()  # the case itself was finished
    assert not list(out.glob(".tmp-*"))


# --------------------------------------------------------------------------------------------------
# synth, train, export


def test_synth_out_under_a_file(blocker):
    result = invoke("synth", blocker / "cohort", "--cases", "1", "--image-size", "64", "--workers", "1")
    one_error_line(result, blocker / "cohort", f"{blocker} is a file, where a folder should be")
    assert blocker.read_text() == "the user's notes\n"


@pytest.mark.parametrize("where", ["under_a_file", "takes_no_file"])
def test_train_out_that_cannot_be_written(small_cohort, blocker, tmp_path, where):
    pytest.importorskip("tensorflow")
    run, cause = ((blocker / "run", f"{blocker} is a file, where a folder should be") if where == "under_a_file"
                  else unwritable_folder(tmp_path))
    result = invoke("train", small_cohort, "--out", run, "--folds", "2", "--epochs", "1", "--image-size", "32")
    one_error_line(result, run, cause)
    assert blocker.read_text() == "the user's notes\n"


def test_export_out_that_cannot_be_written(tiny_run, blocker, tmp_path):
    pytest.importorskip("tf2onnx")
    result = invoke("export", tiny_run, "--out", blocker / "bundle", "--onnx", "--no-reduced", "--fold", "0")
    one_error_line(result, blocker / "bundle", f"{blocker} is a file, where a folder should be")
    out, cause = unwritable_folder(tmp_path)
    one_error_line(invoke("export", tiny_run, "--out", out, "--onnx", "--no-reduced", "--fold", "0"), out, cause)
    assert blocker.read_text() == "the user's notes\n"


# --------------------------------------------------------------------------------------------------
# the helper


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "the file system is read-only"),
                                         (errno.EACCES, "permission denied"),
                                         (errno.EIO, "input/output error")])
def test_write_errors_name_the_path_and_the_cause(tmp_path, code, words):
    from kerasmuscle.errors import WriteError
    from kerasmuscle.fileutil import atomic_path

    final = tmp_path / "result.json"
    final.write_text("old\n")
    with pytest.raises(WriteError) as caught:
        with atomic_path(final) as tmp:
            tmp.write_text("partial")
            raise OSError(code, os.strerror(code), os.fspath(tmp))
    assert str(caught.value) == f"{final}: cannot write ({words})" and caught.value.errno == code
    assert final.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_an_input_error_inside_a_writer_is_not_called_a_write_error(tmp_path):
    from kerasmuscle.fileutil import atomic_path

    source = tmp_path / "missing.dcm"
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "seg.dcm"):
            source.read_bytes()
