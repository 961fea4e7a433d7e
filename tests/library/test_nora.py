"""NoRA on timm ViTs, transformers LLaMA and plain modules: behaviour of every documented promise."""

import copy

import pytest
import torch
from conftest import make_llama, make_vit, same_snapshot, snapshot
from torch import nn

import nora
from nora.adapters.nora import NoraActivation
from nora.fit import shipped_inits
from nora.rational import GroupRational

CFG = dict(groups=8, rank=3, alpha=6, degrees=(5, 4), target="gelu", trainable=["head"])
IMAGES = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def base_rational_model(model, groups=8):
    """The same model with every GELU replaced by the plain fitted rational (no deltas)."""
    out = copy.deepcopy(model)
    for block in out.blocks:
        block.mlp.act = GroupRational(block.mlp.fc1.out_features, groups=groups, init="gelu")
    return out


def train_steps(model, steps=3, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    target = torch.arange(IMAGES.shape[0]) % 10
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(IMAGES), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_identity_at_init_against_the_base_rational_model():
    model = make_vit()
    reference = base_rational_model(model)
    nora.apply_nora(model, nora.NoraConfig(**CFG))
    with torch.no_grad():
        assert torch.equal(model(IMAGES), reference(IMAGES))


def test_deviation_from_the_gelu_model_is_bounded_by_the_fit_error():
    model = make_vit()
    gelu_model = copy.deepcopy(model)
    nora.apply_nora(model, nora.NoraConfig(**CFG))
    max_fit_error = shipped_inits()["gelu"].max_error
    inputs = {}
    def keep(i):
        def hook(_module, args, output):
            inputs[i] = (args[0], output)

        return hook

    layers = [m for m in model.modules() if isinstance(m, NoraActivation)]
    hooks = [m.register_forward_hook(keep(i)) for i, m in enumerate(layers)]
    with torch.no_grad():
        out, ref = model(IMAGES), gelu_model(IMAGES)
    for h in hooks:
        h.remove()
    assert len(inputs) == 2
    for pre, post in inputs.values():
        inside = pre.abs() <= 3
        err = (post - nn.functional.gelu(pre))[inside].abs().max()
        assert err <= max_fit_error + 1e-5  # fp32 evaluation on top of the fit error
    relative = (out - ref).norm() / ref.norm()
    assert relative < 10 * max_fit_error


def test_one_step_changes_only_nora_factors_and_trainable_modules():
    model = make_vit()
    nora.apply_nora(model, nora.NoraConfig(**CFG))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, steps=1)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    # the head is a peft modules_to_save copy (head.modules_to_save.default); its original stays frozen
    allowed = {k for k in before if k.startswith("head.modules_to_save.") or k.endswith(("_A", "_B"))}
    assert changed and changed <= allowed
    assert any(k.endswith("num_B") for k in changed) and any(k.startswith("head.") for k in changed)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == allowed - {k for k in allowed if "base_" in k}


@pytest.mark.parametrize("groups,rank", [(8, 3), (16, 2), (4, 1)])
def test_trainable_parameters_equal_the_closed_form(groups, rank):
    model = make_vit(depth=3)
    nora.apply_nora(model, nora.NoraConfig(groups=groups, rank=rank, alpha=6, trainable=[]))
    assert nora.count_parameters(model).trainable == 3 * rank * (10 + 2 * groups)


def test_paper_accounting_on_full_size_vit_tiny():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=100)
    total_before = nora.count_parameters(model).total
    nora.apply_nora(model, nora.NoraConfig(**CFG))
    count = nora.count_parameters(model)
    assert count.trainable == 12 * 78 + 192 * 100 + 100 == 20_236
    assert count.total == total_before + 936
    assert nora.count_parameters(model, exclude=["head"]).trainable == 936
    assert "20,236" in repr(count) and round(count.percent, 2) == 0.36


@pytest.mark.parametrize(
    "options,per_layer",
    [
        (dict(perturb="numerator"), 3 * (6 + 8)),
        (dict(perturb="denominator"), 3 * (4 + 8)),
        (dict(mode="full"), 8 * 10),
        (dict(mode="zero_delta"), 8 * 10),
        (dict(mode="const"), 2 * 8),
    ],
)
def test_ablation_variants_start_at_the_base_count_and_train(options, per_layer):
    model = make_vit()
    reference = base_rational_model(model)
    nora.apply_nora(model, nora.NoraConfig(**{**CFG, "trainable": []}, **options))
    assert nora.count_parameters(model).trainable == 2 * per_layer
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), reference(IMAGES), rtol=1e-6, atol=1e-6)
    model.head.requires_grad_(True)
    before = [tuple(t.detach().clone() for t in m.coefficients()) for m in model.modules() if isinstance(m, NoraActivation)]
    train_steps(model, steps=2)
    after = [m.coefficients() for m in model.modules() if isinstance(m, NoraActivation)]
    assert any(not torch.equal(a[0], b[0]) or not torch.equal(a[1], b[1]) for a, b in zip(before, after))
    if options.get("perturb") == "numerator":
        assert all(torch.equal(a[1], b[1]) for a, b in zip(before, after))
    if options.get("perturb") == "denominator":
        assert all(torch.equal(a[0], b[0]) for a, b in zip(before, after))


def test_merge_folds_the_deltas_with_the_same_outputs():
    model = train_steps(nora.apply_nora(make_vit(), nora.NoraConfig(**CFG)))
    with torch.no_grad():
        before = model(IMAGES)
        merged = nora.merge(model)
        after = merged(IMAGES)
    assert not any(isinstance(m, NoraActivation) for m in merged.modules())
    assert all(isinstance(b.mlp.act, GroupRational) for b in merged.blocks)
    assert ((after - before).norm() / before.norm()) <= 1e-6


def test_save_then_load_is_exact(tmp_path):
    model = train_steps(nora.apply_nora(make_vit(), nora.NoraConfig(**CFG)))
    nora.save_adapter(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = nora.load_adapter(make_vit(), tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGES), model(IMAGES))
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize(
    "options,field",
    [
        (dict(groups=7), "groups"),
        (dict(target="does_not_exist"), "target"),
        (dict(trainable=["no_such_head"]), "trainable"),
    ],
)
def test_bad_input_for_this_model_raises_and_leaves_it_untouched(options, field):
    model = make_vit()
    before = snapshot(model)
    with pytest.raises(ValueError, match=field):
        nora.apply_nora(model, nora.NoraConfig(**{**CFG, **options}))
    assert same_snapshot(before, snapshot(model))


@pytest.mark.parametrize(
    "options,field",
    [(dict(rank=0), "rank"), (dict(degrees=(5,)), "degrees"), (dict(target=42), "target"),
     (dict(groups=0), "groups"), (dict(alpha=-1), "alpha"), (dict(mode="lora"), "mode"),
     (dict(perturb="both_sides"), "perturb"), (dict(target="gelu("), "target")],
)
def test_bad_config_raises_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        nora.NoraConfig(**{**CFG, **options})


def test_corrupt_or_mismatched_adapter_files_raise_and_leave_the_model_untouched(tmp_path):
    model = train_steps(nora.apply_nora(make_vit(), nora.NoraConfig(**CFG)))
    nora.save_adapter(model, tmp_path / "good")
    other = make_vit(num_classes=7)  # head shape differs
    before = snapshot(other)
    with pytest.raises(ValueError, match="head"):
        nora.load_adapter(other, tmp_path / "good")
    assert same_snapshot(before, snapshot(other))

    corrupt = tmp_path / "corrupt"
    nora.save_adapter(model, corrupt)
    data = (corrupt / "adapter_model.safetensors").read_bytes()
    (corrupt / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    fresh = make_vit()
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="corrupt"):
        nora.load_adapter(fresh, corrupt)
    (corrupt / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        nora.load_adapter(fresh, corrupt)
    assert same_snapshot(before, snapshot(fresh))


def test_llama_silu_act_fn_is_replaced_per_layer():
    model = make_llama()
    reference = make_llama()
    tokens = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    nora.apply_nora(model, nora.NoraConfig(groups=8, rank=2, alpha=4, target="silu"))
    acts = [layer.mlp.act_fn for layer in model.model.layers]
    assert all(isinstance(a, NoraActivation) and a.channels == 128 for a in acts)
    with torch.no_grad():
        out, ref = model(tokens).logits, reference(tokens).logits
    assert (out - ref).abs().max() < 1e-4  # SiLU fit error is ~5e-7
    assert nora.count_parameters(model).trainable == 2 * 2 * (10 + 16)


def test_target_by_class_by_regex_and_example_input_on_a_plain_module():
    net = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    nora.apply_nora(net, nora.NoraConfig(groups=4, rank=1, alpha=1, target=nn.Tanh, init="tanh"))
    assert isinstance(net[3], NoraActivation) and isinstance(net[1], nn.GELU)
    net2 = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 2))
    nora.apply_nora(net2, nora.NoraConfig(groups=4, rank=1, target=r"1"), example_input=torch.randn(3, 4))
    assert isinstance(net2[1], NoraActivation) and net2[1].channels == 16
    vit = make_vit(depth=4)
    nora.apply_nora(vit, nora.NoraConfig(groups=8, rank=1, target=r"blocks\.[02]\.mlp\.act"))
    kinds = [type(b.mlp.act).__name__ for b in vit.blocks]
    assert kinds == ["NoraActivation", "GELU", "NoraActivation", "GELU"]


def test_more_groups_replicate_the_base_coefficients():
    model = make_vit()
    for block in model.blocks:
        block.mlp.act = GroupRational(768, groups=8, init="gelu")
        with torch.no_grad():
            block.mlp.act.numerator += torch.arange(8.0).unsqueeze(1) * 0.01  # distinct groups
    reference = copy.deepcopy(model)
    nora.apply_nora(model, nora.NoraConfig(groups=32, rank=3, target="rational"))
    act = model.blocks[0].mlp.act
    assert act.groups == 32
    torch.testing.assert_close(act.base_numerator, reference.blocks[0].mlp.act.numerator.repeat_interleave(4, 0))
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), reference(IMAGES))
    assert nora.count_parameters(model).trainable == 2 * 3 * (10 + 64)


def test_applying_twice_is_refused():
    model = nora.apply_nora(make_vit(), nora.NoraConfig(**CFG))
    with pytest.raises(ValueError, match="already"):
        nora.apply_nora(model, nora.NoraConfig(**CFG))
