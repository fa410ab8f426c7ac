"""A per-step weight-decay schedule for the optimizer :class:`~hf_ssl.training.trainer.SSLTrainer` builds: DINO's
cosine 0.04 -> 0.4 (Caron et al. 2021, arXiv:2104.14294, Appendix "Implementation details"), for every method through
``SSLTrainingArguments.weight_decay_end``.

Which optimizer groups decay is decided once, when the optimizer is built (:func:`mark_decaying_groups`), from
transformers' own choice (every weight but biases and norms). The mark is a key of the param group, so it is saved with
the optimizer's state and comes back on resume. The value is a pure function of the optimizer step
(:func:`hf_ssl.schedules.weight_decay_schedule`), set at the start of every step: a resumed run decays step N exactly
as the uninterrupted run did.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import TrainerCallback

from ..schedules import weight_decay_schedule

#: Param-group key marking the groups whose weight decay the schedule sets (the others keep theirs, usually 0).
DECAYING_GROUP = "scheduled_weight_decay"


def _param_groups(optimizer) -> list[dict]:
    return getattr(optimizer, "optimizer", optimizer).param_groups  # accelerate's AcceleratedOptimizer wraps torch's


def mark_decaying_groups(optimizer, decaying_parameters: Iterable[torch.nn.Parameter]) -> None:
    """Mark each param group of ``optimizer`` whose parameters are all in ``decaying_parameters`` (Trainer's decay
    group: weights, not biases or norms) with ``DECAYING_GROUP``; the other groups are marked ``False``."""
    decaying = {id(parameter) for parameter in decaying_parameters}
    for group in _param_groups(optimizer):
        group[DECAYING_GROUP] = bool(group["params"]) and all(id(parameter) in decaying for parameter in group["params"])


class WeightDecaySchedule(TrainerCallback):
    """Sets the weight decay of the marked groups (:func:`mark_decaying_groups`) to
    ``weight_decay_schedule(global_step, max_steps, start, end)`` at the start of every optimizer step.

    Args:
        start: the weight decay of step 0 (``--weight_decay``).
        end: the weight decay reached at ``max_steps`` (``--weight_decay_end``); ``None`` keeps ``start``.
    """

    def __init__(self, start: float, end: float | None):
        self.start, self.end = start, end
        self.value = start

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if not any(group.get(DECAYING_GROUP) for group in _param_groups(optimizer)):
            raise ValueError(
                f"weight_decay_end schedules the decaying groups of the optimizer SSLTrainer builds, and this one has "
                f"none; with your own optimizer, set group[{DECAYING_GROUP!r}] = True on its decaying groups (or unset "
                "weight_decay_end)"
            )
        self.apply(state.global_step, state.max_steps, optimizer)

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.apply(state.global_step, state.max_steps, optimizer)

    def apply(self, step: int, max_steps: int, optimizer) -> float:
        """Set the marked groups' weight decay for optimizer step ``step``; returns the value."""
        self.value = weight_decay_schedule(step, max_steps, self.start, self.end)
        for group in _param_groups(optimizer):
            if group.get(DECAYING_GROUP):
                group["weight_decay"] = self.value
        return self.value

    def schedule_values(self) -> dict[str, float]:
        """``{"weight_decay": value of the last step}``, logged with the method's schedules."""
        return {"weight_decay": self.value}
