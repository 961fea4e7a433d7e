"""Vision data: the generated source task, the embedded digits tasks, splits, and CIFAR on small fakes."""

from __future__ import annotations

import pickle
from pathlib import Path

import nora  # noqa: F401  (first: torchvision imports next to the CPU torch)
import numpy as np
import pytest
import torch

from nora.experiments.data import downstream_tasks
from nora.experiments.data.cifar import cifar_task
from nora.experiments.data.digits import digits10, mnist20, slant
from nora.experiments.data.synthetic import CLASSES, render, sample, synthetic_batch
from nora.experiments.data.tasks import Task, dataset_labels


# ------------------------------------------------------------------------------------ synthetic


def test_synthetic_images_are_a_pure_function_of_the_seed():
    a, la = synthetic_batch(seed=3, step=7, batch=48)
    b, lb = synthetic_batch(seed=3, step=7, batch=48)
    c, _ = synthetic_batch(seed=3, step=8, batch=48)
    assert a.shape == (48, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_every_class_renders_a_visible_figure_with_varying_nuisances():
    labels = torch.arange(len(CLASSES)).repeat_interleave(4)
    images = render(labels, 16, torch.Generator().manual_seed(0))
    contrast = images.flatten(1).amax(1) - images.flatten(1).amin(1)
    assert (contrast > 0.3).all()  # foreground and background differ (contrast is enforced)
    per_class = images.view(len(CLASSES), 4, -1)
    # the four draws of one class differ (position, size, rotation, colours, noise are random)
    assert all(not torch.allclose(per_class[c, 0], per_class[c, 1]) for c in range(len(CLASSES)))


def test_filled_figures_cover_more_than_strokes():
    gen = torch.Generator().manual_seed(1)

    def ink(name):  # fraction of pixels far from the image's border colour (the background)
        imgs = render(torch.full((64,), CLASSES.index(name)), 16, gen)
        border = torch.cat([imgs[:, :, 0, :], imgs[:, :, -1, :]], dim=2).median(dim=2).values
        far = (imgs - border[:, :, None, None]).abs().mean(1) > 0.25
        return far.float().mean().item()

    assert ink("disk") > 2 * ink("segment")
    assert ink("disk") > ink("ring") > ink("segment") / 2


def test_render_rejects_bad_labels_and_sizes():
    with pytest.raises(ValueError, match="labels"):
        render(torch.tensor([0, len(CLASSES)]))
    with pytest.raises(ValueError, match="labels"):
        render(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="size"):
        render(torch.tensor([0]), size=2)
    with pytest.raises(ValueError, match="n must"):
        sample(0)


# --------------------------------------------------------------------------------------- digits


def test_digits10_is_the_easy_task_with_fixed_stratified_splits():
    task = digits10()
    assert task.num_classes == 10 and len(task.train) == 1000 and len(task.test) == 797
    assert np.bincount(dataset_labels(task.train)).tolist() == [100] * 10
    x, _ = task.train.tensors
    assert x.shape[1:] == (3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey copied to 3 channels
    assert x.min() >= -1 and x.max() <= 1  # normalised with mean = std = 0.5
    assert digits10() is task  # built once per process


def test_slant_measures_shear():
    img = np.zeros((1, 28, 28))
    img[0, 4:24, 13:15] = 1.0                       # a vertical bar
    sheared = np.zeros((1, 28, 28))
    for row in range(4, 24):                         # top to the right: x grows as y shrinks
        col = 14 + (14 - row) // 3
        sheared[0, row, col - 1:col + 1] = 1.0
    assert abs(slant(img)[0]) < 1e-9
    assert slant(sheared)[0] < -0.2
    assert slant(sheared[:, :, ::-1].copy())[0] > 0.2  # the mirror image leans the other way


def test_mnist20_splits_each_digit_by_slant():
    task = mnist20()
    assert task.num_classes == 20 and len(task.train) == 1200 and len(task.test) == 1000
    train_labels = dataset_labels(task.train)
    assert np.bincount(train_labels).tolist() == [60] * 20  # median split of 120 per digit
    test_labels = dataset_labels(task.test)
    assert np.bincount(test_labels // 2).tolist() == [100] * 10
    # the label's half really is the slant: measured again on the (resized) test images, the
    # "right-leaning" half of every digit has a higher mean slant than the "left-leaning" half
    x = task.test.tensors[0][:, 0].numpy() * 0.5 + 0.5
    s = slant(x)
    for d in range(10):
        left, right = s[test_labels == 2 * d], s[test_labels == 2 * d + 1]
        assert right.mean() > left.mean(), d


def test_validation_split_is_stratified_disjoint_and_leaves_test_alone():
    task = mnist20()
    val = task.validation_split(0.2, seed=0)
    assert len(val.train) + len(val.test) == len(task.train)
    assert set(val.train.indices).isdisjoint(val.test.indices)
    assert np.bincount(dataset_labels(val.test)).tolist() == [12] * 20
    assert val.train.dataset is task.train and val.test.dataset is task.train  # test set never used
    assert task.validation_split(0.2, seed=0).test.indices == val.test.indices
    with pytest.raises(ValueError, match="fraction"):
        task.validation_split(1.0)


def test_subset_caps_each_class():
    task = digits10().subset(train_per_class=3, test_per_class=2, seed=1)
    assert np.bincount(dataset_labels(task.train)).tolist() == [3] * 10
    assert np.bincount(dataset_labels(task.test)).tolist() == [2] * 10
    with pytest.raises(ValueError, match="train_per_class"):
        digits10().subset(train_per_class=0)


def test_downstream_tasks_of_the_embedded_profiles():
    tasks = downstream_tasks("book")
    assert list(tasks) == ["mnist10-20shot", "mnist20"]  # digits10 saturates on the glyph backbone (issue 16)
    assert all(isinstance(t, Task) for t in tasks.values())
    with pytest.raises(ValueError, match="profile"):
        downstream_tasks("laptop")


# ------------------------------------------------------------------------------ CIFAR on fakes


def _write_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, size=per_batch).tolist(), "batch_label": name}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, f)
    return folder


def _write_cifar100(root: Path, n: int = 6) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        entry = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, size=n).tolist(),
                 "coarse_labels": rng.integers(0, 20, size=n).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return folder


def test_cifar10_loader_reads_the_pickle_format(tmp_path: Path):
    _write_cifar10(tmp_path)
    task = cifar_task("cifar10", tmp_path, img_size=32, verify=False, augment=False)
    assert task.num_classes == 10 and task.classes[0] == "airplane"
    assert len(task.train) == 20 and len(task.test) == 4
    image, label = task.test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    # pixel (0, 0) of the first test image, channel 0, as written in the pickle, normalised
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    assert image[0, 0, 0].item() == pytest.approx((raw["data"][0, 0] / 255 - 0.5) / 0.5, abs=1e-6)
    assert label == raw["labels"][0]


def test_cifar_is_resized_to_the_backbone_resolution(tmp_path: Path):
    _write_cifar10(tmp_path, per_batch=1)
    task = cifar_task("cifar10", tmp_path, img_size=224, verify=False)
    assert task.train[0][0].shape == (3, 224, 224)


def test_cifar100_loader_uses_fine_labels(tmp_path: Path):
    _write_cifar100(tmp_path)
    task = cifar_task("cifar100", tmp_path, img_size=32, verify=False)
    assert task.num_classes == 100 and len(task.train) == 6 and task.classes[:2] == ("class0", "class1")
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    assert [task.train[i][1] for i in range(6)] == raw["fine_labels"]


def test_cifar_checksums_are_checked_by_default_and_nothing_downloads(tmp_path: Path):
    _write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="root="):
        cifar_task("cifar10", tmp_path, img_size=32)  # the fakes do not carry torchvision's MD5s
    with pytest.raises(ValueError, match="root="):
        cifar_task("cifar100", tmp_path / "empty", img_size=32, verify=False)
    with pytest.raises(ValueError, match="name"):
        cifar_task("cifar1000", tmp_path)


def test_paper_profile_tasks_come_from_cifar(tmp_path: Path):
    _write_cifar10(tmp_path)
    _write_cifar100(tmp_path)
    tasks = downstream_tasks("paper", root=tmp_path, verify=False, img_size=32)
    assert list(tasks) == ["cifar10", "cifar100"]
    assert [t.num_classes for t in tasks.values()] == [10, 100]
