"""Chapter 04's tools: runs side by side, the head's own rate, the search's rule, ceilings, the two backbones."""

import math

import pytest
import torch

from nora.experiments import backbone
from nora.experiments.ceilings import SmallCNN, cnn_accuracy, cnn_search, knn_accuracy
from nora.experiments.data.tasks import Task, as_tensor_dataset
from nora.experiments.parallel import WORKERS_ENV, default_workers, run_parallel
from nora.experiments.train import TrainConfig, train
from nora.experiments.vit_transfer import best_rate, fine_tune_many


def _blobs(n_per_class=12, classes=3, seed=0, size=16) -> Task:
    """Each class a bright square at its own place: trivially separable, for ceilings and quick runs."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(classes):
        for _ in range(n_per_class):
            img = torch.rand(3, size, size, generator=gen) * 0.2
            img[:, 2 + 4 * c:6 + 4 * c, 4:10] = 1.0
            images.append(img)
            labels.append(c)
    data = as_tensor_dataset(torch.stack(images), torch.tensor(labels))
    return Task(name="blobs", train=data, test=data, classes=tuple(map(str, range(classes))), description="test")


def _square(x):
    return x * x


def _fail(x):
    if x == 2:
        raise RuntimeError("job 2 failed")
    return x


def test_run_parallel_keeps_job_order_and_raises_a_jobs_error():
    assert run_parallel(_square, [{"x": i} for i in range(5)], workers=2) == [0, 1, 4, 9, 16]
    assert run_parallel(_square, [{"x": 3}], workers=1) == [9]
    with pytest.raises(RuntimeError, match="job 2 failed"):
        run_parallel(_fail, [{"x": i} for i in range(4)], workers=2)
    with pytest.raises(ValueError, match="workers"):
        run_parallel(_square, [{"x": 1}], workers=0)


def test_default_workers_reads_the_environment(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        default_workers()
    monkeypatch.delenv(WORKERS_ENV)
    assert default_workers() == max(1, torch.get_num_threads())


def test_fine_tuning_side_by_side_gives_the_numbers_of_one_at_a_time():
    task = _blobs()
    # weights=False: the smoke architecture randomly initialised (spawned workers see no test monkeypatch)
    jobs = [dict(method=m, task=task, config=TrainConfig(epochs=2, batch_size=8, lr=3e-3), profile="smoke", seed=s,
                 weights=False) for m in ("nora", "probe") for s in (0, 1)]
    apart = fine_tune_many(jobs, workers=2)
    alone = fine_tune_many(jobs, workers=1)
    assert [r.loss_curve for r in apart] == [r.loss_curve for r in alone]   # one thread each: bit for bit
    assert [r.extra["method"] for r in apart] == ["nora", "nora", "probe", "probe"]


def test_head_lr_gives_the_head_its_own_rate_and_none_changes_nothing():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.arange(16) % 2)


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.body, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2)
    plain, same = Net(), Net()
    train(plain, data, None, cfg, seed=0)
    train(same, data, None, cfg.replace(head_lr=1e-2), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), same.state_dict().values()))
    frozen_head = Net()
    before = frozen_head.head.weight.detach().clone()
    train(frozen_head, data, None, cfg.replace(head_lr=1e-12), seed=0)
    assert torch.allclose(frozen_head.head.weight, before, atol=1e-9)   # a tiny head rate: the head barely moves
    assert not torch.equal(frozen_head.body.weight, Net().body.weight)   # the body trained at lr
    with pytest.raises(ValueError, match="head_lr"):
        TrainConfig(head_lr=0.0)
    with pytest.raises(ValueError, match="head"):
        train(torch.nn.Linear(4, 2), data, None, cfg.replace(head_lr=1e-3), seed=0)


def test_best_rate_ignores_diverged_runs_and_breaks_ties_low():
    trials = [{"method": "nora", "lr": 0.1, "val_accuracy": 80.0}, {"method": "nora", "lr": 0.03, "val_accuracy": 80.0},
              {"method": "nora", "lr": 1.0, "val_accuracy": math.nan}]
    assert best_rate(trials) == 0.03
    with pytest.raises(FloatingPointError, match="diverged"):
        best_rate([{"method": "nora", "lr": 1.0, "val_accuracy": math.nan}])


def test_ceilings_learn_a_separable_task_and_pick_rates_from_the_grid():
    task = _blobs()
    acc, k = knn_accuracy(task)
    assert acc == 100.0 and k in (1, 3, 5, 7)
    assert cnn_accuracy(task, min_steps=30, min_epochs=1, seed=0) > 90.0
    lr, scores = cnn_search(task, (1e-3, 3e-3), val_fraction=0.25, min_steps=10, min_epochs=1)
    assert lr in (1e-3, 3e-3) and set(scores) == {1e-3, 3e-3}
    assert SmallCNN(5)(torch.zeros(2, 1, 16, 16)).shape == (2, 5)
    with pytest.raises(ValueError, match="2 training images"):
        knn_accuracy(_blobs(n_per_class=1))


def test_the_shapes_backbone_is_still_shipped_and_checked():
    spec = backbone.backbone_spec("shapes")
    path = backbone.checkpoint_path("shapes")
    assert path.name == "vit-book.safetensors" and backbone.sha256(path) == backbone.RECORDED_SHA256["shapes"]
    model = backbone.pretrained_vit("shapes", 10)
    assert len(model.blocks) == spec.depth == 6 and model.head.out_features == 10
    assert backbone.load_manifest("shapes")["source_test_accuracy"] == pytest.approx(41.625)
