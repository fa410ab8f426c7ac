#!/usr/bin/env python
"""Learning with few labels at a CPU budget: each method of hf_ssl.semi against supervised-only on the same labels and
the same start, on CIFAR-10 (images), SNLI (sentence pairs) or the Free Spoken Digit Dataset (audio).

    HF_SSL_DATA_DIR=<local copies> python benchmarks/semi_few_labels.py --task cifar10 --pretrain --labels 40 \
        --methods supervised fixmatch --starts random outputs/semi/simclr-vit-tiny-cifar10 --minutes 10 --seeds 0
    HF_SSL_DATA_DIR=<local copies> python benchmarks/semi_few_labels.py --task snli --methods supervised fixmatch
    HF_SSL_DATA_DIR=<local copies> python benchmarks/semi_few_labels.py --task fsdd --pretrain \
        --methods supervised fixmatch

Every run is ``python recipes/finetune.py <the task's recipe>`` (CIFAR-10: ``<method>-vit-tiny-cifar10-40.yaml``; SNLI
and FSDD: the FixMatch recipe with ``--method``) with the labels per class of ``--labels`` (drawn with
``labelled_seed`` = the seed) and the final accuracy of the published classifier (the EMA / teacher where the method
has one) on the whole evaluation split. The budget is either the recipe's step count (the default) or, with
``--minutes``, the same training wall time for every run (``--max_train_minutes``, evaluation excluded) with a
constant learning rate after the warm-up, so that the schedule does not depend on how many steps a method fits in;
the methods that ramp their unsupervised weight up (Π-model, Mean Teacher, MixMatch, pseudo-labelling, temporal
ensembling, VAT) then ramp it over ``--rampup_steps`` steps instead of a share of the nominal ``--max_steps 100000``,
which would keep the weight near 0 for the whole run.
A method setting other than the recipe's runs under its own row name: ``--finetune_args '--classwise_thresholds true'
--variant flexmatch`` (FlexMatch thresholds for FixMatch).
``--ema_controls`` pairs every run whose published classifier is an EMA of the weights (FixMatch, UDA, MixMatch,
Mean Teacher) with supervised-only keeping the same EMA for the same number of steps, on the same labels, seed, start
and schedule (row ``supervised-steps<n>_ema-...``, ``control_of`` naming the run): supervised-only without one is
not the fair baseline of these methods, since at small budgets the averaging alone can account for their whole gain.
``--step_controls`` pairs every other method's run too, with supervised-only for its number of steps (row
``supervised-steps<n>-...``; needs ``--minutes``): at equal wall time a method that runs the classifier on the
unlabelled batch fits a fraction of supervised-only's steps, and this control tells that cost apart from what the
unlabelled term does. Runs of one seed that stop at the same step share one control (``control_of`` lists them),
also when a later invocation adds a method to the same record.
A control takes the run's budget and schedule, not ``--finetune_args`` (those are the method's settings).
``--controls_only`` runs no method: it pairs the runs of ``--methods`` already in the record (found by row name, so
pass the same ``--variant``) with their controls.
Results are merged into ``benchmarks/results/semi_<task>.json``, one entry per run with its command.

``--pretrain`` first runs the task's hf_ssl reference pretraining (CIFAR-10: SimCLR at its 15-minute budget; FSDD:
the CPC recipe) into ``outputs/semi/``, replacing an earlier one there; SNLI starts from all-MiniLM-L6-v2.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Task:
    """A benchmark task: its recipe (``{method}`` filled in, or ``--method`` passed), classes, default labels and
    starts, and the optional reference pretraining."""

    recipe: str
    num_classes: int
    labels: int
    starts: tuple[str, ...]
    protocol: str
    pretrain_command: tuple[str, ...] = ()


SIMCLR = "outputs/semi/simclr-vit-tiny-cifar10"
CPC = "outputs/semi/cpc-tiny-fsdd"
TASKS = {
    "cifar10": Task(
        recipe="recipes/configs/{method}-vit-tiny-cifar10-40.yaml", num_classes=10, labels=40,
        starts=("random", SIMCLR),
        protocol="CIFAR-10: labels / 10 per class drawn with labelled_seed, the rest of train unlabelled, all 10,000 "
        "test images; the recipes' ViT-Tiny (width 192, 6 layers, patch 4, 32 px).",
        pretrain_command=(
            "recipes/pretrain.py", "recipes/configs/simclr-vit-tiny-cifar10.yaml", "--max_steps", "520",
            "--warmup_steps", "52", "--eval_strategy", "no", "--save_steps", "520", "--save_total_limit", "1",
            "--logging_steps", "10", "--disable_tqdm", "true", "--output_dir", SIMCLR, "--max_train_minutes", "15.0",
            "--overwrite"),
    ),
    "snli": Task(
        recipe="recipes/configs/fixmatch-minilm-snli-150.yaml", num_classes=3, labels=150, starts=("minilm",),
        protocol="SNLI (validation + test): labels / 3 pairs per class of validation drawn with labelled_seed, the "
        "rest of validation unlabelled, all 9,824 test pairs; all-MiniLM-L6-v2 with a new 3-way head.",
    ),
    "fsdd": Task(
        recipe="recipes/configs/fixmatch-cpc-tiny-fsdd-50.yaml", num_classes=10, labels=50, starts=(CPC,),
        protocol="Free Spoken Digit Dataset: labels / 10 clips per digit of train drawn with labelled_seed, the rest "
        "of train unlabelled, the official test split (recordings 0-4, 300 clips); a Wav2Vec2 classifier on hf_ssl's "
        "CPC encoder.",
        # No probes after pretraining (the CPC recipe's are recorded in benchmarks/README.md): the classifiers are.
        pretrain_command=("recipes/pretrain.py", "recipes/configs/cpc-tiny-fsdd.yaml", "--eval_strategy", "no",
                          "--eval_split", "", "--save_steps", "200", "--disable_tqdm", "true", "--output_dir", CPC,
                          "--overwrite"),
    ),
}


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    started = time.time()
    print("+ python " + shlex.join(command), flush=True)
    subprocess.run([sys.executable, *command], cwd=ROOT, env=env, check=True)
    return time.time() - started


def ramps_up(method: str) -> bool:
    """Whether the method ramps its unsupervised weight up by default (over a share of ``max_steps``)."""
    from hf_ssl.semi import SEMI_METHOD_REGISTRY

    return SEMI_METHOD_REGISTRY[method].config_class.rampup_fraction > 0


def finetune_command(task: Task, method: str, labels: int, start: str, seed: int, minutes: float | None,
                     out_dir: str, extra: tuple[str, ...] = (), rampup_steps: int = 300) -> list[str]:
    """The ``recipes/finetune.py`` command of one run; ``extra``: more options (``--teacher``, a method setting);
    ``rampup_steps``: the ramp-up's length in steps under a time budget (``minutes``)."""
    recipe = task.recipe.format(method=method)
    command = ["recipes/finetune.py", recipe] + ([] if "{method}" in task.recipe else ["--method", method])
    command += ["--labels_per_class", str(labels // task.num_classes), "--labelled_seed", str(seed), "--seed",
                str(seed), "--disable_tqdm", "true", "--output_dir", out_dir]
    if start != "random":  # random: the recipe's own encoder, a preset at random init
        command += ["--encoder", start]
    if minutes is not None:
        command += ["--max_steps", "100000", "--max_train_minutes", str(minutes), "--lr_scheduler_type",
                    "constant_with_warmup", "--save_steps", "100000", "--logging_steps", "50"]
        if ramps_up(method):
            command += ["--rampup_steps", str(rampup_steps)]
    return command + list(extra)


def finetune_and_record(results: dict, output: Path, name: str, command: list[str], out_dir: str, threads: int,
                        **fields) -> dict:
    """Run one ``recipes/finetune.py`` command and merge its entry (``name``, ``fields``, steps, wall time, the
    published classifier's accuracy, the command) into ``results``, saved to ``output`` at once. A multi-round run
    (Noisy Student) leaves one folder per round: the entry's accuracy and steps are the last round's, and ``rounds``
    lists every round's."""
    seconds = run(command, threads)
    round_dirs = sorted((ROOT / out_dir).glob("round-*"), key=lambda path: int(path.name.split("-")[1]))
    rounds = []
    for run_dir in round_dirs or [ROOT / out_dir]:
        evaluation = json.loads((run_dir / "eval_results.json").read_text())
        record = json.loads((run_dir / "hf_ssl_run.json").read_text())
        rounds.append({"steps": evaluation["pretraining_steps"],
                       "accuracy": evaluation["probes"]["published"]["accuracy"],
                       "train_wall_seconds": record.get("wall_time_seconds")})
    entry = {"name": name, **fields, **{key: rounds[-1][key] for key in ("steps", "accuracy")},
             "wall_seconds": round(seconds), "train_wall_seconds": rounds[-1]["train_wall_seconds"],
             **({"rounds": rounds} if round_dirs else {}), "command": "python " + shlex.join(command)}
    results["runs"] = [other for other in results["runs"] if other["name"] != name] + [entry]
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{name}: {entry['accuracy']:.4f} after {entry['steps']} steps", flush=True)
    return entry


def published_ema(command: list[str]) -> dict | None:
    """The EMA settings (``ema_decay``, ``ema_warmup``) of a ``recipes/finetune.py`` command whose published classifier
    is an EMA of the weights, resolved as the run resolves them (recipe, method defaults, flags), so that a run whose
    folder is gone still gets its control; ``None`` for a method without one."""
    from hf_ssl.jobs.runner import parse_arguments

    method_config = parse_arguments([str(ROOT / command[1]), *command[2:]])[-2]
    if getattr(method_config, "ema_decay", None) is None:
        return None
    return {"ema_decay": method_config.ema_decay, "ema_warmup": method_config.ema_warmup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cifar10")
    parser.add_argument("--labels", type=int, nargs="+", help="labelled examples in all (default: the task's)")
    parser.add_argument("--methods", nargs="+", default=["supervised", "fixmatch"])
    parser.add_argument("--starts", nargs="+", help="random (a preset at random init) or a checkpoint (default: the "
                        "task's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="labelled_seed and training seed")
    parser.add_argument("--minutes", type=float, help="equal training wall time per run instead of the recipe's steps")
    parser.add_argument("--rampup_steps", type=int, default=300, help="with --minutes: the ramp-up's length in steps "
                        "for the methods that ramp up (default 300, a quarter to a half of what they fit in 10 min)")
    parser.add_argument("--teacher", help="the teacher classifier of distillation and Noisy Student (e.g. a FixMatch "
                        "run's output)")
    parser.add_argument("--finetune_args", default="", help="more recipes/finetune.py options for every run, e.g. a "
                        "method setting: '--classwise_thresholds true' (needs --variant)")
    parser.add_argument("--variant", default="", help="a name for the --finetune_args setting, added to each run's name")
    parser.add_argument("--ema_controls", action="store_true", help="pair each run that publishes an EMA of the "
                        "weights with supervised-only keeping the same EMA for the same steps (see above)")
    parser.add_argument("--step_controls", action="store_true", help="pair every run with supervised-only for the same "
                        "steps, keeping the run's EMA where it publishes one (see above)")
    parser.add_argument("--controls_only", action="store_true", help="run no method: pair each method's run already "
                        "in the record (its row name) with its control (with --step_controls or --ema_controls)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain", action="store_true", help="run the task's reference pretraining first")
    parser.add_argument("--output", help="JSON file (default benchmarks/results/semi_<task>.json)")
    args = parser.parse_args()
    if bool(args.finetune_args) != bool(args.variant):
        parser.error("--finetune_args and --variant go together: name the setting so that its runs keep their own rows")
    if args.controls_only and not (args.step_controls or args.ema_controls):
        parser.error("--controls_only runs controls: add --step_controls or --ema_controls")
    if args.step_controls and not args.minutes:
        parser.error("--step_controls needs --minutes: at the recipe's steps supervised-only already runs every "
                     "method's steps")
    task = TASKS[args.task]

    output = ROOT / (args.output or f"benchmarks/results/semi_{args.task}.json")
    results = json.loads(output.read_text()) if output.is_file() else {"runs": []}
    budget = (f"equal training wall time per run ({args.minutes} min), constant learning rate after the warm-up"
              if args.minutes else "the recipe's steps and schedule")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    # controls added to a record later keep its protocol and machine, and name their own
    control_fields = {"machine": machine} if args.controls_only else {}
    if not args.controls_only:
        results.update(protocol=f"{task.protocol} Budget: {budget}; final accuracy of the published classifier.",
                       machine=machine)
    if args.pretrain:
        if not task.pretrain_command:
            parser.error(f"the {args.task} task has no reference pretraining")
        seconds = run(list(task.pretrain_command), args.threads)
        results["pretraining"] = {"command": "python " + shlex.join(task.pretrain_command),
                                  "wall_seconds": round(seconds)}
        output.write_text(json.dumps(results, indent=2) + "\n")
    # the options every run gets beyond its recipe, and the row name they run under
    extra = (("--teacher", args.teacher) if args.teacher else ()) + tuple(shlex.split(args.finetune_args))
    variant = f"-{args.variant}" if args.variant else ""
    # the controls in the record, by row name: this invocation's and an earlier one's (a method added to the same
    # output later reuses a control that ran the same command)
    controls = {entry["name"]: entry for entry in results["runs"] if "control_of" in entry}
    for labels in args.labels or [task.labels]:
        for seed in args.seeds:
            for start in args.starts or task.starts:
                started_from = "random" if start == "random" else "pretrained"
                row = f"-{labels}-{started_from}-seed{seed}"  # what every row name of this run ends with
                for method in args.methods:
                    name = f"{method}{variant}{row}"
                    out_dir = f"outputs/semi/{args.task}/{output.stem}/{name}"
                    # a supervised-only run is the baseline itself, even with an EMA: it gets no control of its own
                    if args.controls_only and method == "supervised":
                        continue
                    if args.controls_only:
                        entry = next((run for run in results["runs"] if run["name"] == name), None)
                        if entry is None:
                            parser.error(f"{output} has no run {name}: run it first, or leave out --controls_only")
                    else:
                        command = finetune_command(task, method, labels, start, seed, args.minutes, out_dir, extra,
                                                   args.rampup_steps)
                        entry = finetune_and_record(
                            results, output, name, command, out_dir, args.threads, method=method, labels=labels,
                            start=start, seed=seed, **({"teacher": args.teacher} if args.teacher else {}),
                            **({"variant": args.finetune_args} if args.variant else {}))
                    if method == "supervised" or not (args.ema_controls or args.step_controls):
                        continue
                    ema = published_ema(shlex.split(entry["command"])[1:])
                    if ema is None and not args.step_controls:
                        continue
                    setting = ("--max_steps", str(entry["steps"]))
                    if ema is not None:
                        setting += ("--ema_decay", str(ema["ema_decay"]), "--ema_warmup", str(ema["ema_warmup"]).lower())
                    control = f"supervised-steps{entry['steps']}{'_ema' if ema is not None else ''}{row}"

                    def control_command(control: str) -> list[str]:
                        return finetune_command(task, "supervised", labels, start, seed, args.minutes,
                                                str(Path(out_dir).with_name(control)), setting)

                    shared = controls.get(control)
                    if shared is not None and shared["command"] == "python " + shlex.join(control_command(control)):
                        # another run of this seed stopped at the same step: one control serves both
                        runs = shared["control_of"]
                        runs = runs if isinstance(runs, list) else [runs]
                        shared["control_of"] = runs + [name] if name not in runs else runs
                        output.write_text(json.dumps(results, indent=2) + "\n")
                        continue
                    if shared is not None:  # the same steps with another EMA or budget: a row of its own
                        control += f"-for-{method}"
                    control_dir = str(Path(out_dir).with_name(control))
                    command = control_command(control)
                    controls[control] = finetune_and_record(
                        results, output, control, command, control_dir, args.threads, method="supervised",
                        labels=labels, start=start, seed=seed, variant=shlex.join(setting), control_of=name,
                        **control_fields)


if __name__ == "__main__":
    main()
