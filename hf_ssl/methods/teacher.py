"""The momentum-teacher machinery every teacher-student method shares (DINO, BYOL, MoCo v2 / v3), written once."""

from __future__ import annotations

from torch import nn

from ..modules.ema import copy_weights_, ema_update_, freeze
from ..schedules import cosine_schedule
from .base import SSLPreTrainedModel, TrainingProgress


class MomentumTeacherModel(SSLPreTrainedModel):
    """Base of the teacher-student methods (DINO, BYOL, MoCo), written once (as solo-learn's BaseMomentumMethod).

    Teacher modules follow their student twins by EMA after every optimizer step, with the momentum cosine-scheduled
    per step from the config's ``momentum_teacher`` to ``momentum_teacher_end`` (Grill et al. 2020, §3.2). Subclasses
    build their modules, call ``post_init()``, then :meth:`init_teachers` with ``(teacher, student)`` attribute names.
    """

    def init_teachers(self, *pairs: tuple[str, str]) -> None:
        """Copy each student into its teacher and freeze the teacher (no gradients: out of DDP and the optimizer)."""
        self._teacher_pairs = tuple(pairs)
        for teacher, student in self._teacher_modules():
            copy_weights_(teacher, student)
            freeze(teacher)
        self._momentum = self.method_config.momentum_teacher

    def _teacher_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(getattr(self, teacher), getattr(self, student)) for teacher, student in self._teacher_pairs]

    def set_progress(self, progress: TrainingProgress) -> None:
        settings = self.method_config
        self._momentum = cosine_schedule(
            progress.step, progress.max_steps, settings.momentum_teacher, settings.momentum_teacher_end
        )

    def after_optimizer_step(self, progress: TrainingProgress) -> None:
        for teacher, student in self._teacher_modules():
            ema_update_(teacher, student, self._momentum)

    def schedule_values(self) -> dict[str, float]:
        return {"teacher_momentum": self._momentum}
