"""The paper profile's instruction datasets, loaded with HF ``datasets`` and converted to Alpaca records.

The paper (Section 4.3, Appendix C) tunes LLaMA-3-8B on Alpaca, MathInstruct, OpenOrca,
ShareGPT-Hyper and UltraChat with at most 1,000 samples each and a cutoff of 1,024 tokens. These are
the hub datasets LLaMA-Factory registers under those names; each has its own layout, and
``to_alpaca`` maps every layout onto ``{"instruction", "input", "output"}``:

============== ============================================== ========== ===========================
name           hub id                                         split      layout
============== ============================================== ========== ===========================
alpaca         tatsu-lab/alpaca                               train      instruction / input / output
mathinstruct   TIGER-Lab/MathInstruct                         train      instruction / output
openorca       Open-Orca/OpenOrca                             train      system_prompt / question / response
sharegpt_hyper totally-not-an-llm/sharegpt-hyperfiltered-3k   train      conversations [{from, value}]
ultrachat      HuggingFaceH4/ultrachat_200k                   train_sft  messages [{role, content}]
============== ============================================== ========== ===========================

Multi-turn conversations keep their first user turn and the assistant's reply to it. A system
prompt (OpenOrca's ``system_prompt``, a leading system turn) has no slot in the Alpaca template; it
is put in front of the instruction, separated by a blank line. ``load_instructions(name, data_files=...)`` reads the same
layout from local JSON/JSONL files instead of the hub — that is how the tests run it, offline.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PAPER_DATASETS", "Source", "load_instructions", "to_alpaca"]


@dataclass(frozen=True)
class Source:
    hub_id: str
    split: str
    layout: str  # "alpaca" | "orca" | "sharegpt" | "messages"


PAPER_DATASETS: dict[str, Source] = {
    "alpaca": Source("tatsu-lab/alpaca", "train", "alpaca"),
    "mathinstruct": Source("TIGER-Lab/MathInstruct", "train", "alpaca"),
    "openorca": Source("Open-Orca/OpenOrca", "train", "orca"),
    "sharegpt_hyper": Source("totally-not-an-llm/sharegpt-hyperfiltered-3k", "train", "sharegpt"),
    "ultrachat": Source("HuggingFaceH4/ultrachat_200k", "train_sft", "messages"),
}

_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "model"}


def _first_exchange(turns, role_key: str, text_key: str) -> tuple[str, str, str] | None:
    system, user = "", None
    for turn in turns or []:
        role, text = str(turn.get(role_key, "")).lower(), turn.get(text_key) or ""
        if role == "system" and user is None:
            system = text
        elif role in _USER and user is None:
            user = text
        elif role in _ASSISTANT and user is not None:
            return system, user, text
    return None


def to_alpaca(row: dict, layout: str) -> dict[str, str] | None:
    """One dataset row as an Alpaca record, or ``None`` when it has no usable (instruction, output) pair."""
    system = ""
    if layout == "alpaca":
        instruction, inp, output = row.get("instruction") or "", row.get("input") or "", row.get("output") or ""
    elif layout == "orca":
        system, instruction, inp, output = row.get("system_prompt") or "", row.get("question") or "", "", row.get("response") or ""
    elif layout == "sharegpt":
        found = _first_exchange(row.get("conversations"), "from", "value")
        if found is None:
            return None
        (system, instruction, output), inp = found, ""
    elif layout == "messages":
        found = _first_exchange(row.get("messages"), "role", "content")
        if found is None:
            return None
        (system, instruction, output), inp = found, ""
    else:
        raise ValueError(f"layout must be one of alpaca, orca, sharegpt, messages; got {layout!r}")
    if not instruction.strip() or not output.strip():
        return None
    if system.strip():
        instruction = f"{system.strip()}\n\n{instruction}"
    return {"instruction": instruction, "input": inp, "output": output}


def load_instructions(name: str, max_samples: int = 1000, data_files: str | list[str] | None = None,
                      seed: int | None = None) -> list[dict[str, str]]:
    """Up to ``max_samples`` Alpaca records of a paper dataset (the hub, or local ``data_files`` in its layout).

    Rows are taken in dataset order, as LLaMA-Factory's ``max_samples`` does (``seed``: shuffle first).
    """
    from datasets import load_dataset

    if name not in PAPER_DATASETS:
        raise ValueError(f"name must be one of {sorted(PAPER_DATASETS)}, got {name!r}")
    if not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
    source = PAPER_DATASETS[name]
    if data_files is not None:
        ds = load_dataset("json", data_files=data_files, split="train")
    else:
        ds = load_dataset(source.hub_id, split=source.split)
    if seed is not None:
        ds = ds.shuffle(seed=seed)
    out = []
    for row in ds:
        record = to_alpaca(row, source.layout)
        if record is not None:
            out.append(record)
            if len(out) == max_samples:
                break
    if not out:
        raise ValueError(f"{name}: no row could be converted to an Alpaca record (layout {source.layout!r})")
    return out
