"""Streamed training data: global positions, the split over processes x dataloader workers (each example once per
epoch), views seeded by position, exact resume of a streamed pretraining run and of a streamed semi-supervised run,
and the errors that name the fix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import TinyImageViews, local_dataset, tiny_classifier, tiny_vit_config
from distributed_worker_streaming import SHARD_SIZES, number_stream
from PIL import Image
from test_distributed import run_worker

from hf_ssl import SimCLRForPreTraining
from hf_ssl.data.audio import load_audio_stream
from hf_ssl.data.images import STREAM_SHARDS, load_image_stream
from hf_ssl.data.pairs import as_stream, caption_stream_with_templates, load_pairs, pairs_for_objective
from hf_ssl.data.streaming import (
    StreamBatches,
    StreamedDataset,
    global_position,
    shard_and_offset,
)
from hf_ssl.jobs.base import JOB_REGISTRY
from hf_ssl.jobs.runner import parse_arguments
from hf_ssl.semi import FixMatch
from hf_ssl.training import SemiSupervisedTrainer, SSLTrainer, SSLTrainingArguments
from hf_ssl.training.errors import UsageError
from hf_ssl.views import MultiCropConfig, MultiCropTransform, apply_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FSDD = "silky1708/Free-Spoken-Digit-Dataset"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)
WORKER = Path(__file__).with_name("distributed_worker_streaming.py")


def images(shards, size=16):
    for shard in shards:
        for offset in range(12):
            pixels = np.random.default_rng([shard, offset]).integers(0, 256, (size, size, 3), dtype=np.uint8)
            yield {"image": Image.fromarray(pixels), "label": (shard + offset) % 10}


def image_stream(shards: int = 4) -> datasets.IterableDataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    return datasets.IterableDataset.from_generator(images, gen_kwargs={"shards": list(range(shards))},
                                                   features=features)


def one_epoch(stream: StreamedDataset, num_slots: int) -> dict[int, list[int]]:
    """Each slot's global positions in its epoch 0."""
    read = {}
    for slot in range(num_slots):
        read[slot] = []
        for example, _ in stream.slot_examples(slot, num_slots):
            if example.epoch > 0:
                break
            assert example.row["x"] == (lambda s, o: s * 100 + o)(*shard_and_offset(example.position))
            read[slot].append(example.position)
    return read


@pytest.mark.parametrize("num_slots", [1, 3, 4, 11])  # 11 > 8 shards: every slot reads all, keeps every 11th
def test_each_example_is_read_once_per_epoch_whatever_the_slots(num_slots):
    everything = sorted(global_position(shard, offset) for shard, size in enumerate(SHARD_SIZES)
                        for offset in range(size))
    stream = StreamedDataset(number_stream(), shuffle_buffer_size=3, seed=1)
    read = one_epoch(stream, num_slots)
    assert sorted(position for positions in read.values() for position in positions) == everything
    if num_slots <= len(SHARD_SIZES):  # shards are split: a slot's examples come from its own shards
        shards = [{shard_and_offset(position)[0] for position in positions} for positions in read.values()]
        assert all(not (first & second) for i, first in enumerate(shards) for second in shards[i + 1:])


def test_epochs_reshuffle_and_a_slot_resumes_where_it_stopped():
    stream = StreamedDataset(number_stream(), shuffle_buffer_size=3, seed=1)
    examples = stream.slot_examples(1, 2)
    read = [next(examples) for _ in range(40)]
    first = [example.position for example, _ in read if example.epoch == 0]
    share = stream.shard_order(0)[1::2]  # slot 1 of 2 reads shards 1, 3, ... of epoch 0's seeded shard order
    assert sorted(first) == sorted(global_position(shard, offset) for shard in share
                                   for offset in range(SHARD_SIZES[shard]))
    assert first != sorted(first)  # shuffled within shards (buffer) and across them (order)
    assert stream.shard_order(1) != stream.shard_order(0)
    assert read[-1][0].epoch >= 1  # the slot loops: after its share it starts its next epoch at once
    # Resuming from the state after example 13 gives examples 14, 15, ... exactly (the shard prefix is re-read).
    resumed = stream.slot_examples(1, 2, read[13][1])
    assert [next(resumed)[0] for _ in range(26)] == [example for example, _ in read[14:]]


def test_streamed_views_are_seeded_by_global_position_not_by_the_reader():
    config = MultiCropConfig(global_crop_size=8, local_crop_size=8, num_local_crops=0)
    views = apply_views(image_stream(), MultiCropTransform(config, seed=3))
    assert isinstance(views, StreamedDataset) and views.seed == 0

    def crops(num_slots):
        found = {}
        for slot in range(num_slots):
            for example, _ in views.slot_examples(slot, num_slots):
                if example.epoch > 0 or len(found) == 48:
                    break
                found[example.position] = views.transformed(example)["global_crops"]
        return found

    single, four = crops(1), crops(4)
    assert single.keys() == four.keys() and len(single) == 48
    for position, crop in single.items():
        torch.testing.assert_close(four[position], crop)
    assert not torch.equal(single[global_position(0, 0)], single[global_position(0, 1)])


def test_two_processes_with_two_workers_see_each_example_once_per_epoch(tmp_path):
    """2 gloo processes x 2 dataloader workers, through the loader SSLTrainer builds for a stream: every example of
    the 8 unequal shards exactly once in the first epoch of the slot that reads it, none twice, none left out."""
    result = run_worker(tmp_path, "split", 2, worker=WORKER)
    assert result["world_size"] == 2
    seen = Counter(result["result"]["first_epoch"])
    assert sorted(seen) == sorted(shard * 100 + offset for shard, size in enumerate(SHARD_SIZES)
                                  for offset in range(size))
    assert set(seen.values()) == {1}
    assert result["result"]["slots"] == [0, 1, 2, 3]  # every process's both workers read


# --------------------------------------------------------------------------------------------------------------------
# Trainers on streams


def pretraining_args(output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=6, save_steps=3,
                    learning_rate=1e-3, logging_steps=1, use_cpu=True, report_to="none", seed=4, disable_tqdm=True,
                    dataloader_num_workers=2)
    settings.update(overrides)
    return SSLTrainingArguments(**settings)


def simclr_trainer(output_dir, **overrides) -> SSLTrainer:
    torch.manual_seed(0)
    model = SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), projection_hidden_dim=16, projection_dim=8)
    config = MultiCropConfig(global_crop_size=16, local_crop_size=16, num_local_crops=0)
    stream = apply_views(image_stream(), MultiCropTransform(config))
    return SSLTrainer(model=model, args=pretraining_args(output_dir, **overrides), train_dataset=stream)


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_a_resumed_streamed_pretraining_run_equals_the_uninterrupted_one(tmp_path):
    """SimCLR on a 4-shard stream, 2 dataloader workers: stopped after step 3 (an odd batch count, so the resumed
    loader must start with the second worker's slot), resumed in a fresh trainer: the same losses and weights."""
    full = simclr_trainer(tmp_path / "full")
    full.train()
    resumed = simclr_trainer(tmp_path / "full")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert losses(resumed)[-3:] == losses(full)[-3:]
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    # Without the saved stream position the resume would replay the first batches: the position is in the checkpoint.
    assert (tmp_path / "full" / "checkpoint-3" / "stream_state_0.json").is_file()


def semi_trainer(output_dir, labelled, method=None, **overrides):
    args = pretraining_args(output_dir, **{"per_device_train_batch_size": 2, "dataloader_num_workers": 0,
                                           **overrides})
    return SemiSupervisedTrainer(
        model=tiny_classifier(), args=args, method=method or FixMatch(unlabelled_batch_ratio=2, threshold=0.5),
        train_dataset=labelled, unlabelled_dataset=image_stream(), views=TinyImageViews(),
    )


def test_a_resumed_streamed_fixmatch_run_equals_the_uninterrupted_one(tmp_path, embedded_images):
    """FixMatch with a streamed unlabelled set and a small map-style labelled set that cycles."""
    labelled = embedded_images["train"].select(range(10))
    full = semi_trainer(tmp_path / "full", labelled)
    full.train()
    resumed = semi_trainer(tmp_path / "full", labelled)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    for name, value in full.method.state_dict().items():
        torch.testing.assert_close(resumed.method.state_dict()[name], value, msg=name)
    batch = next(iter(full.get_train_dataloader()))
    assert batch["labelled"]["labels"].shape == (2,) and batch["unlabelled"]["views"][0]["pixel_values"].shape[0] == 4


def test_a_stream_needs_max_steps_and_a_memoryless_method(tmp_path, embedded_images):
    with pytest.raises(UsageError, match="--max_steps"):
        simclr_trainer(tmp_path / "a", max_steps=-1)
    with pytest.raises(UsageError, match="without --streaming"):
        semi_trainer(tmp_path / "b", embedded_images["train"].select(range(10)),
                     method=FixMatch(unlabelled_batch_ratio=2, classwise_thresholds=True))


def test_resuming_with_other_workers_is_refused():
    batches = StreamBatches(StreamedDataset(number_stream()), 2, lambda examples, index: {},
                            resume={"num_processes": 1, "num_workers": 3, "batches": 1, "slots": {}})
    with pytest.raises(ValueError, match="same --dataloader_num_workers"):
        next(iter(batches))


# --------------------------------------------------------------------------------------------------------------------
# Streamed sources and the jobs' --streaming


def write_tar_shards(folder: Path, shards: int = 3, per_shard: int = 4) -> None:
    """webdataset shards ``train-000N.tar``: ``KEY.png`` + ``KEY.cls`` per example."""
    import io
    import tarfile

    folder.mkdir()
    for shard in range(shards):
        with tarfile.open(folder / f"train-{shard:04d}.tar", "w") as tar:
            for index in range(per_shard):
                encoded = io.BytesIO()
                next(images([shard * 10 + index], size=8))["image"].save(encoded, format="PNG")
                for suffix, data in (("png", encoded.getvalue()), ("cls", str(index % 2).encode())):
                    member = tarfile.TarInfo(f"{shard:02d}{index:04d}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))


def test_image_streams_from_webdataset_tar_shards(tmp_path):
    write_tar_shards(tmp_path / "shards")
    tars = load_image_stream(str(tmp_path / "shards"), "train")
    assert tars.n_shards == 3 and tars.column_names == ["image", "label"]
    rows = list(tars)
    assert len(rows) == 12 and rows[0]["image"].size == (8, 8) and {row["label"] for row in rows} == {0, 1}
    with pytest.raises(ValueError, match="validation"):
        load_image_stream(str(tmp_path / "shards"), "validation")


def test_the_image_job_streams_its_training_split_and_probes_in_memory(tmp_path):
    local_dataset("uoft-cs/cifar10")
    *job_arguments, method, training = parse_arguments([
        "--method", "simclr", "--dataset", "uoft-cs/cifar10", "--streaming", "true", "--max_steps", "2",
        "--knn_max_train_examples", "30", "--max_eval_examples", "20", "--global_crop_size", "32",
        "--local_crop_size", "16", "--num_local_crops", "0", "--patch_size", "8", "--encoder_config_overrides",
        '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
        "--output_dir", str(tmp_path / "run"),
    ])
    job = JOB_REGISTRY["image"](tuple(job_arguments), method, training)
    parts = job.prepare()
    assert isinstance(parts.train_dataset, StreamedDataset) and parts.train_dataset.n_shards == STREAM_SHARDS
    assert len(job.train_raw) == 30 and len(job.eval_raw) == 20  # the probes' sets, taken into memory
    assert set(job.train_raw["label"]) == set(range(10))  # the zip copy streams the classes in turn from the start
    with pytest.raises(UsageError, match="--max_steps"):
        SSLTrainer(model=parts.model, args=pretraining_args(tmp_path / "x", max_steps=-1),
                   train_dataset=parts.train_dataset)


def test_the_text_job_streams_documents_into_masked_lm_sequences(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("train-a", "train-b", "train-c", "test"):
        paragraphs = [f"The {name} story number {index} begins here. It goes on for a while. Then it ends." for index
                      in range(6)]
        (corpus / f"{name}.txt").write_text("\n\n".join(paragraphs))
    flags = ["--method", "mlm", "--dataset", str(corpus), "--streaming", "true", "--encoder", "bert-tiny",
             "--tokenizer", "train", "--tokenizer_vocab_size", "120", "--max_seq_length", "32", "--max_steps", "2",
             "--output_dir", str(tmp_path / "run")]
    *job_arguments, method, training = parse_arguments([*flags, "--eval_split", "test"])
    parts = JOB_REGISTRY["text"](tuple(job_arguments), method, training).prepare()
    stream = parts.train_dataset
    assert isinstance(stream, StreamedDataset) and stream.n_shards == 3  # one shard per training file
    example, _ = next(stream.slot_examples(1, 3))
    sequence = stream.transformed(example)
    assert sequence["input_ids"][0] == parts.trainer_kwargs["processing_class"].cls_token_id and "view_seed" in sequence
    *job_arguments, method, training = parse_arguments(flags)
    with pytest.raises(UsageError, match="--eval_split"):
        JOB_REGISTRY["text"](tuple(job_arguments), method, training).prepare()


def test_a_local_audio_folder_streams_its_files_in_shards():
    local_dataset(FSDD)
    stream = load_audio_stream(FSDD, "test")
    assert stream.n_shards == 64 and {"audio", "digit", "speaker"} <= set(stream.column_names)
    assert next(iter(stream))["audio"].endswith(".wav")  # a path: the clip is read when a view crops it


def test_sentence_pairs_stream_from_a_file_and_are_shaped_as_they_are_read(tmp_path):
    import json

    file = tmp_path / "pairs.jsonl"
    rows = [{"a": f"sentence {index}", "b": f"paraphrase {index}", "score": index / 5} for index in range(6)]
    file.write_text("\n".join(json.dumps(row) for row in rows))
    pairs = load_pairs(str(file), "train", ["a", "b"], "score", streaming=True)
    assert isinstance(pairs, datasets.IterableDataset)
    kept = list(pairs_for_objective(pairs, "multiple_negatives", min_positive_score=0.6))
    assert [row["anchor"] for row in kept] == ["sentence 3", "sentence 4", "sentence 5"] and "label" not in kept[0]
    labelled = as_stream(datasets.Dataset.from_dict({"anchor": ["x"], "positive": ["y"], "label": [1]}))
    with pytest.raises(ValueError, match="drop --streaming"):
        pairs_for_objective(labelled, "multiple_negatives")


def test_class_name_captions_are_drawn_as_the_stream_is_read_and_repeat_exactly():
    names = [f"class{index}" for index in range(10)]
    captioned = caption_stream_with_templates(image_stream(2), ("a photo of a {}.", "a {} again."), seed=1,
                                              class_names=names)
    first, again = [[row["text"] for row in captioned.shard(num_shards=2, index=1)] for _ in range(2)]
    assert first == again and len(set(first)) > 2  # deterministic, and the templates vary
    rows = list(image_stream(2).shard(num_shards=2, index=1))
    assert all(names[row["label"]] in text for row, text in zip(rows, first))
