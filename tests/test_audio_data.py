"""Audio data and the audio job: FSDD loading and split, decoding, resampling, crops, padded batches, MFCCs, recipe
configs, and a 2-step end-to-end recipe run on a few real FSDD clips."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import local_dataset

from hf_ssl.data.audio import (
    decode_audio,
    load_audio_dataset,
    load_waveform,
    resample_audio,
)
from hf_ssl.data.collators import AudioCollator
from hf_ssl.jobs.audio import build_feature_extractor
from hf_ssl.views.audio import AudioCropTransform

FSDD = "silky1708/Free-Spoken-Digit-Dataset"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "recipes" / "configs").glob("*.yaml"))
AUDIO_CONFIGS = [path for path in CONFIGS if path.name.startswith(("cpc-", "wav2vec2-"))]
needs_fsdd = pytest.mark.needs_data(FSDD)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@needs_fsdd
def test_fsdd_official_split_and_labels_from_file_names():
    train = load_audio_dataset(FSDD, "train")
    test = load_audio_dataset(FSDD, "test")
    assert len(train) == 2700 and len(test) == 300
    assert set(test["recording_index"]) == set(range(5)) and min(train["recording_index"]) == 5
    assert train.features["speaker"].names == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert np.bincount(test["digit"]).tolist() == [30] * 10 and np.bincount(test["speaker"]).tolist() == [50] * 6
    row = test[0]
    name = Path(row["audio"]).name  # e.g. 0_george_0.wav
    digit, speaker, _ = name[:-4].split("_")
    assert row["digit"] == int(digit) and train.features["speaker"].names[row["speaker"]] == speaker
    with pytest.raises(ValueError, match="'train' and 'test'"):
        load_audio_dataset(FSDD, "validation")


@needs_fsdd
def test_audio_folder_layout_gives_labels_from_sub_folders(tmp_path):
    import shutil

    for label, digit in (("zero", 0), ("one", 1)):
        (tmp_path / "train" / label).mkdir(parents=True)
        for index in (10, 11):
            shutil.copy(local_dataset(FSDD) / "recordings" / f"{digit}_theo_{index}.wav", tmp_path / "train" / label)
    dataset = load_audio_dataset(str(tmp_path), "train")
    assert dataset.features["label"].names == ["one", "zero"] and sorted(dataset["label"]) == [0, 0, 1, 1]
    assert len(load_waveform(dataset[0]["audio"], 16000)) > 2000
    with pytest.raises(ValueError, match=r"splits \['train'\]"):
        load_audio_dataset(str(tmp_path), "test")


@needs_fsdd
def test_decoding_and_resampling_8_to_16_khz():
    path = local_dataset(FSDD) / "recordings" / "3_theo_7.wav"
    waveform, rate = decode_audio(str(path))
    assert rate == 8000 and waveform.dtype == np.float32 and 0.01 < np.abs(waveform).max() <= 1.0
    same, _ = decode_audio({"bytes": path.read_bytes(), "path": None})
    np.testing.assert_array_equal(same, waveform)
    upsampled = load_waveform(str(path), 16000)
    assert len(upsampled) == 2 * len(waveform)
    # a 1 kHz tone keeps its frequency and level through resample_poly
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000).astype(np.float32)
    resampled = resample_audio(tone, 8000, 16000)
    spectrum = np.abs(np.fft.rfft(resampled))
    assert np.argmax(spectrum) == 1000 and np.sqrt(np.mean(resampled[100:-100] ** 2)) == pytest.approx(0.7071, abs=0.01)
    with pytest.raises(ValueError, match="8000 Hz but the model expects 16000 Hz and resampling is off"):
        load_waveform(str(path), 16000, resample=False)


@needs_fsdd
def test_crops_are_reproducible_per_epoch_and_batches_are_padded_with_masks():
    from hf_ssl.views import apply_views

    clips = load_audio_dataset(FSDD, "train", max_examples=6, seed=0)
    transform = AudioCropTransform(16000, 0.25, seed=3)
    dataset = apply_views(clips, transform)
    first = [dataset[i]["input_values"] for i in range(6)]
    assert all(len(x) <= 4000 for x in first) and any(len(x) == 4000 for x in first)
    np.testing.assert_array_equal(dataset[2]["input_values"], first[2])  # same epoch, same crop
    transform.set_epoch(1)
    long_clip = next(i for i, x in enumerate(first) if len(x) == 4000)
    assert not np.array_equal(dataset[long_clip]["input_values"], first[long_clip])  # new epoch, new crop

    collator = AudioCollator(build_feature_extractor(16000))
    examples = [{"input_values": np.ones(300, np.float32) * 3}, {"input_values": np.arange(500, dtype=np.float32)}]
    batch = collator(examples)
    assert batch["input_values"].shape == (2, 500) and batch["attention_mask"].sum(-1).tolist() == [300, 500]
    assert (batch["input_values"][0, 300:] == 0).all()
    second = batch["input_values"][1]
    assert abs(float(second.mean())) < 1e-4 and float(second.std()) == pytest.approx(1.0, abs=1e-2)  # normalised
    with pytest.raises(ValueError, match="AudioCropTransform"):
        collator([{"audio": "x.wav"}])


@needs_fsdd
def test_mfcc_baseline_has_a_coefficient_profile_per_clip():
    from hf_ssl.evaluation.audio_probe import mfcc_features

    recordings = local_dataset(FSDD) / "recordings"
    waveforms = [load_waveform(str(recordings / name), 16000) for name in ("0_jackson_0.wav", "9_lucas_3.wav")]
    features = mfcc_features(waveforms, 16000, max_frequency=4000)
    assert features.shape == (2, 40) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    # the first coefficient is the (scaled) log energy: louder audio, larger c0, other coefficients unchanged
    louder = mfcc_features([waveforms[0] * 10], 16000, max_frequency=4000)
    assert louder[0, 0] > features[0, 0]
    torch.testing.assert_close(louder[0, 1:20], features[0, 1:20], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("path", AUDIO_CONFIGS, ids=[path.name for path in AUDIO_CONFIGS])
def test_audio_recipe_configs_parse_and_build(path):
    from hf_ssl.jobs.arguments import ModelArguments
    from hf_ssl.jobs.audio import AudioDataArguments, build_audio_model
    from hf_ssl.jobs.runner import parse_arguments

    encoder, data, method, _ = parse_arguments([str(path), "--output_dir", "x"])
    assert isinstance(encoder, ModelArguments) and isinstance(data, AudioDataArguments)
    assert type(method).method == path.name.split("-")[0] == encoder.method
    model = build_audio_model(encoder, method)
    assert model.method_config == method and model.config.model_type == "wav2vec2"


def test_audio_configs_exist_for_both_methods():
    names = {path.name.split("-")[0] for path in AUDIO_CONFIGS}
    assert names == {"cpc", "wav2vec2"}


@needs_fsdd
@pytest.mark.parametrize(
    "method, overrides",
    [
        ("cpc", '{"conv_dim": [16, 16, 16, 16, 16], "hidden_size": 16, "num_conv_pos_embedding_groups": 2}'),
        (
            "wav2vec2",
            '{"conv_dim": [16, 16, 16, 16, 16, 16, 16], "hidden_size": 16, "num_hidden_layers": 1, '
            '"num_conv_pos_embedding_groups": 2, "intermediate_size": 32, "mask_time_length": 2}',
        ),
    ],
)
def test_two_step_recipe_run_on_fsdd_clips(tmp_path, method, overrides):
    from transformers import AutoFeatureExtractor

    from hf_ssl.jobs.runner import run

    out = tmp_path / method
    config = next(path for path in AUDIO_CONFIGS if path.name.startswith(method + "-"))
    probes = run(
        [
            str(config),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--max_train_examples",
            "24",
            "--max_eval_examples",
            "12",
            "--crop_seconds",
            "0.3",
            "--save_steps",
            "2",
            "--encoder_config_overrides",
            overrides,
            "--disable_tqdm",
            "true",
            "--warmup_steps",
            "0",
            *(["--context_dim", "16", "--num_negatives", "4"] if method == "cpc" else []),
        ]
    )
    expected_rows = {"pretrained", "random_init", "mfcc"} | (
        {"pretrained_context", "random_init_context"} if method == "cpc" else set()
    )
    assert set(probes) == expected_rows
    assert set(probes["mfcc"]) == {"linear_probe_digit", "linear_probe_speaker"}
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["pretraining_steps"] == 2
    assert {r["task_type"] for r in saved["eval_results"]} == {"audio-classification"}
    assert any("digit linear probe" in r["metric_name"] for r in saved["eval_results"])
    assert json.loads((out / "config.json").read_text())["ssl_config"]["method"] == method
    assert AutoFeatureExtractor.from_pretrained(out).sampling_rate == 16000
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["job"] == "audio" and record["data"]["resample"] is True
