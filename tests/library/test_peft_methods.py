"""NoRA and NoRA++ through peft's own API, on a timm ViT and a transformers LLaMA (issue 19).

get_peft_model / print_trainable_parameters / save_pretrained / PeftModel.from_pretrained /
disable_adapter / named adapters / merge_adapter, unmerge_adapter, merge_and_unload, unload /
Trainer with checkpoints and resume / generate; the shim that registers the methods; safe loading
(recorded widths and SHA-256, all-or-nothing loads) and the pre-peft format.
"""

import copy
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import peft
import pytest
import torch
from conftest import make_vit, same_snapshot, snapshot
from peft import PeftConfig, PeftModel, get_peft_model
from peft.utils import PeftType

import nora
from nora.adapters import peft_shim
from nora.adapters.nora import NoraActivation
from nora.inject import activation_kind
from nora.rational import GroupRational

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
TOKENS = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(2))


def make_llama(seed: int = 0, intermediate: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=intermediate, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                        max_position_embeddings=32)).eval()


CASES = {
    "vit-nora": (make_vit, lambda: nora.NoraConfig(trainable=["head"])),
    "vit-nora++": (make_vit, lambda: nora.NoraPlusConfig(trainable=["head"], r=2, lora_alpha=4,
                                                         target_modules=["attn.qkv", "mlp.fc1"])),
    "llama-nora": (make_llama, lambda: nora.NoraConfig(target="silu", task_type="CAUSAL_LM")),
    "llama-nora++": (make_llama, lambda: nora.NoraPlusConfig(target="silu", r=2, lora_alpha=4, task_type="CAUSAL_LM",
                                                             target_modules=["q_proj", "v_proj", "down_proj"])),
}


def outputs(model, case: str) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits if case.startswith("llama") else model(IMAGES)


def perturb(model, seed: int = 5):
    """Non-zero B factors (NoRA and LoRA), as after training, so that the adapter changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name.endswith(("num_B", "den_B", "lora_B.default.weight", "lora_B.second.weight")):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------------------------------------- shim


def test_the_shim_registers_both_methods_in_peft_tables_of_the_expected_shape():
    peft_shim.check_peft_internals()  # raises PeftInternalsChanged, naming what changed, on a new peft layout
    assert PeftType("NORA") is PeftType.NORA and PeftType["NORA_PLUS"] is PeftType.NORA_PLUS
    assert peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING["NORA"] is nora.NoraConfig
    assert peft.mapping.PEFT_TYPE_TO_TUNER_MAPPING["NORA_PLUS"] is nora.NoraPlusModel
    assert nora.NoraPlusConfig().peft_type == "NORA_PLUS" and nora.NoraConfig().to_dict()["peft_type"] == "NORA"
    # the version range the shim was written for is the one pyproject pins, and it is the installed one
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(r for r in requirements if re.match(r"peft\b", r))
    assert pin.replace(" ", "") == "peft" + ",".join(peft_shim.SUPPORTED_PEFT)
    major, minor = (int(v) for v in peft.__version__.split(".")[:2])
    assert (major, minor) == (0, 21)


def test_the_shim_fails_loudly_when_peft_tables_change(monkeypatch):
    monkeypatch.setattr(peft.mapping, "PEFT_TYPE_TO_PREFIX_MAPPING", [])
    with pytest.raises(peft_shim.PeftInternalsChanged, match=r"PEFT_TYPE_TO_PREFIX_MAPPING.*peft_shim\.py"):
        peft_shim.check_peft_internals()
    monkeypatch.undo()
    monkeypatch.setattr(peft.utils.peft_types, "register_peft_method", lambda name, config_cls: None)
    with pytest.raises(peft_shim.PeftInternalsChanged, match="register_peft_method"):
        peft_shim.check_peft_internals()


def test_import_nora_then_peft_knows_the_methods_in_a_fresh_interpreter(tmp_path):
    model = get_peft_model(make_vit(), nora.NoraConfig(trainable=["head"]))
    model.save_pretrained(str(tmp_path))
    code = (f"import nora, sys\nassert 'peft' not in sys.modules\nfrom peft import PeftConfig\n"
            f"print(type(PeftConfig.from_pretrained({str(tmp_path)!r})).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "NoraConfig"


# -------------------------------------------------------------------------------- peft's API, end to end


@pytest.mark.parametrize("case", list(CASES))
def test_peft_api_end_to_end(case, tmp_path, capsys):
    make, config = CASES[case]
    base = outputs(make(), case)
    model = get_peft_model(make(), config())
    model.print_trainable_parameters()
    printed = int(re.search(r"trainable params: ([\d,]+)", capsys.readouterr().out).group(1).replace(",", ""))
    assert printed == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert printed == nora.count_parameters(model).trainable
    perturb(model)
    adapted = outputs(model, case)
    assert (adapted - base).abs().max() > 1e-3

    with model.disable_adapter():  # the ORIGINAL model: GELU / SiLU, LoRA off, the original head
        assert torch.equal(outputs(model, case), base)
    assert torch.equal(outputs(model, case), adapted)

    model.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == config().peft_type and (tmp_path / "adapter_model.safetensors").is_file()
    assert saved["channels"] and all(v in (64, 768) for v in saved["channels"].values())
    assert len(saved["tensor_sha256"]) == len(peft.utils.get_peft_model_state_dict(model))
    loaded = PeftModel.from_pretrained(make(), str(tmp_path))
    assert torch.equal(outputs(loaded, case), adapted)  # max abs diff 0: exactly the saved adapter
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded for inference, as peft does

    merged_in_place = copy.deepcopy(model)
    merged_in_place.merge_adapter()
    assert (outputs(merged_in_place, case) - adapted).abs().max() <= 1e-5
    merged_in_place.unmerge_adapter()
    assert (outputs(merged_in_place, case) - adapted).abs().max() <= 1e-5

    merged = copy.deepcopy(model).merge_and_unload()
    assert (outputs(merged, case) - adapted).abs().max() <= 1e-5
    assert not any(isinstance(m, (NoraActivation, peft.tuners.tuners_utils.BaseTunerLayer)) for m in merged.modules())
    assert any(isinstance(m, GroupRational) for m in merged.modules())

    unloaded = copy.deepcopy(model).unload()  # back to the original activations (the head copy is unchanged)
    assert torch.equal(outputs(unloaded, case), base)
    kind = "gelu" if case.startswith("vit") else "silu"
    assert not any(isinstance(m, GroupRational) for m in unloaded.modules())
    assert sum(activation_kind(m) == kind for m in unloaded.modules()) == 2

    if case.startswith("llama"):
        first = model.generate(input_ids=TOKENS[:1], max_new_tokens=4, do_sample=False)
        again = loaded.generate(input_ids=TOKENS[:1], max_new_tokens=4, do_sample=False)
        assert first.shape == (1, 14) and torch.equal(first, again)


@pytest.mark.parametrize("case", ["vit-nora++", "llama-nora"])
def test_named_adapters_add_set_save_load_delete(case, tmp_path):
    make, config = CASES[case]
    base = outputs(make(), case)
    model = perturb(get_peft_model(make(), config()))
    first = outputs(model, case)
    second_config = config()
    second_config.groups, second_config.rank = 4, 1
    model.add_adapter("second", second_config)
    assert torch.equal(outputs(model, case), first)  # an added adapter is not active
    model.set_adapter("second")
    perturb(model, seed=6)
    second = outputs(model, case)
    assert (second - first).abs().max() > 1e-3 and (second - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match="one adapter"):
        model.base_model.set_adapter(["default", "second"])
    model.save_pretrained(str(tmp_path))
    assert (tmp_path / "second" / "adapter_config.json").is_file()

    loaded = PeftModel.from_pretrained(make(), str(tmp_path))
    loaded.load_adapter(str(tmp_path / "second"), "second")
    assert torch.equal(outputs(loaded, case), first)
    loaded.set_adapter("second")
    assert torch.equal(outputs(loaded, case), second)
    loaded.set_adapter("default")
    loaded.delete_adapter("second")
    assert list(loaded.peft_config) == ["default"] and torch.equal(outputs(loaded, case), first)
    layers = [m for m in loaded.modules() if isinstance(m, NoraActivation)]
    assert layers and all(list(m.nora_delta) == ["default"] for m in layers)


def test_trainer_trains_checkpoints_and_resumes_with_the_adapter_intact(tmp_path):
    from transformers import Trainer, TrainingArguments

    data = [{"input_ids": row, "labels": row} for row in torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(3))]

    def run(out, resume=None):
        model = get_peft_model(make_llama(), CASES["llama-nora++"][1]())
        args = TrainingArguments(output_dir=str(out), use_cpu=True, max_steps=4, per_device_train_batch_size=4,
                                 learning_rate=1e-2, save_steps=2, save_strategy="steps", report_to=[], seed=0,
                                 logging_steps=10, disable_tqdm=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train(resume_from_checkpoint=resume)
        return model

    trained = run(tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint-2"
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["peft_type"] == "NORA_PLUS" and config["tensor_sha256"]
    final = PeftModel.from_pretrained(make_llama(), str(tmp_path / "run" / "checkpoint-4"))
    assert torch.equal(outputs(final, "llama"), outputs(trained, "llama"))
    moved = {n for n, p in trained.named_parameters() if p.requires_grad
             and not torch.equal(p, dict(get_peft_model(make_llama(), CASES["llama-nora++"][1]()).named_parameters())[n])}
    assert any(n.endswith(("num_B", "den_B")) for n in moved) and any("lora_B" in n for n in moved)

    resumed = run(tmp_path / "again", resume=str(checkpoint))
    for (name, p), q in zip(trained.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------ safe loading


def test_a_wider_model_is_refused_before_anything_changes_and_the_right_one_loads(tmp_path):
    model = perturb(get_peft_model(make_vit(), nora.NoraConfig(trainable=["head"])))
    model.save_pretrained(str(tmp_path))
    wider = make_vit(mlp_ratio=8.0)  # 1536 channels per GELU: the same tensor shapes with G=8
    before = snapshot(wider)
    with pytest.raises(ValueError, match=r"channels: 'blocks.0.mlp.act' has 1536 channels .* saved for 768"):
        PeftModel.from_pretrained(wider, str(tmp_path))
    with pytest.raises(ValueError, match="channels"):
        nora.load_adapter(wider, tmp_path)
    assert same_snapshot(before, snapshot(wider)) and not hasattr(wider, "peft_config")
    assert torch.equal(outputs(PeftModel.from_pretrained(make_vit(), str(tmp_path)), "vit"), outputs(model, "vit"))


def test_a_flipped_byte_in_the_tensors_is_refused(tmp_path):
    model = perturb(get_peft_model(make_llama(), CASES["llama-nora++"][1]()))
    model.save_pretrained(str(tmp_path))
    payload = tmp_path / "adapter_model.safetensors"
    data = bytearray(payload.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor's data, past the header
    payload.write_bytes(bytes(data))
    fresh = make_llama()
    before = snapshot(fresh)
    with pytest.raises(ValueError, match="SHA-256"):
        PeftModel.from_pretrained(fresh, str(tmp_path))
    with pytest.raises(ValueError, match="SHA-256"):
        nora.load_adapter(fresh, tmp_path)
    assert same_snapshot(before, snapshot(fresh)) and not hasattr(fresh, "peft_config")


def test_a_load_that_fails_after_injection_leaves_the_base_model_exactly_as_it_was(tmp_path):
    model = perturb(get_peft_model(make_llama(), CASES["llama-nora++"][1]()))
    good = outputs(model, "llama")
    model.save_pretrained(str(tmp_path / "good"))
    bad = tmp_path / "bad"
    model.save_pretrained(str(bad))
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, "r": 3}))  # LoRA layers of the wrong shape
    base = make_llama()
    before, hooks = snapshot(base), {n: dict(m._forward_hooks) for n, m in base.named_modules()}
    with pytest.raises(ValueError, match="shape"):
        PeftModel.from_pretrained(base, str(bad))
    assert same_snapshot(before, snapshot(base)) and not hasattr(base, "peft_config")
    assert {n: dict(m._forward_hooks) for n, m in base.named_modules()} == hooks and not hasattr(base, "_require_grads_hooks")
    retried = PeftModel.from_pretrained(base, str(tmp_path / "good"))  # a retry on the same base works
    assert torch.equal(outputs(retried, "llama"), good)


def test_nora_save_and_load_adapter_are_peft_files_both_ways(tmp_path):
    tuned = perturb(nora.apply_nora(make_vit(), nora.NoraConfig(trainable=["head"])))
    nora.save_adapter(tuned, tmp_path / "inplace")
    assert json.loads((tmp_path / "inplace" / "adapter_config.json").read_text())["peft_type"] == "NORA"
    through_peft = PeftModel.from_pretrained(make_vit(), str(tmp_path / "inplace"))
    assert torch.equal(outputs(through_peft, "vit"), outputs(tuned, "vit"))
    through_peft.save_pretrained(str(tmp_path / "peft"))
    again = nora.load_adapter(make_vit(), tmp_path / "peft")
    assert torch.equal(outputs(again, "vit"), outputs(tuned, "vit"))
    config = PeftConfig.from_pretrained(str(tmp_path / "peft"))
    assert isinstance(config, nora.NoraConfig) and config.trainable == ("head",) and config.groups == 8
    llama = perturb(nora.apply_nora(make_llama(), nora.NoraConfig(target="silu")))  # a transformers model in place
    nora.save_adapter(llama, tmp_path / "llama")
    assert sorted(p.name for p in (tmp_path / "llama").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert torch.equal(outputs(nora.load_adapter(make_llama(), tmp_path / "llama"), "llama"), outputs(llama, "llama"))


def test_adapters_in_the_pre_peft_format_fail_saying_how_to_convert_and_convert(tmp_path):
    tuned = perturb(nora.apply_nora(make_vit(), nora.NoraConfig(trainable=["head"])))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    tensors = {re.sub(r"\.(nora_delta|modules_to_save)\.default\.", ".", k): v.contiguous()
               for k, v in tuned.state_dict().items() if ".nora_delta." in k or ".modules_to_save." in k}
    from safetensors.torch import save_file

    save_file(tensors, str(legacy / "adapter_model.safetensors"), metadata={"format": "nora-adapter", "kind": "nora"})
    fields = dict(groups=8, rank=3, alpha=6.0, degrees=[5, 4], target="gelu", trainable=["head"], mode="lowrank",
                  perturb="both", init=None, interval=[-3.0, 3.0])
    meta = {"format": "nora-adapter", "format_version": 1, "kind": "nora", "config": fields,
            "tensors": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in tensors.items()}}
    (legacy / "adapter_config.json").write_text(json.dumps(meta))
    fresh = make_vit()
    with pytest.raises(ValueError, match=r"pre-peft format.*nora\.convert_adapter"):
        nora.load_adapter(fresh, legacy)
    with pytest.raises(ValueError, match="convert_adapter"):
        nora.NoraConfig.from_pretrained(str(legacy))
    nora.convert_adapter(legacy, tmp_path / "converted", make_vit())
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "converted"))
    assert torch.equal(outputs(loaded, "vit"), outputs(tuned, "vit"))


def test_nora_plus_from_a_nora_and_a_lora_config_is_the_same_model_as_from_one_config():
    pair = nora.apply_nora_plus(make_vit(), nora.NoraConfig(trainable=["head"]),
                                peft.LoraConfig(r=2, lora_alpha=4, target_modules=["attn.qkv", "mlp.fc1"]))
    one = get_peft_model(make_vit(), CASES["vit-nora++"][1]())
    assert type(pair.peft_config["default"]) is nora.NoraPlusConfig
    assert all(torch.equal(a, b) for a, b in zip(pair.state_dict().values(), one.state_dict().values()))
    with pytest.raises(ValueError, match="init_lora_weights"):
        nora.apply_nora_plus(make_vit(), nora.NoraConfig(), peft.LoraConfig(target_modules=["qkv"], init_lora_weights=False))
