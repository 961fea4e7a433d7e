"""A downstream classification task: train and test sets, classes, and the splits the notebooks need.

``Task`` wraps two map-style datasets of ``(image, label)`` pairs (tensors for the embedded tasks,
torchvision datasets for CIFAR).  ``validation_split`` carves a stratified validation set out of
the *training* set (for learning-rate search; the test set is never looked at), ``subset`` draws a
stratified subset of each split (smaller profiles).  Both are seeded and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = ["MEAN", "STD", "Task", "as_tensor_dataset", "dataset_labels", "stratified_indices"]

# Every backbone in this book sees images normalised with mean 0.5 and std 0.5 per channel: the
# normalisation of timm's augreg ViT-Tiny (paper profile), used for the book's own pre-training too.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def dataset_labels(data: Dataset) -> np.ndarray:
    """The labels of a dataset without loading its images (TensorDataset, torchvision datasets, Subset)."""
    if isinstance(data, Subset):
        return dataset_labels(data.dataset)[np.asarray(data.indices)]
    if isinstance(data, TensorDataset):
        return data.tensors[1].numpy()
    targets = getattr(data, "targets", None)
    if targets is not None:
        return np.asarray(targets)
    return np.asarray([int(data[i][1]) for i in range(len(data))])


def stratified_indices(labels: np.ndarray, per_class: int | dict[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (chosen, rest): ``per_class`` examples of every class chosen at random (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = per_class[int(c)] if isinstance(per_class, dict) else per_class
        if k > idx.size:
            raise ValueError(f"per_class={k} exceeds the {idx.size} examples of class {int(c)}")
        chosen.append(rng.permutation(idx)[:k])
    chosen_idx = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(labels.size), chosen_idx)
    return chosen_idx, rest


@dataclass
class Task:
    """A classification task: ``train`` / ``test`` datasets of (image, label), ``classes`` names."""

    name: str
    train: Dataset
    test: Dataset
    classes: tuple[str, ...]
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"Task({self.name!r}: {self.num_classes} classes, {len(self.train)} train, {len(self.test)} test)"

    def validation_split(self, fraction: float = 0.2, seed: int = 0) -> Task:
        """A task whose train set is the rest of ``train`` and whose test set is a stratified ``fraction`` of it."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
        labels = dataset_labels(self.train)
        counts = np.bincount(labels, minlength=self.num_classes)
        per_class = {c: max(1, int(round(fraction * n))) for c, n in enumerate(counts) if n}
        val, rest = stratified_indices(labels, per_class, seed)
        return replace(self, name=f"{self.name}-val", train=Subset(self.train, rest.tolist()),
                       test=Subset(self.train, val.tolist()),
                       description=f"{self.description} (validation split: {fraction:.0%} of train)")

    def subset(self, train_per_class: int | None = None, test_per_class: int | None = None, seed: int = 0) -> Task:
        """A smaller task: at most ``train_per_class`` / ``test_per_class`` examples of each class."""
        out = self
        for split, k in (("train", train_per_class), ("test", test_per_class)):
            if k is None:
                continue
            if not isinstance(k, int) or k < 1:
                raise ValueError(f"{split}_per_class must be a positive int or None, got {k!r}")
            data = getattr(self, split)
            labels = dataset_labels(data)
            counts = np.bincount(labels, minlength=self.num_classes)
            chosen, _ = stratified_indices(labels, {c: min(k, n) for c, n in enumerate(counts) if n}, seed)
            out = replace(out, **{split: Subset(data, chosen.tolist())})
        return out


def as_tensor_dataset(images: torch.Tensor, labels: torch.Tensor) -> TensorDataset:
    """Normalise images in [0, 1] with ``MEAN``/``STD`` and pair them with int64 labels."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return TensorDataset(((images - mean) / std).float().contiguous(), labels.long())
