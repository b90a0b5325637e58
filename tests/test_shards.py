"""Shards side by side: ``predict --shard i/n`` processes running at once into one ``--out`` leave complete
summary tables, equal to a single unsharded run's, when the last one ends (no extra run needed); while some
are still running, the tables hold exactly the cases finished so far."""

from __future__ import annotations

import csv
import time

import pytest

from conftest import dicom_case
from procs import start


def _cases(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["case"] for row in csv.DictReader(fh)]


def _predict_args(small_cohort, tiny_bundle, cases: int) -> list:
    inputs = [dicom_case(small_cohort, n) for n in range(cases)]
    return ["predict", *inputs, "--model", tiny_bundle, "--slices", "0-1", "--format", "csv"]


def _equal_to_unsharded(out, reference) -> None:
    for table in ("measurements.csv", "slices.csv"):
        assert (out / table).read_bytes() == (reference / table).read_bytes(), table
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())


def test_shards_at_once_leave_the_tables_of_a_single_run(tiny_bundle, small_cohort, tmp_path):
    """Three shards start together. Shard 1 (three cases, fast) reads the finished cases and then waits
    1.5 s before writing its tables; shard 3 is slow (0.6 s before each case), so it finishes its cases
    while shard 1 waits, and writes after it. Without the lock, shard 1 would write its stale tables last
    and leave shard 3's cases out; with it, shard 3 waits, then reads every case."""
    from kerasmuscle.predict import PredictConfig, predict_batch
    from kerasmuscle.core.slices import SliceSelection

    args = _predict_args(small_cohort, tiny_bundle, 7)
    reference = tmp_path / "reference"
    predict_batch([str(a) for a in args[1:8]], tiny_bundle, reference,
                  PredictConfig(slices=SliceSelection.parse("0-1"), formats=("csv",)))

    out = tmp_path / "out"
    plans = {1: {"pause_summaries": 1.5}, 2: {}, 3: {"pause_case": 0.6}}
    procs = {i: start([*args, "--out", out, "--shard", f"{i}/3"], **plan) for i, plan in plans.items()}
    outputs = {i: p.communicate(timeout=120) for i, p in procs.items()}
    for i, p in procs.items():
        assert p.returncode == 0, outputs[i]
        assert "measurements in" in outputs[i][0]
    _equal_to_unsharded(out, reference)


def test_tables_show_what_is_finished_while_a_shard_runs(tiny_bundle, small_cohort, tmp_path):
    """The shard that ends first leaves tables of the cases finished by then (its own and any of the other's);
    the one that ends last, tables of every case."""
    args = _predict_args(small_cohort, tiny_bundle, 4)
    out = tmp_path / "out"
    slow = start([*args, "--out", out, "--shard", "2/2"], pause_case=3.0)
    fast = start([*args, "--out", out, "--shard", "1/2"])
    assert fast.wait(timeout=120) == 0, fast.communicate()
    first = _cases(out / "measurements.csv")
    assert {"case_0000", "case_0002"} <= set(first) and "case_0003" not in first
    assert first == sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert slow.wait(timeout=120) == 0, slow.communicate()
    assert _cases(out / "measurements.csv") == ["case_0000", "case_0001", "case_0002", "case_0003"]


def test_write_summaries_waits_for_the_lock(tmp_path):
    """The tables are rebuilt only under the output folder's lock."""
    import threading

    from kerasmuscle.fileutil import exclusive_lock
    from kerasmuscle.predict.batch import LOCK_FILE, write_summaries

    done = []
    with exclusive_lock(tmp_path / LOCK_FILE):
        thread = threading.Thread(target=lambda: done.append(write_summaries(tmp_path)))
        thread.start()
        time.sleep(0.3)
        assert not done  # still waiting
    thread.join(timeout=10)
    assert done == [[]]  # no case finished: no tables


@pytest.mark.parametrize("text", ["0/2", "3/2", "1-2", "a/b"])
def test_bad_shards_are_one_line(text, tmp_path):
    from click.testing import CliRunner

    from kerasmuscle.cli import cli

    result = CliRunner().invoke(cli, ["predict", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", text])
    assert result.exit_code == 2 and "write i/n with 1 <= i <= n" in result.output
    assert "Traceback" not in result.output
