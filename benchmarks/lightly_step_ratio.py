#!/usr/bin/env python
"""Steps per second of hf_ssl against lightly 1.6 at the same work: lightly's own views, heads and losses on the same
ViT, batch and optimiser, timed end to end (loading and augmenting the batch included), interleaved on one machine.

    python benchmarks/lightly_step_ratio.py --method simclr dino --repeats 3 --threads 2
    python benchmarks/lightly_step_ratio.py --method simclr --torch_compile --num_workers 1

The work (what both sides do per step, batch 128 of real CIFAR-10 JPEGs, ``uoft-cs/cifar10`` through
``HF_SSL_DATA_DIR``):

- SimCLR: 2 views of 32 px (random resized crop 0.08-1, flip, colour jitter at strength 0.5 with p 0.8, grayscale
  0.2, no blur), ViT of ``recipes/configs/simclr-vit-tiny-cifar10.yaml`` (width 192, 6 layers, patch 4, 65 tokens),
  head 192-512-128 with BatchNorm, NT-Xent at T=0.5.
- DINO: 2 global crops of 32 px + 4 local crops of 16 px (lightly's ``DINOTransform`` defaults: blur 1.0 / 0.1 / 0.5,
  solarisation 0.2 on the second global crop), the ViT of ``recipes/configs/dino-vit-tiny-cifar10.yaml``, head
  192-512-64-2048 without BatchNorm, weight-normalised prototypes, teacher EMA 0.996 -> 1 after every step, teacher
  temperature 0.04, centre momentum 0.9.
- Both: AdamW at the recipe's learning rate and weight decay, cosine schedule, gradient clipping at 3.0.

lightly's side is ``benchmarks/lightly_reference.py``'s (its :func:`build_lightly_method`: lightly's transforms, heads,
losses, ``update_momentum``) in a plain PyTorch loop; hf_ssl's side is ``SSLTrainer`` with the model built from the
recipe by the recipe's own code (:func:`hf_ssl.jobs.runner.parse_arguments`,
:func:`hf_ssl.jobs.image.build_image_model`), the views from ``MultiCropTransform`` set to lightly's, and the training
arguments given here (``--torch_compile``, ``--num_workers``, ``--optim``) as a user would pass them.

Each timed run is its own process with ``OMP_NUM_THREADS`` and ``torch.set_num_threads`` fixed to ``--threads``,
in the order lightly, hf_ssl, lightly, hf_ssl, ... per method (``--repeats`` pairs), so that load drift hits both.
A step's time is the wall time between the ends of two consecutive steps; the first ``--warmup`` steps of every run
(compilation, allocator and worker start-up) are dropped and the run's median over the next ``--steps`` is kept.
The ratio per pair is ``lightly s/step / hf_ssl s/step`` (above 1: hf_ssl is faster); the record gives its median,
minimum and maximum over the pairs, and the same ratio of main-process CPU seconds per step (all its threads), which
a loaded machine disturbs far less than wall time (it leaves out dataloader worker processes). Results go to
``benchmarks/results/lightly_step_ratio.json`` with the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "lightly_step_ratio.json"
RECIPE = str(ROOT / "recipes" / "configs" / "{method}-vit-tiny-cifar10.yaml")
DATASET = "uoft-cs/cifar10"
BATCH_SIZE = 128

# lightly's views and heads, written as the recipe flags that make hf_ssl do the same work (see the docstring).
LIGHTLY_SETTINGS = {
    "simclr": {
        "global_crop_size": 32, "image_size": 32, "num_global_crops": 2, "num_local_crops": 0,
        "global_crop_scale": [0.08, 1.0], "color_jitter": 0.5, "blur_probabilities": [0.0, 0.0, 0.0],
        "solarize_probability": 0.0, "temperature": 0.5, "projection_hidden_dim": 512, "projection_dim": 128,
    },
    "dino": {
        "global_crop_size": 32, "image_size": 32, "local_crop_size": 16, "num_global_crops": 2, "num_local_crops": 4,
        "global_crop_scale": [0.4, 1.0], "local_crop_scale": [0.05, 0.4], "color_jitter": 1.0,
        "blur_probabilities": [1.0, 0.1, 0.5], "solarize_probability": 0.2,
        "out_dim": 2048, "hidden_dim": 512, "bottleneck_dim": 64, "head_layers": 3, "use_batch_norm_in_head": False,
        "norm_last_layer": True, "teacher_temperature": 0.04, "warmup_teacher_temperature": 0.04,
        "student_temperature": 0.1, "center_momentum": 0.9, "momentum_teacher": 0.996, "momentum_teacher_end": 1.0,
        "freeze_last_layer_epochs": 0,
    },
}


def recipe_flags(method: str) -> dict:
    """The recipe's optimiser settings (the same for both sides)."""
    import yaml

    recipe = yaml.safe_load(Path(RECIPE.format(method=method)).read_text())
    return {key: recipe[key] for key in ("learning_rate", "weight_decay", "max_grad_norm")}


# ======================================================================================================================
# Workers: one timed run of one side, in its own process
# ======================================================================================================================
def run_lightly(args, total: int) -> list[float]:
    """lightly's loop of ``lightly_reference.train`` (its pieces from :func:`build_lightly_method`), step-timed."""
    import torch
    from lightly_reference import build_lightly_method
    from transformers import ViTModel, get_cosine_schedule_with_warmup

    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.modules.backbones import encoder_config

    settings = recipe_flags(args.method)
    torch.manual_seed(args.seed)
    encoder = ViTModel(encoder_config("vit-tiny", 32, 4, {"num_hidden_layers": 6}), add_pooling_layer=False)
    transform, trained, loss_fn, _ = build_lightly_method(args.method, encoder)
    images = load_image_dataset(DATASET, "train")

    def collate(rows):
        views = [transform(row["image"].convert("RGB")) for row in rows]
        return [torch.stack(crops) for crops in zip(*views)]

    loader = torch.utils.data.DataLoader(
        images, batch_size=BATCH_SIZE, shuffle=True, drop_last=True, collate_fn=collate,
        num_workers=args.num_workers, persistent_workers=args.num_workers > 0,
        generator=torch.Generator().manual_seed(args.seed))
    decay = [p for n, p in trained.named_parameters() if p.ndim > 1 and "position" not in n]
    no_decay = [p for n, p in trained.named_parameters() if not (p.ndim > 1 and "position" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings["learning_rate"])
    scheduler = get_cosine_schedule_with_warmup(optimizer, 0, total)
    trained.train()
    stamps = [(time.perf_counter(), time.process_time())]
    for step, views in enumerate(loader):
        loss = loss_fn(views, step, total)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), settings["max_grad_norm"])
        optimizer.step()
        scheduler.step()
        loss.item()  # lightly_reference logs every loss
        stamps.append((time.perf_counter(), time.process_time()))
        if step + 1 >= total:
            break
    return step_times(stamps)


def step_times(stamps: list[tuple[float, float]]) -> dict[str, list[float]]:
    """Per-step wall seconds and main-process CPU seconds (all its threads) from ``(wall, cpu)`` stamps."""
    return {"step_seconds": [b[0] - a[0] for a, b in zip(stamps, stamps[1:])],
            "step_cpu_seconds": [b[1] - a[1] for a, b in zip(stamps, stamps[1:])]}


def hf_ssl_arguments(args, workdir: str, total: int) -> tuple:
    """The recipe parsed as ``recipes/pretrain.py`` parses it, with lightly's views and heads and this run's flags."""
    from vision_throughput import BENCHMARK_TRAINING_FLAGS

    from hf_ssl.jobs.runner import parse_arguments

    flags = {
        **LIGHTLY_SETTINGS[args.method],
        **BENCHMARK_TRAINING_FLAGS,
        "train_sampling_strategy": "random",
        "dataloader_num_workers": args.num_workers,
        "dataloader_persistent_workers": str(args.num_workers > 0).lower(),
        "output_dir": os.path.join(workdir, "trainer_output"),
        "per_device_train_batch_size": BATCH_SIZE,
        "max_steps": total,
        "seed": args.seed,
        "use_cpu": "true",
        "logging_steps": 20,
        "torch_compile": str(args.torch_compile).lower(),
    }
    if args.optim:
        flags["optim"] = args.optim
    argv = [RECIPE.format(method=args.method)]
    for key, value in flags.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return parse_arguments(argv)


def run_hf_ssl(args, total: int) -> list[float]:
    """``SSLTrainer`` on the recipe's model and ``MultiCropTransform`` views, step-timed by a callback."""
    from transformers import TrainerCallback

    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.jobs.image import build_image_model
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import MultiCropTransform, apply_views

    stamps: list[tuple[float, float]] = []

    class StepTimer(TrainerCallback):
        """Step k takes stamps[k] - stamps[k - 1]: everything the Trainer does between two step ends (dataloader,
        views, collator, forward, backward, optimizer, callbacks)."""

        def on_train_begin(self, *_, **__):
            stamps.append((time.perf_counter(), time.process_time()))

        def on_step_end(self, *_, **__):
            stamps.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as workdir:
        encoder_args, _, views, method_config, training_args = hf_ssl_arguments(args, workdir, total)
        model = build_image_model(encoder_args, views, method_config)
        dataset = apply_views(load_image_dataset(DATASET, "train"), MultiCropTransform(views, seed=args.seed))
        trainer = SSLTrainer(model=model, args=training_args, train_dataset=dataset, callbacks=[StepTimer()])
        trainer.train()
    return step_times(stamps)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    run = run_lightly if args.side == "lightly" else run_hf_ssl
    print("RESULT " + json.dumps({"side": args.side, **run(args, total)}), flush=True)


# ======================================================================================================================
# Parent: interleaved runs, summary
# ======================================================================================================================
def timed_run(args, method: str, side: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--_side", side, "--method", method,
               "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--num_workers", str(args.num_workers), "--seed", str(args.seed)]
    if side == "hf_ssl" and args.torch_compile:
        command += ["--torch_compile"]
    if side == "hf_ssl" and args.optim:
        command += ["--optim", args.optim]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": os.pathsep.join(
               [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{side} {method} run failed:\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    seconds, cpu = result["step_seconds"], result["step_cpu_seconds"]
    return {"median_step_seconds": statistics.median(seconds[args.warmup:]),
            "median_step_cpu_seconds": statistics.median(cpu[args.warmup:]),
            "steady_step_seconds": [round(s, 4) for s in seconds[args.warmup:]],
            "steady_step_cpu_seconds": [round(s, 4) for s in cpu[args.warmup:]],
            "warmup_step_seconds": [round(s, 3) for s in seconds[:args.warmup]],
            "process_seconds": round(time.perf_counter() - started, 1)}


def benchmark_method(args, method: str) -> dict:
    runs: dict[str, list[dict]] = {"lightly": [], "hf_ssl": []}
    for repeat in range(args.repeats):
        for side in ("lightly", "hf_ssl"):
            result = timed_run(args, method, side)
            runs[side].append(result)
            print(f"{method} {side} pair {repeat + 1}: {result['median_step_seconds']:.3f} s/step, "
                  f"{result['median_step_cpu_seconds']:.3f} CPU s/step (warm-up {result['warmup_step_seconds']})",
                  flush=True)

    def ratio(key: str) -> dict:
        values = [a[key] / b[key] for a, b in zip(runs["lightly"], runs["hf_ssl"])]
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3), "per_pair": [round(v, 3) for v in values]}

    summary = {
        "ratio_lightly_over_hf_ssl": ratio("median_step_seconds"),
        "cpu_ratio_lightly_over_hf_ssl": ratio("median_step_cpu_seconds"),
        "hf_ssl_steps_per_second": round(1 / statistics.median(r["median_step_seconds"] for r in runs["hf_ssl"]), 4),
        "lightly_steps_per_second": round(1 / statistics.median(r["median_step_seconds"] for r in runs["lightly"]), 4),
        "images_per_second": {side: round(BATCH_SIZE / statistics.median(r["median_step_seconds"] for r in runs[side]), 1)
                              for side in runs},
        "runs": runs,
    }
    for key, what in (("ratio_lightly_over_hf_ssl", "s/step"), ("cpu_ratio_lightly_over_hf_ssl", "CPU s/step")):
        print(f"{method}: lightly {what} / hf_ssl {what} = {summary[key]['median']} "
              f"(min {summary[key]['min']}, max {summary[key]['max']})", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", choices=tuple(LIGHTLY_SETTINGS), default=list(LIGHTLY_SETTINGS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved (lightly, hf_ssl) pairs per method")
    parser.add_argument("--warmup", type=int, default=4, help="steps dropped at the start of every run")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS and torch.set_num_threads")
    parser.add_argument("--num_workers", type=int, default=0, help="dataloader workers, the same on both sides")
    parser.add_argument("--torch_compile", action="store_true", help="hf_ssl: TrainingArguments(torch_compile=True)")
    parser.add_argument("--optim", default=None, help="hf_ssl: TrainingArguments.optim (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--label", default=None, help="key of this configuration in the record (default: derived)")
    parser.add_argument("--_side", dest="side", choices=("lightly", "hf_ssl"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side is not None:
        args.method = args.method[0]
        worker(args)
        return 0
    label = args.label or "_".join(
        [f"threads{args.threads}", f"workers{args.num_workers}"] + (["compile"] if args.torch_compile else [])
        + ([args.optim] if args.optim else []))
    import torch

    record = {
        "command": "python benchmarks/lightly_step_ratio.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "settings": {"batch": BATCH_SIZE, "threads": args.threads, "num_workers": args.num_workers,
                     "torch_compile": args.torch_compile, "optim": args.optim, "warmup_steps": args.warmup,
                     "timed_steps": args.steps, "repeats": args.repeats, "views": LIGHTLY_SETTINGS},
        "methods": {method: benchmark_method(args, method) for method in args.method},
    }
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    results[label] = record
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written under {label!r} in {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
