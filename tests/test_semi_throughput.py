"""The hand-written FixMatch step of the semi-supervised throughput benchmark (benchmarks/semi_throughput.py) computes
the same maths as hf_ssl's SemiSupervisedTrainer + FixMatch: from the same weights, one full step on the first batch of
hf_ssl's loader gives the same loss, gradients, weights and EMA (and the same EMA decay schedule), at the recipe's
threshold and at one that keeps half of the pseudo-labels; and the check fails when the maths differs."""


import pytest
import torch
from conftest import benchmark_script

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_ENCODER = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def throughput():
    return benchmark_script("semi_throughput")


@pytest.fixture(scope="module")
def tiny_run(throughput, tmp_path_factory):
    """The recipe's settings with a tiny ViT: 4 labelled + 28 unlabelled examples per step, 3 steps planned."""
    workdir = str(tmp_path_factory.mktemp("semi_throughput"))
    parsed = throughput.parse_recipe(workdir, 4, 3, 0, "cpu", encoder_overrides=TINY_ENCODER)
    classifier = throughput.build_classifier(parsed)
    init_state = {key: value.detach().clone() for key, value in classifier.state_dict().items()}
    settings = throughput.run_settings(parsed, classifier, num_batches=1, seed=0)
    return parsed, settings, init_state


@pytest.mark.parametrize("hand_weak_pass", ["joint", "no_grad"])
def test_hand_written_fixmatch_matches_hf_ssl_on_the_first_step(throughput, tiny_run, hand_weak_pass):
    parsed, settings, init_state = tiny_run
    settings = {**settings, "hand_weak_pass": hand_weak_pass}
    report = throughput.check_parity(parsed, settings, init_state, CPU)
    assert report["ok"], report
    recipe, half = report["recipe_threshold"], report["half_kept_threshold"]
    assert recipe["threshold"] == parsed[3].threshold == 0.95
    assert 0.0 < half["mask_rate"] < 1.0  # the unsupervised term carries gradient there
    assert half["hf_ssl_loss"] > recipe["hf_ssl_loss"]
    for checked in (recipe, half):
        assert checked["first_batch_of_hf_ssl_loader_is_the_planned_one"]
        assert checked["trained_tensors_compared"] == len(init_state)
        assert checked["weights_step_max_abs"] > 0 and checked["ema_first_update_max_abs"] > 0
    assert len(settings["plan"]) == 3 and [len(part) for part in settings["plan"][0]] == [4, 28]


@pytest.mark.parametrize("hand_overrides", [{"unsupervised_weight": 2.0}, {"ema_warmup": False}, {"ema_decay": 0.99}])
def test_parity_check_catches_different_maths(throughput, tiny_run, hand_overrides):
    parsed, settings, init_state = tiny_run
    batch = throughput.planned_batch(throughput.make_data(settings["data"], 0), settings["plan"][0])
    threshold = throughput.splitting_threshold(settings, init_state, batch, CPU)
    report = throughput.compare_first_step(parsed, settings, init_state, CPU, threshold=threshold,
                                           hand_overrides=hand_overrides)
    assert not report["ok"]
    if "unsupervised_weight" in hand_overrides:
        assert report["loss_abs_diff"] > 1e-3
        return
    assert report["loss_abs_diff"] == 0.0  # the EMA's decay differs, the training step does not
    assert report["ema_decay_schedule_max_abs_diff"] > 1e-4
    if "ema_warmup" in hand_overrides:  # 0.999 instead of 0.5 at the first update
        assert report["ema_after_first_update_max_abs_diff"] > 0.1 * report["ema_first_update_max_abs"]
