"""Pilot for issue 21: how noisy is chapter 06's paired NoRA++ - LoRA delta, and what design reaches +-0.5 points?

    python pilots/mmlu_power.py alpaca 8 1e-3 /tmp/pilot_alpaca_1e-3.npz   # set, seeds, learning rate, output

Tunes LoRA and NoRA++ with chapter 06's book settings (one thread, the same batches for both methods
per seed) on one generated instruction set for seeds 0..n-1, scores every tuned model and the base
model question by question (5-shot, shared-prefix scoring: the same predictions as the chapter's
scorer), saves the 0/1 correctness matrices, then prints the variance components of the paired
delta (nora.experiments.llm.power.decompose), the 95 % half-width of the chapter's design (5 seeds,
the benchmark's questions) and the designs that reach +-0.5 on the average and +-1.0 per category.
Not part of the book: its numbers are quoted in the closing note of the session that ran it.
"""
import sys
import time

import numpy as np
import torch
import transformers

import nora  # noqa: F401  (first: makes the registry's torchvision importable)
from nora.experiments.llama_instruct import instruction_records, run_cell
from nora.experiments.llm import corpus, mmlu, power
from nora.experiments.llm.pretrain import PRETRAIN, pretrained_llama, world_for
from nora.experiments.profiles import settings

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def main(name: str, n_seeds: int, lr: float, out: str) -> None:
    cfg = settings("06_llama_instruct", "book", learning_rate=lr)
    base, tokenizer, _ = pretrained_llama("book")
    world = world_for(PRETRAIN["book"])
    benchmark = corpus.Benchmark.from_world(world)

    def scorer(model):
        return mmlu.score(model, tokenizer, benchmark, k=5, batch_size=cfg["eval_batch_size"], share_prefix=True)

    base_result = scorer(base)
    records = instruction_records("book", name, cfg, world)
    results = {"lora": [], "nora++": []}
    for seed in range(n_seeds):
        for method in results:
            t = time.time()
            out_cell = run_cell(base, tokenizer, records, method, seed, cfg, scorer)
            results[method].append(out_cell["mmlu"])
            print(f"{name} lr {lr:g} {method:7s} seed {seed}: average {out_cell['Average']:.1f} "
                  f"({out_cell['steps']} steps, {time.time() - t:.0f} s)", flush=True)
    a, cats, ids = mmlu.correctness_matrix(results["lora"])
    b, _, _ = mmlu.correctness_matrix(results["nora++"])
    np.savez(out, lora=a, nora_plus=b, base=base_result.correct_array(), categories=cats, question_ids=np.array(ids))
    q = a.shape[1]
    print(f"\nbase {100 * base_result.correct_array().mean():.2f} %, LoRA {100 * a.mean():.2f} +- "
          f"{100 * a.mean(1).std(ddof=1):.2f}, NoRA++ {100 * b.mean():.2f} +- {100 * b.mean(1).std(ddof=1):.2f} "
          f"(mean +- std over {n_seeds} seeds, {q} questions)")
    for group, cmp in power.compare(a, b, cats, n_boot=2000).items():
        print(f"{group:16s} delta {cmp.delta:+.2f}  mixed 95% +-{cmp.mixed.half_width:.2f}  "
              f"bootstrap 95% +-{cmp.bootstrap.half_width:.2f}")
    groups = power.compare(a, b, cats, n_boot=0)
    comps = groups[power.AVERAGE].components
    print(f"\nvariance components of the average (points^2): seed {comps.seed:.3f}, question {comps.question:.2f}, "
          f"residual {comps.residual:.1f}")
    print(f"chapter's design (5 seeds x {q} questions): +-{power.half_width(comps, q, 5):.2f}; "
          f"minimum detectable effect {power.minimum_detectable_effect(comps, q, 5):.2f}")
    for group, cmp in groups.items():
        target = 0.5 if group == power.AVERAGE else 1.0
        search = power.required_design(cmp.components, target, max_seeds=60)
        if search.best is None:
            print(f"{group}: +-{target} needs more than 60 seeds")
            continue
        scale = q / cmp.n_questions  # questions of this group -> questions of the whole benchmark
        print(f"{group:16s} +-{target}: cheapest {search.best.n_seeds} seeds x {search.best.n_questions:,} questions "
              f"(~{search.best.n_questions * scale:,.0f} in the benchmark); "
              + ", ".join(f"{d.n_seeds} seeds x {d.n_questions:,}" for d in search.frontier[::8]))

if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
