"""Top-1 accuracy of a fine-tuned classifier (any transformers ``*ForImageClassification`` /
``*ForSequenceClassification`` / ``*ForAudioClassification``) on a labelled dataset, outside a Trainer: what the
semi-supervised jobs report as their final result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .features import frozen, module_device
from .metrics import accuracy


def classifier_accuracy(
    model: nn.Module, rows: Sequence[dict[str, Any]], collate: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int = 64,
) -> float:
    """Top-1 accuracy of ``model`` on ``rows`` (a ``datasets.Dataset`` or a list of dict rows): ``collate(rows)``
    gives the classifier's inputs and ``labels`` (e.g. :class:`hf_ssl.data.streams.PlainViewCollator`); the model
    runs in eval mode without gradients, its train/eval flags restored afterwards."""
    if len(rows) == 0:
        raise ValueError("the evaluation dataset is empty")
    device = module_device(model)
    predictions, labels = [], []
    with frozen(model):
        for start in range(0, len(rows), batch_size):
            batch = collate([rows[index] for index in range(start, min(start + batch_size, len(rows)))])
            labels.append(batch.pop("labels"))
            logits = model(**{key: value.to(device) for key, value in batch.items()}).logits
            predictions.append(logits.argmax(dim=-1).cpu())
    return accuracy(torch.cat(predictions), torch.cat(labels))
