"""The package itself: layout, lazy imports, extras, and safe writing."""

from __future__ import annotations

import configparser
import subprocess
import sys

import pytest

from conftest import ROOT
from kerasmuscle.fileutil import atomic_path, atomic_write_text


def test_layout_has_a_readme_in_every_top_folder():
    for folder in ("kerasmuscle", "tests", "notebooks", "exports"):
        text = (ROOT / folder / "README.md").read_text()
        assert len(text.split()) > 15, f"{folder}/README.md should say what belongs there"
    assert (ROOT / "setup.py").is_file() and (ROOT / "setup.cfg").is_file() and (ROOT / "LICENSE").is_file()


def test_extras_and_light_required_install():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = cfg["options"]["install_requires"]
    for name in ("numpy", "pydicom", "nibabel", "click", "onnxruntime"):
        assert name in required
    assert "tensorflow" not in required and "highdicom" not in required
    extras = cfg["options.extras_require"]
    assert set(extras) >= {"train", "gpu", "export", "dicom", "dev", "all"}
    assert "tensorflow-cpu==2.21.0" in extras["train"] and "keras" in extras["train"]
    assert "tensorflow[and-cuda]" in extras["gpu"]
    for name in ("tf2onnx", "onnx", "ai-edge-litert"):
        assert name in extras["export"]
    for name in ("highdicom", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pyjpegls"):
        assert name in extras["dicom"] and name in extras["all"]
    assert "kerasmuscle = kerasmuscle.cli:main" in cfg["options.entry_points"]["console_scripts"]


def test_import_is_light():
    code = ("import sys, kerasmuscle\n"
            "heavy = [m for m in ('pydicom', 'nibabel', 'tensorflow', 'keras', 'highdicom', 'onnxruntime') "
            "if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"'import kerasmuscle' pulled in {out}"


def test_reading_never_imports_tensorflow(tcia_dir):
    code = ("import sys, kerasmuscle\n"
            f"kerasmuscle.read_scan({str(tcia_dir)!r})\n"
            "print(any(m in sys.modules for m in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "kerasmuscle", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "kerasmuscle" in result.stdout


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"], "no temporary file may be left behind"
    atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_path_for_folders_and_refusal(tmp_path):
    target = tmp_path / "series"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic_path(target, overwrite=False):
            pass
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
