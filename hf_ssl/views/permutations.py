"""The permutation set of jigsaw puzzles, chosen for maximal Hamming distance (Noroozi & Favaro 2016,
"Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", arXiv:1603.09246, §3.2, Algorithm 1).

The network classifies which permutation of the set shuffled the tiles, so the set decides how hard and how useful the
task is: permutations close to each other (few tiles moved) are ambiguous, and the paper finds that a larger minimum
distance between the permutations gives better features (Table 3). Algorithm 1 builds the set greedily: start from a
random permutation, then repeatedly add the remaining permutation with the largest *sum* of Hamming distances to the
ones chosen so far. Ties (frequent: the distances are small integers) are broken here by the larger *minimum*
distance to the chosen set, then by the lowest index in lexicographic order, so the set is deterministic given its
seed and its minimum distance is as large as the greedy order allows.

The search runs over all ``n!`` permutations of ``n`` tiles (362,880 for a 3x3 grid; about 1 s per 100 chosen
permutations on one CPU core) and is cached per ``(num_tiles, num_permutations, seed)``.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch


def all_permutations(num_tiles: int) -> torch.Tensor:
    """``(num_tiles!, num_tiles)`` every permutation of ``range(num_tiles)``, in lexicographic order (int8)."""
    return torch.tensor(list(itertools.permutations(range(num_tiles))), dtype=torch.int8)


@functools.lru_cache(maxsize=8)
def _cached_set(num_tiles: int, num_permutations: int, seed: int) -> torch.Tensor:
    candidates = all_permutations(num_tiles)
    by_position = candidates.T.contiguous()  # (num_tiles, n!): one contiguous row per position, fast to compare
    total = candidates.shape[0]
    index = int(torch.randint(total, (), generator=torch.Generator().manual_seed(seed)))
    distance_sum = torch.zeros(total, dtype=torch.int32)
    distance_min = torch.full((total,), num_tiles, dtype=torch.int8)
    # Score = sum of distances, then minimum distance (<= num_tiles), so one argmax applies both criteria; argmax
    # returns the first (lowest-index) maximum. A chosen permutation's sum is pushed far below any other score.
    tie_base, taken = num_tiles + 1, -(2**30)
    chosen = [index]
    while len(chosen) < num_permutations:
        distance_sum[index] = taken
        distance = torch.zeros(total, dtype=torch.int8)
        for position in range(num_tiles):
            distance += by_position[position] != by_position[position, index]
        distance_sum += distance
        distance_min = torch.minimum(distance_min, distance)
        index = int((distance_sum * tie_base + distance_min).argmax())
        chosen.append(index)
    return candidates[chosen].long()


def maximal_hamming_permutations(num_tiles: int, num_permutations: int, seed: int = 0) -> torch.Tensor:
    """``(num_permutations, num_tiles)`` permutations chosen by Algorithm 1 of Noroozi & Favaro (module docstring).

    Row ``j`` is permutation ``j`` (the class the network predicts); applying it to tiles ``(T, ...)`` means
    ``tiles[permutation]``: the tile shown at position ``i`` is the original tile ``permutation[i]``.
    """
    if num_tiles < 2:
        raise ValueError(f"a jigsaw puzzle needs at least 2 tiles, got {num_tiles}")
    if num_tiles > 10:
        raise ValueError(
            f"the permutation search enumerates all {num_tiles}! orders of {num_tiles} tiles, too many; use a grid of at "
            "most 3x3"
        )
    if not 2 <= num_permutations <= math.factorial(num_tiles):
        raise ValueError(
            f"num_permutations must be between 2 and {num_tiles}! = {math.factorial(num_tiles)} for {num_tiles} tiles, "
            f"got {num_permutations}"
        )
    return _cached_set(num_tiles, num_permutations, seed).clone()


def minimum_hamming_distance(permutations: torch.Tensor) -> int:
    """The smallest number of positions in which two rows of ``permutations (N, n)`` differ."""
    distances = (permutations[:, None, :] != permutations[None, :, :]).sum(dim=-1)
    distances.fill_diagonal_(permutations.shape[1] + 1)
    return int(distances.min())
