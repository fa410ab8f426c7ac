"""Audio data for the audio pretraining job: loading (the Free Spoken Digit Dataset, audio folders, Hub datasets),
decoding, resampling, random crops as the pretraining "view", and batches with padding + attention masks.

Library choices, and why:

- Decoding: ``scipy.io.wavfile`` for WAV (installed with scipy; ``datasets``' own ``Audio`` decoding needs torchcodec
  + ffmpeg), ``soundfile`` for other formats when it is installed. Audio columns are read with
  ``Audio(decode=False)`` and decoded here.
- Resampling: ``scipy.signal.resample_poly`` (polyphase FIR with a Kaiser-window anti-aliasing filter). torchaudio
  would need a torch build matching the pinned one, and transformers' feature extractors refuse, rather than convert,
  a wrong sampling rate.
- Padding, attention masks and per-utterance normalisation: transformers' ``Wav2Vec2FeatureExtractor`` (the same
  object saved next to the weights, so ``pipeline("audio-classification")`` prepares inputs identically).

Datasets here have an ``audio`` column (a file path, or an undecoded ``{"bytes", "path"}`` dict) and integer label
columns (FSDD: ``digit`` and ``speaker``).
"""

from __future__ import annotations

import io
import re
from math import gcd
from pathlib import Path

import numpy as np

from .sources import is_hub_mirror, load_hub_dataset, resolve_dataset

FSDD_FILE_PATTERN = re.compile(r"^(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav$")
FSDD_TEST_INDICES = range(5)
"""Official FSDD split (its README): recordings 0-4 of every digit and speaker are the test set, 5-49 train."""


# ----------------------------------------------------------------------------------------------------------------------
# Decoding and resampling
# ----------------------------------------------------------------------------------------------------------------------


def decode_audio(source) -> tuple[np.ndarray, int]:
    """A mono float32 waveform in [-1, 1] and its sampling rate, from a path, bytes or a ``{"bytes", "path"}`` dict.

    Multi-channel audio is averaged to mono. WAV goes through ``scipy.io.wavfile``; other formats need ``soundfile``.
    """
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if source is None:
        raise ValueError("an audio entry has neither bytes nor a path")
    name = str(source) if isinstance(source, (str, Path)) else "<bytes>"
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        from scipy.io import wavfile

        rate, data = wavfile.read(handle)
    except ValueError as wav_error:
        try:
            import soundfile
        except ImportError:
            raise ValueError(
                f"cannot decode {name}: scipy reads WAV only ({wav_error}); `pip install soundfile` for FLAC/OGG/MP3"
            ) from wav_error
        if isinstance(handle, io.BytesIO):
            handle.seek(0)
        data, rate = soundfile.read(handle, dtype="float32", always_2d=False)
    return _to_float_mono(np.asarray(data)), int(rate)


def _to_float_mono(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:  # 8-bit WAV is unsigned
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    else:
        data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data


def resample_audio(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``waveform`` (1-D) from ``orig_rate`` to ``target_rate`` Hz with ``scipy.signal.resample_poly``
    (8 kHz -> 16 kHz: up 2, down 1). Returns the input unchanged when the rates agree."""
    if orig_rate == target_rate:
        return waveform
    from scipy.signal import resample_poly

    divisor = gcd(int(orig_rate), int(target_rate))
    return resample_poly(waveform, int(target_rate) // divisor, int(orig_rate) // divisor).astype(np.float32)


def load_waveform(source, sampling_rate: int, resample: bool = True) -> np.ndarray:
    """Decode ``source`` and bring it to ``sampling_rate``; with ``resample=False`` a different rate is an error."""
    waveform, rate = decode_audio(source)
    if rate != sampling_rate:
        if not resample:
            raise ValueError(
                f"{_describe(source)} is sampled at {rate} Hz but the model expects {sampling_rate} Hz and resampling "
                f"is off; pass --resample true (scipy.signal.resample_poly) or pretrain at --sampling_rate {rate}"
            )
        waveform = resample_audio(waveform, rate, sampling_rate)
    return waveform


def _describe(source) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or "an audio clip")
    return str(source) if isinstance(source, (str, Path)) else "an audio clip"


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------


def load_audio_dataset(
    source: str,
    split: str | None,
    *,
    audio_column: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
):
    """An audio ``datasets.Dataset`` with an ``audio`` column (path or undecoded dict) and integer label columns.

    ``source``:

    - a Hub dataset id with an ``Audio`` column (e.g. ``silky1708/Free-Spoken-Digit-Dataset``), looked up first as a
      local copy through ``HF_SSL_DATA_DIR`` (:func:`hf_ssl.data.sources.resolve_dataset`); read as published (its
      splits and label columns), the audio column renamed ``audio`` and left undecoded;
    - a folder holding the Free Spoken Digit Dataset's recordings (``recordings/{digit}_{speaker}_{index}.wav``: the
      offline copy of the FSDD Hub id): the official split, ``train`` (index 5-49, 2,700 clips) and ``test`` (index
      0-4, 300 clips), label columns ``digit`` (0-9) and ``speaker`` (6 speakers, ``ClassLabel``), which the file
      names carry;
    - a folder holding a copy of a Hub dataset repository (Parquet / Arrow files), read as the Hub dataset;
    - another folder, in the ``audiofolder`` layout (``[split/]label/clip.wav``; labels from the sub-folder names).
      Read here rather than with ``load_dataset("audiofolder")``, which needs torchcodec even to build the dataset.

    ``max_examples``: a seeded random subset of that size.

    Raises:
        hf_ssl.data.sources.DatasetNotAvailableError: a Hub id found neither locally nor on the Hub (one line).
    """
    import datasets

    path = Path(resolve_dataset(source)).expanduser()
    if path.is_dir() and _fsdd_files(path):
        dataset = _load_fsdd(path, split)
    elif path.is_dir() and not is_hub_mirror(path):
        dataset = _load_audio_folder(path, split)
    else:
        loaded = load_hub_dataset(str(path) if path.is_dir() else source)
        if split is None or split not in loaded:
            raise ValueError(f"{source} has splits {list(loaded)}; choose one with --train_split / --eval_split")
        dataset = loaded[split]
        column = audio_column or _find_audio_column(dataset, source)
        dataset = dataset.cast_column(column, datasets.Audio(decode=False))
        if column != "audio":
            dataset = dataset.rename_column(column, "audio")
    if max_examples is not None and max_examples < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_examples))
    if len(dataset) == 0:
        raise ValueError(f"{source} split {split!r} is empty")
    return dataset


#: Shards of a stream made from a local folder's list of files (enough for 8 processes x 8 dataloader workers).
STREAM_SHARDS = 64


def load_audio_stream(source: str, split: str, *, audio_column: str | None = None):
    """One split of ``source`` (as :func:`load_audio_dataset` takes it) as a ``datasets.IterableDataset`` with the same
    columns, for ``--streaming`` (:mod:`hf_ssl.data.streaming`): a Hub dataset or Parquet mirror streams its rows
    (``load_dataset(..., streaming=True)``, the audio left undecoded); a local folder streams its list of files, in an
    order shuffled once with seed 0, in :data:`STREAM_SHARDS` shards, each clip read when it is streamed."""
    import datasets

    path = Path(resolve_dataset(source)).expanduser()
    if path.is_dir() and not is_hub_mirror(path):
        files = load_audio_dataset(source, split, audio_column=audio_column)  # paths and labels: nothing decoded
        files = files.shuffle(seed=0)  # file names sort by label: mix them into every shard and the stream's start
        return files.to_iterable_dataset(num_shards=min(STREAM_SHARDS, len(files)))
    stream = load_hub_dataset(str(path) if path.is_dir() else source, split=split, streaming=True)
    column = audio_column or _find_audio_column(stream, source)
    stream = stream.cast_column(column, datasets.Audio(decode=False))
    return stream.rename_column(column, "audio") if column != "audio" else stream


def _fsdd_files(folder: Path) -> list[Path]:
    recordings = folder / "recordings" if (folder / "recordings").is_dir() else folder
    return sorted(path for path in recordings.glob("*.wav") if FSDD_FILE_PATTERN.match(path.name))


def _load_fsdd(folder: Path, split: str | None):
    import datasets

    if split not in ("train", "test"):
        raise ValueError(f"the Free Spoken Digit Dataset has the splits 'train' and 'test', not {split!r}")
    rows = []
    for path in _fsdd_files(folder):
        match = FSDD_FILE_PATTERN.match(path.name)
        is_test = int(match["index"]) in FSDD_TEST_INDICES
        if is_test == (split == "test"):
            rows.append((str(path), int(match["digit"]), match["speaker"], int(match["index"])))
    speakers = sorted({speaker for _, _, speaker, _ in _all_fsdd_rows(folder)})
    features = datasets.Features(
        {
            "audio": datasets.Value("string"),
            "digit": datasets.ClassLabel(names=[str(d) for d in range(10)]),
            "speaker": datasets.ClassLabel(names=speakers),
            "recording_index": datasets.Value("int32"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "audio": [row[0] for row in rows],
            "digit": [row[1] for row in rows],
            "speaker": [speakers.index(row[2]) for row in rows],
            "recording_index": [row[3] for row in rows],
        },
        features=features,
        split=split,
    )


AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


def _load_audio_folder(folder: Path, split: str | None):
    import datasets

    splits = sorted(
        child.name for child in folder.iterdir() if child.is_dir() and child.name in ("train", "test", "validation")
    )
    if splits:
        if split not in splits:
            raise ValueError(f"{folder} has the splits {splits}; choose one with --train_split / --eval_split")
        folder = folder / split
    elif split not in (None, "train"):
        raise ValueError(f"{folder} has no {split!r} sub-folder; it is read as one 'train' split")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    values = {"audio": [str(p) for p in files]}
    features = {"audio": datasets.Value("string")}
    labels = [p.parent.relative_to(folder).as_posix() for p in files]
    if all(label != "." for label in labels):
        names = sorted(set(labels))
        values["label"] = [names.index(label) for label in labels]
        features["label"] = datasets.ClassLabel(names=names)
    return datasets.Dataset.from_dict(values, features=datasets.Features(features), split=split or "train")


def _all_fsdd_rows(folder: Path):
    for path in _fsdd_files(folder):
        match = FSDD_FILE_PATTERN.match(path.name)
        yield str(path), int(match["digit"]), match["speaker"], int(match["index"])


def _find_audio_column(dataset, source: str) -> str:
    import datasets

    columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Audio)]
    if not columns:
        raise ValueError(f"{source} has no Audio column (columns: {dataset.column_names}); name it with --audio_column")
    return columns[0]


def label_columns(dataset) -> list[str]:
    """The ``ClassLabel`` columns of ``dataset`` (the probe targets)."""
    import datasets

    return [name for name, feature in dataset.features.items() if isinstance(feature, datasets.ClassLabel)]


# ----------------------------------------------------------------------------------------------------------------------
# Views and batches
# ----------------------------------------------------------------------------------------------------------------------


