#!/usr/bin/env python
"""Semi-supervised CIFAR-10 at a fixed CPU budget: each method of hf_ssl.semi against supervised-only on the same
labels, from random init and from an hf_ssl pretraining output, with the recipes' ViT-Tiny.

    HF_SSL_DATA_DIR=<local copies> python benchmarks/semi_cifar10.py --labels 40 --methods supervised fixmatch \
        --starts random outputs/semi/simclr-vit-tiny-cifar10 --minutes 10 --seeds 0 --threads 2

Every run is ``python recipes/finetune.py recipes/configs/<method>-vit-tiny-cifar10-40.yaml`` with
``--labels_per_class labels/10``, the same wall-clock budget (``--max_train_minutes``; training time only, the
evaluation excluded), a constant learning rate after a 50-step warm-up (so the schedule does not depend on how many
steps a method fits in the budget), and the final top-1 accuracy of the published classifier (the EMA / teacher
where the method has one) on all 10,000 test images. Results are appended to ``--output`` (JSON), one entry per run
with its command.

``--pretrain`` first runs the SimCLR reference pretraining (the recipe at its 15-minute budget) into
``outputs/semi/simclr-vit-tiny-cifar10``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = "outputs/semi/simclr-vit-tiny-cifar10"
PRETRAIN_COMMAND = [
    "recipes/pretrain.py", "recipes/configs/simclr-vit-tiny-cifar10.yaml", "--max_steps", "520", "--warmup_steps",
    "52", "--eval_strategy", "no", "--save_steps", "520", "--save_total_limit", "1", "--logging_steps", "10",
    "--disable_tqdm", "true", "--output_dir", PRETRAINED, "--max_train_minutes", "15.0",
]


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    print("+ python " + shlex.join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[40], help="labelled images in all (10 classes)")
    parser.add_argument("--methods", nargs="+", default=["supervised", "fixmatch"])
    parser.add_argument("--starts", nargs="+", default=["random", PRETRAINED])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="labelled_seed and training seed")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain", action="store_true", help="run the SimCLR reference pretraining first")
    parser.add_argument("--output", default="benchmarks/results/semi_cifar10.json")
    args = parser.parse_args()

    output = ROOT / args.output
    results = json.loads(output.read_text()) if output.is_file() else {"runs": []}
    results.update(
        protocol="CIFAR-10, labels per class = labels / 10 drawn with labelled_seed, the rest of train unlabelled, all "
        "10,000 test images; the recipes' ViT-Tiny (width 192, 6 layers, patch 4, 32 px); equal training wall time "
        "per run; constant learning rate after 50 warm-up steps; final top-1 of the published classifier.",
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
    )
    if args.pretrain:
        seconds = run(PRETRAIN_COMMAND, args.threads)
        results["pretraining"] = {"command": "python " + shlex.join(PRETRAIN_COMMAND), "wall_seconds": round(seconds)}
        output.write_text(json.dumps(results, indent=2) + "\n")
    for labels in args.labels:
        for seed in args.seeds:
            for start in args.starts:
                for method in args.methods:
                    name = f"{method}-{labels}-{'pretrained' if start != 'random' else 'random'}-seed{seed}"
                    out_dir = f"outputs/semi/{name}"
                    command = [
                        "recipes/finetune.py", f"recipes/configs/{method}-vit-tiny-cifar10-40.yaml",
                        "--labels_per_class", str(labels // 10), "--labelled_seed", str(seed), "--seed", str(seed),
                        "--max_steps", "100000", "--max_train_minutes", str(args.minutes),
                        "--lr_scheduler_type", "constant_with_warmup", "--save_steps", "100000",
                        "--logging_steps", "50", "--disable_tqdm", "true", "--output_dir", out_dir,
                    ]
                    if start != "random":
                        command += ["--encoder", start]
                    seconds = run(command, args.threads)
                    evaluation = json.loads((ROOT / out_dir / "eval_results.json").read_text())
                    record = json.loads((ROOT / out_dir / "hf_ssl_run.json").read_text())
                    results["runs"] = [run_ for run_ in results["runs"] if run_["name"] != name] + [{
                        "name": name, "method": method, "labels": labels, "start": start, "seed": seed,
                        "steps": evaluation["pretraining_steps"], "wall_seconds": round(seconds),
                        "accuracy": evaluation["probes"]["published"]["accuracy"],
                        "train_wall_seconds": record.get("wall_time_seconds"),
                        "command": "python " + shlex.join(command),
                    }]
                    output.write_text(json.dumps(results, indent=2) + "\n")
                    print(f"{name}: {results['runs'][-1]['accuracy']:.4f} after {results['runs'][-1]['steps']} steps",
                          flush=True)


if __name__ == "__main__":
    main()
