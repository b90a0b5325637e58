"""Shared fixtures: the real data beside the project, and small CT series made on the fly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KERASMUSCLE_SHARED", ROOT.parent / "shared"))
TCIA = SHARED / "data" / "tcia-pancreas-ct-cb-001" / "dicom"
DCMQI = SHARED / "data" / "dcmqi-ct-3slice-liver-seg"


@pytest.fixture(scope="session")
def tcia_dir() -> Path:
    """The real 134-slice abdominal CT series (CI always has ../shared/data)."""
    if not TCIA.is_dir():
        pytest.fail(f"real test data missing: {TCIA} (set KERASMUSCLE_SHARED to the shared folder)")
    return TCIA


@pytest.fixture(scope="session")
def dcmqi_dir() -> Path:
    """Three real CT slices and a DICOM SEG written by dcmqi."""
    if not DCMQI.is_dir():
        pytest.fail(f"real test data missing: {DCMQI} (set KERASMUSCLE_SHARED to the shared folder)")
    return DCMQI


def phantom_hu(slices: int = 5, size: int = 64, seed: int = 0) -> np.ndarray:
    """A small integer-valued HU volume: air, a water-like disc with a fat ring and a bone dot."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    hu = np.full((slices, size, size), -1000.0)
    for k in range(slices):
        hu[k][r < size * 0.42] = -100
        hu[k][r < size * 0.35] = 40 + 3 * k
        hu[k][np.hypot(yy - size * 0.2, xx) < size * 0.06] = 700
    return np.rint(hu + rng.normal(0, 5, hu.shape)).clip(-1024, 3071).astype(np.float32)


def write_series(folder: Path, hu: np.ndarray | None = None, *, spacing=(2.5, 0.8, 0.8), z0: float = -100.0,
                 representation: str = "int16-1024", **info) -> Path:
    """Write a small valid CT series and return its folder."""
    from kerasmuscle.io.ctwrite import SeriesInfo, write_ct_series

    hu = phantom_hu() if hu is None else hu
    positions = np.array([[-25.0, -30.0, z0 + k * spacing[0]] for k in range(len(hu))])
    write_ct_series(folder, hu, pixel_spacing=spacing[1:], positions=positions,
                    info=SeriesInfo(**info), representation=representation)
    return folder


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """A fresh 5-slice 64x64 CT series folder (files IM0001.dcm.., numbered against position)."""
    return write_series(tmp_path / "series")


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def edit(path: Path, out: Path | None = None, **changes) -> Path:
    """Copy a DICOM file with some attributes changed (value None deletes the attribute)."""
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    out = out or path
    ds.save_as(out, enforce_file_format=True)
    return out


def copy_series(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A small synthetic cohort at full size (3 cases, seed 11), made once per test session."""
    from kerasmuscle.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    write_cohort(out, cases=3, seed=11, workers=1)
    return out


def _tool_or_skip(names: tuple[str, ...], required_by: str, what: str) -> str:
    """The path of the first of ``names`` on PATH; fail when ``$required_by`` is 1 (as ``.ci/run`` sets it),
    else skip saying ``what`` is missing."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{what} is required here but not installed")
    pytest.skip(f"{what} is not installed")


def dciodvfy_or_skip() -> str:
    """The path of dicom3tools' dciodvfy; CI (KERASMUSCLE_REQUIRE_DCIODVFY=1) must have it."""
    return _tool_or_skip(("dciodvfy",), "KERASMUSCLE_REQUIRE_DCIODVFY", "dciodvfy (Debian package dicom3tools)")


def browser_or_skip() -> str:
    """The path of a headless-capable Chromium; CI (KERASMUSCLE_REQUIRE_BROWSER=1) must have it."""
    return _tool_or_skip(("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"),
                         "KERASMUSCLE_REQUIRE_BROWSER", "a headless browser (Debian package chromium)")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """A 64x64 synthetic cohort for training tests (8 cases, seed 5, some follow-up scans), made once."""
    from kerasmuscle.config import SynthConfig
    from kerasmuscle.synth.cohort import write_cohort

    out = tmp_path_factory.mktemp("small") / "cohort"
    write_cohort(out, cases=8, seed=5, workers=1, config=SynthConfig(image_size=64, follow_up_fraction=0.4), seg=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_cohort) -> Path:
    """A trained run of a tiny U-Net (2 folds, 3 epochs, 32x32 input) on ``small_cohort``, made once."""
    pytest.importorskip("tensorflow")
    from kerasmuscle.config import PreprocessConfig, TrainConfig, UNetConfig
    from kerasmuscle.training import train_run

    config = TrainConfig(model=UNetConfig(filters=(4, 8, 16), bottleneck=16, decoder_filters=(16, 8, 4), up_kernel=2),
                         preprocess=PreprocessConfig(image_size=32), folds=2, epochs=3, batch_size=4,
                         tune_fraction=0.25)
    run = tmp_path_factory.mktemp("tiny") / "run"
    train_run(small_cohort, run, config, verbose=0, log=lambda line: None)
    return run


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_run) -> Path:
    """``tiny_run`` exported in every format (reduced variants shipped whatever their agreement)."""
    from kerasmuscle.export import export_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    export_bundle(tiny_run, out, min_agreement=0.0, log=lambda line: None)
    return out


def dicom_case(cohort_dir: Path, n: int = 0) -> Path:
    """The DICOM series folder of case ``n`` of a synthetic cohort."""
    return sorted(p for p in cohort_dir.glob("case_*") if p.is_dir())[n] / "dicom"
