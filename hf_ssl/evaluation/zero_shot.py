"""Zero-shot image classification with an image-text model: each class is the normalised mean embedding of its prompts
(Radford et al. 2021 §3.1.4, prompt ensembling), and an image takes the class most similar to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.functional import normalize

from .embeddings import embed_images, embed_texts


def class_text_embeddings(
    model: nn.Module, tokenizer, class_names: Sequence[str], templates: Sequence[str], max_length: int = 64
) -> torch.Tensor:
    """``(num_classes, D)`` zero-shot classifier: per class, the normalised mean of its normalised prompt embeddings
    (Radford et al. 2021 §3.1.4, prompt ensembling)."""
    if not templates:
        raise ValueError("zero-shot classification needs at least one prompt template, e.g. 'a photo of a {}.'")
    texts = [template.format(name) for name in class_names for template in templates]
    embeddings = normalize(embed_texts(model, tokenizer, texts, max_length=max_length), dim=-1)
    return normalize(embeddings.view(len(class_names), len(templates), -1).mean(dim=1), dim=-1)


def zero_shot_accuracy(
    model: nn.Module, tokenizer, dataset, class_names: Sequence[str], templates: Sequence[str], transform: Callable
) -> float:
    """Top-1 accuracy of classifying ``dataset`` (``image``, ``label``) by the most similar class prompt embedding."""
    classifier = class_text_embeddings(model, tokenizer, class_names, templates)
    images = normalize(embed_images(model, dataset["image"], transform), dim=-1)
    predictions = (images @ classifier.T).argmax(dim=1)
    return float((predictions == torch.tensor(dataset["label"])).float().mean())


class ZeroShotEvaluator:
    """``model -> {"zero_shot_top1": accuracy}`` with the given (held-out) prompt templates."""

    def __init__(self, dataset, tokenizer, class_names, templates, transform):
        self.dataset, self.tokenizer, self.transform = dataset, tokenizer, transform
        self.class_names, self.templates = list(class_names), list(templates)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        accuracy = zero_shot_accuracy(
            model, self.tokenizer, self.dataset, self.class_names, self.templates, self.transform
        )
        return {"zero_shot_top1": accuracy}
