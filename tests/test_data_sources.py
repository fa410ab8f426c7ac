"""Datasets named by Hub id: the local-data setting HF_SSL_DATA_DIR (resolution order), the way back from a local copy
to its Hub id, per-source text options, the one-line error when a dataset is neither local nor on the Hub (image,
text, pairs, audio), and the Hub layouts brought to the loaders' standard form. No network: Hub answers are stubbed."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image, Value
from datasets.exceptions import DatasetNotFoundError

from hf_ssl.data.audio import load_audio_dataset
from hf_ssl.data.images import load_image_dataset
from hf_ssl.data.pairs import load_emoji_captions, load_pairs, load_snli, load_sts_benchmark
from hf_ssl.data.sources import (
    DATA_DIR_VARIABLE,
    DatasetNotAvailableError,
    hub_id_for,
    local_copy,
    resolve_dataset,
    split_source_options,
)
from hf_ssl.data.text import load_text_documents, text_sources


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty HF_SSL_DATA_DIR."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(DATA_DIR_VARIABLE, str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as datasets read it at import


@pytest.fixture
def hub(monkeypatch):
    """Stub ``datasets.load_dataset``: ``hub[name] = Dataset or {split: Dataset}``; each call is recorded."""
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    published: dict = {}
    calls: list = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if path not in published:
            raise DatasetNotFoundError(f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed.")
        found = published[path]
        if isinstance(found, dict):
            return datasets.DatasetDict(found) if split is None else found[split]
        return found

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    published["calls"] = calls
    return published


# --------------------------------------------------------------------------------------------------------------------
# Resolution
def test_resolution_order_path_then_mirror_by_id_then_known_folder_then_the_id(tmp_path, data_dir, monkeypatch):
    given = tmp_path / "my_images"
    given.mkdir()
    assert resolve_dataset(str(given)) == str(given)  # an existing path, as it is
    assert resolve_dataset("uoft-cs/cifar10") == "uoft-cs/cifar10"  # nothing local: the Hub id for load_dataset
    (data_dir / "cifar10_jpg").mkdir()
    assert resolve_dataset("uoft-cs/cifar10") == str(data_dir / "cifar10_jpg")  # the known folder of that id
    (data_dir / "uoft-cs" / "cifar10").mkdir(parents=True)
    assert resolve_dataset("uoft-cs/cifar10") == str(data_dir / "uoft-cs" / "cifar10")  # a mirror by Hub id wins
    (data_dir / "someone" / "data").mkdir(parents=True)
    assert resolve_dataset("someone/data") == str(data_dir / "someone" / "data")  # any id, mirrored
    (data_dir / "emoji_captions").mkdir()
    assert resolve_dataset("emoji_captions") == str(data_dir / "emoji_captions")  # a bare folder name
    assert local_copy("emoji_captions") == data_dir / "emoji_captions" and local_copy("unknown/id") is None
    (data_dir / "wikitext2").mkdir()
    assert resolve_dataset("Salesforce/wikitext") == str(data_dir / "wikitext2")
    assert resolve_dataset("Salesforce/wikitext", "wikitext-2-raw-v1") == str(data_dir / "wikitext2")
    assert resolve_dataset("Salesforce/wikitext", "wikitext-103-raw-v1") == "Salesforce/wikitext"  # another config
    assert resolve_dataset("./cifar10_jpg") == "./cifar10_jpg"  # written as a path: never looked up there
    monkeypatch.delenv(DATA_DIR_VARIABLE)
    assert resolve_dataset("uoft-cs/cifar10") == "uoft-cs/cifar10"  # unset: the Hub id


def test_hub_id_for_maps_local_copies_back():
    assert hub_id_for("uoft-cs/cifar10") == "uoft-cs/cifar10"
    assert hub_id_for("/data/copies/cifar10_jpg") == "uoft-cs/cifar10"
    assert hub_id_for("../elsewhere/snli_devtest/snli_validation.tsv") == "stanfordnlp/snli"  # a file inside a copy
    assert hub_id_for("/mirror/sentence-transformers/stsb/data/train.parquet") == "sentence-transformers/stsb"
    assert hub_id_for("stanfordnlp/snli?split=validation&columns=premise+hypothesis") == "stanfordnlp/snli"
    assert hub_id_for("/x/fsdd/recordings") == "silky1708/Free-Spoken-Digit-Dataset"
    assert hub_id_for("/x/tinyshakespeare/input.txt") == "karpathy/tiny_shakespeare"
    assert hub_id_for("embedded") == "zalando-datasets/fashion_mnist"  # the subset shipped in the package
    assert hub_id_for("emoji_captions") is None and hub_id_for("/x/my_corpus.txt") is None
    assert hub_id_for("someone/data") is None and hub_id_for(None) is None
    assert hub_id_for("someone/fsdd") is None  # an unknown Hub id, not a local copy named like one


def test_text_sources_carry_their_own_split_config_and_columns():
    assert split_source_options("stanfordnlp/snli?split=validation&columns=premise+hypothesis") == (
        "stanfordnlp/snli", {"split": "validation", "columns": "premise+hypothesis"})
    assert split_source_options("Salesforce/wikitext") == ("Salesforce/wikitext", {})
    with pytest.raises(ValueError, match="split=, config= and columns="):
        split_source_options("stanfordnlp/snli?splits=validation")
    wiki, snli, story = text_sources(
        "Salesforce/wikitext?config=wikitext-2-raw-v1,stanfordnlp/snli?split=validation&columns=premise+hypothesis,"
        "story.txt", "train", text_column="text", dataset_config="other")
    assert (wiki.name, wiki.split, wiki.config, wiki.columns) == ("Salesforce/wikitext", "train", "wikitext-2-raw-v1",
                                                                  ("text",))
    assert (snli.name, snli.read_split, snli.config, snli.columns) == ("stanfordnlp/snli", "validation", "other",
                                                                       ("premise", "hypothesis"))
    assert (story.read_split, story.hub_id) == ("story", None)  # a file reads itself whatever the split
    with pytest.raises(ValueError, match="no file 'missing.txt'"):  # a missing file is not taken for a Hub id
        load_text_documents("missing.txt")


# --------------------------------------------------------------------------------------------------------------------
# Neither local nor on the Hub: one line naming the dataset and both fixes
def _assert_one_line_naming_both_fixes(error, name, folder=None):
    message = str(error.value)
    assert "\n" not in message and f"dataset {name!r} is not available" in message
    assert "--dataset" in message and f"HF_SSL_DATA_DIR/{name}" in message
    if folder is not None:
        assert f"HF_SSL_DATA_DIR/{folder}" in message


def test_missing_image_text_pairs_and_audio_datasets_say_how_to_supply_them(data_dir, offline):
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_image_dataset("uoft-cs/cifar10", "train")
    _assert_one_line_naming_both_fixes(raised, "uoft-cs/cifar10", "cifar10_jpg")
    assert "offline" in str(raised.value) and str(data_dir) in str(raised.value)
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_text_documents(["Salesforce/wikitext?config=wikitext-2-raw-v1"])
    _assert_one_line_naming_both_fixes(raised, "Salesforce/wikitext", "wikitext2")
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_pairs("stanfordnlp/snli", "validation")
    _assert_one_line_naming_both_fixes(raised, "stanfordnlp/snli", "snli_devtest")
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_sts_benchmark("sentence-transformers/stsb", "test", flag="--sts_dataset")
    assert "--sts_dataset" in str(raised.value) and "HF_SSL_DATA_DIR/stsbenchmark" in str(raised.value)
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_audio_dataset("silky1708/Free-Spoken-Digit-Dataset", "train")
    _assert_one_line_naming_both_fixes(raised, "silky1708/Free-Spoken-Digit-Dataset", "fsdd")
    with pytest.raises(DatasetNotAvailableError) as raised:
        load_emoji_captions("emoji_captions", "train")
    _assert_one_line_naming_both_fixes(raised, "emoji_captions")
    assert "no Hub copy" in str(raised.value)


def test_without_the_setting_the_error_says_to_set_it(monkeypatch, offline):
    monkeypatch.delenv(DATA_DIR_VARIABLE, raising=False)
    with pytest.raises(DatasetNotAvailableError, match=r"set HF_SSL_DATA_DIR to a folder holding a copy") as raised:
        load_image_dataset("zalando-datasets/fashion_mnist", "test")
    _assert_one_line_naming_both_fixes(raised, "zalando-datasets/fashion_mnist", "fashion_mnist")


def test_online_failures_name_the_fixes_and_other_errors_pass_through(data_dir, hub):
    with pytest.raises(DatasetNotAvailableError) as raised:  # not on the Hub (or not reachable)
        load_text_documents("someone/missing-corpus")
    _assert_one_line_naming_both_fixes(raised, "someone/missing-corpus")
    assert "DatasetNotFoundError" in str(raised.value)
    hub["someone/corpus"] = {"train": Dataset.from_dict({"text": ["A line."]})}
    with pytest.raises(ValueError, match="could not load 'someone/corpus'") as raised:  # there, but no such split
        load_text_documents("someone/corpus", "validation")
    assert not isinstance(raised.value, DatasetNotAvailableError)


# --------------------------------------------------------------------------------------------------------------------
# Hub layouts -> the standard form
def test_hub_sts_and_snli_layouts_give_the_standard_pairs(data_dir, hub):
    hub["sentence-transformers/stsb"] = {"validation": Dataset.from_dict(
        {"sentence1": ["A cat.", "A dog."], "sentence2": ["A kitten.", "A car."], "score": [0.9, 0.1]})}
    for split in ("validation", "dev"):  # the local copy's name for the Hub's validation split is accepted too
        pairs = load_sts_benchmark("sentence-transformers/stsb", split)
        assert pairs.column_names == ["anchor", "positive", "label"] and pairs["anchor"] == ["A cat.", "A dog."]
        assert np.allclose(pairs["label"], [0.9, 0.1])
    assert load_pairs("sentence-transformers/stsb", "validation")["positive"] == ["A kitten.", "A car."]
    hub["mteb/stsbenchmark-sts"] = {"test": Dataset.from_dict(
        {"sentence1": ["a"], "sentence2": ["b"], "score": [4.0]})}
    assert np.allclose(load_sts_benchmark("mteb/stsbenchmark-sts", "test")["label"], [0.8])  # 0-5 -> [0, 1]

    labels = ClassLabel(names=["entailment", "neutral", "contradiction"])
    hub["stanfordnlp/snli"] = {"validation": Dataset.from_dict(
        {"premise": ["P.", "P.", "Q."], "hypothesis": ["H1.", "H2.", "H3."], "label": [0, -1, 2]},
        features=Features({"premise": Value("string"), "hypothesis": Value("string"), "label": labels}))}
    nli = load_pairs("stanfordnlp/snli", "validation")
    assert nli.column_names == ["anchor", "positive", "label"] and nli["positive"] == ["H1.", "H3."]  # -1 dropped
    assert nli["label"] == [0, 2] and nli.features["label"].names == list(labels.names)
    assert load_snli("stanfordnlp/snli", "validation")["anchor"] == ["P.", "Q."]


@pytest.mark.filterwarnings("ignore:Downcasting array dtype")
def test_hub_cifar10_layout_gives_image_and_label(data_dir, hub):
    pixels = [np.full((4, 4, 3), value, dtype=np.uint8) for value in (0, 255)]
    hub["uoft-cs/cifar10"] = {"test": Dataset.from_dict(
        {"img": pixels, "label": [3, 5]},
        features=Features({"img": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])}))}
    test = load_image_dataset("uoft-cs/cifar10", "test")
    assert test.column_names == ["image", "label"] and test["label"] == [3, 5]


def test_hub_text_layouts_give_documents(data_dir, hub):
    hub["Salesforce/wikitext"] = {"train": Dataset.from_dict(
        {"text": ["", " = First = \n", " Body one . \n", "", " = Second = \n", " Body two . \n"]})}
    documents = load_text_documents("Salesforce/wikitext")["text"]
    assert documents == ["= First =\nBody one .", "= Second =\nBody two ."]
    assert hub["calls"][-1] == ("Salesforce/wikitext", "wikitext-2-raw-v1", "train")  # the known config by default
    hub["karpathy/tiny_shakespeare"] = {"train": Dataset.from_dict(
        {"text": ["First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n"]})}  # one row: the whole text
    speeches = load_text_documents("karpathy/tiny_shakespeare", document_boundary="blank_line")["text"]
    assert speeches == ["First Citizen:\nBefore we proceed.", "All:\nSpeak, speak."]


# --------------------------------------------------------------------------------------------------------------------
# Local copies named by Hub id
def test_local_copies_in_their_own_formats_answer_to_hub_ids(data_dir):
    sts = data_dir / "stsbenchmark"
    sts.mkdir()
    (sts / "sts-dev.csv").write_text("main-captions\tMSRvid\t2012test\t0001\t4.000\tA man.\tA person.\n")
    (sts / "sts-train.csv").write_text("main-captions\tMSRvid\t2012test\t0002\t1.000\tOne.\tTwo.\n")
    validation = load_sts_benchmark("sentence-transformers/stsb", "validation")
    assert validation["anchor"] == ["A man."] and np.allclose(validation["label"], [0.8])
    assert load_pairs("sentence-transformers/stsb", "dev")["positive"] == ["A person."]

    snli = data_dir / "snli_devtest"
    snli.mkdir()
    (snli / "SOURCE.txt").write_text("provenance, not text\n")
    (snli / "snli_validation.tsv").write_text("premise\thypothesis\tlabel\nA man sings.\tA man makes music.\t0\n")
    assert load_snli("stanfordnlp/snli", "validation")["positive"] == ["A man makes music."]
    assert load_text_documents("stanfordnlp/snli?split=validation&columns=premise+hypothesis")["text"] == [
        "A man sings.\nA man makes music."]
    with pytest.raises(ValueError, match=r"no table for split 'train'.*\?split="):  # the copy has no train split
        load_text_documents("stanfordnlp/snli", "train", text_column="premise,hypothesis")

    shakespeare = data_dir / "tinyshakespeare"
    shakespeare.mkdir()
    (shakespeare / "SOURCE.txt").write_text("Where this copy comes from.\n")
    (shakespeare / "input.txt").write_text("First Citizen:\nSpeak.\n\nAll:\nSpeak, speak.\n")
    assert load_text_documents("karpathy/tiny_shakespeare", document_boundary="blank_line")["text"] == [
        "First Citizen:\nSpeak.", "All:\nSpeak, speak."]  # SOURCE.txt is not text of the corpus


def test_tests_reach_data_only_through_the_setting(monkeypatch, tmp_path):
    """conftest.local_dataset: skips without a local copy, fails instead with HF_SSL_TESTS_REQUIRE_DATA=1."""
    from conftest import local_dataset

    monkeypatch.setenv(DATA_DIR_VARIABLE, str(tmp_path))
    monkeypatch.delenv("HF_SSL_TESTS_REQUIRE_DATA", raising=False)
    with pytest.raises(pytest.skip.Exception, match="has no local copy"):
        local_dataset("uoft-cs/cifar10")
    monkeypatch.setenv("HF_SSL_TESTS_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="HF_SSL_TESTS_REQUIRE_DATA=1"):
        local_dataset("uoft-cs/cifar10")
    (tmp_path / "cifar10_jpg").mkdir()
    assert local_dataset("uoft-cs/cifar10") == tmp_path / "cifar10_jpg"
