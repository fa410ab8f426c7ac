"""Classic pretext tasks: rotation prediction, jigsaw puzzles, relative patch location, and the auxiliary rotation loss.

Each loss against its paper's formula written out naively (value and gradient), the views' geometry (rotations of a
known image, tile positions, labels), the jigsaw permutation set against Algorithm 1 written out, and each method
trained by SSLTrainer, resumed exactly, and loaded by plain transformers.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import tiny_vit_config
from test_published_folder import tiny_bert
from test_trainer import make_trainer, view_dataset
from transformers import AutoModel, ViTModel

from hf_ssl import AutoSSLModel
from hf_ssl.cli import main as cli_main
from hf_ssl.methods import METHOD_REGISTRY, SimCLRForPreTraining
from hf_ssl.methods.relative_patch import NEIGHBOUR_POSITIONS
from hf_ssl.views.permutations import (
    maximal_hamming_permutations,
    minimum_hamming_distance,
)
from hf_ssl.views.rotations import four_rotations, rotate_quarter_turns
from hf_ssl.views.tiles import TileGrid, drop_color_channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "rotation": {"head_hidden_dim": 16},
    "jigsaw": {"grid_size": 2, "num_permutations": 12, "tile_feature_dim": 8, "hidden_dim": 16},
    "relative_patch": {"pairs_per_image": 3, "tile_feature_dim": 8, "hidden_dim": 16, "color_dropping": True},
}


def tiny_model(method: str, **overrides):
    return METHOD_REGISTRY[method].from_encoder_config(tiny_vit_config(), **{**TINY[method], **overrides})


def naive_cross_entropy(logits: list[torch.Tensor], labels: list[int]) -> torch.Tensor:
    """-1/N sum_i log( exp(z_i[y_i]) / sum_k exp(z_i[k]) ), one example at a time."""
    total = 0.0
    for z, y in zip(logits, labels):
        total = total - torch.log(torch.exp(z[y]) / sum(torch.exp(value) for value in z))
    return total / len(logits)


def naive_rotate(image: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """Counter-clockwise by 90 degrees, ``quarter_turns`` times, pixel by pixel: new[r, c] = old[c, S - 1 - r]."""
    side = image.shape[-1]
    for _ in range(quarter_turns):
        turned = torch.empty_like(image)
        for r in range(side):
            for c in range(side):
                turned[:, r, c] = image[:, c, side - 1 - r]
        image = turned
    return image


def features(model, image: torch.Tensor) -> torch.Tensor:
    """The encoder's CLS feature of one image ``(C, H, W)``, computed alone."""
    return model.encoder(pixel_values=image[None], interpolate_pos_encoding=True).last_hidden_state[0, 0]


def assert_same_value_and_gradient(model, loss: torch.Tensor, naive: torch.Tensor) -> None:
    torch.testing.assert_close(loss, naive, rtol=1e-5, atol=1e-6)
    parameters = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, parameters, allow_unused=True)
    want = torch.autograd.grad(naive, parameters, allow_unused=True)
    for name_parameter, g, w in zip(model.named_parameters(), got, want):
        assert (g is None) == (w is None), name_parameter[0]
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name_parameter[0])


# ---------------------------------------------------------------------------------------------------------------------
# Rotation prediction (Gidaris et al. 2018)
def test_rotations_of_a_known_image():
    image = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # (1, 2, 2)
    rotated, labels = four_rotations(image[None].repeat(2, 1, 1, 1))
    expected = [[[1, 2], [3, 4]], [[2, 4], [1, 3]], [[4, 3], [2, 1]], [[3, 1], [4, 2]]]  # 0, 90, 180, 270 ccw
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    for k, want in enumerate(expected):
        for copy in range(2):
            assert rotated[2 * k + copy, 0].tolist() == want
    per_image = rotate_quarter_turns(image[None].repeat(4, 1, 1, 1), torch.tensor([3, 2, 1, 0]))
    assert [per_image[i, 0].tolist() for i in range(4)] == expected[::-1]
    with pytest.raises(ValueError, match="square"):
        four_rotations(torch.zeros(1, 3, 4, 6))


def test_rotation_loss_is_the_papers_in_value_and_gradient():
    """Eq. 2: loss = -1/N sum_i 1/4 sum_y log F^y(g(X_i | y)), the four rotations of every view."""
    torch.manual_seed(0)
    model = tiny_model("rotation", head_hidden_dim=0)  # a linear classifier: every row computed alone is the same
    crops = torch.randn(2, 2, 3, 16, 16)
    output = model(global_crops=crops)
    images = [crops[:, view][i] for view in range(2) for i in range(2)]  # view-major
    logits, labels = [], []
    for y in range(4):
        for image in images:
            logits.append(model.rotation_head(features(model, naive_rotate(image, y))[None])[0])
            labels.append(y)
    assert output.labels.tolist() == labels
    assert_same_value_and_gradient(model, output.loss, naive_cross_entropy(logits, labels))


# ---------------------------------------------------------------------------------------------------------------------
# The auxiliary rotation loss of every image method, here SimCLR
def test_auxiliary_rotation_adds_the_weighted_rotation_loss_to_simclr():
    torch.manual_seed(0)
    crops = torch.randn(3, 2, 3, 16, 16)
    model = SimCLRForPreTraining.from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=32, projection_dim=16, auxiliary_rotation_weight=0.5
    )
    assert model.config.ssl_config["auxiliary_rotation_weight"] == 0.5
    torch.manual_seed(1)
    output = model(global_crops=crops)
    simclr_loss = model.forward(global_crops=crops).loss  # the method's own loss (forward without the hook)
    torch.manual_seed(1)
    turns = torch.randint(4, (6,))  # one rotation per view, as the hook draws them
    images = [crops[:, view][i] for view in range(2) for i in range(3)]
    logits = [model.auxiliary_rotation_head(features(model, naive_rotate(image, int(k)))[None])[0]
              for image, k in zip(images, turns)]
    naive = naive_cross_entropy(logits, turns.tolist())
    torch.testing.assert_close(output.auxiliary_rotation_loss, naive.detach())
    assert_same_value_and_gradient(model, output.loss, simclr_loss + 0.5 * naive)
    # off by default: no head, and the saved settings of every other method stay as they were
    plain = SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), projection_hidden_dim=32, projection_dim=16)
    assert not hasattr(plain, "auxiliary_rotation_head") and "auxiliary_rotation_weight" not in plain.config.ssl_config
    assert "auxiliary_rotation_loss" not in plain(global_crops=crops)


def test_auxiliary_rotation_trains_the_student_and_is_refused_where_it_cannot_apply(tmp_path):
    model = METHOD_REGISTRY["byol"].from_encoder_config(
        tiny_vit_config(), projection_hidden_dim=16, projection_dim=8, prediction_hidden_dim=16,
        auxiliary_rotation_weight=1.0,
    )
    model(global_crops=torch.randn(2, 2, 3, 16, 16)).loss.backward()
    assert model.student_encoder.embeddings.cls_token.grad.abs().sum() > 0  # the student learns rotations ...
    assert all(p.grad is None for p in model.encoder.parameters())  # ... the EMA teacher follows it
    model.save_pretrained(tmp_path)
    assert AutoSSLModel.from_pretrained(tmp_path).method_config.auxiliary_rotation_weight == 1.0
    with pytest.raises(ValueError, match="auxiliary_rotation_weight applies to image methods"):
        METHOD_REGISTRY["mlm"].from_encoder_config(tiny_bert(), auxiliary_rotation_weight=1.0)
    with pytest.raises(ValueError, match="auxiliary_rotation_weight must be >= 0"):
        SimCLRForPreTraining.from_encoder_config(tiny_vit_config(), auxiliary_rotation_weight=-1.0)
    with pytest.raises(ValueError, match="already this method's loss"):
        tiny_model("rotation", auxiliary_rotation_weight=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Jigsaw puzzles (Noroozi & Favaro 2016)
def naive_algorithm_1(num_tiles: int, count: int, seed: int) -> list[tuple[int, ...]]:
    """Algorithm 1 written out: add the remaining permutation of largest summed Hamming distance to the chosen ones
    (ties: the larger minimum distance, then the first in lexicographic order)."""
    remaining = list(itertools.permutations(range(num_tiles)))
    first = int(torch.randint(len(remaining), (), generator=torch.Generator().manual_seed(seed)))
    chosen = [remaining.pop(first)]
    while len(chosen) < count:
        def score(candidate):
            distances = [sum(a != b for a, b in zip(candidate, p)) for p in chosen]
            return sum(distances), min(distances)
        best = max(score(candidate) for candidate in remaining)
        chosen.append(remaining.pop(next(i for i, c in enumerate(remaining) if score(c) == best)))
    return chosen


@pytest.mark.parametrize(("num_tiles", "count", "seed"), [(4, 10, 0), (5, 25, 3)])
def test_permutation_set_is_algorithm_1(num_tiles, count, seed):
    ours = maximal_hamming_permutations(num_tiles, count, seed)
    reference = naive_algorithm_1(num_tiles, count, seed)
    assert [tuple(row) for row in ours.tolist()] == reference
    pairwise = [sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(reference, 2)]
    assert minimum_hamming_distance(ours) == min(pairwise)


@pytest.mark.parametrize("count", [3, 4])
def test_permutation_set_reaches_the_largest_minimum_distance_of_any_set(count):
    """Exhaustively over every set of ``count`` permutations of 4 tiles: none has a larger minimum distance."""
    permutations = torch.tensor(list(itertools.permutations(range(4))))
    distances = (permutations[:, None] != permutations[None]).sum(-1)
    best = max(min(int(distances[i, j]) for i, j in itertools.combinations(subset, 2))
               for subset in itertools.combinations(range(24), count))
    assert minimum_hamming_distance(maximal_hamming_permutations(4, count)) == best == 4
    assert minimum_hamming_distance(maximal_hamming_permutations(9, 30)) >= 3  # a 3x3 grid's set, far apart too


def test_tile_grid_places_each_tile_in_its_cell_with_bounded_jitter():
    grid = TileGrid(side=32, grid_size=3, tile_size=8, jitter=1)
    origins = grid.origins()
    assert origins.tolist()[:4] == [[2, 2], [2, 12], [2, 22], [12, 2]]  # 1 px margin + 1 px centring, 10 px cells
    torch.manual_seed(0)
    positions = grid.positions(torch.arange(9).expand(200, -1))
    shift = positions - origins
    assert shift.abs().max() == 1 and set(shift.unique().tolist()) == {-1, 0, 1}
    assert positions.min() >= 0 and (positions + 8).max() <= 32
    gaps = positions[:, 1:3, 1] - (positions[:, 0:2, 1] + 8)  # between horizontal neighbours of the first row
    assert gaps.min() >= 0 and gaps.max() == 4
    image = torch.arange(32.0)[None, :, None].expand(1, 32, 32)[None]  # pixel value = its row
    tiles = grid.crop(image, torch.tensor([[4]]), jitter=False)
    assert tiles.shape == (1, 1, 1, 8, 8) and tiles[0, 0, 0, :, 0].tolist() == list(range(12, 20))
    with pytest.raises(ValueError, match="does not fit"):
        TileGrid(side=32, grid_size=3, tile_size=12, jitter=0)
    with pytest.raises(ValueError, match="tile_jitter 2 must be between 0 and 1"):
        TileGrid(side=32, grid_size=3, tile_size=8, jitter=2)


def test_jigsaw_loss_is_the_papers_in_value_and_gradient():
    """Tiles exactly the 8 px cells (no jitter): each puzzle's tiles shuffled by its permutation, normalised, encoded
    one by one, projected (fc6), concatenated in the shuffled order, classified (fc7, fc8), cross-entropy."""
    torch.manual_seed(0)
    model = tiny_model("jigsaw", tile_size=8).eval()  # BatchNorm on running statistics: rows computed alone agree
    crops = torch.randn(2, 2, 3, 16, 16)
    labels = torch.tensor([0, 5, 11, 3])
    output = model(global_crops=crops, permutation_labels=labels)
    images = [crops[:, view][i] for view in range(2) for i in range(2)]
    logits = []
    for image, label in zip(images, labels.tolist()):
        tiles = [image[:, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] for r in range(2) for c in range(2)]
        shown = [tiles[int(k)] for k in model.permutations[label]]
        shown = [(t - t.mean()) / (t.std(unbiased=False) + 1e-5) for t in shown]
        fc6 = torch.cat([model.tile_projection(features(model, t)[None])[0] for t in shown])
        logits.append(model.classifier(fc6[None])[0])
    assert_same_value_and_gradient(model, output.loss, naive_cross_entropy(logits, labels.tolist()))
    assert output.logits.shape == (4, 12)


# ---------------------------------------------------------------------------------------------------------------------
# Relative patch location (Doersch et al. 2015)
def test_relative_patch_labels_match_the_geometry():
    """Pixels hold their own coordinates: the neighbour of label k lies in the direction of cell k of the reading-order
    3x3 grid, a gap away from the centre."""
    model = tiny_model("relative_patch", pairs_per_image=8, tile_size=8, tile_jitter=1)
    rows = torch.arange(32.0)[:, None].expand(32, 32)
    image = torch.stack([rows, rows.T, torch.zeros(32, 32)])[None].repeat(50, 1, 1, 1)
    torch.manual_seed(0)
    labels = torch.rand(50, 8).argsort(dim=1)
    tiles = model.pair_tiles(image, labels)  # (50, 9, 3, 8, 8)
    centre_row, centre_col = tiles[:, :1, 0, 0, 0], tiles[:, :1, 1, 0, 0]
    d_row, d_col = tiles[:, 1:, 0, 0, 0] - centre_row, tiles[:, 1:, 1, 0, 0] - centre_col
    expected_row = torch.tensor([-1, -1, -1, 0, 0, 1, 1, 1])[labels]
    expected_col = torch.tensor([-1, 0, 1, -1, 1, -1, 0, 1])[labels]
    assert torch.equal(torch.sign(d_row).long() * (expected_row != 0), expected_row)
    assert torch.equal(torch.sign(d_col).long() * (expected_col != 0), expected_col)
    assert (d_row[expected_row == 0].abs() <= 2).all() and (d_col[expected_col == 0].abs() <= 2).all()
    assert (d_row[expected_row != 0].abs() >= 8).all()  # a tile (8) + a gap (2) - the jitter of both (2)
    assert [divmod(p, 3) for p in NEIGHBOUR_POSITIONS] == [(r, c) for r in range(3) for c in range(3) if (r, c) != (1, 1)]


def test_relative_patch_loss_is_the_papers_in_value_and_gradient():
    """Centre and neighbour encoded alone, fc6 each, concatenated (centre first), fc7-fc8, 8-way cross-entropy."""
    torch.manual_seed(0)
    model = tiny_model("relative_patch", tile_size=4, tile_jitter=0, color_dropping=False).eval()
    images = torch.randn(3, 3, 16, 16)
    labels = torch.tensor([[0, 4, 7], [1, 2, 3], [6, 5, 0]])
    output = model(pixel_values=images, neighbour_labels=labels)
    origin = [0, 5, 10]  # 5 px cells from 0 (no margin), 4 px tiles at offset 0
    logits = []
    for image, row in zip(images, labels.tolist()):
        def cell(position, image=image):
            r, c = divmod(position, 3)
            return image[:, origin[r]:origin[r] + 4, origin[c]:origin[c] + 4]
        centre = model.tile_projection(features(model, cell(4))[None])[0]
        for label in row:
            neighbour = model.tile_projection(features(model, cell(NEIGHBOUR_POSITIONS[label]))[None])[0]
            logits.append(model.classifier(torch.cat([centre, neighbour])[None])[0])
    assert_same_value_and_gradient(model, output.loss, naive_cross_entropy(logits, labels.flatten().tolist()))


def test_colour_dropping_keeps_one_channel_and_leaves_faint_noise():
    torch.manual_seed(0)
    tiles = torch.randn(64, 3, 8, 8) * 2 + 1
    dropped = drop_color_channels(tiles)
    kept = (dropped == tiles).flatten(2).all(-1)  # (64, 3)
    assert kept.sum(dim=1).tolist() == [1] * 64 and set(kept.float().argmax(1).tolist()) == {0, 1, 2}
    noise = dropped[~kept].flatten(1).std(dim=1)
    assert 0.01 < noise.mean() < 0.03  # 1/100 of the kept channel's std (about 2)


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="pairs_per_image must be between 1 and 8"):
        tiny_model("relative_patch", pairs_per_image=9)
    with pytest.raises(ValueError, match="not a multiple of the encoder's patch size 4"):
        tiny_model("jigsaw", tile_size=6)
    with pytest.raises(ValueError, match="num_permutations must be between 2 and 4! = 24"):
        tiny_model("jigsaw", num_permutations=30)
    with pytest.raises(ValueError, match="uses no local crops"):
        tiny_model("rotation")(global_crops=torch.zeros(2, 2, 3, 16, 16), local_crops=torch.zeros(2, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        tiny_model("relative_patch", tile_size=8)(pixel_values=torch.zeros(2, 3, 16, 16))


# ---------------------------------------------------------------------------------------------------------------------
# Training, exact resume, plain transformers
@pytest.mark.parametrize("method", sorted(TINY))
def test_trains_and_resumes_exactly(tmp_path, embedded_images, method):
    """Random tiles, permutations, neighbours and colour dropping come from the torch RNG, restored on resume."""
    def factory():
        return tiny_model(method)

    dataset = view_dataset(embedded_images, count=24, num_local_crops=0)  # 3 steps of 8 per epoch
    common = {"max_steps": 4, "model_factory": factory, "save_steps": 2}
    full = make_trainer(tmp_path / "full", dataset, **common)
    full.train()
    resumed = make_trainer(tmp_path / "resumed", dataset, **common)  # from the full run's mid-epoch checkpoint
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=f"{method}: {key}")
    logs = [log for log in full.state.log_history if "loss" in log]
    assert len(logs) == 4 and "accuracy" in logs[0] and all(math.isfinite(log["loss"]) for log in logs)
    assert not torch.equal(full.model.encoder.layers[0].mlp.fc1.weight, factory().encoder.layers[0].mlp.fc1.weight)


def test_every_pretext_method_round_trips_and_loads_with_plain_transformers(tmp_path):
    torch.manual_seed(0)
    crops = torch.randn(2, 2, 3, 16, 16)
    for method in sorted(TINY):
        model = tiny_model(method)
        model(global_crops=crops).loss.backward()  # BatchNorm statistics moved: the heads' state is saved too
        model.eval().save_pretrained(tmp_path / method)
        loaded = AutoSSLModel.from_pretrained(tmp_path / method).eval()
        assert type(loaded) is type(model) and loaded.method_config == model.method_config
        for key, value in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=f"{method}: {key}")
        encoder, info = AutoModel.from_pretrained(tmp_path / method, output_loading_info=True)
        assert type(encoder) is ViTModel and not any(info.values()), info  # no missing / unexpected key
        with torch.no_grad():
            torch.testing.assert_close(encoder.eval()(pixel_values=crops[:, 0]).last_hidden_state,
                                       model.encoder(pixel_values=crops[:, 0]).last_hidden_state)
        assert cli_main(["card", str(tmp_path / method)]) == 0  # the model card cites the method's paper
        assert type(model).paper in (tmp_path / method / "README.md").read_text()
