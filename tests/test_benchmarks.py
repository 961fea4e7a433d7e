"""The benchmark scripts run (tiny shapes, one or two repeats) and print every contender's row.

Their numbers are not checked: speed targets live in benchmarks/RESULTS.md, measured by hand.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_rational_vs_gelu_prints_every_path_under_the_steady_malloc():
    out = run("rational_vs_gelu.py", "--shape", "2", "5", "16", "--groups", "4", "--repeats", "2", "--no-compile")
    assert "malloc: freed memory kept" in out
    rows = {line.split("  ")[0].strip(): line.split()[-6:] for line in out.splitlines()[-4:]}
    assert set(rows) == {"gelu", "nora default", "nora eager", "naive torch ops"}
    assert rows["gelu"][1] == "1.00" and all(float(v[0]) > 0 for v in rows.values())


def test_rational_vs_gelu_can_keep_the_system_malloc():
    out = run("rational_vs_gelu.py", "--shape", "2", "3", "8", "--groups", "2", "--repeats", "1", "--no-compile",
              "--no-naive", "--system-malloc")
    assert "malloc: system defaults" in out


def test_vit_step_prints_training_and_inference_rows():
    pytest.importorskip("timm")
    out = run("vit_step.py", "--batch", "2", "--img", "16", "--patch", "8", "--repeats", "1", "--eager")
    names = ["train gelu (matched bwd)", "train gelu (full bwd)", "train nora", "infer gelu", "infer nora unmerged",
             "infer nora merged", "train nora (eager)", "infer nora merged (eager)"]
    for name in names:
        assert any(line.startswith(name + " ") for line in out.splitlines()), (name, out)


def test_triton_benchmark_exits_cleanly_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the benchmark would run for real")
    out = run("triton_rational.py")
    assert out.startswith("skipped: needs a CUDA device")
