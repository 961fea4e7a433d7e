"""Reference ceilings of a downstream task without any pre-training: k-NN on raw pixels and a small CNN.

Chapter 04's regime gate "full fine-tuning within 5 points of the ceiling" needs a number that says
how well this task can be learnt from its own training images by methods built for small images:

- :func:`knn_accuracy`: k-nearest neighbours on the raw (normalised) pixels, ``k`` chosen by 5-fold
  cross-validation on the training set (the test set is not looked at);
- :func:`cnn_accuracy`: a 4-conv-layer CNN with batch norm and dropout, trained with random
  +-1 px shifts for at least ``min_steps`` optimiser steps (AdamW, cosine): to convergence on
  these few hundred images; :func:`cnn_search` picks its learning rate on a validation split.

The ceiling is the better of the two (``max(k-NN, CNN mean over seeds)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nora.experiments.augment import random_shift
from nora.experiments.data.tasks import Task

__all__ = ["SmallCNN", "cnn_accuracy", "cnn_search", "knn_accuracy"]


def _grey(data) -> tuple[torch.Tensor, torch.Tensor]:
    """The first channel of every image (the tasks are grey replicated to RGB) and the labels."""
    x = torch.stack([data[i][0] for i in range(len(data))])[:, :1]
    y = torch.as_tensor([int(data[i][1]) for i in range(len(data))])
    return x, y


def knn_accuracy(task: Task, ks: Sequence[int] = (1, 3, 5, 7)) -> tuple[float, int]:
    """Test accuracy (%) of k-NN on raw pixels, with ``k`` by cross-validation on the training set; ``(acc, k)``."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr = _grey(task.train)
    xte, yte = _grey(task.test)
    xtr, xte, ytr, yte = xtr.flatten(1).numpy(), xte.flatten(1).numpy(), ytr.numpy(), yte.numpy()
    folds = min(5, int(np.bincount(ytr).min()))
    if folds < 2:
        raise ValueError(f"knn_accuracy needs at least 2 training images per class, task {task.name!r} has fewer")
    scores = {k: cross_val_score(KNeighborsClassifier(k), xtr, ytr, cv=folds).mean() for k in ks}
    k = max(scores, key=lambda k: (scores[k], -k))
    return 100.0 * float(KNeighborsClassifier(k).fit(xtr, ytr).score(xte, yte)), int(k)


class SmallCNN(nn.Module):
    """conv-conv-pool twice (width 32, 64) with batch norm, then dropout-MLP: a strong small-image reference."""

    def __init__(self, classes: int, size: int = 16, width: int = 32, dropout: float = 0.3):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(*block(1, w), *block(w, w), nn.MaxPool2d(2), *block(w, 2 * w), *block(2 * w, 2 * w),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout),
                                 nn.Linear(2 * w * (size // 4) ** 2, 128), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def cnn_accuracy(task: Task, *, lr: float = 2e-3, seed: int = 0, min_steps: int = 1500, min_epochs: int = 40,
                 batch_size: int = 32) -> float:
    """Test accuracy (%) of :class:`SmallCNN` trained on ``task.train`` (random +-1 px shifts) to convergence."""
    xtr, ytr = _grey(task.train)
    xte, yte = _grey(task.test)
    size = xtr.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(task.num_classes, size=size)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
        per_epoch = math.ceil(len(ytr) / batch_size)
        epochs = max(min_epochs, math.ceil(min_steps / per_epoch))
        total, step = epochs * per_epoch, 0
        background = float(xtr.min())
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(ytr), generator=gen)
            for i in range(0, len(ytr), batch_size):
                idx = perm[i:i + batch_size]
                x = random_shift(xtr[idx], 1, gen, background)
                for g in opt.param_groups:
                    g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
                loss = nn.functional.cross_entropy(model(x), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        model.eval()
        with torch.no_grad():
            return 100.0 * float((model(xte).argmax(-1) == yte).float().mean())


def cnn_search(task: Task, grid: Sequence[float] = (1e-3, 3e-3), *, val_fraction: float = 0.2, seed: int = 0,
               **kwargs) -> tuple[float, dict[float, float]]:
    """The CNN's learning rate by validation accuracy on a stratified split of ``task.train``: ``(best, {lr: acc})``."""
    val = task.validation_split(val_fraction, seed=0)
    scores = {float(lr): cnn_accuracy(val, lr=float(lr), seed=seed, **kwargs) for lr in grid}
    return max(scores, key=lambda lr: (scores[lr], -lr)), scores
