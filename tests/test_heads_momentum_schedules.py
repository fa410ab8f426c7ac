"""Heads, EMA updates and schedules."""

import math

import torch
from torch import nn

from hf_ssl.modules.ema import copy_weights_, ema_update_, make_teacher
from hf_ssl.modules.heads import DINOHead, ProjectionHead
from hf_ssl.schedules import cosine_schedule, linear_warmup


def test_projection_head_from_block_specs():
    head = ProjectionHead([(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)])
    assert head(torch.randn(5, 8)).shape == (5, 4)
    assert head.layers[0].bias is None  # a Linear followed by a norm has no bias


def test_dino_head_prototypes_are_unit_norm_and_gain_frozen():
    head = DINOHead(in_dim=8, out_dim=32, hidden_dim=16, bottleneck_dim=6, num_layers=3)
    parametrization = head.last_layer.parametrizations.weight
    assert not parametrization.original0.requires_grad
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(32))
    assert head(torch.randn(3, 8)).shape == (3, 32)
    assert head.last_layer_parameters == [parametrization.original1]
    keys = set(head.state_dict())
    assert {"last_layer.parametrizations.weight.original0", "last_layer.parametrizations.weight.original1"} <= keys


def test_cosine_schedule_values():
    assert cosine_schedule(0, 100, 0.996, 1.0) == 0.996
    assert math.isclose(cosine_schedule(50, 100, 0.996, 1.0), 0.998)
    assert cosine_schedule(100, 100, 0.996, 1.0) == 1.0
    assert cosine_schedule(150, 100, 0.996, 1.0) == 1.0
    # DINO: m_t = 1 - (1 - m_0) (cos(pi t / T) + 1) / 2
    assert math.isclose(cosine_schedule(25, 100, 0.9, 1.0), 1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_linear_warmup_values():
    assert linear_warmup(0, 10, 0.04, 0.07) == 0.04
    assert math.isclose(linear_warmup(5, 10, 0.04, 0.07), 0.055)
    assert linear_warmup(10, 10, 0.04, 0.07) == 0.07
    assert linear_warmup(3, 0, 0.04, 0.07) == 0.07


def test_ema_update_matches_formula_and_teacher_is_frozen():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update_(teacher, student, 0.9)
    for old, new, source in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * source)
    copy_weights_(teacher, student)
    for new, source in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(new, source)
