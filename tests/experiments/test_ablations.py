"""nora.experiments.ablations: the exact-at-init base, data-weighted fits, the head-only probe and step-0 deviations."""

import copy

import numpy as np
import pytest
import torch
from conftest import make_vit, same_snapshot, snapshot
from torch.utils.data import TensorDataset

from nora.experiments import backbone, profiles
from nora.experiments.ablations import (
    PROFILES,
    ExactBase,
    apply_exact_base_nora,
    fine_tune_with,
    fit_to_samples,
    head_only,
    nora_on_rationals,
    output_deviation,
    preactivations,
    replace_with_rationals,
    sample_errors,
    source_heldout,
)
from nora.adapters.nora import NoraActivation
from nora.experiments.data.tasks import Task
from nora.fit import ACTIVATIONS, shipped_init
from nora.experiments.methods import build_method
from nora.experiments.train import TrainConfig
from nora.experiments.vit_transfer import fine_tune

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
GELU_FIT = shipped_init("gelu")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _perturb(model, sigma=0.05, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("num_B", "den_B")):
                p.copy_(torch.randn(p.shape, generator=gen) * sigma)


def test_exact_base_equals_the_original_model_bit_for_bit_at_init_and_nora_does_not():
    gelu = make_vit()
    exact = apply_exact_base_nora(copy.deepcopy(gelu))
    plain = build_method("nora", copy.deepcopy(gelu))
    with torch.no_grad():
        assert torch.equal(exact(IMAGES), gelu(IMAGES))
        assert not torch.equal(plain(IMAGES), gelu(IMAGES))  # the fitted base is only close
    assert all(isinstance(b.mlp.act, ExactBase) and isinstance(b.mlp.act.inner, NoraActivation) for b in exact.blocks)
    trainable = {n.replace(".inner", "") for n, p in exact.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in plain.named_parameters() if p.requires_grad}


def test_exact_base_differs_from_nora_only_by_the_fit_error_after_training():
    """With the same deltas, F_exact(x) - F_nora(x) = GELU(x) - R_0(x) for every x."""
    gelu = make_vit()
    torch.manual_seed(0)                                   # the same Kaiming A factors in both
    exact = apply_exact_base_nora(copy.deepcopy(gelu))
    torch.manual_seed(0)
    plain = build_method("nora", copy.deepcopy(gelu))
    _perturb(exact)
    _perturb(plain)
    x = torch.linspace(-4, 4, 801)[:, None].expand(-1, 768).contiguous()
    with torch.no_grad():
        moved = exact.blocks[0].mlp.act(x) - torch.nn.functional.gelu(x)
        assert moved.abs().max() > 1e-2                                       # the deltas act
        gap = exact.blocks[0].mlp.act(x) - plain.blocks[0].mlp.act(x)
    fit_error = torch.tensor(ACTIVATIONS["gelu"](x[:, 0].double().numpy()) - GELU_FIT(x[:, 0].double().numpy()))
    assert torch.allclose(gap[:, 0].double(), fit_error, atol=1e-5)


def test_exact_base_rejects_rational_targets_and_bad_overrides_leaving_the_model_untouched():
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="target"):
        apply_exact_base_nora(model, target="rational")
    with pytest.raises(ValueError, match="rank"):
        apply_exact_base_nora(model, rank=0)
    with pytest.raises(ValueError, match="target"):
        apply_exact_base_nora(model, target=r"nothing\.here")
    assert same_snapshot(before, snapshot(model))


def test_preactivations_are_the_fc1_outputs():
    model = make_vit()
    data = TensorDataset(torch.randn(6, 3, 32, 32), torch.zeros(6, dtype=torch.long))
    outputs = []
    hook = model.blocks[1].mlp.fc1.register_forward_hook(lambda m, i, o: outputs.append(o.flatten()))
    with torch.no_grad():
        model(data.tensors[0][:5])
    hook.remove()
    got = preactivations(model, data, images=5, per_layer=10**7, batch_size=2)
    assert sorted(got) == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert got["blocks.1.mlp.act"].size == 5 * 17 * 768                    # 5 images, 16 patches + cls
    assert np.allclose(np.sort(got["blocks.1.mlp.act"]), np.sort(torch.cat(outputs).numpy()), atol=1e-5)
    small = preactivations(model, data, images=5, per_layer=1000, batch_size=2)
    assert small["blocks.0.mlp.act"].size == 1000
    with pytest.raises(ValueError, match="images"):
        preactivations(model, data, images=0)


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_data_weighted_fit_beats_the_shipped_fit_under_the_data(scale):
    """Least squares under the samples' own distribution: smaller expected error than the [-3, 3] minimax fit."""
    x = np.random.default_rng(0).normal(0.0, scale, 50_000)
    fit = fit_to_samples(x)
    mine = sample_errors(x, fit.numerator, fit.denominator)
    shipped = sample_errors(x, GELU_FIT.numerator, GELU_FIT.denominator)
    assert fit.interval == (x.min(), x.max())
    assert mine["rms"] < shipped["rms"]
    if scale > 2:                               # many values outside [-3, 3]: the shipped fit degrades there
        assert shipped["outside_3"] > 0.2 and mine["rms"] < 0.5 * shipped["rms"]


def test_fit_and_errors_reject_bad_samples():
    for bad in ([1.0] * 500, [0.0, 1.0], [np.nan] * 200 + [1.0] * 200):
        with pytest.raises(ValueError, match="samples"):
            fit_to_samples(bad)
    with pytest.raises(ValueError, match="bins"):
        fit_to_samples(np.linspace(-1, 1, 500), bins=2)
    with pytest.raises(ValueError, match="activation"):
        sample_errors(np.linspace(-1, 1, 500), GELU_FIT.numerator, GELU_FIT.denominator, activation="nope")


def test_replace_with_rationals_then_nora_starts_at_those_coefficients():
    gelu = make_vit()
    names = [f"blocks.{i}.mlp.act" for i in range(2)]
    shipped = {n: (GELU_FIT.numerator, GELU_FIT.denominator) for n in names}
    custom = replace_with_rationals(copy.deepcopy(gelu), shipped)
    tuned = build_method("nora", custom, target="rational")
    reference = build_method("nora", copy.deepcopy(gelu))                 # NoRA on the shipped GELU fit
    with torch.no_grad():
        assert torch.equal(tuned(IMAGES), reference(IMAGES))
    # different coefficients per layer are kept per layer
    other = {names[0]: shipped[names[0]], names[1]: (np.r_[0.0, 1.0, np.zeros(4)], np.zeros(4))}
    mixed = replace_with_rationals(copy.deepcopy(gelu), other)
    x = torch.linspace(-2, 2, 11)[:, None].expand(-1, 768).contiguous()
    with torch.no_grad():
        assert torch.allclose(mixed.blocks[1].mlp.act(x), x)               # the identity rational
    before = snapshot(gelu)
    with pytest.raises(ValueError, match="not modules"):
        replace_with_rationals(gelu, {"blocks.7.mlp.act": shipped[names[0]]})
    with pytest.raises(ValueError, match="1-D"):
        replace_with_rationals(gelu, {names[0]: (np.zeros((2, 6)), np.zeros(4))})
    assert same_snapshot(before, snapshot(gelu))


def test_head_only_and_output_deviation():
    model = head_only(make_vit())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="head"):
        head_only(make_vit(), head="classifier")
    a, b = make_vit(seed=0), make_vit(seed=0)
    same = output_deviation(a, b, IMAGES)
    assert same == {"max_abs": 0.0, "relative": 0.0, "agreement": 100.0}
    other = output_deviation(a, make_vit(seed=1), IMAGES)
    assert other["max_abs"] > 0 and 0 <= other["agreement"] <= 100
    with pytest.raises(ValueError, match="shapes"):
        output_deviation(a, make_vit(num_classes=3), IMAGES)


def test_fine_tune_with_matches_fine_tune_for_a_method_and_trains_a_probe(monkeypatch):
    monkeypatch.setattr(backbone, "pretrained_vit",
                        lambda profile, num_classes=None, seed=0, weights=True: make_vit(num_classes, seed=seed))
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 3, 32, 32, generator=gen), torch.arange(24) % 3)
    task = Task("toy", data, data, ("a", "b", "c"))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-2)
    ours = fine_tune_with(lambda m: build_method("nora", m), task, cfg, profile="smoke", seed=0, name="nora")
    theirs = fine_tune("nora", task, cfg, profile="smoke", seed=0)
    assert ours.loss_curve == pytest.approx(theirs.loss_curve, rel=1e-5)
    assert ours.extra["trainable"] == theirs.extra["trainable"]
    probe = fine_tune_with(head_only, task, cfg, profile="smoke", seed=0, name="head")
    assert probe.extra["trainable"] == probe.extra["head"] == 192 * 3 + 3
    with pytest.raises(TypeError, match="build"):
        fine_tune_with("nora", task, cfg, profile="smoke")


def test_nora_on_rationals_is_replace_then_nora_in_one_picklable_builder():
    import pickle
    from functools import partial

    gelu = make_vit()
    names = [f"blocks.{i}.mlp.act" for i in range(2)]
    coefficients = {names[0]: (GELU_FIT.numerator, GELU_FIT.denominator), names[1]: (np.r_[0.0, 1.0, np.zeros(4)], np.zeros(4))}
    build = pickle.loads(pickle.dumps(partial(nora_on_rationals, coefficients=coefficients)))
    torch.manual_seed(0)
    ours = build(copy.deepcopy(gelu))
    torch.manual_seed(0)
    theirs = build_method("nora", replace_with_rationals(copy.deepcopy(gelu), coefficients), target="rational")
    with torch.no_grad():
        assert torch.equal(ours(IMAGES), theirs(IMAGES))
    trainable = [{n for n, p in m.named_parameters() if p.requires_grad} for m in (ours, theirs)]
    assert trainable[0] == trainable[1]
    with pytest.raises(ValueError, match="target"):
        nora_on_rationals(copy.deepcopy(gelu), coefficients, target="gelu")


def test_source_heldout_is_the_backbones_own_held_out_source_normalised_as_in_pre_training():
    from nora.experiments import glyph_backbone
    from nora.experiments.data.glyphs import heldout_set
    from nora.experiments.train import evaluate

    smoke = source_heldout("smoke", 50)
    full = backbone.source_task("smoke").test
    assert len(smoke) == 50 and torch.equal(smoke[7][0], full[7][0]) and len(source_heldout("smoke")) == len(full)
    spec = backbone.backbone_spec("book")                       # the glyph backbone
    data = source_heldout("book", 64)
    x, y = heldout_set(spec.pretrain.source, 64, spec.pretrain.seed)
    assert len(data) == 64 and data[0][0].shape == (3, 16, 16) and torch.equal(data.tensors[1], y)
    model = backbone.pretrained_vit("book")
    assert evaluate(model, data) == pytest.approx(glyph_backbone.source_accuracy(model, x, y))  # the provenance's scoring
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="images"):
            source_heldout("smoke", bad)
    with pytest.raises(ValueError, match="hub weights"):
        source_heldout("paper")


def test_profiles_give_each_task_its_own_epochs_about_two_hundred_steps_in_the_book():
    from nora.experiments.data import downstream_tasks

    for name in profiles.PROFILE_NAMES:
        cfg = profiles.settings("07_ablations", name)
        assert set(cfg["epochs"]) == {"easy", "hard"}, name
        assert set(cfg["lr_grid"]) == {"nora", "prelu", "arelu", "elu", "full", "const"}, name
        assert set(cfg["both_tasks"]) == {"nora", "numerator", "denominator"}, name   # Table 5 on both tasks
    book = profiles.settings("07_ablations", "book")
    tasks = downstream_tasks("book")
    easy, hard = tasks
    sizes = {"easy": len(tasks[easy].train), "hard": len(tasks[hard].train)}
    steps = {role: book["epochs"][role] * -(-sizes[role] // book["batch_size"]) for role in sizes}
    assert sizes == {"easy": 200, "hard": 1200} and all(200 <= s <= 250 for s in steps.values()), steps
    assert book["search_task"] == hard and {1, 8} <= set(book["ranks"])    # the rank claim compares r = 8 with r = 1
    assert all(len(grid) == 4 for grid in book["lr_grid"].values())         # the same search budget per family
    # a -p override of one task's epochs keeps the other's
    assert profiles.settings("07_ablations", "book", epochs={"hard": 2})["epochs"] == {"easy": book["epochs"]["easy"], "hard": 2}
    with pytest.raises(ValueError, match="not a setting"):
        profiles.settings("07_ablations", "book", epochs={"medium": 3})
    assert PROFILES["paper"]["source_accuracy"] is False and PROFILES["book"]["source_images"] >= 512
