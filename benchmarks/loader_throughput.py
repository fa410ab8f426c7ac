#!/usr/bin/env python
"""Is the data pipeline or the model step the bottleneck? Images per second from the training dataloader alone
(decoding + view transforms + collation, with ``dataloader_num_workers`` workers) against images per second from the
model step alone (forward, backward, optimizer and the method's per-step work on pre-built crops), per method, at the
settings of its recipe ``recipes/configs/<method>-vit-tiny-cifar10.yaml`` (views, batch size, model).

    python benchmarks/loader_throughput.py --method simclr dino --workers 0 1 2 --threads 2

- Loader: ``SSLTrainer.get_train_dataloader()`` over real CIFAR-10 (``uoft-cs/cifar10`` through ``HF_SSL_DATA_DIR``)
  with the recipe's ``MultiCropTransform``, exactly what training iterates; the first ``--warmup_batches`` (worker
  start-up) are dropped, then ``--batches`` are timed.
- Model step: ``SSLTrainer`` on pre-built random crops of the recipe's shapes
  (:class:`vision_throughput.PrebuiltCrops`), step-timed after ``--warmup_steps``, torch threads fixed to
  ``--threads``.

With ``dataloader_num_workers > 0`` the loader runs in other processes, overlapped with the step: it is not the
bottleneck as long as its images per second exceed the step's (the ``headroom`` in the record: loader / step). Each
measurement runs in its own process (``OMP_NUM_THREADS=--threads``). Results go to
``benchmarks/results/loader_throughput.json`` with the command.
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
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "loader_throughput.json"
DATASET = "uoft-cs/cifar10"


def recipe(method: str, workdir: str, steps: int, workers: int, seed: int) -> tuple:
    """The recipe as ``recipes/pretrain.py`` parses it, at its own batch size and views (benchmark flags of
    :data:`vision_throughput.BENCHMARK_TRAINING_FLAGS`, this run's workers)."""
    from vision_throughput import BENCHMARK_TRAINING_FLAGS, RECIPE

    from hf_ssl.jobs.runner import parse_arguments

    flags = {**BENCHMARK_TRAINING_FLAGS, "train_sampling_strategy": "random", "dataloader_num_workers": workers,
             "output_dir": os.path.join(workdir, "trainer_output"), "max_steps": steps, "seed": seed,
             "use_cpu": "true"}
    argv = [str(ROOT / RECIPE.format(method=method))]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    return parse_arguments(argv)


def measure_loader(args) -> dict:
    """Images per second of the training dataloader alone."""
    from hf_ssl.data.images import load_image_dataset
    from hf_ssl.jobs.image import build_image_model
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import MultiCropTransform, apply_views

    with tempfile.TemporaryDirectory() as workdir:
        encoder_args, _, views, method_config, training_args = recipe(args.method, workdir, 10, args.workers,
                                                                      args.seed)
        dataset = apply_views(load_image_dataset(DATASET, "train"), MultiCropTransform(views, seed=args.seed))
        trainer = SSLTrainer(model=build_image_model(encoder_args, views, method_config), args=training_args,
                             train_dataset=dataset)
        loader = trainer.get_train_dataloader()
        batch_size = training_args.per_device_train_batch_size
        iterator = iter(loader)
        for _ in range(args.warmup_batches):
            next(iterator)
        started = time.perf_counter()
        for _ in range(args.batches):
            next(iterator)
        seconds = time.perf_counter() - started
        del iterator
    return {"images_per_second": round(args.batches * batch_size / seconds, 1), "batch": batch_size,
            "views": {key: getattr(views, key) for key in ("num_global_crops", "global_crop_size", "num_local_crops",
                                                           "local_crop_size")}}


def measure_step(args) -> dict:
    """Images per second of the model step alone (``SSLTrainer`` on pre-built crops)."""
    from transformers import TrainerCallback
    from vision_throughput import PrebuiltCrops, make_batches, views_record

    from hf_ssl.jobs.image import build_image_model
    from hf_ssl.training.trainer import SSLTrainer

    stamps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    total = args.warmup_steps + args.steps + 1
    with tempfile.TemporaryDirectory() as workdir:
        encoder_args, _, views, method_config, training_args = recipe(args.method, workdir, total, 0, args.seed)
        batch_size = training_args.per_device_train_batch_size
        batches = make_batches(views_record(views), 2, batch_size, args.seed)
        trainer = SSLTrainer(model=build_image_model(encoder_args, views, method_config), args=training_args,
                             train_dataset=PrebuiltCrops(batches), callbacks=[StepTimer()])
        trainer.train()
    steady = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup_steps:]
    return {"images_per_second": round(batch_size / statistics.median(steady), 1), "batch": batch_size,
            "median_step_seconds": round(statistics.median(steady), 4)}


def run(args, what: str, workers: int = 0) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--_measure", what, "--method", args.method,
               "--workers", str(workers), "--threads", str(args.threads), "--batches", str(args.batches),
               "--warmup_batches", str(args.warmup_batches), "--steps", str(args.steps),
               "--warmup_steps", str(args.warmup_steps), "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} {args.method} run failed:\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", nargs="+", default=["simclr", "dino"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="dataloader_num_workers to try")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / torch threads of each process")
    parser.add_argument("--batches", type=int, default=10, help="timed loader batches")
    parser.add_argument("--warmup_batches", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed model steps")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--_measure", dest="measure", choices=("loader", "step"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        import torch

        torch.set_num_threads(args.threads)
        args.method, args.workers = args.method[0], args.workers[0]
        result = measure_loader(args) if args.measure == "loader" else measure_step(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import torch

    record = {
        "command": "python benchmarks/loader_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__},
        "threads": args.threads,
        "methods": {},
    }
    methods = args.method
    for method in methods:
        args.method = method
        step = run(args, "step")
        loaders = {}
        for workers in args.workers:
            loaders[str(workers)] = run(args, "loader", workers)
            print(f"{method}: loader with {workers} workers {loaders[str(workers)]['images_per_second']} img/s, "
                  f"model step {step['images_per_second']} img/s", flush=True)
        record["methods"][method] = {
            "model_step": step,
            "loader": loaders,
            "headroom_loader_over_step": {workers: round(entry["images_per_second"] / step["images_per_second"], 2)
                                          for workers, entry in loaders.items()},
        }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
