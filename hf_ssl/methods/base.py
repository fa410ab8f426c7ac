"""What every pretraining method shares: the checkpoint layout and the per-step interface the trainer calls.

Checkpoint layout (why vanilla transformers loads our checkpoints, see :mod:`.published_layout`): the model's
``config`` *is* the encoder's config (``ViTConfig``, ``ResNetConfig``, ``TimmWrapperConfig``, ...) with one extra field,
``ssl_config`` (the method's hyperparameters as a dict, ``{"method": "dino", ...}``). ``model.safetensors`` holds the
published encoder's weights alone, under the encoder's native prefix (``vit.``, ``resnet.``, ``timm_model.``), exactly
where ``AutoModel`` and ``AutoModelForImageClassification`` look for them; every other weight (student, heads, centre,
queue) sits beside it in ``ssl_state.safetensors``. So ``AutoModel.from_pretrained(out_dir)`` without hf_ssl gives the
published encoder with no load report, and ``hf_ssl.AutoSSLModel.from_pretrained(out_dir)`` gives the whole pretraining
model back.

Per-step interface (the trainer never asks which method it runs; see ``hf_ssl.training.callbacks.SSLMethodCallback``):
``set_progress`` before each optimizer step's forward passes (schedules), ``before_optimizer_step`` after backward
(gradient surgery such as DINO's frozen last layer), ``after_optimizer_step`` (EMA teachers, queues).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.functional import cross_entropy
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from ..modules.backbones import build_encoder, feature_dim, image_features
from ..modules.initialization import init_head_weights
from ..schedules import TrainingProgress
from ..views.rotations import ROTATION_DEGREES, random_rotations
from .published_layout import (
    HUB_KWARGS,
    encoder_prefixes,
    load_published_layout,
    published_names,
    split_published_root,
    vanilla_only_weights,
)

METHOD_REGISTRY: dict[str, type[SSLPreTrainedModel]] = {}
#: The jobs whose methods train an image encoder on image views: those where ``auxiliary_rotation_weight`` applies.
IMAGE_PRETRAINING_JOBS = ("image", "masked_image", "indexed_image", "deepcluster")


@dataclass
class SSLMethodConfig:
    """Base of the methods' hyperparameter dataclasses. Stored as ``encoder_config.ssl_config`` (a dict).

    auxiliary_rotation_weight: image methods only; > 0 adds that weight times a rotation-prediction loss to the
        method's loss (see :func:`add_auxiliary_rotation_loss`). Saved in ``to_dict`` only when set.
    """

    method: ClassVar[str] = ""

    auxiliary_rotation_weight: float = field(
        default=0.0, kw_only=True,
        metadata={"help": "Image methods: add this weight x a rotation-prediction loss (Gidaris et al. 2018: each view "
                  "rotated by a random multiple of 90 degrees, a 4-way linear head on the trained encoder's feature); "
                  "costs one more encoder pass per view. 0: off."},
    )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if not values["auxiliary_rotation_weight"]:  # an option every method shares: recorded where it is used
            del values["auxiliary_rotation_weight"]
        return {"method": self.method, **values}

    def check_ranges(
        self, *, at_least_one: tuple[str, ...] = (), positive: tuple[str, ...] = (), unit_interval: tuple[str, ...] = ()
    ) -> None:
        """Refuse impossible settings (called from subclasses' ``__post_init__``), naming the field and the range."""
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in unit_interval:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SSLMethodConfig:
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - names - {"method"}
        if unknown:
            raise ValueError(f"unknown {cls.method} settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{key: value for key, value in values.items() if key in names})


class SSLPreTrainedModel(PreTrainedModel):
    """Base class of every pretraining model in hf_ssl.

    Subclasses set ``method_config_class`` and build their modules in ``__init__(config)``, registering the
    published encoder with :meth:`register_published_encoder`.
    """

    method_config_class: ClassVar[type[SSLMethodConfig]] = SSLMethodConfig
    #: Which :mod:`hf_ssl.jobs` job prepares data and evaluation for this method ("image", "text", ...).
    pretraining_job: ClassVar[str] = "image"
    #: The paper, for model cards: "Authors Year. Title. arXiv:NNNN.NNNNN".
    paper: ClassVar[str] = ""
    config_class = PretrainedConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    # The losses are means over the local batch; Trainer divides by the accumulation steps itself (transformers
    # #37766: a model that accepts loss kwargs must normalise by num_items_in_batch instead).
    accepts_loss_kwargs = False
    supports_gradient_checkpointing = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        method = cls.method_config_class.method
        if method:
            METHOD_REGISTRY[method] = cls

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        self.method_config = self.method_config_class.from_dict(_ssl_config(config, self.method_config_class.method))

    @classmethod
    def from_encoder_config(cls, encoder_config: PretrainedConfig, **method_kwargs) -> SSLPreTrainedModel:
        """A new model (random init) for ``encoder_config`` with the method's hyperparameters ``method_kwargs``."""
        config = encoder_config.__class__.from_dict(encoder_config.to_dict())
        config.ssl_config = cls.method_config_class.from_dict(method_kwargs).to_dict()
        return cls(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, **kwargs):
        """As ``PreTrainedModel.from_pretrained``; the config is read with ``AutoConfig`` (it is the encoder's).

        Reads both files of the published layout (``model.safetensors`` and ``ssl_state.safetensors``, see
        :mod:`.published_layout`) through transformers' loading, key conversions included; a folder of the earlier
        layout (every weight in ``model.safetensors``) loads as it always did.
        """
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        if config is None:
            config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        state = (load_published_layout(str(pretrained_model_name_or_path), **hub_kwargs)
                 if pretrained_model_name_or_path is not None and "state_dict" not in kwargs else None)
        if state is None:
            return super().from_pretrained(pretrained_model_name_or_path, *args, config=config, **kwargs)
        loading = {key: value for key, value in kwargs.items() if key not in HUB_KWARGS}
        return super().from_pretrained(None, *args, config=config, state_dict=state, **loading)

    def save_pretrained(self, save_directory, *args, state_dict=None, is_main_process: bool = True, **kwargs):
        """As ``PreTrainedModel.save_pretrained``, in the published layout (:mod:`.published_layout`): the published
        model's weights in ``model.safetensors``, the rest of the method's state in ``ssl_state.safetensors``."""
        vanilla_only = vanilla_only_weights(self, self.encoder)
        state = dict(self.state_dict() if state_dict is None else state_dict)
        state.update({key: value for key, value in vanilla_only.items() if key not in state})
        super().save_pretrained(save_directory, *args, state_dict=state, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            split_published_root(save_directory, self.published_prefixes(), published_names(self, vanilla_only))

    def published_prefixes(self) -> tuple[str, ...]:
        """Module paths (or parameter names) whose weights ``model.safetensors`` keeps: those of the published encoder
        (``("vit",)``; a dual encoder's towers, projections and ``logit_scale``). Override to publish a head that the
        vanilla class serves as well (masked-LM: the ``fill-mask`` head)."""
        return encoder_prefixes(self, self.encoder)

    def post_init(self):
        """transformers' ``post_init`` (weight initialisation, called at the end of each method's ``__init__``), after
        adding the auxiliary rotation head and its loss when ``auxiliary_rotation_weight > 0``."""
        weight = self.method_config.auxiliary_rotation_weight
        if weight < 0:
            raise ValueError(f"auxiliary_rotation_weight must be >= 0, got {weight}")
        if weight > 0 and "auxiliary_rotation_head" not in self._modules:
            if self.pretraining_job not in IMAGE_PRETRAINING_JOBS:
                raise ValueError(
                    f"auxiliary_rotation_weight applies to image methods; {self.method_config.method} pretrains on "
                    f"{self.pretraining_job} data: leave it at 0"
                )
            self.auxiliary_rotation_head = nn.Linear(feature_dim(self.trained_encoder()), len(ROTATION_DEGREES))
            self.register_forward_hook(add_auxiliary_rotation_loss, with_kwargs=True)
        super().post_init()

    def trained_encoder(self) -> nn.Module:
        """The encoder the loss's gradient trains: the student (``student_encoder``) of teacher-student methods,
        else the published encoder."""
        student = self._modules.get("student_encoder")
        return student if student is not None else self.encoder

    def _init_weights(self, module):
        # Encoders are PreTrainedModels and keep their own initialisation; this only reaches the method's heads.
        init_head_weights(module)

    def get_input_embeddings(self) -> nn.Module | None:
        """The published encoder's input embeddings, or ``None`` where it has none. accelerate's FSDP2 preparation
        asks every model for them; transformers' default raises for a model without a base model prefix."""
        try:
            return self.encoder.get_input_embeddings()
        except NotImplementedError:
            return None

    # ----------------------------------------------------------------------------------------------------------------
    # The published encoder
    def build_encoder(self) -> PreTrainedModel:
        """A fresh encoder from this model's config (without the ``ssl_config`` field)."""
        encoder_config = self.config.__class__.from_dict(
            {k: v for k, v in self.config.to_dict().items() if k != "ssl_config"}
        )
        return build_encoder(encoder_config)

    def register_published_encoder(self, encoder: PreTrainedModel) -> None:
        """Register ``encoder`` so that its weights are saved under its native prefix.

        Most encoders (``ViTModel``) keep their weights at the top level and classification heads nest them under
        ``base_model_prefix`` (``vit.``): we register the encoder itself under that prefix. Wrappers such as
        ``TimmWrapperModel`` already keep every weight under their prefix (``timm_model.``): we register the inner
        module under it, so the saved keys are the ones ``TimmWrapperForImageClassification`` expects.
        """
        prefix = encoder.base_model_prefix
        inner = getattr(encoder, prefix, None)
        keys = list(encoder.state_dict())
        if isinstance(inner, nn.Module) and keys and all(key.startswith(prefix + ".") for key in keys):
            self.add_module(prefix, inner)
        else:
            self.add_module(prefix, encoder)
        # Plain attribute, not a submodule: the weights are registered once, above.
        object.__setattr__(self, "_published_encoder", encoder)

    @property
    def encoder(self) -> PreTrainedModel:
        """The encoder that vanilla ``AutoModel.from_pretrained`` restores (DINO: the teacher)."""
        return self._published_encoder

    def train(self, mode: bool = True):
        super().train(mode)
        encoder = self.__dict__.get("_published_encoder")
        if encoder is not None:
            encoder.training = mode
        return self

    # ----------------------------------------------------------------------------------------------------------------
    # Per-step interface, called by hf_ssl.training.callbacks.SSLMethodCallback
    def set_progress(self, progress: TrainingProgress) -> None:
        """Called before the forward passes of each optimizer step: update scheduled values."""

    def before_optimizer_step(self, progress: TrainingProgress) -> None:
        """Called after gradients are complete (and clipped), before ``optimizer.step()``."""

    def after_optimizer_step(self, progress: TrainingProgress) -> None:
        """Called after ``optimizer.step()``: EMA teachers, queues."""

    def schedule_values(self) -> dict[str, float]:
        """Current values of the method's schedules, logged by the trainer (e.g. ``{"momentum": 0.996}``)."""
        return {}

    def learning_rate_scales(self) -> dict[str, float]:
        """``{submodule name: factor}``: parameters under these submodules train at ``factor`` x the learning rate,
        schedule included (``SSLTrainer`` gives them their own optimizer groups). Default: ``{"predictor":
        predictor_learning_rate_scale}`` for a method config with that field (BYOL, SimSiam, MoCo v3), else none.

        E.g. BYOL / SimSiam ``{"predictor": 10.0}``: a predictor that adapts faster than the encoder stays near its
        optimum, which is what makes the non-contrastive objectives learn (Grill et al. 2020 §5 and Appendix I;
        Tian et al. 2021, "Understanding self-supervised learning dynamics without contrastive pairs")."""
        scale = getattr(self.method_config, "predictor_learning_rate_scale", None)
        return {} if scale is None else {"predictor": scale}

    def fixed_learning_rate_modules(self) -> list[str]:
        """Submodule names whose learning rate stays fixed at its (scaled) peak: no warm-up, no decay.

        Default: ``["predictor"]`` when the method config has ``predictor_fixed_learning_rate=True`` (BYOL, SimSiam).
        Chen & He 2021 §4.4 ("Predictor"): a predictor without lr decay works better, since it must keep adapting to
        the latest representations; Tian et al. 2021 explain why (the predictor should track the feature correlation).
        """
        return ["predictor"] if getattr(self.method_config, "predictor_fixed_learning_rate", False) else []

    # ----------------------------------------------------------------------------------------------------------------
    def two_view_pixels(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        """Check a two-view batch (SimCLR, BYOL, SimSiam, MoCo) and flatten it view-major.

        ``global_crops (batch, 2, C, H, W) -> (2 * batch, C, H, W)``, all first views first.
        """
        name = type(self).__name__
        if global_crops.dim() != 5 or global_crops.shape[1] != 2:
            raise ValueError(
                f"{name} needs exactly 2 views per image: global_crops of shape (batch, 2, channels, height, width); "
                f"got {tuple(global_crops.shape)}. Build views with hf_ssl.views.MultiCropTransform with "
                "num_global_crops=2 (and hf_ssl.data.collators.stack_views)."
            )
        if local_crops is not None and local_crops.shape[1] > 0:
            raise ValueError(f"{name} uses no local crops, got {local_crops.shape[1]} per image; set num_local_crops=0")
        return view_major(global_crops)


def view_major(crops: torch.Tensor) -> torch.Tensor:
    """``(batch, views, C, H, W) -> (views * batch, C, H, W)`` with all images of view 0 first."""
    return crops.transpose(0, 1).reshape(-1, *crops.shape[2:])


def cross_view_loss(
    loss_fn, queries: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The symmetric two-view loss of BYOL, SimSiam and MoCo: ``loss_fn(q1, t2)`` and ``loss_fn(q2, t1)``, averaged.

    ``queries``, ``targets``: ``(2 * batch, dim)``, view-major (rows ``:batch`` are view 1). ``loss_fn(q, t)`` returns
    ``(loss, stats)``; the result is the mean loss and each statistic averaged over the two directions.
    """
    batch = queries.shape[0] // 2
    loss_12, stats_12 = loss_fn(queries[:batch], targets[batch:])
    loss_21, stats_21 = loss_fn(queries[batch:], targets[:batch])
    return (loss_12 + loss_21) / 2, {name: (stats_12[name] + stats_21[name]) / 2 for name in stats_12}


def add_auxiliary_rotation_loss(model: SSLPreTrainedModel, args: tuple, kwargs: dict, output):
    """Forward hook of an image method with ``auxiliary_rotation_weight > 0`` (rotation prediction as an auxiliary
    task, Gidaris et al. 2018, arXiv:1803.07728): each view of the batch (``global_crops (B, V, C, H, W)``, or
    ``pixel_values (B, C, H, W)``) is rotated by a random multiple of 90 degrees (:func:`random_rotations`, the global
    torch RNG, restored on resume), encoded by :meth:`SSLPreTrainedModel.trained_encoder`, and classified by
    ``auxiliary_rotation_head``; ``output.loss`` becomes ``loss + weight * cross_entropy`` and
    ``output.auxiliary_rotation_loss`` holds the cross-entropy (logged with the other diagnostics). Outputs without a
    loss (``return_loss=False``) pass unchanged."""
    loss = output.get("loss") if isinstance(output, dict) else None
    if loss is None:
        return output
    pixels = kwargs.get("global_crops", kwargs.get("pixel_values", args[0] if args else None))
    expected = "global_crops (batch, views, C, H, W) or pixel_values (batch, C, H, W)"
    if pixels is None:
        raise TypeError(f"the auxiliary rotation loss needs the batch's images: {expected}")
    if pixels.dim() not in (4, 5):
        raise ValueError(f"the auxiliary rotation loss needs {expected}, got a tensor of shape {tuple(pixels.shape)}")
    rotated, labels = random_rotations(view_major(pixels) if pixels.dim() == 5 else pixels)
    logits = model.auxiliary_rotation_head(image_features(model.trained_encoder(), rotated))
    rotation_loss = cross_entropy(logits.float(), labels)
    output["loss"] = loss + model.method_config.auxiliary_rotation_weight * rotation_loss
    output["auxiliary_rotation_loss"] = rotation_loss.detach()
    return output


def _ssl_config(config: PretrainedConfig, method: str) -> dict[str, Any]:
    values = getattr(config, "ssl_config", None)
    if not isinstance(values, dict):
        raise ValueError(
            f"this config has no `ssl_config`; build the model with {method!r} settings through "
            "`<ModelClass>.from_encoder_config(encoder_config, ...)` or load an hf_ssl checkpoint"
        )
    if values.get("method", method) != method:
        raise ValueError(
            f"this checkpoint was pretrained with {values.get('method')!r}, not {method!r}; load it with "
            "hf_ssl.AutoSSLModel.from_pretrained"
        )
    return {key: value for key, value in values.items() if key != "method"}


class AutoSSLModel:
    """Loads any hf_ssl checkpoint as its full pretraining model, choosing the class from ``ssl_config.method``."""

    @staticmethod
    def from_pretrained(pretrained_model_name_or_path, **kwargs) -> SSLPreTrainedModel:
        # The Hub arguments (token for private repositories, revision, cache) apply to the config too.
        hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        method = (getattr(config, "ssl_config", None) or {}).get("method")
        if method not in METHOD_REGISTRY:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not an hf_ssl pretraining checkpoint (ssl_config.method is "
                f"{method!r}; known methods: {sorted(METHOD_REGISTRY)}). Load a plain encoder with "
                "transformers.AutoModel instead."
            )
        return METHOD_REGISTRY[method].from_pretrained(pretrained_model_name_or_path, config=config, **kwargs)
