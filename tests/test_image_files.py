"""A user's own image files: every Pillow mode decodes to the right RGB values, a folder without a test split holds
out labelled images for the probes (or trains without probes when unlabelled), and bad files are named before
training (or left out with --skip_bad_files), and named when they fail later."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_ssl.cli import main as cli_main
from hf_ssl.data.image_decoding import (
    ALPHA_BACKGROUND,
    PathReportingImage,
    UnreadableImageError,
    check_image_file,
    to_rgb,
)
from hf_ssl.data.image_formats import UnknownSplitError
from hf_ssl.data.images import EVAL_FRACTION, load_image_dataset, load_image_splits
from hf_ssl.jobs.evaluate import ImageDataArguments
from hf_ssl.jobs.runner import parse_arguments, run

ROOT = Path(__file__).resolve().parents[1]
WHITE = ALPHA_BACKGROUND


# --------------------------------------------------------------------------------------------------------------------
# Modes: one file per mode, with known pixel values, and the RGB values each must become.


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, index 1 blue
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 1  # blue is the transparent colour
    return image


def _cmyk() -> Image.Image:
    image = Image.new("CMYK", (3, 1))
    for x, value in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255)]):
        image.putpixel((x, 0), value)
    return image


def _rgba() -> Image.Image:
    image = Image.new("RGBA", (3, 1))
    for x, value in enumerate([(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 255, 128)]):
        image.putpixel((x, 0), value)
    return image


def _gray_alpha() -> Image.Image:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (100, 255))
    image.putpixel((1, 0), (0, 0))
    return image


def _gray(value: int) -> tuple[int, int, int]:
    return (value, value, value)


#: file name -> (image, saved as that file, the RGB row it must become)
MODE_CASES = {
    "bilevel.png": (Image.fromarray(np.array([[0, 1]], dtype=bool)), [_gray(0), _gray(255)]),
    "gray.png": (Image.fromarray(np.array([[10, 200]], dtype=np.uint8)), [_gray(10), _gray(200)]),
    # Pillow's convert("RGB") clips these to 255: the white squares of 16-bit folders.
    "gray16.png": (Image.fromarray(np.array([[4883, 65278, 0, 65535]], dtype=np.uint16)),
                   [_gray(19), _gray(254), _gray(0), _gray(255)]),
    "int32.tif": (Image.fromarray(np.array([[1028, 65535, 0]], dtype=np.int32)), [_gray(4), _gray(255), _gray(0)]),
    "float.tif": (Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)),
                  [_gray(0), _gray(128), _gray(255), _gray(64)]),
    "palette_transparent.png": (_palette_with_transparency(), [(255, 0, 0), WHITE]),
    "rgba.png": (_rgba(), [(255, 0, 0), WHITE, (127, 127, 255)]),
    "gray_alpha.png": (_gray_alpha(), [_gray(100), WHITE]),
    "cmyk.tif": (_cmyk(), [(255, 255, 255), (0, 255, 255), (0, 0, 0)]),
}


@pytest.fixture(scope="module")
def mode_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("modes")
    for name, (image, _) in MODE_CASES.items():
        image.save(folder / name)
    return folder


@pytest.mark.parametrize("name", list(MODE_CASES))
def test_every_mode_becomes_the_right_rgb_values(mode_files, name):
    expected = MODE_CASES[name][1]
    path = mode_files / name
    for decoded in (Image.open(path), PathReportingImage().decode_example({"path": str(path), "bytes": None})):
        rgb = to_rgb(decoded)
        assert rgb.mode == "RGB"
        row = [rgb.getpixel((x, 0)) for x in range(rgb.width)]
        assert np.abs(np.array(row, dtype=int) - np.array(expected)).max() <= 1, (decoded.mode, row, expected)


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to display) stands upright."""
    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[:, :16] = (255, 0, 0)  # stored: left half red, right half blue
    pixels[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6
    Image.fromarray(pixels).save(tmp_path / "sideways.jpg", quality=95, exif=exif)
    rgb = to_rgb(Image.open(tmp_path / "sideways.jpg"))
    assert rgb.size == (16, 32)  # width and height swapped
    top, bottom = np.asarray(rgb)[4, 8], np.asarray(rgb)[28, 8]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # the left (red) half is on top


def test_every_pipeline_decodes_through_to_rgb():
    """No image pipeline converts with Pillow's convert("RGB") (clipping, alpha dropped, orientation ignored)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "hf_ssl").rglob("*.py"))
        if path.name != "image_decoding.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""\.convert\(\s*(mode=)?["']RGB["']\s*\)""", line)
    ]
    assert not offenders, f"use hf_ssl.data.image_decoding.to_rgb at {offenders}"


# --------------------------------------------------------------------------------------------------------------------
# Own folders: a hold-out for the probes, or no probes.


def _write_images(folder: Path, count: int, value: int, size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    for index in range(count):
        pixels = np.clip(rng.normal(value, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    folder = tmp_path / "my_images"
    _write_images(folder / "dark", 10, 60)
    _write_images(folder / "bright", 10, 190)
    return folder


def _paths(dataset) -> list[str]:
    return [row["path"] for row in dataset.cast_column("image", PathReportingImage(decode=False))["image"]]


TINY_RECIPE_RUN = [
    str(ROOT / "recipes" / "configs" / "dino-vit-tiny-cifar10.yaml"), "--max_steps", "2",
    "--per_device_train_batch_size", "8", "--encoder_config_overrides",
    '{"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}',
    "--out_dim", "64", "--hidden_dim", "32", "--bottleneck_dim", "16", "--knn_k", "5", "--final_probes", "knn",
    "--disable_tqdm", "true",
]


def test_a_labelled_folder_without_test_split_holds_out_the_same_images_every_time(labelled_folder):
    first = load_image_splits(str(labelled_folder), seed=0)
    again = load_image_splits(str(labelled_folder), seed=123)  # the training seed does not move the hold-out
    assert first.eval_name == f"held-out {EVAL_FRACTION:.0%} of train"
    assert len(first.eval) == 2 and len(first.train) == 18
    assert sorted(first.eval["label"]) == [0, 1]  # one image of each class
    assert _paths(first.eval) == _paths(again.eval)
    assert not set(_paths(first.eval)) & set(_paths(first.train))
    assert _paths(ImageDataArguments(dataset=str(labelled_folder)).load().eval) == _paths(first.eval)


def test_semi_supervised_fine_tuning_measures_on_the_same_hold_out(labelled_folder, tmp_path):
    from hf_ssl.jobs.semi_image import SemiImageJob

    config = ROOT / "recipes" / "configs" / "fixmatch-vit-tiny-cifar10-40.yaml"
    *arguments, method, training = parse_arguments([str(config), "--dataset", str(labelled_folder),
                                                    "--output_dir", str(tmp_path / "run")])
    job = SemiImageJob(arguments, method, training)
    held_out = job.load_split(arguments[1].eval_split)
    assert _paths(held_out) == _paths(load_image_splits(str(labelled_folder)).eval)
    assert len(job.load_split(arguments[1].train_split)) == 18


def test_a_hub_dataset_with_only_a_train_split_holds_out_too(tmp_path):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    encoded = []
    for index in range(20):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), index * 10, dtype=np.uint8)).save(buffer, "PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    features = Features({"img": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    table = Dataset.from_dict({"img": encoded, "label": [index % 2 for index in range(20)]}, features=features)
    (tmp_path / "data").mkdir()
    table.to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")  # a copy of a Hub dataset repository
    splits = load_image_splits(str(tmp_path))
    assert (len(splits.train), len(splits.eval), splits.eval_name) == (18, 2, "held-out 10% of train")


def test_a_missing_split_is_still_refused_when_the_dataset_has_others():
    with pytest.raises(UnknownSplitError, match="'validation'.*available splits: \\['train', 'test'\\]"):
        load_image_splits("embedded", eval_split="validation")


def test_recipe_on_an_own_labelled_folder_probes_the_hold_out_and_evaluate_agrees(labelled_folder, tmp_path, capsys):
    out = tmp_path / "run"
    results = run([*TINY_RECIPE_RUN, "--dataset", str(labelled_folder), "--output_dir", str(out)])
    assert 0 <= results["pretrained"]["knn_top1"] <= 1
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_results"][0]["dataset_split"] == "held-out 10% of train"
    capsys.readouterr()
    assert cli_main(["evaluate", str(out), "--dataset", str(labelled_folder), "--probes", "knn", "--knn_k", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["knn_top1"] == pytest.approx(results["pretrained"]["knn_top1"])


def test_recipe_on_an_unlabelled_folder_trains_without_probes(tmp_path):
    folder = tmp_path / "photos"
    _write_images(folder, 12, 120)
    out = tmp_path / "run"
    results = run([*TINY_RECIPE_RUN, "--dataset", str(folder), "--output_dir", str(out), "--eval_steps", "1"])
    assert results == {}
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


# --------------------------------------------------------------------------------------------------------------------
# Bad files


@pytest.fixture
def folder_with_bad_files(labelled_folder) -> Path:
    (labelled_folder / "dark" / "not_an_image.jpg").write_text("this is not a JPEG")
    rng = np.random.default_rng(0)
    encoded = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(encoded, "JPEG", quality=95)
    (labelled_folder / "bright" / "truncated.jpg").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    return labelled_folder


def test_the_scan_finds_a_truncated_jpeg_that_opens(folder_with_bad_files):
    truncated = folder_with_bad_files / "bright" / "truncated.jpg"
    Image.open(truncated)  # the header is fine: only reading the whole file shows the damage
    assert "truncated" in check_image_file(truncated)
    assert check_image_file(folder_with_bad_files / "bright" / "000.png") is None


def test_bad_files_stop_the_run_before_training_with_every_name(folder_with_bad_files, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UnreadableImageError) as raised:
        run([*TINY_RECIPE_RUN, "--dataset", str(folder_with_bad_files), "--output_dir", str(out)])
    message = str(raised.value)
    assert "not_an_image.jpg" in message and "truncated.jpg" in message and "--skip_bad_files" in message
    assert not (out / "trainer_state.json").exists() and not list(out.glob("checkpoint-*"))


def test_skip_bad_files_trains_without_them_and_logs_each(folder_with_bad_files, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="hf_ssl.data.images"):
        run([*TINY_RECIPE_RUN, "--dataset", str(folder_with_bad_files), "--output_dir", str(out),
             "--skip_bad_files", "true"])
    skipped = [record.getMessage() for record in caplog.records if "skipping unreadable image file" in
               record.getMessage()]
    assert len(skipped) == 2 and any("not_an_image.jpg" in line for line in skipped)
    assert any("truncated.jpg" in line for line in skipped)
    assert (out / "model.safetensors").is_file()


def test_a_file_failing_during_the_run_is_named(folder_with_bad_files, tmp_path):
    """With the scan off, a bad file fails where it is decoded: the error names it."""
    with pytest.raises(UnreadableImageError, match=r"not_an_image\.jpg|truncated\.jpg"):
        run([*TINY_RECIPE_RUN, "--dataset", str(folder_with_bad_files), "--output_dir", str(tmp_path / "run"),
             "--check_image_files", "false", "--per_device_train_batch_size", "16"])
    train = load_image_dataset(str(folder_with_bad_files), "train", check_files=False)
    bad_row = _paths(train).index(str(folder_with_bad_files / "bright" / "truncated.jpg"))
    with pytest.raises(UnreadableImageError, match="truncated.jpg"):
        train[bad_row]["image"]
