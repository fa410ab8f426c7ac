"""Quality benchmark for the audio methods: pretrain on FSDD with a recipe, then linear-probe digit and speaker.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/audio_quality.py recipes/configs/cpc-tiny-fsdd.yaml [flags]
    python benchmarks/audio_quality.py --record <output_dir>     # summarise a finished recipe run

Runs the recipe job (``hf_ssl.jobs.runner.run``), whose final comparison probes the frozen mean-pooled features of the
pretrained encoder, the same architecture at random init (and, for CPC, the GRU context of both) and MFCCs (mean and
standard deviation of 20 coefficients), each with an L-BFGS linear probe on FSDD's train split (2,700 clips), scored
on its official test split (300 clips, recordings 0-4). Results go to ``benchmarks/results/audio_<config>.json``.

One intra-op thread (``OMP_NUM_THREADS=1``): on these tiny convolutions it is faster than two, and on shared cores
much faster (thread barriers stall when other processes hold the cores).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def record(output_dir: Path, command: str) -> Path:
    """Write ``benchmarks/results/audio_<config>.json`` from a finished run's ``eval_results.json`` and
    ``hf_ssl_run.json``."""
    evaluation = json.loads((output_dir / "eval_results.json").read_text())
    run_record = json.loads((output_dir / "hf_ssl_run.json").read_text())
    training = run_record["training"]
    argv = run_record.get("argv") or []
    name = Path(argv[0]).stem if argv and argv[0].endswith((".yaml", ".yml")) else output_dir.name
    result = {
        "command": command,
        "method": run_record["method"],
        "encoder": run_record["encoder"],
        "data": {key: run_record["data"][key] for key in ("dataset", "crop_seconds", "resample")},
        "training": {
            key: training[key]
            for key in (
                "per_device_train_batch_size",
                "max_steps",
                "learning_rate",
                "warmup_steps",
                "lr_scheduler_type",
                "weight_decay",
                "seed",
            )
        },
        "pretraining_steps": evaluation["pretraining_steps"],
        "pretraining_wall_minutes": round(run_record["wall_time_seconds"] / 60, 2),
        "probes": evaluation["probes"],
        "protocol": "linear probe top-1 on FSDD test (300 clips), trained on FSDD train (2,700 clips): frozen "
        "features mean-pooled over frames, standardised, L-BFGS softmax regression (100 iterations, "
        "weight decay 1e-3); MFCC: 20 coefficients x (mean, std)",
        "machine": {
            "processor": platform.machine(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "note": "2 CPU cores under load",
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    path = RESULTS / f"audio_{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--record":
        output_dir = Path(argv[1])
        command = argv[3] if len(argv) > 3 and argv[2] == "--command" else "(recipe run in " + str(output_dir) + ")"
        print(record(output_dir, command))
        return
    from hf_ssl.jobs.runner import parse_arguments, run

    output_dir = Path(parse_arguments(argv)[-1].output_dir)
    run(argv)
    print(record(output_dir, "OMP_NUM_THREADS=1 nice -n 10 python benchmarks/audio_quality.py " + " ".join(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
