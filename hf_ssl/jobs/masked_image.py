"""The masked-image job: MAE-style pretraining on one augmented view per image (He et al. 2021, arXiv:2111.06377).

Differences from the multi-view :mod:`hf_ssl.jobs.image` job, whose data loading, kNN monitor and frozen-feature
comparison it reuses:

- views: a single view per image, RandomResizedCrop (MAE: area 0.2-1) + horizontal flip, nothing else (the paper
  finds colour jitter hurts, §A.1); :class:`SingleViewTransform` yields ``pixel_values (C, H, W)`` per example and
  :func:`hf_ssl.collators.stack_views` batches them. (``MultiCropConfig`` asks for at least two crops per image, which
  is right for the contrastive methods, so MAE has its own view settings, :class:`SingleViewConfig`.)
- evaluation: the reconstruction figure and held-out masked-pixel loss at every evaluation
  (:class:`hf_ssl.reconstruction_figure.ReconstructionFigure`, ``<output_dir>/reconstructions.png``); after
  training, the linear probe and kNN against random init and raw pixels (kNN is not MAE's protocol: reported, not
  headlined), and, with ``--finetune_steps N``, a short end-to-end fine-tune of the published checkpoint against the
  same architecture at random init (:mod:`hf_ssl.finetune_probe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult
from PIL import Image
from torchvision.transforms import v2
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..finetune_probe import FineTuneProbeArguments
from ..reconstruction_figure import DEFAULT_FIGURE_NAME
from ..views.multicrop import INDEX_COLUMN, seeded_map
from .base import FinalEvaluation, dataclass_values
from .image import DataArguments, EncoderArguments, ImagePretrainingJob


@dataclass
class SingleViewConfig:
    """One augmented view per image (MAE, He et al. 2021 §A.1: RandomResizedCrop(scale=(0.2, 1)) + flip).

    global_crop_size: side of the view, which must equal the encoder's image size and be a multiple of the patch.
    crop_scale: area fractions of RandomResizedCrop.
    """

    global_crop_size: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    horizontal_flip_probability: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_DEFAULT_STD))

    def __post_init__(self):
        if self.global_crop_size < 1:
            raise ValueError(f"global_crop_size must be positive, got {self.global_crop_size}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale takes 2 values with 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 <= self.horizontal_flip_probability <= 1:
            raise ValueError(f"horizontal_flip_probability must be in [0, 1], got {self.horizontal_flip_probability}")

    @property
    def local_crop_size(self) -> int:
        """No local crops: the one view is the only size the patch grid must tile (read by ``build_image_model``)."""
        return self.global_crop_size


class SingleViewTransform:
    """``{"image": [PIL, ...]}`` -> ``{"pixel_values": [(C, H, W), ...]}``, one random view per image.

    Reproducible as :class:`hf_ssl.views.MultiCropTransform`: with the ``ssl_index`` column (added by
    :func:`hf_ssl.views.apply_views`) each example's view is seeded by ``(seed, epoch, index)``, so resumes and
    process counts do not change the views. :class:`hf_ssl.trainer.SSLTrainer` calls :meth:`set_epoch`.
    """

    def __init__(self, config: SingleViewConfig | None = None, *, image_column: str = "image", seed: int = 0):
        self.config = config or SingleViewConfig()
        self.image_column = image_column
        self.seed = seed
        self.epoch = 0
        cfg = self.config
        self.pipeline = v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(cfg.global_crop_size, scale=tuple(cfg.crop_scale), antialias=True),
                v2.RandomHorizontalFlip(cfg.horizontal_flip_probability),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(cfg.mean, cfg.std),
            ]
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def check_image(self, image: Image.Image) -> None:
        """Fail fast on images smaller than the view (they would be upsampled silently)."""
        width, height = image.size
        size = self.config.global_crop_size
        if min(width, height) < size:
            raise ValueError(
                f"images are {width}x{height} but global_crop_size is {size}: set `--global_crop_size` to at most "
                f"{min(width, height)} (a multiple of the patch size), or resize the dataset's images first"
            )

    def view(self, image: Image.Image) -> torch.Tensor:
        self.check_image(image)
        return self.pipeline(image.convert("RGB"))

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        if self.image_column not in batch:
            raise ValueError(
                f"the dataset has no {self.image_column!r} column (columns: {sorted(batch)}); pass `--image_column`"
            )
        views = seeded_map(self.view, batch[self.image_column], batch.get(INDEX_COLUMN), self.seed, self.epoch)
        return {"pixel_values": views}


@dataclass
class ReconstructionArguments:
    """The reconstruction figure and held-out masked-pixel loss at each evaluation."""

    reconstruction_images: int = field(
        default=8, metadata={"help": "Held-out images in <output_dir>/reconstructions.png (0: no figure)."}
    )
    reconstruction_loss_images: int = field(
        default=256, metadata={"help": "Held-out images over which eval masked_pixel_loss is averaged."}
    )


class MaskedImagePretrainingJob(ImagePretrainingJob):
    """MAE's job: single views, reconstruction figure, linear probe + fine-tune against random init."""

    name = "masked_image"
    argument_classes = (EncoderArguments, DataArguments, SingleViewConfig, ReconstructionArguments,
                        FineTuneProbeArguments)

    def __init__(self, arguments: tuple, method_config, training_args):
        encoder_args, data_args, views, self.reconstruction_args, self.finetune_args = arguments
        # The image job's helpers (final comparison, eval results) read (encoder, data, views) from `arguments`.
        super().__init__((encoder_args, data_args, views), method_config, training_args)
        self.figure = None

    def extra_evaluators(self) -> list:
        from ..reconstruction_figure import ReconstructionFigure

        if self.reconstruction_args.reconstruction_images <= 0:
            return []
        views = self.arguments[2]
        self.figure = ReconstructionFigure(
            self.eval_raw if self.eval_raw is not None else self.train_raw,
            Path(self.training_args.output_dir) / DEFAULT_FIGURE_NAME, self.eval_transform,
            num_images=self.reconstruction_args.reconstruction_images,
            num_loss_images=self.reconstruction_args.reconstruction_loss_images,
            seed=self.training_args.seed, mean=views.mean, std=views.std,
        )
        return [self.figure]

    def view_transform(self):
        return SingleViewTransform(self.arguments[2], image_column="image", seed=self.training_args.seed)

    def final_evaluation(self, model) -> FinalEvaluation | None:
        """The image job's frozen-feature comparison (features of whole, unmasked images: the published encoder is a
        plain ``ViTModel``), the reconstruction figure, and the fine-tuning probe when ``finetune_steps > 0``."""
        from ..finetune_probe import compare_finetuning_with_random_init

        evaluation = super().final_evaluation(model) or FinalEvaluation()
        probes = evaluation.probes
        tables = [evaluation.table] if evaluation.table else []
        if self.figure is not None:
            probes.setdefault("pretrained", {}).update(self.figure(model))
            tables.append(f"Reconstruction figure: {self.figure.output_path}")
        _, data_args, views = self.arguments
        finetune = self.finetune_args
        if finetune.finetune_steps > 0 and self.has_labels:
            results = compare_finetuning_with_random_init(
                self.training_args.output_dir, self.train_raw, self.eval_raw, finetune,
                image_size=views.global_crop_size, mean=views.mean, std=views.std, seed=self.training_args.seed,
            )
            for name, value in results.items():
                probes.setdefault(name, {})["finetune_top1"] = value
            tables.append(
                f"Fine-tuning probe ({finetune.finetune_steps} steps, batch {finetune.finetune_batch_size}, "
                f"{min(finetune.finetune_train_examples or len(self.train_raw), len(self.train_raw))} labelled "
                f"images): pretrained {results['pretrained']:.4f} vs random init {results['random_init']:.4f}"
            )
        if not probes:
            return None
        return FinalEvaluation(probes=probes, eval_results=self._eval_results(probes.get("pretrained", {})),
                               table="\n".join(tables))

    def _eval_results(self, pretrained: dict[str, float]) -> list[EvalResult]:
        _, data_args, _ = self.arguments
        finetune = self.finetune_args
        train_count = finetune.finetune_train_examples or "all"
        protocols = {
            "linear_probe_top1": "linear probe top-1 (frozen CLS features of whole images, L-BFGS)",
            "finetune_top1": (
                f"fine-tune top-1 ({finetune.finetune_steps} steps, batch {finetune.finetune_batch_size}, "
                f"{train_count} labelled train images, ViTForImageClassification + Trainer)"
            ),
            "knn_top1": (
                f"kNN top-1 (k={data_args.knn_k}, T={data_args.knn_temperature}, frozen features; not MAE's protocol)"
            ),
        }
        return [
            EvalResult(
                task_type="image-classification", dataset_type=data_args.dataset, dataset_name=data_args.dataset,
                dataset_split=data_args.eval_split, metric_type="accuracy", metric_value=float(pretrained[name]),
                metric_name=protocol,
            )
            for name, protocol in protocols.items()
            if name in pretrained
        ]

    def run_record(self) -> dict[str, Any]:
        record = super().run_record()
        record["reconstruction"] = dataclass_values(self.reconstruction_args)
        record["finetune_probe"] = dataclass_values(self.finetune_args)
        if self.reconstruction_args.reconstruction_images > 0:
            record["figures"] = {"reconstructions": DEFAULT_FIGURE_NAME}
        return record
