"""Cross-validated training of a run folder (the TensorFlow side; ``train`` extra; evaluation is
:mod:`kerasmuscle.training.evaluate`).

A run folder holds everything a result came from and everything needed to go on::

    RUN/config.json         the TrainConfig
    RUN/splits.json         patient-grouped folds (made once; may be edited by hand before training)
    RUN/manifest.json       dataset, versions, seeds, data hash, per-fold timings and best scores
    RUN/cache/              preprocessed slices, one .npz per case
    RUN/fold_K/model.keras  the best checkpoint (highest monitored Dice)
    RUN/fold_K/last.keras   the last epoch's model and optimiser state, for resuming
    RUN/fold_K/state.json   epoch, schedule and early-stopping state, written last after each epoch
    RUN/fold_K/last_E.keras, best_E.keras   an epoch's checkpoints before state.json names epoch E
    RUN/fold_K/history.csv  one row per epoch
    RUN/fold_K/metrics.csv, predictions/   written by evaluate
    RUN/metrics.csv, table.md, table.csv, violin.png   merged over every evaluated fold

Running :func:`train_run` again on the same folder resumes: finished folds are skipped and an
interrupted fold restarts from its last finished epoch with the same batches it would have seen.
An epoch is finished when ``state.json`` names it: its checkpoints are saved under the epoch's number
first and renamed to ``last.keras`` and ``model.keras`` only after that (:func:`commit_checkpoints`), so
a kill at any point leaves ``last.keras`` and ``model.keras`` matching ``state.json``.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence


from kerasmuscle.config import ConfigError, TrainConfig
from kerasmuscle.data.dataset import Case, discover_cases
from kerasmuscle.data.splits import load_splits, make_splits, save_splits
from kerasmuscle.errors import KerasMuscleError
from kerasmuscle.fileutil import (atomic_path, check_creatable, import_keras, read_json, remove_stale_temporaries,
                                 versions, writable_folder, write_json)
from kerasmuscle.labels import MUSCLE_LABELS

Log = Callable[[str], None]


#: Fields a run may change when it is resumed: more epochs, and the thread count of another machine.
RESUMABLE_CHANGES = ("epochs", "threads")


def resolve_config(run: str | os.PathLike, config_path: str | os.PathLike | None = None, *,
                   preset: str | None = None, channels: int | None = None, image_size: int | None = None,
                   **changes: Any) -> TrainConfig:
    """The settings a ``kerasmuscle train`` command asks for, merged in one place.

    The base is the TrainConfig file ``config_path`` when given, else the run's stored ``config.json``
    when the run exists, else the defaults. Then ``preset`` (a key of :data:`~kerasmuscle.config.PRESETS`,
    keeping the base's input channels), ``channels`` (network and preprocessing together), ``image_size``
    and any other :class:`TrainConfig` fields in ``changes`` (None values are left out) are applied.

    Returns:
        The config (not written; :func:`train_run` checks it against a stored one).

    Raises:
        ConfigError: an unknown field, preset or invalid value, naming it.
    """
    from kerasmuscle.config import UNetConfig

    stored = Path(run) / "config.json"
    if config_path is not None:
        base = TrainConfig.load(config_path)
    else:
        base = TrainConfig.load(stored) if stored.is_file() else TrainConfig()
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = sorted(k for k in changes if k not in TrainConfig.__dataclass_fields__ or k in ("model", "preprocess"))
    if unknown:
        raise ConfigError(f"resolve_config: {', '.join(unknown)} cannot be changed here; "
                          "use preset, channels and image_size, or a config file")
    try:
        model = UNetConfig.preset(preset, input_channels=base.model.input_channels) if preset else base.model
        if channels is not None:
            model = model.replace(input_channels=int(channels))
        preprocess = base.preprocess.replace(channels=model.input_channels,
                                             **({"image_size": image_size} if image_size is not None else {}))
        return base.replace(model=model, preprocess=preprocess, **changes)
    except ValueError as exc:  # ConfigError is one
        raise ConfigError(str(exc)) from None


def run_config(run: Path, config: TrainConfig | None) -> TrainConfig:
    """The run's config: the stored one when ``run`` has one, else ``config`` (or the defaults).

    A stored config wins; a different ``config`` is an error naming the fields, except those of
    :data:`RESUMABLE_CHANGES` (a run may be extended, or resumed on another machine). Nothing is written here.
    """
    stored_path = run / "config.json"
    if not stored_path.is_file():
        return config or TrainConfig()
    stored = TrainConfig.load(stored_path)
    if config is None:
        return stored
    if config.replace(**{k: getattr(stored, k) for k in RESUMABLE_CHANGES}) != stored:
        a, b = stored.to_dict(), config.to_dict()
        changed = [k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES]
        raise ConfigError(f"{run}: this run was made with other settings ({', '.join(changed)} differ); "
                          "resume it without them, or train into a new --out folder")
    return config


def run_splits(run: Path, cases: Sequence[Case], config: TrainConfig) -> tuple[dict[str, Any], bool]:
    """The run's splits: ``splits.json`` read and checked when present, else made (not yet saved).

    Returns:
        ``(splits, is_new)``.
    """
    path = run / "splits.json"
    if path.is_file():
        return load_splits(path, cases), False
    try:
        return make_splits(cases, config.folds, config.seed, config.tune_fraction), True
    except ValueError as exc:
        raise KerasMuscleError(f"{run}: {exc}") from None


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def _default_threads() -> int:
    """TensorFlow's intra-op thread count when none is set: TF_NUM_INTRAOP_THREADS, else every core this
    process may run on."""
    env = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: CPU flags (Linux ``/proc/cpuinfo``) of instructions that compute bfloat16 natively.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 natively (True/False), or None where it cannot be told (no
    ``/proc/cpuinfo``: not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & set(BF16_FLAGS))


def precision_policy(mixed_precision: bool, log: Log = print, *, gpu: bool | None = None,
                     bf16: bool | None = None) -> str:
    """The Keras policy training runs with: ``mixed_float16`` on a GPU, ``mixed_bfloat16`` on a CPU that
    computes bfloat16 natively, else ``float32``.

    A CPU without bfloat16 instructions (no ``avx512_bf16`` or ``amx_bf16``) emulates it: measured on this
    project's machine on a day its host lacked them, the shipped recipe's step took 19.8 s in bfloat16,
    about 20 times a float32 step, so mixed precision then falls back to float32 with a line saying so.
    Where the CPU cannot be told (not Linux), bfloat16 is kept as asked.
    """
    if not mixed_precision:
        return "float32"
    if gpu is None:
        _, tf = import_keras()
        gpu = bool(tf.config.list_physical_devices("GPU"))
    if gpu:
        return "mixed_float16"
    if bf16 is None:
        bf16 = cpu_has_bf16()
    if bf16 is False:
        log("mixed precision: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16), so bfloat16 would be "
            "emulated at many times float32's time; training in float32")
        return "float32"
    return "mixed_bfloat16"


def configure_determinism(config: TrainConfig, log: Log = print) -> dict[str, Any]:
    """Make this process's training a function of the seed and the thread count, and say how.

    Sets TensorFlow's intra-op threads to ``config.threads`` (when given) and, with ``config.deterministic``,
    enables op determinism (measured to cost nothing here). The seeds are set per fold
    (``keras.utils.set_random_seed(seed * 1000 + fold)``) and the input pipeline is deterministic by
    construction (:func:`~kerasmuscle.data.pipeline.make_dataset`). The thread count can be set only before
    TensorFlow's first operation in a process; when it is too late, a line says so and training goes on
    with the running count (which is what gets recorded).

    Returns:
        What the run's ``manifest.json`` records under ``determinism``.
    """
    _, tf = import_keras()
    threading = tf.config.threading
    running = threading.get_intra_op_parallelism_threads() or _default_threads()
    if config.threads is not None and config.threads != running:
        try:
            threading.set_intra_op_parallelism_threads(config.threads)
            running = config.threads
        except RuntimeError:
            log(f"threads={config.threads}: TensorFlow already runs with {running} intra-op threads in this "
                f"process, so training uses {running} (other weights than with {config.threads}); start a new "
                "process to choose")
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    return {
        "seed": config.seed, "fold_seed": "seed * 1000 + fold", "op_determinism": bool(config.deterministic),
        "intra_op_threads": int(running), "threads_setting": config.threads, "tf_data_deterministic": True,
        # oneDNN's kernels (on unless TF_ENABLE_ONEDNN_OPTS=0) and the CPU's instruction set change the
        # rounding, hence the weights, as the thread count does.
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"), "cpu": _cpu_name(),
    }


@functools.lru_cache(maxsize=None)
def _strategy(name: str):
    # One per process: TensorFlow configures collectives once, so a second MultiWorkerMirroredStrategy
    # (the next fold of an all-folds run) would fail.
    _, tf = import_keras()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def compile_model(model, config: TrainConfig) -> None:
    """Compile with the soft Dice loss, AdamW and per-class Dice metrics (names ``dice``, ``dice_<key>``)."""
    keras, _ = import_keras()
    from kerasmuscle.model import ClassDice, DiceLoss

    metrics = [ClassDice(num_classes=config.model.num_classes, name="dice")]
    metrics += [ClassDice(lab.id, config.model.num_classes, name=f"dice_{lab.key}") for lab in MUSCLE_LABELS]
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay),
        loss=DiceLoss.from_loss_config(config.loss),
        metrics=metrics,
    )


def _epoch_callback_class():
    keras, _ = import_keras()

    class RunState(keras.callbacks.Callback):
        """Best checkpoint, last checkpoint, history.csv and state.json after every epoch, in that order,
        so ``state.json`` names an epoch only when everything of it is on disk."""

        def __init__(self, fold_dir: Path, monitor: str, state: dict, plateau, early, history: list, chief: bool,
                     epoch_log: Log | None = None):
            super().__init__()
            self.fold_dir, self.monitor, self.state = fold_dir, monitor, state
            self.plateau, self.early, self.history, self.chief = plateau, early, history, chief
            self.epoch_log = epoch_log
            self.started = 0.0

        def on_train_begin(self, logs=None):
            # Runs after the callbacks it restores (it is last in the list), which reset themselves here.
            for cb, key in ((self.plateau, "plateau"), (self.early, "early")):
                for attr, value in self.state.get(key, {}).items():
                    setattr(cb, attr, value)

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if k != "learning_rate"},
                   "learning_rate": lr, "seconds": round(time.perf_counter() - self.started, 3)}
            value = float(logs.get(self.monitor, math.nan))
            best = self.state.get("best")
            improved = not math.isnan(value) and (best is None or value > best)
            if improved:
                self.state.update(best=value, best_epoch=epoch + 1)
            self.history.append(row)
            if self.epoch_log is not None:
                self.epoch_log(f"{self.fold_dir.name} epoch {epoch + 1}/{self.params.get('epochs', '?')}: "
                               f"loss {row.get('loss', math.nan):.4f}, {self.monitor} {value:.4f}, "
                               f"learning rate {lr:.2g}, {row['seconds']:.1f} s")
            self.state.update(
                epoch=epoch + 1, learning_rate=lr, finished=False,
                plateau={"wait": int(self.plateau.wait), "best": float(self.plateau.best),
                         "cooldown_counter": int(self.plateau.cooldown_counter)},
                early={"wait": int(self.early.wait), "best": float(self.early.best),
                       "best_epoch": int(getattr(self.early, "best_epoch", 0))},
            )
            if not self.chief:
                return
            if improved:
                with atomic_path(self.fold_dir / f"best_{epoch + 1}.keras") as tmp:
                    self.model.save(tmp)
            with atomic_path(self.fold_dir / f"last_{epoch + 1}.keras") as tmp:
                self.model.save(tmp)
            write_history(self.fold_dir / "history.csv", self.history)
            write_json(self.fold_dir / "state.json", self.state)  # the epoch is finished from here on
            commit_checkpoints(self.fold_dir, self.state)

    return RunState


def commit_checkpoints(fold_dir: Path, state: dict) -> None:
    """Make ``last.keras`` and ``model.keras`` those of the epochs ``state`` (``state.json``) names.

    An epoch's checkpoints are saved as ``last_E.keras`` (and ``best_E.keras`` when it improved) before
    ``state.json`` names epoch E; here they are renamed into place, and those of an epoch that ``state.json``
    never named (a kill came first) are removed. Run after every epoch and before a fold resumes, so a kill at
    any point leaves checkpoints that match ``state.json``. A finished fold keeps only its best model.
    """
    epoch, best = state.get("epoch"), state.get("best_epoch")
    for kind, final, keep in (("last", "last.keras", epoch), ("best", "model.keras", best)):
        for path in fold_dir.glob(f"{kind}_*.keras"):
            number = path.stem.split("_", 1)[1]
            if number.isdigit() and int(number) == keep:
                os.replace(path, fold_dir / final)
            elif number.isdigit():
                path.unlink(missing_ok=True)
    if state.get("finished"):
        # The last checkpoint only serves resuming; a finished fold keeps its best model.
        (fold_dir / "last.keras").unlink(missing_ok=True)


def write_history(path: Path, rows: list[dict]) -> None:
    """Write the per-epoch training log (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)


def read_history(path: Path, upto_epoch: int) -> list[dict]:
    """Rows of ``history.csv`` for epochs up to ``upto_epoch`` (later rows belong to a lost epoch)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [{k: float(v) if k != "epoch" else int(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    return [r for r in rows if r["epoch"] <= upto_epoch]


def train_fold(run: Path, fold: int, config: TrainConfig, splits: dict[str, Any], slices, *,
               verbose: int = 1, log: Log = print, threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) one fold of a run.

    Args:
        run: the run folder.
        fold: the fold index in ``splits``.
        config: the run's config.
        splits: the run's splits.
        slices: a :class:`~kerasmuscle.data.pipeline.SliceSet` holding at least the fold's train and tune cases.
        verbose: Keras progress: 0 a short line per epoch through ``log``, 1 Keras' progress bar, 2 Keras'
            line per epoch.
        log: where to print progress lines.
        threads: the intra-op thread count training runs with, recorded in ``state.json`` (see
            :func:`configure_determinism`).

    Returns:
        The fold's final ``state.json`` content (best score and epoch, epochs run, seconds).
    """
    keras, tf = import_keras()

    fold_dir = run / f"fold_{fold}"
    writable_folder(fold_dir)
    remove_stale_temporaries(fold_dir)
    state = read_json(fold_dir / "state.json") or {}
    commit_checkpoints(fold_dir, state)  # after a kill between an epoch's state.json and its renames
    if state.get("finished") and state.get("epochs") == config.epochs:
        log(f"fold {fold}: finished earlier (best {state.get('best', math.nan):.4f} at epoch {state.get('best_epoch')})")
        return state
    part = splits["folds"][fold]
    train, tune = slices.subset(part["train"]), slices.subset(part["tune"])
    if not len(train):
        raise KerasMuscleError(f"{run}: fold {fold} has no labelled training slices")
    monitor = "val_dice" if len(tune) else "dice"
    start = int(state.get("epoch", 0)) if (fold_dir / "last.keras").is_file() else 0
    if start >= config.epochs:
        # Killed after the last epoch, before the fold was marked finished: finish it as _fit_fold would.
        seconds = sum(r.get("seconds", 0.0) for r in read_history(fold_dir / "history.csv", start))
        state.update(finished=True, epochs=config.epochs, seconds=round(state.get("seconds", seconds), 1),
                     train_slices=len(train), tune_slices=len(tune), monitor=monitor, intra_op_threads=threads)
        write_json(fold_dir / "state.json", state)
        commit_checkpoints(fold_dir, state)
        return state

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision, log))
    try:
        return _fit_fold(run, fold, config, splits, train, tune, monitor, start, state, verbose, log, threads)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_initial_weights(model, source: str | os.PathLike) -> Path:
    """Set ``model``'s weights from a bundle folder (its ``model.keras``, after checking the bundle's
    checksums) or a ``.keras`` file, for fine-tuning.

    Returns:
        The ``.keras`` file the weights came from.

    Raises:
        ConfigError: no model there, an altered bundle, or a network of another shape (naming the first
            layer that differs).
    """
    keras, _ = import_keras()
    from kerasmuscle.bundle import SUMS, BundleError, verify
    from kerasmuscle.model import CUSTOM_OBJECTS

    path = Path(source)
    if path.is_dir():
        if (path / SUMS).is_file():
            try:
                verify(path, only=["model.keras"])
            except BundleError as exc:
                raise ConfigError(f"init_weights: {exc}") from None
        path = path / "model.keras"
    if not path.is_file():
        raise ConfigError(f"{path}: no Keras model to start from (init_weights names a bundle folder with "
                          "model.keras, or a .keras file)")
    try:
        other = keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False)
    except Exception as exc:  # noqa: BLE001  (Keras raises many kinds for an unreadable file)
        first = str(exc).split(". ")[0]  # Keras' messages run on for lines; the first sentence says why
        raise ConfigError(f"{path}: cannot be read as a Keras model ({type(exc).__name__}: {first})") from None
    ours, theirs = model.weights, other.weights
    for a, b in zip(ours, theirs):
        if tuple(a.shape) != tuple(b.shape):
            raise ConfigError(f"{path}: its network differs from this run's ({b.path} is {tuple(b.shape)}, here "
                              f"{tuple(a.shape)}); train with its --preset and --channels")
    if len(ours) != len(theirs):
        raise ConfigError(f"{path}: its network differs from this run's ({len(theirs)} weight arrays, here "
                          f"{len(ours)}); train with its --preset and --channels")
    model.set_weights(other.get_weights())
    return path


def _fit_fold(run: Path, fold: int, config: TrainConfig, splits: dict[str, Any], train, tune, monitor: str,
              start: int, state: dict, verbose: int, log: Log, threads: int | None) -> dict[str, Any]:
    keras, _ = import_keras()
    from kerasmuscle.data.pipeline import make_dataset, steps_per_epoch
    from kerasmuscle.model import CUSTOM_OBJECTS, build_unet

    fold_dir = run / f"fold_{fold}"
    part = splits["folds"][fold]
    seed = config.seed * 1000 + fold
    keras.utils.set_random_seed(seed)
    strategy = _strategy(config.strategy)
    with strategy.scope():
        if start:
            model = keras.models.load_model(fold_dir / "last.keras", custom_objects=CUSTOM_OBJECTS)
            log(f"fold {fold}: resuming after epoch {start} of {config.epochs}")
        else:
            model = build_unet(config.model)
            if config.init_weights:
                load_initial_weights(model, config.init_weights)
                log(f"fold {fold}: starting from the weights of {config.init_weights}")
            compile_model(model, config)
            state = {}
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=config.plateau_factor,
                                                patience=config.plateau_patience, min_lr=config.min_learning_rate,
                                                verbose=0)
    early = keras.callbacks.EarlyStopping(monitor=monitor, mode="max",
                                          patience=config.early_stopping_patience or config.epochs + 1)
    history = read_history(fold_dir / "history.csv", start)
    run_state = _epoch_callback_class()(fold_dir, monitor, state, plateau, early, history, _is_chief(strategy),
                                        epoch_log=log if verbose == 0 else None)
    train_ds = make_dataset(train, config.batch_size, seed=seed, augment=config.augment,
                            hu_window=config.preprocess.hu_window, epochs=(start, config.epochs))
    tune_ds = (make_dataset(tune, config.batch_size, shuffle=False, epochs=(0, 1)) if len(tune) else None)
    log(f"fold {fold}: {len(train)} training slices ({len(part['train'])} cases), {len(tune)} tuning slices "
        f"({len(part['tune'])} cases), {len(part['val'])} held-out cases; monitoring {monitor}")
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The dataset is shuffled by design and holds exactly the remaining epochs; Keras warns about both.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*ran out of data.*", category=UserWarning)
        model.fit(train_ds, epochs=config.epochs, initial_epoch=start,
                  steps_per_epoch=steps_per_epoch(len(train), config.batch_size),
                  validation_data=tune_ds, callbacks=[plateau, early, run_state], verbose=verbose)
    state = run_state.state
    state.update(finished=True, epochs=config.epochs,
                 seconds=round(state.get("seconds", 0.0) + time.perf_counter() - started, 1),
                 train_slices=len(train), tune_slices=len(tune), monitor=monitor, intra_op_threads=threads)
    if _is_chief(strategy):
        write_json(fold_dir / "state.json", state)
        commit_checkpoints(fold_dir, state)
    log(f"fold {fold}: best {monitor} {state.get('best', math.nan):.4f} at epoch {state.get('best_epoch')}")
    return state


def train_run(dataset: str | os.PathLike | None, run: str | os.PathLike, config: TrainConfig | None = None, *,
              fold: int | None = None, verbose: int = 1, log: Log = print) -> dict[str, Any]:
    """Cross-validate the U-Net on a dataset, writing (or resuming) a run folder.

    Args:
        dataset: the dataset folder (see :func:`~kerasmuscle.data.discover_cases`); None reuses the one
            recorded in the run's manifest.
        run: the run folder; created, or resumed when it exists.
        config: the settings; None uses the stored config of an existing run, else the defaults.
        fold: train only this fold (so a scheduler can run folds as parallel processes); None trains all.
        verbose: Keras progress: 0 a short line per epoch through ``log``, 1 a progress bar, 2 a line per epoch.
        log: where progress lines go.

    Returns:
        The run's manifest.
    """
    keras, tf = import_keras()
    from kerasmuscle.data.pipeline import load_slices

    run = Path(run)
    check_creatable(run)  # before reading anything: a file in the way, a read-only folder
    for folder in (run, run / "cache"):
        remove_stale_temporaries(folder)  # what killed runs left (each fold folder is swept by train_fold)
    manifest = read_json(run / "manifest.json") or {}
    if dataset is None:
        if "dataset" not in manifest:
            raise KerasMuscleError(f"{run}: no dataset given and none recorded in the run")
        dataset = manifest["dataset"]
    cases = discover_cases(dataset)
    config = run_config(run, config)
    splits, new_splits = run_splits(run, cases, config)
    n_folds = len(splits["folds"])
    if fold is not None and not 0 <= fold < n_folds:
        raise KerasMuscleError(f"{run}: fold {fold} does not exist; splits.json has folds 0..{n_folds - 1}")
    folds = [fold] if fold is not None else list(range(n_folds))
    determinism = configure_determinism(config, log)
    needed = sorted({c for k in folds for part in ("train", "tune") for c in splits["folds"][k][part]})
    by_id = {c.id: c for c in cases}
    log(f"{run}: {len(cases)} cases, {n_folds} folds; reading {len(needed)} cases")
    slices = load_slices([by_id[c] for c in needed], config.preprocess, cache_dir=run / "cache")
    # Written only once the settings and the data have proven sound, so a failed start leaves no
    # half-made run behind (the slice cache alone may stay; it is keyed by the source files).
    config.save(run / "config.json")
    if new_splits:
        save_splits(splits, run / "splits.json")
    manifest.update(dataset=str(Path(dataset).resolve()), cases=len(cases), folds=n_folds, seed=config.seed,
                    versions=versions("tensorflow", "keras", "numpy"),
                    devices=[d.name for d in tf.config.list_logical_devices()], determinism=determinism,
                    precision=precision_policy(config.mixed_precision, lambda line: None),
                    created=manifest.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(run / "manifest.json", manifest)
    for k in folds:
        state = train_fold(run, k, config, splits, slices, verbose=verbose, log=log,
                           threads=determinism["intra_op_threads"])
        fold_slices = slices.subset(splits["folds"][k]["train"] + splits["folds"][k]["tune"])
        record = {key: state.get(key) for key in ("best", "best_epoch", "epoch", "seconds", "monitor",
                                                  "train_slices", "tune_slices", "intra_op_threads")}
        record["data_sha256"] = fold_slices.sha256()
        # Several fold processes may share the run: re-read, merge, write through a temporary file.
        manifest = read_json(run / "manifest.json") or manifest
        manifest.setdefault("fold_results", {})[str(k)] = record
        write_json(run / "manifest.json", manifest)
    return manifest


__all__ = ["RESUMABLE_CHANGES", "commit_checkpoints", "compile_model", "configure_determinism", "resolve_config",
           "run_config", "run_splits", "train_fold", "train_run"]
