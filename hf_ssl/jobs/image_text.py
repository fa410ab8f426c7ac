"""The image-text job: CLIP-style training on image-caption pairs, evaluated by zero-shot classification or
retrieval.

Two kinds of data:

- image-caption pairs (an image folder with ``metadata.jsonl``: ``file_name``, ``text``; the emoji captions are split
  by code point, see :func:`hf_ssl.data.pairs.load_emoji_captions`): the final evaluation is image->text and
  text->image recall@1/5 on the held-out pairs;
- a labelled image dataset (CIFAR-10): captions are built from the class names with :data:`TRAIN_TEMPLATES`, and
  the final evaluation is zero-shot accuracy on the test split with :data:`HELD_OUT_TEMPLATES`, prompts never seen
  in training (also reported: with the training templates). Images of one class are positives of each other in the
  loss (the class label is passed as ``positive_ids``), whichever template captioned them.

Repeated captions (or classes) in a batch are positives of each other (the model's ``multi_positive``, on by default),
so batches need no de-duplication. ``--no_duplicates`` unset (the default) still builds batches without repeats when
the global batch fits the distinct captions / classes, because a batch of distinct classes holds more negatives
(CIFAR-10, one process, batch 10, 1,500 steps: 31.4 / 31.0 % zero-shot at seeds 42 / 1 with distinct classes, 28.7 /
28.8 % with random batches); a larger global batch (2 processes x 10 over 10 classes) takes random batches, whose
repeats are positives. ``true`` insists on de-duplication (as ``--multi_positive false`` needs, where a repeat is a
false negative), ``false`` never de-duplicates.

The output folder is a vanilla ``VisionTextDualEncoderModel`` with its ``VisionTextDualEncoderProcessor``
(tokenizer + the image processor of this run's evaluation transform, size and normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult

from ..data.collators import ImageCaptionCollator
from ..data.image_decoding import to_rgb
from ..data.images import load_image_dataset, load_image_stream
from ..data.pairs import (
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    as_stream,
    caption_stream_with_templates,
    caption_with_templates,
    load_emoji_captions,
    text_keys,
)
from ..data.samplers import NoDuplicatesSampler, distinct_key_count
from ..data.sources import resolve_dataset
from ..data.streaming import STREAMED_EVAL_EXAMPLES, is_streamed, materialize
from ..evaluation.features import default_eval_transform
from ..evaluation.retrieval import RetrievalEvaluator
from ..evaluation.zero_shot import ZeroShotEvaluator, zero_shot_accuracy
from ..methods import METHOD_REGISTRY, AutoSSLModel
from ..modules.backbones import encoder_config
from ..modules.text_encoder import PACKAGED_MINILM, resolve_text_checkpoint
from ..publishing.datasets import model_index_dataset
from ..training.arguments import batch_size_across_processes
from ..views import CaptionedImageView, apply_views
from ..views.processors import build_image_processor
from .arguments import VisionEncoderArguments, parse_json_object
from .base import FinalEvaluation, JobParts, PretrainingJob, dataclass_values

#: Pixel normalisation of the image processor (ViTImageProcessor's default), used in training and saved with the model.
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass
class DualEncoderArguments(VisionEncoderArguments):
    """:class:`~hf_ssl.jobs.arguments.VisionEncoderArguments` of the vision tower (``encoder``, default ``vit-tiny``;
    ``encoder_config_overrides``), plus the text tower and the shared embedding width."""

    text_encoder: str = field(
        default=PACKAGED_MINILM[0], metadata={"help": "'minilm' (packaged all-MiniLM-L6-v2) or a folder / Hub id."}
    )
    text_from_scratch: bool = field(default=False, metadata={"help": "Random-init text encoder (its config only)."})
    text_config_overrides: str | None = field(
        default=None, metadata={"help": "JSON dict of text config fields (text_from_scratch only)."}
    )
    projection_dim: int = field(default=256, metadata={"help": "Width of the shared image-text embedding."})


@dataclass
class ImageTextDataArguments:
    """Which image-text pairs, and how to evaluate."""

    dataset: str = field(
        default="emoji_captions",
        metadata={"help": "An image folder with metadata.jsonl captions (found under HF_SSL_DATA_DIR by its name, or a "
                  "path), or a labelled image dataset, Hub id or folder (captions from class names and templates)."},
    )
    train_split: str = field(default="train")
    eval_split: str = field(default="test", metadata={"help": "Held-out split (emoji: code points held out)."})
    held_out_fraction: float = field(default=0.2, metadata={"help": "Emoji / caption folders: share held out."})
    image_size: int = field(default=32)
    train_crop_scale: float = field(
        default=1.0, metadata={"help": "Random-resized-crop lower scale in training (1.0: no crop augmentation)."}
    )
    max_caption_length: int = field(default=32)
    max_train_examples: int | None = field(default=None)
    max_eval_examples: int | None = field(default=None)
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training pairs as a stream (needs --max_steps; see hf_ssl.data.streaming): a "
                  "labelled image dataset streamed and captioned from its class names as it is read (a captions "
                  "folder is small: its pairs are streamed from memory); the held-out pairs are the first "
                  "max_eval_examples (default 10,000) of eval_split; no_duplicates does not apply."},
    )
    no_duplicates: bool | None = field(
        default=None,
        metadata={"help": "Batches without repeated captions; with template captions, without repeated classes. "
                  "Unset: on when the global batch fits the distinct captions / classes (or with multi_positive "
                  "false), else off (repeats are then positives of each other). true: always (the global batch must "
                  "fit); false: never."},
    )


class ImageTextJob(PretrainingJob):
    """CLIP-style image-text training; zero-shot (labelled images) or retrieval (caption folders) evaluation."""

    name = "image_text"
    default_encoder = "vit-tiny"
    argument_classes = (DualEncoderArguments, ImageTextDataArguments)

    def prepare(self) -> JobParts:
        from transformers import AutoTokenizer

        encoder_args, data_args = self.arguments
        seed = self.training_args.seed
        self.train_pairs, self.eval_pairs = self.load_data()
        model = self.build_model()
        source = encoder_args.init_from or resolve_text_checkpoint(encoder_args.text_encoder)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.eval_transform = _image_transform(data_args.image_size, 1.0)
        if self.templated:
            evaluator = ZeroShotEvaluator(self.eval_pairs, self.tokenizer, self.class_names, HELD_OUT_TEMPLATES,
                                          self.eval_transform)
        else:
            evaluator = RetrievalEvaluator(self.eval_pairs, self.tokenizer, self.eval_transform)
        sampler = None
        streamed = is_streamed(self.train_pairs)  # a stream has no sampler: batches may repeat a caption
        keys = None if streamed else self.train_pairs["label"] if self.templated else text_keys(self.train_pairs)
        global_batch = batch_size_across_processes(self.training_args)
        if not streamed and _deduplicate(data_args.no_duplicates, model.method_config.multi_positive, keys,
                                         global_batch):
            sampler = NoDuplicatesSampler(keys, global_batch, seed=seed)
        # Captions from class names: every image of a class is a positive of every caption of it, whatever template.
        positives_by_label = self.templated and model.method_config.multi_positive
        train_transform = _image_transform(data_args.image_size, data_args.train_crop_scale)
        collator = ImageCaptionCollator(
            self.tokenizer, train_transform, data_args.max_caption_length,
            positive_column="label" if positives_by_label else None,
        )
        # The training crops are made by the dataset's transform, seeded per example like every view (a resumed or
        # sharded run crops each image as the uninterrupted one); the collator stacks them and tokenises.
        train_dataset = apply_views(self.train_pairs, CaptionedImageView(train_transform, seed=seed))
        # Trainer saves its processing_class with the model: in every checkpoint and at the root.
        return JobParts(model=model, train_dataset=train_dataset, data_collator=collator, evaluators=[evaluator],
                        train_sampler=sampler, trainer_kwargs={"processing_class": self.processor()})

    def load_data(self):
        """(train pairs, held-out pairs); sets ``templated`` and ``class_names``."""

        _, data_args = self.arguments
        seed = self.training_args.seed
        folder = Path(resolve_dataset(data_args.dataset))
        self.templated, self.class_names = False, []
        if data_args.streaming and not (folder / "metadata.jsonl").is_file():
            stream = load_image_stream(data_args.dataset, data_args.train_split)
            self.templated = True
            self.class_names = list(getattr(stream.features.get("label"), "names", None) or [])
            held_out = materialize(load_image_stream(data_args.dataset, data_args.eval_split),
                                   data_args.max_eval_examples or STREAMED_EVAL_EXAMPLES)
            return caption_stream_with_templates(stream, TRAIN_TEMPLATES, seed, self.class_names), held_out
        if (folder / "metadata.jsonl").is_file():
            train = load_emoji_captions(folder, data_args.train_split, data_args.held_out_fraction)
            held_out = load_emoji_captions(folder, data_args.eval_split, data_args.held_out_fraction)
        else:
            train = load_image_dataset(data_args.dataset, data_args.train_split, max_examples=data_args.max_train_examples,
                                       seed=seed)
            held_out = load_image_dataset(data_args.dataset, data_args.eval_split,
                                          max_examples=data_args.max_eval_examples, seed=seed)
            if "text" not in train.column_names:
                if "label" not in train.column_names:
                    raise ValueError(
                        f"{data_args.dataset} has images without captions and without class labels: image-text "
                        "training needs a `text` column (imagefolder: metadata.jsonl with file_name and text) or a "
                        "labelled dataset to caption from class names"
                    )
                self.templated = True
                self.class_names = list(train.features["label"].names)
                train = caption_with_templates(train, TRAIN_TEMPLATES, seed=seed)
        for name, split in (("train", train), ("held-out", held_out)):
            if len(split) == 0:
                raise ValueError(f"the {name} split of {data_args.dataset} is empty")
        if not self.templated:
            if data_args.max_train_examples is not None:
                train = train.select(range(min(len(train), data_args.max_train_examples)))
            if data_args.max_eval_examples is not None:
                held_out = held_out.select(range(min(len(held_out), data_args.max_eval_examples)))
        return (as_stream(train) if data_args.streaming else train), held_out

    def build_model(self):
        """The model at its starting point (pretrained text encoder + random vision encoder and projections, unless
        configured otherwise); called again after training, with the same seed, for the final comparison."""

        encoder_args, data_args = self.arguments
        if encoder_args.init_from:
            return AutoSSLModel.from_pretrained(encoder_args.init_from)
        vision = encoder_config(
            encoder_args.encoder, data_args.image_size, encoder_args.patch_size, encoder_args.config_overrides()
        )
        if getattr(vision, "pooler_output_size", None) is not None:
            # ViTConfig fixes pooler_output_size to the hidden size it was built with, before overrides; the dual
            # encoder projects the pooled output from `hidden_size`, so the two must agree.
            vision.pooler_output_size = vision.hidden_size
        text_overrides = parse_json_object(encoder_args.text_config_overrides, "--text_config_overrides")
        if text_overrides and not encoder_args.text_from_scratch:
            raise ValueError("--text_config_overrides changes the architecture: use it with --text_from_scratch true")
        model_class = METHOD_REGISTRY[encoder_args.method]
        return model_class.from_vision_text(
            vision, resolve_text_checkpoint(encoder_args.text_encoder), projection_dim=encoder_args.projection_dim,
            load_text_weights=not encoder_args.text_from_scratch, text_config_overrides=text_overrides,
            **dataclass_values(self.method_config),
        )

    def processor(self):
        """The ``VisionTextDualEncoderProcessor`` published with the model (``AutoProcessor``): the tokenizer and the
        evaluation's image transform (this run's image size, :data:`IMAGE_MEAN` / :data:`IMAGE_STD`)."""
        from transformers import VisionTextDualEncoderProcessor

        _, data_args = self.arguments
        image_processor = build_image_processor(data_args.image_size, IMAGE_MEAN, IMAGE_STD)
        return VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=self.tokenizer)

    def save_extras(self, output_dir: str, model) -> None:
        self.processor().save_pretrained(output_dir)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(self.training_args.seed)
            start = None if self.arguments[0].init_from else self.build_model().to(model.device)
        models = {"pretrained": model, **({"before_training": start} if start is not None else {})}
        probes = {name: self.scores(candidate) for name, candidate in models.items()}
        return FinalEvaluation(probes=probes, eval_results=self._eval_results(probes["pretrained"]),
                               table=self._table(probes))

    def scores(self, model) -> dict[str, float]:
        if self.templated:
            return {
                "zero_shot_top1_held_out_templates": zero_shot_accuracy(
                    model, self.tokenizer, self.eval_pairs, self.class_names, HELD_OUT_TEMPLATES, self.eval_transform),
                "zero_shot_top1_train_templates": zero_shot_accuracy(
                    model, self.tokenizer, self.eval_pairs, self.class_names, TRAIN_TEMPLATES, self.eval_transform),
            }
        return RetrievalEvaluator(self.eval_pairs, self.tokenizer, self.eval_transform)(model)

    def _table(self, probes: dict[str, dict[str, float]]) -> str:
        _, data_args = self.arguments
        names = list(probes["pretrained"])
        lines = [f"{'model':<16} " + " ".join(f"{name:>34}" for name in names)]
        for model_name, values in probes.items():
            lines.append(f"{model_name:<16} " + " ".join(f"{100 * values[name]:>34.2f}" for name in names))
        what = (f"Zero-shot top-1 (%) on {data_args.dataset} / {data_args.eval_split}, chance "
                f"{100 / len(self.class_names):.1f}%" if self.templated else
                f"Retrieval recall (%) over the {len(self.eval_pairs)} held-out pairs, chance "
                f"{100 / len(self.eval_pairs):.2f}% at k=1")
        return what + ":\n" + "\n".join(lines)

    def _eval_results(self, values: dict[str, float]) -> list[EvalResult]:
        _, data_args = self.arguments
        n = len(self.eval_pairs)
        if self.templated:
            protocols = {
                "zero_shot_top1_held_out_templates": (
                    "zero-shot top-1, prompt ensemble of %d templates held out from training" % len(HELD_OUT_TEMPLATES)),
                "zero_shot_top1_train_templates": (
                    "zero-shot top-1, prompt ensemble of the %d training templates" % len(TRAIN_TEMPLATES)),
            }
            task, metric = "zero-shot-image-classification", "accuracy"
        else:
            protocols = {name: f"{name.replace('_', ' ')} among {n} held-out pairs (unseen code points)"
                         for name in values}
            task, metric = "image-text-retrieval", "recall"
        return [
            EvalResult(task_type=task, **model_index_dataset([data_args.dataset]),
                       dataset_split=data_args.eval_split, metric_type=metric, metric_value=float(value),
                       metric_name=protocols[name])
            for name, value in values.items()
        ]


def _image_transform(size: int, min_crop_scale: float):
    """PIL -> ``(3, size, size)`` as the saved image processor prepares it (resize, center crop, rescale, mean/std 0.5);
    with ``min_crop_scale < 1`` a random resized crop first (training augmentation, no flips: emoji arrows have a
    direction)."""
    import torch
    from torchvision.transforms import v2

    if min_crop_scale >= 1.0:
        return default_eval_transform(size, IMAGE_MEAN, IMAGE_STD)
    return v2.Compose([
        to_rgb, v2.RGB(), v2.ToImage(), v2.RandomResizedCrop(size, scale=(min_crop_scale, 1.0), antialias=True),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(IMAGE_MEAN), std=list(IMAGE_STD)),
    ])


def _deduplicate(no_duplicates: bool | None, multi_positive: bool, keys, global_batch_size: int) -> bool:
    """Whether batches are built without repeated captions / classes (see the module docstring): as asked, or, unset,
    whenever a global batch fits the distinct keys; a one-positive loss always asks for it."""
    if no_duplicates is not None:
        return no_duplicates
    return not multi_positive or distinct_key_count(keys) >= global_batch_size
