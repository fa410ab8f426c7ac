"""Multi-round semi-supervised training, behind ``hf-ssl finetune``: Noisy Student's loop (Xie et al. 2020,
Algorithm 1; "iterative training", §3), where each round's student becomes the next round's teacher.

A method whose config has ``rounds`` and ``teacher`` (:class:`hf_ssl.semi.noisy_student.NoisyStudentConfig`) runs
``rounds`` times: round ``k`` trains into ``<output_dir>/round-<k>`` with the teacher ``--teacher`` (round 1) or the
student of round ``k - 1``; each round is an ordinary run (its classifier, card, record, evaluation, and checkpoints
holding its pseudo-labels). A finished round (its ``hf_ssl_run.json`` and ``eval_results.json`` written) is kept, so
rerunning the same command restarts at the first unfinished round; an unfinished round resumes from its last
checkpoint. Every other method, or ``rounds: 1``, is a single :func:`hf_ssl.jobs.runner.run`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..training.errors import UsageError
from .runner import parse_arguments, run

#: The files a finished run leaves (a round with both is not trained again).
FINISHED_RUN_FILES = ("hf_ssl_run.json", "eval_results.json")


def run_rounds(argv: list[str], prog: str | None = None) -> dict:
    """Run ``argv`` once, or round after round when its method asks (see the module docstring); returns the last
    round's probes."""
    *_, method_config, training_args = parse_arguments(argv, prog=prog)
    rounds = getattr(method_config, "rounds", 1)
    if rounds == 1:
        return run(argv, prog=prog)
    if not getattr(method_config, "teacher", None):
        raise UsageError("a multi-round run needs the first teacher: --teacher <path or Hub id of a classifier>")
    if training_args.resume_from_checkpoint is not None:
        raise UsageError("a multi-round run resumes by itself: drop --resume_from_checkpoint and rerun the same command")
    teacher, probes, summary = method_config.teacher, {}, []
    for round_number in range(1, rounds + 1):
        round_dir = Path(training_args.output_dir) / f"round-{round_number}"
        if all((round_dir / name).is_file() for name in FINISHED_RUN_FILES):
            print(f"Round {round_number} of {rounds} is finished in {round_dir}; its student teaches the next.",
                  flush=True)
            probes = json.loads((round_dir / "eval_results.json").read_text()).get("probes", {})
        else:
            # an unfinished round resumes from its last checkpoint, or starts over when it left none
            resume = (["--resume_from_checkpoint", "true"] if any(round_dir.glob("checkpoint-*"))
                      else ["--overwrite"] if round_dir.exists() else [])
            print(f"Round {round_number} of {rounds}: teacher {teacher}, student into {round_dir}.", flush=True)
            probes = run([*argv, "--teacher", str(teacher), "--rounds", "1", "--output_dir", str(round_dir), *resume],
                         prog=prog)
        summary.append(f"round {round_number}: {probes}")
        teacher = round_dir
    print("Noisy Student rounds, teacher -> student:\n  " + "\n  ".join(summary), flush=True)
    return probes
