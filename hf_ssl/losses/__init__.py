"""Losses as ``nn.Module``s acting on embeddings / logits; cross-process communication happens inside."""

from .dino import DINOLoss
from .negative_cosine import NegativeCosineSimilarity
from .ntxent import NTXentLoss

__all__ = ["DINOLoss", "NegativeCosineSimilarity", "NTXentLoss"]
