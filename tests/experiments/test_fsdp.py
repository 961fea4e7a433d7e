"""The paper profile's multi-GPU path (llm/configs/accelerate_fsdp.yaml), on 2 CPU processes (gloo).

A tiny LLaMA with NoRA++ (one peft method) is sharded the way the config says, by accelerate's own
FSDP2 preparation (``fsdp2_prepare_model``: ``fully_shard`` per decoder layer, then the root),
trained for a few AdamW steps on half a batch per process, gathered to a full state dict (the
config's FULL_STATE_DICT) and saved with ``save_pretrained`` from rank 0 — then compared with the
same steps on the whole batch in one process, and reloaded with ``PeftModel.from_pretrained``.
accelerate only enters its FSDP mode on accelerators, so the test hands its preparation function
the plugin built from the config and a CPU process group.
"""

import os
import socket
import types
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

import nora  # noqa: F401  (registers NORA_PLUS with peft)

CONFIG = Path(__file__).resolve().parents[2] / "nora" / "experiments" / "llm" / "configs" / "accelerate_fsdp.yaml"
BATCH, LENGTH, STEPS = 8, 12, 3


def fsdp2_unavailable() -> str | None:
    """Why FSDP2 cannot run here on CPU (None when it can)."""
    if not dist.is_available():
        return f"torch {torch.__version__} is built without torch.distributed"
    if not dist.is_gloo_available():
        return f"torch {torch.__version__} has no gloo backend, the only CPU backend FSDP can use here"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError as err:
        return f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard): {err}"
    return None


def plugin():
    """accelerate's FSDP plugin with the settings of the paper profile's config."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    config = yaml.safe_load(CONFIG.read_text())
    assert config["distributed_type"] == "FSDP"
    fsdp = config["fsdp_config"]
    return FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"], state_dict_type=fsdp["fsdp_state_dict_type"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"], cpu_offload=fsdp["fsdp_offload_params"],
    )


def build():
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=64, max_position_embeddings=32))
    config = nora.NoraPlusConfig(target="silu", groups=8, rank=2, alpha=4, r=2, lora_alpha=4, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "v_proj", "down_proj"])
    return base, get_peft_model(base, config)


def tokens():
    return torch.randint(0, 64, (BATCH, LENGTH), generator=torch.Generator().manual_seed(1))


def train(model, ids):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(STEPS):
        loss = model(input_ids=ids, labels=ids).loss  # every token labelled: equal halves average to the whole
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def worker(rank, world, port, out):
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    _, model = build()
    accelerator = types.SimpleNamespace(  # what fsdp2_prepare_model reads from an Accelerator
        state=types.SimpleNamespace(fsdp_plugin=plugin()), torch_device_mesh=None, parallelism_config=None,
        is_main_process=rank == 0, mixed_precision="no", device=torch.device("cpu"))
    model = fsdp2_prepare_model(accelerator, model)
    layers = [m for m in model.modules() if isinstance(m, FSDPModule)]
    assert sum(type(m).__name__.endswith("LlamaDecoderLayer") for m in layers) == 2 and isinstance(model, FSDPModule)
    half = BATCH // world
    train(model, tokens()[rank * half:(rank + 1) * half])
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        model.save_pretrained(out, state_dict=state)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        torch.save({k: v for k, v in state.items() if k in trainable}, os.path.join(out, "trained.pt"))
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_fsdp2_nora_plus_steps_match_one_process_and_save_with_both_parts(tmp_path):
    reason = fsdp2_unavailable()
    if reason:
        pytest.skip(reason)
    from peft import PeftModel

    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    _, single = build()
    ids = tokens()
    train(single, ids)
    sharded = torch.load(tmp_path / "trained.pt")
    trainable = {n: p for n, p in single.named_parameters() if p.requires_grad}
    assert set(sharded) == set(trainable) and any(n.endswith("num_B") for n in trainable)
    for name, param in trainable.items():
        torch.testing.assert_close(sharded[name], param.detach(), rtol=1e-4, atol=1e-6, msg=name)
    base, _ = build()
    reloaded = PeftModel.from_pretrained(base, str(tmp_path))  # NoRA and LoRA, saved from the gathered state
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, single.eval()(ids).logits, rtol=1e-4, atol=1e-5)
