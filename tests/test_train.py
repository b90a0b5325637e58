"""Training runs end to end: the CLI, the run folder, resuming, evaluation (tiny models, 64x64 cohorts)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402

from kerasmuscle.cli import cli  # noqa: E402
from kerasmuscle.config import ConfigError, PreprocessConfig, TrainConfig, UNetConfig  # noqa: E402
from kerasmuscle.training import train_run  # noqa: E402

TINY = TrainConfig(
    model=UNetConfig(filters=(4, 8, 16), bottleneck=16, decoder_filters=(16, 8, 4), up_kernel=2),
    preprocess=PreprocessConfig(image_size=32), folds=2, epochs=3, batch_size=4, tune_fraction=0.25)


def test_tiny_end_to_end_run_writes_every_artifact(tmp_path, small_cohort):
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(small_cohort), "--out", str(run), "--folds", "2", "--epochs", "1",
                                 "--image-size", "32", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "next: kerasmuscle evaluate" in result.output
    for name in ("config.json", "splits.json", "manifest.json"):
        assert (run / name).is_file()
    config = TrainConfig.load(run / "config.json")
    assert config.model == UNetConfig.preset("paper") and config.preprocess.image_size == 32
    for k in (0, 1):
        assert (run / f"fold_{k}" / "model.keras").is_file()
        rows = list(csv.DictReader(open(run / f"fold_{k}" / "history.csv")))
        assert [r["epoch"] for r in rows] == ["1"] and "val_dice_psoas" in rows[0] and "learning_rate" in rows[0]
        assert not (run / f"fold_{k}" / "last.keras").exists()  # only kept while a fold is unfinished
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["fold_results"]) == {"0", "1"} and manifest["versions"]["keras"]
    assert manifest["precision"] == "float32"  # what training computed in (TINY: no mixed precision)
    assert len(manifest["fold_results"]["0"]["data_sha256"]) == 64

    result = runner.invoke(cli, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("metrics.csv", "table.md", "table.csv", "violin.png"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len({r["case_id"] for r in rows}) == 8  # every case is held out once
    assert {r["postprocess"] for r in rows} == {"none", "hu"}
    assert {r["class"] for r in rows} == {"combined", "rectus", "abdominal_wall", "psoas", "quadratus",
                                         "erector_spinae"}
    assert "Erector spinae" in (run / "table.md").read_text()
    assert len(list((run / "fold_0" / "predictions").glob("*.npz"))) == len(
        json.loads((run / "splits.json").read_text())["folds"][0]["val"])

    # Again: everything is finished, nothing is retrained.
    result = runner.invoke(cli, ["train", str(small_cohort), "--out", str(run)])
    assert result.exit_code == 0 and "finished earlier" in result.output


def test_folds_as_separate_processes_merge(tmp_path, small_cohort):
    run = tmp_path / "run"
    config = TINY.replace(epochs=1)
    for k in (1, 0):
        train_run(small_cohort, run, config, fold=k, verbose=0, log=lambda s: None)
    runner = CliRunner()
    assert runner.invoke(cli, ["evaluate", str(run), "--fold", "1"]).exit_code == 0
    one = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["fold"] for r in one} == {"1"}
    assert runner.invoke(cli, ["evaluate", str(run), "--fold", "0"]).exit_code == 0
    both = list(csv.DictReader(open(run / "metrics.csv")))
    assert {r["fold"] for r in both} == {"0", "1"} and len({r["case_id"] for r in both}) == 8


def _weights(path):
    import keras

    from kerasmuscle.model import CUSTOM_OBJECTS

    return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False).get_weights()


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, small_cohort, monitor_kill):
    whole = tmp_path / "whole"
    train_run(small_cohort, whole, TINY, fold=0, verbose=0, log=lambda s: None)

    cut = tmp_path / "cut"
    with monitor_kill(after_epoch=2):
        with pytest.raises(KeyboardInterrupt):
            train_run(small_cohort, cut, TINY, fold=0, verbose=0, log=lambda s: None)
    state = json.loads((cut / "fold_0" / "state.json").read_text())
    assert state["epoch"] == 2 and not state["finished"] and (cut / "fold_0" / "last.keras").is_file()
    lines = []
    train_run(small_cohort, cut, None, fold=0, verbose=0, log=lines.append)
    assert any("resuming after epoch 2 of 3" in s for s in lines)

    history = list(csv.DictReader(open(cut / "fold_0" / "history.csv")))
    assert [r["epoch"] for r in history] == ["1", "2", "3"]
    reference = list(csv.DictReader(open(whole / "fold_0" / "history.csv")))
    for a, b in zip(history, reference):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
    for a, b in zip(_weights(cut / "fold_0" / "model.keras"), _weights(whole / "fold_0" / "model.keras")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def monitor_kill(monkeypatch):
    """Raise KeyboardInterrupt right after an epoch's state is on disk (as a kill between epochs would)."""
    import contextlib

    from kerasmuscle.training import train as train_module

    @contextlib.contextmanager
    def kill(after_epoch: int):
        original = train_module.write_json

        def write_then_die(path, data):
            original(path, data)
            if path.name == "state.json" and data.get("epoch") == after_epoch and not data.get("finished"):
                raise KeyboardInterrupt

        monkeypatch.setattr(train_module, "write_json", write_then_die)
        yield
        monkeypatch.setattr(train_module, "write_json", original)

    return kill


def test_a_run_refuses_other_settings(tmp_path, small_cohort):
    run = tmp_path / "run"
    train_run(small_cohort, run, TINY.replace(epochs=1), fold=0, verbose=0, log=lambda s: None)
    with pytest.raises(ConfigError, match="batch_size differ"):
        train_run(small_cohort, run, TINY.replace(epochs=1, batch_size=2), fold=0, verbose=0, log=lambda s: None)
    result = CliRunner().invoke(cli, ["train", str(small_cohort), "--out", str(run), "--image-size", "48"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "preprocess differ" in result.output


@pytest.mark.parametrize("args, message", [
    (["--folds", "2", "--fold", "5"], "fold 5 does not exist"),
    (["--image-size", "40"], "multiple of"),
    (["--folds", "20"], "20 folds need at least 20 patients"),
])
def test_train_bad_arguments_are_one_line(tmp_path, small_cohort, args, message):
    result = CliRunner().invoke(cli, ["train", str(small_cohort), "--out", str(tmp_path / "r"), "--epochs", "1",
                                      "--image-size", "32", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_evaluate_needs_a_run(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path)])
    assert result.exit_code != 0 and "not a run folder" in result.output


def test_mirrored_strategy_and_mixed_precision_train_and_reload(tmp_path, small_cohort, monkeypatch):
    import keras

    from kerasmuscle.training import train as train_module

    # bfloat16 whatever this host's CPU (where it lacks bfloat16 instructions it is emulated: slower, same result)
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    run = tmp_path / "run"
    config = TINY.replace(epochs=1, strategy="mirrored", mixed_precision=True)
    train_run(small_cohort, run, config, fold=0, verbose=0, log=lambda s: None)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the fold
    from kerasmuscle.model import CUSTOM_OBJECTS

    model = keras.models.load_model(run / "fold_0" / "model.keras", custom_objects=CUSTOM_OBJECTS, compile=False)
    assert model.get_layer("enc1_conv1").dtype_policy.name == "mixed_bfloat16"
    out = model.predict_on_batch(np.zeros((1, 32, 32, 1), np.float32))
    assert out.dtype == np.float32 and np.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# settings: one merge (resolve_config), used by the CLI


def test_resolve_config_merges_file_stored_config_preset_and_options(tmp_path):
    from kerasmuscle.training.train import resolve_config

    run = tmp_path / "run"
    assert resolve_config(run) == TrainConfig()
    config = resolve_config(run, preset="classic", channels=3, image_size=64, epochs=5, seed=None, threads=2)
    assert config.model == UNetConfig.preset("classic", input_channels=3)
    assert (config.preprocess.channels, config.preprocess.image_size) == (3, 64)
    assert (config.epochs, config.seed, config.threads) == (5, 0, 2)  # None leaves a field alone

    run.mkdir()
    config.save(run / "config.json")  # an existing run: its stored config is the base
    again = resolve_config(run, epochs=9)
    assert again == config.replace(epochs=9)
    # A preset keeps the base's channels; a config file replaces the stored one as the base.
    assert resolve_config(run, preset="paper").model == UNetConfig.preset("paper", input_channels=3)
    TINY.save(tmp_path / "tiny.json")
    assert resolve_config(run, tmp_path / "tiny.json", folds=3) == TINY.replace(folds=3)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 40}, "multiple of 16"),
    ({"preset": "resnet"}, "unknown preset 'resnet'"),
    ({"channels": 2}, "input_channels must be 1 or 3"),
    ({"threads": 0}, "threads must be at least 1"),
    ({"model": UNetConfig()}, "model cannot be changed here"),
    ({"learning_rat": 0.1}, "learning_rat cannot be changed here"),
])
def test_resolve_config_errors_name_the_setting(tmp_path, kwargs, message):
    from kerasmuscle.training.train import resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(tmp_path / "run", **kwargs)


def test_train_cli_offers_the_presets_and_threads():
    from kerasmuscle.config import PRESETS

    text = CliRunner().invoke(cli, ["train", "--help"]).output
    assert "--threads" in text
    assert all(name in text for name in PRESETS)


# --------------------------------------------------------------------------------------------------
# determinism: the same seed and thread count give the same weights, whatever the machine's core count

_TRAIN_ONCE = """
import hashlib, json, os, sys
from pathlib import Path
if sys.argv[3] != "all":
    os.sched_setaffinity(0, {int(c) for c in sys.argv[3].split(",")})  # as a machine with fewer cores
from kerasmuscle.config import PreprocessConfig, TrainConfig, UNetConfig
from kerasmuscle.training import train_run
config = TrainConfig(model=UNetConfig.preset("classic"), preprocess=PreprocessConfig(image_size=32), folds=2,
                     epochs=2, batch_size=4, tune_fraction=0.25, threads=2)
run = Path(sys.argv[2])
train_run(sys.argv[1], run, config, fold=0, verbose=0, log=lambda line: None)
import keras
from kerasmuscle.model import CUSTOM_OBJECTS
model = keras.models.load_model(run / "fold_0" / "model.keras", custom_objects=CUSTOM_OBJECTS, compile=False)
print("WEIGHTS", hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
"""


def _train_in_new_processes(cohort, jobs: list[tuple[object, str]]) -> list[str]:
    """Train fold 0 once per (run folder, CPU set), each in its own process, all at once; their weight hashes."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _TRAIN_ONCE, str(cohort), str(run), cpus],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run, cpus in jobs]
    hashes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        hashes.append(next(line.split()[1] for line in out.splitlines() if line.startswith("WEIGHTS")))
    return hashes


def test_training_is_deterministic_for_a_seed_and_thread_count(tmp_path, small_cohort):
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs os.sched_setaffinity (Linux) to run as a machine with fewer cores")
    cpus = sorted(os.sched_getaffinity(0))
    # Fresh processes, the second confined to one core (TensorFlow's default would then be 1 thread, and
    # other weights): threads=2 must give the same weights, epoch scores and learning rates bit for bit.
    first, second = _train_in_new_processes(small_cohort, [(tmp_path / "a", "all"), (tmp_path / "b", str(cpus[0]))])
    assert first == second

    def history(run):
        return [{k: v for k, v in row.items() if k != "seconds"}
                for row in csv.DictReader(open(run / "fold_0" / "history.csv"))]

    assert history(tmp_path / "a") == history(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    determinism = manifest["determinism"]
    assert determinism["op_determinism"] and determinism["tf_data_deterministic"]
    assert (determinism["intra_op_threads"], determinism["threads_setting"], determinism["seed"]) == (2, 2, 0)
    assert manifest["fold_results"]["0"]["intra_op_threads"] == 2


def test_init_weights_start_every_fold_from_a_bundle(tmp_path, small_cohort, tiny_run, tiny_bundle):
    import keras

    from kerasmuscle.model import CUSTOM_OBJECTS, build_unet
    from kerasmuscle.training.train import load_initial_weights

    config = TrainConfig.load(tiny_run / "config.json")
    model = build_unet(config.model)
    assert load_initial_weights(model, tiny_bundle) == tiny_bundle / "model.keras"
    source = keras.models.load_model(tiny_bundle / "model.keras", custom_objects=CUSTOM_OBJECTS, compile=False)
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Another network is refused in one line that names the file and the first layer that differs.
    with pytest.raises(ConfigError, match="its network differs from this run's"):
        load_initial_weights(build_unet(UNetConfig.preset("classic")), tiny_bundle)
    with pytest.raises(ConfigError, match="no Keras model to start from"):
        load_initial_weights(model, tmp_path)
    # Through the CLI: the run starts from the bundle, and says so.
    config.replace(epochs=1, init_weights=None).save(tmp_path / "c.json")
    result = CliRunner().invoke(cli, ["train", str(small_cohort), "--out", str(tmp_path / "ft"), "--config",
                                      str(tmp_path / "c.json"), "--init-weights", str(tiny_bundle), "--fold", "0"])
    assert result.exit_code == 0, result.output
    assert f"starting from the weights of {tiny_bundle}" in result.output
    assert TrainConfig.load(tmp_path / "ft" / "config.json").init_weights == str(tiny_bundle)


def test_mixed_precision_falls_back_to_float32_on_a_cpu_without_bfloat16(tmp_path, monkeypatch):
    """bfloat16 is emulated on a CPU without avx512_bf16/amx_bf16 (measured: about 20x a float32 step), so
    mixed precision trains in float32 there, saying so; a GPU gets float16, a bf16 CPU bfloat16."""
    from kerasmuscle.training.train import cpu_has_bf16, precision_policy

    lines: list[str] = []
    assert precision_policy(True, lines.append, gpu=False, bf16=False) == "float32"
    assert "no bfloat16 instructions" in lines[0]
    assert precision_policy(True, lines.append, gpu=False, bf16=True) == "mixed_bfloat16"
    from kerasmuscle.training import train as train_module

    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: None)   # not Linux: cannot tell, kept as asked
    assert precision_policy(True, lines.append, gpu=False) == "mixed_bfloat16"
    assert precision_policy(True, lines.append, gpu=True, bf16=False) == "mixed_float16"
    assert precision_policy(False, lines.append, gpu=True, bf16=True) == "float32"
    assert len(lines) == 1
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx512f\n")
    assert cpu_has_bf16(info) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16(info) is True
    assert cpu_has_bf16(tmp_path / "absent") is None
