"""The masked-image job: MAE-style pretraining on one augmented view per image (He et al. 2021, arXiv:2111.06377).

Differences from the multi-view :mod:`hf_ssl.jobs.image` job, whose data loading, kNN monitor and frozen-feature
comparison it reuses:

- views: a single view per image, RandomResizedCrop (MAE: area 0.2-1) + horizontal flip, nothing else (the paper
  finds colour jitter hurts, §A.1); :class:`SingleViewTransform` yields ``pixel_values (C, H, W)`` per example and
  :func:`hf_ssl.data.collators.stack_views` batches them. (``MultiCropConfig`` asks for at least two crops per image,
  which is right for the contrastive methods, so MAE has its own view settings, :class:`SingleViewConfig`.)
- evaluation: the reconstruction figure and held-out masked-pixel loss at every evaluation
  (:class:`hf_ssl.evaluation.reconstruction.ReconstructionFigure`, ``<output_dir>/reconstructions.png``); after
  training, the linear probe and kNN against random init and raw pixels (kNN is not MAE's protocol: reported, not
  headlined), and, with ``--finetune_steps N``, a short end-to-end fine-tune of the published checkpoint against the
  same architecture at random init (:mod:`hf_ssl.evaluation.finetune`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from ..evaluation.finetune import (
    FineTuneProbeArguments,
    compare_finetuning_with_random_init,
)
from ..evaluation.reconstruction import DEFAULT_FIGURE_NAME, ReconstructionFigure
from ..publishing.datasets import model_index_dataset
from ..views.single_view import SingleViewConfig, SingleViewTransform
from .base import FinalEvaluation, dataclass_values
from .image import DataArguments, ImageEncoderArguments, ImagePretrainingJob


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
    argument_classes = (ImageEncoderArguments, DataArguments, SingleViewConfig, ReconstructionArguments,
                        FineTuneProbeArguments)

    def __init__(self, arguments: tuple, method_config, training_args):
        encoder_args, data_args, views, self.reconstruction_args, self.finetune_args = arguments
        # The image job's helpers (final comparison, eval results) read (encoder, data, views) from `arguments`.
        super().__init__((encoder_args, data_args, views), method_config, training_args)
        self.figure = None

    def extra_evaluators(self) -> list:
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
                task_type="image-classification", **model_index_dataset([data_args.dataset]),
                dataset_split=self.eval_name, metric_type="accuracy", metric_value=float(pretrained[name]),
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
