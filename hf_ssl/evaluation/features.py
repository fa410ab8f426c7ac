"""Frozen features of image encoders, and the base of the frozen-feature probes.

* :func:`extract_features` / :func:`raw_pixel_features`: ``datasets.Dataset`` of images -> ``(N, D)`` features.
* :func:`default_eval_transform`: the deterministic evaluation transform (resize, centre crop, normalise).
* :class:`FrozenFeatureEvaluator`: datasets, fixed subsets and feature extraction shared by the kNN and linear-probe
  evaluators (callables ``model -> {"<name>_top1": accuracy}`` for the trainer's evaluation loop).
* Helpers every protocol uses: :func:`published_encoder`, :func:`frozen`, :func:`check_image_dataset`,
  :func:`as_pil_image`, :func:`fixed_subset`, :func:`check_features`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..data.image_decoding import to_rgb
from ..modules.backbones import image_features

DEFAULT_IMAGE_SIZE = 32


def default_eval_transform(
    image_size: int | tuple[int, int],
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    *,
    resize_size: int | None = None,
) -> Callable[[Any], torch.Tensor]:
    """Deterministic evaluation transform: PIL image -> normalised ``(3, image_size, image_size)`` float tensor.

    RGB conversion (greyscale and RGBA images become 3-channel), resize of the shorter side to ``resize_size``
    (default ``image_size``; ImageNet protocols use ``int(image_size / 0.875)``), center crop to ``image_size``,
    scaling to [0, 1], then ``(x - mean) / std``. Images smaller or larger than ``image_size`` are both resized.
    """
    from torchvision.transforms import v2

    if isinstance(image_size, Sequence):
        crop_size = (int(image_size[0]), int(image_size[1]))
    else:
        crop_size = (int(image_size), int(image_size))
    if resize_size is None:
        resize_size = max(crop_size)
    return v2.Compose(
        [
            to_rgb,  # every PIL mode (16-bit, alpha, CMYK, EXIF orientation); v2.RGB: tensor inputs
            v2.RGB(),
            v2.ToImage(),
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def extract_features(
    encoder: nn.Module,
    dataset,
    *,
    image_column: str = "image",
    label_column: str | None = "label",
    batch_size: int = 256,
    transform: Callable[[Any], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frozen features of every image in ``dataset``, in dataset order.

    Args:
        encoder: a transformers vision encoder (``ViTModel``, ``ResNetModel``, ``TimmWrapperModel``, ...) or an hf_ssl
            pretraining model, whose published encoder is read from its ``encoder`` attribute when that attribute is
            a ``PreTrainedModel`` (a ``ViTModel``'s own ``encoder`` attribute, its layer stack, is left alone).
            Run in eval mode under ``torch.no_grad()``; the train/eval flag of every submodule is restored afterwards.
            Masking encoders (``ViTMAEModel``) run with ``mask_ratio = 0`` so the probe sees every patch.
        dataset: a ``datasets.Dataset`` with an image column (PIL images, or ``(H, W[, C])`` uint8 arrays).
        image_column: name of the image column.
        label_column: name of the integer label column; ``None``, or a name the dataset lacks, gives no labels.
        batch_size: images decoded and encoded at a time (only one batch of decoded images is held in memory).
        transform: image -> ``(C, H, W)`` tensor; defaults to :func:`default_eval_transform` at the encoder's
            ``config.image_size`` (32 when the config has none).
        device: where to run the encoder; defaults to the device of its parameters. Features come back on CPU.

    Returns:
        ``features`` ``(N, D)`` float32 on CPU (:func:`hf_ssl.modules.backbones.image_features`: the CLS token for ViTs,
        the pooled output for CNNs) and ``labels`` ``(N,)`` int64, or ``None`` without a label column.
    """
    encoder = published_encoder(encoder)
    if transform is None:
        transform = default_eval_transform(encoder_image_size(encoder))
    if device is None:
        device = module_device(encoder)
    device = torch.device(device)

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        return image_features(encoder, pixel_values.to(device))

    with frozen(encoder), unmasked(encoder):
        return _map_images(dataset, encode, image_column, label_column, batch_size, transform)


def raw_pixel_features(
    dataset,
    *,
    image_size: int | tuple[int, int],
    image_column: str = "image",
    label_column: str | None = "label",
    batch_size: int = 256,
    transform: Callable[[Any], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flattened normalised pixels, the classic baseline every learned representation must beat.

    Images go through ``transform`` (default :func:`default_eval_transform` at ``image_size``) and are flattened:
    ``features`` is ``(N, C * H * W)`` float32 (CIFAR-10 train at 32 px: 50,000 x 3,072, about 600 MB), ``labels``
    ``(N,)`` int64 or ``None``.
    """
    if transform is None:
        transform = default_eval_transform(image_size)
    return _map_images(dataset, lambda pixels: pixels.flatten(1), image_column, label_column, batch_size, transform)


def _map_images(
    dataset,
    encode: Callable[[torch.Tensor], torch.Tensor],
    image_column: str,
    label_column: str | None,
    batch_size: int,
    transform: Callable[[Any], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    features, labels = [], []
    has_labels = False
    for images, batch_labels in _iterate_image_batches(dataset, image_column, label_column, batch_size):
        pixel_values = torch.stack([transform(as_pil_image(image)) for image in images])
        features.append(encode(pixel_values).float().cpu())
        if batch_labels is not None:
            has_labels = True
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    return torch.cat(features), (torch.cat(labels) if has_labels else None)


def _iterate_image_batches(
    dataset, image_column: str, label_column: str | None, batch_size: int
) -> Iterator[tuple[list, list | None]]:
    """Yield ``(images, labels)`` slices of ``dataset``; images are decoded one slice at a time."""
    check_image_dataset(dataset, image_column, "dataset")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    use_labels = label_column is not None and label_column in dataset.column_names
    columns = [image_column] + ([label_column] if use_labels else [])
    # Format None drops any set_transform (training views) so the raw images come back, and select_columns keeps
    # other columns (captions, audio, ...) from being decoded.
    plain = dataset.select_columns(columns).with_format(None)
    for start in range(0, len(plain), batch_size):
        batch = plain[start : start + batch_size]
        yield batch[image_column], (batch[label_column] if use_labels else None)


def check_image_dataset(dataset, image_column: str, name: str) -> None:
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"{name} is a DatasetDict with splits {list(dataset)}; pass one split, e.g. {name}['train'].")
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            f"{name} must be a datasets.Dataset with an image column, got {type(dataset).__name__}; build one with "
            "datasets.Dataset.from_dict({'image': [...], 'label': [...]}) or datasets.load_dataset(...)."
        )
    if image_column not in dataset.column_names:
        raise ValueError(
            f"{name} has no image column {image_column!r} (columns: {dataset.column_names}); pass "
            f"image_column=<name of the column holding the images>, or rename it with "
            f"dataset.rename_column(<old>, {image_column!r})."
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty; pass a dataset with at least one image.")


def as_pil_image(image):
    """PIL images pass through; ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` arrays become PIL images."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        raise ValueError(
            "the image column holds undecoded {'bytes', 'path'} dicts; cast it with "
            "dataset.cast_column(<column>, datasets.Image()) so images decode to PIL."
        )
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def published_encoder(model: nn.Module) -> nn.Module:
    """The encoder to probe: unwraps DDP/DataParallel and hf_ssl pretraining models (``model.encoder``).

    Only an ``encoder`` attribute that is itself a ``PreTrainedModel`` counts: transformers encoders such as
    ``ViTModel`` and ``BertModel`` also have an ``encoder`` attribute, which is their stack of layers, not a model
    that :func:`image_features` can call. A module that is not a ``PreTrainedModel`` with any ``nn.Module`` in
    ``encoder`` is unwrapped too.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, nn.Module):
        raise ValueError(f"expected an nn.Module encoder or hf_ssl model, got {type(model).__name__}.")
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    inner = getattr(model, "encoder", None)
    if isinstance(inner, PreTrainedModel) or (isinstance(inner, nn.Module) and not isinstance(model, PreTrainedModel)):
        return inner
    return model


def encoder_image_size(encoder: nn.Module) -> int | tuple[int, int]:
    config = getattr(encoder, "config", None)
    size = getattr(config, "image_size", None)
    if size is None:  # timm models carry it in pretrained_cfg["input_size"] = (C, H, W)
        input_size = (getattr(config, "pretrained_cfg", None) or {}).get("input_size")
        size = tuple(input_size[-2:]) if input_size else DEFAULT_IMAGE_SIZE
    if isinstance(size, Sequence):
        return (int(size[0]), int(size[1])) if len(size) == 2 else int(size[0])
    return int(size)


def module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Eval mode and no autograd inside; every submodule's own train/eval flag is restored on exit.

    Restoring per submodule (rather than ``module.train(previous)``) keeps mixed states intact, such as a teacher
    that its pretraining model keeps in eval mode while the student trains.
    """
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


@contextlib.contextmanager
def unmasked(encoder: nn.Module):
    """Run masking encoders without masking: ``ViTMAEModel`` drops ``config.mask_ratio`` of the patches even in eval
    mode, and a probe must see the whole image. With ratio 0 the patches are only shuffled, which leaves the CLS
    output unchanged (no position-dependent op follows the shuffle)."""
    config = getattr(encoder, "config", None)
    ratio = getattr(config, "mask_ratio", None)
    if getattr(config, "model_type", None) != "vit_mae" or not ratio:
        yield
        return
    config.mask_ratio = 0.0
    try:
        yield
    finally:
        config.mask_ratio = ratio


def check_features(features: torch.Tensor, labels: torch.Tensor | None, name: str) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name}_features must be a 2-D (N, D) tensor, got {shape}; flatten or pool it first.")
    if features.shape[0] == 0:
        raise ValueError(f"{name}_features is empty (0 rows); pass at least one {name} example.")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"{name}_labels must be a 1-D (N,) tensor of class ids.")
        if labels.shape[0] != features.shape[0]:
            raise ValueError(
                f"{name}_features has {features.shape[0]} rows but {name}_labels has {labels.shape[0]}; pass one "
                "label per feature row (same dataset, same order)."
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"{name}_labels must hold integer class ids, got dtype {labels.dtype}.")


def count_classes(train_labels: torch.Tensor, num_classes: int | None) -> int:
    largest = int(train_labels.max())
    if int(train_labels.min()) < 0:
        raise ValueError(
            "train_labels contains negative class ids (unlabelled examples?); filter them out before probing."
        )
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(f"train_labels contains class {largest} but num_classes={num_classes}; raise num_classes.")
    return num_classes


class FrozenFeatureEvaluator(abc.ABC):
    """Shared part of the evaluators: datasets, subsetting, feature extraction. Subclasses define ``_score``.

    Args (common to :class:`KNNEvaluator` and :class:`LinearProbeEvaluator`):
        train_dataset: labelled ``datasets.Dataset`` (image + label columns) whose features form the kNN bank or
            the probe's training set.
        eval_dataset: labelled ``datasets.Dataset`` the accuracy is measured on.
        transform: image -> ``(C, H, W)`` tensor; default :func:`default_eval_transform` at the encoder's size.
        batch_size: feature-extraction batch.
        max_train_examples, max_eval_examples: use a fixed random subset (drawn once, with ``seed``) to bound the
            time of each evaluation.
        image_column, label_column: column names.
        seed: seed of the subsets (and of the AdamW probe's shuffling).
        name: prefix of the returned key, ``f"{name}_top1"``.
    """

    default_name: str = "probe"

    def __init__(
        self,
        train_dataset,
        eval_dataset,
        *,
        transform: Callable[[Any], torch.Tensor] | None = None,
        batch_size: int = 256,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        image_column: str = "image",
        label_column: str = "label",
        seed: int = 0,
        name: str | None = None,
    ):
        for dataset, which in ((train_dataset, "train_dataset"), (eval_dataset, "eval_dataset")):
            check_image_dataset(dataset, image_column, which)
            if label_column not in dataset.column_names:
                raise ValueError(
                    f"{which} has no label column {label_column!r} (columns: {dataset.column_names}); pass "
                    "label_column=<name of the integer class column>."
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        self.train_dataset = fixed_subset(train_dataset, max_train_examples, seed, "max_train_examples")
        self.eval_dataset = fixed_subset(eval_dataset, max_eval_examples, seed, "max_eval_examples")
        self.transform = transform
        self.batch_size = batch_size
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed
        self.name = name or self.default_name

    def features(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train_features (N, D), train_labels (N,), eval_features (M, D), eval_labels (M,))`` for ``model``."""
        kwargs = {
            "image_column": self.image_column,
            "label_column": self.label_column,
            "batch_size": self.batch_size,
            "transform": self.transform,
        }
        train_features, train_labels = extract_features(model, self.train_dataset, **kwargs)
        eval_features, eval_labels = extract_features(model, self.eval_dataset, **kwargs)
        return train_features, train_labels, eval_features, eval_labels

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """Probe ``model`` (an hf_ssl pretraining model or a plain encoder); returns ``{f"{name}_top1": accuracy}``.

        The model's train/eval flags are left as they were, and no RNG state is consumed by the kNN/L-BFGS probes.
        """
        return {f"{self.name}_top1": self._score(*self.features(model))}

    @abc.abstractmethod
    def _score(self, train_features, train_labels, eval_features, eval_labels) -> float:
        """Top-1 accuracy of the probe trained on the train features, measured on the eval features."""


def fixed_subset(dataset, max_examples: int | None, seed: int, argument: str):
    """A fixed random subset (same rows at every evaluation), so that sorted-by-class datasets stay balanced."""
    if max_examples is None or max_examples >= len(dataset):
        return dataset
    if max_examples < 1:
        raise ValueError(f"{argument} must be a positive integer or None, got {max_examples}.")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:max_examples].sort().values
    return dataset.select(indices.tolist())
