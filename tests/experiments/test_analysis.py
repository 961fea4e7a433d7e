"""nora.experiments.analysis: adaptability score, features and cluster quality, Grad-CAM, rational shapes, linear probe."""

from __future__ import annotations

import math

import nora  # noqa: F401  (first: torchvision imports next to the CPU torch)
import numpy as np
import pytest
import torch
from conftest import make_vit
from torch import nn
from torch.utils.data import TensorDataset

from nora.experiments import analysis, backbone
from nora.experiments.analysis import (
    activation_values,
    centre_mask,
    cluster_quality,
    distribution_shift,
    fine_tune_and_measure,
    grad_cam,
    ink_mask,
    ink_share,
    ks_statistic,
    linear_probe,
    normalise_unit,
    pre_logits,
    rational_curves,
    tsne_embedding,
    vit_reshape_transform,
    wasserstein_1d,
)
from nora.experiments.methods import build_method
from nora.experiments.train import TrainConfig, evaluate


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------ distribution distances


def test_wasserstein_and_ks_match_scipy_and_known_values():
    from scipy.stats import ks_2samp, wasserstein_distance

    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=500), rng.normal(0.3, 1.5, size=500), rng.standard_t(3, size=333)
    for a, b in ((x, y), (x, z), (y, z)):
        assert wasserstein_1d(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
        assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert wasserstein_1d(x, x + 2.5) == pytest.approx(2.5)         # a shift moves W1 by exactly |c|
    assert ks_statistic(x, x) == 0 and ks_statistic(x, x + 100) == 1  # bounded in [0, 1]
    with pytest.raises(ValueError, match="x"):
        wasserstein_1d([], y)
    with pytest.raises(ValueError, match="non-finite"):
        ks_statistic(x, np.array([1.0, np.nan]))


def test_distribution_shift_is_scale_free_and_zero_for_identical_values():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=2000)
    same = distribution_shift(ref, ref)
    assert same == {"w1": 0.0, "w1_rel": 0.0, "ks": 0.0}
    s = ref.std(ddof=1)
    moved = distribution_shift(ref, ref + 2 * s)
    assert moved["w1_rel"] == pytest.approx(2.0) and moved["w1"] == pytest.approx(2 * s)
    scaled = distribution_shift(10 * ref, 10 * (ref + 2 * s))   # units do not matter
    assert scaled["w1_rel"] == pytest.approx(2.0) and scaled["ks"] == pytest.approx(moved["ks"])
    with pytest.raises(ValueError, match="standard deviation"):
        distribution_shift(np.ones(10), ref[:10])


def test_normalise_unit():
    out = normalise_unit([0.0, 0.5, 2.0])
    assert out.tolist() == [0.0, 0.25, 1.0]
    assert normalise_unit([1.0, 2.0], scale=4.0).tolist() == [0.25, 0.5]
    for bad in ([], [-1.0, 1.0], [np.nan], [0.0, 0.0]):
        with pytest.raises(ValueError):
            normalise_unit(bad)
    with pytest.raises(ValueError, match="scale"):
        normalise_unit([1.0, 3.0], scale=2.0)


# ------------------------------------------------------------------------ activation values


def test_activation_values_pools_every_block_and_nora_at_init_leaves_block_0_inputs_unchanged():
    images = _images(4)
    base = make_vit(depth=2)
    vals = activation_values(base, images)
    tokens = 1 + (32 // 8) ** 2
    assert sorted(vals) == [0, 1]
    assert vals[0]["input"].numel() == vals[0]["output"].numel() == 4 * tokens * 4 * 192
    assert torch.allclose(vals[0]["output"], nn.functional.gelu(vals[0]["input"]))
    assert _no_hooks(base) and not base.training
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tuned = build_method("nora", make_vit(depth=2))   # at initialisation: the GELU fit
    nv = activation_values(tuned, images)
    assert torch.equal(nv[0]["input"], vals[0]["input"])       # nothing before block 0's MLP changed
    assert distribution_shift(vals[0]["input"], nv[0]["input"])["w1_rel"] == 0.0
    out_shift = distribution_shift(vals[0]["output"], nv[0]["output"])
    assert 0 < out_shift["w1"] < 5e-3                         # the rational fit error of GELU, no more
    # a real change scores higher
    layer = tuned.blocks[0].mlp.act
    with torch.no_grad():
        layer.num_B.normal_(0, 0.3)
    moved = distribution_shift(vals[0]["output"], activation_values(tuned, images)[0]["output"])
    assert moved["w1_rel"] > 10 * out_shift["w1_rel"]


def test_activation_values_subsample_is_paired_and_patterns_reach_peft_and_adapters():
    images = _images(3)
    base = make_vit(depth=2)
    full = activation_values(base, images)
    a = activation_values(base, images, max_values=500, seed=3)
    b = activation_values(base, images, max_values=500, seed=3)
    assert a[1]["output"].numel() == 500 and torch.equal(a[1]["output"], b[1]["output"])
    assert set(a[1]["output"].tolist()) <= set(full[1]["output"].tolist())
    lora = build_method("lora", make_vit(depth=2))              # a peft PeftModel: prefixed names
    assert sorted(activation_values(lora, images)) == [0, 1]
    adapter = build_method("adapter", make_vit(depth=2))        # the wrapped MLP's own GELU, not the adapter's
    got = activation_values(adapter, images)
    assert sorted(got) == [0, 1] and got[0]["input"].numel() == full[0]["input"].numel()
    assert torch.equal(got[0]["input"], full[0]["input"])       # up starts at zero: identical to the base
    with pytest.raises(ValueError, match="pattern"):
        activation_values(base, images, pattern=r"nothing\.(\d+)$")
    with pytest.raises(ValueError, match="images"):
        activation_values(base, torch.zeros(3, 32, 32))


# ------------------------------------------------------------------------ features


def test_pre_logits_is_the_heads_input_also_under_peft():
    images = _images(5)
    labels = torch.arange(5) % 2
    model = make_vit(depth=2)
    feats, none = pre_logits(model, images, batch_size=2)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(images), pre_logits=True)
    assert none is None and feats.shape == (5, 192)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-5, atol=1e-5)
    lora = build_method("lora", make_vit(depth=2))
    f2, y2 = pre_logits(lora, TensorDataset(images, labels))
    np.testing.assert_allclose(f2, feats, rtol=1e-5, atol=1e-5)   # LoRA's B starts at zero: same features
    assert y2.tolist() == labels.tolist() and _no_hooks(lora)
    with pytest.raises(ValueError, match="head_pattern"):
        pre_logits(model, images, head_pattern=r"nohead$")


def test_cluster_quality_separates_clusters_from_noise():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    centres = rng.normal(0, 10, size=(4, 8))
    x = centres[y] + rng.normal(0, 0.5, size=(120, 8))
    xt = centres[y] + rng.normal(0, 0.5, size=(120, 8))
    good = cluster_quality(x, y, train_features=xt, train_labels=y)
    assert good["silhouette"] > 0.8 and good["knn_accuracy"] == 100.0
    shuffled = rng.permutation(y)
    bad = cluster_quality(x, shuffled, train_features=xt, train_labels=y)
    assert abs(bad["silhouette"]) < 0.1 and bad["knn_accuracy"] < 50
    assert "knn_accuracy" not in cluster_quality(x, y)
    with pytest.raises(ValueError, match="labels"):
        cluster_quality(x, np.zeros(120))
    with pytest.raises(ValueError, match="both"):
        cluster_quality(x, y, train_features=xt)
    emb = tsne_embedding(x, perplexity=10, seed=0)
    assert emb.shape == (120, 2) and cluster_quality(emb, y)["silhouette"] > 0.5
    with pytest.raises(ValueError, match="perplexity"):
        tsne_embedding(x[:5], perplexity=10)


# ------------------------------------------------------------------------ Grad-CAM


def test_reshape_transform_keeps_the_row_major_patch_layout():
    b, h, w, c = 2, 3, 4, 5
    tokens = torch.arange(1 + h * w, dtype=torch.float32).view(1, -1, 1).expand(b, -1, c)
    grid = vit_reshape_transform(tokens, prefix_tokens=1, grid=(h, w))
    assert grid.shape == (b, c, h, w)
    for r in range(h):
        for col in range(w):
            assert grid[1, 3, r, col] == 1 + r * w + col
    with pytest.raises(ValueError, match="grid"):
        vit_reshape_transform(tokens, prefix_tokens=2)


class _OnePatch(nn.Module):
    """A ViT-shaped toy whose logits read one patch token only (after ``blocks[0].norm1``)."""

    def __init__(self, k: int, patch: int = 4, dim: int = 8):
        super().__init__()
        torch.manual_seed(0)
        self.k = k
        self.patch_embed = nn.Conv2d(3, dim, patch, patch, bias=False)
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].norm1 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([torch.zeros_like(t[:, :1]), t], 1)
        t = self.blocks[0].norm1(t)
        return self.head(t[:, 1 + self.k])


def test_grad_cam_lights_up_the_patch_the_logit_reads():
    k, size, patch = 6, 16, 4                     # patch 6 of a 4 x 4 grid: row 1, column 2
    model = _OnePatch(k, patch)
    x = torch.zeros(1, 3, size, size)
    x[:, :, 4:8, 8:12] = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feat = model.blocks[0].norm1(model.patch_embed(x).flatten(2).transpose(1, 2)[:, k])
        model.head.weight[1] = feat[0]           # class 1's weight points along the token: a positive CAM
    cam = grad_cam(model, x, [1])
    assert cam.shape == (1, size, size) and cam.min() >= 0 and cam.max() == pytest.approx(1, abs=1e-5)
    r, c = np.unravel_index(cam[0].argmax(), cam[0].shape)
    assert 4 <= r < 8 and 8 <= c < 12
    assert cam[0][4:8, 8:12].sum() > 0.5 * cam[0].sum()


def test_grad_cam_runs_on_frozen_and_peft_vits_and_cleans_up():
    images = _images(3)
    frozen = make_vit(depth=2).requires_grad_(False)
    cam = grad_cam(frozen, images, [0, 1, 2], batch_size=2)
    assert cam.shape == (3, 32, 32) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert _no_hooks(frozen) and all(p.grad is None for p in frozen.parameters())
    lora = build_method("lora", make_vit(depth=2))
    lora.train()
    cam2 = grad_cam(lora, images)
    assert cam2.shape == (3, 32, 32) and lora.training and all(p.grad is None for p in lora.parameters())
    with pytest.raises(ValueError, match="labels"):
        grad_cam(frozen, images, [0])


def test_ink_share_counts_the_cam_mass_on_the_mask():
    from nora.experiments.data import MEAN, STD

    grey = torch.zeros(3, 1, 4, 4)
    grey[:, :, 1:3, 1:3] = 0.8
    images = ((grey.expand(-1, 3, -1, -1) - MEAN[0]) / STD[0]).contiguous()
    mask = ink_mask(images, 0.5)
    assert mask.sum(axis=(1, 2)).tolist() == [4, 4, 4]
    cams = np.stack([mask.astype(float)[0], np.ones((4, 4)), np.zeros((4, 4))])
    share, area = ink_share(cams, mask)
    assert share[0] == 1.0 and share[1] == pytest.approx(0.25) and math.isnan(share[2])
    assert area.tolist() == [0.25, 0.25, 0.25]
    with pytest.raises(ValueError, match="cams"):
        ink_share(-cams, mask)
    with pytest.raises(ValueError, match="threshold"):
        ink_mask(images, 0.0)
    centre = centre_mask(2, 16, 16, area=0.25)
    assert centre.shape == (2, 16, 16) and centre[0].sum() == 64 and centre[0, 4:12, 4:12].all()
    with pytest.raises(ValueError, match="area"):
        centre_mask(1, 8, 8, area=0)


# ------------------------------------------------------------------------ rational shapes


def test_rational_curves_before_and_after_match_the_layer():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_method("nora", make_vit(depth=1))
    layer = model.blocks[0].mlp.act
    x = torch.linspace(-4, 4, 33)
    before, after = rational_curves(layer, x)
    assert before.shape == after.shape == (8, 33)
    np.testing.assert_allclose(before, after)                  # B = 0: starts at the base
    with torch.no_grad():
        layer.num_B.normal_(0, 0.2)
        layer.den_B.normal_(0, 0.2)
    before2, after2 = rational_curves(layer, x)
    np.testing.assert_allclose(before2, before)
    per_group = layer.channels // layer.groups
    with torch.no_grad():
        y = layer(x.view(-1, 1).expand(-1, layer.channels).contiguous())
    np.testing.assert_allclose(after2, y[:, ::per_group].T.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(after2 - before2).max() > 1e-3 and not np.allclose(after2[0], after2[1])
    gelu = np.asarray(nn.functional.gelu(x))
    assert np.abs(before - gelu).max() < 5e-2                  # the GELU fit (form A), over [-4, 4]
    with pytest.raises(TypeError, match="NoraActivation"):
        rational_curves(nn.GELU(), x)


# ------------------------------------------------------------------------ models back from training


@pytest.fixture
def random_smoke_backbone(monkeypatch):
    """pretrained_vit -> the smoke architecture with random weights: no pre-training in tests."""
    real = backbone.pretrained_vit
    monkeypatch.setattr(backbone, "pretrained_vit", lambda profile, num_classes=None, seed=0, weights=True:
                        real("smoke", num_classes, seed=seed, weights=False))


def test_fine_tune_can_return_the_trained_model(random_smoke_backbone):
    from nora.experiments.data.digits import digits10
    from nora.experiments.vit_transfer import fine_tune

    task = digits10().subset(train_per_class=3, test_per_class=2)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    plain = fine_tune("nora", task, cfg, profile="smoke", seed=0)
    result, model = fine_tune("nora", task, cfg, profile="smoke", seed=0, return_model=True)
    assert not isinstance(plain, tuple) and isinstance(model, nn.Module)
    assert evaluate(model, task.test) == result.accuracy
    assert any(type(m).__name__ == "NoraActivation" for m in model.modules())


def test_linear_probe_trains_only_the_head(random_smoke_backbone):
    from nora.experiments.data.digits import digits10

    task = digits10().subset(train_per_class=3, test_per_class=2)
    start = backbone.pretrained_vit("smoke", 10, seed=0)
    result, model = linear_probe(task, TrainConfig(epochs=2, batch_size=16, lr=3e-2), profile="smoke", seed=0,
                                 return_model=True)
    after = model.state_dict()
    changed = {k for k, v in start.state_dict().items() if not torch.equal(v, after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert result.extra["trainable"] == result.extra["head"] == 192 * 10 + 10
    assert evaluate(model, task.test) == result.accuracy
    with pytest.raises(TypeError, match="task"):
        analysis.linear_probe("digits10", TrainConfig(epochs=1), profile="smoke")


def test_fine_tune_probe_is_the_linear_probe(random_smoke_backbone):
    from nora.experiments.data.digits import digits10
    from nora.experiments.vit_transfer import fine_tune

    task = digits10().subset(train_per_class=3, test_per_class=2)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-2)
    ours, a = fine_tune("probe", task, cfg, profile="smoke", seed=1, return_model=True)
    theirs, b = linear_probe(task, cfg, profile="smoke", seed=1, return_model=True)
    assert ours.accuracy == theirs.accuracy and ours.extra["trainable"] == theirs.extra["trainable"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_fine_tune_and_measure_returns_the_chapters_rows(random_smoke_backbone):
    from nora.experiments.data.digits import digits10
    from nora.experiments.vit_transfer import fine_tune

    task = digits10().subset(train_per_class=3, test_per_class=2)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    probe_images = torch.stack([task.test[i][0] for i in range(6)])
    reference = activation_values(backbone.pretrained_vit("smoke", task.num_classes, seed=0), probe_images, max_values=500)
    cam_x = torch.stack([task.test[i][0] for i in range(4)])
    cam_y = [int(task.test[i][1]) for i in range(4)]
    common = dict(task=task, config=cfg, profile="smoke", reference=reference, probe_images=probe_images,
                  analysis_set=task.test, knn_train=task.train, cam_images=cam_x, cam_labels=cam_y,
                  cam_mask=ink_mask(cam_x), knn=3, max_values=500)
    probe = fine_tune_and_measure("probe", seed=0, **common)
    assert {r["block"] for r in probe["shift"]} == set(reference) and len(probe["shift"]) == 2 * len(reference)
    assert all(r["w1"] == 0 and r["ks"] == 0 for r in probe["shift"])   # a frozen backbone: the reference's values
    assert probe["shapes"] == [] and "curves" not in probe and "tsne_silhouette" not in probe["features"]
    assert set(probe["run"]) >= {"accuracy", "trainable", "train_seconds", "cpu_seconds", "analysis_seconds"}
    nora = fine_tune_and_measure("nora", seed=0, tsne_classes=range(10), perplexity=5.0, keep=[0, 2], **common)
    assert nora["run"]["accuracy"] == fine_tune("nora", task, cfg, profile="smoke", seed=0).accuracy
    assert sorted(r["block"] for r in nora["shapes"]) == sorted(reference) == sorted(nora["curves"])
    assert all(r["fit_error"] < 5e-2 and r["lo"] < r["hi"] for r in nora["shapes"])
    assert nora["cams"].shape == (2, 16, 16) and nora["embedding"][0].shape == (len(task.test), 2)
    assert {"silhouette", "knn_accuracy", "tsne_silhouette"} <= set(nora["features"])
    assert 0 <= nora["cam"]["share"] <= 1 and nora["cam"]["area"] == pytest.approx(float(ink_mask(cam_x).mean()))
    assert any(r["ks"] > 0 for r in nora["shift"])


def test_book_grids_are_centred_on_chapter_04s_choices():
    import json
    from pathlib import Path

    from nora.experiments import profiles
    from nora.experiments.data import downstream_tasks

    book = profiles.settings("09_analysis", "book")
    recorded = Path(__file__).resolve().parents[2] / "results" / "book" / "04_vit_transfer.json"
    chosen = json.loads(recorded.read_text())["values"]
    key = {"nora++": "noraplus"}
    for method, grid in book["lr_grid"].items():
        grid = sorted(grid)
        assert len(grid) == 3 and all(2.9 < b / a < 3.5 for a, b in zip(grid, grid[1:])), method  # half a decade apart
        assert grid[1] == pytest.approx(chosen[f"lr_{key.get(method, method)}"]), method
    assert set(book["lr_grid"]) == {"probe", *book["methods"]} and book["task"] == "mnist20"
    train = downstream_tasks("book")[book["task"]].train
    assert book["epochs"] * -(-len(train) // book["batch_size"]) == 456      # chapter 04's hard-task schedule
    assert book["epochs"] == chosen["epochs_hard"] and book["shift"] == chosen["shift"]
