"""Shared fixtures: tiny timm ViTs and tiny LLaMAs built offline, seeded."""

import nora  # noqa: F401  (first: lets torchvision import next to CPU torch)
import pytest
import torch


def make_vit(num_classes: int = 10, depth: int = 2, seed: int = 0, **kw):
    import timm

    torch.manual_seed(seed)
    args = dict(pretrained=False, num_classes=num_classes, img_size=32, patch_size=8, depth=depth)
    args.update(kw)
    return timm.create_model("vit_tiny_patch16_224", **args).eval()


def make_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def one_thread():
    """One torch thread: fast on a shared machine, and reruns agree more closely; restored afterwards.
    Test files that train use it for every test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def vit_factory():
    return make_vit


@pytest.fixture
def llama_factory():
    return make_llama


def snapshot(model: torch.nn.Module):
    """Everything a failed call must not change: module types, grad flags and tensor values."""
    return (
        [(n, type(m).__name__) for n, m in model.named_modules()],
        {n: p.requires_grad for n, p in model.named_parameters()},
        {k: v.detach().clone() for k, v in model.state_dict().items()},
    )


def same_snapshot(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])
