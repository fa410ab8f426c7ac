"""wav2vec 2.0 over transformers' Wav2Vec2ForPreTraining: masking statistics, loss parity, global normalisation,
Gumbel schedule, round trips, vanilla loading, resume and bad input."""

import numpy as np
import pytest
import torch
from test_cpc import padded_batch, run_vanilla
from transformers import Wav2Vec2ForPreTraining

from hf_ssl import AutoSSLModel, TrainingProgress, Wav2Vec2SSLForPreTraining
from hf_ssl.modules.audio_encoder import (
    audio_encoder_config,
    frame_lengths,
    minimum_samples,
)

FSDD = "silky1708/Free-Spoken-Digit-Dataset"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_wav2vec2(**config_overrides):
    """Strides 5, 4, 2 (40 samples per frame), 16 channels, hidden 32, one transformer layer, 2 x 8 codes."""
    overrides = {
        "conv_dim": [16, 16, 16],
        "conv_stride": [5, 4, 2],
        "conv_kernel": [10, 8, 4],
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "num_conv_pos_embeddings": 8,
        "num_conv_pos_embedding_groups": 2,
        "codevector_dim": 16,
        "proj_codevector_dim": 16,
        "num_codevectors_per_group": 8,
        "mask_time_prob": 0.5,
        "mask_time_length": 3,
        "num_negatives": 6,
    }
    overrides.update(config_overrides)
    return Wav2Vec2SSLForPreTraining.from_encoder_config(
        audio_encoder_config("wav2vec2-tiny", overrides), gumbel_temperature_decay=0.9
    )


def test_masking_statistics_spans_padding_and_negatives():
    np.random.seed(0)
    model = tiny_wav2vec2(mask_time_prob=0.4, mask_time_length=3)
    lengths = [4000, 2400, 1200]
    _, mask = padded_batch(lengths)
    frames_per_example = frame_lengths(model.config, torch.tensor(lengths))
    fractions, starts = [], 0
    for _ in range(200):
        sampled = model.sample_pretraining_inputs(mask, *mask.shape)
        masked, negatives, labels = (sampled[k] for k in ("mask_time_indices", "sampled_negative_indices", "labels"))
        frames = masked.shape[1]
        real = torch.arange(frames)[None] < frames_per_example[:, None]
        assert not (masked & ~real).any()  # never a padded frame
        assert (masked.sum(-1) >= 2).all()
        assert torch.equal(labels.ne(-100), masked) and (labels[masked] == 0).all()
        # negatives of a masked frame: other masked frames of the same utterance, never itself
        for b in range(3):
            rows = negatives[b][masked[b]]  # (masked frames of b, num_negatives), flat indices
            assert ((rows // frames) == b).all()
            assert masked.flatten()[rows].all()
            assert (rows != (b * frames + masked[b].nonzero().flatten())[:, None]).all()
        fractions.append(masked[0].float().sum() / frames_per_example[0])
        starts += int((masked[0, 1:] & ~masked[0, :-1]).sum() + masked[0, 0])
    # transformers masks about mask_time_prob of the frames, less the overlap of spans (expected ~0.31 here)
    assert 0.25 < float(torch.stack(fractions).mean()) < 0.40
    assert starts > 0


@pytest.mark.parametrize("training", [False, True])
def test_loss_equals_transformers_wav2vec2_for_pretraining_divided_by_the_masked_frames(training):
    np.random.seed(0)
    torch.manual_seed(0)
    model = tiny_wav2vec2()
    values, mask = padded_batch([3000, 2200])
    inputs = model.sample_pretraining_inputs(mask, *mask.shape)
    reference = Wav2Vec2ForPreTraining(model.config)
    reference.load_state_dict(model.state_dict(), strict=True)
    reference.set_gumbel_temperature(model.quantizer.temperature)
    model.train(training), reference.train(training)
    torch.manual_seed(1)  # same Gumbel noise and dropout in both
    ours = model(values, attention_mask=mask, **inputs)
    torch.manual_seed(1)
    theirs = reference(
        values,
        attention_mask=mask,
        mask_time_indices=inputs["mask_time_indices"],
        sampled_negative_indices=inputs["sampled_negative_indices"],
    )
    count = inputs["mask_time_indices"].sum()
    torch.testing.assert_close(ours.loss * count, theirs.loss)
    torch.testing.assert_close(ours.contrastive_loss * count, theirs.contrastive_loss.detach())
    torch.testing.assert_close(ours.codevector_perplexity, theirs.codevector_perplexity.detach())


def test_global_normalisation_makes_accumulated_micro_batches_equal_one_batch():
    """Summing micro-batch losses divided by the global masked-frame count gives the gradients of the whole batch
    (contrastive term; the diversity term is a batch statistic of the codebook use, so it is switched off here)."""
    np.random.seed(0)
    torch.manual_seed(0)
    model = tiny_wav2vec2(
        diversity_loss_weight=0.0,
        feat_quantizer_dropout=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
    ).eval()
    values, mask = padded_batch([2400, 2400, 2400])
    inputs = model.sample_pretraining_inputs(mask, *mask.shape)
    total = inputs["mask_time_indices"].sum()
    model(values, attention_mask=mask, **inputs).loss.backward()
    whole = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    frames = inputs["mask_time_indices"].shape[1]
    for rows in ([0], [1, 2]):
        part = {
            "mask_time_indices": inputs["mask_time_indices"][rows],
            "labels": inputs["labels"][rows],
            # flat indices into (batch * frames): shift them into the micro-batch
            "sampled_negative_indices": inputs["sampled_negative_indices"][rows] - rows[0] * frames,
        }
        model(values[rows], attention_mask=mask[rows], num_items_in_batch=total, **part).loss.backward()
    accumulated = [p.grad for p in model.parameters() if p.grad is not None]
    for a, b in zip(accumulated, whole):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_trainer_passes_the_masked_frame_count_of_all_micro_batches(tmp_path):
    from hf_ssl.data.collators import AudioCollator
    from hf_ssl.jobs.audio import build_feature_extractor
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer

    np.random.seed(0)
    torch.manual_seed(0)
    model = tiny_wav2vec2()
    seen = []
    forward = model.forward

    def spy(*args, **kwargs):
        seen.append((int(kwargs["labels"].ne(-100).sum()), kwargs.get("num_items_in_batch")))
        return forward(*args, **kwargs)

    model.forward = spy
    generator = np.random.default_rng(0)
    dataset = [{"input_values": generator.standard_normal(int(n)).astype(np.float32)} for n in [1800, 2600] * 4]
    args = SSLTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=2,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
    )
    collator = AudioCollator(build_feature_extractor(16000), model.sample_pretraining_inputs)
    SSLTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    assert len(seen) == 4
    for step in (0, 1):
        (count_a, total_a), (count_b, total_b) = seen[2 * step], seen[2 * step + 1]
        assert int(total_a) == int(total_b) == count_a + count_b


def test_gumbel_temperature_follows_the_step():
    model = tiny_wav2vec2()  # 2.0 * 0.9 ** step, floored at 0.5
    assert model.quantizer.temperature == 2.0
    model.set_progress(TrainingProgress(step=3, max_steps=100, steps_per_epoch=10))
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.9**3)
    assert model.schedule_values()["gumbel_temperature"] == pytest.approx(2.0 * 0.9**3)
    model.set_progress(TrainingProgress(step=50, max_steps=100, steps_per_epoch=10))
    assert model.quantizer.temperature == 0.5


def test_round_trip_and_vanilla_loading(tmp_path):
    from hf_ssl.jobs.audio import build_feature_extractor

    np.random.seed(0)
    torch.manual_seed(0)
    model = tiny_wav2vec2()
    values, mask = padded_batch([2600, 1800])
    model(values, attention_mask=mask).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()  # move the weights away from their initialisation
    model.save_pretrained(tmp_path / "ckpt")
    build_feature_extractor(16000).save_pretrained(tmp_path / "ckpt")
    model.eval()
    inputs = model.sample_pretraining_inputs(mask, *mask.shape)
    for loaded in (
        Wav2Vec2SSLForPreTraining.from_pretrained(tmp_path / "ckpt"),
        AutoSSLModel.from_pretrained(tmp_path / "ckpt"),
    ):
        assert isinstance(loaded, Wav2Vec2SSLForPreTraining) and loaded.method_config == model.method_config
        loaded.eval()
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(values, attention_mask=mask, **inputs).loss, model(values, attention_mask=mask, **inputs).loss
            )
    # the checkpoint is also a plain transformers Wav2Vec2ForPreTraining checkpoint
    reference = Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "ckpt")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reference.state_dict()[key], value, msg=key)
    result = run_vanilla(tmp_path, tmp_path / "ckpt", values, mask)
    with torch.no_grad():
        expected = model.encoder(values, attention_mask=mask).last_hidden_state
    assert result["class"] == "Wav2Vec2Model" and result["logits_shape"] == (2, 3)
    real = torch.arange(expected.shape[1])[None] < frame_lengths(model.config, mask.sum(-1))[:, None]
    torch.testing.assert_close(result["hidden"][real], expected[real])


def test_bad_input_is_refused_with_a_clear_message():
    model = tiny_wav2vec2(mask_time_length=3)
    needed = minimum_samples(model.config, model.minimum_frames())
    values, mask = padded_batch([needed + 400, needed - 1])
    with pytest.raises(ValueError, match=rf"example 1 has {needed - 1} samples.*receptive field"):
        model(values, attention_mask=mask)
    with pytest.raises(ValueError, match="resample"):
        model(values, attention_mask=torch.ones_like(mask), sampling_rate=8000)
    inputs = model.sample_pretraining_inputs(torch.ones_like(mask), *mask.shape)
    with pytest.raises(ValueError, match="labels must be -100 exactly"):
        model(
            values,
            mask_time_indices=inputs["mask_time_indices"],
            sampled_negative_indices=inputs["sampled_negative_indices"],
            labels=torch.zeros_like(inputs["labels"]),
        )
    with pytest.raises(ValueError, match="mask_time_prob"):
        tiny_wav2vec2(mask_time_prob=0.0)


@pytest.mark.needs_data(FSDD)
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    """Masks and negatives come from the collator's NumPy RNG and the Gumbel noise from torch's: both restored."""
    from hf_ssl.data.audio import load_audio_dataset
    from hf_ssl.data.collators import AudioCollator
    from hf_ssl.jobs.audio import build_feature_extractor
    from hf_ssl.training.arguments import SSLTrainingArguments
    from hf_ssl.training.trainer import SSLTrainer
    from hf_ssl.views import apply_views
    from hf_ssl.views.audio import AudioCropTransform

    clips = load_audio_dataset(FSDD, "train", max_examples=12, seed=0)
    dataset = apply_views(clips, AudioCropTransform(16000, 0.3, seed=0))

    def trainer(output_dir):
        torch.manual_seed(0)
        np.random.seed(0)
        model = tiny_wav2vec2()
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
        collator = AudioCollator(build_feature_extractor(16000), model.sample_pretraining_inputs)
        return SSLTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)

    full = trainer(tmp_path / "full")
    full.train()
    trainer(tmp_path / "part").train()
    resumed = trainer(tmp_path / "part")
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-2"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key)
    assert resumed.model.quantizer.temperature == full.model.quantizer.temperature
