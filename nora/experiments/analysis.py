"""Analyses of a fine-tuned ViT: the NoRA paper's Appendix D.2 (Figure 4) and D.4 (Figures 6 and 7).

The paper shows these as pictures without a definition or a number; this module makes each one a
measurement that can be averaged over seeds:

- **Adaptability score** (Figure 4: "if the activation distribution of the same batch of samples
  significantly changes across layers, it indicates that the method provides the activation
  function with greater plasticity ... We typically use distribution distance as the core metric,
  normalizing it to the interval [0, 1]").  :func:`activation_values` collects, for every block's
  MLP activation, the values going in (pre-activation) and coming out (post-activation) on a fixed
  probe batch; :func:`distribution_shift` gives the 1-D Wasserstein-1 distance between a model's
  values and the pre-trained model's, divided by the pre-trained values' standard deviation
  (``w1_rel``: scale-free), and the Kolmogorov-Smirnov statistic (``ks``: bounded in [0, 1] by
  construction); :func:`normalise_unit` maps a set of scores to [0, 1] by dividing by their maximum.
- **Features and cluster quality** (Figure 6, t-SNE): :func:`pre_logits` reads the input of the
  classification head (the class token after the final norm, for timm ViTs) through a hook, so it
  works on peft-wrapped models too; :func:`cluster_quality` gives the silhouette score and a kNN
  accuracy; :func:`tsne_embedding` wraps scikit-learn's t-SNE.
- **Grad-CAM** (Figure 7): :func:`grad_cam` uses the maintained ``pytorch-grad-cam`` library
  (pip ``grad-cam``) on the last block's first LayerNorm with :func:`vit_reshape_transform` (the
  patch tokens as a 2-D grid); :func:`ink_share` measures how much of a CAM's mass lies on the
  digit's ink (:func:`ink_mask`) or, where there is no object mask, on the image centre (:func:`centre_mask`).
- **Learned activation shapes**: :func:`rational_curves` evaluates each group's rational of a NoRA
  layer before (base) and after (base + deltas) tuning.
- :func:`linear_probe`: the "before fine-tuning" reference with a head for the task: the frozen
  pre-trained backbone and a new head trained on its features (``fine_tune("probe", ...)`` is the same run).
- :func:`fine_tune_and_measure`: one run of the chapter, fine-tuning then all four measurements, returning
  small rows only, so that the runs can go side by side (``nora.experiments.parallel``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = [
    "PROFILES",
    "ACT_PATTERN",
    "activation_values",
    "centre_mask",
    "cluster_quality",
    "distribution_shift",
    "fine_tune_and_measure",
    "grad_cam",
    "ink_mask",
    "ink_share",
    "ks_statistic",
    "linear_probe",
    "normalise_unit",
    "nora_layers",
    "pre_logits",
    "rational_curves",
    "tsne_embedding",
    "vit_reshape_transform",
    "wasserstein_1d",
]

# The chapter's sizes per profile: nora.experiments.profiles.settings("09_analysis", profile) merges
# PROFILES[profile] over the defaults.
# task: the hard task (CIFAR-100's role), where every model is fine-tuned and analysed;
# methods: fine-tuned there, each at the rate its own equal-budget search picks (lr_grid: rates
# tried on one seed on a val_fraction split of the training set, the full schedule; "probe" = the
# linear probe, frozen pre-trained backbone + trained head: the "before fine-tuning" model of
# Grad-CAM).  As in chapter 04, NoRA has two rates: its head trains at the probe's chosen rate
# (TrainConfig.head_lr) and its grid is the coefficients' rate.
# book: the 12-block glyph backbone (backbone_spec("book")); epochs 12 = 456 optimiser steps on
# mnist20's 1,200 training images with ±1 px shifts (shift: chapter 04's hard-task schedule since
# 2026-12-04).  Each grid is three rates half a decade apart centred on the rate chapter 04's
# five-rate search chose on mnist20 with this backbone and schedule
# (results/book/04_vit_transfer.json: lr_probe 1e-3, lr_full 3e-4, lr_lora 3e-3, lr_dora 3e-3,
# lr_nora 3e-2 with lr_nora_head 1e-3, lr_noraplus 1e-3), so that every grid reaches one step past
# that choice on both sides.  The search's seed, split (seed 0, 20 %) and schedule are chapter
# 04's, so a trial repeats chapter 04's where both ran on this CPU (LoRA, DoRA, NoRA++); chapter
# 04's probe and full fine-tuning trials came from the lent GPU, whose last-bit differences moved
# those two choices (and so NoRA's head) one step, as the chapter says.
# Book run (2026-12-04, one torch thread per run, two at a time): 18 search runs of 360 steps and
# 18 runs of 456 steps with their measurements (activations on the probe batch, features of 1,000
# test + 1,200 training images, t-SNEs, Grad-CAM on 200 images): 64.3 CPU-min, 46.7 min wall.
# epochs / batch_size: every run; probe_per_class: test images per class whose activations are
# compared (one fixed batch for every model); max_values: activation values kept per layer (a
# seeded subset of positions, the same for every model); tsne_methods / tsne_classes /
# perplexity: t-SNE of the test features (classes shown, evenly spread over the label list);
# analysis_per_class: test images per class for features, t-SNE and Grad-CAM (None = all);
# knn: neighbours of the kNN accuracy; cam_images / cam_show: test images scored / drawn by
# Grad-CAM; cam_region: "ink" (digit pixels >= ink_threshold x the image's max) or "centre"
# (the central square of a quarter of the area: CIFAR has no object masks).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"task": "mnist20", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 1, "shift": 1,
              "batch_size": 32, "amp": False, "train_per_class": 4, "test_per_class": 4, "val_fraction": 0.25,
              "lr_grid": {"probe": (1e-2,), "full": (1e-3,), "lora": (3e-3,), "dora": (3e-3,),
                          "nora": (1e-2, 3e-2), "nora++": (3e-3,)},
              "probe_per_class": 2, "max_values": 20_000, "tsne_methods": ("probe", "nora", "full"),
              "tsne_classes": 20, "perplexity": 10.0, "analysis_per_class": None, "knn": 3,
              "cam_images": 16, "cam_show": 4, "cam_region": "ink", "ink_threshold": 0.5},
    "book": {"task": "mnist20", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 12, "shift": 1,
             "batch_size": 32, "amp": False, "train_per_class": None, "test_per_class": None, "val_fraction": 0.2,
             "lr_grid": {"probe": (3e-4, 1e-3, 3e-3), "full": (1e-4, 3e-4, 1e-3), "lora": (1e-3, 3e-3, 1e-2),
                         "dora": (1e-3, 3e-3, 1e-2), "nora": (1e-2, 3e-2, 1e-1), "nora++": (3e-4, 1e-3, 3e-3)},
             "probe_per_class": 6, "max_values": 200_000, "tsne_methods": ("probe", "nora", "full"),
             "tsne_classes": 20, "perplexity": 30.0, "analysis_per_class": None, "knn": 10,
             "cam_images": 200, "cam_show": 6, "cam_region": "ink", "ink_threshold": 0.5},
    "paper": {"task": "cifar100", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 50, "shift": 0,
              "batch_size": 256, "amp": True, "num_workers": 8, "train_per_class": None, "test_per_class": None,
              "val_fraction": 0.1,
              "lr_grid": {"probe": (1e-3, 3e-3, 1e-2), "full": (1e-4, 3e-4, 1e-3), "lora": (3e-4, 1e-3, 3e-3),
                          "dora": (3e-4, 1e-3, 3e-3), "nora": (3e-3, 1e-2, 3e-2), "nora++": (3e-4, 1e-3, 3e-3)},
              "probe_per_class": 1, "max_values": 1_000_000, "tsne_methods": ("probe", "nora", "full"),
              "tsne_classes": 10, "perplexity": 30.0, "analysis_per_class": 20, "knn": 10,
              "cam_images": 500, "cam_show": 6, "cam_region": "centre", "ink_threshold": 0.5},
}

# A timm ViT block's MLP activation: ``blocks.3.mlp.act``; under a bottleneck adapter the wrapped
# MLP's own activation is ``blocks.3.mlp.inner.act`` (the adapter's ``blocks.3.mlp.adapter.act`` is
# not a layer of the pre-trained model and is not matched); peft prefixes ("base_model.model.") are allowed.
ACT_PATTERN = r"(?:^|\.)blocks\.(\d+)\.mlp\.(?:inner\.)?act$"


def _images(data: Dataset | torch.Tensor, field: str) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        images = data
    elif isinstance(data, TensorDataset):
        images = data.tensors[0]
    elif isinstance(data, Dataset):
        images = torch.stack([data[i][0] for i in range(len(data))])  # type: ignore[arg-type]
    else:
        raise TypeError(f"{field} must be a tensor of images or a Dataset, got {type(data).__name__}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"{field} must be a non-empty (N, C, H, W) batch of images, got shape {tuple(images.shape)}")
    return images


@torch.no_grad()
def activation_values(model: nn.Module, images: Dataset | torch.Tensor, *, pattern: str = ACT_PATTERN,
                      batch_size: int = 128, max_values: int | None = None, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    """Every block's MLP-activation inputs and outputs on ``images``: ``{block: {"input": 1-D, "output": 1-D}}``.

    Values are pooled over images, tokens and channels (float32, CPU).  ``max_values`` keeps a
    seeded random subset of that many *positions* (image, token, channel) per layer -- the same
    positions for every model given the same probe, so two models' values stay paired.  The model
    is run in eval mode and left in the mode it was in.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if max_values is not None and (not isinstance(max_values, int) or max_values < 1):
        raise ValueError(f"max_values must be None or a positive int, got {max_values!r}")
    images = _images(images, "images")
    regex = re.compile(pattern)
    layers: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        m = regex.search(name)
        if m:
            block = int(m.group(1))
            if block in layers:
                raise ValueError(f"pattern={pattern!r} matches more than one module in block {block}")
            layers[block] = module
    if not layers:
        raise ValueError(f"pattern={pattern!r} matches no module of {type(model).__name__}")
    store: dict[int, dict[str, list[torch.Tensor]]] = {b: {"input": [], "output": []} for b in layers}

    def hook(block: int, _module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        store[block]["input"].append(args[0].detach().float().cpu().reshape(-1))
        store[block]["output"].append(output.detach().float().cpu().reshape(-1))

    handles = [module.register_forward_hook(partial(hook, block)) for block, module in layers.items()]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out: dict[int, dict[str, torch.Tensor]] = {}
    for block in sorted(store):
        out[block] = {}
        for where, parts in store[block].items():
            values = torch.cat(parts)
            if max_values is not None and values.numel() > max_values:
                gen = torch.Generator().manual_seed(seed)
                values = values[torch.randperm(values.numel(), generator=gen)[:max_values]]
            out[block][where] = values
    return out


def _sample(x: torch.Tensor | np.ndarray, field: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().reshape(-1).double()
    if t.numel() == 0:
        raise ValueError(f"{field} must be a non-empty sample")
    if not torch.isfinite(t).all():
        raise ValueError(f"{field} contains non-finite values")
    return t


def wasserstein_1d(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Wasserstein-1 distance between the empirical distributions of two 1-D samples.

    W1 = integral of |F_x^-1(u) - F_y^-1(u)| du; for equal sizes this is the mean absolute difference
    of the sorted samples (exact); otherwise scipy's ``wasserstein_distance``.
    """
    xs, ys = _sample(x, "x"), _sample(y, "y")
    if xs.numel() == ys.numel():
        return float((xs.sort().values - ys.sort().values).abs().mean())
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(xs.numpy(), ys.numpy()))


def ks_statistic(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup_t |F_x(t) - F_y(t)|, in [0, 1] (scipy's ``ks_2samp`` statistic)."""
    xs, ys = _sample(x, "x").sort().values, _sample(y, "y").sort().values
    points = torch.cat([xs, ys])
    fx = torch.searchsorted(xs, points, right=True).double() / xs.numel()
    fy = torch.searchsorted(ys, points, right=True).double() / ys.numel()
    return float((fx - fy).abs().max())


def distribution_shift(reference: torch.Tensor | np.ndarray, values: torch.Tensor | np.ndarray) -> dict[str, float]:
    """How far ``values`` moved from ``reference``: W1, W1 / std(reference) and the KS statistic.

    ``w1_rel`` is the Wasserstein-1 distance in units of the reference's standard deviation, so
    layers whose values live on different scales can be compared (and a pure shift by c
    reference-standard-deviations scores c).
    """
    ref, val = _sample(reference, "reference"), _sample(values, "values")
    std = float(ref.std()) if ref.numel() > 1 else 0.0
    if not std > 0:
        raise ValueError("reference must have a positive standard deviation")
    w1 = wasserstein_1d(ref, val)
    return {"w1": w1, "w1_rel": w1 / std, "ks": ks_statistic(ref, val)}


def normalise_unit(scores: np.ndarray | Sequence[float], scale: float | None = None) -> np.ndarray:
    """Scores divided by ``scale`` (default: their maximum), so that they lie in [0, 1].

    The adaptability score of Figure 4 is ``w1_rel`` normalised this way over every layer, method and
    seed of one experiment: 1 is the largest change seen there, 0 no change.  It is a relative scale,
    so the raw ``w1_rel`` values are what compares across experiments.
    """
    arr = np.asarray(scores, dtype=float)
    if arr.size == 0 or not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"scores must be non-empty, finite and >= 0, got {arr.ravel()[:8].tolist()}")
    top = float(arr.max()) if scale is None else float(scale)
    if not top > 0 or not math.isfinite(top):
        raise ValueError(f"scale must be a positive finite number (or scores not all zero), got {top!r}")
    if scale is not None and float(arr.max()) > top * (1 + 1e-12):
        raise ValueError(f"scale={scale!r} is below the largest score {float(arr.max())!r}")
    return arr / top


@torch.no_grad()
def pre_logits(model: nn.Module, data: Dataset | torch.Tensor, *, batch_size: int = 256,
               head_pattern: str = r"(?:^|\.)head$") -> tuple[np.ndarray, np.ndarray | None]:
    """The classification head's input for every example: ``(features (N, D), labels (N,) or None)``.

    For a timm ViT that is the class token after the final norm (``forward_head(pre_logits=True)``).
    A forward pre-hook on the module named ``head`` reads it, so peft-wrapped models work unchanged.
    """
    regex = re.compile(head_pattern)
    heads = [m for n, m in model.named_modules() if regex.search(n)]
    if len(heads) != 1:
        raise ValueError(f"head_pattern={head_pattern!r} must match exactly one module, matched {len(heads)}")
    labels = None
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(data, torch.Tensor):
        if data.dim() != 4 or data.shape[0] == 0:
            raise ValueError(f"data must be a non-empty (N, C, H, W) batch, got shape {tuple(data.shape)}")
        loader: Any = [(data[i:i + batch_size], None) for i in range(0, data.shape[0], batch_size)]
    elif isinstance(data, Dataset):
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError("data is empty")
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    else:
        raise TypeError(f"data must be a tensor of images or a Dataset, got {type(data).__name__}")
    captured: list[torch.Tensor] = []
    handle = heads[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().float().cpu()))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ys = []
    try:
        for images, y in loader:
            model(images.to(device))
            if y is not None:
                ys.append(torch.as_tensor(y))
    finally:
        handle.remove()
        model.train(was_training)
    feats = torch.cat(captured).numpy()
    if ys:
        labels = torch.cat(ys).numpy()
    return feats, labels


def cluster_quality(features: np.ndarray, labels: np.ndarray, *, train_features: np.ndarray | None = None,
                    train_labels: np.ndarray | None = None, k: int = 5, metric: str = "euclidean") -> dict[str, float]:
    """Silhouette score of ``features`` grouped by ``labels`` ([-1, 1]; higher = tighter, better separated
    classes) and, if a training set is given, the accuracy (%) of a k-nearest-neighbour classifier
    fitted on it and scored on ``features``."""
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    X, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, D) with N = len(labels); got {X.shape} and {y.shape}")
    if not 2 <= np.unique(y).size < X.shape[0]:
        raise ValueError(f"labels must have between 2 and N-1 distinct values, got {np.unique(y).size}")
    out = {"silhouette": float(silhouette_score(X, y, metric=metric))}
    if (train_features is None) != (train_labels is None):
        raise ValueError("give both train_features and train_labels, or neither")
    if train_features is not None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        knn = KNeighborsClassifier(n_neighbors=k, metric=metric).fit(np.asarray(train_features, dtype=np.float64),
                                                                   np.asarray(train_labels))
        out["knn_accuracy"] = 100.0 * float((knn.predict(X) == y).mean())
    return out


def tsne_embedding(features: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``features`` (scikit-learn; PCA init, automatic learning rate, one thread)."""
    from sklearn.manifold import TSNE

    X = np.asarray(features, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {X.shape}")
    if not 0 < perplexity < X.shape[0]:
        raise ValueError(f"perplexity must be in (0, N={X.shape[0]}), got {perplexity!r}")
    return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed,
                n_jobs=1).fit_transform(X)


def vit_reshape_transform(tokens: torch.Tensor, prefix_tokens: int = 1, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """ViT tokens (B, prefix + h*w, C) -> the patch tokens as a (B, C, h, w) map (row-major patch order).

    The form ``pytorch-grad-cam`` expects of a target layer's activations and gradients.
    """
    if tokens.dim() != 3:
        raise ValueError(f"tokens must be (B, T, C), got shape {tuple(tokens.shape)}")
    n = tokens.shape[1] - prefix_tokens
    if grid is None:
        side = int(round(math.sqrt(n)))
        grid = (side, side)
    if n <= 0 or grid[0] * grid[1] != n:
        raise ValueError(f"{tokens.shape[1]} tokens minus {prefix_tokens} prefix tokens do not form a {grid} grid")
    b, _, c = tokens.shape
    return tokens[:, prefix_tokens:].reshape(b, grid[0], grid[1], c).permute(0, 3, 1, 2)


def grad_cam(model: nn.Module, images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None, *,
             target_layer: nn.Module | None = None, batch_size: int = 128) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] (each min-max scaled, as pytorch-grad-cam draws them) of a timm ViT.

    Targets are ``labels`` (default: the predicted classes).  The default target layer is the last
    block's first LayerNorm (``blocks[-1].norm1``): the patch tokens at a block's *output* never
    reach a class-token head, so their gradients are zero.  The input is made to require grad, so a
    fully frozen model (a linear probe) still has gradients at the target layer.  Uses the library
    ``pytorch-grad-cam`` (pip ``grad-cam``); works on peft-wrapped models.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from nora.inject import unwrap

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty (N, C, H, W) tensor")
    if labels is not None:
        labels = [int(y) for y in labels]
        if len(labels) != images.shape[0]:
            raise ValueError(f"labels has {len(labels)} entries for {images.shape[0]} images")
    base = unwrap(model)
    if target_layer is None:
        blocks = getattr(base, "blocks", None)
        if blocks is None or not len(blocks):
            raise ValueError(f"target_layer must be given for a model without timm ViT blocks ({type(base).__name__})")
        target_layer = blocks[-1].norm1
    grid = getattr(getattr(base, "patch_embed", None), "grid_size", None)
    reshape = partial(vit_reshape_transform, prefix_tokens=int(getattr(base, "num_prefix_tokens", 1)),
                      grid=tuple(grid) if grid is not None else None)
    was_training = model.training
    out = []
    try:
        with GradCAM(model=model, target_layers=[target_layer], reshape_transform=reshape) as cam:
            for i in range(0, images.shape[0], batch_size):
                # an input that requires grad: a fully frozen model still has gradients at the target layer
                batch = images[i:i + batch_size].detach().clone().requires_grad_(True)
                targets = None if labels is None else [ClassifierOutputTarget(y) for y in labels[i:i + batch_size]]
                out.append(cam(input_tensor=batch, targets=targets))
    finally:
        model.zero_grad(set_to_none=True)  # the library's backward left .grad on trainable parameters
        model.train(was_training)
    return np.concatenate(out).astype(np.float32)


def ink_mask(images: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """(N, H, W) booleans: pixels at least ``threshold`` times the image's brightest grey level.

    ``images`` are normalised with ``nora.experiments.data.MEAN`` / ``STD`` (as every task here returns them);
    the first channel is un-normalised to grey levels in [0, 1].
    """
    from nora.experiments.data import MEAN, STD

    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be an (N, C, H, W) tensor")
    grey = (images[:, 0] * STD[0] + MEAN[0]).clamp(0, 1).numpy()
    top = grey.reshape(grey.shape[0], -1).max(1)[:, None, None]
    return (grey >= threshold * top) & (top > 0)


def centre_mask(n: int, height: int, width: int, area: float = 0.25) -> np.ndarray:
    """(n, height, width) booleans: a centred rectangle covering ``area`` of the image.

    The stand-in object mask where none exists (CIFAR's objects are roughly centred).
    """
    if not 0 < area <= 1:
        raise ValueError(f"area must be in (0, 1], got {area!r}")
    if min(n, height, width) < 1:
        raise ValueError(f"n, height and width must be positive, got {(n, height, width)}")
    side = math.sqrt(area)
    h, w = max(1, round(side * height)), max(1, round(side * width))
    top, left = (height - h) // 2, (width - w) // 2
    mask = np.zeros((n, height, width), dtype=bool)
    mask[:, top:top + h, left:left + w] = True
    return mask


def ink_share(cams: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the share of CAM mass on the ``mask`` pixels, and the mask's share of the area.

    A CAM spread uniformly scores the area share; a CAM entirely on the ink scores 1.  An image
    whose CAM is zero everywhere scores NaN (there is no mass to place).
    """
    cams, mask = np.asarray(cams, dtype=np.float64), np.asarray(mask, dtype=bool)
    if cams.shape != mask.shape or cams.ndim != 3:
        raise ValueError(f"cams and mask must both be (N, H, W); got {cams.shape} and {mask.shape}")
    if (cams < 0).any() or not np.isfinite(cams).all():
        raise ValueError("cams must be finite and non-negative")
    total = cams.sum(axis=(1, 2))
    on_ink = (cams * mask).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, on_ink / total, np.nan)
    return share, mask.mean(axis=(1, 2))


@torch.no_grad()
def rational_curves(layer: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each group's function of a NoRA layer at points ``x``: ``(before, after)``, each (G, len(x)).

    ``before`` is the frozen base rational, ``after`` the base plus the trained deltas (what the
    layer evaluates); both through the same kernel as the layer's forward.
    """
    from nora.adapters.nora import NoraActivation
    from nora.rational import rational

    if not isinstance(layer, NoraActivation):
        raise TypeError(f"layer must be a NoraActivation, got {type(layer).__name__}")
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise ValueError("x must be a non-empty set of finite points")
    g = layer.groups
    grid = x.reshape(-1, 1).expand(-1, g).contiguous()  # one channel per group
    num, den = layer.coefficients()
    before = rational(grid, layer.base_numerator, layer.base_denominator).T
    after = rational(grid, num.detach().float().contiguous(), den.detach().float().contiguous()).T
    return before.numpy().copy(), after.numpy().copy()


def linear_probe(task: Any, config: Any, *, profile: str, seed: int = 0, return_model: bool = False,
                 progress: bool = False):
    """Train only a new head on the frozen pre-trained backbone (the "before fine-tuning" model with a head).

    Same backbone, head initialisation (``seed``) and training loop as ``nora.experiments.vit_transfer.fine_tune``;
    returns its ``TrainResult`` (and the model with ``return_model=True``).
    """
    from nora.experiments.backbone import pretrained_vit
    from nora.experiments.data.tasks import Task
    from nora.experiments.train import train
    from nora.experiments.vit_transfer import parameter_counts

    if not isinstance(task, Task):
        raise TypeError(f"task must be a nora.experiments.data.Task, got {type(task).__name__}")
    model = pretrained_vit(profile, task.num_classes, seed=seed)
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    counts = parameter_counts(model)
    result = train(model, task.train, task.test, config, seed=seed, progress=progress,
                   desc=f"linear probe {task.name} seed {seed}")
    result.extra.update(method="linear probe", task=task.name, seed=seed, **counts)
    return (result, model) if return_model else result


def nora_layers(model: nn.Module, pattern: str = ACT_PATTERN) -> dict[int, nn.Module]:
    """``{block: NoraActivation}`` of a tuned model (NoRA or NoRA++; peft-wrapped too)."""
    from nora.adapters.nora import NoraActivation

    regex = re.compile(pattern)
    out: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        m = regex.search(name)
        if m and isinstance(module, NoraActivation):
            out[int(m.group(1))] = module
    return out


def fine_tune_and_measure(method: str, task: Any, config: Any, *, profile: str, seed: int,
                          reference: dict[int, dict[str, torch.Tensor]], probe_images: torch.Tensor,
                          analysis_set: Dataset, knn_train: Dataset, cam_images: torch.Tensor,
                          cam_labels: Sequence[int], cam_mask: np.ndarray, knn: int = 10,
                          max_values: int | None = None, tsne_classes: Sequence[int] | None = None,
                          perplexity: float = 30.0, keep: Sequence[int] | None = None,
                          curve_points: int = 401, shape_values: int = 20_000) -> dict[str, Any]:
    """One run of the chapter: fine-tune ``method`` (``"probe"``: the head only), then measure the tuned model.

    A module-level function of picklable arguments, so that the runs can go side by side
    (``nora.experiments.parallel.run_parallel``; the numbers do not depend on it).  Returns small
    rows only (no model):

    - ``run``: test accuracy, trainable parameters, train / CPU / analysis seconds;
    - ``shift``: per block and site ("input", "output" of the MLP activation) the
      :func:`distribution_shift` of the values on ``probe_images`` from ``reference``
      (:func:`activation_values` of the pre-trained model, same ``max_values``);
    - ``features``: :func:`cluster_quality` of the head's input on ``analysis_set`` (kNN fitted on
      ``knn_train``) and, with ``tsne_classes``, the silhouette of the t-SNE of those classes;
    - ``cam``: the mean share of Grad-CAM mass (true class) on ``cam_mask`` over ``cam_images``;
    - ``shapes``: per NoRA layer, the largest and mean change of its rationals over the central
      99.8 % of its pre-activations (and the starting rational's distance from GELU there);
    - with ``keep`` (indices into ``cam_images``), what the figures draw: ``embedding`` (t-SNE
      points and labels), ``cams`` (the kept maps) and ``curves`` (``{block: (x, before, after)}``).
    """
    import time

    from nora.experiments.vit_transfer import fine_tune

    result, model = fine_tune(method, task, config, profile=profile, seed=seed, return_model=True)
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    out: dict[str, Any] = {}
    # 1. activation distributions on the probe batch, against the pre-trained model's
    acts = activation_values(model, probe_images, max_values=max_values)
    if sorted(acts) != sorted(reference):
        raise ValueError(f"the tuned model's activation blocks {sorted(acts)} are not the reference's {sorted(reference)}")
    out["shift"] = [{"method": method, "seed": seed, "block": b, "site": where,
                     **distribution_shift(reference[b][where], acts[b][where])}
                    for b in sorted(reference) for where in ("input", "output")]
    # 2. features: silhouette, kNN, t-SNE
    f_test, y_test = pre_logits(model, analysis_set)
    f_train, y_train = pre_logits(model, knn_train)
    row = {"method": method, "seed": seed,
           **cluster_quality(f_test, y_test, train_features=f_train, train_labels=y_train, k=knn)}
    if tsne_classes is not None:
        sel = np.isin(y_test, np.asarray(tsne_classes))
        emb = tsne_embedding(f_test[sel], perplexity=perplexity, seed=seed)
        row["tsne_silhouette"] = cluster_quality(emb, y_test[sel])["silhouette"]
        if keep is not None:
            out["embedding"] = (emb, y_test[sel])
    out["features"] = row
    # 3. Grad-CAM for the true class
    cams = grad_cam(model, cam_images.to(device), list(cam_labels))
    share, area = ink_share(cams, cam_mask)
    out["cam"] = {"method": method, "seed": seed, "share": float(np.nanmean(share)), "area": float(area.mean()),
                  "empty": int(np.isnan(share).sum())}
    if keep is not None:
        out["cams"] = cams[list(keep)]
    # 4. the learned rationals, over the central 99.8 % of each layer's pre-activations
    shapes, curves = [], {}
    for b, layer in nora_layers(model).items():
        lo, hi = torch.quantile(acts[b]["input"], torch.tensor([0.001, 0.999])).tolist()
        xs = torch.linspace(lo, hi, curve_points)
        before, after = rational_curves(layer, xs)
        gelu = torch.nn.functional.gelu(xs).numpy()
        # and averaged over the values that actually reach the layer (and over its groups)
        b_in, a_in = rational_curves(layer, acts[b]["input"][:shape_values])
        shapes.append({"method": method, "seed": seed, "block": b, "lo": lo, "hi": hi,
                       "max_dF": float(np.abs(after - before).max()), "mean_dF": float(np.abs(a_in - b_in).mean()),
                       "fit_error": float(np.abs(before - gelu).max())})
        curves[b] = (xs.numpy(), before, after)
    out["shapes"] = shapes
    if keep is not None:
        out["curves"] = curves
    out["run"] = {"method": method, "seed": seed, "accuracy": result.accuracy, "trainable": result.extra["trainable"],
                  "train_seconds": result.train_seconds, "cpu_seconds": result.cpu_seconds,
                  "analysis_seconds": time.perf_counter() - t0}
    return out
