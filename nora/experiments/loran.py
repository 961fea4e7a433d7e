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

The chapter's vision runs (the book ViT of ``nora.experiments.vit_transfer``): ``vision_method``
names them (QLoRA, LoRA, LoRAN with σ on q, v of the 4-bit backbone, and the head-to-head's
all-linears LoRA / LoRAN / NoRA++); ``vision_run`` trains one and measures its trained LoRAN factors
(``nora.adapters.loran_probe``) in the same process, so that the runs can go side by side through
``nora.experiments.parallel.run_parallel`` (one thread each, the numbers as one at a time) and
only a row of numbers comes back.
"""

from __future__ import annotations

import copy
import functools
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
    "vision_method",
    "vision_run",
]

# The chapter's sizes per profile: nora.experiments.profiles.settings("10_loran", profile) merges
# PROFILES[profile] over the defaults.
# vision (classification, the Sinter sweep, NoRA++ vs LoRAN): the profile's ViT (book: chapter 04's 12-block glyph
# backbone; paper: timm ViT-Tiny on CIFAR) via vision_run (fine_tune, runs side by side); every method at rank / alpha
# (chapter 04's LoRA convention: 8 / 16, no dropout); epochs per task role ("easy": the first task of
# downstream_tasks, "hard": the second), so that both book tasks get about 200 optimiser steps (mnist10-20shot has 7
# batches of 32 an epoch, mnist20 38: 30 x 7 = 210, 6 x 38 = 228; chapter 04's schedule), batch_size per run, test
# accuracy after the last epoch only; lr_grid: rates tried for QLoRA on a val_fraction split of search_task (one
# seed, the search task's epochs), the chosen one is used by every method of the comparison and the sweep, as the
# released LoRAN runs share QLoRA's training arguments (book: half a decade lower than on the first, 6-block
# backbone, where 1e-2 won: on the 12-block glyph backbone QLoRA's validation accuracy at 1e-3 / 3e-3 / 1e-2 / 3e-2
# is 82.5 / 88.3 / 81.7 / 15.4 % in chapter 04's search, so the old grid's best was its lowest rate); class_task / sweep_task / h2h_task: the task of
# each part; train_per_class / test_per_class: cap per class (None = all); sinter_sweep: (A, omega) pairs besides
# the released (5e-5, 1e4); sine_frequencies: omega of the sine-activated low-rank peer; h2h_lr_grid: the rates
# tried for LoRA on all four linears (the head-to-head's linear reference) the same way, used by NoRA++, LoRAN and
# LoRA there (rank 8 on four layers diverged, on the first backbone, at rates q, v-only adapters prefer).
# llm: the generation part. book / smoke: the tiny LLaMA of nora.experiments.llm.pretrain quantized to NF4,
# generated dialogues (nora.experiments.llm.summarize): samples train / val_samples validation (practice
# entities) / test_samples test (exam entities); paper: Llama-2-7b NF4 on SAMSum and 20
# Newsgroups (tasks; None samples = the whole split). rank / alpha / dropout: the adapter on
# q_proj, v_proj (paper: the released 64 / 16 / 0.2; book: rank 8 at the paper's alpha / rank
# = 1/4, dropout 0.2); steps (or epochs), batch_size, lr_grid (QLoRA's search on the validation
# dialogues; paper: one rate, QLoRA's usual 2e-4, no search), cutoff: max tokens per example;
# max_new_tokens per task.
#
# The book run's cost, estimated before running it (CPU-minutes at one thread; steps: 38 batches an epoch on
# mnist20, 30 on its 80 % search split, 7 on mnist10-20shot). Per ~220-step run, from chapter 04's glyph-backbone
# CPU seconds per method scaled by 0.81 (chapter 07's NoRA runs against 04's: contention and 04's three test
# passes per run), QLoRA without gradient checkpointing: QLoRA 0.9, LoRAN on q, v of the 4-bit base 1.0,
# LoRA 1.0, NoRA++ 0.95, LoRA on the four linears 1.4, LoRAN (Sinter) on them 2.1 (it forms sigma(BA) for
# every adapted layer on every forward):
#   QLoRA search, 3 rates x 180 steps                                    2.2
#   LoRA (four linears) search, 3 rates x 180 steps                     3.4
#   classification, 6 methods x 3 seeds x 228 steps                     18.7
#   sweep, 4 sigmas x 3 seeds x 210 steps (2,600 test images each)      12.0
#   head-to-head, 3 methods x 3 seeds x 228 steps                       13.7
#   LLM part (as measured on its last run)                               3.5
#   total: 45 vision runs (6 of them searches), 9,756 steps              ~53 (about 45-62)
# At a flat 0.8-1.1 CPU-min per 220 steps it is 35-49 + 3.5. To stay near 50 the book sweep tries
# one (A, omega) pair besides the released constants, (0.5, 1e4) (the first edition also tried (0.5, 1e2): 3 more runs, ~3 CPU-min);
# the two learning-rate grids are the three rates that bracket chapter 04's choice on this backbone (3e-3 for
# QLoRA and for LoRA on the four linears). The next cut, if needed: the head-to-head at the comparison's rate
# instead of its own search (-3.4).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"rank": 8, "alpha": 16.0, "epochs": {"easy": 1, "hard": 1}, "batch_size": 32, "amp": False,
              "train_per_class": 4, "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25,
              "lr_grid": (3e-3, 1e-2), "class_task": "mnist20", "sweep_task": "mnist10-20shot", "h2h_task": "mnist20",
              "sinter_sweep": ((0.5, 1e4),), "sine_frequencies": (200.0,), "h2h_lr_grid": (3e-3, 1e-2),
              "llm": {"tasks": ("dialogues",), "samples": 16, "val_samples": 4, "test_samples": 4, "steps": 2,
                      "batch_size": 4, "lr_grid": (1e-2, 3e-2), "rank": 4, "alpha": 1.0, "dropout": 0.2,
                      "warmup_ratio": 0.0, "cutoff": 256, "max_new_tokens": {"dialogues": 8}, "eval_batch_size": 8}},
    "book": {"rank": 8, "alpha": 16.0, "epochs": {"easy": 30, "hard": 6}, "batch_size": 32, "amp": False,
             "train_per_class": None, "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2,
             "lr_grid": (1e-3, 3e-3, 1e-2), "class_task": "mnist20", "sweep_task": "mnist10-20shot", "h2h_task": "mnist20",
             "sinter_sweep": ((0.5, 1e4),), "sine_frequencies": (200.0,), "h2h_lr_grid": (1e-3, 3e-3, 1e-2),
             "llm": {"tasks": ("dialogues",), "samples": 1200, "val_samples": 60, "test_samples": 100, "steps": 150,
                     "batch_size": 8, "lr_grid": (1e-2, 3e-2, 6e-2), "rank": 8, "alpha": 2.0, "dropout": 0.2,
                     "warmup_ratio": 0.03, "cutoff": 256, "max_new_tokens": {"dialogues": 40}, "eval_batch_size": 50}},
    "paper": {"rank": 8, "alpha": 16.0, "epochs": {"easy": 50, "hard": 50}, "batch_size": 256, "amp": True,
              "num_workers": 8, "train_per_class": None, "test_per_class": None, "search_task": "cifar100",
              "val_fraction": 0.1, "lr_grid": (3e-4, 1e-3, 3e-3), "class_task": "cifar100", "sweep_task": "cifar10",
              "h2h_task": "cifar100", "sinter_sweep": ((0.5, 1e4), (0.5, 1e2)), "sine_frequencies": (200.0,),
              "h2h_lr_grid": (3e-4, 1e-3, 3e-3),
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


# --- the vision runs -------------------------------------------------------------------------------------------

VISION_QV = ("attn.qkv.q", "attn.qkv.v")
VISION_ALL_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def vision_method(name: str, *, rank: int, alpha: float, **constants: float) -> tuple[str, dict[str, Any], Any]:
    """``(build_method name, overrides, prepare)`` of a vision method of chapter 10 (``prepare`` picklable or None).

    ``qlora`` (peft on the NF4 backbone, no gradient checkpointing: the same numbers, less time), ``lora``
    (float), ``lora-all`` / ``loran-all`` (rank ``rank`` on qkv, proj, fc1, fc2, float; LoRAN with Sinter),
    ``nora++``, and ``loran-<σ>``: LoRAN with σ on q and v of timm's fused qkv split exactly into q, k, v,
    every backbone linear in NF4 (as QLoRA); ``constants`` go to its ``LoRANConfig`` (Sinter's
    ``sinter_amplitude`` / ``sinter_frequency``, the sine's ``sine_frequency``).
    """
    from nora.adapters.peft_baselines import LoraBaselineConfig, prepare_base

    r = dict(rank=rank, alpha=alpha)
    if constants and (not name.startswith("loran-") or name == "loran-all"):
        raise ValueError(f"{name!r} takes no constants, got {sorted(constants)}")
    if name == "lora":
        return "lora", r, None
    if name == "qlora":
        return "qlora", {**r, "gradient_checkpointing": False}, None
    if name == "lora-all":
        return "lora", {**r, "targets": ("qkv", "proj", "fc1", "fc2")}, None
    if name == "loran-all":
        return "loran", {**r, "targets": VISION_ALL_LINEARS, "activation": "sinter"}, None
    if name == "nora++":
        return "nora++", {}, None
    if name.startswith("loran-"):
        prepare = functools.partial(prepare_base, config=LoraBaselineConfig(targets=("q", "v"), quantize_4bit=True))
        return "loran", {**r, "targets": VISION_QV, "activation": name.split("-", 1)[1], **constants}, prepare
    raise ValueError(f"unknown vision method {name!r}")


def vision_run(*, part: str, name: str, task: Any, config: Any, profile: str, seed: int, rank: int, alpha: float,
               constants: dict[str, float] | None = None) -> dict[str, Any]:
    """Fine-tune one vision method (``nora.experiments.vit_transfer.fine_tune``) and return the chapter's row for it.

    Row: part, method, task, seed, accuracy (%), lr, steps, trainable, train / CPU seconds, the ``constants``;
    for LoRAN, the entries z of its trained BA over layers (``update_statistics``: max |z|, rms z, the largest
    relative change of ΔW by σ and slope deviation, the mean ‖ΔW‖ / ‖W‖ and numerical rank of σ(BA)); for
    LoRAN (Sinter), also the test accuracy of the same trained factors with σ = identity.  Module level and
    returning only numbers, so that ``run_parallel(vision_run, jobs)`` runs it in worker processes.
    """
    import numpy as np

    from nora.adapters.loran_probe import swapped_activation, update_statistics
    from nora.experiments.train import evaluate
    from nora.experiments.vit_transfer import fine_tune

    constants = dict(constants or {})
    method, over, prepare = vision_method(name, rank=rank, alpha=alpha, **constants)
    result, model = fine_tune(method, task, config, profile=profile, seed=seed, overrides=over, prepare=prepare,
                              return_model=True)
    row = {"part": part, "method": name, "task": task.name, "seed": seed, "accuracy": result.accuracy,
           "lr": config.lr, "steps": result.steps, "trainable": result.extra["trainable"],
           "train_seconds": result.train_seconds, "cpu_seconds": result.cpu_seconds, **constants}
    if method == "loran":
        stats = update_statistics(model)
        col = {k: np.array([s[k] for s in stats], dtype=float) for k in stats[0] if k not in ("layer", "activation")}
        row.update(max_abs_z=float(col["max_abs_z"].max()), rms_z=float(np.sqrt((col["rms_z"] ** 2).mean())),
                   relative_change=float(col["relative_change"].max()),
                   max_slope_deviation=float(col["max_slope_deviation"].max()),
                   relative_update=float(col["relative_update"].mean()), effective_rank=float(col["effective_rank"].mean()))
        if name == "loran-sinter":  # the same trained factors with sigma = identity: what Sinter changes at the end
            with swapped_activation(model, "identity"):
                row["accuracy_identity_swap"] = evaluate(model, task.test, config)
    return row
