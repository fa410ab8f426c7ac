"""Pretraining jobs, one per kind of data. Importing this package registers every job in ``JOB_REGISTRY``."""

from ..publishing.run_record import eval_results_from_json
from .arguments import KNNArguments, ModelArguments, VisionEncoderArguments
from .base import JOB_REGISTRY, FinalEvaluation, JobParts, PretrainingJob
from .image import (
    EMBEDDED_DEFAULTS,
    DataArguments,
    ImageEncoderArguments,
    ImagePretrainingJob,
    build_image_model,
)

__all__ = [
    "EMBEDDED_DEFAULTS",
    "JOB_REGISTRY",
    "KNNArguments",
    "ModelArguments",
    "VisionEncoderArguments",
    "DataArguments",
    "ImageEncoderArguments",
    "FinalEvaluation",
    "ImagePretrainingJob",
    "JobParts",
    "PretrainingJob",
    "build_image_model",
    "eval_results_from_json",
]

from ..views.single_view import SingleViewConfig, SingleViewTransform
from .masked_image import MaskedImagePretrainingJob, ReconstructionArguments

__all__ += ["MaskedImagePretrainingJob", "ReconstructionArguments", "SingleViewConfig", "SingleViewTransform"]

from .text import TextDataArguments, TextEncoderArguments, TextPretrainingJob

__all__ += ["TextDataArguments", "TextEncoderArguments", "TextPretrainingJob"]

from .audio import AudioDataArguments, AudioPretrainingJob

__all__ += ["AudioDataArguments", "AudioPretrainingJob"]

from .image_text import DualEncoderArguments, ImageTextDataArguments, ImageTextJob
from .sentence_pairs import (
    SentenceEncoderArguments,
    SentencePairDataArguments,
    SentencePairsJob,
)

__all__ += ["DualEncoderArguments", "ImageTextDataArguments", "ImageTextJob", "SentenceEncoderArguments", "SentencePairDataArguments", "SentencePairsJob"]

from .semi import ClassifierArguments, SemiDataArguments, SemiSupervisedJob
from .semi_image import ImageClassifierArguments, SemiImageJob

__all__ += ["ClassifierArguments", "ImageClassifierArguments", "SemiDataArguments", "SemiImageJob", "SemiSupervisedJob"]

from .semi_audio import AudioClassifierArguments, SemiAudioJob
from .semi_text import SemiTextJob, TextClassifierArguments

__all__ += ["AudioClassifierArguments", "SemiAudioJob", "SemiTextJob", "TextClassifierArguments"]

from .clustering import DeepClusterJob, IndexedImagePretrainingJob, IndexedViewConfig, IndexedViewTransform

__all__ += ["DeepClusterJob", "IndexedImagePretrainingJob", "IndexedViewConfig", "IndexedViewTransform"]
