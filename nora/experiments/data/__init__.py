"""Data for the vision chapters: the generated source task, the embedded digits tasks, real CIFAR.

- :mod:`nora.experiments.data.synthetic` -- generated shapes/strokes/textures (book-profile pre-training);
- :mod:`nora.experiments.data.glyphs` -- generated Hershey-font glyphs, 127 classes (the ``glyphs`` backbone's source);
- :mod:`nora.experiments.data.digits` -- ``digits10`` and ``mnist20``, the embedded downstream tasks, and the
  harder few-shot candidates ``digits10_few`` / ``mnist10_few`` (issue 16);
- :mod:`nora.experiments.data.cifar` -- torchvision CIFAR-10/100 (paper profile, downloads when asked);
- :mod:`nora.experiments.data.tasks` -- the :class:`Task` they all return.

``downstream_tasks(profile)`` gives the pair a profile uses, easy task first.
"""

from __future__ import annotations

from pathlib import Path

from nora.experiments.data.tasks import MEAN, STD, Task, dataset_labels

__all__ = ["MEAN", "STD", "Task", "dataset_labels", "downstream_tasks"]

# The easy / hard downstream task of each profile (the paper's CIFAR-10 / CIFAR-100 roles).
# Book and smoke: since issue 16, MNIST's ten digits with 20 training images each (digits10 saturates at
# 99 % on the glyph backbone: it could no longer tell methods apart) and mnist20 (digit x slant).
TASK_NAMES = {"smoke": ("mnist10-20shot", "mnist20"), "book": ("mnist10-20shot", "mnist20"),
              "paper": ("cifar10", "cifar100")}


def downstream_tasks(profile: str, *, root: str | Path | None = None, download: bool = False, img_size: int | None = None,
                     verify: bool = True) -> dict[str, Task]:
    """The two downstream tasks of ``profile``, easy first: {name: Task}.

    ``book`` / ``smoke``: the embedded digits tasks ``mnist10-20shot`` and ``mnist20`` (no file, no network).  ``paper``: CIFAR-10 and
    CIFAR-100 under ``root`` (default ``~/.cache/nora/data``), downloaded only if ``download``.
    """
    from nora.experiments.profiles import resolve_profile

    profile = resolve_profile(profile)
    if profile == "paper":
        from nora.experiments.data.cifar import cifar_task

        folder = Path(root) if root is not None else Path.home() / ".cache" / "nora" / "data"
        return {n: cifar_task(n, folder, download=download, img_size=img_size or 224, verify=verify)
                for n in TASK_NAMES[profile]}
    from nora.experiments.data import digits

    size = img_size or digits.SIZE
    return {t.name: t for t in (digits.mnist10_few(size, per_class=20), digits.mnist20(size))}
