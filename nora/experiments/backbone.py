"""The pre-trained ViT every vision chapter starts from: ``pretrained_vit(profile, num_classes)``.

- ``paper``: timm's ``vit_tiny_patch16_224.augreg_in21k_ft_in1k`` (ImageNet-21k, fine-tuned on
  ImageNet-1k; 12 blocks, width 192, 3 heads, 224 px, patch 16), weights from the Hugging Face hub.
- ``book``: the ``glyphs`` backbone below (since issue 16).
- ``shapes`` (the book profile's backbone before issue 16, now the far-transfer contrast of chapter
  04): the same architecture at **16 px with patch 4** (16 patches + the class token) and **6 of
  ViT-Tiny's 12 blocks**, pre-trained by :func:`pretrain` on the
  generated 24-class shapes/strokes/textures task of :mod:`nora.experiments.data.synthetic` (the stand-in
  for ImageNet: the downstream digits never enter it): 60,000 images, 6 epochs, 41.6 % accuracy
  on 2,400 held-out generated images (chance 4.2 %).  The checkpoint is stored in float16
  (5.4 MB), small enough to ship with the package (``nora/experiments/checkpoints/``) with its provenance;
  its SHA-256 is recorded in ``RECORDED_SHA256`` and checked on load.
- ``smoke``: 2 blocks, pre-trained in seconds on a few thousand generated images, cached.
- ``glyphs`` (the ``book`` profile's backbone; issue 16): ViT-Tiny's full shape (**12 blocks**, width
  192, 3 heads, MLP 768) at 16 px with patch 4, pre-trained on the 127-class generated glyph source
  of :mod:`nora.experiments.data.glyphs` (Hershey stroke fonts, heavy augmentation, no digits), shipped as
  float16 safetensors shards under 10 MB each with its provenance (``nora/experiments/checkpoints/vit-glyphs/``,
  see :mod:`nora.experiments.glyph_backbone`); ``pretrained_vit("glyphs", num_classes)``.  Re-made by
  ``python -m nora.experiments.backbone pretrain --spec glyphs --out nora/experiments/checkpoints/vit-glyphs``.

Reproduce the shapes checkpoint (1,126 CPU-seconds at one thread, i.e. about 10-20 minutes on an
idle 2-core machine; 45 minutes on the shared one it was made on; same seed, same script)::

    python -m nora.experiments.backbone pretrain --spec shapes --out nora/experiments/checkpoints

Without a shipped checkpoint, ``pretrained_vit`` pre-trains on first use and caches the result in
``$NORA_CACHE`` (default ``~/.cache/nora``)/backbones.  Floating-point sums differ across CPUs,
thread counts and memory layouts, so a checkpoint re-made elsewhere may differ in its last bits
from the recorded one (a warning says so); the shipped file is what the committed notebooks used.

Loading is cheap after the first call: the weights are read once per process and copied into a
fresh model, with a fresh classification head (seeded) when ``num_classes`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from nora.experiments.glyph_backbone import GlyphPretrainConfig

__all__ = [
    "CACHE_ENV",
    "RECORDED_SHA256",
    "SPECS",
    "BackboneSpec",
    "backbone_spec",
    "PretrainConfig",
    "checkpoint_path",
    "create_vit",
    "load_manifest",
    "pretrain",
    "pretrained_vit",
]

CACHE_ENV = "NORA_CACHE"
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
# SHA-256 of the float16 safetensors file `python -m nora.experiments.backbone pretrain --profile book` wrote
# for the committed notebooks (see nora/experiments/checkpoints/vit-book.json for its provenance).
RECORDED_SHA256 = {"shapes": "7a276f1d9e87925508e904ae7e2a9218bcd61203867fdc6696d7883dcad3b8d2"}


@dataclass(frozen=True)
class PretrainConfig:
    """How a book/smoke backbone is pre-trained on the generated source task."""

    images: int
    test_images: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    seed: int


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture and provenance of a profile's backbone."""

    profile: str
    arch: str
    img_size: int
    patch_size: int
    depth: int
    source: str
    source_classes: int
    pretrain: PretrainConfig | None = None

    def timm_kwargs(self) -> dict:
        if self.profile == "paper":
            return {}
        return dict(img_size=self.img_size, patch_size=self.patch_size, depth=self.depth)


# ``source`` keeps the module path the book checkpoint was made with (nora.data, now
# nora.experiments.data): it is part of the spec recorded in the shipped provenance file, which
# loading compares with this one.
SPECS: dict[str, BackboneSpec] = {
    "paper": BackboneSpec("paper", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", 224, 16, 12,
                          "ImageNet-21k -> ImageNet-1k (timm hub weights)", 1000),
    "shapes": BackboneSpec("book", "vit_tiny_patch16_224", 16, 4, 6,
                         "nora.data.synthetic: 24 generated shape/stroke/texture classes", 24,
                         PretrainConfig(images=60_000, test_images=2_400, epochs=6, batch_size=64, lr=1e-3,
                                        weight_decay=0.05, warmup_epochs=0.5, seed=0)),
    "smoke": BackboneSpec("smoke", "vit_tiny_patch16_224", 16, 4, 2,
                          "nora.data.synthetic: 24 generated shape/stroke/texture classes", 24,
                          PretrainConfig(images=4_096, test_images=480, epochs=2, batch_size=64, lr=1e-3,
                                         weight_decay=0.05, warmup_epochs=0.2, seed=0)),
    # ViT-Tiny's full shape (12 blocks) pre-trained on the generated Hershey-font glyphs (nora.experiments.data.glyphs,
    # nora.experiments.glyph_backbone); a backbone name, not a profile: pretrained_vit("glyphs", ...).  Its
    # ``source`` names the module path it was pre-trained from (nora.data, before the move), like the book's.
    "glyphs": BackboneSpec("glyphs", "vit_tiny_patch16_224", 16, 4, 12,
                           "nora.data.glyphs: 127 classes of Hershey-font glyphs (no digits), drawn on the fly", 127,
                           GlyphPretrainConfig()),
}
# The book profile's backbone is the glyph one (issue 16); the 6-block shapes backbone it replaced stays
# as "shapes" (its spec still says profile "book": that is what its shipped provenance file records).
SPECS["book"] = SPECS["glyphs"]


def _spec(profile: str) -> BackboneSpec:
    if isinstance(profile, str) and profile in SPECS:  # a profile's backbone, or a backbone by name ("glyphs")
        return SPECS[profile]
    from nora.experiments.profiles import resolve_profile

    return SPECS[resolve_profile(profile)]


def backbone_spec(profile: str | None) -> BackboneSpec:
    """The spec of a profile's backbone (``book`` -> ``glyphs``) or of a backbone by name (``shapes``, ``glyphs``)."""
    return _spec(profile)


def _key(spec: BackboneSpec) -> str:
    """The name under which ``spec`` is in SPECS (its backbone name: ``shapes`` for the old book backbone)."""
    names = [name for name, s in SPECS.items() if s is spec]
    if not names:
        raise ValueError(f"backbone spec {spec.profile!r} is not in SPECS")
    return next((n for n in names if n == spec.profile), names[0])


def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nora") / "backbones"


def _file_name(profile: str) -> str:
    return f"vit-{profile}.safetensors"


def checkpoint_path(profile: str) -> Path | None:
    """Where ``pretrained_vit`` reads the profile's weights: the shipped file, else the cache (None for paper)."""
    spec = _spec(profile)
    if spec.pretrain is None:
        return None
    if isinstance(spec.pretrain, GlyphPretrainConfig):  # a sharded checkpoint: its index file
        from nora.experiments.glyph_backbone import INDEX_NAME, checkpoint_dir

        return checkpoint_dir(spec) / INDEX_NAME
    shipped = SHIPPED_DIR / _file_name(spec.profile)  # file names keep the spec's profile: vit-book.safetensors
    if shipped.is_file():
        return shipped
    return _cache_dir() / _file_name(spec.profile)


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_manifest(profile: str) -> dict | None:
    """The provenance JSON next to the profile's checkpoint (None if there is none yet)."""
    path = checkpoint_path(profile)
    if path is not None and isinstance(_spec(profile).pretrain, GlyphPretrainConfig):
        from nora.experiments.glyph_backbone import PROVENANCE_NAME

        path = path.parent / PROVENANCE_NAME
        return json.loads(path.read_text()) if path.is_file() else None
    if path is None or not path.with_suffix(".json").is_file():
        return None
    return json.loads(path.with_suffix(".json").read_text())


def create_vit(profile: str, num_classes: int | None = None, *, seed: int = 0, pretrained: bool = False) -> nn.Module:
    """The profile's ViT architecture, randomly initialised with ``seed`` (the global RNG is left alone).

    ``pretrained=True`` only matters for ``paper`` (timm downloads the hub weights).
    """
    import timm

    spec = _spec(profile)
    classes = spec.source_classes if num_classes is None else num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(spec.arch, pretrained=pretrained and spec.profile == "paper",
                                  num_classes=classes, **spec.timm_kwargs())
    return model


def _fresh_head(model: nn.Module, num_classes: int, seed: int) -> None:
    """Replace the classifier by a new Linear(dim, num_classes): weights N(0, 0.02) truncated, bias 0 (seeded)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model.reset_classifier(num_classes)
    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    with torch.no_grad():
        nn.init.trunc_normal_(model.head.weight, std=0.02, a=-0.04, b=0.04, generator=gen)
        nn.init.zeros_(model.head.bias)


@lru_cache(maxsize=4)
def _read_weights(path: str, mtime: float) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(path).items()}


def _same_spec(profile: str, path: Path) -> bool:
    """Whether the manifest next to a cached checkpoint was written for the current spec."""
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        return False
    return json.loads(manifest_path.read_text()).get("spec") == json.loads(json.dumps(asdict(_spec(profile))))


def _verify(profile: str, path: Path) -> None:
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        raise ValueError(f"checkpoint {path} has no provenance file {manifest_path.name}; re-run "
                         f"`python -m nora.experiments.backbone pretrain --profile {profile}`")
    manifest = json.loads(manifest_path.read_text())
    digest = sha256(path)
    if manifest.get("sha256") != digest:
        raise ValueError(f"checkpoint {path}: SHA-256 {digest} does not match its manifest ({manifest.get('sha256')}); "
                         "the file is corrupted or was replaced")
    spec = asdict(_spec(profile))
    if manifest.get("spec") != json.loads(json.dumps(spec)):
        raise ValueError(f"checkpoint {path} was made for a different backbone spec; re-run "
                         f"`python -m nora.experiments.backbone pretrain --profile {profile}`")
    recorded = RECORDED_SHA256.get(_key(_spec(profile)))
    if recorded is not None and digest != recorded:
        warnings.warn(f"the {profile} backbone at {path} (SHA-256 {digest[:12]}...) is not the recorded one "
                      f"({recorded[:12]}...): it was re-made on this machine, numbers may differ slightly "
                      "from the committed notebooks", stacklevel=3)


def pretrained_vit(profile: str, num_classes: int | None = None, *, seed: int = 0, weights: bool = True,
                   progress: bool = False) -> nn.Module:
    """The profile's pre-trained ViT (eval mode), with a fresh seeded head of ``num_classes`` if given.

    ``num_classes=None`` keeps the source-task head (1000 ImageNet classes / 24 generated classes).
    ``weights=False`` returns the same architecture randomly initialised (no file, no network).
    A missing book/smoke checkpoint is pre-trained first (see :func:`pretrain`) and cached.
    """
    spec = _spec(profile)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    key = _key(spec)
    if spec.profile == "paper" or not weights:
        model = create_vit(key, None, seed=seed, pretrained=weights)
    elif isinstance(spec.pretrain, GlyphPretrainConfig):
        from nora.experiments import glyph_backbone

        folder = glyph_backbone.checkpoint_dir(spec)
        if not (folder / glyph_backbone.PROVENANCE_NAME).is_file():
            glyph_backbone.pretrain(spec, folder, progress=progress)
        model = create_vit(key, None, seed=seed)
        model.load_state_dict(glyph_backbone.load_state(spec, folder))
    else:
        path = checkpoint_path(key)
        if not path.is_file() or (path.parent != SHIPPED_DIR and not _same_spec(key, path)):
            pretrain(key, out=path.parent, progress=progress)
        _verify(key, path)
        model = create_vit(key, None, seed=seed)
        model.load_state_dict(_read_weights(str(path), path.stat().st_mtime))
    if num_classes is not None:
        _fresh_head(model, num_classes, seed)
    return model.eval()


def source_task(profile: str):
    """The generated pre-training task of a book/smoke backbone as a Task (train and held-out test images)."""
    from nora.experiments.data.synthetic import CLASSES, sample
    from nora.experiments.data.tasks import Task, as_tensor_dataset

    spec = _spec(profile)
    if spec.pretrain is None:
        raise ValueError(f"profile {spec.profile!r} uses hub weights; it has no generated source task")
    cfg = spec.pretrain

    def draw(n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        parts = [sample(min(4096, n - i), spec.img_size, gen) for i in range(0, n, 4096)]
        return as_tensor_dataset(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    return Task(name=f"synthetic-{spec.source_classes}", train=draw(cfg.images, cfg.seed),
                test=draw(cfg.test_images, cfg.seed + 1_000_000), classes=CLASSES, description=spec.source)


def pretrain(profile: str, out: str | Path | None = None, *, progress: bool = True, threads: int = 1) -> dict:
    """Pre-train the profile's backbone on the generated source task; write ``vit-<profile>.safetensors`` + ``.json``.

    Returns the manifest (spec, source accuracy, time, SHA-256 of the float16 weights file).  Runs
    on ``threads`` torch threads (restored afterwards): one by default, the setting under which a
    fresh process re-made the same bytes in our checks; with two threads the CPU kernels' parallel
    reductions changed the last bits from run to run (2 distinct hashes in 5 runs).  Even on one
    thread, summation order can follow memory alignment, so identical bytes are likely, not promised.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _pretrain(profile, out, progress)
    finally:
        torch.set_num_threads(saved)


def _pretrain(profile: str, out: str | Path | None, progress: bool) -> dict:
    from safetensors.torch import save_file

    from nora.experiments.train import TrainConfig, train

    spec = _spec(profile)
    if spec.pretrain is None:
        raise ValueError("the paper profile's backbone comes from the timm hub; nothing to pre-train")
    cfg = spec.pretrain
    out_dir = Path(out) if out is not None else _cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    key = _key(spec)
    task = source_task(key)
    data_seconds = time.perf_counter() - t0
    model = create_vit(key, None, seed=cfg.seed)
    result = train(model, task.train, task.test,
                   TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               warmup_epochs=cfg.warmup_epochs, eval_every=cfg.epochs),
                   seed=cfg.seed, progress=progress, desc=f"pre-train {spec.profile}")
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = out_dir / _file_name(spec.profile)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"profile": spec.profile, "arch": spec.arch})
    os.replace(tmp, path)
    _read_weights.cache_clear()
    # accuracy of the weights as stored (float16), on the held-out generated images
    from nora.experiments.train import evaluate

    stored = create_vit(key, None, seed=cfg.seed)
    stored.load_state_dict({k: v.float() for k, v in state.items()})
    manifest = {
        "profile": spec.profile,
        "spec": json.loads(json.dumps(asdict(spec))),
        "command": f"python -m nora.experiments.backbone pretrain --spec {key}",
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "parameters": sum(v.numel() for v in state.values()),
        "source_test_accuracy": evaluate(stored, task.test),
        "source_train_accuracy_last_epoch": result.train_curve[-1],
        "train_seconds": round(result.train_seconds, 1),
        "cpu_seconds": round(result.cpu_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


_NAMES = ("glyphs", "shapes", "smoke")  # the backbones pre-trained here


def main(argv: list[str] | None = None) -> int:
    """``python -m nora.experiments.backbone pretrain|info --profile book``."""
    parser = argparse.ArgumentParser(prog="python -m nora.experiments.backbone", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pre-train a book/smoke backbone on the generated source task")
    p.add_argument("--profile", default="book", choices=("smoke", "book"))
    p.add_argument("--out", type=Path, default=None, help=f"output folder (default: ${CACHE_ENV}/backbones)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the setting that re-made the recorded bytes)")
    p.add_argument("--spec", default=None, choices=_NAMES,
                   help="a backbone by name instead of a profile's (glyphs: sharded, see nora.experiments.glyph_backbone)")
    i = sub.add_parser("info", help="where the profile's checkpoint is, and its provenance")
    i.add_argument("--profile", default="book", choices=("smoke", "book"))
    i.add_argument("--spec", default=None, choices=_NAMES, help="a backbone by name instead of a profile's")
    args = parser.parse_args(argv)
    if args.spec is not None:
        args.profile = args.spec
    spec = _spec(args.profile)
    if args.command == "pretrain" and isinstance(spec.pretrain, GlyphPretrainConfig):
        from nora.experiments.glyph_backbone import pretrain as pretrain_glyphs

        manifest = pretrain_glyphs(spec, args.out, threads=args.threads)
        print(json.dumps({k: v for k, v in manifest.items() if k != "curve"}, indent=1, sort_keys=True,
                         ensure_ascii=False))
        return 0
    if args.command == "pretrain":
        manifest = pretrain(args.profile, args.out, threads=args.threads)
        print(json.dumps(manifest, indent=1, sort_keys=True))
        return 0
    path = checkpoint_path(args.profile)
    print(path)
    print(json.dumps(load_manifest(args.profile), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
