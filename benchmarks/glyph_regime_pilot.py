"""Pilot of issue 16's regime gates on a backbone (one seed; not a benchmark, not part of the tests).

    NORA_THREADS=1 python benchmarks/glyph_regime_pilot.py --backbone glyphs --out pilot.json

For each task (digits10, mnist20, and the harder candidate digits10 with few images per class):

- head-only probe: a new head trained on the frozen backbone's features (class token after the
  final norm, computed once), AdamW + cosine, batch 32, for the fine-tuning budget and to
  convergence (200 epochs), best of two learning rates on the test set (an optimistic probe);
- full fine-tuning, LoRA (nora.experiments.methods' default: rank 8 on q, v) and training from scratch (the
  same ViT randomly initialised), via nora.experiments.vit_transfer.fine_tune with chapter 04's book settings
  (batch 32, AdamW, cosine, wd 0.05, its learning rates: full 1e-3, LoRA 3e-3, scratch 3e-4; full
  also at 3e-4), for a budget of ``--steps`` optimiser steps (epochs = steps / batches per epoch);
- the reference ceiling: the best of k-NN on raw pixels (k by 5-fold cross-validation on the
  training set) and a small CNN (4 conv layers with batch norm, dropout, +-1 px shifts) trained to
  convergence (at least 1,500 steps).

and checks the gates: full FT >= scratch + 10; probe >= full FT - 10; LoRA >= full FT - 3 (easy
task); 70 <= full FT <= 95; full FT >= ceiling - 5.

Measured (issue 16, phase 1; the shipped ``glyphs`` backbone, seed 0, one thread, 190 optimiser
steps: 5 epochs of mnist20, 6 of digits10, 27 of the 200-image tasks; test accuracy %)::

    task             probe  probe(conv.)  full 1e-3  full 3e-4  LoRA  scratch  k-NN  CNN
    digits10          96.6      97.1        98.9       98.6     98.5   59.5    98.9  99.6
    mnist20           82.1      82.6        88.2       86.3     86.7   37.1    83.2  92.8
    digits10-20shot   93.8      94.1        95.1       95.6     94.8   61.6    95.4  98.9
    mnist10-20shot    90.2      90.1        86.2       90.5     91.0   48.0    79.8  94.5
"""

from __future__ import annotations

import argparse
import json
import math
import time

import nora  # noqa: F401  (before timm)
import numpy as np
import torch
from torch import nn


def features(model, data, batch=256):
    model.eval()
    xs, ys = [], []
    with torch.no_grad():
        for i in range(0, len(data), batch):
            x, y = zip(*[data[j] for j in range(i, min(len(data), i + batch))])
            f = model.forward_head(model.forward_features(torch.stack(x)), pre_logits=True)
            xs.append(f)
            ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys)


def train_head(ftr, ytr, fte, yte, classes, epochs, lr, seed=0, batch=32):
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(ftr.shape[1], classes)
    with torch.no_grad():
        nn.init.trunc_normal_(head.weight, std=0.02, generator=gen)
        nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.05)
    steps_per = math.ceil(len(ytr) / batch)
    total, step = epochs * steps_per, 0
    for _ in range(epochs):
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), batch):
            idx = perm[i:i + batch]
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(head(ftr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        return 100.0 * float((head(fte).argmax(-1) == yte).float().mean())


def grey(data):
    x = torch.stack([data[i][0] for i in range(len(data))])[:, 0]  # normalised grey, (n, 16, 16)
    y = torch.as_tensor([int(data[i][1]) for i in range(len(data))])
    return x, y


def knn_ceiling(task):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr = grey(task.train)
    xte, yte = grey(task.test)
    xtr, xte = xtr.flatten(1).numpy(), xte.flatten(1).numpy()
    folds = min(5, int(np.bincount(ytr.numpy()).min()))
    scores = {k: cross_val_score(KNeighborsClassifier(k), xtr, ytr.numpy(), cv=folds).mean() for k in (1, 3, 5, 7)}
    k = max(scores, key=lambda k: (scores[k], -k))
    acc = 100.0 * KNeighborsClassifier(k).fit(xtr, ytr.numpy()).score(xte, yte.numpy())
    return acc, k


class SmallCNN(nn.Module):
    def __init__(self, classes, width=32, dropout=0.3):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w),
            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * w * 16, 128), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(128, classes))

    def forward(self, x):
        return self.net(x)


def cnn_ceiling(task, epochs, shift, seed=0, lr=2e-3, batch=32):
    torch.manual_seed(seed)
    xtr, ytr = grey(task.train)
    xte, yte = grey(task.test)
    xtr, xte = xtr[:, None], xte[:, None]
    model = SmallCNN(task.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    steps_per = math.ceil(len(ytr) / batch)
    total, step = epochs * steps_per, 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=gen)
        for i in range(0, len(ytr), batch):
            idx = perm[i:i + batch]
            x = xtr[idx]
            if shift:
                pad = nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
                dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
                x = pad[:, :, dy:dy + 16, dx:dx + 16]
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


def main() -> None:
    from nora.experiments.backbone import pretrained_vit
    from nora.experiments.data.digits import digits10, digits10_few, mnist10_few, mnist20
    from nora.experiments.train import TrainConfig, configure_threads
    from nora.experiments.vit_transfer import fine_tune

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="glyphs")
    ap.add_argument("--steps", type=int, default=190, help="optimiser steps per fine-tuning run (6 epochs of digits10)")
    ap.add_argument("--few", type=int, default=20, help="training images per class of the harder candidate")
    ap.add_argument("--tasks", nargs="+", default=["digits10", "mnist20", "few"])
    ap.add_argument("--methods", nargs="+", default=["probe", "full", "full@3e-4", "lora", "scratch", "knn", "cnn"])
    ap.add_argument("--out", default="pilot.json")
    args = ap.parse_args()
    configure_threads()
    tasks = {"digits10": digits10, "mnist20": mnist20, "few": lambda: digits10_few(per_class=args.few),
             "mnist10": lambda: mnist10_few(per_class=args.few)}
    results = {}
    for tname in args.tasks:
        task = tasks[tname]()
        res = results.setdefault(task.name, {})
        epochs = max(1, round(args.steps / math.ceil(len(task.train) / 32)))
        res["epochs"] = epochs
        print(task, "epochs", epochs, flush=True)
        cpu = time.process_time()
        if "probe" in args.methods:
            model = pretrained_vit(args.backbone, task.num_classes, seed=0)
            ftr, ytr = features(model, task.train)
            fte, yte = features(model, task.test)
            res["probe"] = max(train_head(ftr, ytr, fte, yte, task.num_classes, epochs, lr) for lr in (1e-3, 1e-2))
            res["probe_converged"] = max(train_head(ftr, ytr, fte, yte, task.num_classes, 200, lr)
                                         for lr in (1e-3, 1e-2))
            print(tname, "probe", res["probe"], res["probe_converged"], flush=True)
        for m in args.methods:
            if m in ("probe", "knn", "cnn"):
                continue
            method, _, lr = m.partition("@")
            lr = float(lr) if lr else {"full": 1e-3, "lora": 3e-3, "scratch": 3e-4}[method]
            cfg = TrainConfig(epochs=epochs, batch_size=32, lr=lr, eval_every=epochs)
            r = fine_tune("full" if method == "scratch" else method, task, cfg, profile=args.backbone, seed=0,
                          weights=method != "scratch")
            res[m] = r.accuracy
            res[m + "_cpu_s"] = round(r.cpu_seconds, 1)
            print(tname, m, r.accuracy, f"{r.cpu_seconds:.0f} cpu-s", flush=True)
        if "knn" in args.methods:
            res["knn"], res["knn_k"] = knn_ceiling(task)
            print(tname, "knn", res["knn"], flush=True)
        if "cnn" in args.methods:
            cnn_epochs = max(40, round(1500 / math.ceil(len(task.train) / 32)))  # >= 1,500 steps: converged
            res["cnn"] = cnn_ceiling(task, cnn_epochs, shift=True)
            res["cnn_epochs"] = cnn_epochs
            print(tname, "cnn", res["cnn"], flush=True)
        res["cpu_s_total"] = round(time.process_time() - cpu, 1)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
