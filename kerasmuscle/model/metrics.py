"""A per-class Dice metric for the training logs (hard labels, accumulated over an epoch)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasmuscle")
class ClassDice(keras.metrics.Metric):
    """Dice of the argmax prediction, pooled over every pixel seen in the epoch.

    For class c: ``dice_c = 2 * TP_c / (2 * TP_c + FP_c + FN_c)``; a class never present in truth or
    prediction scores NaN and is left out of the mean.

    Args:
        class_id: score one class; None scores the mean over ``class_ids``.
        num_classes: softmax outputs.
        class_ids: classes averaged when ``class_id`` is None (default: every class but background).
        name: the name in the training log, for example ``dice`` or ``dice_psoas``.
    """

    def __init__(self, class_id: int | None = None, num_classes: int = 6, class_ids: tuple[int, ...] | None = None,
                 name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_id = class_id
        self.num_classes = num_classes
        self.class_ids = tuple(class_ids) if class_ids is not None else tuple(range(1, num_classes))
        self.tp = self.add_variable((num_classes,), initializer="zeros", name="tp")
        self.fp = self.add_variable((num_classes,), initializer="zeros", name="fp")
        self.fn = self.add_variable((num_classes,), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch's pixels to the counts.

        Args:
            y_true: integer labels ``[batch, rows, columns]``.
            y_pred: probabilities ``[batch, rows, columns, classes]``.
            sample_weight: None, or weights that broadcast to ``y_true`` once trailing axes are added: one
                per image ``[batch]`` or one per pixel ``[batch, rows, columns]``. A pixel then counts as
                its weight in TP, FP and FN (weight 0 leaves it out).
        """
        c = self.num_classes
        y_true = ops.cast(y_true, "int32")
        labels = ops.reshape(y_true, (-1,))
        pred = ops.reshape(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), (-1,))
        weights = None
        if sample_weight is not None:
            weights = ops.cast(sample_weight, "float32")
            while len(weights.shape) < len(y_true.shape):
                weights = ops.expand_dims(weights, -1)
            weights = ops.reshape(ops.broadcast_to(weights, ops.shape(y_true)), (-1,))
        # One confusion matrix by bincount: far cheaper than one-hot products over every pixel.
        confusion = ops.reshape(ops.bincount(labels * c + pred, weights=weights, minlength=c * c), (c, c))
        confusion = ops.cast(confusion, "float32")
        tp = ops.diagonal(confusion)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(confusion, axis=0) - tp)
        self.fn.assign_add(ops.sum(confusion, axis=1) - tp)

    def result(self):
        denominator = 2.0 * self.tp + self.fp + self.fn
        dice = ops.where(denominator > 0, 2.0 * self.tp / ops.maximum(denominator, 1.0), float("nan"))
        if self.class_id is not None:
            return dice[self.class_id]
        chosen = ops.take(dice, list(self.class_ids))
        finite = ops.logical_not(ops.isnan(chosen))
        count = ops.sum(ops.cast(finite, "float32"))
        total = ops.sum(ops.where(finite, chosen, 0.0))
        return ops.where(count > 0, total / ops.maximum(count, 1.0), float("nan"))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(ops.zeros_like(v))

    def get_config(self) -> dict:
        return {"class_id": self.class_id, "num_classes": self.num_classes, "class_ids": list(self.class_ids),
                "name": self.name, "dtype": self.dtype}
