"""``hf-ssl`` reports a user's mistake on one line of stderr (the problem and the fix) with exit status 2 for a command
line that cannot run as given and 1 for other user errors; bugs keep their traceback, and ``--debug`` /
``HF_SSL_DEBUG=1`` shows the traceback of user errors too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from hf_ssl.cli import main
from hf_ssl.jobs.evaluate import EVALUATION_TASKS, register_evaluation_task


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("argv, flag", [
    (["pretrain", "--nope", "3"], "--nope"),
    (["pretrain", "--method", "simclr", "--max_step=3", "--temperatur", "0.1"], "--temperatur"),
    (["finetune", "--method", "fixmatch", "--labels", "4"], "--labels"),
    (["evaluate", "run", "--nope", "2"], "--nope"),
    (["card", "run", "--nope"], "--nope"),
    (["list", "--nope"], "--nope"),
])
def test_unknown_flags_are_one_line_naming_them_and_help(argv, flag, capsys):
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert line.startswith(f"hf-ssl {argv[0]}: error:") and flag in line and "--help" in line


def test_a_malformed_value_is_one_line_naming_the_flag(capsys):
    assert main(["pretrain", "--max_steps", "many"]) == 2
    line = _one_line_error(capsys)
    assert "--max_steps" in line and "'many'" in line and "hf-ssl pretrain --method dino --help" in line


def test_an_unknown_config_key_is_named_as_one(tmp_path, capsys):
    config = tmp_path / "simclr-test.yaml"
    config.write_text(yaml.safe_dump({"method": "simclr", "temprature": 0.2, "output_dir": str(tmp_path / "out")}))
    assert main(["pretrain", str(config)]) == 2
    assert f"--temprature (keys of {config}) for simclr (image job)" in _one_line_error(capsys)


def test_an_unknown_command_is_one_line_without_the_overview(capsys):
    assert main(["pretrian"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "'pretrian'" in captured.err and "choose one of pretrain, finetune" in captured.err


def test_other_user_errors_exit_1_with_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "missing.yaml")
    assert main(["pretrain", missing]) == 1
    line = _one_line_error(capsys)
    assert "FileNotFoundError" in line and "recipes/configs" in line and "--debug" in line
    with pytest.raises(FileNotFoundError):
        main(["--debug", "pretrain", missing])
    monkeypatch.setenv("HF_SSL_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["pretrain", missing])


@pytest.fixture
def failing_task():
    """``hf-ssl evaluate X --task fail`` raises the exception its checkpoint argument names."""
    errors = {"value": ValueError("bad setting: set --x to 3"), "bug": KeyError("internal"),
              "interrupt": KeyboardInterrupt()}

    def fail(checkpoint, arguments):
        raise errors[checkpoint]

    register_evaluation_task("fail", "raises", (), fail)
    yield
    EVALUATION_TASKS.pop("fail")


def test_bugs_keep_their_traceback_user_errors_do_not(failing_task, capsys):
    assert main(["evaluate", "value", "--task", "fail"]) == 1
    assert _one_line_error(capsys) == ("hf-ssl evaluate: error: bad setting: set --x to 3 (traceback: hf-ssl --debug "
                                       "... or HF_SSL_DEBUG=1)")
    with pytest.raises(KeyError, match="internal"):  # not a user error: a bug, with its traceback
        main(["evaluate", "bug", "--task", "fail"])
    assert main(["evaluate", "interrupt", "--task", "fail"]) == 130


def test_the_console_prints_one_line_and_nothing_else():
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    environment.pop("HF_SSL_DEBUG", None)
    completed = subprocess.run([sys.executable, "-m", "hf_ssl.cli", "pretrain", "--method", "byol", "--nope", "1"],
                               capture_output=True, text=True, env=environment, check=False)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip() == ("hf-ssl pretrain: error: unknown argument(s) --nope for byol (image job); "
                                        "`hf-ssl pretrain --method byol --help` lists the arguments")


def test_finetune_without_a_config_or_method_is_fixmatch(capsys):
    assert main(["finetune", "--nope"]) == 2
    assert "for fixmatch (semi_image job); `hf-ssl finetune --method fixmatch --help`" in _one_line_error(capsys)
