"""Building blocks of the methods: encoders (image backbones, the raw-waveform audio encoder), projection heads and
predictors, the EMA teacher update, and the heads' initialisation."""

from .backbones import build_encoder, encoder_config, image_features
from .ema import copy_weights_, ema_update_, freeze, make_teacher
from .heads import DINOHead, ProjectionHead
from .predictors import DirectPredictor

__all__ = [
    "DINOHead",
    "DirectPredictor",
    "ProjectionHead",
    "build_encoder",
    "copy_weights_",
    "ema_update_",
    "encoder_config",
    "freeze",
    "image_features",
    "make_teacher",
]
