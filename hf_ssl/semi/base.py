"""What every semi-supervised method shares: its settings, the per-step objective on a labelled and an unlabelled
batch of any transformers classifier, the ramp-up of the unsupervised weight, the optional EMA of the classifier, and
the diagnostics.

A method is an ``nn.Module`` that holds no copy of the classifier's trainable weights: the classifier stays the
trainer's model (an ``AutoModelFor{Image,Sequence,Audio}Classification``), so the result is an ordinary checkpoint of
that classifier. What a method keeps besides (an EMA teacher, running class statistics, per-example memories) lives in
its own ``state_dict``, which the trainer saves with every checkpoint.

Per step, the trainer calls :meth:`SemiSupervisedMethod.compute_loss` (inside the forward/backward of ``Trainer``)
and, after the optimizer step, :meth:`SemiSupervisedMethod.after_optimizer_step`. It never asks which method it runs.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F
from transformers.utils import ModelOutput

from ..distributed import all_reduce_sum, has_batch_norm
from ..losses.consistency import PseudoLabels
from ..modules.ema import ema_update_, make_teacher
from ..schedules import TrainingProgress
from ..views.mixing import LabelledBatchMixer

#: Every semi-supervised method by name (``SemiSupervisedConfig.method``), filled by subclassing.
SEMI_METHOD_REGISTRY: dict[str, type[SemiSupervisedMethod]] = {}
RAMPUP_SHAPES = ("sigmoid", "linear")


@dataclass
class SemiSupervisedConfig:
    """The settings every method has; subclasses add theirs and set the paper's defaults.

    unlabelled_batch_ratio: ``mu``, unlabelled examples per labelled example in a batch (FixMatch: 7).
    unsupervised_weight: ``lambda_u``, the weight of the unsupervised term once ramped up.
    rampup_fraction: share of the training steps over which the weight ramps up from 0 (0: no ramp-up).
    rampup_steps: the ramp-up's length in optimizer steps, used instead of ``rampup_fraction * max_steps`` when > 0:
        the papers' own form (Laine & Aila 2017: 80 epochs; MixMatch: 16,000 steps), and the one that works when a
        time limit (``--max_train_minutes``), not ``max_steps``, ends training (a fraction of a nominal ``max_steps``
        far beyond the steps run would keep the weight near 0 throughout).
    rampup_shape: ``"sigmoid"`` (``exp(-5 (1 - t)^2)``, Laine & Aila 2017 §3.1) or ``"linear"`` (Lee 2013).
    ema_decay: decay of an exponential moving average of the classifier, parameters and BatchNorm buffers (timm's
        ``ModelEmaV2``), evaluated and published instead of the trained weights; ``None``: no EMA.
    mixup_alpha / cutmix_alpha: mix the labelled image batches with mixup / CutMix (Beta(alpha, alpha); 0: off; both:
        one of them per batch) and learn from the soft targets (:class:`hf_ssl.views.mixing.LabelledBatchMixer`).
        Label smoothing is ``TrainingArguments.label_smoothing_factor``. Both regularise every method, the
        supervised-only baseline included.
    ema_warmup: use ``min(ema_decay, 1 - 1 / (n + 1))`` at the n-th update (Mean Teacher's reference code, Tarvainen
        & Valpola 2017), so the EMA starts as the plain average of the weights so far instead of being dominated by
        the initial ones for ~1 / (1 - ema_decay) steps: at 0.999, a 300-step run would otherwise publish an average
        that is still 74 % initial weights.
    """

    method: ClassVar[str] = ""
    #: The views of each unlabelled example, in order (see :class:`hf_ssl.data.streams.TwoStreamDataset`).
    unlabelled_views: ClassVar[tuple[str, ...]] = ("weak",)

    unlabelled_batch_ratio: int = 1
    unsupervised_weight: float = 1.0
    rampup_fraction: float = 0.0
    rampup_steps: int = 0
    rampup_shape: str = "sigmoid"
    ema_decay: float | None = None
    ema_warmup: bool = True
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        if self.unlabelled_batch_ratio < 1:
            raise ValueError(f"unlabelled_batch_ratio must be >= 1, got {self.unlabelled_batch_ratio}")
        if self.unsupervised_weight < 0:
            raise ValueError(f"unsupervised_weight must be >= 0, got {self.unsupervised_weight}")
        if not 0.0 <= self.rampup_fraction <= 1.0:
            raise ValueError(f"rampup_fraction must be in [0, 1], got {self.rampup_fraction}")
        if self.rampup_steps < 0:
            raise ValueError(f"rampup_steps must be >= 0, got {self.rampup_steps}")
        if self.rampup_shape not in RAMPUP_SHAPES:
            raise ValueError(f"rampup_shape must be one of {RAMPUP_SHAPES}, got {self.rampup_shape!r}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {self.mixup_alpha} and {self.cutmix_alpha}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SemiSupervisedConfig:
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(values) - names - {"method"}
        if unknown:
            raise ValueError(f"unknown {cls.method} settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**{key: value for key, value in values.items() if key in names})


def rampup(step: int, length: float, shape: str = "sigmoid") -> float:
    """The ramp-up factor in [0, 1] at ``step`` of a ramp-up ``length`` steps long: ``exp(-5 (1 - step/length)^2)``
    (Laine & Aila 2017 §3.1; Tarvainen & Valpola 2017) or ``step / length``; 1 after it, and always 1 for length 0."""
    if length <= 0 or step >= length:
        return 1.0
    progress = max(step, 0) / length
    return math.exp(-5.0 * (1.0 - progress) ** 2) if shape == "sigmoid" else progress


@dataclass
class SemiSupervisedOutput(ModelOutput):
    """Result of a method's step.

    loss: scalar, ``supervised_loss + unsupervised_weight * unsupervised_loss``.
    supervised_loss: scalar, cross-entropy on the labelled batch. unsupervised_loss: scalar, the method's term on the
    unlabelled batch. unsupervised_weight: its current weight (ramp-up included).
    diagnostics: scalars logged with the loss (mask rate, pseudo-label accuracy on audit labels, class counts).
    """

    loss: torch.Tensor | None = None
    supervised_loss: torch.Tensor | None = None
    unsupervised_loss: torch.Tensor | None = None
    unsupervised_weight: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] | None = None


class SemiSupervisedMethod(nn.Module, abc.ABC):
    """Base of the semi-supervised methods; see the module docstring.

    Subclasses set ``config_class`` and ``paper`` and implement :meth:`compute_loss`; :meth:`setup` builds what
    depends on the classifier and the data (the EMA copy; per-example memories), before training and before a
    checkpoint's state is loaded.
    """

    config_class: ClassVar[type[SemiSupervisedConfig]] = SemiSupervisedConfig
    #: The paper, for model cards: "Authors Year. Title. arXiv:NNNN.NNNNN".
    paper: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.config_class.method:
            SEMI_METHOD_REGISTRY[cls.config_class.method] = cls

    def __init__(self, config: SemiSupervisedConfig | None = None, **settings):
        super().__init__()
        if config is not None and settings:
            raise ValueError("pass a config or keyword settings, not both")
        self.config = config if config is not None else self.config_class(**settings)
        self.ema_model: nn.Module | None = None
        self.label_smoothing = 0.0
        self.num_classes = 0
        self.labelled_mixer: LabelledBatchMixer | None = None

    @property
    def unlabelled_views(self) -> tuple[str, ...]:
        return self.config.unlabelled_views

    def setup(self, model: nn.Module, *, num_unlabelled: int, labelled_class_counts: torch.Tensor | None = None) -> None:
        """Build what depends on the classifier and the data: an EMA copy when ``ema_decay`` is set (frozen: out of the
        optimizer and of DDP). Subclasses extend it (class priors, per-example memories)."""
        self.num_classes = int(model.config.num_labels)
        if self.config.mixup_alpha > 0 or self.config.cutmix_alpha > 0:
            self.labelled_mixer = LabelledBatchMixer(self.num_classes, self.config.mixup_alpha, self.config.cutmix_alpha)
        if self.config.ema_decay is not None and self.ema_model is None:
            self.ema_model = make_teacher(model)
            self.ema_model.eval()

    @abc.abstractmethod
    def compute_loss(
        self, model: nn.Module, labelled: dict[str, torch.Tensor], unlabelled: dict[str, Any], progress: TrainingProgress
    ) -> SemiSupervisedOutput:
        """The step's loss. ``labelled``: the classifier's inputs and ``labels`` ``(B,)``; ``unlabelled``:
        ``{"views": [inputs of each view in unlabelled_views], "indices": (mu B,), "audit_labels": (mu B,)
        (optional)}``. ``audit_labels`` may only feed :meth:`diagnostics`, never the loss."""

    def mix_labelled(self, labelled: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The labelled training batch, mixed with mixup / CutMix when the config asks (labels become ``(B, K)``
        probabilities), else as it is."""
        return self.labelled_mixer(labelled) if self.labelled_mixer is not None else labelled

    def after_optimizer_step(self, model: nn.Module, progress: TrainingProgress) -> None:
        """After ``optimizer.step()``: the EMA follows the classifier (parameters and BatchNorm buffers)."""
        if self.ema_model is not None:
            ema_update_(self.ema_model, model, self.ema_momentum(progress), include_buffers=True)

    def ema_momentum(self, progress: TrainingProgress) -> float:
        """The EMA's decay for the update after optimizer step ``progress.step + 1`` (see ``ema_warmup``)."""
        updates = progress.step + 1  # the trainer reports the steps completed before this update
        if not self.config.ema_warmup:
            return self.config.ema_decay
        return min(self.config.ema_decay, 1.0 - 1.0 / (updates + 1))

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """The classifier to evaluate and publish: the EMA when there is one, else the trained one."""
        return self.ema_model if self.ema_model is not None else model

    def unsupervised_weight(self, progress: TrainingProgress) -> float:
        """``lambda_u`` times the ramp-up factor at this step."""
        length = self.config.rampup_steps or self.config.rampup_fraction * max(progress.max_steps, 1)
        return self.config.unsupervised_weight * rampup(progress.step, length, self.config.rampup_shape)

    # ----------------------------------------------------------------------------------------------------------------
    def supervised_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the labelled batch (with ``TrainingArguments.label_smoothing_factor``, set by the trainer):
        ``labels`` are class indices ``(B,)``, or probabilities ``(B, K)`` after mixup / CutMix. Class indices outside
        ``[0, num_labels)`` are refused with the fix."""
        if labels.dim() == 2:  # soft targets (mixed batches)
            return F.cross_entropy(logits.float(), labels.float(), label_smoothing=self.label_smoothing)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1]):
            raise ValueError(
                f"labels must lie in [0, {logits.shape[-1]}) (the classifier's num_labels), got "
                f"[{int(labels.min())}, {int(labels.max())}]; load the classifier with num_labels= the class count"
            )
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def combine(
        self, supervised: torch.Tensor, unsupervised: torch.Tensor, progress: TrainingProgress,
        diagnostics: dict[str, torch.Tensor],
    ) -> SemiSupervisedOutput:
        weight = self.unsupervised_weight(progress)
        return SemiSupervisedOutput(
            loss=supervised + weight * unsupervised, supervised_loss=supervised.detach(),
            unsupervised_loss=unsupervised.detach(), unsupervised_weight=torch.tensor(weight), diagnostics=diagnostics,
        )

    def diagnostics(self, pseudo: PseudoLabels, audit_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``mask_rate`` (share of unlabelled examples whose pseudo-label is kept), ``pseudo_label_accuracy`` (of the
        kept ones, against audit labels when the unlabelled data secretly has them; benchmarks only) and
        ``pseudo_labels_class_<c>`` (kept pseudo-labels per class, per step)."""
        with torch.no_grad():
            values = {"mask_rate": pseudo.mask.mean()}
            counts = torch.bincount(pseudo.labels[pseudo.mask > 0], minlength=self.num_classes).float()
            values.update({f"pseudo_labels_class_{c}": counts[c] for c in range(self.num_classes)})
            if audit_labels is not None:
                kept = pseudo.mask > 0
                correct = (pseudo.labels == audit_labels.to(pseudo.labels.device)).float()
                values["pseudo_label_accuracy"] = (correct * kept).sum() / kept.sum().clamp(min=1)
                values["pseudo_label_accuracy_all"] = correct.mean()
        return values


def prediction_labels(logits: torch.Tensor) -> PseudoLabels:
    """A prediction's argmax as pseudo-labels, all kept: the diagnostics of methods whose targets are distributions
    (a teacher's, another view's), not thresholded labels."""
    confidence, labels = logits.detach().float().softmax(dim=-1).max(dim=-1)
    return PseudoLabels(labels, confidence, torch.ones_like(confidence))


def split_labels(labelled: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A labelled batch as ``(the classifier's inputs, labels (B,))``."""
    return {key: value for key, value in labelled.items() if key != "labels"}, labelled["labels"]


def as_embeddings(classifier: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A text batch with ``input_ids`` replaced by their embeddings (``inputs_embeds`` ``(B, L, D)``, from the
    classifier's own input embedding table, so they carry its gradient)."""
    embeddings = classifier.get_input_embeddings()(batch["input_ids"])
    return {**{key: value for key, value in batch.items() if key != "input_ids"}, "inputs_embeds": embeddings}


def join_batches(batches: list[dict[str, torch.Tensor]], pad_token: int = 0) -> dict[str, torch.Tensor] | None:
    """The batches concatenated along the batch dimension, sequences of different lengths (text tokenised per view,
    audio of different crops) right-padded to a common length first (``input_ids`` with ``pad_token``, everything
    else, attention masks included, with zeros); ``None`` when they cannot be joined (other keys or shapes)."""
    keys = set(batches[0])
    if any(set(batch) != keys for batch in batches):
        return None
    joint = {}
    for key in keys:
        tensors = [batch[key] for batch in batches]
        if any(tensor.dim() != tensors[0].dim() or tensor.shape[2:] != tensors[0].shape[2:] for tensor in tensors):
            return None
        length = max(tensor.shape[1] for tensor in tensors) if tensors[0].dim() >= 2 else None
        value = pad_token if key == "input_ids" else 0
        joint[key] = torch.cat([
            F.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, length - tensor.shape[1]), value=value)
            if length is not None and tensor.shape[1] != length else tensor
            for tensor in tensors
        ])
    return joint


def classifier_logits(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], targets_only: tuple[int, ...] = ()
) -> list[torch.Tensor]:
    """``model(**batch).logits`` for each batch.

    The batches go through ONE forward pass: a single pass is what DDP expects per backward, and BatchNorm then sees
    the joint batch, as in FixMatch's implementation. They are joined by :func:`join_batches` (with the model's pad
    token); batches that cannot be joined go through one pass each.

    ``targets_only``: the indices of batches whose logits only give targets, which the caller's loss detaches
    (FixMatch's and UDA's weak view, the Π-model's second view, VAT's clean prediction). In a model without BatchNorm
    each row's logits depend on that row alone, so these batches go through a second pass under ``torch.no_grad()``:
    the same loss and gradients, without keeping their activations or running their backward (FixMatch's weak view is
    7 of 15 parts of a step's rows). With BatchNorm they stay in the joint pass, for its batch statistics.
    """
    pad_token = getattr(getattr(model, "config", None), "pad_token_id", None) or 0
    detached = set(targets_only) if targets_only and passes_targets_alone(model) else set()
    trained = [index for index in range(len(batches)) if index not in detached]
    groups = [(trained, torch.is_grad_enabled()), (sorted(detached), False)]
    logits: list[torch.Tensor | None] = [None] * len(batches)
    for indices, gradients in groups:
        if not indices:
            continue
        with torch.set_grad_enabled(gradients):
            for index, output in zip(indices, _joint_logits(model, [batches[i] for i in indices], pad_token)):
                logits[index] = output
    return logits


def passes_targets_alone(model: nn.Module) -> bool:
    """Whether batches that only give targets may go through ``model`` in a no-grad pass of their own: when no
    BatchNorm ties a row's logits to the other rows of its pass (see :func:`classifier_logits`)."""
    return not has_batch_norm(model)


def _joint_logits(model: nn.Module, batches: list[dict[str, torch.Tensor]], pad_token: int) -> list[torch.Tensor]:
    """The logits of ``batches`` from one pass over them joined, or one pass each where they cannot be joined."""
    joint = join_batches(batches, pad_token)
    if joint is None:
        return [model(**batch).logits for batch in batches]
    sizes = [next(iter(batch.values())).shape[0] for batch in batches]
    return list(model(**joint).logits.split(sizes))


def global_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over the first dimension across every process (e.g. the batch mean of predicted class probabilities)."""
    total = all_reduce_sum(torch.cat([tensor.detach().sum(dim=0), tensor.new_tensor([tensor.shape[0]])]))
    return total[:-1] / total[-1].clamp(min=1)
