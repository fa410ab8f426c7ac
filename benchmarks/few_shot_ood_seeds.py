#!/usr/bin/env python
"""Few-shot and OOD results of each vision method over its pretraining seeds: mean and spread of every metric.

    python benchmarks/few_shot_ood_seeds.py \\
        --runs simclr:42:benchmarks/results/reference_simclr.json simclr:0:<few_shot_ood.py record> ... \\
        [--output benchmarks/results/few_shot_ood_seeds.json]

Each ``--runs`` entry is ``method:seed:record``, where the record is what ``benchmarks/few_shot_ood.py`` writes (for
one checkpoint, with or without ``--no_baselines``) or what ``benchmarks/reference_cards.sh`` writes (its
``few_shot_ood`` entry). Every run must have been evaluated with the same protocol (episodes, subsets, OOD sets,
k): the evaluate commands are compared after the checkpoint path, and a mismatch is an error.

The output holds, per method, each seed's pretrained-encoder metrics with the record and checkpoint they came from,
and for every metric the mean, the sample standard deviation, min and max over the seeds. Random init (seed 0) and
raw pixels do not depend on the pretraining run; they are taken once, from the first record that has them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "few_shot_ood_seeds.json"
BASELINES = ("random_init", "raw_pixels")


def read_run(path: Path) -> tuple[dict, str]:
    """``({"few_shot": {...}, "ood": {...}}, evaluate command)`` from either kind of record."""
    record = json.loads(path.read_text())
    if "few_shot_ood" in record:  # benchmarks/reference_cards.sh
        record = record["few_shot_ood"]
        return record, record["command"]
    return record, record["evaluate_command"]


def evaluation_protocol(command: str) -> str:
    """The evaluate command without its checkpoint path and the flags that do not change a pretrained encoder's
    numbers (``--compare_random_init``, ``--update_card``)."""
    words = command.split()
    kept = [word for word in words[3:] if word not in ("--compare_random_init", "--update_card")]
    return " ".join(words[:2] + kept)


def summarise(runs: list[tuple[str, int, Path]]) -> dict:
    methods: dict[str, dict] = {}
    baselines: dict[str, dict] = {}
    protocol = None
    for method, seed, path in runs:
        record, command = read_run(path)
        this_protocol = evaluation_protocol(command)
        if protocol is None:
            protocol = this_protocol
        elif this_protocol != protocol:
            raise SystemExit(f"{path} was evaluated with another protocol:\n  {this_protocol}\nnot\n  {protocol}")
        metrics = {**record["few_shot"]["pretrained"], **record["ood"]["pretrained"]}
        for name in BASELINES:
            if name in record["few_shot"] and name not in baselines:
                baselines[name] = {**record["few_shot"][name], **record["ood"][name]}
        seeds = methods.setdefault(method, {"seeds": {}})["seeds"]
        if str(seed) in seeds:
            raise SystemExit(f"{method} seed {seed} is given twice")
        seeds[str(seed)] = {"record": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name,
                            "checkpoint": record.get("checkpoint") or command.split()[2], "metrics": metrics}
    for entry in methods.values():
        per_seed = [seed["metrics"] for seed in entry["seeds"].values()]
        names = [name for name in per_seed[0] if not name.endswith("_ci95")]
        entry["summary"] = {}
        for name in names:
            values = [metrics[name] for metrics in per_seed]
            entry["summary"][name] = {
                "mean": round(statistics.fmean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                "min": round(min(values), 4), "max": round(max(values), 4), "seeds": len(values)}
    return {"protocol": protocol, "methods": methods, "baselines": baselines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="method:seed:record")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    runs = []
    for item in args.runs:
        method, seed, path = item.split(":", 2)
        runs.append((method, int(seed), Path(path).resolve()))
    result = {"command": "python benchmarks/few_shot_ood_seeds.py --runs " + " ".join(args.runs),
              "date": time.strftime("%Y-%m-%d"), **summarise(runs)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for method, entry in result["methods"].items():
        few_shot = entry["summary"]["few_shot_5way_5shot_logistic"]
        ood = entry["summary"].get("ood_fashion_mnist_mahalanobis_auroc", {})
        print(f"{method:>24}  5-way 5-shot (logistic) {100 * few_shot['mean']:.1f} ± {100 * few_shot['std']:.1f} % "
              f"over {few_shot['seeds']} seeds; AUROC vs Fashion-MNIST (Mahalanobis) {ood.get('mean')} ± {ood.get('std')}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
