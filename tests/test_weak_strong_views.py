"""Weak and strong views (hf_ssl.views.weak_strong): reproducibility, model inputs, what each augmentation does,
and refusals of bad input."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import wavfile
from transformers import Wav2Vec2FeatureExtractor

from hf_ssl.data import load_image_dataset
from hf_ssl.data.text import train_wordpiece_tokenizer
from hf_ssl.views import AudioWeakStrongViews, ImageWeakStrongViews, TextWeakStrongViews, WeakStrongViews
from hf_ssl.views.weak_strong import (
    AudioWeakStrongConfig,
    ImageWeakStrongConfig,
    TextWeakStrongConfig,
    draw_view,
    fit_idf,
)
from hf_ssl.views.weak_strong.audio import band_stop, time_masks
from hf_ssl.views.weak_strong.text import random_swap, word_dropout

CORPUS = [
    "the movie was great and the cast was superb",
    "the film was awful , the plot was thin",
    "the acting was wooden and the score was loud",
    "the story was moving and the ending was sad",
    "the jokes were flat but the music was lovely",
    "the director was bold and the camera was steady",
]

SAMPLING_RATE = 8000

# -- fixtures ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images():
    return load_image_dataset("embedded", "train", max_examples=8)["image"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(CORPUS, vocab_size=200, min_frequency=1)


@pytest.fixture(scope="module")
def feature_extractor():
    return Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=True)


def sines(seconds=0.25, frequencies=(300.0, 2000.0), rate=SAMPLING_RATE):
    time = np.arange(int(seconds * rate)) / rate
    return sum(0.3 * np.sin(2 * np.pi * f * time) for f in frequencies).astype(np.float32)


@pytest.fixture
def wav_paths(tmp_path):
    paths = []
    for i, seconds in enumerate((0.25, 0.4)):
        path = tmp_path / f"clip{i}.wav"
        wavfile.write(path, SAMPLING_RATE, (sines(seconds) * 32767).astype(np.int16))
        paths.append(str(path))
    return paths


def quiet_audio(**overrides):
    """Audio views with every weak step off unless overridden: the weak view is then the clip itself."""
    values = dict(gain_db=0.0, add_noise=False, shift_fraction=0.0, num_time_masks=0, num_frequency_masks=0)
    values.update(overrides)
    return AudioWeakStrongConfig(**values)


# -- the interface and reproducibility ---------------------------------------------------------------------------------


def all_views(images, tokenizer, feature_extractor, wav_paths):
    return [
        (ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28)), images[0]),
        (TextWeakStrongViews.fit(CORPUS, tokenizer, config=TextWeakStrongConfig(num_swaps=2)), CORPUS[0]),
        (AudioWeakStrongViews(feature_extractor, SAMPLING_RATE), wav_paths[0]),
    ]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_views_follow_the_protocol_and_depend_only_on_the_seed(images, tokenizer, feature_extractor, wav_paths):
    for views, value in all_views(images, tokenizer, feature_extractor, wav_paths):
        assert isinstance(views, WeakStrongViews)
        for view in ("weak", "strong"):
            first = draw_view(views, view, value, seed=11)
            torch.rand(3)  # the caller's generators moving in between change nothing
            np.random.rand(3)
            assert same(draw_view(views, view, value, seed=11), first), (type(views).__name__, view)
            assert not same(draw_view(views, view, value, seed=12), first), (type(views).__name__, view)
        assert not same(draw_view(views, "weak", value, 11), draw_view(views, "strong", value, 11)), type(views).__name__


def test_the_caller_seeds_torch_for_torchvision(images):
    """RandAugment draws its operations from torch's global generator: same rng, different torch seed -> other view."""
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28, cutout_fraction=0.0))
    outputs = []
    for torch_seed in (0, 0, 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            outputs.append(views.strong(images[1], np.random.default_rng(5)))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


def test_draw_view_refuses_unknown_views(images):
    with pytest.raises(ValueError, match="weak"):
        draw_view(ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28)), "medium", images[0], 0)


# -- images ------------------------------------------------------------------------------------------------------------


def test_image_collate_gives_pixel_values(images):
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28))
    batch = views.collate([draw_view(views, view, image, i) for i, image in enumerate(images) for view in ("weak", "strong")])
    assert set(batch) == {"pixel_values"}
    assert batch["pixel_values"].shape == (16, 3, 28, 28) and batch["pixel_values"].dtype == torch.float32
    upsampled = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=32, upsample=True, strong="trivialaugment"))
    assert draw_view(upsampled, "strong", images[0], 0).shape == (3, 32, 32)


def test_weak_image_view_is_a_reflect_padded_shift_of_the_original(images):
    config = ImageWeakStrongConfig(image_size=28, horizontal_flip_probability=0.0, mean=[0, 0, 0], std=[1, 1, 1])
    views = ImageWeakStrongViews(config)
    original = np.asarray(images[2].convert("RGB"), dtype=np.float32) / 255  # (28, 28, 3)
    pad = round(0.125 * 28)
    padded = np.pad(original, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    shifts = set()
    for seed in range(12):
        view = draw_view(views, "weak", images[2], seed).permute(1, 2, 0).numpy()
        matches = [
            (top, left)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            if np.allclose(view, padded[top : top + 28, left : left + 28], atol=1e-6)
        ]
        assert matches, f"seed {seed}: the weak view is no translation of the image"
        shifts.update(matches)
    assert len(shifts) > 3  # the offsets vary with the seed, up to ±12.5 %
    assert max(abs(top - pad) for top, _ in shifts) <= pad


def test_weak_image_view_flips(images):
    config = ImageWeakStrongConfig(
        image_size=28, horizontal_flip_probability=1.0, translate_fraction=0.0, mean=[0, 0, 0], std=[1, 1, 1]
    )
    view = draw_view(ImageWeakStrongViews(config), "weak", images[3], 0)
    original = torch.from_numpy(np.asarray(images[3].convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(view, original.flip(-1))


@pytest.mark.parametrize("fraction, side", [(0.5, 14), (0.25, 7)])
def test_cutout_fills_a_square_of_the_requested_size_with_the_mean(images, fraction, side):
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28, strong="none", cutout_fraction=fraction))
    for seed in range(5):
        strong = draw_view(views, "strong", images[4], seed)
        filled = (strong == 0).all(dim=0)  # the mean is 0 after normalisation; no pixel value normalises to 0 exactly
        rows, cols = torch.nonzero(filled, as_tuple=True)
        assert filled.sum() == side * side
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
        weak = draw_view(views, "weak", images[4], seed)
        torch.testing.assert_close(strong[:, ~filled], weak[:, ~filled])  # Cutout is all that "none" adds


@pytest.mark.parametrize("strong", ["randaugment", "trivialaugment"])
def test_strong_image_view_augments_the_weak_geometry(images, strong):
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=28, strong=strong, cutout_fraction=0.0))
    changed = [
        not torch.equal(draw_view(views, "strong", images[5], seed), draw_view(views, "weak", images[5], seed))
        for seed in range(4)
    ]
    assert sum(changed) >= 3  # photometric/geometric operations on top (an identity draw may leave one unchanged)


def test_grayscale_and_rgba_images_become_rgb():
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=16))
    for image in (Image.fromarray(np.zeros((16, 16), dtype=np.uint8)), Image.new("RGBA", (16, 16))):
        assert draw_view(views, "strong", image, 0).shape == (3, 16, 16)


def test_bad_image_input_is_refused(images):
    views = ImageWeakStrongViews(ImageWeakStrongConfig(image_size=32))
    with pytest.raises(ValueError, match="upsample=True"):
        draw_view(views, "weak", images[0], 0)
    with pytest.raises(ValueError, match="one column"):
        draw_view(views, "weak", (images[0], images[1]), 0)
    with pytest.raises(TypeError, match="load_image_dataset"):
        draw_view(views, "weak", np.zeros((32, 32, 3)), 0)
    with pytest.raises(ValueError, match="image_column="):
        views.check_columns(["text", "label"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(strong="autoaugment"), "strong must be one of"),
        (dict(cutout_fraction=1.0), "cutout_fraction"),
        (dict(randaugment_magnitudes=[5, 20]), "randaugment_magnitudes"),
        (dict(translate_fraction=0.7), "translate_fraction"),
        (dict(mean=[0.5]), "3 values"),
    ],
)
def test_bad_image_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        ImageWeakStrongConfig(**overrides)


# -- text --------------------------------------------------------------------------------------------------------------


def test_text_collate_tokenises_single_texts_and_pairs(tokenizer):
    views = TextWeakStrongViews.fit(CORPUS, tokenizer, max_length=8)
    batch = views.collate([draw_view(views, "strong", text, i) for i, text in enumerate(CORPUS[:3])])
    assert {"input_ids", "attention_mask"} <= set(batch)
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.int64  # truncated to max_length
    assert batch["attention_mask"].shape == (3, 8)

    pairs = TextWeakStrongViews.fit(zip(CORPUS[:3], CORPUS[3:]), tokenizer, max_length=64, input_columns=("a", "b"))
    views_of_pairs = [draw_view(pairs, "weak", (a, b), i) for i, (a, b) in enumerate(zip(CORPUS[:3], CORPUS[3:]))]
    assert all(isinstance(v, tuple) and len(v) == 2 for v in views_of_pairs)
    batch = pairs.collate(views_of_pairs)
    assert batch["input_ids"].shape[0] == 3 and batch["input_ids"].shape == batch["attention_mask"].shape
    assert (batch["token_type_ids"] == 1).any()  # tokenised as pairs: the second text has segment 1
    sep = tokenizer.sep_token_id
    assert ((batch["input_ids"] == sep).sum(dim=1) == 2).all()


def test_weak_text_views_swap_or_drop_words():
    rng = np.random.default_rng(0)
    text = "one two three four five"
    swapped = random_swap(text, 1, rng)
    assert sorted(swapped.split()) == sorted(text.split()) and swapped != text
    assert sum(a != b for a, b in zip(swapped.split(), text.split())) == 2
    assert random_swap("alone", 3, rng) == "alone"
    dropped = [word_dropout(text, 0.5, np.random.default_rng(seed)) for seed in range(20)]
    assert all(set(d.split()) <= set(text.split()) and d for d in dropped)
    assert any(len(d.split()) < 5 for d in dropped)
    assert word_dropout(text, 0.999999, np.random.default_rng(0)).count(" ") == 0  # one word is always kept
    assert word_dropout("keep, the comma", 0.0, rng) == "keep, the comma"


def test_tfidf_replacement_prefers_uninformative_words(tokenizer):
    table = fit_idf(CORPUS)
    assert table.idf["the"] == 0.0 and table.idf["superb"] > table.idf["was"] >= 0.0
    assert pickle.loads(pickle.dumps(table)) == table

    views = TextWeakStrongViews(tokenizer, idf=table, config=TextWeakStrongConfig(strength=0.3))
    words = CORPUS[0].split()
    replaced = np.zeros(len(words))
    for seed in range(300):
        out = draw_view(views, "strong", CORPUS[0], seed).split()
        assert len(out) == len(words)  # replacement keeps every position
        replaced += [a != b for a, b in zip(out, words)]
    rate = dict(zip(words, replaced / 300))
    # "the" and "was" are in every document (TF-IDF 0): replaced often (P = 0.57 here, some draws give the same
    # word back); "superb" and "movie" are in one document and have the sentence's top TF-IDF: never replaced.
    assert rate["the"] > 0.2 and rate["was"] > 0.2
    assert rate["superb"] == 0 and rate["movie"] == 0
    probabilities = table.replacement_probabilities(words, 0.3)
    assert probabilities.sum() == pytest.approx(0.3 * len(words))  # UDA: p * |x| replacements expected

    vocabulary, probabilities = table.replacement_distribution()
    drawn = dict(zip(vocabulary, probabilities))
    assert drawn["the"] > drawn["superb"]  # replacements favour uninformative words


def test_strength_zero_replaces_nothing(tokenizer):
    table = fit_idf(CORPUS)
    views = TextWeakStrongViews(tokenizer, idf=table, config=TextWeakStrongConfig(strength=0.0))
    text = "The film was awful, the plot  was thin!"
    assert all(draw_view(views, "strong", text, seed) == text for seed in range(20))
    assert (table.replacement_probabilities(text.split(), 0.0) == 0).all()
    assert TextWeakStrongViews(tokenizer, config=TextWeakStrongConfig(strength=0.0)).strong(text, None) == text


def test_bad_text_input_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"strength .* must be in \[0, 1\]"):
        TextWeakStrongConfig(strength=1.5)
    with pytest.raises(ValueError, match="TextWeakStrongViews.fit"):
        TextWeakStrongViews(tokenizer)
    with pytest.raises(ValueError, match="at least 2 documents"):
        fit_idf(["only one"])
    with pytest.raises(ValueError, match="one column or a sentence pair"):
        TextWeakStrongViews.fit(CORPUS, tokenizer, input_columns=("a", "b", "c"))
    pairs = TextWeakStrongViews.fit(CORPUS, tokenizer, input_columns=("premise", "hypothesis"))
    with pytest.raises(ValueError, match="tuple of 2 values"):
        pairs.weak("a single text", np.random.default_rng(0))
    single = TextWeakStrongViews.fit(CORPUS, tokenizer)
    with pytest.raises(ValueError, match="input_columns="):
        single.strong(("a", "b"), np.random.default_rng(0))
    with pytest.raises(TypeError, match="not str"):
        single.weak(None, np.random.default_rng(0))
    with pytest.raises(ValueError, match="premise"):
        pairs.check_columns(["text", "label"])


# -- audio -------------------------------------------------------------------------------------------------------------


def test_audio_collate_pads_and_masks(feature_extractor, wav_paths):
    views = AudioWeakStrongViews(feature_extractor, SAMPLING_RATE)
    waveforms = [draw_view(views, "weak", wav_paths[0], 0), draw_view(views, "strong", wav_paths[1], 0)]
    assert [len(w) for w in waveforms] == [2000, 3200] and all(w.dtype == np.float32 for w in waveforms)
    batch = views.collate(waveforms)
    assert set(batch) == {"input_values", "attention_mask"}
    assert batch["input_values"].shape == (2, 3200) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].shape == (2, 3200)
    assert batch["attention_mask"][0].sum() == 2000 and batch["attention_mask"][1].sum() == 3200


def test_audio_is_decoded_resampled_and_cropped(feature_extractor, wav_paths):
    with open(wav_paths[1], "rb") as handle:
        entry = {"bytes": handle.read(), "path": None}
    views = AudioWeakStrongViews(
        Wav2Vec2FeatureExtractor(sampling_rate=16000), 16000, crop_seconds=0.1, config=quiet_audio()
    )
    crops = [draw_view(views, "weak", entry, seed) for seed in range(4)]
    assert all(len(crop) == 1600 for crop in crops)  # 0.4 s at 8 kHz -> 16 kHz, cropped to 0.1 s
    assert not all(np.array_equal(crops[0], crop) for crop in crops[1:])


def test_gain_scales_the_waveform(feature_extractor):
    clip = sines()
    views = AudioWeakStrongViews(feature_extractor, SAMPLING_RATE, config=quiet_audio(gain_db=6.0))
    factors = []
    for seed in range(10):
        weak = draw_view(views, "weak", clip, seed)
        factor = float(np.dot(weak, clip) / np.dot(clip, clip))
        np.testing.assert_allclose(weak, factor * clip, atol=1e-6)
        factors.append(factor)
    assert all(10 ** (-6 / 20) - 1e-6 <= f <= 10 ** (6 / 20) + 1e-6 for f in factors)
    assert min(factors) < 0.9 and max(factors) > 1.1


def test_noise_and_shift_change_the_weak_view(feature_extractor):
    clip = sines()
    noisy = AudioWeakStrongViews(feature_extractor, SAMPLING_RATE, config=quiet_audio(add_noise=True))
    residual = draw_view(noisy, "weak", clip, 0) - clip
    snr = 10 * np.log10(np.mean(clip**2) / np.mean(residual**2))
    assert 19 < snr < 41
    shifted = AudioWeakStrongViews(feature_extractor, SAMPLING_RATE, config=quiet_audio(shift_fraction=0.1))
    view = draw_view(shifted, "weak", clip, 3)
    shifts = [s for s in range(-200, 201) if np.array_equal(view, np.roll(clip, s))]
    assert shifts and shifts[0] != 0


def test_time_masks_zero_exactly_the_masked_spans():
    clip = sines() + 1.0  # no sample is zero before masking
    masked, spans = time_masks(clip, np.random.default_rng(1), num_masks=3, max_fraction=0.2)
    inside = np.zeros(len(clip), dtype=bool)
    for start, stop in spans:
        assert 0 <= stop - start <= int(0.2 * len(clip))
        inside[start:stop] = True
    assert inside.any()
    assert (masked[inside] == 0).all()
    assert np.array_equal(masked[~inside], clip[~inside])


def test_strong_audio_view_is_the_weak_view_with_time_masks(feature_extractor):
    clip = sines() + 1.0
    views = AudioWeakStrongViews(
        feature_extractor, SAMPLING_RATE, config=quiet_audio(num_time_masks=2, time_mask_fraction=0.1)
    )
    for seed in range(5):
        weak, strong = draw_view(views, "weak", clip, seed), draw_view(views, "strong", clip, seed)
        changed = strong != weak
        assert (strong[changed] == 0).all()
        assert changed.sum() <= 2 * int(0.1 * len(clip))
        runs = np.count_nonzero(np.diff(changed.astype(int)) == 1) + int(changed[0])
        assert runs <= 2


def test_frequency_mask_removes_the_band():
    clip = sines(frequencies=(300.0, 2000.0))
    bins = len(clip) // 2 + 1
    hertz = np.fft.rfftfreq(len(clip), 1 / SAMPLING_RATE)
    band = (int(np.searchsorted(hertz, 1500.0)), int(np.searchsorted(hertz, 2500.0)))
    filtered = band_stop(clip, [band])
    before, after = np.abs(np.fft.rfft(clip)), np.abs(np.fft.rfft(filtered))
    at_300, at_2000 = int(np.argmin(np.abs(hertz - 300))), int(np.argmin(np.abs(hertz - 2000)))
    assert after[at_2000] < 1e-3 * before[at_2000]  # the 2 kHz sine is gone
    assert after[at_300] == pytest.approx(before[at_300], rel=1e-4)  # the 300 Hz one is untouched
    assert after[band[0] : band[1]].max() < 1e-3 and len(after) == bins
    np.testing.assert_allclose(filtered, sines(frequencies=(300.0,)), atol=1e-4)


def test_strong_audio_view_removes_one_contiguous_band(feature_extractor):
    clip = np.random.default_rng(0).standard_normal(2000).astype(np.float32)  # energy in every bin
    reference = np.fft.rfft(clip)
    views = AudioWeakStrongViews(
        feature_extractor, SAMPLING_RATE, config=quiet_audio(num_frequency_masks=1, frequency_mask_fraction=0.5)
    )
    widths = []
    for seed in range(8):
        spectrum = np.fft.rfft(draw_view(views, "strong", clip, seed))
        removed = np.abs(spectrum) < 1e-4 * np.abs(reference)
        np.testing.assert_allclose(spectrum[~removed], reference[~removed], rtol=1e-3, atol=1e-3)
        if removed.any():
            low, high = np.flatnonzero(removed)[[0, -1]]
            assert removed[low : high + 1].all()  # one band, no holes
        widths.append(int(removed.sum()))
    assert max(widths) > 0 and max(widths) <= 0.5 * len(reference)


def test_bad_audio_input_is_refused(feature_extractor, wav_paths):
    views = AudioWeakStrongViews(feature_extractor, SAMPLING_RATE)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="load_audio_dataset"):
        views.weak(None, rng)
    with pytest.raises(ValueError, match="Audio\\(decode=False\\)"):
        views.weak({"transcript": "hello"}, rng)
    with pytest.raises(ValueError, match="audio_column="):
        views.check_columns(["text", "label"])
    with pytest.raises(ValueError, match="one column"):
        views.weak((wav_paths[0], wav_paths[1]), rng)
    with pytest.raises(ValueError, match="sampling_rate=8000"):
        AudioWeakStrongViews(feature_extractor, 16000)
    with pytest.raises(ValueError, match="crop_seconds"):
        AudioWeakStrongViews(feature_extractor, SAMPLING_RATE, crop_seconds=0)
    with pytest.raises(ValueError, match="snr_low_db"):
        AudioWeakStrongConfig(snr_low_db=40, snr_high_db=20)
    with pytest.raises(ValueError, match="time_mask_fraction"):
        AudioWeakStrongConfig(time_mask_fraction=1.5)
