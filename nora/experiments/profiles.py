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

# Learning-rate grids shared by a chapter's book and paper profiles (the same rates, searched on
# a different task and budget).
VIT_TRANSFER_LR_GRID = {"full": (1e-4, 3e-4, 1e-3, 3e-3), "scratch": (1e-4, 3e-4, 1e-3, 3e-3),
                        "vpt": (3e-3, 1e-2, 3e-2, 1e-1), "adapter": (3e-3, 1e-2, 3e-2, 1e-1),
                        "nora": (3e-3, 1e-2, 3e-2, 1e-1), "lora": (3e-4, 1e-3, 3e-3, 1e-2),
                        "lora_all": (3e-4, 1e-3, 3e-3, 1e-2), "qlora": (3e-4, 1e-3, 3e-3, 1e-2),
                        "dora": (3e-4, 1e-3, 3e-3, 1e-2), "nora++": (3e-4, 1e-3, 3e-3, 1e-2),
                        "loran": (3e-4, 1e-3, 3e-3, 1e-2)}
ABLATION_LR_GRID = {"nora": (3e-3, 1e-2, 3e-2, 1e-1), "prelu": (3e-3, 1e-2, 3e-2, 1e-1),
                    "arelu": (1e-2, 3e-2, 1e-1, 3e-1), "elu": (1e-2, 3e-2, 1e-1, 3e-1),
                    "full": (3e-3, 1e-2, 3e-2, 1e-1), "const": (1e-2, 3e-2, 1e-1, 3e-1)}

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
        # wd 0.05, AMP); eval_every: test accuracy after every n-th epoch (and the last);
        # train_per_class / test_per_class: cap per class (None = the whole task);
        # lr_grid: the learning rates tried per method, on one seed, on a val_fraction split of the
        # search_task's training set (the same number of rates and epochs for every method; the book
        # grids are a second round: a first 3-point round put 9 of 11 methods at a grid edge, so each
        # grid was widened to 4 points around that round's best); "scratch" is full fine-tuning from
        # random weights (the no-pre-training reference).
        "smoke": {"epochs": 1, "eval_every": 1, "batch_size": 32, "amp": False, "train_per_class": 4,
                  "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25,
                  "lr_grid": {"full": (3e-4, 1e-3), "scratch": (3e-4, 1e-3), "vpt": (3e-3, 1e-2), "adapter": (1e-3, 3e-3),
                              "lora": (3e-3, 1e-2), "lora_all": (3e-3, 1e-2), "qlora": (3e-3, 1e-2),
                              "dora": (3e-3, 1e-2), "nora": (1e-2, 3e-2), "nora++": (3e-3, 1e-2),
                              "loran": (3e-3, 1e-2)}},
        "book": {"epochs": 6, "eval_every": 2, "batch_size": 32, "amp": False, "train_per_class": None,
                 "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2,
                 "lr_grid": VIT_TRANSFER_LR_GRID},
        "paper": {"epochs": 50, "eval_every": 1, "batch_size": 256, "amp": True, "num_workers": 8,
                  "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
                  "lr_grid": VIT_TRANSFER_LR_GRID},
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
    "07_ablations": {
        # epochs / batch_size: every run (book: 04's schedule, 6 epochs of batch 32); ranks: the rank
        # sweep of Fig. 3 (r=3, NoRA's default, is run anyway); both_tasks: the variants also run on
        # the easy task (Table 5 reports both datasets; Tables 3-4 and Fig. 3 are CIFAR-100 only, so
        # the rest runs on the hard task); lr_grid: rates tried per family on one seed, on a
        # val_fraction split of search_task (the same number of rates and epochs per family; the
        # other variants reuse their family's rate; the book grids are a second round: a first one with
        # 3e-3..1e-1 for every family (1e-3..3e-2 for "full") put arelu, elu, full and const at its
        # top edge, so those four grids were moved up half a decade); preact_images / preact_per_layer: downstream
        # training images whose GELU inputs are collected for the data-weighted fit, and the values
        # kept per layer; deviation_images: downstream test images of the step-0 comparison;
        # source_accuracy: also score every step-0 model on the generated source task (book/smoke).
        "smoke": {"epochs": 1, "batch_size": 32, "amp": False, "train_per_class": 4, "test_per_class": 4,
                  "ranks": (1, 2), "both_tasks": ("nora", "numerator", "denominator"),
                  "search_task": "mnist20", "val_fraction": 0.25,
                  "lr_grid": {"nora": (1e-2, 3e-2), "prelu": (1e-2, 3e-2), "arelu": (1e-2, 3e-2), "elu": (1e-2, 3e-2),
                              "full": (1e-3, 3e-3), "const": (1e-2, 3e-2)},
                  "preact_images": 16, "preact_per_layer": 20_000, "deviation_images": 16, "source_accuracy": True},
        "book": {"epochs": 6, "batch_size": 32, "amp": False, "train_per_class": None, "test_per_class": None,
                 "ranks": (1, 2, 4, 8, 16), "both_tasks": ("nora", "numerator", "denominator"),
                 "search_task": "mnist20", "val_fraction": 0.2,
                 "lr_grid": ABLATION_LR_GRID,
                 "preact_images": 256, "preact_per_layer": 200_000, "deviation_images": 256, "source_accuracy": True},
        "paper": {"epochs": 50, "batch_size": 256, "amp": True, "num_workers": 8, "train_per_class": None,
                  "test_per_class": None, "ranks": (1, 2, 4, 8, 16), "both_tasks": ("nora", "numerator", "denominator"),
                  "search_task": "cifar100", "val_fraction": 0.1,
                  "lr_grid": ABLATION_LR_GRID,
                  "preact_images": 1024, "preact_per_layer": 200_000, "deviation_images": 512, "source_accuracy": False},
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
    "09_analysis": {
        # task: the hard task (CIFAR-100's role), where every model is fine-tuned and analysed;
        # methods: fine-tuned there, each at the rate its own equal-budget search picks (lr_grid: rates
        # tried on one seed on a val_fraction split of the training set (book: a first run put the probe at
        # its grid's top, 1e-1 of 1e-2..1e-1, so its grid moved up); "probe" = the linear probe,
        # frozen pre-trained backbone + trained head: the "before fine-tuning" model of Grad-CAM);
        # epochs / batch_size: every run; probe_per_class: test images per class whose activations are
        # compared (one fixed batch for every model); max_values: activation values kept per layer (a
        # seeded subset of positions, the same for every model); tsne_methods / tsne_classes /
        # perplexity: t-SNE of the test features (classes shown, evenly spread over the label list);
        # analysis_per_class: test images per class for features, t-SNE and Grad-CAM (None = all);
        # knn: neighbours of the kNN accuracy; cam_images / cam_show: test images scored / drawn by
        # Grad-CAM; cam_region: "ink" (digit pixels >= ink_threshold x the image's max) or "centre"
        # (the central square of a quarter of the area: CIFAR has no object masks).
        "smoke": {"task": "mnist20", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 1,
                  "batch_size": 32, "amp": False, "train_per_class": 4, "test_per_class": 4, "val_fraction": 0.25,
                  "lr_grid": {"probe": (1e-2,), "full": (1e-3,), "lora": (3e-3,), "dora": (3e-3,),
                              "nora": (1e-2, 3e-2), "nora++": (3e-3,)},
                  "probe_per_class": 2, "max_values": 20_000, "tsne_methods": ("probe", "nora", "full"),
                  "tsne_classes": 20, "perplexity": 10.0, "analysis_per_class": None, "knn": 3,
                  "cam_images": 16, "cam_show": 4, "cam_region": "ink", "ink_threshold": 0.5},
        "book": {"task": "mnist20", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 6,
                 "batch_size": 32, "amp": False, "train_per_class": None, "test_per_class": None, "val_fraction": 0.2,
                 "lr_grid": {"probe": (3e-2, 1e-1, 3e-1), "full": (3e-4, 1e-3, 3e-3), "lora": (1e-3, 3e-3, 1e-2),
                             "dora": (1e-3, 3e-3, 1e-2), "nora": (1e-2, 3e-2, 1e-1), "nora++": (1e-3, 3e-3, 1e-2)},
                 "probe_per_class": 6, "max_values": 200_000, "tsne_methods": ("probe", "nora", "full"),
                 "tsne_classes": 20, "perplexity": 30.0, "analysis_per_class": None, "knn": 10,
                 "cam_images": 200, "cam_show": 6, "cam_region": "ink", "ink_threshold": 0.5},
        "paper": {"task": "cifar100", "methods": ("full", "lora", "dora", "nora", "nora++"), "epochs": 50,
                  "batch_size": 256, "amp": True, "num_workers": 8, "train_per_class": None, "test_per_class": None,
                  "val_fraction": 0.1,
                  "lr_grid": {"probe": (1e-3, 3e-3, 1e-2), "full": (1e-4, 3e-4, 1e-3), "lora": (3e-4, 1e-3, 3e-3),
                              "dora": (3e-4, 1e-3, 3e-3), "nora": (3e-3, 1e-2, 3e-2), "nora++": (3e-4, 1e-3, 3e-3)},
                  "probe_per_class": 1, "max_values": 1_000_000, "tsne_methods": ("probe", "nora", "full"),
                  "tsne_classes": 10, "perplexity": 30.0, "analysis_per_class": 20, "knn": 10,
                  "cam_images": 500, "cam_show": 6, "cam_region": "centre", "ink_threshold": 0.5},
    },
    "10_loran": {
        # vision (classification, the Sinter sweep, NoRA++ vs LoRAN): the book ViT (paper: timm ViT-Tiny on
        # CIFAR) via nora.experiments.vit_transfer.fine_tune; every method at rank / alpha (chapter 04's LoRA convention:
        # 8 / 16, no dropout); epochs / batch_size per run, test accuracy after the last epoch only;
        # lr_grid: rates tried for QLoRA on a val_fraction split of search_task (one seed), the chosen
        # one is used by every method, as the released LoRAN runs share QLoRA's training arguments;
        # class_task / sweep_task / h2h_task: the task of each part; train_per_class / test_per_class:
        # cap per class (None = all); sinter_sweep: (A, omega) pairs besides the released (5e-5, 1e4);
        # sine_frequencies: omega of the sine-activated low-rank peer; h2h_lr_grid: the rates tried for
        # LoRA on all four linears (the head-to-head's linear reference) the same way, used by NoRA++,
        # LoRAN and LoRA there (rank 8 on four layers diverges at rates q, v-only adapters prefer).
        # llm: the generation part. book / smoke: the tiny LLaMA of nora.experiments.llm.pretrain quantized to NF4,
        # generated dialogues (nora.experiments.llm.summarize): samples train / val_samples validation (practice
        # entities) / test_samples test (exam entities); paper: Llama-2-7b NF4 on SAMSum and 20
        # Newsgroups (tasks; None samples = the whole split). rank / alpha / dropout: the adapter on
        # q_proj, v_proj (paper: the released 64 / 16 / 0.2; book: rank 8 at the paper's alpha / rank
        # = 1/4, dropout 0.2); steps (or epochs), batch_size, lr_grid (QLoRA's search on the validation
        # dialogues; paper: one rate, QLoRA's usual 2e-4, no search), cutoff: max tokens per example;
        # max_new_tokens per task.
        "smoke": {"rank": 8, "alpha": 16.0, "epochs": 1, "batch_size": 32, "amp": False, "train_per_class": 4,
                  "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25, "lr_grid": (3e-3, 1e-2),
                  "class_task": "mnist20", "sweep_task": "digits10", "h2h_task": "mnist20",
                  "sinter_sweep": ((0.5, 1e4),), "sine_frequencies": (200.0,), "h2h_lr_grid": (3e-3, 1e-2),
                  "llm": {"tasks": ("dialogues",), "samples": 16, "val_samples": 4, "test_samples": 4, "steps": 2,
                          "batch_size": 4, "lr_grid": (1e-2, 3e-2), "rank": 4, "alpha": 1.0, "dropout": 0.2,
                          "warmup_ratio": 0.0, "cutoff": 256, "max_new_tokens": {"dialogues": 8}, "eval_batch_size": 8}},
        "book": {"rank": 8, "alpha": 16.0, "epochs": 4, "batch_size": 32, "amp": False, "train_per_class": None,
                 "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2, "lr_grid": (3e-3, 1e-2, 3e-2),
                 "class_task": "mnist20", "sweep_task": "digits10", "h2h_task": "mnist20",
                 "sinter_sweep": ((0.5, 1e4), (0.5, 1e2)), "sine_frequencies": (200.0,), "h2h_lr_grid": (1e-3, 3e-3, 1e-2),
                 "llm": {"tasks": ("dialogues",), "samples": 1200, "val_samples": 60, "test_samples": 100, "steps": 150,
                         "batch_size": 8, "lr_grid": (1e-2, 3e-2, 6e-2), "rank": 8, "alpha": 2.0, "dropout": 0.2,
                         "warmup_ratio": 0.03, "cutoff": 256, "max_new_tokens": {"dialogues": 40}, "eval_batch_size": 50}},
        "paper": {"rank": 8, "alpha": 16.0, "epochs": 50, "batch_size": 256, "amp": True, "num_workers": 8,
                  "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
                  "lr_grid": (3e-4, 1e-3, 3e-3), "class_task": "cifar100", "sweep_task": "cifar10", "h2h_task": "cifar100",
                  "sinter_sweep": ((0.5, 1e4), (0.5, 1e2)), "sine_frequencies": (200.0,), "h2h_lr_grid": (3e-4, 1e-3, 3e-3),
                  "llm": {"tasks": ("samsum", "newsgroups"), "samples": None, "val_samples": None, "test_samples": None,
                          "epochs": 1.0, "batch_size": 16, "lr_grid": (2e-4,), "rank": 64, "alpha": 16.0, "dropout": 0.2,
                          "warmup_ratio": 0.03, "cutoff": 1024, "max_new_tokens": {"samsum": 64, "newsgroups": 12},
                          "eval_batch_size": 16, "bf16": True}},
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
