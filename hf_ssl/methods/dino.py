"""DINO: self-distillation with no labels (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers", arXiv:2104.14294).

A student encoder + DINO head sees all crops (2 global + N local); an EMA teacher sees the global crops only. The
student is trained to match the teacher's centred, sharpened distribution over ``out_dim`` prototypes. The published
encoder is the teacher, the one the paper evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers import PretrainedConfig
from transformers.utils import ModelOutput, logging

from ..losses.dino import DINOLoss
from ..modules.backbones import image_features
from ..modules.heads import DINOHead
from ..schedules import linear_warmup
from .base import SSLMethodConfig, TrainingProgress, view_major
from .teacher import MomentumTeacherModel

logger = logging.get_logger(__name__)


@dataclass
class DINOConfig(SSLMethodConfig):
    """DINO hyperparameters (defaults: the paper's ViT-S/16 recipe, Caron et al. 2021 Appendix; small-budget
    recipes in ``recipes/configs`` override some).

    out_dim: prototypes K. hidden_dim / bottleneck_dim / head_layers: head MLP. use_batch_norm_in_head: BN in the
    head MLP (the paper's ResNet-50 setting). norm_last_layer: fix the prototypes' weight-norm gain to 1.
    student_temperature: T_s. teacher_temperature: T_t after warm-up, from warmup_teacher_temperature over
    warmup_teacher_temperature_epochs. center_momentum: m of the centre EMA. momentum_teacher: EMA momentum at step 0,
    cosine-scheduled to momentum_teacher_end. freeze_last_layer_epochs: epochs during which the prototypes (the
    head's last layer) get no update (stabilises the start; the paper: 1). freeze_last_layer_steps: the same in
    optimizer steps, used instead of freeze_last_layer_epochs when set: for runs budgeted in steps (``max_steps``)
    and for streamed data, whose one "epoch" is the whole run.

    The paper's optimisation settings that are training arguments, not model settings
    (:class:`hf_ssl.training.arguments.SSLTrainingArguments`): ``--weight_decay 0.04 --weight_decay_end 0.4`` (cosine
    weight-decay schedule) and ``--max_grad_norm 3.0 --gradient_clipping per_parameter`` (each parameter's gradient
    clipped on its own, the reference code's ``clip_gradients``).
    """

    method = "dino"

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_layers: int = 3
    use_batch_norm_in_head: bool = False
    norm_last_layer: bool = True
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    warmup_teacher_temperature: float = 0.04
    warmup_teacher_temperature_epochs: float = 0.0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    freeze_last_layer_epochs: float = 1.0
    freeze_last_layer_steps: int | None = None

    def __post_init__(self):
        if self.out_dim < 2:
            raise ValueError(f"out_dim must be >= 2, got {self.out_dim}")
        self.check_ranges(
            positive=("student_temperature", "teacher_temperature", "warmup_teacher_temperature"),
            unit_interval=("momentum_teacher", "momentum_teacher_end"),
        )
        if self.freeze_last_layer_epochs < 0:
            raise ValueError(f"freeze_last_layer_epochs must be >= 0, got {self.freeze_last_layer_epochs}")
        if self.freeze_last_layer_steps is not None and self.freeze_last_layer_steps < 0:
            raise ValueError(
                f"freeze_last_layer_steps must be >= 0 (or unset to use freeze_last_layer_epochs), got "
                f"{self.freeze_last_layer_steps}"
            )

    def frozen_last_layer_steps(self, steps_per_epoch: int) -> float:
        """Optimizer steps during which the prototypes are frozen: ``freeze_last_layer_steps`` when set, else
        ``freeze_last_layer_epochs x steps_per_epoch``."""
        if self.freeze_last_layer_steps is not None:
            return self.freeze_last_layer_steps
        return self.freeze_last_layer_epochs * steps_per_epoch


@dataclass
class DINOOutput(ModelOutput):
    """Output of :class:`DINOForPreTraining`.

    loss: scalar DINO loss (Eq. 3), a mean over view pairs and images.
    teacher_entropy: mean entropy of the teacher distribution (log K: uniform collapse; 0: one-prototype collapse).
    teacher_student_kl: mean KL(teacher || student) = loss - teacher_entropy.
    student_logits: ``(num_views * batch, out_dim)``, views stacked view-major.
    teacher_logits: ``(num_global_views * batch, out_dim)``.
    """

    loss: torch.Tensor | None = None
    teacher_entropy: torch.Tensor | None = None
    teacher_student_kl: torch.Tensor | None = None
    student_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None


class DINOForPreTraining(MomentumTeacherModel):
    """DINO student/teacher pair over any transformers vision encoder.

    Modules: ``student_encoder`` + ``student_head`` (trained), the teacher encoder under the encoder's native prefix
    (``vit``, ``resnet``, ``timm_model``: what vanilla transformers loads) + ``teacher_head`` (EMA, no gradients),
    and ``loss_fn`` holding the centre buffer. Everything is in ``state_dict`` and so in every checkpoint.

    Inputs: ``global_crops`` ``(batch, num_global, C, H, W)`` and optionally ``local_crops``
    ``(batch, num_local, C, h, w)`` (see :class:`hf_ssl.views.MultiCropTransform`). Crops of one resolution go
    through the encoder in one forward pass.
    """

    method_config_class = DINOConfig
    paper = "Caron et al. 2021. Emerging Properties in Self-Supervised Vision Transformers. arXiv:2104.14294"
    #: The image job draws the last layer's CLS attention per head (the paper's Figs. 1 and 3) for a ViT encoder:
    #: ``attention_maps.png`` in the run folder and its card (:mod:`hf_ssl.evaluation.attention_maps`).
    attention_map_figure: ClassVar[bool] = True

    def __init__(self, config: PretrainedConfig):
        super().__init__(config)
        settings: DINOConfig = self.method_config
        head_settings = dict(
            out_dim=settings.out_dim,
            hidden_dim=settings.hidden_dim,
            bottleneck_dim=settings.bottleneck_dim,
            num_layers=settings.head_layers,
            use_batch_norm=settings.use_batch_norm_in_head,
            norm_last_layer=settings.norm_last_layer,
        )
        self.build_student_and_teacher(lambda in_dim: DINOHead(in_dim, **head_settings), "student_head", "teacher_head")
        self.loss_fn = DINOLoss(settings.out_dim, settings.student_temperature, settings.center_momentum)
        self.post_init()
        self.init_teachers()
        self._teacher_temperature = settings.warmup_teacher_temperature
        self._freeze_last_layer = True
        self._warned_frozen_run = False

    # ----------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> DINOOutput:
        if global_crops.dim() != 5:
            raise ValueError(
                "global_crops must be (batch, num_global, channels, height, width); got shape "
                f"{tuple(global_crops.shape)}. Build batches with hf_ssl.views.MultiCropTransform + "
                "hf_ssl.data.collators.stack_views."
            )
        num_global = global_crops.shape[1]
        if num_global < 1 or num_global + (0 if local_crops is None else local_crops.shape[1]) < 2:
            raise ValueError("DINO needs at least 2 crops per image (e.g. 2 global, or 1 global + local crops)")
        global_flat = view_major(global_crops)
        # The encoder per view (see image_features), one head pass over all crops (BatchNorm in the head then sees
        # every crop, as in the reference implementation).
        features = [image_features(self.student_encoder, global_flat, views=num_global)]
        if local_crops is not None and local_crops.shape[1] > 0:
            features.append(image_features(self.student_encoder, view_major(local_crops), views=local_crops.shape[1]))
        student_logits = self.student_head(torch.cat(features))
        with torch.no_grad():
            teacher_logits = self.teacher_head(image_features(self.encoder, global_flat, views=num_global))

        loss, stats = self.loss_fn(student_logits, teacher_logits, num_global, self._teacher_temperature)
        return DINOOutput(
            loss=loss,
            teacher_entropy=stats["teacher_entropy"],
            teacher_student_kl=stats["teacher_student_kl"],
            student_logits=student_logits,
            teacher_logits=teacher_logits,
        )

    # ----------------------------------------------------------------------------------------------------------------
    # Per-step interface
    def set_progress(self, progress: TrainingProgress) -> None:
        super().set_progress(progress)  # teacher momentum
        settings: DINOConfig = self.method_config
        warmup_steps = round(settings.warmup_teacher_temperature_epochs * progress.steps_per_epoch)
        self._teacher_temperature = linear_warmup(
            progress.step, warmup_steps, settings.warmup_teacher_temperature, settings.teacher_temperature
        )
        frozen_steps = settings.frozen_last_layer_steps(progress.steps_per_epoch)
        self._freeze_last_layer = progress.step < frozen_steps
        if progress.step == 0 and 0 < progress.max_steps <= frozen_steps and not self._warned_frozen_run:
            self._warned_frozen_run = True
            logger.warning(
                "the prototypes (DINO's last layer) stay frozen for the whole run: %g frozen steps >= max_steps %d "
                "(an epoch is %d steps); set freeze_last_layer_steps, or lower freeze_last_layer_epochs",
                frozen_steps, progress.max_steps, progress.steps_per_epoch,
            )

    def before_optimizer_step(self, progress: TrainingProgress) -> None:
        # DINO cancels the prototypes' gradients during the first epoch(s); with grad None, AdamW skips them
        # entirely (no weight decay either), as in the reference implementation.
        if self._freeze_last_layer:
            for parameter in self.student_head.last_layer_parameters:
                parameter.grad = None

    def schedule_values(self) -> dict[str, float]:
        return {**super().schedule_values(), "teacher_temperature": self._teacher_temperature}

