"""The paper's downstream tasks: CIFAR-10 and CIFAR-100 through torchvision (paper profile only).

``cifar_task("cifar10", root, download=True)`` returns a :class:`~nora.experiments.data.tasks.Task` whose
images are resized from 32 px to the backbone's ``img_size`` (224 for ViT-Tiny/16, Sec. 4.1.1),
normalised with mean = std = 0.5 (timm's augreg ViT-Tiny), and randomly flipped horizontally in
training (the paper states no augmentation; the flip is ours and said here).

``verify=False`` accepts a copy of the data in the original pickle format whose files do not
carry torchvision's MD5 checksums (a re-packed mirror, or the small fakes the tests write);
the default checks them as torchvision does.  Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

from pathlib import Path

from nora.experiments.data.tasks import MEAN, STD, Task

__all__ = ["CIFAR_NAMES", "cifar_task"]

CIFAR_NAMES = ("cifar10", "cifar100")


def _dataset_class(name: str, verify: bool):
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if name == "cifar10" else CIFAR100
    if verify:
        return base

    class Unverified(base):  # same files and format, existence checked instead of MD5
        train_list = [[f, None] for f, _ in base.train_list]
        test_list = [[f, None] for f, _ in base.test_list]
        meta = {**base.meta, "md5": None}

    Unverified.__name__ = f"Unverified{base.__name__}"
    return Unverified


def cifar_task(name: str, root: str | Path, *, download: bool = False, img_size: int = 224, augment: bool = True,
               verify: bool = True) -> Task:
    """CIFAR-10 or CIFAR-100 (``name``) from ``root`` as a Task at ``img_size`` px (see the module docstring)."""
    if name not in CIFAR_NAMES:
        raise ValueError(f"name must be one of {CIFAR_NAMES}, got {name!r}")
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < 8:
        raise ValueError(f"img_size must be an int >= 8, got {img_size!r}")
    from torchvision import transforms as T

    cls = _dataset_class(name, verify)
    resize = [T.Resize(img_size, interpolation=T.InterpolationMode.BICUBIC)] if img_size != 32 else []
    tail = [T.ToTensor(), T.Normalize(MEAN, STD)]
    train_tf = T.Compose(resize + ([T.RandomHorizontalFlip()] if augment else []) + tail)
    test_tf = T.Compose(resize + tail)
    try:
        train = cls(str(root), train=True, transform=train_tf, download=download)
        test = cls(str(root), train=False, transform=test_tf, download=download)
    except RuntimeError as err:
        raise ValueError(f"root={str(root)!r}: no usable {name} data there ({err}); pass download=True "
                         "(paper profile) or verify=False for a copy without torchvision's checksums") from err
    n_classes = 10 if name == "cifar10" else 100
    return Task(name=name, train=train, test=test, classes=tuple(train.classes[:n_classes]),
                description=f"{name.upper()} (torchvision), 32 px resized to {img_size} px")
