"""Pilot for issue 16's ceiling gate: does full fine-tuning reach the small CNN's ceiling when it gets the
ceiling's own augmentation (random +-1 px shifts, as nora.experiments.ceilings.cnn_accuracy trains with) and
a longer budget, instead of chapter 04's ~220 unaugmented steps?

    python pilots/ceiling_budget.py aug 5    # shifts, 5x chapter 04's epochs (1,050 / 1,140 steps)
    python pilots/ceiling_budget.py aug 1    # shifts, chapter 04's epochs
    python pilots/ceiling_budget.py none 5   # no shifts, 5x the epochs

Full fine-tuning at chapter 04's chosen rate (1e-3), seed 0, book profile, one thread; prints the final
test accuracy and the test curve (five evaluations). Not part of the book: its numbers are quoted in the
closing note of the session that ran it, as the evidence for the next chapter-04 schedule.
"""
import sys
import time

import torch
from torch.utils.data import Dataset

import nora  # noqa: F401  (first: makes the registry's torchvision importable)
from nora.experiments.data import downstream_tasks
from nora.experiments.data.tasks import Task
from nora.experiments.train import TrainConfig
from nora.experiments.vit_transfer import fine_tune

torch.set_num_threads(1)


class Shifted(Dataset):
    """``base`` with every image shifted by -1, 0 or +1 px in x and y, the border filled with its background."""

    def __init__(self, base: Dataset, seed: int = 0):
        self.base, self.gen = base, torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=float(x.min()))
        dx, dy = torch.randint(0, 3, (2,), generator=self.gen).tolist()
        return padded[:, dy:dy + x.shape[-2], dx:dx + x.shape[-1]], y


def main(which: str, mult: int) -> None:
    epochs = {"mnist10-20shot": 30 * mult, "mnist20": 6 * mult}  # chapter 04's per-task epochs, times mult
    for task in downstream_tasks("book").values():
        if which == "aug":
            task = Task(task.name, Shifted(task.train), task.test, task.classes)
        n = epochs[task.name]
        cfg = TrainConfig(epochs=n, batch_size=32, lr=1e-3, eval_every=max(1, n // 5))
        start = time.time()
        r = fine_tune("full", task, cfg, profile="book", seed=0)
        curve = [round(a, 2) for a in r.test_curve if a is not None]
        print(f"{task.name} {which} x{mult}: {r.accuracy:.2f} % after {r.steps} steps; test curve {curve}; "
              f"{r.cpu_seconds:.0f} CPU-s, {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
