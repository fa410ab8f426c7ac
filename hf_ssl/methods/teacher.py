"""The momentum-teacher machinery every teacher-student method shares (DINO, BYOL, MoCo v2 / v3), written once."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..modules.backbones import feature_dim
from ..modules.ema import copy_weights_, ema_update_, freeze
from ..schedules import cosine_schedule
from .base import SSLPreTrainedModel, TrainingProgress


class MomentumTeacherModel(SSLPreTrainedModel):
    """Base of the teacher-student methods (DINO, BYOL, MoCo), written once (as solo-learn's BaseMomentumMethod).

    Teacher modules follow their student twins by EMA after every optimizer step, with the momentum cosine-scheduled
    per step from the config's ``momentum_teacher`` to ``momentum_teacher_end`` (Grill et al. 2020, §3.2).

    Subclasses build the student/teacher pair with :meth:`build_student_and_teacher`, add what only the student or
    only the method has (predictor, loss), call ``post_init()``, then :meth:`init_teachers`.
    """

    def build_student_and_teacher(
        self,
        make_head: Callable[[int], nn.Module],
        head: str,
        teacher_head: str,
        student_only: Callable[[int], dict[str, nn.Module]] | None = None,
    ) -> int:
        """Build, in this order, ``student_encoder``, its head ``head = make_head(feature_dim)``, the modules of
        ``student_only(feature_dim)`` (e.g. ``{"predictor": ...}``, which the teacher has no twin of), the teacher
        encoder (registered as the published encoder, under the encoder's native prefix: what vanilla transformers
        loads is the teacher, as the papers evaluate it) and ``teacher_head = make_head(feature_dim)``. Returns the
        encoder's feature width. The ``(teacher, student)`` pairs are remembered for :meth:`init_teachers`."""
        self.student_encoder = self.build_encoder()
        in_dim = feature_dim(self.student_encoder)
        setattr(self, head, make_head(in_dim))
        for name, module in (student_only(in_dim) if student_only is not None else {}).items():
            setattr(self, name, module)
        self.register_published_encoder(self.build_encoder())
        setattr(self, teacher_head, make_head(in_dim))
        self._teacher_pairs = (("encoder", "student_encoder"), (teacher_head, head))
        return in_dim

    def init_teachers(self) -> None:
        """After ``post_init()``: copy each student into its teacher and freeze the teacher (no gradients: out of DDP
        and the optimizer)."""
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
