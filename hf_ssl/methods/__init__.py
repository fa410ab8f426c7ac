"""Pretraining methods, one file each. Importing this package registers every method with ``AutoSSLModel``."""

from .base import (
    METHOD_REGISTRY,
    AutoSSLModel,
    SSLMethodConfig,
    SSLPreTrainedModel,
    TrainingProgress,
)
from .byol import BYOLConfig, BYOLForPreTraining, BYOLOutput
from .dino import DINOConfig, DINOForPreTraining, DINOOutput
from .moco_v2 import MoCoV2Config, MoCoV2ForPreTraining, MoCoV2Output
from .moco_v3 import MoCoV3Config, MoCoV3ForPreTraining, MoCoV3Output
from .simclr import SimCLRConfig, SimCLRForPreTraining, SimCLROutput
from .simsiam import SimSiamConfig, SimSiamForPreTraining, SimSiamOutput

__all__ = [
    "METHOD_REGISTRY",
    "AutoSSLModel",
    "BYOLConfig",
    "BYOLForPreTraining",
    "BYOLOutput",
    "DINOConfig",
    "DINOForPreTraining",
    "DINOOutput",
    "MoCoV2Config",
    "MoCoV2ForPreTraining",
    "MoCoV2Output",
    "MoCoV3Config",
    "MoCoV3ForPreTraining",
    "MoCoV3Output",
    "SSLMethodConfig",
    "SSLPreTrainedModel",
    "SimCLRConfig",
    "SimCLRForPreTraining",
    "SimCLROutput",
    "SimSiamConfig",
    "SimSiamForPreTraining",
    "SimSiamOutput",
    "TrainingProgress",
]

from .mae import MAEConfig, MAEForPreTraining, MAEOutput

__all__ += ["MAEConfig", "MAEForPreTraining", "MAEOutput"]

from .masked_lm import MaskedLMConfig, MaskedLMForPreTraining, MaskedLMOutput
from .sentence_order import SentenceOrderConfig, SentenceOrderForPreTraining

__all__ += ["MaskedLMConfig", "MaskedLMForPreTraining", "MaskedLMOutput", "SentenceOrderConfig", "SentenceOrderForPreTraining"]

from .cpc import CPCConfig, CPCForPreTraining, CPCOutput
from .wav2vec2 import Wav2Vec2SSLConfig, Wav2Vec2SSLForPreTraining, Wav2Vec2SSLOutput

__all__ += ["CPCConfig", "CPCForPreTraining", "CPCOutput", "Wav2Vec2SSLConfig", "Wav2Vec2SSLForPreTraining", "Wav2Vec2SSLOutput"]

from .clip import CLIPStyleConfig, CLIPStyleForPreTraining, CLIPStyleOutput
from .sentence_bert import (
    SentenceBertConfig,
    SentenceBertForPreTraining,
    SentenceBertOutput,
)

__all__ += ["CLIPStyleConfig", "CLIPStyleForPreTraining", "CLIPStyleOutput", "SentenceBertConfig", "SentenceBertForPreTraining", "SentenceBertOutput"]

from .colourisation import ColourisationConfig, ColourisationForPreTraining, ColourisationOutput
from .context_encoder import ContextEncoderConfig, ContextEncoderForPreTraining, ContextEncoderOutput

__all__ += ["ColourisationConfig", "ColourisationForPreTraining", "ColourisationOutput", "ContextEncoderConfig",
            "ContextEncoderForPreTraining", "ContextEncoderOutput"]

from .jigsaw import JigsawConfig, JigsawForPreTraining, JigsawOutput
from .relative_patch import RelativePatchConfig, RelativePatchForPreTraining, RelativePatchOutput
from .rotation import RotationConfig, RotationForPreTraining, RotationOutput

__all__ += ["JigsawConfig", "JigsawForPreTraining", "JigsawOutput", "RelativePatchConfig", "RelativePatchForPreTraining",
            "RelativePatchOutput", "RotationConfig", "RotationForPreTraining", "RotationOutput"]

from .deepcluster import DeepClusterConfig, DeepClusterForPreTraining, DeepClusterOutput
from .instance_discrimination import (
    InstanceDiscriminationConfig,
    InstanceDiscriminationForPreTraining,
    InstanceDiscriminationOutput,
)

__all__ += ["DeepClusterConfig", "DeepClusterForPreTraining", "DeepClusterOutput", "InstanceDiscriminationConfig",
            "InstanceDiscriminationForPreTraining", "InstanceDiscriminationOutput"]
