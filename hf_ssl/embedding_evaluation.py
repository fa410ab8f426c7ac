"""Evaluation of sentence and image-text embeddings: STS Spearman, CLIP zero-shot classification, retrieval recall@k.

Models are read through two methods, so any model that has them can be scored:
``embed_text(input_ids, attention_mask=None, token_type_ids=None) -> (B, D)`` (Sentence-BERT, CLIP-style) and
``embed_image(pixel_values) -> (B, D)`` (CLIP-style). Everything runs in eval mode without gradients, in batches,
and returns plain floats (fractions in [0, 1]; Spearman's rho in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.functional import normalize

from .evaluation import _frozen, _module_device


def embed_texts(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 128, max_length: int = 128):
    """``(N, D)`` float32 CPU embeddings of ``texts`` from ``model.embed_text``, in order.

    Texts are batched by length (as sentence-transformers' ``encode``), so little compute goes to padding.
    """
    device = _module_device(model)
    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    chunks = []
    with _frozen(model):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                [texts[index] for index in order[start:start + batch_size]], padding=True, truncation=True,
                max_length=max_length, return_tensors="pt",
            ).to(device)
            chunks.append(model.embed_text(**tokens).float().cpu())
    embeddings = torch.empty(len(texts), chunks[0].shape[1]) if chunks else torch.empty(0, 0)
    embeddings[torch.tensor(order, dtype=torch.long)] = torch.cat(chunks) if chunks else embeddings
    return embeddings


def embed_images(model: nn.Module, images: Sequence, transform: Callable, batch_size: int = 256) -> torch.Tensor:
    """``(N, D)`` float32 CPU embeddings of PIL ``images`` from ``model.embed_image``, in order."""
    device = _module_device(model)
    chunks = []
    with _frozen(model):
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([transform(image.convert("RGB")) for image in images[start:start + batch_size]])
            chunks.append(model.embed_image(pixels.to(device)).float().cpu())
    return torch.cat(chunks)


def sts_spearman(model: nn.Module, tokenizer, pairs, max_length: int = 128) -> float:
    """Spearman's rho between the cosine similarity of the two sentences' embeddings and the gold scores.

    pairs: a dataset with ``anchor``, ``positive`` and ``label`` (e.g. :func:`hf_ssl.pair_data.load_sts_benchmark`).
    The protocol of Reimers & Gurevych 2019 (Table 1) and of sentence-transformers' EmbeddingSimilarityEvaluator.
    """
    from scipy.stats import spearmanr

    first = embed_texts(model, tokenizer, pairs["anchor"], max_length=max_length)
    second = embed_texts(model, tokenizer, pairs["positive"], max_length=max_length)
    cosine = torch.nn.functional.cosine_similarity(first, second).numpy()
    return float(spearmanr(cosine, pairs["label"]).statistic)


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


def retrieval_recall(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Recall@k of image->text and text->image retrieval when row i of both is the matching pair (cosine ranking;
    a tie with the match counts against it).

    Returns ``{"image_to_text_recall@k": ..., "text_to_image_recall@k": ...}`` for every k.
    """
    if image_embeddings.shape[0] != text_embeddings.shape[0]:
        raise ValueError(
            f"retrieval needs one caption per image: got {image_embeddings.shape[0]} images and "
            f"{text_embeddings.shape[0]} captions"
        )
    similarity = normalize(image_embeddings, dim=-1) @ normalize(text_embeddings, dim=-1).T
    targets = torch.arange(similarity.shape[0])
    results = {}
    for name, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        matched = scores[targets, targets][:, None]
        rank = (scores >= matched).sum(dim=1) - 1  # candidates scoring at least as high as the match, itself excluded
        for k in ks:
            results[f"{name}_recall@{k}"] = float((rank < k).float().mean())
    return results


class STSEvaluator:
    """``model -> {"<name>_spearman": rho}`` on a pairs dataset (an :class:`hf_ssl.trainer.SSLTrainer` evaluator)."""

    def __init__(self, pairs, tokenizer, name: str = "sts", max_length: int = 128):
        self.pairs, self.tokenizer, self.name, self.max_length = pairs, tokenizer, name, max_length

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return {f"{self.name}_spearman": sts_spearman(model, self.tokenizer, self.pairs, self.max_length)}


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


class RetrievalEvaluator:
    """``model -> recall@k`` of image<->text retrieval over a dataset of ``image`` + ``text`` pairs."""

    def __init__(self, dataset, tokenizer, transform, ks: Sequence[int] = (1, 5)):
        self.dataset, self.tokenizer, self.transform, self.ks = dataset, tokenizer, transform, tuple(ks)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        images = embed_images(model, self.dataset["image"], self.transform)
        texts = embed_texts(model, self.tokenizer, self.dataset["text"], max_length=64)
        return retrieval_recall(images, texts, self.ks)
