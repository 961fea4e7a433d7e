"""Helpers for the ablation chapter (07): where NoRA's base rational comes from, and what changes at step 0.

NoRA replaces each activation by a *fitted* rational and tunes deltas of its coefficients, so the
network it starts from is the pre-trained one only up to the fit error.  This module gives two
bases that remove or shrink that error, a head-only reference, and the measurements:

- :func:`apply_exact_base_nora` -- an **exact-at-init** base.  Each activation ``act`` becomes

      F(x) = act(x) + [N_theta(x) - R_0(x)],

  where ``N_theta`` is an ordinary NoRA layer on the fitted base ``R_0`` and ``R_0`` is that same
  base, frozen.  At initialisation ``N_theta`` computes ``R_0`` bit for bit, so ``F = act`` exactly
  (the pre-trained network, not its rational copy); afterwards ``F`` moves exactly as NoRA's
  rational moves (``dF/dtheta = dN_theta/dtheta``).  The only difference from NoRA is the fit
  error of the base: it is a clean test of whether that error matters.  :class:`ExactBase` is the
  wrapper module.
- :func:`preactivations` collects the inputs of every target activation on real data (forward
  pre-hooks); :func:`fit_to_samples` fits the activation by least squares under that empirical
  distribution (the fit a given backbone actually needs), over the whole observed range, instead
  of the near-minimax fit on [-3, 3] that ships with the package; :func:`replace_with_rationals`
  installs per-layer coefficients as ``GroupRational`` activations, on which NoRA is then applied
  with ``target="rational"``.  :func:`sample_errors` scores a fit on the samples.
  :func:`nora_on_rationals` does both in one picklable step (a model builder for side-by-side runs).
- :func:`head_only` freezes everything but the classification head (a linear probe on the frozen
  features), and :func:`fine_tune_with` is :func:`nora.experiments.vit_transfer.fine_tune` for any model builder
  (the probe and the exact base are not ``nora.experiments.methods`` names); with module-level
  builders (``functools.partial(build_method, name, **overrides)``, :func:`head_only`,
  :func:`apply_exact_base_nora`, :func:`nora_on_rationals`) its jobs run side by side through
  :func:`nora.experiments.parallel.run_parallel`.
- :func:`output_deviation` compares a model's outputs with a reference model's on the same images;
  :func:`source_heldout` gives held-out images of a generated backbone's source task (the shapes
  and smoke backbones' synthetic classes, or the glyph backbone's held-out glyphs) to score it on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from nora.adapters.base import replace_module
from nora.fit import ACTIVATIONS, RationalFit, evaluate, fit_rational, validate_degrees
from nora.inject import find_targets, infer_channels
from nora.rational import GroupRational, rational

__all__ = [
    "PROFILES",
    "ExactBase",
    "apply_exact_base_nora",
    "fine_tune_with",
    "fit_to_samples",
    "head_only",
    "nora_on_rationals",
    "output_deviation",
    "preactivations",
    "replace_with_rationals",
    "sample_errors",
    "source_heldout",
]

# Learning-rate grid shared by the book and paper profiles (the same rates, searched on a different
# task and budget).
ABLATION_LR_GRID = {"nora": (3e-3, 1e-2, 3e-2, 1e-1), "prelu": (3e-3, 1e-2, 3e-2, 1e-1),
                    "arelu": (1e-2, 3e-2, 1e-1, 3e-1), "elu": (1e-2, 3e-2, 1e-1, 3e-1),
                    "full": (3e-3, 1e-2, 3e-2, 1e-1), "const": (1e-2, 3e-2, 1e-1, 3e-1)}

# The chapter's sizes per profile: nora.experiments.profiles.settings("07_ablations", profile) merges
# PROFILES[profile] over the defaults.
# epochs: per task role ("easy", "hard"), chapter 04's schedule: about 220 optimiser steps on each
# task (book: mnist10-20shot has 7 batches of 32 an epoch, 30 epochs = 210 steps; mnist20 38, 6 epochs =
# 228 steps; the learning-rate search trains on the search task's split with that task's epochs);
# every run is evaluated once, after its last epoch (the chapter reports final test accuracy only);
# batch_size: every run; ranks: the rank sweep of Fig. 3 (r=3, NoRA's default, is run anyway);
# both_tasks: the variants also run on the easy task (Table 5 reports both datasets; Tables 3-4
# and Fig. 3 are CIFAR-100 only, so the rest runs on the hard task); lr_grid: rates tried per
# family on one seed, on a val_fraction split of search_task (the same number of rates and epochs
# per family; the other variants reuse their family's rate).  The book grids are the first
# edition's second round (6-block shapes backbone): a first round with 3e-3..1e-1 for every family
# (1e-3..3e-2 for "full") put arelu, elu, full and const at its top edge, so those four grids were
# moved up half a decade; they are kept on the glyph backbone, where the search marks any rate
# chosen at a grid edge.  preact_images / preact_per_layer: downstream training images whose GELU
# inputs are collected for the data-weighted fit, and the values kept per layer; deviation_images:
# downstream test images of the step-0 comparison; source_accuracy / source_images: also score
# every step-0 model on that many held-out images of the backbone's generated source task
# (book/smoke; the paper profile's hub backbone has none).
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": {"easy": 1, "hard": 1}, "batch_size": 32, "amp": False, "train_per_class": 4,
              "test_per_class": 4, "ranks": (1, 2), "both_tasks": ("nora", "numerator", "denominator"),
              "search_task": "mnist20", "val_fraction": 0.25,
              "lr_grid": {"nora": (1e-2, 3e-2), "prelu": (1e-2, 3e-2), "arelu": (1e-2, 3e-2), "elu": (1e-2, 3e-2),
                          "full": (1e-3, 3e-3), "const": (1e-2, 3e-2)},
              "preact_images": 16, "preact_per_layer": 20_000, "deviation_images": 16, "source_accuracy": True,
              "source_images": 128},
    "book": {"epochs": {"easy": 30, "hard": 6}, "batch_size": 32, "amp": False, "train_per_class": None,
             "test_per_class": None, "ranks": (1, 2, 4, 8, 16), "both_tasks": ("nora", "numerator", "denominator"),
             "search_task": "mnist20", "val_fraction": 0.2,
             "lr_grid": ABLATION_LR_GRID,
             "preact_images": 256, "preact_per_layer": 200_000, "deviation_images": 256, "source_accuracy": True,
             "source_images": 1024},
    "paper": {"epochs": {"easy": 50, "hard": 50}, "batch_size": 256, "amp": True, "num_workers": 8,
              "train_per_class": None, "test_per_class": None, "ranks": (1, 2, 4, 8, 16),
              "both_tasks": ("nora", "numerator", "denominator"), "search_task": "cifar100", "val_fraction": 0.1,
              "lr_grid": ABLATION_LR_GRID,
              "preact_images": 1024, "preact_per_layer": 200_000, "deviation_images": 512, "source_accuracy": False,
              "source_images": 0},
}


class ExactBase(nn.Module):
    """``activation(x) + inner(x) - R_0(x)``: the original activation plus a rational correction, zero at init.

    ``inner`` is a NoRA layer (or any module computing a rational with base coefficients
    ``base_numerator`` / ``base_denominator``); ``R_0`` is evaluated with the same kernel on copies
    of those coefficients, so while ``inner``'s deltas are zero the correction is exactly 0.
    """

    def __init__(self, activation: nn.Module, inner: nn.Module, base_numerator: torch.Tensor,
                 base_denominator: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(activation, nn.Module) or not isinstance(inner, nn.Module):
            raise TypeError("activation and inner must be nn.Modules")
        if base_numerator.dim() != 2 or base_denominator.dim() != 2 or base_numerator.shape[0] != base_denominator.shape[0]:
            raise ValueError(f"base coefficients must be (G, m+1) and (G, n) matrices, got "
                             f"{tuple(base_numerator.shape)} and {tuple(base_denominator.shape)}")
        self.activation = activation
        self.inner = inner
        self.register_buffer("base_numerator", base_numerator.detach().clone().float().contiguous())
        self.register_buffer("base_denominator", base_denominator.detach().clone().float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x) + (self.inner(x) - rational(x, self.base_numerator, self.base_denominator))


def apply_exact_base_nora(model: nn.Module, **overrides: Any) -> nn.Module:
    """NoRA (``build_method("nora", model, **overrides)``) with every layer wrapped in :class:`ExactBase`.

    The activations NoRA replaces are kept and evaluated exactly; the NoRA layer only adds its
    change from its base, so the model equals the original one at initialisation (bit for bit on
    the same kernel) and trains the same parameters as NoRA.  ``overrides`` go to ``NoraConfig``
    (``target`` must pick the model's own activations, not rationals: those have no exact form to keep).
    """
    from nora.adapters.nora import NoraActivation
    from nora.experiments.methods import build_method, method_config

    config = method_config("nora", **overrides)
    config.validate()
    if isinstance(config.target, str) and config.target.lower() == "rational":
        raise ValueError("target='rational' has no exact activation to keep; use the model's activation (e.g. 'gelu')")
    originals = dict(find_targets(model, config.target))
    if not originals:
        raise ValueError(f"target={config.target!r} matches no module of {type(model).__name__}")
    model = build_method("nora", model, **overrides)
    for name, original in originals.items():
        layer = model.get_submodule(name)
        if not isinstance(layer, NoraActivation):  # pragma: no cover - build_method swaps every target
            raise RuntimeError(f"{name!r} was not replaced by a NoRA layer")
        replace_module(model, name, ExactBase(original, layer, layer.base_numerator, layer.base_denominator))
    return model


def head_only(model: nn.Module, head: str = "head") -> nn.Module:
    """Freeze every parameter except those of the ``head`` module (a linear probe on frozen features)."""
    try:
        module = model.get_submodule(head)
    except AttributeError:
        raise ValueError(f"head={head!r} is not a module of {type(model).__name__}") from None
    if not any(True for _ in module.parameters()):
        raise ValueError(f"head={head!r} has no parameters")
    model.requires_grad_(False)
    module.requires_grad_(True)
    return model


def fine_tune_with(build: Callable[[nn.Module], nn.Module], task, config, *, profile: str, seed: int = 0,
                   name: str = "custom", progress: bool = False):
    """Like :func:`nora.experiments.vit_transfer.fine_tune`, with ``build(model)`` in place of ``build_method``.

    The profile's pre-trained ViT with a fresh seeded head, ``build`` under ``torch.manual_seed(seed)``
    (global RNG restored afterwards), parameter counts in ``result.extra``, then :func:`nora.experiments.train.train`.
    """
    from nora.experiments.backbone import pretrained_vit
    from nora.experiments.data.tasks import Task
    from nora.experiments.train import train
    from nora.experiments.vit_transfer import parameter_counts

    if not callable(build):
        raise TypeError(f"build must be a callable model -> model, got {type(build).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a nora.experiments.data.Task, got {type(task).__name__}")
    model = pretrained_vit(profile, task.num_classes, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(model)
    counts = parameter_counts(model)
    result = train(model, task.train, task.test, config, seed=seed, progress=progress, desc=f"{name} {task.name} seed {seed}")
    result.extra.update(method=name, task=task.name, seed=seed, **counts)
    return result


@torch.no_grad()
def preactivations(model: nn.Module, data: Dataset, *, target: str | type = "gelu", images: int = 256,
                   per_layer: int = 200_000, seed: int = 0, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Inputs of every ``target`` activation on the first ``images`` examples of ``data``: {module name: 1-D float64 sample}.

    Each batch contributes a uniform random (seeded) share of its values, so at most about
    ``per_layer`` values per layer are ever held (a 224-px ViT makes millions per image).  Runs
    on the device of the model's parameters.
    """
    for field, value in (("images", images), ("per_layer", per_layer), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{field} must be a positive int, got {value!r}")
    targets = find_targets(model, target)
    if not targets:
        raise ValueError(f"target={target!r} matches no module of {type(model).__name__}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    gen = torch.Generator().manual_seed(seed)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name, _ in targets}
    share = {"k": 0}

    def hook(_module, args, name):
        values = args[0].detach().float().flatten().cpu()
        if values.numel() > share["k"]:
            values = values[torch.randperm(values.numel(), generator=gen)[: share["k"]]]
        seen[name].append(values)

    hooks = [module.register_forward_pre_hook(lambda m, a, name=name: hook(m, a, name)) for name, module in targets]
    was_training = model.training
    model.eval()
    count = 0
    try:
        for batch, _ in DataLoader(data, batch_size=batch_size, shuffle=False):
            batch = batch[: images - count]
            share["k"] = math.ceil(per_layer * batch.shape[0] / images)
            model(batch.to(device))
            count += batch.shape[0]
            if count >= images:
                break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if count == 0:
        raise ValueError("data is empty")
    out = {}
    for name, parts in seen.items():
        values = torch.cat(parts)
        if values.numel() > per_layer:
            values = values[torch.randperm(values.numel(), generator=gen)[:per_layer]]
        out[name] = values.double().numpy()
    return out


def _as_samples(samples, field: str = "samples") -> np.ndarray:
    arr = np.asarray(samples.detach().cpu() if isinstance(samples, torch.Tensor) else samples, dtype=float).ravel()
    if arr.size < 100 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{field} must hold at least 100 finite values, got {arr.size}"
                         f"{'' if np.all(np.isfinite(arr)) else ' (some not finite)'}")
    if arr.max() <= arr.min():
        raise ValueError(f"{field} must not be constant")
    return arr


def fit_to_samples(samples, activation: str | Callable = "gelu", degrees: tuple[int, int] = (5, 4), *,
                   bins: int = 256, n_points: int = 2000) -> RationalFit:
    """Least-squares fit of ``activation`` in form A under the empirical distribution of ``samples``.

    Minimises E[(R(x) - act(x))^2] over x drawn from ``samples`` on their whole range
    [min, max]: ``nora.fit_rational`` is called with no Lawson steps (least squares, not minimax)
    and a per-point weight sqrt(p(x) * sqrt(1 - t^2)), where p is a ``bins``-bin histogram density
    of the samples and sqrt(1 - t^2) (t the point mapped to [-1, 1]) corrects for the density of
    the Chebyshev points it fits on, so the weighted sum of squares is a quadrature of the
    expectation.  (The returned fit's ``max_error`` / ``rms_error`` are the weighted ones; use
    :func:`sample_errors` for errors on the samples.)
    """
    x = _as_samples(samples)
    degrees = validate_degrees(degrees)
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 8:
        raise ValueError(f"bins must be an int >= 8, got {bins!r}")
    lo, hi = float(x.min()), float(x.max())
    density, edges = np.histogram(x, bins=bins, range=(lo, hi), density=True)
    centres = 0.5 * (edges[1:] + edges[:-1])
    floor = 1e-9 * density.max()  # empty bins: negligible, but keep every point in the problem

    def weight(points: np.ndarray) -> np.ndarray:
        p = np.interp(points, centres, np.maximum(density, floor))
        t = (2.0 * points - lo - hi) / (hi - lo)
        return np.sqrt(p * np.sqrt(np.clip(1.0 - t * t, 0.0, None)))

    return fit_rational(activation, degrees, (lo, hi), n_points=n_points, lawson_steps=0, weight=weight)


def sample_errors(samples, numerator: Iterable[float], denominator: Iterable[float],
                  activation: str | Callable = "gelu") -> dict[str, float]:
    """Errors of the form-A rational (numerator, denominator) against ``activation`` on ``samples``.

    Returns ``rms`` and ``mean_abs`` (over the samples, i.e. under their distribution), ``max``
    (over the samples), and ``outside_3`` (the fraction of samples with |x| > 3, outside the
    shipped fit's interval).
    """
    x = _as_samples(samples)
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        fn = ACTIVATIONS[activation]
    elif callable(activation):
        fn = activation
    else:
        raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
    err = evaluate(np.asarray(list(numerator), dtype=float), np.asarray(list(denominator), dtype=float), x) - fn(x)
    return {"rms": float(np.sqrt(np.mean(err**2))), "mean_abs": float(np.mean(np.abs(err))),
            "max": float(np.max(np.abs(err))), "outside_3": float(np.mean(np.abs(x) > 3.0))}


def replace_with_rationals(model: nn.Module, coefficients: dict[str, tuple[Any, Any]], *, groups: int = 8) -> nn.Module:
    """Replace each named activation by a ``GroupRational`` (``groups`` groups) with its own (numerator, denominator).

    Everything is validated before the first module is swapped; apply NoRA afterwards with
    ``target="rational"`` (it replicates the shared coefficients across its groups).
    """
    if not isinstance(coefficients, dict) or not coefficients:
        raise ValueError("coefficients must be a non-empty {module name: (numerator, denominator)} dict")
    names = list(coefficients)
    missing = [n for n in names if n not in dict(model.named_modules())]
    if missing:
        raise ValueError(f"coefficients names {missing} are not modules of {type(model).__name__}")
    widths = infer_channels(model, names)
    new = {}
    for name in names:
        num, den = (torch.as_tensor(np.asarray(c, dtype=float), dtype=torch.float32) for c in coefficients[name])
        if num.dim() != 1 or den.dim() != 1:
            raise ValueError(f"coefficients[{name!r}] must be two 1-D coefficient vectors")
        new[name] = GroupRational(widths[name], groups, (num.numel() - 1, den.numel()), init=(num, den))
    for name, module in new.items():
        replace_module(model, name, module)
    return model


@torch.no_grad()
def output_deviation(reference: nn.Module, model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """How far ``model``'s outputs are from ``reference``'s on ``images`` (both in eval mode).

    ``max_abs``: largest |difference| of any output; ``relative``: that over the largest |reference
    output|; ``agreement``: % of images whose top-1 class is the same.
    """
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty batch tensor")
    states = reference.training, model.training
    reference.eval()
    model.eval()
    try:
        a, b = reference(images), model(images)
    finally:
        reference.train(states[0])
        model.train(states[1])
    if a.shape != b.shape:
        raise ValueError(f"reference and model give outputs of different shapes: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = float((a - b).abs().max())
    scale = float(a.abs().max())
    return {"max_abs": diff, "relative": diff / scale if scale > 0 else math.inf,
            "agreement": 100.0 * float((a.argmax(-1) == b.argmax(-1)).float().mean())}


def nora_on_rationals(model: nn.Module, coefficients: dict[str, tuple[Any, Any]], *, groups: int = 8,
                      **overrides: Any) -> nn.Module:
    """:func:`replace_with_rationals` (``groups`` groups), then ``build_method("nora", ..., target="rational")``.

    NoRA on per-layer base rationals (e.g. the data-weighted fits of :func:`fit_to_samples`); a
    module-level function, so ``functools.partial(nora_on_rationals, coefficients=...)`` is a
    picklable model builder for :func:`fine_tune_with` jobs run side by side.
    """
    from nora.experiments.methods import build_method

    if "target" in overrides:
        raise ValueError("nora_on_rationals tunes the rationals it installs: target is always 'rational'")
    return build_method("nora", replace_with_rationals(model, coefficients, groups=groups), target="rational", **overrides)


def source_heldout(profile: str, images: int | None = None) -> Dataset:
    """Held-out images of the source task a generated backbone was pre-trained on, normalised as in training.

    The glyph backbone (``book`` since issue 16): ``nora.experiments.data.glyphs.heldout_set`` with the
    pre-training seed, the set its provenance scores (default: all ``test_images`` of it; a multiple
    of 512 images is a prefix of it, since it is drawn in chunks of 512).  The shapes and smoke
    backbones: the first ``images`` of their generated test split
    (:func:`nora.experiments.backbone.source_task`).  The hub backbone (``paper``) has none: ValueError.
    """
    from nora.experiments.backbone import backbone_spec, source_task
    from nora.experiments.data.tasks import as_tensor_dataset
    from nora.experiments.glyph_backbone import GlyphPretrainConfig

    if images is not None and (not isinstance(images, int) or isinstance(images, bool) or images < 1):
        raise ValueError(f"images must be None or a positive int, got {images!r}")
    spec = backbone_spec(profile)
    if spec.pretrain is None:
        raise ValueError(f"backbone {spec.profile!r} uses hub weights; it has no generated source task")
    if isinstance(spec.pretrain, GlyphPretrainConfig):
        from nora.experiments.data.glyphs import heldout_set

        x, y = heldout_set(spec.pretrain.source, images or spec.pretrain.test_images, spec.pretrain.seed)
        return as_tensor_dataset(x, y)
    test = source_task(profile).test
    return test if images is None or images >= len(test) else Subset(test, range(images))
