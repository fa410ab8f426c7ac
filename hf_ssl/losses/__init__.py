"""Losses as ``nn.Module``s acting on embeddings / logits; cross-process communication happens inside."""

from .dino import DINOLoss
from .moco import MoCoQueueLoss, MoCoV3Loss
from .negative_cosine import NegativeCosineSimilarity
from .ntxent import NTXentLoss

__all__ = ["DINOLoss", "MoCoQueueLoss", "MoCoV3Loss", "NegativeCosineSimilarity", "NTXentLoss"]
