"""The jobs of the methods that address each training example by its dataset index: instance discrimination with a
memory bank (Wu et al. 2018, arXiv:1805.01978) and DeepCluster (Caron et al. 2018, arXiv:1807.05520).

Both train on one augmented view per image (:class:`IndexedViewTransform`), which carries the example's ``ssl_index``
into the batch: the memory bank's row, the pseudo-label's position. Both size their model by the training set
(``num_examples``, set here from the data). The ``deepcluster`` job adds the clustering around training: the
:class:`~hf_ssl.training.clustering.ClusterReassignment` callback (features of the training set without augmentation,
PCA whitening, k-means, at each epoch's start) and the cluster-balanced
:class:`~hf_ssl.training.clustering.ClusterBalancedSampler`, one epoch being one clustering period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.transforms import v2

from ..training.clustering import ClusterBalancedSampler, ClusterReassignment
from ..views import INDEX_COLUMN
from ..views.single_view import SingleViewConfig, SingleViewTransform
from .base import JobParts
from .image import DataArguments, ImageEncoderArguments, ImagePretrainingJob, build_image_model


@dataclass
class IndexedViewConfig(SingleViewConfig):
    """One augmented view per image: RandomResizedCrop(crop_scale) + flip (as :class:`SingleViewConfig`), then
    ColorJitter(s, s, s, min(s, 0.5)) for ``color_jitter = s`` and RandomGrayscale.

    Wu et al. 2018's views (their code): crop scale (0.2, 1), ColorJitter(0.4, 0.4, 0.4, 0.4), grayscale 0.2, flip.
    DeepCluster's (Caron et al. 2018 §4): crop scale (0.08, 1) and flip, no colour (``color_jitter 0``,
    ``grayscale_probability 0``); its fixed Sobel filter on the input is not applied here (the encoders take RGB).
    """

    color_jitter: float = field(default=0.4,
                                metadata={"help": "Strength s of ColorJitter(s, s, s, min(s, 0.5)); 0: off."})
    grayscale_probability: float = 0.2

    def __post_init__(self):
        super().__post_init__()
        if self.color_jitter < 0 or not 0 <= self.grayscale_probability <= 1:
            raise ValueError(f"color_jitter must be >= 0 and grayscale_probability in [0, 1], got {self.color_jitter} "
                             f"and {self.grayscale_probability}")


class IndexedViewTransform(SingleViewTransform):
    """``{"image": [PIL, ...], "ssl_index": [int, ...]}`` -> ``{"pixel_values": [(C, H, W), ...], "ssl_index":
    [int64 scalar, ...]}``: one view per image (seeded by ``(seed, epoch, index)`` as every view) and the example's
    dataset index, which :func:`hf_ssl.data.collators.stack_views` batches into ``ssl_index`` ``(batch,)``."""

    config_class = IndexedViewConfig

    def build(self) -> None:
        cfg = self.config
        steps: list[v2.Transform] = [
            v2.RandomResizedCrop(cfg.global_crop_size, scale=tuple(cfg.crop_scale), antialias=True),
            v2.RandomHorizontalFlip(cfg.horizontal_flip_probability),
        ]
        if cfg.color_jitter > 0:
            strength = cfg.color_jitter
            steps.append(v2.ColorJitter(strength, strength, strength, min(strength, 0.5)))
        if cfg.grayscale_probability > 0:
            steps.append(v2.RandomGrayscale(cfg.grayscale_probability))
        # PIL operations first, the tensor conversion last (cheaper on small images, as the multi-crop views).
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
        self.pipeline = v2.Compose(steps)

    def views(self, image: Image.Image) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pipeline(image)}

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        if INDEX_COLUMN not in batch:
            raise ValueError(f"the dataset has no {INDEX_COLUMN!r} column (columns: {sorted(batch)}); attach this "
                             "transform with hf_ssl.views.apply_views, which adds it")
        output = super().__call__(batch)
        output[INDEX_COLUMN] = [torch.tensor(int(index), dtype=torch.long) for index in batch[INDEX_COLUMN]]
        return output


class IndexedImagePretrainingJob(ImagePretrainingJob):
    """Instance discrimination's job: the image job (data, kNN monitor, final probes) with one indexed view per
    image and a model sized by the training set."""

    name = "indexed_image"
    argument_classes = (ImageEncoderArguments, DataArguments, IndexedViewConfig)

    def build_model(self):
        encoder_args, data_args, views = self.arguments
        if getattr(data_args, "streaming", False):
            raise ValueError(f"{encoder_args.method} addresses every training example by its index (a memory bank, "
                             "pseudo-labels): it needs the whole training split, not a stream; drop --streaming")
        if encoder_args.init_from:
            model = build_image_model(encoder_args, views, self.method_config)
            if model.method_config.num_examples != len(self.train_raw):
                raise ValueError(
                    f"{encoder_args.init_from} was pretrained on {model.method_config.num_examples} examples, this "
                    f"training set has {len(self.train_raw)}; continue on the same data (--max_train_examples) or "
                    "start a new run"
                )
            return model
        self.method_config.num_examples = len(self.train_raw)
        return build_image_model(encoder_args, views, self.method_config)

    def view_transform(self):
        return IndexedViewTransform(self.arguments[2], image_column="image", seed=self.training_args.seed)


class DeepClusterJob(IndexedImagePretrainingJob):
    """DeepCluster's job: the indexed-view job plus the clustering at each epoch's start and the cluster-balanced
    order (see the module docstring)."""

    name = "deepcluster"

    def prepare(self) -> JobParts:
        parts = super().prepare()
        args = self.training_args
        settings = parts.model.method_config
        global_batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
        samples = settings.reassign_every * global_batch if settings.reassign_every > 0 else len(self.train_raw)
        if samples < global_batch:
            raise ValueError(f"one clustering period ({samples} examples) is less than one global batch "
                             f"({global_batch}); raise reassign_every or lower per_device_train_batch_size")
        parts.train_sampler = ClusterBalancedSampler(samples, seed=args.seed)
        parts.callbacks.append(
            ClusterReassignment(self.train_raw, self.eval_transform, parts.train_sampler, seed=args.seed)
        )
        return parts
