"""The paper's baselines on small timm ViTs: VPT, bottleneck adapters, learnable activations, LoRA/DoRA/QLoRA, full."""

import math

import pytest
import timm
import torch
from conftest import make_vit, same_snapshot, snapshot
from peft import PeftModel
from torch import nn

import nora
from nora.adapters.activations import ActivationSwapConfig, AReLU, FrozenActivation, LearnableELU, PReLU, \
    apply_activation_swap
from nora.adapters.bottleneck import AdaptedSublayer, Bottleneck, BottleneckConfig, apply_bottleneck
from nora.adapters.peft_baselines import FullFinetuneConfig, LoraBaselineConfig, SplitQKV, apply_full_finetune, \
    apply_lora_baseline, load_lora_baseline, prepare_base, save_lora_baseline
from nora.adapters.prompts import VPTConfig, apply_vpt
from nora.counting import count_parameters

IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
TARGET = torch.arange(4)
DIM, HIDDEN, DEPTH, CLASSES = 192, 768, 2, 10
HEAD = DIM * CLASSES + CLASSES


def train(model, steps=2, lr=1e-2):
    """AdamW without weight decay: only parameters with a gradient can move."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(IMAGES), TARGET)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def changed_after_training(model, steps=2):
    """Names of parameters whose values changed in ``steps`` optimizer steps; asserts it equals the trainable set."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    train(model, steps)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == trainable
    return changed


def outputs(model):
    with torch.no_grad():
        return model(IMAGES)


# ----------------------------------------------------------------------------------------------- VPT


@pytest.mark.parametrize("reg_tokens, pool", [(0, "token"), (2, "avg")])
def test_vpt_puts_prompts_after_the_prefix_tokens_and_pooling_skips_them(reg_tokens, pool):
    base = make_vit(reg_tokens=reg_tokens, global_pool=pool)
    model = make_vit(reg_tokens=reg_tokens, global_pool=pool)
    prefix = base.num_prefix_tokens
    seen = {}
    base.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("base", a[0]))
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("vpt", a[0]))
    apply_vpt(model, VPTConfig(prompts=5))
    assert model.num_prefix_tokens == prefix + 5
    out_base, out = outputs(base), outputs(model)
    prompts = model.norm_pre.prompts.tokens
    x, ref = seen["vpt"], seen["base"]
    assert x.shape[1] == ref.shape[1] + 5
    assert torch.equal(x[:, :prefix], ref[:, :prefix])
    assert torch.equal(x[:, prefix : prefix + 5], prompts.expand(4, -1, -1))
    assert torch.equal(x[:, prefix + 5 :], ref[:, prefix:])
    assert not torch.allclose(out, out_base)  # VPT changes outputs from the start (patch tokens attend to prompts)
    with torch.no_grad():
        feats = model.forward_features(IMAGES)
        pooled = feats[:, 0] if pool == "token" else feats[:, prefix + 5 :].mean(1)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), model.fc_norm(pooled))


def test_vpt_trains_only_prompts_and_head_and_counts_them():
    model = apply_vpt(make_vit(), VPTConfig(prompts=10))
    assert changed_after_training(model) == {"norm_pre.prompts.tokens", "head.weight", "head.bias"}
    count = count_parameters(model)
    assert count.trainable == 10 * DIM + HEAD
    assert count.total == count_parameters(make_vit()).total + 10 * DIM


def test_vpt_init_follows_vpt_uniform_bound():
    model = apply_vpt(make_vit(), VPTConfig(prompts=50))
    bound = math.sqrt(6.0 / (3 * 8 * 8 + DIM))  # patch 8 in these test models
    tokens = model.norm_pre.prompts.tokens
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.9 * bound
    assert apply_vpt(make_vit(), VPTConfig(init_std=1e-3)).norm_pre.prompts.tokens.std() < 2e-3


def test_vpt_save_load_round_trip_is_exact(tmp_path):
    model = train(apply_vpt(make_vit(), VPTConfig(prompts=4)))
    expected = outputs(model)
    nora.save_adapter(model, tmp_path)
    loaded = nora.load_adapter(make_vit(), tmp_path)
    assert loaded.num_prefix_tokens == 1 + 4
    assert torch.equal(outputs(loaded), expected)


def test_vpt_bad_input_raises_and_leaves_the_model_untouched(tmp_path):
    with pytest.raises(ValueError, match="prompts"):
        VPTConfig(prompts=0)
    with pytest.raises(ValueError, match="init_std"):
        VPTConfig(init_std=-1.0)
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="trainable"):
        apply_vpt(model, VPTConfig(trainable=("no_such_head",)))
    with pytest.raises(ValueError, match="dynamic_img_size"):
        apply_vpt(make_vit(dynamic_img_size=True), VPTConfig())
    with pytest.raises(ValueError, match="model"):
        apply_vpt(nn.Sequential(nn.Linear(2, 2)), VPTConfig())
    assert same_snapshot(before, snapshot(model)) and model.num_prefix_tokens == 1
    # a file that does not fit (other width) is rejected after injection: the undo restores num_prefix_tokens
    nora.save_adapter(apply_vpt(make_vit(embed_dim=96, num_heads=3), VPTConfig()), tmp_path)
    with pytest.raises(ValueError, match="shape"):
        nora.load_adapter(model, tmp_path)
    assert same_snapshot(before, snapshot(model)) and model.num_prefix_tokens == 1


# ------------------------------------------------------------------------------------ bottleneck


@pytest.mark.parametrize("positions", [("mlp",), ("attn", "mlp")])
def test_bottleneck_is_identity_at_init_and_counts_its_closed_form(positions):
    model = make_vit()
    expected = outputs(model)
    apply_bottleneck(model, BottleneckConfig(width=48, positions=positions))
    assert torch.equal(outputs(model), expected)
    assert Bottleneck.count(192, 48) == 192 * 48 + 48 + 48 * 192 + 192 == 18_672
    adapters = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(adapters) == DEPTH * len(positions)
    assert count_parameters(model).trainable == DEPTH * len(positions) * 18_672 + HEAD


def test_bottleneck_trains_only_adapters_and_head():
    model = apply_bottleneck(make_vit(), BottleneckConfig(positions=("attn", "mlp"), scale=0.5))
    changed = changed_after_training(model)
    assert {n.split(".adapter.")[0] for n in changed if ".adapter." in n} == {
        f"blocks.{i}.{p}" for i in range(DEPTH) for p in ("attn", "mlp")
    }
    assert all(".adapter." in n or n.startswith("head.") for n in changed)
    assert not torch.equal(outputs(model), outputs(make_vit()))


def test_bottleneck_save_load_round_trip_is_exact_and_merge_refuses(tmp_path):
    model = train(apply_bottleneck(make_vit(), BottleneckConfig(width=8, activation="relu")))
    expected = outputs(model)
    nora.save_adapter(model, tmp_path)
    saved = set(nora.io.adapter_state(model))
    assert saved == {f"blocks.{i}.mlp.adapter.{l}.{w}" for i in range(DEPTH) for l in ("down", "up")
                     for w in ("weight", "bias")} | {"head.weight", "head.bias"}  # no frozen base weights
    loaded = nora.load_adapter(make_vit(), tmp_path)
    assert torch.equal(outputs(loaded), expected)
    with pytest.raises(ValueError, match="cannot be merged"):
        nora.merge(loaded)


def test_bottleneck_bad_input_raises_and_leaves_the_model_untouched():
    for field, kwargs in [("width", dict(width=0)), ("positions", dict(positions=("ffn",))),
                          ("activation", dict(activation="tanh")), ("scale", dict(scale=float("nan")))]:
        with pytest.raises(ValueError, match=field):
            BottleneckConfig(**kwargs)
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="trainable"):
        apply_bottleneck(model, BottleneckConfig(trainable=("heads",)))
    with pytest.raises(ValueError, match="model"):
        apply_bottleneck(nn.Sequential(nn.Linear(2, 2)), BottleneckConfig())
    assert same_snapshot(before, snapshot(model))
    apply_bottleneck(model, BottleneckConfig())
    with pytest.raises(ValueError, match="already"):
        apply_bottleneck(model, BottleneckConfig())
    assert sum(isinstance(m, AdaptedSublayer) for m in model.modules()) == DEPTH


# ----------------------------------------------------------------------------- learnable activations


def test_learnable_activations_compute_their_published_formulas():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    torch.testing.assert_close(PReLU()(x), torch.where(x >= 0, x, 0.25 * x))
    arelu = AReLU()
    gain = 1 + torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(arelu(x), torch.where(x >= 0, gain * x, 0.9 * x))
    with torch.no_grad():
        arelu.alpha.fill_(5.0)  # clamped to 0.99
    torch.testing.assert_close(arelu(x)[:2], 0.99 * x[:2])
    elu = LearnableELU()
    with torch.no_grad():
        elu.alpha.fill_(2.0)
    torch.testing.assert_close(elu(x), torch.where(x > 0, x, 2.0 * torch.expm1(x)))
    big = torch.tensor([100.0, -100.0], requires_grad=True)
    elu(big).sum().backward()
    assert torch.isfinite(big.grad).all() and torch.isfinite(elu.alpha.grad).all()


@pytest.mark.parametrize("kind, per_channel, per_layer", [("prelu", False, 1), ("prelu", True, HIDDEN),
                                                          ("arelu", False, 2), ("elu", False, 1)])
def test_activation_swap_replaces_every_gelu_trains_only_it_and_the_head(kind, per_channel, per_layer):
    model = apply_activation_swap(make_vit(), ActivationSwapConfig(kind=kind, per_channel=per_channel))
    assert not any(isinstance(m, nn.GELU) for m in model.modules())
    acts = [type(b.mlp.act) for b in model.blocks]
    assert acts == [{"prelu": PReLU, "arelu": AReLU, "elu": LearnableELU}[kind]] * DEPTH
    assert count_parameters(model).trainable == DEPTH * per_layer + HEAD
    changed = changed_after_training(model, steps=1)
    assert all(".mlp.act." in n or n.startswith("head.") for n in changed)
    assert sum(".mlp.act." in n for n in changed) == DEPTH * (2 if kind == "arelu" else 1)


@pytest.mark.parametrize("kind, per_channel", [("prelu", True), ("arelu", False), ("elu", False)])
def test_activation_swap_save_load_and_merge_are_exact(tmp_path, kind, per_channel):
    model = train(apply_activation_swap(make_vit(), ActivationSwapConfig(kind=kind, per_channel=per_channel)), 1)
    expected = outputs(model)
    nora.save_adapter(model, tmp_path)
    loaded = nora.load_adapter(make_vit(), tmp_path)
    assert torch.equal(outputs(loaded), expected)
    merged = nora.merge(loaded)
    assert all(isinstance(b.mlp.act, FrozenActivation) for b in merged.blocks)
    assert torch.equal(outputs(merged), expected)


def test_activation_swap_bad_input_raises_and_leaves_the_model_untouched():
    with pytest.raises(ValueError, match="kind"):
        ActivationSwapConfig(kind="swish")
    with pytest.raises(ValueError, match="per_channel"):
        ActivationSwapConfig(kind="elu", per_channel=True)
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="target"):
        apply_activation_swap(model, ActivationSwapConfig(target=r"blocks\.9\.mlp\.act"))
    with pytest.raises(ValueError, match="trainable"):
        apply_activation_swap(model, ActivationSwapConfig(trainable=("classifier",)))
    assert same_snapshot(before, snapshot(model))


# ------------------------------------------------------------------------------ LoRA / DoRA / QLoRA

LORA = lambda r=8: DEPTH * 2 * r * (DIM + DIM)  # noqa: E731  (q and v)
ALL_LINEAR = DIM + 3 * DIM + DIM + DIM + DIM + HIDDEN + HIDDEN + DIM  # in + out of qkv, proj, fc1, fc2
MAGNITUDES = 3 * DIM + DIM + HIDDEN + DIM


def test_split_qkv_is_exact():
    qkv = make_vit().blocks[0].attn.qkv
    x = torch.randn(3, 5, DIM)
    with torch.no_grad():
        torch.testing.assert_close(SplitQKV(qkv)(x), qkv(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("config, trainable", [
    (LoraBaselineConfig(rank=8), LORA(8) + HEAD),
    (LoraBaselineConfig(rank=4, targets=("qkv",)), DEPTH * 4 * (DIM + 3 * DIM) + HEAD),
    (LoraBaselineConfig(rank=8, targets=("qkv", "proj", "fc1", "fc2"), use_dora=True),
     DEPTH * (8 * ALL_LINEAR + MAGNITUDES) + HEAD),
])
def test_lora_and_dora_are_identity_at_init_count_their_closed_form_and_train_only_adapters(config, trainable):
    model = make_vit()
    expected = outputs(model)
    peft_model = apply_lora_baseline(model, config)
    torch.testing.assert_close(outputs(peft_model), expected, rtol=0, atol=1e-5)
    assert count_parameters(peft_model).trainable == trainable
    # peft keeps the original head next to its trainable copy: exclude it to compare totals
    total = count_parameters(peft_model, exclude=("original_module",)).total
    assert total == count_parameters(make_vit()).total + trainable - HEAD
    changed = changed_after_training(peft_model)
    assert all("lora_" in n or ".modules_to_save." in n for n in changed)
    assert not any("patch_embed" in n for n in changed)  # "proj" means attn.proj only, never the conv


def test_lora_on_query_and_value_leaves_the_key_projection_alone():
    peft_model = apply_lora_baseline(make_vit(), LoraBaselineConfig(rank=4))
    attn = peft_model.base_model.model.blocks[0].attn
    assert isinstance(attn.qkv, SplitQKV) and type(attn.qkv.k) is nn.Linear
    x = torch.randn(2, 5, DIM)
    with torch.no_grad():
        before = attn.qkv(x)
    train(peft_model)
    with torch.no_grad():
        after = attn.qkv(x)
    assert torch.equal(after[..., DIM : 2 * DIM], before[..., DIM : 2 * DIM])  # k unchanged
    assert not torch.allclose(after[..., :DIM], before[..., :DIM])  # q moved
    assert not torch.allclose(after[..., 2 * DIM :], before[..., 2 * DIM :])  # v moved


@pytest.mark.parametrize("config", [
    LoraBaselineConfig(rank=4),
    LoraBaselineConfig(rank=4, targets=("qkv", "proj", "fc1", "fc2"), use_dora=True),
    LoraBaselineConfig(rank=4, quantize_4bit=True),
], ids=["lora", "dora", "qlora"])
def test_peft_save_load_round_trip_is_exact(tmp_path, config):
    peft_model = train(apply_lora_baseline(make_vit(), config))
    expected = outputs(peft_model)
    save_lora_baseline(peft_model, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "adapter_config.json").is_file()
    loaded = load_lora_baseline(make_vit(), tmp_path)
    assert torch.equal(outputs(loaded), expected)
    # peft's own loader works on a base prepared the same way (qkv split / NF4)
    native = PeftModel.from_pretrained(prepare_base(make_vit(), config), str(tmp_path))
    assert torch.equal(outputs(native), expected)


def test_qlora_quantizes_the_backbone_to_nf4_and_trains_on_cpu():
    import bitsandbytes as bnb

    base_total = count_parameters(make_vit()).total
    peft_model = apply_lora_baseline(make_vit(), LoraBaselineConfig(rank=4, quantize_4bit=True,
                                                                    gradient_checkpointing=True))
    base = peft_model.base_model.model
    four_bit = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == DEPTH * 6  # q, k, v, proj, fc1, fc2 per block; the head stays fp32
    assert all(m.weight.quant_state.quant_type == "nf4" and m.weight.quant_state.nested for m in four_bit)
    assert all(m.weight.numel() * 2 == math.prod(m.weight.quant_state.shape) for m in four_bit)  # packed
    assert base.grad_checkpointing
    count = count_parameters(peft_model, exclude=("original_module",))
    assert count.total == base_total + LORA(4)  # 4-bit weights counted by logical shape
    assert count.trainable == LORA(4) + HEAD
    with torch.no_grad():
        init_out = peft_model(IMAGES)
        with peft_model.disable_adapter():
            torch.testing.assert_close(peft_model(IMAGES), init_out, rtol=0, atol=1e-5)  # identity on the NF4 base
    packed = {id(m): m.weight.detach().clone() for m in four_bit}
    peft_model.train()
    loss = nn.functional.cross_entropy(peft_model(IMAGES), TARGET)
    loss.backward()
    grads = [p.grad for p in peft_model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2).step()
    assert all(torch.equal(m.weight.detach(), packed[id(m)]) for m in four_bit)
    assert not torch.equal(outputs(peft_model.eval()), init_out)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make_vit()
        torch.manual_seed(5)
        peft_model = apply_lora_baseline(model, LoraBaselineConfig(rank=4, gradient_checkpointing=checkpointing))
        peft_model.train()
        nn.functional.cross_entropy(peft_model(IMAGES), TARGET).backward()
        grads.append({n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name])


def test_lora_bad_input_raises_and_leaves_the_model_untouched():
    for field, kwargs in [("rank", dict(rank=0)), ("alpha", dict(alpha=-1)), ("dropout", dict(dropout=1.0)),
                          ("targets", dict(targets=("qkv", "q"))), ("use_dora", dict(use_dora="yes"))]:
        with pytest.raises(ValueError, match=field):
            LoraBaselineConfig(**kwargs)
    model = make_vit()
    before = snapshot(model)
    for field, config in [("targets", LoraBaselineConfig(targets=("q", "out_proj"), quantize_4bit=True)),
                          ("trainable", LoraBaselineConfig(trainable=("classifier",), quantize_4bit=True)),
                          ("trainable", LoraBaselineConfig(trainable=("norm",)))]:  # would also catch fc_norm
        with pytest.raises(ValueError, match=field):
            apply_lora_baseline(model, config)
        assert same_snapshot(before, snapshot(model))
    assert not hasattr(model, "is_loaded_in_4bit")


@pytest.mark.parametrize("quantize", [False, True])
def test_peft_load_of_a_mismatched_file_raises_and_leaves_the_model_untouched(tmp_path, quantize):
    other = apply_lora_baseline(make_vit(embed_dim=96, num_heads=3), LoraBaselineConfig(rank=4, quantize_4bit=quantize))
    save_lora_baseline(other, tmp_path)
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match="does not match"):
        load_lora_baseline(model, tmp_path)  # peft fails half-way: its layers, our split and NF4 are rolled back
    assert same_snapshot(before, snapshot(model))
    assert not hasattr(model, "is_loaded_in_4bit") and not hasattr(model, "peft_config")


# --------------------------------------------------------------------------------------------- full


def test_full_size_vit_tiny_counts_match_the_closed_forms():
    """ViT-Tiny at 224 px, 12 blocks, 100 classes (the paper's CIFAR-100 setting; no forward pass)."""

    def vit():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=100)

    head, blocks = DIM * 100 + 100, 12
    assert count_parameters(vit()).total == 5_543_716
    assert count_parameters(apply_vpt(vit(), VPTConfig(prompts=10))).trainable == 10 * DIM + head
    adapter = apply_bottleneck(vit(), BottleneckConfig(width=48))
    assert count_parameters(adapter).trainable == blocks * 18_672 + head
    lora = apply_lora_baseline(vit(), LoraBaselineConfig(rank=8))
    assert count_parameters(lora).trainable == blocks * 2 * 8 * (DIM + DIM) + head


def test_full_finetune_trains_everything_but_frozen():
    model = make_vit()
    model.requires_grad_(False)
    apply_full_finetune(model)
    count = count_parameters(model)
    assert count.trainable == count.total
    apply_full_finetune(model, FullFinetuneConfig(frozen=("patch_embed",)))
    assert count_parameters(model).trainable == count.total - sum(p.numel() for p in model.patch_embed.parameters())
    with pytest.raises(ValueError, match="frozen"):
        apply_full_finetune(model, FullFinetuneConfig(frozen=("stem",)))
