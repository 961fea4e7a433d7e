"""build_method: every compared method by name, with the paper's defaults, counted in closed form."""

import pytest
import torch
from conftest import make_vit, same_snapshot, snapshot

from nora.counting import count_parameters
from nora.experiments.methods import METHODS, build_method, method_config

IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
DIM, HIDDEN, DEPTH, CLASSES = 192, 768, 2, 10
HEAD = DIM * CLASSES + CLASSES
ALL_LINEAR = (DIM + 3 * DIM) + (DIM + DIM) + (DIM + HIDDEN) + (HIDDEN + DIM)  # qkv, proj, fc1, fc2: in + out
MAGNITUDES = 3 * DIM + DIM + HIDDEN + DIM
NORA_LAYER = 3 * (10 + 2 * 8)  # r (m+1+n) + 2 G r with r=3, G=8, type (5, 4)

# trainable parameters of each method's default config on make_vit() (2 blocks, 10 classes)
EXPECTED = {
    "probe": HEAD,
    "vpt": 10 * DIM + HEAD,
    "adapter": DEPTH * (DIM * 48 + 48 + 48 * DIM + DIM) + HEAD,
    "lora": DEPTH * 2 * 8 * (DIM + DIM) + HEAD,
    "qlora": DEPTH * 2 * 8 * (DIM + DIM) + HEAD,
    "dora": DEPTH * (8 * ALL_LINEAR + MAGNITUDES) + HEAD,
    "prelu": DEPTH + HEAD,
    "arelu": DEPTH * 2 + HEAD,
    "elu": DEPTH + HEAD,
    "nora": DEPTH * NORA_LAYER + HEAD,
    "nora++": DEPTH * (NORA_LAYER + 8 * ALL_LINEAR) + HEAD,
    "loran": DEPTH * 8 * (DIM + 3 * DIM) + HEAD,
}


def test_methods_lists_every_compared_method_and_unknown_names_raise():
    assert set(METHODS) == set(EXPECTED) | {"full"}
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="method"):
        build_method("lora++", model)
    with pytest.raises(ValueError, match="ranks"):
        build_method("lora", model, ranks=4)
    with pytest.raises(ValueError, match="nora=.*lora="):
        build_method("nora++", model, rank=4)
    assert same_snapshot(before, snapshot(model))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_method_builds_runs_and_trains_the_closed_form_count(name):
    model = build_method(name, make_vit())
    with torch.no_grad():
        assert model(IMAGES).shape == (2, CLASSES)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith(("head.", "base_model.model.head.")) for n in trainable)
    assert count_parameters(model).trainable == EXPECTED[name]


def test_full_trains_everything():
    model = make_vit()
    model.requires_grad_(False)
    count = count_parameters(build_method("full", model))
    assert count.trainable == count.total


def test_overrides_change_the_config():
    assert count_parameters(build_method("lora", make_vit(), rank=4)).trainable == DEPTH * 2 * 4 * 2 * DIM + HEAD
    model = build_method("adapter", make_vit(), positions=("attn", "mlp"), width=16)
    assert count_parameters(model).trainable == 2 * DEPTH * (2 * DIM * 16 + 16 + DIM) + HEAD
    assert method_config("qlora", rank=4).quantize_4bit and method_config("qlora").gradient_checkpointing
    assert method_config("dora").use_dora and method_config("lora").targets == ("q", "v")


def test_nora_plus_overrides_go_to_their_part():
    nora_cfg, lora_cfg = method_config("nora++", nora={"rank": 2}, lora={"r": 4, "target_modules": ["qkv"]})
    assert nora_cfg.rank == 2 and lora_cfg.r == 4
    model = build_method("nora++", make_vit(), nora={"rank": 2}, lora={"r": 4, "target_modules": ["qkv"]})
    assert count_parameters(model).trainable == DEPTH * (2 * (10 + 16) + 4 * 4 * DIM) + HEAD


def test_probe_trains_the_head_alone_and_leaves_the_backbone_bit_for_bit():
    from nora.experiments.train import TrainConfig, train

    model = build_method("probe", make_vit())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("head.")}
    data = torch.utils.data.TensorDataset(IMAGES.repeat(4, 1, 1, 1), torch.arange(8) % CLASSES)
    train(model, data, None, TrainConfig(epochs=2, batch_size=4, lr=1e-2), seed=0)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    with pytest.raises(ValueError, match="trainable"):
        build_method("probe", make_vit(), trainable=())
