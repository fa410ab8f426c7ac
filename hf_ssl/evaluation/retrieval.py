"""Image-text retrieval: recall@k of image->text and text->image ranking by cosine similarity of paired embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.functional import normalize

from .embeddings import embed_images, embed_texts


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


class RetrievalEvaluator:
    """``model -> recall@k`` of image<->text retrieval over a dataset of ``image`` + ``text`` pairs."""

    def __init__(self, dataset, tokenizer, transform, ks: Sequence[int] = (1, 5)):
        self.dataset, self.tokenizer, self.transform, self.ks = dataset, tokenizer, transform, tuple(ks)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        images = embed_images(model, self.dataset["image"], self.transform)
        texts = embed_texts(model, self.tokenizer, self.dataset["text"], max_length=64)
        return retrieval_recall(images, texts, self.ks)
