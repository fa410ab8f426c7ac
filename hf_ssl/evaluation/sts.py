"""Semantic textual similarity: Spearman's rho between the cosine similarity of two sentences' embeddings and gold
scores (Reimers & Gurevych 2019, Table 1; sentence-transformers' ``EmbeddingSimilarityEvaluator``)."""

from __future__ import annotations

import torch
from torch import nn

from .embeddings import embed_texts


def sts_spearman(model: nn.Module, tokenizer, pairs, max_length: int = 128) -> float:
    """Spearman's rho between the cosine similarity of the two sentences' embeddings and the gold scores.

    pairs: a dataset with ``anchor``, ``positive`` and ``label`` (e.g. :func:`hf_ssl.data.pairs.load_sts_benchmark`).
    The protocol of Reimers & Gurevych 2019 (Table 1) and of sentence-transformers' EmbeddingSimilarityEvaluator.
    """
    from scipy.stats import spearmanr

    first = embed_texts(model, tokenizer, pairs["anchor"], max_length=max_length)
    second = embed_texts(model, tokenizer, pairs["positive"], max_length=max_length)
    cosine = torch.nn.functional.cosine_similarity(first, second).numpy()
    return float(spearmanr(cosine, pairs["label"]).statistic)


class STSEvaluator:
    """``model -> {"<name>_spearman": rho}`` on a pairs dataset (an :class:`hf_ssl.training.trainer.SSLTrainer` evaluator)."""

    def __init__(self, pairs, tokenizer, name: str = "sts", max_length: int = 128):
        self.pairs, self.tokenizer, self.name, self.max_length = pairs, tokenizer, name, max_length

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return {f"{self.name}_spearman": sts_spearman(model, self.tokenizer, self.pairs, self.max_length)}
