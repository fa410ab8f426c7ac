"""The SimCLRv2 pipeline benchmark (benchmarks/semi_pipeline.py) chains its stages: each teacher is the previous
stage's classifier, Noisy Student's rounds are each recorded, and a finished stage is not trained again. The training
runs are replaced by a stand-in that writes what ``recipes/finetune.py`` leaves (its evaluation and run record).
The few-labels benchmark (benchmarks/semi_few_labels.py) runs a method setting under its own row and pairs a method
that publishes an EMA of the weights with supervised-only keeping that EMA for the same steps, and with
``--step_controls`` every other method with supervised-only for its steps; ``--controls_only`` adds them to runs
already recorded."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def pipeline(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("semi_pipeline", "semi_few_labels"):
        sys.modules.pop(name, None)
    import semi_few_labels
    import semi_pipeline

    monkeypatch.setattr(semi_few_labels, "ROOT", tmp_path)
    monkeypatch.setattr(semi_pipeline, "ROOT", tmp_path)
    (tmp_path / semi_few_labels.SIMCLR).mkdir(parents=True)
    (tmp_path / "benchmarks/results").mkdir(parents=True)
    (tmp_path / semi_few_labels.SIMCLR / "config.json").write_text("{}")
    (tmp_path / "recipes").symlink_to(BENCHMARKS.parent / "recipes")  # the runs' settings are read from their recipe
    commands = []

    def fake_finetune(command, threads):
        """Leave one finished run per round, its accuracy 0.1 * (runs so far)."""
        commands.append(command)
        out_dir = tmp_path / command[command.index("--output_dir") + 1]
        rounds = int(command[command.index("--rounds") + 1]) if "--rounds" in command else 0
        for run_dir in [out_dir / f"round-{k}" for k in range(1, rounds + 1)] or [out_dir]:
            run_dir.mkdir(parents=True, exist_ok=True)
            accuracy = round(0.1 * (len(commands) + int(run_dir.name.startswith("round-")) * int(run_dir.name[-1])), 2)
            (run_dir / "eval_results.json").write_text(json.dumps(
                {"pretraining_steps": 7, "probes": {"published": {"accuracy": accuracy}}}))
            (run_dir / "hf_ssl_run.json").write_text(json.dumps({"wall_time_seconds": 1.0}))
        return 1.0

    monkeypatch.setattr(semi_few_labels, "run", fake_finetune)
    return semi_pipeline, commands, tmp_path


def option(command, name):
    return command[command.index(name) + 1] if name in command else None


def method_of(command):
    """The method of a ``recipes/finetune.py`` command, from its recipe's name (``<method>-<backbone>-...yaml``)."""
    return command[1].split("/")[-1].split("-")[0]


def test_each_stage_teaches_the_next_and_every_round_is_recorded(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    monkeypatch.setattr(sys, "argv", ["semi_pipeline.py", "--labels", "250", "--minutes", "0.5"])
    semi_pipeline.main()

    methods = [method_of(command) for command in commands]
    assert methods == ["supervised", "fixmatch", "distillation", "noisy_student"]
    outputs = [option(command, "--output_dir") for command in commands]
    assert option(commands[2], "--teacher") == outputs[1]  # distillation learns from FixMatch's classifier
    assert option(commands[3], "--teacher") == outputs[2]  # Noisy Student's first teacher is the distilled one
    assert option(commands[2], "--supervised_weight") == "0" and option(commands[2], "--encoder") is None
    assert all(option(command, "--labels_per_class") == "25" for command in commands)
    assert all(option(command, "--max_train_minutes") == "0.5" for command in commands)

    runs = json.loads((root / "benchmarks/results/semi_pipeline.json").read_text())["runs"]
    assert [entry["stage"] for entry in runs] == [stage[0] for stage in semi_pipeline.STAGES]
    noisy_student = runs[-1]
    assert [entry["accuracy"] for entry in noisy_student["rounds"]] == [0.5, 0.6]
    assert noisy_student["accuracy"] == 0.6  # the last round's classifier is the stage's result


def test_a_rerun_keeps_the_finished_stages(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    monkeypatch.setattr(sys, "argv", ["semi_pipeline.py"])
    semi_pipeline.main()
    record = root / "benchmarks/results/semi_pipeline.json"
    runs = json.loads(record.read_text())["runs"]
    runs.pop()  # as if the last stage had not finished
    record.write_text(json.dumps({"runs": runs}))
    commands.clear()
    semi_pipeline.main()
    assert len(commands) == 1 and "noisy_student" in commands[0][1]
    assert len(json.loads(record.read_text())["runs"]) == len(semi_pipeline.STAGES)


def test_missing_pretraining_names_the_command_that_makes_it(pipeline, monkeypatch, capsys):
    semi_pipeline, commands, root = pipeline
    (root / "outputs/semi/simclr-vit-tiny-cifar10/config.json").unlink()
    monkeypatch.setattr(sys, "argv", ["semi_pipeline.py"])
    with pytest.raises(SystemExit):
        semi_pipeline.main()
    assert "semi_few_labels.py --task cifar10 --pretrain" in capsys.readouterr().err
    assert commands == []


def test_a_method_variant_runs_with_its_setting_under_its_own_name(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    import semi_few_labels

    argv = ["semi_few_labels.py", "--methods", "fixmatch", "--starts", "random", "--minutes", "0.5"]
    monkeypatch.setattr(sys, "argv", argv)
    semi_few_labels.main()
    monkeypatch.setattr(sys, "argv", argv + ["--finetune_args", "--classwise_thresholds true", "--variant", "flex"])
    semi_few_labels.main()

    assert "--classwise_thresholds" not in commands[0] and commands[1][-2:] == ["--classwise_thresholds", "true"]
    runs = json.loads((root / "benchmarks/results/semi_cifar10.json").read_text())["runs"]
    assert [entry["name"] for entry in runs] == ["fixmatch-40-random-seed0", "fixmatch-flex-40-random-seed0"]
    assert option(commands[1], "--output_dir").endswith("fixmatch-flex-40-random-seed0")

    monkeypatch.setattr(sys, "argv", argv + ["--finetune_args", "--classwise_thresholds true"])
    with pytest.raises(SystemExit):  # a setting without a name would overwrite the plain method's row
        semi_few_labels.main()


def test_an_ema_method_is_paired_with_supervised_only_keeping_the_same_ema_for_its_steps(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    import semi_few_labels

    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "fixmatch", "pi_model", "--starts", "random",
                                      "--seeds", "3", "--minutes", "0.5", "--ema_controls"])
    semi_few_labels.main()

    # FixMatch publishes an EMA, the Π-model does not: one control, right after FixMatch, on its labels and seed
    assert [method_of(command) for command in commands] == ["fixmatch", "supervised", "pi_model"]
    fixmatch, control = commands[0], commands[1]
    for name in ("--labels_per_class", "--labelled_seed", "--seed", "--max_train_minutes", "--lr_scheduler_type"):
        assert option(control, name) == option(fixmatch, name)
    assert control[-6:] == ["--max_steps", "7", "--ema_decay", "0.999", "--ema_warmup", "true"]  # FixMatch's 7 steps
    runs = {entry["name"]: entry for entry in
            json.loads((root / "benchmarks/results/semi_cifar10.json").read_text())["runs"]}
    assert runs["supervised-steps7_ema-40-random-seed3"]["control_of"] == "fixmatch-40-random-seed3"
    assert set(runs) == {"fixmatch-40-random-seed3", "supervised-steps7_ema-40-random-seed3",
                         "pi_model-40-random-seed3"}


def test_step_controls_pair_every_method_with_supervised_only_for_its_steps(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    import semi_few_labels

    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "supervised", "fixmatch", "pi_model",
                                      "pseudo_label", "--starts", "random", "--seeds", "3", "--minutes", "0.5",
                                      "--step_controls"])
    semi_few_labels.main()

    # supervised-only is the baseline and gets none; FixMatch keeps its EMA; the Π-model's control has no EMA, and
    # pseudo-labelling, stopped at the same step, shares it
    assert [method_of(command) for command in commands] == ["supervised", "fixmatch", "supervised", "pi_model",
                                                            "supervised", "pseudo_label"]
    assert commands[2][-6:] == ["--max_steps", "7", "--ema_decay", "0.999", "--ema_warmup", "true"]
    pi_model, control = commands[3], commands[4]
    for name in ("--labels_per_class", "--labelled_seed", "--seed", "--max_train_minutes", "--lr_scheduler_type"):
        assert option(control, name) == option(pi_model, name)
    assert control[-2:] == ["--max_steps", "7"] and "--ema_decay" not in control
    runs = {entry["name"]: entry for entry in
            json.loads((root / "benchmarks/results/semi_cifar10.json").read_text())["runs"]}
    assert runs["supervised-steps7-40-random-seed3"]["control_of"] == ["pi_model-40-random-seed3",
                                                                        "pseudo_label-40-random-seed3"]
    assert runs["supervised-steps7_ema-40-random-seed3"]["control_of"] == "fixmatch-40-random-seed3"
    assert len(runs) == 6

    # a method added to the same record later reuses the control that ran the same command
    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "temporal_ensembling", "--starts", "random",
                                      "--seeds", "3", "--minutes", "0.5", "--step_controls"])
    semi_few_labels.main()
    assert [method_of(command) for command in commands[6:]] == ["temporal_ensembling"]
    runs = {entry["name"]: entry for entry in
            json.loads((root / "benchmarks/results/semi_cifar10.json").read_text())["runs"]}
    assert runs["supervised-steps7-40-random-seed3"]["control_of"] == [
        "pi_model-40-random-seed3", "pseudo_label-40-random-seed3", "temporal_ensembling-40-random-seed3"]
    assert len(runs) == 7

    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "pi_model", "--step_controls"])
    with pytest.raises(SystemExit):  # at the recipe's steps there is no fewer-steps cost to control for
        semi_few_labels.main()


def test_controls_only_pairs_the_recorded_runs_without_training_them_again(pipeline, monkeypatch):
    semi_pipeline, commands, root = pipeline
    import semi_few_labels

    common = ["--starts", "random", "--seeds", "3", "--minutes", "0.5"]
    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "supervised", "mean_teacher", "vat", *common])
    semi_few_labels.main()
    for folder in (root / "outputs").iterdir():  # the run folders are gone: the record's commands are what is left
        folder.rename(root / f"removed-{folder.name}")
    record = root / "benchmarks/results/semi_cifar10.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "machine": "the first runs' machine"}))
    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "supervised", "mean_teacher", "vat",
                                      *common, "--step_controls", "--controls_only"])
    semi_few_labels.main()

    # only the two controls ran: Mean Teacher's keeps the EMA its recipe publishes, VAT's has none
    assert [method_of(command) for command in commands] == ["supervised", "mean_teacher", "vat", "supervised",
                                                            "supervised"]
    assert commands[3][-6:] == ["--max_steps", "7", "--ema_decay", "0.999", "--ema_warmup", "true"]
    assert commands[4][-2:] == ["--max_steps", "7"] and "--ema_decay" not in commands[4]
    runs = {entry["name"]: entry for entry in
            json.loads((root / "benchmarks/results/semi_cifar10.json").read_text())["runs"]}
    assert runs["supervised-steps7_ema-40-random-seed3"]["control_of"] == "mean_teacher-40-random-seed3"
    assert runs["supervised-steps7-40-random-seed3"]["control_of"] == "vat-40-random-seed3"
    # the record keeps the machine of its first runs; each control names its own
    assert json.loads(record.read_text())["machine"] == "the first runs' machine"
    assert "cores" in runs["supervised-steps7-40-random-seed3"]["machine"]

    monkeypatch.setattr(sys, "argv", ["semi_few_labels.py", "--methods", "fixmatch", *common, "--step_controls",
                                      "--controls_only"])
    with pytest.raises(SystemExit):  # no FixMatch run in the record to pair
        semi_few_labels.main()
