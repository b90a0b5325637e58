"""The paper's 2-D U-Net as a Keras functional model.

Kreher et al. 2022 describe a U-Net of depth 4 with 32, 64, 128 and 256 feature maps, two repetitions of
convolution, batch normalisation and ReLU per block, max pooling, and a softmax output, with 12.9 million
learnable parameters. The usual decoder (2x2 transposed convolutions, decoder widths 256/128/64/32) gives
7.77 M, so the paper must have built it otherwise. The one natural reading that gives 12.9 M (12,943,494
with three input channels, 12,942,918 with one) upsamples with 3x3 transposed convolutions to the skip connection's width and gives each decoder
block twice the width of its skip (512/256/128/64): preset ``paper``. The usual form is preset ``classic``.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasmuscle.config import UNetConfig


def _conv_block(x, filters: int, name: str, momentum: float):
    # Two conv-BN-ReLU repetitions. Keras' default conv bias is kept (redundant before batch normalisation,
    # but it is what the parameter counts measured for the paper's reading include).
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(config: UNetConfig | None = None, image_size: int | None = None) -> keras.Model:
    """Build the U-Net described by ``config``.

    Args:
        config: the architecture; ``UNetConfig.preset("paper")`` when None.
        image_size: fix the input rows and columns; None (the default) accepts any size that is a multiple
            of ``config.size_multiple``, so one model serves training, export and prediction.

    Returns:
        A functional ``keras.Model`` from ``[batch, rows, cols, input_channels]`` to softmax probabilities
        ``[batch, rows, cols, num_classes]``. The output layer is float32 even under a mixed-precision
        policy, so the loss and the probabilities keep full precision.
    """
    config = config or UNetConfig.preset("paper")
    size = image_size
    inputs = keras.Input((size, size, config.input_channels), name="image")
    x = inputs
    skips = []
    for level, filters in enumerate(config.filters, 1):
        x = _conv_block(x, filters, f"enc{level}", config.bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _conv_block(x, config.bottleneck, "bottleneck", config.bn_momentum)
    for level, skip, dec_filters in zip(range(len(skips), 0, -1), reversed(skips), config.decoder_filters):
        x = layers.Conv2DTranspose(skip.shape[-1], config.up_kernel, strides=2, padding="same",
                                   name=f"dec{level}_up")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = _conv_block(x, dec_filters, f"dec{level}", config.bn_momentum)
    x = layers.Conv2D(config.num_classes, 1, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="unet")


def count_params(model: keras.Model) -> int:
    """Number of learnable (trainable) parameters of ``model``."""
    return int(sum(int(keras.ops.size(w)) for w in model.trainable_weights))


def forward_flops(config: UNetConfig, image_size: int) -> float:
    """Floating-point operations of one forward pass on one ``image_size`` square slice.

    Counts 2 per multiply-add of every convolution and transposed convolution (the work a matrix-multiply
    peak measures); batch normalisation, activations and pooling are memory-bound and left out.

    Args:
        config: the architecture.
        image_size: input rows and columns.

    Returns:
        FLOPs per slice.
    """
    flops = 0.0
    size = image_size
    channels = config.input_channels
    for filters in config.filters:
        flops += 2 * 9 * size * size * (channels * filters + filters * filters)
        channels = filters
        size //= 2
    flops += 2 * 9 * size * size * (channels * config.bottleneck + config.bottleneck * config.bottleneck)
    channels = config.bottleneck
    for skip, dec in zip(reversed(config.filters), config.decoder_filters):
        size *= 2
        # A stride-2 transposed convolution does k*k multiply-adds per input pixel and output channel.
        flops += 2 * config.up_kernel ** 2 * (size // 2) ** 2 * channels * skip
        flops += 2 * 9 * size * size * (2 * skip * dec + dec * dec)
        channels = dec
    flops += 2 * size * size * channels * config.num_classes
    return flops


def float32_model(model: keras.Model, config: UNetConfig) -> keras.Model:
    """``model`` itself, or, when it was trained with mixed precision (bfloat16 or float16 layers), the same
    network rebuilt in float32 with its weights (Keras keeps those in float32). ONNX Runtime and LiteRT have
    no bfloat16 convolutions on the CPU and the predictor feeds float32, so export and evaluation run this
    float32 network; an exported bundle's ``model.keras`` is then this network, without the optimiser state.
    """
    if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        plain = build_unet(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    plain.set_weights([w.astype("float32") for w in model.get_weights()])
    return plain
