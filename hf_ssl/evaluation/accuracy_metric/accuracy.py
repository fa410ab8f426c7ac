"""Top-1 accuracy as a local ``evaluate`` metric.

``evaluate.load("accuracy")`` downloads its script from the Hub, which fails offline. This file is the same kind of
module, shipped inside hf_ssl, so it loads by path with no network::

    import evaluate
    from hf_ssl.evaluation.metrics import ACCURACY_METRIC_PATH

    accuracy = evaluate.load(ACCURACY_METRIC_PATH)
    accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {"accuracy": 0.666...}

It depends on numpy only (no scikit-learn), so that ``evaluate`` finds every import it checks already installed.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-1 accuracy: the fraction of examples whose predicted class equals the reference class,
accuracy = sum_i w_i [prediction_i == reference_i] / sum_i w_i (w_i = 1 unless `sample_weight` is given).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids, shape (N,).
    references (`list` of `int`): true class ids, shape (N,).
    normalize (`bool`, defaults to True): return the fraction of correct predictions; if False, the (weighted)
        number of correct predictions.
    sample_weight (`list` of `float`, optional): one non-negative weight per example, shape (N,).

Returns:
    accuracy (`float`): in [0, 1] when `normalize` is True.

Examples:
    >>> import evaluate
    >>> accuracy = evaluate.load("path/to/hf_ssl/metrics/accuracy.py")
    >>> accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Top-1 classification accuracy over integer class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions = np.asarray(predictions, dtype=np.int64)
        references = np.asarray(references, dtype=np.int64)
        if predictions.shape != references.shape:
            raise ValueError(
                f"predictions has shape {predictions.shape} but references has shape {references.shape}; "
                "pass one predicted class id per reference."
            )
        correct = (predictions == references).astype(np.float64)
        if sample_weight is None:
            weights = np.ones_like(correct)
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.shape != correct.shape:
                raise ValueError(
                    f"sample_weight has shape {weights.shape}; pass one weight per prediction ({correct.shape})."
                )
        total_correct = float((correct * weights).sum())
        if not normalize:
            return {"accuracy": total_correct}
        total_weight = float(weights.sum())
        if total_weight == 0:
            raise ValueError("accuracy of zero examples (or zero total weight) is undefined; pass one example or more.")
        return {"accuracy": total_correct / total_weight}
