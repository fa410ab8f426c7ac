"""Vision encoders: build any transformers (or timm, through ``TimmWrapperModel``) encoder from its config, and
read one feature vector per image from it.

Why not ``AutoBackbone``: it returns feature maps per stage, not the pooled/CLS embedding SSL methods project, and
``AutoBackbone.from_pretrained(<local dir>)`` asks the Hub first in transformers 5.23+. ``AutoModel`` gives the base
encoder that vanilla ``AutoModel`` / ``AutoModelFor*Classification`` loading restores, which is what we publish.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

from ..distributed import has_batch_norm


def build_encoder(config: PretrainedConfig) -> PreTrainedModel:
    """Create the base encoder (``AutoModel``) for ``config`` at random init.

    Pooling layers that SSL heads never use (ViT's tanh pooler) are left out where the class allows it, so that no
    parameter sits without gradient under DDP.
    """
    model_class = _auto_model_class(config)
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(config, **kwargs)


def _auto_model_class(config: PretrainedConfig) -> type:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(config)]
    except KeyError as error:
        raise ValueError(
            f"transformers has no AutoModel for config type {type(config).__name__} (model_type "
            f"{config.model_type!r}); pass a vision config such as ViTConfig, ResNetConfig or TimmWrapperConfig."
        ) from error


def image_features(encoder: nn.Module, pixel_values: torch.Tensor, *, views: int = 1) -> torch.Tensor:
    """One embedding per image, the one SSL papers project and probe.

    Args:
        encoder: a transformers vision encoder (``ViTModel``, ``ResNetModel``, ``TimmWrapperModel``, ...).
        pixel_values: ``(batch, channels, height, width)``; with ``views > 1``, ``views`` view-major groups of equal
            size (``(views * n, C, H, W)``, all first views first, as ``view_major`` lays out a multi-view batch).
        views: on a CPU, an encoder without BatchNorm sees one group per pass (lightly's methods and the papers'
            reference loops also encode view by view). Same maths: each row of such an encoder is independent of the
            others. Faster on CPUs: one pass over two views of 128 images through the recipes' ViT makes activations
            (the MLP's intermediate: 51 MB) above glibc's largest mmap threshold (32 MiB), which are unmapped and
            faulted in again every step; per view they stay in the heap. With BatchNorm (ResNet) one pass keeps the
            batch statistics over every view; on GPUs one larger pass keeps the device busier.

    Returns:
        ``(batch, hidden)``: the CLS token of the last hidden state for token encoders (``(B, T, D)`` outputs, as
        ``ViTForImageClassification`` uses), else the encoder's pooled output (global average pool for CNNs).
    """
    if views > 1 and pixel_values.device.type == "cpu" and not has_batch_norm(encoder):
        return torch.cat([image_features(encoder, group) for group in pixel_values.chunk(views)])
    kwargs = {"interpolate_pos_encoding": True} if _accepts(encoder, "interpolate_pos_encoding") else {}
    outputs = encoder(pixel_values=pixel_values, **kwargs)
    hidden = outputs.last_hidden_state
    if hidden.dim() == 3:
        return hidden[:, 0]
    pooled = getattr(outputs, "pooler_output", None)
    if pooled is None:
        return hidden.mean(dim=tuple(range(2, hidden.dim())))
    return pooled.flatten(1)


def feature_dim(encoder: PreTrainedModel) -> int:
    """Width of :func:`image_features` for ``encoder``, read from its config or found with one dummy forward."""
    config = encoder.config
    for name in ("hidden_size", "num_features"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    if isinstance(getattr(config, "hidden_sizes", None), (list, tuple)):
        return config.hidden_sizes[-1]
    size = getattr(config, "image_size", 32)
    size = size if isinstance(size, int) else size[0]
    channels = getattr(config, "num_channels", 3)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = image_features(encoder, torch.zeros(1, channels, size, size)).shape[-1]
    encoder.train(was_training)
    return dim


def _accepts(module: nn.Module, argument: str) -> bool:
    return _forward_parameters(type(module)).__contains__(argument)


@functools.cache
def _forward_parameters(module_class: type) -> frozenset[str]:
    # Called on every forward pass: inspect.signature costs ~13 us, so read it once per class.
    return frozenset(inspect.signature(module_class.forward).parameters)


# Named ViT sizes (Touvron et al. 2021 DeiT-Ti / -S, Dosovitskiy et al. 2021 ViT-B) with a small-image patch size.
ENCODER_PRESETS: dict[str, dict] = {
    "vit-tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
    "vit-small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "vit-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def encoder_config(name: str, image_size: int, patch_size: int = 4, overrides: dict | None = None) -> PretrainedConfig:
    """Config of the encoder named ``name``.

    ``name`` is a preset (``vit-tiny``, ``vit-small``, ``vit-base``: ViTs for ``image_size`` with ``patch_size``),
    ``timm:<architecture>`` (a timm model through ``TimmWrapperConfig``, e.g. ``timm:resnet18``), or a local folder /
    Hub id holding a transformers config (its weights are not loaded: use ``init_from`` to start from weights).
    ``overrides`` replace config fields (e.g. ``{"num_hidden_layers": 6}``).
    """
    from transformers import AutoConfig, TimmWrapperConfig, ViTConfig

    overrides = dict(overrides or {})
    if name in ENCODER_PRESETS:
        config = ViTConfig(image_size=image_size, patch_size=patch_size, **ENCODER_PRESETS[name])
    elif name.startswith("timm:"):
        config = TimmWrapperConfig(architecture=name.split(":", 1)[1])
    else:
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"unknown encoder {name!r}: use a preset ({', '.join(ENCODER_PRESETS)}), 'timm:<architecture>', or "
                "a folder / Hub id with a transformers config.json"
            ) from error
        if hasattr(config, "image_size"):
            config.image_size = image_size
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"encoder config {type(config).__name__} has no field {key!r} (from the overrides)")
        setattr(config, key, value)
    check_patch_size(config, image_size)
    return config


def check_patch_size(config: PretrainedConfig, *crop_sizes: int) -> None:
    """Raise a clear error when a patch encoder cannot tile the crops (e.g. 32 px crops with 5 px patches)."""
    patch = getattr(config, "patch_size", None)
    if patch is None:
        return
    patch = patch if isinstance(patch, int) else patch[0]
    for size in crop_sizes:
        if patch > size or size % patch:
            divisors = [p for p in range(1, size + 1) if size % p == 0 and p > 1]
            raise ValueError(
                f"patch_size {patch} does not tile {size} px crops: choose a patch size that divides every crop size "
                f"(for {size} px: {divisors}) with `--encoder_config_overrides '{{\"patch_size\": N}}'` / "
                "`--patch_size N`, or change the crop sizes"
            )


def require_vit(config, method: str) -> None:
    """Raise a one-line error naming the fix unless ``config`` builds a ViT (``model_type == "vit"``): the methods
    whose heads read one prediction per patch token (MAE, colourisation, context encoder)."""
    model_type = getattr(config, "model_type", None)
    if model_type != "vit":
        raise ValueError(
            f"{method} needs a ViT encoder (ViTConfig); got model_type {model_type!r}. Use --encoder vit-tiny / "
            "vit-small / vit-base or a ViTConfig"
        )


def square_side(size) -> int:
    """The side of a square image or patch size given as an int or an ``(h, w)`` pair (ViT configs allow both)."""
    if isinstance(size, (list, tuple)):
        if size[0] != size[1]:
            raise ValueError(f"square images and patches only, got {tuple(size)}")
        return int(size[0])
    return int(size)
