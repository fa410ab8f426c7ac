#!/usr/bin/env python
"""Training throughput and peak memory of every vision method: hf_ssl's ``SSLTrainer`` path against the same method
written out as a minimal hand-written PyTorch loop.

For each method (DINO, SimCLR, BYOL, SimSiam, MoCo v2, MoCo v3), at the settings of its recipe
``recipes/configs/<method>-vit-tiny-cifar10.yaml`` (encoder, heads, temperatures, momentum, optimizer; batch size,
step count and LR warm-up set here):

(a) ``hf_ssl``: :class:`hf_ssl.training.trainer.SSLTrainer` + ``<Method>ForPreTraining``, the model built by the recipe's own
    code (:func:`hf_ssl.jobs.image.build_image_model`) and the training arguments parsed from the recipe by
    :func:`hf_ssl.jobs.runner.parse_arguments`. Pre-built crops go through a tiny ``Dataset`` of per-example dicts
    and the default :func:`hf_ssl.data.collators.stack_views` collator.
(b) ``hand-written``: the same maths written out below in plain PyTorch, with no Trainer, no callbacks and no hf_ssl
    import in its process: ``transformers.ViTModel`` without pooler, ``nn.Sequential`` MLP heads, the loss formula
    from the paper, EMA teachers with ``torch._foreach_*`` after ``AdamW.step``, gradient clipping, a cosine LR.
    One small class per method (:data:`HAND_WRITTEN`).

The number we track is ``median seconds/step (a) / median seconds/step (b)``: ~1.0 means hf_ssl and the Trainer add no
overhead to the maths. Process CPU seconds per step and peak memory growth over the pre-training baseline are compared
the same way.

Same maths, checked before timing: in one process, the hand-written model is loaded from the hf_ssl model's weights
(every tensor maps, both ways), and on the first batch the loss, every trained parameter's gradient and every buffer
after the forward (DINO's centre, MoCo v2's queue, BatchNorm statistics) must agree to a tolerance, else the method is
not timed. Every timed run then starts from those weights, and the mean training losses of the two variants over
their whole runs (optimizer, clipping, EMA and schedules included) are compared at the end.

Each timed run is a separate subprocess, in the order a, b, b, a, a, b, ... so that drift hits both sides alike and
per-process memory counters and allocator state belong to one variant. Data loading and augmentation are excluded:
the crops are random tensors built once with a fixed seed.

Usage::

    python benchmarks/vision_throughput.py --method all                 # every method, CPU, defaults below
    python benchmarks/vision_throughput.py --method moco_v3 --threads 1  # on a loaded machine
    python benchmarks/vision_throughput.py --method all --device cuda --steps 50 --batch_size 256

Results are merged per method into ``benchmarks/results/vision_throughput.json``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/configs/{method}-vit-tiny-cifar10.yaml"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "vision_throughput.json"
# glibc malloc settings for --malloc_tunables: never trim the heap, fixed 32 MiB mmap threshold.
STEADY_MALLOC = "glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=33554432"
# Parity tolerances (fp32): |loss diff| / max(1, |loss|), max |grad diff| / max |grad|, max |buffer diff|.
LOSS_TOLERANCE, GRADIENT_TOLERANCE, BUFFER_TOLERANCE = 1e-5, 1e-4, 1e-5
# Training-argument overrides of the recipe for a benchmark run (everything else: the recipe's values).
BENCHMARK_TRAINING_FLAGS = {
    "warmup_steps": 0,  # a few steps only: the cosine LR spans the run
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "disable_tqdm": "true",
    "dataloader_num_workers": 0,
    "dataloader_drop_last": "true",
    # The batches must come in the order the hand-written loop uses them (only the end-to-end loss check needs
    # this; a shuffled sampler costs the same).
    "train_sampling_strategy": "sequential",
}


# ======================================================================================================================
# The recipe's settings, and the data: pre-built batches of crops, identical for both variants
# ======================================================================================================================
def parse_recipe(method: str, workdir: str, batch_size: int, total_steps: int, seed: int, device: str,
                 encoder_overrides: dict | None = None) -> tuple:
    """The recipe's ``(encoder_args, data_args, views, method_config, training_args)``, as ``recipes/pretrain.py``
    parses them, with the benchmark's batch size, step count and the flags of :data:`BENCHMARK_TRAINING_FLAGS`.

    ``encoder_overrides`` replaces the recipe's ``encoder_config_overrides`` (tests use a tiny encoder).
    """
    from hf_ssl.jobs.runner import parse_arguments

    recipe = ROOT / RECIPE.format(method=method)
    if not recipe.is_file():
        raise FileNotFoundError(f"{recipe} does not exist; the benchmark reads each method's settings from it")
    flags = {
        **BENCHMARK_TRAINING_FLAGS,
        "output_dir": os.path.join(workdir, "trainer_output"),  # nothing is saved; removed with the workdir
        "per_device_train_batch_size": batch_size,
        "max_steps": total_steps,
        "seed": seed,
        "use_cpu": str(device == "cpu").lower(),
    }
    if encoder_overrides is not None:
        flags["encoder_config_overrides"] = json.dumps(encoder_overrides)
    argv = [str(recipe)] + [item for key, value in flags.items() for item in (f"--{key}", str(value))]
    return parse_arguments(argv)


def views_record(views) -> dict:
    return {key: getattr(views, key) for key in
            ("num_global_crops", "num_local_crops", "global_crop_size", "local_crop_size")}


def settings_record(parsed: tuple, encoder_config) -> dict:
    """What the hand-written process needs, as plain JSON (it never imports hf_ssl): the encoder's ViT config, the
    method's hyperparameters, the views and the optimizer settings."""
    _, _, views, method_config, training_args = parsed
    vit = {key: value for key, value in encoder_config.to_dict().items() if key != "ssl_config"}
    return {
        "method": method_config.method,
        "vit": vit,
        "method_config": method_config.to_dict(),
        "views": views_record(views),
        "optimizer": {
            "learning_rate": training_args.learning_rate,
            "weight_decay": training_args.weight_decay,
            "max_grad_norm": training_args.max_grad_norm,
            "lr_scheduler_type": str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)),
            "warmup_steps": training_args.warmup_steps,
            "optim": str(getattr(training_args.optim, "value", training_args.optim)),
            "adam_betas": [training_args.adam_beta1, training_args.adam_beta2],
            "adam_epsilon": training_args.adam_epsilon,
        },
    }


def make_batches(views: dict, num_batches: int, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``global_crops (B, G, 3, S, S)`` and, when the method uses them, ``local_crops (B, L, 3, s, s)``."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"global_crops": (views["num_global_crops"], 3, views["global_crop_size"], views["global_crop_size"])}
    if views["num_local_crops"] > 0:
        shapes["local_crops"] = (views["num_local_crops"], 3, views["local_crop_size"], views["local_crop_size"])
    return [
        {key: torch.randn(batch_size, *shape, generator=generator) for key, shape in shapes.items()}
        for _ in range(num_batches)
    ]


class PrebuiltCrops(torch.utils.data.Dataset):
    """Per-example dicts cut out of the pre-built batches (what a view transform would return per example)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]):
        self.fields = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.fields.items()}


# ======================================================================================================================
# (b) The hand-written methods: plain PyTorch + transformers.ViTModel, one small class per method
# ======================================================================================================================
def mlp(dims: list[int], activation=nn.ReLU, batch_norm: bool = True, last_batch_norm: bool = False,
        last_affine: bool = True) -> nn.Sequential:
    """Linear [-> BatchNorm] -> activation blocks; the last block has no activation and optionally a BatchNorm (with
    or without affine parameters). A Linear followed by BatchNorm has no bias."""
    layers: list[nn.Module] = []
    for index, (d_in, d_out) in enumerate(pairwise(dims)):
        last = index == len(dims) - 2
        norm = last_batch_norm if last else batch_norm
        layers.append(nn.Linear(d_in, d_out, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm1d(d_out, affine=last_affine or not last))
        if not last:
            layers.append(activation())
    return nn.Sequential(*layers)


class HandDirectPred(nn.Module):
    """DirectPred (Tian et al. 2021 §5), plainly: ``F <- rho F + (1 - rho) mean(z z^T)`` over the training batch, then
    ``W = U diag(sqrt(s / max s) + eps) U^T`` from ``F = U diag(s) U^T``; predicts ``z W^T``. One process only.
    Buffer names match hf_ssl's ``DirectPredictor`` so the weights map one to one."""

    def __init__(self, dim: int, rho: float, eps: float):
        super().__init__()
        self.rho, self.eps = rho, eps
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                batch = torch.einsum("bi,bj->ij", z, z) / z.shape[0]
                first = int(self.num_updates) == 0
                self.correlation.copy_(batch if first else self.rho * self.correlation + (1 - self.rho) * batch)
                self.num_updates += 1
                s, u = torch.linalg.eigh(self.correlation.double())
                s = s.clamp(min=0)
                self.weight.copy_(u @ torch.diag((s / s.max()).sqrt() + self.eps) @ u.T)
        return z @ self.weight.T


def predictor(s: dict, dim: int) -> nn.Module:
    """The recipe's BYOL / SimSiam predictor: DirectPred or the learned MLP."""
    if s.get("predictor_type", "mlp") == "direct":
        return HandDirectPred(dim, s["direct_predictor_decay"], s["direct_predictor_eps"])
    return mlp([dim, s["prediction_hidden_dim"], dim])


def view_major(crops: torch.Tensor) -> torch.Tensor:
    """``(B, V, C, H, W) -> (V * B, C, H, W)``, all images of view 0 first."""
    return crops.transpose(0, 1).reshape(-1, *crops.shape[2:])


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Cosine schedule from ``start`` (step 0) to ``end`` (step ``total``) (BYOL's / DINO's teacher momentum)."""
    progress = min(max(step / total, 0.0), 1.0) if total > 0 else 1.0
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


class HandWrittenMethod(nn.Module):
    """What the hand-written methods share: the ViT, loading from hf_ssl's weights, and the EMA update.

    Subclasses build their modules in ``__init__(vit_config, settings)``, name where each module's weights sit in the
    hf_ssl model's state dict (``hf_ssl_names``: own attribute -> hf_ssl state-dict prefix or key), list their
    ``(teacher, student)`` attribute pairs, and compute the loss in ``forward(global_crops, local_crops=None)``.
    """

    hf_ssl_names: ClassVar[dict[str, str]] = {}
    teacher_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, vit_config, settings: dict):
        super().__init__()
        self.settings = settings

    @staticmethod
    def vit(vit_config) -> nn.Module:
        from transformers import ViTModel

        return ViTModel(vit_config, add_pooling_layer=False)

    @staticmethod
    def cls(encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, hidden)``: the CLS token of the last layer."""
        return encoder(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]

    def hf_ssl_key(self, own_key: str) -> str:
        """The hf_ssl state-dict key of one of this module's keys (hf_ssl heads nest their Sequential in ``layers``)."""
        attribute, _, rest = own_key.partition(".")
        prefix = self.hf_ssl_names[attribute]
        if not rest:
            return prefix
        if isinstance(getattr(self, attribute), nn.Sequential):
            rest = "layers." + rest
        elif attribute.endswith("head") and rest.startswith("mlp."):  # DINO head
            rest = "mlp.layers." + rest[len("mlp."):]
        return f"{prefix}.{rest}"

    def load_from_hf_ssl(self, hf_state: dict[str, torch.Tensor]) -> None:
        """Copy every tensor from the hf_ssl model's state dict; refuses unmatched tensors on either side."""
        mine = self.state_dict()
        mapping = {key: self.hf_ssl_key(key) for key in mine}
        missing = sorted(hf_key for hf_key in mapping.values() if hf_key not in hf_state)
        unused = sorted(set(hf_state) - set(mapping.values()))
        problems = [f"{label} {keys[:5]}" for label, keys in (("hf_ssl keys missing:", missing),
                                                              ("hf_ssl keys unused:", unused)) if keys]
        if problems:
            raise KeyError(f"{type(self).__name__} does not map one to one onto hf_ssl: {'; '.join(problems)}")
        self.load_state_dict({key: hf_state[hf_key] for key, hf_key in mapping.items()}, strict=True)

    def freeze_teachers(self) -> None:
        for teacher, _ in self.teacher_pairs:
            getattr(self, teacher).requires_grad_(False)

    @torch.no_grad()
    def update_teachers(self, momentum: float) -> None:
        """``teacher = m * teacher + (1 - m) * student`` for every parameter (buffers: the teachers' own)."""
        if not self.teacher_pairs:
            return
        teacher = [p for t, _ in self.teacher_pairs for p in getattr(self, t).parameters()]
        student = [p.detach() for _, s in self.teacher_pairs for p in getattr(self, s).parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1.0 - momentum)


class HandDINOHead(nn.Module):
    """MLP -> L2 normalise -> weight-normalised Linear without bias, gain fixed to 1 (``norm_last_layer``)."""

    def __init__(self, in_dim: int, s: dict):
        super().__init__()
        dims = [in_dim] + [s["hidden_dim"]] * (s["head_layers"] - 1) + [s["bottleneck_dim"]]
        self.mlp = mlp(dims, activation=nn.GELU, batch_norm=s["use_batch_norm_in_head"])
        self.last_layer = weight_norm(nn.Linear(s["bottleneck_dim"], s["out_dim"], bias=False))
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class HandDINO(HandWrittenMethod):
    """DINO (Caron et al. 2021, Eq. 3-4; the reference ``main_dino.py`` loop): the student sees every crop, the EMA
    teacher the global ones; cross-entropy of centred, sharpened teacher vs student over view pairs ``s != t``."""

    hf_ssl_names = {"student": "student_encoder", "student_head": "student_head", "teacher": "vit",
                    "teacher_head": "teacher_head", "center": "loss_fn.center"}
    teacher_pairs = (("teacher", "student"), ("teacher_head", "student_head"))

    def __init__(self, vit_config, settings: dict):
        super().__init__(vit_config, settings)
        s = settings
        unsupported = {"freeze_last_layer_epochs": 0.0, "norm_last_layer": True}
        if any(s[key] != value for key, value in unsupported.items()) or (
            s["warmup_teacher_temperature"] != s["teacher_temperature"] and s["warmup_teacher_temperature_epochs"]
        ):
            raise ValueError(f"the hand-written DINO covers {unsupported} and a constant teacher temperature only")
        self.student, self.teacher = self.vit(vit_config), self.vit(vit_config)
        self.student_head = HandDINOHead(vit_config.hidden_size, s)
        self.teacher_head = HandDINOHead(vit_config.hidden_size, s)
        self.register_buffer("center", torch.zeros(1, s["out_dim"]))
        self.freeze_teachers()

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        s, num_global = self.settings, global_crops.shape[1]
        global_flat = view_major(global_crops)
        # As DINO's MultiCropWrapper: one encoder pass per resolution, then the head once on all CLS tokens.
        features = [self.cls(self.student, global_flat)]
        if local_crops is not None:
            features.append(self.cls(self.student, view_major(local_crops)))
        student_out = self.student_head(torch.cat(features))
        with torch.no_grad():
            teacher_out = self.teacher_head(self.cls(self.teacher, global_flat))
        student_logp = F.log_softmax(student_out / s["student_temperature"], dim=-1).chunk(len(student_out) // len(
            global_crops))
        teacher_p = F.softmax((teacher_out - self.center) / s["teacher_temperature"], dim=-1).chunk(num_global)
        terms = [torch.sum(-q * logp, dim=-1).mean()
                 for t, q in enumerate(teacher_p) for v, logp in enumerate(student_logp) if v != t]
        with torch.no_grad():  # centre EMA (Eq. 4), after the loss used the old centre
            m = s["center_momentum"]
            self.center.mul_(m).add_(teacher_out.mean(dim=0, keepdim=True), alpha=1 - m)
        return sum(terms) / len(terms)


class HandSimCLR(HandWrittenMethod):
    """SimCLR (Chen et al. 2020, Eq. 1): NT-Xent over the 2N views, each anchor's positive its other view."""

    hf_ssl_names = {"encoder": "vit", "projector": "projection_head"}

    def __init__(self, vit_config, settings: dict):
        super().__init__(vit_config, settings)
        s = settings
        self.encoder = self.vit(vit_config)
        self.projector = mlp([vit_config.hidden_size, s["projection_hidden_dim"], s["projection_dim"]])

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        n = global_crops.shape[0]
        z = F.normalize(self.projector(self.cls(self.encoder, view_major(global_crops))), dim=1)  # (2N, d)
        logits = (z @ z.T / self.settings["temperature"]).fill_diagonal_(float("-inf"))
        positives = torch.arange(2 * n, device=z.device).roll(n)  # view a of image i <-> view b of image i
        return F.cross_entropy(logits, positives)


class HandStudentTeacher(HandWrittenMethod):
    """Student ViT + projector (trained) and their EMA twins, teacher ViT + projector: BYOL, MoCo v2, MoCo v3."""

    teacher_pairs = (("teacher", "student"), ("teacher_projector", "projector"))

    def __init__(self, vit_config, settings: dict, projector_dims: list[int], **projector_kwargs):
        super().__init__(vit_config, settings)
        self.student, self.teacher = self.vit(vit_config), self.vit(vit_config)
        self.projector = mlp([vit_config.hidden_size, *projector_dims], **projector_kwargs)
        self.teacher_projector = mlp([vit_config.hidden_size, *projector_dims], **projector_kwargs)
        self.freeze_teachers()


class HandBYOL(HandStudentTeacher):
    """BYOL (Grill et al. 2020, Eq. 2-3): the online predictor regresses the target projection of the other view,
    normalised MSE, symmetrised; target = EMA of encoder + projector with cosine momentum."""

    hf_ssl_names = {"student": "student_encoder", "projector": "projector", "predictor": "predictor",
                    "teacher": "vit", "teacher_projector": "teacher_projector"}

    def __init__(self, vit_config, s: dict):
        super().__init__(vit_config, s, [s["projection_hidden_dim"], s["projection_dim"]])
        self.predictor = predictor(s, s["projection_dim"])

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        pixels = view_major(global_crops)
        p1, p2 = F.normalize(self.predictor(self.projector(self.cls(self.student, pixels))), dim=1).chunk(2)
        with torch.no_grad():
            t1, t2 = F.normalize(self.teacher_projector(self.cls(self.teacher, pixels)), dim=1).chunk(2)
        return (((p1 - t2) ** 2).sum(dim=1).mean() + ((p2 - t1) ** 2).sum(dim=1).mean()) / 2


class HandSimSiam(HandWrittenMethod):
    """SimSiam (Chen & He 2021, Eq. 3-4): D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2, D = -cosine."""

    hf_ssl_names = {"encoder": "vit", "projector": "projector", "predictor": "predictor"}

    def __init__(self, vit_config, settings: dict):
        super().__init__(vit_config, settings)
        s, width = settings, vit_config.hidden_size
        hidden, dim = s["projection_hidden_dim"], s["projection_dim"]
        self.encoder = self.vit(vit_config)
        hidden_widths = [hidden] * (s["num_projection_layers"] - 1)
        self.projector = mlp([width, *hidden_widths, dim], last_batch_norm=s["projector_output_batch_norm"],
                             last_affine=False)
        self.predictor = predictor(s, dim)

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        z = self.projector(self.cls(self.encoder, view_major(global_crops)))
        p1, p2 = F.normalize(self.predictor(z), dim=1).chunk(2)
        z1, z2 = F.normalize(z.detach(), dim=1).chunk(2)
        return -((p1 * z2).sum(dim=1).mean() + (p2 * z1).sum(dim=1).mean()) / 2


class HandMoCoV2(HandStudentTeacher):
    """MoCo v2 (He et al. 2020 Algorithm 1; Chen et al. 2020): InfoNCE of queries vs their key and a queue of K keys,
    symmetrised; both views' keys enqueued after the loss."""

    hf_ssl_names = {"student": "student_encoder", "projector": "projector", "teacher": "vit",
                    "teacher_projector": "key_projector", "queue": "loss_fn.queue", "queue_ptr": "loss_fn.queue_ptr"}

    def __init__(self, vit_config, s: dict):
        super().__init__(vit_config, s, [s["projection_hidden_dim"], s["projection_dim"]], batch_norm=False)
        self.register_buffer("queue", F.normalize(torch.randn(s["queue_size"], s["projection_dim"]), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        pixels = view_major(global_crops)
        q1, q2 = F.normalize(self.projector(self.cls(self.student, pixels)), dim=1).chunk(2)
        with torch.no_grad():
            k = F.normalize(self.teacher_projector(self.cls(self.teacher, pixels)), dim=1)
        k1, k2 = k.chunk(2)
        queue = self.queue.clone()  # as the reference code: the enqueue below must not touch what backward needs

        def info_nce(q, k):
            logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / self.settings["temperature"]
            return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))

        loss = (info_nce(q1, k2) + info_nce(q2, k1)) / 2
        with torch.no_grad():
            pointer = int(self.queue_ptr)
            self.queue[pointer: pointer + len(k)] = k
            self.queue_ptr.fill_((pointer + len(k)) % len(self.queue))
        return loss


class HandMoCoV3(HandStudentTeacher):
    """MoCo v3 (Chen, Xie & He 2021, Algorithm 1): ctr(q1, k2) + ctr(q2, k1), ctr = 2T x in-batch InfoNCE; queries
    through projector + predictor, keys from the EMA encoder + projector."""

    hf_ssl_names = {"student": "student_encoder", "projector": "projector", "predictor": "predictor",
                    "teacher": "vit", "teacher_projector": "key_projector"}

    def __init__(self, vit_config, s: dict):
        hidden, dim = s["projection_hidden_dim"], s["projection_dim"]
        super().__init__(vit_config, s, [hidden, hidden, dim], last_batch_norm=True, last_affine=False)
        self.predictor = mlp([dim, s["prediction_hidden_dim"], dim], last_batch_norm=True, last_affine=False)

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None = None) -> torch.Tensor:
        pixels, temperature = view_major(global_crops), self.settings["temperature"]
        q1, q2 = F.normalize(self.predictor(self.projector(self.cls(self.student, pixels))), dim=1).chunk(2)
        with torch.no_grad():
            k1, k2 = F.normalize(self.teacher_projector(self.cls(self.teacher, pixels)), dim=1).chunk(2)

        def ctr(q, k):
            labels = torch.arange(len(q), device=q.device)
            return F.cross_entropy(q @ k.T / temperature, labels) * (2 * temperature)

        return ctr(q1, k2) + ctr(q2, k1)


HAND_WRITTEN: dict[str, type[HandWrittenMethod]] = {
    "dino": HandDINO,
    "simclr": HandSimCLR,
    "byol": HandBYOL,
    "simsiam": HandSimSiam,
    "moco_v2": HandMoCoV2,
    "moco_v3": HandMoCoV3,
}
METHODS = tuple(HAND_WRITTEN)


def build_hand_written(settings: dict) -> HandWrittenMethod:
    from transformers import ViTConfig

    method_settings = {k: v for k, v in settings["method_config"].items() if k != "method"}
    return HAND_WRITTEN[settings["method"]](ViTConfig.from_dict(settings["vit"]), method_settings)


def hand_optimizer(model: HandWrittenMethod, optimizer_settings: dict, total_steps: int):
    """AdamW (fused, what Trainer's default ``optim="adamw_torch_fused"`` builds) + cosine LR from ``get_scheduler``.

    Weight decay on every trained tensor but biases and LayerNorm parameters: Trainer's default rule (so BatchNorm
    weights are decayed too).
    """
    from transformers import get_scheduler

    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.requires_grad:
                exempt = isinstance(module, nn.LayerNorm) or "bias" in name
                (no_decay if exempt else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": optimizer_settings["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=optimizer_settings["learning_rate"],
                                  betas=tuple(optimizer_settings["adam_betas"]), eps=optimizer_settings["adam_epsilon"],
                                  fused=True)
    scheduler = get_scheduler(optimizer_settings["lr_scheduler_type"], optimizer,
                              num_warmup_steps=optimizer_settings["warmup_steps"], num_training_steps=total_steps)
    return optimizer, scheduler


# ======================================================================================================================
# Same maths: first-batch parity from the same weights
# ======================================================================================================================
def build_pair(parsed: tuple) -> tuple:
    """The hf_ssl model built from the recipe (seed 0) and the hand-written one loaded from its weights.

    Returns ``(hf_model, hand_written, initial hf_ssl state dict, settings for the hand-written process)``.
    """
    from hf_ssl.jobs.image import build_image_model

    encoder_args, _, views, method_config, _ = parsed
    torch.manual_seed(0)
    hf_model = build_image_model(encoder_args, views, method_config)
    hf_state = {key: value.detach().clone() for key, value in hf_model.state_dict().items()}  # before any forward
    settings = settings_record(parsed, hf_model.config)
    hand = build_hand_written(settings)
    hand.load_from_hf_ssl(hf_state)
    return hf_model, hand, hf_state, settings


def compare_first_batch(hf_model, hand: HandWrittenMethod, batch: dict[str, torch.Tensor], device: torch.device) -> dict:
    """Run both models on ``batch`` (training mode) and compare loss, gradients and post-forward buffers.

    ``report["ok"]`` says whether they agree within the tolerances (:data:`LOSS_TOLERANCE`, ...).
    """
    hf_model.to(device).train()
    hand.to(device).train()
    batch = {key: value.to(device) for key, value in batch.items()}

    hf_loss = hf_model(**batch).loss
    hf_loss.backward()
    hand_loss = hand(**batch)
    hand_loss.backward()

    hf_parameters, hf_buffers = dict(hf_model.named_parameters()), dict(hf_model.named_buffers())
    grad_diff, grad_scale, trained = 0.0, 0.0, 0
    for name, parameter in hand.named_parameters():
        other = hf_parameters[hand.hf_ssl_key(name)]
        if (parameter.grad is None) != (other.grad is None):
            raise AssertionError(f"{name}: gradient in one variant only")
        if parameter.grad is not None:
            trained += 1
            grad_diff = max(grad_diff, (parameter.grad - other.grad).abs().max().item())
            grad_scale = max(grad_scale, other.grad.abs().max().item())
    buffer_diff = max(
        ((buffer.double() - hf_buffers[hand.hf_ssl_key(name)].double()).abs().max().item()
         for name, buffer in hand.named_buffers()),
        default=0.0,
    )
    loss_diff = abs(hf_loss.item() - hand_loss.item())
    report = {
        "hf_ssl_loss": hf_loss.item(),
        "hand_written_loss": hand_loss.item(),
        "loss_abs_diff": loss_diff,
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
        "trained_tensors_compared": trained,
        "buffer_max_abs_diff": buffer_diff,
        "buffers_compared": [name for name, _ in hand.named_buffers()],
        "tolerances": {"loss_relative": LOSS_TOLERANCE, "grad_relative_to_max": GRADIENT_TOLERANCE,
                       "buffer_abs": BUFFER_TOLERANCE},
    }
    report["ok"] = bool(
        loss_diff <= LOSS_TOLERANCE * max(1.0, abs(hf_loss.item()))
        and grad_diff <= GRADIENT_TOLERANCE * grad_scale
        and buffer_diff <= BUFFER_TOLERANCE
        and trained > 0
    )
    return report


# ======================================================================================================================
# Measurement helpers
# ======================================================================================================================
class PeakMemory:
    """Peak memory during a window (the timed steps), and the baseline before training.

    CUDA: ``torch.cuda.max_memory_allocated`` (exact, allocator-level), reset at the window start.
    CPU: a daemon thread sampling the resident set size from ``/proc/self/statm`` every 5 ms. Why sampling rather
    than ``ru_maxrss`` alone: ``ru_maxrss`` is exact but monotonic over the whole process (imports, model building),
    so it cannot isolate the timed window; the sampler can, at the price of missing peaks shorter than 5 ms (a step
    takes ~100x longer, and activations live for most of it). The sampler runs in both variants, so its small
    cost cancels in the ratio. The whole-process peak is reported too (``VmHWM`` from ``/proc/self/status``, which
    starts anew at ``exec``; ``ru_maxrss`` does not: Linux carries the parent's high-water mark over); each variant
    runs in its own subprocess so that it belongs to that variant alone.
    """

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.cuda = device.type == "cuda"
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.has_statm = os.path.exists("/proc/self/statm")
        self.window_peak = 0
        self.active = False
        self.samples = 0
        if not self.cuda and self.has_statm:
            threading.Thread(target=self._sample, daemon=True).start()

    def current(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        if self.has_statm:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self.page
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while True:
            if self.active:
                self.window_peak = max(self.window_peak, self.current())
                self.samples += 1
            time.sleep(self.interval)

    def mark_baseline(self) -> None:
        self.baseline = self.current()

    def start_window(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.window_peak = self.current()
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.active = True

    def stop_window(self) -> dict:
        self.active = False
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.window_peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.window_peak = max(self.window_peak, self.current())
        return {
            "kind": "cuda_max_memory_allocated" if self.cuda else "rss_sampled_5ms",
            "baseline_bytes": self.baseline,
            "window_peak_bytes": self.window_peak,
            "peak_growth_bytes": self.window_peak - self.baseline,
            "samples": self.samples,
            "process_peak_rss_bytes": process_peak_rss(),
            "minor_page_faults_in_window": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults,
        }


def process_peak_rss() -> int:
    """This process's peak resident set size in bytes: ``VmHWM`` where ``/proc`` has it, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class StepClock:
    """Wall and process-CPU timestamps at the end of every optimizer step; opens the memory window after the
    warm-up steps and closes it after the last one."""

    def __init__(self, device: torch.device, memory: PeakMemory, warmup_steps: int, total_steps: int):
        self.device, self.memory, self.warmup_steps, self.total_steps = device, memory, warmup_steps, total_steps
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.info: dict = {}

    def tick(self, steps_done: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if steps_done == self.warmup_steps:
            self.info["threads"] = torch.get_num_threads()
            self.memory.start_window()
        elif steps_done == self.total_steps:
            self.info["memory"] = self.memory.stop_window()

    def result(self) -> dict:
        return {**self.info, "step_seconds": [b - a for a, b in pairwise(self.wall)],
                "step_cpu_seconds": [b - a for a, b in pairwise(self.cpu)]}


# ======================================================================================================================
# Workers: one timed run of one variant, in its own process
# ======================================================================================================================
def run_hf_ssl(args, device, batches, hf_state, memory) -> dict:
    from transformers import TrainerCallback

    from hf_ssl.jobs.image import build_image_model
    from hf_ssl.training.trainer import SSLTrainer

    total = args.warmup_steps + args.steps
    encoder_args, _, views, method_config, training_args = parse_recipe(
        args._method, args._workdir, args.batch_size, total, args.seed, args.device)
    model = build_image_model(encoder_args, views, method_config)
    model.load_state_dict(hf_state, strict=True)
    del hf_state
    clock = StepClock(device, memory, args.warmup_steps, total)

    class StepTimer(TrainerCallback):
        """Step k takes stamps[k] - stamps[k - 1], everything the Trainer does between two steps included
        (dataloader + collator, callbacks, logging)."""

        def on_train_begin(self, _args, state, control, **kwargs):
            clock.tick(0)

        def on_step_end(self, _args, state, control, **kwargs):
            clock.tick(state.global_step)

    memory.mark_baseline()
    trainer = SSLTrainer(model=model, args=training_args, train_dataset=PrebuiltCrops(batches), callbacks=[StepTimer()])
    output = trainer.train()
    return {
        **clock.result(),
        "optimizer": f"{type(trainer.optimizer).__name__}(fused={trainer.optimizer.defaults.get('fused')})",
        "mean_training_loss": output.training_loss,
        "attn_implementation": model.encoder.config._attn_implementation,
    }


def run_hand(args, device, batches, hf_state, memory) -> dict:
    settings = json.loads((Path(args._workdir) / "settings.json").read_text())
    model = build_hand_written(settings)
    model.load_from_hf_ssl(hf_state)
    del hf_state
    model.to(device).train()
    total = args.warmup_steps + args.steps
    method_config = settings["method_config"]
    memory.mark_baseline()
    optimizer, scheduler = hand_optimizer(model, settings["optimizer"], total)
    trained = [p for p in model.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=device)
    clock = StepClock(device, memory, args.warmup_steps, total)
    clock.tick(0)
    for step in range(total):
        batch = {key: value.to(device, non_blocking=True) for key, value in batches[step % len(batches)].items()}
        loss = model(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, settings["optimizer"]["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if model.teacher_pairs:  # EMA after the optimizer step, momentum cosine-scheduled (step = steps done before)
            model.update_teachers(
                cosine(step, total, method_config["momentum_teacher"], method_config["momentum_teacher_end"]))
        loss_sum += loss.detach()
        clock.tick(step + 1)
    return {
        **clock.result(),
        "optimizer": f"{type(optimizer).__name__}(fused={optimizer.defaults.get('fused')})",
        "mean_training_loss": loss_sum.item() / total,
        "attn_implementation": next(m for m in model.modules() if hasattr(m, "config")).config._attn_implementation,
    }


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory = PeakMemory(device)  # sampler thread first, then everything else
    workdir = Path(args._workdir)
    views = json.loads((workdir / "settings.json").read_text())["views"]
    batches = make_batches(views, args.num_batches, args.batch_size, args.seed)
    hf_state = torch.load(workdir / "init.pt", weights_only=True)
    started = time.perf_counter()
    run = run_hf_ssl if args._worker == "hf_ssl" else run_hand
    info = run(args, device, batches, hf_state, memory)
    info["variant"] = args._worker
    info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")
    info["wall_seconds"] = time.perf_counter() - started
    (workdir / f"result_{args._worker}_{args._round}.json").write_text(json.dumps(info))


# ======================================================================================================================
# Parent: per method, parity check, then alternating subprocesses, then summary
# ======================================================================================================================
def mib(value: float) -> float:
    return value / 2**20


def summarise(results: list[dict], warmup: int) -> dict:
    timed = [seconds for result in results for seconds in result["step_seconds"][warmup:]]
    cpu = [seconds for result in results for seconds in result["step_cpu_seconds"][warmup:]]
    growth = [result["memory"]["peak_growth_bytes"] for result in results]
    return {
        "median_seconds_per_step": statistics.median(timed),
        "mean_seconds_per_step": statistics.fmean(timed),
        "min_seconds_per_step": min(timed),
        "max_seconds_per_step": max(timed),
        "steps_per_second": 1.0 / statistics.median(timed),
        "per_run_median_seconds_per_step": [statistics.median(r["step_seconds"][warmup:]) for r in results],
        "timed_steps": len(timed),
        # Process CPU time (all threads) per step: it does not count the time this process waited for a core, so it
        # is steadier than wall time on a shared machine.
        "median_cpu_seconds_per_step": statistics.median(cpu),
        "minor_page_faults_per_timed_step": statistics.fmean(
            r["memory"]["minor_page_faults_in_window"] / max(1, len(r["step_seconds"]) - warmup) for r in results
        ),
        "peak_memory_growth_bytes": max(growth),
        "per_run_peak_memory_growth_bytes": growth,
        "process_peak_rss_bytes": max(r["memory"]["process_peak_rss_bytes"] for r in results),
        "mean_training_loss": [r["mean_training_loss"] for r in results],
        "optimizer": results[0]["optimizer"],
        "threads_during_timed_steps": sorted({r["threads"] for r in results}),
        "attn_implementation": results[0]["attn_implementation"],
    }


def benchmark_method(method: str, args, device: torch.device) -> dict:
    total = args.warmup_steps + args.steps
    results: dict[str, list[dict]] = {"hf_ssl": [], "hand": []}
    order: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"vision_throughput_{method}_") as workdir:
        parsed = parse_recipe(method, workdir, args.batch_size, total, args.seed, args.device)
        batches = make_batches(views_record(parsed[2]), 1, args.batch_size, args.seed)
        hf_model, hand, hf_state, settings = build_pair(parsed)
        parity = compare_first_batch(hf_model, hand, batches[0], device)
        del hf_model, hand
        print(
            f"[{method}] parity (first batch, same weights): loss {parity['hf_ssl_loss']:.6f} vs "
            f"{parity['hand_written_loss']:.6f} (|diff| {parity['loss_abs_diff']:.2e}); max |grad diff| "
            f"{parity['grad_max_abs_diff']:.2e} of max |grad| {parity['grad_max_abs']:.2e} over "
            f"{parity['trained_tensors_compared']} tensors; buffers |diff| {parity['buffer_max_abs_diff']:.2e}",
            flush=True,
        )
        if not parity["ok"]:
            raise SystemExit(f"[{method}] the two variants do not compute the same maths; not timing them")
        if args.parity_only:
            return {"parity_first_batch": parity}
        (Path(workdir) / "settings.json").write_text(json.dumps(settings))
        torch.save(hf_state, Path(workdir) / "init.pt")
        del hf_state
        for round_index in range(args.rounds):
            pair = ["hf_ssl", "hand"] if round_index % 2 == 0 else ["hand", "hf_ssl"]  # a b b a a b ...
            for variant in pair:
                command = [sys.executable, os.path.abspath(__file__), "--_worker", variant, "--_method", method,
                           "--_workdir", workdir, "--_round", str(round_index), "--steps", str(args.steps),
                           "--warmup_steps", str(args.warmup_steps), "--batch_size", str(args.batch_size),
                           "--device", args.device, "--num_batches", str(args.num_batches), "--threads",
                           str(args.threads), "--seed", str(args.seed)]
                env = dict(os.environ)
                if args.malloc_tunables:
                    env["GLIBC_TUNABLES"] = STEADY_MALLOC
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                result = json.loads((Path(workdir) / f"result_{variant}_{round_index}.json").read_text())
                results[variant].append(result)
                order.append(variant)
                print(f"[{method}]   round {round_index} {variant:>6}: median "
                      f"{statistics.median(result['step_seconds'][args.warmup_steps:]):.4f} s/step, peak growth "
                      f"{mib(result['memory']['peak_growth_bytes']):.1f} MiB", flush=True)

    a, b = summarise(results["hf_ssl"], args.warmup_steps), summarise(results["hand"], args.warmup_steps)
    loss_diffs = [abs(x - y) for x, y in zip(a["mean_training_loss"], b["mean_training_loss"], strict=True)]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", os.path.relpath(os.path.abspath(__file__), ROOT), *args.command_line]),
        "recipe": RECIPE.format(method=method),
        "config": {
            **settings,
            "batch_size": args.batch_size,
            "timed_steps_per_run": args.steps,
            "warmup_steps_per_run": args.warmup_steps,
            "rounds": args.rounds,
            "run_order": order,
            "num_prebuilt_batches": args.num_batches,
            "threads": args.threads,
            "device": args.device,
            "dtype": "float32",
            "seed": args.seed,
            "glibc_tunables": STEADY_MALLOC if args.malloc_tunables else os.environ.get("GLIBC_TUNABLES"),
        },
        "parity_first_batch": parity,
        "memory_measure": results["hf_ssl"][0]["memory"]["kind"],
        "hf_ssl": a,
        "hand_written": b,
        "ratio_seconds_per_step_hf_ssl_over_hand": a["median_seconds_per_step"] / b["median_seconds_per_step"],
        "per_round_ratio_seconds_per_step": [
            x / y for x, y in zip(a["per_run_median_seconds_per_step"], b["per_run_median_seconds_per_step"],
                                  strict=True)],
        "ratio_cpu_seconds_per_step_hf_ssl_over_hand": a["median_cpu_seconds_per_step"] / b[
            "median_cpu_seconds_per_step"],
        "per_round_ratio_cpu_seconds_per_step": [
            statistics.median(x["step_cpu_seconds"][args.warmup_steps:])
            / statistics.median(y["step_cpu_seconds"][args.warmup_steps:])
            for x, y in zip(results["hf_ssl"], results["hand"], strict=True)],
        "ratio_peak_memory_growth_hf_ssl_over_hand": a["peak_memory_growth_bytes"] / b["peak_memory_growth_bytes"],
        "mean_training_loss_max_abs_diff": max(loss_diffs),
        "raw": results,
    }


def markdown_table(records: dict[str, dict]) -> str:
    """One row per method: medians of both variants, the three ratios, and the two parity checks."""
    rows = [
        "| method | s/step (a) / (b) | time (a)/(b) | CPU s/step (a) / (b) | **CPU time (a)/(b)** "
        "| peak memory growth MiB (a) / (b) | **memory (a)/(b)** | first-batch loss (a) / (b) "
        "| max \\|grad diff\\| / max \\|grad\\| | run-mean loss \\|diff\\| |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for method, r in records.items():
        if "hf_ssl" not in r:
            continue
        a, b, p = r["hf_ssl"], r["hand_written"], r["parity_first_batch"]
        rows.append(
            f"| {method} | {a['median_seconds_per_step']:.2f} / {b['median_seconds_per_step']:.2f} | "
            f"{r['ratio_seconds_per_step_hf_ssl_over_hand']:.3f} | "
            f"{a['median_cpu_seconds_per_step']:.3f} / {b['median_cpu_seconds_per_step']:.3f} | "
            f"**{r['ratio_cpu_seconds_per_step_hf_ssl_over_hand']:.3f}** | "
            f"{mib(a['peak_memory_growth_bytes']):.0f} / {mib(b['peak_memory_growth_bytes']):.0f} | "
            f"**{r['ratio_peak_memory_growth_hf_ssl_over_hand']:.3f}** | "
            f"{p['hf_ssl_loss']:.6f} / {p['hand_written_loss']:.6f} | "
            f"{p['grad_max_abs_diff'] / p['grad_max_abs']:.1e} | {r['mean_training_loss_max_abs_diff']:.1e} |"
        )
    return "\n".join(rows)


def start(parser: argparse.ArgumentParser, args, run_worker) -> bool:
    """What every timing benchmark does first: offline settings; in a worker subprocess, run it and return True;
    in the parent, check the device and the counts and set the threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args._worker:
        run_worker(args)
        return True
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if min(args.steps, args.warmup_steps, args.num_batches, args.batch_size, args.rounds) < 1:
        parser.error("--steps, --warmup_steps, --num_batches, --batch_size and --rounds must all be >= 1")
    torch.set_num_threads(args.threads)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="all", choices=[*METHODS, "all"], help="Method to benchmark (default all).")
    parser.add_argument("--steps", type=int, default=6, help="Timed optimizer steps per run (default 6).")
    parser.add_argument("--warmup_steps", type=int, default=2, help="Untimed steps before them (default 2).")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per step (default 32; recipes: 128).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="JSON file; each run replaces the entries of the methods it ran and keeps the others.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each variant, alternated (default 2).")
    parser.add_argument("--num_batches", type=int, default=4, help="Pre-built batches (default 4; cycled).")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run (default 2).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parity_only", action="store_true", help="Only the first-batch parity check, no timing.")
    parser.add_argument(
        "--malloc_tunables",
        action="store_true",
        help=f"Run the timed subprocesses with GLIBC_TUNABLES={STEADY_MALLOC} (glibc only): no heap trimming, a fixed "
        "mmap threshold, so freed activations are not handed back to the kernel and page-faulted in again every step. "
        "Off by default (that is what users get); on, the ratio is steadier (see README).",
    )
    parser.add_argument("--_worker", choices=["hf_ssl", "hand"], help=argparse.SUPPRESS)
    parser.add_argument("--_method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    parser.add_argument("--_round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)

    if start(parser, args, worker):
        return 0
    device = torch.device(args.device)
    methods = METHODS if args.method == "all" else (args.method,)
    records = {method: benchmark_method(method, args, device) for method in methods}
    if args.parity_only:
        return 0

    table = markdown_table(records)
    print("\n" + table)
    output = Path(args.output)
    existing = json.loads(output.read_text()) if output.is_file() else {}
    merged = {
        "benchmark": "vision_throughput",
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "methods": {**existing.get("methods", {}), **records},
    }
    merged["methods"] = {m: merged["methods"][m] for m in METHODS if m in merged["methods"]}
    merged["table_markdown"] = markdown_table(merged["methods"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(merged, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
