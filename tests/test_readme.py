"""The README opens with the two commands, CI runs exactly the test one, and the docs are complete."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT
from kerasmuscle.cli import cli

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _command(marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\s*```(?:bash|sh)?\n(.+?)\n```", README, re.S)
    assert m, f"README lacks a fenced command after <!-- {marker} -->"
    return m.group(1).strip()


def test_readme_opens_with_the_two_commands():
    head = "\n".join(README.splitlines()[:30])
    assert "<!-- main-command -->" in head and "<!-- test-command -->" in head
    main, test = _command("main-command"), _command("test-command")
    assert "pip install" in main and "kerasmuscle" in main
    assert "pip install" in test and "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in script and 'bash -c "$cmd"' in script
    # Run the script's own extraction and compare with what the README says.
    extractor = script.split('cmd="$(python3 - <<\'PY\'\n', 1)[1].split("\nPY\n", 1)[0]
    out = subprocess.run(["python3", "-c", extractor], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _command("test-command")


def test_every_command_is_documented():
    for name in cli.commands:
        assert f"kerasmuscle {name}" in README, f"README does not show `kerasmuscle {name}`"


def test_no_placeholders_left():
    for token in ("SYNTH-PICTURE", "BENCH-FIGURES", "TODO", "TBD"):
        assert token not in README, f"README still contains {token}"
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / image).is_file(), f"README shows {image}, which does not exist"


def test_every_command_has_help_with_an_example():
    from click.testing import CliRunner

    runner = CliRunner()
    for name in cli.commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        m = re.search(r"Examples?:\s*\n\s*(.+)", result.output)
        assert m, f"`kerasmuscle {name} --help` shows no example"
        example = m.group(1).strip()
        assert example.startswith(f"kerasmuscle {name}"), f"{name}: example {example!r}"
        assert f"kerasmuscle {name}" in README, f"README does not show `kerasmuscle {name}`"


def test_documented_names_import():
    """Every `from kerasmuscle... import ...` and `kerasmuscle.x.y` the README and docs/architecture.md show
    resolves, so the API section stays true when modules move."""
    import importlib

    texts = README + (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for module, names in re.findall(r"^from (kerasmuscle[\w.]*) import ([\w, ]+)", texts, re.M):
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"README: {module} has no {name}"
    for dotted in set(re.findall(r"`(kerasmuscle(?:\.\w+)+)`", texts)):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"README names {dotted}, which does not exist"
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"README names {dotted}, which does not import")
