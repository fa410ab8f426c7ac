"""Text corpora as documents: sentence-pair tables (SNLI's TSV) for task-adaptive pretraining, several corpora at once,
the recipe that combines them, and clear errors for bad tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import pytest
from conftest import local_dataset

from hf_ssl.data.tables import read_table_columns, rows_to_documents
from hf_ssl.data.text import load_text_documents, parse_sources, split_sentences, text_sources

ROOT = Path(__file__).resolve().parents[1]
SNLI = "stanfordnlp/snli"  # the Hub id; tests read its local copy (HF_SSL_DATA_DIR)
RECIPE = ROOT / "recipes" / "configs" / "mlm-bert-tiny-snli.yaml"
PAIRS = "premise,hypothesis"


@pytest.fixture
def snli_like(tmp_path) -> Path:
    """An SNLI-format TSV (premise, hypothesis, label) whose labels are words that must never reach the text."""
    path = tmp_path / "pairs.tsv"
    path.write_text(
        "premise\thypothesis\tlabel\n"
        "A man plays a guitar.\tA man makes music.\tLABELENTAIL\n"
        "A man plays a guitar.\tThe man sleeps.\tLABELCONTRA\n"
        "Two dogs run on \"wet\" sand.\tAnimals are outside.\tLABELENTAIL\n"
        "A man plays a guitar.\tA man makes music.\tLABELENTAIL\n"
        "A man plays a guitar.\tHe is on a stage.\tLABELNEUTRAL\n",
        encoding="utf-8",
    )
    return path


def test_snli_rows_become_one_document_per_premise_with_its_hypotheses(snli_like):
    documents = load_text_documents(str(snli_like), text_column=PAIRS)["text"]
    assert documents == [
        "A man plays a guitar.\nA man makes music.\nThe man sleeps.\nHe is on a stage.",  # repeated pair kept once
        'Two dogs run on "wet" sand.\nAnimals are outside.',  # TSV: quotes are text, not quoting
    ]
    assert not any("LABEL" in document for document in documents)
    assert split_sentences(documents[0])[1:] == ["A man makes music.", "The man sleeps.", "He is on a stage."]
    rows = load_text_documents(str(snli_like), text_column=PAIRS, document_boundary="row")["text"]
    assert len(rows) == 5 and rows[1] == "A man plays a guitar.\nThe man sleeps."


@pytest.mark.needs_data(SNLI)
def test_real_snli_validation_documents_hold_every_sentence_and_no_label():
    documents = load_text_documents(f"{SNLI}?split=validation&columns=premise+hypothesis")["text"]
    rows = read_table_columns(local_dataset(SNLI) / "snli_validation.tsv", ["premise", "hypothesis", "label"])
    assert len(rows) == 9842
    premises = {premise for premise, _, _ in rows}
    assert len(documents) == len(premises) and {document.split("\n")[0] for document in documents} == premises
    lines = {line for document in documents for line in document.split("\n")}
    assert {hypothesis.strip() for _, hypothesis, _ in rows} <= lines
    assert not lines & {"0", "1", "2"} and not any("\t" in document for document in documents)
    # the same documents as the table file read directly, or the Hub id with the split and columns given apart
    assert load_text_documents(str(local_dataset(SNLI) / "snli_validation.tsv"), text_column=PAIRS)["text"] == documents
    assert load_text_documents(SNLI, "validation", text_column=PAIRS)["text"] == documents


def test_table_without_the_named_columns_fails_naming_the_fix(snli_like):
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\].*premise.*--text_column premise,hypothesis"):
        load_text_documents(str(snli_like))  # the default text column is `text`
    with pytest.raises(ValueError, match=r"no column\(s\) \['sentence2'\]"):
        load_text_documents(str(snli_like), text_column="premise,sentence2")


def test_short_rows_and_bad_boundaries_fail_clearly(tmp_path, snli_like):
    broken = tmp_path / "broken.tsv"
    broken.write_text("premise\thypothesis\tlabel\nonly a premise\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: 1 field"):
        load_text_documents(str(broken), text_column=PAIRS)
    with pytest.raises(ValueError, match="'auto'.*'row'"):
        load_text_documents(str(snli_like), text_column=PAIRS, document_boundary="blank_line")
    folder = tmp_path / "only_tables"
    folder.mkdir()
    (folder / "pairs.tsv").write_text(snli_like.read_text())
    with pytest.raises(ValueError, match="pass the file itself"):
        load_text_documents(str(folder), text_column=PAIRS)


def test_csv_tables_use_standard_quoting(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('label,premise,hypothesis\n2,"A cat, asleep.",A cat runs.\n', encoding="utf-8")
    assert load_text_documents(str(path), text_column=PAIRS)["text"] == ["A cat, asleep.\nA cat runs."]


def test_several_corpora_are_concatenated_in_order(tmp_path, snli_like):
    story = tmp_path / "story.txt"
    story.write_text("First paragraph here.\n\nSecond paragraph here.\n", encoding="utf-8")
    as_list = load_text_documents([str(story), str(snli_like)], text_column=PAIRS)["text"]
    assert as_list == ["First paragraph here.", "Second paragraph here.",
                       *load_text_documents(str(snli_like), text_column=PAIRS)["text"]]
    assert load_text_documents(f"{story}, {snli_like}", text_column=PAIRS)["text"] == as_list
    assert parse_sources(["a,b", "c"]) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="no corpus given"):
        parse_sources(" , ")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty.txt"):  # the error names the corpus that has no text
        load_text_documents([str(story), str(empty)])


def test_datasets_rows_with_several_text_columns_are_grouped(monkeypatch):
    rows = datasets.Dataset.from_dict(
        {"premise": ["P one.", "P one.", "P two."], "hypothesis": ["H a.", "H b.", "H c."], "label": [0, 1, 2]}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows)
    assert load_text_documents("some/nli", "validation", text_column=PAIRS)["text"] == ["P one.\nH a.\nH b.",
                                                                                       "P two.\nH c."]
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        load_text_documents("some/nli", "validation")
    assert rows_to_documents([("Same.", "Same."), ("", "orphan")]) == ["Same."]


def test_tapt_recipe_parses_and_never_names_the_snli_test_split():
    from hf_ssl.jobs.runner import parse_arguments

    encoder_args, data_args, method_config, training_args = parse_arguments([str(RECIPE), "--output_dir", "x"])
    assert encoder_args.encoder == "bert-tiny" and method_config.method == "mlm"
    assert data_args.dataset == ["Salesforce/wikitext?config=wikitext-2-raw-v1",
                                 "stanfordnlp/snli?split=validation&columns=premise+hypothesis"]
    assert data_args.max_seq_length == 64 and data_args.eval_split is None
    # whatever split the job asks for (train, or an eval split), SNLI is read from validation, premise + hypothesis only
    for split in (data_args.train_split, "test", None):
        sources = text_sources(data_args.dataset, split, text_column=data_args.text_column,
                               dataset_config=data_args.dataset_config)
        assert [source.hub_id for source in sources] == ["Salesforce/wikitext", SNLI]
        assert sources[0].config == "wikitext-2-raw-v1"
        assert (sources[1].read_split, sources[1].columns) == ("validation", ("premise", "hypothesis"))
        assert not any("test" in (source.read_split or "") for source in sources if source.hub_id == SNLI)
    _, overridden, _, _ = parse_arguments([str(RECIPE), "--dataset", "a.txt", "b.tsv"])
    assert overridden.dataset == ["a.txt", "b.tsv"]


def test_benchmark_refuses_a_recipe_that_pretrains_on_snli_test(tmp_path):
    spec = importlib.util.spec_from_file_location("mlm_downstream_snli", ROOT / "benchmarks" / "mlm_downstream_snli.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    snli = benchmark.recipe_sources(RECIPE)[-1]
    assert snli.hub_id == SNLI and snli.read_split == "validation"
    leaky = tmp_path / "leaky.yaml"
    for corpus in ("Salesforce/wikitext,stanfordnlp/snli?split=test&columns=premise+hypothesis",  # the Hub's test split
                   "Salesforce/wikitext,some/copy/snli_devtest/snli_test.tsv",  # a file of the local copy
                   "stanfordnlp/snli\ntrain_split: test", "stanfordnlp/snli\neval_split: test"):  # via the job's splits
        leaky.write_text(f"dataset: {corpus}\ntext_column: premise,hypothesis\n")
        with pytest.raises(SystemExit, match="must not be pretrained on"):
            benchmark.recipe_sources(leaky)


def test_text_job_runs_on_a_text_file_plus_a_pair_table(tmp_path, snli_like):
    from hf_ssl.jobs.runner import run

    story = tmp_path / "story.txt"
    story.write_text("\n\n".join(f"Paragraph {i} tells a short story. It has two sentences." for i in range(8)))
    out = tmp_path / "out"
    probes = run([
        str(RECIPE), "--dataset", str(story), str(snli_like), "--text_column", PAIRS, "--output_dir", str(out),
        "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--eval_fraction", "0.2", "--tokenizer_vocab_size", "120",
        "--encoder_config_overrides", json.dumps({"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                                  "intermediate_size": 32}),
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1",
    ])
    assert 0 <= probes["pretrained"]["masked_accuracy"] <= 1
    record = json.loads((out / "hf_ssl_run.json").read_text())
    assert record["data"]["dataset"] == [str(story), str(snli_like)]
    names = {item["dataset_name"] for item in json.loads((out / "eval_results.json").read_text())["eval_results"]}
    assert names == {"story.txt + pairs.tsv"}
