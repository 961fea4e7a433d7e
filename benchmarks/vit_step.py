"""End-to-end ViT-Tiny training step and inference: GELU vs NoRA (unmerged) vs NoRA merged, side by side.

    python benchmarks/vit_step.py [--batch 64] [--img 32] [--patch 4] [--repeats 7] [--eager] [--system-malloc]

Training baselines: "gelu (matched bwd)" freezes everything but the head and ``pos_embed``, so
its backward runs through every block like NoRA's (which trains only the coefficient factors
and the head) without weight gradients: the same step with GELU in place of the rational.
"gelu (full bwd)" also computes every weight gradient (full fine-tuning). ``--eager`` adds the
NoRA rows forced onto the eager path. Each case's median time and its ratio to the GELU model,
measured interleaved (rotating order) in one run, with glibc keeping freed memory
(``steady_malloc.py``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import steady_malloc  # benchmarks/steady_malloc.py

steady_malloc.reexec_with_steady_malloc()  # before torch: it may re-exec this script

import torch  # noqa: E402

import nora
from nora import kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--eager", action="store_true", help="also time NoRA on the eager path")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's malloc defaults (steady_malloc.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm

    torch.manual_seed(0)
    gelu = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=args.img, patch_size=args.patch)
    noramodel = nora.apply_nora(copy.deepcopy(gelu), nora.NoraConfig(trainable=["head"]))
    merged = nora.merge(copy.deepcopy(noramodel))
    gelu_full = copy.deepcopy(gelu)  # every weight trainable
    gelu.requires_grad_(False)
    gelu.head.requires_grad_(True)
    gelu.pos_embed.requires_grad_(True)  # backward reaches block 0, as NoRA's does
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

    def eager(fn):
        def call(model):
            with kernels.use("eager"):
                fn(model)

        return call

    cases = {
        "train gelu (matched bwd)": (train_step, gelu),
        "train gelu (full bwd)": (train_step, gelu_full),
        "train nora": (train_step, noramodel),
        "infer gelu": (infer, gelu),
        "infer nora unmerged": (infer, noramodel),
        "infer nora merged": (infer, merged),
    }
    if args.eager:
        cases["train nora (eager)"] = (eager(train_step), noramodel)
        cases["infer nora merged (eager)"] = (eager(infer), merged)
    names = list(cases)
    times = {k: [] for k in names}
    for fn, model in cases.values():
        fn(model)
    for i in range(args.repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            fn, model = cases[name]
            t0 = time.perf_counter()
            fn(model)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"ViT-Tiny img {args.img} patch {args.patch} batch {args.batch}, {torch.get_num_threads()} threads, "
        f"median of {args.repeats} interleaved repeats; rational backend: {kernels.requested()}; "
        f"malloc: {'freed memory kept' if steady_malloc.active() else 'system defaults'}"
    )
    for name, t in med.items():
        base = med["train gelu (matched bwd)"] if name.startswith("train") else med["infer gelu"]
        spread = max(times[name]) - min(times[name])
        print(f"{name:28s} {1e3 * t:8.1f} ms (range {1e3 * spread:6.1f})  {t / base:5.2f}x GELU")


if __name__ == "__main__":
    main()
