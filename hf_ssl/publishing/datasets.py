"""What model cards say about known datasets: name, licence, citation, split sizes, keyed by Hub id."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetFacts:
    """What a card says about a known data set (``../shared/data/INDEX.md`` and ``hf_ssl/assets/SOURCE.md``)."""

    name: str
    licence: str
    citation: str
    split_sizes: dict[str, int] = field(default_factory=dict)
    hub_id: str | None = None


#: Keyed by the ``--dataset`` value or the data folder's name.
KNOWN_DATASETS: dict[str, DatasetFacts] = {
    "embedded": DatasetFacts(
        "Fashion-MNIST subset embedded in hf_ssl (hf_ssl/assets/fashion_mnist_subset.npz: the first 1,000 / 200 "
        "images per class of the official train / test files)", "MIT (Copyright 2017 Zalando SE)",
        "Xiao, Rasul & Vollgraf 2017. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning "
        "Algorithms. arXiv:1708.07747", {"train": 10_000, "test": 2_000}, "zalando-datasets/fashion_mnist"),
    "fashion_mnist": DatasetFacts(
        "Fashion-MNIST (original IDX files)", "MIT (Copyright 2017 Zalando SE)",
        "Xiao, Rasul & Vollgraf 2017. Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning "
        "Algorithms. arXiv:1708.07747", {"train": 60_000, "test": 10_000}, "zalando-datasets/fashion_mnist"),
    "cifar10_jpg": DatasetFacts(
        "CIFAR-10 (32x32 JPEG copy, quality about 75: accuracies run slightly below those on the official binaries)",
        "none stated by the authors", "Krizhevsky 2009. Learning Multiple Layers of Features from Tiny Images",
        {"train": 50_000, "test": 10_000}, "uoft-cs/cifar10"),
    "fsdd": DatasetFacts(
        "Free Spoken Digit Dataset (8 kHz WAV)", "CC BY-SA 4.0",
        "Jackson et al. Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset",
        {"train": 2_700, "test": 300}),
    "emoji_captions": DatasetFacts(
        "Emoji glyphs (64x64) with their Unicode names as captions", "font: SIL OFL 1.1",
        "Unicode emoji names; glyphs rendered from an OFL-licensed font", {"all": 1_373}),
    "stsbenchmark": DatasetFacts(
        "STS Benchmark", "scores CC BY-SA 4.0; texts keep their sources' licences",
        "Cer et al. 2017. SemEval-2017 Task 1: Semantic Textual Similarity. arXiv:1708.00055",
        {"train": 5_749, "validation": 1_500, "test": 1_379}, "sentence-transformers/stsb"),
    "snli_devtest": DatasetFacts(
        "SNLI (validation and test splits)", "CC BY-SA 4.0",
        "Bowman et al. 2015. A large annotated corpus for learning natural language inference. arXiv:1508.05326",
        {"validation": 9_842, "test": 9_824}, "stanfordnlp/snli"),
    "tinyshakespeare": DatasetFacts(
        "Tiny Shakespeare", "public domain", "Karpathy 2015. char-rnn, tinyshakespeare/input.txt"),
    "wikitext2": DatasetFacts(
        "WikiText-2", "CC BY-SA 3.0 / GFDL",
        "Merity et al. 2016. Pointer Sentinel Mixture Models. arXiv:1609.07843", hub_id="Salesforce/wikitext"),
}
