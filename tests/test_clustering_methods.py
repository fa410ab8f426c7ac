"""Instance discrimination (memory bank) and DeepCluster: the losses against the papers' formulas, the bank update,
empty clusters, cluster-balanced sampling, exact resume, 2 processes = 1 process, and vanilla loading.

Run as a script (``MODE OUT_FILE OUTPUT_DIR``), this file is also the worker of the 2-process check
(:func:`test_distributed.run_worker`)."""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_vit_config
from test_distributed import run_worker
from transformers import AutoModel, set_seed

from hf_ssl.jobs.clustering import IndexedViewConfig, IndexedViewTransform
from hf_ssl.jobs.runner import job_class_for, parse_arguments
from hf_ssl.losses.instance_discrimination import MemoryBankLoss
from hf_ssl.methods import AutoSSLModel, DeepClusterForPreTraining, InstanceDiscriminationForPreTraining
from hf_ssl.training.callbacks import ViewEpochCallback
from hf_ssl.training.clustering import ClusterBalancedSampler, cluster_features, split_empty_clusters
from hf_ssl.training.output_dir import prepare_output_dir
from hf_ssl.training.trainer import SSLTrainer
from hf_ssl.views import apply_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_ENCODER = json.dumps({"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                           "intermediate_size": 64})
#: Per method: its flags for a 4-step run on 32 embedded images, global batch 8. DeepCluster re-clusters every 3
#: steps (epochs of 3 steps), so the checkpoint at step 2 lies inside the first clustering period.
METHOD_FLAGS = {
    "instance_discrimination": ["--num_negatives", "16", "--proximal_weight", "0.5"],
    "deepcluster": ["--num_clusters", "4", "--reassign_every", "3", "--pca_dim", "8"],
}
GLOBAL_BATCH, STEPS = 8, 4


def run_flags(method: str, output_dir, processes: int = 1, resume: str | None = None) -> list[str]:
    flags = [
        "--method", method, "--dataset", "embedded", "--max_train_examples", "32", "--encoder", "vit-tiny",
        "--encoder_config_overrides", TINY_ENCODER, "--patch_size", "4", "--global_crop_size", "16",
        "--per_device_train_batch_size", str(GLOBAL_BATCH // processes), "--max_steps", str(STEPS),
        "--learning_rate", "1e-3", "--warmup_steps", "0", "--eval_strategy", "no", "--save_steps", "2",
        "--final_comparison", "false", "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none",
        "--use_cpu", "true", "--seed", "5", "--output_dir", str(output_dir), *METHOD_FLAGS[method],
    ]
    if processes > 1:
        flags += ["--ddp_backend", "gloo"]
    return flags + (["--resume_from_checkpoint", resume] if resume else [])


def train(method: str, output_dir, processes: int = 1, resume: str | None = None) -> dict:
    """What ``hf-ssl pretrain`` does up to the end of training (the job's model, data, sampler and callbacks in
    ``SSLTrainer``), without publishing (which ends the process group on the other ranks); returns the trained state
    (every weight and buffer) and the logged losses by step."""
    *job_arguments, method_config, training_args = parse_arguments(run_flags(method, output_dir, processes, resume))
    checkpoint = prepare_output_dir(training_args, method)
    set_seed(training_args.seed)
    job = job_class_for(method)(job_arguments, method_config, training_args)
    parts = job.prepare()
    trainer = SSLTrainer(model=parts.model, args=training_args, train_dataset=parts.train_dataset,
                         train_sampler=parts.train_sampler, callbacks=parts.callbacks, **parts.trainer_kwargs)
    # DeepCluster's sampler and the views follow the epoch through one callback (no duplicate-callback warning).
    followers = [callback.followers for callback in trainer.callback_handler.callbacks
                 if isinstance(callback, ViewEpochCallback)]
    assert len(followers) == 1 and len(followers[0]) == (2 if parts.train_sampler is not None else 1)
    trainer.train(resume_from_checkpoint=checkpoint)
    if resume is None and trainer.is_world_process_zero():
        trainer.save_published_model(str(output_dir))
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {"state": {key: value.detach().clone() for key, value in model.state_dict().items()},
            "losses": {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}}


def tiny_instance_discrimination(**overrides) -> InstanceDiscriminationForPreTraining:
    settings = {"num_examples": 12, "projection_dim": 8, "num_negatives": 5}
    settings.update(overrides)
    return InstanceDiscriminationForPreTraining.from_encoder_config(tiny_vit_config(), **settings)


# ---------------------------------------------------------------------------------------------------------------------
# Instance discrimination: the losses and the bank
def naive_nce(features, indices, bank, noise, temperature, z):
    """Wu et al. 2018 Eq. 6-7 written out: P(j|f) = exp(v_j.f/T) / Z, h = P / (P + m/N), loss = -log h(i) -
    sum_k log(1 - h(j_k)), mean over the batch."""
    n, m = len(bank), noise.shape[1]
    total = 0.0
    for row, (feature, index) in enumerate(zip(features, indices)):
        feature = feature / feature.norm()
        p_pos = torch.exp(torch.dot(bank[index], feature) / temperature) / z
        total = total - torch.log(p_pos / (p_pos + m / n))
        for j in noise[row]:
            p = torch.exp(torch.dot(bank[j], feature) / temperature) / z
            total = total - torch.log(1 - p / (p + m / n))
    return total / len(features)


def naive_softmax(features, indices, bank, temperature):
    """Wu et al. 2018 Eq. 2 written out: -log exp(v_i.f/T) / sum_j exp(v_j.f/T), mean over the batch."""
    total = 0.0
    for feature, index in zip(features, indices):
        feature = feature / feature.norm()
        scores = [torch.exp(torch.dot(entry, feature) / temperature) for entry in bank]
        total = total - torch.log(scores[index] / sum(scores))
    return total / len(features)


def test_nce_loss_equals_the_paper_formula_with_z_estimated_once():
    torch.manual_seed(0)
    loss_fn = MemoryBankLoss(num_examples=10, dim=6, temperature=0.5, num_negatives=4).double()
    features = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([7, 2, 9])
    for call in range(2):
        loss_fn.eval()
        noise = loss_fn.noise_indices(3, features.device)  # evaluation mode: the draw the next training call makes
        loss_fn.train()
        bank = loss_fn.bank.clone()
        if call == 0:  # Eq. 8: Z = N * mean of exp(v.f / T) over every score of the first batch (reference code)
            normalised = features.detach() / features.detach().norm(dim=1, keepdim=True)
            rows = torch.cat([indices[:, None], noise], dim=1)
            z = 10 * torch.exp(torch.einsum("nd,nkd->nk", normalised, bank[rows]) / 0.5).mean()
        loss, _ = loss_fn(features, indices)
        (grad,) = torch.autograd.grad(loss, features)
        expected = naive_nce(features, indices, bank, noise, 0.5, z)
        (expected_grad,) = torch.autograd.grad(expected, features)
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(grad, expected_grad)  # Z is a constant: no gradient through it
        torch.testing.assert_close(loss_fn.normalization_constant, z.detach())  # kept from the first batch on
        loss_fn.update(features, indices)
    assert int(loss_fn.draws) == 2  # each training call draws new noise


def test_softmax_and_proximal_losses_equal_the_paper_formulas():
    torch.manual_seed(1)
    loss_fn = MemoryBankLoss(num_examples=9, dim=5, temperature=0.07, objective="softmax").double()
    features = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    indices = torch.tensor([0, 8, 3, 4])
    loss, _ = loss_fn(features, indices)
    expected = naive_softmax(features, indices, loss_fn.bank, 0.07)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, features)[0], torch.autograd.grad(expected, features)[0])
    loss_fn.proximal_weight = 30.0  # Eq. 10: + lambda ||f_i - v_i||^2 (f normalised, v_i before the update)
    with_proximal, _ = loss_fn(features, indices)
    normalised = features / features.norm(dim=1, keepdim=True)
    proximal = 30.0 * sum((f - loss_fn.bank[i]).pow(2).sum() for f, i in zip(normalised, indices)) / 4
    torch.testing.assert_close(with_proximal, expected + proximal)


def test_memory_bank_update_is_the_momentum_average_and_evaluation_leaves_it_alone():
    torch.manual_seed(2)
    model = tiny_instance_discrimination(memory_momentum=0.5)
    pixels, indices = torch.randn(3, 3, 16, 16), torch.tensor([4, 0, 11])
    before = model.loss_fn.bank.clone()
    model.eval()
    model(pixels, ssl_index=indices)
    assert torch.equal(model.loss_fn.bank, before) and int(model.loss_fn.draws) == 0
    model.train()
    output = model(pixels, ssl_index=indices)
    output.loss.backward()  # the update wrote the bank in place after the loss: backward still works
    expected = before.clone()
    mixed = 0.5 * before[indices] + 0.5 * output.embeddings.detach()
    expected[indices] = mixed / mixed.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model.loss_fn.bank, expected)
    assert torch.equal(model.loss_fn.bank[[1, 2, 3]], before[[1, 2, 3]])  # other rows untouched


# ---------------------------------------------------------------------------------------------------------------------
# DeepCluster: the clustering, empty clusters, sampling, the classification step
def test_split_empty_clusters_moves_a_perturbed_centroid_and_shares_the_points():
    features = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.2, 5.0], [5.0, 5.4], [5.3, 5.3]])
    centroids = np.array([[0.05, 0.0], [5.1, 5.2], [-50.0, -50.0]])  # cluster 2 is empty
    labels = np.array([0, 0, 1, 1, 1, 1])
    new_centroids, new_labels = split_empty_clusters(features, centroids, labels, np.random.default_rng(0))
    counts = np.bincount(new_labels, minlength=3)
    assert (counts > 0).all()
    # The split cluster is the only one with points to spare in proportion (|1| - 1 = 3 against |0| - 1 = 1 here:
    # either may be drawn); its points, and only those, are now shared between it and the formerly empty cluster.
    split = 0 if counts[0] < 2 else 1
    members = labels == split
    assert set(new_labels[members]) == {split, 2} and (new_labels[~members] == labels[~members]).all()
    for cluster in range(3):
        np.testing.assert_allclose(new_centroids[cluster], features[new_labels == cluster].mean(axis=0))
    # Identical points are equally near both halves: they are shared half and half.
    same = np.ones((4, 2))
    _, shared = split_empty_clusters(same, np.array([[1.0, 1.0], [9.0, 9.0]]), np.zeros(4, int),
                                     np.random.default_rng(0))
    assert np.bincount(shared).tolist() == [2, 2]


def test_cluster_features_finds_separated_groups_after_pca_whitening():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 20
    features = np.concatenate([centre + rng.normal(size=(15, 10)) for centre in centres])
    labels = cluster_features(torch.from_numpy(features).float(), 3, pca_dim=4, seed=0)
    assert labels.dtype == torch.int64 and labels.shape == (45,)
    groups = [set(labels[15 * g : 15 * (g + 1)].tolist()) for g in range(3)]
    assert all(len(group) == 1 for group in groups) and len(set.union(*groups)) == 3
    with pytest.raises(ValueError, match="lower num_clusters"):
        cluster_features(features[:2], 3)


def test_cluster_balanced_sampler_weights_each_example_by_its_cluster_size():
    assignments = torch.tensor([0] * 12 + [1] * 3 + [2] + [-1] * 4)
    sampler = ClusterBalancedSampler(30000, seed=1)
    with pytest.raises(ValueError, match="set_assignments"):
        sampler.weights()
    sampler.set_assignments(assignments)
    weights = sampler.weights()
    torch.testing.assert_close(weights, torch.tensor([1 / 12] * 12 + [1 / 3] * 3 + [1.0] + [0.0] * 4,
                                                     dtype=torch.float64))
    order = list(sampler)
    assert len(order) == len(sampler) == 30000
    drawn = torch.bincount(assignments[order], minlength=3).double() / 30000
    torch.testing.assert_close(drawn, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0)  # uniform
    assert list(sampler) == order  # the order depends on (seed, epoch) only
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_deepcluster_loss_is_cross_entropy_on_the_pseudo_labels_and_resets_the_classifier():
    model = DeepClusterForPreTraining.from_encoder_config(tiny_vit_config(), num_examples=6, num_clusters=3)
    pixels, indices = torch.randn(4, 3, 16, 16), torch.tensor([5, 0, 2, 3])
    with pytest.raises(ValueError, match="no pseudo-label yet"):
        model(pixels, ssl_index=indices)
    model.set_assignments(torch.tensor([0, 1, 2, 0, 1, 2]), epoch=0, generator=torch.Generator().manual_seed(0))
    first = model.classifier.weight.clone()
    output = model(pixels, ssl_index=indices)
    logits = output.logits
    expected = -sum(torch.log_softmax(row, 0)[label] for row, label in zip(logits, [2, 0, 2, 0])) / 4
    torch.testing.assert_close(output.loss, expected)
    model.set_assignments(torch.tensor([1, 1, 2, 0, 1, 2]), epoch=1, generator=torch.Generator().manual_seed(1))
    assert int(model.assignment_epoch) == 1 and not torch.equal(model.classifier.weight, first)
    assert torch.equal(model.classifier.bias, torch.zeros(3)) and 0.005 < model.classifier.weight.std() < 0.02
    with pytest.raises(ValueError, match="at least num_clusters"):
        DeepClusterForPreTraining.from_encoder_config(tiny_vit_config(), num_examples=2, num_clusters=3)


def test_indexed_views_carry_the_dataset_index_into_the_batch(embedded_images):
    from hf_ssl.data import stack_views

    transform = IndexedViewTransform(IndexedViewConfig(global_crop_size=16), seed=3)
    views = apply_views(embedded_images["train"].select(range(5)), transform)
    batch = stack_views([views[i] for i in (4, 1, 2)])
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and batch["ssl_index"].tolist() == [4, 1, 2]
    assert torch.equal(stack_views([views[4]])["pixel_values"][0], batch["pixel_values"][0])  # seeded per example
    with pytest.raises(ValueError, match="apply_views"):
        transform({"image": [embedded_images["train"][0]["image"]]})


# ---------------------------------------------------------------------------------------------------------------------
# Training: exact resume, vanilla loading, 2 processes
@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Both methods' 4-step runs on 2 gloo processes with half the batch each, launched in a thread so that they run
    beside the one-process runs; ``result()`` waits for them."""
    folder = tmp_path_factory.mktemp("gloo")
    launch = concurrent.futures.ThreadPoolExecutor(1)
    yield launch.submit(run_worker, folder, "train", 2, Path(__file__))
    launch.shutdown()


@pytest.fixture(scope="module")
def one_process_runs(two_process_runs, tmp_path_factory):
    """Per method: the uninterrupted 1-process run (which writes checkpoint-2 and publishes its model in ``folder``)
    and a run resumed from its checkpoint-2."""
    runs = {}
    for method in METHOD_FLAGS:
        folder = tmp_path_factory.mktemp(method)
        runs[method] = {"full": train(method, folder / "full"), "folder": folder / "full"}
        runs[method]["resumed"] = train(method, folder / "resumed", resume=str(folder / "full" / "checkpoint-2"))
    return runs


def assert_states_close(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if value.dtype == torch.long:
            assert torch.equal(actual[key], value), key
        else:
            torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=atol, msg=key)


@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_resumed_run_equals_the_uninterrupted_one(one_process_runs, method):
    """The bank (with Z and the noise draws) / the assignments (and the clustering epoch) come back from checkpoint-2:
    the resumed run draws the same noise, does not re-cluster mid-period, and ends with the same weights and buffers."""
    full, resumed = one_process_runs[method]["full"], one_process_runs[method]["resumed"]
    assert_states_close(resumed["state"], full["state"])
    assert [resumed["losses"][step] for step in (3, 4)] == [full["losses"][step] for step in (3, 4)]
    if method == "deepcluster":
        assert int(full["state"]["assignment_epoch"]) == 1  # re-clustered at step 3, the second period's start
    else:
        assert int(full["state"]["loss_fn.draws"]) == STEPS


@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_trained_model_loads_as_vanilla_transformers(one_process_runs, method):
    folder = one_process_runs[method]["folder"]
    encoder, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(encoder).__name__ == "ViTModel" and not any(info.values())
    model = AutoSSLModel.from_pretrained(str(folder)).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(pixel_values=pixels).last_hidden_state,
                                   model.encoder(pixel_values=pixels).last_hidden_state)
    initial = AutoModel.from_config(encoder.config)
    assert not torch.allclose(encoder.embeddings.patch_embeddings.projection.weight,
                              initial.embeddings.patch_embeddings.projection.weight)


@pytest.mark.parametrize("method", list(METHOD_FLAGS))
def test_two_processes_match_one_process_with_double_batch(one_process_runs, two_process_runs, method):
    """The memory bank gathers (index, feature) from both processes and both draw the global batch's noise; the
    clustering runs on process 0 and its assignments are broadcast: the losses, weights, bank and assignments of 2
    processes with half the batch are those of 1 process."""
    launched = two_process_runs.result()
    assert launched["world_size"] == 2
    single, double = one_process_runs[method]["full"], launched["result"][method]
    assert_states_close(double["state"], single["state"])
    for step, loss in single["losses"].items():
        assert math.isclose(double["losses"][step], loss, rel_tol=1e-3, abs_tol=1e-3), step


def main():
    """Worker: ``train OUT_FILE OUTPUT_DIR`` trains both methods on the processes torchrun started; rank 0 saves."""
    mode, out_file, output_dir = sys.argv[1:4]
    if mode != "train":
        raise SystemExit(f"unknown mode {mode!r}; this worker runs 'train'")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    result = {method: train(method, Path(output_dir) / method, processes) for method in METHOD_FLAGS}
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"result": result, "world_size": processes}, out_file)


if __name__ == "__main__":
    main()
