"""Gradient caching (GradCache): SimCLR, Sentence-BERT and CLIP-style give the big batch's loss and gradients when
the batch is embedded two rows at a time, dropout included (random state replayed), through the mechanism and
through SSLTrainer, on one process and with negatives gathered from two."""

import multiprocessing
import os
import threading
from pathlib import Path

import pytest
import torch
import tqdm
from accelerate.state import AcceleratorState
from conftest import tiny_dino, tiny_vit_config
from datasets import Dataset
from test_distributed import free_port
from test_sentence_bert import tiny_bert_config, tiny_text_batch
from transformers import ResNetConfig, default_data_collator

from hf_ssl import (
    CLIPStyleForPreTraining,
    SentenceBertForPreTraining,
    SimCLRForPreTraining,
)
from hf_ssl.training.arguments import SSLTrainingArguments
from hf_ssl.training.grad_cache import gradient_cached_backward, split_rows
from hf_ssl.training.trainer import SSLTrainer

BATCH, CHUNK = 8, 2
FORK = multiprocessing.get_context("fork")


def build(method: str, dropout: float = 0.0):
    vision = tiny_vit_config()
    vision.hidden_dropout_prob = vision.attention_probs_dropout_prob = dropout
    text = tiny_bert_config()
    text.hidden_dropout_prob = text.attention_probs_dropout_prob = dropout
    if method == "simclr":  # ViT encoder, Linear-BN-ReLU-Linear head (BatchNorm on the whole batch)
        return SimCLRForPreTraining.from_encoder_config(vision, projection_hidden_dim=32, projection_dim=16)
    if method == "sbert":  # MNRL with a hard-negative column, both directions
        return SentenceBertForPreTraining.from_encoder_config(text, symmetric=True)
    vision.initializer_range = text.initializer_range = 0.5  # outputs that depend on the input
    return CLIPStyleForPreTraining.from_vision_text(vision, text, projection_dim=16)


def batch_for(method: str, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if method == "simclr":
        return {"global_crops": torch.randn(BATCH, 2, 3, 16, 16, generator=generator)}
    if method == "sbert":
        return {f"{column}_{key}": value for column in ("anchor", "positive", "negative")
                for key, value in tiny_text_batch(BATCH, generator).items()}
    batch = {"pixel_values": torch.randn(BATCH, 3, 16, 16, generator=generator), **tiny_text_batch(BATCH, generator)}
    batch["input_ids"][1] = batch["input_ids"][0]  # a repeated caption: multi-positive targets across chunks
    batch["attention_mask"][1] = batch["attention_mask"][0]
    return batch


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same(loss, grads, expected_loss, expected_grads):
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and len(grads) > 10
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["simclr", "sbert", "clip"])
def test_chunked_loss_and_gradients_equal_the_big_batch(method):
    torch.manual_seed(0)
    model = build(method).train()
    batch = batch_for(method)
    expected = model(**batch)
    expected.loss.backward()
    expected_grads = gradients(model)
    output = gradient_cached_backward(model, batch, CHUNK)
    assert_same(output.loss, gradients(model), expected.loss.detach(), expected_grads)
    assert not output.loss.requires_grad
    diagnostics = [key for key in output if key != "loss" and output[key].dim() == 0]
    for key in diagnostics:  # the diagnostics the trainer logs are the big batch's too
        torch.testing.assert_close(output[key], expected[key].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["simclr", "sbert", "clip"])
def test_dropout_is_replayed_so_gradients_are_those_of_the_reported_loss(method):
    """With dropout on, the re-embedding must draw the masks of the first pass: the reference embeds the same chunks
    in the same order with a graph and back-propagates the same loss."""
    torch.manual_seed(0)
    model = build(method, dropout=0.2).train()
    batch = batch_for(method)
    chunk = split_rows(batch, CHUNK)[0]
    first, second = model.embed(**chunk), model.embed(**chunk)
    assert any(not torch.equal(first[key], second[key]) for key in first)  # dropout is on: replay matters

    torch.manual_seed(1)
    pieces = [model.embed(**chunk) for chunk in split_rows(batch, CHUNK)]
    embeddings = {key: torch.cat([piece[key] for piece in pieces]) for key in pieces[0]}
    expected = model.loss_from_embeddings(embeddings, **batch).loss
    expected.backward()
    expected_grads = gradients(model)
    torch.manual_seed(1)
    output = gradient_cached_backward(model, batch, CHUNK)
    assert_same(output.loss, gradients(model), expected.detach(), expected_grads)
    # The random state after the step is the one the plain chunked forward leaves (the replay is forked off).
    after_cached = torch.rand(3)
    torch.manual_seed(1)
    with torch.no_grad():
        [model.embed(**chunk) for chunk in split_rows(batch, CHUNK)]
    torch.testing.assert_close(after_cached, torch.rand(3))


# ------------------------------------------------------------------------------------------------------------------
# Through SSLTrainer
def pair_dataset(rows: int = 32) -> Dataset:
    generator = torch.Generator().manual_seed(5)
    columns = {}
    for column in ("anchor", "positive"):
        ids = torch.randint(1000, 2000, (rows, 6), generator=generator)
        ids[:, 0] = 101
        columns[f"{column}_input_ids"] = ids.tolist()
        columns[f"{column}_attention_mask"] = torch.ones_like(ids).tolist()
    return Dataset.from_dict(columns)


def sbert_trainer_run(output_dir, per_device_batch: int, chunk_size=None, accumulation: int = 1, **arguments):
    """Two SGD steps of Sentence-BERT (MNRL) through SSLTrainer; returns the final state dict."""
    torch.manual_seed(0)
    model = SentenceBertForPreTraining.from_encoder_config(tiny_bert_config())
    args = SSLTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=per_device_batch, max_steps=2, learning_rate=0.5,
        optim="sgd", use_cpu=True, report_to="none", save_strategy="no", seed=3, disable_tqdm=True,
        logging_steps=1, gradient_accumulation_steps=accumulation, gradient_cache_chunk_size=chunk_size, **arguments,
    )
    trainer = SSLTrainer(model=model, args=args, train_dataset=pair_dataset(), data_collator=default_data_collator)
    trainer.train()
    return {key: value.clone() for key, value in trainer.model.state_dict().items()}, trainer.state.log_history


@pytest.mark.parametrize("accumulation", [1, 2])
def test_trainer_steps_with_gradient_cache_give_the_same_weights(tmp_path, accumulation):
    torch.manual_seed(0)
    initial = SentenceBertForPreTraining.from_encoder_config(tiny_bert_config()).state_dict()
    plain, plain_log = sbert_trainer_run(tmp_path / "plain", BATCH, accumulation=accumulation)
    cached, cached_log = sbert_trainer_run(tmp_path / "cached", BATCH, CHUNK, accumulation=accumulation)
    moved = [key for key, value in plain.items() if value.is_floating_point() and not torch.equal(value, initial[key])]
    assert moved  # the steps trained
    for key, value in plain.items():
        torch.testing.assert_close(cached[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for plain_entry, cached_entry in zip(plain_log, cached_log):
        if "loss" in plain_entry:
            assert cached_entry["loss"] == pytest.approx(plain_entry["loss"], rel=1e-5)
            assert cached_entry["retrieval_accuracy"] == pytest.approx(plain_entry["retrieval_accuracy"])


def _trainer_process(rank: int, port: int, output_dir: Path, out_file: Path) -> None:
    """One of two gloo processes forked from the test (every module already imported: no start-up cost) running
    :func:`sbert_trainer_run` on its half of the global batch with gradient caching."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tqdm.tqdm.set_lock(threading.RLock())  # not the parent's lock, shared through the fork
    AcceleratorState._reset_state(reset_partial_state=True)  # the parent's one-process state came with the fork
    state, _ = sbert_trainer_run(output_dir, BATCH // 2, CHUNK)
    assert torch.distributed.get_world_size() == 2
    if rank == 0:
        torch.save(state, out_file)
    torch.distributed.destroy_process_group()


def test_two_processes_with_gathered_negatives_match_one_process(tmp_path):
    """Two processes of 4 rows each, chunks of 2, negatives gathered across them (DDP's hooks bypassed, gradients
    averaged at the optimizer step): the weights of one process with the 8-row batch and no gradient caching."""
    expected, _ = sbert_trainer_run(tmp_path / "one", BATCH)
    port, out_file = free_port(), tmp_path / "two.pt"
    processes = [FORK.Process(target=_trainer_process, args=(rank, port, tmp_path / "two", out_file))
                 for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        if process.exitcode is None:
            process.kill()
        assert process.exitcode == 0, "a gradient-cached training process failed or hung (its traceback is above)"
    state = torch.load(out_file)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=1e-4, atol=1e-6, msg=key)


# ------------------------------------------------------------------------------------------------------------------
# Refusals
def test_unsupported_setups_fail_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="gradient_cache_chunk_size must be a positive number"):
        SSLTrainingArguments(output_dir=str(tmp_path), gradient_cache_chunk_size=0, report_to="none")
    args = SSLTrainingArguments(output_dir=str(tmp_path), gradient_cache_chunk_size=2, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="DINOForPreTraining does not. Unset gradient_cache_chunk_size"):
        SSLTrainer(model=tiny_dino(), args=args, train_dataset=pair_dataset())
    with_rotation = SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), projection_hidden_dim=16,
                                                             projection_dim=8, auxiliary_rotation_weight=0.5)
    with pytest.raises(ValueError, match="cannot add the auxiliary rotation loss"):
        SSLTrainer(model=with_rotation, args=args, train_dataset=pair_dataset())
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic", image_size=16)
    model = SimCLRForPreTraining.from_encoder_config(resnet, projection_hidden_dim=16, projection_dim=8).train()
    with pytest.raises(ValueError, match="BatchNorm layer 'resnet.*' runs in SimCLRForPreTraining.embed"):
        gradient_cached_backward(model, batch_for("simclr"), CHUNK)
    with pytest.raises(ValueError, match="first dimension, which must be the batch"):
        split_rows({"a": torch.zeros(4, 2), "b": torch.zeros(3)}, 2)
