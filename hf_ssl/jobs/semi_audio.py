"""Semi-supervised audio classification (job ``semi_audio``): a transformers audio classifier
(``AutoModelForAudioClassification``, a ``Wav2Vec2ForSequenceClassification`` for hf_ssl's encoders) fine-tuned on a
few labelled clips and many unlabelled ones, with :class:`hf_ssl.views.AudioWeakStrongViews` (gain, noise, shift;
time and frequency masks).

The classifier starts from an hf_ssl CPC or wav2vec 2.0 output, any audio checkpoint, or a preset at random init
(``cpc-tiny``, ``wav2vec2-tiny``, ...); the output folder holds the feature extractor (the start's, or hf_ssl's
``Wav2Vec2FeatureExtractor`` at ``--sampling_rate``), so ``pipeline("audio-classification")`` serves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
)

from ..data.audio import load_audio_dataset, load_audio_stream
from ..modules.audio_encoder import AUDIO_ENCODER_PRESETS, audio_encoder_config
from ..views.weak_strong import AudioWeakStrongConfig, AudioWeakStrongViews
from .audio import build_feature_extractor
from .base import JobParts
from .semi import ClassifierArguments, SemiDataArguments, SemiSupervisedJob


@dataclass
class AudioClassifierArguments(ClassifierArguments):
    """The classifier's start and method, the sampling rate and the training crop."""

    sampling_rate: int = field(default=16000, metadata={"help": "Rate the clips are resampled to (the encoder's)."})
    crop_seconds: float | None = field(default=1.0, metadata={"help": "Random crop of training clips (None: whole)."})


class SemiAudioJob(SemiSupervisedJob):
    """Semi-supervised fine-tuning of an audio classifier; see the module docstring."""

    name = "semi_audio"
    task = "audio-classification"
    default_encoder = "cpc-tiny"
    published_as = ("AutoModelForAudioClassification", "classifier")
    argument_classes = (AudioClassifierArguments, SemiDataArguments, AudioWeakStrongConfig)

    def load_split(self, split: str):
        _, data_args, _ = self.arguments
        return load_audio_dataset(data_args.dataset, split)

    def load_stream(self, split: str):
        _, data_args, _ = self.arguments
        return load_audio_stream(data_args.dataset, split)

    def build_classifier(self, class_names: list[str]):
        model_args, _, _ = self.arguments
        labels = {"num_labels": len(class_names), "id2label": dict(enumerate(class_names)),
                  "label2id": {name: index for index, name in enumerate(class_names)}}
        if model_args.encoder in AUDIO_ENCODER_PRESETS:
            config = audio_encoder_config(model_args.encoder, model_args.config_overrides())
            config.update(labels)
            self.feature_extractor = build_feature_extractor(model_args.sampling_rate)
            return AutoModelForAudioClassification.from_config(config)
        config = AutoConfig.from_pretrained(model_args.encoder)
        config.update({**labels, **model_args.config_overrides()})
        if hasattr(config, "ssl_config"):  # an hf_ssl pretraining output: the classifier needs its encoder only
            del config.ssl_config
        has_extractor = (Path(model_args.encoder) / "preprocessor_config.json").is_file()
        self.feature_extractor = (AutoFeatureExtractor.from_pretrained(model_args.encoder) if has_extractor
                                  else build_feature_extractor(model_args.sampling_rate))
        return AutoModelForAudioClassification.from_pretrained(model_args.encoder, config=config,
                                                               ignore_mismatched_sizes=True)

    def views(self, unlabelled):
        model_args, _, config = self.arguments
        return AudioWeakStrongViews(self.feature_extractor, self.feature_extractor.sampling_rate,
                                    model_args.crop_seconds, config=config)

    def prepare(self) -> JobParts:
        parts = super().prepare()
        parts.trainer_kwargs["processing_class"] = self.feature_extractor  # Trainer saves it with every checkpoint
        return parts

    def save_extras(self, output_dir: str, model) -> None:
        # AutoFeatureExtractor / pipeline("audio-classification") prepare clips exactly as training did.
        self.feature_extractor.save_pretrained(output_dir)
