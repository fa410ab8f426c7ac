"""2 processes on gloo, each with half of a fixed global batch of utterances, reproduce 1 process with the whole batch:
CPC (negatives drawn from the global batch) and wav2vec 2.0 (masks and negatives drawn per utterance from its own
seed, the loss normalised by the global masked-frame count)."""

from pathlib import Path

import pytest
import torch
from test_cpc import padded_batch
from test_distributed import run_worker
from test_wav2vec2 import tiny_wav2vec2

WORKER = Path(__file__).with_name("distributed_worker_audio.py")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_same_loss_and_gradients(double: dict, single: dict) -> None:
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert double["grads"].keys() == single["grads"].keys() and single["grads"]
    for name, grad in single["grads"].items():
        torch.testing.assert_close(double["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_two_process_cpc_matches_one_process_with_negatives_from_the_global_batch(tmp_path):
    """Every negative sampling mode: the frames are gathered across processes and the negatives drawn for the global
    batch from a shared seed, so each utterance gets the same negatives (from the other shard's utterances too) and
    the loss is normalised by the global prediction count."""
    single = run_worker(tmp_path, "cpc", 1, WORKER)
    double = run_worker(tmp_path, "cpc", 2, WORKER)
    assert double["world_size"] == 2 and single["world_size"] == 1
    for mode, expected in single["result"].items():
        assert_same_loss_and_gradients(double["result"][mode], expected)
        torch.testing.assert_close(double["result"][mode]["accuracy"], expected["accuracy"])


def test_two_process_wav2vec2_matches_one_process_with_the_same_masks_and_negatives(tmp_path):
    """Masks and negatives drawn per utterance from its own seed; the shards hold different numbers of masked frames,
    so only the global count gives one process's mean."""
    single = run_worker(tmp_path, "wav2vec2", 1, WORKER)
    double = run_worker(tmp_path, "wav2vec2", 2, WORKER)
    assert double["world_size"] == 2
    per_rank = double["result"]["masked_frames_per_rank"]
    assert per_rank[0] != per_rank[1] and per_rank[0] + per_rank[1] == single["result"]["masked_frames"]
    assert_same_loss_and_gradients(double["result"], single["result"])


def test_wav2vec2_per_utterance_seeds_give_the_same_draws_whatever_batch_and_padding():
    """What lets a shard reproduce its rows of the global batch: an utterance's masks and negatives depend only on
    its seed and its own length."""
    model = tiny_wav2vec2()
    lengths, seeds = [1200, 560, 1000, 880], [7, 8, 9, 10]
    _, mask = padded_batch(lengths)
    together = model.sample_pretraining_inputs(mask, *mask.shape, seed=seeds)
    alone = model.sample_pretraining_inputs(mask[2:, :1000], 2, 1000, seed=seeds[2:])
    frames, alone_frames = together["labels"].shape[1], alone["labels"].shape[1]
    assert frames > alone_frames
    torch.testing.assert_close(together["labels"][2:, :alone_frames], alone["labels"])
    negatives = together["sampled_negative_indices"][2:, :alone_frames]
    rebased = (negatives // frames - 2) * alone_frames + negatives % frames
    torch.testing.assert_close(rebased, alone["sampled_negative_indices"])
    other_seeds = model.sample_pretraining_inputs(mask, *mask.shape, seed=[seed + 100 for seed in seeds])
    assert not torch.equal(other_seeds["labels"], together["labels"])
    with pytest.raises(ValueError, match="one per utterance"):
        model.sample_pretraining_inputs(mask, *mask.shape, seed=seeds[:2])
