"""Top-1 accuracy through ``evaluate``, offline.

Accuracy goes through ``evaluate`` with the local metric module ``accuracy_metric/accuracy.py`` (package data) loaded
by path, so nothing is downloaded: ``evaluate.load("accuracy")`` would fetch a script from the Hub and fails offline.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


ACCURACY_METRIC_PATH = str(Path(__file__).parent / "accuracy_metric" / "accuracy.py")
"""Path of the local ``evaluate`` accuracy module: ``evaluate.load(ACCURACY_METRIC_PATH)`` works offline."""


@functools.lru_cache(maxsize=1)
def load_accuracy_metric():
    """The local top-1 accuracy metric as an ``evaluate.EvaluationModule``, loaded once per process.

    ``evaluate.load`` copies the script into its modules cache (``HF_MODULES_CACHE``) and imports it from there; no
    network is involved because the path points at a local file. ``keep_in_memory=True`` keeps the predictions out of
    Arrow files on disk (no cache files or locks to clean up). Should the modules cache not be writable, the module
    is imported straight from the package instead: it is the same ``evaluate.Metric`` subclass either way.
    """
    import evaluate

    try:
        return evaluate.load(ACCURACY_METRIC_PATH, keep_in_memory=True)
    except OSError as error:  # e.g. a read-only HF_MODULES_CACHE
        logger.warning("evaluate.load(%r) failed (%s); importing the metric directly.", ACCURACY_METRIC_PATH, error)
        import importlib.util

        spec = importlib.util.spec_from_file_location("hf_ssl_accuracy_metric", ACCURACY_METRIC_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.Accuracy(keep_in_memory=True)


def accuracy(predictions: torch.Tensor | Sequence[int], references: torch.Tensor | Sequence[int]) -> float:
    """Top-1 accuracy of ``predictions`` ``(N,)`` against ``references`` ``(N,)`` through the local evaluate metric."""
    predictions = as_numpy_labels(predictions)
    references = as_numpy_labels(references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"{predictions.shape[0]} predictions but {references.shape[0]} references; pass one prediction per label."
        )
    return float(load_accuracy_metric().compute(predictions=predictions, references=references)["accuracy"])


def as_numpy_labels(values: torch.Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def classification_metrics(prediction) -> dict[str, float]:
    """``compute_metrics`` for a ``Trainer`` of a classifier: ``{"accuracy": top-1}`` from an ``EvalPrediction``
    whose predictions are logits ``(N, num_classes)`` (or a tuple starting with them) and label ids ``(N,)``."""
    logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    return {"accuracy": accuracy(np.asarray(logits).argmax(axis=-1), prediction.label_ids)}
