"""The TensorFlow side of a run folder: cross-validated training (``train.py``) and its evaluation
(``evaluate.py``: Table I and Figure 2). Imports TensorFlow when a function is called, not at import."""

from __future__ import annotations

from kerasmuscle.training.evaluate import evaluate_run
from kerasmuscle.training.train import train_run

__all__ = ["evaluate_run", "train_run"]
