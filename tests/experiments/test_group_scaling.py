"""Chapter 05's module: its profiles, the rational base, NoRA's group configuration and the convergence epoch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nora.experiments.group_scaling import BASE_GROUPS, PROFILES, converged_epoch, nora_config, to_group_rational
from nora.experiments.profiles import settings
from nora.experiments.vit_transfer import epochs_to_converge

# Training images of the book's tasks (nora.experiments.data: mnist10_few(per_class=20), mnist20: 60 per class).
TRAIN_IMAGES = {"easy": 10 * 20, "hard": 20 * 60}


def _steps(cfg, role):
    return cfg["epochs"][role] * -(-TRAIN_IMAGES[role] // cfg["batch_size"])


def test_every_profile_gives_each_task_role_its_own_epochs_and_evaluation_interval():
    for profile in PROFILES:
        cfg = settings("05_group_scaling", profile)
        assert set(cfg["epochs"]) == set(cfg["eval_every"]) == {"easy", "hard"}, profile
        for role in ("easy", "hard"):
            assert 1 <= cfg["eval_every"][role] <= cfg["epochs"][role], (profile, role)
        assert cfg["groups"][0] == BASE_GROUPS and all(g % BASE_GROUPS == 0 for g in cfg["groups"]), profile
        assert all(768 % g == 0 for g in cfg["groups"]), profile  # ViT-Tiny's MLP width: every G divides it
        assert set(cfg["lr_grid"]) == {"nora", "full"} and all(len(v) >= 2 for v in cfg["lr_grid"].values())


def test_the_book_profile_gives_both_tasks_about_the_same_optimiser_steps():
    book = settings("05_group_scaling", "book")
    easy, hard = _steps(book, "easy"), _steps(book, "hard")
    assert easy >= 200 and hard >= 200  # chapter 04's budget: about 210-230 steps on each task
    assert max(easy, hard) / min(easy, hard) < 1.2
    # the test curves of Figure 5 have enough points to place a convergence epoch on either task
    assert all(book["epochs"][r] // book["eval_every"][r] >= 5 for r in ("easy", "hard"))
    smoke, paper = settings("05_group_scaling", "smoke"), settings("05_group_scaling", "paper")
    for role in ("easy", "hard"):
        assert smoke["epochs"][role] <= book["epochs"][role] <= paper["epochs"][role]
    assert paper["epochs"] == {"easy": 50, "hard": 50} and paper["batch_size"] == 256  # the paper's Appendix C


def test_an_override_of_one_role_keeps_the_other():
    cfg = settings("05_group_scaling", "book", epochs={"easy": 12}, eval_every={"hard": 3})
    assert cfg["epochs"] == {"easy": 12, "hard": PROFILES["book"]["epochs"]["hard"]}
    assert cfg["eval_every"] == {"easy": PROFILES["book"]["eval_every"]["easy"], "hard": 3}


def test_the_book_search_grid_is_three_rates_half_a_decade_apart():
    for key, grid in PROFILES["book"]["lr_grid"].items():
        ratios = [b / a for a, b in zip(grid, grid[1:])]
        assert len(grid) == 3 and all(math.isclose(r, ratios[0], rel_tol=0.2) for r in ratios), key
        assert all(2.5 < r < 4 for r in ratios), key


def test_nora_config_is_rank_3_alpha_6_on_the_rational_and_checks_groups():
    assert nora_config(16) == {"groups": 16, "rank": 3, "alpha": 6.0, "target": "rational"}
    for bad in (0, -8, 8.0, True):
        with pytest.raises(ValueError):
            nora_config(bad)


class _MLP(nn.Module):
    def __init__(self, width=16, hidden=64):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = _MLP()


class _Net(nn.Module):
    def __init__(self, depth=3):
        super().__init__()
        self.blocks = nn.ModuleList(_Block() for _ in range(depth))


def test_to_group_rational_replaces_every_mlp_gelu_by_a_close_8_group_fit():
    from nora.rational import GroupRational

    net = _Net()
    assert to_group_rational(net) is net
    x = torch.linspace(-3, 3, 64).repeat(5, 1)
    for block in net.blocks:
        act = block.mlp.act
        assert isinstance(act, GroupRational) and act.groups == BASE_GROUPS
        assert (act(x) - nn.functional.gelu(x)).abs().max() < 0.01
    assert to_group_rational(_Net(1), groups=4).blocks[0].mlp.act.groups == 4


def test_converged_epoch_is_epochs_to_converge_on_full_curves():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        curve = (torch.rand(12, generator=gen) * 6 + torch.arange(12.0)).tolist()
        assert converged_epoch(curve, tol=1.0) == epochs_to_converge(curve, tol=1.0)
    assert converged_epoch([10.0, 50.0, 79.5, 80.0, 80.4]) == 3
    assert converged_epoch([70.0]) == 1


def test_converged_epoch_answers_an_evaluated_epoch_when_the_curve_has_gaps():
    # scored at epochs 3, 6, 9 (eval_every=3): within 1 point of the last from epoch 6 on
    assert converged_epoch([None, None, 60.0, None, None, 79.5, None, None, 80.0]) == 6
    assert converged_epoch([None, None, 60.0, None, None, 70.0, None, None, 80.0]) == 9
    assert converged_epoch([None, None, 79.8, None, None, 81.2, None, None, 80.4], tol=1.0) == 3
    assert converged_epoch([None, None, 79.8, None, None, 81.2, None, None, 80.4], tol=0.5) == 9
    for bad in ([], [None], [50.0, None], [float("nan"), 3.0]):
        with pytest.raises(ValueError):
            converged_epoch(bad)
    with pytest.raises(ValueError):
        converged_epoch([1.0, 2.0], tol=-1)
