"""NoRA++: NoRA with peft LoRA / DoRA — build, train, save/load both parts, merge both."""

import pytest
import torch
from conftest import make_vit
from peft import LoraConfig

import nora
from nora.adapters.nora import NoraActivation

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
NORA = dict(groups=8, rank=3, alpha=6, trainable=["head"])


def build(use_dora):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc1", "fc2"], use_dora=use_dora)
    return nora.apply_nora_plus(make_vit(), nora.NoraConfig(**NORA), lora)


def train(model, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(IMAGES), torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("use_dora", [False, True])
def test_nora_plus_trains_both_parts_saves_loads_and_merges(tmp_path, use_dora):
    model = build(use_dora)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in names) and any(n.endswith("num_A") for n in names)
    assert any(n.endswith("head.modules_to_save.default.weight") for n in names)  # the head: a peft modules_to_save copy
    assert all("lora_" in n or "head." in n or n.endswith(("_A", "_B")) for n in names)
    if use_dora:
        assert any("lora_magnitude_vector" in n for n in names)
    train(model)
    with torch.no_grad():
        expected = model(IMAGES)
    nora.save_nora_plus(model, tmp_path)
    loaded = nora.load_nora_plus(make_vit(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IMAGES), expected, rtol=0, atol=1e-6)
        merged = nora.merge(loaded)
        out = merged(IMAGES)
    assert not any(isinstance(m, NoraActivation) for m in merged.modules())
    assert not any("lora" in n for n, _ in merged.named_modules())
    assert (out - expected).norm() / expected.norm() <= 1e-5


def test_nora_plus_parameter_count_is_the_sum_of_both_parts():
    model = build(use_dora=False)
    count = nora.count_parameters(model, exclude=["head"]).trainable
    lora = sum(4 * (192 + 576) + 4 * (192 + 768) + 4 * (768 + 192) for _ in range(2))
    assert count == 2 * 78 + lora


def test_bad_lora_config_leaves_the_model_untouched():
    from conftest import same_snapshot, snapshot

    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError):
        nora.apply_nora_plus(model, nora.NoraConfig(**NORA), LoraConfig(r=4, target_modules=["no_such_linear"]))
    assert same_snapshot(before, snapshot(model))
