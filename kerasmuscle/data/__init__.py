"""Datasets of labelled cases and their cross-validation splits (numpy side; the tf.data pipeline in
:mod:`kerasmuscle.data.pipeline` needs the ``train`` extra)."""

from kerasmuscle.data.dataset import Case, discover_cases, load_dataset
from kerasmuscle.data.splits import load_splits, make_splits, save_splits

__all__ = ["Case", "discover_cases", "load_dataset", "load_splits", "make_splits", "save_splits"]
