"""Quality benchmark of the contrastive-pairs recipes (Sentence-BERT on STS-B, CLIP-style zero-shot / retrieval).

    python benchmarks/sbert_clip_quality.py recipes/configs/clip-vit-tiny-minilm-emoji.yaml --minutes 8 [--flag value ...]

Trains with the recipe job (``hf_ssl.jobs.runner.run``) until ``--minutes`` of training time (evaluation excluded;
:class:`hf_ssl.training.callbacks.TrainingTimeBudget`) or the config's ``max_steps``, whichever comes first; the job's final
evaluation then scores the trained model against its starting point (STS-B dev/test Spearman for ``sbert``;
held-out-template zero-shot accuracy or held-out-code-point recall@1/5 for ``clip``). Results go to
``benchmarks/results/<config name>.json`` with the command that produced them.
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
    minutes = 8.0
    if "--minutes" in argv:
        position = argv.index("--minutes")
        minutes = float(argv[position + 1])
        argv = argv[:position] + argv[position + 2:]
    name = Path(argv[0]).stem
    budget = TrainingTimeBudget(minutes)
    started = time.time()
    output_dir = parse_arguments(argv)[-1].output_dir
    run(argv, callbacks=[budget])
    saved = json.loads((Path(output_dir) / "eval_results.json").read_text())
    record = {
        "command": "python benchmarks/sbert_clip_quality.py " + " ".join(sys.argv[1:]),
        "training_minutes": round(budget.elapsed / 60, 2),
        "total_minutes": round((time.time() - started) / 60, 2),
        "pretraining_steps": saved["pretraining_steps"],
        "results": saved["probes"],
        "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.is_available(), "note": "2-core CPU under load"},
        "date": time.strftime("%Y-%m-%d"),
    }
    output = Path(__file__).with_name("results") / f"{name}.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
