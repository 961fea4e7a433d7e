"""Run profiles (smoke / book / paper): which one is active, and how big each notebook runs in it.

A notebook's parameters cell holds ``profile = None`` and ``seeds = None``; the notebook then calls
``resolve_profile(profile)``, ``seeds(profile, seeds)`` and ``settings("NN_topic", profile)``, so
one table here, not the notebooks, says what "smoke", "book" and "paper" mean for each of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

PROFILE_NAMES = ("smoke", "book", "paper")
ENV_VAR = "NORA_PROFILE"

DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0,), "book": (0, 1, 2), "paper": (0, 1, 2)}

# Per-notebook settings: PROFILES[notebook][profile] is merged over PROFILES["default"][profile].
# Notebooks add their own entry here (a plain dict literal, reviewed like code).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "smoke": {"device": "cpu", "download": False},
        "book": {"device": "cpu", "download": False},
        "paper": {"device": "cuda", "download": True},
    },
    "01_pade_density": {
        # rational_degrees: AAA types (k, k), k = 1..this; poly_degree: highest polynomial degree;
        # abs_degree: highest type (n, n) for |x|; abs_poly_degrees: degrees of the minimax LP for |x|;
        # lp_points / aaa_points: sample grids; minimax_types: the types of GELU's unconstrained best
        # fits set against form A (the other activations: (5, 4)); vit_images: downstream images per
        # task and seed pushed through the pre-trained backbone; wide_fit_lawson: Lawson steps of the
        # GELU refit on a wider interval.
        "smoke": {"rational_degrees": 6, "poly_degree": 24, "abs_degree": 12, "abs_poly_degrees": (2, 4, 8),
                  "lp_points": 801, "aaa_points": 400, "minimax_types": ((5, 4),), "vit_images": 8, "wide_fit_lawson": 3},
        "book": {"rational_degrees": 24, "poly_degree": 120, "abs_degree": 48,
                 "abs_poly_degrees": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128),
                 "lp_points": 4001, "aaa_points": 2000, "minimax_types": ((3, 2), (4, 3), (5, 4), (6, 5), (7, 6)),
                 "vit_images": 256, "wide_fit_lawson": 60},
        "paper": {"rational_degrees": 24, "poly_degree": 120, "abs_degree": 48,
                  "abs_poly_degrees": (2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128),
                  "lp_points": 4001, "aaa_points": 2000, "minimax_types": ((3, 2), (4, 3), (5, 4), (6, 5), (7, 6)),
                  "vit_images": 1024, "wide_fit_lawson": 60},
    },
    "02_ntk_complementarity": {
        # widths: the MLP of Appendix A, Eq. (9); pretrain_steps / tune_steps: source pre-training and
        # NoRA tuning (minibatches of 128); ntk_examples: inputs of the empirical NTKs and of the cross
        # term; init_draws: random initialisations averaged for Proposition A.1; rank_examples: inputs for the Jacobian ranks;
        # vit: the small timm ViT of the rank check; deviation_examples: inputs for Theorem A.1.
        "smoke": {"widths": (64, 32, 32, 10), "pretrain_steps": 40, "tune_steps": 20, "ntk_examples": 8,
                  "init_draws": 3, "rank_examples": 30, "vit": {"depth": 2, "embed_dim": 32, "num_heads": 2},
                  "vit_examples": 12, "deviation_examples": 64},
        "book": {"widths": (64, 128, 128, 128, 10), "pretrain_steps": 400, "tune_steps": 300, "ntk_examples": 32,
                 "init_draws": 16, "rank_examples": 40, "vit": {"depth": 4, "embed_dim": 64, "num_heads": 2},
                 "vit_examples": 40, "deviation_examples": 512},
        "paper": {"widths": (64, 128, 128, 128, 10), "pretrain_steps": 400, "tune_steps": 300, "ntk_examples": 32,
                  "init_draws": 16, "rank_examples": 40, "vit": {"depth": 4, "embed_dim": 64, "num_heads": 2},
                  "vit_examples": 40, "deviation_examples": 512},
    },
    "03_method": {
        # grid: points of the error curves; perturbations: random NoRA deltas drawn per seed and
        # size; vit_batch: images pushed through ViT-Tiny; pretrained: timm hub weights (paper only).
        "smoke": {"grid": 2001, "perturbations": 2, "vit_batch": 2, "pretrained": False},
        "book": {"grid": 20001, "perturbations": 8, "vit_batch": 8, "pretrained": False},
        "paper": {"grid": 20001, "perturbations": 8, "vit_batch": 32, "pretrained": True},
    },
    "04_vit_transfer": {
        # epochs / batch_size: every fine-tuning run (Appendix C: 50 epochs, batch 256, AdamW, cosine,
        # wd 0.05, AMP); eval_every: test accuracy after every n-th epoch (and the last); train_per_class / test_per_class: cap per class (None = the whole task);
        # lr_grid: the learning rates tried per method, on one seed, on a val_fraction split of the
        # search_task's training set (the same number of rates and epochs for every method; book
        # grids centred after a 6-epoch pilot on that split: short schedules favour higher rates);
        # "scratch" is full fine-tuning from random weights (the no-pre-training reference).
        "smoke": {"epochs": 1, "eval_every": 1, "batch_size": 32, "amp": False, "train_per_class": 4,
                  "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25,
                  "lr_grid": {"full": (3e-4, 1e-3), "scratch": (3e-4, 1e-3), "vpt": (3e-3, 1e-2), "adapter": (1e-3, 3e-3),
                              "lora": (3e-3, 1e-2), "lora_all": (3e-3, 1e-2), "qlora": (3e-3, 1e-2),
                              "dora": (3e-3, 1e-2), "nora": (1e-2, 3e-2), "nora++": (3e-3, 1e-2),
                              "loran": (3e-3, 1e-2)}},
        "book": {"epochs": 6, "eval_every": 2, "batch_size": 32, "amp": False, "train_per_class": None,
                 "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2,
                 "lr_grid": {"full": (3e-4, 1e-3, 3e-3), "scratch": (3e-4, 1e-3, 3e-3), "vpt": (3e-3, 1e-2, 3e-2),
                             "adapter": (1e-3, 3e-3, 1e-2), "lora": (3e-3, 1e-2, 3e-2), "lora_all": (3e-3, 1e-2, 3e-2),
                             "qlora": (3e-3, 1e-2, 3e-2), "dora": (3e-3, 1e-2, 3e-2), "nora": (3e-3, 1e-2, 3e-2),
                             "nora++": (3e-3, 1e-2, 3e-2), "loran": (3e-3, 1e-2, 3e-2)}},
        "paper": {"epochs": 50, "eval_every": 1, "batch_size": 256, "amp": True, "num_workers": 8,
                  "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
                  "lr_grid": {"full": (1e-4, 3e-4, 1e-3), "scratch": (3e-4, 1e-3, 3e-3), "vpt": (1e-3, 3e-3, 1e-2),
                              "adapter": (3e-4, 1e-3, 3e-3), "lora": (1e-3, 3e-3, 1e-2), "lora_all": (1e-3, 3e-3, 1e-2),
                              "qlora": (1e-3, 3e-3, 1e-2), "dora": (1e-3, 3e-3, 1e-2), "nora": (3e-3, 1e-2, 3e-2),
                              "nora++": (1e-3, 3e-3, 1e-2), "loran": (1e-3, 3e-3, 1e-2)}},
    },
    "05_group_scaling": {
        # groups: NoRA group counts G (rank 3, alpha 6) on the 8-group GELU-fitted rational; epochs /
        # batch_size: every run (NoRA and full fine-tuning alike); lr_grid: rates tried for NoRA (G=8)
        # and full fine-tuning on a val_fraction split of search_task; G > 8 reuse G=8's rate.
        "smoke": {"groups": (8, 16), "epochs": 2, "batch_size": 32, "amp": False, "train_per_class": 4,
                  "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25,
                  "lr_grid": {"nora": (1e-2, 3e-2), "full": (3e-4, 1e-3)}},
        "book": {"groups": (8, 16, 32, 64), "epochs": 10, "batch_size": 32, "amp": False, "train_per_class": None,
                 "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2,
                 "lr_grid": {"nora": (3e-3, 1e-2, 3e-2), "full": (3e-4, 1e-3, 3e-3)}},
        "paper": {"groups": (8, 16, 32, 64), "epochs": 50, "batch_size": 256, "amp": True, "num_workers": 8,
                  "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
                  "lr_grid": {"nora": (3e-3, 1e-2, 3e-2), "full": (1e-4, 3e-4, 1e-3)}},
    },
    "06_llama_instruct": {
        # sets: instruction sets (generated styles in smoke/book, hub datasets in paper); samples: records
        # per set (Appendix C: max 1000); epochs/steps: the identical budget of LoRA and NoRA++; lora/nora:
        # adapter settings (LoRA r=8, alpha=16 on every projection; NoRA G=8, r=3, alpha=6 on the SiLUs);
        # cutoff: max tokens per example (Appendix C: 1024); threads: torch CPU threads (one is much
        # faster than two when the 2-core machine is shared); lm_eval_check: also score the base model
        # with lm-eval on the local task and compare with our scorer; seeds (book): five, because three
        # leave a 95 % interval of the paired difference too wide to tell 2 points from noise.
        "smoke": {"sets": ("alpaca", "mathinstruct", "openorca"), "samples": 16, "steps": 2, "batch_size": 4,
                  "learning_rate": 1e-3, "warmup_ratio": 0.0, "cutoff": 256, "eval_batch_size": 32,
                  "lora": {"rank": 4, "alpha": 8}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
                  "sample_tokens": 12, "threads": 1, "lm_eval_check": True},
        "book": {"sets": ("alpaca", "mathinstruct", "openorca", "ultrachat"), "seeds": (0, 1, 2, 3, 4), "samples": 1000, "epochs": 1.0,
                 "batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.03, "cutoff": 256, "eval_batch_size": 32,
                 "lora": {"rank": 8, "alpha": 16}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
                 "sample_tokens": 40, "threads": 1, "lm_eval_check": True},
        "paper": {"sets": ("alpaca", "mathinstruct", "openorca", "sharegpt_hyper", "ultrachat"), "samples": 1000,
                  "epochs": 3.0, "batch_size": 4, "gradient_accumulation": 2, "learning_rate": 1e-4,
                  "warmup_ratio": 0.1, "cutoff": 1024, "eval_batch_size": 2, "bf16": True,
                  "lora": {"rank": 8, "alpha": 16}, "nora": {"groups": 8, "rank": 3, "alpha": 6},
                  "sample_tokens": 128, "threads": 8, "lm_eval_check": False},
    },
    "08_efficiency": {
        # img / patch: ViT-Tiny input of the timed runs (parameter and FLOP counts always use the
        # paper's 224 / 16); latency_batch / train_batch: images per timed forward / AdamW step;
        # repeats: interleaved timed rounds per seed (their median is kept); act_shape / act_repeats:
        # the activation-alone benchmark; threads: torch CPU threads (None: torch's default; 1 on the
        # shared 2-core machine, where two OpenMP threads per process stall whenever another process runs).
        "smoke": {"img": 32, "patch": 16, "latency_batch": 2, "train_batch": 2, "repeats": 2,
                  "act_shape": (2, 17, 768), "act_repeats": 2, "threads": 1},
        "book": {"img": 224, "patch": 16, "latency_batch": 8, "train_batch": 8, "repeats": 7,
                 "act_shape": (32, 197, 768), "act_repeats": 15, "threads": 1},
        "paper": {"img": 224, "patch": 16, "latency_batch": 64, "train_batch": 64, "repeats": 30,
                  "act_shape": (32, 197, 768), "act_repeats": 100, "threads": None},
    },
}


def resolve_profile(profile: str | None = None) -> str:
    """Return the active profile: ``profile`` if given, else $NORA_PROFILE, else "book"."""
    source = "profile"
    if profile is None:
        profile = os.environ.get(ENV_VAR) or "book"
        source = f"profile (from ${ENV_VAR})"
    if not isinstance(profile, str) or profile not in PROFILE_NAMES:
        raise ValueError(f"{source} must be one of {PROFILE_NAMES}; got {profile!r}")
    return profile


def seeds(profile: str | None = None, override: Iterable[int] | None = None) -> tuple[int, ...]:
    """Return the seeds to run: ``override`` if given (the notebook's ``seeds`` parameter), else the profile's default."""
    name = resolve_profile(profile)
    if override is None:
        return DEFAULT_SEEDS[name]
    if isinstance(override, int | str):
        override = [override]  # type: ignore[list-item]
    out = tuple(override)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise ValueError(f"seeds must be a non-empty list of non-negative ints; got {override!r}")
    return out


def settings(notebook: str, profile: str | None = None) -> dict[str, Any]:
    """Return the notebook's settings for the profile (its entry merged over "default"), plus ``profile`` and ``seeds``."""
    if not isinstance(notebook, str) or not notebook:
        raise ValueError(f"notebook must be a notebook name like '03_method'; got {notebook!r}")
    name = resolve_profile(profile)
    key = notebook.removesuffix(".ipynb").rsplit("/", 1)[-1]
    merged: dict[str, Any] = {"profile": name, "seeds": DEFAULT_SEEDS[name]}
    merged.update(PROFILES["default"][name])
    merged.update(PROFILES.get(key, {}).get(name, {}))
    return merged
