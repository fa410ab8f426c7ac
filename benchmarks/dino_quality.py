"""Quality benchmark: pretrain DINO on CIFAR-10 for a fixed budget, then probe the frozen encoder.

    python benchmarks/dino_quality.py recipes/configs/dino-vit-tiny-cifar10.yaml --minutes 25 [--flag value ...]

Trains with the recipe job (``hf_ssl.jobs.runner.run``) until ``--minutes`` of training wall time or the config's
``max_steps``, whichever comes first, then reports kNN top-1 (k=200, T=0.1, cosine, weighted votes, the whole train
split as memory bank, the whole test split) and linear-probe top-1 for the pretrained encoder, the same encoder at
random init, and raw pixels. Results go to ``benchmarks/results/<config name>.json``; the README's table is copied
from there together with the command.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from hf_ssl.jobs.runner import parse_arguments, run
from hf_ssl.training.callbacks import TrainingTimeBudget


def main(argv: list[str]) -> None:
    minutes = 25.0
    if "--minutes" in argv:
        position = argv.index("--minutes")
        minutes = float(argv[position + 1])
        argv = argv[:position] + argv[position + 2:]
    config = Path(argv[0]) if argv and argv[0].endswith(".yaml") else None
    name = config.stem if config else "embedded-default"
    budget = TrainingTimeBudget(minutes)
    started = time.time()
    argv = argv + ["--knn_max_train_examples", "50000"] * ("--knn_max_train_examples" not in argv)
    output_dir = parse_arguments(argv)[-1].output_dir
    run(argv, callbacks=[budget])
    saved = json.loads((Path(output_dir) / "eval_results.json").read_text())
    record = {
        "command": "python benchmarks/dino_quality.py " + " ".join(sys.argv[1:]),
        "training_minutes": round(budget.elapsed / 60, 2),
        "total_minutes": round((time.time() - started) / 60, 2),
        "pretraining_steps": saved["pretraining_steps"],
        "results": saved["probes"],
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available()},
        "date": time.strftime("%Y-%m-%d"),
    }
    output = Path(__file__).with_name("results") / f"{name}.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
