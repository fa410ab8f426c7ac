"""Masked-LM and SOP (masked-LM + sentence-order pairs on ALBERT) resume exactly through the real job: k + m
uninterrupted steps equal k steps, a checkpoint, a stop and ``--resume_from_checkpoint true`` for the remaining m steps
(the same per-step losses, the same weights).

Two things must hold for that. The masks are drawn anew for every batch, so a resumed run must draw the masks the
uninterrupted run drew (they are seeded per batch by its examples' ``(seed, epoch, index)``: torch's global RNG, which
the checkpoint restores, has already drawn the next batch's masks when accelerate prefetched it). And the resumed run
must tokenize with the checkpoint's tokenizer: training a WordPiece tokenizer again on the same text need not give the
same vocabulary (``tokenizers``' trainer breaks ties in hash-map order)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_ssl.jobs.runner import run

WIKITEXT = "Salesforce/wikitext"
TOTAL_STEPS, STOP_AT = 5, 2  # the interrupted run stops mid-epoch after checkpoint-2, then resumes for 3 steps
TINY_ENCODER = json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                           "intermediate_size": 64})


class RecordLosses(TrainerCallback):
    """Keeps ``{step: logged training loss}``; with ``stop_at``, stops training after that step (a killed job)."""

    def __init__(self, stop_at: int | None = None):
        self.losses: dict[int, float] = {}
        self.stop_at = stop_at

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_training_stop = True
        return control


METHOD = ["--method", "mlm", "--encoder", "bert-mini"]


def mlm_run(output_dir, callback: RecordLosses, *extra: str, method: list[str] = METHOD) -> None:
    """The masked-LM job on a WikiText slice at a tiny size (dropout on, linear warm-up and decay, a WordPiece
    tokenizer trained on the slice unless ``--tokenizer`` names one); a checkpoint every ``STOP_AT`` steps."""
    run([
        *method, "--encoder_config_overrides", TINY_ENCODER,
        "--dataset", WIKITEXT, "--dataset_config", "wikitext-2-raw-v1", "--max_train_documents", "6",
        "--max_seq_length", "64", "--tokenizer_vocab_size", "800", "--max_eval_sequences", "8",
        "--output_dir", str(output_dir), "--max_steps", str(TOTAL_STEPS), "--per_device_train_batch_size", "4",
        "--learning_rate", "1e-3", "--warmup_steps", "1", "--lr_scheduler_type", "linear", "--logging_steps", "1",
        "--save_steps", str(STOP_AT), "--eval_strategy", "no", "--report_to", "none", "--seed", "5",
        "--use_cpu", "true", "--disable_tqdm", "true", *extra,
    ], callbacks=[callback])


def vocabulary(folder) -> dict[str, int]:
    return json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]


@pytest.mark.needs_data(WIKITEXT)
@pytest.mark.parametrize("method", [METHOD, ["--method", "sop", "--encoder", "albert-mini"]], ids=["mlm", "sop"])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, method):
    part, full = tmp_path / "part", tmp_path / "full"
    first, second, whole = RecordLosses(stop_at=STOP_AT), RecordLosses(), RecordLosses()
    mlm_run(part, first, method=method)  # trains its tokenizer, stops after step 2 (checkpoint-2 saved)
    checkpoint = part / f"checkpoint-{STOP_AT}"
    assert checkpoint.is_dir() and sorted(first.losses) == [1, 2]
    mlm_run(full, whole, "--tokenizer", str(checkpoint), method=method)  # uninterrupted, with the same vocabulary
    mlm_run(part, second, "--resume_from_checkpoint", "true", method=method)

    assert vocabulary(part) == vocabulary(checkpoint)  # the resumed run kept the checkpoint's tokenizer
    assert sorted(whole.losses) == list(range(1, TOTAL_STEPS + 1))
    assert sorted(second.losses) == list(range(STOP_AT + 1, TOTAL_STEPS + 1))
    # Each step's loss follows its batch's masks (and dropout): equal losses after the resume, equal masks.
    assert {**first.losses, **second.losses} == pytest.approx(whole.losses, rel=1e-6, abs=0)
    expected = load_file(full / f"checkpoint-{TOTAL_STEPS}" / "model.safetensors")
    actual = load_file(part / f"checkpoint-{TOTAL_STEPS}" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
    at_stop = load_file(checkpoint / "model.safetensors")
    assert sum(not torch.equal(actual[key], at_stop[key]) for key in actual) > len(actual) // 2  # it did train on
