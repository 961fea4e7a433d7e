"""Pilot for issue 16's ceiling gate: does full fine-tuning reach the small CNN's ceiling when it trains with
the ceiling's own augmentation (random +-1 px shifts, ``TrainConfig.shift``) and/or a longer budget, instead
of chapter 04's ~220 unaugmented steps?

    python pilots/ceiling_budget.py full 1 1e-3 1 [mnist20]   # method, shift (px), lr, epoch multiplier[, task]

Seed 0, book profile, one thread; prints the final test accuracy and the test curve (five evaluations).
Not part of the book: its numbers are quoted in the closing note of the session that ran it, as the
evidence for chapter 04's schedule.
"""
import sys
import time

import torch

import nora  # noqa: F401  (first: makes the registry's torchvision importable)
from nora.experiments.data import downstream_tasks
from nora.experiments.train import TrainConfig
from nora.experiments.vit_transfer import fine_tune

torch.set_num_threads(1)


def main(method: str, shift: int, lr: float, mult: int, only: str | None = None) -> None:
    epochs = {"mnist10-20shot": 30 * mult, "mnist20": 6 * mult}  # chapter 04's per-task epochs, times mult
    for task in downstream_tasks("book").values():
        if only and task.name != only:
            continue
        n = epochs[task.name]
        cfg = TrainConfig(epochs=n, batch_size=32, lr=lr, eval_every=max(1, n // 5), shift=shift)
        start = time.time()
        r = fine_tune(method, task, cfg, profile="book", seed=0)
        curve = [round(a, 2) for a in r.test_curve if a is not None]
        print(f"{task.name} {method} shift {shift} lr {lr:g} x{mult}: {r.accuracy:.2f} % after {r.steps} steps; "
              f"test curve {curve}; {r.cpu_seconds:.0f} CPU-s, {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else None)
