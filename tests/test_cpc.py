"""CPC: InfoNCE against a naive loop, negative sampling, padding, round trips, vanilla loading, resume, bad input."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BLOCK_HF_SSL

from hf_ssl import AutoSSLModel, CPCForPreTraining
from hf_ssl.losses.cpc import CPCInfoNCELoss, sample_negative_frames
from hf_ssl.modules.audio_encoder import audio_encoder_config, minimum_samples

FSDD = "silky1708/Free-Spoken-Digit-Dataset"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cpc(**overrides):
    """Conv strides 5, 4, 2 (40 samples per frame), 16 channels, z of 16, GRU of 16."""
    config = audio_encoder_config(
        "cpc-tiny",
        {
            "conv_dim": [16, 16, 16],
            "conv_stride": [5, 4, 2],
            "conv_kernel": [10, 8, 4],
            "hidden_size": 16,
            "num_conv_pos_embedding_groups": 2,
        },
    )
    settings = dict(context_dim=16, prediction_steps=3, num_negatives=5)
    settings.update(overrides)
    return CPCForPreTraining.from_encoder_config(config, **settings)


def padded_batch(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    samples = max(lengths)
    values = torch.randn(len(lengths), samples, generator=generator)
    mask = torch.zeros(len(lengths), samples, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        values[row, length:] = 0
    return values, mask


# ----------------------------------------------------------------------------------------------------------------------
# Loss and sampling
def naive_infonce(predictions, targets, frame_mask, negative_indices):
    """CPC Eq. 4 written out one prediction at a time."""
    batch, frames, steps, _ = predictions.shape
    flat = targets.reshape(batch * frames, -1)
    losses, correct = [], []
    for b in range(batch):
        for t in range(frames):
            for k in range(1, steps + 1):
                if t + k >= frames or not (frame_mask[b, t] and frame_mask[b, t + k]):
                    continue
                prediction = predictions[b, t, k - 1]
                positive_index = b * frames + t + k
                scores = [prediction @ flat[positive_index]]
                scores += [prediction @ flat[n] for n in negative_indices[b, t].tolist() if n != positive_index]
                scores = torch.stack(scores)
                losses.append(-torch.log_softmax(scores, dim=0)[0])
                correct.append(float(scores.argmax() == 0))
    return torch.stack(losses).mean(), sum(correct) / len(correct)


@pytest.mark.parametrize("mode", ["batch", "same_utterance", "other_utterances"])
def test_infonce_equals_the_naive_per_prediction_loop(mode):
    torch.manual_seed(0)
    lengths = [9, 6, 3]
    frame_mask = torch.arange(9)[None] < torch.tensor(lengths)[:, None]
    predictions = torch.randn(3, 9, 4, 5, requires_grad=True)
    targets = torch.randn(3, 9, 5, requires_grad=True)
    negatives = sample_negative_frames(frame_mask, 6, mode)
    # force some negatives onto the positive frames: they must be dropped, not counted as negatives
    negatives[0, 2, 0] = 3
    negatives[1, 0, 1] = 9 + 2
    loss, stats = CPCInfoNCELoss(6, mode)(predictions, targets, frame_mask, negatives)
    expected, accuracy = naive_infonce(predictions, targets, frame_mask, negatives)
    torch.testing.assert_close(loss, expected)
    assert stats["accuracy"].item() == pytest.approx(accuracy)
    grads = torch.autograd.grad(loss, (predictions, targets))
    expected_grads = torch.autograd.grad(expected, (predictions, targets))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad)


def test_negatives_never_come_from_padding_and_follow_the_sampling_mode():
    lengths = torch.tensor([10, 4, 2, 7])
    frame_mask = torch.arange(12)[None] < lengths[:, None]
    owner = torch.arange(4)[:, None].expand(4, 12).flatten()  # utterance of each flat frame index
    for mode in ("batch", "same_utterance", "other_utterances"):
        negatives = sample_negative_frames(frame_mask, 400, mode, generator=torch.Generator().manual_seed(1))
        assert negatives.shape == (4, 12, 400)
        assert frame_mask.flatten()[negatives].all(), mode  # never a padded frame
        same = owner[negatives] == torch.arange(4)[:, None, None]
        if mode == "same_utterance":
            assert same.all()
        elif mode == "other_utterances":
            assert not same.any()
        else:
            # the whole batch: own and other utterances, each in proportion to its valid frames (10 of 23 for b = 0)
            assert 0.35 < same[0].float().mean() < 0.52 and 0.03 < same[2].float().mean() < 0.15
        # every valid frame can be drawn
        if mode == "batch":
            assert set(negatives.flatten().tolist()) == set(frame_mask.flatten().nonzero().flatten().tolist())


def test_sampling_refuses_impossible_requests():
    frame_mask = torch.tensor([[True, True, False]])
    with pytest.raises(ValueError, match="at least 2 utterances"):
        sample_negative_frames(frame_mask, 3, "other_utterances")
    with pytest.raises(ValueError, match="at least 2 valid frames"):
        sample_negative_frames(torch.tensor([[True, False], [True, True]]), 3, "same_utterance")
    with pytest.raises(ValueError, match="negative_sampling"):
        sample_negative_frames(frame_mask, 3, "speaker")


# ----------------------------------------------------------------------------------------------------------------------
# Model
def test_padding_changes_nothing_for_the_real_frames():
    torch.manual_seed(0)
    model = tiny_cpc().eval()
    values, mask = padded_batch([800, 520])
    with torch.no_grad():
        together = model(values, attention_mask=mask, return_loss=False)
        alone = model(values[1:, :520], attention_mask=mask[1:, :520], return_loss=False)
    frames = int(alone.frame_mask.sum())
    assert together.frame_mask[1].sum() == frames and not together.frame_mask[1, frames:].any()
    torch.testing.assert_close(together.encoded[1, :frames], alone.encoded[0, :frames])
    torch.testing.assert_close(together.context[1, :frames], alone.context[0, :frames])


def test_training_lowers_the_loss_and_freezes_the_positional_convolution():
    torch.manual_seed(0)
    model = tiny_cpc()
    values, mask = padded_batch([1200, 1000, 900, 1200])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(values, attention_mask=mask).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
    positional = model.encoder.encoder.pos_conv_embed.conv
    assert positional.parametrizations.weight.original0.abs().sum() == 0 and positional.bias.abs().sum() == 0
    assert not any(p.requires_grad for p in positional.parameters())


def test_save_and_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_cpc(negative_sampling="same_utterance").eval()
    model.save_pretrained(tmp_path)
    values, mask = padded_batch([700, 600])
    for loaded in (CPCForPreTraining.from_pretrained(tmp_path), AutoSSLModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, CPCForPreTraining) and loaded.method_config == model.method_config
        loaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded.context_features(values, mask), model.context_features(values, mask))
            torch.manual_seed(3)
            expected = model(values, attention_mask=mask).loss
            torch.manual_seed(3)
            torch.testing.assert_close(loaded(values, attention_mask=mask).loss, expected)


VANILLA_AUDIO_SCRIPT = BLOCK_HF_SSL + textwrap.dedent(
    """
    import torch
    from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification
    from transformers.utils import logging
    logging.set_verbosity_error()
    folder, inputs_path, out_path = sys.argv[1:4]
    inputs = torch.load(inputs_path)
    encoder = AutoModel.from_pretrained(folder).eval()
    classifier = AutoModelForAudioClassification.from_pretrained(folder, num_labels=3).eval()
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    with torch.no_grad():
        hidden = encoder(inputs["input_values"], attention_mask=inputs["attention_mask"]).last_hidden_state
        logits = classifier(inputs["input_values"], attention_mask=inputs["attention_mask"]).logits
    torch.save({"hidden": hidden, "class": type(encoder).__name__, "logits_shape": tuple(logits.shape),
                "extractor": type(extractor).__name__, "sampling_rate": extractor.sampling_rate}, out_path)
    """
)


def run_vanilla(tmp_path, folder, values, mask) -> dict:
    torch.save({"input_values": values, "attention_mask": mask}, tmp_path / "inputs.pt")
    script = tmp_path / "vanilla.py"
    script.write_text(VANILLA_AUDIO_SCRIPT)
    subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return torch.load(tmp_path / "out.pt")


def test_vanilla_transformers_loads_the_trained_cpc_encoder_without_hf_ssl(tmp_path):
    from hf_ssl.jobs.audio import build_feature_extractor

    torch.manual_seed(0)
    model = tiny_cpc()
    values, mask = padded_batch([900, 700])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # move the encoder away from its initialisation
        model(values, attention_mask=mask).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path / "ckpt")
    build_feature_extractor(16000).save_pretrained(tmp_path / "ckpt")
    result = run_vanilla(tmp_path, tmp_path / "ckpt", values, mask)
    model.eval()
    with torch.no_grad():
        expected = model(values, attention_mask=mask, return_loss=False)
    assert result["class"] == "Wav2Vec2Model" and result["logits_shape"] == (2, 3)
    assert result["extractor"] == "Wav2Vec2FeatureExtractor" and result["sampling_rate"] == 16000
    valid = expected.frame_mask
    torch.testing.assert_close(result["hidden"][valid], expected.encoded[valid])  # vanilla output == CPC's z


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
def test_audio_shorter_than_the_receptive_field_is_refused_with_the_minimum():
    model = tiny_cpc()
    needed = minimum_samples(model.config, 2)  # CPC needs 2 frames: one to predict from, one to predict
    values, mask = padded_batch([needed + 100, needed - 1])
    with pytest.raises(ValueError, match=rf"example 1 has {needed - 1} samples.*{needed} samples.*receptive field"):
        model(values, attention_mask=mask)
    model(values[:, : needed + 100], attention_mask=torch.ones_like(mask))  # long enough: fine


def test_wrong_sampling_rate_and_wrong_shapes_are_refused():
    model = tiny_cpc()
    values, mask = padded_batch([2000, 2000])
    with pytest.raises(ValueError, match="8000 Hz but this model was pretrained at 16000 Hz; resample"):
        model(values, attention_mask=mask, sampling_rate=8000)
    with pytest.raises(ValueError, match=r"mono waveforms \(batch, samples\)"):
        model(values[:, None, :])
    with pytest.raises(ValueError, match="num_hidden_layers=0"):
        CPCForPreTraining.from_encoder_config(audio_encoder_config("cpc-tiny", {"num_hidden_layers": 1}))
    with pytest.raises(ValueError, match="negative_sampling"):
        tiny_cpc(negative_sampling="speaker")


# ----------------------------------------------------------------------------------------------------------------------
# Trainer
@pytest.mark.needs_data(FSDD)
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    from hf_ssl.data.audio import load_audio_dataset
    from hf_ssl.data.collators import AudioCollator
    from hf_ssl.jobs.audio import build_feature_extractor
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import apply_views
    from hf_ssl.views.audio import AudioCropTransform

    clips = load_audio_dataset(FSDD, "train", max_examples=12, seed=0)
    dataset = apply_views(clips, AudioCropTransform(16000, 0.3, seed=0))
    collator = AudioCollator(build_feature_extractor(16000))

    def trainer(output_dir):
        torch.manual_seed(0)
        args = SSLTrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=4,
            max_steps=5,
            learning_rate=3e-3,
            logging_steps=1,
            save_steps=2,
            use_cpu=True,
            report_to="none",
            seed=7,
            disable_tqdm=True,
        )
        return SSLTrainer(model=tiny_cpc(), args=args, train_dataset=dataset, data_collator=collator)

    full = trainer(tmp_path / "full")
    full.train()
    trainer(tmp_path / "part").train()  # produces checkpoint-2 (mid-epoch: 3 steps per epoch)
    resumed = trainer(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key)
    assert resumed.state.global_step == 5
