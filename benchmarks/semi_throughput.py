#!/usr/bin/env python
"""Training throughput and peak memory of semi-supervised FixMatch: hf_ssl's ``SemiSupervisedTrainer`` path against
the same FixMatch step written out as a minimal plain PyTorch loop.

FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence",
arXiv:2001.07685, Eq. 4): per unlabelled example, the prediction on its weak view gives a hard pseudo-label, kept where
its confidence reaches ``tau``, and the model learns it on the strong view;
``loss = CE(labelled) + lambda_u * 1/(mu B) sum_b 1[max q_b >= tau] CE(argmax q_b, p(y | strong_b))``.

Both variants run the recipe ``recipes/configs/fixmatch-vit-tiny-cifar10-40.yaml`` (the classifier the ``semi_image``
job builds from its encoder at random init, ``tau``, ``mu``, ``lambda_u``, the EMA, AdamW, clipping, cosine LR), with
the batch size and step count set here and no LR warm-up (a few steps only: the cosine spans the run):

(a) ``hf_ssl``: :class:`hf_ssl.training.SemiSupervisedTrainer` + :class:`hf_ssl.semi.FixMatch`, the classifier from
    :class:`hf_ssl.jobs.semi_image.SemiImageJob` and the arguments parsed from the recipe by
    :func:`hf_ssl.jobs.runner.parse_arguments`. Its own two-stream loader (labelled and unlabelled orders, per-example
    view seeding, collation) runs as in a real job, but the views are :class:`PrebuiltViews`: the image column holds the
    example's index and each view returns a tensor built once. The unlabelled set carries audit labels, as the job's
    ``audit_unlabelled_labels`` default does (pseudo-label accuracy is logged, never trained on).
(b) ``hand-written``: plain PyTorch + ``transformers.ViTForImageClassification``, with no Trainer, no callbacks and no
    hf_ssl import in its process: one forward over ``cat[labelled, weak, strong]`` as the reference implementation does
    (with ``--hand_weak_pass no_grad``: over ``cat[labelled, strong]``, the weak view in a no-grad forward of its own,
    as hf_ssl does for a model without BatchNorm: then the ratio is the Trainer path's own overhead), supervised CE,
    pseudo-labels from the detached weak softmax, masked CE on the strong view averaged over all ``mu B`` examples,
    backward, gradient clipping, fused AdamW + ``get_scheduler``, then the EMA of parameters and floating-point buffers
    with hf_ssl's decay (``min(ema_decay, 1 - 1/(n + 1))`` at the n-th update while ``ema_warmup`` is on, else
    ``ema_decay``).

Data loading and augmentation are excluded: labelled images, labels and the weak and strong view of every unlabelled
example are random tensors built once with a fixed seed. The hand-written loop takes its batches in the order hf_ssl's
loader draws them (planned in the parent with :class:`hf_ssl.data.streams.TwoStreamBatchSampler`), gathered before
the timed steps; hf_ssl's loader builds each batch inside the step, as a real run does (that cost is hf_ssl's).

Same maths, checked before timing, in one process: from the same initial weights, one full step of each variant on the
first batch, which hf_ssl's own train loader must produce exactly as planned. The loss, every gradient (before
clipping), every weight after the optimizer step and the EMA after its first update must agree to tolerances, else
nothing is timed. That step passes the weak view as hf_ssl does (on its own, without gradients), so both round alike:
AdamW's first step is nearly sign(gradient) and would turn rounding differences into weight differences; the loss and
gradients of the timed hand-written step's own passes (``--hand_weak_pass``) are compared to the same tolerances. At
random init no weak-view confidence reaches the recipe's ``tau = 0.95``, so the unsupervised term is then all masked;
the check therefore runs twice: at the recipe's threshold, and at a threshold that keeps half of the first batch's
pseudo-labels (the unsupervised maths then carries gradient). The timed runs cost the same either way (the masked
cross-entropy is computed for every unlabelled example). The EMA decay of every update up to 10,000 (hf_ssl's
``method.ema_momentum`` against the hand-written one) must match too, since one step cannot show ``ema_decay`` behind
the warm-up. Every timed run then starts from those weights on the same batches in the same order, and the mean training
losses of the two variants over their whole runs are compared at the end.

Where hf_ssl's FixMatch departs from the paper, the hand-written step follows hf_ssl (the aim is the same maths): the
EMA warm-up (``ema_warmup``, on by default; Mean Teacher's reference code): the paper's EMA uses 0.999 from the first
step. Recipe choices, not FixMatch's: AdamW with weight decay 0.05 and transformers' cosine to 0 (the paper: SGD with
Nesterov momentum, weight decay 5e-4, ``cos(7 pi k / 16 K)``), batch 16 instead of 64.

The numbers tracked are the ratios ``(a) / (b)`` of median seconds/step, of process CPU seconds/step and of peak memory
growth over the pre-training baseline. Each timed run is a separate subprocess, in the order a, b, b, a, a, b, ... The
measurement helpers (step clock, peak memory sampler, summaries) and the hand-written optimizer are
``vision_throughput.py``'s.

Usage::

    python benchmarks/semi_throughput.py                # CPU, 2 threads, the recipe's batch: 16 + 7 x 16 unlabelled
                                                        # images, 2 + 8 steps per run, 4 rounds: about 5 min on 2 cores
    python benchmarks/semi_throughput.py --parity_only  # only the same-maths check
    python benchmarks/semi_throughput.py --threads 1    # on a loaded machine
    python benchmarks/semi_throughput.py --hand_weak_pass no_grad  # the Trainer path's own overhead
    python benchmarks/semi_throughput.py --device cuda --batch_size 64 --steps 50

The record goes to ``benchmarks/results/semi_throughput.json`` (``--output`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_throughput import (  # noqa: E402  (the measurement helpers live there)
    BENCHMARK_TRAINING_FLAGS,
    GRADIENT_TOLERANCE,
    LOSS_TOLERANCE,
    ROOT,
    STEADY_MALLOC,
    PeakMemory,
    StepClock,
    hand_optimizer,
    mib,
    start,
    summarise,
)

RECIPE = "recipes/configs/fixmatch-vit-tiny-cifar10-40.yaml"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "semi_throughput.json"
#: The recipe's dataset (CIFAR-10): the classifier's classes.
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: After one step, relative to the largest change the step made: weights (max |diff| / max |w1 - w0|) and EMA
#: (max |diff| / max |ema1 - w0|).
STEP_TOLERANCE, EMA_TOLERANCE = 1e-4, 1e-4
#: Updates over which the EMA decay schedules of both variants are compared (past ema_warmup's 1 - 1/(n + 1) cap).
EMA_SCHEDULE_STEPS = 10_000
VARIANTS = ("hf_ssl", "hand")
#: How the hand-written step passes the weak view (:func:`hand_loss`): the reference implementation's way first.
HAND_WEAK_PASSES = ("joint", "no_grad")
#: Command-line settings every worker subprocess gets from the parent.
FORWARDED = ("steps", "warmup_steps", "batch_size", "device", "threads", "seed")


# ======================================================================================================================
# The recipe's settings and the data, identical for both variants
# ======================================================================================================================
def parse_recipe(workdir: str, batch_size: int, total_steps: int, seed: int, device: str,
                 encoder_overrides: dict | None = None) -> tuple:
    """``(classifier_args, data_args, views_config, FixMatchConfig, training_args)`` as ``recipes/finetune.py`` parses
    the recipe, overridden by the benchmark's batch size, step count, seed, device and
    ``vision_throughput.BENCHMARK_TRAINING_FLAGS``; ``encoder_overrides`` replaces the recipe's (tests: a tiny ViT)."""
    from hf_ssl.jobs.runner import parse_arguments

    overrides = dict(BENCHMARK_TRAINING_FLAGS, output_dir=os.path.join(workdir, "trainer_output"),
                     per_device_train_batch_size=batch_size, max_steps=total_steps, seed=seed,
                     use_cpu=str(device == "cpu").lower())
    if encoder_overrides is not None:
        overrides["encoder_config_overrides"] = json.dumps(encoder_overrides)
    flags = [text for name, value in overrides.items() for text in (f"--{name}", str(value))]
    return parse_arguments([str(ROOT / RECIPE), *flags])


def build_classifier(parsed: tuple, seed: int = 0):
    """The classifier the ``semi_image`` job builds from the recipe (here: its encoder preset at random init)."""
    from hf_ssl.jobs.semi_image import SemiImageJob

    *job_arguments, method_config, training_args = parsed
    torch.manual_seed(seed)
    return SemiImageJob(tuple(job_arguments), method_config, training_args).build_classifier(CLASS_NAMES)


def plan_batches(data: dict, seed: int, total_steps: int) -> list[list[list[int]]]:
    """``[labelled indices, unlabelled indices]`` of each step, in the order hf_ssl's loader draws them (a new
    unlabelled epoch after each pass, as the Trainer's ``set_epoch`` starts it)."""
    from hf_ssl.data.streams import LABELLED, UNLABELLED, TwoStreamBatchSampler

    sampler = TwoStreamBatchSampler(data["num_labelled"], data["num_unlabelled"], data["labelled_batch_size"],
                                    data["unlabelled_batch_size"], seed=seed)
    plan, epoch = [], 0
    while len(plan) < total_steps:
        sampler.set_epoch(epoch)
        for keys in sampler:
            plan.append([[key.index for key in keys if key.stream == stream] for stream in (LABELLED, UNLABELLED)])
        epoch += 1
    return plan[:total_steps]


def run_settings(parsed: tuple, classifier, num_batches: int, seed: int, hand_weak_pass: str = HAND_WEAK_PASSES[0]
                 ) -> dict:
    """All the hand-written process needs, as plain JSON (it never imports hf_ssl): the classifier's config, FixMatch's
    settings, the optimizer's, the data's sizes, the batch order and how the hand-written step passes its weak view
    (one of :data:`HAND_WEAK_PASSES`, see :func:`hand_loss`)."""
    _, _, views, method_config, training_args = parsed
    labelled_batch = training_args.per_device_train_batch_size
    unlabelled_batch = labelled_batch * method_config.unlabelled_batch_ratio
    data = {"num_labelled": num_batches * labelled_batch, "num_unlabelled": num_batches * unlabelled_batch,
            "labelled_batch_size": labelled_batch, "unlabelled_batch_size": unlabelled_batch,
            "image_size": int(classifier.config.image_size), "channels": int(classifier.config.num_channels),
            "num_classes": len(CLASS_NAMES)}
    named = ("learning_rate", "weight_decay", "max_grad_norm", "warmup_steps", "adam_epsilon")
    optimizer = {name: getattr(training_args, name) for name in named}
    optimizer.update({name: str(getattr(getattr(training_args, name), "value", getattr(training_args, name)))
                      for name in ("lr_scheduler_type", "optim")})
    optimizer["adam_betas"] = [training_args.adam_beta1, training_args.adam_beta2]
    return {
        "vit": classifier.config.to_dict(),
        "attn_implementation": classifier.config._attn_implementation,
        "fixmatch": {**method_config.to_dict(), "label_smoothing": training_args.label_smoothing_factor},
        "optimizer": optimizer,
        "data": data,
        "views_replaced": f"{type(views).__name__}(image_size={views.image_size}) -> pre-built random tensors",
        "plan": plan_batches(data, seed, training_args.max_steps),
        "hand_weak_pass": hand_weak_pass,
    }


def make_data(data: dict, seed: int) -> dict[str, torch.Tensor]:
    """Labelled images and labels; per unlabelled example a weak and a strong view (and an audit label)."""
    generator = torch.Generator().manual_seed(seed)
    image = (data["channels"], data["image_size"], data["image_size"])
    labelled, unlabelled, classes = data["num_labelled"], data["num_unlabelled"], data["num_classes"]
    return {
        "labelled": torch.randn(labelled, *image, generator=generator),
        "labels": torch.randint(classes, (labelled,), generator=generator),
        "weak": torch.randn(unlabelled, *image, generator=generator),
        "strong": torch.randn(unlabelled, *image, generator=generator),
        "audit_labels": torch.randint(classes, (unlabelled,), generator=generator),
    }


def planned_batch(tensors: dict[str, torch.Tensor], step_plan: list[list[int]]) -> dict[str, torch.Tensor]:
    labelled, unlabelled = (torch.tensor(indices) for indices in step_plan)
    return {"pixels": tensors["labelled"][labelled], "labels": tensors["labels"][labelled],
            "weak": tensors["weak"][unlabelled], "strong": tensors["strong"][unlabelled], "indices": unlabelled}


class PrebuiltViews:
    """The interface of :class:`hf_ssl.views.ImageWeakStrongViews` over pre-built tensors. The image column holds an
    index: ``i < num_labelled`` is labelled image ``i``, ``num_labelled + j`` unlabelled example ``j``."""

    input_columns = ("image",)

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.num_labelled = len(tensors["labelled"])

    def weak(self, value: int, rng=None) -> torch.Tensor:
        if value < self.num_labelled:
            return self.tensors["labelled"][value]
        return self.tensors["weak"][value - self.num_labelled]

    def strong(self, value: int, rng=None) -> torch.Tensor:
        return self.tensors["strong"][value - self.num_labelled]

    def plain(self, value: int) -> torch.Tensor:
        return self.weak(value)

    def collate(self, values: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack(values)}


# ======================================================================================================================
# (a) hf_ssl's path
# ======================================================================================================================
def make_trainer(parsed: tuple, model, tensors: dict[str, torch.Tensor], method_config=None, callbacks=()):
    """``SemiSupervisedTrainer`` as the ``semi_image`` job builds it, over :class:`PrebuiltViews` of ``tensors``."""
    import datasets

    from hf_ssl.semi.base import SEMI_METHOD_REGISTRY
    from hf_ssl.training import SemiSupervisedTrainer

    model_args, data_args, _, recipe_method_config, training_args = parsed
    labelled_count, unlabelled_count = len(tensors["labelled"]), len(tensors["weak"])
    labelled = datasets.Dataset.from_dict({"image": list(range(labelled_count)), "label": tensors["labels"].tolist()})
    unlabelled = datasets.Dataset.from_dict({"image": list(range(labelled_count, labelled_count + unlabelled_count)),
                                             "label": tensors["audit_labels"].tolist()})
    method = SEMI_METHOD_REGISTRY[model_args.method](method_config or recipe_method_config)
    return SemiSupervisedTrainer(
        model=model, args=training_args, method=method, train_dataset=labelled, unlabelled_dataset=unlabelled,
        views=PrebuiltViews(tensors), label_column="label",
        audit_label_column="label" if data_args.audit_unlabelled_labels else None, callbacks=list(callbacks),
    )


def trainer_callback(on_begin=None, on_step_end=None):
    """A ``TrainerCallback`` calling ``on_begin()`` at the start of training and ``on_step_end(state, control)`` after
    every optimizer step."""
    from transformers import TrainerCallback

    class Hooks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if on_begin is not None:
                on_begin()

        def on_step_end(self, args, state, control, **kwargs):
            if on_step_end is not None:
                on_step_end(state, control)

    return Hooks()


# ======================================================================================================================
# (b) The hand-written FixMatch step: plain PyTorch + transformers.ViTForImageClassification
# ======================================================================================================================
def hand_classifier(settings: dict):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig.from_dict(settings["vit"])
    config._attn_implementation = settings["attn_implementation"]
    return ViTForImageClassification(config)


def hand_loss(model, batch: dict[str, torch.Tensor], s: dict, weak_pass: str) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's loss (Sohn et al. 2020, Eq. 2-4) and the pseudo-label mask. ``weak_pass="joint"``: one forward over
    labelled, weak and strong images, as the reference implementation does; ``"no_grad"``: the weak images in a forward
    of their own under ``torch.no_grad()``, as hf_ssl's ``classifier_logits`` does for a model without BatchNorm."""
    if weak_pass == "joint":
        sizes = [len(batch["pixels"]), len(batch["weak"]), len(batch["strong"])]
        logits = model(pixel_values=torch.cat([batch["pixels"], batch["weak"], batch["strong"]])).logits
        logits_labelled, logits_weak, logits_strong = logits.split(sizes)
    else:
        logits = model(pixel_values=torch.cat([batch["pixels"], batch["strong"]])).logits
        logits_labelled, logits_strong = logits.split([len(batch["pixels"]), len(batch["strong"])])
        with torch.no_grad():
            logits_weak = model(pixel_values=batch["weak"]).logits
    supervised = F.cross_entropy(logits_labelled.float(), batch["labels"], label_smoothing=s["label_smoothing"])
    with torch.no_grad():
        confidence, pseudo_labels = logits_weak.float().softmax(dim=-1).max(dim=-1)
        mask = (confidence >= s["threshold"]).float()
    unsupervised = (F.cross_entropy(logits_strong.float(), pseudo_labels, reduction="none") * mask).mean()
    return supervised + s["unsupervised_weight"] * unsupervised, mask


def ema_decay(update: int, s: dict) -> float:
    """The EMA decay of the ``update``-th update (1-based): ``ema_decay``, capped by ``1 - 1/(n + 1)`` with warm-up."""
    return min(s["ema_decay"], 1.0 - 1.0 / (update + 1)) if s.get("ema_warmup") else s["ema_decay"]


@torch.no_grad()
def update_ema(ema, model, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` on parameters and floating-point buffers; other buffers copied."""
    pairs = list(zip([*ema.parameters(), *ema.buffers()], [*model.parameters(), *model.buffers()], strict=True))
    for mine, theirs in pairs:
        if not mine.is_floating_point():
            mine.copy_(theirs)
    averaged = [(mine, theirs.detach()) for mine, theirs in pairs if mine.is_floating_point()]
    if averaged:
        targets, sources = map(list, zip(*averaged, strict=True))
        torch._foreach_mul_(targets, decay)
        torch._foreach_add_(targets, sources, alpha=1.0 - decay)


def hand_update(model, ema, optimizer, scheduler, settings: dict, update: int) -> None:
    """After ``backward``: clip, AdamW step, LR schedule step, clear the gradients, EMA update number ``update``."""
    if settings["optimizer"]["max_grad_norm"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["optimizer"]["max_grad_norm"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        update_ema(ema, model, ema_decay(update, settings["fixmatch"]))


def optimizer_name(optimizer) -> str:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the Trainer's
    return f"{type(inner).__name__}(fused={inner.defaults.get('fused')})"


def frozen_copy(model):
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema.eval()


# ======================================================================================================================
# Same maths: one full step of each variant from the same weights on the same first batch
# ======================================================================================================================
def splitting_threshold(settings: dict, init_state: dict, batch: dict[str, torch.Tensor], device) -> float:
    """A confidence threshold halfway between the two middle weak-view confidences of ``batch`` at the initial
    weights: half the pseudo-labels pass it, far from any rounding difference."""
    model = hand_classifier(settings)
    model.load_state_dict(init_state)
    model.to(device).train()
    with torch.no_grad():
        pixels = torch.cat([batch["pixels"], batch["weak"], batch["strong"]]).to(device)
        logits_weak = model(pixel_values=pixels).logits.split([len(batch["pixels"]), len(batch["weak"]),
                                                                len(batch["strong"])])[1]
        confidence = logits_weak.float().softmax(dim=-1).max(dim=-1).values.sort().values
    middle = len(confidence) // 2
    return float(confidence[middle - 1] + confidence[middle]) / 2 if len(confidence) > 1 else 0.0


def max_diff_and_scale(first: dict, second: dict, reference: dict | None = None) -> tuple[float, float]:
    """``(max |first - second|, max |first - reference|)`` over the tensors of ``first`` (reference: 0)."""
    diff = max((first[k].double() - second[k].double()).abs().max().item() for k in first)
    scale = max((first[k].double() - (reference[k].double() if reference else 0)).abs().max().item() for k in first)
    return diff, scale


def compare_first_step(parsed: tuple, settings: dict, init_state: dict, device, threshold: float | None = None,
                       hand_overrides: dict | None = None) -> dict:
    """One step of each variant from ``init_state`` on the first planned batch (``threshold``: replaces ``tau`` in
    both; ``hand_overrides``: FixMatch settings of the hand-written step only, for tests). ``report["ok"]``: they
    agree within the tolerances."""
    tensors = make_data(settings["data"], parsed[4].seed)
    batch = planned_batch(tensors, settings["plan"][0])
    fixmatch = dict(settings["fixmatch"], **({} if threshold is None else {"threshold": threshold}))
    hand_settings = dict(settings, fixmatch={**fixmatch, **(hand_overrides or {})})
    total = parsed[4].max_steps

    # (a) hf_ssl: the real trainer, stopped after its first optimizer step.
    model = build_classifier(parsed)
    model.load_state_dict(init_state)
    method_config = parsed[3] if threshold is None else dataclasses.replace(parsed[3], threshold=threshold)

    def stop(state, control):
        control.should_training_stop = True

    trainer = make_trainer(parsed, model, tensors, method_config, [trainer_callback(on_step_end=stop)])
    loaded = next(iter(trainer.get_train_dataloader()))
    same_batch = all(torch.equal(a, b) for a, b in (
        (loaded["labelled"]["pixel_values"], batch["pixels"]), (loaded["labelled"]["labels"], batch["labels"]),
        (loaded["unlabelled"]["views"][0]["pixel_values"], batch["weak"]),
        (loaded["unlabelled"]["views"][1]["pixel_values"], batch["strong"]),
        (loaded["unlabelled"]["indices"], batch["indices"])))
    hf_grads: dict[str, torch.Tensor] = {}
    hooks = [parameter.register_post_accumulate_grad_hook(
        lambda p, name=name: hf_grads.__setitem__(name, p.grad.detach().clone()))
        for name, parameter in model.named_parameters() if parameter.requires_grad]
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's start line
        hf_loss = trainer.train().training_loss
    for hook in hooks:
        hook.remove()
    hf_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hf_ema = trainer.method.ema_model.state_dict() if trainer.method.ema_model is not None else None

    # (b) hand-written.
    hand = hand_classifier(hand_settings)
    hand.load_state_dict(init_state)
    hand.to(device).train()
    ema = frozen_copy(hand) if fixmatch["ema_decay"] is not None else None
    optimizer, scheduler = hand_optimizer(hand, settings["optimizer"], total)
    batch = {k: v.to(device) for k, v in batch.items()}
    # In hf_ssl's passes (the weak view on its own: the recipe's ViT has no BatchNorm) the sums round as in hf_ssl, so
    # the weights after the step can be compared: AdamW's first step is nearly sign(gradient), which turns rounding in
    # near-zero gradients into visible weight differences.
    hand_loss_value, mask = hand_loss(hand, batch, hand_settings["fixmatch"], "no_grad")
    hand_loss_value.backward()
    hand_grads = {name: p.grad.detach().clone() for name, p in hand.named_parameters() if p.grad is not None}
    hand_update(hand, ema, optimizer, scheduler, hand_settings, update=1)
    # The timed step's own passes (``--hand_weak_pass``): the same loss and gradients, up to rounding.
    timed = hand_classifier(hand_settings)
    timed.load_state_dict(init_state)
    timed.to(device).train()
    timed_loss, _ = hand_loss(timed, batch, hand_settings["fixmatch"], settings["hand_weak_pass"])
    timed_loss.backward()
    timed_grads = {name: p.grad.detach().clone() for name, p in timed.named_parameters() if p.grad is not None}

    # The EMA's decay over a long run, which one step cannot show (with warm-up the first update's is 0.5 whatever
    # ema_decay is): hf_ssl's method.ema_momentum at each step against the hand-written schedule.
    from hf_ssl.schedules import TrainingProgress

    schedule_diff = max((abs(trainer.method.ema_momentum(TrainingProgress(n - 1, EMA_SCHEDULE_STEPS, 1))
                             - ema_decay(n, hand_settings["fixmatch"])) for n in range(1, EMA_SCHEDULE_STEPS + 1)),
                        default=0.0) if ema is not None else 0.0
    init = {k: v.to(device) for k, v in init_state.items()}
    grad_diff, grad_scale = max_diff_and_scale(hf_grads, hand_grads) if set(hf_grads) == set(hand_grads) else (
        float("inf"), 0.0)
    timed_grad_diff = max_diff_and_scale(hf_grads, timed_grads)[0] if set(hf_grads) == set(timed_grads) else float(
        "inf")
    timed_loss_diff = abs(hf_loss - timed_loss.item())
    step_diff, step_scale = max_diff_and_scale(hf_weights, hand.state_dict(), init)
    if hf_ema is None or ema is None:  # an EMA in one variant only: not the same maths
        ema_diff, ema_scale = (0.0, 0.0) if hf_ema is None and ema is None else (float("inf"), 0.0)
    else:
        ema_diff, ema_scale = max_diff_and_scale(hf_ema, ema.state_dict(), init)
    loss_diff = abs(hf_loss - hand_loss_value.item())
    report = {
        "threshold": fixmatch["threshold"],
        "mask_rate": mask.mean().item(),
        "first_batch_of_hf_ssl_loader_is_the_planned_one": same_batch,
        "hf_ssl_loss": hf_loss,
        "hand_written_loss": hand_loss_value.item(),
        "loss_abs_diff": loss_diff,
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
        "timed_weak_pass": settings["hand_weak_pass"],
        "timed_pass_loss_abs_diff": timed_loss_diff,
        "timed_pass_grad_max_abs_diff": timed_grad_diff,
        "trained_tensors_compared": len(hand_grads),
        "weights_after_step_max_abs_diff": step_diff,
        "weights_step_max_abs": step_scale,
        "ema_after_first_update_max_abs_diff": ema_diff,
        "ema_first_update_max_abs": ema_scale,
        "ema_decay_first_update": ema_decay(1, fixmatch) if ema is not None else None,
        "ema_decay_schedule_max_abs_diff": schedule_diff,
        "optimizers": [optimizer_name(trainer.optimizer), optimizer_name(optimizer)],
        "attn_implementation": [model.config._attn_implementation, hand.config._attn_implementation],
        "tolerances": {"loss_relative": LOSS_TOLERANCE, "grad_relative_to_max": GRADIENT_TOLERANCE,
                       "weights_relative_to_step": STEP_TOLERANCE, "ema_relative_to_update": EMA_TOLERANCE,
                       "ema_decay_schedule_abs": 1e-12},
    }
    report["ok"] = bool(
        same_batch
        and loss_diff <= LOSS_TOLERANCE * max(1.0, abs(hf_loss))
        and grad_diff <= GRADIENT_TOLERANCE * grad_scale
        and timed_loss_diff <= LOSS_TOLERANCE * max(1.0, abs(hf_loss))
        and timed_grad_diff <= GRADIENT_TOLERANCE * grad_scale
        and step_diff <= STEP_TOLERANCE * step_scale
        and ema_diff <= EMA_TOLERANCE * ema_scale
        and schedule_diff <= 1e-12
        and len(hand_grads) == sum(p.requires_grad for p in model.parameters()) > 0
        and report["attn_implementation"][0] == report["attn_implementation"][1]
    )
    return report


def check_parity(parsed: tuple, settings: dict, init_state: dict, device) -> dict:
    """:func:`compare_first_step` at the recipe's threshold and at one that keeps half the first batch's
    pseudo-labels; ``ok`` when both agree."""
    batch = planned_batch(make_data(settings["data"], parsed[4].seed), settings["plan"][0])
    split = splitting_threshold(settings, init_state, batch, device)
    reports = {"recipe_threshold": compare_first_step(parsed, settings, init_state, device),
               "half_kept_threshold": compare_first_step(parsed, settings, init_state, device, threshold=split)}
    return {**reports, "ok": all(report["ok"] for report in reports.values())}


def parity_line(name: str, p: dict) -> str:
    return (f"parity ({name}, tau {p['threshold']:.4f}, mask rate {p['mask_rate']:.2f}): loss {p['hf_ssl_loss']:.6f} "
            f"vs {p['hand_written_loss']:.6f} (|diff| {p['loss_abs_diff']:.1e}); max |grad diff| "
            f"{p['grad_max_abs_diff']:.1e} of {p['grad_max_abs']:.1e} over {p['trained_tensors_compared']} tensors; "
            f"weights after the step |diff| {p['weights_after_step_max_abs_diff']:.1e} of a step of "
            f"{p['weights_step_max_abs']:.1e}; EMA |diff| {p['ema_after_first_update_max_abs_diff']:.1e} of an "
            f"update of {p['ema_first_update_max_abs']:.1e}; loader batch as planned: "
            f"{p['first_batch_of_hf_ssl_loader_is_the_planned_one']}; timed hand-written passes "
            f"({p['timed_weak_pass']}): loss |diff| {p['timed_pass_loss_abs_diff']:.1e}, max |grad diff| "
            f"{p['timed_pass_grad_max_abs_diff']:.1e}")


# ======================================================================================================================
# Workers: one timed run of one variant, in its own process
# ======================================================================================================================
def run_hf_ssl(args, device, settings: dict, init_state: dict, memory: PeakMemory) -> dict:
    total = args.warmup_steps + args.steps
    parsed = parse_recipe(args._workdir, args.batch_size, total, args.seed, args.device)
    model = build_classifier(parsed)
    model.load_state_dict(init_state, strict=True)
    tensors = make_data(settings["data"], args.seed)
    clock = StepClock(device, memory, args.warmup_steps, total)
    # Step k takes stamps[k] - stamps[k - 1]: everything the Trainer does between two optimizer steps (its loader, the
    # method's diagnostics, the EMA callback, logging).
    timer = trainer_callback(on_begin=lambda: clock.tick(0), on_step_end=lambda state, _: clock.tick(state.global_step))
    memory.mark_baseline()
    trainer = make_trainer(parsed, model, tensors, callbacks=[timer])
    output = trainer.train()
    return {**clock.result(), "mean_training_loss": output.training_loss,
            "optimizer": optimizer_name(trainer.optimizer),
            "attn_implementation": model.config._attn_implementation}


def run_hand(args, device, settings: dict, init_state: dict, memory: PeakMemory) -> dict:
    if "hf_ssl" in sys.modules:
        raise RuntimeError("the hand-written run must not import hf_ssl")
    total = args.warmup_steps + args.steps
    model = hand_classifier(settings)
    model.load_state_dict(init_state, strict=True)
    model.to(device).train()
    tensors = make_data(settings["data"], args.seed)
    batches = [planned_batch(tensors, step_plan) for step_plan in settings["plan"]]
    del tensors
    s = settings["fixmatch"]
    memory.mark_baseline()
    ema = frozen_copy(model) if s["ema_decay"] is not None else None
    optimizer, scheduler = hand_optimizer(model, settings["optimizer"], total)
    loss_sum = torch.zeros((), device=device)
    clock = StepClock(device, memory, args.warmup_steps, total)
    clock.tick(0)
    for step in range(total):
        batch = {key: value.to(device, non_blocking=True) for key, value in batches[step].items()}
        loss, _ = hand_loss(model, batch, s, settings["hand_weak_pass"])
        loss.backward()
        hand_update(model, ema, optimizer, scheduler, settings, update=step + 1)
        loss_sum += loss.detach()
        clock.tick(step + 1)
    return {**clock.result(), "mean_training_loss": loss_sum.item() / total,
            "optimizer": optimizer_name(optimizer),
            "attn_implementation": model.config._attn_implementation}


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory = PeakMemory(device)  # its sampler thread first
    workdir = Path(args._workdir)
    settings = json.loads((workdir / "settings.json").read_text())
    init_state = torch.load(workdir / "init.pt", weights_only=True)
    started = time.perf_counter()
    info = (run_hf_ssl if args._worker == "hf_ssl" else run_hand)(args, device, settings, init_state, memory)
    info.update(variant=args._worker, glibc_tunables=os.environ.get("GLIBC_TUNABLES"),
                wall_seconds=time.perf_counter() - started)
    (workdir / f"result_{args._worker}_{args._round}.json").write_text(json.dumps(info))


# ======================================================================================================================
# Parent: parity check, alternating subprocesses, record
# ======================================================================================================================
def compare_variants(results: dict[str, list[dict]], warmup: int) -> dict:
    """Both summaries and the ratios (a) / (b): overall medians, per round, and peak memory growth."""
    a, b = summarise(results["hf_ssl"], warmup), summarise(results["hand"], warmup)

    def per_round(key: str) -> list[float]:
        return [statistics.median(x[key][warmup:]) / statistics.median(y[key][warmup:])
                for x, y in zip(results["hf_ssl"], results["hand"], strict=True)]

    losses = zip(a["mean_training_loss"], b["mean_training_loss"], strict=True)
    return {
        "hf_ssl": a,
        "hand_written": b,
        "ratio_seconds_per_step_hf_ssl_over_hand": a["median_seconds_per_step"] / b["median_seconds_per_step"],
        "per_round_ratio_seconds_per_step": per_round("step_seconds"),
        "ratio_cpu_seconds_per_step_hf_ssl_over_hand":
            a["median_cpu_seconds_per_step"] / b["median_cpu_seconds_per_step"],
        "per_round_ratio_cpu_seconds_per_step": per_round("step_cpu_seconds"),
        "ratio_peak_memory_growth_hf_ssl_over_hand": a["peak_memory_growth_bytes"] / b["peak_memory_growth_bytes"],
        "mean_training_loss_max_abs_diff": max(abs(x - y) for x, y in losses),
    }


def environment(device: torch.device) -> dict:
    import transformers

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def benchmark(args, device: torch.device) -> dict:
    total = args.warmup_steps + args.steps
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    order: list[str] = []
    with tempfile.TemporaryDirectory(prefix="semi_throughput_") as workdir:
        parsed = parse_recipe(workdir, args.batch_size, total, args.seed, args.device)
        classifier = build_classifier(parsed)
        init_state = {key: value.detach().clone() for key, value in classifier.state_dict().items()}
        settings = run_settings(parsed, classifier, args.num_batches, args.seed, args.hand_weak_pass)
        del classifier
        parity = check_parity(parsed, settings, init_state, device)
        for name in ("recipe_threshold", "half_kept_threshold"):
            print(parity_line(name, parity[name]), flush=True)
        if not parity["ok"]:
            raise SystemExit("hf_ssl's FixMatch and the hand-written step do not compute the same maths; not timing")
        if args.parity_only:
            return {"parity_first_step": parity}
        (Path(workdir) / "settings.json").write_text(json.dumps(settings))
        torch.save(init_state, Path(workdir) / "init.pt")
        env = dict(os.environ, **({"GLIBC_TUNABLES": STEADY_MALLOC} if args.malloc_tunables else {}))
        for round_index in range(args.rounds):
            for variant in VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]:  # a b b a a b ...
                command = [sys.executable, os.path.abspath(__file__), "--_worker", variant, "--_workdir", workdir,
                           "--_round", str(round_index)]
                command += [text for name in FORWARDED for text in (f"--{name}", str(getattr(args, name)))]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                result = json.loads((Path(workdir) / f"result_{variant}_{round_index}.json").read_text())
                results[variant].append(result)
                order.append(variant)
                print(f"  round {round_index} {variant:>6}: median "
                      f"{statistics.median(result['step_seconds'][args.warmup_steps:]):.3f} s/step, CPU "
                      f"{statistics.median(result['step_cpu_seconds'][args.warmup_steps:]):.3f} s/step, peak growth "
                      f"{mib(result['memory']['peak_growth_bytes']):.0f} MiB", flush=True)

    config = {key: value for key, value in settings.items() if key != "plan"}
    config.update(labelled_batch_size=args.batch_size, unlabelled_batch_size=settings["data"]["unlabelled_batch_size"],
                  timed_steps_per_run=args.steps, warmup_steps_per_run=args.warmup_steps, rounds=args.rounds,
                  run_order=order, num_prebuilt_batches=args.num_batches, threads=args.threads, device=args.device,
                  dtype="float32", seed=args.seed,
                  glibc_tunables=STEADY_MALLOC if args.malloc_tunables else os.environ.get("GLIBC_TUNABLES"))
    return {
        "benchmark": "semi_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", os.path.relpath(os.path.abspath(__file__), ROOT), *args.command_line]),
        "recipe": RECIPE,
        "paper": "Sohn et al. 2020. FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence. "
                 "arXiv:2001.07685",
        "environment": environment(device),
        "config": config,
        "parity_first_step": parity,
        "memory_measure": results["hf_ssl"][0]["memory"]["kind"],
        **compare_variants(results, args.warmup_steps),
        "raw": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="Timed optimizer steps per run (default 8).")
    parser.add_argument("--warmup_steps", type=int, default=2, help="Untimed steps before them (default 2).")
    parser.add_argument("--batch_size", type=int, default=16,
                        help="Labelled images per step (default 16, the recipe's); unlabelled: mu (7) times as many.")
    parser.add_argument("--rounds", type=int, default=4,
                        help="Runs of each variant, alternated a b b a a b b a ... (default 4).")
    parser.add_argument("--num_batches", type=int, default=4,
                        help="Pre-built labelled and unlabelled batches (default 4; hf_ssl's loader cycles them).")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run (default 2).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parity_only", action="store_true", help="Only the first-step parity check, no timing.")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"JSON record (default {DEFAULT_OUTPUT}).")
    parser.add_argument("--hand_weak_pass", choices=HAND_WEAK_PASSES, default=HAND_WEAK_PASSES[0],
                        help="The hand-written step's weak view: in its one joint forward, as FixMatch's reference "
                        "implementation (default), or in a no-grad forward of its own, as hf_ssl (the Trainer's own "
                        "overhead).")
    parser.add_argument("--malloc_tunables", action="store_true",
                        help=f"Run the timed subprocesses with GLIBC_TUNABLES={STEADY_MALLOC} (see vision_throughput).")
    parser.add_argument("--_worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    parser.add_argument("--_round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command_line = list(sys.argv[1:] if argv is None else argv)

    if start(parser, args, worker):
        return 0
    record = benchmark(args, torch.device(args.device))
    if args.parity_only:
        return 0
    print(f"\nhf_ssl / hand-written: s/step {record['ratio_seconds_per_step_hf_ssl_over_hand']:.3f}, CPU s/step "
          f"{record['ratio_cpu_seconds_per_step_hf_ssl_over_hand']:.3f}, peak memory growth "
          f"{record['ratio_peak_memory_growth_hf_ssl_over_hand']:.3f}; run-mean loss |diff| "
          f"{record['mean_training_loss_max_abs_diff']:.1e}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
