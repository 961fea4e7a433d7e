"""End-to-end ViT-Tiny training step and inference: GELU vs NoRA (unmerged) vs NoRA merged, side by side.

    python benchmarks/vit_step.py [--batch 64] [--img 32] [--patch 4] [--repeats 5]

Prints each path's median time and its ratio to the GELU model, measured interleaved in one run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import nora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import timm

    torch.manual_seed(0)
    gelu = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=args.img, patch_size=args.patch)
    noramodel = nora.apply_nora(copy.deepcopy(gelu), nora.NoraConfig(trainable=["head"]))
    merged = nora.merge(copy.deepcopy(noramodel))
    gelu_full = copy.deepcopy(gelu)  # every weight trainable: backward runs through all blocks, as NoRA's must
    x = torch.randn(args.batch, 3, args.img, args.img)
    y = torch.randint(0, 10, (args.batch,))

    def train_step(model):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def infer(model):
        model.eval()
        with torch.no_grad():
            model(x)

    cases = {
        "train gelu (full bwd)": (train_step, gelu_full),
        "train gelu (head only)": (train_step, gelu),
        "train nora": (train_step, noramodel),
        "infer gelu": (infer, gelu),
        "infer nora unmerged": (infer, noramodel),
        "infer nora merged": (infer, merged),
    }
    gelu.requires_grad_(False)
    gelu.head.requires_grad_(True)
    times = {k: [] for k in cases}
    for fn, model in cases.values():
        fn(model)
    for _ in range(args.repeats):
        for name, (fn, model) in cases.items():
            t0 = time.perf_counter()
            fn(model)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ViT-Tiny img {args.img} patch {args.patch} batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, t in med.items():
        base = med["train gelu (full bwd)"] if name.startswith("train") else med["infer gelu"]
        print(f"{name:24s} {1e3 * t:8.1f} ms  {t / base:5.2f}x GELU")


if __name__ == "__main__":
    main()
