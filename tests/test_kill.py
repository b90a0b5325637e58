"""Killed runs: ``predict`` (several inputs), ``synth --overwrite``, ``train`` and ``export`` are killed with
SIGKILL at seeded points (just before or just after the k-th rename, where an output becomes final, and after
a seeded delay), then run again. After every kill no file under a final name is partial (every JSON parses,
every table, label map and checkpoint reads, a finished case folder holds all its files); the rerun
finishes, and its results equal an uninterrupted run's (what is compared is said per test); no temporary
leftovers stay. ``train`` and ``export`` start TensorFlow in every child (15 s or more each here): the default
run kills each once (and checks their recovery logic in this process); the many-point variants are marked slow.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import dicom_case
from procs import KILLED, run

SEED = 14


def kill_points(seed: int, span: int, count: int, *, distinct: bool = False) -> list[tuple[int, str]]:
    """``count`` seeded points (k, before|after): kill an attempt just before or just after its k-th rename,
    k in 1..span (all different with ``distinct``)."""
    rng = np.random.default_rng(seed)
    ks = rng.choice(np.arange(1, span + 1), size=min(count, span) if distinct else count, replace=not distinct)
    return [(int(k), str(rng.choice(["before", "after"]))) for k in ks]


def killed_then_resumed(argv: list[str], points: list[tuple[int, str]], check, timeout: float = 300, *,
                        finish_here: bool = False) -> int:
    """Run ``argv`` killed at each point in turn (each count from its own start), checking the outputs after
    every kill with ``check``; then once more to the end, in a child process or (``finish_here``, which spares
    a TensorFlow start-up) in this one. Returns the number of kills that happened."""
    kills = 0
    for k, when in points:
        code, output, _ = run(argv, timeout=timeout, kill_at=k, when=when)
        if code != KILLED:  # finished before its k-th rename: nothing left to kill
            assert code == 0, output[-3000:]
            break
        kills += 1
        check()
    if finish_here:
        from click.testing import CliRunner

        from kerasmuscle.cli import cli

        result = CliRunner().invoke(cli, [str(a) for a in argv])
        assert result.exit_code == 0, result.output[-3000:]
    else:
        code, output, _ = run(argv, timeout=timeout)
        assert code == 0, output[-3000:]
    return kills


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------------
# predict


CASE_FILES = ("labels.nii.gz", "slices.csv", "measurements.json")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert lines, f"{path}: empty"
    assert all(len(line) == len(lines[0]) for line in lines), f"{path}: a short row"
    return [dict(zip(lines[0], line)) for line in lines[1:]]


def check_predict_out(out: Path) -> None:
    """Nothing partial under a final name in a predict output folder."""
    from kerasmuscle.io.nifti import read_nifti_labels

    if not out.exists():
        return
    finished = []
    for entry in out.iterdir():
        if entry.name.startswith(".tmp-") or entry.name == ".kerasmuscle.lock":
            continue
        if entry.is_dir():
            assert sorted(p.name for p in entry.iterdir()) == sorted(CASE_FILES), entry
            record = json.loads((entry / "measurements.json").read_text())
            assert record["case"] == entry.name
            assert read_nifti_labels(entry / "labels.nii.gz") is not None
            assert len(csv_rows(entry / "slices.csv")) == 2
            finished.append(entry.name)
        else:
            assert entry.name in ("measurements.csv", "slices.csv"), entry
    for table in ("measurements.csv", "slices.csv"):
        if (out / table).exists():
            assert {r["case"] for r in csv_rows(out / table)} <= set(finished)


def same_predict_results(out: Path, reference: Path) -> None:
    """Equal to the uninterrupted run: the same files; the tables and the per-case slices.csv byte for byte;
    the label maps voxel for voxel with the same affine; measurements.json equal but for its time stamp."""
    import nibabel as nib

    assert tree(out) == tree(reference)
    for table in ("measurements.csv", "slices.csv"):
        assert (out / table).read_bytes() == (reference / table).read_bytes(), table
    for case in (p for p in reference.iterdir() if p.is_dir()):
        assert (out / case.name / "slices.csv").read_bytes() == (case / "slices.csv").read_bytes()
        a, b = nib.load(out / case.name / "labels.nii.gz"), nib.load(case / "labels.nii.gz")
        assert np.array_equal(a.get_fdata(), b.get_fdata()) and np.array_equal(a.affine, b.affine)
        ra, rb = (json.loads((f / "measurements.json").read_text()) for f in (out / case.name, case))
        ra.pop("created"), rb.pop("created")
        assert ra == rb


def test_predict_killed_anywhere_resumes_to_the_uninterrupted_result(tiny_bundle, small_cohort, tmp_path):
    inputs = [dicom_case(small_cohort, n) for n in range(4)]
    args = ["predict", *inputs, "--model", tiny_bundle, "--slices", "0-1", "--format", "nifti,csv"]
    reference = tmp_path / "reference"
    code, output, renames = run([*args, "--out", reference])
    assert code == 0 and renames > 10, output[-3000:]

    out = tmp_path / "out"
    # Each case makes 4 renames (3 files, then its folder), the tables 2: every attempt is killed within
    # its first two cases, each resuming where the one before stopped.
    points = kill_points(SEED, 8, 4)
    kills = killed_then_resumed([*args, "--out", out], points, lambda: check_predict_out(out))
    assert kills >= 3, points
    same_predict_results(out, reference)


def test_predict_killed_after_a_seeded_delay_resumes(tiny_bundle, small_cohort, tmp_path):
    """A kill at a moment rather than at a rename: in the middle of writing a file, of reading an input, ..."""
    inputs = [dicom_case(small_cohort, n) for n in range(3)]
    args = ["predict", *inputs, "--model", tiny_bundle, "--slices", "0-1", "--format", "nifti,csv"]
    reference = tmp_path / "reference"
    assert run([*args, "--out", reference])[0] == 0
    out = tmp_path / "out"
    rng = np.random.default_rng(SEED)
    kills = 0
    # Counted from the first input (start-up takes longer than the batch): its three cases take about 0.3 s.
    for delay in rng.uniform(0.0, 0.3, size=4):
        code, output, _ = run([*args, "--out", out], kill_after_s=float(delay), timer_from="first_case")
        assert code in (0, KILLED), output[-3000:]
        kills += code == KILLED
        check_predict_out(out)
    assert kills
    assert run([*args, "--out", out])[0] == 0
    same_predict_results(out, reference)


# --------------------------------------------------------------------------------------------------
# synth --overwrite: a folder replaced by another


def test_synth_overwrite_killed_anywhere_keeps_a_whole_cohort(tmp_path):
    """The user's cohort is replaced by ``synth --overwrite``, killed at seeded renames and between the two
    renames of the swap (the old folder aside, the new one not yet in). At every moment a whole cohort, the old
    or the new, is at the final name or aside; the rerun ends with the new one byte for byte as an
    uninterrupted run writes it, and nothing beside it."""
    args = ["--cases", "1", "--image-size", "64", "--workers", "1", "--no-seg"]
    old_args = ["synth", tmp_path / "old", *args, "--seed", "1"]
    assert run(old_args)[0] == 0
    old = {k: v for k, v in snapshot(tmp_path / "old").items()}
    reference = tmp_path / "reference"
    code, output, renames = run(["synth", reference, *args, "--seed", "2"])
    assert code == 0, output
    new = snapshot(reference)

    work = tmp_path / "work"
    work.mkdir()
    out = work / "cohort"
    shutil.copytree(tmp_path / "old", out)
    argv = ["synth", out, *args, "--seed", "2", "--overwrite"]

    seen = []

    def check() -> None:
        aside = list(work.glob(".cohort.old"))
        whole = [snapshot(p) for p in [out, *aside] if p.exists()]
        assert whole and all(w in (old, new) for w in whole), sorted(whole[0]) if whole else None
        seen.append(out.exists())

    # With --overwrite the last two renames are the swap: the cohort aside (rename R of an uninterrupted run's
    # R, which renames the new folder in instead), then the new one in.
    points = [(renames, "after"), *kill_points(SEED, renames + 1, 2, distinct=True)]
    kills = killed_then_resumed(argv, points, check)
    assert kills == 3 and seen[0] is False  # the first kill came between the swap's renames
    assert snapshot(out) == new and sorted(p.name for p in work.iterdir()) == ["cohort"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# train


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    from kerasmuscle.model import CUSTOM_OBJECTS

    return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False).get_weights()


def _history(run_dir: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv_rows(run_dir / "fold_0" / "history.csv")]


def check_train_run(run_dir: Path) -> None:
    """Nothing partial under a final name in a run folder; the checkpoints match state.json."""
    import zipfile

    for path in run_dir.rglob("*"):
        if any(part.startswith(".tmp-") for part in path.relative_to(run_dir).parts):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".keras":
            assert zipfile.ZipFile(path).testzip() is None, path
        elif path.suffix == ".csv":
            csv_rows(path)
        elif path.suffix == ".npz":
            dict(np.load(path))
    state_path = run_dir / "fold_0" / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        history = _history(run_dir)
        assert [int(r["epoch"]) for r in history][:state["epoch"]] == list(range(1, state["epoch"] + 1))


def _train_kills(small_cohort, tmp_path, count: int, seed: int, epochs: int) -> None:
    pytest.importorskip("tensorflow")
    from kerasmuscle.config import PreprocessConfig, TrainConfig, UNetConfig
    from kerasmuscle.fileutil import import_keras
    from kerasmuscle.training import train_run
    from kerasmuscle.training.train import _default_threads

    # The thread count this process's TensorFlow runs with (it is fixed once TensorFlow ran), so the reference
    # trained here and the child processes compute alike.
    _, tf = import_keras()
    threads = tf.config.threading.get_intra_op_parallelism_threads() or _default_threads()
    config = TrainConfig(model=UNetConfig(filters=(4, 8, 16), bottleneck=16, decoder_filters=(16, 8, 4), up_kernel=2),
                         preprocess=PreprocessConfig(image_size=32), folds=2, epochs=epochs, batch_size=4,
                         tune_fraction=0.25, threads=threads)
    path = tmp_path / "tiny.json"
    config.save(path)
    reference = tmp_path / "reference"
    train_run(small_cohort, reference, config, fold=0, verbose=0, log=lambda line: None)

    out = tmp_path / "run"
    shutil.copytree(reference / "cache", out / "cache")  # the preprocessed slices, to spare the children reading
    argv = ["train", small_cohort, "--out", out, "--config", path, "--fold", "0"]
    # A first attempt writes config, splits and manifest (renames 1 to 3), then up to 6 renames per epoch
    # (best and last checkpoints, history, state, the checkpoints renamed into place); a resumed one config
    # and manifest, then its epochs. Kill the first attempt in its epochs (4 to 15), later ones anywhere
    # among their first 10.
    first = kill_points(seed, 12, 1)[0]
    points = [(first[0] + 3, first[1]), *kill_points(seed + 1, 10, count - 1)]
    kills = killed_then_resumed(argv, points, lambda: check_train_run(out), finish_here=count == 1)
    assert kills >= min(count, 3)  # seed 15's fourth attempt ends before its 9th rename
    assert tree(out / "fold_0") == tree(reference / "fold_0")  # no last.keras, no epoch checkpoints, no leftovers
    assert not [p for p in out.rglob(".tmp-*")]
    assert _history(out) == _history(reference)
    for a, b in zip(_weights(out / "fold_0" / "model.keras"), _weights(reference / "fold_0" / "model.keras")):
        np.testing.assert_array_equal(a, b)
    keys = ("best", "best_epoch", "epoch", "epochs", "finished", "monitor", "train_slices", "tune_slices")
    state, expected = (json.loads((r / "fold_0" / "state.json").read_text()) for r in (out, reference))
    assert {k: state.get(k) for k in keys} == {k: expected.get(k) for k in keys}
    results = json.loads((out / "manifest.json").read_text())["fold_results"]["0"]
    assert results["best_epoch"] == expected["best_epoch"] and results["data_sha256"]


def test_train_killed_in_an_epoch_resumes_to_the_same_weights(small_cohort, tmp_path):
    _train_kills(small_cohort, tmp_path, count=1, seed=SEED, epochs=2)


@pytest.mark.slow
def test_train_killed_at_many_points_resumes_to_the_same_weights(small_cohort, tmp_path):
    _train_kills(small_cohort, tmp_path, count=5, seed=SEED + 1, epochs=3)


def test_commit_checkpoints_keeps_what_state_json_names(tmp_path):
    """The epoch files a kill can leave: those state.json names are renamed into place, the others removed."""
    from kerasmuscle.training.train import commit_checkpoints

    fold = tmp_path / "fold_0"
    fold.mkdir()
    for name in ("last_2.keras", "last_3.keras", "best_2.keras", "model.keras", "last.keras"):
        (fold / name).write_text(name)
    commit_checkpoints(fold, {"epoch": 2, "best_epoch": 2})  # killed after epoch 2's state.json, and in epoch 3
    assert {p.name: p.read_text() for p in fold.iterdir()} == {"last.keras": "last_2.keras",
                                                                "model.keras": "best_2.keras"}
    (fold / "last_3.keras").write_text("last_3.keras")
    commit_checkpoints(fold, {"epoch": 3, "best_epoch": 2, "finished": True})
    assert {p.name: p.read_text() for p in fold.iterdir()} == {"model.keras": "best_2.keras"}


# --------------------------------------------------------------------------------------------------
# export


def _export_kills(tiny_run, tmp_path, points: list[tuple[int, str]]) -> None:
    """Export over an existing bundle (--overwrite), killed at ``points``: at every moment a whole bundle, the
    old or the new, is at the final name or (between the two renames of the swap) renamed aside, and the
    rerun puts things right. An export makes two renames here: the old bundle aside, the new one in."""
    pytest.importorskip("tf2onnx")
    from kerasmuscle.bundle import verify
    from kerasmuscle.export import export_bundle

    exports = tmp_path / "exports"
    reference = exports / "reference"
    export_bundle(tiny_run, reference, formats=["onnx"], fold=0, reduced=False, log=lambda line: None)
    out = exports / "bundle"
    shutil.copytree(reference, out)  # the bundle the user had
    argv = ["export", tiny_run, "--onnx", "--no-reduced", "--fold", "0", "--overwrite", "--out", out]

    def check() -> None:
        aside = list(exports.glob(".bundle.old"))
        if out.exists():
            verify(out)  # whole: every file as its checksum says
        else:
            assert len(aside) == 1
            verify(aside[0])

    kills = killed_then_resumed(argv, points, check, finish_here=True)
    assert kills == len(points)
    assert sorted(p.name for p in exports.iterdir()) == ["bundle", "reference"]  # nothing aside, no leftovers
    assert tree(out) == tree(reference)
    verify(out)
    # model.onnx the same operators, weights and outputs (its tensor names follow Keras' per-process layer
    # counters), model.keras the same weights (Keras stamps the time it saved a file); the metadata differs
    # only in its own time stamp.
    import onnx
    import onnxruntime as ort

    graphs = [onnx.load(b / "model.onnx").graph for b in (out, reference)]
    assert [n.op_type for n in graphs[0].node] == [n.op_type for n in graphs[1].node]
    weights = [sorted(onnx.numpy_helper.to_array(t).tobytes() for t in g.initializer) for g in graphs]
    assert weights[0] == weights[1]
    x = np.random.default_rng(SEED).normal(size=(2, 32, 32, 1)).astype(np.float32)
    y = [ort.InferenceSession(b / "model.onnx", providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
         for b in (out, reference)]
    np.testing.assert_array_equal(y[0], y[1])
    for a, b in zip(_weights(out / "model.keras"), _weights(reference / "model.keras")):
        np.testing.assert_array_equal(a, b)
    meta = [json.loads((b / "metadata.json").read_text()) for b in (out, reference)]
    for m in meta:
        m.pop("created", None)
        m.pop("name", None)
    assert meta[0] == meta[1]


def test_an_export_after_a_kill_mid_swap_puts_the_old_bundle_back(tiny_run, tmp_path):
    """The state a kill between the two renames of an ``--overwrite`` export leaves (the old bundle renamed
    aside, none at the final name): the next export puts the old bundle back before
    it asks whether the target exists, so without ``--overwrite`` it is refused and kept, not replaced."""
    from kerasmuscle.export import export_bundle
    from kerasmuscle.export.common import ExportError

    target = tmp_path / "bundle"
    aside = tmp_path / ".bundle.old"
    aside.mkdir()
    (aside / "metadata.json").write_text("{}\n")
    with pytest.raises(ExportError, match="exists; pass --overwrite"):
        export_bundle(tiny_run, target, formats=["onnx"], fold=0, reduced=False, log=lambda line: None)
    assert (target / "metadata.json").read_text() == "{}\n" and not aside.exists()


def test_export_killed_mid_swap_resumes_to_the_same_bundle(tiny_run, tmp_path):
    _export_kills(tiny_run, tmp_path, [(1, "after")])  # the old bundle renamed aside, the new one not yet in


@pytest.mark.slow
def test_export_killed_at_every_rename_resumes_to_the_same_bundle(tiny_run, tmp_path):
    _export_kills(tiny_run, tmp_path, [(1, "before"), (2, "before"), (2, "after"), (1, "after")])
