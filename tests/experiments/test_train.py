"""The training loop, the pre-trained backbones and the transfer helpers (fine_tune, lr_search, verdicts)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import nora  # noqa: F401  (first: torchvision imports next to the CPU torch)
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from nora.experiments import backbone
from nora.experiments.backbone import PretrainConfig, pretrained_vit
from nora.experiments.data.digits import digits10
from nora.experiments.train import TrainConfig, _lr_at, configure_threads, evaluate, train
from nora.experiments.vit_transfer import compare, epochs_to_converge, fine_tune, lr_search, mean_std, parameter_counts

TINY = PretrainConfig(images=256, test_images=48, epochs=1, batch_size=64, lr=1e-3, weight_decay=0.05,
                      warmup_epochs=0.0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def tiny_smoke(tmp_path_factory):
    """The smoke backbone with a seconds-long pre-training spec, cached in a throwaway folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(backbone.CACHE_ENV, str(tmp_path_factory.mktemp("nora-cache")))
        mp.setitem(backbone.SPECS, "smoke", dataclasses.replace(backbone.SPECS["smoke"], pretrain=TINY))
        yield backbone.checkpoint_path("smoke")


def _blobs(n: int = 96, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 4, generator=gen) * 0.5 + (y.float() * 2 - 1)[:, None]
    return TensorDataset(x, y)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


# --------------------------------------------------------------------------------- the loop


def test_training_learns_and_returns_curves():
    cfg = TrainConfig(epochs=5, batch_size=16, lr=1e-2, weight_decay=0.0)
    result = train(_mlp(), _blobs(), _blobs(64, seed=1), cfg, seed=0)
    assert len(result.train_curve) == len(result.test_curve) == len(result.loss_curve) == 5
    assert result.accuracy == result.test_curve[-1] > 90
    assert result.loss_curve[-1] < result.loss_curve[0]
    assert result.steps == 5 * math.ceil(96 / 16) and result.images_seen == 5 * 96
    assert result.train_seconds > 0 and result.cpu_seconds > 0 and result.lr == 1e-2


def test_progress_bar_only_when_asked_and_tqdm_disable_wins(monkeypatch):
    import io
    import subprocess
    import sys

    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, weight_decay=0.0)
    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", io.StringIO())  # tqdm writes its bar to stderr
        train(_mlp(), _blobs(), None, cfg, progress=progress, desc="bar")
        assert ("bar:" in sys.stderr.getvalue()) is progress
    # tqdm reads $TQDM_DISABLE when it is imported: the book runner sets it for its kernels
    code = ("import nora, torch; from nora.experiments.train import TrainConfig, train; from torch.utils.data import TensorDataset; "
            "train(torch.nn.Linear(4, 2), TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), None, "
            "TrainConfig(epochs=2, batch_size=4), progress=True, desc='bar')")
    env = {**os.environ, "TQDM_DISABLE": "1", "NORA_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bar:" not in done.stderr


def test_runs_are_reproducible_and_the_seed_orders_the_batches():
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2)
    a, b, c = _mlp(), _mlp(), _mlp()
    ra = train(a, _blobs(), None, cfg, seed=3)
    rb = train(b, _blobs(), None, cfg, seed=3)
    rc = train(c, _blobs(), None, cfg, seed=4)
    assert ra.loss_curve == pytest.approx(rb.loss_curve, rel=1e-6)
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-7) for p, q in zip(a.parameters(), b.parameters()))
    assert ra.loss_curve != pytest.approx(rc.loss_curve, rel=1e-3)
    assert ra.test_curve == [None, None] and math.isnan(ra.accuracy)  # no test set given


def test_only_trainable_parameters_change():
    model = _mlp()
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    head = model[2].weight.detach().clone()
    train(model, _blobs(), None, TrainConfig(epochs=1, batch_size=16, lr=1e-2, weight_decay=0.05), seed=0)
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, head)


def test_eval_every_skips_epochs_but_always_scores_the_last():
    result = train(_mlp(), _blobs(), _blobs(32, 1), TrainConfig(epochs=5, batch_size=32, lr=1e-2, eval_every=2), seed=0)
    assert [v is None for v in result.test_curve] == [True, False, True, False, False]


def test_cosine_schedule_with_warmup():
    cfg = TrainConfig(epochs=10, lr=1.0, min_lr=0.1)
    assert _lr_at(0, 100, 10, cfg) == pytest.approx(0.1)     # warm-up: (step + 1) / warmup
    assert _lr_at(9, 100, 10, cfg) == pytest.approx(1.0)
    assert _lr_at(10, 100, 10, cfg) == pytest.approx(1.0)    # cosine starts at lr
    assert _lr_at(55, 100, 10, cfg) == pytest.approx(0.55)   # halfway: (lr + min_lr) / 2
    assert _lr_at(100, 100, 10, cfg) == pytest.approx(0.1)   # ends at min_lr


def test_divergence_is_reported_not_trained_through():
    data = _blobs()
    data.tensors[0][40, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 0"):
        train(_mlp(), data, None, TrainConfig(epochs=3, batch_size=96, lr=1e-3), seed=0)


def test_amp_trains_under_bf16_autocast_on_cpu():
    result = train(_mlp(), _blobs(), _blobs(64, seed=1), TrainConfig(epochs=5, batch_size=16, lr=1e-2, amp=True), seed=0)
    assert result.accuracy > 90


def test_bad_settings_name_the_field(monkeypatch):
    for field, value in [("epochs", 0), ("batch_size", 2.5), ("lr", -1.0), ("lr", float("nan")), ("amp", "yes"),
                         ("grad_clip", 0.0), ("warmup_epochs", 99.0)]:
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="trainable"):
        train(_mlp().requires_grad_(False), _blobs(), None, TrainConfig(epochs=1))
    with pytest.raises(TypeError, match="TrainConfig"):
        train(_mlp(), _blobs(), None, {"epochs": 1})
    monkeypatch.setenv("NORA_THREADS", "one")
    with pytest.raises(ValueError, match="NORA_THREADS"):
        configure_threads()
    threads = torch.get_num_threads()
    monkeypatch.setenv("NORA_THREADS", "1")
    try:
        assert configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_evaluate_restores_train_mode():
    model = _mlp().train()
    acc = evaluate(model, _blobs())
    assert 0 <= acc <= 100 and model.training


# ------------------------------------------------------------------------------- the backbone


def test_pretraining_is_reproducible_and_recorded(tiny_smoke: Path, tmp_path: Path):
    model = pretrained_vit("smoke")  # pre-trains on first use, into the cache
    manifest = json.loads(tiny_smoke.with_suffix(".json").read_text())
    assert manifest["sha256"] == backbone.sha256(tiny_smoke)
    assert manifest["spec"]["depth"] == 2 and manifest["spec"]["pretrain"]["images"] == 256
    assert model.head.out_features == 24 and len(model.blocks) == 2 and model.patch_embed.num_patches == 16
    torch.set_num_threads(2)  # pretrain runs on one thread whatever the caller's setting
    again = backbone.pretrain("smoke", out=tmp_path, progress=False)
    assert torch.get_num_threads() == 2 and again["threads"] == 1
    # same seed: the same weights up to float rounding (summation order may follow memory alignment)
    from safetensors.torch import load_file

    first, second = load_file(str(tiny_smoke)), load_file(str(tmp_path / tiny_smoke.name))
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(second[key].float(), first[key].float(), rtol=2e-2, atol=2e-3)
    assert again["source_test_accuracy"] == pytest.approx(manifest["source_test_accuracy"], abs=100 * 2 / 48)


def test_pretrained_vit_gives_fresh_seeded_heads_on_the_same_weights(tiny_smoke: Path):
    a = pretrained_vit("smoke", num_classes=10, seed=0)
    b = pretrained_vit("smoke", num_classes=10, seed=0)
    c = pretrained_vit("smoke", num_classes=10, seed=1)
    source = pretrained_vit("smoke")
    assert a.head.out_features == 10 and not a.training
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert torch.equal(a.head.bias, torch.zeros(10))
    assert torch.equal(a.blocks[1].mlp.fc1.weight, c.blocks[1].mlp.fc1.weight)
    assert torch.equal(a.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
    a.blocks[0].mlp.fc1.weight.data.zero_()  # callers get copies: the cached weights are untouched
    assert not torch.equal(pretrained_vit("smoke").blocks[0].mlp.fc1.weight, a.blocks[0].mlp.fc1.weight)
    random = pretrained_vit("smoke", num_classes=10, weights=False)
    assert not torch.equal(random.blocks[1].mlp.fc1.weight, a.blocks[1].mlp.fc1.weight)


def test_a_corrupted_checkpoint_is_refused(tiny_smoke: Path, tmp_path: Path, monkeypatch):
    pretrained_vit("smoke")
    bad = tmp_path / "backbones"
    bad.mkdir()
    data = bytearray(tiny_smoke.read_bytes())
    data[-1] ^= 0xFF
    (bad / tiny_smoke.name).write_bytes(bytes(data))
    (bad / tiny_smoke.with_suffix(".json").name).write_text(tiny_smoke.with_suffix(".json").read_text())
    monkeypatch.setenv(backbone.CACHE_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="SHA-256"):
        pretrained_vit("smoke")


def test_book_backbone_spec_and_paper_architecture():
    book = backbone.backbone_spec("book")   # since issue 16: the glyph backbone, ViT-Tiny's 12 blocks
    assert book is backbone.SPECS["glyphs"] and (book.img_size, book.patch_size, book.depth) == (16, 4, 12)
    shapes = backbone.backbone_spec("shapes")  # the first edition's backbone, the far-transfer contrast
    assert (shapes.img_size, shapes.patch_size, shapes.depth, shapes.profile) == (16, 4, 6, "book")
    model = pretrained_vit("paper", num_classes=10, weights=False)  # random ViT-Tiny: no network
    assert len(model.blocks) == 12 and model.embed_dim == 192 and model.head.out_features == 10
    with pytest.raises(ValueError, match="num_classes"):
        pretrained_vit("smoke", num_classes=0, weights=False)
    with pytest.raises(ValueError, match="profile"):
        pretrained_vit("huge")


# ------------------------------------------------------------------------------- transfer


def test_fine_tune_nora_trains_only_the_deltas_and_head(tiny_smoke: Path):
    task = digits10().subset(train_per_class=6, test_per_class=3)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3)
    result = fine_tune("nora", task, cfg, profile="smoke", seed=0)
    again = fine_tune("nora", task, cfg, profile="smoke", seed=0)
    extra = result.extra
    assert extra["trainable_without_head"] == 2 * 3 * (10 + 2 * 8)   # 2 blocks, r (10 + 2G)
    assert extra["head"] == 192 * 10 + 10
    assert extra["trainable"] == extra["trainable_without_head"] + extra["head"]
    assert result.loss_curve == pytest.approx(again.loss_curve, rel=1e-4)  # reruns agree up to rounding
    assert len(result.test_curve) == 2 and 0 <= result.accuracy <= 100


def test_fine_tune_paper_path_on_fake_cifar_at_224px(tmp_path: Path, monkeypatch):
    from test_vision_data import _write_cifar10

    from nora.experiments.data.cifar import cifar_task

    _write_cifar10(tmp_path, per_batch=1)
    task = cifar_task("cifar10", tmp_path, img_size=224, verify=False)
    # a randomly initialised ViT-Tiny instead of the hub weights: no network in tests
    monkeypatch.setattr(backbone, "pretrained_vit", lambda profile, num_classes=None, seed=0, weights=True:
                        pretrained_vit(profile, num_classes, seed=seed, weights=False))
    cfg = TrainConfig(epochs=1, batch_size=5, lr=1e-3)
    result = fine_tune("full", task, cfg, profile="paper", seed=0)
    assert result.steps == 1 and result.images_seen == 5 and len(result.test_curve) == 1
    assert result.extra["head"] == 1930 and result.extra["trainable"] == result.extra["total"] == 5_526_346


def test_lr_search_scores_on_validation_and_never_picks_a_diverged_rate(tiny_smoke: Path):
    task = digits10().subset(train_per_class=8, test_per_class=1)
    best, trials = lr_search("full", task, [1e-3, 1e9], TrainConfig(epochs=1, batch_size=16),
                             profile="smoke", val_fraction=0.25)
    assert [t["lr"] for t in trials] == [1e-3, 1e9]
    assert math.isnan(trials[1]["val_accuracy"]) and best == 1e-3
    assert math.isfinite(trials[0]["val_accuracy"])
    with pytest.raises(ValueError, match="grid"):
        lr_search("full", task, [], TrainConfig(epochs=1), profile="smoke")


def test_parameter_counts_split_off_the_head():
    model = nn.Sequential()
    model.add_module("body", nn.Linear(4, 4))
    model.add_module("head", nn.Linear(4, 2))
    model.body.requires_grad_(False)
    counts = parameter_counts(model)
    assert counts == {"trainable": 10, "trainable_without_head": 0, "head": 10, "total": 30,
                      "percent": pytest.approx(100 / 3)}


def test_summaries_and_verdicts():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])
    assert compare([91.0, 91.2, 90.8], [90.0, 90.2, 89.8])["verdict"] == "higher"
    assert compare([90.0, 91.0, 89.0], [90.5, 89.5, 90.0])["verdict"] == "within noise"
    c = compare([1.0, 1.0], [2.0, 2.0])
    assert c["verdict"] == "lower" and c["diff"] == -1.0 and c["se"] == 0
    assert epochs_to_converge([10, 50, 80, 89.5, 90, 90.2]) == 4
    assert epochs_to_converge([90, 90, 90]) == 1
    assert epochs_to_converge([10, 90, 80]) == 3
