"""The ``kerasmuscle`` command: a thin layer over the Python API.

Every command validates its arguments, calls one API function, and turns library errors into one
line that names the file and the cause, with a non-zero exit code. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

from kerasmuscle import __version__
from kerasmuscle.errors import KerasMuscleError, ScanWarning


class _Group(click.Group):
    """A click group that reports errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KerasMuscleError as exc:
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except OSError as exc:
            if (ctx.obj and ctx.obj.get("debug")) or exc.filename is None:
                raise
            # An OSError that no kerasmuscle code turned into its own error still names its file.
            raise click.ClickException(f"{exc.filename}: {(exc.strerror or str(exc)).lower()}") from None
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (run 'kerasmuscle --debug ...' for the traceback)"
            ) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kerasmuscle")
@click.option("--debug", is_flag=True, help="Show full tracebacks for unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Skeletal muscle at L3 on abdominal CT (Kreher et al. 2022): read, synthesise, inspect.

    Example:

        kerasmuscle synth cohort --cases 6 && kerasmuscle inspect cohort --png cohort.png
    """
    ctx.ensure_object(dict)["debug"] = debug
    warnings.simplefilter("ignore", ScanWarning)  # commands print the scan's warnings themselves


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="kerasmuscle")


# --------------------------------------------------------------------------------------------------
# synth


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cases", default=6, show_default=True, type=click.IntRange(1), help="Number of cases.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; the same seed gives the same cohort.")
@click.option("--workers", type=click.IntRange(1), help="Processes to use [default: all CPU cores].")
@click.option("--image-size", type=click.IntRange(64), help="Rows and columns per slice [default: 512].")
@click.option("--slices", type=click.IntRange(1), help="Adjacent slices per case [default: 3].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A SynthConfig JSON file (see kerasmuscle.config.SynthConfig).")
@click.option("--seg/--no-seg", default=None, help="Also write labels as DICOM SEG [default: if highdicom is installed].")
@click.option("--overwrite", is_flag=True, help="Replace OUT (and the --preview picture) if they exist.")
@click.option("--preview", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a PNG of up to six cases, with and without the label colours.")
@click.option("--v2", "v2", is_flag=True,
              help="Synthetic data v2 for training: every case a deformed anatomy with random intensities, "
                   "written as NPZ (--config is then a SynthV2Config; image size default 256).")
@click.option("--spine", is_flag=True,
              help="Whole 3-D series from T9/T10 to the femoral heads with the true level of every slice "
                   "(kerasmuscle.synth.spine): per case a DICOM series and levels.json, for the level finder "
                   "(--config is then a SpineConfig; image size default 256).")
def synth(out: Path, cases: int, seed: int, workers: int | None, image_size: int | None, slices: int | None,
          config_path: Path | None, seg: bool | None, overwrite: bool, preview: Path | None, v2: bool,
          spine: bool = False) -> None:
    """Make a synthetic L3 cohort: CT DICOM series, labels as NIfTI and DICOM SEG, dataset.json.

    Synthetic data proves the machinery (reading, training, export), not clinical accuracy. With --v2
    it makes training data instead (kerasmuscle.synth.v2): NPZ cases that `kerasmuscle train` reads.

    Example:

        kerasmuscle synth cohort --cases 20 --seed 1 --preview cohort.png

        kerasmuscle synth spines --spine --cases 10
    """
    from kerasmuscle.fileutil import recover_replaced, remove_stale_temporaries

    recover_replaced(out)  # a cohort that a killed --overwrite run had renamed aside
    remove_stale_temporaries(out.parent)  # what killed runs left beside it
    if spine:
        _synth_spine(out, cases, seed, image_size, config_path, overwrite, v2 or slices is not None or seg)
        return
    from kerasmuscle.config import SynthConfig, SynthV2Config
    from kerasmuscle.synth.cohort import write_cohort
    from kerasmuscle.synth.v2 import write_dataset

    _refuse_existing(preview, overwrite)
    if v2 and seg:
        raise click.BadParameter("--v2 writes NPZ cases; DICOM SEG is not made for them", param_hint="--seg")
    kind = SynthV2Config if v2 else SynthConfig
    config = kind.load(config_path) if config_path else kind()
    changes = {k: v for k, v in (("image_size", image_size), ("slices", slices)) if v is not None}
    if changes:
        try:
            config = config.replace(**changes)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    start = time.perf_counter()
    with click.progressbar(length=cases, label="synth", file=sys.stderr) as bar:
        last = [0]

        def progress(done: int, total: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        if v2:
            dataset = write_dataset(out, samples=cases, seed=seed, config=config, workers=workers,
                                    overwrite=overwrite, progress=progress)
        else:
            dataset = write_cohort(out, cases=cases, seed=seed, config=config, workers=workers, seg=seg,
                                   overwrite=overwrite, progress=progress)
    elapsed = time.perf_counter() - start
    click.echo(f"wrote {cases} synthetic case(s) to {out} in {elapsed:.1f} s ({cases / elapsed:.1f} cases/s)")
    click.echo(f"dataset: {dataset}")
    if preview:
        _dataset_preview(out, preview)
        click.echo(f"preview: {preview}")


def _synth_spine(out: Path, cases: int, seed: int, image_size: int | None, config_path: Path | None,
                 overwrite: bool, conflicting: bool) -> None:
    """``synth --spine``: a cohort of synthetic 3-D spine series with their true levels."""
    from kerasmuscle.synth.spine import SpineConfig, write_spine_cohort

    if conflicting:
        raise click.BadParameter("--spine writes whole series with levels.json; --v2, --slices and --seg do not "
                                 "apply to it", param_hint="--spine")
    config = SpineConfig.load(config_path) if config_path else SpineConfig()
    if image_size is not None:
        try:
            config = config.replace(image_size=image_size)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    start = time.perf_counter()
    try:
        with click.progressbar(length=cases, label="synth --spine", file=sys.stderr) as bar:
            path = write_spine_cohort(out, cases, seed, config, overwrite=overwrite,
                                      progress=lambda done, total: bar.update(1))
    except KerasMuscleError as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - start
    click.echo(f"wrote {cases} synthetic spine series to {out} in {elapsed:.1f} s")
    click.echo(f"levels: {path}")


# --------------------------------------------------------------------------------------------------
# inspect


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="A label map to check against the scan (NIfTI, NPZ or DICOM SEG).")
@click.option("--series", help="SeriesInstanceUID to read when a folder holds several series.")
@click.option("--force", is_flag=True, help="Read non-CT DICOM (MR, CR, ...) anyway.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a picture: the middle slice (with labels), or a grid of a dataset's cases.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--overwrite", is_flag=True, help="Replace the --png picture if it exists.")
def inspect(path: Path, labels_path: Path | None, series: str | None, force: bool, png: Path | None,
            as_json: bool, overwrite: bool) -> None:
    """Show what kerasmuscle reads from a scan or a dataset folder, and check it.

    PATH is a DICOM series folder, a DICOM file, a NIfTI or NPZ file, or a dataset folder with a
    dataset.json (then every case and its labels are read; a bad case is reported and the rest go
    on; the exit code is non-zero if any failed).

    Examples:

        kerasmuscle inspect ../shared/data/tcia-pancreas-ct-cb-001/dicom

        kerasmuscle inspect cohort --png cohort.png
    """
    _refuse_existing(png, overwrite)
    if path.is_dir() and (path / "dataset.json").is_file():
        _inspect_dataset(path, png, as_json)
        return
    from kerasmuscle.io import read_labels, read_scan

    scan = read_scan(path, series_uid=series, force=force)
    labels = read_labels(labels_path, like=scan) if labels_path else None
    summary = scan.summary()
    if labels is not None:
        summary["labels"] = _label_summary(labels, scan)
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        _print_scan(summary)
    if png:
        from kerasmuscle.report import body_tiles, contact_sheet, save_png

        labelled = labels.labelled_slices() if labels is not None else []
        k = int(labelled[len(labelled) // 2]) if len(labelled) else len(scan.hu) // 2
        plain, coloured, _ = body_tiles(scan.hu[k], labels.array[k] if labels is not None else None)
        tiles = [plain] + ([coloured] if coloured is not None else [])
        save_png(png, contact_sheet(tiles, columns=len(tiles)))
        click.echo(f"picture of slice {k}: {png}")


# --------------------------------------------------------------------------------------------------
# level


@cli.command()
@click.argument("scans", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per scan (levels, l3, evidence; one per line for several scans).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the level picture (sagittal and coronal reformats, every vertebra named) of one scan.")
@click.option("--series", help="SeriesInstanceUID to read when a folder holds several series.")
@click.option("--slab-mm", type=click.FloatRange(0, 50), default=None,
              help="For slices thinner than 3 mm: choose the slices within this distance of mid-L3 [default: 5].")
@click.option("--overwrite", is_flag=True, help="Replace the --png picture if it exists.")
def level(scans: tuple[Path, ...], as_json: bool, png: Path | None, series: str | None, slab_mm: float | None,
          overwrite: bool) -> None:
    """Find the vertebral levels of CT scans and the slices at mid-L3, from the spine's bone alone.

    Counts the vertebrae up from the sacrum and down from the lowest rib-bearing vertebra, and prints
    every level found (slice indices as read_scan and predict number them, index 0 most caudal), the
    chosen L3 slices, a confidence and flags; or says why L3 is not in the scan. A stack of at most
    three slices is taken as the user's own L3 choice. Exit code 0: L3 found in every scan; 1: a scan
    could not be read or holds no L3.

    Examples:

        kerasmuscle level ../shared/data/tcia-pancreas-ct-cb-001/dicom

        kerasmuscle level scan.nii.gz --json --png level.png
    """
    from kerasmuscle.core.level import find_levels
    from kerasmuscle.io import read_scan

    if png is not None and len(scans) > 1:
        raise click.BadParameter("write the picture of one scan at a time", param_hint="--png")
    _refuse_existing(png, overwrite)
    options = {} if slab_mm is None else {"slab_mm": slab_mm}
    problems = 0
    for path in scans:
        try:
            scan = read_scan(path, series_uid=series)
            result = find_levels(scan, **options)
        except KerasMuscleError as exc:
            problems += 1
            click.echo(f"failed: {exc}", err=True)
            continue
        problems += not result.l3.found
        if as_json:
            click.echo(json.dumps({"input": os.fspath(path), **result.to_dict()}, indent=None if len(scans) > 1 else 1))
        else:
            _print_levels(os.fspath(path), scan, result)
        if png is not None:
            from kerasmuscle.report.levels import write_level_picture

            write_level_picture(png, scan, result)
            if not as_json:
                click.echo(f"picture: {png}")
    if problems:
        raise SystemExit(1)


def _print_levels(path: str, scan, result) -> None:
    l3 = result.l3
    click.echo(f"{path}: {scan.shape[0]} slices of {scan.spacing[0]:g} mm")
    for lv in reversed(result.levels):
        click.echo(f"  {lv.name:<4} slices {lv.first:>4}..{lv.last:<4} centre {lv.centre:>4}  z {lv.z_mm:8.1f} mm")
    flags = f"; flags: {', '.join(l3.flags)}" if l3.flags else ""
    if not l3.found:
        click.echo(f"  L3 not found: {l3.reason}{flags}")
        return
    conf = "" if l3.confidence is None else f", confidence {l3.confidence:.2f}"
    click.echo(f"  L3: slices {l3.slices[0]}-{l3.slices[1]} (middle {l3.middle}, z {l3.z_mm:.1f} mm){conf}{flags}")
    for key, text in (result.evidence.get("counts") or {}).items():
        click.echo(f"  from the {key}: {text}")


def _refuse_existing(path: Path | None, overwrite: bool) -> None:
    """Outputs never replace a user's file unless asked to (checked before any work starts)."""
    if path is not None and path.exists() and not overwrite:
        raise click.ClickException(f"{path}: exists; choose another name or pass --overwrite")


def _label_summary(labels, scan) -> dict[str, Any]:
    from kerasmuscle.core.measure import label_areas
    from kerasmuscle.labels import LABELS

    names = {lab.id: lab.name for lab in LABELS}
    names.update(labels.names)
    return {
        "source": labels.source,
        "labelled_slices": [int(k) for k in labels.labelled_slices()],
        "mean_area_cm2_per_labelled_slice": {
            f"{v} {names.get(v, '?')}": round(cm2, 2) for v, cm2 in label_areas(labels, scan).items()
        },
    }


def _print_scan(s: dict[str, Any]) -> None:
    rows = [("source", s["source"])]
    fmt = s["format"]
    if s.get("transfer_syntax"):
        fmt += f" ({s['transfer_syntax']})"
    rows.append(("format", fmt))
    if s.get("series_uid"):
        desc = f" '{s['series_description']}'" if s.get("series_description") else ""
        rows.append(("series", f"{s['series_uid']}{desc}"))
        who = ", ".join(str(x) for x in (s.get("patient_id"), s.get("patient_sex"), s.get("patient_age")) if x)
        height = f"height {s['patient_size_m']:.2f} m" if s.get("patient_size_m") else "height unknown"
        rows.append(("patient", f"{who or 'unknown'}; {height}"))
    shape, sp = s["shape"], s["spacing_mm"]
    rows.append(("slices", f"{shape[0]} of {shape[1]} x {shape[2]} pixels"))
    rows.append(("spacing", f"{sp[0]:.3f} mm between slices; pixels {sp[1]:.4f} x {sp[2]:.4f} mm"))
    if s["slice_locations_mm"]:
        rows.append(("z range", f"{s['slice_locations_mm'][0]:.2f} .. {s['slice_locations_mm'][1]:.2f} mm"))
    rows.append(("HU range", f"{s['hu_min']:.0f} .. {s['hu_max']:.0f}"))
    if "labels" in s:
        lab = s["labels"]
        rows.append(("labels", f"{lab['source']}: {len(lab['labelled_slices'])} labelled slice(s)"))
        for name, cm2 in lab["mean_area_cm2_per_labelled_slice"].items():
            rows.append(("", f"{name}: {cm2:.2f} cm2 per labelled slice"))
    for key, value in rows:
        click.echo(f"{key + ':' if key else '':<10} {value}")
    if s["warnings"]:
        click.echo(f"warnings:  {len(s['warnings'])}")
        for w in s["warnings"]:
            click.echo(f"  - {w}")
    else:
        click.echo("warnings:  none")


def _inspect_dataset(folder: Path, png: Path | None, as_json: bool) -> None:
    import numpy as np

    from kerasmuscle.core.measure import label_areas
    from kerasmuscle.data import load_dataset
    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.labels import MUSCLE_LABELS

    cases = load_dataset(folder)
    rows, failures = [], []
    for case in cases:
        try:
            scan = read_scan(case.image)
            labels = read_labels(case.labels, like=scan) if case.labels else None
            seg_agrees = None
            if case.seg is not None and labels is not None:
                seg_agrees = bool(np.array_equal(read_labels(case.seg, like=scan).array, labels.array))
            areas = None if labels is None else label_areas(labels, scan, [len(scan.hu) // 2])
            row = {
                "id": case.id, "patient_id": case.patient_id, "slices": scan.shape[0],
                "pixel_mm": round(scan.spacing[1], 3), "hu_min": float(scan.hu.min()), "hu_max": float(scan.hu.max()),
                "height_m": case.height_m or scan.height_m,
                "muscle_cm2_middle_slice": None if areas is None else round(sum(areas.values()), 1),
                **({} if areas is None else {lab.key: round(areas.get(lab.id, 0.0), 1) for lab in MUSCLE_LABELS}),
                "seg_matches_labels": seg_agrees, "warnings": len(scan.warnings),
            }
            rows.append(row)
        except KerasMuscleError as exc:
            failures.append(f"{case.id}: {exc}")
    if as_json:
        click.echo(json.dumps({"cases": rows, "failed": failures}, indent=1, default=str))
    else:
        head = ["id", "patient_id", "slices", "pixel_mm", "hu_min", "hu_max", "height_m",
                "muscle_cm2_middle_slice", "seg_matches_labels"]
        table = [head] + [["-" if r.get(h) is None else f"{r[h]:g}" if isinstance(r[h], float) else str(r[h])
                           for h in head] for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(head))]
        click.echo(f"{folder}: {len(cases)} case(s)")
        for line in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    if png:
        _dataset_preview(folder, png)
        click.echo(f"picture: {png}")
    if failures:
        for line in failures:
            click.echo(f"failed: {line}", err=True)
        raise click.ClickException(f"{len(failures)} of {len(cases)} case(s) could not be read")


def _dataset_preview(folder: Path, png: Path, count: int = 6) -> None:
    """Middle slices of the first cases: the CT on top, the same with label colours below."""
    from kerasmuscle.data import load_dataset
    from kerasmuscle.io import read_labels, read_scan
    from kerasmuscle.report import body_tiles, contact_sheet, save_png

    cases = load_dataset(folder)[:count]
    plain, coloured, titles = [], [], []
    for case in cases:
        scan = read_scan(case.image)
        k = len(scan.hu) // 2
        labels = read_labels(case.labels, like=scan).array[k] if case.labels else None
        tile, tinted, _ = body_tiles(scan.hu[k], labels)
        plain.append(tile)
        coloured.append(tile if tinted is None else tinted)
        facts = [str(case.meta[k]) for k in ("sex", "age_years", "contrast_phase") if case.meta.get(k) is not None]
        titles.append(" ".join([case.id, *facts]))
    sheet = contact_sheet(plain + coloured, columns=len(cases), titles=titles + [""] * len(cases), tile_size=320)
    save_png(png, sheet)


# --------------------------------------------------------------------------------------------------
# train, evaluate

from kerasmuscle.config import PRESETS  # noqa: E402  (cheap: config imports nothing heavy)


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "run", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The run folder; created, or resumed where it stopped when it exists.")
@click.option("--folds", type=click.IntRange(2), help="Patient-grouped cross-validation folds [default: 10].")
@click.option("--fold", type=click.IntRange(0), help="Train only fold K (run folds as parallel processes).")
@click.option("--epochs", type=click.IntRange(1), help="Maximum epochs per fold [default: 100].")
@click.option("--image-size", type=click.IntRange(16), help="Network input rows and columns, a multiple of 16 [default: 512].")
@click.option("--preset", type=click.Choice(list(PRESETS)), help="U-Net architecture [default: paper].")
@click.option("--channels", type=click.Choice(["1", "3"]), help="Input slices per sample: 1, or 3 adjacent [default: 1].")
@click.option("--batch-size", type=click.IntRange(1), help="Slices per step, over all replicas [default: 8].")
@click.option("--seed", type=int, help="Seed for folds, weights, shuffling and augmentation [default: 0].")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]),
              help="tf.distribute strategy: several GPUs (mirrored) or hosts (multiworker, reads TF_CONFIG).")
@click.option("--mixed-precision/--no-mixed-precision", default=None,
              help="float16 on GPUs, bfloat16 on CPUs; the output layer stays float32 [default: off].")
@click.option("--threads", type=click.IntRange(1),
              help="TensorFlow intra-op threads; the same seed and thread count give the same weights "
                   "[default: every core].")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A TrainConfig JSON file (for example another run's config.json); options override it.")
@click.option("--init-weights", type=click.Path(exists=True, path_type=Path),
              help="Start every fold from this bundle's (or .keras file's) weights: fine-tune it on your labels.")
def train(dataset: Path, run: Path, folds: int | None, fold: int | None, epochs: int | None, image_size: int | None,
          preset: str | None, channels: str | None, batch_size: int | None, seed: int | None, strategy: str | None,
          mixed_precision: bool | None, threads: int | None, config_path: Path | None,
          init_weights: Path | None) -> None:
    """Cross-validate the paper's U-Net on a labelled dataset: soft Dice loss, AdamW at 1e-2,
    ReduceLROnPlateau, early stopping, best checkpoints.

    DATASET is a folder from kerasmuscle synth, one folder per case (image + label.nii.gz or seg.dcm),
    or images/ and labels/ NIfTI pairs. Running the same command again resumes an interrupted run.

    Example:

        kerasmuscle train cohort --out runs/cv --folds 10 --epochs 60 --image-size 256
    """
    from kerasmuscle.config import ConfigError
    from kerasmuscle.training import train_run
    from kerasmuscle.training.train import resolve_config

    try:
        config = resolve_config(run, config_path, preset=preset, channels=int(channels) if channels else None,
                                image_size=image_size, folds=folds, epochs=epochs, batch_size=batch_size, seed=seed,
                                strategy=strategy, mixed_precision=mixed_precision, threads=threads,
                                init_weights=str(init_weights) if init_weights else None)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    verbose = 1 if sys.stdout.isatty() else 2
    manifest = train_run(dataset, run, config, fold=fold, verbose=verbose, log=click.echo)
    click.echo(f"{run}: trained folds {', '.join(sorted(manifest.get('fold_results', {}), key=int))}; "
               f"next: kerasmuscle evaluate {run}")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fold", type=click.IntRange(0), help="Evaluate only fold K, then merge with folds evaluated before.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The dataset folder, if it moved since training.")
def evaluate(run: Path, fold: int | None, dataset: Path | None) -> None:
    """Score every held-out case of a run: Dice, Hamming and Jaccard per muscle and combined, with and
    without the paper's -20..200 HU post-processing. Writes metrics.csv, table.md, table.csv (the
    paper's Table I) and violin.png (its Figure 2).

    Example:

        kerasmuscle evaluate runs/cv && cat runs/cv/table.md
    """
    from kerasmuscle.training import evaluate_run

    evaluate_run(run, dataset=dataset, fold=fold, log=click.echo)
    click.echo((run / "table.md").read_text(encoding="utf-8"))
    click.echo(f"wrote {run / 'metrics.csv'}, {run / 'table.md'}, {run / 'table.csv'}, {run / 'violin.png'}")


@cli.command()
@click.argument("recipe", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The working folder (data/, run/ and the bundle); running again resumes where it stopped.")
@click.option("--workers", type=click.IntRange(1), help="Generator processes [default: all CPU cores].")
def retrain(recipe: Path, out: Path, workers: int | None) -> None:
    """Rebuild a shipped model from its recipe: generate its synthetic data, train, evaluate on the
    held-out synthetic samples, export. RECIPE is a recipe.json or a bundle folder holding one.

    Example:

        kerasmuscle retrain exports/l3-synth-v1 --out runs/l3-synth-v1
    """
    from kerasmuscle.recipe import run_recipe

    verbose = 1 if sys.stdout.isatty() else 0
    bundle = run_recipe(recipe, out, workers=workers, verbose=verbose, log=click.echo)
    click.echo(f"wrote {bundle}; held-out synthetic Dice in {out / 'run' / 'table.md'}")


# --------------------------------------------------------------------------------------------------
# export, predict


@cli.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The bundle folder to write (with --fold all: one bundle per fold under it).")
@click.option("--onnx", is_flag=True, help="Write model.onnx (opset 17) and, when it agrees, model_int8.onnx.")
@click.option("--tflite", is_flag=True, help="Write model.tflite and, when they agree, model_int8.tflite and model_fp16.tflite.")
@click.option("--savedmodel", is_flag=True, help="Write the TensorFlow SavedModel.")
@click.option("--fold", default="best", show_default=True,
              help="For a run folder: a fold number, best (best tuning score) or all.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The training dataset, if it moved since training (calibration and agreement slices).")
@click.option("--reduced/--no-reduced", default=True, show_default=True,
              help="Also try int8 ONNX and float16 LiteRT; each ships only if its labels agree with float32 "
                   "(Dice >= 0.99 per muscle on held-out slices).")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=1e-4, show_default=True,
              help="Largest max-abs probability difference a float32 artifact may have from Keras.")
@click.option("--overwrite", is_flag=True, help="Replace the bundle folder if it exists.")
def export(source: Path, out: Path, onnx: bool, tflite: bool, savedmodel: bool, fold: str, dataset: Path | None,
           reduced: bool, tolerance: float, overwrite: bool) -> None:
    """Export a trained model as a bundle: model.keras, saved_model/, model.onnx, model.tflite,
    metadata.json and SHA256SUMS. Every artifact is checked against Keras at batch sizes 1 and 3; a
    float32 artifact that differs by more than 1e-4 in probability fails the export. Without --onnx,
    --tflite or --savedmodel, all three are written.

    SOURCE is a run folder from kerasmuscle train, a fold folder, a model.keras inside a run, or a bundle
    folder (for example exports/l3-synth-v1, to write the SavedModel and LiteRT copies it leaves out).

    Example:

        kerasmuscle export runs/cv --out exports/l3 --onnx --fold best
    """
    from kerasmuscle.export import FORMATS, export_bundle

    if fold not in ("best", "all") and not fold.isdigit():
        raise click.BadParameter(f"{fold!r}: give a fold number, best or all", param_hint="--fold")
    chosen = [f for f, on in (("savedmodel", savedmodel), ("onnx", onnx), ("tflite", tflite)) if on] or list(FORMATS)
    metas = export_bundle(source, out, formats=chosen, fold=fold if not fold.isdigit() else int(fold), dataset=dataset,
                          reduced=reduced, tolerance=tolerance, overwrite=overwrite, log=click.echo)
    for meta in metas:
        worst = max((p.worst for p in meta.parity.values()), default=0.0)
        click.echo(f"{meta.name}: fold {meta.source.fold}, files {', '.join(meta.files.values())}; "
                   f"largest difference from Keras {worst:.2e}")
        for key, why in meta.left_out.items():
            click.echo(f"{meta.name}: no {key} model: {why}")
    click.echo(f"next: kerasmuscle predict SCAN --model {out if len(metas) == 1 else out / 'fold_0'} --out results")


from kerasmuscle.predict.outputs import format_help as _format_help  # noqa: E402  (cheap: the output registry)
from kerasmuscle.core.cutoffs import definitions as _cutoff_names  # noqa: E402  (cheap: a CSV table)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "bundle", type=click.Path(path_type=Path),
              help="The bundle folder from kerasmuscle export [default: the shipped model l3-synth-v2, trained on "
                   "synthetic anatomy alone].")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: OUT/<case>/ per input, plus OUT/measurements.csv and OUT/slices.csv.")
@click.option("--slices", help="Slices to segment and measure: auto (the slices at mid-L3, found from the spine; "
                               "a stack of at most three slices is taken as it is), all, 12, 10-14, 10,12,20-22 "
                               "(0-based, as kerasmuscle level numbers them) or z:LOW:HIGH in mm [default: auto]. "
                               "The case row averages these slices.")
@click.option("--height", type=float, help="Patient height in metres, for the skeletal muscle index (all inputs).")
@click.option("--heights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with case_id (or patient_id or name) and height_m (or height_cm) per case; optional "
                   "sex (M/F) and weight_kg columns for --cutoffs.")
@click.option("--cutoffs", type=click.Choice(_cutoff_names()),
              help="Classify sarcopenia (SMI) and myosteatosis (muscle HU) by a published definition; sex from "
                   "PatientSex or the heights table, BMI from PatientWeight (or weight_kg) and the height.")
@click.option("--format", "formats", help=_format_help())
@click.option("--shard", help="i/n: this process takes every n-th input starting at the i-th (1-based). Shards may "
                              "run at once into one --out; the last to end leaves the tables of every case.")
@click.option("--overwrite", is_flag=True, help="Redo inputs whose outputs exist (default: skip those finished "
                                                "with the same model and settings, so a killed batch resumes, and "
                                                "refuse those finished with other settings).")
@click.option("--backend", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True)
@click.option("--precision", type=click.Choice(["float32", "int8", "float16", "fastest"]), default="float32",
              show_default=True, help="int8 (onnx) or float16 (tflite) when the bundle ships it; fastest picks it.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for the model [default: one per core].")
@click.option("--low-memory", is_flag=True, help="ONNX Runtime without its memory arena: float32 at 512x512 in "
                                                 "about 320 MB instead of 450, about 50 % slower; same results.")
@click.option("--hu-range", nargs=2, type=float, help="Post-processing HU range instead of the bundle's -20 200.")
@click.option("--no-postprocess", is_flag=True, help="Keep predicted muscle outside the HU range.")
def predict(inputs: tuple[Path, ...], bundle: Path | None, out: Path, slices: str | None, height: float | None,
            heights: Path | None, cutoffs: str | None, formats: str | None, shard: str | None, overwrite: bool,
            backend: str, precision: str, threads: int | None, low_memory: bool,
            hu_range: tuple[float, float] | None, no_postprocess: bool) -> None:
    """Segment and measure the five muscle groups on CT: label maps, DICOM SEG, overlays, and area (cm2),
    mean HU and skeletal muscle index per muscle and side. Runs with ONNX Runtime, without TensorFlow.

    INPUTS are DICOM series folders, DICOM files, NIfTI or NPZ files. A bad input is reported and skipped.
    Running the command again skips inputs finished with the same model and settings and refuses those
    finished with other settings (--overwrite redoes them). Exit code 0: every input finished; 1: an input
    failed, was refused or holds no L3 (with --slices auto); 2: bad options; 130: interrupted (run it again
    to resume). By default the L3 slices are found from the spine (see kerasmuscle level); a volume
    without L3 is reported in one line and not measured.

    Example:

        kerasmuscle predict scans/* --out results --height 1.72
    """
    from contextlib import ExitStack

    from kerasmuscle.predict import PredictConfig
    from kerasmuscle.core.slices import SliceSelection
    from kerasmuscle.predict.batch import CaseEvent, parse_shard, predict_batch
    from kerasmuscle.predict.outputs import parse_formats

    try:
        config = PredictConfig(slices=SliceSelection.parse(slices) if slices is not None else None, height=height, heights=heights,
                               formats=parse_formats(formats), shard=parse_shard(shard), overwrite=overwrite,
                               backend=backend, precision=precision, threads=threads, low_memory=low_memory,
                               hu_range=hu_range, postprocess=not no_postprocess, cutoffs=cutoffs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bars, state = ExitStack(), {}  # a progress bar on a terminal; one line per input in logs and pipes
    words = {"done": "done", "skipped": "finished earlier, skipped", "refused": "", "failed": "FAILED: ",
             "no_l3": ""}

    def progress(event: CaseEvent) -> None:
        line = words[event.status] + event.message
        line = f"done ({event.message})" if event.status == "done" and event.message else line
        if not sys.stdout.isatty():
            click.echo(f"[{event.number}/{event.total}] {event.case}: {line}")
            return
        if "bar" not in state:
            state["bar"] = bars.enter_context(click.progressbar(length=event.total, label="predicting", show_pos=True,
                                                                show_eta=True, item_show_func=lambda n: n or ""))
        if event.message:
            click.echo(f"\n{event.case}: {line}", err=True)
        state["bar"].update(1, event.case)

    try:
        with bars:
            result = predict_batch([os.fspath(p) for p in inputs], bundle, out, config, progress=progress)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: finished cases are kept in {out}; run the same command again to resume", err=True)
        raise SystemExit(130) from None
    except ValueError as exc:
        if isinstance(exc, KerasMuscleError):
            raise
        raise click.UsageError(str(exc)) from None
    _report_batch(out, result, heights)


def _report_batch(out: Path, result, heights: Path | None) -> None:
    """The closing lines of ``predict`` and ``measure``; exit code 1 when an input failed, was refused or has no L3."""
    refused = f", {len(result.refused)} finished earlier with other settings" if result.refused else ""
    tables = (f"measurements in {result.tables[0]} and {result.tables[1]}" if result.tables
              else "no case is finished, so no measurement tables")
    click.echo(f"{out}: {len(result.done)} done, {len(result.skipped)} finished earlier{refused}, "
               f"{len(result.failed)} failed{f', {len(result.no_l3)} without L3' if result.no_l3 else ''}; {tables}")
    for source in result.repeated:
        click.echo(f"note: {source} was given more than once; predicted once")
    if result.no_height:
        click.echo(f"note: {len(result.no_height)} case(s) without a height in {heights}, so no SMI: "
                   f"{', '.join(result.no_height)}")
    for name, reasons in result.review:
        click.echo(f"needs review: {name}: {reasons}")
    for _, message in result.refused:
        click.echo(f"refused: {message}", err=True)
    for _, message in result.no_l3:
        click.echo(f"no L3: {message}", err=True)
    for _, message in result.failed:
        click.echo(f"failed: {message}", err=True)
    if result.failed or result.refused or result.no_l3:
        raise SystemExit(1)



@cli.command()
@click.argument("scan", type=click.Path(path_type=Path))
@click.option("--labels", "mask", required=True, type=click.Path(path_type=Path),
              help="The label map to measure: NIfTI, NPZ or DICOM SEG on the scan's grid (values 0-5, or SEG "
                   "segments named after the muscle groups), for example predict's output corrected in 3D Slicer.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: OUT/<case>/ and OUT/measurements.csv, as predict writes them.")
@click.option("--slices", help="Slices to measure: labelled (the slices the mask labels), auto, all, 12, 10-14 or "
                               "z:LOW:HIGH [default: labelled].")
@click.option("--height", type=float, help="Patient height in metres, for the skeletal muscle index.")
@click.option("--heights", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with case_id (or patient_id or name), height_m (or height_cm), optionally sex and weight_kg.")
@click.option("--cutoffs", type=click.Choice(_cutoff_names()), help="Classify sarcopenia and myosteatosis (see predict).")
@click.option("--format", "formats", help=_format_help())
@click.option("--overwrite", is_flag=True, help="Redo the case when its outputs exist with other settings.")
def measure(scan: Path, mask: Path, out: Path, slices: str | None, height: float | None, heights: Path | None,
            cutoffs: str | None, formats: str | None, overwrite: bool) -> None:
    """Measure a label map you already have on its scan: the same measurements, cut-offs, overlay, level
    picture, SEG and review flags as predict, from your mask instead of the model's. Predict, correct the
    SEG or NIfTI in 3D Slicer, measure again. No model is run.

    Exit code 0: measured; 1: the scan or the mask cannot be used (one line says why); 2: bad options.

    Example:

        kerasmuscle measure scans/patient-001 --labels corrected.nii.gz --out remeasured --height 1.72
    """
    from kerasmuscle.core.slices import SliceSelection
    from kerasmuscle.predict import PredictConfig
    from kerasmuscle.predict.batch import predict_batch
    from kerasmuscle.predict.masks import MaskPredictor
    from kerasmuscle.predict.outputs import parse_formats

    try:
        config = PredictConfig(slices=SliceSelection.parse(slices or "labelled"), height=height, heights=heights,
                               formats=parse_formats(formats), overwrite=overwrite, cutoffs=cutoffs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    predictor = MaskPredictor(mask)
    try:
        result = predict_batch([os.fspath(scan)], None, out, config, predictor=predictor,
                               progress=lambda e: click.echo(f"{e.case}: {e.status}{': ' + e.message if e.message else ''}"))
    except ValueError as exc:
        if isinstance(exc, KerasMuscleError):
            raise
        raise click.UsageError(str(exc)) from None
    _report_batch(out, result, heights)


@cli.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "bundle", type=click.Path(path_type=Path),
              help="The bundle to check [default: the shipped model].")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: metrics.csv, table.md/csv, agreement.md/csv, violin.png, bland_altman.png.")
@click.option("--backend", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True)
@click.option("--precision", type=click.Choice(["float32", "int8", "float16", "fastest"]), default="float32",
              show_default=True)
@click.option("--threads", type=click.IntRange(1), help="CPU threads for the model [default: one per core].")
def validate(dataset: Path, bundle: Path | None, out: Path, backend: str, precision: str, threads: int | None) -> None:
    """Check a model on your own labelled scans before trusting it: the model runs on the labelled slices of
    every case of DATASET (any layout train accepts) and is scored against the labels: Table I (Dice, Hamming,
    Jaccard per group), the agreement of areas and mean HU per group with the reference (mean difference,
    95 % limits of agreement, ICC) and Bland-Altman plots. Runs without TensorFlow.

    Exit code 0: every case scored; 1: a case failed (the others are scored).

    Example:

        kerasmuscle validate my_labelled_scans --out validation
    """
    from kerasmuscle.predict.validate import validate as run_validation

    result = run_validation(dataset, out, model=bundle, backend=backend, precision=precision, threads=threads,
                            log=click.echo)
    table = (out / "table.md").read_text(encoding="utf-8")
    click.echo(table.rstrip())
    click.echo((out / "agreement.md").read_text(encoding="utf-8").rstrip())
    click.echo(f"{out}: {len({r['case_id'] for r in result.rows})} case(s) scored, {len(result.failed)} failed; "
               f"wrote {', '.join(p.name for p in result.written)}")
    for source, message in result.failed:
        click.echo(f"failed: {source}: {message}", err=True)
    if result.failed:
        raise SystemExit(1)


@cli.command()
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file [default: RESULTS/report.html].")
def report(results: Path, path: Path | None) -> None:
    """Write one self-contained report.html for a results folder of predict or measure: a sortable,
    filterable table of every case (needs-review cases first), thumbnails of every overlay and level
    picture that open full size, and cohort plots (SMI by sex with the cut-off lines, muscle HU, areas per
    group). No network and no external scripts: open it anywhere.

    Run it on the --out folder of kerasmuscle predict or measure.

    Example:

        kerasmuscle report results
    """
    from kerasmuscle.predict.batch import finished_records
    from kerasmuscle.report.cohort import write_report

    written = write_report(results, finished_records(results), path)
    click.echo(f"{written}: cohort report written")


# --------------------------------------------------------------------------------------------------
# demo

from kerasmuscle.demo import DEMO  # noqa: E402  (cheap: a dataclass; the demo imports its steps when run)


@cli.command()
@click.option("--out", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="The demo folder; running again resumes and reuses what is finished.")
@click.option("--dicom", type=click.Path(exists=True, path_type=Path),
              help="Also segment and measure this real CT (a DICOM series folder, DICOM file, NIfTI or NPZ).")
@click.option("--cases", default=DEMO.cases, show_default=True, type=click.IntRange(6), help="Synthetic cases.")
@click.option("--image-size", default=DEMO.image_size, show_default=True, type=click.IntRange(32),
              help="Network input size (a multiple of 16).")
@click.option("--folds", default=DEMO.folds, show_default=True, type=click.IntRange(2), help="Cross-validation folds.")
@click.option("--epochs", default=DEMO.epochs, show_default=True, type=click.IntRange(1), help="Epochs per fold.")
@click.option("--preset", default=DEMO.preset, show_default=True, type=click.Choice(list(PRESETS)))
@click.option("--threads", default=DEMO.threads, show_default=True, type=click.IntRange(1),
              help="TensorFlow threads; the README's Dice holds for this count (more cores: faster, other weights).")
def demo(out: Path, dicom: Path | None, cases: int, image_size: int, folds: int, epochs: int, preset: str,
         threads: int) -> None:
    """The main job on built-in defaults: make a synthetic cohort, cross-validate the paper's U-Net, write
    Table I and the violin plot, export the bundle, and segment and measure held-out cases (and --dicom)
    with the light predictor. About 13 minutes on 2 CPU cores.

    Example:

        kerasmuscle demo --out demo --dicom ../shared/data/tcia-pancreas-ct-cb-001/dicom
    """
    from kerasmuscle.demo import describe, run_demo

    if image_size % 16:
        raise click.BadParameter(f"{image_size} is not a multiple of 16", param_hint="--image-size")
    config = DEMO.replace(cases=cases, image_size=image_size, folds=folds, epochs=epochs, preset=preset,
                          threads=threads)
    summary = run_demo(out, config, dicom=dicom, log=click.echo)
    click.echo(describe(summary))
    if summary["failed"]:
        raise SystemExit(1)


# --------------------------------------------------------------------------------------------------
# info


@cli.command()
def info() -> None:
    """Show versions, the machine, and which optional extras are installed.

    Example:

        kerasmuscle info
    """
    import platform

    from kerasmuscle.fileutil import package_version

    click.echo(f"kerasmuscle {__version__} (Python {platform.python_version()}, {platform.system()} "
               f"{platform.machine()}, {os.cpu_count()} CPU cores)")
    groups = {
        "required": ["numpy", "pydicom", "nibabel", "click", "onnxruntime", "pillow"],
        "dicom": ["highdicom", "pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-libjpeg", "pyjpegls"],
        "train": ["tensorflow", "keras"],
        "export": ["tf2onnx", "onnx", "ai-edge-litert"],
    }
    for group, dists in groups.items():
        parts, missing = [], []
        for dist in dists:
            found = package_version(dist)
            if found:
                parts.append(f"{dist} {found}")
            else:
                missing.append(dist)
        status = ", ".join(parts) if parts else "none"
        if missing:
            hint = f"  (missing: {', '.join(missing)}" + (
                f"; pip install 'kerasmuscle[{group}]')" if group != "required" else ")")
            status += hint
        click.echo(f"{group + ':':<10} {status}")
