"""The base model each profile fine-tunes: a tiny LLaMA pre-trained here (smoke, book) or LLaMA-3-8B (paper).

``pretrained_llama(profile)`` returns ``(model, tokenizer, provenance)``. For ``smoke`` and ``book``
it generates the fact world and its pre-training documents (``nora.experiments.llm.corpus``), trains a
byte-level BPE tokenizer on them, and pre-trains a ``LlamaForCausalLM`` (transformers' ``Trainer``
on CPU, causal LM loss on packed 256-token sequences). The result is cached under
``$NORA_CACHE_DIR/llm/<profile>-<key>/`` (default ``~/.cache/nora``), where ``key`` hashes every
setting that shapes it; ``provenance.json`` records the settings, the corpus and tokenizer hashes,
the training time and loss curve, and the SHA-256 of the weights. A second call loads the cache.
The book model (2 MB; 29 min of pre-training on one thread) also ships in the package, under
``nora/experiments/checkpoints/llm-book-<key>/``: it is used when its key matches the current settings, so a
fresh machine runs the book without pre-training (``--retrain`` or ``--verify`` rebuild it).
Re-running on the same torch build and thread count reproduces the weights bit for bit
(``python -m nora.experiments.llm.pretrain --profile book --verify`` checks it against the cache).

For ``paper`` it loads ``meta-llama/Meta-Llama-3-8B`` from the Hugging Face hub (gated: accept the
licence and log in first); that is the only branch that touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nora.experiments.profiles import resolve_profile

__all__ = ["PRETRAIN", "PretrainConfig", "cache_dir", "pretrained_llama", "weights_sha256", "world_for"]

PAPER_MODEL = "meta-llama/Meta-Llama-3-8B"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
CACHE_ENV = "NORA_CACHE_DIR"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that shapes the pre-trained tiny LLaMA (hashed into its cache key)."""

    world_seed: int = 0
    practice: int = 16          # practice entities per subject (quizzes, few-shot dev, instruction sets)
    exam: int = 24              # exam entities per subject (test questions)
    documents: int = 40_000     # generated pre-training documents (stage 1)
    mix: tuple[float, float, float] = (0.45, 0.2, 0.35)  # shares of encyclopedia / Q&A pages / quizzes (stage 1)
    vocab_size: int = 1024
    hidden_size: int = 96
    intermediate_size: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 2400
    learning_rate: float = 3e-3
    warmup_steps: int = 72
    # stage 2 ("annealing"): continue on fresh documents richer in quizzes, as LLM pre-training ends
    # on data closer to the evaluation format; 0 steps skips it
    anneal_documents: int = 30_000
    anneal_mix: tuple[float, float, float] = (0.25, 0.1, 0.65)
    anneal_steps: int = 1200
    anneal_learning_rate: float = 1e-3
    anneal_warmup_steps: int = 20
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1            # one thread: reproducible, and far faster than two on a shared 2-core machine

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


PRETRAIN: dict[str, PretrainConfig] = {
    "smoke": PretrainConfig(practice=8, exam=8, documents=600, vocab_size=600, hidden_size=64, intermediate_size=128,
                            layers=2, heads=4, kv_heads=2, batch_size=8, steps=40, learning_rate=3e-3, warmup_steps=2,
                            anneal_documents=200, anneal_steps=10, anneal_warmup_steps=1),
    "book": PretrainConfig(),
}


def cache_dir() -> Path:
    """``$NORA_CACHE_DIR`` if set, else ``~/.cache/nora``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nora")


def world_for(config: PretrainConfig):
    """The fact world (and its benchmark) a pre-training config was built on."""
    from nora.experiments.llm.corpus import make_world

    return make_world(config.world_seed, config.practice, config.exam)


def weights_sha256(model) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _text_sha256(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\x00")
    return h.hexdigest()


def _llama_config(config: PretrainConfig, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers, num_attention_heads=config.heads, num_key_value_heads=config.kv_heads,
        max_position_embeddings=2 * config.seq_len, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def pack(docs: list[str], tokenizer, seq_len: int) -> list[list[int]]:
    """Concatenate documents, each followed by ``<|eos|>``, and cut the stream into ``seq_len`` blocks (remainder dropped)."""
    stream: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(tokenizer.eos_token_id)
    return [stream[i : i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]


def train(config: PretrainConfig, out: Path | None = None, progress: bool = False) -> tuple[Any, Any, dict]:
    """Generate the corpus, train the tokenizer and pre-train the tiny LLaMA; save to ``out`` if given."""
    import torch
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments

    from nora.experiments.llm.corpus import INSTRUCTION_STYLES, instruction_set, iter_text, pretraining_documents
    from nora.experiments.llm.tokenizer import train_tokenizer

    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    world = world_for(config)
    stages = [(pretraining_documents(world, config.documents, seed=config.seed, mix=config.mix),
               config.steps, config.learning_rate, config.warmup_steps)]
    if config.anneal_steps > 0:
        docs2 = pretraining_documents(world, config.anneal_documents, seed=config.seed + 1, mix=config.anneal_mix)
        stages.append((docs2, config.anneal_steps, config.anneal_learning_rate, config.anneal_warmup_steps))
    # the tokenizer is trained on the stage-1 text and the instruction sets' wording (a real tokenizer sees broad text)
    sets = {s: instruction_set(world, s, 200, seed=10_000) for s in INSTRUCTION_STYLES}
    tokenizer = train_tokenizer(iter_text(world, stages[0][0], sets), config.vocab_size)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(_llama_config(config, tokenizer))
    losses: list[tuple[int, float]] = []
    tokens_per_epoch = []

    from transformers import PrinterCallback, TrainerCallback

    for index, (docs, steps, lr, warmup) in enumerate(stages):
        blocks = pack(docs, tokenizer, config.seq_len)
        tokens_per_epoch.append(len(blocks) * config.seq_len)
        dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]
        offset = sum(stage[1] for stage in stages[:index])

        class _Log(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    losses.append((offset + state.global_step, float(logs["loss"])))
                    if progress:
                        print(f"stage {index + 1} step {state.global_step}/{steps} loss {logs['loss']:.4f}", flush=True)

        with _scratch() as tmp:
            args = TrainingArguments(
                output_dir=tmp, use_cpu=True, per_device_train_batch_size=config.batch_size, max_steps=steps,
                learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=warmup,
                weight_decay=config.weight_decay, adam_beta2=0.95, max_grad_norm=1.0, logging_steps=max(1, steps // 50),
                save_strategy="no", report_to=[], seed=config.seed + index, data_seed=config.seed + index, disable_tqdm=True,
                dataloader_num_workers=0,
            )
            trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[_Log()])
            trainer.remove_callback(PrinterCallback)  # no raw log dicts on stdout
            trainer.train()
    model.eval()
    provenance = {
        "profile_config": asdict(config),
        "key": config.key(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretraining_tokens_per_epoch": tokens_per_epoch,
        "tokens_seen": (config.steps + config.anneal_steps * (config.anneal_steps > 0)) * config.batch_size * config.seq_len,
        "corpus_sha256": _text_sha256(d for stage in stages for d in stage[0]),
        "tokenizer_sha256": hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest(),
        "weights_sha256": weights_sha256(model),
        "train_seconds": round(time.perf_counter() - start, 1),
        "loss_curve": losses,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "threads": config.threads,
    }
    if out is not None:
        save(model, tokenizer, provenance, out)
    return model, tokenizer, provenance


class _scratch:
    """A throwaway Trainer output dir (nothing is saved into it)."""

    def __enter__(self) -> str:
        import tempfile

        self._dir = tempfile.mkdtemp(prefix="nora-pretrain-")
        return self._dir

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def save(model, tokenizer, provenance: dict, out: Path) -> None:
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def load(path: Path) -> tuple[Any, Any, dict]:
    from transformers import LlamaForCausalLM

    from nora.experiments.llm.tokenizer import load_tokenizer

    provenance = json.loads((path / "provenance.json").read_text())
    model = LlamaForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    if weights_sha256(model) != provenance["weights_sha256"]:
        raise ValueError(f"{path}: weights do not match the SHA-256 recorded in provenance.json (delete the folder to retrain)")
    return model, load_tokenizer(path), provenance


def pretrained_llama(profile: str | None = None, *, retrain: bool = False, progress: bool = False) -> tuple[Any, Any, dict]:
    """``(model, tokenizer, provenance)`` for the profile: the cached tiny LLaMA (trained on first use), or LLaMA-3-8B for ``paper``."""
    name = resolve_profile(profile)
    if name == "paper":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(PAPER_MODEL)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(PAPER_MODEL, dtype=torch.bfloat16)
        return model, tokenizer, {"model": PAPER_MODEL, "parameters": sum(p.numel() for p in model.parameters())}
    config = PRETRAIN[name]
    path = cache_dir() / "llm" / f"{name}-{config.key()}"
    shipped = SHIPPED_DIR / f"llm-{name}-{config.key()}"
    if not retrain and not (path / "provenance.json").is_file() and (shipped / "provenance.json").is_file():
        path = shipped
    if not retrain and (path / "provenance.json").is_file():
        model, tokenizer, provenance = load(path)
        provenance["cached"] = True
        return model, tokenizer, provenance
    model, tokenizer, provenance = train(config, path, progress=progress)
    provenance["cached"] = False
    return model, tokenizer, provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nora.experiments.llm.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PRETRAIN), default="book")
    parser.add_argument("--retrain", action="store_true", help="train again even if the cache exists")
    parser.add_argument("--verify", action="store_true", help="train into a scratch dir and compare the weight hash with the cache")
    args = parser.parse_args(argv)
    import nora  # noqa: F401,PLC0415  (torchvision fix before transformers, when run as a script)

    config = PRETRAIN[args.profile]
    if args.verify:
        _, _, cached = pretrained_llama(args.profile)
        _, _, fresh = train(config, None, progress=True)
        same = fresh["weights_sha256"] == cached["weights_sha256"]
        print(f"cached {cached['weights_sha256']}\nfresh  {fresh['weights_sha256']}\n{'identical' if same else 'DIFFERENT'}")
        return 0 if same else 1
    _, _, prov = pretrained_llama(args.profile, retrain=args.retrain, progress=True)
    print(json.dumps({k: v for k, v in prov.items() if k != "loss_curve"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
