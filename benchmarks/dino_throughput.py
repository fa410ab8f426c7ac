#!/usr/bin/env python
"""DINO training throughput and peak memory: hf_ssl's ``SSLTrainer`` path against a hand-written PyTorch loop.

Variants (same tiny ViT, same DINO head, same batches, same optimizer, same number of steps):

(a) ``hf_ssl``: :class:`hf_ssl.trainer.SSLTrainer` + :class:`hf_ssl.DINOForPreTraining`, the path users run. The
    pre-built crops go through a tiny ``Dataset`` of per-example dicts and the default
    :func:`hf_ssl.collators.stack_views` collator.
(b) ``hand-written``: the same maths written out below with no Trainer and no callbacks: student ``ViTModel`` (no
    pooler) + DINO head (3-layer GELU MLP, L2-norm, weight-normalised prototypes), EMA teacher updated with
    ``torch._foreach_*`` after ``AdamW.step``, centring, the cross-entropy over view pairs, gradient clipping.

The number we track is ``median seconds/step (a) / median seconds/step (b)``: ~1.0 means hf_ssl and the Trainer add no
overhead to the maths. Peak memory growth over the pre-training baseline is compared the same way.

Before timing, the script checks once, in this process, that both variants compute the same loss, gradients and
centre update on the first batch from the same initial weights (the hand-written modules are loaded from the hf_ssl
model's weights); every timed run then starts from those same weights, and the mean training losses of the two
variants are compared at the end (same maths end to end: optimizer, clipping, EMA, schedules).

Each timed run is a separate subprocess (a, b, b, a, a, b, ... so that drift hits both sides alike) so that memory
measurements and allocator state of one variant cannot leak into the other. Data loading and augmentation are
excluded: the crops are random tensors built once with a fixed seed.

Also reported: process CPU seconds per step (steadier than wall time on a shared machine) and minor page faults per
step (glibc handing freed activations back to the kernel and faulting them in again; see ``--malloc_tunables``).

Usage::

    python benchmarks/dino_throughput.py                       # CPU, 2 threads, defaults below
    python benchmarks/dino_throughput.py --threads 1           # cores shared with another job (see README)
    python benchmarks/dino_throughput.py --device cuda --steps 50 --batch_size 256

See benchmarks/README.md for measured numbers.
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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "dino_throughput.json"
# glibc malloc settings for --malloc_tunables: never trim the heap, fixed 32 MiB mmap threshold.
STEADY_MALLOC = "glibc.malloc.trim_threshold=4294967295:glibc.malloc.mmap_threshold=33554432"

# The fixed tiny config. Encoder: ViT with 192 hidden, 4 layers, 3 heads (a 4-layer ViT-Tiny), 4 px patches on 32 px
# global crops (65 tokens) and 16 px local crops (17 tokens).
VIT = {
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "image_size": 32,
    "patch_size": 4,
}
HEAD = {"out_dim": 4096, "hidden_dim": 1024, "bottleneck_dim": 256}
DINO = {
    "num_global_crops": 2,
    "num_local_crops": 4,
    "global_crop_size": 32,
    "local_crop_size": 16,
    "student_temperature": 0.1,
    "teacher_temperature": 0.04,
    "center_momentum": 0.9,
    "momentum_teacher": 0.996,
    "momentum_teacher_end": 1.0,
}
OPTIM = {"learning_rate": 5e-4, "weight_decay": 0.04, "max_grad_norm": 3.0, "lr_scheduler_type": "cosine"}


# ======================================================================================================================
# Data: pre-built batches of crops, identical for both variants
# ======================================================================================================================
def make_batches(num_batches: int, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    g, l, gs, ls = DINO["num_global_crops"], DINO["num_local_crops"], DINO["global_crop_size"], DINO["local_crop_size"]
    return [
        {
            "global_crops": torch.randn(batch_size, g, 3, gs, gs, generator=generator),
            "local_crops": torch.randn(batch_size, l, 3, ls, ls, generator=generator),
        }
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


def vit_config():
    from transformers import ViTConfig

    return ViTConfig(**VIT)


def cosine(step: int, total: int, start: float, end: float) -> float:
    """DINO's cosine schedule from ``start`` (step 0) to ``end`` (step ``total``)."""
    progress = min(max(step / total, 0.0), 1.0) if total > 0 else 1.0
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


# ======================================================================================================================
# (b) The hand-written DINO: modules, loss, one training step
# ======================================================================================================================
class HandDINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear -> L2 normalise -> weight-normalised Linear (gain fixed to 1), no bias."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad_(False)  # norm_last_layer=True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class HandDINO(nn.Module):
    """Student and EMA teacher (ViTModel without pooler + HandDINOHead) and the centre, as plain PyTorch."""

    def __init__(self, config):
        super().__init__()
        from transformers import ViTModel

        head = dict(in_dim=config.hidden_size, **HEAD)
        self.student = ViTModel(config, add_pooling_layer=False)
        self.student_head = HandDINOHead(**head)
        self.teacher = ViTModel(config, add_pooling_layer=False)
        self.teacher_head = HandDINOHead(**head)
        for parameter in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            parameter.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, HEAD["out_dim"]))

    def load_from_hf_ssl(self, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        """Weights exported by :func:`export_hf_ssl_weights` (strict: every tensor must map)."""
        self.student.load_state_dict(weights["student_encoder"], strict=True)
        self.teacher.load_state_dict(weights["teacher_encoder"], strict=True)
        self.student_head.load_state_dict(weights["student_head"], strict=True)
        self.teacher_head.load_state_dict(weights["teacher_head"], strict=True)
        self.center.copy_(weights["center"])

    def student_parameters(self) -> list[nn.Parameter]:
        return [p for m in (self.student, self.student_head) for p in m.parameters() if p.requires_grad]

    def teacher_parameters(self) -> list[nn.Parameter]:
        # Same order as student_parameters(), frozen gain included on both sides (EMA of 1 and 1 is 1).
        return [p for m in (self.teacher, self.teacher_head) for p in m.parameters()]

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor, teacher_temperature: float):
        batch = global_crops.shape[0]
        # (B, V, C, H, W) -> (V * B, C, H, W), view-major
        global_flat = global_crops.transpose(0, 1).reshape(-1, *global_crops.shape[2:])
        local_flat = local_crops.transpose(0, 1).reshape(-1, *local_crops.shape[2:])

        def cls(encoder, pixels):
            return encoder(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state[:, 0]

        # As DINO's MultiCropWrapper: one encoder pass per resolution, then the head once on all CLS tokens.
        student_out = self.student_head(torch.cat([cls(self.student, global_flat), cls(self.student, local_flat)]))
        with torch.no_grad():
            teacher_out = self.teacher_head(cls(self.teacher, global_flat))

        # DINO loss (Caron et al. 2021, Eq. 3 / main_dino.py): CE(teacher view t, student view s) over pairs s != t.
        num_views = student_out.shape[0] // batch
        student_logp = F.log_softmax(student_out / DINO["student_temperature"], dim=-1).chunk(num_views)
        teacher_p = F.softmax((teacher_out - self.center) / teacher_temperature, dim=-1).chunk(DINO["num_global_crops"])
        total, terms = 0.0, 0
        for t, q in enumerate(teacher_p):
            for s, logp in enumerate(student_logp):
                if s == t:
                    continue
                total = total + torch.sum(-q * logp, dim=-1).mean()
                terms += 1
        loss = total / terms
        with torch.no_grad():  # centre EMA (Eq. 4), after the loss used the old centre
            batch_center = teacher_out.sum(dim=0, keepdim=True) / teacher_out.shape[0]
            self.center.mul_(DINO["center_momentum"]).add_(batch_center, alpha=1 - DINO["center_momentum"])
        return loss


def hand_optimizer(model: HandDINO, total_steps: int):
    from transformers import get_scheduler

    params = [(n, p) for m in (model.student, model.student_head) for n, p in m.named_parameters() if p.requires_grad]
    groups = [
        # DINO's rule (and Trainer's: no decay on biases and LayerNorm): decay only tensors of >= 2 dims.
        {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": OPTIM["weight_decay"]},
        {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused=True: what Trainer's default `optim="adamw_torch_fused"` builds (transformers 5, torch >= 2.8).
    optimizer = torch.optim.AdamW(groups, lr=OPTIM["learning_rate"], betas=(0.9, 0.999), eps=1e-8, fused=True)
    scheduler = get_scheduler(OPTIM["lr_scheduler_type"], optimizer, num_warmup_steps=0, num_training_steps=total_steps)
    return optimizer, scheduler


# ======================================================================================================================
# (a) hf_ssl
# ======================================================================================================================
def build_hf_ssl_model():
    from hf_ssl import DINOForPreTraining

    return DINOForPreTraining.from_encoder_config(
        vit_config(),
        **HEAD,
        student_temperature=DINO["student_temperature"],
        teacher_temperature=DINO["teacher_temperature"],
        warmup_teacher_temperature=DINO["teacher_temperature"],
        warmup_teacher_temperature_epochs=0.0,
        center_momentum=DINO["center_momentum"],
        momentum_teacher=DINO["momentum_teacher"],
        momentum_teacher_end=DINO["momentum_teacher_end"],
        # No frozen prototypes: both variants update every parameter at every step.
        freeze_last_layer_epochs=0.0,
    )


def export_hf_ssl_weights(model) -> dict:
    """hf_ssl state dict + the same weights under the hand-written modules' names."""

    def head(module):
        return {key.replace("mlp.layers.", "mlp."): value for key, value in module.state_dict().items()}

    return {
        "hf_ssl": model.state_dict(),
        "student_encoder": model.student_encoder.state_dict(),
        "teacher_encoder": model.encoder.state_dict(),
        "student_head": head(model.student_head),
        "teacher_head": head(model.teacher_head),
        "center": model.loss_fn.center.clone(),
    }


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
    cost cancels in the ratio. ``ru_maxrss`` is reported too, as an exact whole-process upper bound; each variant
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
            "process_ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "minor_page_faults_in_window": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults,
        }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ======================================================================================================================
# Workers: one timed run of one variant, in its own process
# ======================================================================================================================
def run_hf_ssl(args, device, batches, weights, memory) -> dict:
    from transformers import TrainerCallback

    from hf_ssl.trainer import SSLTrainer, SSLTrainingArguments

    model = build_hf_ssl_model()
    model.load_state_dict(weights["hf_ssl"], strict=True)
    del weights
    total = args.warmup_steps + args.steps
    stamps: list[float] = []
    cpu: list[float] = []
    info: dict = {}

    class StepTimer(TrainerCallback):
        """Timestamps at the end of every optimizer step: step k takes stamps[k] - stamps[k - 1], everything the
        Trainer does between two steps included (dataloader + collator, callbacks, logging)."""

        def on_train_begin(self, *_, **__):
            synchronize(device)
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())

        def on_step_end(self, _args, state, control, **kwargs):
            synchronize(device)
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            if state.global_step == args.warmup_steps:
                info["threads"] = torch.get_num_threads()
                memory.start_window()
            elif state.global_step == total:
                info["memory"] = memory.stop_window()

    memory.mark_baseline()
    training_args = SSLTrainingArguments(
        output_dir=os.path.join(args._workdir, "trainer_output"),  # nothing is saved; removed with the workdir
        use_cpu=device.type == "cpu",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_drop_last=True,
        per_device_train_batch_size=args.batch_size,
        max_steps=total,
        learning_rate=OPTIM["learning_rate"],
        weight_decay=OPTIM["weight_decay"],
        max_grad_norm=OPTIM["max_grad_norm"],
        lr_scheduler_type=OPTIM["lr_scheduler_type"],
        warmup_steps=0,
        # The batches must come in the order the hand-written loop uses them (only the end-to-end loss check needs
        # this; a shuffled sampler costs the same).
        train_sampling_strategy="sequential",
        seed=args.seed,
    )
    trainer = SSLTrainer(model=model, args=training_args, train_dataset=PrebuiltCrops(batches), callbacks=[StepTimer()])
    output = trainer.train()
    info["optimizer"] = f"{type(trainer.optimizer).__name__}(fused={trainer.optimizer.defaults.get('fused')})"
    info["mean_training_loss"] = output.training_loss
    info["step_seconds"] = [b - a for a, b in pairwise(stamps)]
    info["step_cpu_seconds"] = [b - a for a, b in pairwise(cpu)]
    info["attn_implementation"] = model.student_encoder.config._attn_implementation
    return info


def run_hand(args, device, batches, weights, memory) -> dict:
    model = HandDINO(vit_config())
    model.load_from_hf_ssl(weights)
    del weights
    model.to(device).train()
    total = args.warmup_steps + args.steps
    memory.mark_baseline()
    optimizer, scheduler = hand_optimizer(model, total)
    student_params, teacher_params = model.student_parameters(), model.teacher_parameters()
    student_all = [p for m in (model.student, model.student_head) for p in m.parameters()]
    loss_sum = torch.zeros((), device=device)
    info: dict = {}
    stamps, cpu = [0.0] * (total + 1), [0.0] * (total + 1)
    synchronize(device)
    stamps[0], cpu[0] = time.perf_counter(), time.process_time()
    for step in range(total):
        batch = batches[step % len(batches)]
        global_crops = batch["global_crops"].to(device, non_blocking=True)
        local_crops = batch["local_crops"].to(device, non_blocking=True)
        loss = model(global_crops, local_crops, DINO["teacher_temperature"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student_params, OPTIM["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        # EMA teacher after the optimizer step; momentum cosine-scheduled over the run (step = steps done before).
        momentum = cosine(step, total, DINO["momentum_teacher"], DINO["momentum_teacher_end"])
        with torch.no_grad():
            torch._foreach_mul_(teacher_params, momentum)
            torch._foreach_add_(teacher_params, [p.detach() for p in student_all], alpha=1.0 - momentum)
        loss_sum += loss.detach()
        synchronize(device)
        stamps[step + 1], cpu[step + 1] = time.perf_counter(), time.process_time()
        if step + 1 == args.warmup_steps:
            info["threads"] = torch.get_num_threads()
            memory.start_window()
    info["memory"] = memory.stop_window()
    info["optimizer"] = f"{type(optimizer).__name__}(fused={optimizer.defaults.get('fused')})"
    info["mean_training_loss"] = loss_sum.item() / total
    info["step_seconds"] = [b - a for a, b in pairwise(stamps)]
    info["step_cpu_seconds"] = [b - a for a, b in pairwise(cpu)]
    info["attn_implementation"] = model.student.config._attn_implementation
    return info


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    memory = PeakMemory(device)  # sampler thread first, then everything else
    workdir = Path(args._workdir)
    batches = make_batches(args.num_batches, args.batch_size, args.seed)
    weights = torch.load(workdir / "init.pt", weights_only=True)
    started = time.perf_counter()
    run = run_hf_ssl if args._worker == "hf_ssl" else run_hand
    info = run(args, device, batches, weights, memory)
    info["variant"] = args._worker
    info["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES")
    info["wall_seconds"] = time.perf_counter() - started
    (workdir / f"result_{args._worker}_{args._round}.json").write_text(json.dumps(info))


# ======================================================================================================================
# Parent: parity check, then alternate subprocesses, then report
# ======================================================================================================================
def parity_check(device: torch.device, batches) -> tuple[dict, dict]:
    """Same initial weights -> same loss, gradients and centre update on the first batch. Returns (init weights,
    report)."""
    torch.manual_seed(0)
    hf_model = build_hf_ssl_model()
    weights = export_hf_ssl_weights(hf_model)  # exported before any forward (the forward moves the centre)
    weights = {k: ({n: t.detach().clone() for n, t in v.items()} if isinstance(v, dict) else v.clone())
               for k, v in weights.items()}
    hand = HandDINO(vit_config())
    hand.load_from_hf_ssl(weights)
    hf_model.to(device).train()
    hand.to(device).train()
    batch = {key: value.to(device) for key, value in batches[0].items()}

    hf_loss = hf_model(**batch).loss
    hf_loss.backward()
    hand_loss = hand(batch["global_crops"], batch["local_crops"], DINO["teacher_temperature"])
    hand_loss.backward()

    pairs = [(hf_model.student_encoder, hand.student), (hf_model.student_head, hand.student_head)]
    grad_diff, grad_scale = 0.0, 0.0
    for hf_module, hand_module in pairs:
        hand_params = dict(hand_module.named_parameters())
        for name, parameter in hf_module.named_parameters():
            if parameter.grad is None:
                continue
            other = hand_params[name.replace("mlp.layers.", "mlp.")].grad
            grad_diff = max(grad_diff, (parameter.grad - other).abs().max().item())
            grad_scale = max(grad_scale, parameter.grad.abs().max().item())
    report = {
        "hf_ssl_loss": hf_loss.item(),
        "hand_written_loss": hand_loss.item(),
        "loss_abs_diff": abs(hf_loss.item() - hand_loss.item()),
        "grad_max_abs_diff": grad_diff,
        "grad_max_abs": grad_scale,
        "center_max_abs_diff": (hf_model.loss_fn.center - hand.center).abs().max().item(),
        "attn_implementation": [
            hf_model.student_encoder.config._attn_implementation,
            hand.student.config._attn_implementation,
        ],
    }
    return weights, report


def mib(value: float) -> float:
    return value / 2**20


def summarise(results: list[dict], warmup: int) -> dict:
    timed = [seconds for result in results for seconds in result["step_seconds"][warmup:]]
    growth = [result["memory"]["peak_growth_bytes"] for result in results]
    cpu = [seconds for result in results for seconds in result["step_cpu_seconds"][warmup:]]
    return {
        "median_seconds_per_step": statistics.median(timed),
        "mean_seconds_per_step": statistics.fmean(timed),
        "min_seconds_per_step": min(timed),
        "max_seconds_per_step": max(timed),
        "steps_per_second": 1.0 / statistics.median(timed),
        "per_run_median_seconds_per_step": [statistics.median(r["step_seconds"][warmup:]) for r in results],
        "timed_steps": len(timed),
        # Process CPU time (all threads) per step: on a shared machine it does not count the time this process
        # waited for a core, so it is steadier than wall time; wall time is the number we track.
        "median_cpu_seconds_per_step": statistics.median(cpu),
        "minor_page_faults_per_timed_step": statistics.fmean(
            r["memory"]["minor_page_faults_in_window"] / max(1, len(r["step_seconds"]) - warmup) for r in results
        ),
        "peak_memory_growth_bytes": max(growth),
        "per_run_peak_memory_growth_bytes": growth,
        "process_peak_rss_bytes": max(r["memory"]["process_ru_maxrss_bytes"] for r in results),
        "mean_training_loss": [r["mean_training_loss"] for r in results],
        "optimizer": results[0]["optimizer"],
        "threads_during_timed_steps": sorted({r["threads"] for r in results}),
        "attn_implementation": results[0]["attn_implementation"],
    }


def markdown_table(a: dict, b: dict, ratio_time: float, ratio_cpu: float, ratio_memory: float, memory_kind: str) -> str:
    unit = "peak GPU alloc growth (MiB)" if memory_kind.startswith("cuda") else "peak RSS growth (MiB)"
    rows = [
        (
            f"| variant | median s/step | steps/s | min–max s/step | median CPU s/step | {unit} "
            "| process peak RSS (MiB) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in (("(a) hf_ssl SSLTrainer + DINOForPreTraining", a), ("(b) hand-written PyTorch loop", b)):
        rows.append(
            f"| {name} | {s['median_seconds_per_step']:.4f} | {s['steps_per_second']:.3f} | "
            f"{s['min_seconds_per_step']:.4f}–{s['max_seconds_per_step']:.4f} | "
            f"{s['median_cpu_seconds_per_step']:.4f} | "
            f"{mib(s['peak_memory_growth_bytes']):.1f} | {mib(s['process_peak_rss_bytes']):.1f} |"
        )
    rows.append(
        f"| **ratio (a) / (b)** | **{ratio_time:.3f}** | {1 / ratio_time:.3f} | | {ratio_cpu:.3f} "
        f"| **{ratio_memory:.3f}** | |"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="Timed optimizer steps per run (default 10).")
    parser.add_argument("--warmup_steps", type=int, default=3, help="Untimed steps before them (default 3).")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per step (default 64).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="JSON file for all numbers and the config.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each variant, alternated (default 2).")
    parser.add_argument("--num_batches", type=int, default=20, help="Pre-built batches (default 20; cycled).")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run (default 2).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--malloc_tunables",
        action="store_true",
        help=f"Run the timed subprocesses with GLIBC_TUNABLES={STEADY_MALLOC} (glibc only): no heap trimming, a fixed "
        "mmap threshold, so freed activations are not handed back to the kernel and page-faulted in again every step. "
        "Off by default (that is what users get); on, the ratio is steadier (see README).",
    )
    parser.add_argument("--_worker", choices=["hf_ssl", "hand"], help=argparse.SUPPRESS)
    parser.add_argument("--_workdir", help=argparse.SUPPRESS)
    parser.add_argument("--_round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args._worker:
        worker(args)
        return 0

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.steps < 1 or args.warmup_steps < 1 or args.num_batches < 1 or args.batch_size < 1 or args.rounds < 1:
        parser.error("--steps, --warmup_steps, --num_batches, --batch_size and --rounds must all be >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = make_batches(args.num_batches, args.batch_size, args.seed)

    weights, parity = parity_check(device, batches)
    print(
        f"parity (first batch, same initial weights): loss hf_ssl {parity['hf_ssl_loss']:.6f} vs hand-written "
        f"{parity['hand_written_loss']:.6f} (|diff| {parity['loss_abs_diff']:.2e}); max |grad diff| "
        f"{parity['grad_max_abs_diff']:.2e} (max |grad| {parity['grad_max_abs']:.2e}); centre |diff| "
        f"{parity['center_max_abs_diff']:.2e}",
        flush=True,
    )

    results: dict[str, list[dict]] = {"hf_ssl": [], "hand": []}
    order: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dino_throughput_") as workdir:
        torch.save(weights, Path(workdir) / "init.pt")
        del weights
        for round_index in range(args.rounds):
            pair = ["hf_ssl", "hand"] if round_index % 2 == 0 else ["hand", "hf_ssl"]  # a b b a a b ...
            for variant in pair:
                command = [sys.executable, os.path.abspath(__file__), "--_worker", variant, "--_workdir", workdir,
                           "--_round", str(round_index), "--steps", str(args.steps), "--warmup_steps",
                           str(args.warmup_steps), "--batch_size", str(args.batch_size), "--device", args.device,
                           "--num_batches", str(args.num_batches), "--threads", str(args.threads), "--seed",
                           str(args.seed)]
                env = dict(os.environ)
                if args.malloc_tunables:
                    env["GLIBC_TUNABLES"] = STEADY_MALLOC
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
                result = json.loads((Path(workdir) / f"result_{variant}_{round_index}.json").read_text())
                results[variant].append(result)
                order.append(variant)
                median = statistics.median(result["step_seconds"][args.warmup_steps:])
                print(f"  round {round_index} {variant:>6}: median {median:.4f} s/step, peak growth "
                      f"{mib(result['memory']['peak_growth_bytes']):.1f} MiB", flush=True)

    a, b = summarise(results["hf_ssl"], args.warmup_steps), summarise(results["hand"], args.warmup_steps)
    ratio_time = a["median_seconds_per_step"] / b["median_seconds_per_step"]
    ratio_cpu = a["median_cpu_seconds_per_step"] / b["median_cpu_seconds_per_step"]
    ratio_memory = a["peak_memory_growth_bytes"] / b["peak_memory_growth_bytes"]
    per_round_ratios = [
        x / y for x, y in zip(a["per_run_median_seconds_per_step"], b["per_run_median_seconds_per_step"], strict=True)
    ]
    loss_diffs = [abs(x - y) for x, y in zip(a["mean_training_loss"], b["mean_training_loss"])]
    memory_kind = results["hf_ssl"][0]["memory"]["kind"]

    table = markdown_table(a, b, ratio_time, ratio_cpu, ratio_memory, memory_kind)
    print()
    print(table)
    print(
        f"\nper-round time ratios (a)/(b): {', '.join(f'{r:.3f}' for r in per_round_ratios)}; mean training loss "
        f"over {args.warmup_steps + args.steps} steps (a) {a['mean_training_loss'][0]:.6f} vs (b) "
        f"{b['mean_training_loss'][0]:.6f} (max |diff| over runs {max(loss_diffs):.2e})"
    )

    record = {
        "benchmark": "dino_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", os.path.relpath(os.path.abspath(__file__))] + sys.argv[1:]),
        "config": {
            "vit": VIT,
            "head": HEAD,
            "dino": DINO,
            "optimizer": OPTIM,
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
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "parity_first_batch": parity,
        "memory_measure": memory_kind,
        "hf_ssl": a,
        "hand_written": b,
        "ratio_seconds_per_step_hf_ssl_over_hand": ratio_time,
        "per_round_ratio_seconds_per_step": per_round_ratios,
        "ratio_cpu_seconds_per_step_hf_ssl_over_hand": ratio_cpu,
        "ratio_peak_memory_growth_hf_ssl_over_hand": ratio_memory,
        "mean_training_loss_max_abs_diff": max(loss_diffs),
        "raw": results,
        "table_markdown": table,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
