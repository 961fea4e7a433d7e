"""The LoRAN paper's LLM experiments at two scales: QLoRA against LoRAN (Sinter / sigmoid / ReLU / tanh).

Deng et al. (arXiv 2509.21870; released code liyinqiao2012/PEFT-LoRAN) tune **Llama-2-7b in 4-bit
NF4** (double quantization, bf16 compute — the bitsandbytes config stored with their adapters) with
an adapter on ``q_proj`` and ``v_proj`` (r = 64, α = 16, dropout 0.2; released ``adapter_config.json``)
on **SAMSum** (dialogue summarization, ROUGE-1/2/L) and **20 Newsgroups** (topic classification,
accuracy).  The baseline is QLoRA (peft LoRA on the 4-bit base); LoRAN is the same adapter with
ΔW = s·σ(BA) (``nora.adapters.loran``) on the same 4-bit base.  Their prompt format and training
arguments are not released; ours are said here.

One code path, two scales (chapter ``10_loran``):

- ``paper``: ``load_paper_base()`` / ``load_paper_tokenizer()`` (Llama-2-7b, NF4 via transformers'
  ``BitsAndBytesConfig``, peft's ``prepare_model_for_kbit_training``), ``load_task("samsum" | "newsgroups")`` through HF
  ``datasets`` (``knkarthick/samsum``: dialogue / summary; ``SetFit/20_newsgroups``: text /
  label_text) — or local JSON files in the same layout (``data_files=``, how the tests run it);
- ``book``: the tiny LLaMA of ``nora.experiments.llm.pretrain`` quantized to NF4 in place
  (``quantize_llama_4bit``: every linear layer of the decoder, as QLoRA does; embeddings and the
  tied output layer stay float) and the generated dialogues of ``nora.experiments.llm.summarize``.

Records are ``{"input": text, "output": target}``.  A ``PromptFormat`` turns a record into
``"{instruction}\\n{input}\\n{answer_prefix}"`` and the target into ``" " + output + eos``; the loss is
masked on the prompt (as in ``nora.experiments.llm.instruct``, whose Alpaca preamble alone is 139 tokens of the
book tokenizer — more than half the tiny LLaMA's 256-token pre-training context, so this chapter
uses a short format).  Over-long inputs are cut inside the text, keeping the instruction, the
answer prefix and the target.  ``finetune`` is transformers' ``Trainer`` with the settings of
``nora.experiments.llm.instruct.finetune`` (seeded data order, cosine schedule, no checkpoints).

Scoring: summarization = greedy generation + ROUGE (``nora.experiments.llm.summarize.rouge_scores``);
classification = greedy generation compared with the label text after normalisation (lower case,
whitespace collapsed) — accuracy of the generated label, as a causal LM is used for 20 Newsgroups.

Methods (``adapt``): ``"lora"`` (peft, float base), ``"qlora"`` (peft, 4-bit base), ``"loran-<σ>"``
(LoRAN with activation σ ∈ ``nora.adapters.loran.ACTIVATIONS`` on the 4-bit base, as the paper)
and ``"loran-<σ>-float"`` (LoRAN on the float base).
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROFILES",
    "NEWSGROUPS",
    "PAPER_DATASETS",
    "PAPER_MODEL",
    "SUMMARY",
    "PromptFormat",
    "accuracy",
    "adapt",
    "encode",
    "finetune",
    "load_paper_base",
    "load_paper_tokenizer",
    "load_task",
    "loran_layers",
    "method_spec",
    "paper_quantization_config",
    "predict",
    "prompt_ids",
    "quantize_llama_4bit",
    "run",
    "score",
]

# The chapter's sizes per profile: nora.experiments.profiles.settings("10_loran", profile) merges
# PROFILES[profile] over the defaults.
# vision (classification, the Sinter sweep, NoRA++ vs LoRAN): the book ViT (paper: timm ViT-Tiny on
# CIFAR) via nora.experiments.vit_transfer.fine_tune; every method at rank / alpha (chapter 04's LoRA convention:
# 8 / 16, no dropout); epochs / batch_size per run, test accuracy after the last epoch only;
# lr_grid: rates tried for QLoRA on a val_fraction split of search_task (one seed), the chosen
# one is used by every method, as the released LoRAN runs share QLoRA's training arguments;
# class_task / sweep_task / h2h_task: the task of each part; train_per_class / test_per_class:
# cap per class (None = all); sinter_sweep: (A, omega) pairs besides the released (5e-5, 1e4);
# sine_frequencies: omega of the sine-activated low-rank peer; h2h_lr_grid: the rates tried for
# LoRA on all four linears (the head-to-head's linear reference) the same way, used by NoRA++,
# LoRAN and LoRA there (rank 8 on four layers diverges at rates q, v-only adapters prefer).
# llm: the generation part. book / smoke: the tiny LLaMA of nora.experiments.llm.pretrain quantized to NF4,
# generated dialogues (nora.experiments.llm.summarize): samples train / val_samples validation (practice
# entities) / test_samples test (exam entities); paper: Llama-2-7b NF4 on SAMSum and 20
# Newsgroups (tasks; None samples = the whole split). rank / alpha / dropout: the adapter on
# q_proj, v_proj (paper: the released 64 / 16 / 0.2; book: rank 8 at the paper's alpha / rank
# = 1/4, dropout 0.2); steps (or epochs), batch_size, lr_grid (QLoRA's search on the validation
# dialogues; paper: one rate, QLoRA's usual 2e-4, no search), cutoff: max tokens per example;
# max_new_tokens per task.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"rank": 8, "alpha": 16.0, "epochs": 1, "batch_size": 32, "amp": False, "train_per_class": 4,
              "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25, "lr_grid": (3e-3, 1e-2),
              "class_task": "mnist20", "sweep_task": "mnist10-20shot", "h2h_task": "mnist20",
              "sinter_sweep": ((0.5, 1e4),), "sine_frequencies": (200.0,), "h2h_lr_grid": (3e-3, 1e-2),
              "llm": {"tasks": ("dialogues",), "samples": 16, "val_samples": 4, "test_samples": 4, "steps": 2,
                      "batch_size": 4, "lr_grid": (1e-2, 3e-2), "rank": 4, "alpha": 1.0, "dropout": 0.2,
                      "warmup_ratio": 0.0, "cutoff": 256, "max_new_tokens": {"dialogues": 8}, "eval_batch_size": 8}},
    "book": {"rank": 8, "alpha": 16.0, "epochs": 4, "batch_size": 32, "amp": False, "train_per_class": None,
             "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2, "lr_grid": (3e-3, 1e-2, 3e-2),
             "class_task": "mnist20", "sweep_task": "mnist10-20shot", "h2h_task": "mnist20",
             "sinter_sweep": ((0.5, 1e4), (0.5, 1e2)), "sine_frequencies": (200.0,), "h2h_lr_grid": (1e-3, 3e-3, 1e-2),
             "llm": {"tasks": ("dialogues",), "samples": 1200, "val_samples": 60, "test_samples": 100, "steps": 150,
                     "batch_size": 8, "lr_grid": (1e-2, 3e-2, 6e-2), "rank": 8, "alpha": 2.0, "dropout": 0.2,
                     "warmup_ratio": 0.03, "cutoff": 256, "max_new_tokens": {"dialogues": 40}, "eval_batch_size": 50}},
    "paper": {"rank": 8, "alpha": 16.0, "epochs": 50, "batch_size": 256, "amp": True, "num_workers": 8,
              "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
              "lr_grid": (3e-4, 1e-3, 3e-3), "class_task": "cifar100", "sweep_task": "cifar10", "h2h_task": "cifar100",
              "sinter_sweep": ((0.5, 1e4), (0.5, 1e2)), "sine_frequencies": (200.0,), "h2h_lr_grid": (3e-4, 1e-3, 3e-3),
              "llm": {"tasks": ("samsum", "newsgroups"), "samples": None, "val_samples": None, "test_samples": None,
                      "epochs": 1.0, "batch_size": 16, "lr_grid": (2e-4,), "rank": 64, "alpha": 16.0, "dropout": 0.2,
                      "warmup_ratio": 0.03, "cutoff": 1024, "max_new_tokens": {"samsum": 64, "newsgroups": 12},
                      "eval_batch_size": 16, "bf16": True}},
}

PAPER_MODEL = "meta-llama/Llama-2-7b-hf"


# ------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class PromptFormat:
    """``"{instruction}\\n{input}\\n{answer_prefix}"``; the target follows after one space."""

    instruction: str
    answer_prefix: str

    def prompt(self, text: str) -> str:
        return f"{self.instruction}\n{text}\n{self.answer_prefix}"


SUMMARY = PromptFormat("Summarize the dialogue.", "Summary:")
NEWSGROUPS = PromptFormat("Which newsgroup was this post sent to?", "Newsgroup:")


def _check_record(record: dict) -> None:
    for key in ("input", "output"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"record field {key!r} must be a string, got {record.get(key)!r}")


def prompt_ids(record: dict, tokenizer, fmt: PromptFormat, max_prompt: int | None = None) -> list[int]:
    """Token ids of the prompt; an input too long for ``max_prompt`` tokens is cut at its end (format kept)."""
    _check_record(record)
    ids = tokenizer.encode(fmt.prompt(record["input"]))
    if max_prompt is None or len(ids) <= max_prompt:
        return ids
    head = tokenizer.encode(fmt.instruction + "\n")  # the tokenizer's own special tokens (Llama-2: BOS)
    tail = tokenizer.encode("\n" + fmt.answer_prefix, add_special_tokens=False)
    body = tokenizer.encode(record["input"], add_special_tokens=False)
    keep = max_prompt - len(head) - len(tail)
    if keep < 1:
        raise ValueError(f"max_prompt={max_prompt} leaves no room for the input after the format's "
                         f"{len(head) + len(tail)} tokens")
    return head + body[:keep] + tail


def encode(record: dict, tokenizer, fmt: PromptFormat, cutoff: int = 1024) -> dict[str, list[int]]:
    """``input_ids`` = prompt + " output" + eos; ``labels`` = -100 on the prompt, the ids on the rest.

    The target keeps at most half of ``cutoff``; the prompt's input text is cut to fit the remainder.
    """
    from nora.experiments.llm.instruct import IGNORE_INDEX

    if not isinstance(cutoff, int) or isinstance(cutoff, bool) or cutoff < 8:
        raise ValueError(f"cutoff must be an int >= 8, got {cutoff!r}")
    _check_record(record)
    if not record["output"].strip():
        raise ValueError("record field 'output' is empty")
    target = tokenizer.encode(" " + record["output"].strip(), add_special_tokens=False) + [tokenizer.eos_token_id]
    target = target[: max(cutoff // 2, cutoff - len(tokenizer.encode(fmt.prompt(record["input"]))))]
    source = prompt_ids(record, tokenizer, fmt, cutoff - len(target))
    return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Source:
    hub_id: str
    train_split: str
    test_split: str
    input_field: str
    output_field: str
    format: PromptFormat


PAPER_DATASETS: dict[str, Source] = {
    "samsum": Source("knkarthick/samsum", "train", "test", "dialogue", "summary", SUMMARY),
    "newsgroups": Source("SetFit/20_newsgroups", "train", "test", "text", "label_text", NEWSGROUPS),
}


def load_task(name: str, split: str, max_samples: int | None = None, data_files: str | list[str] | None = None,
              seed: int | None = None) -> list[dict[str, str]]:
    """Records ``{"input", "output"}`` of a paper dataset split (the hub, or local ``data_files`` in its layout).

    Rows with an empty input or output are skipped; ``seed`` shuffles before ``max_samples`` are taken.
    """
    from datasets import load_dataset

    if name not in PAPER_DATASETS:
        raise ValueError(f"name must be one of {sorted(PAPER_DATASETS)}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if max_samples is not None and (not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1):
        raise ValueError(f"max_samples must be None or a positive int, got {max_samples!r}")
    source = PAPER_DATASETS[name]
    if data_files is not None:
        ds = load_dataset("json", data_files=data_files, split="train")
    else:
        ds = load_dataset(source.hub_id, split=source.train_split if split == "train" else source.test_split)
    missing = [f for f in (source.input_field, source.output_field) if f not in ds.column_names]
    if missing:
        raise ValueError(f"{name}: the data has no field(s) {missing} (columns: {ds.column_names})")
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    out = []
    for row in ds:
        text, target = row[source.input_field], row[source.output_field]
        if isinstance(text, str) and isinstance(target, str) and text.strip() and target.strip():
            out.append({"input": text.strip(), "output": target.strip()})
            if max_samples is not None and len(out) == max_samples:
                break
    if not out:
        raise ValueError(f"{name}: no usable row (non-empty {source.input_field!r} and {source.output_field!r})")
    return out


# ------------------------------------------------------------------------------------ models


def paper_quantization_config():
    """The released runs' bitsandbytes config: 4-bit NF4, double quantization, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_paper_tokenizer(model_id: str = PAPER_MODEL):
    """Llama-2's tokenizer from the hub; it has no pad token, so eos pads (padding is masked everywhere)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_paper_base(model_id: str = PAPER_MODEL, gradient_checkpointing: bool = True):
    """Llama-2-7b in 4-bit NF4 (``paper_quantization_config``) on GPU 0, prepared for k-bit training by peft.

    Gated on the hub: accept Meta's licence and log in first.  Called once per run (the adapters
    change the model in place).
    """
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_id, quantization_config=paper_quantization_config(),
                                                 dtype=torch.bfloat16, device_map={"": 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def _is_4bit(module) -> bool:
    return type(module).__name__ == "Linear4bit"


def quantize_llama_4bit(model, double_quant: bool = True):
    """Replace every linear layer of a (tiny) LLaMA's decoder by a frozen NF4 ``Linear4bit``, in place.

    Embeddings, norms and the (tied) output layer stay float, as in QLoRA.  Sets
    ``model.is_loaded_in_4bit`` so that peft uses its 4-bit LoRA layer.  Returns the model.
    """
    from torch import nn

    from nora.adapters.peft_baselines import quantize_linears_4bit

    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"model must be a transformers LLaMA-style causal LM (model.model.layers), got {type(model).__name__}")
    names = [n for n, m in model.named_modules() if n.startswith("model.layers.") and isinstance(m, nn.Linear) and not _is_4bit(m)]
    if not names:
        raise ValueError("the model has no float linear layer left to quantize")
    quantize_linears_4bit(model, names, double_quant=double_quant)
    model.is_loaded_in_4bit = True
    return model


def method_spec(method: str) -> dict[str, Any]:
    """``{"kind": "lora" | "loran", "activation", "quantize"}`` of a method name (see the module docstring)."""
    from nora.adapters.loran import ACTIVATIONS

    if method == "lora":
        return {"kind": "lora", "activation": None, "quantize": False}
    if method == "qlora":
        return {"kind": "lora", "activation": None, "quantize": True}
    match = re.fullmatch(r"loran-([a-z]+)(-float)?", method if isinstance(method, str) else "")
    if match and match.group(1) in ACTIVATIONS:
        return {"kind": "loran", "activation": match.group(1), "quantize": match.group(2) is None}
    raise ValueError(f"method must be 'lora', 'qlora', 'loran-<activation>' or 'loran-<activation>-float' "
                     f"with an activation in {ACTIVATIONS}, got {method!r}")


def adapt(base, method: str, seed: int, *, rank: int = 64, alpha: float = 16.0, dropout: float = 0.2,
          targets: Sequence[str] = ("q_proj", "v_proj"), copy_base: bool = True, **loran_options):
    """The adapted model for ``method`` on (a deep copy of) ``base``, adapter initialised from ``seed``.

    A float base is quantized to NF4 first for ``qlora`` and ``loran-<σ>``; a base that is already
    4-bit (the paper's) is used as it is (a float method on it raises).  ``loran_options``:
    ``sinter_amplitude``, ``sinter_frequency``, ``sine_frequency``.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from nora.adapters.loran import LoRANConfig, apply_loran

    spec = method_spec(method)
    unknown = sorted(set(loran_options) - {"sinter_amplitude", "sinter_frequency", "sine_frequency"})
    if unknown:
        raise ValueError(f"unknown LoRAN option(s) {unknown}")
    if spec["kind"] == "lora" and loran_options:
        raise ValueError(f"method {method!r} takes no LoRAN options, got {sorted(loran_options)}")
    config = LoRANConfig(rank=rank, alpha=alpha, targets=tuple(targets), activation=spec["activation"] or "identity",
                         dropout=dropout, **loran_options)
    config.validate()  # the shared hyper-parameters are checked for LoRA too, naming the field
    already_4bit = any(_is_4bit(m) for m in base.modules())
    if already_4bit and not spec["quantize"]:
        raise ValueError(f"method {method!r} needs a float base, but the base is already 4-bit")
    model = copy.deepcopy(base) if copy_base else base
    if spec["quantize"] and not already_4bit:
        quantize_llama_4bit(model)
    torch.manual_seed(seed)
    if spec["kind"] == "lora":
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                                target_modules=list(targets), task_type="CAUSAL_LM"))
    return apply_loran(model, config)


def loran_layers(model) -> dict[str, Any]:
    """The ``LoRANLinear`` layers of a model, by name."""
    from nora.adapters.loran import LoRANLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, LoRANLinear)}


# ------------------------------------------------------------------------------------ training


def finetune(model, tokenizer, records: Sequence[dict], fmt: PromptFormat, *, seed: int, steps: int | None = None,
             epochs: float = 1.0, batch_size: int = 8, learning_rate: float = 2e-4, cutoff: int = 1024,
             warmup_ratio: float = 0.03, weight_decay: float = 0.0, scheduler: str = "cosine", use_cpu: bool = True,
             bf16: bool = False, gradient_accumulation: int = 1, **trainer_kwargs):
    """Prompt-masked fine-tuning with transformers' ``Trainer``; returns ``nora.experiments.llm.instruct.TuneResult``.

    The data order depends on ``seed`` only, so every method sees the same batches.
    """
    from nora.experiments.llm.instruct import train_encoded

    data = [encode(r, tokenizer, fmt, cutoff) for r in records]
    if not data:
        raise ValueError("records is empty")
    return train_encoded(model, data, tokenizer.pad_token_id, seed=seed, steps=steps, epochs=epochs,
                         batch_size=batch_size, learning_rate=learning_rate, warmup_ratio=warmup_ratio,
                         weight_decay=weight_decay, scheduler=scheduler, use_cpu=use_cpu, bf16=bf16,
                         gradient_accumulation=gradient_accumulation, **trainer_kwargs)


# ------------------------------------------------------------------------------------ scoring


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Percent of generated labels equal to the reference label (lower case, whitespace collapsed; first line only)."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"predictions ({len(predictions)}) and labels ({len(labels)}) must be equally long and non-empty")
    hits = sum(_normalise(p.split("\n")[0]) == _normalise(t) for p, t in zip(predictions, labels))
    return 100.0 * hits / len(labels)


def predict(model, tokenizer, records: Sequence[dict], fmt: PromptFormat, *, max_new_tokens: int, batch_size: int,
            max_prompt: int | None = None) -> list[str]:
    """Greedy generations for the prompts of ``records`` (inputs cut to ``max_prompt`` tokens)."""
    from nora.experiments.llm.summarize import generate_batch

    prompts = [prompt_ids(r, tokenizer, fmt, max_prompt) for r in records]
    return generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def score(kind: str, predictions: Sequence[str], records: Sequence[dict]) -> dict[str, float]:
    """``{"rouge1", "rouge2", "rougeL"}`` for ``kind="summarization"``, ``{"accuracy"}`` for ``"classification"``."""
    references = [r["output"] for r in records]
    if kind == "summarization":
        from nora.experiments.llm.summarize import rouge_scores

        return dict(rouge_scores(predictions, references).means)
    if kind == "classification":
        return {"accuracy": accuracy(predictions, references)}
    raise ValueError(f"kind must be 'summarization' or 'classification', got {kind!r}")


def run(base_factory: Callable[[], Any], tokenizer, method: str, seed: int, train: Sequence[dict], test: Sequence[dict],
        fmt: PromptFormat, kind: str, cfg: dict, **loran_options) -> dict[str, Any]:
    """Adapt a fresh base with ``method``, fine-tune on ``train``, generate for ``test`` and score.

    ``cfg``: ``rank``, ``alpha``, ``dropout``, ``targets``, ``steps`` (or ``epochs``), ``batch_size``,
    ``learning_rate``, ``warmup_ratio``, ``cutoff``, ``max_new_tokens``, ``eval_batch_size``, ``device``,
    optional ``bf16``, ``gradient_accumulation``.  Returns the scores, counts, times, the
    predictions and the trained model.
    """
    import nora

    model = adapt(base_factory(), method, seed, rank=cfg["rank"], alpha=cfg["alpha"], dropout=cfg["dropout"],
                  targets=cfg.get("targets", ("q_proj", "v_proj")), copy_base=False, **loran_options)
    count = nora.count_parameters(model)
    cpu0 = time.process_time()
    tune = finetune(model, tokenizer, train, fmt, seed=seed, steps=cfg.get("steps"), epochs=cfg.get("epochs", 1.0),
                    batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"], cutoff=cfg["cutoff"],
                    warmup_ratio=cfg["warmup_ratio"], use_cpu=cfg["device"] == "cpu", bf16=cfg.get("bf16", False),
                    gradient_accumulation=cfg.get("gradient_accumulation", 1))
    t0 = time.perf_counter()
    predictions = predict(model, tokenizer, test, fmt, max_new_tokens=cfg["max_new_tokens"],
                          batch_size=cfg["eval_batch_size"], max_prompt=cfg["cutoff"] - cfg["max_new_tokens"])
    eval_seconds = time.perf_counter() - t0
    return {"method": method, "seed": seed, **score(kind, predictions, test), "trainable": count.trainable,
            "train_seconds": tune.seconds, "eval_seconds": eval_seconds, "cpu_seconds": time.process_time() - cpu0,
            "final_loss": tune.losses[-1][1] if tune.losses else float("nan"), "losses": tune.losses,
            "predictions": predictions, "model": model}
