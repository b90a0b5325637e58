"""The TensorFlow side: the U-Net builder, the soft Dice loss and the per-class Dice metric.

Importing this package imports Keras (the ``train`` extra); the predictor never does.
"""

from __future__ import annotations

from kerasmuscle.model.losses import DiceLoss, soft_dice_loss
from kerasmuscle.model.metrics import ClassDice
from kerasmuscle.model.unet import build_unet, count_params, float32_model, forward_flops

CUSTOM_OBJECTS = {"DiceLoss": DiceLoss, "ClassDice": ClassDice}

__all__ = ["CUSTOM_OBJECTS", "ClassDice", "DiceLoss", "build_unet", "count_params", "float32_model", "forward_flops",
           "soft_dice_loss"]
