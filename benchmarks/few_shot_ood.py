#!/usr/bin/env python
"""Few-shot classification and out-of-distribution detection of a pretrained image encoder, against the same
architecture at random init and raw pixels, through ``hf-ssl evaluate --probes few_shot ood --compare_random_init``.

    python benchmarks/few_shot_ood.py --checkpoint outputs/semi/simclr-vit-tiny-cifar10 \\
        [--dataset uoft-cs/cifar10] [--ood_datasets zalando-datasets/fashion_mnist emoji_captions] \\
        [--max_train_examples 5000] [--max_test_examples 5000] [--ood_knn_k 5] [--max_ood_examples 2000] \\
        [--episodes 600] [--no_baselines]

Protocols (hf_ssl.evaluation.few_shot / .ood):

- few-shot: 5-way 1-shot and 5-shot episodes from the test split, 15 queries per class, ``--episodes`` episodes
  (seeded; the same episodes for every encoder); nearest prototype, cosine classifier (baseline++) trained on the
  support set, and logistic regression; mean ± 1.96 std / sqrt(episodes);
- OOD: the in-distribution test split (positives) against each ``--ood_datasets`` set (its test split, or its only
  split), scored by the k-th nearest-neighbour distance to the ``--max_train_examples`` train features (Sun et al.
  2022: k = 50 with all 50,000 CIFAR-10 training images, scaled here with the share of them in the bank) and by the
  Mahalanobis distance to the class means with a shared covariance; AUROC and FPR at 95 % TPR.

The command runs on a copy of the checkpoint's files (``--update_card`` writes into it), so the checkpoint folder is
left untouched; the record (``--output``) holds the command, the settings, the machine and the results of each
encoder, and the model-index entries the card would get.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_ssl.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "few_shot_ood.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="an image encoder's folder (an hf_ssl run)")
    parser.add_argument("--dataset", default="uoft-cs/cifar10")
    parser.add_argument("--ood_datasets", nargs="+", default=["zalando-datasets/fashion_mnist", "emoji_captions"])
    parser.add_argument("--max_train_examples", type=int, default=5_000)
    parser.add_argument("--max_test_examples", type=int, default=5_000)
    parser.add_argument("--ood_knn_k", type=int, default=5)
    parser.add_argument("--max_ood_examples", type=int, default=2_000)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--no_baselines", action="store_true",
                        help="the pretrained encoder only: random init (seed 0) and raw pixels do not depend on the "
                             "run, so a run's other seeds need not measure them again")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    flags = ["--dataset", args.dataset, "--probes", "few_shot", "ood", "--few_shot_episodes", str(args.episodes),
             "--ood_datasets", *args.ood_datasets, "--max_ood_examples", str(args.max_ood_examples),
             "--max_train_examples", str(args.max_train_examples), "--max_test_examples", str(args.max_test_examples),
             "--ood_knn_k", str(args.ood_knn_k)]
    if not args.no_baselines:
        flags.append("--compare_random_init")
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / Path(args.checkpoint).name
        copy.mkdir()
        for item in Path(args.checkpoint).iterdir():
            if item.is_file() and item.name not in ("eval_results.json", "README.md"):
                shutil.copy2(item, copy / item.name)
        if cli_main(["evaluate", str(copy), *flags, "--update_card"]) != 0:
            raise SystemExit("hf-ssl evaluate failed; see the error above")
        evaluation = json.loads((copy / "eval_results.json").read_text())
    record = {
        "command": " ".join(["python", "benchmarks/few_shot_ood.py", *sys.argv[1:]]),
        "evaluate_command": " ".join(["hf-ssl", "evaluate", args.checkpoint, *flags]),
        "protocol": (
            f"{args.dataset} test split ({args.max_test_examples} images, fixed subset, seed 0). Few-shot: 5-way "
            f"1/5-shot, 15 queries per class, {args.episodes} seeded episodes (the same for every encoder), nearest "
            "prototype / cosine (baseline++) / logistic regression on frozen features, mean and 95% interval 1.96 "
            "std/sqrt(episodes). OOD: test split as positives against "
            f"each OOD set (at most {args.max_ood_examples} images, fixed subset), kNN score k={args.ood_knn_k} on a "
            f"bank of {args.max_train_examples} train images (seed 0), Mahalanobis to class means with a shared "
            "covariance on the same images; AUROC and FPR at 95% TPR."
            + ("" if args.no_baselines else " Random init: the same config, seed 0.")
        ),
        "checkpoint": args.checkpoint,
        "machine": {"processor": platform.machine(), "threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cuda": torch.cuda.is_available()},
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.time() - started, 1),
        "few_shot": evaluation.get("few_shot", {}),
        "ood": evaluation.get("ood", {}),
        "eval_results": evaluation.get("eval_results", []),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
