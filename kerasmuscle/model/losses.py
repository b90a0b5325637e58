"""The soft multi-class Dice loss, written once in keras.ops and wrapped in a serialisable class."""

from __future__ import annotations

import keras
from keras import ops

from kerasmuscle.config import LossConfig


def soft_dice_loss(y_true, y_pred, *, include_background: bool = False, smooth: float = 1.0,
                   reduction: str = "batch"):
    """Soft Dice loss over classes.

    For each class c, with one-hot truth t and softmax probabilities p summed over pixels:

        dice_c = (2 * sum(t * p) + smooth) / (sum(t) + sum(p) + smooth)
        loss   = 1 - mean_c(dice_c)

    Args:
        y_true: integer labels ``[batch, rows, cols]`` or ``[batch, rows, cols, 1]``, or one-hot
            ``[batch, rows, cols, classes]``.
        y_pred: probabilities ``[batch, rows, cols, classes]``.
        include_background: average over class 0 too.
        smooth: keeps the loss finite, and a class absent from truth and prediction near zero loss.
        reduction: ``"batch"`` sums pixels over the whole batch before the ratio (one Dice per class);
            ``"image"`` takes the ratio per image and averages over images.

    Returns:
        A scalar loss tensor; a batch of size 0 is not allowed.
    """
    y_pred = ops.cast(y_pred, "float32")
    classes = ops.shape(y_pred)[-1]
    if len(y_true.shape) == 4 and y_true.shape[-1] == y_pred.shape[-1] and y_pred.shape[-1] != 1:
        t = ops.cast(y_true, "float32")
    else:
        labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        t = ops.one_hot(labels, classes, dtype="float32")
    axes = (0, 1, 2) if reduction == "batch" else (1, 2)
    intersection = ops.sum(t * y_pred, axis=axes)
    denominator = ops.sum(t, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[..., 1:]
    return 1.0 - ops.mean(dice)


@keras.saving.register_keras_serializable(package="kerasmuscle")
class DiceLoss(keras.losses.Loss):
    """Soft multi-class Dice loss (see :func:`soft_dice_loss` for the formula and arguments).

    Registered with Keras, so a saved ``model.keras`` reloads with its loss.
    """

    def __init__(self, include_background: bool = False, smooth: float = 1.0, reduction_mode: str = "batch",
                 name: str = "dice_loss", **kwargs):
        if reduction_mode not in ("batch", "image"):
            raise ValueError(f"reduction_mode must be 'batch' or 'image', got {reduction_mode!r}")
        # Keras' own reduction would average a per-sample loss; ours is already a scalar.
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="none", **kwargs)
        self.include_background = include_background
        self.smooth = smooth
        self.reduction_mode = reduction_mode

    @classmethod
    def from_loss_config(cls, config: LossConfig) -> "DiceLoss":
        """Build the loss from a :class:`~kerasmuscle.config.LossConfig`."""
        return cls(include_background=config.include_background, smooth=config.smooth,
                   reduction_mode=config.reduction)

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred, include_background=self.include_background, smooth=self.smooth,
                              reduction=self.reduction_mode)

    def get_config(self) -> dict:
        return {"name": self.name, "include_background": self.include_background, "smooth": self.smooth,
                "reduction_mode": self.reduction_mode}
