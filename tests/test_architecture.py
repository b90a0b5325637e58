"""The import rules of docs/architecture.md, checked on the source: which part of kerasmuscle may import
which, and that the predictor side never imports the heavy training and export stack at module level."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kerasmuscle"

BASE = {"labels", "errors", "config", "fileutil", "__init__"}
#: part -> the parts it may import (any import, lazy ones too); None: anything.
ALLOWED: dict[str, set[str] | None] = {
    **{b: BASE for b in BASE},
    "bundle": BASE | {"bundle"},
    "io": BASE | {"io"},
    "core": BASE | {"core", "io"},  # io only for type hints (under TYPE_CHECKING)
    "report": BASE | {"core", "report"},
    "synth": BASE | {"io", "synth", "report"},
    "data": BASE | {"io", "core", "data"},
    "model": BASE | {"model"},
    "training": BASE | {"bundle", "io", "core", "report", "data", "model", "training"},
    "export": BASE | {"bundle", "io", "core", "report", "data", "model", "predict", "export"},
    "predict": BASE | {"bundle", "io", "core", "report", "data", "predict"},  # data: dataset layouts (validate)
    "cli": None, "demo": None, "recipe": None, "__main__": None,
}
#: Never imported at module level by the predictor side.
HEAVY = {"tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "tf_keras"}
LIGHT = {"bundle", "io", "core", "report", "predict", *BASE}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(tree: ast.Module):
    """(module name, at module level?) for every import in a file; TYPE_CHECKING blocks are left out."""
    top = set()
    for node in tree.body:
        top.add(id(node))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                top.add(("skip", id(sub)))
    skip = {i for kind, i in (t for t in top if isinstance(t, tuple))}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) in top


def test_parts_import_only_what_the_architecture_allows() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        allowed = ALLOWED[part]  # a new top-level part must be placed in the table (and the page)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, top in _imports(tree):
            names = module.split(".")
            if names[0] == "kerasmuscle" and len(names) > 1 and allowed is not None and names[1] not in allowed:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
            if part in LIGHT and top and names[0] in HEAVY:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module} at module level")
    assert not wrong, "\n".join(wrong)


def test_every_part_is_on_the_architecture_page() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file():
            assert f"`{path.name}/`" in page, f"docs/architecture.md does not describe {path.name}/"
