"""Whole-checkpoint evaluation: the frozen-feature probes of a published encoder, and the same probes on its
architecture at random init and on raw pixels (the baselines a pretrained encoder must beat).

* :func:`evaluate_checkpoint`: probes for a checkpoint loaded with plain ``transformers.AutoModel``.
* :func:`compare_with_random_init`: pretrained vs random init vs raw pixels; :func:`format_comparison` prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modules.backbones import build_encoder
from .features import (
    check_image_dataset,
    encoder_image_size,
    extract_features,
    fixed_subset,
    module_device,
    published_encoder,
    raw_pixel_features,
)
from .knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_accuracy
from .linear_probe import linear_probe_accuracy

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
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
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
    check_image_dataset(train_dataset, image_column, "train_dataset")
    check_image_dataset(test_dataset, image_column, "test_dataset")
    train_dataset = fixed_subset(train_dataset, max_train_examples, 0, "max_train_examples")
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
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
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
    encoder = published_encoder(encoder)
    if not hasattr(encoder, "config"):
        raise ValueError("encoder has no transformers config; pass a transformers encoder (or an hf_ssl model).")
    device = module_device(encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random_encoder = build_encoder(encoder.config).to(device)
    check_image_dataset(train_dataset, image_column, "train_dataset")
    check_image_dataset(test_dataset, image_column, "test_dataset")
    train_dataset = fixed_subset(train_dataset, max_train_examples, seed, "max_train_examples")
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
            image_size=encoder_image_size(encoder),
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
