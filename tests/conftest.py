"""Shared fixtures: tiny configs, real images (the Fashion-MNIST subset shipped in hf_ssl/data/assets), and real datasets
through the local-data setting ``HF_SSL_DATA_DIR`` (:func:`local_dataset`, the ``needs_data`` marker)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

# Tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(min(2, torch.get_num_threads()))

#: Set to 1 (CI does) to make a test whose dataset has no local copy fail instead of skip: CI never skips silently.
REQUIRE_DATA = "HF_SSL_TESTS_REQUIRE_DATA"


def local_dataset(name: str, config: str | None = None) -> Path:
    """The local copy of dataset ``name`` (a Hub id, or ``emoji_captions``) that ``HF_SSL_DATA_DIR`` holds
    (:func:`hf_ssl.data.sources.local_copy`); tests reach real data only through that setting. Without a copy the
    calling test is skipped, or fails when ``HF_SSL_TESTS_REQUIRE_DATA=1``."""
    from hf_ssl.data.sources import DATA_DIR_VARIABLE, local_copy

    path = local_copy(name, config)
    if path is None:
        where = os.environ.get(DATA_DIR_VARIABLE) or "unset"
        reason = (f"dataset {name!r} has no local copy: set {DATA_DIR_VARIABLE} (now {where}) to a folder holding "
                  f"one (see hf_ssl.data.sources)")
        if os.environ.get(REQUIRE_DATA, "").strip() == "1":
            pytest.fail(f"{reason}; {REQUIRE_DATA}=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    return path


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs_data(*names): the test reads these datasets (Hub ids, or emoji_captions) from their local copies "
        "under HF_SSL_DATA_DIR; skipped without them, failed with HF_SSL_TESTS_REQUIRE_DATA=1",
    )


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs_data"):
        for name in marker.args:
            local_dataset(name)

#: Prelude of the scripts that check vanilla loading: run in a fresh interpreter, it makes ``import hf_ssl`` fail
#: (so nothing below can use hf_ssl by accident) and imports ``json`` and ``sys`` for the script that follows.
BLOCK_HF_SSL = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockHfSsl(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_ssl" or name.startswith("hf_ssl."):
                raise ImportError("hf_ssl is blocked in this process")
    sys.meta_path.insert(0, BlockHfSsl())
    try:
        import hf_ssl  # noqa: F401
        raise SystemExit("hf_ssl should not be importable here")
    except ImportError:
        pass
    """
)


def tiny_vit_config(image_size: int = 16, patch_size: int = 4, hidden_size: int = 32):
    from transformers import ViTConfig

    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
    )


def tiny_dino(image_size: int = 16, **overrides):
    from hf_ssl import DINOForPreTraining

    settings = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, freeze_last_layer_epochs=0.0)
    settings.update(overrides)
    return DINOForPreTraining.from_encoder_config(tiny_vit_config(image_size), **settings)


@pytest.fixture(scope="session")
def embedded_images():
    """Real 28x28 Fashion-MNIST images (train / test DatasetDict) shipped with the package."""
    from hf_ssl.data.images import load_image_dataset

    return load_image_dataset("embedded")


@pytest.fixture
def tiny_crops():
    generator = torch.Generator().manual_seed(0)
    return {
        "global_crops": torch.randn(4, 2, 3, 16, 16, generator=generator),
        "local_crops": torch.randn(4, 3, 3, 8, 8, generator=generator),
    }


@pytest.fixture
def one_torch_thread():
    """Tiny models: one intra-op thread is faster than two, and far faster on shared, oversubscribed cores (where
    thread barriers stall: a 24-example L-BFGS probe took 15 s with 2 threads here). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------------------------------
# Semi-supervised: a tiny classifier and views

#: Fashion-MNIST class names, as the embedded subset labels them.
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


class TinyImageViews:
    """Weak (flip), strong (flip + noise) and plain views of 16 px images: enough to exercise the trainer."""

    input_columns = ("image",)

    def __init__(self, size: int = 16):
        self.to_tensor = v2.Compose([v2.RGB(), v2.ToImage(), v2.Resize((size, size), antialias=True),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])

    def plain(self, image):
        return self.to_tensor(image)

    def weak(self, image, rng: np.random.Generator):
        pixels = self.to_tensor(image)
        return pixels.flip(-1) if rng.random() < 0.5 else pixels

    def strong(self, image, rng: np.random.Generator):
        noise = torch.from_numpy(rng.standard_normal((3, 16, 16))).float()  # seeded per example, like the real views
        return self.weak(image, rng) + 0.5 * noise

    def collate(self, values):
        return {"pixel_values": torch.stack(values)}


def benchmark_script(name: str):
    """``benchmarks/<name>.py`` imported as the module ``name`` (the scripts are not a package; registered in
    ``sys.modules`` so that their dataclasses resolve)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tiny_classifier(seed: int = 0, **config_overrides):
    """A 1-layer ViT classifier of 16 px images with the Fashion-MNIST class names."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    settings = dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=10, id2label=dict(enumerate(CLASSES)),
                    label2id={name: index for index, name in enumerate(CLASSES)})
    config = ViTConfig(**{**settings, **config_overrides})
    return ViTForImageClassification(config)


def tiny_audio_classifier(seed: int = 0):
    """A 1-layer Wav2Vec2 classifier of raw audio (10 classes) that takes an ``attention_mask`` (layer-normalised
    feature encoder, as hf_ssl's CPC and wav2vec 2.0 encoders)."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    return Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", num_labels=10))


#: A 2-step DINO run of the embedded default at a tiny width (recipe flags), for the publishing and card tests.
TINY_DINO_RUN_FLAGS = [
    "--max_steps", "2", "--per_device_train_batch_size", "16", "--max_train_examples", "64",
    "--max_eval_examples", "40", "--knn_k", "10", "--knn_max_train_examples", "64", "--encoder_config_overrides",
    '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
    "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--num_local_crops", "2", "--save_steps", "1",
    "--logging_steps", "1", "--disable_tqdm", "true",
]
#: Texts of transformers' stock model cards, which an hf_ssl card must never contain.
STOCK_CARD_TEXTS = ("fine-tuned version of", "This is the model card of a 🤗 transformers model")
