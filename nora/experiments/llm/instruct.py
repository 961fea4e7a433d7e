"""Instruction tuning: Alpaca prompts, prompt-masked SFT with transformers' ``Trainer``, LoRA vs NoRA++.

The Alpaca template (Stanford Alpaca's ``PROMPT_DICT``) is reproduced exactly by ``alpaca_prompt``;
the model is trained on ``prompt + "\\n"`` followed by ``output + eos``, with the loss masked
(label -100) on every prompt token, as Stanford's ``train.py`` masks the source. (Stanford appends the
output directly after ``"### Response:"``; the newline, which alpaca-lora and LLaMA-Factory's
``alpaca`` template also put there, is part of the masked prompt.)

``adapt(base, method, ...)`` builds the two compared models from the same base:

- ``"lora"``: peft LoRA on the attention and MLP projections;
- ``"nora++"``: the same LoRA plus NoRA on every SiLU of the MLPs (one peft method, ``nora.NoraPlusConfig``),

and ``finetune`` trains either with one ``Trainer`` configuration (identical data order, steps,
learning rate and schedule for both), timing each optimisation step.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METHODS",
    "PROMPT_INPUT",
    "PROMPT_NO_INPUT",
    "SFTCollator",
    "TuneResult",
    "adapt",
    "alpaca_prompt",
    "encode_example",
    "encode_records",
    "finetune",
    "generate",
    "step_memory",
]

PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
RESPONSE_SEPARATOR = "\n"
METHODS = ("lora", "nora++")
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE_INDEX = -100


def alpaca_prompt(instruction: str, input: str = "") -> str:  # noqa: A002  (the dataset's field name)
    """Stanford Alpaca's prompt: the with-input template when ``input`` is non-empty, else the without-input one."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
    if not isinstance(input, str):
        raise ValueError(f"input must be a string, got {type(input).__name__}")
    template = PROMPT_INPUT if input.strip() else PROMPT_NO_INPUT
    return template.format_map({"instruction": instruction, "input": input})


def encode_example(record: dict, tokenizer, cutoff: int = 1024) -> dict[str, list[int]]:
    """Token ids and labels of one Alpaca record: labels are -100 on the prompt, the ids on ``output + eos``.

    Sequences longer than ``cutoff`` are cut: the response keeps at least half of ``cutoff`` (or all
    of itself), the prompt keeps its beginning.
    """
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"record field {key!r} must be a string, got {record.get(key)!r}")
    if not record["output"].strip():
        raise ValueError("record field 'output' is empty")
    prompt = alpaca_prompt(record["instruction"], record.get("input") or "") + RESPONSE_SEPARATOR
    source = tokenizer.encode(prompt)  # the tokenizer's own special tokens (LLaMA-3: BOS; the book's: none)
    target = tokenizer.encode(record["output"], add_special_tokens=False) + [tokenizer.eos_token_id]
    if len(source) + len(target) > cutoff:
        keep_target = min(len(target), max(cutoff // 2, cutoff - len(source)))
        target = target[:keep_target]
        source = source[: cutoff - keep_target]
    return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}


def encode_records(records: Sequence[dict], tokenizer, cutoff: int = 1024) -> list[dict[str, list[int]]]:
    return [encode_example(r, tokenizer, cutoff) for r in records]


@dataclass
class SFTCollator:
    """Right-pad a batch: ``input_ids`` with the pad id, ``labels`` with -100, plus ``attention_mask``."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.as_tensor(f["input_ids"])
            labels[row, :n] = torch.as_tensor(f["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lora_config(rank: int = 8, alpha: float = 16, targets: Sequence[str] = LLAMA_LINEARS, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, task_type="CAUSAL_LM")


def adapt(base, method: str, seed: int, *, lora: dict | None = None, nora_cfg: dict | None = None, copy_base: bool = True):
    """LoRA or NoRA++ on (a deep copy of) ``base``, adapter factors initialised from ``seed``."""
    import torch
    from peft import get_peft_model

    import nora

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model = copy.deepcopy(base) if copy_base else base
    torch.manual_seed(seed)
    cfg = lora_config(**(lora or {}))
    if method == "lora":
        return get_peft_model(model, cfg)
    nora_kwargs = {"groups": 8, "rank": 3, "alpha": 6, "target": "silu", **(nora_cfg or {})}
    plus = nora.NoraPlusConfig(**nora_kwargs, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=sorted(cfg.target_modules), task_type=cfg.task_type)
    return get_peft_model(model, plus)


@dataclass
class TuneResult:
    """What one fine-tuning run measured."""

    steps: int
    seconds: float
    step_seconds: list[float] = field(repr=False)
    losses: list[tuple[int, float]] = field(repr=False)

    @property
    def median_step(self) -> float:
        """Median wall time of an optimisation step (the first step, with its one-off costs, left out)."""
        times = self.step_seconds[1:] or self.step_seconds
        return statistics.median(times)


def finetune(model, tokenizer, records: Sequence[dict], *, seed: int, steps: int | None = None, epochs: float = 1.0,
             batch_size: int = 8, learning_rate: float = 1e-3, cutoff: int = 1024, warmup_ratio: float = 0.03,
             weight_decay: float = 0.0, scheduler: str = "cosine", use_cpu: bool = True, bf16: bool = False,
             gradient_accumulation: int = 1, output_dir: str | None = None, on_trained: Callable | None = None,
             **trainer_kwargs) -> TuneResult:
    """Prompt-masked SFT of ``model`` on Alpaca ``records`` with transformers' ``Trainer``; returns timings and losses.

    Data order and everything else but the adapter initialisation is fixed by ``seed``, so a LoRA and
    a NoRA++ run with the same seed see the same batches in the same order. ``on_trained(trainer)``
    is called after training (e.g. to gather a sharded state dict before the trainer is gone).
    """
    return train_encoded(model, encode_records(records, tokenizer, cutoff), tokenizer.pad_token_id, seed=seed,
                         steps=steps, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, weight_decay=weight_decay, scheduler=scheduler, use_cpu=use_cpu,
                         bf16=bf16, gradient_accumulation=gradient_accumulation, output_dir=output_dir,
                         on_trained=on_trained, **trainer_kwargs)


def train_encoded(model, data: Sequence[dict[str, list[int]]], pad_token_id: int, *, seed: int, steps: int | None = None,
                  epochs: float = 1.0, batch_size: int = 8, learning_rate: float = 1e-3, warmup_ratio: float = 0.03,
                  weight_decay: float = 0.0, scheduler: str = "cosine", use_cpu: bool = True, bf16: bool = False,
                  gradient_accumulation: int = 1, output_dir: str | None = None, on_trained: Callable | None = None,
                  **trainer_kwargs) -> TuneResult:
    """The training loop shared by every chapter's fine-tuning: ``Trainer`` on already-encoded, prompt-masked examples.

    ``data`` holds ``input_ids`` / ``labels`` (prompt tokens labelled -100); ``steps`` defaults to
    ``epochs`` passes over it. Step times and logged losses are recorded; the model is left in eval mode.
    """
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    if steps is None:
        steps = max(1, math.ceil(epochs * len(data) / (batch_size * gradient_accumulation)))
    step_times: list[float] = []
    losses: list[tuple[int, float]] = []

    class _Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            step_times.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append((state.global_step, float(logs["loss"])))

    with tempfile.TemporaryDirectory(prefix="nora-sft-") as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp, use_cpu=use_cpu, bf16=bf16, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=gradient_accumulation, max_steps=steps, learning_rate=learning_rate,
            lr_scheduler_type=scheduler, warmup_steps=math.ceil(warmup_ratio * steps), weight_decay=weight_decay,
            logging_steps=max(1, steps // 20), save_strategy="no", report_to=[], seed=seed, data_seed=seed,
            disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False, **trainer_kwargs,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=SFTCollator(pad_token_id),
                          callbacks=[_Clock()])
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        if on_trained is not None:
            on_trained(trainer)
    model.eval()
    return TuneResult(steps=steps, seconds=seconds, step_seconds=step_times, losses=losses)


def step_memory(model, batch: dict) -> dict[str, int]:
    """Memory of one training step of ``model`` on ``batch``, in bytes.

    On CUDA: ``torch.cuda.max_memory_allocated`` over the step. On CPU (no allocator statistics):
    the tensors autograd saves for the backward pass (each storage once, via
    ``saved_tensors_hooks``) plus the trainable parameters' gradients and AdamW's two moment buffers.
    """
    import torch

    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = sum(p.numel() * p.element_size() for p in trainable)
    was_training = model.training
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        model(**batch).loss.backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - before
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return {"peak": int(peak + 2 * state), "saved_activations": -1, "grads_and_adam": 3 * state}
    seen: dict[tuple[int, int], int] = {}

    def pack(t):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            s = t.untyped_storage()
            seen[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    saved = sum(seen.values())
    return {"peak": int(saved + 3 * state), "saved_activations": int(saved), "grads_and_adam": int(3 * state)}


def generate(model, tokenizer, instruction: str, input: str = "", max_new_tokens: int = 48) -> str:  # noqa: A002
    """Greedy continuation of the Alpaca prompt (up to eos or ``max_new_tokens``), decoded."""
    import torch

    ids = tokenizer.encode(alpaca_prompt(instruction, input) + RESPONSE_SEPARATOR, return_tensors="pt")
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def base_factory(model) -> Callable[[], Any]:
    """A zero-argument factory giving fresh deep copies of an in-memory base model."""
    return lambda: copy.deepcopy(model)
