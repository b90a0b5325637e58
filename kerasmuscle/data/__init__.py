"""Datasets of labelled cases (numpy side; the tf.data pipeline lives in the training extra)."""

from kerasmuscle.data.dataset import Case, load_dataset

__all__ = ["Case", "load_dataset"]
