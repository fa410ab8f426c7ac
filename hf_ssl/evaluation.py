"""Frozen-feature evaluation of vision encoders: weighted kNN and linear probes.

The two protocols every self-supervised vision paper reports:

* **Weighted k-nearest-neighbours** (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
  Discrimination", https://arxiv.org/abs/1805.01978; used as-is by DINO, Caron et al. 2021, ``eval_knn.py``):
  L2-normalised features, cosine similarity to a bank of labelled training features, the k most similar neighbours
  vote for their class with weight ``exp(similarity / T)``.
* **Linear probe** (e.g. MAE, He et al. 2022, https://arxiv.org/abs/2111.06377, section A.2): a linear classifier on
  frozen features standardised with training statistics (MAE puts a ``BatchNorm1d(affine=False)`` before the linear
  layer, which amounts to the same thing at evaluation time).

Accuracy goes through ``evaluate`` with the local metric module ``hf_ssl/metrics/accuracy.py`` loaded by path, so
nothing is downloaded (``evaluate.load("accuracy")`` would fetch a script from the Hub and fails offline).

Entry points:

* :func:`extract_features` / :func:`raw_pixel_features`: ``datasets.Dataset`` of images -> ``(N, D)`` features.
* :func:`knn_predict`, :func:`knn_accuracy`, :func:`linear_probe_accuracy`: probes on feature tensors.
* :class:`KNNEvaluator`, :class:`LinearProbeEvaluator`: callables ``model -> {"knn_top1": ...}`` for the SSL
  trainer's evaluation loop.
* :func:`evaluate_checkpoint`: probes for a published checkpoint loaded with plain ``transformers.AutoModel``.
* :func:`compare_with_random_init`: the same probes on the encoder, its architecture at random init, and raw pixels.
"""

from __future__ import annotations

import abc

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from hf_ssl.backbones import build_encoder, image_features

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = str(Path(__file__).parent / "metrics" / "accuracy.py")
"""Path of the local ``evaluate`` accuracy module: ``evaluate.load(ACCURACY_METRIC_PATH)`` works offline."""

_DEFAULT_IMAGE_SIZE = 32

__all__ = [
    "ACCURACY_METRIC_PATH",
    "KNNEvaluator",
    "LinearProbeEvaluator",
    "accuracy",
    "compare_with_random_init",
    "default_eval_transform",
    "evaluate_checkpoint",
    "extract_features",
    "format_comparison",
    "knn_accuracy",
    "knn_predict",
    "linear_probe_accuracy",
    "load_accuracy_metric",
    "raw_pixel_features",
]


# ----------------------------------------------------------------------------------------------------------------------
# Metric
# ----------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_accuracy_metric():
    """The local top-1 accuracy metric as an ``evaluate.EvaluationModule``, loaded once per process.

    ``evaluate.load`` copies the script into its modules cache (``HF_MODULES_CACHE``) and imports it from there; no
    network is involved because the path points at a local file. ``keep_in_memory=True`` keeps the predictions out of
    Arrow files on disk (no cache files or locks to clean up). Should the modules cache not be writable, the module
    is imported straight from the package instead: it is the same ``evaluate.Metric`` subclass either way.
    """
    import evaluate

    try:
        return evaluate.load(ACCURACY_METRIC_PATH, keep_in_memory=True)
    except OSError as error:  # e.g. a read-only HF_MODULES_CACHE
        logger.warning("evaluate.load(%r) failed (%s); importing the metric directly.", ACCURACY_METRIC_PATH, error)
        import importlib.util

        spec = importlib.util.spec_from_file_location("hf_ssl_accuracy_metric", ACCURACY_METRIC_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.Accuracy(keep_in_memory=True)


def accuracy(predictions: torch.Tensor | Sequence[int], references: torch.Tensor | Sequence[int]) -> float:
    """Top-1 accuracy of ``predictions`` ``(N,)`` against ``references`` ``(N,)`` through the local evaluate metric."""
    predictions = _as_numpy_labels(predictions)
    references = _as_numpy_labels(references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"{predictions.shape[0]} predictions but {references.shape[0]} references; pass one prediction per label."
        )
    return float(load_accuracy_metric().compute(predictions=predictions, references=references)["accuracy"])


def _as_numpy_labels(values: torch.Tensor | Sequence[int]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


# ----------------------------------------------------------------------------------------------------------------------
# Images -> features
# ----------------------------------------------------------------------------------------------------------------------


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
        ``features`` ``(N, D)`` float32 on CPU (:func:`hf_ssl.backbones.image_features`: the CLS token for ViTs, the
        pooled output for CNNs) and ``labels`` ``(N,)`` int64, or ``None`` without a label column.
    """
    encoder = _published_encoder(encoder)
    if transform is None:
        transform = default_eval_transform(_encoder_image_size(encoder))
    if device is None:
        device = _module_device(encoder)
    device = torch.device(device)

    def encode(pixel_values: torch.Tensor) -> torch.Tensor:
        return image_features(encoder, pixel_values.to(device))

    with _frozen(encoder), _unmasked(encoder):
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
        pixel_values = torch.stack([transform(_as_pil(image)) for image in images])
        features.append(encode(pixel_values).float().cpu())
        if batch_labels is not None:
            has_labels = True
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
    return torch.cat(features), (torch.cat(labels) if has_labels else None)


def _iterate_image_batches(
    dataset, image_column: str, label_column: str | None, batch_size: int
) -> Iterator[tuple[list, list | None]]:
    """Yield ``(images, labels)`` slices of ``dataset``; images are decoded one slice at a time."""
    _check_image_dataset(dataset, image_column, "dataset")
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


def _check_image_dataset(dataset, image_column: str, name: str) -> None:
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


def _as_pil(image):
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


def _published_encoder(model: nn.Module) -> nn.Module:
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


def _encoder_image_size(encoder: nn.Module) -> int | tuple[int, int]:
    config = getattr(encoder, "config", None)
    size = getattr(config, "image_size", None)
    if size is None:  # timm models carry it in pretrained_cfg["input_size"] = (C, H, W)
        input_size = (getattr(config, "pretrained_cfg", None) or {}).get("input_size")
        size = tuple(input_size[-2:]) if input_size else _DEFAULT_IMAGE_SIZE
    if isinstance(size, Sequence):
        return (int(size[0]), int(size[1])) if len(size) == 2 else int(size[0])
    return int(size)


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def _frozen(module: nn.Module):
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
def _unmasked(encoder: nn.Module):
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


# ----------------------------------------------------------------------------------------------------------------------
# Probes on features
# ----------------------------------------------------------------------------------------------------------------------


def _check_features(features: torch.Tensor, labels: torch.Tensor | None, name: str) -> None:
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


def _num_classes(train_labels: torch.Tensor, num_classes: int | None) -> int:
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


@torch.no_grad()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Weighted kNN classification (Wu et al. 2018, eq. 9; DINO ``eval_knn.py``).

    Features are L2-normalised; each test row takes its ``k`` most cosine-similar training rows
    ``s_1..s_k`` and predicts ``argmax_c sum_i exp(s_i / T) [label_i == c]``.

    Args:
        train_features: ``(N, D)`` feature bank.
        train_labels: ``(N,)`` class ids in ``[0, num_classes)``.
        test_features: ``(M, D)`` queries.
        k: neighbours per query (DINO: 20 or 200); clipped to ``N`` when larger.
        temperature: ``T`` in the vote weights (DINO: 0.07, Wu et al.: 0.07/0.1).
        num_classes: number of classes; defaults to ``train_labels.max() + 1``.
        chunk_size: test rows per similarity block; memory is ``O(chunk_size * N)``.

    Returns:
        ``(M,)`` int64 predicted class ids, on the device of ``test_features``.
    """
    _check_features(train_features, train_labels, "train")
    _check_features(test_features, None, "test")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features has {test_features.shape[1]} dimensions but train_features has "
            f"{train_features.shape[1]}; extract both with the same encoder."
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    num_classes = _num_classes(train_labels, num_classes)
    device = test_features.device
    bank = F.normalize(train_features.to(device=device, dtype=torch.float32), dim=1)
    bank_labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, bank.shape[0])

    predictions = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        similarity, neighbours = (queries @ bank.T).topk(k, dim=1)  # (chunk, k), sorted high to low
        # exp(s / T), shifted by the row's largest similarity: the same argmax, but no overflow for small T.
        weights = torch.exp((similarity - similarity[:, :1]) / temperature)
        votes = torch.zeros(queries.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_labels[neighbours], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of :func:`knn_predict` on ``(test_features (M, D), test_labels (M,))``, through ``evaluate``."""
    _check_features(test_features, test_labels, "test")
    predictions = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
    )
    return accuracy(predictions, test_labels)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    solver: str = "lbfgs",
    num_classes: int | None = None,
) -> float:
    """Top-1 accuracy of a linear classifier trained on frozen, standardised features (through ``evaluate``).

    Features are standardised with the training mean and standard deviation (MAE's ``BatchNorm1d(affine=False)``
    probe), then a softmax regression ``logits = x W^T + b`` is fitted by minimising
    ``mean_i CE(logits_i, y_i) + weight_decay / 2 * ||W||^2``.

    Solver. The default ``"lbfgs"`` optimises that convex objective full-batch with L-BFGS (strong-Wolfe line
    search), as scikit-learn's ``LogisticRegression`` does: on 50k x 384 features one full pass is a few
    milliseconds of BLAS on 2 CPU cores, so 100 iterations take about a second, with no learning rate to tune, no
    shuffling (deterministic) and a near-optimal solution. Mini-batch SGD/AdamW needs ~200 steps per epoch of
    Python overhead and a tuned learning rate to reach the same point. ``"adamw"`` is kept for banks too large for
    many full passes (mini-batches of ``batch_size``, shuffled with ``seed``, ``lr`` default 1e-3, decoupled
    ``weight_decay``).

    Args:
        train_features: ``(N, D)``; train_labels: ``(N,)`` class ids.
        test_features: ``(M, D)``; test_labels: ``(M,)``.
        epochs: L-BFGS iterations (each one or more full passes) or AdamW epochs.
        lr: L-BFGS step scale (default 1.0) or AdamW learning rate (default 1e-3).
        weight_decay: L2 coefficient on ``W`` (not on ``b``). The default 1e-3 makes the optimum well defined even
            for separable features, so the result barely depends on ``epochs`` (Fashion-MNIST raw pixels: 84.5% at
            100 and 84.7% at 300 iterations, against 84.0% / 83.5% with no decay).
        batch_size: AdamW mini-batch (default 1024); for L-BFGS the rows per chunk when accumulating the
            full-batch gradient, which bounds memory to ``O(batch_size * num_classes)`` and does not change the
            result (default: as many rows as fit 2**24 logits, i.e. the whole of CIFAR-10 in one chunk; smaller
            chunks only add per-chunk overhead).
        seed: seeds the AdamW shuffling (L-BFGS starts from zero weights and uses no randomness).
        solver: ``"lbfgs"`` or ``"adamw"``.
        num_classes: defaults to ``train_labels.max() + 1``.
    """
    _check_features(train_features, train_labels, "train")
    _check_features(test_features, test_labels, "test")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"test_features has {test_features.shape[1]} dimensions but train_features has "
            f"{train_features.shape[1]}; extract both with the same encoder."
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay}.")
    num_classes = _num_classes(train_labels, num_classes)
    if batch_size is None:
        batch_size = max(1024, 2**24 // num_classes) if solver == "lbfgs" else 1024
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive integers, got {epochs} and {batch_size}.")

    device = train_features.device
    train_x = train_features.float()
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0, unbiased=False).clamp_min(1e-6)
    train_x = (train_x - mean) / std
    train_y = train_labels.to(device=device, dtype=torch.long)
    classifier = nn.Linear(train_x.shape[1], num_classes, device=device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)

    if solver == "lbfgs":
        _fit_lbfgs(classifier, train_x, train_y, epochs, 1.0 if lr is None else lr, weight_decay, batch_size)
    elif solver == "adamw":
        _fit_adamw(classifier, train_x, train_y, epochs, 1e-3 if lr is None else lr, weight_decay, batch_size, seed)
    else:
        raise ValueError(f"solver must be 'lbfgs' or 'adamw', got {solver!r}.")

    with torch.no_grad():
        test_x = (test_features.to(device=device, dtype=torch.float32) - mean) / std
        predictions = torch.cat(
            [classifier(test_x[i : i + batch_size]).argmax(dim=1) for i in range(0, test_x.shape[0], batch_size)]
        )
    return accuracy(predictions, test_labels)


def _fit_lbfgs(
    classifier: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    max_iterations: int,
    lr: float,
    weight_decay: float,
    chunk_size: int,
) -> None:
    optimizer = torch.optim.LBFGS(
        classifier.parameters(),
        lr=lr,
        max_iter=max_iterations,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )
    n = x.shape[0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), device=x.device)
        for start in range(0, n, chunk_size):  # sum of per-chunk gradients == full-batch gradient
            logits = classifier(x[start : start + chunk_size])
            loss = F.cross_entropy(logits, y[start : start + chunk_size], reduction="sum") / n
            loss.backward()
            total += loss.detach()
        penalty = 0.5 * weight_decay * classifier.weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimizer.step(closure)


def _fit_adamw(
    classifier: nn.Linear,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
) -> None:
    optimizer = torch.optim.AdamW(
        [
            {"params": [classifier.weight], "weight_decay": weight_decay},
            {"params": [classifier.bias], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator).to(x.device)
        for start in range(0, x.shape[0], batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()


# ----------------------------------------------------------------------------------------------------------------------
# Evaluators for the trainer
# ----------------------------------------------------------------------------------------------------------------------


class _FrozenFeatureEvaluator(abc.ABC):
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
            _check_image_dataset(dataset, image_column, which)
            if label_column not in dataset.column_names:
                raise ValueError(
                    f"{which} has no label column {label_column!r} (columns: {dataset.column_names}); pass "
                    "label_column=<name of the integer class column>."
                )
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        self.train_dataset = _subset(train_dataset, max_train_examples, seed, "max_train_examples")
        self.eval_dataset = _subset(eval_dataset, max_eval_examples, seed, "max_eval_examples")
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


def _subset(dataset, max_examples: int | None, seed: int, argument: str):
    """A fixed random subset (same rows at every evaluation), so that sorted-by-class datasets stay balanced."""
    if max_examples is None or max_examples >= len(dataset):
        return dataset
    if max_examples < 1:
        raise ValueError(f"{argument} must be a positive integer or None, got {max_examples}.")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:max_examples].sort().values
    return dataset.select(indices.tolist())


class KNNEvaluator(_FrozenFeatureEvaluator):
    """Weighted kNN top-1 accuracy (:func:`knn_predict`) of a model's frozen features, as ``{"knn_top1": acc}``.

    Cheap to construct (datasets are only checked and, with ``max_*_examples``, index-subset); each call extracts
    features of both datasets with the current weights.

    Example::

        evaluator = KNNEvaluator(cifar_train, cifar_test, k=20, temperature=0.07, max_train_examples=10_000)
        evaluator(model)  # {"knn_top1": 0.71}
    """

    default_name = "knn"

    def __init__(
        self,
        train_dataset,
        eval_dataset,
        *,
        k: int = 200,
        temperature: float = 0.1,
        chunk_size: int = 1024,
        **kwargs,
    ):
        super().__init__(train_dataset, eval_dataset, **kwargs)
        if k < 1 or not temperature > 0:
            raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size

    def _score(self, train_features, train_labels, eval_features, eval_labels) -> float:
        return knn_accuracy(
            train_features,
            train_labels,
            eval_features,
            eval_labels,
            k=self.k,
            temperature=self.temperature,
            chunk_size=self.chunk_size,
        )


class LinearProbeEvaluator(_FrozenFeatureEvaluator):
    """Linear-probe top-1 accuracy (:func:`linear_probe_accuracy`) as ``{"linear_probe_top1": acc}``.

    ``epochs``, ``lr``, ``weight_decay``, ``solver`` and ``probe_batch_size`` go to :func:`linear_probe_accuracy`;
    ``batch_size`` is the feature-extraction batch.
    """

    default_name = "linear_probe"

    def __init__(
        self,
        train_dataset,
        eval_dataset,
        *,
        epochs: int = 100,
        lr: float | None = None,
        weight_decay: float = 1e-3,
        solver: str = "lbfgs",
        probe_batch_size: int | None = None,
        **kwargs,
    ):
        super().__init__(train_dataset, eval_dataset, **kwargs)
        if solver not in ("lbfgs", "adamw"):
            raise ValueError(f"solver must be 'lbfgs' or 'adamw', got {solver!r}.")
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.solver = solver
        self.probe_batch_size = probe_batch_size

    def _score(self, train_features, train_labels, eval_features, eval_labels) -> float:
        return linear_probe_accuracy(
            train_features,
            train_labels,
            eval_features,
            eval_labels,
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.probe_batch_size,
            seed=self.seed,
            solver=self.solver,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Whole-checkpoint evaluation
# ----------------------------------------------------------------------------------------------------------------------

_PROBES = ("knn", "linear")


def _run_probes(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    probes: Sequence[str],
    k: int,
    temperature: float,
    linear_probe_kwargs: dict[str, Any] | None,
) -> dict[str, float]:
    results = {}
    if "knn" in probes:
        results["knn_top1"] = knn_accuracy(*train, *test, k=k, temperature=temperature)
    if "linear" in probes:
        results["linear_probe_top1"] = linear_probe_accuracy(*train, *test, **(linear_probe_kwargs or {}))
    return results


def _check_probes(probes: Sequence[str]) -> tuple[str, ...]:
    probes = (probes,) if isinstance(probes, str) else tuple(probes)
    unknown = [probe for probe in probes if probe not in _PROBES]
    if unknown or not probes:
        raise ValueError(f"probes must be a non-empty subset of {_PROBES}, got {probes}.")
    return probes


def _labelled_features(features: torch.Tensor, labels: torch.Tensor | None, which: str, label_column: str):
    if labels is None:
        raise ValueError(f"{which} has no label column {label_column!r}; pass label_column=<integer class column>.")
    return features, labels


def evaluate_checkpoint(
    checkpoint: str | nn.Module,
    train_dataset,
    test_dataset,
    *,
    probes: Sequence[str] = _PROBES,
    k: int = 200,
    temperature: float = 0.1,
    linear_probe_kwargs: dict[str, Any] | None = None,
    transform: Callable[[Any], torch.Tensor] | None = None,
    batch_size: int = 256,
    max_train_examples: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """kNN and/or linear-probe top-1 accuracy of a published encoder.

    Args:
        checkpoint: a Hub id or local directory, loaded with plain ``transformers.AutoModel.from_pretrained`` (the
            published encoder: no hf_ssl class is needed), or an already-built encoder / hf_ssl model.
        train_dataset, test_dataset: ``datasets.Dataset`` with image and label columns.
        probes: any of ``"knn"``, ``"linear"``; features are extracted once for all of them.
        k, temperature: :func:`knn_predict` settings.
        linear_probe_kwargs: keyword arguments for :func:`linear_probe_accuracy` (``epochs``, ``weight_decay``, ...).
        transform, batch_size, device: see :func:`extract_features`.
        max_train_examples: a fixed random subset of the training set (seed 0) to bound time.

    Returns:
        ``{"knn_top1": ..., "linear_probe_top1": ...}`` for the requested probes.
    """
    probes = _check_probes(probes)
    if isinstance(checkpoint, (str, Path)):
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(str(checkpoint))
        if device is not None:
            encoder.to(device)
    elif isinstance(checkpoint, nn.Module):
        encoder = checkpoint
    else:
        raise ValueError(
            f"checkpoint must be a Hub id, a local directory or an nn.Module, got {type(checkpoint).__name__}."
        )
    _check_image_dataset(train_dataset, image_column, "train_dataset")
    _check_image_dataset(test_dataset, image_column, "test_dataset")
    train_dataset = _subset(train_dataset, max_train_examples, 0, "max_train_examples")
    kwargs = dict(
        image_column=image_column, label_column=label_column, batch_size=batch_size, transform=transform, device=device
    )
    train = _labelled_features(*extract_features(encoder, train_dataset, **kwargs), "train_dataset", label_column)
    test = _labelled_features(*extract_features(encoder, test_dataset, **kwargs), "test_dataset", label_column)
    return _run_probes(train, test, probes, k, temperature, linear_probe_kwargs)


def compare_with_random_init(
    encoder: nn.Module,
    train_dataset,
    test_dataset,
    *,
    probes: Sequence[str] = _PROBES,
    k: int = 200,
    temperature: float = 0.1,
    linear_probe_kwargs: dict[str, Any] | None = None,
    include_raw_pixels: bool = True,
    seed: int = 0,
    transform: Callable[[Any], torch.Tensor] | None = None,
    batch_size: int = 256,
    max_train_examples: int | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> dict[str, dict[str, float]]:
    """Probe ``encoder``, the same architecture at random init, and raw pixels, on the same data and probes.

    The random encoder is ``build_encoder(encoder.config)`` under ``torch.manual_seed(seed)`` (the global RNG state
    is restored afterwards). Raw pixels are taken at the encoder's input size with the same transform.

    Returns:
        ``{"pretrained": {...}, "random_init": {...}, "raw_pixels": {...}}``, each inner dict as returned by
        :func:`evaluate_checkpoint`; see :func:`format_comparison` for a printable table.
    """
    probes = _check_probes(probes)
    encoder = _published_encoder(encoder)
    if not hasattr(encoder, "config"):
        raise ValueError("encoder has no transformers config; pass a transformers encoder (or an hf_ssl model).")
    device = _module_device(encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_encoder = build_encoder(encoder.config).to(device)
    _check_image_dataset(train_dataset, image_column, "train_dataset")
    _check_image_dataset(test_dataset, image_column, "test_dataset")
    train_dataset = _subset(train_dataset, max_train_examples, seed, "max_train_examples")
    common = dict(
        probes=probes,
        k=k,
        temperature=temperature,
        linear_probe_kwargs=linear_probe_kwargs,
        transform=transform,
        batch_size=batch_size,
        image_column=image_column,
        label_column=label_column,
    )
    results = {
        "pretrained": evaluate_checkpoint(encoder, train_dataset, test_dataset, **common),
        "random_init": evaluate_checkpoint(random_encoder, train_dataset, test_dataset, **common),
    }
    if include_raw_pixels:
        pixel_kwargs = dict(
            image_size=_encoder_image_size(encoder),
            image_column=image_column,
            label_column=label_column,
            batch_size=batch_size,
            transform=transform,
        )
        train = _labelled_features(*raw_pixel_features(train_dataset, **pixel_kwargs), "train_dataset", label_column)
        test = _labelled_features(*raw_pixel_features(test_dataset, **pixel_kwargs), "test_dataset", label_column)
        results["raw_pixels"] = _run_probes(train, test, probes, k, temperature, linear_probe_kwargs)
    return results


def format_comparison(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of :func:`compare_with_random_init` results (rows: features, columns: probes)."""
    metrics = sorted({metric for scores in results.values() for metric in scores})
    width = max(len(name) for name in results) + 2
    lines = ["".ljust(width) + "".join(metric.rjust(20) for metric in metrics)]
    for name, scores in results.items():
        cells = "".join((f"{scores[m]:.4f}" if m in scores else "-").rjust(20) for m in metrics)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)
