"""The run store: finished runs are kept and not run again, keyed by the code and the arguments; the shift augmentation."""

import pickle

import pytest
import torch

from nora.experiments import run_store
from nora.experiments.augment import random_shift
from nora.experiments.data.tasks import Task, as_tensor_dataset
from nora.experiments.parallel import run_parallel
from nora.experiments.run_store import RUN_CACHE_ENV, RunStore, job_key, provenance
from nora.experiments.train import TrainConfig, train

CALLS: list[int] = []


def _count(x):
    CALLS.append(x)
    return {"x": x, "square": x * x}


def _square(x):
    return x * x


def _fail_on_two(x):
    if x == 2:
        raise RuntimeError("job 2 fails")
    CALLS.append(x)
    return x


def _task(fill=0.0) -> Task:
    images = torch.zeros(6, 3, 4, 4) + fill
    data = as_tensor_dataset(images, torch.tensor([0, 1, 0, 1, 0, 1]))
    return Task(name="t", train=data, test=data, classes=("a", "b"), description="test")


def test_a_stored_job_is_not_run_again_and_gives_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path / "store"))
    CALLS.clear()
    first = run_parallel(_count, [{"x": i} for i in range(3)], workers=1)
    assert CALLS == [0, 1, 2]
    again = run_parallel(_count, [{"x": i} for i in (2, 0, 5)], workers=1)
    assert CALLS == [0, 1, 2, 5]                      # only the new job ran
    assert again == [first[2], first[0], {"x": 5, "square": 25}]
    assert not list((tmp_path / "store").rglob("*.tmp"))
    entries = RunStore(tmp_path / "store").entries([job_key(_count, {"x": 0})])
    assert entries[0]["torch"] == torch.__version__ and entries[0]["seconds"] >= 0
    assert sum(provenance().values()) >= 4


def test_side_by_side_jobs_are_stored_too(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path))
    assert run_parallel(_square, [{"x": i} for i in range(4)], workers=2) == [0, 1, 4, 9]
    store = RunStore(tmp_path)
    assert [store.get(job_key(_square, {"x": i})) for i in range(4)] == [(True, i * i) for i in range(4)]


def test_jobs_finished_before_a_failure_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_CACHE_ENV, str(tmp_path))
    CALLS.clear()
    with pytest.raises(RuntimeError, match="job 2 fails"):
        run_parallel(_fail_on_two, [{"x": i} for i in range(4)], workers=1)
    store = RunStore(tmp_path)
    assert store.get(job_key(_fail_on_two, {"x": 0})) == (True, 0)
    assert store.get(job_key(_fail_on_two, {"x": 1})) == (True, 1)
    assert store.get(job_key(_fail_on_two, {"x": 2})) == (False, None)


def test_without_the_variable_nothing_is_stored(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_CACHE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    CALLS.clear()
    run_parallel(_count, [{"x": 1}], workers=1)
    run_parallel(_count, [{"x": 1}], workers=1)
    assert CALLS == [1, 1] and not list(tmp_path.iterdir())
    assert provenance() == {}


def test_keys_follow_the_arguments_content_and_the_code(monkeypatch):
    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-3)
    key = job_key(_square, {"task": _task(), "config": cfg})
    assert key == job_key(_square, {"task": _task(), "config": TrainConfig(epochs=1, batch_size=2, lr=1e-3)})
    assert key != job_key(_square, {"task": _task(fill=1.0), "config": cfg})          # other image bytes
    assert key != job_key(_square, {"task": _task(), "config": cfg.replace(lr=2e-3)})  # another config
    assert key != job_key(_count, {"task": _task(), "config": cfg})                    # another function
    assert key == job_key(_square, {"task": _task(), "config": cfg.replace(device="cuda")})  # where, not what
    monkeypatch.setattr(run_store, "code_digest", lambda: "other code")
    assert key != job_key(_square, {"task": _task(), "config": cfg})                   # other code
    with pytest.raises(TypeError, match="cannot key"):
        job_key(_square, {"x": object()})


def test_numpy_arguments_are_keyed_by_dtype_shape_and_content():
    import numpy as np

    a = np.arange(6, dtype=np.int64)
    key = job_key(_square, {"idx": a})
    assert key == job_key(_square, {"idx": np.arange(6, dtype=np.int64)})
    assert key != job_key(_square, {"idx": np.arange(6, dtype=np.int32)})        # dtype
    assert key != job_key(_square, {"idx": a.reshape(2, 3)})                     # shape
    assert key != job_key(_square, {"idx": np.array([0, 1, 2, 3, 4, 6])})        # content
    assert job_key(_square, {"x": np.float64(0.5)}) != job_key(_square, {"x": np.float64(0.25)})
    labels = np.array(["a", {"k": 1}], dtype=object)
    assert job_key(_square, {"x": labels}) == job_key(_square, {"x": np.array(["a", {"k": 1}], dtype=object)})


def test_the_code_digest_leaves_out_the_presentation_modules(tmp_path):
    pkg = tmp_path / "nora"
    (pkg / "experiments").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "experiments" / "claims.py").write_text("claims = 1\n")
    before = run_store.code_digest.__wrapped__(pkg)
    (pkg / "experiments" / "claims.py").write_text("claims = 2\n")
    assert run_store.code_digest.__wrapped__(pkg) == before
    (pkg / "a.py").write_text("x = 2\n")
    assert run_store.code_digest.__wrapped__(pkg) != before


def test_a_store_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match=RUN_CACHE_ENV):
        RunStore(tmp_path / "f")


def test_stored_entries_are_plain_pickles(tmp_path):
    store = RunStore(tmp_path)
    store.put("ab" * 32, {"acc": 1.0}, 0.5)
    with open(tmp_path / "ab" / f"{'ab' * 32}.pkl", "rb") as f:
        assert pickle.load(f)["result"] == {"acc": 1.0}


def test_random_shift_translates_the_batch_and_fills_with_each_channels_background():
    x = torch.zeros(2, 2, 5, 5)
    x[:, 1] -= 1.0                      # channel 1's background is -1
    x[:, :, 2, 2] = 5.0                 # one bright pixel in the middle
    gen = torch.Generator().manual_seed(0)
    moved = [random_shift(x, 1, gen) for _ in range(30)]
    assert all(m.shape == x.shape for m in moved)
    spots = {tuple(torch.nonzero(m[0, 0] == 5.0)[0].tolist()) for m in moved}
    assert spots <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(spots) > 3
    for m in moved:                     # no pixel outside {background, the bright one}
        assert set(m[:, 1].unique().tolist()) <= {-1.0, 5.0} and set(m[:, 0].unique().tolist()) <= {0.0, 5.0}
    assert random_shift(x, 0, gen) is x
    with pytest.raises(ValueError, match="max_shift"):
        random_shift(x, -1, gen)
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_shift(x[0], 1, gen)


def test_train_with_shift_is_seeded_and_shift_zero_changes_nothing():
    task = _task()
    task.train.tensors[0][:, :, 1, 1] = torch.arange(6).float()[:, None]
    def run(shift):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
        return train(model, task.train, None, TrainConfig(epochs=3, batch_size=2, lr=1e-2, shift=shift), seed=1)
    assert run(1).loss_curve == run(1).loss_curve
    assert run(1).loss_curve != run(0).loss_curve
    with pytest.raises(ValueError, match="shift"):
        TrainConfig(shift=-1)
