"""The audio job: raw-waveform pretraining (CPC, wav2vec 2.0) on any audio dataset, probed on labelled clips.

Arguments: :class:`~hf_ssl.jobs.arguments.ModelArguments` (which method, which encoder) and :class:`AudioDataArguments`
(which clips,
crops, probes); the method's config and ``SSLTrainingArguments`` come on top. The view of a clip is a random crop
(:class:`hf_ssl.views.audio.AudioCropTransform`), batches are padded with attention masks by a
``Wav2Vec2FeatureExtractor`` (:class:`hf_ssl.data.collators.AudioCollator`), and after training the final comparison
probes digit and speaker (every label column) with linear probes on frozen mean-pooled features of the pretrained
encoder, the same architecture at random init, and MFCCs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from huggingface_hub import EvalResult

from ..data.audio import label_columns, load_audio_dataset, load_audio_stream, load_waveform
from ..data.collators import AudioCollator
from ..data.streaming import STREAMED_EVAL_EXAMPLES, materialize
from ..evaluation.audio_probe import AudioLinearProbeEvaluator
from ..evaluation.comparison import format_comparison
from ..methods import METHOD_REGISTRY, AutoSSLModel
from ..modules.audio_encoder import audio_encoder_config
from ..publishing.datasets import model_index_dataset
from ..views import apply_views
from ..views.audio import AudioCropTransform
from .arguments import ModelArguments
from .base import FinalEvaluation, JobParts, PretrainingJob, dataclass_values


@dataclass
class AudioDataArguments:
    """Which clips to pretrain on, how to crop them, and how to probe the encoder."""

    dataset: str = field(
        default="silky1708/Free-Spoken-Digit-Dataset",
        metadata={"help": "A Hub dataset id with an Audio column (a local copy through HF_SSL_DATA_DIR; the Free Spoken "
                  "Digit Dataset by default) or an audio folder ([split/]label/clip.wav)."},
    )
    train_split: str = field(default="train")
    eval_split: str | None = field(default="test", metadata={"help": "Labelled split for probes; empty to disable."})
    audio_column: str | None = field(default=None)
    probe_label_columns: list[str] | None = field(
        default=None,
        metadata={"help": "Label columns to probe (default: every ClassLabel column; FSDD: digit speaker)."},
    )
    max_train_examples: int | None = field(default=None)
    max_eval_examples: int | None = field(default=None)
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training split as a stream, never whole (needs --max_steps; see hf_ssl.data."
                  "streaming); the probes take the first max_train_examples / max_eval_examples (default 10,000) of "
                  "the train and eval splits into memory."},
    )
    crop_seconds: float | None = field(
        default=1.0, metadata={"help": "Random crop length of the pretraining view; shorter clips stay whole."}
    )
    min_audio_seconds: float | None = field(
        default=None, metadata={"help": "Drop training clips shorter than this (before cropping)."}
    )
    resample: bool = field(
        default=True, metadata={"help": "Resample clips to the model's sampling_rate (scipy.signal.resample_poly)."}
    )
    mfcc_max_frequency: float | None = field(
        default=None, metadata={"help": "Top of the MFCC baseline's mel filters in Hz (default: Nyquist)."}
    )
    probe_batch_size: int = field(default=64)
    final_comparison: bool = field(
        default=True, metadata={"help": "After training, probe the encoder vs random init vs MFCC."}
    )


def build_audio_model(encoder_args: ModelArguments, method_config):
    """A new pretraining model for the chosen encoder and method, or the one stored at ``init_from``."""

    if encoder_args.init_from:
        return AutoSSLModel.from_pretrained(encoder_args.init_from)
    config = audio_encoder_config(encoder_args.encoder, encoder_args.config_overrides())
    return METHOD_REGISTRY[encoder_args.method].from_encoder_config(config, **dataclass_values(method_config))


def build_feature_extractor(sampling_rate: int):
    """Our checkpoints' ``Wav2Vec2FeatureExtractor``: per-utterance normalisation, zero padding, attention masks."""
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sampling_rate, padding_value=0.0, do_normalize=True, return_attention_mask=True
    )


class AudioPretrainingJob(PretrainingJob):
    """Random crops of raw audio, padded batches with attention masks, linear probes per label column."""

    name = "audio"
    default_encoder = "cpc-tiny"
    argument_classes = (ModelArguments, AudioDataArguments)

    def prepare(self) -> JobParts:
        encoder_args, data_args = self.arguments
        seed = self.training_args.seed
        model = build_audio_model(encoder_args, self.method_config)
        self.model_sampling_rate = model.method_config.sampling_rate
        self.feature_extractor = build_feature_extractor(self.model_sampling_rate)

        def load(split, max_examples):
            if data_args.streaming:  # the first examples of the split's stream, in memory (what the probes read)
                return materialize(load_audio_stream(data_args.dataset, split, audio_column=data_args.audio_column),
                                   max_examples or STREAMED_EVAL_EXAMPLES)
            return load_audio_dataset(
                data_args.dataset, split, audio_column=data_args.audio_column, max_examples=max_examples, seed=seed
            )

        self.train_raw = load(data_args.train_split, data_args.max_train_examples)
        self.eval_raw = load(data_args.eval_split, data_args.max_eval_examples) if data_args.eval_split else None
        train = self.train_raw
        if data_args.streaming:
            train = load_audio_stream(data_args.dataset, data_args.train_split, audio_column=data_args.audio_column)
        if data_args.min_audio_seconds:
            shortest = data_args.min_audio_seconds * self.model_sampling_rate
            train = train.filter(
                lambda example: (
                    len(load_waveform(example["audio"], self.model_sampling_rate, data_args.resample)) >= shortest
                )
            )
        transform = AudioCropTransform(
            self.model_sampling_rate, data_args.crop_seconds, resample=data_args.resample, seed=seed
        )
        collator = AudioCollator(self.feature_extractor, getattr(model, "sample_pretraining_inputs", None))

        self.evaluator = None
        columns = data_args.probe_label_columns or (label_columns(self.train_raw) if self.eval_raw is not None else [])
        if self.eval_raw is not None and columns:
            self.evaluator = AudioLinearProbeEvaluator(
                self.train_raw,
                self.eval_raw,
                columns,
                self.feature_extractor,
                resample=data_args.resample,
                batch_size=data_args.probe_batch_size,
            )
        evaluators = [self.evaluator] if self.evaluator is not None else []
        # Trainer saves its processing_class with the model: in every checkpoint and at the root.
        return JobParts(
            model=model, train_dataset=apply_views(train, transform), data_collator=collator, evaluators=evaluators,
            trainer_kwargs={"processing_class": self.feature_extractor},
        )

    def save_extras(self, output_dir: str, model) -> None:
        # Lets AutoFeatureExtractor / pipeline("audio-classification") prepare inputs exactly as in pretraining.
        self.feature_extractor.save_pretrained(output_dir)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        _, data_args = self.arguments
        if self.evaluator is None or not data_args.final_comparison:
            return None
        evaluator = self.evaluator
        has_context = hasattr(model, "context_features")
        probes: dict[str, dict[str, float]] = {"pretrained": evaluator(model)}
        if has_context:
            probes["pretrained_context"] = evaluator(model, "context")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.training_args.seed)
            random_model = type(model)(model.config).to(next(model.parameters()).device)
        probes["random_init"] = evaluator(random_model)
        if has_context:
            probes["random_init_context"] = evaluator(random_model, "context")
        probes["mfcc"] = evaluator.mfcc(max_frequency=data_args.mfcc_max_frequency)
        table = (
            f"Linear probes (frozen mean-pooled features, L-BFGS) on {data_args.dataset} / {data_args.eval_split}, "
            f"trained on {data_args.train_split}:\n" + format_comparison(probes)
        )
        return FinalEvaluation(probes=probes, eval_results=self._eval_results(probes["pretrained"]), table=table)

    def _eval_results(self, pretrained: dict[str, float]) -> list[EvalResult]:
        _, data_args = self.arguments
        results = []
        for name, value in pretrained.items():
            column = name.removeprefix("linear_probe_")
            results.append(
                EvalResult(
                    task_type="audio-classification",
                    **model_index_dataset([data_args.dataset]),
                    dataset_split=data_args.eval_split,
                    metric_type="accuracy",
                    metric_value=float(value),
                    metric_name=(
                        f"{column} linear probe top-1 (frozen last_hidden_state mean-pooled over frames, "
                        f"{self.model_sampling_rate} Hz, L-BFGS)"
                    ),
                )
            )
        return results
