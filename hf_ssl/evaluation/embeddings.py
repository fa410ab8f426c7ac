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

from ..data.image_decoding import to_rgb
from .features import frozen, module_device


def embed_texts(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 128, max_length: int = 128):
    """``(N, D)`` float32 CPU embeddings of ``texts`` from ``model.embed_text``, in order.

    Texts are batched by length (as sentence-transformers' ``encode``), so little compute goes to padding.
    """
    device = module_device(model)
    texts = list(texts)
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    chunks = []
    with frozen(model):
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
    device = module_device(model)
    chunks = []
    with frozen(model):
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([transform(to_rgb(image)) for image in images[start:start + batch_size]])
            chunks.append(model.embed_image(pixels.to(device)).float().cpu())
    return torch.cat(chunks)


