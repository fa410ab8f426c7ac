"""SOP / NSP pair builder and the ALBERT pretraining head: pairs from one document, half swapped, parity with
transformers' AlbertForPreTraining, num_proc invariance."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import AlbertConfig

from hf_ssl import SentenceOrderForPreTraining
from hf_ssl.data.sequences import SentencePairBuilder

CLS, SEP = 2, 3


def token(document: int, sentence: int, position: int) -> int:
    """A token id that encodes where it comes from: document, sentence (< 100) and position (< 100)."""
    return 10_000 + document * 10_000 + sentence * 100 + position


def where(token_id: int) -> tuple[int, int]:
    value = token_id - 10_000
    return value // 10_000, (value % 10_000) // 100


def synthetic_documents(count=100, seed=0) -> datasets.Dataset:
    """Documents of 3-12 sentences of 4-20 tokens; every third token continues the previous word."""
    generator = torch.Generator().manual_seed(seed)
    ids, continues = [], []
    for document in range(count):
        sentences = int(torch.randint(3, 13, (1,), generator=generator))
        lengths = torch.randint(4, 21, (sentences,), generator=generator).tolist()
        ids.append([[token(document, s, p) for p in range(n)] for s, n in enumerate(lengths)])
        continues.append([[int(p % 3 == 2) for p in range(n)] for n in lengths])
    return datasets.Dataset.from_dict({"sentence_input_ids": ids, "sentence_continues_word": continues})


def build(documents, pair_task, max_seq_length=48, num_proc=None, seed=0, batch_size=1000, short=0.1):
    builder = SentencePairBuilder(CLS, SEP, max_seq_length=max_seq_length, pair_task=pair_task, seed=seed,
                                  short_seq_probability=short)
    return documents.map(builder, batched=True, with_indices=True, remove_columns=documents.column_names,
                         num_proc=num_proc, batch_size=batch_size)


def segments(example):
    ids = example["input_ids"]
    assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
    middle = ids.index(SEP)
    first, second = ids[1:middle], ids[middle + 1:-1]
    assert example["token_type_ids"] == [0] * (len(first) + 2) + [1] * (len(second) + 1)
    return first, second


def test_sop_pairs_are_consecutive_segments_of_one_document_half_swapped():
    pairs = build(synthetic_documents(), "sop")
    assert len(pairs) > 100
    labels = []
    for example in pairs:
        first, second = segments(example)
        assert first and second and len(example["input_ids"]) <= 48
        documents = {where(t)[0] for t in first + second}
        assert len(documents) == 1, "both segments must come from the same document"
        # Position in the document, (sentence, position): ordered within each segment, A before B unless swapped.
        def order(t):
            return where(t)[1], (t - 10_000) % 100

        assert [order(t) for t in first] == sorted(order(t) for t in first)
        assert [order(t) for t in second] == sorted(order(t) for t in second)
        if example["pair_label"] == 0:
            assert order(first[-1]) < order(second[0])
        else:
            assert order(second[-1]) < order(first[0])
        labels.append(example["pair_label"])
    swapped = sum(labels) / len(labels)
    assert 0.4 < swapped < 0.6, swapped


def test_nsp_negatives_come_from_another_document():
    pairs = build(synthetic_documents(), "nsp")
    labels = []
    for example in pairs:
        first, second = segments(example)
        same = {where(t)[0] for t in first} == {where(t)[0] for t in second}
        assert same == (example["pair_label"] == 0)
        labels.append(example["pair_label"])
    assert 0.35 < sum(labels) / len(labels) < 0.65


def test_single_segments_pack_consecutive_sentences_to_the_maximum_length():
    documents = synthetic_documents()
    sequences = build(documents, None, max_seq_length=64, short=0.0)
    lengths = [len(ids) for ids in sequences["input_ids"]]
    # Only the last sequence of each document may be shorter than the maximum.
    assert max(lengths) == 64 and sum(length < 64 for length in lengths) <= len(documents)
    for example in sequences:
        body = example["input_ids"][1:-1]
        assert len({where(t)[0] for t in body}) == 1
        assert example["continues_word"][0] == 0 and len(example["continues_word"]) == len(example["input_ids"])


def test_segment_starts_are_word_starts_and_flags_follow_tokens():
    pairs = build(synthetic_documents(), "sop")
    for example in pairs:
        first, second = segments(example)
        flags = example["continues_word"]
        assert flags[1] == 0 and flags[len(first) + 2] == 0
        # Each flag still describes its token (every third token of a sentence continues a word), except at a
        # truncated segment start, which counts as a word start.
        for offset, tokens in ((1, first), (len(first) + 2, second)):
            for i, t in enumerate(tokens[1:], start=1):
                assert flags[offset + i] == int(((t - 10_000) % 100) % 3 == 2)


def test_output_does_not_depend_on_num_proc_or_batch_size():
    documents = synthetic_documents(count=24)
    reference = build(documents, "sop", batch_size=1000)
    assert build(documents, "sop", batch_size=5).to_dict() == reference.to_dict()
    assert build(documents, "sop", num_proc=2).to_dict() == reference.to_dict()


def test_a_single_long_sentence_is_cut_at_a_word_boundary_for_sop():
    ids = [[token(0, 0, p) for p in range(30)]]
    continues = [[int(p % 3 == 2) for p in range(30)]]
    documents = datasets.Dataset.from_dict({"sentence_input_ids": [ids] * 8, "sentence_continues_word": [continues] * 8})
    pairs = build(documents, "sop", max_seq_length=64)
    assert len(pairs) == 8
    for example in pairs:
        first, second = segments(example)
        cut = second[0] if example["pair_label"] == 0 else first[0]
        assert ((cut - 10_000) % 100) % 3 != 2, "the cut must not split a word"
        assert len(first) + len(second) == 30


def test_builder_refuses_bad_input():
    with pytest.raises(ValueError, match="pair_task"):
        SentencePairBuilder(CLS, SEP, pair_task="order")
    with pytest.raises(ValueError, match="tokenize the documents first"):
        SentencePairBuilder(CLS, SEP, pair_task="sop")({"text": ["a document"]}, [0])
    with pytest.raises(ValueError, match="CLS"):
        SentencePairBuilder(None, SEP)


def tiny_albert_config(vocab_size=60) -> AlbertConfig:
    return AlbertConfig(vocab_size=vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0)


def test_loss_matches_transformers_albert_for_pretraining():
    from transformers import AlbertForPreTraining

    torch.manual_seed(0)
    model = SentenceOrderForPreTraining.from_encoder_config(tiny_albert_config()).eval()
    stock = AlbertForPreTraining(tiny_albert_config()).eval()
    stock.load_state_dict(model.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 60, (4, 14), generator=generator)
    token_type_ids = (torch.arange(14) >= 7).long().expand(4, -1)
    labels = torch.where(torch.rand(4, 14, generator=generator) < 0.25, input_ids, -100)
    labels[:, 2] = input_ids[:, 2]
    order = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        ours = model(input_ids=input_ids, token_type_ids=token_type_ids, labels=labels, pair_label=order)
        reference = stock(input_ids=input_ids, token_type_ids=token_type_ids, labels=labels, sentence_order_label=order)
    torch.testing.assert_close(ours.loss, reference.loss)
    torch.testing.assert_close(ours.pair_logits, reference.sop_logits)
    torch.testing.assert_close(ours.mlm_logits, reference.prediction_logits[labels != -100])


def test_pair_loss_normalisation_needs_the_global_pair_count_only_in_training():
    model = SentenceOrderForPreTraining.from_encoder_config(tiny_albert_config())
    input_ids = torch.randint(5, 60, (4, 10), generator=torch.Generator().manual_seed(0))
    labels = torch.where(torch.arange(10) == 3, input_ids, -100)
    order = torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match="pairs_per_optimizer_step"):
        model.train()(input_ids=input_ids, labels=labels, pair_label=order, num_items_in_batch=torch.tensor(8))
    model.pairs_per_optimizer_step = 8  # this batch is half of the global batch: its pair sum is divided by 8
    half = model.eval()(input_ids=input_ids, labels=labels, pair_label=order, num_items_in_batch=torch.tensor(4))
    mean = model(input_ids=input_ids, labels=labels, pair_label=order)
    torch.testing.assert_close(half.loss, mean.loss)  # evaluation: this batch's own counts
    trained = model.train()(input_ids=input_ids, labels=labels, pair_label=order, num_items_in_batch=torch.tensor(4))
    torch.testing.assert_close(trained.pair_loss / 2, (trained.loss - trained.mlm_loss))


def test_two_processes_give_the_sop_and_nsp_update_of_one_process_with_the_global_batch(tmp_path):
    """One SGD step of SOP (ALBERT) and NSP (BERT) on 2 gloo processes with 16 sequences each equals 1 process with
    32: the masked-token and pair losses are normalised by the global counts. The halves hold different numbers of
    masked tokens, and the Trainer scales a loss that takes ``num_items_in_batch`` by the process count, so dividing
    the pair sum by this process's pairs gives another update (checked: the test then fails)."""
    from mlm_distributed_worker import GLOBAL_BATCH, sgd_step, tiny_model
    from test_masked_lm import run_two_process_worker

    double = run_two_process_worker(tmp_path, pair_tasks=("sop", "nsp"))
    assert double["world_size"] == 2
    for pair_task in ("sop", "nsp"):
        single = sgd_step(str(tmp_path / f"single-{pair_task}"), GLOBAL_BATCH, pair_task=pair_task).model
        torch.manual_seed(0)
        initial = tiny_model(pair_task).state_dict()
        pair_head = [name for name in initial if "seq_relationship" in name or "sop_classifier" in name]
        assert pair_head, f"{pair_task}: no pair-head parameters in {list(initial)[:5]}..."
        for name in pair_head:  # the pair loss reached the update
            assert not torch.allclose(single.state_dict()[name], initial[name]), name
        for name, value in single.state_dict().items():
            torch.testing.assert_close(double[f"state_{pair_task}"][name], value, rtol=1e-4, atol=1e-6,
                                       msg=f"{pair_task}: {name}")
