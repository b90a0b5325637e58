"""Run ``kerasmuscle`` in a child process with test-only interference: a SIGKILL at the k-th rename (just
before or just after it), a SIGKILL after a delay, pauses that widen the window between processes.

Renames are where an output becomes final (every writer goes through :func:`kerasmuscle.fileutil.atomic_path`,
which ends in ``os.replace`` or ``os.rename``), so killing just before or after the k-th one visits each
point where a file or folder changes from temporary to final. The child patches nothing in the package's
files; the plan travels in ``KM_TEST_PLAN`` (JSON).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The child: applies the plan, then runs the CLI with the given arguments.
CHILD = r"""
import json, os, signal, sys, threading, time
plan = json.loads(os.environ["KM_TEST_PLAN"])
count = [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counted(real):
    def rename(*args, **kwargs):
        count[0] += 1
        if count[0] == plan.get("kill_at") and plan.get("when") == "before":
            die()
        out = real(*args, **kwargs)
        if count[0] == plan.get("kill_at") and plan.get("when") != "before":
            die()
        return out
    return rename

os.replace, os.rename = counted(os.replace), counted(os.rename)
def start_timer():
    timer = threading.Timer(plan["kill_after_s"], die)
    timer.daemon = True
    timer.start()

if plan.get("kill_after_s") is not None and plan.get("timer_from") == "first_case":
    import kerasmuscle.predict.batch as batch
    first_run = batch._Batch.run
    def timed_run(self, *args, **kwargs):
        if not count[1:]:
            count.append("timer")
            start_timer()
        return first_run(self, *args, **kwargs)
    batch._Batch.run = timed_run
elif plan.get("kill_after_s") is not None:
    start_timer()
if plan.get("pause_summaries") or plan.get("pause_case"):
    import kerasmuscle.predict.batch as batch
    if plan.get("pause_summaries"):
        real_records = batch.finished_records
        def slow_records(out):
            records = real_records(out)
            time.sleep(plan["pause_summaries"])  # between reading the cases and writing the tables
            return records
        batch.finished_records = slow_records
    if plan.get("pause_case"):
        real_run = batch._Batch.run
        def slow_run(self, *args, **kwargs):
            time.sleep(plan["pause_case"])
            return real_run(self, *args, **kwargs)
        batch._Batch.run = slow_run
from kerasmuscle.cli import cli
try:
    cli(plan["argv"], prog_name="kerasmuscle")
finally:
    sys.stderr.write(f"RENAMES {count[0]}\n")
"""


def start(argv: list[str], **plan) -> subprocess.Popen:
    """Start ``kerasmuscle ARGV`` in a child process with ``plan``: ``kill_at`` (k) and ``when`` (``before`` or
    ``after``): SIGKILL at the k-th rename; ``kill_after_s``: SIGKILL after that many seconds, counted from the
    start or, with ``timer_from="first_case"``, from the first input of a batch; ``pause_summaries``: seconds to
    wait between reading the finished cases and writing the tables; ``pause_case``: seconds before each input."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "KM_TEST_PLAN": json.dumps({"argv": [str(a) for a in argv], **plan}), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run(argv: list[str], timeout: float = 300, **plan) -> tuple[int, str, int]:
    """Run ``kerasmuscle ARGV`` with ``plan`` to its end; returns (exit code, output, renames done).
    A kill shows as exit code ``-SIGKILL`` and ``-1`` renames (the child could not count them out)."""
    proc = start(argv, **plan)
    out, err = proc.communicate(timeout=timeout)
    renames = next((int(line.split()[1]) for line in err.splitlines() if line.startswith("RENAMES ")), -1)
    return proc.returncode, out + err, renames


KILLED = -signal.SIGKILL
