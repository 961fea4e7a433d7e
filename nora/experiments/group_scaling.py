"""Chapter 05, group scaling (``notebooks/05_group_scaling``): its sizes per profile.

The chapter fine-tunes with the transfer unit of chapter 04 (:mod:`nora.experiments.vit_transfer`:
``fine_tune``, ``lr_search``, ``compare``, ``epochs_to_converge``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROFILES"]

# The chapter's sizes per profile: nora.experiments.profiles.settings("05_group_scaling", profile) merges
# PROFILES[profile] over the defaults.
# groups: NoRA group counts G (rank 3, alpha 6) on the 8-group GELU-fitted rational; epochs /
# batch_size: every run (NoRA and full fine-tuning alike); lr_grid: rates tried for NoRA (G=8)
# and full fine-tuning on a val_fraction split of search_task; G > 8 reuse G=8's rate.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {"groups": (8, 16), "epochs": 2, "batch_size": 32, "amp": False, "train_per_class": 4,
              "test_per_class": 4, "search_task": "mnist20", "val_fraction": 0.25,
              "lr_grid": {"nora": (1e-2, 3e-2), "full": (3e-4, 1e-3)}},
    "book": {"groups": (8, 16, 32, 64), "epochs": 10, "batch_size": 32, "amp": False, "train_per_class": None,
             "test_per_class": None, "search_task": "mnist20", "val_fraction": 0.2,
             "lr_grid": {"nora": (3e-3, 1e-2, 3e-2), "full": (3e-4, 1e-3, 3e-3)}},
    "paper": {"groups": (8, 16, 32, 64), "epochs": 50, "batch_size": 256, "amp": True, "num_workers": 8,
              "train_per_class": None, "test_per_class": None, "search_task": "cifar100", "val_fraction": 0.1,
              "lr_grid": {"nora": (3e-3, 1e-2, 3e-2), "full": (1e-4, 3e-4, 1e-3)}},
}
