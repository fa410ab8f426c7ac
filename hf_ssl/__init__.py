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

from .methods import MAEConfig, MAEForPreTraining

__all__ += ["MAEConfig", "MAEForPreTraining"]

from .methods import MaskedLMConfig, MaskedLMForPreTraining, SentenceOrderConfig, SentenceOrderForPreTraining

__all__ += ["MaskedLMConfig", "MaskedLMForPreTraining", "SentenceOrderConfig", "SentenceOrderForPreTraining"]

from .methods import CPCConfig, CPCForPreTraining, Wav2Vec2SSLConfig, Wav2Vec2SSLForPreTraining

__all__ += ["CPCConfig", "CPCForPreTraining", "Wav2Vec2SSLConfig", "Wav2Vec2SSLForPreTraining"]

from .methods import CLIPStyleConfig, CLIPStyleForPreTraining, SentenceBertConfig, SentenceBertForPreTraining

__all__ += ["CLIPStyleConfig", "CLIPStyleForPreTraining", "SentenceBertConfig", "SentenceBertForPreTraining"]
