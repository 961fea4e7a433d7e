"""One cell of the paper's Table 2: tune LoRA or NoRA++ on one instruction set with one seed, score 5-shot MMLU by category.

The notebook ``06_llama_instruct`` calls ``run_cell`` for every (instruction set, method, seed) of
the profile; the paper profile can also be run cell by cell from the command line, on several GPUs:

    accelerate launch --config_file nora/experiments/llm/configs/accelerate_fsdp.yaml \\
        -m nora.experiments.llama_instruct train --dataset alpaca --method nora++ --seed 0 --out runs/paper/06/alpaca-nora++-0
    python -m nora.experiments.llama_instruct evaluate --out runs/paper/06/alpaca-nora++-0

``train`` saves the trained adapter with peft's ``save_pretrained`` (``adapter_config.json`` with
its ``peft_type``, LORA or NORA_PLUS, and ``adapter_model.safetensors``: for NoRA++ both parts) and
the run's spec (``spec.json``) in ``--out``; ``evaluate`` loads the adapter on a fresh base with
``peft.PeftModel.from_pretrained``, runs lm-eval's ``mmlu`` 5-shot (paper profile) or the book
benchmark, and writes ``result.json`` next to them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nora.experiments.profiles import resolve_profile, settings

__all__ = ["PROFILES", "NOTEBOOK", "benchmarks", "choose_learning_rate", "evaluate", "instruction_records", "load_trained", "run_cell", "save_trained"]

NOTEBOOK = "06_llama_instruct"

# The chapter's sizes per profile: nora.experiments.profiles.settings("06_llama_instruct", profile) merges
# PROFILES[profile] over the defaults.
# sets: instruction sets (generated styles in smoke/book, hub datasets in paper); samples: records
# per set (Appendix C: max 1000); epochs/steps: the identical budget of LoRA and NoRA++; lora/nora:
# adapter settings (LoRA r=8, alpha=16 on every projection; NoRA G=8, r=3, alpha=6 on the SiLUs);
# cutoff: max tokens per example (Appendix C: 1024); threads: torch CPU threads (one is much
# faster than two when the 2-core machine is shared); lm_eval_check: also score the base model
# with lm-eval on the local task and compare with our scorer; seeds (book): five, because three
# leave a 95 % interval of the paired difference too wide to tell 2 points from noise; smoke: two, the
# fewest the chapter's paired intervals and power analysis work with.
# lr_grid (smoke, book): the learning rates the chapter tries first, LoRA with the first seed on every set,
# scored 5-shot on the validation split (validation_per_subject exam questions of every subject, which the
# test then leaves out: corpus.Benchmark.split); choose_learning_rate takes the largest whose mean validation
# average stays within retention_points of the base model's, and both methods then train at it. Half a
# decade apart, from the paper's 1e-4 up to 1e-3, at which the first edition's tuned models lost 4-9 points.
# learning_rate: that choice as the book run recorded it (results/book/06_llama_instruct.json
# learning_rate_chosen; a test keeps them equal), used where no search runs (the command line, a passed
# learning_rate). paper: the paper's 1e-4, no search, MMLU's own test.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"sets": ("alpaca", "mathinstruct", "openorca"), "seeds": (0, 1), "samples": 16, "steps": 2, "batch_size": 4,
              "learning_rate": 1e-3, "lr_grid": (1e-3, 3e-3), "retention_points": 3.0, "validation_per_subject": 2, "warmup_ratio": 0.0, "cutoff": 256, "eval_batch_size": 32,
              "lora": {"rank": 4, "alpha": 8}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
              "sample_tokens": 12, "threads": 1, "lm_eval_check": True},
    "book": {"sets": ("alpaca", "mathinstruct", "openorca", "ultrachat"), "seeds": (0, 1, 2, 3, 4), "samples": 1000, "epochs": 1.0,
             "batch_size": 8, "learning_rate": 3e-4, "lr_grid": (1e-4, 3e-4, 1e-3), "retention_points": 3.0, "validation_per_subject": 8, "warmup_ratio": 0.03, "cutoff": 256, "eval_batch_size": 32,
             "lora": {"rank": 8, "alpha": 16}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
             "sample_tokens": 40, "threads": 1, "lm_eval_check": True},
    "paper": {"sets": ("alpaca", "mathinstruct", "openorca", "sharegpt_hyper", "ultrachat"), "samples": 1000,
              "epochs": 3.0, "batch_size": 4, "gradient_accumulation": 2, "learning_rate": 1e-4,
              "lr_grid": (), "retention_points": 3.0, "validation_per_subject": 0,
              "warmup_ratio": 0.1, "cutoff": 1024, "eval_batch_size": 2, "bf16": True,
              "lora": {"rank": 8, "alpha": 16}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
              "sample_tokens": 128, "threads": 8, "lm_eval_check": False},
}


def instruction_records(profile: str, name: str, cfg: dict, world=None, data_files=None) -> list[dict[str, str]]:
    """The instruction set ``name``: a hub dataset (paper) or a generated style (smoke, book), at most ``cfg["samples"]`` records."""
    if resolve_profile(profile) == "paper" or data_files is not None:
        from nora.experiments.llm.sources import load_instructions

        return load_instructions(name, cfg["samples"], data_files=data_files)
    from nora.experiments.llm.corpus import instruction_set

    if world is None:
        raise ValueError("world is needed for the generated instruction sets (smoke / book profiles)")
    return instruction_set(world, name, cfg["samples"], seed=0)


def evaluate(model, tokenizer, profile: str, cfg: dict, benchmark=None, *, per_question: bool = False):
    """Category accuracies and their average (percent): lm-eval ``mmlu`` 5-shot (paper) or our scorer on ``benchmark``.

    ``per_question=True`` (smoke / book) returns the scorer's ``MMLUResult`` instead: its
    ``table_row()`` is the same dict, and it keeps every question's prediction and 0/1 correctness
    (``correct_array()``) under ``question_ids`` aligned across models, for the paired statistics of
    ``nora.experiments.llm.power`` (``mmlu.correctness_matrix`` stacks them).
    """
    from nora.experiments.llm import mmlu

    if resolve_profile(profile) == "paper":
        if per_question:
            raise NotImplementedError("per-question results of the paper profile (lm-eval's mmlu) are not kept yet")
        return mmlu.lm_eval_score(model, tokenizer, "mmlu", num_fewshot=5, batch_size=cfg["eval_batch_size"])
    if benchmark is None:
        raise ValueError("benchmark is needed for the smoke / book profiles")
    result = mmlu.score(model, tokenizer, benchmark, k=5, batch_size=cfg["eval_batch_size"])
    return result if per_question else result.table_row()


def benchmarks(world, cfg: dict):
    """``(validation, test)`` of the generated benchmark (smoke, book): ``cfg["validation_per_subject"]`` exam questions
    of every subject for choosing settings, the rest for the test; validation is None when that is 0."""
    from nora.experiments.llm.corpus import Benchmark

    full = Benchmark.from_world(world)
    n = cfg.get("validation_per_subject", 0)
    return full.split(n) if n else (None, full)


def choose_learning_rate(validation: dict[float, float], base: float, retention_points: float = 3.0) -> tuple[float, bool]:
    """The largest rate whose validation average (percent) is at least ``base − retention_points``, and whether one was.

    ``validation`` maps each tried learning rate to the tuned model's validation average (e.g. LoRA's,
    averaged over the instruction sets); ``base`` is the untuned model's on the same split. The
    largest rate that keeps the base model's knowledge tunes the most; when none keeps it, the
    smallest rate is returned with ``False``.
    """
    if not isinstance(validation, dict) or not validation:
        raise ValueError(f"validation must be a non-empty dict {{learning rate: validation average}}, got {validation!r}")
    for lr, score in validation.items():
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"validation keys must be positive learning rates, got {lr!r}")
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError(f"validation[{lr!r}] must be a finite accuracy, got {score!r}")
    for name, value in (("base", base), ("retention_points", retention_points)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (name == "retention_points" and value < 0):
            raise ValueError(f"{name} must be a finite number{' >= 0' if name == 'retention_points' else ''}, got {value!r}")
    kept = [lr for lr, score in validation.items() if score >= base - retention_points]
    return (max(kept), True) if kept else (min(validation), False)


def run_cell(base, tokenizer, records: list[dict], method: str, seed: int, cfg: dict,
             scorer: Callable[[Any], dict[str, float]], sample: dict | None = None, copy_base: bool = True) -> dict[str, Any]:
    """Adapt ``base`` with ``method``, measure parameters and step memory, fine-tune, score, and generate one sample.

    ``scorer(model)`` returns the category row (a dict), or an ``MMLUResult`` whose row is used and
    which is kept under ``"mmlu"`` (per-question outcomes).
    """
    import nora
    from nora.experiments.llm import instruct

    model = instruct.adapt(base, method, seed, lora=cfg["lora"], nora_cfg=cfg["nora"], copy_base=copy_base)
    count = nora.count_parameters(model)
    probe = instruct.SFTCollator(tokenizer.pad_token_id)(instruct.encode_records(records[: cfg["batch_size"]], tokenizer, cfg["cutoff"]))
    memory = instruct.step_memory(model, probe)
    tune = instruct.finetune(
        model, tokenizer, records, seed=seed, steps=cfg.get("steps"), epochs=cfg.get("epochs", 1.0),
        batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"], cutoff=cfg["cutoff"],
        warmup_ratio=cfg["warmup_ratio"], use_cpu=cfg["device"] == "cpu", bf16=cfg.get("bf16", False),
        gradient_accumulation=cfg.get("gradient_accumulation", 1),
    )
    scores = scorer(model)
    result = None
    if not isinstance(scores, dict):  # an MMLUResult (evaluate(..., per_question=True)): keep the per-question outcomes
        result, scores = scores, scores.table_row()
    text = instruct.generate(model, tokenizer, **sample, max_new_tokens=cfg["sample_tokens"]) if sample else ""
    return {
        "method": method, "seed": seed, **scores,
        "trainable": count.trainable, "total": count.total, "steps": tune.steps, "train_seconds": tune.seconds,
        "step_seconds": tune.median_step, "memory_bytes": memory["peak"], "saved_activation_bytes": memory["saved_activations"],
        "final_loss": tune.losses[-1][1] if tune.losses else float("nan"), "losses": tune.losses, "sample": text,
        "model": model, **({"mmlu": result} if result is not None else {}),
    }


# --------------------------------------------------------------------------------- saving, CLI


def save_trained(model, spec: dict, out: str | Path, *, state_dict=None, is_main_process: bool = True) -> Path:
    """``model.save_pretrained(out)`` (``state_dict``: a gathered one, under FSDP) and ``spec.json`` (dataset, method, seed, settings)."""
    out = Path(out)
    model.save_pretrained(str(out), state_dict=state_dict, is_main_process=is_main_process)
    if is_main_process:
        (out / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return out


def load_trained(base, out: str | Path):
    """The adapted model of a saved run: ``peft.PeftModel.from_pretrained(base, out)`` (``base`` is modified in place)."""
    from peft import PeftModel

    out = Path(out)
    spec = json.loads((out / "spec.json").read_text())
    if (out / "adapter.safetensors").is_file() and not (out / "adapter_config.json").is_file():
        raise ValueError(f"{out} was saved before the adapters were peft methods (adapter.safetensors + spec.json); "
                         "re-run `python -m nora.experiments.llama_instruct train` for it")
    return PeftModel.from_pretrained(base, str(out)).eval(), spec


def _base(profile: str, distributed: bool = False):
    from nora.experiments.llm.pretrain import pretrained_llama

    model, tokenizer, _ = pretrained_llama(profile)
    if distributed:
        model = model.float()  # float32 master weights; bf16 compute comes from FSDP mixed precision
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nora.experiments.llama_instruct", description="One Table-2 cell: train, then evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fine-tune (launch with accelerate for several GPUs) and save the adapter")
    train.add_argument("--profile", default="paper", choices=("smoke", "book", "paper"))
    train.add_argument("--dataset", required=True)
    train.add_argument("--method", required=True, choices=("lora", "nora++"))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data-files", nargs="*", default=None, help="local JSON/JSONL files in the dataset's hub layout")
    train.add_argument("--out", required=True)
    ev = sub.add_parser("evaluate", help="load a trained adapter on a fresh base and score 5-shot MMLU by category")
    ev.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    if args.command == "train":
        from nora.experiments.llm import instruct
        from nora.experiments.llm.pretrain import PRETRAIN, world_for

        profile = resolve_profile(args.profile)
        cfg = settings(NOTEBOOK, profile)
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        base, tokenizer = _base(profile, distributed)
        world = None if profile == "paper" else world_for(PRETRAIN[profile])
        records = instruction_records(profile, args.dataset, cfg, world, args.data_files)
        model = instruct.adapt(base, args.method, args.seed, lora=cfg["lora"], nora_cfg=cfg["nora"], copy_base=False)
        holder: dict[str, Any] = {}
        instruct.finetune(
            model, tokenizer, records, seed=args.seed, steps=cfg.get("steps"), epochs=cfg.get("epochs", 1.0),
            batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"], cutoff=cfg["cutoff"],
            warmup_ratio=cfg["warmup_ratio"], use_cpu=cfg["device"] == "cpu", bf16=cfg.get("bf16", False),
            gradient_accumulation=cfg.get("gradient_accumulation", 1), on_trained=lambda t: holder.__setitem__("trainer", t),
        )
        trainer = holder["trainer"]
        state = trainer.accelerator.get_state_dict(trainer.model)  # gathered on rank 0 under FSDP FULL_STATE_DICT
        spec = {"profile": profile, "dataset": args.dataset, "method": args.method, "seed": args.seed,
                "lora": cfg["lora"], "nora": cfg["nora"], "samples": len(records)}
        save_trained(model, spec, args.out, state_dict=state, is_main_process=trainer.accelerator.is_main_process)
        if trainer.accelerator.is_main_process:
            print(f"saved the {args.method} adapter to {args.out}")
        return 0

    out = Path(args.out)
    spec = json.loads((out / "spec.json").read_text())
    profile = spec["profile"]
    cfg = settings(NOTEBOOK, profile)
    base, tokenizer = _base(profile)
    if profile != "paper":
        from nora.experiments.llm.pretrain import PRETRAIN, world_for

        benchmark = benchmarks(world_for(PRETRAIN[profile]), cfg)[1]  # the chapter's test questions
    else:
        benchmark = None
    model, spec = load_trained(base, out)
    if cfg["device"] == "cuda":
        model = model.to("cuda")
    extra = {}
    if benchmark is not None:  # keep the per-question outcomes for the paired statistics (nora.experiments.llm.power)
        result = evaluate(model, tokenizer, profile, cfg, benchmark, per_question=True)
        row = result.table_row()
        extra = {"question_ids": result.question_ids, "correct": [int(c) for c in result.correct]}
    else:
        row = evaluate(model, tokenizer, profile, cfg, benchmark)
    (out / "result.json").write_text(json.dumps({**spec, "mmlu_5shot": row, **extra}, indent=1, sort_keys=True) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
