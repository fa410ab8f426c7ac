"""hf_ssl: self-supervised pretraining as transformers models and Trainers."""

from .methods import (
    AutoSSLModel,
    BYOLConfig,
    BYOLForPreTraining,
    DINOConfig,
    DINOForPreTraining,
    MoCoV2Config,
    MoCoV2ForPreTraining,
    MoCoV3Config,
    MoCoV3ForPreTraining,
    SimCLRConfig,
    SimCLRForPreTraining,
    SimSiamConfig,
    SimSiamForPreTraining,
    SSLPreTrainedModel,
    TrainingProgress,
)

__version__ = "0.1.0"

__all__ = [
    "AutoSSLModel",
    "BYOLConfig",
    "BYOLForPreTraining",
    "DINOConfig",
    "DINOForPreTraining",
    "MoCoV2Config",
    "MoCoV2ForPreTraining",
    "MoCoV3Config",
    "MoCoV3ForPreTraining",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRForPreTraining",
    "SimSiamConfig",
    "SimSiamForPreTraining",
    "TrainingProgress",
]
