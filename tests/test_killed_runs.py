"""Killed runs lose nothing.

- ``kill -9`` at random times, during saves too, never leaves a checkpoint that does not load: checkpoints are written
  into ``_tmp-checkpoint-N`` and renamed once complete (``hf_ssl.training.checkpoints``), so the last ``checkpoint-N``
  loads and ``--resume_from_checkpoint true`` resumes it.
- SIGINT / SIGTERM finish the step, save a checkpoint and exit with 130 / 143 (``hf_ssl.training.interruption``); the
  resumed run ends with the weights of the uninterrupted one (DINO on images, masked-LM on text, MAE, CPC on audio,
  Sentence-BERT on sentence pairs, DeepCluster, CLIP on image-caption pairs). A signal that
  reaches one of two processes stops both at the same step.

The runs are real ``hf-ssl pretrain`` commands (``hf_ssl.cli.main``) in processes forked from this one, after one
in-process run has imported everything, so that a start costs no interpreter or library start-up and twenty kills fit
in about a minute.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import tqdm
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as transformers_logging

import hf_ssl.cli
from hf_ssl.jobs.runner import run
from hf_ssl.methods.base import AutoSSLModel
from hf_ssl.training.checkpoints import (
    is_complete_checkpoint,
    last_complete_checkpoint,
    staged_checkpoints,
)
from hf_ssl.training.interruption import GracefulInterruption
from hf_ssl.training.output_dir import checkpoint_folders, resolve_checkpoint
from hf_ssl.training.trainer import SSLTrainer

KILLS, SEED = 20, 0
#: The one-layer, 32-wide encoder of every tiny run below (ViT, BERT or the image tower, per job).
TINY_ENCODER = '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}'
#: A two-step-per-second tiny DINO run on the embedded images that saves after every step.
TINY_DINO = [
    "--per_device_train_batch_size", "16", "--max_train_examples", "64", "--max_eval_examples", "40", "--knn_k", "10",
    "--encoder_config_overrides", TINY_ENCODER,
    "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--num_local_crops", "2",
    "--final_comparison", "false", "--eval_strategy", "no", "--disable_tqdm", "true", "--report_to", "none",
    "--seed", "3",
]
WIKITEXT = "Salesforce/wikitext"
TINY_MLM = [
    "--method", "mlm", "--encoder", "bert-mini", "--encoder_config_overrides", TINY_ENCODER,
    "--dataset", WIKITEXT, "--dataset_config", "wikitext-2-raw-v1", "--max_train_documents", "6",
    "--max_seq_length", "64", "--tokenizer_vocab_size", "800", "--max_eval_sequences", "8",
    "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--warmup_steps", "1", "--eval_strategy", "no",
    "--report_to", "none", "--seed", "5", "--use_cpu", "true", "--disable_tqdm", "true",
]
FSDD = "silky1708/Free-Spoken-Digit-Dataset"
#: The masked-image job (MAE) and the audio job (CPC) at tiny sizes, for the signal-resume check of every job.
TINY_MAE = [
    "recipes/configs/mae-vit-tiny-embedded.yaml", "--encoder_config_overrides", TINY_ENCODER,
    "--decoder_hidden_size", "32", "--decoder_num_hidden_layers", "1", "--decoder_num_attention_heads", "2",
    "--decoder_intermediate_size", "64", "--max_train_examples", "64", "--max_eval_examples", "16",
    "--per_device_train_batch_size", "16", "--reconstruction_images", "0", "--final_comparison", "false",
    "--eval_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--seed", "3",
]
TINY_CPC = [
    "recipes/configs/cpc-tiny-fsdd.yaml", "--per_device_train_batch_size", "4", "--max_train_examples", "16",
    "--max_eval_examples", "8", "--crop_seconds", "0.3", "--encoder_config_overrides",
    '{"conv_dim": [16, 16, 16, 16, 16], "hidden_size": 16, "num_conv_pos_embedding_groups": 2}',
    "--context_dim", "16", "--num_negatives", "4", "--final_comparison", "false", "--eval_strategy", "no",
    "--disable_tqdm", "true", "--report_to", "none", "--seed", "3",
]
STSB = "sentence-transformers/stsb"
#: The sentence-pair job (Sentence-BERT, CoSENT, a tiny BERT from its config) and the clustering job (DeepCluster,
#: re-clustering every 3 steps, so the resumed run re-clusters after the checkpoint at step 2).
TINY_SBERT = [
    "recipes/configs/sbert-minilm-stsb.yaml", "--from_scratch", "true", "--encoder_config_overrides", TINY_ENCODER,
    "--objective", "cosent", "--max_train_examples", "64", "--per_device_train_batch_size", "8",
    "--eval_strategy", "no", "--use_cpu", "true", "--sts_dataset", STSB, "--sts_max_examples", "64",
    "--dataset", STSB, "--disable_tqdm", "true", "--report_to", "none", "--seed", "3",
]
TINY_DEEPCLUSTER = [
    "--method", "deepcluster", "--dataset", "embedded", "--max_train_examples", "32", "--encoder", "vit-tiny",
    "--encoder_config_overrides", TINY_ENCODER,
    "--patch_size", "4", "--global_crop_size", "16", "--per_device_train_batch_size", "8",
    "--num_clusters", "4", "--reassign_every", "3", "--pca_dim", "8", "--eval_strategy", "no",
    "--final_comparison", "false", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true",
    "--seed", "5",
]
EMOJI = "emoji_captions"
TINY_CLIP = [
    "recipes/configs/clip-vit-tiny-minilm-emoji.yaml", "--dataset", EMOJI, "--image_size", "16",
    "--encoder_config_overrides", TINY_ENCODER,
    "--projection_dim", "16", "--per_device_train_batch_size", "8", "--max_eval_examples", "40",
    "--eval_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none", "--seed", "3",
]
FORK = multiprocessing.get_context("fork")


@pytest.fixture(scope="module", autouse=True)
def imported_once(tmp_path_factory):
    """One in-process step first: the forked runs then find every module imported. tqdm's monitor thread (started by
    any progress bar, e.g. when weights load) is stopped and kept from starting again: a thread holding a lock at a
    fork would leave the child waiting on it forever (the waits below time out, naming what did not happen)."""
    tqdm.tqdm.monitor_interval = 0
    if getattr(tqdm.tqdm, "monitor", None) is not None:
        tqdm.tqdm.monitor.exit()
        tqdm.tqdm.monitor = None
    run(["--output_dir", str(tmp_path_factory.mktemp("warm") / "run"), *TINY_DINO, "--max_steps", "1"])


class _SignalAtStep(TrainerCallback):
    """Sends ``number`` to this process as step ``step`` begins (a real signal, at a known step)."""

    def __init__(self, step: int, number: int):
        self.step, self.number = step, number

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), self.number)


def _pretrain(argv: list[str], signal_at: tuple[int, int] | None = None, slow_saves: bool = False) -> None:
    """``hf-ssl pretrain ARGV`` in a forked process; its exit status is the command's. ``signal_at``: ``(step, signal)``
    sent to itself as that step begins. ``slow_saves``: each checkpoint takes 50 ms longer to write (a slow disk),
    half-way through (weights and optimizer written, trainer state not yet)."""
    torch.set_num_threads(1)
    # A terminal's Ctrl-C, whatever launched the suite: a shell without job control starts background jobs with SIGINT
    # ignored, and an ignored SIGINT rightly stays ignored by the run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # tqdm's write lock is a multiprocessing lock shared with the parent through the fork: a child killed while it
    # holds it (writing a progress bar) would leave the parent waiting on it forever. Child-local lock, no bars.
    tqdm.tqdm.set_lock(threading.RLock())
    transformers_logging.disable_progress_bar()
    if slow_saves:
        SSLTrainer.save_checkpoint_files = lambda trainer, folder: time.sleep(0.05)
    if signal_at is not None:
        hf_ssl.cli.run = functools.partial(hf_ssl.cli.run, callbacks=[_SignalAtStep(*signal_at)])
    sys.exit(hf_ssl.cli.main(["pretrain", *argv]))


def _start(argv: list[str], signal_at: tuple[int, int] | None = None, slow_saves: bool = False):
    process = FORK.Process(target=_pretrain, args=(argv, signal_at, slow_saves))
    process.start()
    return process


def _finish(argv: list[str], signal_at: tuple[int, int] | None = None, timeout: float = 120) -> int:
    process = _start(argv, signal_at)
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        pytest.fail(f"hf-ssl pretrain {' '.join(argv)} did not end in {timeout} s")
    return process.exitcode


def _last_step(out: Path) -> int:
    folders = checkpoint_folders(out)
    return int(folders[-1].name.split("-")[1]) if folders else 0


def _wait_until(condition, process, what: str, timeout: float = 60) -> None:
    """Poll ``condition()`` every 2 ms while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.is_alive(), f"the run ended (exit status {process.exitcode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.002)


def _check_loadable(out: Path, save_total_limit: int) -> None:
    """Every ``checkpoint-N`` is complete and the last loads: weights, method state and trainer state."""
    folders = checkpoint_folders(out)
    assert folders and len(folders) <= save_total_limit + 1  # + 1: killed after a rename, before the rotation
    assert all(is_complete_checkpoint(folder) for folder in folders), [path.name for path in folders]
    last = get_last_checkpoint(str(out))  # what transformers itself would resume
    assert last == last_complete_checkpoint(out) == str(folders[-1])
    state = json.loads((Path(last) / "trainer_state.json").read_text())
    assert state["global_step"] == int(Path(last).name.split("-")[1])
    model = AutoSSLModel.from_pretrained(last)
    assert type(model).__name__ == "DINOForPretraining" or model.config.ssl_config["method"] == "dino"


def test_sigkill_at_random_times_never_loses_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    limit = 2
    argv = ["--output_dir", str(out), *TINY_DINO, "--max_steps", "100000", "--save_steps", "1",
            "--save_total_limit", str(limit)]
    rng = random.Random(SEED)
    during_save = []
    for kill in range(KILLS):
        before = _last_step(out)
        process = _start([*argv, "--resume_from_checkpoint", "true"] if before else argv, slow_saves=True)
        # It resumed from `before` (or started) and took a step: a checkpoint after `before` is there.
        _wait_until(lambda: _last_step(out) > before, process, f"a checkpoint after step {before}")
        if kill % 2:  # every other kill aims at a save: once one starts, within 30 ms (a save takes over 50 ms)
            _wait_until(lambda: any(out.glob("_tmp-checkpoint-*")), process, "a save")
            time.sleep(rng.uniform(0.0, 0.03))
        else:  # the others at any time in the next few steps
            time.sleep(rng.uniform(0.0, 0.6))
        process.kill()
        process.join()
        assert process.exitcode == -signal.SIGKILL
        staged = staged_checkpoints(out)
        if staged or len(checkpoint_folders(out)) > limit:  # killed while writing, or between rename and rotation
            during_save.append(kill)
        _check_loadable(out, limit)
        assert len(staged) <= 1  # the next save deleted what the previous kill left
    print(f"{KILLS} kills, {len(during_save)} during a save (kills {during_save}); last step {_last_step(out)}")
    assert len(during_save) >= KILLS // 2, "too few kills landed during a save to show anything"

    # A last resume, stopped by SIGTERM: it saves, exits with 143, and leaves no staging folder; the run never
    # finished, so no final model was written at the top of the folder.
    before = _last_step(out)
    process = _start([*argv, "--resume_from_checkpoint", "true"])
    _wait_until(lambda: _last_step(out) > before, process, f"a checkpoint after step {before}")
    process.terminate()
    process.join(60)
    assert process.exitcode == 128 + signal.SIGTERM
    assert not staged_checkpoints(out) and not (out / "model.safetensors").exists()
    _check_loadable(out, limit)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{name}:{key}": tensor for name in ("model.safetensors", "ssl_state.safetensors")
            if (folder / name).is_file() for key, tensor in load_file(folder / name).items()}


TOTAL, STOP = 5, 2  # steps of a run; the step a signal arrives at


def _run_settings(out: Path, argv: list[str]) -> list[str]:
    """``argv`` (a leading config file stays first) writing into ``out``, ``TOTAL`` steps, no scheduled save."""
    config, flags = (argv[:1], argv[1:]) if argv and argv[0].endswith(".yaml") else ([], argv)
    return [*config, "--output_dir", str(out), *flags, "--max_steps", str(TOTAL), "--save_steps", "1000"]


def _uninterrupted(out: Path, argv: list[str]) -> Path:
    assert _finish(_run_settings(out, argv)) == 0
    return out


def _interrupted(part: Path, argv: list[str], number: int) -> Path:
    """``number`` sent as step ``STOP`` begins: the run saves ``checkpoint-<STOP>`` (no other save is due), exits with
    128 + number and writes no final model; returns the checkpoint."""
    assert _finish(_run_settings(part, argv), signal_at=(STOP, number)) == 128 + number
    checkpoint = part / f"checkpoint-{STOP}"
    assert checkpoint_folders(part) == [checkpoint] and is_complete_checkpoint(checkpoint)
    assert not (part / "model.safetensors").exists()
    return checkpoint


def _assert_resumed_run_equals(full: Path, part: Path, argv: list[str]) -> None:
    """``--resume_from_checkpoint true`` in ``part`` ends with the weights (encoder, head, method state) of the
    uninterrupted run ``full``. A marker put into the checkpoint's log history must reach the final trainer state: a
    run that started afresh instead of resuming would also end with those weights (the same seed), not with it."""
    state_file = part / f"checkpoint-{STOP}" / "trainer_state.json"
    marker = {"step": STOP, "marker": "written into the checkpoint before the resume"}
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "log_history": [*state["log_history"], marker]}))
    assert _finish([*_run_settings(part, argv), "--resume_from_checkpoint", "true"]) == 0
    final_state = json.loads((part / "trainer_state.json").read_text())
    assert final_state["global_step"] == TOTAL and marker in final_state["log_history"]
    expected, actual = _weights(full), _weights(part)
    assert expected and expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def dino_uninterrupted(tmp_path_factory):
    return _uninterrupted(tmp_path_factory.mktemp("dino") / "full", TINY_DINO)


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dino_resumed_after_a_signal_equals_the_uninterrupted_run(dino_uninterrupted, tmp_path, number):
    _interrupted(tmp_path / "part", TINY_DINO, number)
    _assert_resumed_run_equals(dino_uninterrupted, tmp_path / "part", TINY_DINO)


@pytest.mark.needs_data(WIKITEXT)
def test_masked_lm_resumed_after_sigterm_equals_the_uninterrupted_run(tmp_path):
    checkpoint = _interrupted(tmp_path / "part", TINY_MLM, signal.SIGTERM)
    # The uninterrupted run tokenizes with the same vocabulary (a WordPiece tokenizer trained twice on the same text
    # may break ties differently); the resumed run keeps its checkpoint's.
    full = _uninterrupted(tmp_path / "full", [*TINY_MLM, "--tokenizer", str(checkpoint)])
    _assert_resumed_run_equals(full, tmp_path / "part", TINY_MLM)


@pytest.mark.parametrize("argv", [
    pytest.param(TINY_MAE, id="masked_image-mae"),
    pytest.param(TINY_CPC, id="audio-cpc", marks=pytest.mark.needs_data(FSDD)),
    pytest.param(TINY_SBERT, id="sentence_pairs-sbert", marks=pytest.mark.needs_data(STSB)),
    pytest.param(TINY_DEEPCLUSTER, id="clustering-deepcluster"),
    pytest.param(TINY_CLIP, id="image_text-clip", marks=pytest.mark.needs_data(EMOJI)),
])
def test_other_jobs_resumed_after_sigterm_equal_the_uninterrupted_run(tmp_path, argv):
    """The masked-image job (MAE: per-example mask seeds), the audio job (CPC: random crops and negatives), the
    sentence-pair job (Sentence-BERT), the clustering job (DeepCluster: assignments and the cluster-balanced sampler
    in the checkpoint) and the image-text job (CLIP: random crops seeded per example, batches without repeated
    captions), as DINO and masked-LM above: stopped by SIGTERM at step 2, resumed, each ends with the uninterrupted
    run's weights."""
    full = _uninterrupted(tmp_path / "full", argv)
    _interrupted(tmp_path / "part", argv, signal.SIGTERM)
    _assert_resumed_run_equals(full, tmp_path / "part", argv)


def test_resuming_the_last_checkpoint_skips_incomplete_ones(tmp_path, caplog):
    """A ``checkpoint-N`` that a plain ``Trainer`` (or an older version) left half-written when killed: no readable
    ``trainer_state.json``. transformers' ``get_last_checkpoint`` picks it; ``--resume_from_checkpoint true`` takes
    the last complete one and names the skipped ones."""
    for step, state in ((1, '{"global_step": 1}'), (3, None), (4, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "_tmp-checkpoint-5").mkdir()
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-4")
    assert resolve_checkpoint("true", tmp_path) == last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-1")
    assert "checkpoint-4, checkpoint-3" in caplog.text


def test_a_second_signal_stops_at_once(tmp_path):
    """The first SIGINT only asks for a checkpoint at the end of the step; the second is Ctrl-C as without hf_ssl."""
    interruption = GracefulInterruption(agree=lambda number: number)
    # As in a terminal, even where the suite was started with SIGINT ignored (a background job without job control).
    suite_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interruption.installed():
                os.kill(os.getpid(), signal.SIGINT)
                assert interruption.received == signal.SIGINT
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # (the KeyboardInterrupt comes before)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler and interruption.stopped_by is None
    finally:
        signal.signal(signal.SIGINT, suite_handler)


#: Run by each of two torchrun processes: ``hf-ssl pretrain ARGV``, with SIGTERM sent to rank 1 alone as step 2 begins.
_RANK_ONE_SIGNALLED = """
import functools, os, signal, sys
import hf_ssl.cli
from test_killed_runs import _SignalAtStep
if os.environ["RANK"] == "1":
    hf_ssl.cli.run = functools.partial(hf_ssl.cli.run, callbacks=[_SignalAtStep(2, signal.SIGTERM)])
sys.exit(hf_ssl.cli.main(["pretrain", *sys.argv[1:]]))
"""


def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Only rank 1 gets SIGTERM: the ranks agree at the end of step 2, both save ``checkpoint-2`` together and exit
    with 143 (without the agreement rank 0 would go on alone into step 3's collectives and wait forever)."""
    out = tmp_path / "run"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={port}", "--no-python", sys.executable, "-c", _RANK_ONE_SIGNALLED,
               "--output_dir", str(out), *TINY_DINO, "--max_steps", "6", "--save_steps", "1000", "--use_cpu", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    log = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.returncode != 0 and "exitcode  : 143" in completed.stderr, log
    assert checkpoint_folders(out) == [out / "checkpoint-2"] and is_complete_checkpoint(out / "checkpoint-2"), log
    assert {path.name for path in (out / "checkpoint-2").glob("rng_state_*.pth")} == {"rng_state_0.pth",
                                                                                     "rng_state_1.pth"}
