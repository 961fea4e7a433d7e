"""Let torchvision import next to a CPU-only torch (the registry ships only its CUDA build).

torchvision 0.28's compiled ops do not load against the CPU build of torch, so its fake-tensor
registrations for ``torchvision::nms`` and ``torchvision::qnms`` fail with "operator ... does
not exist" — and with them ``import timm`` and ``import peft``, which import torchvision.
``import nora`` installs an import hook: when torchvision is first imported and fails
with exactly that error, the two schemas are declared and the import is retried.  Nothing is
declared when the import works (CUDA torch users see no difference), and nothing is imported
early.  Import ``nora`` before timm / transformers / peft on a CPU-only machine.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys

import torch

__all__ = ["install"]

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: torch.library.Library | None = None


def _is_missing_op(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, RuntimeError) and "torchvision::" in text and "does not exist" in text


def _declare_schemas() -> None:
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            try:
                _LIBRARY.define(schema)
            except RuntimeError:
                pass  # already declared


class _RetryingLoader(importlib.abc.Loader):
    """Runs torchvision's own loader; on the missing-op failure declares the schemas and runs it again."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        _uninstall()  # torchvision is being imported now: later imports go the normal way
        try:
            self.inner.exec_module(module)
        except RuntimeError as err:
            if not _is_missing_op(err):
                raise
            for name in [m for m in sys.modules if m.startswith("torchvision.")]:
                del sys.modules[name]
            _declare_schemas()
            self.inner.exec_module(module)


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "torchvision":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _RetryingLoader(spec.loader)
        return spec


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionFinder)]


def install() -> None:
    """Install the hook unless torchvision is already imported (then it worked or failed already)."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())
