"""The U-Net builder, the soft Dice loss and the per-class Dice metric, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasmuscle.config import ConfigError, UNetConfig  # noqa: E402
from kerasmuscle.model import ClassDice, DiceLoss, build_unet, count_params, forward_flops, soft_dice_loss  # noqa: E402

TINY = UNetConfig(filters=(4, 8), bottleneck=8, decoder_filters=(8, 4), up_kernel=2)


@pytest.mark.parametrize("preset, channels, expected", [
    ("paper", 3, 12_943_494), ("paper", 1, 12_942_918),
    ("classic", 3, 7_766_150), ("classic", 1, 7_765_574), ("lite", 1, 1_943_846),
])
def test_preset_parameter_counts(preset, channels, expected):
    model = build_unet(UNetConfig.preset(preset, input_channels=channels))
    assert count_params(model) == expected


def test_presets_are_a_table_the_cli_offers():
    from click.testing import CliRunner

    from kerasmuscle.cli import cli
    from kerasmuscle.config import PRESETS

    for name, fields in PRESETS.items():
        config = UNetConfig.preset(name)
        assert all(getattr(config, k) == v for k, v in fields.items())
        assert UNetConfig.preset(name, input_channels=3) == config.replace(input_channels=3)
    assert UNetConfig.preset("paper") == UNetConfig()
    for command in ("train", "demo"):
        text = CliRunner().invoke(cli, [command, "--help"]).output
        assert "[paper|classic|lite]" in text.replace(" ", "").replace("\n", ""), text


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match="presets are paper, classic, lite"):
        UNetConfig.preset("resnet")


def test_model_shapes_names_and_float32_output_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_unet(TINY.replace(input_channels=3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = model(np.zeros((2, 32, 48, 3), np.float32))
    assert tuple(out.shape) == (2, 32, 48, 6)
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    assert keras.ops.convert_to_numpy(out).dtype == np.float32 and "float32" in str(out.dtype)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(out, axis=-1)), 1.0, atol=1e-3)
    assert model.get_layer("enc1_conv1").dtype_policy.compute_dtype == "bfloat16"


def test_forward_flops_of_the_classic_net():
    # 96.65 GFLOP was measured for this net at 512x512 before the project had code (convolutions only).
    assert forward_flops(UNetConfig.preset("classic"), 512) == pytest.approx(96.35e9, rel=0.01)
    assert forward_flops(UNetConfig.preset("paper"), 256) == pytest.approx(forward_flops(UNetConfig.preset("paper"), 512) / 4)


def _probs(*rows):
    return np.asarray(rows, np.float32)


# One image of 2x2 pixels, 3 classes. Truth: [[0, 1], [2, 1]].
TRUTH = np.array([[[0, 1], [2, 1]]])
PRED = np.array([[[[0.8, 0.2, 0.0], [0.1, 0.9, 0.0]],
                  [[0.0, 0.5, 0.5], [0.3, 0.3, 0.4]]]], np.float32)
# Per class: sum(t*p), sum(t), sum(p)
#   class 0: 0.8, 1, 1.2  class 1: 0.9 + 0.3 = 1.2, 2, 1.9  class 2: 0.5, 1, 0.9


@pytest.mark.parametrize("kwargs, expected", [
    ({"smooth": 0.0}, 1 - ((2 * 1.2 / 3.9) + (2 * 0.5 / 1.9)) / 2),
    ({"smooth": 0.0, "include_background": True}, 1 - ((1.6 / 2.2) + (2.4 / 3.9) + (1.0 / 1.9)) / 3),
    ({"smooth": 1.0}, 1 - ((3.4 / 4.9) + (2.0 / 2.9)) / 2),
])
def test_soft_dice_loss_by_hand(kwargs, expected):
    loss = soft_dice_loss(TRUTH, PRED, **kwargs)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    one_hot = np.eye(3, dtype=np.float32)[TRUTH]
    assert float(soft_dice_loss(one_hot, PRED, **kwargs)) == pytest.approx(expected, abs=1e-6)


def test_batch_pooling_differs_from_per_image_mean():
    # Image 1 holds class 1 perfectly; image 2 has none of it but predicts it on one pixel.
    truth = np.array([[[1, 1]], [[0, 0]]])
    pred = np.array([[[[0, 1], [0, 1]]], [[[1, 0], [0, 1]]]], np.float32)
    pooled = soft_dice_loss(truth, pred, smooth=0.0, reduction="batch")  # 2*2 / (2 + 3)
    per_image = soft_dice_loss(truth, pred, smooth=1.0, reduction="image")  # (5/5 + 1/2) / 2
    assert float(pooled) == pytest.approx(1 - 4 / 5)
    assert float(per_image) == pytest.approx(1 - 0.75)


def test_empty_class_is_smoothed_not_nan():
    truth = np.zeros((1, 2, 2), int)
    pred = np.tile(np.array([1.0, 0.0, 0.0], np.float32), (1, 2, 2, 1))
    assert float(soft_dice_loss(truth, pred, smooth=1.0)) == pytest.approx(0.0)


def test_dice_loss_serialises_and_reloads(tmp_path):
    loss = DiceLoss(include_background=True, smooth=0.5, reduction_mode="image")
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, DiceLoss) and again.get_config() == loss.get_config()
    model = build_unet(TINY)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2), loss=loss, metrics=[ClassDice(name="dice")])
    model.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert back.loss.get_config() == loss.get_config()
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(back.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


def test_dice_loss_rejects_a_bad_reduction():
    with pytest.raises(ValueError, match="reduction_mode"):
        DiceLoss(reduction_mode="mean")


def test_class_dice_metric_by_hand():
    # Truth [[0, 1], [2, 1]], argmax of PRED: [[0, 1], [1, 2]].
    # class 1: TP 1, FP 1, FN 1 -> 2/4; class 2: TP 0, FP 1, FN 1 -> 0.
    metric = ClassDice(num_classes=3, name="dice")
    metric.update_state(TRUTH, PRED)
    assert float(metric.result()) == pytest.approx((0.5 + 0.0) / 2)
    one = ClassDice(1, 3, name="dice_1")
    one.update_state(TRUTH, PRED)
    one.update_state(TRUTH, PRED)  # accumulates over the epoch: same ratio
    assert float(one.result()) == pytest.approx(0.5)
    one.reset_state()
    assert math.isnan(float(one.result()))


def test_class_dice_leaves_absent_classes_out_of_the_mean():
    truth = np.array([[[1, 1], [0, 0]]])
    pred = np.eye(4, dtype=np.float32)[np.array([[[1, 1], [0, 0]]])]
    metric = ClassDice(num_classes=4)
    metric.update_state(truth, pred)
    assert float(metric.result()) == pytest.approx(1.0)  # classes 2 and 3 never appear: NaN, skipped


def test_class_dice_honours_sample_weight():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (2, 8, 8))
    pred = rng.random((2, 8, 8, 3)).astype(np.float32)

    def dice(y, p, **kwargs):
        metric = ClassDice(num_classes=3)
        metric.update_state(y, p, **kwargs)
        return float(metric.result())

    # Weight 0 leaves an image out; weight 1 everywhere changes nothing; per-pixel weights count pixels.
    assert dice(truth, pred, sample_weight=np.array([1.0, 0.0])) == pytest.approx(dice(truth[:1], pred[:1]))
    assert dice(truth, pred, sample_weight=np.ones((2, 8, 8))) == pytest.approx(dice(truth, pred))
    assert dice(truth, pred) != pytest.approx(dice(truth[:1], pred[:1]))
    twice = np.concatenate([truth[:1], truth[:1], truth[1:]]), np.concatenate([pred[:1], pred[:1], pred[1:]])
    assert dice(truth, pred, sample_weight=np.array([2.0, 1.0])) == pytest.approx(dice(*twice))
