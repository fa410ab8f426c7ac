"""Losses as ``nn.Module``s acting on embeddings / logits; cross-process communication happens inside."""

from .dino import DINOLoss
from .moco import MoCoQueueLoss, MoCoV3Loss
from .negative_cosine import NegativeCosineSimilarity
from .ntxent import NTXentLoss

__all__ = ["DINOLoss", "MoCoQueueLoss", "MoCoV3Loss", "NegativeCosineSimilarity", "NTXentLoss"]

from .masked_pixels import MaskedPixelLoss

__all__ += ["MaskedPixelLoss"]

from .cpc import CPCInfoNCELoss, sample_negative_frames

__all__ += ["CPCInfoNCELoss", "sample_negative_frames"]

from .info_nce import InfoNCELoss

__all__ += ["InfoNCELoss"]
