"""SimSiam and MAE on 2 gloo processes, each with half of a fixed global batch, give the loss and the (DDP-averaged)
gradients of 1 process with the whole batch; the checks can fail (rank 0's shard alone, masks from each process's
own RNG, or mismatched shards give other numbers)."""

from pathlib import Path

import pytest
import torch
from test_distributed import one_and_two_processes, run_worker

WORKER = Path(__file__).with_name("distributed_worker_simsiam_mae.py")


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """The worker's ``all`` mode on 1 process with the global batch and on 2 gloo processes with half each."""
    return one_and_two_processes(tmp_path_factory.mktemp("gloo"), "all", WORKER)


def assert_grads_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys() and len(expected) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["simsiam", "mae", "mae_seeded"])
def test_two_processes_match_one_process_with_double_batch(gloo_runs, method):
    """SimSiam: the loss is a mean over the batch and the BatchNorm heads run in evaluation mode (per-process
    statistics otherwise), so the mean of the 2 shards' losses and DDP's averaged gradients are the global ones.
    MAE: the loss is a mean over the masked patches; every image masks exactly the same number of patches, so equal
    shards hold equal counts and the mean of the per-process means is the global mean (checked below). Its masks
    come from each example's noise (``mae``) or from each example's seed (``mae_seeded``, as in training)."""
    single, double = (run[method] for run in gloo_runs)
    torch.testing.assert_close(double["loss"], single["loss"], rtol=1e-5, atol=1e-6)
    assert_grads_close(double["grads"], single["grads"])


@pytest.mark.parametrize("method", ["mae", "mae_seeded"])
def test_mae_masks_belong_to_the_example_and_counts_are_equal(gloo_runs, method):
    single, double = (run[method] for run in gloo_runs)
    assert torch.equal(double["masks"], single["masks"])  # each example's own noise: same mask on rank 0 / 1 / alone
    counts = double["masked_counts"]
    assert counts.shape == (2,) and torch.equal(counts, counts[:1].expand(2))  # equal counts: mean of means is exact
    assert counts.sum() == single["masked_counts"].sum() == 8 * 12  # 75 % of 16 patches in each of 8 images


@pytest.mark.parametrize("method", ["simsiam", "mae"])
def test_the_check_fails_without_the_cross_process_mean(gloo_runs, method):
    """Rank 0's shard alone (no all-reduce of the loss, no DDP averaging) is not the global batch's loss / gradient,
    so the comparisons above are not vacuous."""
    single, double = (run[method] for run in gloo_runs)
    assert not torch.allclose(double["rank0_loss"], single["loss"], rtol=1e-3, atol=1e-4)
    differing = [name for name, grad in single["grads"].items()
                 if not torch.allclose(double["rank0_grads"][name], grad, rtol=1e-3, atol=1e-5)]
    assert len(differing) > len(single["grads"]) // 2
    # On one process "rank 0's shard" is the whole batch: the same numbers as the full step.
    torch.testing.assert_close(single["rank0_loss"], single["loss"])


def test_mae_masks_from_each_process_rng_do_not_match_one_process(gloo_runs):
    """Without per-example noise, two identically seeded processes draw the same masks for their i-th examples: the
    2-process loss is then not the 1-process one. The masks must travel with the example (its ``noise``)."""
    single, double = (run["mae"] for run in gloo_runs)
    assert not torch.allclose(double["global_rng_loss"], single["global_rng_loss"], rtol=1e-3, atol=1e-4)


def test_two_process_mae_trainer_run_matches_one_process(tmp_path):
    """The whole MAE stack: sharded sampling, per-example views and mask seeds, DDP gradients, AdamW: two steps on 2
    processes with 4 images each give the weights of 1 process with 8."""
    single, double = run_worker(tmp_path, "trainer", 1, WORKER), run_worker(tmp_path, "trainer", 2, WORKER)
    assert double["world_size"] == 2 and len(single["result"]) > 10
    for key, value in single["result"].items():
        torch.testing.assert_close(double["result"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_single_view_mask_seeds_follow_the_example_not_the_batch(embedded_images):
    """In training the MAE mask seed comes with the view, seeded by ``(seed, epoch, index)``: an example's seed (and so
    its mask) is the same in any batch, changes with the epoch, and differs between examples."""
    from hf_ssl.data import stack_views
    from hf_ssl.views import SingleViewConfig, SingleViewTransform, apply_views

    transform = SingleViewTransform(SingleViewConfig(16), seed=3)
    views = apply_views(embedded_images["train"].select(range(6)), transform)
    whole = stack_views([views[i] for i in range(6)])["mask_seed"]
    second_half = stack_views([views[i] for i in range(3, 6)])["mask_seed"]
    assert whole.dtype == torch.int64 and whole.shape == (6,) and len(set(whole.tolist())) == 6
    assert torch.equal(second_half, whole[3:])
    transform.set_epoch(1)
    assert not torch.equal(stack_views([views[i] for i in range(6)])["mask_seed"], whole)
