"""CI's share of bench/fuzz.py: a seeded sample of damaged inputs, each read in a worker process with a
watchdog and a memory cap, must end in a result or a ReadError naming the file (0 bugs, 0 hangs)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import ROOT, SHARED


@pytest.fixture(scope="module")
def fuzz():
    if not (SHARED / "data").is_dir():
        pytest.fail(f"real test data missing: {SHARED / 'data'} (set KERASMUSCLE_SHARED to the shared folder)")
    spec = importlib.util.spec_from_file_location("kerasmuscle_bench_fuzz", ROOT / "bench" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_seeded_sample_of_damaged_inputs_finds_no_bug(fuzz):
    summary = fuzz.fuzz(seed=20261206, count=300, jobs=2, log=lambda line: None)
    assert sum(summary.outcomes.values()) == 300
    assert summary.bug_count == 0, "\n".join(f"{b['outcome']} case {b['index']} ({b['kind']} of {b['source']}): "
                                             f"{b['description']}: {b['detail']}" for b in summary.bugs)
    assert summary.outcomes["generator_error"] == 0, summary.bugs
    assert summary.outcomes["hang"] == 0
    # The sample reaches every mutation, and both outcomes happen (the fuzzer is not refusing everything).
    expected = set(fuzz.MUTATIONS) - (set() if importlib.util.find_spec("highdicom") else {"enhanced_frames"})
    assert set(summary.by_kind) == expected
    assert summary.outcomes["ok"] > 30 and summary.outcomes["read_error"] > 100
    assert summary.peak_bytes < 2 * 2 ** 30


def test_a_case_is_the_same_input_every_time(fuzz, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus = fuzz.prepare_corpus(tmp_path / "corpus")
    seen = set()
    for index in range(40):
        cases = []
        for run in ("a", "b"):
            out = tmp_path / f"{run}{index}"
            out.mkdir()
            cases.append(fuzz.make_case(corpus, 5, index, out))
        a, b = cases
        assert (a.kind, a.source, a.description) == (b.kind, b.source, b.description)
        assert _content(a.target) == _content(b.target), a.description
        seen.add(a.kind)
    assert len(seen) > 8


def _content(path: str) -> list[tuple[str, bytes]]:
    from pathlib import Path

    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return [(str(f.relative_to(p) if p.is_dir() else f.name), f.read_bytes()) for f in files]
