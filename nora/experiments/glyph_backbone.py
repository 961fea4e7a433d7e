"""The ``glyphs`` backbone: ViT-Tiny's shape at 16 px, pre-trained on the generated glyph source, shipped sharded.

``nora.experiments.backbone.SPECS["glyphs"]`` names it; ``pretrained_vit("glyphs", num_classes)`` loads it and
``python -m nora.experiments.backbone pretrain --spec glyphs`` re-makes it.  This module holds what differs
from the single-file ``book`` backbone:

- **Pre-training** (:func:`pretrain`) on an endless stream of glyph images
  (:func:`nora.experiments.data.glyphs.glyph_batch`: batch ``step`` of stream ``seed`` is a pure function of
  both, so no image repeats and nothing is cached): AdamW (no weight decay on biases, norms and
  position/class embeddings), linear warm-up, cosine decay to 0, gradient clipping, one tqdm bar
  over the steps, the held-out accuracy every ``eval_every`` steps on a held-out prefix.
- **The checkpoint**: float16 safetensors shards of at most ``max_shard_bytes`` (default
  9,000,000 bytes, under the package's 10 MB limit per file), split and named the way transformers
  does (``model-00001-of-00002.safetensors`` + ``model.safetensors.index.json`` with
  ``metadata.total_size`` and ``weight_map``; split by ``huggingface_hub``), and ``provenance.json``:
  the spec (source configuration, seed, steps), the SHA-256 of every shard and of the index,
  CPU- and wall-seconds, the held-out source accuracy of the stored float16 weights (on
  ``test_images`` held-out images and on the first ``HELDOUT_CHUNK`` of them, for the fast test).
- **Loading** (:func:`load_state`) checks every SHA-256 and the spec against the provenance and
  warns when the files are not the recorded ones (``RECORDED``, re-made elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from nora.experiments.data.glyphs import HELDOUT_CHUNK, GlyphConfig, class_table, glyph_batch, heldout_set

__all__ = ["INDEX_NAME", "PROVENANCE_NAME", "RECORDED", "GlyphPretrainConfig", "checkpoint_dir", "load_state",
           "pretrain", "source_accuracy"]

INDEX_NAME = "model.safetensors.index.json"
PROVENANCE_NAME = "provenance.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
# SHA-256 of every file of the shipped checkpoint (as in its provenance.json); a re-made checkpoint
# with other bytes loads with a warning (floating-point sums differ across machines and thread counts).
RECORDED: dict[str, dict[str, str]] = {
    "glyphs": {
        "model-00001-of-00002.safetensors": "f784293a9d9340af12ad5400304f0087e2a6a6446fb8850f2bc7674075072412",
        "model-00002-of-00002.safetensors": "933a8a5790b47ca5e4b25e17f859de41aa3645b5e12b10534d9a264c6f652aaa",
        "model.safetensors.index.json": "e2b5f5b55e4921fb9cac2d78883d8bf11cb6f524aad09abb5b8810dc51dbadf5",
    },
}


@dataclass(frozen=True)
class GlyphPretrainConfig:
    """How a glyph backbone is pre-trained: the source, the stream's seed, steps and optimiser."""

    source: GlyphConfig = field(default_factory=GlyphConfig)
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    test_images: int = 5120
    eval_every: int = 500
    max_shard_bytes: int = 9_000_000

    def __post_init__(self) -> None:
        if not isinstance(self.source, GlyphConfig):
            raise TypeError(f"source must be a GlyphConfig, got {type(self.source).__name__}")
        for name in ("steps", "batch_size", "test_images", "eval_every", "max_shard_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("warmup_steps", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        for name in ("lr", "weight_decay", "grad_clip"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (name != "weight_decay" and v == 0):
                raise ValueError(f"{name} must be a finite number > 0 (weight_decay >= 0), got {v!r}")

    @property
    def num_classes(self) -> int:
        return len(class_table(self.source.all_groups))


def _cache_dir() -> Path:
    from nora.experiments.backbone import CACHE_ENV

    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "nora") / "backbones"


def _dir_name(name: str) -> str:
    return f"vit-{name}"


def checkpoint_dir(spec) -> Path:
    """The shipped folder of ``spec``'s checkpoint if the package has it, else the cache folder."""
    shipped = SHIPPED_DIR / _dir_name(spec.profile)
    if (shipped / PROVENANCE_NAME).is_file():
        return shipped
    return _cache_dir() / _dir_name(spec.profile)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _spec_json(spec) -> dict:
    return json.loads(json.dumps(asdict(spec)))


def _create(spec, num_classes: int, seed: int) -> nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model(spec.arch, pretrained=False, num_classes=num_classes, **spec.timm_kwargs())


def _lr(step: int, cfg: GlyphPretrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    from nora.experiments.data.tasks import MEAN, STD

    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@torch.no_grad()
def source_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    """Top-1 accuracy (%) of ``model`` on held-out glyph images in [0, 1] (normalised here)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        correct += int((model(_normalise(images[i:i + batch])).argmax(-1) == labels[i:i + batch]).sum())
    model.train(was)
    return 100.0 * correct / len(labels)


def pretrain(spec, out: str | Path | None = None, *, progress: bool = True, threads: int = 1) -> dict:
    """Pre-train ``spec``'s backbone on its glyph stream; write the sharded checkpoint + provenance to ``out``.

    ``out`` defaults to the cache folder (``$NORA_CACHE/backbones/vit-<name>``).  Returns the
    provenance.  Runs on ``threads`` torch threads (restored afterwards); one, the default, is the
    setting under which the same process re-makes the same bytes (see :mod:`nora.experiments.backbone`).
    """
    cfg = spec.pretrain
    if not isinstance(cfg, GlyphPretrainConfig):
        raise TypeError(f"spec.pretrain must be a GlyphPretrainConfig, got {type(cfg).__name__}")
    if spec.source_classes != cfg.num_classes:
        raise ValueError(f"spec.source_classes ({spec.source_classes}) != the source's {cfg.num_classes} classes")
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _pretrain(spec, Path(out) if out is not None else _cache_dir() / _dir_name(spec.profile), progress)
    finally:
        torch.set_num_threads(saved)


def _pretrain(spec, out_dir: Path, progress: bool) -> dict:
    from tqdm.auto import tqdm

    cfg = spec.pretrain
    cpu0, wall0 = time.process_time(), time.perf_counter()
    test_x, test_y = heldout_set(cfg.source, cfg.test_images, cfg.seed)
    probe = min(cfg.test_images, 2 * HELDOUT_CHUNK)
    model = _create(spec, cfg.num_classes, cfg.seed)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    curve, seen, correct, loss_sum, render_cpu = [], 0, 0, 0.0, 0.0
    bar = tqdm(range(cfg.steps), desc=f"pre-train {spec.profile}", disable=not progress, mininterval=2.0)
    for step in bar:
        r0 = time.process_time()
        images, labels = glyph_batch(cfg.source, cfg.seed, step, cfg.batch_size)
        render_cpu += time.process_time() - r0
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, cfg)
        logits = model(_normalise(images))
        loss = nn.functional.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pre-train {spec.profile}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        seen += labels.numel()
        correct += int((logits.detach().argmax(-1) == labels).sum())
        loss_sum += float(loss.detach()) * labels.numel()
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            acc = source_accuracy(model, test_x[:probe], test_y[:probe])
            curve.append({"step": step + 1, "train_accuracy": round(100.0 * correct / seen, 2),
                          "train_loss": round(loss_sum / seen, 4), f"heldout_accuracy_{probe}": round(acc, 2)})
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", train=f"{100.0 * correct / seen:.1f}", heldout=f"{acc:.1f}")
            seen, correct, loss_sum = 0, 0, 0.0
    bar.close()
    cpu_seconds, wall_seconds = time.process_time() - cpu0, time.perf_counter() - wall0
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    files = _save_sharded(state, out_dir, cfg.max_shard_bytes, spec)
    # accuracy of the weights as stored (float16)
    stored = _create(spec, cfg.num_classes, cfg.seed)
    stored.load_state_dict({k: v.float() for k, v in state.items()})
    from importlib.metadata import version

    provenance = {
        "name": spec.profile,
        "spec": _spec_json(spec),
        "command": f"python -m nora.experiments.backbone pretrain --spec {spec.profile}",
        "files": files,
        "parameters": sum(v.numel() for v in state.values()),
        "images_seen": cfg.steps * cfg.batch_size,
        "source_classes": cfg.num_classes,
        "source_test_images": cfg.test_images,
        "source_test_accuracy": source_accuracy(stored, test_x, test_y),
        f"source_test_accuracy_first_{HELDOUT_CHUNK}": source_accuracy(stored, test_x[:HELDOUT_CHUNK],
                                                                       test_y[:HELDOUT_CHUNK]),
        "curve": curve,
        "cpu_seconds": round(cpu_seconds, 1),
        "render_cpu_seconds": round(render_cpu, 1),
        "wall_seconds": round(wall_seconds, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": version("timm"),
        "hershey_fonts": version("Hershey-Fonts"),
        "machine": platform.machine(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return provenance


def _save_sharded(state: dict[str, torch.Tensor], out_dir: Path, max_shard_bytes: int, spec) -> dict[str, str]:
    """Write transformers-style shards + index (atomically per file); returns {file name: SHA-256}."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    split = split_torch_state_dict_into_shards(state, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_bytes)
    for old in out_dir.glob("model*.safetensors"):
        if old.name not in split.filename_to_tensors:
            old.unlink()
    files = {}
    for name, keys in split.filename_to_tensors.items():
        path = out_dir / name
        tmp = path.with_suffix(".tmp")
        save_file({k: state[k] for k in keys}, str(tmp), metadata={"format": "pt", "name": spec.profile})
        os.replace(tmp, path)
        path.chmod(0o644)
        if path.stat().st_size > 10_000_000:
            raise ValueError(f"shard {name} is {path.stat().st_size} bytes, over the package's 10 MB limit")
        files[name] = _sha256(path)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": dict(sorted(split.tensor_to_filename.items()))}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    files[INDEX_NAME] = _sha256(out_dir / INDEX_NAME)
    _read.cache_clear()
    return files


def read_provenance(folder: Path) -> dict:
    path = Path(folder) / PROVENANCE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {PROVENANCE_NAME} in {folder}")
    return json.loads(path.read_text())


def load_state(spec, folder: Path | None = None) -> dict[str, torch.Tensor]:
    """The float32 state dict of ``spec``'s checkpoint after checking every file's SHA-256 and the spec."""
    folder = Path(folder) if folder is not None else checkpoint_dir(spec)
    provenance = read_provenance(folder)
    if provenance.get("spec") != _spec_json(spec):
        raise ValueError(f"checkpoint {folder} was made for a different backbone spec; re-run "
                         f"`python -m nora.experiments.backbone pretrain --spec {spec.profile}`")
    files = provenance.get("files") or {}
    if INDEX_NAME not in files:
        raise ValueError(f"checkpoint {folder}: provenance lists no {INDEX_NAME}")
    index = json.loads((folder / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    if sorted(set(files) - {INDEX_NAME}) != shards:
        raise ValueError(f"checkpoint {folder}: the index names shards {shards}, the provenance {sorted(files)}")
    for name, recorded in files.items():
        digest = _sha256(folder / name)
        if digest != recorded:
            raise ValueError(f"checkpoint {folder / name}: SHA-256 {digest} does not match its provenance "
                             f"({recorded}); the file is corrupted or was replaced")
    expected = RECORDED.get(spec.profile)
    if expected is not None and files != expected:
        changed = sorted(n for n in set(files) | set(expected) if files.get(n) != expected.get(n))
        warnings.warn(f"the {spec.profile} backbone in {folder} is not the recorded one ({', '.join(changed)} "
                      "differ): it was re-made, numbers may differ slightly from the committed notebooks", stacklevel=3)
    state = _read(str(folder), tuple((n, (folder / n).stat().st_mtime) for n in shards))
    missing = sorted(set(index["weight_map"]) - set(state))
    if missing:
        raise ValueError(f"checkpoint {folder}: tensors {missing[:5]} named in the index are in no shard")
    return state


@lru_cache(maxsize=4)
def _read(folder: str, shards: tuple[tuple[str, float], ...]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for name, _ in shards:
        state.update({k: v.float() for k, v in load_file(str(Path(folder) / name)).items()})
    return state
