#!/usr/bin/env python
"""The SimCLRv2 recipe (Chen et al. 2020, "Big Self-Supervised Models are Strong Semi-Supervised Learners") at our
scale, on CIFAR-10 with few labels, reporting the accuracy after each stage:

    HF_SSL_DATA_DIR=<local copies> python benchmarks/semi_pipeline.py --labels 250 --minutes 10

1. **Pretraining** without labels: the SimCLR reference run of ``semi_few_labels.py --pretrain`` (all 50,000 train
   images), then fine-tuned on the labels alone (``supervised``): the accuracy this stage gives.
2. **Semi-supervised fine-tuning** of the same start on the labels and the unlabelled images (FixMatch).
3. **Distillation** of stage 2's classifier into a smaller ViT (3 layers instead of 6, random init) on the unlabelled
   images alone (``--supervised_weight 0``: SimCLRv2's third step).
4. **Noisy Student** (Xie et al. 2020) for two rounds, stage 3's classifier teaching the first: each student is the
   recipes' 6-layer ViT starting from the SimCLR encoder, noised by the strong view and dropout.

Every stage is one ``recipes/finetune.py`` run of ``semi_few_labels.py`` (same labels, drawn with ``labelled_seed`` =
the seed, same budget per run and per round, all 10,000 test images). Results go to
``benchmarks/results/semi_pipeline.json``, one entry per stage with its command; a finished stage is kept when the
command is run again (``--rerun`` trains every stage afresh). The goal: no stage below the one before it, and Noisy
Student's round 2 not below round 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

from semi_few_labels import ROOT, SIMCLR, TASKS, finetune_and_record, finetune_command

#: The stages after pretraining: (name, method, start, the stage whose classifier is the teacher, more options).
STAGES = (
    ("1-pretrained-then-labels-only", "supervised", SIMCLR, None, ()),
    ("2-fixmatch", "fixmatch", SIMCLR, None, ()),
    ("3-distilled-3-layers", "distillation", "random", "2-fixmatch", ("--supervised_weight", "0")),
    ("4-noisy-student", "noisy_student", SIMCLR, "3-distilled-3-layers", ("--rounds", "2")),
)


def stage_dir(stage: str, labels: int, seed: int) -> str:
    """The output folder of one stage's run."""
    return f"outputs/semi/pipeline/{stage}-{labels}-seed{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=250, help="labelled examples in all")
    parser.add_argument("--seed", type=int, default=0, help="labelled_seed and training seed")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time per run and per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rerun", action="store_true", help="train every stage again, even a finished one")
    parser.add_argument("--output", default="benchmarks/results/semi_pipeline.json")
    args = parser.parse_args()
    task = TASKS["cifar10"]
    if not (ROOT / SIMCLR / "config.json").is_file():
        parser.error(f"no pretraining output in {SIMCLR}: run `python benchmarks/semi_few_labels.py --task cifar10 "
                     "--pretrain --methods supervised` first")

    output = ROOT / args.output
    results = json.loads(output.read_text()) if output.is_file() else {"runs": []}
    results.update(protocol=f"{task.protocol} SimCLRv2's stages from the SimCLR reference pretraining ({SIMCLR}); "
                   f"{args.minutes} min of training per run and per Noisy Student round, constant learning rate after "
                   "the warm-up; final accuracy of each stage's published classifier.",
                   machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{args.threads} threads")
    finished = {entry["name"]: entry for entry in results["runs"]}
    for stage, method, start, teacher_stage, options in STAGES:
        out_dir = stage_dir(stage, args.labels, args.seed)
        name = Path(out_dir).name
        if name in finished and not args.rerun:
            print(f"{name}: finished, {finished[name]['accuracy']:.4f}", flush=True)
            continue
        if teacher_stage is not None:
            options = ("--teacher", stage_dir(teacher_stage, args.labels, args.seed), *options)
        # an interrupted or rerun stage starts over at the same budget (Noisy Student's rounds included)
        shutil.rmtree(ROOT / out_dir, ignore_errors=True)
        command = finetune_command(task, method, args.labels, start, args.seed, args.minutes, out_dir, options)
        finetune_and_record(results, output, name, command, out_dir, args.threads, stage=stage, method=method,
                            labels=args.labels, start=start, seed=args.seed)

    print("Accuracy after each stage:")
    for entry in results["runs"]:
        if not entry["name"].endswith(f"-{args.labels}-seed{args.seed}"):
            continue
        rounds = "".join(f", round {k}: {r['accuracy']:.4f}" for k, r in enumerate(entry.get("rounds", []), 1))
        print(f"  {entry['stage']}: {entry['accuracy']:.4f}{rounds}")


if __name__ == "__main__":
    main()
