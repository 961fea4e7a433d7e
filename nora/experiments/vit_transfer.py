"""Transfer experiments: fine-tune the pre-trained ViT on a task with one method, pick learning rates, compare.

The unit shared by the vision chapters (Table 1, Figure 2, the ablations)::

    result = fine_tune("nora", task, TrainConfig(epochs=8, batch_size=32, lr=3e-3), profile="book", seed=0)
    best_lr, trials = lr_search("nora", task, (1e-3, 3e-3, 1e-2), config, profile="book")
    mean, std = mean_std([r.accuracy for r in results])

``fine_tune`` = ``pretrained_vit(profile, task.num_classes, seed)`` (fresh seeded head), an optional
``prepare(model)`` step (e.g. swapping GELUs for rationals), ``nora.experiments.methods.build_method`` under
``torch.manual_seed(seed)`` (adapter initialisations draw from the global RNG, which is restored
afterwards), parameter counts, then :func:`nora.experiments.train.train`.

``lr_search`` gives every method the same budget: one seed, the same number of learning rates,
the same epochs, trained on the training set minus a stratified validation split and scored on
that split only (the test set is not looked at).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from nora.experiments.data.tasks import Task
from nora.experiments.train import TrainConfig, TrainResult, train

__all__ = ["PROFILES", "best_rate", "compare", "epochs_to_converge", "fine_tune", "fine_tune_many", "lr_search", "mean_std",
           "parameter_counts", "search_trial"]

# Learning-rate grid shared by the book and paper profiles (the same rates, searched on a different
# task and budget): five rates half a decade apart for every method.  Centred on the first (shapes
# backbone) edition's choices and the issue-16 pilot: full fine-tuning reaches two rates below its
# old best (the pilot's few-shot task preferred 3e-4 to 1e-3); NoRA's coefficient grid runs up to
# 1.0, where the rational activations stop being stable, with the head at the probe's chosen rate.
VIT_TRANSFER_LR_GRID = {"full": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3), "scratch": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
                        "probe": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                        "vpt": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "adapter": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
                        "nora": (1e-2, 3e-2, 1e-1, 3e-1, 1.0), "lora": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
                        "lora_all": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "qlora": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
                        "dora": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2), "nora++": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
                        "loran": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}

# The chapter's sizes per profile: nora.experiments.profiles.settings("04_vit_transfer", profile) merges
# PROFILES[profile] over the defaults.
# epochs / eval_every: per task role ("easy", "hard"): mnist10-20shot 30 epochs of 7 batches (210
# optimiser steps), mnist20 12 of 38 (456): long enough that full fine-tuning and the PEFT methods have
# converged with the shifts below (the chapter's learning curves and last-interval gains show it; the
# issue-16 pilot, full fine-tuning seed 0 with shifts: mnist20 87.4 % after 228 steps, 90.2 after 456;
# mnist10-20shot 91.7 after 210, 91.2 after 420); the paper: 50 epochs, batch 256, AdamW, cosine,
# wd 0.05, AMP (Appendix C); test accuracy after every n-th epoch (and the last);
# shift: every training batch moved by a random offset of up to this many pixels
# (nora.experiments.augment), the augmentation the small-CNN ceiling trains with, so that the ceiling
# gate compares like with like (the paper trains on CIFAR with its usual augmentation); the pilot
# without it: full fine-tuning 85.4 % on mnist10-20shot against 89.1 with it (same rate, steps, seed);
# train_per_class / test_per_class: cap per class (None = the whole task);
# lr_grid: the learning rates tried per method, on one seed, on a val_fraction split of the
# training set, with that task's epochs (the same number of rates and epochs for every method);
# search_task "each": every task searches on its own split (the pilot: full fine-tuning's best rate
# differs between the tasks, 3e-4 on the 20-shot task at 91.7 % against 89.1 at mnist20's 1e-3), a
# task name: that task's search decides for both; "scratch" is full fine-tuning from random weights
# (the no-pre-training reference), "probe" the head alone on the frozen backbone;
# far_backbone / far_methods: the far-transfer contrast (the 6-block shapes backbone), None: none;
# ceilings: measure the k-NN and small-CNN ceilings of both tasks (ceiling_lr_grid: the CNN's rates,
# ceiling_min_steps: its optimiser steps at least).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": {"easy": 1, "hard": 1}, "eval_every": {"easy": 1, "hard": 1}, "batch_size": 32, "amp": False,
              "shift": 1, "train_per_class": 4, "test_per_class": 4, "search_task": "each", "val_fraction": 0.25,
              "lr_grid": {"full": (3e-4, 1e-3), "scratch": (3e-4, 1e-3), "probe": (1e-2, 3e-2), "vpt": (3e-3, 1e-2),
                          "adapter": (1e-3, 3e-3), "lora": (3e-3, 1e-2), "lora_all": (3e-3, 1e-2),
                          "qlora": (3e-3, 1e-2), "dora": (3e-3, 1e-2), "nora": (1e-2, 3e-2), "nora++": (3e-3, 1e-2),
                          "loran": (3e-3, 1e-2)},
              "far_backbone": "shapes", "far_methods": ("probe", "full", "nora"), "ceilings": True,
              "ceiling_lr_grid": (1e-3, 3e-3), "ceiling_min_steps": 20},
    "book": {"epochs": {"easy": 30, "hard": 12}, "eval_every": {"easy": 10, "hard": 2}, "batch_size": 32, "amp": False,
             "shift": 1, "train_per_class": None, "test_per_class": None, "search_task": "each", "val_fraction": 0.2,
             "lr_grid": VIT_TRANSFER_LR_GRID, "far_backbone": "shapes",
             "far_methods": ("probe", "full", "lora", "nora", "nora++"), "ceilings": True,
             "ceiling_lr_grid": (1e-3, 3e-3), "ceiling_min_steps": 1500},
    "paper": {"epochs": {"easy": 50, "hard": 50}, "eval_every": {"easy": 1, "hard": 1}, "batch_size": 256, "amp": True,
              "shift": 0, "num_workers": 8, "train_per_class": None, "test_per_class": None, "search_task": "cifar100",
              "val_fraction": 0.1, "lr_grid": VIT_TRANSFER_LR_GRID, "far_backbone": None, "far_methods": (),
              "ceilings": False, "ceiling_lr_grid": (1e-3, 3e-3), "ceiling_min_steps": 1500},
}


def parameter_counts(model: nn.Module) -> dict[str, Any]:
    """Trainable parameters with and without the classification head, the head alone, the total, and %."""
    from nora.counting import count_parameters

    with_head = count_parameters(model)
    without_head = count_parameters(model, exclude=["head"])
    return {
        "trainable": with_head.trainable,
        "trainable_without_head": without_head.trainable,
        "head": with_head.trainable - without_head.trainable,
        "total": with_head.total,
        "percent": with_head.percent,
    }


def fine_tune(method: str, task: Task, config: TrainConfig, *, profile: str, seed: int = 0,
              overrides: dict[str, Any] | None = None, prepare: Callable[[nn.Module], nn.Module] | None = None,
              weights: bool = True, progress: bool = False, desc: str | None = None,
              return_model: bool = False) -> TrainResult | tuple[TrainResult, nn.Module]:
    """Fine-tune the profile's pre-trained ViT on ``task`` with ``method``; counts go in ``result.extra``.

    ``weights=False`` starts from the same architecture randomly initialised (a no-pre-training reference).
    ``return_model=True`` returns ``(result, model)``, the trained model too (a peft ``PeftModel`` for
    the peft methods), for analyses of the tuned network (``nora.experiments.analysis``).
    """
    from nora.experiments.backbone import pretrained_vit
    from nora.experiments.methods import build_method

    if not isinstance(task, Task):
        raise TypeError(f"task must be a nora.experiments.data.Task, got {type(task).__name__}")
    model = pretrained_vit(profile, task.num_classes, seed=seed, weights=weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if prepare is not None:
            model = prepare(model)
        model = build_method(method, model, **(overrides or {}))
    counts = parameter_counts(model)
    result = train(model, task.train, task.test, config, seed=seed, progress=progress,
                   desc=desc or f"{method} {task.name} seed {seed}")
    result.extra.update(method=method, task=task.name, seed=seed, device=str(config.device), **counts)
    return (result, model) if return_model else result


def lr_search(method: str, task: Task, grid: Sequence[float], config: TrainConfig, *, profile: str, seed: int = 0,
              val_fraction: float = 0.2, overrides: dict[str, Any] | None = None,
              prepare: Callable[[nn.Module], nn.Module] | None = None, weights: bool = True,
              progress: bool = False, workers: int = 1) -> tuple[float, list[dict[str, Any]]]:
    """Train once per learning rate in ``grid`` on ``task``'s train minus a validation split; best by validation accuracy.

    Returns ``(best_lr, trials)``; a run whose loss stops being finite scores NaN and is never
    chosen.  Ties go to the smaller learning rate.  ``workers > 1`` trains the rates side by side
    (``nora.experiments.parallel``: one thread each, the same numbers; ``prepare`` must then be picklable).
    """
    from nora.experiments.parallel import run_parallel

    grid = [float(lr) for lr in grid]
    if not grid or any(not math.isfinite(lr) or lr <= 0 for lr in grid):
        raise ValueError(f"grid must be a non-empty list of positive learning rates, got {grid!r}")
    val_task = task.validation_split(val_fraction, seed=0)
    jobs = [dict(method=method, task=val_task, config=config.replace(lr=lr), profile=profile, seed=seed,
                 overrides=overrides, prepare=prepare, weights=weights, progress=progress,
                 desc=f"lr search {method} {lr:g}") for lr in sorted(grid)]
    trials = run_parallel(search_trial, jobs, workers=workers, desc=f"lr search {method}")
    return best_rate(trials), trials


def best_rate(trials: Sequence[dict[str, Any]]) -> float:
    """The search's rule: the rate with the best finite validation accuracy, ties to the smaller rate."""
    finite = [t for t in trials if math.isfinite(t["val_accuracy"])]
    if not finite:
        method = trials[0]["method"] if trials else "?"
        raise FloatingPointError(f"lr_search({method!r}): every learning rate in "
                                 f"{[t['lr'] for t in trials]} diverged")
    return max(finite, key=lambda t: (t["val_accuracy"], -t["lr"]))["lr"]


def search_trial(*, method: str, config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """One learning rate of a search: ``fine_tune`` scored on the validation split; NaN if the loss diverged."""
    try:
        r = fine_tune(method, config=config, **kwargs)
    except FloatingPointError:
        return {"method": method, "lr": config.lr, "head_lr": config.head_lr, "val_accuracy": float("nan"),
                "val_curve": [], "train_seconds": float("nan"), "diverged": True}
    return {"method": method, "lr": config.lr, "head_lr": config.head_lr, "val_accuracy": r.accuracy,
            "val_curve": r.test_curve, "train_seconds": r.train_seconds, "diverged": False}


def fine_tune_many(jobs: Iterable[dict[str, Any]], *, workers: int | None = None, desc: str = "fine-tuning runs"
                   ) -> list[TrainResult]:
    """``[fine_tune(**job) for job in jobs]``, side by side on one thread each (``nora.experiments.parallel``)."""
    from nora.experiments.parallel import run_parallel

    return run_parallel(fine_tune, jobs, workers=workers, desc=desc)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of finite values."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"mean_std needs a non-empty list of finite numbers, got {arr.tolist()}")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def compare(a: Iterable[float], b: Iterable[float], *, z: float = 2.0) -> dict[str, Any]:
    """Is ``a`` above, level with, or below ``b``?  Difference of means against ``z`` standard errors.

    ``se = sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (sample standard deviations over seeds).  Verdict
    "higher" if diff > z * se, "lower" if diff < -z * se, else "within noise".  With three seeds
    this is a coarse screen, not a test at a stated error rate.
    """
    a, b = list(a), list(b)
    ma, sa = mean_std(a)
    mb, sb = mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    diff = ma - mb
    if se == 0:
        verdict = "higher" if diff > 0 else "lower" if diff < 0 else "within noise"
    else:
        verdict = "higher" if diff > z * se else "lower" if diff < -z * se else "within noise"
    return {"diff": diff, "se": se, "verdict": verdict}


def epochs_to_converge(curve: Sequence[float], tol: float = 1.0) -> int:
    """The first epoch (1-based) from which the curve stays within ``tol`` of its last value."""
    values = [float(v) for v in curve]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"curve must be a non-empty list of finite numbers, got {curve!r}")
    final = values[-1]
    epoch = len(values)
    for k in range(len(values) - 1, -1, -1):
        if abs(values[k] - final) > tol:
            break
        epoch = k + 1
    return epoch
