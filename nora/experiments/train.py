"""One small, seeded training loop for the vision notebooks: AdamW, cosine schedule, per-epoch curves.

    result = train(model, train_set, test_set, TrainConfig(epochs=8, batch_size=32, lr=1e-3), seed=0)
    result.accuracy, result.test_curve, result.train_curve, result.train_seconds

Only parameters with ``requires_grad`` are optimised (the methods in ``nora.experiments.methods`` decide which
ones), all with the same learning rate and decoupled weight decay (AdamW), except that
``head_lr`` (when set) gives the classification head (parameters under a module named ``head``) a
rate of its own, on the same schedule: NoRA's coefficients and its head want different rates.  The learning rate
follows a linear warm-up (``warmup_epochs``, may be fractional; 0 = none) and then a cosine decay
to ``min_lr`` over all steps, updated every step.  The train curve is the running accuracy over
each epoch's batches (model in train mode, as the batches go by: no extra pass); the test curve is
a full evaluation after every ``eval_every`` epochs (and always after the last).  ``shift`` > 0
moves each training batch by a random offset of up to that many pixels (``nora.experiments.augment``).  ``amp=True``
uses autocast (bf16 on CPU and on GPUs that support it, else fp16 with a gradient scaler).

A run is determined by the model's initial state, the data, the config and ``seed`` (which seeds
the batch order) up to floating-point rounding: CPU kernels sum in an order that depends on the
thread count and on memory alignment, so reruns agree to the last few bits, not bit for bit
(measured on a 6-step pre-training: with two threads 2 distinct results in 5 runs; with one thread
identical in fresh processes, but not always within one process).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nora.experiments.augment import random_shift

__all__ = ["THREADS_ENV", "TrainConfig", "TrainResult", "configure_threads", "evaluate", "train"]

THREADS_ENV = "NORA_THREADS"


@dataclass
class TrainConfig:
    """Optimisation settings of one run (the paper's Appendix C: AdamW, cosine, weight decay 0.05)."""

    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    amp: bool = False
    device: str = "cpu"
    eval_every: int = 1
    eval_batch_size: int = 512
    num_workers: int = 0
    grad_clip: float | None = None
    head_lr: float | None = None
    shift: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {self.num_workers!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must not exceed epochs ({self.epochs})")
        if self.grad_clip is not None and (not isinstance(self.grad_clip, (int, float)) or self.grad_clip <= 0):
            raise ValueError(f"grad_clip must be None or a positive number, got {self.grad_clip!r}")
        if self.head_lr is not None and (not isinstance(self.head_lr, (int, float)) or isinstance(self.head_lr, bool)
                                         or not math.isfinite(self.head_lr) or self.head_lr <= 0):
            raise ValueError(f"head_lr must be None or a finite number > 0, got {self.head_lr!r}")
        if not isinstance(self.shift, int) or isinstance(self.shift, bool) or self.shift < 0:
            raise ValueError(f"shift must be an int >= 0 (pixels), got {self.shift!r}")
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be a bool, got {self.amp!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a device string like 'cpu' or 'cuda', got {self.device!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated)."""
        return TrainConfig(**{**asdict(self), **changes})


@dataclass
class TrainResult:
    """What one run produced: final test accuracy (%), per-epoch curves, wall and CPU time."""

    accuracy: float
    train_curve: list[float] = field(default_factory=list)
    test_curve: list[float | None] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    cpu_seconds: float = 0.0
    steps: int = 0
    images_seen: int = 0
    lr: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else $NORA_THREADS, else 2 (the book's 2-core machine).

    On a machine whose cores are shared with other jobs one thread is often faster in wall time
    than two (the threads wait on each other), and it varies less between reruns (see the module
    docstring).  The book profile's committed notebooks were run with NORA_THREADS=1.
    """
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "2")
        try:
            threads = int(raw)
        except ValueError:
            raise ValueError(f"${THREADS_ENV} must be a positive int, got {raw!r}") from None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)
    return threads


def _autocast(config: TrainConfig):
    device_type = torch.device(config.device).type
    if not config.amp:
        return torch.autocast(device_type, enabled=False), None
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")
    return torch.autocast(device_type, dtype=torch.bfloat16), None


def _lr_at(step: int, total: int, warmup: int, config: TrainConfig) -> float:
    if warmup and step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(named: list[tuple[str, nn.Parameter]], config: TrainConfig) -> list[dict[str, Any]]:
    """One group at ``lr``, or two when ``head_lr`` is set: the head's parameters at ``head_lr``, the rest at ``lr``."""
    if config.head_lr is None:
        return [{"params": [p for _, p in named], "peak_lr": config.lr}]
    head = [p for n, p in named if "head" in n.split(".")]
    rest = [p for n, p in named if "head" not in n.split(".")]
    if not head:
        raise ValueError("head_lr is set but the model has no trainable parameter under a module named 'head'")
    groups = [{"params": head, "lr": config.head_lr, "peak_lr": config.head_lr}]
    return groups + ([{"params": rest, "peak_lr": config.lr}] if rest else [])


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset | DataLoader, config: TrainConfig | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` on ``data`` (a Dataset of (image, label) or a DataLoader)."""
    config = config or TrainConfig()
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=config.eval_batch_size, shuffle=False, num_workers=config.num_workers)
    was_training = model.training
    model.eval()
    ctx, _ = _autocast(config)
    correct = total = 0
    try:
        for images, labels in loader:
            images, labels = images.to(config.device), labels.to(config.device)
            with ctx:
                logits = model(images)
            correct += int((logits.argmax(-1) == labels).sum())
            total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate: the data set is empty")
    return 100.0 * correct / total


def train(model: nn.Module, train_data: Dataset, test_data: Dataset | None, config: TrainConfig, *,
          seed: int = 0, progress: bool = False, desc: str = "train") -> TrainResult:
    """Train the ``requires_grad`` parameters of ``model`` on ``train_data``; evaluate on ``test_data``.

    ``seed`` fixes the batch order.  Returns a :class:`TrainResult`; the model is trained in place.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad is False everywhere)")
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    shifts = torch.Generator().manual_seed(seed)  # its own stream: shift=0 leaves the batch order as it was
    loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, generator=gen,
                        num_workers=config.num_workers, drop_last=False)
    model.to(config.device)
    optimizer = torch.optim.AdamW(_param_groups(named, config), lr=config.lr, weight_decay=config.weight_decay)
    ctx, scaler = _autocast(config)
    total_steps = config.epochs * len(loader)
    warmup = int(round(config.warmup_epochs * len(loader)))
    result = TrainResult(accuracy=float("nan"), lr=config.lr)
    step = 0
    cpu0 = time.process_time()
    # progress=False: no bar; progress=True: tqdm decides, so $TQDM_DISABLE=1 (the book runner sets it for
    # its kernels: stored outputs carry no bar text) still turns it off.
    bar = tqdm(range(config.epochs), desc=desc, leave=False, **({} if progress else {"disable": True}))
    for epoch in bar:
        model.train()
        t0 = time.perf_counter()
        correct = seen = 0
        loss_sum = 0.0
        for images, labels in loader:
            images = random_shift(images, config.shift, shifts)
            images, labels = images.to(config.device), labels.to(config.device)
            rate = _lr_at(step, total_steps, warmup, config)
            for group in optimizer.param_groups:  # the head's group (head_lr) on the same schedule, scaled
                group["lr"] = rate if group["peak_lr"] == config.lr else group["peak_lr"] * rate / config.lr
            with ctx:
                logits = model(images)
                loss = nn.functional.cross_entropy(logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch}, step {step} "
                                         f"(lr {optimizer.param_groups[0]['lr']:.2e})")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            step += 1
            n = labels.numel()
            seen += n
            correct += int((logits.detach().argmax(-1) == labels).sum())
            loss_sum += float(loss.detach()) * n
        result.train_seconds += time.perf_counter() - t0
        result.train_curve.append(100.0 * correct / seen)
        result.loss_curve.append(loss_sum / seen)
        result.images_seen += seen
        last = epoch == config.epochs - 1
        if test_data is not None and (last or (epoch + 1) % config.eval_every == 0):
            t1 = time.perf_counter()
            acc = evaluate(model, test_data, config)
            result.eval_seconds += time.perf_counter() - t1
            result.test_curve.append(acc)
        else:
            result.test_curve.append(None)
        bar.set_postfix(train=f"{result.train_curve[-1]:.1f}", test=f"{result.test_curve[-1] or float('nan'):.1f}")
    bar.close()
    result.steps = step
    result.cpu_seconds = time.process_time() - cpu0
    result.accuracy = result.test_curve[-1] if result.test_curve and result.test_curve[-1] is not None else float("nan")
    return result
