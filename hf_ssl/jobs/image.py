"""The image job: multi-view pretraining (DINO, SimCLR, BYOL, SimSiam, MoCo v2/v3) on any image dataset.

Arguments: :class:`ImageEncoderArguments` (which method, which encoder), :class:`DataArguments` (which images, which
probes) and :class:`hf_ssl.views.MultiCropConfig` (the views). With no config file, ``hf-ssl pretrain`` runs
:data:`EMBEDDED_DEFAULTS`: a short DINO run on the Fashion-MNIST subset shipped inside the package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult
from transformers import AutoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.trainer_utils import IntervalStrategy

from ..data.images import EVAL_FRACTION, load_image_splits
from ..evaluation.attention_maps import DEFAULT_FIGURE_NAME as ATTENTION_FIGURE_NAME
from ..evaluation.attention_maps import AttentionMapFigure, has_attention_maps
from ..evaluation.comparison import compare_with_random_init, format_comparison
from ..evaluation.features import default_eval_transform, encoder_image_size
from ..evaluation.knn import KNNEvaluator
from ..methods import METHOD_REGISTRY, AutoSSLModel
from ..modules.backbones import check_patch_size, encoder_config
from ..publishing.datasets import model_index_dataset
from ..publishing.run_record import recorded_normalisation
from ..views import MultiCropConfig, MultiCropTransform, apply_views
from ..views.processors import build_image_processor
from .arguments import KNNArguments, VisionEncoderArguments
from .base import FinalEvaluation, JobParts, PretrainingJob, dataclass_values
from .evaluate import ImageDataArguments, register_evaluation_task

logger = logging.getLogger(__name__)

EMBEDDED_DEFAULTS: dict = {
    # About 4 minutes of training on the 2-core machine of 2026-11, 16 on one core of the slower one of 2026-12.
    # Small-budget DINO settings found on this data (benchmarks/README.md, "Small-budget DINO defaults"): BatchNorm
    # in the head MLP, a fast teacher (momentum 0.95 -> 1), no frozen prototypes.
    "method": "dino",
    "dataset": "embedded",
    "encoder": "vit-tiny",
    "encoder_config_overrides": {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                                 "intermediate_size": 512},
    "patch_size": 7,
    "global_crop_size": 28,
    "local_crop_size": 14,
    "num_local_crops": 4,
    "global_crop_scale": [0.5, 1.0],
    "local_crop_scale": [0.2, 0.5],
    "out_dim": 1024,
    "hidden_dim": 512,
    "bottleneck_dim": 128,
    "use_batch_norm_in_head": True,
    "momentum_teacher": 0.95,
    "freeze_last_layer_epochs": 0,
    "output_dir": "outputs/dino-vit-tiny-embedded",
    "per_device_train_batch_size": 128,
    "max_steps": 250,
    "learning_rate": 5e-4,
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,  # the paper's cosine schedule; did not hurt here (benchmarks/README.md)
    "warmup_steps": 25,
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 3.0,
    "logging_steps": 25,
    "save_steps": 125,
    "save_total_limit": 2,
    "report_to": "none",
}


@dataclass
class ImageEncoderArguments(VisionEncoderArguments):
    """:class:`~hf_ssl.jobs.arguments.ModelArguments` of an image encoder: its patch size and its resolution."""

    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Resolution the encoder is built for, evaluated and published at (default: global_crop_size). "
            "Training crops smaller than it run through interpolated position embeddings: a cheaper step (at patch "
            "4, 16 px crops are 17 tokens, 32 px crops 65), tested at the full resolution (Touvron et al. 2019, "
            "FixRes, arXiv:1906.06423: train at a lower resolution than you test)."
        },
    )


@dataclass
class DataArguments(KNNArguments):
    """Which images to pretrain on and how to monitor the encoder."""

    dataset: str = field(
        default="embedded",
        metadata={"help": "'embedded', a folder (CIFAR-10 zips, Fashion-MNIST IDX, imagefolder) or a Hub dataset."},
    )
    train_split: str = field(default="train")
    eval_split: str | None = field(
        default="test",
        metadata={"help": "Labelled split of the kNN / linear probes; empty to disable. A dataset whose only split is "
                  "train_split (a folder of class subfolders) holds out eval_fraction of it instead."},
    )
    eval_fraction: float = field(
        default=EVAL_FRACTION,
        metadata={"help": "Share of each class held out for the probes when the dataset has no eval_split (the same "
                  "images for every seed, and for hf-ssl evaluate)."},
    )
    image_column: str | None = field(default=None)
    label_column: str | None = field(default=None)
    max_train_examples: int | None = field(default=None)
    max_eval_examples: int | None = field(default=None)
    knn_max_train_examples: int | None = field(
        default=None, metadata={"help": "Size of the kNN memory bank (default: the whole train split)."}
    )
    final_comparison: bool = field(
        default=True, metadata={"help": "After training, probe the encoder vs random init vs raw pixels."}
    )
    final_probes: list[str] = field(
        default_factory=lambda: ["knn", "linear"], metadata={"help": "Probes of the final comparison."}
    )
    check_image_files: bool = field(
        default=True,
        metadata={"help": "Before training, check that every image file of a local folder decodes (fast, parallel); "
                  "a bad file stops the run with the list of them."},
    )
    skip_bad_files: bool = field(
        default=False, metadata={"help": "Leave out the files the check finds unreadable (each one logged)."}
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read the training split as a stream, never whole (needs --max_steps; see hf_ssl.data."
                  "streaming); the probes take the first knn_max_train_examples / max_eval_examples (default 10,000) "
                  "of the train and eval splits into memory."},
    )
    attention_map_images: int = field(
        default=4,
        metadata={"help": "Held-out images in <output_dir>/attention_maps.png, the last layer's CLS attention per head "
                  "at each evaluation and after training, for methods that show it (DINO) with a ViT encoder (0: no "
                  "figure)."},
    )


def native_image_size(encoder_args: ImageEncoderArguments, views: MultiCropConfig) -> int:
    """The encoder's native (evaluation) resolution: ``image_size``, or the global crop size when it is not set."""
    size = encoder_args.image_size or views.global_crop_size
    if size < views.global_crop_size:
        raise ValueError(
            f"image_size {size} is smaller than global_crop_size {views.global_crop_size}: the encoder would be "
            f"evaluated below its training resolution; set --image_size to at least {views.global_crop_size} or lower "
            "--global_crop_size"
        )
    return size


def build_image_model(encoder_args: ImageEncoderArguments, views: MultiCropConfig, method_config):
    """A new pretraining model for the chosen encoder and method, or the one stored at ``init_from``."""
    if encoder_args.init_from:
        model = AutoSSLModel.from_pretrained(encoder_args.init_from)
        check_patch_size(model.config, views.global_crop_size, views.local_crop_size)
        return model
    image_size = native_image_size(encoder_args, views)
    config = encoder_config(encoder_args.encoder, image_size, encoder_args.patch_size, encoder_args.config_overrides())
    check_patch_size(config, views.global_crop_size, views.local_crop_size)
    model_class = METHOD_REGISTRY[encoder_args.method]
    return model_class.from_encoder_config(config, **dataclass_values(method_config))


class ImagePretrainingJob(PretrainingJob):
    """Views from :class:`~hf_ssl.views.MultiCropTransform`, a kNN monitor, and a final kNN / linear-probe
    comparison against the same encoder at random init and against raw pixels."""

    name = "image"
    default_encoder = "vit-tiny"
    record_sections = ("encoder", "data", "views")
    argument_classes = (ImageEncoderArguments, DataArguments, MultiCropConfig)

    def prepare(self) -> JobParts:
        encoder_args, data_args, views = self.arguments
        seed = self.training_args.seed
        splits = load_image_splits(
            data_args.dataset, data_args.train_split, data_args.eval_split, eval_fraction=data_args.eval_fraction,
            image_column=data_args.image_column, label_column=data_args.label_column,
            max_train_examples=data_args.max_train_examples, max_eval_examples=data_args.max_eval_examples,
            seed=seed, check_files=data_args.check_image_files, skip_bad_files=data_args.skip_bad_files,
            streaming=data_args.streaming, max_probe_train_examples=data_args.knn_max_train_examples,
        )
        self.train_raw, self.eval_raw, self.eval_name = splits.train, splits.eval, splits.eval_name
        model = self.build_model()
        self.eval_transform = default_eval_transform(native_image_size(encoder_args, views), views.mean, views.std)
        self.has_labels = (
            self.eval_raw is not None
            and "label" in self.train_raw.column_names
            and "label" in self.eval_raw.column_names
        )
        evaluators = self.extra_evaluators()
        if self.has_labels:
            evaluators.append(
                KNNEvaluator(
                    self.train_raw, self.eval_raw, k=data_args.knn_k, temperature=data_args.knn_temperature,
                    transform=self.eval_transform, max_train_examples=data_args.knn_max_train_examples, seed=seed,
                )
            )
        train_dataset = apply_views(splits.train_stream if data_args.streaming else self.train_raw,
                                    self.view_transform())
        if not evaluators and self.training_args.eval_strategy != IntervalStrategy.NO:
            logger.info("no labelled images to probe on and nothing else to evaluate: evaluation is off")
            self.training_args.eval_strategy = IntervalStrategy.NO
        # Trainer saves its processing_class with the model: in every checkpoint and at the root.
        return JobParts(model=model, train_dataset=train_dataset, evaluators=evaluators,
                        trainer_kwargs={"processing_class": self.image_processor()})

    def build_model(self):
        """The pretraining model (:func:`build_image_model`). Called once the data is loaded (``self.train_raw``), so
        a method sized by the data (a memory bank of every example) can read it."""
        encoder_args, _, views = self.arguments[:3]
        return build_image_model(encoder_args, views, self.method_config)

    def view_transform(self):
        """The training views of one example (multi-crop here; MAE: one view). Called after the data is loaded."""
        return MultiCropTransform(self.arguments[2], image_column="image", seed=self.training_args.seed)

    attention_figure: AttentionMapFigure | None = None

    def extra_evaluators(self) -> list:
        """Evaluators run before the kNN monitor (DINO: the attention-map figure; MAE: the reconstruction figure).
        Called after the data is loaded."""
        encoder_args, data_args, views = self.arguments[:3]
        method_class = METHOD_REGISTRY.get(encoder_args.method)
        if data_args.attention_map_images <= 0 or not getattr(method_class, "attention_map_figure", False):
            return []
        self.attention_figure = AttentionMapFigure(
            self.eval_raw if self.eval_raw is not None else self.train_raw,
            Path(self.training_args.output_dir) / ATTENTION_FIGURE_NAME, self.eval_transform,
            num_images=data_args.attention_map_images, mean=views.mean, std=views.std,
        )
        return [self.attention_figure]

    def image_processor(self):
        """The processor published with the encoder: the probes' transform at the encoder's native resolution, with
        the views' normalisation (``AutoImageProcessor`` / ``pipeline("image-feature-extraction")`` use it)."""
        encoder_args, _, views = self.arguments[:3]
        return build_image_processor(native_image_size(encoder_args, views), views.mean, views.std)

    def save_extras(self, output_dir: str, model) -> None:
        self.image_processor().save_pretrained(output_dir)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        encoder_args, data_args, views = self.arguments
        if self.attention_figure is not None:  # the trained model's maps, whatever the last evaluation drew
            self.attention_figure(model)
        if not (self.has_labels and data_args.final_comparison):
            return None
        probes = compare_with_random_init(
            model.encoder, self.train_raw, self.eval_raw, k=data_args.knn_k, temperature=data_args.knn_temperature,
            transform=self.eval_transform, max_train_examples=data_args.knn_max_train_examples,
            seed=self.training_args.seed, probes=tuple(data_args.final_probes),
        )
        table = (
            f"Frozen-feature probes on {data_args.dataset} / {self.eval_name} "
            f"(kNN: k={data_args.knn_k}, T={data_args.knn_temperature}, cosine, weighted votes):\n"
            + format_comparison(probes)
        )
        return FinalEvaluation(probes=probes, eval_results=self._eval_results(probes["pretrained"]), table=table)

    def _eval_results(self, pretrained: dict[str, float]) -> list[EvalResult]:
        _, data_args, _ = self.arguments
        protocols = {
            "knn_top1": f"kNN top-1 (k={data_args.knn_k}, T={data_args.knn_temperature}, frozen features)",
            "linear_probe_top1": "linear probe top-1 (frozen features, L-BFGS)",
        }
        return [
            EvalResult(
                task_type="image-classification", **model_index_dataset([data_args.dataset]),
                dataset_split=self.eval_name, metric_type="accuracy", metric_value=float(value),
                metric_name=protocols.get(name, name),
            )
            for name, value in pretrained.items()
            if name in protocols
        ]

    def run_record(self) -> dict[str, Any]:
        record = super().run_record()
        if hasattr(self, "eval_name"):  # after prepare(): the split the probes used, e.g. "held-out 10% of train"
            record["data"]["eval_split"] = self.eval_name
        if self.attention_figure is not None:
            record.setdefault("figures", {})["attention_maps"] = ATTENTION_FIGURE_NAME
        return record


@dataclass
class AttentionMapTaskArguments:
    """The attention-maps task of ``hf-ssl evaluate``."""

    attention_map_images: int = field(default=4, metadata={"help": "Held-out images (rows) in the figure."})
    attention_map_path: str | None = field(
        default=None,
        metadata={"help": "Where the PNG goes (default: attention_maps.png in the checkpoint folder, where its model "
                  "card finds it; in the current folder for a Hub checkpoint)."},
    )


def _run_attention_maps(checkpoint: str, arguments: dict[type, Any]) -> dict:
    data, options = arguments[ImageDataArguments], arguments[AttentionMapTaskArguments]
    images = data.load(max_train_examples=1).eval  # the train split only decides the hold-out, if there is one
    encoder = AutoModel.from_pretrained(checkpoint)
    if not has_attention_maps(encoder):
        raise ValueError(f"{checkpoint} holds a {type(encoder).__name__}, which has no patch attention; the "
                         "attention-maps task needs a ViT-like encoder")
    mean, std = recorded_normalisation(checkpoint) or (list(IMAGENET_DEFAULT_MEAN), list(IMAGENET_DEFAULT_STD))
    folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path.cwd()
    path = Path(options.attention_map_path) if options.attention_map_path else folder / ATTENTION_FIGURE_NAME
    transform = default_eval_transform(data.image_size or encoder_image_size(encoder), mean, std)
    AttentionMapFigure(images, path, transform, num_images=options.attention_map_images, mean=mean, std=std)(encoder)
    return {"attention_maps": str(path)}


register_evaluation_task(
    "attention-maps", "the last layer's CLS attention per head of a ViT on held-out images, as a PNG (DINO's Fig. 1)",
    (ImageDataArguments, AttentionMapTaskArguments), _run_attention_maps,
)
